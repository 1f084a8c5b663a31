//! How the control thread reaches the workers without locks on their path.
//!
//! - [`Published`]: the current snapshot behind an atomic pointer
//!   (arc-swap), with a version number. A worker compares one integer per
//!   loop and, when it changed, takes the new snapshot between bursts; the
//!   old one is freed when the last worker has let go of it.
//! - [`Mailbox`]: requests for one worker (reports, zeroing, connection
//!   listings) on a bounded channel, announced by a flag, so an idle
//!   mailbox costs the worker one relaxed load per loop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use lb_core::engine::Counters;
use lb_core::service::Snapshot;
use lb_core::stats::ServiceReport;

/// The snapshot every worker follows.
#[derive(Debug)]
pub struct Published {
    snapshot: ArcSwap<Snapshot>,
    version: AtomicU64,
}

impl Published {
    pub fn new(snapshot: Arc<Snapshot>) -> Published {
        let v = snapshot.version;
        Published {
            snapshot: ArcSwap::new(snapshot),
            version: AtomicU64::new(v),
        }
    }

    /// Makes `snapshot` the one to follow.
    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        let v = snapshot.version;
        self.snapshot.store(snapshot);
        self.version.store(v, Ordering::Release);
    }

    /// The version of the current snapshot.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }
}

/// One live session, for listings (`ipvsadm -L -c`).
pub use lb_admin_proto::Connection as ConnInfo;

/// What a worker answers to a report request.
#[derive(Debug, Clone)]
pub struct WorkerSnapshot {
    pub counters: Counters,
    pub services: Vec<ServiceReport>,
    pub sessions: u32,
    pub capacity: u32,
    /// Full-NAT local-address use: (service, address, connections, ports).
    pub laddrs: Vec<(String, String, u32, u32)>,
    pub version: u64,
}

/// A request to one worker.
#[derive(Debug)]
pub enum Request {
    Report(Sender<WorkerSnapshot>),
    /// Zero the statistics (ipvsadm -Z).
    Zero,
    /// Another worker learned a neighbour from ARP or Neighbor Discovery
    /// (which RSS gives to one queue only): learn it too.
    Learn {
        ip: lb_core::session::Addr,
        mac: lb_core::wire::MacAddr,
        port: u16,
    },
    /// A static neighbour (`Some`), or forget one (`None`).
    SetNeighbor {
        ip: std::net::IpAddr,
        to: Option<(lb_core::wire::MacAddr, u16)>,
    },
    /// The neighbour table: (address, MAC, port, seconds left; 0 static).
    Neighbors(Sender<Vec<(std::net::IpAddr, lb_core::wire::MacAddr, u16, u32)>>),
    /// `limit` sessions from the `offset`-th on.
    Connections {
        offset: usize,
        limit: usize,
        reply: Sender<Vec<ConnInfo>>,
    },
}

/// Requests for one worker.
#[derive(Debug)]
pub struct Mailbox {
    pending: AtomicBool,
    tx: Sender<Request>,
    rx: Receiver<Request>,
}

impl Default for Mailbox {
    fn default() -> Mailbox {
        let (tx, rx) = bounded(64);
        Mailbox {
            pending: AtomicBool::new(false),
            tx,
            rx,
        }
    }
}

impl Mailbox {
    /// Posts a request; `false` if the worker has too many waiting.
    pub fn post(&self, r: Request) -> bool {
        match self.tx.try_send(r) {
            Ok(()) => {
                self.pending.store(true, Ordering::Release);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// The worker's side: the requests waiting, if the flag says there are.
    #[inline]
    pub fn take(&self) -> Option<impl Iterator<Item = Request> + '_> {
        if !self.pending.load(Ordering::Relaxed) {
            return None;
        }
        self.pending.store(false, Ordering::Relaxed);
        Some(self.rx.try_iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::service::Timeouts;

    #[test]
    fn workers_see_new_versions() {
        let p = Published::new(Arc::new(Snapshot::empty()));
        assert_eq!(p.version(), 0);
        let s = Snapshot::build(7, vec![], Timeouts::default()).unwrap();
        p.publish(Arc::new(s));
        assert_eq!(p.version(), 7);
        assert_eq!(p.load().version, 7);
    }

    #[test]
    fn mailbox_flags_and_drains() {
        let m = Mailbox::default();
        assert!(m.take().is_none());
        assert!(m.post(Request::Zero));
        assert!(m.post(Request::Zero));
        assert_eq!(m.take().map(|it| it.count()), Some(2));
        assert!(m.take().is_none());
        for _ in 0..64 {
            assert!(m.post(Request::Zero));
        }
        assert!(!m.post(Request::Zero), "bounded");
    }
}
