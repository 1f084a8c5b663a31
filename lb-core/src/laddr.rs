//! Full-NAT local-address pools: which (local address, port) a new
//! connection leaves from.
//!
//! Each worker owns a disjoint share of the port space: the ports with
//! `port % workers == worker`. A reply's owner is therefore a function of
//! its destination port ([`owner_of`]), which is what lets RSS-less ports,
//! rte_flow rules or a hand-over ring bring it to the right worker.
//!
//! A (local address, port) pair may serve several real servers at once,
//! since their reply tuples differ, as with DPVS's per-real-server
//! sub-pools. Rather than keep a free list per (address, server) pair, the
//! worker counts its sessions per (address, port) pair ([`PortUse`], two
//! bytes per pair, across all its services). A pair no session uses is
//! free towards every server and is taken at once; only a pair already in
//! use is checked against the session table (is this server's reply tuple
//! taken?). So a pool with more pairs than connections never reads the
//! table to allocate, and a crowded one still reuses ports per server.
//! Exhaustion after a bounded number of probes is an error the caller
//! counts as a drop.

use crate::types::{Addr, NIL};

/// How many candidate ports one allocation tries per local address.
pub const PROBES: u32 = 64;
/// The default local port range (ports below are left to the kernel side).
pub const DEFAULT_PORT_RANGE: (u16, u16) = (1025, 65535);

/// Why a pool could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaddrError {
    #[error("a Full-NAT service needs at least one local address")]
    Empty,
    #[error("local port range {min}-{max} is empty")]
    BadRange { min: u16, max: u16 },
    #[error("local port range {min}-{max} gives worker {worker} of {workers} no port")]
    TooManyWorkers {
        min: u16,
        max: u16,
        worker: u16,
        workers: u16,
    },
}

/// The worker that owns local port `port` among `workers`.
#[inline]
pub fn owner_of(port: u16, workers: u16) -> u16 {
    port % workers.max(1)
}

/// One worker's share of a port range: ports `first + i * step` for `i`
/// below `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Share {
    first: u32,
    step: u32,
    count: u32,
}

impl Share {
    fn port(&self, idx: u32) -> u16 {
        u16::try_from(self.first + idx * self.step).unwrap_or(u16::MAX)
    }

    /// The index of `port`, if this share owns it.
    fn index(&self, port: u16) -> Option<u32> {
        let off = u32::from(port).checked_sub(self.first)?;
        (off % self.step == 0 && off / self.step < self.count).then_some(off / self.step)
    }
}

/// How many of one worker's Full-NAT sessions use each (local address,
/// port) pair of its share, whatever their service and real server.
///
/// A zero count means the pair is free towards every real server, so it
/// can be taken without looking at the session table. The counts are exact
/// (every allocation adds one, every release takes one off), and a pair
/// whose count would overflow is not given out.
#[derive(Debug, Clone)]
pub struct PortUse {
    share: Share,
    /// The addresses, by id.
    laddrs: Vec<Addr>,
    /// Open-addressed ids by address (id + 1, 0 for none): a power of two
    /// at least twice the addresses, so a release finds its address's id
    /// in one probe or two, without a loop whose exit mispredicts.
    slots: Box<[u32]>,
    /// Per address (by id), per port index.
    counts: Vec<Box<[u16]>>,
}

