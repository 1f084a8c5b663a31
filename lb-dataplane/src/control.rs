//! The control thread's state and operations: the authoritative services,
//! timeouts and network, each change validated in full and published as a
//! new snapshot, and the questions asked of the workers (statistics,
//! connections, counters).
//!
//! Every operation builds the whole next snapshot before anything is
//! published, so a refused change leaves the running state exactly as it
//! was. Operations are what the admin socket's protocol names
//! ([`crate::admin`]).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use lb_admin_proto as proto;
pub use lb_admin_proto::{RealDef, ServiceDef};
use lb_core::config::{desired_to_toml, parse_desired};
use lb_core::engine::Counters;
use lb_core::filter::parse_prefix;
use lb_core::net::Network;
use lb_core::sched::{SchedFlags, SchedKind};
use lb_core::service::{
    ForwardMode, MarkMatch, Persistence, Protocol, RealServer, ServiceKey, ServiceSpec, Snapshot,
    Timeouts,
};
use lb_core::stats::{merge_reports, RateEstimator, Rates, ServiceReport, Stats};

use crate::kernel_vips::KernelVips;
use crate::publish::{Mailbox, Published, Request, WorkerSnapshot};

/// How long a worker may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// The control thread's state.
#[derive(Debug)]
pub struct Control {
    pub published: Arc<Published>,
    pub mailboxes: Vec<Arc<Mailbox>>,
    /// The workers' own counters (receive, transmit, drops, loop gaps).
    pub worker_stats: Vec<Arc<crate::stats::WorkerStats>>,
    /// The ports, for their DPDK statistics.
    pub ports: Vec<crate::dpdk::Port>,
    /// The interfaces' names by the engine's port number: the ports, then
    /// their VLAN sub-interfaces (`<port>.<id>`).
    pub interfaces: Vec<String>,
    /// What the admin socket did with its clients.
    pub admin_stats: Arc<crate::admin::AdminStats>,
    /// [`lb_core::config::Config::restart_only`] of the file the process
    /// started with, for a reload to say what it did not apply.
    pub started_with: Option<String>,
    network: Network,
    specs: Vec<ServiceSpec>,
    timeouts: Timeouts,
    version: u64,
    rates: HashMap<String, RateEstimator>,
    last_rates: HashMap<String, Rates>,
    last_sample: Option<Instant>,
    health: crate::health::Health,
    /// With `[exception] follow_vips`: the kernel's addresses on the
    /// exception interface, as last heard.
    held: Option<(KernelVips, BTreeSet<IpAddr>)>,
    /// With `[sync]`: the peers' link.
    pub peers: Option<crate::peers::Peers>,
    /// With `[exception] announce_table`: the routes to the VIPs that can
    /// be served.
    announcer: Option<crate::announce::Announcer>,
}

fn parse_ip(s: &str, what: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("{what} {s:?} is not an IP address"))
}

fn key_of(d: &ServiceDef, specs: &[ServiceSpec]) -> Result<ServiceKey, String> {
    if let Some(mark) = d.fwmark {
        if !d.protocol.is_empty() || !d.vip.is_empty() || d.port != 0 {
            return Err(format!(
                "firewall-mark service {mark} has no protocol, VIP or port: its matches say what traffic it takes"
            ));
        }
        if mark == 0 {
            return Err("firewall marks start at 1".into());
        }
        // The family is its matches', or the existing service's.
        let v6 = match d.matches.as_ref().and_then(|m| m.first()) {
            Some(m) => m.parse::<MarkMatch>()?.prefix.is_ipv6(),
            None => specs
                .iter()
                .find(|s| s.key.mark == mark)
                .is_some_and(|s| s.key.vip.is_ipv6()),
        };
        return Ok(ServiceKey::fwmark(mark, v6));
    }
    if d.matches.is_some() {
        return Err("only a firewall-mark service (fwmark) has matches".into());
    }
    let proto = match d.protocol.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        p => return Err(format!("protocol {p:?} is not tcp or udp")),
    };
    Ok(ServiceKey::new(proto, parse_ip(&d.vip, "the VIP")?, d.port))
}

