//! The admin protocol's wire format, pinned by the fixtures in
//! `tests/protocol/`: for each exchange, the request line exactly as
//! lb-ctl sends it (`NN-name.request.json`) and the dataplane's answer
//! (`NN-name.answer.json`, pretty-printed).
//!
//! Two checks hold them to both programs:
//! - the protocol's types (which lb-ctl and lb-dataplane compile against)
//!   write each request byte for byte and read each answer back to the
//!   same JSON, values included;
//! - a running dataplane, asked each request in turn, answers with the
//!   fixture's shape: the same fields, nested the same way, of the same
//!   JSON types (values differ from run to run: counters, ages).
//!
//! A deliberate change to the protocol is re-recorded with
//! `LB_BLESS=1 cargo test -p lb-tests --test protocol`, and shows in
//! review as a change to the fixtures.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lb_admin_proto::{
    decode_request, Applied, Committed, Connections, Counters, Dump, Empty, Health, List,
    Neighbors, Op, RealDef, Reply, Routes, ServiceDef, Stalls, Timeouts, VersionInfo,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol")
}

fn service(port: u16) -> ServiceDef {
    ServiceDef {
        protocol: "tcp".into(),
        vip: "198.18.0.30".into(),
        port,
        ..ServiceDef::default()
    }
}

/// The exchanges, in the order they are made: a request, or a raw line
/// for what no lb-ctl sends.
fn exchanges() -> Vec<(&'static str, Result<Op, &'static str>)> {
    let real = |weight| RealDef {
        address: "10.0.0.7".into(),
        port: Some(8080),
        mode: Some("fnat".into()),
        weight,
        ..RealDef::default()
    };
    vec![
        ("version", Ok(Op::Version)),
        ("list", Ok(Op::List)),
        (
            "add-service",
            Ok(Op::AddService {
                service: ServiceDef {
                    scheduler: Some("rr".into()),
                    persistence: Some(300),
                    netmask: Some(24),
                    local_addresses: Some(vec!["10.0.0.100".into()]),
                    ..service(443)
                },
            }),
        ),
        (
            "edit-service",
            Ok(Op::EditService {
                service: ServiceDef {
                    scheduler: Some("mh".into()),
                    flags: Some("mh-port".into()),
                    ..service(443)
                },
            }),
        ),
        (
            "add-real",
            Ok(Op::AddReal {
                service: service(443),
                real: real(Some(2)),
            }),
        ),
        (
            "edit-real",
            Ok(Op::EditReal {
                service: service(443),
                real: RealDef {
                    upper: Some(100),
                    lower: Some(10),
                    ..real(Some(3))
                },
            }),
        ),
        (
            "del-real",
            Ok(Op::DelReal {
                service: service(443),
                real: RealDef {
                    address: "10.0.0.7".into(),
                    port: Some(8080),
                    ..RealDef::default()
                },
            }),
        ),
        (
            "del-service",
            Ok(Op::DelService {
                service: service(443),
            }),
        ),
        (
            "refused",
            Ok(Op::DelService {
                service: service(443),
            }),
        ),
        ("other-version", Err("{\"v\":99,\"op\":\"list\"}\n")),
        (
            "add-fwmark-service",
            Ok(Op::AddService {
                service: ServiceDef {
                    fwmark: Some(5),
                    matches: Some(vec![
                        "tcp:198.18.0.50/32:80,443".into(),
                        "udp:198.18.0.50/32:*".into(),
                    ]),
                    scheduler: Some("rr".into()),
                    persistence: Some(600),
                    ..ServiceDef::default()
                },
            }),
        ),
        (
            "add-fwmark-real",
            Ok(Op::AddReal {
                service: ServiceDef {
                    fwmark: Some(5),
                    ..ServiceDef::default()
                },
                real: RealDef {
                    address: "10.0.0.6".into(),
                    mode: Some("dr".into()),
                    weight: Some(1),
                    ..RealDef::default()
                },
            }),
        ),
        ("list-with-fwmark", Ok(Op::List)),
        ("get-timeouts", Ok(Op::GetTimeouts)),
        (
            "set-timeouts",
            Ok(Op::SetTimeouts {
                tcp: 900,
                tcpfin: 0,
                udp: 300,
            }),
        ),
        (
            "connections",
            Ok(Op::Connections {
                offset: 0,
                limit: 100,
            }),
        ),
        ("counters", Ok(Op::Counters)),
        ("health", Ok(Op::Health)),
        (
            "add-route",
            Ok(Op::AddRoute {
                prefix: "10.9.0.0/16".into(),
                port: "net_pcap0".into(),
                gateway: Some("10.0.0.2".into()),
            }),
        ),
        ("routes", Ok(Op::Routes)),
        (
            "del-route",
            Ok(Op::DelRoute {
                prefix: "10.9.0.0/16".into(),
            }),
        ),
        (
            "add-neighbor",
            Ok(Op::AddNeighbor {
                address: "10.0.0.9".into(),
                mac: "02:00:00:00:02:09".into(),
                port: "net_pcap0".into(),
            }),
        ),
        ("neighbors", Ok(Op::Neighbors)),
        (
            "del-neighbor",
            Ok(Op::DelNeighbor {
                address: "10.0.0.9".into(),
            }),
        ),
        ("dump", Ok(Op::Dump)),
        (
            "apply",
            Ok(Op::Apply {
                toml: "[[service]]\nprotocol = \"udp\"\nvip = \"198.18.0.40\"\nport = 53\n".into(),
                dry_run: true,
            }),
        ),
        ("zero", Ok(Op::Zero)),
        ("clear", Ok(Op::Clear)),
        ("stalls", Ok(Op::Stalls)),
    ]
}

