//! A worker's view of services and real servers across snapshots.
//!
//! Sessions outlive configurations: a connection to a real server that a
//! new snapshot removed (or gave weight 0) must finish normally. So each
//! worker keeps its own slabs of service and real-server entries with
//! stable handles, which sessions reference; a new snapshot re-points the
//! entries at their new positions, and an entry no snapshot has any more
//! stays until its last session is gone. Per-entry load counts (for the
//! schedulers) and statistics live here, per worker, without atomics.

use std::collections::HashMap;

use crate::laddr::LaddrPool;
use crate::sched::{RsLoad, SchedState};
use crate::service::ServiceKey;
use crate::types::{Addr, ForwardMode, Stats, NIL};

/// A real server of a service, as one worker knows it.
#[derive(Debug, Clone)]
pub struct DestEntry {
    pub service: ServiceKey,
    pub addr: Addr,
    pub port: u16,
    /// How new connections reach it (the current snapshot's setting).
    pub mode: ForwardMode,
    /// The service entry it belongs to.
    pub svc: u32,
    /// Its index among the service's real servers in the current snapshot,
    /// or NIL if the snapshot no longer has it.
    pub idx: u32,
    pub load: RsLoad,
    pub upper: u32,
    pub lower: u32,
    pub stats: Stats,
    /// Sessions referencing it.
    pub refs: u32,
    /// Persistence templates pointing at it (ipvsadm's PersistConn).
    pub templates: u32,
    /// The port and next hop towards it, looked up once per snapshot.
    pub route: Option<(u16, Addr)>,
    /// For IPIP: the route's port's IPv4 address (the outer source) and
    /// its MTU, looked up with the route.
    pub tunnel: Option<(std::net::Ipv4Addr, u16)>,
}

/// A service, as one worker knows it.
#[derive(Debug)]
pub struct SvcEntry {
    pub key: ServiceKey,
    /// Its index in the current snapshot, or NIL.
    pub snap_idx: u32,
    pub sched: SchedState,
    pub pool: Option<LaddrPool>,
    /// Loads of the current real servers, in snapshot order (the
    /// scheduler's input; a mirror of the dest entries).
    pub loads: Vec<RsLoad>,
    /// Dest handles of the current real servers, in snapshot order.
    pub dests: Vec<u32>,
    pub stats: Stats,
    pub refs: u32,
    pub live: bool,
}

/// The slabs.
#[derive(Debug, Default)]
pub struct Dests {
    pub dests: Vec<DestEntry>,
    pub svcs: Vec<SvcEntry>,
    pub dest_index: HashMap<(ServiceKey, Addr, u16), u32, ahash::RandomState>,
    pub svc_index: HashMap<ServiceKey, u32, ahash::RandomState>,
    free_dests: Vec<u32>,
    free_svcs: Vec<u32>,
}

impl Dests {
    /// Applies `f` to a dest's load and mirrors it to its service.
    #[inline]
    pub fn update_load(&mut self, dest: u32, f: impl FnOnce(&mut RsLoad)) {
        let d = &mut self.dests[dest as usize];
        f(&mut d.load);
        d.load.update_overload(d.upper, d.lower);
        if d.idx != NIL {
            let (svc, idx, load) = (d.svc, d.idx as usize, d.load);
            let s = &mut self.svcs[svc as usize];
            s.loads[idx] = load;
            s.sched.load_changed(idx, &s.loads);
        }
    }

    /// The handle of a service entry, made if new.
    pub fn svc_handle(&mut self, key: ServiceKey, make: impl FnOnce() -> SvcEntry) -> u32 {
        if let Some(&h) = self.svc_index.get(&key) {
            return h;
        }
        let e = make();
        let h = if let Some(h) = self.free_svcs.pop() {
            self.svcs[h as usize] = e;
            h
        } else {
            self.svcs.push(e);
            u32::try_from(self.svcs.len() - 1).unwrap_or(NIL)
        };
        self.svc_index.insert(key, h);
        h
    }

    /// The handle of a dest entry, made if new.
    pub fn dest_handle(&mut self, key: (ServiceKey, Addr, u16), svc: u32) -> u32 {
        if let Some(&h) = self.dest_index.get(&key) {
            return h;
        }
        let e = DestEntry {
            service: key.0,
            addr: key.1,
            port: key.2,
            mode: ForwardMode::Dr,
            svc,
            idx: NIL,
            load: RsLoad::default(),
            upper: 0,
            lower: 0,
            stats: Stats::default(),
            refs: 0,
            templates: 0,
            route: None,
            tunnel: None,
        };
        let h = if let Some(h) = self.free_dests.pop() {
            self.dests[h as usize] = e;
            h
        } else {
            self.dests.push(e);
            u32::try_from(self.dests.len() - 1).unwrap_or(NIL)
        };
        self.dest_index.insert(key, h);
        h
    }

    /// Frees entries that no snapshot has and no session references.
    pub fn collect(&mut self) {
        for (h, d) in (0u32..).zip(&self.dests) {
            let key = (d.service, d.addr, d.port);
            if d.idx == NIL && d.refs == 0 && self.dest_index.get(&key) == Some(&h) {
                self.dest_index.remove(&key);
                self.free_dests.push(h);
            }
        }
        for (h, s) in (0u32..).zip(&self.svcs) {
            if !s.live && s.refs == 0 && self.svc_index.get(&s.key) == Some(&h) {
                self.svc_index.remove(&s.key);
                self.free_svcs.push(h);
            }
        }
    }
}
