//! The dataplane process: from a configuration to running workers and back to
//! a report.
//!
//! Start-up does everything that can fail before any worker runs (EAL, device
//! probes, the mempool, every port and queue), so a bad configuration stops
//! the process with one clear error and nothing half-started. The main lcore
//! then only watches: the stop flag (SIGINT/SIGTERM), the optional run limits,
//! and the workers' health.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::config::{Config, ConfigError, LbSetup};
use lb_core::engine::{Counters, Worker as Engine, WorkerConfig};
use lb_core::net::{Interface, NetError, Network, Route};
use lb_core::service::{ServiceError, Snapshot};
use lb_core::session;
use lb_core::stats::{merge_reports, ServiceReport};
use lb_core::wire::MacAddr;
use serde::Serialize;

use crate::dpdk::{
    self, Eal, EalError, Gso, LaunchError, LcoreHandle, Link, Mempool, MempoolError, Port,
    PortConfig, PortError, PortStats, RxQueue, TxQueue, MAX_BURST,
};
use crate::forward::ForwardWorker;
use crate::neigh::Neighbors;
use crate::stats::{Counter, WorkerStats};
use crate::worker::{ExceptionPath, LbWorker, WorkerResult};

/// Why the dataplane did not run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot read config file `{path}`: {source}")]
    ReadConfig {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Config { path: String, source: ConfigError },
    #[error(transparent)]
    Eal(#[from] EalError),
    #[error("port `{port}`: {source}")]
    Probe { port: String, source: EalError },
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    Mempool(#[from] MempoolError),
    #[error("worker lcore {lcore}: {source}")]
    Launch { lcore: u32, source: LaunchError },
    #[error("worker on lcore {0} panicked")]
    WorkerPanicked(u32),
    #[error("the network configuration is invalid: {0}")]
    Network(#[from] NetError),
    #[error("the services are invalid: {0}")]
    Services(#[from] ServiceError),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error(transparent)]
    Ring(#[from] crate::dpdk::RingError),
    #[error("[workers]: {0}")]
    Realtime(#[from] crate::dpdk::RealtimeError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot receive connection sync on {listen} (it must be an address of the exception interface): {source}")]
    Sync {
        listen: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot follow the kernel's addresses on {interface}: {source}")]
    KernelVips {
        interface: String,
        source: std::io::Error,
    },
    #[error("cannot route the VIPs to announce through {interface}: {source}")]
    Announce {
        interface: String,
        source: std::io::Error,
    },
    #[error("cannot set up the exception path's kernel interface {interface}: {message}")]
    KernelInterface { interface: String, message: String },
}

/// Brings the exception TAP's kernel side up with its addresses, so kernel
/// programs (health checks among them) use the DIP through it.
fn setup_kernel_interface(interface: &str, addresses: &[String]) -> Result<(), AppError> {
    let ip = |args: &[&str]| -> Result<(), AppError> {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| AppError::KernelInterface {
                interface: interface.to_owned(),
                message: format!("cannot run ip: {e}"),
            })?;
        let err = String::from_utf8_lossy(&out.stderr);
        // An address already there is fine (a restart).
        if !out.status.success() && !err.contains("File exists") {
            return Err(AppError::KernelInterface {
                interface: interface.to_owned(),
                message: err.trim().to_owned(),
            });
        }
        Ok(())
    };
    for a in addresses {
        ip(&["addr", "add", a, "dev", interface])?;
    }
    ip(&["link", "set", interface, "up"])
}

/// Reads and validates a configuration file.
pub fn load_config(path: &Path) -> Result<Config, AppError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| AppError::ReadConfig {
        path: shown.clone(),
        source,
    })?;
    Config::from_toml(&text).map_err(|source| AppError::Config {
        path: shown,
        source,
    })
}

/// Limits on a run, besides the stop flag.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// EAL arguments appended to the configuration's.
    pub extra_eal_args: Vec<String>,
    /// Stop once no packet has arrived for this long.
    pub idle_exit: Option<Duration>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Serve the admin socket here (overrides the configuration's).
    pub admin_socket: Option<std::path::PathBuf>,
    /// Set (by SIGHUP) to re-read this file's services and timeouts.
    pub reload: Option<(Arc<AtomicBool>, std::path::PathBuf)>,
}

/// What a run did, for printing and for tests.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub elapsed_secs: f64,
    pub ports: Vec<PortReport>,
    pub workers: Vec<WorkerReport>,
    /// The load balancer's engine, summed over workers (load-balancer mode).
    pub engine: Option<EngineReport>,
}

/// The engine's counters and statistics, summed over workers.
#[derive(Debug, Clone, Serialize)]
pub struct EngineReport {
    pub counters: BTreeMap<&'static str, u64>,
    pub sessions: u64,
    pub services: Vec<ServiceSummary>,
}

/// One service as `ipvsadm -L -n --stats` would show it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceSummary {
    pub service: String,
    pub scheduler: String,
    pub conns: u64,
    pub in_pkts: u64,
    pub out_pkts: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub reals: Vec<RealSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RealSummary {
    pub server: String,
    pub forward: &'static str,
    pub weight: u32,
    pub active: u64,
    pub inactive: u64,
    pub conns: u64,
    pub in_pkts: u64,
    pub out_pkts: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortReport {
    pub name: String,
    pub driver: String,
    pub mac: String,
    pub link: Link,
    pub stats: PortStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerReport {
    pub lcore: u32,
    pub counters: BTreeMap<&'static str, u64>,
}

/// The EAL arguments for `config`: its own, then `extra`, then the lcore list
/// and a per-process file prefix unless those were given.
pub fn eal_args(config: &Config, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = config
        .eal
        .args
        .iter()
        .chain(extra)
        .map(|a| match a.strip_prefix("--vdev=") {
            Some(dev) => format!("--vdev={}", af_packet_devargs(dev)),
            None => a.clone(),
        })
        .collect();
    let short = |args: &[String], flag: &str| {
        args.iter()
            .any(|a| a.starts_with(flag) && !a.starts_with("--"))
    };
    let long = |args: &[String], flag: &str| {
        args.iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    if !short(&args, "-l") && !short(&args, "-c") && !long(&args, "--lcores") {
        let main = config.workers.main_lcore;
        let list: Vec<String> = std::iter::once(main)
            .chain(config.workers.lcores.get_ref().iter().copied())
            .map(|l| l.to_string())
            .collect();
        args.push("-l".into());
        args.push(list.join(","));
        args.push(format!("--main-lcore={main}"));
    }
    if !long(&args, "--file-prefix") {
        args.push(format!("--file-prefix=lb-{}", std::process::id()));
    }
    args
}

/// af_packet ring frames that hold a whole kernel super-frame (a TCP
/// segment of up to 64 KB from a sender with TSO, which veth passes on
/// unsegmented): the largest frame whose data, less DPDK's 32 bytes of
/// ring header, still fits one mbuf (65,535 bytes less 128 of headroom).
/// DPDK places frame `i` at `i * framesz`, so a block holds a whole number
/// of frames and a whole number of pages: 256 frames.
const AF_PACKET_FRAME: u32 = 65_424;
const AF_PACKET_BLOCK: u32 = AF_PACKET_FRAME * 256;
const AF_PACKET_FRAMES: u32 = 512;
/// The bytes of an af_packet ring frame that are not packet data.
const AF_PACKET_FRAME_OVERHEAD: u32 = 32;

/// Device arguments for an af_packet port as the dataplane probes it: ring
/// frames for super-frames unless the arguments size the ring themselves.
fn af_packet_devargs(dev: &str) -> String {
    let driver = dev.split(',').next().unwrap_or_default();
    let is_af_packet = driver.starts_with("net_af_packet") || driver.starts_with("eth_af_packet");
    let sized = ["blocksz=", "framesz=", "framecnt="]
        .iter()
        .any(|k| dev.split(',').any(|kv| kv.starts_with(k)));
    if !is_af_packet || sized {
        return dev.to_owned();
    }
    format!("{dev},blocksz={AF_PACKET_BLOCK},framesz={AF_PACKET_FRAME},framecnt={AF_PACKET_FRAMES}")
}

/// The mbuf data room (headroom included) a port's receive pool needs for
/// its device arguments: an af_packet port's ring frame, when it is larger
/// than a standard mbuf; `None` for the shared pool.
fn rx_data_room(devargs: &str) -> Option<u16> {
    let framesz: u32 = devargs
        .split(',')
        .find_map(|kv| kv.strip_prefix("framesz="))?
        .parse()
        .ok()?;
    let room = framesz.saturating_sub(AF_PACKET_FRAME_OVERHEAD) + dpdk::HEADROOM;
    (room > u32::from(dpdk::DEFAULT_DATA_ROOM)).then(|| u16::try_from(room).unwrap_or(u16::MAX))
}

/// Receive pool mbufs for a port with large frames: the ones in flight in
/// every worker's bursts and batches, with room to spare.
const LARGE_RX_MBUFS: u32 = 1023;

/// The exit report's count of packets handed to a worker after it stopped
/// reading its ring (the last few of a run, freed at exit).
pub const LATE_HAND_OVER: &str = "drop_hand_over_at_stop";

/// Slots of each worker's hand-over ring (a power of two).
const HAND_OVER_SLOTS: u32 = 4096;

fn mempool_size(config: &Config, queues: u16) -> u32 {
    if config.mempool.mbufs > 0 {
        return config.mempool.mbufs;
    }
    let rings: u32 = config
        .ports
        .iter()
        .map(|p| (u32::from(p.rx_descriptors) + u32::from(p.tx_descriptors)) * u32::from(queues))
        .sum();
    let workers = u32::try_from(config.workers.lcores.get_ref().len()).unwrap_or(u32::MAX);
    let per_worker = 2 * u32::from(dpdk::burst_len(MAX_BURST)) + config.mempool.cache;
    let mut in_flight = workers.saturating_add(1).saturating_mul(per_worker);
    if workers > 1 && config.lb.is_some() {
        // Each load-balancer worker's hand-over ring can hold mbufs too.
        in_flight = in_flight.saturating_add(workers.saturating_mul(HAND_OVER_SLOTS));
    }
    // A power of two minus one is the mempool's most efficient size.
    (rings.saturating_add(in_flight).saturating_add(1024)).next_power_of_two() - 1
}

/// The CPUs of a kernel CPU list (`1-3,5`, as in
/// `/sys/devices/system/cpu/isolated`).
fn cpu_list(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
            out.extend(a..=b);
        }
    }
    out
}

/// The worker lcores that are not in the kernel's isolated CPUs, where
/// lcore ids are CPU ids (no `--lcores` mapping in the EAL arguments).
fn unisolated(config: &Config, lcores: &[u32], isolated: &str) -> Vec<u32> {
    if config.eal.args.iter().any(|a| a.starts_with("--lcores")) {
        return Vec::new();
    }
    let isolated = cpu_list(isolated);
    lcores
        .iter()
        .copied()
        .filter(|l| !isolated.contains(l))
        .collect()
}

/// Warns when a worker polls a CPU the kernel also schedules other work on:
/// its loop then stalls whenever that work runs (`max_loop_gap_ns`).
fn warn_unisolated(config: &Config, lcores: &[u32]) {
    let isolated = std::fs::read_to_string("/sys/devices/system/cpu/isolated").unwrap_or_default();
    let shared = unisolated(config, lcores, &isolated);
    if !shared.is_empty() {
        tracing::warn!(
            lcores = ?shared,
            "workers poll CPUs that are not isolated (isolcpus, nohz_full): other work will stall them; see docs/deploy.md"
        );
    }
}

/// The operator's tuning of the worker threads, before any work starts:
/// locked memory, real-time priority (and a word on the kernel's real-time
/// throttling, which would stop a worker for the rest of every second).
fn tune_workers(config: &Config, eal: &Eal, lcores: &[u32]) -> Result<(), AppError> {
    if config.workers.lock_memory {
        dpdk::lock_memory()?;
        tracing::info!("memory locked (mlockall)");
    }
    let priority = *config.workers.realtime_priority.get_ref();
    if priority == 0 {
        return Ok(());
    }
    for &lcore in lcores {
        dpdk::set_realtime(eal, lcore, priority)?;
    }
    tracing::info!(priority, lcores = ?lcores, "workers run under SCHED_FIFO");
    let runtime = std::fs::read_to_string("/proc/sys/kernel/sched_rt_runtime_us")
        .unwrap_or_default()
        .trim()
        .to_owned();
    if !runtime.is_empty() && runtime != "-1" {
        tracing::warn!(
            sched_rt_runtime_us = %runtime,
            "the kernel throttles real-time threads: a worker that polls flat out is stopped \
             for the rest of every second once it has used this much of it; on isolated \
             cores set kernel.sched_rt_runtime_us = -1 (docs/deploy.md)"
        );
    }
    Ok(())
}

/// Where the ports and the workers sit: each port's NUMA node (`None`:
/// not known, as for most virtual devices) and each worker lcore's.
struct Placement {
    ports: Vec<(String, Option<u32>)>,
    workers: Vec<(u32, u32)>,
}

impl Placement {
    /// The one node every port whose node is known sits on, where the
    /// mbufs belong; `None` if no port's node is known or they differ.
    fn ports_node(&self) -> Option<u32> {
        let mut known = self.ports.iter().filter_map(|(_, n)| *n);
        let first = known.next()?;
        known.all(|n| n == first).then_some(first)
    }

    /// One line per port that workers on another node poll (every worker
    /// polls every port): each of its packets crosses the interconnect.
    fn far_workers(&self) -> Vec<String> {
        self.ports
            .iter()
            .filter_map(|(name, node)| {
                let node = (*node)?;
                let far: Vec<u32> = self
                    .workers
                    .iter()
                    .filter(|(_, n)| *n != node)
                    .map(|(l, _)| *l)
                    .collect();
                (!far.is_empty()).then(|| {
                    format!("port {name} is on NUMA node {node}, workers on lcores {far:?} are not")
                })
            })
            .collect()
    }
}

/// Warns where a worker and a port it polls sit on different NUMA nodes.
fn warn_far(placement: &Placement) {
    for line in placement.far_workers() {
        tracing::warn!("{line}: choose lcores on the port's node; see docs/deploy.md");
    }
}

/// The mbuf pool, on the ports' node when there is one; if that node has no
/// memory for it, on any node, with a warning.
fn mbuf_pool(
    eal: &Eal,
    name: &str,
    count: u32,
    cache: u32,
    room: u16,
    node: Option<u32>,
) -> Result<&'static Mempool, AppError> {
    if let Some(n) = node {
        match Mempool::create_on(eal, name, count, cache, room, Some(n)) {
            Ok(pool) => return Ok(pool),
            Err(e) => tracing::warn!(
                pool = name,
                node = n,
                error = %e,
                "no memory for the mbufs on the ports' NUMA node (reserve hugepages there); they go on any node"
            ),
        }
    }
    Ok(Mempool::create(eal, name, count, cache, room)?)
}

/// Runs the forwarder described by `config` until `stop` is set or a limit in
/// `opts` is reached, then stops the workers, closes the ports and reports.
pub fn run(
    config: &Config,
    opts: &RunOptions,
    asked: Arc<AtomicBool>,
) -> Result<RunReport, AppError> {
    // The workers' own flag: they stop after the announcements are
    // withdrawn (and the routers had time to hear it), not at the signal.
    let stop = Arc::new(AtomicBool::new(false));
    let eal = Eal::init(eal_args(config, &opts.extra_eal_args))?;
    for p in &config.ports {
        if let Some(device) = &p.device {
            eal.probe(&af_packet_devargs(device.get_ref()))
                .map_err(|source| AppError::Probe {
                    port: p.name.get_ref().clone(),
                    source,
                })?;
        }
    }
    let lcores = config.workers.lcores.get_ref();
    warn_unisolated(config, lcores);
    tune_workers(config, &eal, lcores)?;
    let placement = Placement {
        ports: config
            .ports
            .iter()
            .map(|p| (p.name.get_ref().clone(), eal.port_node(p.name.get_ref())))
            .collect(),
        workers: lcores.iter().map(|&l| (l, eal.lcore_node(l))).collect(),
    };
    warn_far(&placement);
    let node = placement.ports_node();
    let queues = u16::try_from(lcores.len()).unwrap_or(u16::MAX);
    let pool = mbuf_pool(
        &eal,
        "lb_mbufs",
        mempool_size(config, queues),
        config.mempool.cache,
        match config.mempool.data_room {
            0 => dpdk::DEFAULT_DATA_ROOM,
            room => room,
        },
        node,
    )?;

    let mut ports = Vec::new();
    // queues_of[port][worker] = (rx, tx) of that worker on that port.
    let mut queues_of = Vec::new();
    for (i, p) in config.ports.iter().enumerate() {
        let devargs = p
            .device
            .as_ref()
            .map(|d| af_packet_devargs(d.get_ref()))
            .or_else(|| eal.device_arg(p.name.get_ref()));
        // A port whose frames are larger than a standard mbuf receives
        // into a pool of its own, sized for them.
        let rx_pool = match devargs.as_deref().and_then(rx_data_room) {
            Some(room) => mbuf_pool(
                &eal,
                &format!("lb_rx_{i}"),
                LARGE_RX_MBUFS,
                config.mempool.cache.min(LARGE_RX_MBUFS / 4),
                room,
                placement.ports[i].1,
            )?,
            None => pool,
        };
        let cfg = PortConfig {
            rx_queues: queues,
            tx_queues: queues,
            rx_descriptors: p.rx_descriptors,
            tx_descriptors: p.tx_descriptors,
            mtu: p.mtu,
            promiscuous: p.promiscuous,
        };
        let (port, rx, tx) = Port::open(&eal, p.name.get_ref(), rx_pool, &cfg)?;
        tracing::info!(
            port = port.name(),
            driver = port.driver(),
            node = ?placement.ports[i].1,
            queues,
            rx_checksum = ?p
                .rx_checksum
                .unwrap_or_else(|| lb_core::offload::default_for_driver(port.driver())),
            "port started"
        );
        ports.push(port);
        queues_of.push(rx.into_iter().zip(tx).collect::<Vec<_>>());
    }

    if let (Some(_), Some(e)) = (&config.lb, &config.exception) {
        if let Some(iface) = &e.interface {
            setup_kernel_interface(iface, &e.addresses)?;
        }
    }

    // Hand every worker its queue of each port.
    let mut per_worker: Vec<Vec<_>> = (0..lcores.len()).map(|_| Vec::new()).collect();
    for port_queues in queues_of {
        for (w, q) in port_queues.into_iter().enumerate() {
            per_worker[w].push(q);
        }
    }
    let mut handles = Vec::new();
    let mut readers = Vec::new();
    let mut control = None;
    let launched = match &config.lb {
        Some(lb) => launch_lb(
            &eal,
            config,
            lb,
            &ports,
            per_worker,
            pool,
            &stop,
            &mut handles,
            &mut readers,
        )
        .map(|mut c| {
            c.worker_stats = readers.clone();
            c.ports = ports.clone();
            control = Some(c);
        }),
        None => launch_forwarders(&eal, config, per_worker, &stop, &mut handles, &mut readers),
    };
    if let Err(e) = launched {
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.join();
        }
        return Err(e);
    }
    tracing::info!(
        workers = lcores.len(),
        mode = if config.lb.is_some() {
            "load balancer"
        } else {
            "forwarder"
        },
        "forwarding"
    );

    // The admin socket, in load-balancer mode.
    let (admin_tx, admin_rx) = crossbeam_channel::bounded::<crate::admin::Pending>(64);
    let socket = opts.admin_socket.clone().or_else(|| {
        config
            .admin
            .as_ref()
            .map(|a| std::path::PathBuf::from(&a.socket))
    });
    let metrics_at = config.metrics.as_ref().and_then(|m| m.addr());
    let _metrics = match (&control, metrics_at) {
        (Some(_), Some(addr)) => match crate::metrics::serve(addr, admin_tx.clone()) {
            Ok(server) => {
                tracing::info!(listen = %server.addr, "metrics endpoint ready");
                Some(server)
            }
            Err(source) => {
                stop.store(true, Ordering::Relaxed);
                for h in handles {
                    let _ = h.join();
                }
                return Err(AppError::Metrics { addr, source });
            }
        },
        _ => None,
    };
    let admin_stats = control.as_ref().map(|c| Arc::clone(&c.admin_stats));
    let _admin = match (admin_stats, socket) {
        (Some(stats), Some(path)) => match crate::admin::serve(
            path.as_path(),
            config.admin.as_ref().and_then(|a| a.gid()),
            admin_tx,
            crate::admin::Limits::of(config.admin.as_ref()),
            stats,
        ) {
            Ok(server) => {
                tracing::info!(socket = %path.display(), "admin socket ready");
                Some(server)
            }
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                for h in handles {
                    let _ = h.join();
                }
                return Err(e.into());
            }
        },
        _ => None,
    };

    // Ports up, workers running, the socket listening: ready.
    crate::notify::notify("READY=1\nSTATUS=forwarding");
    let start = Instant::now();
    let mut last_rx = 0;
    let mut last_change = start;
    let mut last_sample = start;
    while !asked.load(Ordering::Relaxed) && !handles.iter().any(WorkerHandle::is_finished) {
        // The control thread's work: admin requests as they come, rates
        // every two seconds, the run limits.
        if let Ok((op, reply)) = admin_rx.recv_timeout(Duration::from_millis(10)) {
            if let Some(c) = control.as_mut() {
                let _ = reply.send(crate::admin::execute(c, op));
            }
        }
        if let (Some(c), Some((flag, path))) = (control.as_mut(), opts.reload.as_ref()) {
            if flag.swap(false, Ordering::Relaxed) {
                match c.reload(path) {
                    Ok((out, restart)) => {
                        tracing::info!(
                            file = %path.display(),
                            changes = ?out.diff,
                            "reloaded: services and timeouts applied"
                        );
                        if restart {
                            tracing::warn!(
                                file = %path.display(),
                                "the file's EAL, workers, mempool, ports, addresses, routes, neighbours, exception path or sessions differ from those the process started with: not applied, they change with a restart (routes and neighbours also live with lb-ctl)"
                            );
                        }
                    }
                    Err(e) => tracing::error!(
                        file = %path.display(),
                        "reload refused, nothing changed: {e}"
                    ),
                }
            }
        }
        if let Some(c) = control.as_mut() {
            c.vips_tick();
            if let Some(p) = c.peers.as_mut() {
                p.tick();
            }
            c.health_tick();
            if last_sample.elapsed() >= Duration::from_secs(2) {
                last_sample = Instant::now();
                c.sample_rates();
            }
        }
        let now = Instant::now();
        let rx: u64 = readers.iter().map(|r| r.get(Counter::RxPackets)).sum();
        if rx != last_rx {
            last_rx = rx;
            last_change = now;
        }
        let idle = opts.idle_exit.is_some_and(|d| now - last_change >= d);
        let over = opts.duration.is_some_and(|d| now - start >= d);
        if idle || over {
            break;
        }
    }
    crate::notify::notify("STOPPING=1");
    // The routers stop sending here first: the routing daemon hears that
    // the VIPs' routes went and tells them, through the workers, which
    // carry what is still in flight meanwhile.
    if let Some(c) = control.as_mut() {
        if c.withdraw_all() {
            let drain = config
                .lb
                .as_ref()
                .map_or(Duration::ZERO, |l| l.announce_drain);
            tracing::info!(
                ?drain,
                "announcements withdrawn: draining before the workers stop"
            );
            std::thread::sleep(drain);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let mut panicked = None;
    let mut results = Vec::new();
    for h in handles {
        let lcore = h.lcore();
        match h.join() {
            Ok(Some(r)) => results.push(r),
            Ok(None) => {}
            Err(()) => {
                panicked.get_or_insert(lcore);
            }
        }
    }
    if let Some(lcore) = panicked {
        return Err(AppError::WorkerPanicked(lcore));
    }
    // No worker runs now, so nothing more can be handed over: what waits in
    // a ring came after its owner stopped reading. Count it, then free it.
    let mut late: Vec<u64> = Vec::with_capacity(results.len());
    for r in &mut results {
        let mut n = 0u64;
        if let Some(inbox) = r.inbox.as_mut() {
            let mut burst = crate::dpdk::MbufBurst::new();
            loop {
                let got = inbox.dequeue(&mut burst);
                if got == 0 {
                    break;
                }
                n += got as u64;
                burst.clear();
            }
        }
        late.push(n);
    }
    let engine = config.lb.as_ref().map(|_| engine_report(&results));
    let report = RunReport {
        elapsed_secs: elapsed.as_secs_f64(),
        ports: ports
            .iter()
            .map(|p| PortReport {
                name: p.name().to_owned(),
                driver: p.driver().to_owned(),
                mac: format_mac(p.mac()),
                link: p.link(),
                stats: p.stats(),
            })
            .collect(),
        workers: readers
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut counters = r.snapshot();
                if config.lb.is_some() {
                    // Load-balancer workers are launched, and so joined, in
                    // the order of their readers.
                    counters.insert(LATE_HAND_OVER, late.get(i).copied().unwrap_or(0));
                }
                WorkerReport {
                    lcore: r.lcore(),
                    counters,
                }
            })
            .collect(),
        engine,
    };
    // Dropping the last port handles stops and closes the devices, which
    // flushes file-backed ones such as net_pcap.
    drop(ports);
    Ok(report)
}

/// A running worker of either kind.
enum WorkerHandle {
    Forward(LcoreHandle<()>),
    Lb(LcoreHandle<WorkerResult>),
}

impl WorkerHandle {
    fn is_finished(&self) -> bool {
        match self {
            WorkerHandle::Forward(h) => h.is_finished(),
            WorkerHandle::Lb(h) => h.is_finished(),
        }
    }

    fn lcore(&self) -> u32 {
        match self {
            WorkerHandle::Forward(h) => h.lcore(),
            WorkerHandle::Lb(h) => h.lcore(),
        }
    }

    fn join(self) -> Result<Option<WorkerResult>, ()> {
        match self {
            WorkerHandle::Forward(h) => h.join().map(|()| None).map_err(|_| ()),
            WorkerHandle::Lb(h) => h.join().map(Some).map_err(|_| ()),
        }
    }
}

type Queues = Vec<(RxQueue, TxQueue)>;

fn launch_forwarders(
    eal: &Eal,
    config: &Config,
    per_worker: Vec<Queues>,
    stop: &Arc<AtomicBool>,
    handles: &mut Vec<WorkerHandle>,
    readers: &mut Vec<Arc<WorkerStats>>,
) -> Result<(), AppError> {
    for (&lcore, port_queues) in config.workers.lcores.get_ref().iter().zip(per_worker) {
        let (rx_of, tx_of): (Vec<_>, Vec<TxQueue>) = port_queues.into_iter().unzip();
        let mut rx_of: Vec<_> = rx_of.into_iter().map(Some).collect();
        let routes = config
            .forwards
            .iter()
            .map(|f| {
                let from = config.port_index(f.from.get_ref()).expect("validated");
                let to = config.port_index(f.to.get_ref()).expect("validated");
                (rx_of[from].take().expect("one forward per port"), to)
            })
            .collect();
        let (counters, reader) = WorkerStats::new(lcore);
        let worker = ForwardWorker {
            routes,
            tx: tx_of,
            burst: usize::from(*config.workers.burst.get_ref()),
            counters,
            stop: Arc::clone(stop),
        };
        let h = dpdk::launch(eal, lcore, move || worker.run())
            .map_err(|source| AppError::Launch { lcore, source })?;
        handles.push(WorkerHandle::Forward(h));
        readers.push(reader);
    }
    Ok(())
}

/// The network of the load balancer: each port with its real MAC, its
/// configured addresses and MTU, and the static routes.
fn network(config: &Config, lb: &LbSetup, ports: &[Port]) -> Result<Network, NetError> {
    // Every port, then every VLAN sub-interface, on its port's MAC.
    let interfaces = config
        .interfaces()
        .into_iter()
        .enumerate()
        .map(|(i, (_, port, _))| Interface {
            port: u16::try_from(i).unwrap_or(u16::MAX),
            mac: MacAddr(ports[port].mac()),
            addrs: lb.addresses[i].clone(),
            mtu: config.ports[port].mtu.unwrap_or(1500),
            rx_checksum: config.ports[port]
                .rx_checksum
                .unwrap_or_else(|| lb_core::offload::default_for_driver(ports[port].driver())),
        })
        .collect();
    let routes: Vec<Route> = lb
        .routes
        .iter()
        .map(|&(prefix, len, port, gateway)| Route {
            prefix,
            len,
            port: u16::try_from(port).unwrap_or(u16::MAX),
            gateway,
        })
        .collect();
    Network::new(interfaces, &routes)
}

#[allow(clippy::too_many_arguments)]
fn launch_lb(
    eal: &Eal,
    config: &Config,
    lb: &LbSetup,
    ports: &[Port],
    per_worker: Vec<Queues>,
    pool: &'static Mempool,
    stop: &Arc<AtomicBool>,
    handles: &mut Vec<WorkerHandle>,
    readers: &mut Vec<Arc<WorkerStats>>,
) -> Result<crate::control::Control, AppError> {
    let net = network(config, lb, ports)?;
    let configured = Snapshot::build(1, lb.services.clone(), lb.timeouts)?.specs();
    // Following the kernel's VIPs, the workers start with every service on
    // standby: a backup director must not announce a VIP its master holds.
    let snap = Arc::new(
        Snapshot::build_with_standby(1, configured.clone(), lb.timeouts, |_| lb.follow_vips)?
            .with_network(net.clone()),
    );
    let published = Arc::new(crate::publish::Published::new(Arc::clone(&snap)));
    let mailboxes: Vec<Arc<crate::publish::Mailbox>> = (0..per_worker.len())
        .map(|_| Arc::new(crate::publish::Mailbox::default()))
        .collect();
    let lcores = config.workers.lcores.get_ref();
    let workers = u16::try_from(lcores.len()).unwrap_or(u16::MAX);
    let exception = lb.exception_port.map(|p| ExceptionPath {
        port: u16::try_from(p).unwrap_or(u16::MAX),
        uplink: u16::try_from((0..ports.len()).find(|&i| i != p).unwrap_or(0)).unwrap_or(0),
    });
    let neighbor_ports: Vec<(MacAddr, Vec<(std::net::IpAddr, u8)>)> = net
        .interfaces
        .iter()
        .map(|i| (i.mac, i.addrs.clone()))
        .collect();
    let vlans = crate::vlan::Vlans::new(ports.len(), &lb.vlans);
    // With several workers, a ring each for the packets others receive for
    // it (Full-NAT replies to its local ports).
    let mut handover = Vec::new();
    let mut inboxes = Vec::new();
    // And a shared record of who holds each NAT session, for NAT replies.
    let nat_owners = (workers > 1).then(|| {
        let slots = usize::try_from(lb.capacity)
            .unwrap_or(usize::MAX)
            .saturating_mul(2 * usize::from(workers));
        Arc::new(lb_core::session::NatOwners::new(slots))
    });
    if workers > 1 {
        for w in 0..workers {
            let (ring, inbox) = crate::dpdk::HandOverRing::create(
                eal,
                &format!("lb_hand_over_{w}"),
                HAND_OVER_SLOTS,
            )?;
            handover.push(ring);
            inboxes.push(Some(inbox));
        }
    }
    // Payload references of segments cut from super-frames; each lives
    // only until its segment is made contiguous, so few are needed.
    let gso_indirect = Mempool::create(eal, "lb_gso_indirect", 1023, 32, 0)?;
    let (peers, mut sync_links) = match &lb.sync {
        Some(setup) => {
            let (peers, links) =
                crate::peers::Peers::new(setup, lcores.len()).map_err(|source| AppError::Sync {
                    listen: setup.listen,
                    source,
                })?;
            tracing::info!(listen = %setup.listen, peers = ?setup.peers, "connection sync with the peers");
            (
                Some(peers),
                Some(links.into_iter().map(Some).collect::<Vec<_>>()),
            )
        }
        None => (None, None),
    };
    for (w, (&lcore, port_queues)) in lcores.iter().zip(per_worker).enumerate() {
        let (rx, tx): (Vec<RxQueue>, Vec<TxQueue>) = port_queues.into_iter().unzip();
        let mut engine = Engine::new(
            WorkerConfig {
                id: u16::try_from(w).unwrap_or(u16::MAX),
                workers,
                capacity: lb.capacity,
                local_ports: lb.local_ports,
                expire_nodest_conn: lb.expire_nodest_conn,
                sloppy_tcp: lb.sloppy_tcp,
                sync: lb.sync.is_some(),
                ..WorkerConfig::default()
            },
            Arc::clone(&snap),
        );
        if let Some(t) = &nat_owners {
            engine.share_nat_owners(Arc::clone(t));
        }
        let mut neigh = Neighbors::new(neighbor_ports.clone());
        for &(ip, mac, port) in &lb.neighbors {
            neigh.add_static(
                session::addr(ip),
                mac,
                u16::try_from(port).unwrap_or(u16::MAX),
            );
        }
        let (counters, reader) = WorkerStats::with_interfaces(lcore, net.interfaces.len());
        let mailbox = Arc::clone(&mailboxes[w]);
        let peers = mailboxes
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != w)
            .map(|(_, m)| Arc::clone(m))
            .collect();
        let worker = LbWorker {
            engine,
            sync: sync_links
                .as_mut()
                .and_then(|l| l.get_mut(w))
                .and_then(Option::take),
            rx,
            tx,
            neigh,
            exception,
            pool,
            burst: usize::from(*config.workers.burst.get_ref()),
            counters,
            stop: Arc::clone(stop),
            published: Arc::clone(&published),
            mailbox,
            peers,
            announce: w == 0,
            handover: handover.clone(),
            inbox: inboxes.get_mut(w).and_then(Option::take),
            gso: Gso::new(pool, gso_indirect),
            mtus: net.interfaces.iter().map(|i| i.mtu).collect(),
            vlans: vlans.clone(),
        };
        let h = dpdk::launch(eal, lcore, move || worker.run())
            .map_err(|source| AppError::Launch { lcore, source })?;
        handles.push(WorkerHandle::Lb(h));
        readers.push(reader);
    }
    let mut control =
        crate::control::Control::new(published, mailboxes, net, configured, lb.timeouts);
    control.interfaces = config.interfaces().into_iter().map(|(n, _, _)| n).collect();
    control.started_with = Some(config.restart_only());
    control.peers = peers;
    let followed = config
        .exception
        .as_ref()
        .and_then(|e| e.interface.as_ref())
        .filter(|_| lb.follow_vips);
    if let Some(interface) = followed {
        let watch =
            crate::kernel_vips::watch(interface).map_err(|source| AppError::KernelVips {
                interface: interface.clone(),
                source,
            })?;
        tracing::info!(interface = %interface, "serving the VIPs the kernel holds on the exception interface");
        control.follow_vips(watch);
    }
    let announced = config.exception.as_ref().and_then(|e| e.interface.as_ref());
    if let (Some(interface), Some(table)) = (announced, lb.announce_table) {
        let announcer = crate::announce::Announcer::new(interface, table).map_err(|source| {
            AppError::Announce {
                interface: interface.clone(),
                source,
            }
        })?;
        tracing::info!(interface = %interface, table, "keeping a route to each VIP that can be served in the kernel's table");
        control.announce(announcer);
    }
    Ok(control)
}