fn file(n: usize, name: &str, kind: &str) -> PathBuf {
    dir().join(format!("{:02}-{name}.{kind}.json", n + 1))
}

fn line_of(req: &Result<Op, &str>) -> String {
    match req {
        Ok(op) => op.to_line(),
        Err(raw) => (*raw).to_owned(),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (record the fixtures with LB_BLESS=1 cargo test -p lb-tests --test protocol)",
            path.display()
        )
    })
}

/// `text` read as a reply of `T` and written again.
fn reread<T: DeserializeOwned + Serialize>(text: &str) -> Value {
    let reply: Reply<T> = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{e}: not a {} reply:\n{text}", std::any::type_name::<T>()));
    serde_json::to_value(&reply).unwrap()
}

/// The answer type each operation is documented to give.
fn reread_answer(op: &Op, text: &str) -> Value {
    match op {
        Op::Version => reread::<VersionInfo>(text),
        Op::List => reread::<List>(text),
        Op::AddService { .. }
        | Op::EditService { .. }
        | Op::DelService { .. }
        | Op::AddReal { .. }
        | Op::EditReal { .. }
        | Op::DelReal { .. }
        | Op::Clear
        | Op::SetTimeouts { .. }
        | Op::AddRoute { .. }
        | Op::DelRoute { .. } => reread::<Committed>(text),
        Op::Zero => reread::<Empty>(text),
        Op::GetTimeouts => reread::<Timeouts>(text),
        Op::Connections { .. } => reread::<Connections>(text),
        Op::Counters => reread::<Counters>(text),
        Op::Health => reread::<Health>(text),
        Op::Routes => reread::<Routes>(text),
        Op::Neighbors => reread::<Neighbors>(text),
        Op::AddNeighbor { .. } | Op::DelNeighbor { .. } => reread::<Empty>(text),
        Op::Stalls => reread::<Stalls>(text),
        Op::Dump => reread::<Dump>(text),
        Op::Apply { .. } => reread::<Applied>(text),
    }
}

