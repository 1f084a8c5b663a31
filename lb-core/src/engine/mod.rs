//! The per-packet entry point: a [`Worker`] owns one shard of the sessions
//! and, for each frame, decides an [`Action`] and rewrites the frame to
//! match.
//!
//! The path of a frame, in order:
//! 1. one parse ([`crate::packet::parse`]); malformed frames are counted
//!    drops, never panics;
//! 2. ARP for an owned address is answered in place, and every ARP sender
//!    is reported for the neighbour table;
//! 3. a frame of a known session (looked up by its inbound tuple, then by
//!    its reply tuple) is rewritten by its session's mode (`forward`);
//! 4. a frame to a service's VIP:port without a session gets one: the
//!    scheduler (or a persistence template) picks a real server, Full-NAT
//!    takes a local address and port from this worker's share (`connect`,
//!    whose steps read in that order);
//! 5. a reply to a local Full-NAT port owned by another worker is handed
//!    over to it;
//! 6. ICMP echo to an owned address is answered; ICMP errors quoting a
//!    balanced connection are translated and sent to the other side
//!    (`icmp_error`);
//! 7. anything else for an owned address goes to the exception path
//!    (the kernel); anything not for us is dropped.
//!
//! Nothing here allocates per packet, takes a lock or logs: drops are
//! [`Counter`]s.

mod connect;
mod counters;
mod dests;
mod forward;
mod icmp_error;
mod peer;

pub use crate::types::{NoPrefetch, Prefetch, Stats};
pub use counters::{Counter, Counters};
pub use dests::{DestEntry, Dests, SvcEntry};

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use arrayvec::ArrayVec;

use crate::laddr::{owner_of, LaddrPool, PortUse, DEFAULT_PORT_RANGE};
use crate::offload::{self, RxChecksum};
use crate::packet::{parse, PacketBuf, ParseError, Parsed, L3};
use crate::sched::SchedState;
use crate::service::Snapshot;
use crate::session::{self, Hashed, SessionId, SessionTable, Side};
use crate::types::{Addr, NIL};
use crate::types::{ForwardMode, Protocol};
use crate::wire::{arp, ethernet, icmp, ip_proto, ipv4, ipv6, ndisc, MacAddr, WireError};

/// The sync records a worker keeps between two of the dataplane's takes;
/// beyond it they are counted lost (`sync_outbox_full`).
pub const SYNC_OUTBOX: usize = 4096;

/// The most frames [`Worker::process_burst`] handles in one go.
pub const BURST: usize = 64;

/// What to do with a frame after [`Worker::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send out of `port` to `next_hop`'s MAC (the dataplane's neighbour
    /// table sets the Ethernet addresses). `dest` is the worker's handle of
    /// the real server the packet goes to (below [`Worker::dest_slots`]),
    /// or [`NO_DEST`]: the dataplane keeps the next hop's MAC by it.
    Transmit {
        port: u16,
        next_hop: Addr,
        dest: u32,
    },
    /// Answered in place (Ethernet addresses set): send back out of `port`.
    Reply { port: u16 },
    /// ARP or IPv6 Neighbor Discovery seen: learn the neighbour in
    /// `learn` (address -> MAC), if any; if `reply`, the frame is now the
    /// answer, to send back out of the port it came in on, and otherwise
    /// it is for the kernel too (which learns its neighbours as well).
    Neighbor {
        learn: Option<(Addr, MacAddr)>,
        reply: bool,
    },
    /// Belongs to another worker's session: pass it on its ring.
    HandOver { worker: u16 },
    /// For the kernel (TAP).
    Exception,
    /// Dropped, and why.
    Drop(Counter),
}

/// [`Action::Transmit`]'s `dest` when the packet goes to no real server.
pub const NO_DEST: u32 = u32::MAX;

/// A worker's fixed parameters.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's index and how many there are.
    pub id: u16,
    pub workers: u16,
    /// Sessions this worker can hold.
    pub capacity: u32,
    /// Full-NAT local ports, inclusive.
    pub local_ports: (u16, u16),
    /// Sessions examined per expiry call.
    pub expire_budget: u32,
    /// IPVS's `expire_nodest_conn`: a client packet on a session whose real
    /// server left the configuration ends the session (a TCP SYN or a UDP
    /// datagram is scheduled anew; anything else is dropped) instead of
    /// being forwarded to the removed server.
    pub expire_nodest_conn: bool,
    /// IPVS's `sloppy_tcp`: a TCP segment other than a SYN (and not a
    /// RST) without a session opens one, as a connection that is
    /// established, so a director that takes over a connection another
    /// began (after an ECMP rehash, or a failover) carries it on. With
    /// `mh` over the same real servers, every director picks the same.
    pub sloppy_tcp: bool,
    /// Connection sync: the worker keeps, for the dataplane to send its
    /// peers, a record of each session it opens and of each change of a
    /// session's state ([`Worker::take_sync`]), and installs its peers'
    /// ([`Worker::install`]).
    pub sync: bool,
    /// Sessions from which bursts prefetch (with a [`Prefetch`] that
    /// does); below it they read ahead with loads. The default, 0, always
    /// prefetches: in tables that stay in the caches the two cost the
    /// same, and a large table that is still nearly empty (after a start
    /// or a flush) misses the caches on its buckets however few sessions
    /// it holds.
    pub prefetch_from: u32,
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            id: 0,
            workers: 1,
            capacity: 1 << 16,
            local_ports: DEFAULT_PORT_RANGE,
            expire_budget: 1024,
            expire_nodest_conn: false,
            sloppy_tcp: false,
            sync: false,
            prefetch_from: 0,
        }
    }
}

