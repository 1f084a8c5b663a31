//! Services, real servers, and the immutable snapshot of them that the
//! control thread builds and the workers read.
//!
//! A [`Snapshot`] is validated in full when it is built, so a worker never
//! meets a half-valid configuration: a change either becomes a whole new
//! snapshot or is refused with an error that says what is wrong and what
//! would be right. Schedulers' read-only tables are built here too.

use crate::filter::{Prefix, Screen};
use std::fmt;
use std::net::IpAddr;

use crate::net::Network;
use crate::sched::{RsId, SchedError, SchedFlags, SchedKind, Scheduler, DEFAULT_MH_TABLE_SIZE};
pub use crate::types::{ForwardMode, Protocol, Timeouts};

/// What identifies a service: protocol, virtual address and port, or a
/// firewall mark. Port 0 is a catch-all for every port of the VIP.
///
/// A firewall-mark service (ipvsadm's `-f N`, `mark` not 0) is one service
/// for whatever traffic its [`MarkMatch`]es describe: several VIPs, ports
/// and protocols sharing one scheduler and one persistence template per
/// client. There are no netfilter marks in a DPDK appliance: the matches
/// are the marking rules, resolved into the snapshot's index so that a
/// packet finds a mark service with the same single lookup as any other.
/// Its `proto`, `vip` and `port` are fixed (TCP, the family's unspecified
/// address, 0) and mean nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub proto: Protocol,
    pub vip: IpAddr,
    pub port: u16,
    /// The firewall mark; 0 for a service of protocol, VIP and port.
    pub mark: u32,
}

impl ServiceKey {
    /// The service of `proto`, `vip` and `port`.
    pub fn new(proto: Protocol, vip: IpAddr, port: u16) -> ServiceKey {
        ServiceKey {
            proto,
            vip,
            port,
            mark: 0,
        }
    }

    /// The firewall-mark service `mark` (IPv4 or, with `v6`, IPv6).
    pub fn fwmark(mark: u32, v6: bool) -> ServiceKey {
        ServiceKey {
            proto: Protocol::Tcp,
            vip: if v6 {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            },
            port: 0,
            mark,
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mark != 0 {
            return match self.vip {
                IpAddr::V4(_) => write!(f, "FWM {}", self.mark),
                IpAddr::V6(_) => write!(f, "FWM {} IPv6", self.mark),
            };
        }
        match self.vip {
            IpAddr::V4(a) => write!(f, "{} {}:{}", self.proto, a, self.port),
            IpAddr::V6(a) => write!(f, "{} [{}]:{}", self.proto, a, self.port),
        }
    }
}

/// What traffic a firewall-mark service takes: one protocol, a prefix of
/// destination addresses and destination port ranges. Written
/// `tcp:198.18.0.0/24:80,443,8000-8099` (IPv6 in brackets:
/// `tcp:[2001:db8::/64]:443`; no ports, or `*`, for every port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkMatch {
    pub proto: Protocol,
    pub prefix: IpAddr,
    pub len: u8,
    /// Inclusive ranges; empty for every port.
    pub ports: Vec<(u16, u16)>,
}

/// The most (address, port) pairs the matches of one snapshot may cover
/// (each is a slot of the service index; a whole port range is one).
pub const MAX_MATCH_ENTRIES: usize = 65_536;

impl MarkMatch {
    /// Whether address `a` is in the match's prefix.
    pub fn covers(&self, a: IpAddr) -> bool {
        let bits = |n: u32| u32::from(self.len).min(n);
        match (self.prefix, a) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let m = u32::MAX.checked_shl(32 - bits(32)).unwrap_or(0);
                u32::from(p) & m == u32::from(a) & m
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let m = u128::MAX.checked_shl(128 - bits(128)).unwrap_or(0);
                u128::from(p) & m == u128::from(a) & m
            }
            _ => false,
        }
    }

    /// Each address the prefix covers, and each port (0 alone for every
    /// port), in order; `None` if they are more than `limit` pairs.
    fn entries(&self, limit: usize) -> Option<Vec<(IpAddr, u16)>> {
        let host_bits = u32::from(if self.prefix.is_ipv4() { 32 } else { 128 } - self.len);
        if host_bits > 20 {
            return None;
        }
        let addrs = 1usize << host_bits;
        let ports_n: usize = if self.ports.is_empty() {
            1
        } else {
            self.ports
                .iter()
                .map(|&(a, b)| usize::from(b) - usize::from(a) + 1)
                .sum()
        };
        if ports_n.saturating_mul(addrs) > limit {
            return None;
        }
        let ports: Vec<u16> = if self.ports.is_empty() {
            vec![0]
        } else {
            self.ports.iter().flat_map(|&(a, b)| a..=b).collect()
        };
        let base: u128 = match self.prefix {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let mut out = Vec::with_capacity(ports.len() * addrs);
        for i in 0..addrs {
            let n = base + i as u128;
            let addr = match self.prefix {
                IpAddr::V4(_) => IpAddr::V4(u32::try_from(n).unwrap_or(u32::MAX).into()),
                IpAddr::V6(_) => IpAddr::V6(n.into()),
            };
            out.extend(ports.iter().map(|&p| (addr, p)));
        }
        Some(out)
    }
}

