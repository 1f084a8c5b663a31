//! The world as it comes: the routed topology of `lb_tests::routed`, built
//! with the kernel's defaults (transmit checksum offload and TSO on every
//! veth, so segments arrive with partial checksums and as super-frames), for
//! DR, NAT, Full-NAT and TUN on both kernel-backed port types. Each run carries
//! 300 HTTP requests (rr: exactly 150 per server), a 10 MB download and a
//! 10 MB upload compared byte for byte, and a UDP exchange.
//!
//! The tests run one at a time: each starts a busy-polling dataplane, and
//! these machines have two cores.

use std::collections::BTreeMap;
use std::sync::Mutex;

use lb_tests::dataplane::{counter, Running};
use lb_tests::routed::{same_bytes, Reals, Routed};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const VIP: &str = "198.18.0.10";
const REQUESTS: usize = 300;
const BLOB: usize = 10 * 1000 * 1000;

#[derive(Clone, Copy)]
enum PortType {
    AfPacket,
    AfXdp,
}

impl PortType {
    fn name(self) -> &'static str {
        match self {
            PortType::AfPacket => "net_af_packet0",
            PortType::AfXdp => "net_af_xdp0",
        }
    }
}

/// The dataplane for `mode` on `port`; with `vlan`, the router side is
/// that VLAN's sub-interface (10.100.0.1/24, default route through it).
fn start(topo: &Routed, port: PortType, mode: &str, vlan: Option<u16>) -> Running {
    let name = port.name();
    let (sub, gateway_port, gateway) = match vlan {
        Some(id) => (
            format!("[[port.vlan]]\nid = {id}\naddresses = [\"10.100.0.1/24\"]\n"),
            format!("{name}.{id}"),
            "10.100.0.254",
        ),
        None => (String::new(), name.to_owned(), "10.0.0.254"),
    };
    let laddrs = if mode == "fnat" {
        "local_addresses = [\"10.0.0.100\"]"
    } else {
        ""
    };
    let service = |proto: &str, port: u16| {
        let reals: String = (0..2)
            .map(|k| {
                format!("[[service.real]]\naddress = \"10.0.0.1{k}\"\nport = {port}\nmode = \"{mode}\"\n")
            })
            .collect();
        format!("[[service]]\nprotocol = \"{proto}\"\nvip = \"{VIP}\"\nport = {port}\nscheduler = \"rr\"\n{laddrs}\n{reals}")
    };
    let config = format!(
        r#"
[eal]
args = ["--no-huge", "--no-shconf", "-m", "512", "--no-pci", "--log-level=lib.eal:warning", "--vdev={name},iface=eth0"]
[workers]
lcores = [1]
[sessions]
capacity = 65536
[[port]]
name = "{name}"
addresses = ["10.0.0.1/24"]
{sub}
[[route]]
prefix = "0.0.0.0/0"
port = "{gateway_port}"
gateway = "{gateway}"
{}
{}
"#,
        service("tcp", 80),
        service("udp", 5353)
    );
    Running::start(&topo.lb, &config, 300)
}

/// Everything one mode must carry on one port type.
fn carries_everything(tag: &str, port: PortType, mode: &str, reals: Reals) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let topo = Routed::new(tag, reals, BLOB).unwrap();
    let lb = start(&topo, port, mode, None);
    let report = carry(&topo, lb, port, mode);
    if let Reals::IpipDecap(_) = reals {
        // The servers' HTTP connections arrived wrapped (a bare DR frame
        // would be taken too: the VIP is local on the servers): at least
        // a handshake's ACK, a request and a FIN each. The counts cannot
        // be matched exactly: af_packet counts a super-frame once and its
        // segments arrive apart, and the user-space decapsulator's socket
        // may overflow during a transfer (TCP sends again).
        let unwrapped = topo.decapsulated();
        let reals = report["engine"]["services"][0]["reals"].as_array().unwrap();
        for (k, real) in reals.iter().enumerate() {
            let conns = real["conns"].as_u64().unwrap();
            assert!(
                unwrapped[k] >= 3 * conns,
                "rs{k}: {} unwrapped for {conns} connections",
                unwrapped[k]
            );
        }
    }
}

/// The requests, transfers and datagrams of [`carries_everything`] through
/// `lb`, the report's checks, and the report.
fn carry(topo: &Routed, lb: Running, port: PortType, mode: &str) -> serde_json::Value {
    let url = format!("http://{VIP}/");

    let mut per_server = BTreeMap::<String, usize>::new();
    for i in 0..REQUESTS {
        let body = topo
            .curl(5, &[&url])
            .unwrap_or_else(|e| panic!("{mode}: request {i} failed: {e}"));
        let server = body
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        *per_server.entry(server).or_default() += 1;
    }
    assert_eq!(
        per_server.values().copied().collect::<Vec<_>>(),
        [150, 150],
        "{mode}: rr spreads exactly: {per_server:?}"
    );

    let down = topo.scratch("down");
    topo.curl(60, &["-o", down.to_str().unwrap(), &format!("{url}blob")])
        .unwrap_or_else(|e| panic!("{mode}: the download failed: {e}"));
    same_bytes(&topo.blob_path(), &down).unwrap_or_else(|e| panic!("{mode}: download: {e}"));

    let upload = format!("@{}", topo.blob_path().display());
    let answer = topo
        .curl(60, &["--data-binary", &upload, &format!("{url}up")])
        .unwrap_or_else(|e| panic!("{mode}: the upload failed: {e}"));
    let server: usize = answer
        .strip_prefix("rs")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("{mode}: unexpected answer to the upload: {answer:?}"));
    same_bytes(&topo.blob_path(), &topo.upload_of(server))
        .unwrap_or_else(|e| panic!("{mode}: upload: {e}"));

    let answers = topo.udp_exchange(&format!("{VIP}:5353"), 20).unwrap();
    for (i, a) in answers.iter().enumerate() {
        assert!(
            a.ends_with(&format!(":datagram {i}")),
            "{mode}: datagram {i} answered {a:?}"
        );
    }
    assert_eq!(answers.len(), 20, "{mode}: every datagram answered");

    let report = lb.stop();
    // The kernel's defaults were in force: its partial checksums arrived
    // and were finished, and no session-creating packet was refused.
    assert!(
        counter(&report, "rx_checksum_finished") > 0,
        "{mode}: no partial checksum seen: the test ran without the kernel's offloads"
    );
    assert_eq!(counter(&report, "drop_bad_checksum"), 0, "{mode}");
    assert_eq!(counter(&report, "drop_truncated"), 0, "{mode}");
    assert_eq!(counter(&report, "drop_oversize"), 0, "{mode}");
    assert_eq!(counter(&report, "drop_gso"), 0, "{mode}");
    if let PortType::AfPacket = port {
        // veth hands af_packet whole super-frames: the upload (and, where
        // replies pass the LB, the download) left in segments.
        assert!(
            counter(&report, "gso_frames") > 0,
            "{mode}: no super-frame seen on af_packet"
        );
    }
    report
}