fn show_addr(a: std::net::IpAddr, port: u16) -> String {
    match a {
        std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

fn engine_report(results: &[WorkerResult]) -> EngineReport {
    let mut counters = Counters::default();
    for r in results {
        counters.merge(&r.engine);
    }
    let per_worker: Vec<Vec<ServiceReport>> = results.iter().map(|r| r.services.clone()).collect();
    let services = merge_reports(&per_worker)
        .into_iter()
        .map(|s| ServiceSummary {
            service: s.key.to_string(),
            scheduler: s.sched.to_string(),
            conns: s.stats.conns,
            in_pkts: s.stats.in_pkts,
            out_pkts: s.stats.out_pkts,
            in_bytes: s.stats.in_bytes,
            out_bytes: s.stats.out_bytes,
            reals: s
                .reals
                .iter()
                .map(|r| RealSummary {
                    server: show_addr(r.addr, r.port),
                    forward: r.mode.ipvsadm_name(),
                    weight: r.weight,
                    active: r.active,
                    inactive: r.inactive,
                    conns: r.stats.conns,
                    in_pkts: r.stats.in_pkts,
                    out_pkts: r.stats.out_pkts,
                })
                .collect(),
        })
        .collect();
    EngineReport {
        counters: counters.iter().map(|(c, v)| (c.name(), v)).collect(),
        sessions: results.iter().map(|r| u64::from(r.sessions)).sum(),
        services,
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl RunReport {
    /// The report as the tables printed at exit.
    pub fn to_table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<12} {:<14} {:>12} {:>14} {:>12} {:>14} {:>9} {:>9} {:>9} {:>9}",
            "port",
            "driver",
            "rx-packets",
            "rx-bytes",
            "tx-packets",
            "tx-bytes",
            "rx-missed",
            "rx-errors",
            "tx-errors",
            "rx-nombuf"
        );
        for p in &self.ports {
            let t = &p.stats;
            let _ = writeln!(
                s,
                "{:<12} {:<14} {:>12} {:>14} {:>12} {:>14} {:>9} {:>9} {:>9} {:>9}",
                p.name,
                p.driver,
                t.rx_packets,
                t.rx_bytes,
                t.tx_packets,
                t.tx_bytes,
                t.rx_missed,
                t.rx_errors,
                t.tx_errors,
                t.rx_nombuf
            );
        }
        let _ = write!(s, "\n{:<8}", "worker");
        for c in Counter::ALL {
            let _ = write!(s, " {:>14}", c.name());
        }
        s.push('\n');
        for w in &self.workers {
            let _ = write!(s, "{:<8}", format!("lcore {}", w.lcore));
            for c in Counter::ALL {
                let _ = write!(s, " {:>14}", w.counters[c.name()]);
            }
            s.push('\n');
        }
        for w in &self.workers {
            if let Some(&n) = w.counters.get(LATE_HAND_OVER).filter(|&&n| n > 0) {
                let _ = writeln!(
                    s,
                    "lcore {}: {n} handed over after it stopped reading ({LATE_HAND_OVER})",
                    w.lcore
                );
            }
        }
        if let Some(e) = &self.engine {
            let _ = writeln!(
                s,
                "\n{:<30} {:>8} {:>10} {:>10} {:>12} {:>12}",
                "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
            );
            let _ = writeln!(
                s,
                "{:<30} {:>8} {:>10} {:>10} {:>12} {:>12}",
                "  -> RemoteAddress:Port",
                "Conns",
                "InPkts",
                "OutPkts",
                "Forward",
                "ActiveConn/InActConn"
            );
            for svc in &e.services {
                let _ = writeln!(
                    s,
                    "{:<30} {:>8} {:>10} {:>10} {:>12} {:>12}",
                    format!("{} {}", svc.service, svc.scheduler),
                    svc.conns,
                    svc.in_pkts,
                    svc.out_pkts,
                    svc.in_bytes,
                    svc.out_bytes
                );
                for r in &svc.reals {
                    let _ = writeln!(
                        s,
                        "{:<30} {:>8} {:>10} {:>10} {:>12} {:>12}",
                        format!("  -> {}", r.server),
                        r.conns,
                        r.in_pkts,
                        r.out_pkts,
                        r.forward,
                        format!("{}/{}", r.active, r.inactive)
                    );
                }
            }
            let _ = writeln!(s, "\nsessions at exit: {}", e.sessions);
            let nonzero: Vec<String> = e
                .counters
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(s, "engine: {}", nonzero.join(" "));
        }
        let _ = writeln!(s, "\nran {:.3} s", self.elapsed_secs);
        s
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn workers_off_the_isolated_cpus_are_named() {
        assert_eq!(cpu_list("1-3,5\n"), [1, 2, 3, 5]);
        assert_eq!(cpu_list("\n"), Vec::<u32>::new());
        let c = config("\"--no-huge\"");
        assert_eq!(unisolated(&c, &[1, 2, 6], "1-3,5\n"), [6]);
        assert_eq!(unisolated(&c, &[1], ""), [1]);
        let mapped = config("\"--lcores=1@4\"");
        assert!(
            unisolated(&mapped, &[1], "").is_empty(),
            "mapped lcores are not CPU ids"
        );
    }

    #[test]
    fn workers_on_another_node_than_their_port_are_named() {
        let placement = |ports: &[Option<u32>], workers: &[(u32, u32)]| Placement {
            ports: ports
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("p{i}"), *n))
                .collect(),
            workers: workers.to_vec(),
        };
        let near = placement(&[Some(1), None], &[(9, 1), (10, 1)]);
        assert!(near.far_workers().is_empty());
        assert_eq!(
            near.ports_node(),
            Some(1),
            "the unknown node does not count"
        );
        let far = placement(&[Some(0), Some(1)], &[(1, 0), (9, 1)]);
        assert_eq!(
            far.far_workers(),
            [
                "port p0 is on NUMA node 0, workers on lcores [9] are not",
                "port p1 is on NUMA node 1, workers on lcores [1] are not",
            ]
        );
        assert_eq!(far.ports_node(), None, "ports on two nodes: no one node");
        let virtual_only = placement(&[None], &[(1, 0)]);
        assert!(virtual_only.far_workers().is_empty());
        assert_eq!(virtual_only.ports_node(), None);
    }

    use super::*;

    #[test]
    fn af_packet_ports_get_super_frame_rings_unless_sized() {
        let d = af_packet_devargs("net_af_packet0,iface=eth0");
        assert_eq!(
            d,
            "net_af_packet0,iface=eth0,blocksz=16748544,framesz=65424,framecnt=512"
        );
        // A whole number of frames and of pages per block.
        assert_eq!(AF_PACKET_BLOCK % AF_PACKET_FRAME, 0);
        assert_eq!(AF_PACKET_BLOCK % 4096, 0);
        // The frame's data fits one mbuf.
        assert_eq!(rx_data_room(&d), Some(65_520));
        let sized = "net_af_packet0,iface=eth0,framesz=2048";
        assert_eq!(af_packet_devargs(sized), sized);
        assert_eq!(rx_data_room(sized), None);
        assert_eq!(
            af_packet_devargs("net_af_xdp0,iface=eth0"),
            "net_af_xdp0,iface=eth0"
        );
    }

    fn config(eal: &str) -> Config {
        Config::from_toml(&format!(
            "[eal]\nargs = [{eal}]\n[workers]\nlcores = [1, 3]\n[[port]]\nname = \"net_null0\"\n[[forward]]\nfrom = \"net_null0\"\nto = \"net_null0\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn eal_args_add_lcores_and_prefix() {
        let a = eal_args(&config("\"--no-huge\""), &["--no-pci".into()]);
        assert_eq!(a[..4], ["--no-huge", "--no-pci", "-l", "0,1,3"]);
        assert_eq!(a[4], "--main-lcore=0");
        assert!(a[5].starts_with("--file-prefix=lb-"));
    }

    #[test]
    fn eal_args_keep_given_lcores_and_prefix() {
        let a = eal_args(
            &config("\"--lcores=0@0,1@1,3@1\", \"--file-prefix\", \"x\""),
            &[],
        );
        assert_eq!(a, ["--lcores=0@0,1@1,3@1", "--file-prefix", "x"]);
        let a = eal_args(&config("\"-l0-3\", \"--log-level=8\""), &[]);
        assert_eq!(a[..2], ["-l0-3", "--log-level=8"]);
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn mempool_is_sized_from_rings() {
        let c = config("");
        // 2 queues x (1024 + 1024) + 3 x (128 + 256) + 1024 = 6272 -> 8191.
        assert_eq!(mempool_size(&c, 2), 8191);
    }
}
