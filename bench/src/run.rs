//! `lb-bench run`: the matrix of cases, each on a fresh appliance process,
//! with testpmd's `io` and `5tswap` rates on the same ports as the ceiling.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lb_core::wire::MacAddr;
use serde::Serialize;

use crate::appliance::{self, Appliance, Mode, Sample, Setup, CLIENTS, VIP};
use crate::loss::{LossResult, LossRun};
use crate::memory::Memory;
use crate::perf;
use crate::profile::{Profile, Template};
use crate::testpmd::{Baseline, Fwd};

/// Established flows or a new connection in every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Established,
    NewConn,
}

/// One case of the matrix.
#[derive(Debug, Clone)]
pub struct Case {
    pub mode: Mode,
    pub kind: Kind,
    /// Established: the flows (sessions) the traffic walks. New connections:
    /// the unique SYNs in the profile.
    pub flows: u32,
    pub pkt_bytes: usize,
    pub scheduler: &'static str,
    pub reals: u32,
    /// Worker cores; with more than one, each is fed a queue of its own
    /// (a file of its own share of the flows).
    pub workers: u32,
    /// Established Full-NAT traffic from the real servers instead of the
    /// clients, on whose queue.
    pub replies: Replies,
}

/// Where a case's real servers' replies arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Replies {
    /// No replies: the clients' data.
    None,
    /// On the queue of the worker that owns the session (where rte_flow
    /// rules on the local port would steer them).
    OwnQueue,
    /// On another worker's queue: every packet crosses a hand-over ring.
    OtherQueue,
}

impl Case {
    fn label(&self) -> String {
        let kind = match self.kind {
            Kind::Established => format!("established {} sessions", self.flows),
            Kind::NewConn => "new connections".into(),
        };
        let workers = if self.workers > 1 {
            format!(", {} workers", self.workers)
        } else {
            String::new()
        };
        let replies = match self.replies {
            Replies::None => "",
            Replies::OwnQueue => ", replies on the owner's queue",
            Replies::OtherQueue => ", replies on another worker's queue",
        };
        format!(
            "{} {kind}, {} B, {} over {} reals{workers}{replies}",
            self.mode.name(),
            self.pkt_bytes,
            self.scheduler,
            self.reals
        )
    }

    /// The whole profile: what testpmd replays, and the one worker's.
    fn profile(&self, dst_mac: MacAddr) -> Profile {
        self.share(
            dst_mac,
            self.flows,
            CLIENTS.parse().expect("a valid address"),
        )
    }

    /// Each worker's profile: its share of the flows, from client
    /// addresses of its own, so that the shares are disjoint.
    fn queue_profiles(&self, dst_mac: MacAddr) -> Result<Vec<Profile>, String> {
        if self.workers <= 1 {
            return Ok(vec![self.profile(dst_mac)]);
        }
        let share = self.flows.div_ceil(self.workers);
        let first: std::net::Ipv4Addr = CLIENTS.parse().expect("a valid address");
        let ports = u32::from(CLIENT_PORTS.1 - CLIENT_PORTS.0) + 1;
        let mut shares: Vec<Profile> = (0..self.workers)
            .map(|k| {
                let base = u32::from(first) + k * (share / ports + 1);
                self.share(dst_mac, share, std::net::Ipv4Addr::from(base).into())
            })
            .collect();
        if self.replies != Replies::None {
            // Each queue opens its own share's sessions (its worker sees
            // the SYNs), then carries the replies of its own share or of
            // the next worker's.
            let tuples: Vec<Vec<_>> = (0..self.workers)
                .map(|k| reply_tuples(self, k))
                .collect::<Result<_, _>>()?;
            for (k, p) in shares.iter_mut().enumerate() {
                let from = match self.replies {
                    Replies::OtherQueue => (k + 1) % tuples.len(),
                    _ => k,
                };
                p.replies = tuples[from].clone();
            }
        }
        Ok(shares)
    }

    fn share(&self, dst_mac: MacAddr, flows: u32, clients: std::net::IpAddr) -> Profile {
        let (template, rounds) = match self.kind {
            // Enough passes for a quarter of a million packets at least, so
            // the replay loop is long whatever the flow count.
            Kind::Established => (Template::Data, (262_144 / flows).max(1)),
            Kind::NewConn => (Template::Syn, 1),
        };
        Profile {
            template,
            pkt_bytes: self.pkt_bytes,
            flows,
            clients,
            client_ports: CLIENT_PORTS,
            vip: VIP.parse().expect("a valid address"),
            src_mac: MacAddr([0x02, 0, 0, 0, 0x01, 0x01]),
            dst_mac,
            rounds,
            shuffle: true,
            handshake: true,
            replies: Vec::new(),
        }
    }
}