/// Where an address's id sits in `slots` (of `len`, a power of two).
#[inline]
fn slot_of(a: &Addr, len: usize) -> usize {
    let low = u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    let high = u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let h = (low ^ high.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // The product's top bits, which every input bit reaches (an IPv4
    // address varies in the last byte, the top one of `low`).
    usize::try_from(h >> (64 - len.trailing_zeros())).unwrap_or(0)
}

impl PortUse {
    /// Worker `worker` of `workers`' share of the inclusive port range
    /// `min..=max`.
    pub fn new(worker: u16, workers: u16, (min, max): (u16, u16)) -> Result<PortUse, LaddrError> {
        if min > max || min == 0 {
            return Err(LaddrError::BadRange { min, max });
        }
        let workers = workers.max(1);
        // The first port >= min that this worker owns.
        let step = u32::from(workers);
        let offset = (u32::from(worker) + step - u32::from(min) % step) % step;
        let first = u32::from(min) + offset;
        if first > u32::from(max) || worker >= workers {
            return Err(LaddrError::TooManyWorkers {
                min,
                max,
                worker,
                workers,
            });
        }
        let count = (u32::from(max) - first) / step + 1;
        Ok(PortUse {
            share: Share { first, step, count },
            laddrs: Vec::new(),
            slots: vec![0; 2].into_boxed_slice(),
            counts: Vec::new(),
        })
    }

    /// The ports this worker owns per address.
    pub fn ports_per_laddr(&self) -> u32 {
        self.share.count
    }

    /// The id of `laddr`'s counts, made the first time (this allocates: a
    /// pool asks when it is built, not per packet).
    fn id(&mut self, laddr: &Addr) -> u32 {
        if let Some(id) = self.find(laddr) {
            return id;
        }
        let id = u32::try_from(self.laddrs.len()).unwrap_or(u32::MAX);
        self.laddrs.push(*laddr);
        self.counts
            .push(vec![0; self.share.count as usize].into_boxed_slice());
        let len = (self.laddrs.len() * 2).next_power_of_two();
        if len > self.slots.len() {
            self.slots = vec![0; len].into_boxed_slice();
            for i in 0..self.laddrs.len() {
                self.place(i);
            }
        } else {
            self.place(id as usize);
        }
        id
    }

    fn place(&mut self, i: usize) {
        let mut s = slot_of(&self.laddrs[i], self.slots.len());
        while self.slots[s] != 0 {
            s = (s + 1) & (self.slots.len() - 1);
        }
        self.slots[s] = u32::try_from(i + 1).unwrap_or(u32::MAX);
    }

    /// The id of `laddr`, if a pool has it or had it.
    #[inline]
    fn find(&self, laddr: &Addr) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut s = slot_of(laddr, self.slots.len());
        // Half the slots at least are empty, so this ends.
        loop {
            let v = self.slots[s];
            if v == 0 {
                return None;
            }
            if self.laddrs[(v - 1) as usize] == *laddr {
                return Some(v - 1);
            }
            s = (s + 1) & mask;
        }
    }

    /// Sessions using (`laddr`, `port`).
    pub fn sessions(&self, laddr: &Addr, port: u16) -> u32 {
        match (self.find(laddr), self.share.index(port)) {
            (Some(id), Some(i)) => u32::from(self.counts[id as usize][i as usize]),
            _ => 0,
        }
    }

    /// A session a peer opened takes (`laddr`, `port`): counted as if this
    /// worker had allocated it. The address's id, for the pool's own count
    /// ([`LaddrPool::reserve`]); `None` if the address is not one of this
    /// worker's or the port not in its share.
    pub fn reserve(&mut self, laddr: &Addr, port: u16) -> Option<u32> {
        let id = self.find(laddr)?;
        let i = self.share.index(port)?;
        let c = &mut self.counts[id as usize][i as usize];
        *c = c.saturating_add(1);
        Some(id)
    }

    /// A session using (`laddr`, `port`) went; the address's id, for the
    /// pool's own count ([`LaddrPool::release`]).
    #[inline]
    pub fn release(&mut self, laddr: &Addr, port: u16) -> Option<u32> {
        let id = self.find(laddr)?;
        if let Some(i) = self.share.index(port) {
            let c = &mut self.counts[id as usize][i as usize];
            *c = c.saturating_sub(1);
        }
        Some(id)
    }
}

/// One worker's share of a service's local addresses and ports.
#[derive(Debug, Clone)]
pub struct LaddrPool {
    /// This director's addresses, then its peers' ([`LaddrPool::with_peers`]).
    laddrs: Box<[Addr]>,
    /// How many of `laddrs` are this director's: the ones allocated from.
    own: usize,
    /// Each address's id in the worker's [`PortUse`].
    ids: Box<[u32]>,
    /// Each [`PortUse`] id's address in this pool, NIL if not in it.
    index_of: Box<[u32]>,
    /// Connections using each address, for the pool-use metric.
    in_use: Box<[u32]>,
    share: Share,
    /// The next port index to try, and the next address.
    cursor: u32,
    next_laddr: usize,
}

impl LaddrPool {
    /// A pool of `laddrs` over the worker's share of ports, counted in
    /// `ports`.
    pub fn new(laddrs: &[Addr], ports: &mut PortUse) -> Result<LaddrPool, LaddrError> {
        LaddrPool::with_peers(laddrs, &[], ports)
    }