fn rs_key(rs: &RealServer) -> String {
    match rs.addr {
        IpAddr::V4(a) => format!("{a}:{}", rs.port),
        IpAddr::V6(a) => format!("[{a}]:{}", rs.port),
    }
}

fn stats_of(s: &Stats) -> proto::Stats {
    proto::Stats {
        conns: s.conns,
        in_pkts: s.in_pkts,
        out_pkts: s.out_pkts,
        in_bytes: s.in_bytes,
        out_bytes: s.out_bytes,
    }
}

fn rates_of(r: &Rates) -> proto::Rates {
    proto::Rates {
        cps: r.cps,
        in_pps: r.in_pps,
        out_pps: r.out_pps,
        in_bps: r.in_bps,
        out_bps: r.out_bps,
    }
}

/// Counters by name, as the protocol carries them.
fn named<'a>(
    counters: impl Iterator<Item = (&'a str, u64)>,
) -> std::collections::BTreeMap<String, u64> {
    counters.map(|(k, v)| (k.to_owned(), v)).collect()
}

impl Control {
    pub fn new(
        published: Arc<Published>,
        mailboxes: Vec<Arc<Mailbox>>,
        network: Network,
        specs: Vec<ServiceSpec>,
        timeouts: Timeouts,
    ) -> Control {
        let version = published.version();
        Control {
            published,
            mailboxes,
            worker_stats: Vec::new(),
            ports: Vec::new(),
            interfaces: Vec::new(),
            admin_stats: Arc::default(),
            started_with: None,
            network,
            specs,
            timeouts,
            version,
            rates: HashMap::new(),
            last_rates: HashMap::new(),
            last_sample: None,
            health: crate::health::Health::default(),
            held: None,
            peers: None,
            announcer: None,
        }
    }

    /// From now on, keeps `announcer`'s table holding a route to each VIP
    /// that can be served (`[exception] announce_table`).
    pub fn announce(&mut self, announcer: crate::announce::Announcer) {
        self.announcer = Some(announcer);
        if let Err(e) = self.commit(self.specs.clone(), self.timeouts) {
            tracing::error!(error = %e, "cannot publish the services to announce");
        }
    }

    /// Deletes every announced route (the dataplane stops); whether there
    /// was any.
    pub fn withdraw_all(&mut self) -> bool {
        let Some(a) = self.announcer.as_mut() else {
            return false;
        };
        let any = !a.held().is_empty();
        a.set(&BTreeSet::new());
        any
    }

    /// From now on, serves a VIP's services only while the kernel holds
    /// the VIP on `watch`'s interface (`[exception] follow_vips`); until
    /// the kernel's first answer, it holds none.
    pub fn follow_vips(&mut self, watch: KernelVips) {
        self.held = Some((watch, BTreeSet::new()));
        if let Err(e) = self.commit(self.specs.clone(), self.timeouts) {
            tracing::error!(error = %e, "cannot publish the services on standby");
        }
    }

    /// Follows what the kernel holds: publishes the snapshot that serves
    /// the VIPs it now holds, and only those.
    pub fn vips_tick(&mut self) {
        let Some((watch, held)) = self.held.as_mut() else {
            return;
        };
        let Some(now) = watch.changed() else {
            return;
        };
        let gained: Vec<&IpAddr> = now.difference(held).collect();
        let lost: Vec<&IpAddr> = held.difference(&now).collect();
        tracing::info!(interface = %watch.interface, ?gained, ?lost, "the kernel's addresses changed");
        *held = now;
        if let Err(e) = self.commit(self.specs.clone(), self.timeouts) {
            tracing::error!(error = %e, "cannot publish the VIPs the kernel holds");
        }
    }

    /// Whether `spec` is served: always, unless VIPs are followed; then
    /// while the kernel holds its VIP (for a firewall-mark service, an
    /// address one of its matches covers).
    fn serving(&self, spec: &ServiceSpec) -> bool {
        let Some((_, held)) = &self.held else {
            return true;
        };
        // Full-NAT's local addresses move with the VIP (as keepalived
        // virtual addresses), so that replies find the director that holds
        // the connection.
        if !spec.laddrs.iter().all(|l| held.contains(l)) {
            return false;
        }
        if spec.key.mark == 0 {
            held.contains(&spec.key.vip)
        } else {
            spec.matches
                .iter()
                .any(|m| held.iter().any(|a| m.covers(*a)))
        }
    }

