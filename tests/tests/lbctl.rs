//! lb-ctl against a running dataplane, driven only through its command
//! line: ipvsadm's commands and options, listings compared with golden
//! text, save -> clear -> restore, a hand-written ipvsadm-save file,
//! refused changes, concurrent invocations, the subcommands and the exit
//! codes.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use lb_tests::binary;
use lb_tests::dataplane::Idle;

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("lbctl")
        .join(name)
}

struct Ctl<'a> {
    socket: &'a Path,
}

impl Ctl<'_> {
    fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(binary::path("lb-ctl"));
        cmd.env("LB_CTL_SOCKET", self.socket)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs and expects success; the standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run_with(args, None);
        assert!(
            out.status.success(),
            "lb-ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects exit `code`; the standard error.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run_with(args, None);
        assert_eq!(
            out.status.code(),
            Some(code),
            "lb-ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    fn restore(&self, text: &str) -> Output {
        self.run_with(&["-R"], Some(text))
    }
}

#[test]
fn lb_ctl_as_ipvsadm() {
    let dp = Idle::start(&lb_tests::golden::root().join("lb-fnat-one-arm/config.toml"));
    let c = Ctl { socket: &dp.socket };

    // A hand-written ipvsadm-save file loads, and lists like ipvsadm.
    c.ok(&["-C"]);
    let rules = std::fs::read_to_string(data("rules.save")).unwrap();
    let out = c.restore(&rules);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.ok(&["-L", "-n"]),
        std::fs::read_to_string(data("list.txt")).unwrap()
    );
    assert_eq!(
        c.ok(&["-Ln"]),
        c.ok(&["-l", "-n", "--sort"]),
        "clustered flags, -l, --sort"
    );

    // Firewall-mark services: what traffic mark 1 takes is said with
    // --match (an LVS box says it with iptables), and -S writes it.
    c.ok(&["-E", "-f", "1", "--match", "tcp:198.18.0.20/32:80,443"]);
    assert_eq!(
        c.ok(&["-L", "-n", "-f", "1", "--persistent-conn"]),
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n\
         \x20 -> RemoteAddress:Port\n\
         FWM  1 rr persistent 300\n\
         \x20 -> 10.0.6.5:0                   1         0           0          0         \n\
         \x20 -> 10.0.6.6:0                   2         0           0          0         \n"
    );
    let e = c.fails(&["-E", "-f", "2", "--match", "tcp:198.18.0.20:443"], 1);
    assert!(e.contains("which FWM 1 takes already"), "{e}");
    let e = c.fails(
        &["-E", "-t", "198.18.0.10:80", "--match", "tcp:1.2.3.4:80"],
        2,
    );
    assert!(e.contains("firewall-mark service"), "{e}");
    let e = c.fails(&["-E", "-f", "2", "--match", "tcp:1.2.3.4:http"], 1);
    assert!(e.contains("protocol:prefix:ports"), "{e}");
    c.fails(&["-L", "-n", "-f", "9"], 1);

    // Save -> clear -> restore gives back exactly the same rules.
    let saved = c.ok(&["-S"]);
    assert!(saved.lines().count() >= 32, "{saved}");
    assert!(
        saved.contains("-A -f 1 -s rr -p 300 --match tcp:198.18.0.20/32:80,443\n-a -f 1 -r 10.0.6.5:0 -g -w 1\n"),
        "{saved}"
    );
    c.ok(&["-C"]);
    assert_eq!(
        c.ok(&["-Ln"]).lines().count(),
        3,
        "cleared: the headers only"
    );
    let out = c.restore(&saved);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.ok(&["-S"]), saved);

    // -A -E -D, -a -e -d with every option.
    c.ok(&["-A", "-t", "198.18.0.30:80"]);
    c.ok(&[
        "-E",
        "-t",
        "198.18.0.30:80",
        "-s",
        "sed",
        "-p",
        "-M",
        "255.255.0.0",
    ]);
    c.ok(&[
        "-a",
        "-t",
        "198.18.0.30:80",
        "-r",
        "10.0.6.1:8080",
        "-m",
        "-w",
        "4",
        "-x",
        "100",
        "-y",
        "50",
    ]);
    c.ok(&["-a", "-t", "198.18.0.30:80", "-r", "10.0.6.2", "-g"]);
    c.ok(&["-e", "-t", "198.18.0.30:80", "-r", "10.0.6.2", "-w", "0"]);
    let one = c.ok(&["-Ln", "-t", "198.18.0.30:80"]);
    assert!(
        one.contains("TCP  198.18.0.30:80 sed persistent 300 mask 255.255.0.0"),
        "{one}"
    );
    assert!(
        one.contains("  -> 10.0.6.1:8080                Masq    4      0          0"),
        "{one}"
    );
    assert!(
        one.contains("  -> 10.0.6.2:80                  Route   0      0          0"),
        "{one}"
    );
    let th = c.ok(&["-Ln", "--thresholds", "-t", "198.18.0.30:80"]);
    assert!(
        th.contains("  -> 10.0.6.1:8080                100        50         0          0"),
        "{th}"
    );
    c.ok(&["-d", "-t", "198.18.0.30:80", "-r", "10.0.6.2"]);
    c.ok(&["-A", "-u", "198.18.0.31:53", "-s", "mh", "-b", "mh-port"]);
    assert!(c
        .ok(&["-Ln", "-u", "198.18.0.31:53"])
        .contains("UDP  198.18.0.31:53 mh (mh-port)"));
    c.ok(&["-D", "-u", "198.18.0.31:53"]);
    c.fails(&["-Ln", "-u", "198.18.0.31:53"], 1);

    // Statistics, rates, exact numbers, timeouts, connections, zeroing.
    let stats = c.ok(&["-Ln", "--stats", "--exact"]);
    assert!(stats.starts_with("IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  -> RemoteAddress:Port\n"), "{stats}");
    assert!(c.ok(&["-Ln", "--rate"]).contains(
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS"
    ));
    c.ok(&["--set", "600", "60", "200"]);
    assert_eq!(
        c.ok(&["-L", "--timeout"]),
        "Timeout (tcp tcpfin udp): 600 60 200\n"
    );
    c.ok(&["--set", "0", "0", "300"]);
    assert_eq!(
        c.ok(&["-L", "--timeout"]),
        "Timeout (tcp tcpfin udp): 600 60 300\n"
    );
    assert!(c
        .ok(&["-Lnc"])
        .starts_with("IPVS connection entries\npro expire state       source"));
    c.ok(&["-Z"]);
    let json: serde_json::Value = serde_json::from_str(&c.ok(&["-Ln", "-o", "json"])).unwrap();
    assert!(json["services"].as_array().unwrap().len() >= 9);

    // Refused changes say why, exit 1, and change nothing.
    let before = c.ok(&["config", "dump"]);
    let e = c.fails(
        &["-a", "-t", "198.18.0.10:80", "-r", "10.0.0.9:8080", "-g"],
        1,
    );
    assert!(e.contains("cannot change the destination port"), "{e}");
    let e = c.fails(&["-E", "-t", "198.18.0.10:80", "-s", "fastest"], 1);
    assert!(e.contains("valid schedulers: rr, wrr, lc, wlc"), "{e}");
    let e = c.fails(&["-A", "-t", "198.18.0.10:80"], 1);
    assert!(e.contains("exists already"), "{e}");
    let e = c.fails(&["-a", "-t", "198.18.0.99:80", "-r", "10.0.0.9"], 1);
    assert!(e.contains("no service"), "{e}");
    let bad = c.restore("-A -t 198.18.0.40:80 -s rr\n-a -t 198.18.0.40:80 -r 10.0.0.9:8080 -i\n");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("line 2"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    c.ok(&["-D", "-t", "198.18.0.40:80"]);
    assert_eq!(c.ok(&["config", "dump"]), before);

    // Usage errors exit 2; an unreachable socket exits 3 and names it.
    c.fails(&["-A"], 2);
    c.fails(&["-A", "-D", "-t", "198.18.0.10:80"], 2);
    c.fails(
        &["-a", "-t", "198.18.0.10:80", "-r", "10.0.0.9", "-g", "-m"],
        2,
    );
    c.fails(&["--bogus"], 2);
    let e = Ctl {
        socket: Path::new("/nonexistent/lb.sock"),
    }
    .fails(&["-Ln"], 3);
    assert!(e.contains("/nonexistent/lb.sock"), "{e}");

    // Concurrent invocations.
    let threads: Vec<_> = (0..10)
        .map(|i| {
            let socket = dp.socket.clone();
            std::thread::spawn(move || {
                let c = Ctl { socket: &socket };
                for j in 0..5 {
                    c.ok(&[
                        "-A",
                        "-t",
                        &format!("198.18.0.50:{}", 1000 + i * 10 + j),
                        "-s",
                        "rr",
                    ]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let listed = c.ok(&["-Ln"]);
    assert_eq!(listed.matches("TCP  198.18.0.50:").count(), 50);

    // Beyond ipvsadm: local addresses, apply, counters, completions.
    c.ok(&["laddr", "add", "-t", "198.18.0.14:80", "-z", "10.0.0.102"]);
    assert!(c.ok(&["laddr", "list"]).contains("10.0.0.102"));
    c.ok(&["laddr", "del", "-t", "198.18.0.14:80", "-z", "10.0.0.102"]);
    c.fails(
        &["laddr", "del", "-t", "198.18.0.14:80", "-z", "10.0.0.102"],
        1,
    );
    // Another director's local addresses (ECMP): listed as a peer's, kept
    // apart from this one's, saved with --peer and restored as such.
    c.ok(&[
        "laddr",
        "add",
        "-t",
        "198.18.0.14:80",
        "-z",
        "10.0.1.2",
        "--peer",
    ]);
    c.ok(&["-P", "-t", "198.18.0.14:80", "-z", "10.0.1.3", "--peer"]);
    let listed = c.ok(&["laddr", "list"]);
    assert!(listed.contains("10.0.1.2             peer"), "{listed}");
    let e = c.fails(&["-P", "-t", "198.18.0.14:80", "-z", "10.0.1.2"], 1);
    assert!(e.contains("both a local address and a peer's"), "{e}");
    let saved = c.ok(&["-S", "-n"]);
    assert!(
        saved.contains(
            "-P -t 198.18.0.14:80 -z 10.0.1.2 --peer\n-P -t 198.18.0.14:80 -z 10.0.1.3 --peer\n"
        ),
        "{saved}"
    );
    c.ok(&["-C"]);
    let out = c.restore(&saved);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.ok(&["-S", "-n"]), saved);
    c.ok(&["-Q", "-t", "198.18.0.14:80", "-z", "10.0.1.3", "--peer"]);
    c.fails(
        &[
            "laddr",
            "del",
            "-t",
            "198.18.0.14:80",
            "-z",
            "10.0.1.3",
            "--peer",
        ],
        1,
    );
    let desired = std::env::temp_dir().join(format!("lbctl-desired-{}.toml", std::process::id()));
    std::fs::write(&desired, "[[service]]\nprotocol = \"tcp\"\nvip = \"198.18.0.60\"\nport = 80\n[[service.real]]\naddress = \"10.0.0.5\"\nmode = \"dr\"\n").unwrap();
    let dry = c.ok(&["apply", "-f", desired.to_str().unwrap(), "--dry-run"]);
    assert!(dry.contains("+ service TCP 198.18.0.60:80"), "{dry}");
    assert!(dry.contains("- service TCP 198.18.0.10:80"), "{dry}");
    assert!(
        !c.ok(&["-Ln"]).contains("198.18.0.60"),
        "a dry run changes nothing"
    );
    assert!(c
        .ok(&["apply", "-f", desired.to_str().unwrap()])
        .contains("applied"));
    let _ = std::fs::remove_file(&desired);
    assert_eq!(
        c.ok(&["-Ln"])
            .lines()
            .filter(|l| l.starts_with("TCP") || l.starts_with("UDP"))
            .count(),
        1
    );
    let counters = c.ok(&["counters"]);
    assert!(counters.contains("rx_packets"), "{counters}");
    assert!(
        counters.contains("port net_pcap0 (net_pcap)"),
        "per-port counters: {counters}"
    );
    assert!(
        c.ok(&["route", "list"]).contains("10.0.0.1/24"),
        "the port's address"
    );
    c.ok(&[
        "route",
        "add",
        "10.20.0.0/16",
        "--port",
        "net_pcap0",
        "--via",
        "10.0.0.254",
    ]);
    assert!(c
        .ok(&["route", "list"])
        .contains("10.20.0.0/16             on net_pcap0 via 10.0.0.254"));
    let e = c.fails(&["route", "add", "10.21.0.0/16", "--port", "eth7"], 1);
    assert!(
        e.contains("no port named \"eth7\" (ports: net_pcap0, net_pcap1)"),
        "{e}"
    );
    c.ok(&["route", "del", "10.20.0.0/16"]);
    c.fails(&["route", "del", "10.20.0.0/16"], 1);

    // Neighbours: the configured ones are static; more come and go live.
    let table = c.ok(&["neigh", "list"]);
    assert!(
        table.contains("10.0.0.5         02:00:00:00:02:05  net_pcap0        static"),
        "{table}"
    );
    c.ok(&[
        "neigh",
        "add",
        "10.0.0.9",
        "--mac",
        "02:00:00:00:02:09",
        "--port",
        "net_pcap0",
    ]);
    assert!(c
        .ok(&["neigh", "list"])
        .contains("10.0.0.9         02:00:00:00:02:09"));
    c.ok(&["neigh", "del", "10.0.0.9"]);
    assert!(!c.ok(&["neigh", "list"]).contains("10.0.0.9"));
    let e = c.fails(&["neigh", "del", "10.0.0.9"], 1);
    assert!(e.contains("no neighbour 10.0.0.9"), "{e}");
    let e = c.fails(
        &[
            "neigh",
            "add",
            "10.0.0.9",
            "--mac",
            "02:00",
            "--port",
            "net_pcap0",
        ],
        1,
    );
    assert!(e.contains("02:00"), "{e}");
    let e = c.fails(
        &[
            "neigh",
            "add",
            "10.0.0.9",
            "--mac",
            "02:00:00:00:02:09",
            "--port",
            "eth7",
        ],
        1,
    );
    assert!(e.contains("no port named \"eth7\""), "{e}");
    assert!(c.ok(&["completions", "bash"]).contains("lb-ctl"));
}

#[test]
fn global_options_go_before_or_after_a_subcommand() {
    let dp = Idle::start(&lb_tests::golden::root().join("lb-fnat-one-arm/config.toml"));
    let socket = dp.socket.to_str().unwrap();
    // No LB_CTL_SOCKET: the socket comes from the command line alone.
    let run = |args: &[&str]| {
        let out = Command::new(binary::path("lb-ctl"))
            .env_remove("LB_CTL_SOCKET")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lb-ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Counters move (the polls): the same table either way.
    let names = |t: String| -> Vec<String> {
        t.lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    };
    let text = run(&["--socket", socket, "counters"]);
    assert!(text.contains("rx_packets"), "{text}");
    assert_eq!(names(text), names(run(&["counters", "--socket", socket])));
    let json = |s: String| -> serde_json::Value {
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
    };
    let a = json(run(&["-o", "json", "--socket", socket, "health"]));
    let b = json(run(&["health", "--socket", socket, "-o", "json"]));
    let c = json(run(&[
        &format!("--socket={socket}"),
        "--output=json",
        "health",
    ]));
    assert_eq!(a, b);
    assert_eq!(a, c);
    let dump = run(&["-n", "--socket", socket, "config", "dump"]);
    assert!(dump.contains("[[service]]"), "{dump}");
    assert_eq!(dump, run(&["config", "dump", "-n", "--socket", socket]));
    let laddrs = run(&["--socket", socket, "laddr", "list"]);
    assert_eq!(laddrs, run(&["laddr", "list", "--socket", socket]));
    // And ipvsadm's own form, with the socket first.
    let listing = run(&["--socket", socket, "-L", "-n"]);
    assert!(listing.contains("IP Virtual Server"), "{listing}");
}

#[test]
fn ipv6_services_list_in_brackets_and_round_trip_through_save_and_restore() {
    let dp = Idle::start(&lb_tests::golden::root().join("lb-fnat-one-arm/config.toml"));
    let socket = dp.socket.to_str().unwrap();
    let ctl = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(binary::path("lb-ctl"))
            .args(["--socket", socket])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or("").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "lb-ctl {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    ctl(&["-C"], None);
    ctl(&["-A", "-t", "[fd18::10]:80", "-s", "rr"], None);
    ctl(
        &["-a", "-t", "[fd18::10]:80", "-r", "[fd00::10]:8080", "-m"],
        None,
    );
    ctl(
        &[
            "-a",
            "-t",
            "[fd18::10]:80",
            "-r",
            "[fd00::11]:8080",
            "-m",
            "-w",
            "2",
        ],
        None,
    );
    ctl(
        &["-A", "-u", "[fd18::10]:53", "-s", "wlc", "-p", "300"],
        None,
    );
    let listing = ctl(&["-L", "-n"], None);
    for line in [
        "TCP  [fd18::10]:80 rr",
        "  -> [fd00::11]:8080              Masq    2      0          0",
        "UDP  [fd18::10]:53 wlc persistent 300",
    ] {
        assert!(
            listing.lines().any(|l| l.trim_end() == line),
            "{line:?} not in\n{listing}"
        );
    }
    let saved = ctl(&["-S", "-n"], None);
    assert!(
        saved.contains("-a -t [fd18::10]:80 -r [fd00::11]:8080 -m -w 2"),
        "{saved}"
    );
    ctl(&["-C"], None);
    assert!(!ctl(&["-L", "-n"], None).contains("fd18"));
    ctl(&["-R"], Some(&saved));
    assert_eq!(ctl(&["-S", "-n"], None), saved);
}

#[test]
fn a_worker_stopped_from_outside_shows_an_outside_stall() {
    let dp = Idle::start(&lb_tests::golden::root().join("lb-fnat-one-arm/config.toml"));
    let socket = dp.socket.to_str().unwrap();
    let ctl = |args: &[&str]| {
        let out = Command::new(binary::path("lb-ctl"))
            .args(["--socket", socket])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "lb-ctl {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let st: serde_json::Value = serde_json::from_str(&ctl(&["-o", "json", "stalls"])).unwrap();
    assert_eq!(st["threshold_ns"], 100_000, "{st}");
    assert!(ctl(&["stalls"]).starts_with("lcore "));
    // SIGSTOP: the kernel runs none of the process's threads for 60 ms, as
    // when the worker's core is taken from it.
    let pid = dp.pid().to_string();
    let kill = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success())
    };
    kill("-STOP");
    std::thread::sleep(std::time::Duration::from_millis(60));
    kill("-CONT");
    let long = |st: &serde_json::Value| -> Option<serde_json::Value> {
        st["workers"][0]["stalls"]
            .as_array()?
            .iter()
            .find(|s| s["gap_ns"].as_u64().unwrap_or(0) >= 50_000_000)
            .cloned()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let stall = loop {
        let st: serde_json::Value = serde_json::from_str(&ctl(&["-o", "json", "stalls"])).unwrap();
        if let Some(s) = long(&st) {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "no 50 ms stall: {st}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let (gap, away) = (
        stall["gap_ns"].as_u64().unwrap(),
        stall["away_ns"].as_u64().unwrap(),
    );
    assert!(
        away * 2 >= gap,
        "a stopped thread counted as working: {stall}"
    );
    let text = ctl(&["stalls", "--last", "1024"]);
    let row = format!("{:.3}", gap as f64 / 1e6);
    assert!(
        text.lines()
            .any(|l| l.contains(&row) && l.split_whitespace().nth(3) == Some("outside")),
        "{text}"
    );
    let counters: serde_json::Value =
        serde_json::from_str(&ctl(&["-o", "json", "counters"])).unwrap();
    let lcore = &counters["workers"][0]["dataplane"]["counters"];
    assert!(lcore["stalls_outside"].as_u64().unwrap() >= 1, "{lcore}");
    assert!(
        lcore["max_outside_stall_ns"].as_u64().unwrap() >= gap,
        "{lcore}"
    );
}

#[test]
fn a_dataplane_of_another_protocol_gets_one_line_and_exit_4() {
    use std::io::{BufRead, BufReader};
    let tmp = lb_tests::golden::TempDir::new("ver");
    let path = tmp.0.join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // A dataplane from the future: protocol 2.
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) > 0 {
                let mut w = &stream;
                let _ = w.write_all(
                    b"{\"ok\": true, \"data\": {\"protocol\": 2, \"version\": \"9.0.0\"}}\n",
                );
            }
        }
    });
    let out = Command::new(binary::path("lb-ctl"))
        .arg("--socket")
        .arg(&path)
        .args(["-L", "-n"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("speaks admin protocol 2, this lb-ctl 1"),
        "{err}"
    );
    assert!(err.contains("dataplane 9.0.0"), "{err}");
}

/// keepalived.conf's virtual servers become services: the translation is
/// the recorded one (`LB_BLESS=1` re-records it), it validates with the
/// dataplane's own parser, what was not translated is named with its line,
/// and a running dataplane takes the result with `apply` and lists it as
/// keepalived's ipvsadm would.
#[test]
fn a_keepalived_conf_imports_with_what_it_left_behind() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("keepalived");
    let conf = dir.join("keepalived.conf");
    let out = Command::new(binary::path("lb-ctl"))
        .args(["import", "keepalived"])
        .arg(&conf)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let toml = String::from_utf8(out.stdout).unwrap();
    lb_tests::assert_recorded(&dir.join("services.toml"), &toml);
    let (services, _) = lb_core::config::parse_desired(&toml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(services.len(), 6, "DR, NAT, two TUN, a mark, Full-NAT");
    let left: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.split_once(": line ").map(|(_, rest)| rest))
        .map(|rest| rest.find("`: ").map_or(rest, |end| &rest[..=end]))
        .collect();
    assert_eq!(
        left,
        [
            "35: `sorry_server 10.0.0.99 80`",
            "105: `MISC_CHECK { ... }`",
            "137: `syn_proxy`",
            "140: `SSL_GET { ... }`",
        ],
        "{stderr}"
    );
    assert!(
        stderr.contains("6 service(s) translated, 4 line(s) not"),
        "{stderr}"
    );

    let dp = Idle::start(&lb_tests::golden::root().join("lb-fnat-one-arm/config.toml"));
    let c = Ctl { socket: &dp.socket };
    let file = std::env::temp_dir().join(format!("lb-keepalived-{}.toml", std::process::id()));
    std::fs::write(&file, &toml).unwrap();
    let applied = c.ok(&["apply", "-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert!(applied.contains("applied"), "{applied}");
    let list = c.ok(&["-L", "-n"]);
    lb_tests::assert_recorded(&dir.join("list.txt"), &list);
}