/// One worker's engine: its sessions, its view of the services, its
/// counters, and the snapshot it currently follows.
#[derive(Debug)]
pub struct Worker {
    cfg: WorkerConfig,
    snap: Arc<Snapshot>,
    pub sessions: SessionTable,
    pub dests: Dests,
    /// Snapshot service index -> service entry handle.
    svc_of_snap: Vec<u32>,
    /// Each port's MAC, by port index.
    port_macs: Vec<Option<MacAddr>>,
    /// By port index: whether partial transport checksums are finished on
    /// receive ([`RxChecksum::Finish`]).
    finish_rx: Vec<bool>,
    /// Addresses answered for: interface addresses, VIPs, local addresses.
    owned: HashSet<Addr, ahash::RandomState>,
    /// Full-NAT local addresses of every service.
    laddrs: HashSet<Addr, ahash::RandomState>,
    /// Sessions per (local address, port) of this worker's share; `None`
    /// when the configured range gives it no port.
    lports: Option<PortUse>,
    pub counters: Counters,
    ip_ident: u16,
    now: u32,
    /// With several workers: who holds each NAT session, by reply tuple.
    nat_owners: Option<Arc<session::NatOwners>>,
    /// With `sync`: what peers should hear of this worker's sessions,
    /// since the dataplane last took it ([`Worker::take_sync`]).
    sync_out: Vec<crate::sync::SessionRecord>,
    /// The next slot a resync for a peer reads ([`Worker::resync`]);
    /// [`NIL`] when none runs.
    resync_at: u32,
    /// With `sync`: the sessions the last sweep re-armed (connections that
    /// carried traffic, templates their connections keep), for the peers
    /// to hear of again: a peer's copy would expire otherwise, since it
    /// sees none of their packets. Its capacity is the sweep's budget,
    /// never exceeded.
    rearmed: Vec<SessionId>,
}

/// The outer source address and the MTU for IPIP out of `port`.
fn tunnel_of(net: &crate::net::Network, port: u16) -> Option<(Ipv4Addr, u16)> {
    let mtu = net.interface(port).map_or(1500, |i| i.mtu);
    Some((net.ipv4_of(port)?, mtu))
}

fn drop_of(e: ParseError) -> Counter {
    match e {
        // The IP header says more than the frame holds: cut short, by a
        // port whose frames are smaller than a kernel super-frame.
        ParseError::L3(WireError::Truncated) | ParseError::L4(WireError::Truncated) => {
            Counter::DropTruncated
        }
        ParseError::L2(_) => Counter::DropL2Malformed,
        ParseError::L3(_) => Counter::DropL3Malformed,
        ParseError::L4(_) => Counter::DropL4Malformed,
    }
}