/// `addr` with every bit past the first `len` cleared.
fn prefix_of(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let keep = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & keep).into())
        }
        IpAddr::V6(a) => {
            let keep = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & keep).into())
        }
    }
}

impl fmt::Display for MarkMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = self.proto.to_string().to_ascii_lowercase();
        match self.prefix {
            IpAddr::V4(a) => write!(f, "{proto}:{a}/{}:", self.len)?,
            IpAddr::V6(a) => write!(f, "{proto}:[{a}/{}]:", self.len)?,
        }
        if self.ports.is_empty() {
            return f.write_str("*");
        }
        for (i, &(a, b)) in self.ports.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for MarkMatch {
    type Err = String;

    fn from_str(s: &str) -> Result<MarkMatch, String> {
        let bad = |why: &str| {
            format!("match {s:?}: {why} (write protocol:prefix:ports, e.g. tcp:198.18.0.10/32:80,443 or udp:[2001:db8::/64]:*)")
        };
        let (proto, rest) = s.split_once(':').ok_or_else(|| bad("no protocol"))?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => return Err(bad("the protocol is tcp or udp")),
        };
        let (prefix, ports) = match rest.strip_prefix('[') {
            Some(r) => {
                let (p, tail) = r.split_once(']').ok_or_else(|| bad("no closing bracket"))?;
                (p, tail.strip_prefix(':').unwrap_or(tail))
            }
            None => rest.split_once(':').unwrap_or((rest, "")),
        };
        let (addr, len) = match prefix.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (prefix, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let full = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 = match len {
            Some(l) => l
                .parse()
                .ok()
                .filter(|&l| l <= full)
                .ok_or_else(|| bad("the prefix length is out of range"))?,
            None => full,
        };
        let masked = prefix_of(addr, len);
        if masked != addr {
            return Err(bad(&format!(
                "{addr}/{len} has host bits set; the prefix is {masked}/{len}"
            )));
        }
        let mut ranges = Vec::new();
        if !(ports.is_empty() || ports == "*") {
            for part in ports.split(',') {
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                let a: u16 = a.parse().map_err(|_| bad("a port is a number 1-65535"))?;
                let b: u16 = b.parse().map_err(|_| bad("a port is a number 1-65535"))?;
                if a == 0 || b < a {
                    return Err(bad("a port range is low-high, from 1"));
                }
                ranges.push((a, b));
            }
            ranges.sort_unstable();
            if ranges == [(1, u16::MAX)] {
                ranges.clear();
            }
        }
        Ok(MarkMatch {
            proto,
            prefix: addr,
            len,
            ports: ranges,
        })
    }
}

/// Persistence (ipvsadm -p/-M): connections from one client (network) go
/// to the same real server while a template lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    /// Seconds a template outlives its last connection (ipvsadm default 360).
    pub timeout: u32,
    /// Client prefix length grouped together (ipvsadm -M; 32 or 128 = one
    /// client).
    pub prefix_len: u8,
}

/// A real server of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServer {
    pub addr: IpAddr,
    /// 0 takes the service's port (ipvsadm's `-r addr` without a port).
    pub port: u16,
    pub mode: ForwardMode,
    /// 0 = quiescent: no new connections, existing ones continue.
    pub weight: u32,
    /// Upper connection threshold (0 = none).
    pub upper: u32,
    /// Lower connection threshold (0 = none).
    pub lower: u32,
}

/// What a health check sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// A TCP connection opens.
    Tcp,
    /// `GET path` answers with this HTTP status.
    Http { path: String, expect: u16 },
    /// A datagram gets any answer (no ICMP port unreachable).
    Udp { payload: Vec<u8> },
}

/// What happens to a real server that fails its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Weight 0: no new connections, existing ones finish.
    Quiesce,
    /// Out of the service until it is healthy again.
    Remove,
}

/// A service's health check of its real servers, run by the control thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: HealthKind,
    /// The port probed (default: each real server's).
    pub port: Option<u16>,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    /// Successes in a row that bring a server back.
    pub rise: u32,
    /// Failures in a row that take it out.
    pub fall: u32,
    pub on_failure: OnFailure,
}

/// A service as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub key: ServiceKey,
    pub sched: SchedKind,
    pub flags: SchedFlags,
    pub persistence: Option<Persistence>,
    pub reals: Vec<RealServer>,
    /// Local addresses for Full-NAT real servers.
    pub laddrs: Vec<IpAddr>,
    /// Other directors' local addresses for this service (under ECMP each
    /// director has its own): never used for a new connection, kept for
    /// the connections those directors sync here, whose replies routing
    /// brings here once their director is gone.
    pub peer_laddrs: Vec<IpAddr>,
    /// The Maglev table size (mh only): a prime.
    pub mh_table_size: u32,
    /// How the control thread checks the real servers, if it does.
    pub health: Option<HealthCheck>,
    /// A firewall-mark service's traffic (none for any other service).
    pub matches: Vec<MarkMatch>,
    /// Clients that may open connections (empty: every client) and those
    /// that may not (checked first).
    pub allow: Vec<Prefix>,
    pub deny: Vec<Prefix>,
}