    /// Runs the health checks that are due and, when a server went up or
    /// down, publishes the snapshot that follows.
    pub fn health_tick(&mut self) {
        if !crate::health::checked(&self.specs) {
            return;
        }
        self.health.schedule(&self.specs);
        if self.health.collect(&self.specs) {
            if let Err(e) = self.commit(self.specs.clone(), self.timeouts) {
                tracing::error!(error = %e, "cannot publish the health checks' verdict");
            }
        }
    }

    /// Every checked server's health (`lb-ctl health`).
    pub fn health_report(&self) -> proto::Health {
        self.health.report()
    }

    /// Validates `specs` and `timeouts` as a whole and publishes them, with
    /// the health checks' verdicts applied to what the workers see.
    fn commit(
        &mut self,
        specs: Vec<ServiceSpec>,
        timeouts: Timeouts,
    ) -> Result<proto::Committed, String> {
        let configured = Snapshot::build(self.version + 1, specs, timeouts)
            .map_err(|e| e.to_string())?
            .specs();
        let effective = self.health.effective(&configured);
        let announce = self
            .announcer
            .is_some()
            .then(|| crate::announce::wanted(&effective, |s| !self.serving(s)));
        let snap = Snapshot::build_with_standby(self.version + 1, effective, timeouts, |s| {
            !self.serving(s)
        })
        .map_err(|e| e.to_string())?
        .with_network(self.network.clone());
        self.version += 1;
        self.specs = configured;
        self.timeouts = timeouts;
        self.published.publish(Arc::new(snap));
        if let (Some(a), Some(want)) = (self.announcer.as_mut(), announce) {
            a.set(&want);
        }
        tracing::info!(
            version = self.version,
            services = self.specs.len(),
            "configuration published"
        );
        Ok(proto::Committed {
            version: self.version,
        })
    }

    fn find(&self, key: &ServiceKey) -> Result<usize, String> {
        self.specs
            .iter()
            .position(|s| s.key == *key)
            .ok_or_else(|| format!("no service {key}"))
    }

    fn apply_def(spec: &mut ServiceSpec, d: &ServiceDef) -> Result<(), String> {
        if let Some(s) = &d.scheduler {
            spec.sched = s.parse::<SchedKind>()?;
        }
        if let Some(f) = &d.flags {
            spec.flags = SchedFlags::parse(spec.sched, f)?;
        }
        match d.persistence {
            Some(0) => spec.persistence = None,
            Some(timeout) => {
                let full = if spec.key.vip.is_ipv4() { 32 } else { 128 };
                let prefix_len = d
                    .netmask
                    .or(spec.persistence.map(|p| p.prefix_len))
                    .unwrap_or(full);
                spec.persistence = Some(Persistence {
                    timeout,
                    prefix_len,
                });
            }
            None => {
                if let (Some(m), Some(p)) = (d.netmask, spec.persistence.as_mut()) {
                    p.prefix_len = m;
                }
            }
        }
        if let Some(m) = &d.matches {
            spec.matches = m
                .iter()
                .map(|m| m.parse::<MarkMatch>())
                .collect::<Result<_, _>>()?;
        }
        if let Some(l) = &d.local_addresses {
            spec.laddrs = l
                .iter()
                .map(|a| parse_ip(a, "local address"))
                .collect::<Result<_, _>>()?;
        }
        if let Some(l) = &d.peer_local_addresses {
            spec.peer_laddrs = l
                .iter()
                .map(|a| parse_ip(a, "peer local address"))
                .collect::<Result<_, _>>()?;
        }
        if let Some(l) = &d.allow {
            spec.allow = l
                .iter()
                .map(|p| parse_prefix(p))
                .collect::<Result<_, _>>()?;
        }
        if let Some(l) = &d.deny {
            spec.deny = l
                .iter()
                .map(|p| parse_prefix(p))
                .collect::<Result<_, _>>()?;
        }
        Ok(())
    }

