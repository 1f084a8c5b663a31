//! Expiry keeps pace with the connection rate: 30,000 connections whose
//! SYN_RECV timeout ends in the same second are all swept within the run,
//! through the real binary. A worker that swept one budget (1024 sessions)
//! a second, as the dataplane once did, would leave most of them.

use std::process::Command;
use std::time::Duration;

use lb_core::testpkt::Builder;
use lb_core::wire::tcp::Flags;
use lb_tests::binary;
use lb_tests::golden::{output_with_timeout, TempDir};
use lb_tests::pcap::{self, Packet};

/// net_pcap0's MAC, which frames to the load balancer must carry.
const PORT_MAC: [u8; 6] = [0x02, 0x70, 0x63, 0x61, 0x70, 0x00];

const CONNECTIONS: u16 = 30_000;

const CONFIG: &str = r#"
[eal]
args = ["--no-huge", "--no-shconf", "-m", "256", "--no-pci", "--log-level=lib.eal:warning"]

[workers]
lcores = [1]

[sessions]
capacity = 65536

[timeouts]
syn_recv = 1

[[port]]
name = "net_pcap0"
addresses = ["10.0.0.1/24"]

[[neighbor]]
address = "10.0.0.5"
mac = "02:00:00:00:02:05"
port = "net_pcap0"

[[service]]
protocol = "tcp"
vip = "198.18.0.10"
port = 80
scheduler = "rr"

[[service.real]]
address = "10.0.0.5"
mode = "dr"
"#;

fn counter(report: &serde_json::Value, name: &str) -> u64 {
    report["engine"]["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no engine counter {name} in {report}"))
}

#[test]
fn a_crowded_second_is_swept_within_the_run() {
    let tmp = TempDir::new("expiry");
    let config = tmp.0.join("config.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let syns: Vec<Packet> = (0..CONNECTIONS)
        .map(|i| {
            let client = format!("10.0.0.2:{}", 10_000 + i);
            let mut f = Builder::tcp_v4(&client, "198.18.0.10:80", Flags::SYN).build();
            f[..6].copy_from_slice(&PORT_MAC);
            Packet::new(f)
        })
        .collect();
    let input = tmp.0.join("syns.pcap");
    pcap::write(&input, &syns).unwrap();
    let report = tmp.0.join("report.json");
    let mut cmd = Command::new(binary::path("lb-dataplane"));
    cmd.arg("--config")
        .arg(&config)
        .args(["--duration", "6", "--report"])
        .arg(&report)
        .arg("--")
        .arg(format!(
            "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
            input.display(),
            tmp.0.join("out.pcap").display()
        ));
    let out = output_with_timeout(&mut cmd, Duration::from_secs(60)).unwrap();
    assert!(
        out.status.success(),
        "lb-dataplane failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let all = u64::from(CONNECTIONS);
    assert_eq!(counter(&report, "sessions_created"), all);
    // Created in the first second, due a second later, and the run lasts
    // six: one budget a second would have swept at most about 5,000.
    assert_eq!(counter(&report, "sessions_expired"), all);
    assert_eq!(report["engine"]["sessions"].as_u64(), Some(0), "{report}");
}