impl ServiceSpec {
    /// A service with ipvsadm's defaults (wlc, no persistence) and no
    /// real servers yet.
    pub fn new(key: ServiceKey) -> ServiceSpec {
        ServiceSpec {
            key,
            sched: SchedKind::Wlc,
            flags: SchedFlags::default(),
            persistence: None,
            reals: Vec::new(),
            laddrs: Vec::new(),
            peer_laddrs: Vec::new(),
            mh_table_size: DEFAULT_MH_TABLE_SIZE,
            health: None,
            matches: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

/// The largest weight ipvsadm accepts.
pub const MAX_WEIGHT: u32 = 65535;

/// Why a set of services was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("service {service}: {list} prefix {prefix} is of the other address family than its VIP, so no client could match it")]
    ListFamily {
        service: ServiceKey,
        list: &'static str,
        prefix: String,
    },
    #[error("service {0} is defined twice")]
    DuplicateService(ServiceKey),
    #[error("service {service}: real server {rs} is listed twice")]
    DuplicateReal { service: ServiceKey, rs: String },
    #[error(
        "service {service}: real server {rs} uses {mode}, which cannot change the destination port: \
         the packet reaches the real server with port {vport} unchanged; use port {vport} \
         (or no port), or NAT/Full-NAT to map ports"
    )]
    PortMapping {
        service: ServiceKey,
        rs: String,
        mode: &'static str,
        vport: u16,
    },
    #[error("service {service} (a catch-all for every port) cannot map to port {port} of {rs}: give the real server no port")]
    CatchAllPort {
        service: ServiceKey,
        rs: String,
        port: u16,
    },
    #[error("service {0} has Full-NAT real servers but no local addresses: add a local-address pool (laddrs)")]
    FnatWithoutLaddr(ServiceKey),
    #[error("service {service}: local address {laddr} is not of the real servers' address family")]
    LaddrFamily { service: ServiceKey, laddr: IpAddr },
    #[error("service {service}: {laddr} is both a local address and a peer's")]
    LaddrOwnAndPeer { service: ServiceKey, laddr: IpAddr },
    #[error("service {service}: real server {rs} is not of the VIP's address family")]
    Family { service: ServiceKey, rs: String },
    #[error("service {service}: real server {rs} has weight {weight}; use 0 to {max}")]
    Weight {
        service: ServiceKey,
        rs: String,
        weight: u32,
        max: u32,
    },
    #[error("service {service}: real server {rs} has a lower threshold {lower} above its upper threshold {upper}")]
    Thresholds {
        service: ServiceKey,
        rs: String,
        lower: u32,
        upper: u32,
    },
    #[error(
        "service {service}: persistence netmask /{prefix_len} is too long for the address family"
    )]
    Netmask { service: ServiceKey, prefix_len: u8 },
    #[error("service {0}: only a firewall-mark service (-f) has matches")]
    MatchWithoutMark(ServiceKey),
    #[error("service {service}: match {m} is not of the service's address family")]
    MatchFamily { service: ServiceKey, m: String },
    #[error("the matches cover more than {max} (address, port) pairs (at {service}, match {m}): use shorter prefixes or fewer ports (a match of every port is one pair per address)", max = MAX_MATCH_ENTRIES)]
    MatchTooWide { service: ServiceKey, m: String },
    #[error("service {service}: match {m} takes {what}, which {other} takes already")]
    MatchOverlap {
        service: ServiceKey,
        m: String,
        what: String,
        other: ServiceKey,
    },
    #[error("service {service}: {source}")]
    Scheduler {
        service: ServiceKey,
        source: SchedError,
    },
}

