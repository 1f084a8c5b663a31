//! The load balancer's run-to-completion worker: receive a burst on each
//! port, let the engine decide ([`lb_core::engine::Worker::process_burst_with`],
//! prefetching with [`CpuPrefetch`](crate::dpdk::CpuPrefetch)),
//! set the MACs from the neighbour table, batch the frames per output port,
//! transmit, and between bursts expire sessions and neighbours.
//!
//! Nothing here locks or logs per packet. The per-port transmit batches and
//! the action array are allocated once; frames waiting for ARP are bounded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lb_core::engine::{Action, Counter as EngineCounter, Counters, Worker as Engine};
use lb_core::packet::PacketBuf;
use lb_core::session;
use lb_core::stats::ServiceReport;

use crate::dpdk::{
    self, CpuPrefetch, Gso, HandOverRing, Mbuf, MbufBurst, Mempool, RingConsumer, RxQueue, TxQueue,
    MAX_BURST, MAX_SEGMENTS,
};
use crate::neigh::{Neighbors, Resolved};
use crate::publish::{ConnInfo, Mailbox, Published, Request, WorkerSnapshot};
use crate::stall::{during, StallWatch};
use crate::stats::{Counter, WorkerCounters};
use crate::vlan::{self, Vlans};

/// Where the exception path leads: frames for the kernel go out of `port`
/// (a TAP), and what the kernel sends there leaves by `uplink`.
#[derive(Debug, Clone, Copy)]
pub struct ExceptionPath {
    pub port: u16,
    pub uplink: u16,
}

/// One worker's queues, engine and tables.
#[derive(Debug)]
pub struct LbWorker {
    pub engine: Engine,
    /// With `[sync]`: its links with the control thread.
    pub sync: Option<crate::peers::WorkerLinks>,
    /// RX and TX queue of each port, by port index.
    pub rx: Vec<RxQueue>,
    pub tx: Vec<TxQueue>,
    pub neigh: Neighbors,
    pub exception: Option<ExceptionPath>,
    pub pool: &'static Mempool,
    pub burst: usize,
    pub counters: WorkerCounters,
    pub stop: Arc<AtomicBool>,
    /// The snapshot to follow, and this worker's requests.
    pub published: Arc<Published>,
    pub mailbox: Arc<Mailbox>,
    /// The other workers' mailboxes, to share what ARP taught this one.
    pub peers: Vec<Arc<Mailbox>>,
    /// Whether this worker sends the gratuitous ARPs (one worker does).
    pub announce: bool,
    /// Every worker's hand-over ring, by worker index (empty with one
    /// worker), and this worker's own end of its ring.
    pub handover: Vec<&'static HandOverRing>,
    pub inbox: Option<RingConsumer>,
    /// Cuts TCP super-frames from kernel senders to each port's MTU.
    pub gso: Gso,
    /// Each interface's MTU (the largest IP packet it sends), by the
    /// engine's port number (ports, then VLAN sub-interfaces).
    pub mtus: Vec<u16>,
    /// The VLAN sub-interfaces.
    pub vlans: Vlans,
}

/// What a worker hands back when it stops.
#[derive(Debug)]
pub struct WorkerResult {
    pub engine: Counters,
    pub services: Vec<ServiceReport>,
    pub sessions: u32,
    pub neighbors: usize,
    /// This worker's end of its hand-over ring, for the packets other
    /// workers handed it after it stopped reading (counted once all stop).
    pub inbox: Option<RingConsumer>,
}

