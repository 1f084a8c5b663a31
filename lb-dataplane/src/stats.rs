//! Per-worker counters: one cache-padded array per worker, indexed by
//! [`Counter`], written only by its worker and summed by readers.
//!
//! The single writer makes a relaxed load-then-store enough: no locked
//! read-modify-write on the fast path, and readers see each counter move
//! monotonically.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use lb_admin_proto::Stall;

use crate::stall::{Record, StallLog};

/// What a worker counts. Every drop has its own reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// Packets received.
    RxPackets,
    /// Packets the driver took for transmission.
    TxPackets,
    /// Dropped: the TX queue was full.
    DropTxFull,
    /// Receive polls that returned packets.
    BusyPolls,
    /// Receive polls that returned none.
    IdlePolls,
    /// Dropped: the next hop's MAC is unknown and cannot be asked for or
    /// waited on.
    DropNeighbor,
    /// Dropped: for the kernel, but no exception path is configured.
    DropNoException,
    /// Dropped: belongs to another worker, whose hand-over ring is full (or
    /// does not exist).
    DropHandOver,
    /// Dropped: to a port this worker has no queue on.
    DropNoPort,
    /// The longest time between two passes of the loop, in nanoseconds
    /// (a gauge: a blocked worker shows here).
    MaxLoopGapNs,
    /// Gratuitous ARPs and unsolicited Neighbor Advertisements sent (at
    /// start, and for addresses a change added).
    GarpSent,
    /// Packets other workers handed to this one (its Full-NAT replies).
    HandOverIn,
    /// TCP super-frames (larger than the output port's MTU, from kernel
    /// senders with TSO) cut into segments.
    GsoFrames,
    /// The segments they became.
    GsoSegments,
    /// Dropped: larger than the output port's MTU and not TCP over IPv4,
    /// which is all the segmentation library cuts.
    DropOversize,
    /// Dropped: segmentation failed (no mbufs).
    DropGso,
    /// Dropped: no headroom left for a VLAN tag.
    DropVlanHeadroom,
    /// Stalls of the loop ([`crate::stall`]) in which the thread ran: its
    /// own work.
    StallsOwn,
    /// Stalls in which it was away: preempted, or its virtual CPU taken.
    StallsOutside,
    /// The longest of each (a gauge, ns).
    MaxOwnStallNs,
    MaxOutsideStallNs,
}

impl Counter {
    pub const ALL: [Counter; 21] = [
        Counter::RxPackets,
        Counter::TxPackets,
        Counter::DropTxFull,
        Counter::BusyPolls,
        Counter::IdlePolls,
        Counter::DropNeighbor,
        Counter::DropNoException,
        Counter::DropHandOver,
        Counter::DropNoPort,
        Counter::MaxLoopGapNs,
        Counter::GarpSent,
        Counter::HandOverIn,
        Counter::GsoFrames,
        Counter::GsoSegments,
        Counter::DropOversize,
        Counter::DropGso,
        Counter::DropVlanHeadroom,
        Counter::StallsOwn,
        Counter::StallsOutside,
        Counter::MaxOwnStallNs,
        Counter::MaxOutsideStallNs,
    ];

    /// The counter's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Counter::RxPackets => "rx_packets",
            Counter::TxPackets => "tx_packets",
            Counter::DropTxFull => "drop_tx_full",
            Counter::BusyPolls => "busy_polls",
            Counter::IdlePolls => "idle_polls",
            Counter::DropNeighbor => "drop_neighbor",
            Counter::DropNoException => "drop_no_exception",
            Counter::DropHandOver => "drop_hand_over",
            Counter::DropNoPort => "drop_no_port",
            Counter::MaxLoopGapNs => "max_loop_gap_ns",
            Counter::GarpSent => "garp_sent",
            Counter::HandOverIn => "hand_over_in",
            Counter::GsoFrames => "gso_frames",
            Counter::GsoSegments => "gso_segments",
            Counter::DropOversize => "drop_oversize",
            Counter::DropGso => "drop_gso",
            Counter::DropVlanHeadroom => "drop_vlan_headroom",
            Counter::StallsOwn => "stalls_own",
            Counter::StallsOutside => "stalls_outside",
            Counter::MaxOwnStallNs => "max_own_stall_ns",
            Counter::MaxOutsideStallNs => "max_outside_stall_ns",
        }
    }
}

const COUNTERS: usize = Counter::ALL.len();

