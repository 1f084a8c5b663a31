//! Real TCP through the appliance: kernel clients and real servers in
//! network namespaces, lb-dataplane owning its port through net_af_packet,
//! 300 HTTP requests per mode through the VIP.
//!
//! The tests run one at a time: each starts a busy-polling dataplane, and
//! these machines have two cores.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use lb_tests::dataplane::Running;
use lb_tests::topology::{ClientNet, OneArm, ServerSetup};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const REQUESTS: usize = 300;
const VIP: &str = "198.18.0.10";

fn start(topo: &OneArm, services: &str) -> Running {
    start_with(topo, "[1]", "", "", services)
}

/// `lcores` is the workers' list, `vdev` options for the port, `eal` more
/// EAL arguments (a TOML list's tail: `, "--lcores=..."`).
fn start_with(topo: &OneArm, lcores: &str, vdev: &str, eal: &str, services: &str) -> Running {
    let config = format!(
        r#"
[eal]
args = ["--no-huge", "--no-shconf", "-m", "256", "--no-pci", "--log-level=lib.eal:warning", "--vdev=net_af_packet0,iface=eth0{vdev}"{eal}]
[workers]
lcores = {lcores}
[sessions]
capacity = 65536
[[port]]
name = "net_af_packet0"
addresses = ["10.0.0.1/24", "10.9.0.1/24"]
{services}
"#
    );
    Running::start(&topo.lb, &config, 120)
}

/// Sends the requests; returns how many each server answered and the
/// client addresses the servers saw.
fn load(topo: &OneArm, url: &str) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    topo.tally(url, REQUESTS)
}

fn service(mode: &str, sched: &str, port: u16, rport: u16, extra: &str) -> String {
    weighted(mode, sched, port, rport, extra, [1, 1, 1])
}

fn weighted(
    mode: &str,
    sched: &str,
    port: u16,
    rport: u16,
    extra: &str,
    weights: [u32; 3],
) -> String {
    let reals: String = (0..3)
        .map(|k| {
            let weight = weights[k];
            format!(
                "[[service.real]]\naddress = \"10.0.0.1{k}\"\nport = {rport}\nmode = \"{mode}\"\nweight = {weight}\n"
            )
        })
        .collect();
    format!("[[service]]\nprotocol = \"tcp\"\nvip = \"{VIP}\"\nport = {port}\nscheduler = \"{sched}\"\n{extra}\n{reals}")
}

/// `config/<name>.toml` as it ships: the examples assume this topology's
/// addresses, so the tests run them unchanged.
fn example(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(format!("{name}.toml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The exit report's entry for `service` (`"UDP 198.18.0.10:53"`).
fn service_report<'a>(report: &'a serde_json::Value, service: &str) -> &'a serde_json::Value {
    report["engine"]["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["service"] == service)
        .unwrap_or_else(|| panic!("no {service} in {report}"))
}

fn engine_counter(report: &serde_json::Value, name: &str) -> u64 {
    report["engine"]["counters"][name].as_u64().unwrap_or(0)
}

#[test]
fn full_nat_carries_tcp_and_servers_see_the_local_address() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let topo = OneArm::new("fn", 3, 8080, ClientNet::Routed, ServerSetup::Plain).unwrap();
    let lb = Running::start(&topo.lb, &example("fnat"), 120);
    let (per_server, seen) = load(&topo, &format!("http://{VIP}/"));
    let report = lb.stop();
    assert_eq!(
        per_server.values().copied().collect::<Vec<_>>(),
        [100, 100, 100],
        "rr spreads exactly: {per_server:?}"
    );
    assert!(
        !seen.is_empty() && seen.keys().all(|a| a == "10.0.0.100" || a == "10.0.0.101"),
        "servers see the local addresses only: {seen:?}"
    );
    assert_eq!(engine_counter(&report, "sessions_created"), REQUESTS as u64);
    let svc = service_report(&report, &format!("TCP {VIP}:80"));
    assert!(
        svc["out_pkts"].as_u64().unwrap() >= 2 * REQUESTS as u64,
        "replies pass the LB: {svc}"
    );
}

#[test]
fn nat_one_arm_example_carries_tcp_and_servers_see_the_client() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let topo = OneArm::new("na", 3, 8080, ClientNet::Routed, ServerSetup::GatewayIsLb).unwrap();
    let lb = Running::start(&topo.lb, &example("nat-one-arm"), 120);
    let (per_server, seen) = load(&topo, &format!("http://{VIP}/"));
    let report = lb.stop();
    // wlc counts the closed connections still in the table (TIME_WAIT) as
    // inactive, so one request at a time goes round the equal servers.
    assert_eq!(
        per_server.values().copied().collect::<Vec<_>>(),
        [100, 100, 100],
        "wlc over equal servers: {per_server:?}"
    );
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["10.9.0.2"],
        "servers see the client"
    );
    let svc = service_report(&report, &format!("TCP {VIP}:80"));
    assert!(
        svc["out_pkts"].as_u64().unwrap() >= 2 * REQUESTS as u64,
        "replies pass the LB: {svc}"
    );
}

