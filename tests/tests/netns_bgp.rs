//! Scale-out behind ECMP, as Full-NAT and DR clusters are run: a router
//! running BIRD learns the VIP over BGP from two directors, each running
//! BIRD on its exception TAP (BGP's TCP passes to the kernel like any
//! traffic for the director itself), and installs one multipath route. A
//! long-lived DR connection runs through one director; that director
//! stops; the router withdraws its path, and the connection goes on through
//! the other, which takes it up (`sloppy_tcp`) on the real server `mh`
//! chose for it, since both directors have the same servers.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use lb_tests::dataplane::Running;
use lb_tests::golden::TempDir;
use lb_tests::netns::Netns;
use lb_tests::routed::{Reals, Routed};
use lb_tests::within;

const VIP: &str = "198.18.0.10";

/// A director's dataplane: DR to both real servers by `mh`, connections
/// taken up mid-way, the TAP carrying the DIP for BIRD.
fn director(ns: &Netns, dip: &str, mac: &str) -> Running {
    let config = format!(
        r#"
[eal]
args = ["--no-huge", "--no-shconf", "-m", "512", "--no-pci", "--log-level=lib.eal:warning",
        "--vdev=net_af_packet0,iface=eth0", "--vdev=net_tap0,iface=lbtap,mac={mac}"]
[workers]
lcores = [1]
[sessions]
capacity = 65536
sloppy_tcp = true
[[port]]
name = "net_af_packet0"
addresses = ["{dip}/24"]
[[port]]
name = "net_tap0"
[[route]]
prefix = "0.0.0.0/0"
port = "net_af_packet0"
gateway = "10.0.0.254"
[exception]
port = "net_tap0"
interface = "lbtap"
addresses = ["{dip}/24"]
[[service]]
protocol = "tcp"
vip = "{VIP}"
port = 80
scheduler = "mh"
flags = "mh-port"
[[service.real]]
address = "10.0.0.10"
mode = "dr"
[[service.real]]
address = "10.0.0.11"
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

/// A director's BIRD: the VIP, as a route to its TAP, announced to the
/// router with itself as the next hop. Timers short, as for a cluster.
fn director_bird(dip: &str) -> String {
    format!(
        r#"router id {dip};
protocol device {{ scan time 1; }}
protocol static vips {{
    ipv4;
    route {VIP}/32 via "lbtap";
}}
protocol bgp uplink {{
    local {dip} as 65001;
    neighbor 10.0.0.254 as 65000;
    hold time 3;
    keepalive time 1;
    connect retry time 1;
    ipv4 {{ import none; export where proto = "vips"; next hop self; }};
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
    let out = router
        .command("ip")
        .args(["-o", "route", "show", &format!("{VIP}/32")])
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

fn sessions(lb: &Running) -> u64 {
    lb.counters()["total"]["sessions_created"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn ecmp_over_bgp_carries_a_dr_connection_through_a_director_that_stops() {
    let topo = Routed::with_two_directors_routed("bg", Reals::VipOnLoopback(VIP), 1024).unwrap();
    let lb2 = topo.lb2.as_ref().unwrap();
    let tmp = TempDir::new("bgp");
    // Flows spread by their ports too, as a router in front of a cluster
    // is set up (the kernel's default hashes the addresses only).
    let set = topo
        .router
        .command("sysctl")
        .args(["-qw", "net.ipv4.fib_multipath_hash_policy=1"])
        .status()
        .unwrap();
    assert!(set.success());
    let a = director(&topo.lb, "10.0.0.1", "02:00:00:00:01:02");
    let b = director(lb2, "10.0.0.2", "02:00:00:00:01:05");
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

    // A long-lived connection, then the director carrying it stops.
    let count = |lbs: &[Option<Running>; 2]| -> Vec<u64> {
        lbs.iter().map(|l| sessions(l.as_ref().unwrap())).collect()
    };
    let before = count(&lbs);
    let client = topo
        .client
        .command("python3")
        .args(["-c", lb_tests::routed::LONG_LIVED, VIP, "14"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let after = count(&lbs);
    let grew: Vec<usize> = (0..2).filter(|&i| after[i] > before[i]).collect();
    assert_eq!(
        grew.len(),
        1,
        "one director carries it: {before:?} -> {after:?}"
    );
    let carrying = grew[0];
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