impl LbWorker {
    /// Polls until the stop flag is set; returns the engine's counters and
    /// statistics.
    pub fn run(mut self) -> WorkerResult {
        let hz = dpdk::tsc_hz().max(1);
        let start = dpdk::rdtsc();
        let ports = self.rx.len();
        let mut rx = MbufBurst::with_limit(self.burst);
        let mut out: Vec<MbufBurst> = (0..ports).map(|_| MbufBurst::new()).collect();
        let mut actions = [Action::Exception; MAX_BURST];
        let mut released: Vec<(u16, Mbuf)> = Vec::with_capacity(crate::neigh::MAX_HELD);
        let mut sweep = Sweep::default();
        let mut last_pass = dpdk::rdtsc();
        let mut announced = Vec::new();
        let mailbox = Arc::clone(&self.mailbox);
        // Frames cut short by a port (super-frames larger than its ring's
        // frames) are told to the operator once per port.
        let mut truncated = self.engine.counters.get(EngineCounter::DropTruncated);
        let mut told_truncated = vec![false; ports];
        self.neigh.size_dests(self.engine.dest_slots());
        self.announce_new(&mut out, &mut announced);
        let mut stalls = StallWatch::new(hz, last_pass, dpdk::thread_cpu_ns());
        // What this pass does besides its bursts, for the next pass to
        // tell if this one stalls.
        let mut did = 0u8;
        while !self.stop.load(Ordering::Relaxed) {
            let tsc = dpdk::rdtsc();
            let gap_ns = u128::from(tsc - last_pass) * 1_000_000_000 / u128::from(hz);
            self.counters.set_max(
                Counter::MaxLoopGapNs,
                u64::try_from(gap_ns).unwrap_or(u64::MAX),
            );
            let clocks = || (dpdk::thread_cpu_ns(), dpdk::monotonic_ns());
            if let Some(s) = stalls.pass(last_pass, tsc, did, clocks) {
                self.counters.stall(s);
            }
            did = 0;
            last_pass = tsc;
            let now = u32::try_from((tsc - start) / hz).unwrap_or(u32::MAX);
            let mut busy = false;
            for p in 0..ports {
                let n = self.rx[p].rx_burst(&mut rx);
                if n == 0 {
                    continue;
                }
                busy = true;
                self.counters.add(Counter::RxPackets, n as u64);
                let port = u16::try_from(p).unwrap_or(u16::MAX);
                if self.exception.is_some_and(|e| e.port == port) {
                    // From the kernel: out of the port it stands for.
                    let uplink = self.exception.map_or(0, |e| usize::from(e.uplink));
                    for m in rx.drain() {
                        self.queue(&mut out, uplink, m);
                    }
                    continue;
                }
                let tagged = self.vlans.on_port(p);
                self.receive(
                    &mut rx,
                    p,
                    tagged,
                    now,
                    &mut actions,
                    &mut out,
                    &mut released,
                );
                let cut = self.engine.counters.get(EngineCounter::DropTruncated);
                if cut != truncated {
                    truncated = cut;
                    let told = told_truncated
                        .get_mut(p)
                        .map(|t| std::mem::replace(t, true));
                    if told == Some(false) {
                        tracing::warn!(
                            port = p,
                            "frames arrive shorter than their IP headers say (counted as \
                             drop_truncated): the sender hands over super-frames larger than \
                             this port's receive frames; on net_af_packet leave framesz, blocksz \
                             and framecnt unset (the dataplane then sizes the ring for 64 KB), \
                             use net_af_xdp, or turn TSO off on the sending side"
                        );
                    }
                }
            }
            // Packets other workers received for this one.
            let handed = match self.inbox.as_mut() {
                Some(inbox) => inbox.dequeue(&mut rx),
                None => 0,
            };
            if handed > 0 {
                busy = true;
                self.counters.add(Counter::HandOverIn, handed as u64);
                self.receive_handed(&mut rx, now, &mut actions, &mut out, &mut released);
            }
            for (port, m) in released.drain(..) {
                self.queue(&mut out, usize::from(port), m);
            }
            for (p, batch) in out.iter_mut().enumerate() {
                if batch.is_empty() {
                    continue;
                }
                let sent = self.tx[p].tx_burst(batch);
                self.counters.add(Counter::TxPackets, sent as u64);
                if !batch.is_empty() {
                    self.counters.add(Counter::DropTxFull, batch.len() as u64);
                    batch.clear();
                }
            }
            if busy {
                self.counters.add(Counter::BusyPolls, 1);
            } else {
                self.counters.add(Counter::IdlePolls, 1);
            }
            if sweep.due(now) {
                did |= during::EXPIRY;
                if sweep.new_second(now) {
                    did |= during::NEIGHBOURS;
                    self.neigh.expire(now);
                }
                let more = self.engine.expire_with(now, &CpuPrefetch).more;
                sweep.done(now, more);
            }
            if self.published.version() != self.engine.snapshot().version {
                did |= during::SNAPSHOT;
                self.engine.adopt(self.published.load());
                self.neigh.size_dests(self.engine.dest_slots());
                self.announce_new(&mut out, &mut announced);
            }
            if let Some(requests) = mailbox.take() {
                did |= during::REQUESTS;
                for r in requests {
                    handle(&mut self.engine, &mut self.neigh, &mut released, r, now);
                }
            }
            if let Some(links) = &self.sync {
                if links.resync.swap(false, Ordering::Relaxed) {
                    did |= during::SYNC;
                    self.engine.resync();
                }
                self.engine.resync_step();
                let mut lost = 0;
                for r in self.engine.take_sync() {
                    did |= during::SYNC;
                    if links.out.try_send(r).is_err() {
                        lost += 1;
                    }
                }
                if lost > 0 {
                    self.engine
                        .counters
                        .add(EngineCounter::SyncOutboxFull, lost);
                }
                for r in links.install.try_iter().take(256) {
                    did |= during::SYNC;
                    // Refusals are counted by the engine.
                    let _ = self.engine.install(&r, now);
                }
            }
        }
        WorkerResult {
            engine: self.engine.counters().clone(),
            services: self.engine.report(),
            sessions: self.engine.sessions.len(),
            neighbors: self.neigh.len(),
            inbox: self.inbox.take(),
        }
    }

