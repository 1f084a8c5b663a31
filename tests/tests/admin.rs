//! The admin socket of a running dataplane: permissions, the operations
//! lb-ctl needs, refused changes leaving the state as it was, and garbage,
//! oversized requests and concurrent clients.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use lb_tests::dataplane::Idle;
use serde_json::{json, Value};

fn start() -> Idle {
    Idle::start(&lb_tests::golden::root().join("lb-fnat-one-arm/config.toml"))
}

struct Client {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Client {
    fn new(path: &Path) -> Client {
        let w = UnixStream::connect(path).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Client { w, r }
    }

    fn raw(&mut self, line: &[u8]) -> Value {
        self.w.write_all(line).unwrap();
        self.w.write_all(b"\n").unwrap();
        let mut answer = String::new();
        self.r.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
    }

    fn call(&mut self, mut req: Value) -> Result<Value, String> {
        req["v"] = json!(1);
        let a = self.raw(req.to_string().as_bytes());
        if a["ok"] == json!(true) {
            Ok(a["data"].clone())
        } else {
            Err(a["error"].as_str().unwrap_or_default().to_owned())
        }
    }
}

fn svc(port: u16) -> Value {
    json!({"protocol": "tcp", "vip": "198.18.0.20", "port": port})
}

#[test]
fn admin_socket() {
    let dp = start();
    let mode = std::fs::metadata(&dp.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is for its owner only");

    let mut c = Client::new(&dp.socket);
    assert_eq!(
        c.call(json!({"op": "version"})).unwrap()["protocol"],
        json!(1)
    );
    let list = c.call(json!({"op": "list"})).unwrap();
    assert_eq!(list["services"].as_array().unwrap().len(), 2, "{list}");

    // ipvsadm -A, -a, -e, -d, -D.
    c.call(json!({"op": "add_service", "service": {"protocol": "tcp", "vip": "198.18.0.20", "port": 80, "scheduler": "wrr"}})).unwrap();
    c.call(json!({"op": "add_real", "service": svc(80), "real": {"address": "10.0.0.5", "mode": "dr", "weight": 3}})).unwrap();
    c.call(json!({"op": "add_real", "service": svc(80), "real": {"address": "10.0.0.6", "mode": "dr"}})).unwrap();
    c.call(json!({"op": "edit_real", "service": svc(80), "real": {"address": "10.0.0.6", "weight": 0}})).unwrap();
    let list = c.call(json!({"op": "list"})).unwrap();
    let s = list["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["vip"] == json!("198.18.0.20"))
        .unwrap()
        .clone();
    assert_eq!(s["scheduler"], json!("wrr"));
    assert_eq!(s["reals"][0]["weight"], json!(3));
    assert_eq!(s["reals"][0]["port"], json!(80), "no port: the VIP's");
    assert_eq!(s["reals"][1]["weight"], json!(0));
    assert_eq!(s["reals"][1]["forward"], json!("Route"));

    // Refused changes leave the running state exactly as it was.
    let before = c.call(json!({"op": "dump"})).unwrap();
    let e = c.call(json!({"op": "add_real", "service": svc(80), "real": {"address": "10.0.0.7", "port": 8080, "mode": "dr"}})).unwrap_err();
    assert!(e.contains("cannot change the destination port"), "{e}");
    let e = c.call(json!({"op": "add_service", "service": {"protocol": "tcp", "vip": "198.18.0.20", "port": 80}})).unwrap_err();
    assert!(e.contains("exists already"), "{e}");
    let e = c.call(json!({"op": "edit_service", "service": {"protocol": "tcp", "vip": "198.18.0.20", "port": 80, "scheduler": "fastest"}})).unwrap_err();
    assert!(e.contains("valid schedulers: rr, wrr"), "{e}");
    let e = c.call(json!({"op": "apply", "toml": "[[service]]\nprotocol = \"tcp\"\nvip = \"198.18.0.30\"\nport = 1\n[[service.real]]\naddress = \"10.0.0.5\"\nmode = \"fnat\"\n"})).unwrap_err();
    assert!(e.contains("no local addresses"), "{e}");
    assert_eq!(c.call(json!({"op": "dump"})).unwrap(), before);

    // Garbage, a wrong version and an unknown operation: errors, and the
    // connection goes on.
    let a = c.raw(b"this is not json");
    assert_eq!(a["ok"], json!(false));
    assert!(
        a["error"].as_str().unwrap().contains("not a JSON request"),
        "{a}"
    );
    let a = c.raw(br#"{"v": 9, "op": "list"}"#);
    assert!(
        a["error"].as_str().unwrap().contains("protocol version 9"),
        "{a}"
    );
    let a = c.raw(br#"{"v": 1, "op": "reboot"}"#);
    assert!(
        a["error"].as_str().unwrap().contains("unknown variant"),
        "{a}"
    );
    // A 100 MB request is refused without being kept; then business as usual.
    let big = vec![b'x'; 100 << 20];
    let a = c.raw(&big);
    assert!(a["error"].as_str().unwrap().contains("at most"), "{a}");
    assert_eq!(
        c.call(json!({"op": "version"})).unwrap()["protocol"],
        json!(1)
    );

    // Apply a whole desired state: dry run first.
    let desired = "[timeouts]\ntcp = 600\n\n[[service]]\nprotocol = \"udp\"\nvip = \"198.18.0.40\"\nport = 53\n\n[[service.real]]\naddress = \"10.0.0.5\"\nmode = \"nat\"\n";
    let d = c
        .call(json!({"op": "apply", "toml": desired, "dry_run": true}))
        .unwrap();
    assert_eq!(d["applied"], json!(false));
    let diff: Vec<String> = d["diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect();
    assert!(
        diff.contains(&"+ service UDP 198.18.0.40:53".to_owned()),
        "{diff:?}"
    );
    assert!(
        diff.contains(&"- service TCP 198.18.0.10:80".to_owned()),
        "{diff:?}"
    );
    assert!(diff.contains(&"~ timeouts".to_owned()), "{diff:?}");
    assert_eq!(
        c.call(json!({"op": "dump"})).unwrap(),
        before,
        "a dry run changes nothing"
    );
    c.call(json!({"op": "apply", "toml": desired})).unwrap();
    let list = c.call(json!({"op": "list"})).unwrap();
    assert_eq!(list["services"].as_array().unwrap().len(), 1);
    assert_eq!(
        c.call(json!({"op": "get_timeouts"})).unwrap()["tcp"],
        json!(600)
    );

    // Concurrent clients.
    let threads: Vec<_> = (0..10)
        .map(|i| {
            let path = dp.socket.clone();
            std::thread::spawn(move || {
                let mut c = Client::new(&path);
                for j in 0..20 {
                    let port = 1000 + i * 100 + j;
                    c.call(json!({"op": "add_service", "service": {"protocol": "tcp", "vip": "198.18.0.50", "port": port}})).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let list = c.call(json!({"op": "list"})).unwrap();
    assert_eq!(list["services"].as_array().unwrap().len(), 201);
    c.call(json!({"op": "clear"})).unwrap();
    assert_eq!(
        c.call(json!({"op": "list"})).unwrap()["services"],
        json!([])
    );

    // Counters and connections answer, per worker.
    let counters = c.call(json!({"op": "counters"})).unwrap();
    assert!(counters["total"]["rx_packets"].is_u64(), "{counters}");
    assert_eq!(counters["workers"].as_array().unwrap().len(), 1);
    assert_eq!(
        c.call(json!({"op": "connections"})).unwrap()["connections"],
        json!([])
    );
    c.call(json!({"op": "zero"})).unwrap();
}

/// Waits until the worker's `garp_sent` reaches `want` and returns it (or
/// what it was after ten seconds).
fn garps_reach(c: &mut Client, want: u64) -> u64 {
    let mut got = 0;
    for _ in 0..200 {
        got = c.call(json!({"op": "counters"})).unwrap()["workers"][0]["dataplane"]["counters"]
            ["garp_sent"]
            .as_u64()
            .unwrap();
        if got >= want {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    got
}

#[test]
fn owned_addresses_are_announced_once() {
    let dp = start();
    let mut c = Client::new(&dp.socket);
    // At start: the port's 10.0.0.1, the VIP and the local address.
    assert_eq!(garps_reach(&mut c, 3), 3);
    c.call(json!({"op": "add_service", "service": svc(80)}))
        .unwrap();
    assert_eq!(garps_reach(&mut c, 4), 4, "the new VIP");
    // The same VIP on another port is nothing new; a new VIP with a new
    // local address is two more.
    c.call(json!({"op": "add_service", "service": svc(81)}))
        .unwrap();
    c.call(json!({"op": "add_service", "service": {"protocol": "udp", "vip": "198.18.0.21", "port": 53, "local_addresses": ["10.0.0.101"]}})).unwrap();
    assert_eq!(garps_reach(&mut c, 6), 6);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(garps_reach(&mut c, 6), 6, "nothing announced twice");
}

#[test]
fn a_configured_group_may_use_the_socket() {
    use std::os::unix::fs::MetadataExt;
    let tmp = lb_tests::golden::TempDir::new("group");
    let config = tmp.0.join("lb.toml");
    let base =
        std::fs::read_to_string(lb_tests::golden::root().join("lb-fnat-one-arm/config.toml"))
            .unwrap();
    std::fs::write(&config, format!("{base}\n[admin]\ngroup = \"nogroup\"\n")).unwrap();
    let dp = Idle::start(&config);
    let meta = std::fs::metadata(&dp.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 65534, "nogroup's id on Debian");
    let mut c = Client::new(&dp.socket);
    assert_eq!(
        c.call(json!({"op": "version"})).unwrap()["protocol"],
        json!(1)
    );
}

/// `lb-ctl -L -n` against the socket of `dp`; its output.
fn listing(dp: &Idle) -> String {
    let out = std::process::Command::new(lb_tests::binary::path("lb-ctl"))
        .env("LB_CTL_SOCKET", &dp.socket)
        .args(["-L", "-n"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lb-ctl -L -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn idle_clients_cannot_lock_the_operator_out() {
    let dp = start();
    // 200 connections that say nothing, held open: more than the 64 slots.
    let idle: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(&dp.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(listing(&dp).contains("IP Virtual Server"));
    // The ones that lost their slot were closed: they read the end.
    let mut closed = 0;
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut b = [0u8; 1];
        if matches!(std::io::Read::read(&mut s, &mut b), Ok(0)) {
            closed += 1;
        }
    }
    assert!(closed >= 200 - 64, "{closed} of 200 idle clients closed");
    let mut c = Client::new(&dp.socket);
    let admin = c.call(json!({"op": "counters"})).unwrap()["admin"].clone();
    assert!(admin["evicted"].as_u64().unwrap() > 200 - 64, "{admin}");
}

#[test]
fn idle_and_slow_clients_are_timed_out() {
    let tmp = lb_tests::golden::TempDir::new("timeouts");
    let config = tmp.0.join("lb.toml");
    let base =
        std::fs::read_to_string(lb_tests::golden::root().join("lb-fnat-one-arm/config.toml"))
            .unwrap();
    std::fs::write(
        &config,
        format!("{base}\n[admin]\nidle_timeout = 0.5\nrequest_timeout = 0.5\n"),
    )
    .unwrap();
    let dp = Idle::start(&config);
    let read_end = |s: &mut UnixStream| -> Vec<u8> {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut all = Vec::new();
        let _ = std::io::Read::read_to_end(s, &mut all);
        all
    };
    // Silent: closed after the idle time, with nothing said.
    let started = std::time::Instant::now();
    let mut silent = UnixStream::connect(&dp.socket).unwrap();
    assert!(read_end(&mut silent).is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // Half a request, then nothing: told why, then closed.
    let mut slow = UnixStream::connect(&dp.socket).unwrap();
    slow.write_all(b"{\"v\": 1, \"op\": ").unwrap();
    let said = String::from_utf8(read_end(&mut slow)).unwrap();
    assert!(said.contains("did not arrive whole"), "{said:?}");
    // A client that keeps asking is served for as long as it asks.
    let mut busy = Client::new(&dp.socket);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(200));
        busy.call(json!({"op": "version"})).unwrap();
    }
    let admin = busy.call(json!({"op": "counters"})).unwrap()["admin"].clone();
    assert_eq!(admin["closed_idle"], json!(1), "{admin}");
    assert_eq!(admin["closed_slow"], json!(1), "{admin}");
    assert_eq!(admin["clients"], json!(1), "{admin}");
}

#[test]
fn another_protocol_version_is_told_apart() {
    let dp = start();
    let mut c = Client::new(&dp.socket);
    // `version` is answered in any version, so a client can find out.
    let a = c.raw(br#"{"v": 2, "op": "version"}"#);
    assert_eq!(a["ok"], json!(true), "{a}");
    assert_eq!(a["data"]["protocol"], json!(1), "{a}");
    // Anything else in another version is refused with a code saying so.
    let a = c.raw(br#"{"v": 2, "op": "list"}"#);
    assert_eq!(a["ok"], json!(false), "{a}");
    assert_eq!(a["code"], json!("version"), "{a}");
    // A refused operation has no such code.
    let a = c.raw(br#"{"v": 1, "op": "del_service", "service": {"protocol": "tcp", "vip": "198.18.9.9", "port": 1}}"#);
    assert_eq!(a["ok"], json!(false), "{a}");
    assert!(a.get("code").is_none(), "{a}");
}
