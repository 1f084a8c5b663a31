//! Two directors made highly available as LVS directors are: stock
//! keepalived (Debian's) on each one's exception TAP, VRRP adverts passing
//! between the wire and the TAP, and each dataplane serving the VIP exactly
//! while its kernel holds it (`[exception] follow_vips`). A client behind a
//! kernel router sends a request every 100 ms; the master is killed, the
//! backup takes the VIP over, and the master's return takes it back. With
//! connection sync, a long-lived connection lives through both moves too,
//! in Full-NAT and in NAT.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_tests::dataplane::Running;
use lb_tests::golden::TempDir;
use lb_tests::netns::Netns;
use lb_tests::routed::{Reals, Routed};
use lb_tests::within;

const VIP: &str = "198.18.0.10";
/// The tests run one at a time: each runs two busy-polling dataplanes.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
/// keepalived's advert interval, seconds.
const ADVERT: u64 = 1;

/// The local address of both directors' Full-NAT service: a keepalived
/// virtual address, moving with the VIP.
const LADDR: &str = "10.0.0.100";

/// NAT's real servers' gateway in an HA pair: a keepalived virtual address
/// the master holds.
const GATEWAY: &str = "10.0.0.253";

/// A director's dataplane: Full-NAT to both real servers, the TAP carrying
/// its DIP, VIPs followed; with `peer`, connection sync with it.
fn director(ns: &Netns, dip: &str, mac: &str, peer: Option<&str>) -> Running {
    director_in(ns, dip, mac, peer, "fnat")
}

/// [`director`] in forwarding mode `mode` (`fnat` or `nat`).
fn director_in(ns: &Netns, dip: &str, mac: &str, peer: Option<&str>, mode: &str) -> Running {
    let laddrs = if mode == "fnat" {
        format!("local_addresses = [\"{LADDR}\"]")
    } else {
        String::new()
    };
    let sync = peer.map_or(String::new(), |p| {
        format!("[sync]\nlisten = \"{dip}:8848\"\npeers = [\"{p}:8848\"]\nkey = \"the pair's shared sync key\"\n[metrics]\nlisten = \"127.0.0.1:9110\"\n")
    });
    let head = lb_tests::routed::director_config(dip, mac, "", "follow_vips = true");
    let config = format!(
        r#"{head}
{sync}
[[service]]
protocol = "tcp"
vip = "{VIP}"
port = 80
scheduler = "rr"
{laddrs}
[[service.real]]
address = "10.0.0.10"
port = 80
mode = "{mode}"
[[service.real]]
address = "10.0.0.11"
port = 80
mode = "{mode}"
[[service.real]]
address = "10.0.0.12"
port = 80
mode = "{mode}"
"#
    );
    let lb = Running::start(ns, &config, 300);
    lb.wait_log("admin socket ready");
    lb
}

/// Keeps `ns`'s kernel off the data port, as an operator sharing a port
/// between net_af_packet and the kernel does: the kernel still sees every
/// frame of the port net_af_packet reads (a packet socket shares it), and
/// would answer, as its own, packets for the addresses keepalived puts on
/// the TAP. A netdev ingress hook drops them after packet sockets have
/// had them, so the dataplane still receives everything.
fn keep_the_kernel_off_the_port(ns: &Netns) {
    let rules = "table netdev lb_port {\n  chain ingress {\n    type filter hook ingress device \"eth0\" priority 0; policy drop;\n  }\n}\n";
    let mut nft = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft (scripts/setup installs nftables)");
    std::io::Write::write_all(&mut nft.stdin.take().unwrap(), rules.as_bytes()).unwrap();
    assert!(nft.wait().unwrap().success(), "nft took the rules");
}

/// keepalived in `ns`, in the foreground, VRRP only, its files in `dir`:
/// one instance on the TAP moving the VIP, as an operator writes it.
fn keepalived(ns: &Netns, dir: &Path, name: &str, priority: u8) -> Child {
    keepalived_moving(ns, dir, name, priority, LADDR)
}

