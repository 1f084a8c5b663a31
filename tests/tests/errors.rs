//! Bad input stops the dataplane with a clear error naming the culprit and a
//! non-zero exit: never a panic, never a hang.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lb_tests::binary;
use lb_tests::golden::{output_with_timeout, TempDir};

const GOOD: &str = r#"
[eal]
args = ["--no-huge", "--no-shconf", "-m", "128", "--no-pci"]

[workers]
lcores = [1]

[[port]]
name = "net_null0"
device = "net_null0,no-rx=1"

[[forward]]
from = "net_null0"
to = "net_null0"
"#;

/// Runs the binary on `config` (written to a file) plus `args`; returns its
/// stderr after checking that it failed cleanly.
fn fails(config: Option<&str>, args: &[&str]) -> String {
    let tmp = TempDir::new("errors");
    let path = tmp.0.join("lb.toml");
    if let Some(text) = config {
        std::fs::write(&path, text).unwrap();
    }
    let mut cmd = Command::new(binary::path("lb-dataplane"));
    cmd.arg("--config")
        .arg(&path)
        .args(["--duration", "5"])
        .args(args);
    let out = output_with_timeout(&mut cmd, Duration::from_secs(60)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a clean failure:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("lb-dataplane: error:"), "{stderr}");
    assert!(
        stderr.contains(path.to_str().unwrap()) || config.is_some(),
        "{stderr}"
    );
    stderr
}

#[test]
fn missing_config_file() {
    let e = fails(None, &[]);
    assert!(e.contains("cannot read config file"), "{e}");
    assert!(e.contains("No such file"), "{e}");
}

#[test]
fn malformed_config_names_file_and_line() {
    let e = fails(Some("[workers]\nlcores = [1,,2]\n"), &[]);
    assert!(e.contains("lb.toml: line 2"), "{e}");
    let e = fails(
        Some(&GOOD.replace("lcores = [1]", "lcores = [1]\nthreads = 2")),
        &[],
    );
    assert!(e.contains("line 7"), "{e}");
    assert!(e.contains("threads"), "{e}");
}

#[test]
fn forward_to_an_unknown_port() {
    let e = fails(
        Some(&GOOD.replace("to = \"net_null0\"", "to = \"eth9\"")),
        &[],
    );
    assert!(
        e.contains("line 14: [[forward]] to: no port named \"eth9\" (ports: net_null0)"),
        "{e}"
    );
}

#[test]
fn port_that_does_not_exist() {
    let config = GOOD.replace("device = \"net_null0,no-rx=1\"\n", "");
    let e = fails(Some(&config), &[]);
    assert!(
        e.contains("no DPDK port named `net_null0` (ports that exist: none)"),
        "{e}"
    );
}

#[test]
fn device_that_fails_to_probe() {
    let missing = Path::new("/nonexistent/in.pcap");
    let config = GOOD.replace(
        "name = \"net_null0\"\ndevice = \"net_null0,no-rx=1\"",
        &format!(
            "name = \"net_pcap0\"\ndevice = \"net_pcap0,rx_pcap={}\"",
            missing.display()
        ),
    );
    let config = config.replace("\"net_null0\"", "\"net_pcap0\"");
    let e = fails(Some(&config), &[]);
    assert!(
        e.contains(
            "port `net_pcap0`: device `net_pcap0,rx_pcap=/nonexistent/in.pcap` failed to probe"
        ),
        "{e}"
    );

    // The same device given to EAL on the command line.
    let config = GOOD
        .replace("device = \"net_null0,no-rx=1\"\n", "")
        .replace("net_null0", "net_pcap0");
    let e = fails(
        Some(&config),
        &["--", "--vdev=net_pcap0,rx_pcap=/nonexistent/in.pcap"],
    );
    assert!(
        e.contains(
            "the device given to EAL as `net_pcap0,rx_pcap=/nonexistent/in.pcap` failed to probe"
        ),
        "{e}"
    );
}

#[test]
fn eal_refusing_its_arguments() {
    let e = fails(Some(GOOD), &["--", "--no-such-eal-flag"]);
    assert!(e.contains("EAL refused its arguments"), "{e}");
    assert!(e.contains("--no-such-eal-flag"), "{e}");
}

#[test]
fn worker_lcore_missing_from_eal() {
    let config = GOOD.replace("\"--no-pci\"]", "\"--no-pci\", \"-l\", \"0\"]");
    let e = fails(Some(&config), &[]);
    assert!(
        e.contains("worker lcore 1: lcore 1 is not enabled in EAL"),
        "{e}"
    );
}

#[test]
fn no_config_at_all_is_a_usage_error() {
    let out = output_with_timeout(
        &mut Command::new(binary::path("lb-dataplane")),
        Duration::from_secs(30),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("pass --config FILE"), "{stderr}");
}

#[test]
fn check_validates_without_starting() {
    // A bad file: what is wrong, with its key and line, exit 1.
    let bad = GOOD.replace("lcores = [1]", "lcores = [1]\nburst = 0");
    let e = fails(Some(&bad), &["--check"]);
    assert!(e.contains("burst"), "{e}");
    assert!(e.contains("line"), "{e}");
    // A good one: said so, exit 0, and nothing started (no EAL, no port).
    let tmp = TempDir::new("check");
    let path = tmp.0.join("lb.toml");
    std::fs::write(&path, GOOD).unwrap();
    let out = Command::new(binary::path("lb-dataplane"))
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("valid, a forwarder with 1 rule"), "{said}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("EAL"),
        "{out:?}"
    );
}
