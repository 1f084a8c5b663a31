//! IPv6 through the appliance with real peers: kernel clients and real
//! servers in network namespaces, their addresses and routes as an
//! operator sets them (duplicate address detection left on), the
//! dataplane finding every next hop by Neighbor Discovery (no static
//! neighbours) and answering the peers' solicitations for its own
//! addresses, VIPs and local addresses. 300 HTTP requests per mode, every
//! answer read.
//!
//! The tests run one at a time: each starts a busy-polling dataplane, and
//! these machines have two cores.

use std::collections::BTreeMap;
use std::sync::Mutex;

use lb_tests::dataplane::Running;
use lb_tests::topology::{ClientNet, OneArm, ServerSetup};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const REQUESTS: usize = 300;
/// An IPv6 VIP (unique local addresses, as the IPv4 tests use
/// benchmarking ones).
const VIP: &str = "fd18::10";

/// The kit's topology, its IPv4 side plain, with IPv6 beside it and the
/// servers set up for `setup` on IPv6.
fn topology(tag: &str, port: u16, client: ClientNet, setup: ServerSetup) -> OneArm {
    let topo = OneArm::new(tag, 3, port, client, ServerSetup::Plain).unwrap();
    topo.add_ipv6(client, setup).unwrap();
    topo
}

/// The dataplane on the topology's port with IPv4 and IPv6 addresses and
/// `services`.
fn start(topo: &OneArm, services: &str) -> Running {
    let config = format!(
        r#"
[eal]
args = ["--no-huge", "--no-shconf", "-m", "256", "--no-pci", "--log-level=lib.eal:warning", "--vdev=net_af_packet0,iface=eth0"]
[workers]
lcores = [1]
[sessions]
capacity = 65536
[[port]]
name = "net_af_packet0"
addresses = ["10.0.0.1/24", "10.9.0.1/24", "fd00::1/64", "fd09::1/64"]
{services}
"#
    );
    Running::start(&topo.lb, &config, 120)
}

/// A TCP service on the VIP's port 80, rr over the three servers' `port`.
fn service(mode: &str, port: u16, extra: &str) -> String {
    let reals: String = (0..3)
        .map(|k| {
            format!(
                "[[service.real]]\naddress = \"fd00::1{k}\"\nport = {port}\nmode = \"{mode}\"\n"
            )
        })
        .collect();
    format!(
        "[[service]]\nprotocol = \"tcp\"\nvip = \"{VIP}\"\nport = 80\nscheduler = \"rr\"\n{extra}\n{reals}"
    )
}

/// Sends the requests to the VIP; returns how many each server answered
/// and the client addresses the servers saw.
fn load(topo: &OneArm) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    topo.tally(&format!("http://[{VIP}]/"), REQUESTS)
}

fn engine_counter(report: &serde_json::Value, name: &str) -> u64 {
    report["engine"]["counters"][name].as_u64().unwrap_or(0)
}

/// What every mode's run must show: rr exactly, the addresses the servers
/// saw, the solicitations (and in Full-NAT two pings) answered and no
/// invalid solicitation.
fn check(report: &serde_json::Value, per_server: &BTreeMap<String, usize>) {
    assert_eq!(
        per_server.values().copied().collect::<Vec<_>>(),
        [100, 100, 100],
        "rr spreads exactly: {per_server:?}"
    );
    assert_eq!(engine_counter(report, "sessions_created"), REQUESTS as u64);
    assert!(
        engine_counter(report, "answered") > 0,
        "the peers' solicitations were answered: {report}"
    );
    assert_eq!(engine_counter(report, "drop_ndisc_invalid"), 0, "{report}");
}

/// The neighbours the dataplane learned: (address, state) from `lb-ctl
/// neigh list`.
fn neighbours(lb: &Running) -> String {
    let out = std::process::Command::new(lb_tests::binary::path("lb-ctl"))
        .args(["--socket", lb.socket.to_str().unwrap(), "neigh", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn full_nat_over_ipv6_finds_its_neighbours_and_servers_see_the_local_address() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let topo = topology("f6", 8080, ClientNet::Routed, ServerSetup::Plain);
    let lb = start(
        &topo,
        &service("fnat", 8080, "local_addresses = [\"fd00::100\"]"),
    );
    let (per_server, seen) = load(&topo);
    // The director's address and the VIP answer ping.
    for target in ["fd09::1", VIP] {
        let out = topo
            .client
            .command("ping")
            .args(["-6", "-c", "1", "-W", "2", target])
            .output()
            .unwrap();
        assert!(out.status.success(), "ping {target}: {out:?}");
    }
    let learned = neighbours(&lb);
    let report = lb.stop();
    check(&report, &per_server);
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["fd00::100"],
        "servers see the local address only"
    );
    // Found by solicitation, learned, listed: each server and the client.
    for host in ["fd00::10", "fd00::11", "fd00::12", "fd09::2"] {
        assert!(
            learned
                .lines()
                .any(|l| l.starts_with(&format!("{host} ")) && l.contains("learned")),
            "{host} not learned:\n{learned}"
        );
    }
}

#[test]
fn nat_over_ipv6_servers_see_the_client() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let topo = topology("n6", 8080, ClientNet::Routed, ServerSetup::GatewayIsLb);
    let lb = start(&topo, &service("nat", 8080, ""));
    let (per_server, seen) = load(&topo);
    let report = lb.stop();
    check(&report, &per_server);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["fd09::2"]);
}

#[test]
fn direct_routing_over_ipv6_servers_answer_the_client_themselves() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let topo = topology(
        "d6",
        80,
        ClientNet::SameSegment,
        ServerSetup::VipOnLoopback(VIP),
    );
    let lb = start(&topo, &service("dr", 80, ""));
    let (per_server, seen) = load(&topo);
    let report = lb.stop();
    check(&report, &per_server);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["fd00::2"]);
    let svc = report["engine"]["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["service"] == format!("TCP [{VIP}]:80"))
        .unwrap_or_else(|| panic!("no service in {report}"));
    assert_eq!(svc["out_pkts"], 0, "replies bypass the LB: {svc}");
}
