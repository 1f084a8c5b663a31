//! Bulk TCP and small-packet UDP through the routed topology of
//! `lb_tests::routed` (client behind a kernel router, director and real
//! servers on a bridge, the kernel's default offloads everywhere), with the
//! director being, in turn:
//!
//! - `af_packet`: lb-dataplane, NAT mode, on `net_af_packet`;
//! - `af_xdp`: lb-dataplane, NAT mode, on `net_af_xdp`;
//! - `nftables`: the kernel itself forwarding, with an nftables DNAT rule
//!   (the kernel's NAT, the same translation as LVS-NAT).
//!
//! One service, VIP 198.18.0.10:5201 (TCP and UDP) to one real server
//! running `iperf3 -s` (the real servers' default route points at the
//! director, as NAT needs). Per subject: a TCP upload and a TCP download
//! (`iperf3 -c`, one stream, bits per second the receiver got) and a UDP
//! flood of 18-byte datagrams (64-byte frames; `iperf3 -u -b 0`): datagrams
//! per second delivered to the server (read by iperf3, or dropped by its
//! socket for want of room, which is the server's limit and not the
//! director's), and the share lost before the server. One iperf3 sender is
//! what this machine drives, so the delivered rate is the sender's unless
//! the director loses. The subjects run interleaved, a fresh
//! topology and a fresh director each time, `--rounds` rounds in a
//! rotating order, and the report gives each figure's median with its
//! spread (min-max) and the median of the per-round ratios to nftables.
//!
//! ```text
//! kernel-ports-bench [--rounds 5] [--seconds 5] [--subjects af_packet,af_xdp,nftables] [--out FILE]
//! ```
//!
//! Everything runs on this machine's cores: lb-dataplane busy-polls one
//! (lcore 1), and the client, router, server and iperf3 share the rest.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use lb_tests::dataplane::{counter, Running};
use lb_tests::netns::Netns;
use lb_tests::routed::{Reals, Routed};

const VIP: &str = "198.18.0.10";
const PORT: u16 = 5201;
/// The subjects of a run, unless `--subjects` names others.
const SUBJECTS: [&str; 3] = ["af_packet", "af_xdp", "nftables"];
/// Every subject there is: `af_packet_2048` is `af_packet` with a ring of
/// 2,048 64 KB frames instead of the 512 the dataplane gives it by default
/// (128 MB of kernel memory per queue instead of 32 MB).
const ALL_SUBJECTS: [&str; 4] = ["af_packet", "af_packet_2048", "af_xdp", "nftables"];
const FIGURES: [(&str, &str); 4] = [
    ("tcp_up", "TCP upload, Gbit/s"),
    ("tcp_down", "TCP download, Gbit/s"),
    (
        "udp_kpps",
        "UDP 64-byte frames, kpps delivered to the server",
    ),
    ("udp_loss", "UDP 64-byte frames, % lost before the server"),
];

