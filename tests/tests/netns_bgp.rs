//! Scale-out behind ECMP, as Full-NAT and DR clusters are run: a router
//! running BIRD learns the VIP over BGP from two directors, each running
//! BIRD on its exception TAP (BGP's TCP passes to the kernel like any
//! traffic for the director itself), and installs one multipath route. A
//! long-lived connection runs through one director; that director stops;
//! the router withdraws its path, and the connection goes on through the
//! other. In DR, the other takes it up (`sloppy_tcp`) on the real server
//! `mh` chose for it, since both directors have the same servers. In
//! Full-NAT, each director has its own local address and the other's as a
//! peer address: it heard of the connection by sync, and the router, which
//! learns each local address from both directors (the owner's path the
//! shorter), sends the real server's answers to it.

use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use lb_tests::dataplane::Running;
use lb_tests::golden::TempDir;
use lb_tests::netns::Netns;
use lb_tests::routed::{Reals, Routed};
use lb_tests::within;

const VIP: &str = "198.18.0.10";
/// The kernel routing table in which each dataplane keeps the VIPs it can
/// serve, for its BIRD to announce.
const TABLE: u32 = 100;
/// The tests run one at a time: each runs two busy-polling dataplanes.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A director's dataplane: DR to both real servers by `mh`, connections
/// taken up mid-way, the TAP carrying the DIP for BIRD.
fn director(ns: &Netns, dip: &str, mac: &str) -> Running {
    let head = lb_tests::routed::director_config(
        dip,
        mac,
        "sloppy_tcp = true",
        &format!("announce_table = {TABLE}"),
    );
    let config = format!(
        r#"{head}
[[service]]
protocol = "tcp"
vip = "{VIP}"
port = 80
scheduler = "mh"
flags = "mh-port"
[service.health]
kind = "tcp"
interval_ms = 300
timeout_ms = 200
rise = 2
fall = 2
[[service.real]]
address = "10.0.0.10"
mode = "dr"
[[service.real]]
address = "10.0.0.11"
mode = "dr"
[[service.real]]
address = "10.0.0.12"
mode = "dr"
"#
    );
    Running::start(ns, &config, 300)
}

/// A daemon stopped (and reaped) when the test ends, passed or not.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// BIRD in `ns` in the foreground, its socket and configuration in `dir`.
fn bird(ns: &Netns, dir: &Path, name: &str, config: &str) -> Daemon {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(&conf, config).unwrap();
    let child = ns
        .command("bird")
        .arg("-f")
        .arg("-c")
        .arg(&conf)
        .arg("-s")
        .arg(dir.join(format!("{name}.ctl")))
        .arg("-P")
        .arg(dir.join(format!("{name}.pid")))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .spawn()
        .expect("start bird (scripts/setup installs bird2)");
    Daemon(child)
}

/// A director's BIRD: the VIPs the dataplane can serve, as it keeps them
/// in its announce table, announced to the router with itself as the
/// next hop. Timers short, as for a cluster.
fn director_bird(dip: &str) -> String {
    director_bird_with(dip, "")
}

/// [`director_bird`], with filter lines run before each route is
/// exported.
fn director_bird_with(dip: &str, filter: &str) -> String {
    format!(
        r#"router id {dip};
protocol device {{ scan time 1; }}
protocol kernel served {{
    kernel table {TABLE};
    learn;
    scan time 1;
    ipv4 {{ import all; export none; }};
}}
protocol bgp uplink {{
    local {dip} as 65001;
    neighbor 10.0.0.254 as 65000;
    hold time 3;
    keepalive time 1;
    connect retry time 1;
    ipv4 {{
        import none;
        export filter {{
            if proto != "served" then reject;
{filter}            accept;
        }};
        next hop self;
    }};
}}
"#
    )
}

/// The router's BIRD: both directors as peers, their paths merged into one
/// multipath kernel route.
const ROUTER_BIRD: &str = r#"router id 10.0.0.254;
protocol device { scan time 1; }
protocol kernel {
    ipv4 { import none; export all; };
    merge paths on;
}
template bgp director {
    local 10.0.0.254 as 65000;
    hold time 3;
    keepalive time 1;
    connect retry time 1;
    ipv4 { import all; export none; };
}
protocol bgp d1 from director { neighbor 10.0.0.1 as 65001; }
protocol bgp d2 from director { neighbor 10.0.0.2 as 65001; }
"#;

/// Runs nftables commands in `ns`.
fn nft(ns: &Netns, rules: &str) {
    let mut child = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft (scripts/setup installs nftables)");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), rules.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "nft took {rules:?}");
}