#[test]
fn nat_two_arm_example_carries_tcp_between_its_ports() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let topo = OneArm::two_arm("n2", 3, 443).unwrap();
    let lb = Running::start(&topo.lb, &example("nat-two-arm"), 120);
    let (per_server, seen) = load(&topo, &format!("http://{VIP}:443/"));
    let report = lb.stop();
    // persistence = 300: one client, one server, for every connection.
    assert_eq!(
        per_server.values().copied().collect::<Vec<_>>(),
        [REQUESTS],
        "persistence keeps the client on one server: {per_server:?}"
    );
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["10.9.0.2"],
        "servers see the client"
    );
    let svc = service_report(&report, &format!("TCP {VIP}:443"));
    assert!(
        svc["out_pkts"].as_u64().unwrap() >= 2 * REQUESTS as u64,
        "replies pass the LB: {svc}"
    );
    let ports = report["ports"].as_array().expect("ports in the report");
    assert_eq!(ports.len(), 2, "{report}");
    for port in ports {
        assert!(
            port["stats"]["tx_packets"].as_u64().unwrap_or(0) >= 2 * REQUESTS as u64,
            "each arm carried its half: {port}"
        );
    }
}

#[test]
fn direct_routing_example_replies_bypass_the_load_balancer() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // dr.toml weighs 1:1:2 with wrr.
    let (_topo, svc) = bypassing("dr", "dr", ServerSetup::VipOnLoopback(VIP), [75, 75, 150]);
    assert!(
        svc["in_pkts"].as_u64().unwrap() >= 3 * REQUESTS as u64,
        "{svc}"
    );
}

#[test]
fn tunnel_example_carries_tcp_to_servers_that_decapsulate() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (topo, svc) = bypassing("tu", "tun", ServerSetup::IpipDecap(VIP), [100, 100, 100]);
    // Every packet the LB forwarded arrived wrapped: a bare DR frame would
    // also be accepted (the VIP is local), so count what was unwrapped.
    let unwrapped: u64 = topo.decapsulated().iter().sum();
    assert_eq!(Some(unwrapped), svc["in_pkts"].as_u64(), "{svc}");
}

/// 300 requests through `config/<example>.toml`, whose replies go from the
/// servers straight to the client: the scheduler spreads them as `spread`
/// says, the servers see the client, and no reply passes the LB. The
/// client sits on the servers' segment with a route to the VIPs via the
/// director, where the example has a router; the director's default route
/// (via 10.0.0.254) is not used, since it forwards only to its neighbours.
/// Returns the topology and the service's report.
fn bypassing(
    tag: &str,
    example_name: &str,
    setup: ServerSetup,
    spread: [usize; 3],
) -> (OneArm, serde_json::Value) {
    let topo = OneArm::new(tag, 3, 80, ClientNet::SameSegment, setup).unwrap();
    let lb = Running::start(&topo.lb, &example(example_name), 120);
    let (per_server, seen) = load(&topo, &format!("http://{VIP}/"));
    let report = lb.stop();
    assert_eq!(
        per_server.values().copied().collect::<Vec<_>>(),
        spread,
        "{per_server:?}"
    );
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["10.0.0.2"],
        "servers see the client"
    );
    let svc = service_report(&report, &format!("TCP {VIP}:80")).clone();
    assert_eq!(
        svc["out_pkts"].as_u64(),
        Some(0),
        "no reply passed the LB: {svc}"
    );
    (topo, svc)
}