    /// ipvsadm -A.
    pub fn add_service(&mut self, d: &ServiceDef) -> Result<proto::Committed, String> {
        let key = key_of(d, &self.specs)?;
        if self.find(&key).is_ok() {
            return Err(format!("service {key} exists already (edit it with -E)"));
        }
        let mut spec = ServiceSpec::new(key);
        Self::apply_def(&mut spec, d)?;
        let mut specs = self.specs.clone();
        specs.push(spec);
        self.commit(specs, self.timeouts)
    }

    /// ipvsadm -E.
    pub fn edit_service(&mut self, d: &ServiceDef) -> Result<proto::Committed, String> {
        let key = key_of(d, &self.specs)?;
        let i = self.find(&key)?;
        let mut specs = self.specs.clone();
        Self::apply_def(&mut specs[i], d)?;
        self.commit(specs, self.timeouts)
    }

    /// ipvsadm -D.
    pub fn del_service(&mut self, d: &ServiceDef) -> Result<proto::Committed, String> {
        let i = self.find(&key_of(d, &self.specs)?)?;
        let mut specs = self.specs.clone();
        specs.remove(i);
        self.commit(specs, self.timeouts)
    }

    fn real_of(d: &RealDef, old: Option<&RealServer>) -> Result<RealServer, String> {
        let mode = match &d.mode {
            Some(m) => m.parse::<ForwardMode>()?,
            None => old.map_or(ForwardMode::Dr, |o| o.mode),
        };
        Ok(RealServer {
            addr: parse_ip(&d.address, "the real server")?,
            port: d.port.or(old.map(|o| o.port)).unwrap_or(0),
            mode,
            weight: d.weight.or(old.map(|o| o.weight)).unwrap_or(1),
            upper: d.upper.or(old.map(|o| o.upper)).unwrap_or(0),
            lower: d.lower.or(old.map(|o| o.lower)).unwrap_or(0),
        })
    }

    fn find_real(spec: &ServiceSpec, d: &RealDef) -> Result<usize, String> {
        let addr = parse_ip(&d.address, "the real server")?;
        let port = d.port.filter(|&p| p != 0).unwrap_or(spec.key.port);
        spec.reals
            .iter()
            .position(|r| r.addr == addr && r.port == port)
            .ok_or_else(|| format!("service {} has no real server {}", spec.key, d.address))
    }

    /// ipvsadm -a.
    pub fn add_real(&mut self, s: &ServiceDef, d: &RealDef) -> Result<proto::Committed, String> {
        let i = self.find(&key_of(s, &self.specs)?)?;
        let mut specs = self.specs.clone();
        if Self::find_real(&specs[i], d).is_ok() {
            return Err(format!(
                "service {} has real server {} already (edit it with -e)",
                specs[i].key, d.address
            ));
        }
        let rs = Self::real_of(d, None)?;
        specs[i].reals.push(rs);
        self.commit(specs, self.timeouts)
    }

    /// ipvsadm -e.
    pub fn edit_real(&mut self, s: &ServiceDef, d: &RealDef) -> Result<proto::Committed, String> {
        let i = self.find(&key_of(s, &self.specs)?)?;
        let mut specs = self.specs.clone();
        let j = Self::find_real(&specs[i], d)?;
        let rs = Self::real_of(d, Some(&specs[i].reals[j]))?;
        specs[i].reals[j] = rs;
        self.commit(specs, self.timeouts)
    }

    /// ipvsadm -d.
    pub fn del_real(&mut self, s: &ServiceDef, d: &RealDef) -> Result<proto::Committed, String> {
        let i = self.find(&key_of(s, &self.specs)?)?;
        let mut specs = self.specs.clone();
        let j = Self::find_real(&specs[i], d)?;
        specs[i].reals.remove(j);
        self.commit(specs, self.timeouts)
    }

    /// ipvsadm -C.
    pub fn clear(&mut self) -> Result<proto::Committed, String> {
        self.commit(Vec::new(), self.timeouts)
    }

    /// ipvsadm --set tcp tcpfin udp (0 keeps a value).
    pub fn set_timeouts(
        &mut self,
        tcp: u32,
        tcpfin: u32,
        udp: u32,
    ) -> Result<proto::Committed, String> {
        let mut t = self.timeouts;
        if tcp != 0 {
            t.tcp_established = tcp;
        }
        if tcpfin != 0 {
            t.tcp_fin_wait = tcpfin;
        }
        if udp != 0 {
            t.udp = udp;
        }
        self.commit(self.specs.clone(), t)
    }

