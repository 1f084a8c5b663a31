//! An operator's tuning of the workers, applied by the dataplane itself:
//! `[workers] realtime_priority` runs each worker thread under SCHED_FIFO
//! and `lock_memory` locks the process in RAM. Checked on the running
//! process, as an operator would check it (`/proc`, what `chrt -p` reads).
//!
//! The worker polls flat out as a real-time thread for about a second; the
//! kernel's real-time throttling (left at its default, 95% of each second)
//! keeps the rest of this shared machine running meanwhile.

use std::process::{Command, Stdio};

use lb_tests::binary;
use lb_tests::golden::TempDir;

const CONFIG: &str = r#"
[eal]
args = ["--no-huge", "--no-shconf", "-m", "128", "--no-pci"]

[workers]
lcores = [1]
realtime_priority = 5
lock_memory = true

[[port]]
name = "net_null0"
device = "net_null0,no-rx=1"

[[port]]
name = "net_null1"
device = "net_null1,no-rx=1"

[[forward]]
from = "net_null0"
to = "net_null1"
"#;

/// The scheduling policy (field 41 of `stat`) of the process's thread
/// named `name`.
fn policy_of(pid: u32, name: &str) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .and_then(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .and_then(|stat| {
            // Fields after the command name's closing parenthesis start
            // at field 3.
            let rest = stat.rsplit_once(") ")?.1;
            rest.split_whitespace().nth(41 - 3)?.parse().ok()
        })
}

#[test]
fn workers_run_real_time_in_locked_memory_when_asked() {
    let tmp = TempDir::new("tuning");
    let config = tmp.0.join("lb.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut child = Command::new(binary::path("lb-dataplane"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log = lb_tests::dataplane::wait_for_log(&mut stderr, "forwarding");
    let pid = child.id();
    let worker = policy_of(pid, "rte-worker-1");
    let main = policy_of(pid, "lb-dataplane");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(worker, Some(1), "SCHED_FIFO is policy 1: {log}");
    assert_eq!(main, Some(0), "the control thread stays ordinary");
    let locked: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(locked > 0, "{status}");
    assert!(log.contains("SCHED_FIFO"), "{log}");
}

#[test]
fn a_priority_past_99_is_refused_before_anything_starts() {
    let tmp = TempDir::new("tuning-bad");
    let config = tmp.0.join("lb.toml");
    std::fs::write(
        &config,
        CONFIG.replace("realtime_priority = 5", "realtime_priority = 120"),
    )
    .unwrap();
    let out = Command::new(binary::path("lb-dataplane"))
        .args(["--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("realtime_priority"), "{err}");
    assert!(err.contains("use 1 to 99"), "{err}");
}