/// The reply tuples (real server, local address and port) of worker
/// `worker`'s share of `case`'s flows, as the worker makes them: the
/// appliance's own pool and scheduler, given the share's SYNs in order on a
/// fresh worker. A mismatch would show as the case's drops.
fn reply_tuples(case: &Case, worker: u32) -> Result<Vec<(SocketAddr, SocketAddr)>, String> {
    use lb_core::laddr::{LaddrPool, PortUse, DEFAULT_PORT_RANGE};
    use lb_core::sched::{FlowInfo, RsId, RsLoad, SchedFlags, SchedKind, Scheduler};
    use lb_core::types::{addr, ip};
    let vip: SocketAddr = VIP.parse().expect("a valid address");
    let workers = u16::try_from(case.workers).map_err(|_| "too many workers")?;
    let worker = u16::try_from(worker).map_err(|_| "too many workers")?;
    let mut ports = PortUse::new(worker, workers, DEFAULT_PORT_RANGE).map_err(|e| e.to_string())?;
    let laddrs: Vec<_> = (0..local_addresses(case))
        .map(|i| addr(appliance::local_address(i).parse().expect("an address")))
        .collect();
    let mut pool = LaddrPool::new(&laddrs, &mut ports).map_err(|e| e.to_string())?;
    let ids: Vec<RsId> = (0..case.reals)
        .map(|i| RsId {
            addr: appliance::real(i).parse().expect("an address"),
            port: vip.port(),
        })
        .collect();
    let weights = vec![1; ids.len()];
    let loads = vec![RsLoad::default(); ids.len()];
    let kind: SchedKind = case.scheduler.parse()?;
    let sched = Scheduler::new(kind, SchedFlags::default(), &ids, &weights, 0)
        .map_err(|e| e.to_string())?;
    let mut state = sched.new_state(&weights, &loads);
    let flow = FlowInfo {
        src: addr(vip.ip()),
        src_port: 0,
        dst: addr(vip.ip()),
    };
    (0..case.flows.div_ceil(case.workers))
        .map(|_| {
            let rs = sched
                .pick(&mut state, &weights, &loads, &flow, 0)
                .ok_or("no real server")?;
            let (la, lport) = pool
                .allocate(&mut ports, |_, _| false)
                .ok_or("the local ports ran out")?;
            Ok((
                SocketAddr::new(ids[rs].addr, ids[rs].port),
                SocketAddr::new(ip(&la), lport),
            ))
        })
        .collect()
}

/// Full-NAT local addresses for `case`: enough ports for its flows.
fn local_addresses(case: &Case) -> u32 {
    (case.flows.div_ceil(60_000) + 1).min(250)
}

/// The profiles' client ports.
const CLIENT_PORTS: (u16, u16) = (1024, 65535);

/// The whole matrix (`quick`: the smoke subset).
pub fn matrix(quick: bool) -> Vec<Case> {
    let case = |mode, kind, flows, pkt_bytes, scheduler| Case {
        mode,
        kind,
        flows,
        pkt_bytes,
        scheduler,
        reals: 1000,
        workers: 1,
        replies: Replies::None,
    };
    if quick {
        return vec![
            case(Mode::Fnat, Kind::Established, 1000, 64, "rr"),
            case(Mode::Dr, Kind::Established, 1000, 64, "rr"),
            case(Mode::Fnat, Kind::NewConn, 1_000_000, 64, "rr"),
        ];
    }
    let mut cases = Vec::new();
    for flows in [1000, 100_000, 1_000_000] {
        for mode in Mode::ALL {
            cases.push(case(mode, Kind::Established, flows, 64, "rr"));
        }
    }
    for mode in Mode::ALL {
        cases.push(case(mode, Kind::Established, 100_000, 1500, "rr"));
    }
    // Two workers, each fed its own queue: how Full-NAT scales, and what
    // replies cost on their owner's queue and on another's.
    for replies in [Replies::None, Replies::OwnQueue, Replies::OtherQueue] {
        cases.push(Case {
            workers: 2,
            replies,
            ..case(Mode::Fnat, Kind::Established, 100_000, 64, "rr")
        });
    }
    for mode in Mode::ALL {
        cases.push(case(mode, Kind::NewConn, 3_000_000, 64, "rr"));
    }
    cases.push(case(Mode::Fnat, Kind::NewConn, 3_000_000, 64, "mh"));
    // The schedulers that compare loads, by the size of the pool.
    for scheduler in LOAD_SCHEDULERS {
        for reals in [10, 1000, 10_000] {
            cases.push(Case {
                reals,
                ..case(Mode::Fnat, Kind::NewConn, 3_000_000, 64, scheduler)
            });
        }
    }
    cases
}

/// The schedulers whose choice depends on the servers' connection counts.
pub const LOAD_SCHEDULERS: [&str; 4] = ["lc", "wlc", "sed", "nq"];

/// What a case measured.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub mode: Mode,
    pub kind: Kind,
    pub sessions: u64,
    pub pkt_bytes: usize,
    pub scheduler: &'static str,
    pub reals: u32,
    pub workers: u32,
    pub replies: Replies,
    /// Packets forwarded per second, millions.
    pub mpps: f64,
    /// Packets received per second, millions (what the worker kept up with).
    pub rx_mpps: f64,
    pub conns_per_s: f64,
    pub ratio_5tswap: f64,
    pub ratio_io: f64,
    pub ns_per_pkt: f64,
    pub cycles_per_pkt: f64,
    pub window_s: f64,
    /// Drops in the window, by reason (only those that happened).
    pub drops: BTreeMap<String, u64>,
    /// The lowest and highest of the pairs' ratios to 5tswap.
    pub ratio_min: f64,
    pub ratio_max: f64,
    /// A pair's ratio lies more than [`NOISY`] from the median: the case
    /// is reported, but not as a result.
    pub noisy: bool,
    /// Every interleaved pair; the case's ratio is the median of theirs,
    /// its other numbers the median pair's.
    pub pairs: Vec<Pair>,
    /// With `--perf`: the worker's top symbols in the window, percent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profile: perf::Profile,
}