    pub fn timeouts(&self) -> proto::Timeouts {
        let t = &self.timeouts;
        proto::Timeouts {
            tcp: t.tcp_established,
            tcpfin: t.tcp_fin_wait,
            udp: t.udp,
        }
    }

    /// The running services and timeouts in the configuration's schema.
    pub fn dump(&self) -> proto::Dump {
        proto::Dump {
            toml: desired_to_toml(&self.specs, &self.timeouts),
        }
    }

    /// Replaces services and timeouts by a desired state, atomically; with
    /// `dry_run`, only says what would change.
    pub fn apply(&mut self, toml: &str, dry_run: bool) -> Result<proto::Applied, String> {
        let (specs, timeouts) = parse_desired(toml).map_err(|e| e.to_string())?;
        self.apply_specs(specs, timeouts, dry_run)
    }

    /// Re-reads the configuration file at `path` (SIGHUP) and applies its
    /// services and timeouts as `apply` does: the whole file is validated
    /// first, and a file that does not validate changes nothing. The rest
    /// of the file (EAL, workers, ports, addresses, routes, neighbours) is
    /// what the process started with: a change there needs a restart
    /// (routes also change live with `lb-ctl route`).
    /// The second value says whether the file's other settings differ
    /// from those the process started with (they were not applied).
    pub fn reload(&mut self, path: &std::path::Path) -> Result<(proto::Applied, bool), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let config = lb_core::config::Config::from_toml(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let restart = Some(config.restart_only()) != self.started_with;
        let Some(lb) = config.lb else {
            return Err(format!(
                "{}: the file now describes a forwarder ([[forward]]); that needs a restart",
                path.display()
            ));
        };
        Ok((self.apply_specs(lb.services, lb.timeouts, false)?, restart))
    }

    fn apply_specs(
        &mut self,
        specs: Vec<ServiceSpec>,
        timeouts: Timeouts,
        dry_run: bool,
    ) -> Result<proto::Applied, String> {
        // Validate as a whole before saying anything.
        let built =
            Snapshot::build(self.version + 1, specs, timeouts).map_err(|e| e.to_string())?;
        let specs = built.specs();
        let mut diff = Vec::new();
        for s in &specs {
            match self.specs.iter().find(|o| o.key == s.key) {
                None => diff.push(format!("+ service {}", s.key)),
                Some(o) if o != s => diff.push(format!("~ service {}", s.key)),
                Some(_) => {}
            }
        }
        for o in &self.specs {
            if !specs.iter().any(|s| s.key == o.key) {
                diff.push(format!("- service {}", o.key));
            }
        }
        if timeouts != self.timeouts {
            diff.push("~ timeouts".into());
        }
        if dry_run {
            return Ok(proto::Applied {
                diff,
                applied: false,
                version: None,
            });
        }
        let committed = self.commit(specs, timeouts)?;
        Ok(proto::Applied {
            diff,
            applied: true,
            version: Some(committed.version),
        })
    }

    /// Every worker's answer to a report request.
    pub fn collect(&self) -> Result<Vec<WorkerSnapshot>, String> {
        let mut replies = Vec::new();
        for m in &self.mailboxes {
            let (tx, rx) = bounded(1);
            if !m.post(Request::Report(tx)) {
                return Err("a worker has too many requests waiting".into());
            }
            replies.push(rx);
        }
        replies
            .into_iter()
            .map(|rx| {
                rx.recv_timeout(ANSWER_WITHIN)
                    .map_err(|_| "a worker did not answer in time".to_owned())
            })
            .collect()
    }

