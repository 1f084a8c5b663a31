//! SIGTERM and SIGINT stop a running dataplane cleanly: the workers stop,
//! the ports close, the report is printed and the exit status is 0.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lb_tests::binary;
use lb_tests::golden::TempDir;

const CONFIG: &str = r#"
[eal]
args = ["--no-huge", "--no-shconf", "-m", "128", "--no-pci"]

[workers]
lcores = [1]

# net_null without no-rx generates packets: the forwarder has work to do.
[[port]]
name = "net_null0"
device = "net_null0"

[[port]]
name = "net_null1"
device = "net_null1,no-rx=1"

[[forward]]
from = "net_null0"
to = "net_null1"
"#;

fn stops_on(signal: &str) {
    let tmp = TempDir::new("signal");
    let config = tmp.0.join("lb.toml");
    let report = tmp.0.join("report.json");
    std::fs::write(&config, CONFIG).unwrap();
    let mut child = Command::new(binary::path("lb-dataplane"))
        .arg("--config")
        .arg(&config)
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it forwards (the log says so), then signal it.
    let mut stderr = child.stderr.take().unwrap();
    lb_tests::dataplane::wait_for_log(&mut stderr, "forwarding");
    std::thread::sleep(Duration::from_millis(300));
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not stop within 30 s of {signal}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(status.success(), "{status}\n{stdout}");
    assert!(stdout.contains("net_null1"), "{stdout}");
    let report = std::fs::read_to_string(&report).unwrap();
    let rx: u64 = report
        .split("\"rx_packets\": ")
        .nth(1)
        .and_then(|s| s.split([',', '\n']).next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    assert!(rx > 0, "the null port generated nothing? {report}");
}

#[test]
fn sigterm_stops_cleanly() {
    stops_on("-TERM");
}

#[test]
fn sigint_stops_cleanly() {
    stops_on("-INT");
}