fn rs_name(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// A validated service with its scheduler, as workers see it.
#[derive(Debug, Clone)]
pub struct Service {
    pub spec: ServiceSpec,
    pub sched: Scheduler,
    /// The real servers' weights, in order, for the scheduler.
    pub weights: Box<[u32]>,
    /// The addresses it takes traffic for: its VIP, or each address its
    /// matches cover.
    pub vips: Box<[IpAddr]>,
    /// Its allow and deny lists, for each new connection.
    pub screen: Screen,
    /// Configured but not served ([`Snapshot::build_with_standby`]): no
    /// packet finds it and its addresses are not this director's, but the
    /// sessions a peer syncs for it are kept, for when it is served.
    pub standby: bool,
}

/// Validates one service and builds its scheduler. Real servers without a
/// port get the service's port.
pub fn build_service(mut spec: ServiceSpec) -> Result<Service, ServiceError> {
    let key = spec.key;
    let v4 = key.vip.is_ipv4();
    let mut seen = std::collections::HashSet::new();
    for rs in &mut spec.reals {
        if rs.port == 0 {
            rs.port = key.port;
        }
        let name = rs_name(rs.addr, rs.port);
        if rs.addr.is_ipv4() != v4 {
            return Err(ServiceError::Family {
                service: key,
                rs: name,
            });
        }
        if !seen.insert((rs.addr, rs.port)) {
            return Err(ServiceError::DuplicateReal {
                service: key,
                rs: name,
            });
        }
        if key.port == 0 && rs.port != 0 {
            return Err(ServiceError::CatchAllPort {
                service: key,
                rs: rs_name(rs.addr, rs.port),
                port: rs.port,
            });
        }
        if !rs.mode.maps_ports() && rs.port != key.port {
            return Err(ServiceError::PortMapping {
                service: key,
                rs: name,
                mode: if rs.mode == ForwardMode::Dr {
                    "DR (-g)"
                } else {
                    "TUN (-i)"
                },
                vport: key.port,
            });
        }
        if rs.weight > MAX_WEIGHT {
            return Err(ServiceError::Weight {
                service: key,
                rs: name,
                weight: rs.weight,
                max: MAX_WEIGHT,
            });
        }
        if rs.upper != 0 && rs.lower > rs.upper {
            return Err(ServiceError::Thresholds {
                service: key,
                rs: name,
                lower: rs.lower,
                upper: rs.upper,
            });
        }
    }
    if key.mark == 0 && !spec.matches.is_empty() {
        return Err(ServiceError::MatchWithoutMark(key));
    }
    if let Some(m) = spec.matches.iter().find(|m| m.prefix.is_ipv4() != v4) {
        return Err(ServiceError::MatchFamily {
            service: key,
            m: m.to_string(),
        });
    }
    let fnat = spec.reals.iter().any(|r| r.mode == ForwardMode::Fnat);
    if fnat && spec.laddrs.is_empty() {
        return Err(ServiceError::FnatWithoutLaddr(key));
    }
    if let Some(&laddr) = spec
        .laddrs
        .iter()
        .chain(&spec.peer_laddrs)
        .find(|l| l.is_ipv4() != v4)
    {
        return Err(ServiceError::LaddrFamily {
            service: key,
            laddr,
        });
    }
    if let Some(&laddr) = spec.peer_laddrs.iter().find(|l| spec.laddrs.contains(l)) {
        return Err(ServiceError::LaddrOwnAndPeer {
            service: key,
            laddr,
        });
    }
    if let Some(p) = spec.persistence {
        if p.prefix_len > if v4 { 32 } else { 128 } {
            return Err(ServiceError::Netmask {
                service: key,
                prefix_len: p.prefix_len,
            });
        }
    }
    let ids: Vec<RsId> = spec
        .reals
        .iter()
        .map(|r| RsId {
            addr: r.addr,
            port: r.port,
        })
        .collect();
    let weights: Box<[u32]> = spec.reals.iter().map(|r| r.weight).collect();
    let sched = Scheduler::new(spec.sched, spec.flags, &ids, &weights, spec.mh_table_size)
        .map_err(|source| ServiceError::Scheduler {
            service: key,
            source,
        })?;
    let vips = if key.mark == 0 {
        vec![key.vip].into_boxed_slice()
    } else {
        Box::default()
    };
    for (list, prefixes) in [("allow", &spec.allow), ("deny", &spec.deny)] {
        if let Some((a, len)) = prefixes.iter().find(|(a, _)| a.is_ipv4() != v4) {
            return Err(ServiceError::ListFamily {
                service: key,
                list,
                prefix: format!("{a}/{len}"),
            });
        }
    }
    let screen = Screen::new(&spec.allow, &spec.deny);
    Ok(Service {
        spec,
        sched,
        weights,
        vips,
        screen,
        standby: false,
    })
}

/// Everything the workers need to decide, immutable once built.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Increases with every published change.
    pub version: u64,
    pub services: Vec<Service>,
    pub timeouts: Timeouts,
    /// Interfaces, addresses and routes.
    pub network: Network,
    /// By [`packed`] key: the stored address form and the protocol and
    /// port in one word; a firewall-mark service under each (address,
    /// port) its matches cover.
    index: ServiceIndex,
    /// The firewall-mark services, by position.
    marked: Box<[u32]>,
}

/// Services by [`packed`] key, open-addressed in a power-of-two array at
/// least twice their number: a new connection finds its service with two
/// multiplications and, mostly, one compare (a general hash map's hashing
/// and group probing cost it about 60 instructions more).
#[derive(Debug, Clone)]
struct ServiceIndex {
    keys: Box<[(u128, u32)]>,
    /// The service of each slot, [`EMPTY_SLOT`] for none.
    services: Box<[u32]>,
    /// Random per snapshot, so that no set of VIPs clusters by design.
    seed: u64,
}