    /// Queues a gratuitous ARP (or, for an IPv6 address, an unsolicited
    /// Neighbor Advertisement), on every port with addresses of its family,
    /// for each owned address not in `announced` (at start: all of them; after a
    /// change: new VIPs and local addresses), then remembers what is owned.
    /// Runs between bursts; it allocates.
    fn announce_new(&mut self, out: &mut [MbufBurst], announced: &mut Vec<std::net::IpAddr>) {
        if !self.announce {
            return;
        }
        let owned = self.engine.owned_ips();
        for ip in owned
            .iter()
            .filter(|ip| announced.binary_search(ip).is_err())
        {
            for p in 0..self.neigh.ports() {
                let port = u16::try_from(p).unwrap_or(u16::MAX);
                if let Some(m) = self.neigh.announce(port, *ip, self.pool) {
                    self.counters.add(Counter::GarpSent, 1);
                    self.queue(out, p, m);
                }
            }
        }
        *announced = owned;
    }

    /// A burst from port `p` through the engine and on. On a port with
    /// VLAN sub-interfaces (`tagged`), each frame of a configured VLAN
    /// loses its tag and belongs to that VLAN's interface, and the engine
    /// takes the frames in runs of one interface (frames still tagged stay
    /// on the port, where the engine drops them). One path for both, so
    /// the engine's burst loop has one call site and is inlined here.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn receive(
        &mut self,
        rx: &mut MbufBurst,
        p: usize,
        tagged: bool,
        now: u32,
        actions: &mut [Action; MAX_BURST],
        out: &mut [MbufBurst],
        released: &mut Vec<(u16, Mbuf)>,
    ) {
        let port = u16::try_from(p).unwrap_or(u16::MAX);
        let mut ifaces = [port; MAX_BURST];
        if tagged {
            self.strip_tags(rx, p, &mut ifaces);
        }
        self.process_runs(rx, &ifaces, now, actions, out, released);
    }

    /// Frames other workers handed over: through the engine as bursts,
    /// one for each run of frames from one port, with the receive path's
    /// prefetching: they were written on another core, so every one of
    /// them starts as a cache miss, which the burst overlaps.
    fn receive_handed(
        &mut self,
        rx: &mut MbufBurst,
        now: u32,
        actions: &mut [Action; MAX_BURST],
        out: &mut [MbufBurst],
        released: &mut Vec<(u16, Mbuf)>,
    ) {
        let mut ports = [0u16; MAX_BURST];
        for (m, port) in rx.as_mut_slice().iter().zip(ports.iter_mut()) {
            *port = m.port();
        }
        self.process_runs(rx, &ports, now, actions, out, released);
    }

    /// Runs `rx` through the engine as bursts, one for each run of frames
    /// on one interface (`ifaces[i]` is frame i's), with prefetching, then
    /// sends each frame where its action says.
    #[inline]
    fn process_runs(
        &mut self,
        rx: &mut MbufBurst,
        ifaces: &[u16; MAX_BURST],
        now: u32,
        actions: &mut [Action; MAX_BURST],
        out: &mut [MbufBurst],
        released: &mut Vec<(u16, Mbuf)>,
    ) {
        let n = rx.len();
        let mut start = 0;
        while start < n {
            let iface = ifaces[start];
            let len = ifaces[start..n].iter().take_while(|&&i| i == iface).count();
            self.engine.process_burst_with(
                &mut rx.as_mut_slice()[start..start + len],
                iface,
                now,
                &mut actions[start..start + len],
                &CpuPrefetch,
            );
            start += len;
        }
        for ((m, action), &iface) in rx.drain().zip(actions.iter()).zip(ifaces) {
            self.dispatch(out, iface, m, *action, now, released);
        }
    }

    /// Takes the tag off each frame of a configured VLAN on port `p` and
    /// records the VLAN's interface for it in `ifaces`.
    #[cold]
    fn strip_tags(&mut self, rx: &mut MbufBurst, p: usize, ifaces: &mut [u16; MAX_BURST]) {
        for (m, iface) in rx.as_mut_slice().iter_mut().zip(ifaces.iter_mut()) {
            let Some(id) = vlan::tag_of(m) else {
                continue;
            };
            if let Some(i) = self.vlans.interface(p, id) {
                if vlan::strip(m) {
                    *iface = i;
                    self.counters.add_interface(usize::from(i), 1, 0);
                }
            }
        }
    }

    /// Queues a frame for interface `iface` (a port, or a VLAN on one,
    /// whose tag it then gets), cut into segments if it is larger than the
    /// interface's MTU.
    #[inline]
    fn queue(&mut self, out: &mut [MbufBurst], iface: usize, m: Mbuf) {
        if iface >= self.vlans.ports() {
            return self.queue_tagged(out, iface, m);
        }
        let mtu = self.mtus.get(iface).copied().unwrap_or(u16::MAX);
        if m.pkt_len() > u32::from(mtu) + ETHERNET_HEADER {
            return self.segment(out, iface, mtu, m);
        }
        self.queue_frame(out, iface, m);
    }

    /// [`queue`](Self::queue) for a VLAN sub-interface: the tag goes on
    /// first.
    #[cold]
    fn queue_tagged(&mut self, out: &mut [MbufBurst], iface: usize, mut m: Mbuf) {
        let mtu = self.mtus.get(iface).copied().unwrap_or(u16::MAX);
        let (port, tag) = self.vlans.port_of(iface);
        let mut l2 = ETHERNET_HEADER;
        if let Some(id) = tag {
            if !vlan::insert(&mut m, id) {
                self.counters.add(Counter::DropVlanHeadroom, 1);
                return;
            }
            self.counters.add_interface(iface, 0, 1);
            l2 += VLAN_TAG;
        }
        if m.pkt_len() > u32::from(mtu) + l2 {
            self.segment(out, port, mtu, m);
            return;
        }
        self.queue_frame(out, port, m);
    }

    /// A frame larger than the port's MTU: a TCP/IPv4 super-frame from a
    /// kernel sender (bare, or wrapped by TUN mode) leaves in MTU-sized
    /// segments, anything else is dropped (no receiver would take it).
    #[cold]
    fn segment(&mut self, out: &mut [MbufBurst], port: usize, mtu: u16, mut m: Mbuf) {
        use lb_core::offload::{fill_checksums, oversize, rewrap, unwrap_outer, Oversize};
        const OUTER: u16 = 20;
        let kind = if m.is_contiguous() {
            oversize(PacketBuf::data(&m), mtu)
        } else {
            Oversize::Other
        };
        let (headers, seg_len, outer) = match kind {
            Oversize::Fits => return self.queue_frame(out, port, m),
            Oversize::Other => {
                self.counters.add(Counter::DropOversize, 1);
                return;
            }
            Oversize::TcpV4 { l2, l3, l4 } => ((l2, l3, l4), l2 + mtu, None),
            Oversize::TcpV6(cut) => return self.segment_v6(out, port, &m, cut),
            Oversize::IpipTcpV4 { l2, l3, l4 } => {
                // Cut the inner segment so that each, wrapped again, fits.
                let outer = unwrap_outer(PacketBuf::data_mut(&mut m), usize::from(l2));
                m.adj(OUTER);
                ((l2, l3, l4), l2 + mtu - OUTER, Some(outer))
            }
        };
        let mut segs = arrayvec::ArrayVec::<Mbuf, MAX_SEGMENTS>::new();
        let cut = self.gso.segment(m, headers, seg_len, &mut segs);
        if cut.is_err() {
            self.counters.add(Counter::DropGso, 1);
        }
        if segs.is_empty() {
            return;
        }
        self.counters.add(Counter::GsoFrames, 1);
        self.counters.add(Counter::GsoSegments, segs.len() as u64);
        for (k, mut seg) in (0u16..).zip(segs) {
            fill_checksums(PacketBuf::data_mut(&mut seg));
            if let Some(outer) = &outer {
                if seg.prepend(OUTER).is_none() {
                    self.counters.add(Counter::DropGso, 1);
                    continue;
                }
                rewrap(
                    PacketBuf::data_mut(&mut seg),
                    usize::from(headers.0),
                    outer,
                    k,
                );
            }
            self.queue_frame(out, port, seg);
        }
    }

    /// A TCP/IPv6 super-frame, cut by lb-core (librte_gso in DPDK 22.11
    /// has no IPv6): each segment is written into a fresh mbuf.
    #[cold]
    fn segment_v6(
        &mut self,
        out: &mut [MbufBurst],
        port: usize,
        m: &Mbuf,
        cut: lb_core::offload::TcpV6Cut,
    ) {
        let frame = PacketBuf::data(m);
        let mut sent = 0u64;
        for k in 0..cut.count() {
            let len = u16::try_from(cut.seg_len(k)).unwrap_or(u16::MAX);
            let Some(mut seg) = self.pool.alloc() else {
                self.counters.add(Counter::DropGso, 1);
                continue;
            };
            let Some(room) = seg.append(len) else {
                self.counters.add(Counter::DropGso, 1);
                continue;
            };
            cut.write(frame, k, room);
            self.queue_frame(out, port, seg);
            sent += 1;
        }
        if sent > 0 {
            self.counters.add(Counter::GsoFrames, 1);
            self.counters.add(Counter::GsoSegments, sent);
        }
    }

    #[inline]
    fn queue_frame(&mut self, out: &mut [MbufBurst], port: usize, m: Mbuf) {
        let Some(batch) = out.get_mut(port) else {
            self.counters.add(Counter::DropNoPort, 1);
            return;
        };
        if batch.is_full() {
            let sent = self.tx[port].tx_burst(batch);
            self.counters.add(Counter::TxPackets, sent as u64);
            if batch.is_full() {
                self.counters.add(Counter::DropTxFull, 1);
                return;
            }
        }
        let _ = batch.push(m);
    }

    fn dispatch(
        &mut self,
        out: &mut [MbufBurst],
        in_port: u16,
        m: Mbuf,
        action: Action,
        now: u32,
        released: &mut Vec<(u16, Mbuf)>,
    ) {
        match action {
            Action::Transmit {
                port,
                next_hop,
                dest,
            } => match self.neigh.resolve(m, port, next_hop, dest, now, self.pool) {
                Resolved::Send(m) => self.queue(out, usize::from(port), m),
                Resolved::Held { request } => {
                    if let Some(r) = request {
                        self.queue(out, usize::from(port), r);
                    }
                }
                Resolved::Dropped => self.counters.add(Counter::DropNeighbor, 1),
            },
            Action::Reply { port } => self.queue(out, usize::from(port), m),
            Action::Neighbor { learn, reply } => {
                if let Some((ip, mac)) = learn {
                    self.neigh.learn(ip, mac, in_port, now, released);
                    for peer in &self.peers {
                        // A full mailbox loses only this refresh; the peer
                        // asks itself if it needs the entry.
                        let _ = peer.post(Request::Learn {
                            ip,
                            mac,
                            port: in_port,
                        });
                    }
                }
                if reply {
                    self.queue(out, usize::from(in_port), m);
                } else if let Some(e) = self.exception {
                    // The kernel learns its neighbours too.
                    self.queue(out, usize::from(e.port), m);
                }
            }
            Action::Exception => match self.exception {
                Some(e) => self.queue(out, usize::from(e.port), m),
                None => self.counters.add(Counter::DropNoException, 1),
            },
            Action::HandOver { worker } => match self.handover.get(usize::from(worker)) {
                Some(ring) => {
                    if ring.enqueue(m).is_err() {
                        self.counters.add(Counter::DropHandOver, 1);
                    }
                }
                None => self.counters.add(Counter::DropHandOver, 1),
            },
            Action::Drop(_) => {}
        }
    }
}