/// One interleaved pair: testpmd in 5tswap mode, then the appliance, each
/// a fresh process on the same ports and profile, one right after the
/// other, so both see the machine as it is at that moment.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub ceiling_mpps: f64,
    pub mpps: f64,
    pub ratio: f64,
    pub conns_per_s: f64,
    /// The machine's steal time during testpmd's run, percent.
    pub ceiling_steal_pct: f64,
    /// The machine's steal time in the appliance's window, percent.
    pub steal_pct: f64,
    /// Times the kernel took the worker's core in the window.
    pub preempted: u64,
    /// The worker's longest time out of its loop, ms (since it started).
    pub max_loop_gap_ms: f64,
}

/// How far a pair's ratio may lie from the median before the case is
/// called noisy (a fraction of the median).
pub const NOISY: f64 = 0.15;

/// A case or loss run that failed twice.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub case: String,
    pub error: String,
    /// Where its logs are.
    pub dir: PathBuf,
}

/// The testpmd rates on one profile.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    /// The profile's pcap, e.g. `data-100000flows-64b-2r.pcap`.
    pub profile: String,
    pub kind: Kind,
    pub flows: u32,
    pub pkt_bytes: usize,
    pub io_mpps: f64,
    /// The median of the pairs' 5tswap runs on this profile.
    #[serde(rename = "5tswap_mpps")]
    pub five_tuple_swap_mpps: f64,
}

/// One full run.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub date: String,
    /// The command line that made it.
    pub command: String,
    pub machine: Machine,
    /// The ceiling on the 64-byte profile of 100k established flows (or
    /// the first measured).
    pub baseline: Ceiling,
    pub baselines: Vec<Ceiling>,
    pub cases: Vec<CaseResult>,
    /// Loss at fractions of the measured maximum, fed by the generator.
    pub losses: Vec<LossResult>,
    /// Cases and loss runs that failed, retried once.
    pub failures: Vec<Failure>,
    pub quick: bool,
}

/// What the numbers were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub host: String,
    pub cpu: String,
    pub cores: usize,
    pub cpu_mhz: f64,
    pub memory_gib: f64,
    pub kernel: String,
    pub dpdk: String,
    pub memory_mode: String,
    pub worker_cores: u32,
}

/// Settings of `lb-bench run`.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub dataplane: PathBuf,
    pub testpmd: PathBuf,
    pub work: PathBuf,
    pub allow_huge: bool,
    pub warmup: Duration,
    pub window: Duration,
    /// Only the cases of these modes (all when empty).
    pub modes: Vec<Mode>,
    /// Profile each case's worker with perf.
    pub perf: bool,
    /// The generator binary (this one).
    pub generator: PathBuf,
    /// Interleaved testpmd/appliance pairs of each case.
    pub pairs: u32,
    /// Only the cases whose label contains one of these (all when empty).
    pub only: Vec<String>,
    /// Whether the loss runs below the maximum follow the cases.
    pub loss: bool,
    /// Seconds of each loss window.
    pub loss_window: Duration,
}

