//! Health checks through the exception path: while a client sends a
//! steady load through the VIP, one real server dies; requests fail only
//! until its checks fail `fall` times, then none; when it comes back it
//! gets traffic again. The checks run in the dataplane's control thread as
//! kernel sockets, leaving through the TAP that carries the DIP.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lb_tests::binary;
use lb_tests::golden::TempDir;
use lb_tests::topology::{ClientNet, OneArm, ServerSetup};
use serde_json::{json, Value};

/// Requests for the given seconds; prints "<unix time> ok <server>" or
/// "<unix time> fail".
const CLIENT: &str = r#"
import sys, time, urllib.request
url, secs = sys.argv[1], float(sys.argv[2])
start = time.time()
while time.time() - start < secs:
    t = time.time()
    try:
        body = urllib.request.urlopen(url, timeout=1).read().decode()
        print('%.3f ok %s' % (t, body.split()[0]), flush=True)
    except Exception as e:
        print('%.3f fail %s' % (t, type(e).__name__), flush=True)
    time.sleep(0.01)
"#;

fn admin(socket: &std::path::Path, op: &str) -> Value {
    let mut w = UnixStream::connect(socket).unwrap();
    let mut r = BufReader::new(w.try_clone().unwrap());
    w.write_all(format!("{}\n", json!({"v": 1, "op": op})).as_bytes())
        .unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    serde_json::from_str::<Value>(&line).unwrap()["data"].clone()
}

#[test]
fn a_dead_server_is_taken_out_and_comes_back() {
    let mut topo = OneArm::new("hc", 3, 8080, ClientNet::Routed, ServerSetup::Plain).unwrap();
    let tmp = TempDir::new("health");
    let socket = tmp.0.join("admin.sock");
    let config = tmp.0.join("lb.toml");
    std::fs::write(
        &config,
        r#"
[eal]
args = ["--no-huge", "--no-shconf", "-m", "256", "--no-pci", "--log-level=lib.eal:warning",
        "--vdev=net_af_packet0,iface=eth0", "--vdev=net_tap0,iface=lbtap,mac=02:00:00:00:00:01"]
[workers]
lcores = [1]
[sessions]
capacity = 65536
[[port]]
name = "net_af_packet0"
addresses = ["10.0.0.1/24", "10.9.0.1/24"]
[[port]]
name = "net_tap0"
[exception]
port = "net_tap0"
interface = "lbtap"
addresses = ["10.0.0.1/24"]
[[service]]
protocol = "tcp"
vip = "198.18.0.10"
port = 80
scheduler = "rr"
local_addresses = ["10.0.0.100"]
[service.health]
kind = "http"
path = "/"
expect = 200
interval_ms = 200
timeout_ms = 300
rise = 2
fall = 2
[[service.real]]
address = "10.0.0.10"
port = 8080
mode = "fnat"
[[service.real]]
address = "10.0.0.11"
port = 8080
mode = "fnat"
[[service.real]]
address = "10.0.0.12"
port = 8080
mode = "fnat"
"#,
    )
    .unwrap();
    let mut lb = topo
        .lb
        .command(binary::path("lb-dataplane"))
        .arg("--config")
        .arg(&config)
        .arg("--admin-socket")
        .arg(&socket)
        .args(["--duration", "120"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = lb.stderr.take().unwrap();
    lb_tests::dataplane::wait_for_log(&mut stderr, "admin socket ready");
    let log = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    // The checks go through the TAP and succeed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = admin(&socket, "health");
        let servers = h["servers"].as_array().cloned().unwrap_or_default();
        if servers.len() == 3 && servers.iter().all(|s| s["last"] == json!("ok")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health checks never succeeded: {h}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let client = topo
        .client
        .command("python3")
        .args(["-c", CLIENT, "http://198.18.0.10/", "9"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let epoch = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    std::thread::sleep(Duration::from_secs(2));
    let kill_at = epoch();
    topo.stop_server(0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let down = admin(&socket, "health");
    topo.start_server(0, 8080).unwrap();
    let restart_at = epoch();
    let out = client.wait_with_output().unwrap();

    let lines: Vec<(f64, bool, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.parse().ok()?,
                w.next()? == "ok",
                w.next().unwrap_or("").to_owned(),
            ))
        })
        .collect();
    let failures: Vec<f64> = lines.iter().filter(|l| !l.1).map(|l| l.0).collect();
    assert!(lines.len() > 100, "too few requests: {}", lines.len());
    // Failures only in the window the checks need to notice (fall 2 x 200
    // ms, a 300 ms timeout, and some slack for this busy machine).
    for f in &failures {
        assert!(
            (kill_at - 0.05..kill_at + 2.0).contains(f),
            "a request failed {:.2}s after the kill, outside the window: {:?}",
            f - kill_at,
            failures.iter().map(|x| x - kill_at).collect::<Vec<_>>()
        );
    }
    let rs0_after = lines
        .iter()
        .filter(|l| l.1 && l.2 == "rs0" && l.0 > restart_at + 1.5)
        .count();
    let rs0_down = lines
        .iter()
        .filter(|l| l.1 && l.2 == "rs0" && l.0 > kill_at + 2.0 && l.0 < restart_at)
        .count();
    assert_eq!(rs0_down, 0, "rs0 answered while down");
    assert!(rs0_after > 0, "rs0 got no traffic after coming back");
    let servers = down["servers"].as_array().unwrap();
    assert_eq!(
        servers
            .iter()
            .filter(|s| s["state"] == json!("down"))
            .count(),
        1,
        "{down}"
    );

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &lb.id().to_string()])
        .status();
    lb.wait().unwrap();
    let log = log.join().unwrap();
    assert!(log.contains("real server failed its health check"), "{log}");
    assert!(log.contains("real server is healthy again"), "{log}");
    eprintln!(
        "{} requests, {} failed, between {:.2}s and {:.2}s after the kill",
        lines.len(),
        failures.len(),
        failures.first().map_or(0.0, |f| f - kill_at),
        failures.last().map_or(0.0, |f| f - kill_at)
    );
}
