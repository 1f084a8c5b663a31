//! The LVS schedulers, with the semantics of Linux IPVS (`ip_vs_*.c`).
//!
//! A scheduler is split in two, as the design asks: [`Scheduler`] holds what
//! is built once per configuration snapshot and shared read-only by every
//! worker (dh/sh bucket tables, the Maglev lookup table, wrr's gcd and
//! maximum weight); [`SchedState`] holds what a pick changes (the rr cursor,
//! wrr's position, lblc/lblcr's locality tables) and lives with one worker.
//! Connection counts are the worker's own ([`RsLoad`]): like DPVS, each
//! worker balances its share of the flows, so lc-family schedulers compare
//! per-worker counts rather than global ones.
//!
//! `pick` never allocates: locality tables are preallocated and, when full,
//! the pick is made without caching it (as IPVS does when it cannot
//! allocate an entry).

mod hash;
mod lblc;
mod lc;
mod least;
mod mh;
mod rr;

use crate::types::{ip, Addr};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

pub use mh::{is_prime, DEFAULT_MH_TABLE_SIZE};

/// The scheduler of a service, by its ipvsadm name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedKind {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connection.
    Lc,
    /// Weighted least connection (ipvsadm's default).
    Wlc,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Locality-based least connection.
    Lblc,
    /// Locality-based least connection with replication.
    Lblcr,
    /// Maglev hashing.
    Mh,
    /// Weighted failover.
    Fo,
}

impl SchedKind {
    pub const ALL: [SchedKind; 12] = [
        SchedKind::Rr,
        SchedKind::Wrr,
        SchedKind::Lc,
        SchedKind::Wlc,
        SchedKind::Sed,
        SchedKind::Nq,
        SchedKind::Dh,
        SchedKind::Sh,
        SchedKind::Lblc,
        SchedKind::Lblcr,
        SchedKind::Mh,
        SchedKind::Fo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SchedKind::Rr => "rr",
            SchedKind::Wrr => "wrr",
            SchedKind::Lc => "lc",
            SchedKind::Wlc => "wlc",
            SchedKind::Sed => "sed",
            SchedKind::Nq => "nq",
            SchedKind::Dh => "dh",
            SchedKind::Sh => "sh",
            SchedKind::Lblc => "lblc",
            SchedKind::Lblcr => "lblcr",
            SchedKind::Mh => "mh",
            SchedKind::Fo => "fo",
        }
    }
}

impl fmt::Display for SchedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedKind {
    type Err = String;

    fn from_str(s: &str) -> Result<SchedKind, String> {
        SchedKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = SchedKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown scheduler {s:?}; valid schedulers: {}",
                    names.join(", ")
                )
            })
    }
}

/// Scheduler flags (ipvsadm `-b`): `sh-fallback`/`mh-fallback` pick another
/// server when the hashed one is unavailable; `sh-port`/`mh-port` hash the
/// source port as well as the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct SchedFlags {
    pub fallback: bool,
    pub port: bool,
}

impl SchedFlags {
    /// Parses ipvsadm's comma-separated `-b` list for `kind`.
    pub fn parse(kind: SchedKind, list: &str) -> Result<SchedFlags, String> {
        let mut f = SchedFlags::default();
        for flag in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match (kind, flag) {
                (SchedKind::Sh, "sh-fallback") | (SchedKind::Mh, "mh-fallback") => {
                    f.fallback = true
                }
                (SchedKind::Sh, "sh-port") | (SchedKind::Mh, "mh-port") => f.port = true,
                (SchedKind::Sh | SchedKind::Mh, _) => {
                    let p = kind.name();
                    return Err(format!(
                        "unknown scheduler flag {flag:?} for {p}; valid: {p}-fallback, {p}-port"
                    ));
                }
                _ => {
                    return Err(format!(
                        "scheduler {kind} takes no flags (sh and mh do), got {flag:?}"
                    ))
                }
            }
        }
        Ok(f)
    }

    /// The flags as ipvsadm writes them (`sh-fallback,sh-port`).
    pub fn to_list(self, kind: SchedKind) -> String {
        let p = kind.name();
        let mut v = Vec::new();
        if self.fallback {
            v.push(format!("{p}-fallback"));
        }
        if self.port {
            v.push(format!("{p}-port"));
        }
        v.join(",")
    }
}

