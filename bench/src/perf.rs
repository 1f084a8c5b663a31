//! Where a case's cycles go: `perf record` on the worker thread during the
//! window (`cpu-clock` sampling, which works in VMs without a PMU), then
//! `perf report`'s top symbols, unresolved addresses folded into their
//! library.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Symbols and their share of the samples, in percent, largest first.
pub type Profile = Vec<(String, f64)>;

/// A recording in progress.
#[derive(Debug)]
pub struct Recording {
    child: Child,
    data: PathBuf,
}

/// The thread of DPDK's worker lcore in process `pid`.
fn worker_thread(pid: u32) -> Option<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        comm.trim()
            .starts_with("rte-worker")
            .then(|| t.file_name().to_string_lossy().into_owned())
    })
}

/// Starts recording the worker of process `pid` into `dir`; `None` when
/// perf or the thread is not there.
pub fn start(pid: u32, dir: &Path) -> Option<Recording> {
    let tid = worker_thread(pid)?;
    let data = dir.join("perf.data");
    let child = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", "1999", "-t", &tid, "-o"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Recording { child, data })
}

impl Recording {
    /// Stops recording and returns the top symbols with their share in
    /// percent (at least 1%, at most ten).
    pub fn finish(mut self) -> Profile {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let out = Command::new("perf")
            .args([
                "report",
                "--no-children",
                "--sort",
                "dso,sym",
                "--stdio",
                "-i",
            ])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output();
        out.map(|o| top_symbols(&String::from_utf8_lossy(&o.stdout), 10))
            .unwrap_or_default()
    }
}

/// Parses `perf report --sort dso,sym --stdio`: addresses without a symbol
/// count for their library as a whole.
pub fn top_symbols(report: &str, n: usize) -> Profile {
    let mut by: Profile = Vec::new();
    for line in report.lines() {
        let line = line.trim();
        let Some((pct, rest)) = line.split_once('%') else {
            continue;
        };
        let Ok(pct) = pct.trim().parse::<f64>() else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let Some(dso) = parts.next() else { continue };
        let _kind = parts.next();
        let sym: Vec<&str> = parts.collect();
        let sym = sym.join(" ");
        let name = if sym.is_empty() || sym.starts_with("0x") {
            format!("({dso})")
        } else {
            sym
        };
        match by.iter_mut().find(|(s, _)| *s == name) {
            Some((_, p)) => *p += pct,
            None => by.push((name, pct)),
        }
    }
    by.sort_by(|a, b| b.1.total_cmp(&a.1));
    by.retain(|(_, p)| *p >= 1.0);
    by.truncate(n);
    for (_, p) in &mut by {
        *p = (*p * 10.0).round() / 10.0;
    }
    by
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_unresolved_addresses_into_their_library() {
        let report = "\
# Overhead  Shared Object  Symbol
    23.59%  lb-dataplane            [.] lb_dataplane::worker::LbWorker::run
    11.55%  librte_net_pcap.so.23.0 [.] 0x00000000000042f5
     2.53%  librte_net_pcap.so.23.0 [.] 0x00000000000042c3
     0.40%  libc.so.6               [.] __memset_avx512_unaligned_erms
";
        let top = top_symbols(report, 10);
        assert_eq!(
            top,
            vec![
                ("lb_dataplane::worker::LbWorker::run".to_owned(), 23.6),
                ("(librte_net_pcap.so.23.0)".to_owned(), 14.1),
            ]
        );
    }
}
