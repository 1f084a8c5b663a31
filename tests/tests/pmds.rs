//! Debian's PMDs register, and a port of each kind configures and starts:
//! net_null, net_pcap, net_ring, net_tap, and net_af_packet and net_af_xdp on
//! a veth pair in a namespace of the test's own.

use std::time::Duration;

use lb_tests::golden::{output_with_timeout, TempDir};
use lb_tests::netns::{self, Netns};
use lb_tests::{binary, pcap};

#[derive(Debug)]
struct Probed {
    port: String,
    ok: bool,
    driver: String,
    line: String,
}

fn parse(stdout: &str) -> Vec<Probed> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let field = |name: &str| {
                let key = format!("\"{name}\":");
                l.split(&key)
                    .nth(1)
                    .map(|rest| {
                        rest.trim_start_matches('"')
                            .split(['"', ','])
                            .next()
                            .unwrap_or_default()
                            .to_owned()
                    })
                    .unwrap_or_default()
            };
            Probed {
                port: field("port"),
                ok: field("ok") == "true",
                driver: field("driver"),
                line: l.to_owned(),
            }
        })
        .collect()
}

#[test]
fn every_listed_pmd_registers_and_configures() {
    let ns = Netns::new("pmd").expect("create a network namespace (needs root)");
    ns.veth("lbva", "lbvb").expect("create a veth pair");
    let tmp = TempDir::new("pmds");
    let empty = tmp.0.join("empty.pcap");
    pcap::write(&empty, &[]).unwrap();
    let devices = [
        ("net_null0".to_owned(), "net_null"),
        ("net_ring0".to_owned(), "net_ring"),
        (
            format!(
                "net_pcap0,rx_pcap={},tx_pcap={}",
                empty.display(),
                tmp.0.join("out.pcap").display()
            ),
            "net_pcap",
        ),
        ("net_tap0,iface=lbtap0".to_owned(), "net_tap"),
        ("net_af_packet0,iface=lbva".to_owned(), "net_af_packet"),
        ("net_af_xdp0,iface=lbvb".to_owned(), "net_af_xdp"),
    ];
    let mut cmd = ns.command(binary::path("lb-dataplane"));
    cmd.args(["probe", "--json"])
        .args(devices.iter().map(|(d, _)| d));
    let out = output_with_timeout(&mut cmd, Duration::from_secs(60)).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "probe failed:\n{stdout}\n{stderr}");
    let probed = parse(&stdout);
    assert_eq!(probed.len(), devices.len(), "{stdout}");
    for ((devargs, driver), p) in devices.iter().zip(&probed) {
        assert!(p.ok, "{devargs}: {}", p.line);
        assert_eq!(&p.driver, driver, "{}", p.line);
        assert!(p.line.contains("\"up\":true"), "{}", p.line);
    }
    // Closing the net_tap port removed its kernel interface.
    let links = ns.links().unwrap();
    assert!(!links.iter().any(|l| l == "lbtap0"), "{links:?}");

    let name = ns.name().to_owned();
    drop(ns);
    assert!(
        !netns::exists(&name),
        "the namespace {name} was left behind"
    );
}

#[test]
fn an_unknown_driver_is_reported_not_registered() {
    let mut cmd = std::process::Command::new(binary::path("lb-dataplane"));
    cmd.args(["probe", "--json", "net_null0", "net_nosuchpmd0"]);
    let out = output_with_timeout(&mut cmd, Duration::from_secs(60)).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let probed = parse(&stdout);
    assert_eq!(probed.len(), 2, "{stdout}");
    assert!(probed[0].ok && probed[0].driver == "net_null", "{stdout}");
    assert!(!probed[1].ok, "{stdout}");
    assert!(probed[1].line.contains("failed to probe"), "{stdout}");
    assert_eq!(probed[1].port, "net_nosuchpmd0");
}