/// Why a tagged frame is dropped: QinQ (an 802.1ad tag, or a second tag)
/// or a VLAN no interface has.
#[cold]
fn vlan_drop(frame: &[u8]) -> Counter {
    let ethertype = |at: usize| {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let stacked = |t: Option<u16>| {
        matches!(
            t,
            Some(ethernet::ethertype::VLAN | ethernet::ethertype::QINQ)
        )
    };
    if ethertype(12) == Some(ethernet::ethertype::QINQ) || stacked(ethertype(16)) {
        Counter::DropQinq
    } else {
        Counter::DropVlanUnknown
    }
}

impl Worker {
    /// A worker following `snap`.
    pub fn new(cfg: WorkerConfig, snap: Arc<Snapshot>) -> Worker {
        let outbox = if cfg.sync { SYNC_OUTBOX } else { 0 };
        let rearmed = if cfg.sync {
            cfg.expire_budget as usize
        } else {
            0
        };
        let mut w = Worker {
            sessions: SessionTable::with_capacity(cfg.capacity),
            lports: PortUse::new(cfg.id, cfg.workers, cfg.local_ports).ok(),
            cfg,
            snap: Arc::new(Snapshot::empty()),
            dests: Dests::default(),
            svc_of_snap: Vec::new(),
            port_macs: Vec::new(),
            finish_rx: Vec::new(),
            owned: HashSet::default(),
            laddrs: HashSet::default(),
            counters: Counters::default(),
            ip_ident: 0,
            now: 0,
            nat_owners: None,
            sync_out: Vec::with_capacity(outbox),
            resync_at: NIL,
            rearmed: Vec::with_capacity(rearmed),
        };
        w.adopt(snap);
        w
    }

    /// Shares the table of NAT session owners with the other workers: this
    /// worker records its NAT sessions there and hands over the replies it
    /// finds recorded for another.
    pub fn share_nat_owners(&mut self, owners: Arc<session::NatOwners>) {
        self.nat_owners = Some(owners);
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.cfg
    }

    /// The snapshot this worker follows.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snap
    }

    /// Full-NAT local-address use, per live service and address: (service,
    /// address, connections using it, ports this worker owns on it).
    pub fn laddr_use(&self) -> Vec<(crate::service::ServiceKey, IpAddr, u32, u32)> {
        let mut out = Vec::new();
        for s in self.dests.svcs.iter().filter(|s| s.live) {
            if let Some(pool) = &s.pool {
                for (a, n) in pool.laddrs().iter().zip(pool.in_use()) {
                    out.push((s.key, session::ip(a), *n, pool.ports_per_laddr()));
                }
            }
        }
        out
    }

    /// The addresses this worker answers ARP and Neighbor Solicitations
    /// for (interface addresses, VIPs, local addresses), in ascending
    /// order: what a gratuitous ARP or an unsolicited advertisement
    /// announces. Allocates; for between bursts.
    pub fn owned_ips(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.owned.iter().map(session::ip).collect();
        v.sort_unstable();
        v
    }

    /// Follows a new snapshot: service and real-server entries are
    /// re-pointed (sessions keep theirs), schedulers start afresh, the
    /// owned-address sets are rebuilt. Runs between bursts; it allocates.
    pub fn adopt(&mut self, snap: Arc<Snapshot>) {
        for s in &mut self.dests.svcs {
            s.live = false;
            s.snap_idx = NIL;
        }
        for d in &mut self.dests.dests {
            d.idx = NIL;
        }
        self.svc_of_snap.clear();
        self.laddrs.clear();
        self.owned.clear();
        self.port_macs.clear();
        self.finish_rx.clear();
        for i in &snap.network.interfaces {
            let p = usize::from(i.port);
            if self.port_macs.len() <= p {
                self.port_macs.resize(p + 1, None);
                self.finish_rx.resize(p + 1, false);
            }
            self.port_macs[p] = Some(i.mac);
            self.finish_rx[p] = i.rx_checksum == RxChecksum::Finish;
            for (a, _) in &i.addrs {
                self.owned.insert(session::addr(*a));
            }
        }
        for (si, svc) in snap.services.iter().enumerate() {
            let key = svc.spec.key;
            let laddrs: Vec<Addr> = svc.spec.laddrs.iter().map(|a| session::addr(*a)).collect();
            let peer_laddrs: Vec<Addr> = svc
                .spec
                .peer_laddrs
                .iter()
                .map(|a| session::addr(*a))
                .collect();
            // A service on standby's addresses are another director's.
            if !svc.standby {
                for vip in &svc.vips {
                    self.owned.insert(session::addr(*vip));
                }
                for l in &laddrs {
                    self.owned.insert(*l);
                    self.laddrs.insert(*l);
                }
                // A peer's are not answered for (ARP, echo): only their
                // synced connections' replies are taken, once routing
                // brings them here.
                for l in &peer_laddrs {
                    self.laddrs.insert(*l);
                }
            }
            let h = self.dests.svc_handle(key, || SvcEntry {
                key,
                snap_idx: NIL,
                sched: SchedState::default(),
                pool: None,
                loads: Vec::new(),
                dests: Vec::new(),
                stats: Stats::default(),
                refs: 0,
                live: true,
            });
            let mut handles = Vec::with_capacity(svc.spec.reals.len());
            for (ri, rs) in svc.spec.reals.iter().enumerate() {
                let d = self
                    .dests
                    .dest_handle((key, session::addr(rs.addr), rs.port), h);
                let e = &mut self.dests.dests[d as usize];
                e.svc = h;
                e.mode = rs.mode;
                e.idx = u32::try_from(ri).unwrap_or(NIL);
                e.upper = rs.upper.div_ceil(u32::from(self.cfg.workers.max(1)));
                e.lower = rs.lower.div_ceil(u32::from(self.cfg.workers.max(1)));
                e.load.update_overload(e.upper, e.lower);
                handles.push(d);
            }
            let loads: Vec<_> = handles
                .iter()
                .map(|&d| self.dests.dests[d as usize].load)
                .collect();
            let e = &mut self.dests.svcs[h as usize];
            e.live = true;
            e.snap_idx = u32::try_from(si).unwrap_or(NIL);
            e.sched = svc.sched.new_state(&svc.weights, &loads);
            let same_laddrs = e.pool.as_ref().is_some_and(|p| {
                p.laddrs().len() == laddrs.len() + peer_laddrs.len()
                    && p.laddrs().starts_with(&laddrs)
                    && p.laddrs().ends_with(&peer_laddrs)
            });
            if !same_laddrs {
                e.pool = self
                    .lports
                    .as_mut()
                    .and_then(|u| LaddrPool::with_peers(&laddrs, &peer_laddrs, u).ok());
            }
            e.loads = loads;
            e.dests = handles;
            self.svc_of_snap.push(h);
        }
        self.dests.collect();
        // Routes change only with a snapshot; sessions of removed real
        // servers still need theirs.
        for d in &mut self.dests.dests {
            d.route = snap.network.route(&d.addr);
            d.tunnel = d.route.and_then(|(port, _)| tunnel_of(&snap.network, port));
        }
        self.snap = snap;
    }

    fn count(&mut self, c: Counter) {
        self.counters.add(c, 1);
    }

    fn drop(&mut self, c: Counter) -> Action {
        self.count(c);
        Action::Drop(c)
    }

    /// Decides what happens to one frame that arrived on `in_port` at time
    /// `now` (seconds), rewriting it to match.
    pub fn process(&mut self, buf: &mut impl PacketBuf, in_port: u16, now: u32) -> Action {
        self.now = now;
        self.count(Counter::RxPackets);
        let p = parse(buf.data());
        let h = match &p {
            Ok(p) => {
                if self.finishes_rx(in_port) {
                    self.finish_rx_checksum(buf, p);
                }
                self.sessions.hash(&p.key())
            }
            Err(_) => Hashed::default(),
        };
        let mac = self.port_mac(in_port);
        let action = self.process_parsed(buf, &p, (h, NIL), in_port, mac, &NoPrefetch);
        self.sessions.link_pending();
        action
    }

    /// Processes a burst of frames that arrived on `in_port`, writing one
    /// action per frame (at most [`BURST`] frames; more are processed in
    /// chunks). Same results as [`process`](Self::process) frame by frame,
    /// but the session lookups' cache misses overlap: every frame is parsed
    /// and hashed and its index bucket read first, then the session its tag
    /// points to is read, and only then is each frame handled.
    pub fn process_burst<B: PacketBuf>(
        &mut self,
        bufs: &mut [B],
        in_port: u16,
        now: u32,
        actions: &mut [Action],
    ) {
        self.process_burst_with(bufs, in_port, now, actions, &NoPrefetch);
    }

    /// [`process_burst`](Self::process_burst) with a prefetch instruction:
    /// every frame's index bucket is prefetched, then every frame's session
    /// (its bucket read for the entry), and only then are the frames
    /// handled, so the burst's misses overlap one another and the work.
    /// Paired runs put this ahead of prefetching each session 16 frames
    /// before its frame: in bursts of 32, 5% at 100k sessions and 0-1% at
    /// 1M; in bursts of 64, 8% and 1%; the same at 1k and for new
    /// connections.
    pub fn process_burst_with<B: PacketBuf, P: Prefetch>(
        &mut self,
        bufs: &mut [B],
        in_port: u16,
        now: u32,
        actions: &mut [Action],
        prefetch: &P,
    ) {
        self.now = now;
        let mac = self.port_mac(in_port);
        let finish = self.finishes_rx(in_port);
        for (bufs, actions) in bufs.chunks_mut(BURST).zip(actions.chunks_mut(BURST)) {
            let n = bufs.len().min(actions.len());
            self.counters
                .add(Counter::RxPackets, u64::try_from(n).unwrap_or(0));
            // Filled as the frames are parsed, not initialised first.
            let mut parsed = ArrayVec::<Result<Parsed, ParseError>, BURST>::new();
            let mut hashed = [Hashed::default(); BURST];
            // The port's checksum setting decided once for the burst, so a
            // port that trusts its NIC pays nothing for it per packet.
            if finish {
                self.parse_burst::<true, B>(&mut bufs[..n], &mut parsed, &mut hashed);
            } else {
                self.parse_burst::<false, B>(&mut bufs[..n], &mut parsed, &mut hashed);
            }
            // Each frame's first matching entry, read to fetch its session
            // ahead and then tried first by the lookup. In stages over the
            // whole burst: every bucket, then every session, then the work.
            let mut hints = [NIL; BURST];
            if P::ACTIVE && self.sessions.len() >= self.cfg.prefetch_from {
                for h in &hashed[..n] {
                    self.sessions.prefetch_bucket(*h, prefetch);
                }
                for (h, c) in hashed[..n].iter().zip(&mut hints) {
                    *c = self.sessions.candidate(*h);
                    self.sessions.prefetch_session(*c, prefetch);
                }
            } else {
                // The warming loads wait in the reorder buffer until their
                // line arrives, so they go in loops of their own, where
                // little else competes for it.
                let mut warm = 0u32;
                for h in &hashed[..n] {
                    warm ^= self.sessions.warm_bucket(*h);
                }
                for (h, c) in hashed[..n].iter().zip(&mut hints) {
                    *c = self.sessions.candidate(*h);
                    warm ^= self.sessions.warm_session(*c);
                }
                std::hint::black_box(warm);
            }
            let frames = bufs.iter_mut().zip(&parsed).zip(hashed.iter().zip(&hints));
            for (((buf, p), (h, hint)), action) in frames.zip(actions.iter_mut()) {
                *action = self.process_parsed(buf, p, (*h, *hint), in_port, mac, prefetch);
            }
            self.sessions.link_pending();
        }
    }

    /// Parses each frame of `bufs` and hashes its flow, finishing partial
    /// checksums first with `FINISH`.
    #[inline(always)]
    fn parse_burst<const FINISH: bool, B: PacketBuf>(
        &mut self,
        bufs: &mut [B],
        parsed: &mut ArrayVec<Result<Parsed, ParseError>, BURST>,
        hashed: &mut [Hashed; BURST],
    ) {
        for (buf, h) in bufs.iter_mut().zip(hashed.iter_mut()) {
            let p = parse(buf.data());
            if let Ok(p) = &p {
                if FINISH {
                    self.finish_rx_checksum(buf, p);
                }
                *h = self.sessions.hash(&p.key());
            }
            parsed.push(p);
        }
    }

    fn process_parsed<P: Prefetch>(
        &mut self,
        buf: &mut impl PacketBuf,
        p: &Result<Parsed, ParseError>,
        (h, hint): (Hashed, u32),
        in_port: u16,
        port_mac: Option<MacAddr>,
        prefetch: &P,
    ) -> Action {
        let p = match p {
            Ok(p) => p,
            Err(e) => return self.drop(drop_of(*e)),
        };
        // The dataplane takes the tag off frames of its VLAN sub-interfaces:
        // a tag left is a VLAN nobody configured, and a frame must never be
        // forwarded with its tags as if it were untagged.
        if p.vlan.is_some() {
            return self.drop(vlan_drop(buf.data()));
        }
        let dst_mac = ethernet::Frame::new_unchecked(buf.data()).dst();
        if let Some(mac) = port_mac {
            if dst_mac != mac && !dst_mac.is_multicast() {
                return self.drop(Counter::DropNotOurMac);
            }
        }
        match p.l3 {
            L3::Arp => return self.arp(buf, p, in_port),
            L3::Other(_) => return self.drop(Counter::DropUnsupported),
            L3::Ipv4 | L3::Ipv6 => {}
        }
        // SYN with RST or FIN is no segment any TCP sends: it neither
        // opens a connection nor passes on one (IPVS drops it too). A
        // packet that is not TCP has no flags.
        if p.tcp_flags.syn_with_rst_or_fin() {
            return self.drop(Counter::DropTcpBadFlags);
        }
        let key = p.key();
        if !p.later_fragment {
            match self.sessions.lookup_hinted(h, &key, hint) {
                Some((id, Side::In)) => return self.inbound(buf, p, id, h, prefetch),
                Some((id, Side::Out)) => return self.outbound(buf, p, id),
                None => {}
            }
            // A NAT reply whose session another worker holds.
            if let Some(owner) = self.nat_owners.as_ref().and_then(|t| t.get(&key)) {
                if owner != self.cfg.id {
                    self.count(Counter::HandedOver);
                    return Action::HandOver { worker: owner };
                }
            }
        }
        if let Some(proto) = Protocol::from_number(p.proto) {
            if let Some(si) = self.snap.lookup_addr(proto, &p.dst, p.dport) {
                return self.new_session(buf, p, si, h, prefetch);
            }
        }
        if self.laddrs.contains(&p.dst) && matches!(p.proto, ip_proto::TCP | ip_proto::UDP) {
            let owner = owner_of(p.dport, self.cfg.workers);
            if owner != self.cfg.id {
                self.count(Counter::HandedOver);
                return Action::HandOver { worker: owner };
            }
            return self.drop(Counter::DropNoSession);
        }
        // A later fragment carries no ICMP header.
        if matches!(p.proto, ip_proto::ICMP | ip_proto::ICMPV6) && !p.later_fragment {
            if let Some(a) = self.icmp(buf, p, in_port) {
                return a;
            }
        }
        if self.owned.contains(&p.dst) || dst_mac.is_multicast() {
            self.count(Counter::Exception);
            return Action::Exception;
        }
        self.drop(Counter::DropUnsupported)
    }

    /// Whether port `port` finishes partial transport checksums.
    #[inline]
    fn finishes_rx(&self, port: u16) -> bool {
        self.finish_rx
            .get(usize::from(port))
            .copied()
            .unwrap_or(false)
    }

    /// Finishes a transport checksum a kernel sender left partial.
    #[inline]
    fn finish_rx_checksum(&mut self, buf: &mut impl PacketBuf, p: &Parsed) {
        let rx = buf.rx_l4_sum();
        if offload::finish_partial(buf.data_mut(), p, rx) {
            self.count(Counter::RxChecksumFinished);
        }
    }

    /// The MAC of port `port`, which frames to it must be addressed to
    /// (or multicast); `None` accepts any.
    fn port_mac(&self, port: u16) -> Option<MacAddr> {
        self.port_macs.get(usize::from(port)).copied().flatten()
    }

    fn arp(&mut self, buf: &mut impl PacketBuf, p: &Parsed, in_port: u16) -> Action {
        let Some(mac) = self.snap.network.interface(in_port).map(|i| i.mac) else {
            return self.drop(Counter::DropUnsupported);
        };
        let l3 = p.l3_offset;
        let (op, sha, spa, tpa) = match arp::Packet::new_checked(&buf.data()[l3..]) {
            Ok(a) => (a.operation(), a.sender_mac(), a.sender_ip(), a.target_ip()),
            Err(_) => return self.drop(Counter::DropL3Malformed),
        };
        let reply = op == arp::op::REQUEST && self.owned.contains(&session::addr_v4(tpa));
        if reply {
            let data = buf.data_mut();
            let mut eth = ethernet::Frame::new_unchecked(&mut data[..]);
            eth.set_dst(sha);
            eth.set_src(mac);
            arp::Packet::new_unchecked(&mut data[l3..]).fill(arp::op::REPLY, mac, tpa, sha, spa);
            self.count(Counter::Answered);
        }
        Action::Neighbor {
            learn: Some((session::addr_v4(spa), sha)),
            reply,
        }
    }

    /// A Neighbor Solicitation or Advertisement (IPv6's ARP): the sender
    /// of a solicitation and the target of an advertisement are learned;
    /// a solicitation for an owned address is answered in place.
    fn ndisc(&mut self, buf: &mut impl PacketBuf, p: &Parsed, in_port: u16) -> Action {
        let Some(mac) = self.snap.network.interface(in_port).map(|i| i.mac) else {
            return self.drop(Counter::DropUnsupported);
        };
        let data = buf.data();
        let (src, dst, hop_limit) = {
            let ip = ipv6::Packet::new_unchecked(&data[p.l3_offset..p.l3_end]);
            (ip.src_addr(), ip.dst_addr(), ip.hop_limit())
        };
        let peer = ethernet::Frame::new_unchecked(data).src();
        let m = match ndisc::parse(&data[p.l4_offset..p.l3_end], src, dst, hop_limit) {
            Ok(m) => m,
            Err(_) => return self.drop(Counter::DropNdiscInvalid),
        };
        let v6 = |a: std::net::Ipv6Addr| session::addr(std::net::IpAddr::V6(a));
        if m.kind == icmp::v6::NEIGHBOR_ADVERT {
            return Action::Neighbor {
                learn: Some((v6(m.target), m.lladdr.unwrap_or(peer))),
                reply: false,
            };
        }
        // A solicitation from the unspecified address is another node's
        // duplicate address detection: nothing to learn or answer.
        let learn = m
            .lladdr
            .filter(|_| !src.is_unspecified())
            .map(|l| (v6(src), l));
        if src.is_unspecified() || !self.owned.contains(&v6(m.target)) {
            return Action::Neighbor {
                learn,
                reply: false,
            };
        }
        // The answer takes the solicitation's buffer: whole, with our
        // address in its option; without the option only where the
        // asker already has our address (a unicast solicitation).
        let len = data.len();
        let with_lladdr = len >= ndisc::FRAME_LEN;
        if !with_lladdr && (dst.is_multicast() || len < ndisc::FRAME_LEN - 8) {
            return self.drop(Counter::DropNdiscInvalid);
        }
        let to = m.lladdr.unwrap_or(peer);
        let flags = ndisc::flags::ROUTER | ndisc::flags::SOLICITED | ndisc::flags::OVERRIDE;
        let Some(n) = ndisc::write_advert(
            buf.data_mut(),
            (mac, to),
            (m.target, src),
            flags,
            with_lladdr,
        ) else {
            return self.drop(Counter::DropNdiscInvalid);
        };
        buf.trim(len - n);
        self.count(Counter::Answered);
        Action::Neighbor { learn, reply: true }
    }

    fn next_ident(&mut self) -> u16 {
        self.ip_ident = self.ip_ident.wrapping_add(1);
        self.ip_ident
    }

    fn route(&mut self, dst: &Addr) -> Option<(u16, Addr)> {
        self.snap.network.route(dst)
    }

    /// Removes a session now, with all its bookkeeping.
    fn close(&mut self, id: SessionId) {
        release(
            &mut self.dests,
            self.lports.as_mut(),
            &mut self.counters,
            &mut self.sessions,
            id,
        );
        self.sessions.remove(id);
    }

    /// How many real-server handles this worker has (each `dest` of an
    /// [`Action::Transmit`] is below it); grows only when a snapshot is
    /// adopted.
    pub fn dest_slots(&self) -> usize {
        self.dests.dests.len()
    }

    /// Expires sessions whose time has come (call between bursts).
    /// Templates outlive their connections: one with connections left is
    /// re-armed for its persistence timeout.
    pub fn expire(&mut self, now: u32) -> session::ExpireOutcome {
        self.expire_with(now, &NoPrefetch)
    }

    /// [`expire`](Self::expire) with a prefetch instruction, which fetches
    /// the index buckets of the sessions a few places ahead of the one
    /// being removed (in tables of at least
    /// [`prefetch_from`](WorkerConfig::prefetch_from) sessions).
    pub fn expire_with<P: Prefetch>(&mut self, now: u32, prefetch: &P) -> session::ExpireOutcome {
        if P::ACTIVE && self.sessions.len() >= self.cfg.prefetch_from {
            self.sweep(now, prefetch)
        } else {
            self.sweep(now, &NoPrefetch)
        }
    }

    fn sweep<P: Prefetch>(&mut self, now: u32, prefetch: &P) -> session::ExpireOutcome {
        self.now = now;
        let budget = self.cfg.expire_budget;
        let Worker {
            sessions,
            dests,
            counters,
            snap,
            lports,
            rearmed,
            ..
        } = self;
        let out = sessions.expire_with(
            now,
            budget,
            |table, id| {
                let s = *table.get(id);
                if s.refs() > 0 {
                    let key = dests.svcs[dests.dests[s.dest as usize].svc as usize].key;
                    let timeout = snap
                        .find(&key)
                        .and_then(|i| snap.services[i as usize].spec.persistence)
                        .map_or(60, |p| p.timeout);
                    table.get_mut(id).expires = now.wrapping_add(timeout);
                    return false;
                }
                release(dests, lports.as_mut(), counters, table, id);
                true
            },
            |_, id| {
                // Capacity 0 without sync: nothing is kept.
                if rearmed.len() < rearmed.capacity() {
                    rearmed.push(id);
                }
            },
            prefetch,
        );
        self.dests.collect();
        let mut rearmed = std::mem::take(&mut self.rearmed);
        for &id in &rearmed {
            if self.sessions.get_used(id).is_some() {
                self.emit(id);
            }
        }
        rearmed.clear();
        self.rearmed = rearmed;
        out
    }

    /// Sessions of real servers that left the snapshot or were set to
    /// weight 0 are left to finish; this removes them at once instead (an
    /// operator's choice). Returns how many went.
    pub fn flush_dest(&mut self, dest: u32) -> u32 {
        // Connections first, so a template has none left when it goes.
        let mut ids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.dest == dest)
            .map(|(id, _)| id)
            .collect();
        ids.sort_by_key(|&id| self.sessions.get(id).is_template());
        let n = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        for id in ids {
            self.emit_removal(id);
            self.close(id);
        }
        n
    }

    fn icmp(&mut self, buf: &mut impl PacketBuf, p: &Parsed, in_port: u16) -> Option<Action> {
        let l4 = p.l4_offset;
        let ty = *buf.data().get(l4)?;
        let echo = if p.is_v4() {
            icmp::v4::ECHO_REQUEST
        } else {
            icmp::v6::ECHO_REQUEST
        };
        if ty == echo && self.owned.contains(&p.dst) {
            return Some(self.echo_reply(buf, p, in_port));
        }
        if !p.is_v4() && ndisc::is_ndisc(ty) {
            return Some(self.ndisc(buf, p, in_port));
        }
        let is_error = if p.is_v4() {
            icmp::is_error_v4(ty)
        } else {
            icmp::is_error_v6(ty)
        };
        if is_error {
            return icmp_error::translate(self, buf, p);
        }
        None
    }

    fn echo_reply(&mut self, buf: &mut impl PacketBuf, p: &Parsed, in_port: u16) -> Action {
        let Some(mac) = self.snap.network.interface(in_port).map(|i| i.mac) else {
            return self.drop(Counter::DropUnsupported);
        };
        let data = buf.data_mut();
        {
            let mut eth = ethernet::Frame::new_unchecked(&mut data[..]);
            let peer = eth.src();
            eth.set_dst(peer);
            eth.set_src(mac);
        }
        let (l3, l4, end) = (p.l3_offset, p.l4_offset, p.l3_end);
        if p.is_v4() {
            let mut ip = ipv4::Packet::new_unchecked(&mut data[l3..end]);
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            // Swapping the addresses leaves the header checksum's sum alone.
            ip.set_src_addr(dst);
            ip.set_dst_addr(src);
            ip.set_ttl(64);
            ip.fill_checksum();
            icmp::Packet::new_unchecked(&mut data[l4..end])
                .echo_request_to_reply(icmp::v4::ECHO_REPLY);
        } else {
            let mut ip = ipv6::Packet::new_unchecked(&mut data[l3..end]);
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            ip.set_src_addr(dst);
            ip.set_dst_addr(src);
            ip.set_hop_limit(64);
            icmp::Packet::new_unchecked(&mut data[l4..end])
                .echo_request_to_reply(icmp::v6::ECHO_REPLY);
        }
        self.count(Counter::Answered);
        Action::Reply { port: in_port }
    }

    /// Turns a packet too big for the tunnel into an ICMP "fragmentation
    /// needed" to its sender, with the MTU it must use.
    fn too_big(&mut self, buf: &mut impl PacketBuf, p: &Parsed, mtu: u16) -> Action {
        self.count(Counter::DropTooBig);
        let src = self.snap.network.interfaces.iter().find_map(|i| {
            i.addrs.iter().find_map(|(a, _)| match a {
                std::net::IpAddr::V4(v4) => Some(*v4),
                std::net::IpAddr::V6(_) => None,
            })
        });
        let Some(src) = src else {
            return Action::Drop(Counter::DropTooBig);
        };
        match icmp_error::frag_needed(self, buf, p, src, mtu) {
            Some(a) => a,
            None => Action::Drop(Counter::DropTooBig),
        }
    }

    /// The counters of this worker.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// This worker's statistics of every service of its snapshot, with the
    /// real servers' connection counts (control path: it allocates).
    pub fn report(&self) -> Vec<crate::stats::ServiceReport> {
        self.snap
            .services
            .iter()
            .zip(&self.svc_of_snap)
            .map(|(svc, &h)| {
                let e = &self.dests.svcs[h as usize];
                crate::stats::ServiceReport {
                    key: svc.spec.key,
                    sched: svc.spec.sched,
                    stats: e.stats,
                    reals: svc
                        .spec
                        .reals
                        .iter()
                        .zip(&e.dests)
                        .map(|(rs, &d)| {
                            let d = &self.dests.dests[d as usize];
                            crate::stats::RealReport {
                                addr: rs.addr,
                                port: rs.port,
                                mode: rs.mode,
                                weight: rs.weight,
                                active: u64::from(d.load.active),
                                inactive: u64::from(d.load.inactive),
                                persistent: u64::from(d.templates),
                                stats: d.stats,
                            }
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Zeroes the statistics (ipvsadm -Z); connection counts stay.
    pub fn zero_stats(&mut self) {
        for d in &mut self.dests.dests {
            d.stats = Stats::default();
        }
        for s in &mut self.dests.svcs {
            s.stats = Stats::default();
        }
    }
}

/// The bookkeeping of a session that goes: its real server's counts, its
/// local port, its template's reference.
fn release(
    dests: &mut Dests,
    lports: Option<&mut PortUse>,
    counters: &mut Counters,
    table: &mut SessionTable,
    id: SessionId,
) {
    let s = *table.get(id);
    // Its local address's id in the worker's port counts, for its pool.
    let laddr = match lports {
        Some(u) if s.mode == ForwardMode::Fnat && !s.is_template() => u.release(&s.laddr, s.lport),
        _ => None,
    };
    if s.dest != NIL {
        let d = &mut dests.dests[s.dest as usize];
        d.refs = d.refs.saturating_sub(1);
        if s.is_template() {
            d.templates = d.templates.saturating_sub(1);
        } else {
            let inactive = s.is_inactive();
            dests.update_load(s.dest, |l| {
                if inactive {
                    l.inactive = l.inactive.saturating_sub(1);
                } else {
                    l.active = l.active.saturating_sub(1);
                }
            });
        }
    }
    if let Some(svc) = dests.dests.get(s.dest as usize).map(|d| d.svc) {
        let v = &mut dests.svcs[svc as usize];
        v.refs = v.refs.saturating_sub(1);
        if let (Some(pool), Some(laddr)) = (v.pool.as_mut(), laddr) {
            pool.release(laddr);
        }
    }
    if s.template() != NIL {
        let t = table.get_mut(s.template());
        // A template outlives the connections that follow it (it is only
        // unhashed while they remain), so this is that template.
        debug_assert!(t.is_template());
        if t.is_template() {
            t.set_refs(t.refs().saturating_sub(1));
        }
    }
    counters.add(Counter::SessionsExpired, 1);
}

#[cfg(test)]
mod tests;