#[test]
fn tunnel_on_af_packet() {
    carries_everything("tp", PortType::AfPacket, "tun", Reals::IpipDecap(VIP));
}

#[test]
fn tunnel_on_af_xdp() {
    carries_everything("tx", PortType::AfXdp, "tun", Reals::IpipDecap(VIP));
}

#[test]
fn full_nat_on_af_packet() {
    carries_everything("fp", PortType::AfPacket, "fnat", Reals::Plain);
}

#[test]
fn full_nat_on_af_xdp() {
    carries_everything("fx", PortType::AfXdp, "fnat", Reals::Plain);
}

#[test]
fn nat_on_af_packet() {
    carries_everything("np", PortType::AfPacket, "nat", Reals::GatewayIsLb);
}

#[test]
fn nat_on_af_xdp() {
    carries_everything("nx", PortType::AfXdp, "nat", Reals::GatewayIsLb);
}

#[test]
fn direct_routing_on_af_packet() {
    carries_everything("dp", PortType::AfPacket, "dr", Reals::VipOnLoopback(VIP));
}

#[test]
fn direct_routing_on_af_xdp() {
    carries_everything("dx", PortType::AfXdp, "dr", Reals::VipOnLoopback(VIP));
}

/// Full-NAT with the clients' side on an 802.1Q VLAN of the same port:
/// everything carried as untagged, the tags taken off and put back on,
/// counted per VLAN; a VLAN nobody configured and QinQ are dropped and
/// counted, never answered or forwarded.
fn full_nat_over_a_vlan(tag: &str, port: PortType) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let topo = Routed::with_client_vlan(tag, Reals::Plain, BLOB, 100).unwrap();
    if let PortType::AfXdp = port {
        // XDP does not see a VLAN tag that the kernel keeps in a packet's
        // metadata, and a Linux bridge port with transmit VLAN offload (the
        // default) hands veth its frames that way: the tag would be lost.
        // An operator running af_xdp with VLANs on veth turns the offload
        // off on the host side of the director's veth (docs/kernel-ports.md, "VLANs"),
        // so the kernel writes the tag into the frame.
        topo.switch
            .command("ethtool")
            .args(["-K", "p1", "txvlan", "off"])
            .status()
            .unwrap()
            .success()
            .then_some(())
            .expect("ethtool -K p1 txvlan off");
    }
    let lb = start(&topo, port, "fnat", Some(100));
    // An ICMP echo to the VIP, tagged 200 (a VLAN nobody configured), then
    // inside two tags (QinQ), straight to the load balancer's MAC.
    let echo: &[u8] = &[
        0x08, 0x00, 0x45, 0x00, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x40, 0x01, 0x00, 0x00, 10,
        100, 0, 254, 198, 18, 0, 10, 0x08, 0x00, 0xf7, 0xfe, 0x00, 0x01, 0x00, 0x00,
    ];
    let macs = [2u8, 0, 0, 0, 1, 2, 2, 0, 0, 0, 1, 1];
    let tag = |vid: u8| [0x81, 0x00, 0x00, vid];
    for _ in 0..3 {
        topo.inject(&[&macs[..], &tag(200), echo].concat()).unwrap();
        topo.inject(&[&macs[..], &tag(100), &tag(44), echo].concat())
            .unwrap();
    }
    // Three datagrams through the VLAN and back, so that its counters
    // have something to show when they are read, while it runs.
    let answers = topo.udp_exchange(&format!("{VIP}:5353"), 3).unwrap();
    assert!(answers.iter().all(|a| !a.is_empty()), "{answers:?}");
    let vlans = lb.counters()["vlans"].clone();
    let report = carry(&topo, lb, port, "fnat over VLAN 100");
    assert_eq!(vlans[0]["name"], format!("{}.100", port.name()));
    assert!(vlans[0]["rx_packets"].as_u64().unwrap() > 0, "{vlans}");
    assert!(vlans[0]["tx_packets"].as_u64().unwrap() > 0, "{vlans}");
    assert!(
        counter(&report, "drop_vlan_unknown") >= 3,
        "VLAN 200 counted"
    );
    assert!(counter(&report, "drop_qinq") >= 3, "QinQ counted");
}

#[test]
fn full_nat_over_a_vlan_on_af_packet() {
    full_nat_over_a_vlan("vp", PortType::AfPacket);
}

#[test]
fn full_nat_over_a_vlan_on_af_xdp() {
    full_nat_over_a_vlan("vx", PortType::AfXdp);
}