/// Answers a control request (or learns what another worker's ARP taught it)
/// between bursts.
fn handle(
    engine: &mut lb_core::engine::Worker,
    neigh: &mut Neighbors,
    released: &mut Vec<(u16, Mbuf)>,
    r: Request,
    now: u32,
) {
    match r {
        Request::Report(reply) => {
            let _ = reply.send(WorkerSnapshot {
                counters: engine.counters().clone(),
                services: engine.report(),
                sessions: engine.sessions.len(),
                capacity: engine.sessions.capacity(),
                laddrs: engine
                    .laddr_use()
                    .into_iter()
                    .map(|(k, a, n, ports)| (k.to_string(), a.to_string(), n, ports))
                    .collect(),
                version: engine.snapshot().version,
            });
        }
        Request::Zero => engine.zero_stats(),
        Request::Learn { ip, mac, port } => {
            neigh.learn(ip, mac, port, now, released);
        }
        Request::SetNeighbor { ip, to } => match to {
            Some((mac, port)) => neigh.add_static(session::addr(ip), mac, port),
            None => {
                neigh.remove(session::addr(ip));
            }
        },
        Request::Neighbors(reply) => {
            let _ = reply.send(neigh.entries(now));
        }
        Request::Connections {
            offset,
            limit,
            reply,
        } => {
            let show = |a: &session::Addr, port: u16| match session::ip(a) {
                std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
                std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            };
            let list = engine
                .sessions
                .iter()
                .filter(|(_, s)| !s.is_template())
                .skip(offset)
                .take(limit)
                .map(|(_, s)| ConnInfo {
                    protocol: if s.proto == 17 {
                        "UDP".into()
                    } else {
                        "TCP".into()
                    },
                    client: show(&s.client, s.cport),
                    virtual_: show(&s.vip, s.vport),
                    real: show(&s.rs, s.rport),
                    local: (s.mode == lb_core::service::ForwardMode::Fnat)
                        .then(|| show(&s.laddr, s.lport)),
                    state: s.state.name().into(),
                    expires_in: s.expires.saturating_sub(now),
                })
                .collect();
            let _ = reply.send(list);
        }
    }
}