struct Options {
    subjects: Vec<&'static str>,
    rounds: usize,
    seconds: u32,
    out: Option<std::path::PathBuf>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        subjects: SUBJECTS.to_vec(),
        rounds: 5,
        seconds: 5,
        out: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--rounds" => o.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--seconds" => o.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--out" => o.out = Some(value()?.into()),
            "--subjects" => {
                o.subjects = value()?
                    .split(',')
                    .map(|name| {
                        ALL_SUBJECTS
                            .iter()
                            .find(|s| **s == name)
                            .copied()
                            .ok_or(format!("--subjects: no subject {name:?} (there are {ALL_SUBJECTS:?})"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "-h" | "--help" => {
                return Err(
                    "usage: kernel-ports-bench [--rounds N] [--seconds S] [--subjects A,B,..] [--out FILE]".into(),
                )
            }
            other => return Err(format!("unexpected argument {other:?} (see --help)")),
        }
    }
    if !o.subjects.contains(&"nftables") {
        return Err("--subjects must include nftables, the reference".into());
    }
    if o.rounds == 0 || o.seconds == 0 {
        return Err("--rounds and --seconds must be at least 1".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kernel-ports-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One subject's figures in one round, by figure name.
type Figures = BTreeMap<&'static str, f64>;

fn run() -> Result<(), String> {
    let o = options()?;
    for tool in ["iperf3", "nft"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Err(format!(
                "{tool} is not installed (bash scripts/setup installs it)"
            ));
        }
    }
    // results[subject][round]
    let mut results: BTreeMap<&str, Vec<Figures>> = BTreeMap::new();
    let mut notes = Vec::new();
    for round in 0..o.rounds {
        for k in 0..o.subjects.len() {
            let subject = o.subjects[(round + k) % o.subjects.len()];
            eprintln!("round {}/{}: {subject}", round + 1, o.rounds);
            let (figures, note) = measure(subject, o.seconds)?;
            eprintln!("  {figures:?}");
            notes.push(format!("round {}, {subject}: {note}", round + 1));
            results.entry(subject).or_default().push(figures);
        }
    }
    let report = report(&o, &results, &notes);
    print!("{report}");
    if let Some(path) = &o.out {
        std::fs::write(path, &report).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Builds a fresh topology, makes `subject` the director, and measures.
/// Returns the figures and a note on where datagrams were lost: the real
/// server's socket, and for lb-dataplane its port and drop counters.
fn measure(subject: &str, seconds: u32) -> Result<(Figures, String), String> {
    let topo = Routed::new("kb", Reals::GatewayIsLb, 1).map_err(|e| e.to_string())?;
    let _server = Server::start(&topo.servers[0])?;
    let director = match subject {
        "nftables" => {
            kernel_nat(&topo.lb)?;
            None
        }
        "af_packet" => Some(Running::start(&topo.lb, &config("net_af_packet0", ""), 600)),
        "af_packet_2048" => Some(Running::start(
            &topo.lb,
            &config(
                "net_af_packet0",
                ",blocksz=16748544,framesz=65424,framecnt=2048",
            ),
            600,
        )),
        _ => Some(Running::start(&topo.lb, &config("net_af_xdp0", ""), 600)),
    };
    let mut figures = Figures::new();
    let gbit = |v: serde_json::Value, key: &str| {
        v["end"][key]["bits_per_second"].as_f64().map(|b| b / 1e9)
    };
    let up = iperf(&topo.client, seconds, &[])?;
    figures.insert(
        "tcp_up",
        gbit(up, "sum_received").ok_or("no upload result")?,
    );
    let down = iperf(&topo.client, seconds, &["-R"])?;
    figures.insert(
        "tcp_down",
        gbit(down, "sum_received").ok_or("no download result")?,
    );
    let rcvbuf_before = udp_rcvbuf_errors(&topo.servers[0]);
    let udp = iperf(&topo.client, seconds, &["-u", "-b", "0", "-l", "18"])?;
    let server_drops = udp_rcvbuf_errors(&topo.servers[0]) - rcvbuf_before;
    let sum = &udp["end"]["sum"];
    let (sent, lost, secs) = (
        sum["packets"].as_f64().ok_or("no UDP packet count")?,
        sum["lost_packets"].as_f64().unwrap_or(0.0),
        sum["seconds"].as_f64().unwrap_or(f64::from(seconds)),
    );
    // Delivered: what iperf3 read plus what the server's socket had no
    // room for (the server program, on a shared core, is the slowest part
    // of the chain; its losses are not the director's).
    let delivered = (sent - lost + server_drops as f64).min(sent);
    figures.insert("udp_kpps", delivered / secs / 1e3);
    figures.insert(
        "udp_loss",
        if sent > 0.0 {
            100.0 * (sent - delivered) / sent
        } else {
            0.0
        },
    );
    let mut note = format!("server socket dropped {server_drops} datagrams (UdpRcvbufErrors)");
    if let Some(d) = director {
        let report = d.stop();
        let drops: Vec<String> = [
            "drop_oversize",
            "drop_gso",
            "drop_tx_full",
            "drop_truncated",
            "drop_bad_checksum",
        ]
        .iter()
        .filter_map(|name| {
            let n = counter(&report, name);
            (n > 0).then(|| format!("{name} {n}"))
        })
        .collect();
        let port = &report["ports"][0]["stats"];
        let _ = write!(
            note,
            "; port rx_missed {}, rx_nombuf {}, tx_errors {}; gso_frames {}",
            port["rx_missed"],
            port["rx_nombuf"],
            port["tx_errors"],
            counter(&report, "gso_frames")
        );
        for d in drops {
            let _ = write!(note, ", {d}");
        }
    }
    Ok((figures, note))
}

/// The UDP datagrams `ns`'s sockets have dropped for want of buffer room.
fn udp_rcvbuf_errors(ns: &Netns) -> u64 {
    let Ok(out) = ns.command("cat").arg("/proc/net/snmp").output() else {
        return 0;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// `iperf3 -s` on the real server, killed when dropped.
struct Server(Child);

impl Server {
    fn start(ns: &Netns) -> Result<Server, String> {
        let child = ns
            .command("iperf3")
            .args(["-s", "-p", &PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("iperf3 -s: {e}"))?;
        let server = Server(child);
        for _ in 0..100 {
            let out = ns
                .command("ss")
                .arg("-ltn")
                .output()
                .map_err(|e| e.to_string())?;
            if String::from_utf8_lossy(&out.stdout).contains(&format!(":{PORT} ")) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("iperf3 -s did not start listening".into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The client's `iperf3 -c VIP` with `extra`, as JSON.
fn iperf(client: &Netns, seconds: u32, extra: &[&str]) -> Result<serde_json::Value, String> {
    let out = client
        .command("timeout")
        .arg((seconds + 30).to_string())
        .args(["iperf3", "-c", VIP, "-p", &PORT.to_string(), "-J", "-t"])
        .arg(seconds.to_string())
        .args(extra)
        .output()
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "iperf3 {extra:?}: no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("iperf3 {extra:?}: {e}"));
    }
    Ok(v)
}

/// The kernel as the director: the address, a route back to the clients,
/// forwarding, and DNAT of the VIP to the real server (conntrack undoes it
/// on the replies), as an operator would set up kernel NAT.
fn kernel_nat(lb: &Netns) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    lb.ip(&["addr", "add", "10.0.0.1/24", "dev", "eth0"])
        .map_err(e)?;
    lb.ip(&["route", "add", "default", "via", "10.0.0.254"])
        .map_err(e)?;
    let rules = format!(
        "add table ip lb\n\
         add chain ip lb pre {{ type nat hook prerouting priority -100; }}\n\
         add rule ip lb pre ip daddr {VIP} tcp dport {PORT} dnat to 10.0.0.10\n\
         add rule ip lb pre ip daddr {VIP} udp dport {PORT} dnat to 10.0.0.10\n"
    );
    for cmd in [
        vec!["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        vec!["nft", &rules],
    ] {
        let out = lb.command(cmd[0]).args(&cmd[1..]).output().map_err(e)?;
        if !out.status.success() {
            return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    Ok(())
}

/// lb-dataplane on `port`, NAT mode, the same service as the kernel's.
/// `devargs` go after the port's `iface=eth0`.
fn config(port: &str, devargs: &str) -> String {
    let service = |proto: &str| {
        format!(
            "[[service]]\nprotocol = \"{proto}\"\nvip = \"{VIP}\"\nport = {PORT}\nscheduler = \"rr\"\n\
             [[service.real]]\naddress = \"10.0.0.10\"\nport = {PORT}\nmode = \"nat\"\n"
        )
    };
    format!(
        r#"
[eal]
args = ["--no-huge", "--no-shconf", "-m", "512", "--no-pci", "--log-level=lib.eal:warning", "--vdev={port},iface=eth0{devargs}"]
[workers]
lcores = [1]
[sessions]
capacity = 65536
[[port]]
name = "{port}"
addresses = ["10.0.0.1/24"]
[[route]]
prefix = "0.0.0.0/0"
port = "{port}"
gateway = "10.0.0.254"
{}
{}
"#,
        service("tcp"),
        service("udp")
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

fn report(o: &Options, results: &BTreeMap<&str, Vec<Figures>>, notes: &[String]) -> String {
    let mut s = String::new();
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "# kernel-ports-bench, {date}\n\nkernel {kernel}, {} cores; {} rounds of {} s per figure, subjects interleaved in a rotating order, a fresh topology per run.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        o.rounds,
        o.seconds
    );
    let _ = writeln!(
        s,
        "| figure | subject | median | min-max | x nftables (median of rounds, min-max) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (key, title) in FIGURES {
        let nft: Vec<f64> = results["nftables"].iter().map(|f| f[key]).collect();
        for &subject in &o.subjects {
            let v: Vec<f64> = results[subject].iter().map(|f| f[key]).collect();
            let (lo, hi) = spread(&v);
            let ratios: Vec<f64> = v.iter().zip(&nft).map(|(a, b)| a / b).collect();
            let (rlo, rhi) = spread(&ratios);
            let ratio = if subject == "nftables" || key == "udp_loss" {
                "".to_owned()
            } else {
                format!("{:.2} ({rlo:.2}-{rhi:.2})", median(ratios.clone()))
            };
            let _ = writeln!(
                s,
                "| {title} | {subject} | {:.2} | {lo:.2}-{hi:.2} | {ratio} |",
                median(v.clone())
            );
        }
    }
    let _ = writeln!(s, "\nPer run (figures in the order of the table):\n");
    for &subject in &o.subjects {
        let runs: Vec<String> = results[subject]
            .iter()
            .map(|f| {
                FIGURES
                    .iter()
                    .map(|(k, _)| format!("{:.2}", f[k]))
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .collect();
        let _ = writeln!(s, "- {subject}: {}", runs.join("; "));
    }
    if !notes.is_empty() {
        let _ = writeln!(s, "\nWhere datagrams were lost, per run:\n");
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}