const EMPTY_SLOT: u32 = u32::MAX;

impl ServiceIndex {
    fn with_capacity(n: usize) -> ServiceIndex {
        let len = (n * 2).next_power_of_two().max(2);
        ServiceIndex {
            keys: vec![(0, 0); len].into_boxed_slice(),
            services: vec![EMPTY_SLOT; len].into_boxed_slice(),
            seed: ahash::RandomState::new().hash_one(0u8),
        }
    }

    /// The key's first slot: the products' top bits, which every bit of
    /// the key reaches.
    #[inline]
    #[allow(clippy::cast_possible_truncation)] // the halves of the address are the point
    fn slot(&self, (vip, word): (u128, u32)) -> usize {
        let (low, high) = (vip as u64, (vip >> 64) as u64);
        let h = (low ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (high ^ u64::from(word)).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        usize::try_from(h >> (64 - self.keys.len().trailing_zeros())).unwrap_or(0)
    }

    #[inline]
    fn get(&self, key: (u128, u32)) -> Option<u32> {
        let mask = self.keys.len() - 1;
        let mut i = self.slot(key);
        // Half the slots at least are empty, so this ends.
        loop {
            let service = self.services[i];
            if service == EMPTY_SLOT {
                return None;
            }
            if self.keys[i] == key {
                return Some(service);
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds a key; false if it is there already.
    fn insert(&mut self, key: (u128, u32), service: u32) -> bool {
        let mask = self.keys.len() - 1;
        let mut i = self.slot(key);
        while self.services[i] != EMPTY_SLOT {
            if self.keys[i] == key {
                return false;
            }
            i = (i + 1) & mask;
        }
        self.keys[i] = key;
        self.services[i] = service;
        true
    }
}

/// A service key as the index holds it.
#[inline]
fn packed(proto: Protocol, vip: &crate::types::Addr, port: u16) -> (u128, u32) {
    (
        u128::from_ne_bytes(*vip),
        u32::from(proto.number()) << 16 | u32::from(port),
    )
}

impl Snapshot {
    /// Validates every service and builds the lookup index.
    pub fn build(
        version: u64,
        specs: Vec<ServiceSpec>,
        timeouts: Timeouts,
    ) -> Result<Snapshot, ServiceError> {
        Snapshot::build_with_standby(version, specs, timeouts, |_| false)
    }

    /// [`build`](Self::build), with the services `standby` names on
    /// standby: in the snapshot (their sessions kept, a peer's installed)
    /// but out of its index, so that no packet finds them.
    pub fn build_with_standby(
        version: u64,
        specs: Vec<ServiceSpec>,
        timeouts: Timeouts,
        standby: impl Fn(&ServiceSpec) -> bool,
    ) -> Result<Snapshot, ServiceError> {
        let mut services = Vec::with_capacity(specs.len());
        let mut keys = std::collections::HashSet::new();
        for spec in specs {
            if !keys.insert(spec.key) {
                return Err(ServiceError::DuplicateService(spec.key));
            }
            let on_standby = standby(&spec);
            let mut svc = build_service(spec)?;
            svc.standby = on_standby;
            services.push(svc);
        }
        let position = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
        // What the matches cover, within the index's bound.
        let mut covered = Vec::new();
        let mut total = 0usize;
        for (i, svc) in services.iter().enumerate() {
            for m in &svc.spec.matches {
                let entries = m.entries(MAX_MATCH_ENTRIES - total).ok_or_else(|| {
                    ServiceError::MatchTooWide {
                        service: svc.spec.key,
                        m: m.to_string(),
                    }
                })?;
                total += entries.len();
                covered.push((i, m.clone(), entries));
            }
        }
        let mut index = ServiceIndex::with_capacity(services.len() + total);
        for (i, svc) in services.iter().enumerate() {
            let key = svc.spec.key;
            if key.mark == 0 && !svc.standby {
                index.insert(
                    packed(key.proto, &crate::types::addr(key.vip), key.port),
                    position(i),
                );
            }
        }
        let mut vips: Vec<Vec<IpAddr>> = vec![Vec::new(); services.len()];
        for (i, m, entries) in covered {
            if services[i].standby {
                continue;
            }
            for (addr, port) in entries {
                let k = packed(m.proto, &crate::types::addr(addr), port);
                if !index.insert(k, position(i)) {
                    let other = index
                        .get(k)
                        .map_or(services[i].spec.key, |o| services[o as usize].spec.key);
                    let what = if port == 0 {
                        format!("every {} port of {addr}", m.proto)
                    } else {
                        format!("{}", ServiceKey::new(m.proto, addr, port))
                    };
                    return Err(ServiceError::MatchOverlap {
                        service: services[i].spec.key,
                        m: m.to_string(),
                        what,
                        other,
                    });
                }
                if vips[i].last() != Some(&addr) {
                    vips[i].push(addr);
                }
            }
        }
        let mut marked = Vec::new();
        for (i, (svc, mut v)) in services.iter_mut().zip(vips).enumerate() {
            if svc.spec.key.mark != 0 {
                v.sort_unstable();
                v.dedup();
                svc.vips = v.into_boxed_slice();
                marked.push(position(i));
            }
        }
        Ok(Snapshot {
            version,
            services,
            timeouts,
            network: Network::default(),
            index,
            marked: marked.into_boxed_slice(),
        })
    }

    /// The same services with these interfaces and routes.
    pub fn with_network(mut self, network: Network) -> Snapshot {
        self.network = network;
        self
    }

    /// An empty snapshot.
    pub fn empty() -> Snapshot {
        Snapshot::build(0, Vec::new(), Timeouts::default()).expect("an empty set is valid")
    }

    /// The service for a packet to `vip:port`: an exact match first, then
    /// the VIP's catch-all service.
    #[inline]
    pub fn lookup(&self, proto: Protocol, vip: IpAddr, port: u16) -> Option<u32> {
        self.lookup_addr(proto, &crate::types::addr(vip), port)
    }

    /// [`lookup`](Self::lookup) with the VIP in the stored form, as the
    /// engine has it from the parse.
    #[inline(always)]
    pub fn lookup_addr(&self, proto: Protocol, vip: &crate::types::Addr, port: u16) -> Option<u32> {
        self.index
            .get(packed(proto, vip, port))
            .or_else(|| self.index.get(packed(proto, vip, 0)))
    }

    /// Whether `addr` is a VIP of any service.
    pub fn is_vip(&self, addr: IpAddr) -> bool {
        self.services.iter().any(|s| s.vips.contains(&addr))
    }

    /// The service of exactly `key`, if there is one.
    pub fn find(&self, key: &ServiceKey) -> Option<u32> {
        if key.mark == 0 {
            return self
                .index
                .get(packed(key.proto, &crate::types::addr(key.vip), key.port))
                .filter(|&i| self.services[i as usize].spec.key == *key)
                .or_else(|| {
                    // A service on standby is out of the index.
                    self.services
                        .iter()
                        .position(|s| s.standby && s.spec.key == *key)
                        .and_then(|i| u32::try_from(i).ok())
                });
        }
        self.marked
            .iter()
            .copied()
            .find(|&i| self.services[i as usize].spec.key == *key)
    }

    /// The specs, as the control thread would rebuild from them.
    pub fn specs(&self) -> Vec<ServiceSpec> {
        self.services.iter().map(|s| s.spec.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> ServiceKey {
        ServiceKey {
            proto: Protocol::Tcp,
            vip: "198.18.0.10".parse().unwrap(),
            port,
            mark: 0,
        }
    }

    fn rs(addr: &str, port: u16, mode: ForwardMode) -> RealServer {
        RealServer {
            addr: addr.parse().unwrap(),
            port,
            mode,
            weight: 1,
            upper: 0,
            lower: 0,
        }
    }

    fn svc(port: u16, reals: Vec<RealServer>) -> ServiceSpec {
        let mut s = ServiceSpec::new(key(port));
        s.reals = reals;
        s
    }

    #[test]
    fn builds_and_looks_up() {
        let mut fnat = svc(443, vec![rs("10.1.0.1", 8443, ForwardMode::Fnat)]);
        fnat.laddrs = vec!["10.2.0.1".parse().unwrap()];
        let snap = Snapshot::build(
            7,
            vec![
                svc(80, vec![rs("10.1.0.1", 0, ForwardMode::Dr)]),
                fnat,
                svc(0, vec![rs("10.1.0.2", 0, ForwardMode::Dr)]),
            ],
            Timeouts::default(),
        )
        .unwrap();
        let vip = "198.18.0.10".parse().unwrap();
        assert_eq!(snap.lookup(Protocol::Tcp, vip, 80), Some(0));
        assert_eq!(snap.lookup(Protocol::Tcp, vip, 443), Some(1));
        assert_eq!(
            snap.lookup(Protocol::Tcp, vip, 22),
            Some(2),
            "the catch-all"
        );
        assert_eq!(snap.lookup(Protocol::Udp, vip, 80), None);
        assert_eq!(
            snap.lookup(Protocol::Tcp, "198.18.0.11".parse().unwrap(), 80),
            None
        );
        assert_eq!(
            snap.services[0].spec.reals[0].port, 80,
            "no port takes the VIP's"
        );
        assert_eq!(
            snap.services[0].spec.sched,
            SchedKind::Wlc,
            "ipvsadm's default"
        );
        assert!(snap.is_vip(vip));
        assert_eq!(snap.version, 7);
    }

    #[test]
    fn many_services_each_found_by_its_key_only() {
        // 2,000 services on 500 VIPs (IPv4 and IPv6) and four ports: every
        // one is found, nothing else is, and each key only once.
        let vip = |i: u32| -> IpAddr {
            if i.is_multiple_of(2) {
                std::net::Ipv4Addr::from(0xc612_0000 + i).into()
            } else {
                std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)).into()
            }
        };
        let mut specs = Vec::new();
        for i in 0..500 {
            for port in [80, 443, 53, 0] {
                let proto = if port == 53 {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                };
                let mut s = ServiceSpec::new(ServiceKey {
                    proto,
                    vip: vip(i),
                    port,
                    mark: 0,
                });
                s.reals = vec![rs("10.1.0.1", 0, ForwardMode::Dr)];
                if i % 2 == 1 {
                    s.reals = vec![rs("2001:db8:1::1", 0, ForwardMode::Dr)];
                }
                specs.push(s);
            }
        }
        let mut dup = specs.clone();
        let snap = Snapshot::build(1, specs, Timeouts::default()).unwrap();
        for (n, s) in snap.services.iter().enumerate() {
            let k = s.spec.key;
            assert_eq!(
                snap.lookup(k.proto, k.vip, k.port),
                Some(u32::try_from(n).unwrap())
            );
        }
        for i in 0..500 {
            // Other TCP ports find the VIP's catch-all; UDP 80 nothing.
            let all = snap.lookup(Protocol::Tcp, vip(i), 22).unwrap();
            assert_eq!(snap.services[all as usize].spec.key.port, 0);
            assert_eq!(snap.lookup(Protocol::Udp, vip(i), 80), None);
            assert_eq!(snap.lookup(Protocol::Tcp, vip(i + 1000), 80), None);
        }
        dup.push(dup[1234].clone());
        assert!(matches!(
            Snapshot::build(1, dup, Timeouts::default()),
            Err(ServiceError::DuplicateService(_))
        ));
    }

    fn refused(specs: Vec<ServiceSpec>) -> String {
        Snapshot::build(1, specs, Timeouts::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn refusals_say_what_would_be_right() {
        let e = refused(vec![svc(80, vec![rs("10.1.0.1", 8080, ForwardMode::Dr)])]);
        assert!(
            e.contains("DR (-g), which cannot change the destination port"),
            "{e}"
        );
        assert!(e.contains("use port 80"), "{e}");
        let e = refused(vec![svc(80, vec![rs("10.1.0.1", 8080, ForwardMode::Tun)])]);
        assert!(e.contains("TUN (-i)"), "{e}");
        let e = refused(vec![svc(80, vec![rs("10.1.0.1", 80, ForwardMode::Fnat)])]);
        assert!(e.contains("no local addresses"), "{e}");
        let e = refused(vec![svc(80, vec![]), svc(80, vec![])]);
        assert_eq!(e, "service TCP 198.18.0.10:80 is defined twice");
        let e = refused(vec![svc(
            80,
            vec![
                rs("10.1.0.1", 80, ForwardMode::Nat),
                rs("10.1.0.1", 0, ForwardMode::Dr),
            ],
        )]);
        assert!(e.contains("10.1.0.1:80 is listed twice"), "{e}");
        let e = refused(vec![svc(80, vec![rs("fd00::1", 80, ForwardMode::Nat)])]);
        assert!(e.contains("address family"), "{e}");
        let mut heavy = rs("10.1.0.1", 80, ForwardMode::Nat);
        heavy.weight = 70000;
        assert!(refused(vec![svc(80, vec![heavy])]).contains("use 0 to 65535"));
        let mut th = rs("10.1.0.1", 80, ForwardMode::Nat);
        th.upper = 10;
        th.lower = 20;
        assert!(refused(vec![svc(80, vec![th])]).contains("lower threshold 20 above"));
        let mut mh = svc(80, vec![rs("10.1.0.1", 80, ForwardMode::Nat)]);
        mh.sched = SchedKind::Mh;
        mh.mh_table_size = 1000;
        assert!(refused(vec![mh]).contains("not a prime"));
        let mut p = svc(80, vec![]);
        p.persistence = Some(Persistence {
            timeout: 300,
            prefix_len: 33,
        });
        assert!(refused(vec![p]).contains("/33"));
        let e = refused(vec![svc(0, vec![rs("10.1.0.1", 8080, ForwardMode::Nat)])]);
        assert!(e.contains("catch-all"), "{e}");
    }

    #[test]
    fn names() {
        assert_eq!(ForwardMode::Fnat.ipvsadm_name(), "FullNat");
        assert_eq!("masq".parse::<ForwardMode>().unwrap(), ForwardMode::Nat);
        assert!("xyz"
            .parse::<ForwardMode>()
            .unwrap_err()
            .contains("dr, nat, tun, fnat"));
        assert_eq!(key(80).to_string(), "TCP 198.18.0.10:80");
        assert_eq!(Protocol::from_number(17), Some(Protocol::Udp));
        assert_eq!(Protocol::from_number(1), None);
    }

    fn marked(mark: u32, matches: &[&str]) -> ServiceSpec {
        let mut s = ServiceSpec::new(ServiceKey::fwmark(mark, false));
        s.matches = matches.iter().map(|m| m.parse().unwrap()).collect();
        s.reals = vec![rs("10.1.0.1", 0, ForwardMode::Dr)];
        s
    }

    #[test]
    fn matches_read_and_write_as_operators_type_them() {
        for (text, shown) in [
            ("tcp:198.18.0.10:80,443", "tcp:198.18.0.10/32:80,443"),
            (
                "TCP:198.18.0.0/24:8000-8099,22",
                "tcp:198.18.0.0/24:22,8000-8099",
            ),
            ("udp:198.18.0.10/32:*", "udp:198.18.0.10/32:*"),
            ("udp:198.18.0.10", "udp:198.18.0.10/32:*"),
            ("tcp:198.18.0.10:1-65535", "tcp:198.18.0.10/32:*"),
            ("tcp:[2001:db8::/64]:443", "tcp:[2001:db8::/64]:443"),
        ] {
            let m: MarkMatch = text.parse().unwrap();
            assert_eq!(m.to_string(), shown);
            assert_eq!(shown.parse::<MarkMatch>().unwrap(), m);
        }
        for bad in [
            "sctp:198.18.0.10:80",
            "tcp:198.18.0.300:80",
            "tcp:198.18.0.1/24:80",
            "tcp:198.18.0.0/33:80",
            "tcp:198.18.0.10:0",
            "tcp:198.18.0.10:90-80",
            "tcp:198.18.0.10:http",
        ] {
            let e = bad.parse::<MarkMatch>().unwrap_err();
            assert!(e.contains("protocol:prefix:ports"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_match_covers_the_addresses_of_its_prefix() {
        let m: MarkMatch = "tcp:198.18.0.0/24:80".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(m.covers(ip("198.18.0.200")));
        assert!(!m.covers(ip("198.18.1.1")));
        assert!(!m.covers(ip("2001:db8::1")));
        let all: MarkMatch = "udp:[::/0]:*".parse().unwrap();
        assert!(all.covers(ip("::1")) && !all.covers(ip("10.0.0.1")));
    }

    #[test]
    fn a_fwmark_service_is_found_under_every_address_and_port_it_matches() {
        let snap = Snapshot::build(
            1,
            vec![
                svc(80, vec![rs("10.1.0.9", 0, ForwardMode::Dr)]),
                marked(1, &["tcp:198.18.1.0/30:80,443", "udp:198.18.1.0/32:*"]),
            ],
            Timeouts::default(),
        )
        .unwrap();
        let at = |p, a: &str, port| snap.lookup(p, a.parse().unwrap(), port);
        assert_eq!(at(Protocol::Tcp, "198.18.0.10", 80), Some(0));
        for a in ["198.18.1.0", "198.18.1.3"] {
            assert_eq!(at(Protocol::Tcp, a, 80), Some(1));
            assert_eq!(at(Protocol::Tcp, a, 443), Some(1));
            assert_eq!(at(Protocol::Tcp, a, 22), None);
        }
        assert_eq!(at(Protocol::Tcp, "198.18.1.4", 80), None);
        assert_eq!(at(Protocol::Udp, "198.18.1.0", 9999), Some(1));
        assert_eq!(snap.services[1].vips.len(), 4);
        assert!(snap.is_vip("198.18.1.2".parse().unwrap()));
        assert_eq!(snap.find(&ServiceKey::fwmark(1, false)), Some(1));
        assert_eq!(snap.find(&ServiceKey::fwmark(2, false)), None);
        assert_eq!(snap.find(&key(80)), Some(0));
        assert_eq!(ServiceKey::fwmark(1, false).to_string(), "FWM 1");
    }

    #[test]
    fn overlapping_too_wide_and_misplaced_matches_are_refused() {
        let build = |specs| Snapshot::build(1, specs, Timeouts::default()).map(|_| ());
        let e = build(vec![
            svc(80, vec![rs("10.1.0.9", 0, ForwardMode::Dr)]),
            marked(1, &["tcp:198.18.0.10/32:80,443"]),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("TCP 198.18.0.10:80") && e.contains("FWM 1"),
            "{e}"
        );
        let e = build(vec![
            marked(1, &["tcp:198.18.0.0/24:*"]),
            marked(2, &["tcp:198.18.0.7/32:*"]),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("every TCP port of 198.18.0.7"), "{e}");
        let e = build(vec![marked(1, &["tcp:198.18.0.0/16:80,443"])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 65536"), "{e}");
        let mut plain = svc(80, vec![]);
        plain.matches = vec!["tcp:198.18.0.10:80".parse().unwrap()];
        assert!(matches!(
            build(vec![plain]),
            Err(ServiceError::MatchWithoutMark(_))
        ));
        assert!(matches!(
            build(vec![marked(1, &["tcp:[2001:db8::1/128]:80"])]),
            Err(ServiceError::MatchFamily { .. })
        ));
    }
}
