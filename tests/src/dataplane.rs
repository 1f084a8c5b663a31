//! A running lb-dataplane on idle pcap ports with an admin socket, for
//! tests that administer it (the admin protocol, lb-ctl). Stopped (SIGTERM,
//! then killed) when dropped.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::golden::TempDir;
use crate::{binary, pcap};

/// Reads a starting dataplane's `stderr` until it contains `marker` (a
/// log line such as "forwarding" or "admin socket ready"); returns what it
/// read. Panics, with the log so far, if the process exits first or 30 s
/// pass.
pub fn wait_for_log(stderr: &mut impl Read, marker: &str) -> String {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.contains(marker) {
        assert!(Instant::now() < deadline, "no {marker:?} in 30 s:\n{seen}");
        let n = stderr.read(&mut buf).expect("read stderr");
        assert!(n > 0, "the dataplane exited before {marker:?}:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}

/// The dataplane and its scratch directory.
#[derive(Debug)]
pub struct Idle {
    child: Child,
    pub socket: PathBuf,
    _tmp: TempDir,
}

impl Idle {
    /// Starts `config` (whose ports are net_pcap0 and net_pcap1) on empty
    /// captures, serving its admin socket in a fresh directory.
    pub fn start(config: &Path) -> Idle {
        let tmp = TempDir::new("idle");
        let empty = tmp.0.join("empty.pcap");
        pcap::write(&empty, &[]).expect("write an empty capture");
        let socket = tmp.0.join("admin.sock");
        let mut child = Command::new(binary::path("lb-dataplane"))
            .arg("--config")
            .arg(config)
            .arg("--admin-socket")
            .arg(&socket)
            .args(["--duration", "300", "--"])
            .arg(format!(
                "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
                empty.display(),
                tmp.0.join("o0.pcap").display()
            ))
            .arg(format!(
                "--vdev=net_pcap1,rx_pcap={},tx_pcap={}",
                empty.display(),
                tmp.0.join("o1.pcap").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lb-dataplane");
        let mut stderr = child.stderr.take().expect("piped");
        wait_for_log(&mut stderr, "admin socket ready");
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = stderr.read_to_end(&mut sink);
        });
        Idle {
            child,
            socket,
            _tmp: tmp,
        }
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