fn progress(i: usize, n: usize, what: &str) {
    eprintln!("lb-bench [{i}/{n}] {what}");
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn cpuinfo(key: &str) -> Option<String> {
    read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// This process's command line, the binary named as the README's
/// command names it.
fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.insert(0, "target/release/lb-bench".into());
    args.join(" ")
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine(memory: &Memory) -> Machine {
    let mem_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Machine {
        host: command_output("hostname", &[]),
        cpu: cpuinfo("model name").unwrap_or_default(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_mhz: cpuinfo("cpu MHz")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        memory_gib: (mem_kib / (1024.0 * 1024.0) * 10.0).round() / 10.0,
        kernel: command_output("uname", &["-r"]),
        dpdk: command_output("pkg-config", &["--modversion", "libdpdk"]),
        memory_mode: memory.describe(),
        worker_cores: 1,
    }
}

/// Per-mbuf buffer for frames of `pkt_bytes`: the headroom, the frame, and
/// room for an outer header, in 64-byte steps.
fn data_room(pkt_bytes: usize) -> u16 {
    let want = (128 + pkt_bytes + 64).div_ceil(64) * 64;
    u16::try_from(want.max(256)).unwrap_or(u16::MAX)
}

/// DPDK heap for `mbufs` buffers of `room` bytes, plus the rest.
fn heap_megabytes(mbufs: u32, room: u16) -> u64 {
    // The mbuf header (128) and the mempool's object header.
    let per = u64::from(room) + 128 + 64;
    (u64::from(mbufs) * per) / (1 << 20) * 11 / 10 + 384
}

/// The net_pcap port's MAC, asked of the dataplane's probe.
fn pcap_port_mac(dataplane: &Path, pcap: &Path) -> Result<MacAddr, String> {
    let out = std::process::Command::new(dataplane)
        .args(["probe", "--json"])
        .arg(format!("net_pcap0,rx_pcap={}", pcap.display()))
        .output()
        .map_err(|e| format!("cannot run {}: {e}", dataplane.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with('{')).unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|_| format!("probe said: {text}"))?;
    v["mac"]
        .as_str()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("probe gave no MAC: {text}"))
}

/// Writes the profile's pcap into `dir` unless it is there already.
fn pcap_for(profile: &Profile, dir: &Path) -> Result<PathBuf, String> {
    // Replies are named by their first local address and port, which
    // tells one worker's sessions from another's.
    let replies = profile
        .replies
        .first()
        .map(|(_, local)| format!("-replies-to-{}-{}", local.ip(), local.port()))
        .unwrap_or_default();
    let name = format!(
        "{:?}-{}flows-{}B-{}r-{}{replies}.pcap",
        profile.template, profile.flows, profile.pkt_bytes, profile.rounds, profile.clients
    )
    .to_lowercase();
    let path = dir.join(name);
    if path.exists() {
        return Ok(path);
    }
    let partial = path.with_extension("part");
    profile.write_pcap(&partial)?;
    std::fs::rename(&partial, &path).map_err(|e| format!("cannot rename: {e}"))?;
    Ok(path)
}

struct Prepared {
    /// The whole profile (testpmd's).
    pcap: PathBuf,
    /// The appliance's: one file per worker's queue.
    queues: Vec<PathBuf>,
    mbufs: u32,
    room: u16,
}

impl Prepared {
    /// The profile's file name: what names its ceiling.
    fn name(&self) -> String {
        self.pcap
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

fn prepare(case: &Case, mac: MacAddr, dir: &Path) -> Result<Prepared, String> {
    let profile = case.profile(mac);
    let pcap = pcap_for(&profile, dir)?;
    let shares = case.queue_profiles(mac)?;
    let queues = if shares.len() == 1 {
        vec![pcap.clone()]
    } else {
        shares
            .iter()
            .map(|p| pcap_for(p, dir))
            .collect::<Result<_, _>>()?
    };
    let packets: u64 = shares
        .iter()
        .map(Profile::packets)
        .sum::<u64>()
        .max(profile.packets());
    let packets = u32::try_from(packets).map_err(|_| "profile too large")?;
    Ok(Prepared {
        pcap,
        queues,
        // The stored profile, the descriptor rings and the caches.
        mbufs: packets + 16_384 * case.workers.max(1),
        room: data_room(profile.pkt_bytes),
    })
}

/// testpmd on `prepared`'s profile, with the run's memory and timing.
fn baseline<'a>(
    opts: &'a Options,
    prepared: &'a Prepared,
    eal_memory: &'a [String],
) -> Baseline<'a> {
    Baseline {
        testpmd: &opts.testpmd,
        pcap: &prepared.pcap,
        eal_memory,
        mbufs: prepared.mbufs,
        data_room: prepared.room,
        warmup: opts.warmup,
        window: opts.window,
    }
}

/// The appliance's configuration for `case`.
fn setup_for(case: &Case, prepared: &Prepared, memory: &Memory, dir: &Path) -> Setup {
    Setup {
        mode: case.mode,
        scheduler: case.scheduler.into(),
        reals: case.reals,
        capacity: (case.flows + case.flows / 4)
            .next_power_of_two()
            .max(1 << 16),
        local_addresses: local_addresses(case),
        input: appliance::replay(&prepared.queues),
        workers: case.workers,
        mbufs: prepared.mbufs,
        data_room: prepared.room,
        eal_memory: memory.eal_args(),
        admin_socket: dir.join("admin.sock"),
    }
}

/// One appliance run of `case`; with `profile`, perf records the worker in
/// the window (and slows it: such a run's numbers are not the case's).
fn measure_case(
    opts: &Options,
    case: &Case,
    prepared: &Prepared,
    memory: &Memory,
    dir: &Path,
    profile: bool,
) -> Result<(Vec<Sample>, Option<perf::Profile>), String> {
    let setup = setup_for(case, prepared, memory, dir);
    let app = Appliance::start(&opts.dataplane, &setup, dir)?;
    let result = (|| {
        if case.kind == Kind::Established {
            // Warm up: every flow's session made, then the warm-up time.
            let deadline = Instant::now() + Duration::from_secs(120);
            while app.sample()?.sessions < u64::from(case.flows) {
                if Instant::now() > deadline {
                    return Err("the sessions were not all made within 120 s".to_owned());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(opts.warmup);
            let recording = profile.then(|| perf::start(app.pid(), dir)).flatten();
            // Five slices, so that a moment of noise on a shared machine
            // moves one slice, not the median.
            let mut samples = vec![app.sample()?];
            for _ in 0..SLICES {
                std::thread::sleep(opts.window / SLICES);
                samples.push(app.sample()?);
            }
            return Ok((samples, recording.map(perf::Recording::finish)));
        }
        // No profile here: perf takes about a second to attach, longer than
        // the first pass over the SYNs may last.
        let (first, last) = new_conn_window(&app, case.flows, opts.window)?;
        Ok((vec![first, last], None))
    })();
    let stopped = app.stop();
    let samples = result?;
    stopped?;
    Ok(samples)
}

/// New connections: the replay makes new sessions only on its first pass
/// over the profile, so sample often from the start and keep the longest
/// stretch in which (nearly) every packet received made a session. The
/// stretch opens at the first 50 ms that qualify: on a busy machine the
/// port can take a moment to start delivering.
fn new_conn_window(
    app: &Appliance,
    flows: u32,
    window: Duration,
) -> Result<(Sample, Sample), String> {
    let mut first = app.sample()?;
    let mut best = None;
    let end = Instant::now() + window;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        let s = app.sample()?;
        let done = s.created >= u64::from(flows);
        let rx = s.rx.saturating_sub(first.rx);
        let made = s.created.saturating_sub(first.created);
        if rx == 0 || made * 100 < rx * 99 {
            if best.is_some() || done {
                break;
            }
            // Not started yet: the stretch opens later.
            first = s;
            continue;
        }
        best = Some(s);
        if done {
            break;
        }
    }
    best.map(|last| (first, last)).ok_or_else(|| {
        "no 50 ms in which 99% of the packets received made a session: \
         the replay wrapped first (give the profile more SYNs) or sessions were not made"
            .to_owned()
    })
}

/// Slices of an established-traffic window.
const SLICES: u32 = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 0 => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        n => v[n / 2],
    }
}

/// The case's numbers from its samples: rates are the median over the
/// slices between consecutive samples, drops the sum over the window.
fn evaluate(case: &Case, samples: &[Sample], mhz: f64) -> (CaseResult, Pair) {
    let (a, b) = (&samples[0], &samples[samples.len() - 1]);
    let rate = |f: fn(&Sample) -> u64| {
        median(
            samples
                .windows(2)
                .map(|w| {
                    let secs = w[1].at.duration_since(w[0].at).as_secs_f64().max(1e-9);
                    f(&w[1]).saturating_sub(f(&w[0])) as f64 / secs
                })
                .collect(),
        )
    };
    let (tx, rx, created) = (rate(|s| s.tx), rate(|s| s.rx), rate(|s| s.created));
    let secs = b.at.duration_since(a.at).as_secs_f64();
    let before: BTreeMap<&str, u64> = a.drops.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let drops = b
        .drops
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(*before.get(k.as_str()).unwrap_or(&0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect();
    let mpps = tx / 1e6;
    // A worker's time per packet: the workers share the packets.
    let ns = if rx > 0.0 {
        1e9 * f64::from(case.workers.max(1)) / rx
    } else {
        0.0
    };
    let pair = Pair {
        ceiling_mpps: 0.0,
        mpps,
        ratio: 0.0,
        conns_per_s: created,
        ceiling_steal_pct: 0.0,
        steal_pct: a.cpu.steal_pct(&b.cpu),
        preempted: b.preempted.saturating_sub(a.preempted),
        max_loop_gap_ms: b.max_loop_gap_ns as f64 / 1e6,
    };
    let result = CaseResult {
        mode: case.mode,
        kind: case.kind,
        sessions: b.sessions,
        pkt_bytes: case.pkt_bytes,
        scheduler: case.scheduler,
        reals: case.reals,
        workers: case.workers,
        replies: case.replies,
        mpps,
        rx_mpps: rx / 1e6,
        conns_per_s: created,
        ratio_5tswap: 0.0,
        ratio_io: 0.0,
        ns_per_pkt: ns,
        cycles_per_pkt: ns * mhz / 1000.0,
        window_s: secs,
        drops,
        ratio_min: 0.0,
        ratio_max: 0.0,
        noisy: false,
        pairs: Vec::new(),
        profile: Vec::new(),
    };
    (result, pair)
}

/// The case's result from its pairs (in the order run): the median
/// pair's numbers, the median of the ratios, their spread.
fn combine(mut runs: Vec<(CaseResult, Pair)>, io_mpps: f64) -> CaseResult {
    let pairs: Vec<Pair> = runs.iter().map(|(_, p)| p.clone()).collect();
    let ratio = median(pairs.iter().map(|p| p.ratio).collect());
    runs.sort_by(|a, b| a.1.ratio.total_cmp(&b.1.ratio));
    let mut r = runs.swap_remove(runs.len() / 2).0;
    let lo = pairs.iter().map(|p| p.ratio).fold(f64::INFINITY, f64::min);
    let hi = pairs.iter().map(|p| p.ratio).fold(0.0, f64::max);
    r.ratio_5tswap = ratio;
    r.ratio_min = lo;
    r.ratio_max = hi;
    r.noisy = ratio <= 0.0 || hi > ratio * (1.0 + NOISY) || lo < ratio * (1.0 - NOISY);
    r.ratio_io = if io_mpps > 0.0 { r.mpps / io_mpps } else { 0.0 };
    r.pairs = pairs;
    r
}

/// The machine's steal time over `f`, with what `f` returned.
fn with_steal<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let before = crate::noise::CpuTimes::now();
    let out = f();
    (out, before.steal_pct(&crate::noise::CpuTimes::now()))
}

/// Runs the matrix and returns the results.
pub fn run(opts: &Options) -> Result<Results, String> {
    let cases: Vec<Case> = matrix(opts.quick)
        .into_iter()
        .filter(|c| opts.modes.is_empty() || opts.modes.contains(&c.mode))
        .filter(|c| {
            let label = c.label();
            opts.only.is_empty() || opts.only.iter().any(|o| label.contains(o.as_str()))
        })
        .collect();
    if cases.is_empty() {
        return Err("no case left to run".into());
    }
    let pcaps = opts.work.join("pcap");
    std::fs::create_dir_all(&pcaps)
        .map_err(|e| format!("cannot create {}: {e}", pcaps.display()))?;
    let probe_pcap = pcaps.join("probe.pcap");
    crate::pcap::Writer::create(&probe_pcap)
        .and_then(|w| w.finish())
        .map_err(|e| format!("cannot write {}: {e}", probe_pcap.display()))?;
    let mac = pcap_port_mac(&opts.dataplane, &probe_pcap)?;

    // Profiles first: the largest decides the memory every run gets, so
    // the appliance and testpmd run on the same kind of memory.
    let n = cases.len();
    let mut prepared = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        progress(i + 1, n, &format!("writing the profile of {}", c.label()));
        prepared.push(prepare(c, mac, &pcaps)?);
    }
    let heap = prepared
        .iter()
        .map(|p| heap_megabytes(p.mbufs, p.room))
        .max()
        .unwrap_or(512);
    let memory = Memory::reserve(heap, opts.allow_huge, "run");
    eprintln!(
        "lb-bench: {n} cases, DPDK memory: {} MB of {}",
        heap,
        memory.describe()
    );
    let machine = machine(&memory);

    let eal_memory = memory.eal_args();
    let baseline_of = |p| baseline(opts, p, &eal_memory);
    // testpmd's io rate, once per profile: the ratio that matters is to
    // 5tswap, measured in every pair.
    let mut ceilings: Vec<Ceiling> = Vec::new();
    for (c, p) in cases.iter().zip(&prepared) {
        let name = p.name();
        if ceilings.iter().any(|x| x.profile == name) {
            continue;
        }
        eprintln!("lb-bench: testpmd io on {name}");
        let io = baseline_of(p).measure(Fwd::Io)? / 1e6;
        ceilings.push(Ceiling {
            profile: name,
            kind: c.kind,
            flows: c.flows,
            pkt_bytes: c.pkt_bytes,
            io_mpps: io,
            five_tuple_swap_mpps: 0.0,
        });
    }

    let mut results = Vec::new();
    let mut failures = Vec::new();
    for (i, (case, p)) in cases.iter().zip(&prepared).enumerate() {
        progress(i + 1, n, &case.label());
        let dir = opts.work.join(format!("case-{i}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let name = p.name();
        let io_mpps = ceilings
            .iter()
            .find(|c| c.profile == name)
            .map_or(0.0, |c| c.io_mpps);
        // A B A B ...: testpmd and the appliance in turn, fresh processes,
        // so that the machine's mood moves both sides of a pair alike.
        let pair = |k: u32| -> Result<(CaseResult, Pair), String> {
            let (ceiling, ceiling_steal) =
                with_steal(|| baseline_of(p).measure(Fwd::FiveTupleSwap));
            let ceiling = ceiling? / 1e6;
            let (samples, _) = measure_case(opts, case, p, &memory, &dir, false)?;
            let (r, mut pair) = evaluate(case, &samples, machine.cpu_mhz);
            pair.ceiling_mpps = ceiling;
            pair.ceiling_steal_pct = ceiling_steal;
            pair.ratio = if ceiling > 0.0 {
                pair.mpps / ceiling
            } else {
                0.0
            };
            eprintln!(
                "lb-bench [{}/{n}]   pair {}: 5tswap {ceiling:.2} Mpps, appliance {:.2} Mpps: {:.3} (steal {:.1}%/{:.1}%, preempted {})",
                i + 1,
                k + 1,
                pair.mpps,
                pair.ratio,
                pair.ceiling_steal_pct,
                pair.steal_pct,
                pair.preempted
            );
            Ok((r, pair))
        };
        let mut runs = Vec::new();
        let mut failed = None;
        for k in 0..opts.pairs.max(1) {
            // A pair that fails is tried once more; a second failure
            // fails the case, and the run goes on with the next.
            match pair(k).or_else(|e| {
                eprintln!(
                    "lb-bench [{}/{n}]   pair {} failed, once more: {e}",
                    i + 1,
                    k + 1
                );
                pair(k)
            }) {
                Ok(r) => runs.push(r),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(error) = failed {
            eprintln!("lb-bench [{}/{n}]   FAILED: {error}", i + 1);
            failures.push(Failure {
                case: case.label(),
                error,
                dir,
            });
            continue;
        }
        let mut r = combine(runs, io_mpps);
        if opts.perf && case.kind == Kind::Established {
            // Where the cycles go, from one more run outside the pairs:
            // perf's sampling slows the worker, which no ratio may include.
            match measure_case(opts, case, p, &memory, &dir, true) {
                Ok((_, profile)) => r.profile = profile.unwrap_or_default(),
                Err(e) => eprintln!("lb-bench [{}/{n}]   the profiling run failed: {e}", i + 1),
            }
        }
        eprintln!(
            "lb-bench [{}/{n}]   {:.2} Mpps, {:.3} x 5tswap ({:.3}-{:.3}{}), {:.0} ns/packet, {:.0} new conns/s, {} sessions, drops {:?}",
            i + 1,
            r.mpps,
            r.ratio_5tswap,
            r.ratio_min,
            r.ratio_max,
            if r.noisy { ", NOISY" } else { "" },
            r.ns_per_pkt,
            r.conns_per_s,
            r.sessions,
            r.drops
        );
        results.push(r);
    }
    for c in &mut ceilings {
        c.five_tuple_swap_mpps = median(
            cases
                .iter()
                .zip(&prepared)
                .filter(|(_, p)| p.name() == c.profile)
                .filter_map(|(case, _)| {
                    results.iter().find(|r| {
                        r.mode == case.mode
                            && r.kind == case.kind
                            && r.pkt_bytes == case.pkt_bytes
                            && r.scheduler == case.scheduler
                            && r.reals == case.reals
                            && r.workers == case.workers
                            && r.replies == case.replies
                    })
                })
                .flat_map(|r| r.pairs.iter().map(|p| p.ceiling_mpps))
                .collect(),
        );
    }
    // Loss below the maximum, through the generator.
    let mut losses = Vec::new();
    let loss_cases: Vec<usize> = cases
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            // One worker: the generator's memif port has one queue.
            opts.loss
                && c.kind == Kind::Established
                && c.workers == 1
                && c.pkt_bytes == 64
                && c.flows == if opts.quick { 1000 } else { 100_000 }
                && (!opts.quick || c.mode == Mode::Fnat)
        })
        .map(|(i, _)| i)
        .collect();
    for (k, &i) in loss_cases.iter().enumerate() {
        let case = &cases[i];
        eprintln!(
            "lb-bench [loss {}/{}] {}: the generator through memif, flat out, then below that",
            k + 1,
            loss_cases.len(),
            case.label(),
        );
        let dir = opts.work.join(format!("loss-{k}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let run = LossRun {
            generator: &opts.generator,
            dataplane: &opts.dataplane,
            mode: case.mode,
            flows: case.flows,
            pkt_bytes: case.pkt_bytes,
            fractions: if opts.quick {
                vec![0.5]
            } else {
                vec![0.5, 0.9]
            },
            duration: opts.loss_window,
            dir: dir.clone(),
        };
        let setup = setup_for(case, &prepared[i], &memory, &dir);
        let rs = match run.run(&setup).or_else(|e| {
            eprintln!(
                "lb-bench [loss {}/{}]   failed, once more: {e}",
                k + 1,
                loss_cases.len()
            );
            run.run(&setup)
        }) {
            Ok(rs) => rs,
            Err(error) => {
                eprintln!(
                    "lb-bench [loss {}/{}]   FAILED: {error}",
                    k + 1,
                    loss_cases.len()
                );
                failures.push(Failure {
                    case: format!("loss run of {}", case.label()),
                    error,
                    dir,
                });
                continue;
            }
        };
        for r in rs {
            eprintln!(
                "lb-bench [loss {}/{}]   {:.0}% of {:.2} Mpps: {} refused, {} dropped ({:.4}% lost: {} outside the process, {} inside); stalls {} own (longest {:.2} ms), {} outside (longest {:.2} ms)",
                k + 1,
                loss_cases.len(),
                r.fraction * 100.0,
                r.max_mpps,
                r.refused,
                r.dropped,
                r.loss_pct,
                r.lost.outside,
                r.lost.inside(),
                r.stalls_own,
                r.max_own_stall_ms,
                r.stalls_outside,
                r.max_outside_stall_ms,
            );
            losses.push(r);
        }
    }

    let baseline = ceilings
        .iter()
        .find(|c| c.pkt_bytes == 64 && c.kind == Kind::Established && c.flows == 100_000)
        .unwrap_or(&ceilings[0])
        .clone();
    Ok(Results {
        date: command_output("date", &["-u", "+%Y-%m-%d"]),
        command: command_line(),
        machine,
        baseline,
        baselines: ceilings,
        cases: results,
        losses,
        failures,
        quick: opts.quick,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_fit_the_frame_and_an_outer_header() {
        assert_eq!(data_room(64), 256);
        assert_eq!(data_room(1500), 1728);
        assert!(heap_megabytes(2_000_000, 256) > 800);
    }

    #[test]
    fn the_full_matrix_covers_modes_sizes_and_schedulers() {
        let m = matrix(false);
        for mode in Mode::ALL {
            for flows in [1000, 100_000, 1_000_000] {
                assert!(m
                    .iter()
                    .any(|c| c.mode == mode && c.kind == Kind::Established && c.flows == flows));
            }
            assert!(m.iter().any(|c| c.mode == mode && c.kind == Kind::NewConn));
            assert!(m.iter().any(|c| c.mode == mode && c.pkt_bytes == 1500));
        }
        for s in ["rr", "wlc", "mh"] {
            assert!(m.iter().any(|c| c.scheduler == s && c.reals == 1000));
        }
        for s in LOAD_SCHEDULERS {
            for reals in [10, 1000, 10_000] {
                assert!(m.iter().any(|c| c.scheduler == s && c.reals == reals));
            }
        }
    }

    fn sample(at: Instant, rx: u64, drops: u64, steal: u64, cpu: u64, preempted: u64) -> Sample {
        Sample {
            at,
            rx,
            tx: rx - 10,
            created: 5,
            sessions: 1000,
            max_loop_gap_ns: 2_000_000,
            drops: vec![
                ("drop_no_session".into(), drops),
                ("drop_tx_full".into(), 1),
            ],
            cpu: crate::noise::CpuTimes { steal, total: cpu },
            preempted,
        }
    }

    #[test]
    fn two_workers_get_disjoint_shares_of_the_flows() {
        let case = matrix(false)
            .into_iter()
            .find(|c| c.workers == 2 && c.replies == Replies::None)
            .expect("a two-worker case");
        assert_eq!((case.mode, case.flows), (Mode::Fnat, 100_000));
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let shares = case.queue_profiles(mac).unwrap();
        assert_eq!(shares.len(), 2);
        let clients = |p: &Profile| -> std::collections::HashSet<std::net::SocketAddr> {
            (0..p.flows).map(|i| p.client(i)).collect()
        };
        let (a, b) = (clients(&shares[0]), clients(&shares[1]));
        assert_eq!(a.len() + b.len(), 100_000);
        assert!(a.is_disjoint(&b));
        assert_eq!(case.profile(mac).flows, 100_000, "testpmd replays them all");
        assert_eq!(matrix(false)[0].queue_profiles(mac).unwrap().len(), 1);
        // Replies: on the owner's queue, or each on the other worker's.
        for (replies, crossed) in [(Replies::OwnQueue, false), (Replies::OtherQueue, true)] {
            let case = Case {
                replies,
                ..case.clone()
            };
            for (k, p) in case.queue_profiles(mac).unwrap().iter().enumerate() {
                assert_eq!(p.replies.len(), 50_000);
                let owners: std::collections::HashSet<u16> = p
                    .replies
                    .iter()
                    .map(|(_, local)| lb_core::laddr::owner_of(local.port(), 2))
                    .collect();
                let k = u16::try_from(k).unwrap();
                let owner = if crossed { 1 - k } else { k };
                assert_eq!(owners, [owner].into(), "{replies:?} queue {k}");
                let locals: std::collections::HashSet<SocketAddr> =
                    p.replies.iter().map(|r| r.1).collect();
                assert_eq!(locals.len(), 50_000, "one local port a session");
            }
        }
    }

    #[test]
    fn a_case_is_judged_on_its_window_only() {
        let case = matrix(true).remove(0);
        let t = Instant::now();
        let a = sample(t, 100, 3, 10, 1000, 4);
        let b = sample(t + Duration::from_secs(2), 4_000_100, 7, 30, 1400, 6);
        let (r, p) = evaluate(&case, &[a.clone(), b.clone()], 2000.0);
        assert!((r.mpps - 2.0).abs() < 1e-9);
        assert!((r.ns_per_pkt - 500.0).abs() < 1e-6);
        assert!((r.cycles_per_pkt - 1000.0).abs() < 1e-6);
        assert_eq!(r.conns_per_s, 0.0);
        assert_eq!(r.drops.len(), 1);
        assert_eq!(r.drops["drop_no_session"], 4);
        assert!((p.steal_pct - 5.0).abs() < 1e-9, "20 of 400 ticks stolen");
        assert_eq!(p.preempted, 2);
        assert!((p.max_loop_gap_ms - 2.0).abs() < 1e-9);

        // A slow slice (noise) does not move the median of three.
        let mut c = b.clone();
        c.at = b.at + Duration::from_secs(2);
        c.rx = b.rx + 400_000;
        c.tx = b.tx + 400_000;
        let mut d = c.clone();
        d.at = c.at + Duration::from_secs(2);
        d.rx = c.rx + 4_000_000;
        d.tx = c.tx + 4_000_000;
        let (r, _) = evaluate(&case, &[a, b, c, d], 2000.0);
        assert!((r.mpps - 2.0).abs() < 1e-9, "{}", r.mpps);
        assert!((r.window_s - 6.0).abs() < 1e-9);
    }

    #[test]
    fn a_case_is_the_median_of_its_pairs_and_noisy_beyond_the_bound() {
        let case = matrix(true).remove(0);
        let t = Instant::now();
        let a = sample(t, 100, 3, 10, 1000, 4);
        let b = sample(t + Duration::from_secs(2), 4_000_100, 7, 30, 1400, 6);
        let run = |ceiling: f64, mpps: f64| {
            let (mut r, mut p) = evaluate(&case, &[a.clone(), b.clone()], 2000.0);
            r.mpps = mpps;
            p.mpps = mpps;
            p.ceiling_mpps = ceiling;
            p.ratio = mpps / ceiling;
            (r, p)
        };
        // The machine halves both sides of the third pair: the ratio holds.
        let r = combine(
            vec![
                run(10.0, 3.0),
                run(10.0, 3.2),
                run(5.0, 1.6),
                run(10.0, 3.1),
                run(10.0, 2.9),
            ],
            20.0,
        );
        assert!((r.ratio_5tswap - 0.31).abs() < 1e-9, "{}", r.ratio_5tswap);
        assert!((r.ratio_min - 0.29).abs() < 1e-9);
        assert!((r.ratio_max - 0.32).abs() < 1e-9);
        assert!(!r.noisy);
        assert_eq!(r.pairs.len(), 5);
        assert!((r.mpps - 3.1).abs() < 1e-9, "the median pair's numbers");
        assert!((r.ratio_io - 0.155).abs() < 1e-9);
        // One side alone slowed by a third: beyond 15%, noisy.
        let r = combine(vec![run(10.0, 3.0), run(10.0, 3.0), run(10.0, 2.0)], 20.0);
        assert!(r.noisy);
        let r = combine(vec![run(10.0, 3.0), run(10.0, 3.4)], 20.0);
        assert!(!r.noisy, "0.30 and 0.34 lie 6% either side of their median");
    }
}