#[test]
fn persistence_keeps_a_client_on_one_server() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let topo = OneArm::new("pe", 3, 8080, ClientNet::Routed, ServerSetup::Plain).unwrap();
    let lb = start(
        &topo,
        &service(
            "fnat",
            "rr",
            80,
            8080,
            "local_addresses = [\"10.0.0.100\"]\npersistence = 300",
        ),
    );
    let (per_server, _) = load(&topo, &format!("http://{VIP}/"));
    let report = lb.stop();
    assert_eq!(
        per_server.len(),
        1,
        "rr would rotate; the template keeps one server: {per_server:?}"
    );
    assert_eq!(engine_counter(&report, "templates_created"), 1);
}

/// Sends 30 datagrams through the VIP and expects each echoed back.
const UDP_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((sys.argv[1], int(sys.argv[2])))
ok = 0
for i in range(30):
    msg = b'datagram %d' % i
    s.send(msg)
    if s.recv(2048) == msg:
        ok += 1
print(ok)
"#;

const UDP_ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"#;

#[test]
fn udp_through_full_nat() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut topo = OneArm::new("ud", 3, 8080, ClientNet::Routed, ServerSetup::Plain).unwrap();
    topo.spawn_on_servers(UDP_ECHO, &["5353"]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let lb = Running::start(&topo.lb, &example("fnat"), 120);
    let out = topo
        .client
        .command("python3")
        .args(["-c", UDP_CLIENT, VIP, "53"])
        .output()
        .unwrap();
    let report = lb.stop();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "30",
        "every datagram echoed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svc = service_report(&report, &format!("UDP {VIP}:53"));
    assert_eq!(svc["in_pkts"].as_u64(), Some(30), "{svc}");
    assert_eq!(svc["out_pkts"].as_u64(), Some(30), "{svc}");
    assert_eq!(
        svc["conns"].as_u64(),
        Some(1),
        "one UDP session for one client socket: {svc}"
    );
}

/// A sample's value in Prometheus text: the line that starts with `series`
/// (name and labels exactly).
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_endpoint_counts_what_it_carried() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let topo = OneArm::new("me", 3, 8080, ClientNet::Routed, ServerSetup::Plain).unwrap();
    let lb = start(
        &topo,
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:9110\"\n{}",
            weighted(
                "fnat",
                "wrr",
                80,
                8080,
                "local_addresses = [\"10.0.0.100\"]",
                [1, 2, 3]
            )
        ),
    );
    for i in 0..30 {
        topo.get(&format!("http://{VIP}/"))
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
    }
    // Let the last connection's closing packets land, then scrape from
    // inside the load balancer's namespace, on its loopback.
    std::thread::sleep(Duration::from_millis(500));
    let out = topo
        .lb
        .command("curl")
        .args(["-sS", "--max-time", "10", "http://127.0.0.1:9110/metrics"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let missing = topo
        .lb
        .command("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://127.0.0.1:9110/nothing",
        ])
        .output()
        .unwrap();
    let report = lb.stop();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svc = &report["engine"]["services"][0];
    assert_eq!(
        sample(&text, "node_ipvs_connections_total"),
        Some(30),
        "{text}"
    );
    assert_eq!(
        sample(&text, "node_ipvs_incoming_packets_total"),
        svc["in_pkts"].as_u64(),
        "{text}"
    );
    assert_eq!(
        sample(&text, "node_ipvs_outgoing_packets_total"),
        svc["out_pkts"].as_u64(),
        "{text}"
    );
    assert_eq!(
        sample(&text, "node_ipvs_incoming_bytes_total"),
        svc["in_bytes"].as_u64(),
        "{text}"
    );
    for (k, weight) in [1, 2, 3].iter().enumerate() {
        let labels = format!("{{local_address=\"{VIP}\",local_mark=\"\",local_port=\"80\",proto=\"TCP\",remote_address=\"10.0.0.1{k}\",remote_port=\"8080\"}}");
        assert_eq!(
            sample(&text, &format!("node_ipvs_backend_weight{labels}")),
            Some(*weight),
            "{text}"
        );
        assert!(
            sample(
                &text,
                &format!("node_ipvs_backend_connections_inactive{labels}")
            )
            .is_some(),
            "{text}"
        );
    }
    assert_eq!(
        sample(&text, "lb_engine_events_total{event=\"sessions_created\"}"),
        Some(30),
        "{text}"
    );
    assert!(
        sample(&text, "lb_worker_sessions{lcore=\"1\"}").is_some(),
        "{text}"
    );
    assert_eq!(
        sample(&text, "lb_worker_session_capacity{lcore=\"1\"}"),
        Some(65536),
        "{text}"
    );
    let laddr_ports = text
        .lines()
        .find(|l| l.starts_with("lb_laddr_ports{lcore=\"1\",local_address=\"10.0.0.100\""))
        .unwrap_or_else(|| panic!("no local-address series in\n{text}"));
    assert!(
        laddr_ports.ends_with(" 64511"),
        "one worker owns every port of 1025-65535: {laddr_ports}"
    );
    assert!(
        sample(&text, "lb_port_rx_packets_total{port=\"net_af_packet0\"}").unwrap_or(0) > 0,
        "{text}"
    );
    assert_eq!(String::from_utf8_lossy(&missing.stdout), "404");
}