#[test]
fn the_types_write_and_read_the_fixtures_exactly() {
    if std::env::var_os("LB_BLESS").is_some() {
        return; // the other test is writing them
    }
    for (n, (name, req)) in exchanges().iter().enumerate() {
        let request = read(&file(n, name, "request"));
        assert_eq!(
            request,
            line_of(req),
            "{name}: the request line changed (LB_BLESS=1 re-records the fixtures)"
        );
        if let Ok(op) = req {
            assert_eq!(
                decode_request(request.trim_end().as_bytes()).as_ref(),
                Ok(op),
                "{name}"
            );
        }
        let answer = read(&file(n, name, "answer"));
        let as_read: Value = serde_json::from_str(&answer).unwrap();
        let again = match (req, as_read["ok"].as_bool()) {
            (Ok(op), Some(true)) => reread_answer(op, &answer),
            _ => reread::<Empty>(&answer),
        };
        assert_eq!(
            again, as_read,
            "{name}: the answer's types lose or add something"
        );
    }
}

/// Where `live` differs in shape from `fixture`: fields, nesting, JSON
/// types. A null on either side matches anything (an optional field); an
/// array's elements each match the fixture's first.
fn shape_differences(live: &Value, fixture: &Value, at: &str, out: &mut Vec<String>) {
    match (live, fixture) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(l), Value::Object(f)) => {
            for k in l.keys().filter(|k| !f.contains_key(*k)) {
                out.push(format!("{at}.{k}: answered, not in the fixture"));
            }
            for k in f.keys().filter(|k| !l.contains_key(*k)) {
                out.push(format!("{at}.{k}: in the fixture, not answered"));
            }
            for (k, v) in l {
                if let Some(fv) = f.get(k) {
                    shape_differences(v, fv, &format!("{at}.{k}"), out);
                }
            }
        }
        (Value::Array(l), Value::Array(f)) => {
            if let Some(first) = f.first() {
                for (i, v) in l.iter().enumerate() {
                    shape_differences(v, first, &format!("{at}[{i}]"), out);
                }
            }
        }
        (Value::Bool(_), Value::Bool(_))
        | (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_)) => {}
        (l, f) => out.push(format!("{at}: answered {l}, the fixture has {f}")),
    }
}

fn ask(w: &mut UnixStream, r: &mut BufReader<UnixStream>, line: &str) -> String {
    w.write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    answer
}

#[test]
fn a_running_dataplane_answers_in_the_fixtures_shape() {
    let golden = lb_tests::golden::root().join("lb-fnat-one-arm");
    // The golden case's traffic leaves sessions to list and counters that
    // are not all zero.
    let dp = lb_tests::dataplane::Idle::start_reading(
        &golden.join("config.toml"),
        Some(&golden.join("in0.pcap")),
    );
    let mut w = UnixStream::connect(&dp.socket).unwrap();
    w.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = BufReader::new(w.try_clone().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counters: Value =
            serde_json::from_str(&ask(&mut w, &mut r, &Op::Counters.to_line())).unwrap();
        let sessions: u64 = counters["data"]["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w["sessions"].as_u64())
            .sum();
        if sessions > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the golden traffic made no sessions"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let bless = std::env::var_os("LB_BLESS").is_some();
    if bless {
        std::fs::create_dir_all(dir()).unwrap();
    }
    let mut problems = Vec::new();
    for (n, (name, req)) in exchanges().iter().enumerate() {
        let line = line_of(req);
        let answer: Value = serde_json::from_str(&ask(&mut w, &mut r, &line)).unwrap();
        if bless {
            std::fs::write(file(n, name, "request"), &line).unwrap();
            let pretty = serde_json::to_string_pretty(&answer).unwrap() + "\n";
            std::fs::write(file(n, name, "answer"), pretty).unwrap();
            continue;
        }
        let fixture: Value = serde_json::from_str(&read(&file(n, name, "answer"))).unwrap();
        shape_differences(&answer, &fixture, name, &mut problems);
    }
    assert!(
        problems.is_empty(),
        "the dataplane's answers no longer match tests/protocol/ (a deliberate change is re-recorded with LB_BLESS=1):\n{}",
        problems.join("\n")
    );
}
