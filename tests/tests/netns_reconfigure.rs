//! A long-lived TCP connection through the load balancer survives a
//! thousand configuration changes of other services, made over the admin
//! socket while it carries traffic, and no worker is held up by them.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lb_tests::binary;
use lb_tests::dataplane::Running;
use lb_tests::topology::{ClientNet, OneArm, ServerSetup};
use serde_json::{json, Value};

const ECHO_SERVER: &str = r#"
import socketserver, sys
class H(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(('0.0.0.0', int(sys.argv[1])), H).serve_forever()
"#;

/// Holds one connection, sends a line every 20 ms and checks its echo, for
/// the given seconds; prints "ok N" or "fail ...".
const LONG_CLIENT: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
f = s.makefile('rwb')
end = time.time() + float(sys.argv[3])
n = 0
try:
    while time.time() < end:
        msg = b'ping %d\n' % n
        f.write(msg); f.flush()
        if f.readline() != msg:
            print('fail wrong echo at', n); sys.exit(1)
        n += 1
        time.sleep(0.02)
    print('ok', n)
except Exception as e:
    print('fail', n, type(e).__name__, e); sys.exit(1)
"#;

fn call(w: &mut UnixStream, r: &mut BufReader<UnixStream>, mut req: Value) -> Value {
    req["v"] = json!(1);
    w.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let a: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(a["ok"], json!(true), "{req} -> {a}");
    a["data"].clone()
}

#[test]
fn long_connection_survives_a_thousand_changes() {
    let mut topo = OneArm::new("rc", 2, 8080, ClientNet::Routed, ServerSetup::Plain).unwrap();
    topo.spawn_on_servers(ECHO_SERVER, &["9000"]).unwrap();
    topo.wait_for_servers(9000).unwrap();
    // The echo service (A) the connection uses, and an HTTP one (B).
    let lb = Running::start(&topo.lb, &hup_config(&["10.0.0.10"], ""), 120);
    let socket = lb.socket.clone();

    let client = topo
        .client
        .command("python3")
        .args(["-c", LONG_CLIENT, "198.18.0.10", "9000", "8"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let mut w = UnixStream::connect(&socket).unwrap();
    w.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = BufReader::new(w.try_clone().unwrap());
    let started = Instant::now();
    let mut changes = 0;
    for i in 0..250u16 {
        let other = json!({"protocol": "tcp", "vip": "198.18.0.20", "port": 1000 + i});
        call(
            &mut w,
            &mut r,
            json!({"op": "add_service", "service": other}),
        );
        call(
            &mut w,
            &mut r,
            json!({"op": "add_real", "service": other, "real": {"address": "10.0.0.10", "mode": "dr"}}),
        );
        call(
            &mut w,
            &mut r,
            json!({"op": "edit_real", "service": other, "real": {"address": "10.0.0.10", "weight": 5}}),
        );
        call(
            &mut w,
            &mut r,
            json!({"op": "del_service", "service": other}),
        );
        changes += 4;
    }
    let took = started.elapsed();
    let version = call(&mut w, &mut r, json!({"op": "list"}))["version"]
        .as_u64()
        .unwrap();
    assert_eq!(version, 1 + changes, "every change published");

    let out = client.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.starts_with("ok "), "the long connection broke: {out}");
    let pings: u32 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(pings > 100, "{out}");

    let report = lb.stop();
    let gap = report["workers"][0]["counters"]["max_loop_gap_ns"]
        .as_u64()
        .unwrap();
    eprintln!("{changes} changes in {took:?} while {pings} echoes went through; the worker's longest loop gap was {} us", gap / 1000);
    let svc = report["engine"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == json!("TCP 198.18.0.10:9000"))
        .expect("the echo service in the report");
    assert_eq!(
        svc["conns"].as_u64(),
        Some(1),
        "one connection, never re-made: {svc}"
    );
    assert_eq!(
        report["engine"]["counters"]["drop_no_session"].as_u64(),
        Some(0),
        "{report}"
    );
}

/// The configuration of the SIGHUP test: service A (the echo, port 9000)
/// always on both servers, service B (HTTP, port 80) on `b_reals`, with
/// `b_extra` in B's section.
fn hup_config(b_reals: &[&str], b_extra: &str) -> String {
    let reals: String = b_reals
        .iter()
        .map(|a| format!("[[service.real]]\naddress = \"{a}\"\nport = 8080\nmode = \"fnat\"\n"))
        .collect();
    format!(
        r#"
[eal]
args = ["--no-huge", "--no-shconf", "-m", "256", "--no-pci", "--log-level=lib.eal:warning", "--vdev=net_af_packet0,iface=eth0"]
[workers]
lcores = [1]
[sessions]
capacity = 65536
[[port]]
name = "net_af_packet0"
addresses = ["10.0.0.1/24", "10.9.0.1/24"]
[[service]]
protocol = "tcp"
vip = "198.18.0.10"
port = 9000
scheduler = "rr"
local_addresses = ["10.0.0.100"]
[[service.real]]
address = "10.0.0.10"
mode = "fnat"
[[service.real]]
address = "10.0.0.11"
mode = "fnat"
[[service]]
protocol = "tcp"
vip = "198.18.0.10"
port = 80
scheduler = "rr"
local_addresses = ["10.0.0.100"]
{b_extra}
{reals}
"#
    )
}

#[test]
fn sighup_reloads_the_file_and_a_broken_file_changes_nothing() {
    let mut topo = OneArm::new("hu", 2, 8080, ClientNet::Routed, ServerSetup::Plain).unwrap();
    topo.spawn_on_servers(ECHO_SERVER, &["9000"]).unwrap();
    topo.wait_for_servers(9000).unwrap();
    let lb = Running::start(&topo.lb, &hup_config(&["10.0.0.10"], ""), 120);
    let check = std::process::Command::new(binary::path("lb-dataplane"))
        .arg("--check")
        .arg("-c")
        .arg(&lb.config)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("valid, a load balancer with 2 services"),
        "{check:?}"
    );
    let servers_of_b = || -> Vec<String> {
        (0..6)
            .map(|i| {
                let body = topo
                    .get("http://198.18.0.10/")
                    .unwrap_or_else(|e| panic!("request {i}: {e}"));
                body.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    assert!(servers_of_b().iter().all(|s| s == "rs0"));

    let client = topo
        .client
        .command("python3")
        .args(["-c", LONG_CLIENT, "198.18.0.10", "9000", "6"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // B moves to the other server; A, untouched, keeps its connection.
    std::fs::write(&lb.config, hup_config(&["10.0.0.11"], "")).unwrap();
    lb.signal("HUP");
    lb.wait_log("reloaded");
    assert!(
        servers_of_b().iter().all(|s| s == "rs1"),
        "B took the new real"
    );
    const NOT_APPLIED: &str = "differ from those the process started with";
    assert!(!lb.log().contains(NOT_APPLIED), "{}", lb.log());

    // A setting that needs a restart: the services still apply, and the
    // log says what was not.
    std::fs::write(
        &lb.config,
        hup_config(&["10.0.0.11"], "").replace("capacity = 65536", "capacity = 32768"),
    )
    .unwrap();
    lb.signal("HUP");
    lb.wait_log(NOT_APPLIED);

    // A broken file: refused with the reason, and nothing changes.
    std::fs::write(&lb.config, hup_config(&["10.0.0.300"], "")).unwrap();
    lb.signal("HUP");
    lb.wait_log("reload refused, nothing changed");
    let log = lb.log();
    assert!(
        log.contains("10.0.0.300"),
        "the log names what is wrong:\n{log}"
    );
    assert!(
        servers_of_b().iter().all(|s| s == "rs1"),
        "still the reloaded state"
    );

    let out = client.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.starts_with("ok "), "the long connection broke: {out}");
    lb.stop();
}
