//! The ceiling: Debian's `dpdk-testpmd` on the same two ports (`net_pcap0`
//! replaying the same profile, `net_null0` as the sink), one forwarding
//! core, in `io` mode (no packet touched) and `5tswap` mode (addresses and
//! ports swapped at every layer: the least work a forwarder can do).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// testpmd's forwarding modes that serve as baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    Io,
    FiveTupleSwap,
}

impl Fwd {
    fn arg(self) -> &'static str {
        match self {
            Fwd::Io => "io",
            Fwd::FiveTupleSwap => "5tswap",
        }
    }
}

/// What one baseline run needs.
#[derive(Debug, Clone)]
pub struct Baseline<'a> {
    pub testpmd: &'a Path,
    pub pcap: &'a Path,
    pub eal_memory: &'a [String],
    pub mbufs: u32,
    pub data_room: u16,
    pub warmup: Duration,
    pub window: Duration,
}

/// The median of the sink port's per-second transmit rates in the window.
pub fn median_tx_pps(output: &str, skip: usize) -> Option<f64> {
    let mut samples: Vec<f64> = output
        .split("NIC statistics for port ")
        .filter(|block| block.starts_with("1 "))
        .filter_map(|block| {
            let rest = block.split("Tx-pps:").nth(1)?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .skip(skip)
        .collect();
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    Some(samples[samples.len() / 2])
}

impl Baseline<'_> {
    /// Runs testpmd in `fwd` mode for the warm-up and the window and
    /// returns its forwarding rate in packets per second.
    pub fn measure(&self, fwd: Fwd) -> Result<f64, String> {
        let mut cmd = Command::new(self.testpmd);
        cmd.args(["-l", "0,1", "--main-lcore", "0"])
            .args(self.eal_memory)
            .args([
                "--no-shconf",
                "--no-pci",
                "--log-level=lib.eal:warning",
                &format!("--file-prefix=lb-bench-testpmd-{}", std::process::id()),
                &format!(
                    "--vdev=net_pcap0,rx_pcap={},infinite_rx=1",
                    self.pcap.display()
                ),
                "--vdev=net_null0,no-rx=1",
                "--",
                &format!("--forward-mode={}", fwd.arg()),
                "--nb-cores=1",
                "--stats-period=1",
                &format!("--total-num-mbufs={}", self.mbufs),
                &format!("--mbuf-size={}", self.data_room),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.testpmd.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (ticks, reports) = std::sync::mpsc::channel();
        // testpmd reports once a second from the moment it forwards, after
        // loading the profile: count its reports rather than the clock.
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("NIC statistics for port 1") {
                    let _ = ticks.send(());
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            text
        });
        let wanted = (self.warmup + self.window).as_secs().max(2) + 1;
        for _ in 0..wanted {
            if reports.recv_timeout(Duration::from_secs(120)).is_err() {
                break;
            }
        }
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let _ = child.wait();
        let text = reader.join().unwrap_or_default();
        let err = errors.join().unwrap_or_default();
        let skip = usize::try_from(self.warmup.as_secs()).unwrap_or(0).max(1);
        median_tx_pps(&text, skip).ok_or_else(|| {
            let tail: Vec<&str> = err.lines().rev().take(8).collect();
            format!(
                "testpmd ({}) reported no forwarding rate; its last words:\n{}",
                fwd.arg(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "
  ######################## NIC statistics for port 0  ########################
  Tx-pps:            0          Tx-bps:            0
  ######################## NIC statistics for port 1  ########################
  Tx-pps:     20000000          Tx-bps:            0
  ######################## NIC statistics for port 0  ########################
  Tx-pps:            0          Tx-bps:            0
  ######################## NIC statistics for port 1  ########################
  Tx-pps:     22000000          Tx-bps:            0
  ######################## NIC statistics for port 1  ########################
  Tx-pps:     21000000          Tx-bps:            0
  ######################## NIC statistics for port 1  ########################
  Tx-pps:     23000000          Tx-bps:            0
";

    #[test]
    fn takes_the_median_of_the_sink_port_after_the_warmup() {
        assert_eq!(median_tx_pps(OUT, 1), Some(22_000_000.0));
        assert_eq!(median_tx_pps(OUT, 0), Some(22_000_000.0));
        assert_eq!(median_tx_pps(OUT, 4), None);
        assert_eq!(median_tx_pps("garbage", 0), None);
    }
}