#[test]
fn two_workers_hand_full_nat_replies_to_their_owner() {
    two_workers(
        "tw",
        ServerSetup::Plain,
        &service("fnat", "rr", 80, 8080, "local_addresses = [\"10.0.0.100\"]"),
    );
}

#[test]
fn two_workers_hand_nat_replies_to_their_owner() {
    two_workers(
        "tn",
        ServerSetup::GatewayIsLb,
        &service("nat", "rr", 80, 8080, ""),
    );
}

/// 300 requests through two workers on one port; replies that reach the
/// worker without the session are handed to its owner.
fn two_workers(tag: &str, setup: ServerSetup, services: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let topo = OneArm::new(tag, 3, 8080, ClientNet::Routed, setup).unwrap();
    // Two worker lcores sharing the second CPU; the kernel's fanout spreads
    // flows over the port's two queues by a hash of their tuple, so a
    // reply (server to local address) often lands on the other worker.
    let lb = start_with(
        &topo,
        "[1, 2]",
        ",qpairs=2",
        ", \"--lcores=0@0,1@1,2@1\"",
        // No static neighbours: what one worker learns from ARP, the other
        // is told.
        services,
    );
    let (per_server, _) = load(&topo, &format!("http://{VIP}/"));
    let report = lb.stop();
    assert_eq!(
        per_server.values().sum::<usize>(),
        REQUESTS,
        "every request answered: {per_server:?}"
    );
    let workers = report["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{report}");
    let worker_counter =
        |w: &serde_json::Value, name: &str| w["counters"][name].as_u64().unwrap_or(0);
    let handed_in: u64 = workers
        .iter()
        .map(|w| worker_counter(w, "hand_over_in"))
        .sum();
    assert_eq!(
        workers
            .iter()
            .map(|w| worker_counter(w, "drop_hand_over"))
            .sum::<u64>(),
        0,
        "{report}"
    );
    // Every hand-over arrived, or came after its owner stopped reading
    // (the last ACKs, at stop) and was counted as such.
    let handed_out = engine_counter(&report, "handed_over");
    let late: u64 = workers
        .iter()
        .map(|w| worker_counter(w, "drop_hand_over_at_stop"))
        .sum();
    assert_eq!(
        handed_in + late,
        handed_out,
        "{handed_out} handed over, {handed_in} arrived, {late} after the stop: {report}"
    );
    assert!(
        handed_in > 0,
        "some replies reached the other worker first: {report}"
    );
    eprintln!("{handed_in} packets handed over between the two workers, {late} after the stop");
    assert_eq!(
        engine_counter(&report, "sessions_created"),
        REQUESTS as u64,
        "{report}"
    );
}