    /// [`new`](Self::new), also holding other directors' addresses `peers`:
    /// never allocated, but a connection a peer synced from one of them
    /// can be [reserved](Self::reserve) and released like any.
    pub fn with_peers(
        own: &[Addr],
        peers: &[Addr],
        ports: &mut PortUse,
    ) -> Result<LaddrPool, LaddrError> {
        if own.is_empty() {
            return Err(LaddrError::Empty);
        }
        let laddrs: Vec<Addr> = own.iter().chain(peers).copied().collect();
        let ids: Box<[u32]> = laddrs.iter().map(|l| ports.id(l)).collect();
        let mut index_of = vec![NIL; ports.laddrs.len()].into_boxed_slice();
        for (i, &id) in ids.iter().enumerate() {
            index_of[id as usize] = u32::try_from(i).unwrap_or(NIL);
        }
        Ok(LaddrPool {
            own: own.len(),
            in_use: vec![0; laddrs.len()].into_boxed_slice(),
            laddrs: laddrs.into(),
            ids,
            index_of,
            share: ports.share,
            cursor: 0,
            next_laddr: 0,
        })
    }

    /// The ports this worker owns per address.
    pub fn ports_per_laddr(&self) -> u32 {
        self.share.count
    }

    /// Picks a (local address, port) whose reply tuple is free: a pair no
    /// session uses at once, a used one if `taken(laddr, port)` says this
    /// reply tuple is not among them; addresses are used in turn. `None`
    /// when [`PROBES`] ports of every address are taken. `ports` must be
    /// the counts the pool was made with.
    pub fn allocate(
        &mut self,
        ports: &mut PortUse,
        mut taken: impl FnMut(&Addr, u16) -> bool,
    ) -> Option<(Addr, u16)> {
        debug_assert_eq!(self.share, ports.share);
        // The common case first, straight through: the next pair is unused.
        // It is also the loops' first candidate.
        let (li, idx) = (self.next_laddr, self.cursor);
        if ports.counts[self.ids[li] as usize][idx as usize] == 0 {
            return Some(self.take(ports, li, idx));
        }
        let n = self.own;
        // Indices wrap with a compare rather than `%`: divisions cost more
        // than the rest of the loop. Both stay below their bounds.
        let wrap = |i: usize| if i >= n { i - n } else { i };
        for a in 0..n {
            let li = wrap(self.next_laddr + a);
            for _ in 0..PROBES.min(self.share.count) {
                let idx = self.cursor;
                let used = ports.counts[self.ids[li] as usize][idx as usize];
                if used == 0 || (used < u16::MAX && !taken(&self.laddrs[li], self.share.port(idx)))
                {
                    return Some(self.take(ports, li, idx));
                }
                self.cursor = if idx + 1 >= self.share.count {
                    0
                } else {
                    idx + 1
                };
            }
        }
        None
    }

    /// Gives out port index `idx` of address `li` and moves the cursors on.
    #[inline]
    fn take(&mut self, ports: &mut PortUse, li: usize, idx: u32) -> (Addr, u16) {
        ports.counts[self.ids[li] as usize][idx as usize] += 1;
        self.in_use[li] += 1;
        // The next address at the same port index, or past the last
        // address the first one at the next index: consecutive
        // connections read one line of each address's counts, instead of
        // striding through all of them (a miss every other connection).
        if li + 1 < self.own {
            self.next_laddr = li + 1;
            self.cursor = idx;
        } else {
            self.next_laddr = 0;
            self.cursor = if idx + 1 >= self.share.count {
                0
            } else {
                idx + 1
            };
        }
        (self.laddrs[li], self.share.port(idx))
    }