/// [`keepalived`], its instance moving `also` with the VIP.
fn keepalived_moving(ns: &Netns, dir: &Path, name: &str, priority: u8, also: &str) -> Child {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n    router_id {name}\n}}\n\
             vrrp_instance VI_1 {{\n    state BACKUP\n    interface lbtap\n    virtual_router_id 51\n    priority {priority}\n    advert_int {ADVERT}\n    virtual_ipaddress {{\n        {VIP}/32 dev lbtap\n        {also}/32 dev lbtap\n    }}\n}}\n"
        ),
    )
    .unwrap();
    ns.command("keepalived")
        .args(["--dont-fork", "--log-console", "--vrrp", "--use-file"])
        .arg(&conf)
        .arg("--pid")
        .arg(dir.join(format!("{name}.pid")))
        .arg("--vrrp_pid")
        .arg(dir.join(format!("{name}-vrrp.pid")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start keepalived (scripts/setup installs it)")
}

/// Whether `lb`'s listing serves the VIP (no `standby`).
fn serves(lb: &Running) -> bool {
    let out = Command::new(lb_tests::binary::path("lb-ctl"))
        .env("LB_CTL_SOCKET", &lb.socket)
        .args(["-L", "-n"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains(&format!("TCP  {VIP}:80 rr")) && !text.contains("standby")
}

/// New connections at a steady rate: `curl` with a 1 s limit every
/// 100 ms from the client, counting answers and failures.
struct SteadyLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    /// The answers' bodies.
    seen: Arc<Mutex<Vec<String>>>,
    thread: std::thread::JoinHandle<()>,
}

impl SteadyLoad {
    fn start(client: &Netns) -> SteadyLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let client = client.name().to_owned();
        let thread = {
            let (stop, ok, failed, seen) = (stop.clone(), ok.clone(), failed.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let out = Command::new("ip")
                        .args(["netns", "exec", &client, "curl", "-s", "-m", "1"])
                        .arg(format!("http://{VIP}/"))
                        .output();
                    match out {
                        Ok(o) if o.status.success() => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            seen.lock()
                                .unwrap()
                                .push(String::from_utf8_lossy(&o.stdout).trim().to_owned());
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        SteadyLoad {
            stop,
            ok,
            failed,
            seen,
            thread,
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits up to 5 s for ten more answers than `since`.
    fn answered_again(&self, since: usize) -> bool {
        within(Duration::from_secs(5), || self.ok() >= since + 10).is_some()
    }

    /// Stops; (answered, failed).
    fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let counts = (self.ok.clone(), self.failed.clone());
        self.thread.join().unwrap();
        (
            counts.0.load(Ordering::Relaxed),
            counts.1.load(Ordering::Relaxed),
        )
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn keepalived_moves_the_vip_and_the_dataplanes_follow() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let topo = Routed::with_two_directors("ha", Reals::Plain, 1024).unwrap();
    let lb2 = topo.lb2.as_ref().unwrap();
    let tmp = TempDir::new("ha");
    // The data ports' MACs (lb is the bridge's second, lb2 its third): the
    // TAP has the same, so what the kernel sends leaves as the port's own.
    keep_the_kernel_off_the_port(&topo.lb);
    keep_the_kernel_off_the_port(lb2);
    let mut a = director(&topo.lb, "10.0.0.1", "02:00:00:00:01:02", None);
    let b = director(lb2, "10.0.0.2", "02:00:00:00:01:03", None);
    assert!(
        !serves(&a) && !serves(&b),
        "nobody serves before VRRP says so"
    );
    // A's keepalived first: it becomes master on its own; then B's, which
    // hears A's adverts and stays backup (started together, both could
    // be master for an advert, as VRRP allows at start).
    let mut ka = keepalived(&topo.lb, &tmp.0, "lbA", 150);
    assert!(
        within(Duration::from_secs(15), || serves(&a)).is_some(),
        "A became master and serves: {}",
        a.log()
    );
    // Both keepalived go with their namespaces if the test fails.
    let mut kb = keepalived(lb2, &tmp.0, "lbB", 100);
    std::thread::sleep(Duration::from_secs(5 * ADVERT));
    assert!(!serves(&b), "B stays on standby");
    assert!(serves(&a), "A still serves");
    let body = topo.curl(2, &[&format!("http://{VIP}/")]);
    let body = body.unwrap_or_else(|e| panic!("{e}: {}", a.counters()));
    assert!(
        body.contains(&format!(" saw {LADDR}")),
        "through the local address: {body}"
    );

    // A request every 100 ms from now on.
    let load = SteadyLoad::start(&topo.client);
    std::thread::sleep(Duration::from_secs(2));

    assert!(
        !b.log().contains(&format!("gained=[{VIP}]")),
        "B never held the VIP while A was master: {}",
        b.log()
    );

    // The master dies, keepalived and dataplane at once.
    kill(&mut ka);
    a.kill();
    let took = within(Duration::from_secs(10), || serves(&b))
        .unwrap_or_else(|| panic!("B never took over: {}", b.log()));
    // keepalived's backup waits three adverts and its skew time.
    assert!(
        took <= Duration::from_secs(3 * ADVERT + 1),
        "B serves the VIP {took:?} after the master died"
    );
    eprintln!("B serves the VIP {took:?} after the master died");
    assert!(
        load.answered_again(load.ok()),
        "requests are answered again through B"
    );
    assert!(
        load.seen
            .lock()
            .unwrap()
            .iter()
            .all(|s| s.ends_with(&format!(" saw {LADDR}"))),
        "answered through the local address, whichever director holds it"
    );
    let servers: std::collections::BTreeSet<String> = load
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| s.split(' ').next().map(str::to_owned))
        .collect();
    assert_eq!(
        servers.len(),
        3,
        "rr spreads over the three servers: {servers:?}"
    );

    // The master comes back and, with the higher priority, takes the VIP
    // back; B lets it go within an advert interval.
    a = director(&topo.lb, "10.0.0.1", "02:00:00:00:01:02", None);
    ka = keepalived(&topo.lb, &tmp.0, "lbA", 150);
    assert!(
        within(Duration::from_secs(15), || serves(&a)).is_some(),
        "A took the VIP back: {}",
        a.log()
    );
    assert!(
        within(Duration::from_secs(ADVERT + 1), || !serves(&b)).is_some(),
        "B released it"
    );
    assert!(
        load.answered_again(load.ok()),
        "requests are answered through A again"
    );
    let (ok, failed) = load.stop();
    kill(&mut ka);
    kill(&mut kb);
    // Each takeover costs at most its detection time (about 3.6 s of
    // requests at 10 a second) and the neighbours' relearning.
    eprintln!("{failed} of {} requests failed", failed + ok);
    assert!(failed <= 80, "{failed} of {} requests failed", failed + ok);
    let a_report = a.stop();
    let b_report = b.stop();
    for (name, report) in [("A", &a_report), ("B", &b_report)] {
        let sessions = report["engine"]["counters"]["sessions_created"]
            .as_u64()
            .unwrap_or(0);
        assert!(sessions > 0, "{name} carried connections: {report}");
    }
}

/// With connection sync, a connection survives the failover: a long-lived
/// HTTP/1.1 connection through the master's Full-NAT goes on through the
/// backup, which heard of it from the master and now holds the VIP and the
/// local address the real server answers.
#[test]
fn with_sync_a_full_nat_connection_survives_the_masters_death() {
    survives_the_masters_death("hs", "fnat");
}

/// The same in NAT: the real servers' gateway is a keepalived virtual
/// address (as NAT's real servers of a director pair have it), so their
/// answers go to whichever director holds it.
#[test]
fn with_sync_a_nat_connection_survives_the_masters_death() {
    survives_the_masters_death("hn", "nat");
}

fn survives_the_masters_death(tag: &str, mode: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let topo = Routed::with_two_directors(tag, Reals::Plain, 1024).unwrap();
    let floating = if mode == "nat" {
        for rs in &topo.servers {
            rs.ip(&["route", "replace", "default", "via", GATEWAY])
                .unwrap();
        }
        GATEWAY
    } else {
        LADDR
    };
    let lb2 = topo.lb2.as_ref().unwrap();
    let tmp = TempDir::new("ha-sync");
    keep_the_kernel_off_the_port(&topo.lb);
    keep_the_kernel_off_the_port(lb2);
    let mut a = director_in(
        &topo.lb,
        "10.0.0.1",
        "02:00:00:00:01:02",
        Some("10.0.0.2"),
        mode,
    );
    let b = director_in(lb2, "10.0.0.2", "02:00:00:00:01:03", Some("10.0.0.1"), mode);
    let mut ka = keepalived_moving(&topo.lb, &tmp.0, "lbA", 150, floating);
    assert!(
        within(Duration::from_secs(15), || serves(&a)).is_some(),
        "A became master: {}",
        a.log()
    );
    let mut kb = keepalived_moving(lb2, &tmp.0, "lbB", 100, floating);
    std::thread::sleep(Duration::from_secs(5 * ADVERT));
    assert!(!serves(&b), "B stays on standby");

    let load = SteadyLoad::start(&topo.client);
    let client = topo
        .client
        .command("python3")
        .args(["-c", lb_tests::routed::LONG_LIVED, VIP, "24"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let installed = |lb: &Running| {
        lb.counters()["total"]["sync_installed"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        within(Duration::from_secs(3), || installed(&b) >= 1).is_some(),
        "B heard of the connection: {}",
        b.counters()
    );
    kill(&mut ka);
    a.kill();
    let took = within(Duration::from_secs(10), || serves(&b))
        .unwrap_or_else(|| panic!("B never took over: {}", b.log()));
    eprintln!("B serves the VIP {took:?} after the master died");
    assert!(
        took <= Duration::from_secs(3 * ADVERT + 1),
        "B serves the VIP {took:?} after the master died"
    );
    assert!(
        load.answered_again(load.ok()),
        "new connections are answered through B"
    );
    // The master comes back: it hears of B's sessions as it starts (its
    // first datagram makes B send them all), then takes the VIP back.
    a = director_in(
        &topo.lb,
        "10.0.0.1",
        "02:00:00:00:01:02",
        Some("10.0.0.2"),
        mode,
    );
    assert!(
        within(Duration::from_secs(5), || installed(&a) >= 1).is_some(),
        "the returning master was told of the connection: {}",
        a.counters()
    );
    ka = keepalived_moving(&topo.lb, &tmp.0, "lbA", 150, floating);
    let back = within(Duration::from_secs(15), || serves(&a) && !serves(&b))
        .unwrap_or_else(|| panic!("A never took the VIP back: {}", a.log()));
    eprintln!("A took the VIP back {back:?} after its keepalived started");
    assert!(
        load.answered_again(load.ok()),
        "new connections are answered through A again"
    );
    let out = client.wait_with_output().unwrap();
    let (ok, failed) = load.stop();
    // Each move costs new connections at most its detection time (about
    // 3.6 s of requests at 10 a second, the master's death; none, the
    // master's return) and the neighbours' relearning.
    eprintln!("{failed} of {} new connections failed", failed + ok);
    assert!(failed <= 45, "{failed} of {} requests failed", failed + ok);
    let lines = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the connection broke: {}\n{lines}\n{}",
        String::from_utf8_lossy(&out.stderr),
        b.counters()
    );
    let answers: Vec<&str> = lines.lines().collect();
    assert!(answers.len() > 50, "{} answers", answers.len());
    assert!(
        answers.iter().all(|l| *l == answers[0]),
        "one server, one address seen, all along: {answers:?}"
    );
    let seen = if mode == "nat" { "10.9.0.2" } else { LADDR };
    assert!(
        answers[0].ends_with(&format!(" saw {seen}")),
        "{}",
        answers[0]
    );
    let counters = b.counters();
    assert!(
        counters["sync"]["records_received"].as_u64().unwrap_or(0) >= 2,
        "{counters}"
    );
    for refused in ["bad_auth", "replayed", "malformed", "unknown_peer"] {
        assert_eq!(counters["sync"][refused], 0, "{refused}: {counters}");
    }
    // The metrics say the same.
    let scraped = lb2
        .command("curl")
        .args(["-sS", "--max-time", "10", "http://127.0.0.1:9110/metrics"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&scraped.stdout);
    let sample = |line: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
    };
    assert!(sample("lb_sync_events_total{event=\"records_received\"}") >= 2);
    assert_eq!(sample("lb_sync_drops_total{reason=\"bad_auth\"}"), 0);
    kill(&mut ka);
    kill(&mut kb);
}