    /// Samples the statistics for the rate estimators (every few seconds).
    pub fn sample_rates(&mut self) {
        let now = Instant::now();
        let elapsed = self
            .last_sample
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        let Ok(snaps) = self.collect() else { return };
        self.last_sample = Some(now);
        let per_worker: Vec<Vec<ServiceReport>> = snaps.into_iter().map(|s| s.services).collect();
        for s in merge_reports(&per_worker) {
            let k = s.key.to_string();
            let r = self
                .rates
                .entry(k.clone())
                .or_default()
                .sample(&s.stats, elapsed);
            self.last_rates.insert(k.clone(), r);
            for real in &s.reals {
                let rk = format!(
                    "{k} -> {}",
                    rs_key(&RealServer {
                        addr: real.addr,
                        port: real.port,
                        mode: real.mode,
                        weight: 0,
                        upper: 0,
                        lower: 0
                    })
                );
                let r = self
                    .rates
                    .entry(rk.clone())
                    .or_default()
                    .sample(&real.stats, elapsed);
                self.last_rates.insert(rk, r);
            }
        }
    }

    /// ipvsadm -L: services, real servers, counts, statistics and rates.
    pub fn list(&self) -> Result<proto::List, String> {
        let snaps = self.collect()?;
        let per_worker: Vec<Vec<ServiceReport>> =
            snaps.iter().map(|s| s.services.clone()).collect();
        let merged = merge_reports(&per_worker);
        let rates = |k: &str| rates_of(&self.last_rates.get(k).copied().unwrap_or_default());
        let services = self
            .specs
            .iter()
            .map(|spec| {
                let k = spec.key.to_string();
                let report = merged.iter().find(|r| r.key == spec.key);
                let reals = spec
                    .reals
                    .iter()
                    .map(|rs| {
                        let rr = report.and_then(|r| {
                            r.reals
                                .iter()
                                .find(|x| x.addr == rs.addr && x.port == rs.port)
                        });
                        proto::RealInfo {
                            address: rs.addr.to_string(),
                            port: rs.port,
                            mode: rs.mode.to_string(),
                            forward: rs.mode.ipvsadm_name().into(),
                            weight: rs.weight,
                            upper: rs.upper,
                            lower: rs.lower,
                            active: rr.map_or(0, |r| r.active),
                            inactive: rr.map_or(0, |r| r.inactive),
                            persistent: rr.map_or(0, |r| r.persistent),
                            health: self
                                .health
                                .status(&spec.key, rs.addr, rs.port)
                                .map(str::to_owned),
                            stats: stats_of(&rr.map(|r| r.stats).unwrap_or_default()),
                            rates: rates(&format!("{k} -> {}", rs_key(rs))),
                        }
                    })
                    .collect();
                let mark = spec.key.mark;
                proto::ServiceInfo {
                    protocol: if mark != 0 {
                        "FWM".into()
                    } else {
                        spec.key.proto.to_string()
                    },
                    vip: spec.key.vip.to_string(),
                    port: spec.key.port,
                    fwmark: (mark != 0).then_some(mark),
                    matches: spec.matches.iter().map(ToString::to_string).collect(),
                    scheduler: spec.sched.name().into(),
                    flags: spec.flags.to_list(spec.sched),
                    persistence: spec.persistence.map(|p| p.timeout),
                    netmask: spec.persistence.map(|p| p.prefix_len),
                    local_addresses: spec.laddrs.iter().map(ToString::to_string).collect(),
                    stats: stats_of(&report.map(|r| r.stats).unwrap_or_default()),
                    rates: rates(&k),
                    reals,
                    standby: !self.serving(spec),
                    allow: spec.allow.iter().map(|(a, l)| format!("{a}/{l}")).collect(),
                    deny: spec.deny.iter().map(|(a, l)| format!("{a}/{l}")).collect(),
                    peer_local_addresses: spec
                        .peer_laddrs
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                }
            })
            .collect();
        Ok(proto::List {
            version: self.version,
            services,
        })
    }

    /// ipvsadm -Z.
    pub fn zero(&self) -> Result<proto::Empty, String> {
        for m in &self.mailboxes {
            if !m.post(Request::Zero) {
                return Err("a worker has too many requests waiting".into());
            }
        }
        Ok(proto::Empty {})
    }