/// When a worker sweeps its sessions for expiry: once a second, and then
/// on every pass of its loop for as long as the last sweep ran out of
/// budget. Each sweep examines at most the engine's budget of sessions, so
/// the pause between bursts stays short; sweeping again at once lets a
/// second in which many sessions end be cleared in budget-sized steps
/// between bursts rather than one budget a second, which would let the
/// table fill while expired sessions wait.
#[derive(Debug, Default)]
struct Sweep {
    /// The second of the last sweep.
    last: u32,
    /// Whether it ran out of budget.
    more: bool,
}

impl Sweep {
    fn due(&self, now: u32) -> bool {
        self.more || self.new_second(now)
    }

    fn new_second(&self, now: u32) -> bool {
        now != self.last
    }

    fn done(&mut self, now: u32, more: bool) {
        self.last = now;
        self.more = more;
    }
}

/// The Ethernet header that a frame carries beyond its MTU-sized packet.
const ETHERNET_HEADER: u32 = 14;
/// An 802.1Q tag's length.
const VLAN_TAG: u32 = 4;

/// An mbuf's frame length, for byte counters.
pub fn frame_len(m: &Mbuf) -> usize {
    PacketBuf::data(m).len()
}

#[cfg(test)]
mod tests {
    use super::Sweep;

    #[test]
    fn a_sweep_out_of_budget_goes_on_at_the_next_pass() {
        let mut s = Sweep::default();
        assert!(!s.due(0));
        assert!(s.due(1) && s.new_second(1));
        s.done(1, true);
        // Same second, budget ran out: sweep again, the neighbours wait.
        assert!(s.due(1) && !s.new_second(1));
        s.done(1, false);
        assert!(!s.due(1));
        assert!(s.due(2));
    }
}