/// One worker's view of a real server's load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RsLoad {
    /// Established TCP connections (IPVS's activeconns).
    pub active: u32,
    /// Other connections: handshakes, closing TCP, UDP (inactconns).
    pub inactive: u32,
    /// Over its upper connection threshold (IPVS's OVERLOAD flag).
    pub overloaded: bool,
}

impl RsLoad {
    /// IPVS's `ip_vs_dest_conn_overhead`: active*256 + inactive.
    pub fn overhead(&self) -> u64 {
        (u64::from(self.active) << 8) + u64::from(self.inactive)
    }

    /// Sets or clears the overload flag after a count changed, as IPVS's
    /// bind/unbind do with the upper and lower thresholds (0 = none).
    pub fn update_overload(&mut self, upper: u32, lower: u32) {
        let total = u64::from(self.active) + u64::from(self.inactive);
        if upper != 0 && total >= u64::from(upper) {
            self.overloaded = true;
        } else if self.overloaded {
            let clear = if lower != 0 {
                total < u64::from(lower)
            } else if upper != 0 {
                total * 4 < u64::from(upper) * 3
            } else {
                true
            };
            if clear {
                self.overloaded = false;
            }
        }
    }
}

/// What the schedulers know of a flow: its addresses in the sessions'
/// stored form, converted only by the schedulers that hash them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInfo {
    pub src: Addr,
    pub src_port: u16,
    pub dst: Addr,
}

/// What is wrong with a scheduler's set-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedError {
    #[error("the Maglev table size {0} is not a prime (e.g. 65537, 4093, 251)")]
    NotPrime(u32),
    #[error(
        "the Maglev table size {size} is smaller than the {servers} real servers it must hold"
    )]
    TableTooSmall { size: u32, servers: usize },
    #[error("a service holds at most {max} real servers, not {got}")]
    TooManyServers { max: usize, got: usize },
}

/// The most real servers one service may hold (indexes are u16).
pub const MAX_SERVERS: usize = u16::MAX as usize;
pub(crate) const NONE: u16 = u16::MAX;

/// A real server's identity, for the hashing schedulers' tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsId {
    pub addr: IpAddr,
    pub port: u16,
}

/// The read-only part of a service's scheduler, built with the snapshot.
#[derive(Debug, Clone)]
pub struct Scheduler {
    kind: SchedKind,
    flags: SchedFlags,
    tables: Tables,
}

#[derive(Debug, Clone)]
enum Tables {
    None,
    Wrr(rr::WrrParams),
    Buckets(Box<[u16]>),
    Maglev(Box<[u16]>),
}

/// One worker's mutable scheduling state for one service.
#[derive(Debug, Default)]
pub struct SchedState {
    rr_cursor: usize,
    wrr: rr::WrrCursor,
    locality: Option<lblc::Locality>,
    /// lc, wlc, sed, nq and fo: the servers ranked by their loads, kept
    /// current by [`SchedState::load_changed`].
    least: Option<least::LeastTree>,
}

impl SchedState {
    /// Tells the state that server `i`'s load in `loads` changed (a
    /// connection opened, established or closed, an overload flag moved).
    #[inline]
    pub fn load_changed(&mut self, i: usize, loads: &[RsLoad]) {
        if let Some(t) = &mut self.least {
            t.update(i, loads);
        }
    }
}

impl Scheduler {
    /// Builds the scheduler for servers `ids` with `weights` (same order).
    /// `mh_table_size` is used by `mh` only.
    pub fn new(
        kind: SchedKind,
        flags: SchedFlags,
        ids: &[RsId],
        weights: &[u32],
        mh_table_size: u32,
    ) -> Result<Scheduler, SchedError> {
        debug_assert_eq!(ids.len(), weights.len());
        if ids.len() > MAX_SERVERS {
            return Err(SchedError::TooManyServers {
                max: MAX_SERVERS,
                got: ids.len(),
            });
        }
        let tables = match kind {
            SchedKind::Wrr => Tables::Wrr(rr::WrrParams::new(weights)),
            SchedKind::Dh => Tables::Buckets(hash::dh_table(ids.len())),
            SchedKind::Sh => Tables::Buckets(hash::sh_table(weights)),
            SchedKind::Mh => Tables::Maglev(mh::build(ids, weights, mh_table_size)?),
            _ => Tables::None,
        };
        Ok(Scheduler {
            kind,
            flags,
            tables,
        })
    }

