//! DPDK memory for one run: 2 MB hugepages when the kernel lets us reserve
//! them (reserved for the run, given back after it), otherwise plain memory
//! with `--no-huge`. The EAL arguments say which.

use std::path::PathBuf;

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
const MEMINFO: &str = "/proc/meminfo";

/// Where a run's DPDK memory comes from.
#[derive(Debug)]
pub enum Memory {
    /// 2 MB hugepages: `pages` reserved on top of what was there, mounted at
    /// `mount`.
    Huge {
        mount: PathBuf,
        pages: u64,
        before: u64,
        megabytes: u64,
    },
    /// Anonymous memory (`--no-huge`).
    Plain { megabytes: u64 },
}

fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(MEMINFO).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

fn run_quiet(cmd: &str, args: &[&str]) -> bool {
    std::process::Command::new(cmd)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Memory {
    /// Memory for `megabytes` of DPDK heap: hugepages if `allow_huge` and
    /// the kernel grants them all, else plain.
    pub fn reserve(megabytes: u64, allow_huge: bool, tag: &str) -> Memory {
        let plain = Memory::Plain { megabytes };
        if !allow_huge || meminfo("Hugepagesize:") != Some(2048) {
            return plain;
        }
        let Some(before) = std::fs::read_to_string(NR_HUGEPAGES)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        else {
            return plain;
        };
        // The heap plus room for DPDK's own tables.
        let pages = megabytes / 2 + 64;
        if std::fs::write(NR_HUGEPAGES, (before + pages).to_string()).is_err() {
            return plain;
        }
        let free = meminfo("HugePages_Free:").unwrap_or(0);
        let mount =
            std::env::temp_dir().join(format!("lb-bench-huge-{tag}-{}", std::process::id()));
        let mounted = free >= pages
            && std::fs::create_dir_all(&mount).is_ok()
            && run_quiet(
                "mount",
                &[
                    "-t",
                    "hugetlbfs",
                    "-o",
                    "pagesize=2M",
                    "nodev",
                    &mount.to_string_lossy(),
                ],
            );
        if !mounted {
            let _ = std::fs::write(NR_HUGEPAGES, before.to_string());
            let _ = std::fs::remove_dir(&mount);
            return plain;
        }
        Memory::Huge {
            mount,
            pages,
            before,
            megabytes,
        }
    }

    /// The EAL arguments for this memory.
    pub fn eal_args(&self) -> Vec<String> {
        match self {
            Memory::Huge {
                mount, megabytes, ..
            } => vec![
                format!("--huge-dir={}", mount.display()),
                "-m".into(),
                megabytes.to_string(),
            ],
            Memory::Plain { megabytes } => {
                vec!["--no-huge".into(), "-m".into(), megabytes.to_string()]
            }
        }
    }

    /// "2MB hugepages" or "no hugepages", for reports.
    pub fn describe(&self) -> String {
        match self {
            Memory::Huge { pages, .. } => format!("2MB hugepages ({pages} reserved)"),
            Memory::Plain { .. } => "no hugepages (--no-huge)".into(),
        }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        if let Memory::Huge { mount, before, .. } = self {
            run_quiet("umount", &[&mount.to_string_lossy()]);
            let _ = std::fs::remove_dir(&*mount);
            let _ = std::fs::write(NR_HUGEPAGES, before.to_string());
        }
    }
}
