//! `lb-bench` as a user runs it: profiles written to pcap, the generator on
//! a DPDK port, and the quick benchmark run end to end.

use std::path::{Path, PathBuf};
use std::process::Command;

use lb_tests::{binary, pcap};
use serde_json::Value;

/// `lb-bench run` one at a time: each reserves the hugepages it finds
/// free and pins testpmd and the appliance to the same cores.
static RUNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_run_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    RUNS.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lb-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(binary::path("lb-bench"))
        .args(args)
        .output()
        .expect("lb-bench runs")
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "lb-bench failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn gen_writes_ipv6_udp_profiles_whose_flows_walk_the_ranges() {
    let dir = scratch("gen6");
    let file = dir.join("udp6.pcap");
    ok(&bench(&[
        "gen",
        "--template",
        "udp",
        "--flows",
        "300",
        "--rounds",
        "2",
        "--size",
        "128",
        "--clients",
        "2001:db8::1",
        "--client-ports",
        "5000-5099",
        "--vip",
        "[2001:db8:1::10]:53",
        "--out",
        s(&file),
    ]));
    let cap = pcap::read(&file).unwrap();
    assert_eq!(cap.packets.len(), 600);
    let mut sources = std::collections::BTreeSet::new();
    for p in &cap.packets {
        let f = &p.data;
        assert_eq!(f.len(), 124, "128 bytes on the wire less the FCS");
        assert_eq!(&f[12..14], &[0x86, 0xdd], "IPv6");
        assert_eq!(f[20], 17, "UDP");
        assert_eq!(u16::from_be_bytes([f[56], f[57]]), 53);
        let port = u16::from_be_bytes([f[54], f[55]]);
        assert!((5000..=5099).contains(&port));
        sources.insert((f[22 + 15], port));
    }
    // 300 flows over 100 ports: three client addresses.
    assert_eq!(sources.len(), 300);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gen_refuses_bad_ranges_with_a_clear_error() {
    let out = bench(&[
        "gen",
        "--client-ports",
        "9-1",
        "--out",
        "/nonexistent/x.pcap",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a range of ports"));
    let out = bench(&["gen", "--size", "9000", "--out", "/nonexistent/x.pcap"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 to 1518"));
}

#[test]
fn gen_sends_on_a_port_at_the_rate_and_counts_what_comes_back() {
    let dir = scratch("port");
    let back = dir.join("back.pcap");
    ok(&bench(&[
        "gen",
        "--template",
        "udp",
        "--flows",
        "40",
        "--out",
        s(&back),
    ]));
    let sent_file = dir.join("sent.pcap");
    let devargs = format!("net_pcap0,rx_pcap={},tx_pcap={}", s(&back), s(&sent_file));
    let out = ok(&bench(&[
        "gen",
        "--template",
        "syn",
        "--flows",
        "100",
        "--port",
        &devargs,
        "--rate",
        "2000",
        "--duration",
        "1",
    ]));
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    let sent = r["sent"].as_u64().unwrap();
    // One second at 2000/s, give or take the last burst.
    assert!((1900..=2100).contains(&sent), "{r}");
    assert_eq!(r["received"], 40, "{r}");
    let cap = pcap::read(&sent_file).unwrap();
    assert_eq!(cap.packets.len() as u64, sent);
    // The SYNs go round the 100 flows in order.
    let f = &cap.packets[100].data;
    assert_eq!(f[47] & 0x02, 0x02);
    assert_eq!(u16::from_be_bytes([f[34], f[35]]), 1024);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn quick_run_measures_the_appliance_against_testpmd() {
    let _one = one_run_at_a_time();
    let dir = scratch("quick");
    let results = dir.join("results");
    let work = dir.join("work");
    let dataplane = binary::path("lb-dataplane");
    let md = ok(&bench(&[
        "run",
        "--quick",
        "--out",
        s(&results),
        "--work",
        s(&work),
        "--dataplane",
        s(&dataplane),
    ]));
    let latest: Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("latest.json")).unwrap())
            .unwrap();
    assert!(
        latest["baseline"]["io_mpps"].as_f64().unwrap() > 0.0,
        "{latest}"
    );
    assert!(
        latest["baseline"]["5tswap_mpps"].as_f64().unwrap() > 0.0,
        "{latest}"
    );
    let cases = latest["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for c in cases {
        assert!(c["mpps"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["ratio_5tswap"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["drops"].is_object(), "{c}");
        // Two interleaved pairs, each with its own ceiling; the case's
        // ratio is theirs, within their spread.
        let pairs = c["pairs"].as_array().unwrap();
        assert_eq!(pairs.len(), 2, "{c}");
        for p in pairs {
            assert!(p["ceiling_mpps"].as_f64().unwrap() > 0.0, "{p}");
            let r = p["mpps"].as_f64().unwrap() / p["ceiling_mpps"].as_f64().unwrap();
            assert!((p["ratio"].as_f64().unwrap() - r).abs() < 1e-9, "{p}");
            assert!(p["steal_pct"].as_f64().unwrap() >= 0.0, "{p}");
        }
        let (lo, mid, hi) = (
            c["ratio_min"].as_f64().unwrap(),
            c["ratio_5tswap"].as_f64().unwrap(),
            c["ratio_max"].as_f64().unwrap(),
        );
        assert!(lo <= mid && mid <= hi, "{c}");
    }
    assert_eq!(latest["failures"].as_array().unwrap().len(), 0, "{latest}");
    let est = &cases[0];
    assert_eq!(est["kind"], "established");
    assert_eq!(est["sessions"], 1000, "every flow has its session");
    assert_eq!(
        est["conns_per_s"].as_f64().unwrap(),
        0.0,
        "no new session in the window"
    );
    let new = &cases[2];
    assert_eq!(new["kind"], "new_conn");
    assert!(new["conns_per_s"].as_f64().unwrap() > 0.0, "{new}");
    let loss = &latest["losses"][0];
    assert_eq!(loss["mode"], "fnat", "{latest}");
    assert_eq!(
        loss["sessions"], 1000,
        "the generator's handshake made every session"
    );
    assert!(loss["offered"].as_u64().unwrap() > 0, "{loss}");
    assert!(loss["max_mpps"].as_f64().unwrap() > 0.0, "{loss}");
    assert!(
        loss["refused"].as_u64().unwrap() <= loss["offered"].as_u64().unwrap(),
        "{loss}"
    );
    assert!(md.contains("| FNAT | established | 1k | 64 B |"), "{md}");
    assert!(md.contains("Loss below the maximum"), "{md}");
    let png = std::fs::read(results.join("latest.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A case that fails is tried once more, reported failed with its error,
/// and the run goes on with the next case; the exit status says so.
#[test]
fn a_failing_case_is_retried_reported_and_the_run_goes_on() {
    let _one = one_run_at_a_time();
    let dir = scratch("failing");
    let results = dir.join("results");
    let work = dir.join("work");
    // A dataplane that answers the probe (the port's MAC) but whose
    // appliance exits at once.
    let broken = dir.join("broken-dataplane");
    std::fs::write(
        &broken,
        format!(
            "#!/bin/sh\nif [ \"$1\" = probe ]; then exec {} \"$@\"; fi\necho 'broken on purpose' >&2\nexit 1\n",
            binary::path("lb-dataplane").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = bench(&[
        "run",
        "--quick",
        "--no-loss",
        "--pairs",
        "1",
        "--only",
        "established",
        "--out",
        s(&results),
        "--work",
        s(&work),
        "--dataplane",
        s(&broken),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("failed, once more").count(), 2, "{stderr}");
    assert!(stderr.contains("[2/2]"), "the second case ran: {stderr}");
    assert!(stderr.contains("2 failed twice"), "{stderr}");
    let latest: Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("latest.json")).unwrap())
            .unwrap();
    let failures = latest["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{latest}");
    assert!(
        failures[0]["error"]
            .as_str()
            .unwrap()
            .contains("broken on purpose"),
        "the error carries the appliance's last words: {latest}"
    );
    let md = std::fs::read_to_string(results.join("latest.md")).unwrap();
    assert!(md.contains("Failed twice, so not measured"), "{md}");
    std::fs::remove_dir_all(&dir).unwrap();
}
