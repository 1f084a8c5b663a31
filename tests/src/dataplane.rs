//! Running lb-dataplane for tests: [`Idle`] on idle pcap ports with an
//! admin socket, for tests that administer it (the admin protocol, lb-ctl),
//! stopped (SIGTERM, then killed) when dropped; [`Running`] forwarding in a
//! namespace on the caller's configuration, stopped for its report.

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
        Idle::start_reading(config, None)
    }

    /// As [`start`](Idle::start), with net_pcap0 reading `input` (once,
    /// at start) instead of nothing.
    pub fn start_reading(config: &Path, input: Option<&Path>) -> Idle {
        let tmp = TempDir::new("idle");
        let empty = tmp.0.join("empty.pcap");
        pcap::write(&empty, &[]).expect("write an empty capture");
        let rx0 = input.map_or_else(|| empty.clone(), Path::to_owned);
        let socket = tmp.0.join("admin.sock");
        let mut child = Command::new(binary::path("lb-dataplane"))
            .arg("--config")
            .arg(config)
            .arg("--admin-socket")
            .arg(&socket)
            .args(["--duration", "300", "--"])
            .arg(format!(
                "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
                rx0.display(),
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

impl Idle {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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

/// A forwarding dataplane started in a namespace on a configuration of the
/// caller's, with its admin socket and its JSON report in a scratch
/// directory. Stopped with SIGTERM by [`stop`](Running::stop) (which
/// returns the report), killed when dropped otherwise.
#[derive(Debug)]
pub struct Running {
    child: Child,
    report: PathBuf,
    /// The admin socket (`--admin-socket`).
    pub socket: PathBuf,
    /// The configuration file it runs on (rewrite it, then
    /// [`signal`](Running::signal) `HUP`, to reload).
    pub config: PathBuf,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    _tmp: TempDir,
}

impl Running {
    /// Writes `config` (TOML) and starts `lb-dataplane` on it inside `ns`,
    /// for at most `secs` seconds; returns once it logs "forwarding".
    pub fn start(ns: &crate::netns::Netns, config: &str, secs: u32) -> Running {
        let tmp = TempDir::new("running");
        let path = tmp.0.join("lb.toml");
        std::fs::write(&path, config).expect("write the configuration");
        let report = tmp.0.join("report.json");
        let socket = tmp.0.join("admin.sock");
        let mut child = ns
            .command(binary::path("lb-dataplane"))
            .arg("--config")
            .arg(&path)
            .arg("--report")
            .arg(&report)
            .arg("--admin-socket")
            .arg(&socket)
            .args(["--duration", &secs.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lb-dataplane");
        let mut stderr = child.stderr.take().expect("piped");
        let log = std::sync::Arc::new(std::sync::Mutex::new(wait_for_log(
            &mut stderr,
            "forwarding",
        )));
        // Keep reading stderr so the process never blocks on it, and keep
        // what it says for `log`.
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]);
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&text);
            }
        });
        Running {
            child,
            report,
            socket,
            config: path,
            log,
            _tmp: tmp,
        }
    }

    /// Kills it at once (SIGKILL), as a crash would: no report.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits up to 10 s for `text` in its log; panics with the log if it
    /// does not come.
    pub fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends it signal `name` (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill -{name} failed");
    }

    /// `lb-ctl counters -o json` while it runs.
    pub fn counters(&self) -> serde_json::Value {
        let out = Command::new(binary::path("lb-ctl"))
            .env("LB_CTL_SOCKET", &self.socket)
            .args(["counters", "-o", "json"])
            .output()
            .expect("run lb-ctl");
        assert!(
            out.status.success(),
            "lb-ctl counters: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("lb-ctl prints JSON")
    }

    /// Stops it (SIGTERM) and returns its JSON report. Panics if it does
    /// not stop within 30 s or writes no report.
    pub fn stop(mut self) -> serde_json::Value {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                panic!("the dataplane did not stop in 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = std::fs::read_to_string(&self.report).expect("the dataplane wrote its report");
        serde_json::from_str(&text).expect("the report is JSON")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A counter from a dataplane's report: the engine's plus every worker's.
pub fn counter(report: &serde_json::Value, name: &str) -> u64 {
    let engine = report["engine"]["counters"][name].as_u64().unwrap_or(0);
    let workers: u64 = report["workers"]
        .as_array()
        .map(|ws| ws.iter().filter_map(|w| w["counters"][name].as_u64()).sum())
        .unwrap_or(0);
    engine + workers
}