    pub fn kind(&self) -> SchedKind {
        self.kind
    }

    pub fn flags(&self) -> SchedFlags {
        self.flags
    }

    /// A fresh per-worker state for this scheduler over servers of
    /// `weights` whose loads are now `loads`.
    pub fn new_state(&self, weights: &[u32], loads: &[RsLoad]) -> SchedState {
        let rule = match self.kind {
            SchedKind::Lc => Some(least::Rule::Lc),
            SchedKind::Wlc => Some(least::Rule::Wlc),
            SchedKind::Sed => Some(least::Rule::Sed),
            SchedKind::Nq => Some(least::Rule::Nq),
            SchedKind::Fo => Some(least::Rule::Fo),
            _ => None,
        };
        SchedState {
            rr_cursor: 0,
            wrr: rr::WrrCursor::default(),
            locality: matches!(self.kind, SchedKind::Lblc | SchedKind::Lblcr)
                .then(lblc::Locality::new),
            least: rule.map(|r| least::LeastTree::new(r, weights, loads)),
        }
    }

    /// Chooses a real server (an index into `weights`/`loads`) for a new
    /// connection, or `None` if none is available. `now` is in seconds.
    pub fn pick(
        &self,
        state: &mut SchedState,
        weights: &[u32],
        loads: &[RsLoad],
        flow: &FlowInfo,
        now: u64,
    ) -> Option<usize> {
        debug_assert_eq!(weights.len(), loads.len());
        if let Some(t) = state.least.as_ref().filter(|t| t.len() == weights.len()) {
            let pick = t.winner();
            debug_assert_eq!(
                pick,
                self.scan(weights, loads),
                "{} tree and scan",
                self.kind
            );
            return pick;
        }
        match (self.kind, &self.tables) {
            (SchedKind::Rr, _) => rr::rr(&mut state.rr_cursor, weights, loads),
            (SchedKind::Wrr, Tables::Wrr(p)) => rr::wrr(p, &mut state.wrr, weights, loads),
            (
                SchedKind::Lc | SchedKind::Wlc | SchedKind::Sed | SchedKind::Nq | SchedKind::Fo,
                _,
            ) => self.scan(weights, loads),
            (SchedKind::Dh, Tables::Buckets(t)) => hash::dh(t, weights, loads, ip(&flow.dst)),
            (SchedKind::Sh, Tables::Buckets(t)) => {
                let port = if self.flags.port { flow.src_port } else { 0 };
                hash::sh(t, weights, loads, ip(&flow.src), port, self.flags.fallback)
            }
            (SchedKind::Mh, Tables::Maglev(t)) => {
                let port = if self.flags.port { flow.src_port } else { 0 };
                mh::pick(t, weights, loads, ip(&flow.src), port, self.flags.fallback)
            }
            (SchedKind::Lblc | SchedKind::Lblcr, _) => {
                let loc = state.locality.get_or_insert_with(lblc::Locality::new);
                if self.kind == SchedKind::Lblc {
                    loc.lblc(weights, loads, ip(&flow.dst), now)
                } else {
                    loc.lblcr(weights, loads, ip(&flow.dst), now)
                }
            }
            _ => None,
        }
    }

    /// IPVS's walk over every server, for the schedulers that compare
    /// loads (None for the others); what the tree must agree with.
    fn scan(&self, weights: &[u32], loads: &[RsLoad]) -> Option<usize> {
        match self.kind {
            SchedKind::Lc => lc::lc(weights, loads),
            SchedKind::Wlc => lc::wlc(weights, loads),
            SchedKind::Sed => lc::sed(weights, loads),
            SchedKind::Nq => lc::nq(weights, loads),
            SchedKind::Fo => lc::fo(weights, loads),
            _ => None,
        }
    }

    /// Periodic housekeeping for per-worker state (lblc/lblcr expiry); call
    /// about once a minute.
    pub fn expire(&self, state: &mut SchedState, now: u64) {
        if let Some(loc) = &mut state.locality {
            loc.expire(now);
        }
    }

    /// The Maglev lookup table (for tests and diagnostics).
    pub fn maglev_table(&self) -> Option<&[u16]> {
        match &self.tables {
            Tables::Maglev(t) => Some(t),
            _ => None,
        }
    }
}

/// Whether a server may take a new connection: a positive weight and not
/// overloaded.
#[inline]
pub(crate) fn available(weights: &[u32], loads: &[RsLoad], i: usize) -> bool {
    weights[i] > 0 && !loads[i].overloaded
}