/// What BIRD `name` says of its protocols, and its log.
fn bird_state(ns: &Netns, dir: &Path, name: &str) -> String {
    let out = ns
        .command("birdc")
        .arg("-s")
        .arg(dir.join(format!("{name}.ctl")))
        .args(["show", "protocols", "all"])
        .output()
        .unwrap();
    let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    format!("{name}:\n{}\n{log}", String::from_utf8_lossy(&out.stdout))
}

/// The router's next hops for the VIP.
fn next_hops(router: &Netns) -> Vec<String> {
    next_hops_of(router, &format!("{VIP}/32"))
}

fn sessions(lb: &Running) -> u64 {
    lb.counters()["total"]["sessions_created"]
        .as_u64()
        .unwrap_or(0)
}

/// Has the router spread flows by their ports too, as a router in front
/// of a cluster is set up (the kernel's default hashes the addresses only).
fn hash_ports_too(router: &Netns) {
    let set = router
        .command("sysctl")
        .args(["-qw", "net.ipv4.fib_multipath_hash_policy=1"])
        .status()
        .unwrap();
    assert!(set.success());
}

/// A long-lived connection for 14 s from the client, started; and which
/// director carries it (the one whose sessions grew).
fn long_lived(topo: &Routed, lbs: &[Option<Running>; 2]) -> (Child, usize) {
    let count = || -> Vec<u64> { lbs.iter().map(|l| sessions(l.as_ref().unwrap())).collect() };
    let before = count();
    let client = topo
        .client
        .command("python3")
        .args(["-c", lb_tests::routed::LONG_LIVED, VIP, "14"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let after = count();
    let grew: Vec<usize> = (0..2).filter(|&i| after[i] > before[i]).collect();
    assert_eq!(
        grew.len(),
        1,
        "one director carries it: {before:?} -> {after:?}"
    );
    (client, grew[0])
}

#[test]
fn ecmp_over_bgp_carries_a_dr_connection_through_a_director_that_stops() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let topo = Routed::with_two_directors_routed("bg", Reals::VipOnLoopback(VIP), 1024).unwrap();
    let lb2 = topo.lb2.as_ref().unwrap();
    let tmp = TempDir::new("bgp");
    hash_ports_too(&topo.router);
    let a = director(&topo.lb, "10.0.0.1", "02:00:00:00:01:02");
    let b = director(lb2, "10.0.0.2", "02:00:00:00:01:03");
    let mut lbs = [Some(a), Some(b)];
    let _router = bird(&topo.router, &tmp.0, "router", ROUTER_BIRD);
    let _ba = bird(&topo.lb, &tmp.0, "lbA", &director_bird("10.0.0.1"));
    let _bb = bird(lb2, &tmp.0, "lbB", &director_bird("10.0.0.2"));
    assert!(
        within(Duration::from_secs(30), || next_hops(&topo.router).len()
            == 2)
        .is_some(),
        "the router has both paths: {:?}\n{}\n{}",
        next_hops(&topo.router),
        bird_state(&topo.router, &tmp.0, "router"),
        bird_state(&topo.lb, &tmp.0, "lbA")
    );
    let body = topo.curl(5, &[&format!("http://{VIP}/")]).unwrap();
    assert!(body.ends_with(" saw 10.9.0.2"), "{body}");

    // Every real server refuses port 80 (their service is down): each
    // director's health checks take them out, it has no server left for
    // the VIP, and withdraws it; the router has no route to it. They come
    // back, and so do both paths.
    for rs in &topo.servers {
        nft(rs, "add table inet lb_test\nadd chain inet lb_test input { type filter hook input priority 0; }\nadd rule inet lb_test input tcp dport 80 reject with tcp reset\n");
    }
    let gone = within(Duration::from_secs(10), || {
        next_hops(&topo.router).is_empty()
    })
    .unwrap_or_else(|| {
        panic!(
            "the VIP stayed announced with no healthy server: {:?}\n{}",
            next_hops(&topo.router),
            bird_state(&topo.router, &tmp.0, "router")
        )
    });
    eprintln!("the router had no path to the VIP {gone:?} after the servers went down");
    for rs in &topo.servers {
        nft(rs, "delete table inet lb_test\n");
    }
    let back = within(Duration::from_secs(10), || {
        next_hops(&topo.router).len() == 2
    })
    .unwrap_or_else(|| {
        panic!(
            "the VIP was not announced again: {:?}",
            next_hops(&topo.router)
        )
    });
    eprintln!("both paths were back {back:?} after the servers came back");
    topo.curl(5, &[&format!("http://{VIP}/")]).unwrap();

    // A long-lived connection, then the director carrying it stops.
    let (client, carrying) = long_lived(&topo, &lbs);
    let stopped_dip = ["10.0.0.1", "10.0.0.2"][carrying];
    let report = lbs[carrying].take().unwrap().stop();
    let took = within(Duration::from_secs(10), || {
        next_hops(&topo.router) == [["10.0.0.2", "10.0.0.1"][carrying]]
    })
    .unwrap_or_else(|| panic!("the path via {stopped_dip} was not withdrawn"));
    eprintln!("the router withdrew {stopped_dip} {took:?} after its dataplane stopped");
    let out = client.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the connection broke: {}\n{lines}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<&str> = lines.lines().collect();
    assert!(answers.len() > 50, "{} answers", answers.len());
    assert!(
        answers.iter().all(|l| *l == answers[0]),
        "one server answered all along: {answers:?}"
    );
    let other = lbs[1 - carrying].as_ref().unwrap();
    let picked = other.counters()["total"]["sessions_picked_up"]
        .as_u64()
        .unwrap_or(0);
    assert!(picked >= 1, "the other director took the connection up");
    assert!(
        report["engine"]["counters"]["sessions_created"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "the stopped director had carried it: {report}"
    );
    // New connections go on through the other director.
    for _ in 0..10 {
        topo.curl(5, &[&format!("http://{VIP}/")]).unwrap();
    }
}

/// A Full-NAT director of an ECMP pair: its own local address `laddr`, the
/// other's `peer_laddr` held for the connections it syncs here, and
/// connection sync with the other director at `peer_dip`.
fn fnat_director(
    ns: &Netns,
    dip: &str,
    mac: &str,
    (laddr, peer_laddr): (&str, &str),
    peer_dip: &str,
) -> Running {
    let head =
        lb_tests::routed::director_config(dip, mac, "", &format!("announce_table = {TABLE}"));
    let config = format!(
        r#"{head}
[sync]
listen = "{dip}:8848"
peers = ["{peer_dip}:8848"]
key = "the cluster's shared sync key"
[[service]]
protocol = "tcp"
vip = "{VIP}"
port = 80
scheduler = "rr"
local_addresses = ["{laddr}"]
peer_local_addresses = ["{peer_laddr}"]
[[service.real]]
address = "10.0.0.10"
port = 80
mode = "fnat"
[[service.real]]
address = "10.0.0.11"
port = 80
mode = "fnat"
[[service.real]]
address = "10.0.0.12"
port = 80
mode = "fnat"
"#
    );
    let lb = Running::start(ns, &config, 300);
    lb.wait_log("admin socket ready");
    lb
}

/// A Full-NAT director's BIRD: the VIP and its own local address announced
/// plainly, the other director's local address (the dataplane keeps a
/// route to it too) with a longer AS path, so that the router sends the
/// real servers' answers for it here only when that director's own
/// announcement is gone.
fn fnat_director_bird(dip: &str, peer_laddr: &str) -> String {
    director_bird_with(
        dip,
        &format!("            if net = {peer_laddr}/32 then {{\n                bgp_path.prepend(65001);\n                bgp_path.prepend(65001);\n            }}\n"),
    )
}

/// The router's next hops for `prefix`.
fn next_hops_of(router: &Netns, prefix: &str) -> Vec<String> {
    let out = router
        .command("ip")
        .args(["-o", "route", "show", prefix])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_owned())
        .collect()
}

/// How each real server reaches `addr`.
fn routes_to(servers: &[Netns], addr: &str) -> String {
    servers
        .iter()
        .map(|rs| {
            let out = rs
                .command("ip")
                .args(["route", "get", addr])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect()
}

/// Full-NAT behind ECMP: each director has its own local address and
/// holds the other's for the connections it hears of by sync. The real
/// servers answer through the router, which learns each local address
/// from its owner and, with a longer path, from the other director. A
/// long-lived connection runs through one director; that director dies;
/// the router moves the VIP's flows and the dead director's local
/// address to the other, which carries the connection on (same server,
/// same local address).
#[test]
fn ecmp_over_bgp_with_sync_carries_a_full_nat_connection_through_a_director_that_dies() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let topo = Routed::with_two_directors_routed("bf", Reals::Plain, 1024).unwrap();
    let lb2 = topo.lb2.as_ref().unwrap();
    let tmp = TempDir::new("bgp-fnat");
    // The real servers' gateway is the router, as behind any Full-NAT
    // cluster whose local addresses are routed rather than on-link. And
    // they ignore ICMP redirects, as an operator sets them up when they
    // share the directors' segment (and as hardening guides have every
    // server do): the router, forwarding their answers back out of the
    // segment they came from, tells them to send straight to the director
    // that owns the local address, and a server that follows it keeps
    // sending there for five minutes after that director has gone
    // (`docs/ha.md`). With the defaults this test fails that way.
    for rs in &topo.servers {
        rs.ip(&["route", "add", "default", "via", "10.0.0.254"])
            .unwrap();
        for dev in ["all", "eth0"] {
            let set = rs
                .command("sysctl")
                .args(["-qw", &format!("net.ipv4.conf.{dev}.accept_redirects=0")])
                .status()
                .unwrap();
            assert!(set.success());
        }
    }
    hash_ports_too(&topo.router);
    const LADDRS: [&str; 2] = ["10.0.1.1", "10.0.1.2"];
    const DIPS: [&str; 2] = ["10.0.0.1", "10.0.0.2"];
    let a = fnat_director(
        &topo.lb,
        DIPS[0],
        "02:00:00:00:01:02",
        (LADDRS[0], LADDRS[1]),
        DIPS[1],
    );
    let b = fnat_director(
        lb2,
        DIPS[1],
        "02:00:00:00:01:03",
        (LADDRS[1], LADDRS[0]),
        DIPS[0],
    );
    let mut lbs = [Some(a), Some(b)];
    let _router = bird(&topo.router, &tmp.0, "router", ROUTER_BIRD);
    let _ba = bird(
        &topo.lb,
        &tmp.0,
        "lbA",
        &fnat_director_bird(DIPS[0], LADDRS[1]),
    );
    let _bb = bird(lb2, &tmp.0, "lbB", &fnat_director_bird(DIPS[1], LADDRS[0]));
    let settled = || {
        next_hops(&topo.router).len() == 2
            && next_hops_of(&topo.router, &format!("{}/32", LADDRS[0])) == [DIPS[0]]
            && next_hops_of(&topo.router, &format!("{}/32", LADDRS[1])) == [DIPS[1]]
    };
    assert!(
        within(Duration::from_secs(30), settled).is_some(),
        "the router has both VIP paths and each local address from its owner\n{}\n{}",
        bird_state(&topo.router, &tmp.0, "router"),
        bird_state(&topo.lb, &tmp.0, "lbA")
    );
    let body = topo.curl(5, &[&format!("http://{VIP}/")]).unwrap();
    assert!(
        LADDRS.iter().any(|l| body.ends_with(&format!(" saw {l}"))),
        "{body}"
    );

    let (client, carrying) = long_lived(&topo, &lbs);
    let other = 1 - carrying;
    let installed = |lb: &Running| {
        lb.counters()["total"]["sync_installed"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        within(Duration::from_secs(3), || installed(
            lbs[other].as_ref().unwrap()
        ) >= 1)
        .is_some(),
        "the other director heard of the connection: {}",
        lbs[other].as_ref().unwrap().counters()
    );
    // It dies (SIGKILL), as a crash would: its TAP goes, and with it the
    // BGP session, so the router withdraws its paths at the hold time.
    lbs[carrying].take().unwrap().kill();
    let took = within(Duration::from_secs(10), || {
        next_hops(&topo.router) == [DIPS[other]]
            && next_hops_of(&topo.router, &format!("{}/32", LADDRS[carrying])) == [DIPS[other]]
    })
    .unwrap_or_else(|| {
        panic!(
            "the router did not move the VIP and {} to {}: {}",
            LADDRS[carrying],
            DIPS[other],
            bird_state(&topo.router, &tmp.0, "router")
        )
    });
    eprintln!(
        "the router moved the VIP and {} {took:?} after {} died",
        LADDRS[carrying], DIPS[carrying]
    );
    let out = client.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout);
    let survivor = lbs[other].as_ref().unwrap();
    assert!(
        out.status.success(),
        "the connection broke: {}\n{lines}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        survivor.counters(),
        routes_to(&topo.servers, LADDRS[carrying])
    );
    let answers: Vec<&str> = lines.lines().collect();
    assert!(answers.len() > 50, "{} answers", answers.len());
    assert!(
        answers.iter().all(|l| *l == answers[0]),
        "one server, one address seen, all along: {answers:?}"
    );
    assert!(
        answers[0].ends_with(&format!(" saw {}", LADDRS[carrying])),
        "{}",
        answers[0]
    );
    // New connections go on through the survivor, from its own address.
    for _ in 0..10 {
        let body = topo.curl(5, &[&format!("http://{VIP}/")]).unwrap();
        assert!(body.ends_with(&format!(" saw {}", LADDRS[other])), "{body}");
    }
}