/// `lb-ctl` against `lb`'s socket with `args` (and `stdin`); its standard
/// output, after checking it succeeded.
fn ctl(lb: &Running, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(lb_tests::binary::path("lb-ctl"))
        .arg("--socket")
        .arg(&lb.socket)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "lb-ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether the load balancer's address answers one ping from the client.
fn answers_ping(topo: &OneArm) -> bool {
    topo.client
        .command("ping")
        .args(["-c", "1", "-W", "2", "10.0.0.1"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn started_empty_then_restored_carries_traffic_and_clears_to_empty() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    const VIP2: &str = "198.18.0.20";
    let topo = OneArm::new(
        "em",
        3,
        80,
        ClientNet::SameSegment,
        ServerSetup::VipOnLoopback(VIP2),
    )
    .unwrap();
    // Interfaces, no services: a director booting before its rules.
    let lb = start(&topo, "");
    assert_eq!(ctl(&lb, &["-S", "-n"], None), "", "nothing configured");
    assert!(answers_ping(&topo), "the empty appliance answers ping");

    // ipvsadm-restore with an existing LVS box's file, plus a DR service
    // for this topology's servers.
    let mut rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lbctl/rules.save"),
    )
    .unwrap();
    rules.push_str(&format!("-A -t {VIP2}:80 -s rr\n"));
    for k in 0..3 {
        rules.push_str(&format!("-a -t {VIP2}:80 -r 10.0.0.1{k}:80 -g -w 1\n"));
    }
    ctl(&lb, &["-R"], Some(&rules));
    let saved = ctl(&lb, &["-S", "-n"], None);
    assert!(saved.contains(&format!("-A -t {VIP2}:80 -s rr")), "{saved}");
    let mut per_server = BTreeMap::<String, usize>::new();
    for i in 0..30 {
        let body = topo
            .get(&format!("http://{VIP2}/"))
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        let server = body
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        *per_server.entry(server).or_default() += 1;
    }
    assert_eq!(
        per_server.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "{per_server:?}"
    );

    // Cleared: still running, empty, answering ping.
    ctl(&lb, &["-C"], None);
    assert_eq!(ctl(&lb, &["-S", "-n"], None), "");
    assert!(
        topo.get(&format!("http://{VIP2}/")).is_err(),
        "nothing is served"
    );
    assert!(answers_ping(&topo), "the cleared appliance answers ping");
    let report = lb.stop();
    assert!(report["engine"]["counters"]["rx_packets"].as_u64().unwrap() > 0);
}

#[test]
fn a_fwmark_service_keeps_a_client_on_one_server_across_two_ports() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut topo = OneArm::new("fw", 3, 8080, ClientNet::Routed, ServerSetup::Plain).unwrap();
    for k in 0..3 {
        topo.start_server(k, 8443).unwrap();
    }
    // Configured as an operator would, live over the socket: one
    // persistent Full-NAT service for two ports of the VIP (an LVS box
    // marks them with iptables; here --match says it), its servers
    // without a port so that each connection keeps its own.
    let lb = start(&topo, "");
    let mark = format!("tcp:{VIP}/32:8080,8443");
    ctl(
        &lb,
        &["-A", "-f", "1", "-s", "rr", "-p", "300", "--match", &mark],
        None,
    );
    ctl(&lb, &["-P", "-f", "1", "-z", "10.0.0.100"], None);
    for k in 0..3 {
        ctl(
            &lb,
            &["-a", "-f", "1", "-r", &format!("10.0.0.1{k}"), "--fullnat"],
            None,
        );
    }
    let mut per_server = BTreeMap::<String, usize>::new();
    for i in 0..40 {
        let port = if i % 2 == 0 { 8080 } else { 8443 };
        let body = topo
            .get(&format!("http://{VIP}:{port}/"))
            .unwrap_or_else(|e| panic!("request {i} to port {port}: {e}"));
        let server = body.split_whitespace().next().unwrap_or_default();
        *per_server.entry(format!("{server} on {port}")).or_default() += 1;
    }
    let listing = ctl(&lb, &["-L", "-n", "--persistent-conn"], None);
    // Its worker polls lcore 1: unless this machine isolates CPU 1, the
    // dataplane says so at start.
    let isolated = std::fs::read_to_string("/sys/devices/system/cpu/isolated").unwrap_or_default();
    let warned = lb.log().contains("workers poll CPUs that are not isolated");
    let cpu1_isolated = isolated.trim().split(',').any(|part| {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        a.parse::<u32>().is_ok_and(|a| a <= 1) && b.parse::<u32>().is_ok_and(|b| b >= 1)
    });
    assert_eq!(warned, !cpu1_isolated, "{}", lb.log());
    let report = lb.stop();
    assert_eq!(
        per_server.len(),
        2,
        "one server answers on both ports (rr would rotate): {per_server:?}"
    );
    let servers: std::collections::BTreeSet<&str> = per_server
        .keys()
        .map(|k| k.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(servers.len(), 1, "{per_server:?}");
    assert_eq!(engine_counter(&report, "templates_created"), 1);
    assert!(listing.contains("FWM  1 rr persistent 300"), "{listing}");
    assert_eq!(
        listing
            .lines()
            .filter(|l| l.starts_with("  -> 10.0.0.1"))
            .filter_map(|l| l.split_whitespace().nth(3))
            .filter(|&persist_conn| persist_conn == "1")
            .count(),
        1,
        "one real server holds the template: {listing}"
    );
}

/// Allow and deny lists, set live with lb-ctl as an operator would: the
/// client (10.9.0.2) is refused while denied or outside the allow list,
/// gets through when the lists let it, and `-S` keeps the lists.
#[test]
fn allow_and_deny_lists_let_in_only_the_clients_they_say() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let topo = OneArm::new("ad", 3, 8080, ClientNet::Routed, ServerSetup::Plain).unwrap();
    let lb = start(&topo, "");
    let svc = format!("{VIP}:80");
    ctl(
        &lb,
        &["-A", "-t", &svc, "-s", "rr", "--deny", "10.9.0.2"],
        None,
    );
    ctl(&lb, &["-P", "-t", &svc, "-z", "10.0.0.100"], None);
    ctl(
        &lb,
        &["-a", "-t", &svc, "-r", "10.0.0.10:8080", "--fullnat"],
        None,
    );
    let url = format!("http://{VIP}/");
    assert!(topo.get(&url).is_err(), "a denied client gets nothing");
    let listing = ctl(&lb, &["-L", "-n"], None);
    assert!(
        listing.contains(&format!("TCP  {svc} rr deny 1")),
        "{listing}"
    );
    ctl(
        &lb,
        &[
            "-E",
            "-t",
            &svc,
            "-s",
            "rr",
            "--deny",
            "none",
            "--allow",
            "10.8.0.0/16",
        ],
        None,
    );
    assert!(
        topo.get(&url).is_err(),
        "a client outside the allow list gets nothing"
    );
    ctl(
        &lb,
        &[
            "-E",
            "-t",
            &svc,
            "-s",
            "rr",
            "--allow",
            "10.9.0.0/24",
            "--allow",
            "10.8.0.0/16",
        ],
        None,
    );
    for i in 0..10 {
        topo.get(&url)
            .unwrap_or_else(|e| panic!("request {i} from an allowed client: {e}"));
    }
    let saved = ctl(&lb, &["-S", "-n"], None);
    assert!(
        saved.contains(&format!(
            "-A -t {svc} -s rr --allow 10.9.0.0/24 --allow 10.8.0.0/16"
        )),
        "{saved}"
    );
    let report = lb.stop();
    assert!(engine_counter(&report, "drop_denied") >= 1, "{report}");
    assert!(engine_counter(&report, "drop_not_allowed") >= 1, "{report}");
    assert_eq!(engine_counter(&report, "sessions_created"), 10);
}