/// Folds an address to 32 bits as IPVS does (IPv6: XOR of the four words).
#[inline]
pub(crate) fn addr_fold(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            (0..4).fold(0, |acc, i| {
                acc ^ u32::from_be_bytes([o[i * 4], o[i * 4 + 1], o[i * 4 + 2], o[i * 4 + 3]])
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use crate::types::addr;

    pub fn loads(n: usize) -> Vec<RsLoad> {
        vec![RsLoad::default(); n]
    }

    pub fn flow(src: [u8; 4]) -> FlowInfo {
        FlowInfo {
            src: addr(IpAddr::from(src)),
            src_port: 40000,
            dst: addr(IpAddr::from([198, 18, 0, 10])),
        }
    }

    pub fn ids(n: usize) -> Vec<RsId> {
        (0..n)
            .map(|i| RsId {
                addr: IpAddr::from(std::net::Ipv4Addr::from(
                    0x0a01_0000 + u32::try_from(i).unwrap(),
                )),
                port: 80,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in SchedKind::ALL {
            assert_eq!(k.name().parse::<SchedKind>().unwrap(), k);
        }
        let e = "wlcc".parse::<SchedKind>().unwrap_err();
        assert!(
            e.contains("rr, wrr, lc, wlc, sed, nq, dh, sh, lblc, lblcr, mh, fo"),
            "{e}"
        );
    }

    #[test]
    fn flags() {
        let f = SchedFlags::parse(SchedKind::Sh, "sh-fallback,sh-port").unwrap();
        assert!(f.fallback && f.port);
        assert_eq!(f.to_list(SchedKind::Sh), "sh-fallback,sh-port");
        assert!(SchedFlags::parse(SchedKind::Mh, "sh-port").is_err());
        assert!(SchedFlags::parse(SchedKind::Wlc, "mh-port")
            .unwrap_err()
            .contains("takes no flags"));
        assert_eq!(
            SchedFlags::parse(SchedKind::Rr, "").unwrap(),
            SchedFlags::default()
        );
    }

    #[test]
    fn overload_hysteresis() {
        let mut l = RsLoad {
            active: 9,
            ..RsLoad::default()
        };
        l.update_overload(10, 0);
        assert!(!l.overloaded);
        l.inactive = 1;
        l.update_overload(10, 0);
        assert!(l.overloaded, "10 >= upper 10");
        l.inactive = 0;
        l.active = 8;
        l.update_overload(10, 0);
        assert!(l.overloaded, "8*4 = 32 is not below 10*3 = 30... still set");
        l.active = 7;
        l.update_overload(10, 0);
        assert!(!l.overloaded, "7*4 = 28 < 30 clears it");
        l.active = 10;
        l.update_overload(10, 5);
        l.active = 5;
        l.update_overload(10, 5);
        assert!(l.overloaded, "5 is not below the lower threshold 5");
        l.active = 4;
        l.update_overload(10, 5);
        assert!(!l.overloaded);
    }

    #[test]
    fn every_scheduler_skips_quiescent_and_overloaded_servers() {
        let ids = ids(3);
        let weights = [0, 1, 1];
        let mut loads = loads(3);
        loads[1].overloaded = true;
        for kind in SchedKind::ALL {
            let s = Scheduler::new(
                kind,
                SchedFlags {
                    fallback: true,
                    port: false,
                },
                &ids,
                &weights,
                251,
            )
            .unwrap();
            let mut st = s.new_state(&weights, &loads);
            for i in 0..50u8 {
                if let Some(p) = s.pick(&mut st, &weights, &loads, &flow([10, 0, 0, i]), 0) {
                    assert_eq!(p, 2, "{kind} picked {p}");
                } else {
                    // dh has no fallback: its bucket may point at a server
                    // that cannot take the connection.
                    assert_eq!(kind, SchedKind::Dh, "{kind} found none");
                }
            }
        }
    }

    #[test]
    fn no_servers_no_pick() {
        for kind in SchedKind::ALL {
            let s = Scheduler::new(kind, SchedFlags::default(), &[], &[], 251).unwrap();
            let mut st = s.new_state(&[], &[]);
            assert_eq!(
                s.pick(&mut st, &[], &[], &flow([10, 0, 0, 1]), 0),
                None,
                "{kind}"
            );
        }
    }
}