    /// A connection from the address of [`PortUse`] id `id` ended (its
    /// port went back with [`PortUse::release`], which gave the id).
    #[inline]
    pub fn release(&mut self, id: u32) {
        if let Some(&i) = self.index_of.get(id as usize) {
            if let Some(n) = self.in_use.get_mut(i as usize) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// A connection a peer opened from the address of [`PortUse`] id `id`
    /// ([`PortUse::reserve`] gave the id); whether the address is this
    /// pool's.
    pub fn reserve(&mut self, id: u32) -> bool {
        match self.index_of.get(id as usize).copied() {
            Some(i) if i != NIL => {
                if let Some(n) = self.in_use.get_mut(i as usize) {
                    *n += 1;
                }
                true
            }
            _ => false,
        }
    }

    /// Connections per address, in order.
    pub fn in_use(&self) -> &[u32] {
        &self.in_use
    }

    /// The addresses, in order: this director's, then its peers'.
    pub fn laddrs(&self) -> &[Addr] {
        &self.laddrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::addr_v4;
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    fn lips(n: u8) -> Vec<Addr> {
        (1..=n)
            .map(|i| addr_v4(Ipv4Addr::new(10, 2, 0, i)))
            .collect()
    }

    #[test]
    fn workers_share_the_ports_disjointly_and_own_their_replies() {
        let workers = 3;
        let mut seen = HashSet::new();
        for w in 0..workers {
            let mut u = PortUse::new(w, workers, (1025, 1100)).unwrap();
            let mut p = LaddrPool::new(&lips(1), &mut u).unwrap();
            let mut got = HashSet::new();
            while let Some((_, port)) = p.allocate(&mut u, |_, port| got.contains(&port)) {
                assert_eq!(owner_of(port, workers), w);
                assert!((1025..=1100).contains(&port));
                got.insert(port);
            }
            assert_eq!(u32::try_from(got.len()).unwrap(), p.ports_per_laddr());
            for port in got {
                assert!(seen.insert(port), "port {port} given to two workers");
            }
        }
        assert_eq!(seen.len(), 76, "every port of the range has an owner");
    }

    #[test]
    fn one_port_serves_several_real_servers() {
        // The reply tuple includes the real server: a port busy towards one
        // server is free towards another.
        let mut u = PortUse::new(0, 1, (2000, 2000)).unwrap();
        let mut p = LaddrPool::new(&lips(1), &mut u).unwrap();
        let mut busy: HashSet<(u8, u16)> = HashSet::new();
        for rs in 0..5u8 {
            let (_, port) = p
                .allocate(&mut u, |_, port| busy.contains(&(rs, port)))
                .unwrap();
            assert_eq!(port, 2000);
            busy.insert((rs, port));
        }
        assert_eq!(u.sessions(&lips(1)[0], 2000), 5);
        assert_eq!(
            p.allocate(&mut u, |_, port| busy.contains(&(0, port))),
            None,
            "exhausted towards server 0"
        );
    }

    #[test]
    fn a_pair_no_session_uses_is_taken_without_asking() {
        let mut u = PortUse::new(0, 1, (2000, 2001)).unwrap();
        let mut p = LaddrPool::new(&lips(1), &mut u).unwrap();
        let asked = std::cell::Cell::new(0);
        let ask = |_: &Addr, _: u16| {
            asked.set(asked.get() + 1);
            false
        };
        assert_eq!(p.allocate(&mut u, ask).unwrap().1, 2000);
        assert_eq!(p.allocate(&mut u, ask).unwrap().1, 2001);
        assert_eq!(asked.get(), 0, "both pairs were unused");
        // Both in use now: the next one asks.
        assert_eq!(p.allocate(&mut u, ask).unwrap().1, 2000);
        assert_eq!(asked.get(), 1);
        // Released twice, 2000 is unused again; 2001 still has its session.
        let l = lips(1)[0];
        u.release(&l, 2000);
        u.release(&l, 2000);
        assert_eq!(u.sessions(&l, 2000), 0);
        assert_eq!(u.sessions(&l, 2001), 1);
        assert_eq!(p.allocate(&mut u, |_, _| true).unwrap().1, 2000);
        // Ports outside the share and unknown addresses are ignored.
        u.release(&l, 1999);
        u.release(&lips(2)[1], 2000);
        assert_eq!(u.sessions(&l, 2000), 1);
    }

    #[test]
    fn every_address_is_found_among_many() {
        let mut u = PortUse::new(0, 1, (2000, 2001)).unwrap();
        let all: Vec<Addr> = (0..300u32)
            .map(|i| crate::types::addr(std::net::Ipv4Addr::from(0x0a03_0000 + i).into()))
            .collect();
        // Pools of 1, 2, 4, ... addresses, overlapping: the map grows.
        let mut pools = Vec::new();
        for n in [1, 2, 4, 8, 16, 64, 200, 300] {
            pools.push(LaddrPool::new(&all[..n], &mut u).unwrap());
        }
        for (i, a) in all.iter().enumerate() {
            assert_eq!(u.find(a), Some(u32::try_from(i).unwrap()));
        }
        // Consecutive addresses spread over the map: most are found at
        // their own slot.
        let home = all
            .iter()
            .filter(|a| {
                let v = u.slots[slot_of(a, u.slots.len())];
                v != 0 && u.laddrs[(v - 1) as usize] == **a
            })
            .count();
        assert!(home > all.len() / 2, "{home} of {} at home", all.len());
        assert_eq!(u.find(&lips(1)[0]), None);
        // A pool counts releases of its own addresses only.
        let p = &mut pools[1];
        let (a, port) = p.allocate(&mut u, |_, _| false).unwrap();
        assert_eq!(p.in_use(), [1, 0]);
        p.release(u32::try_from(all.len()).unwrap());
        p.release(u.find(&all[250]).unwrap());
        assert_eq!(p.in_use(), [1, 0]);
        let id = u.release(&a, port).unwrap();
        p.release(id);
        assert_eq!(p.in_use(), [0, 0]);
        assert_eq!(u.sessions(&a, port), 0);
    }

    #[test]
    fn pools_sharing_an_address_share_its_counts() {
        // Two services with the same local address: a pair one of them
        // gave out is checked by the other, whose connections may go to
        // the same real server.
        let mut u = PortUse::new(0, 1, (2000, 2000)).unwrap();
        let mut a = LaddrPool::new(&lips(1), &mut u).unwrap();
        let mut b = LaddrPool::new(&lips(1), &mut u).unwrap();
        assert!(a.allocate(&mut u, |_, _| panic!("unused")).is_some());
        assert_eq!(b.allocate(&mut u, |_, _| true), None);
        assert!(b.allocate(&mut u, |_, _| false).is_some());
        assert_eq!(u.sessions(&lips(1)[0], 2000), 2);
    }

    #[test]
    fn each_address_at_one_port_then_the_next_port() {
        // The order that keeps consecutive connections on one line of
        // each address's counts.
        let mut u = PortUse::new(0, 1, (2000, 2001)).unwrap();
        let l = lips(3);
        let mut p = LaddrPool::new(&l, &mut u).unwrap();
        let asked = std::cell::Cell::new(0);
        let ask = |_: &Addr, _: u16| {
            asked.set(asked.get() + 1);
            false
        };
        let got: Vec<(Addr, u16)> = (0..7).map(|_| p.allocate(&mut u, ask).unwrap()).collect();
        let want = [
            (l[0], 2000),
            (l[1], 2000),
            (l[2], 2000),
            (l[0], 2001),
            (l[1], 2001),
            (l[2], 2001),
            // Every pair in use: the ring starts again, asking this time.
            (l[0], 2000),
        ];
        assert_eq!(got, want);
        assert_eq!(asked.get(), 1, "only the seventh pair was in use");
    }

    #[test]
    fn addresses_in_turn_and_use_counts() {
        let mut u = PortUse::new(0, 1, DEFAULT_PORT_RANGE).unwrap();
        let mut p = LaddrPool::new(&lips(2), &mut u).unwrap();
        let (a, _) = p.allocate(&mut u, |_, _| false).unwrap();
        let (b, _) = p.allocate(&mut u, |_, _| false).unwrap();
        assert_ne!(a, b);
        assert_eq!(p.in_use(), [1, 1]);
        for _ in 0..2 {
            let id = u.release(&a, 1025).unwrap();
            p.release(id);
        }
        assert_eq!(p.in_use(), [0, 1]);
        // When one address is exhausted, the next one serves: make every
        // pair of the first address used, then refuse them.
        let first = p.laddrs()[0];
        let id = u.find(&first).unwrap();
        u.counts[id as usize].fill(1);
        let (c, _) = p.allocate(&mut u, |l, _| *l == first).unwrap();
        assert_eq!(c, p.laddrs()[1]);
        for l in lips(2) {
            let id = u.find(&l).unwrap();
            u.counts[id as usize].fill(1);
        }
        assert_eq!(p.allocate(&mut u, |_, _| true), None);
    }

    #[test]
    fn peer_addresses_are_reserved_never_allocated() {
        let mut u = PortUse::new(0, 1, (2000, 2003)).unwrap();
        let l = lips(3);
        let mut p = LaddrPool::with_peers(&l[..1], &l[1..], &mut u).unwrap();
        let mut given = HashSet::new();
        while let Some(pair) = p.allocate(&mut u, |_, _| true) {
            assert_eq!(pair.0, l[0], "only this director's address");
            assert!(given.insert(pair));
        }
        assert_eq!(given.len(), 4);
        let id = u.reserve(&l[2], 2001).unwrap();
        assert!(p.reserve(id));
        assert_eq!(p.in_use(), [4, 0, 1]);
        assert_eq!(p.laddrs(), l.as_slice());
        let id = u.release(&l[2], 2001).unwrap();
        p.release(id);
        assert_eq!(p.in_use(), [4, 0, 0]);
        assert_eq!(
            LaddrPool::with_peers(&[], &l, &mut u).unwrap_err(),
            LaddrError::Empty
        );
    }

    #[test]
    fn bad_pools() {
        let mut u = PortUse::new(0, 1, DEFAULT_PORT_RANGE).unwrap();
        assert_eq!(LaddrPool::new(&[], &mut u).unwrap_err(), LaddrError::Empty);
        assert!(matches!(
            PortUse::new(0, 1, (10, 5)),
            Err(LaddrError::BadRange { .. })
        ));
        assert!(matches!(
            PortUse::new(3, 4, (1024, 1026)),
            Err(LaddrError::TooManyWorkers { .. })
        ));
        assert_eq!(owner_of(1027, 4), 3);
    }
}