    /// ipvsadm -L -c: up to `limit` connections from `offset` on, over all
    /// workers in turn.
    pub fn connections(&self, offset: usize, limit: usize) -> Result<proto::Connections, String> {
        let limit = limit.clamp(1, 10_000);
        let mut out: Vec<proto::Connection> = Vec::new();
        let mut skip = offset;
        for m in &self.mailboxes {
            let (tx, rx) = bounded(1);
            if !m.post(Request::Connections {
                offset: 0,
                limit: skip + limit - out.len(),
                reply: tx,
            }) {
                return Err("a worker has too many requests waiting".into());
            }
            let list = rx
                .recv_timeout(ANSWER_WITHIN)
                .map_err(|_| "a worker did not answer in time".to_owned())?;
            let n = list.len();
            out.extend(list.into_iter().skip(skip));
            skip = skip.saturating_sub(n);
            if out.len() >= limit {
                break;
            }
        }
        out.truncate(limit);
        Ok(proto::Connections { connections: out })
    }

    /// Every interface's name, by the engine's port number.
    fn interface_names(&self) -> Vec<String> {
        if self.interfaces.is_empty() {
            return self.ports.iter().map(|p| p.name().to_owned()).collect();
        }
        self.interfaces.clone()
    }

    fn interface_name(&self, i: usize) -> String {
        self.interface_names()
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("port{i}"))
    }

    /// The engines' counters, summed, and per worker.
    pub fn counters(&self) -> Result<proto::Counters, String> {
        let snaps = self.collect()?;
        let mut total = Counters::default();
        let workers = snaps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                total.merge(&s.counters);
                proto::WorkerCounters {
                    sessions: s.sessions,
                    capacity: s.capacity,
                    version: s.version,
                    dataplane: self.worker_stats.get(i).map(|w| proto::LcoreCounters {
                        lcore: w.lcore(),
                        counters: named(w.snapshot().into_iter()),
                    }),
                    local_addresses: s
                        .laddrs
                        .iter()
                        .map(|(svc, a, n, ports)| proto::LaddrUse {
                            service: svc.clone(),
                            address: a.clone(),
                            connections: *n,
                            ports: *ports,
                        })
                        .collect(),
                    counters: named(s.counters.iter().map(|(c, v)| (c.name(), v))),
                }
            })
            .collect();
        let ports = self
            .ports
            .iter()
            .map(|p| proto::PortInfo {
                name: p.name().to_owned(),
                driver: p.driver().to_owned(),
                link: p.link(),
                stats: p.stats(),
            })
            .collect();
        // VLAN sub-interfaces' frames in and out, summed over workers.
        let mut vlans = vec![(0u64, 0u64); self.interfaces.len()];
        for w in &self.worker_stats {
            for (sum, (rx, tx)) in vlans.iter_mut().zip(w.interfaces()) {
                sum.0 += rx;
                sum.1 += tx;
            }
        }
        let vlans = self
            .interfaces
            .iter()
            .zip(vlans)
            .skip(self.ports.len())
            .map(|(name, (rx, tx))| proto::VlanCounters {
                name: name.clone(),
                rx_packets: rx,
                tx_packets: tx,
            })
            .collect();
        Ok(proto::Counters {
            total: named(total.iter().map(|(c, v)| (c.name(), v))),
            workers,
            ports,
            vlans,
            admin: self.admin_stats.read(),
            sync: self
                .peers
                .as_ref()
                .map(crate::peers::Peers::counters)
                .unwrap_or_default(),
        })
    }

    /// The interfaces' addresses and the routes (connected and static).
    pub fn routes(&self) -> proto::Routes {
        let port_name = |i: u16| self.interface_name(usize::from(i));
        let addresses = self
            .network
            .interfaces
            .iter()
            .flat_map(|i| i.addrs.iter().map(move |(a, l)| (i.port, *a, *l)))
            .map(|(p, a, l)| proto::Address {
                port: port_name(p),
                address: format!("{a}/{l}"),
            })
            .collect();
        let routes = self
            .network
            .statics
            .iter()
            .map(|r| proto::Route {
                prefix: format!("{}/{}", r.prefix, r.len),
                port: port_name(r.port),
                gateway: r.gateway.map(|g| g.to_string()),
            })
            .collect();
        proto::Routes { addresses, routes }
    }

    /// The first worker's neighbour table (the workers pass on what they
    /// learn, so theirs agree).
    /// Each worker's last stalls.
    pub fn stalls(&self) -> proto::Stalls {
        proto::Stalls {
            threshold_ns: crate::stall::STALL_NS,
            workers: self
                .worker_stats
                .iter()
                .map(|w| {
                    let (stalls, total) = w.stalls();
                    proto::WorkerStalls {
                        lcore: w.lcore(),
                        total,
                        stalls,
                    }
                })
                .collect(),
        }
    }

    pub fn neighbors(&self) -> Result<proto::Neighbors, String> {
        let Some(m) = self.mailboxes.first() else {
            return Ok(proto::Neighbors::default());
        };
        let (tx, rx) = bounded(1);
        if !m.post(Request::Neighbors(tx)) {
            return Err("a worker has too many requests waiting".into());
        }
        let entries = rx
            .recv_timeout(ANSWER_WITHIN)
            .map_err(|_| "a worker did not answer in time".to_owned())?;
        Ok(proto::Neighbors {
            neighbors: entries
                .into_iter()
                .map(|(ip, mac, port, left)| proto::Neighbor {
                    address: ip.to_string(),
                    mac: mac.to_string(),
                    port: self.interface_name(usize::from(port)),
                    fixed: left == 0,
                    expires_in: (left != 0).then_some(left),
                })
                .collect(),
        })
    }

    /// Sets a static neighbour (`Some((mac, port))`) or forgets one, on
    /// every worker. Like `[[neighbor]]`, it lasts until the process ends.
    pub fn change_neighbor(
        &mut self,
        address: &str,
        to: Option<(&str, &str)>,
    ) -> Result<proto::Empty, String> {
        let ip: std::net::IpAddr = address
            .parse()
            .map_err(|_| format!("neighbour {address:?} is not an IPv4 or IPv6 address"))?;
        let to = match to {
            Some((mac, port)) => {
                let mac: lb_core::wire::MacAddr = mac.parse()?;
                let names = self.interface_names();
                let idx = names.iter().position(|n| n == port).ok_or_else(|| {
                    format!("no port named {port:?} (ports: {})", names.join(", "))
                })?;
                Some((mac, u16::try_from(idx).unwrap_or(u16::MAX)))
            }
            None => None,
        };
        if to.is_none()
            && !self
                .neighbors()?
                .neighbors
                .iter()
                .any(|n| n.address == address)
        {
            return Err(format!("no neighbour {address}"));
        }
        for m in &self.mailboxes {
            if !m.post(Request::SetNeighbor { ip, to }) {
                return Err("a worker has too many requests waiting".into());
            }
        }
        Ok(proto::Empty {})
    }

    /// Adds (or, with `add` false, removes) a static route, validated and
    /// published like any change.
    pub fn change_route(
        &mut self,
        prefix: &str,
        port: Option<&str>,
        gateway: Option<&str>,
        add: bool,
    ) -> Result<proto::Committed, String> {
        let (a, l) = prefix
            .split_once('/')
            .ok_or_else(|| format!("{prefix:?} is not address/length"))?;
        let addr = parse_ip(a, "the prefix")?;
        let len: u8 = l
            .parse()
            .map_err(|_| format!("{prefix:?} is not address/length"))?;
        let mut statics = self.network.statics.clone();
        if add {
            let port = port.ok_or("a route needs the port it leaves by")?;
            let names = self.interface_names();
            let idx = names
                .iter()
                .position(|n| n == port)
                .ok_or_else(|| format!("no port named {port:?} (ports: {})", names.join(", ")))?;
            let gateway = gateway.map(|g| parse_ip(g, "the gateway")).transpose()?;
            if statics.iter().any(|r| r.prefix == addr && r.len == len) {
                return Err(format!("a route to {prefix} exists already"));
            }
            statics.push(lb_core::net::Route {
                prefix: addr,
                len,
                port: u16::try_from(idx).unwrap_or(u16::MAX),
                gateway,
            });
        } else {
            let before = statics.len();
            statics.retain(|r| !(r.prefix == addr && r.len == len));
            if statics.len() == before {
                return Err(format!("no static route to {prefix}"));
            }
        }
        let network =
            Network::new(self.network.interfaces.clone(), &statics).map_err(|e| e.to_string())?;
        let old = std::mem::replace(&mut self.network, network);
        match self.commit(self.specs.clone(), self.timeouts) {
            Ok(v) => Ok(v),
            Err(e) => {
                self.network = old;
                Err(e)
            }
        }
    }
}