/// The readable side of one worker's counters.
#[derive(Debug)]
pub struct WorkerStats {
    lcore: u32,
    values: CachePadded<[AtomicU64; COUNTERS]>,
    /// Frames received and sent per interface, by the engine's port
    /// number; counted for VLAN sub-interfaces (a port's own traffic is in
    /// its DPDK statistics).
    interfaces: Box<[[AtomicU64; 2]]>,
    /// The worker's last stalls.
    stalls: StallLog,
}

/// The writable side: exactly one per worker, owned by it.
#[derive(Debug)]
pub struct WorkerCounters {
    stats: Arc<WorkerStats>,
}

impl WorkerStats {
    /// A zeroed set for the worker on `lcore`, split into its writer and a
    /// reader handle.
    pub fn new(lcore: u32) -> (WorkerCounters, Arc<WorkerStats>) {
        WorkerStats::with_interfaces(lcore, 0)
    }

    /// [`new`](Self::new), with receive and transmit counts for
    /// `interfaces` interfaces.
    pub fn with_interfaces(lcore: u32, interfaces: usize) -> (WorkerCounters, Arc<WorkerStats>) {
        let stats = Arc::new(WorkerStats {
            lcore,
            values: CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))),
            interfaces: (0..interfaces)
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
            stalls: StallLog::default(),
        });
        (
            WorkerCounters {
                stats: Arc::clone(&stats),
            },
            stats,
        )
    }

    /// The worker's lcore.
    pub fn lcore(&self) -> u32 {
        self.lcore
    }

    /// One counter's current value.
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize].load(Ordering::Relaxed)
    }

    /// Frames received and sent on each interface.
    pub fn interfaces(&self) -> Vec<(u64, u64)> {
        self.interfaces
            .iter()
            .map(|[rx, tx]| (rx.load(Ordering::Relaxed), tx.load(Ordering::Relaxed)))
            .collect()
    }

    /// The worker's last stalls, oldest first, and how many it had in all.
    pub fn stalls(&self) -> (Vec<Stall>, u64) {
        let kept = self.stalls.read().iter().map(Record::report).collect();
        (kept, self.stalls.total())
    }

    /// Every counter by name.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        Counter::ALL
            .iter()
            .map(|&c| (c.name(), self.get(c)))
            .collect()
    }
}

impl WorkerCounters {
    /// Raises a gauge to `v` if `v` is larger.
    #[inline]
    pub fn set_max(&mut self, c: Counter, v: u64) {
        let g = &self.stats.values[c as usize];
        if v > g.load(Ordering::Relaxed) {
            g.store(v, Ordering::Relaxed);
        }
    }

    /// Counts a stall of the loop by its cause and logs it.
    #[cold]
    pub fn stall(&mut self, s: Record) {
        let (count, max) = if s.outside() {
            (Counter::StallsOutside, Counter::MaxOutsideStallNs)
        } else {
            (Counter::StallsOwn, Counter::MaxOwnStallNs)
        };
        self.add(count, 1);
        self.set_max(max, s.gap_ns);
        self.stats.stalls.push(s);
    }

    /// Adds received and sent frames to interface `iface`.
    #[inline]
    pub fn add_interface(&mut self, iface: usize, rx: u64, tx: u64) {
        if let Some([r, t]) = self.stats.interfaces.get(iface) {
            r.store(
                r.load(Ordering::Relaxed).wrapping_add(rx),
                Ordering::Relaxed,
            );
            t.store(
                t.load(Ordering::Relaxed).wrapping_add(tx),
                Ordering::Relaxed,
            );
        }
    }

    /// Adds `n` to a counter.
    #[inline]
    pub fn add(&mut self, c: Counter, n: u64) {
        let v = &self.stats.values[c as usize];
        // The only writer is &mut self: no other store can come in between.
        v.store(v.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_adds_reader_sees() {
        let (mut w, r) = WorkerStats::new(3);
        w.add(Counter::RxPackets, 5);
        w.add(Counter::RxPackets, 2);
        w.add(Counter::DropTxFull, 1);
        assert_eq!(r.get(Counter::RxPackets), 7);
        assert_eq!(r.lcore(), 3);
        let s = r.snapshot();
        assert_eq!(s["drop_tx_full"], 1);
        assert_eq!(s["tx_packets"], 0);
        assert_eq!(s.len(), Counter::ALL.len());
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
    }
}
