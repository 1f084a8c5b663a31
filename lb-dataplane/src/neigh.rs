//! A worker's neighbour table: the MAC of each next hop, learned from ARP
//! or IPv6 Neighbor Discovery (or configured), with ageing, ARP requests
//! and Neighbor Solicitations for unknown next hops, and a small, bounded
//! queue of frames waiting for an answer.
//!
//! Everything is sized at start: the table refuses new entries when full
//! (counted) instead of growing, and at most [`MAX_HELD`] frames wait, each
//! for at most [`HOLD_SECS`] seconds.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use arrayvec::ArrayVec;
use lb_core::session::{self, Addr};
use lb_core::wire::{arp, ethernet, ndisc, MacAddr};

use crate::dpdk::{Mbuf, Mempool};

/// Learned entries live this long without being refreshed (s).
pub const AGE_SECS: u32 = 300;
/// An unanswered next hop is asked again after this long (s).
const ASK_EVERY: u32 = 1;
/// Frames held for resolution, in all.
pub const MAX_HELD: usize = 64;
/// How long a held frame waits (s).
pub const HOLD_SECS: u32 = 3;
/// Entries the table holds.
pub const CAPACITY: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: MacAddr,
    port: u16,
    /// 0 for static entries.
    expires: u32,
}

/// What became of a frame sent to a next hop.
#[derive(Debug)]
pub enum Resolved {
    /// The MACs are set: send it.
    Send(Mbuf),
    /// Waiting for ARP; an ARP request to send may come with it.
    Held { request: Option<Mbuf> },
    /// Dropped: nothing can be held, or no request can be made.
    Dropped,
}

/// The MAC last resolved for a real-server handle (the engine's `dest`):
/// one load on the packet path instead of a hash lookup. It holds while the
/// table's generation is unchanged, the packet's next hop is its `hop`, and
/// it has not aged.
#[derive(Debug, Clone, Copy, Default)]
struct Remembered {
    hop: Addr,
    mac: MacAddr,
    expires: u32,
    generation: u32,
}

/// One worker's neighbours.
#[derive(Debug)]
pub struct Neighbors {
    entries: HashMap<Addr, Entry, ahash::RandomState>,
    asked: HashMap<Addr, u32, ahash::RandomState>,
    held: ArrayVec<(Addr, u16, u32, Mbuf), MAX_HELD>,
    /// By real-server handle; sized between bursts ([`Self::size_dests`]).
    by_dest: Vec<Remembered>,
    /// Moves on every change to `entries`, which forgets all of `by_dest`.
    generation: u32,
    /// Each port's MAC and addresses (prefix lengths), by port index.
    ports: Vec<(MacAddr, Vec<(IpAddr, u8)>)>,
    pub table_full: u64,
    pub hold_full: u64,
    pub hold_expired: u64,
    pub requests_sent: u64,
}

impl Neighbors {
    /// A table for ports described by (MAC, addresses), in port order.
    pub fn new(ports: Vec<(MacAddr, Vec<(IpAddr, u8)>)>) -> Neighbors {
        Neighbors {
            entries: HashMap::with_capacity_and_hasher(CAPACITY, ahash::RandomState::new()),
            asked: HashMap::with_capacity_and_hasher(CAPACITY, ahash::RandomState::new()),
            held: ArrayVec::new(),
            by_dest: Vec::new(),
            generation: 1,
            ports,
            table_full: 0,
            hold_full: 0,
            hold_expired: 0,
            requests_sent: 0,
        }
    }

    /// Room for real-server handles below `n` (call between bursts: it may
    /// allocate).
    pub fn size_dests(&mut self, n: usize) {
        if n > self.by_dest.len() {
            self.by_dest.resize(n, Remembered::default());
        }
    }

    fn changed(&mut self) {
        // 0 is the generation of a slot never filled.
        self.generation = self.generation.wrapping_add(1).max(1);
    }

    /// A configured neighbour; it never ages.
    pub fn add_static(&mut self, ip: Addr, mac: MacAddr, port: u16) {
        self.changed();
        self.entries.insert(
            ip,
            Entry {
                mac,
                port,
                expires: 0,
            },
        );
    }

    /// Forgets `ip`, static or learned; whether it was known.
    pub fn remove(&mut self, ip: Addr) -> bool {
        self.changed();
        self.asked.remove(&ip);
        self.entries.remove(&ip).is_some()
    }

    /// Every entry not aged: (address, MAC, port, seconds left, 0 for a
    /// static one).
    pub fn entries(&self, now: u32) -> Vec<(IpAddr, MacAddr, u16, u32)> {
        let mut out: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires == 0 || e.expires > now)
            .map(|(a, e)| (session::ip(a), e.mac, e.port, e.expires.saturating_sub(now)))
            .collect();
        out.sort_unstable_by_key(|e| e.0);
        out
    }

    /// Learns (or refreshes) `ip` at `mac` behind `port`; returns the frames
    /// that were waiting for it, MACs set, to send.
    pub fn learn(
        &mut self,
        ip: Addr,
        mac: MacAddr,
        port: u16,
        now: u32,
        out: &mut Vec<(u16, Mbuf)>,
    ) {
        let full = self.entries.len() >= CAPACITY;
        match self.entries.get_mut(&ip) {
            Some(e) if e.expires == 0 => return,
            Some(e) => {
                e.mac = mac;
                e.port = port;
                e.expires = now + AGE_SECS;
            }
            None if full => {
                self.table_full += 1;
                return;
            }
            None => {
                self.entries.insert(
                    ip,
                    Entry {
                        mac,
                        port,
                        expires: now + AGE_SECS,
                    },
                );
            }
        }
        self.changed();
        self.asked.remove(&ip);
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].0 == ip {
                let (_, p, _, mut m) = self.held.swap_remove(i);
                self.set_macs(&mut m, p, mac);
                out.push((p, m));
            } else {
                i += 1;
            }
        }
    }

    fn set_macs(&self, m: &mut Mbuf, port: u16, dst: MacAddr) {
        let src = self
            .ports
            .get(usize::from(port))
            .map_or(MacAddr::ZERO, |p| p.0);
        let mut eth = ethernet::Frame::new_unchecked(m.data_mut());
        eth.set_dst(dst);
        eth.set_src(src);
    }

    /// `next_hop`'s MAC if known and not aged: first where `dest` remembers
    /// it, then in the table (remembering it there for next time).
    fn lookup(&mut self, next_hop: Addr, dest: u32, now: u32) -> Option<MacAddr> {
        let slot = usize::try_from(dest).unwrap_or(usize::MAX);
        if let Some(r) = self.by_dest.get(slot) {
            if r.generation == self.generation
                && r.hop == next_hop
                && (r.expires == 0 || r.expires > now)
            {
                return Some(r.mac);
            }
        }
        let e = self.entries.get(&next_hop)?;
        if e.expires != 0 && e.expires <= now {
            return None;
        }
        let (mac, expires) = (e.mac, e.expires);
        if let Some(r) = self.by_dest.get_mut(slot) {
            *r = Remembered {
                hop: next_hop,
                mac,
                expires,
                generation: self.generation,
            };
        }
        Some(mac)
    }

    /// Prepares `m` for `next_hop` behind `port`; `dest` is the engine's
    /// handle of the real server it goes to, or `NO_DEST`.
    pub fn resolve(
        &mut self,
        mut m: Mbuf,
        port: u16,
        next_hop: Addr,
        dest: u32,
        now: u32,
        pool: &Mempool,
    ) -> Resolved {
        if let Some(mac) = self.lookup(next_hop, dest, now) {
            self.set_macs(&mut m, port, mac);
            return Resolved::Send(m);
        }
        let target = session::ip(&next_hop);
        if self.held.is_full() {
            self.hold_full += 1;
            return Resolved::Dropped;
        }
        self.held.push((next_hop, port, now + HOLD_SECS, m));
        let due = self
            .asked
            .get(&next_hop)
            .is_none_or(|&t| now >= t + ASK_EVERY);
        let request = if due {
            self.request(port, target, pool)
        } else {
            None
        };
        if request.is_some() {
            self.asked.insert(next_hop, now);
            self.requests_sent += 1;
        }
        Resolved::Held { request }
    }

    /// An ARP request or a Neighbor Solicitation for `target` out of
    /// `port`, from the port's address of the target's family on the
    /// target's network (or its first such address).
    fn request(&self, port: u16, target: IpAddr, pool: &Mempool) -> Option<Mbuf> {
        let (mac, addrs) = self.ports.get(usize::from(port))?;
        let same_family = |(a, _): &&(IpAddr, u8)| a.is_ipv4() == target.is_ipv4();
        let in_net = |(a, len): &&(IpAddr, u8)| same_net(*a, target, *len);
        // `same_net` holds only within a family.
        let src = addrs
            .iter()
            .find(in_net)
            .or_else(|| addrs.iter().find(same_family))?
            .0;
        match (src, target) {
            (IpAddr::V4(src), IpAddr::V4(target)) => broadcast_request(*mac, src, target, pool),
            (IpAddr::V6(src), IpAddr::V6(target)) => {
                frame(pool, |f| ndisc::write_solicit(f, *mac, src, target))
            }
            _ => None,
        }
    }

    /// A gratuitous ARP for `ip` out of `port` (a request whose sender and
    /// target are both `ip`), or for an IPv6 `ip` an unsolicited Neighbor
    /// Advertisement to all nodes, so that neighbours holding a stale MAC
    /// for it update; `None` for a port without addresses of its family
    /// (an exception port, say) or when the pool is empty.
    pub fn announce(&self, port: u16, ip: IpAddr, pool: &Mempool) -> Option<Mbuf> {
        let (mac, addrs) = self.ports.get(usize::from(port))?;
        if !addrs.iter().any(|(a, _)| a.is_ipv4() == ip.is_ipv4()) {
            return None;
        }
        match ip {
            IpAddr::V4(ip) => broadcast_request(*mac, ip, ip, pool),
            IpAddr::V6(ip) => frame(pool, |f| {
                ndisc::write_advert(
                    f,
                    (*mac, ndisc::multicast_mac(ndisc::ALL_NODES)),
                    (ip, ndisc::ALL_NODES),
                    ndisc::flags::ROUTER | ndisc::flags::OVERRIDE,
                    true,
                )
            }),
        }
    }

    /// Ports in the table.
    pub fn ports(&self) -> usize {
        self.ports.len()
    }

    /// Drops held frames that waited too long and forgets aged entries;
    /// returns how many frames were dropped.
    pub fn expire(&mut self, now: u32) -> usize {
        let before = self.held.len();
        self.held.retain(|(_, _, deadline, _)| *deadline > now);
        let dropped = before - self.held.len();
        self.hold_expired += dropped as u64;
        let entries = self.entries.len();
        self.entries
            .retain(|_, e| e.expires == 0 || e.expires > now);
        if self.entries.len() != entries {
            self.changed();
        }
        dropped
    }

    /// Entries now (for reports).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A broadcast ARP request from `mac`/`src` for `target`.
/// Whether `a` and `b` are of one family and share their first `len` bits.
fn same_net(a: IpAddr, b: IpAddr, len: u8) -> bool {
    let (x, y, bits) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let len = u32::from(len).min(bits);
    len == 0 || (x ^ y) >> (bits - len) == 0
}

/// A Neighbor Discovery frame, written by `write` into a fresh mbuf of
/// [`ndisc::FRAME_LEN`] bytes.
fn frame(pool: &Mempool, write: impl FnOnce(&mut [u8]) -> Option<usize>) -> Option<Mbuf> {
    let mut m = pool.alloc()?;
    let room = m.append(u16::try_from(ndisc::FRAME_LEN).ok()?)?;
    (write(room)? == ndisc::FRAME_LEN).then_some(m)
}

fn broadcast_request(
    mac: MacAddr,
    src: Ipv4Addr,
    target: Ipv4Addr,
    pool: &Mempool,
) -> Option<Mbuf> {
    let mut m = pool.alloc()?;
    let frame = m.append(u16::try_from(ethernet::HEADER_LEN + arp::PACKET_LEN).ok()?)?;
    {
        let mut eth = ethernet::Frame::new_unchecked(&mut frame[..]);
        eth.set_dst(MacAddr::BROADCAST);
        eth.set_src(mac);
        eth.set_ethertype(ethernet::ethertype::ARP);
    }
    arp::Packet::new_unchecked(&mut frame[ethernet::HEADER_LEN..]).fill(
        arp::op::REQUEST,
        mac,
        src,
        MacAddr::ZERO,
        target,
    );
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::engine::NO_DEST;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);

    fn ip(s: &str) -> Addr {
        session::addr(s.parse().unwrap())
    }

    fn table() -> Neighbors {
        let mut n = Neighbors::new(vec![(MacAddr([2, 0, 0, 0, 0, 1]), vec![])]);
        n.size_dests(8);
        n
    }

    #[test]
    fn remembers_by_real_server_and_forgets_on_any_change() {
        let mut n = table();
        n.add_static(ip("10.1.0.5"), A, 0);
        assert_eq!(n.lookup(ip("10.1.0.5"), 3, 10), Some(A));
        assert_eq!(n.by_dest[3].generation, n.generation, "remembered");
        assert_eq!(n.lookup(ip("10.1.0.5"), 3, 10), Some(A));

        // A learned MAC for another next hop moves the generation: the slot
        // no longer answers, and the table does.
        let mut out = Vec::new();
        n.learn(ip("10.1.0.6"), B, 0, 10, &mut out);
        assert_ne!(n.by_dest[3].generation, n.generation);
        assert_eq!(n.lookup(ip("10.1.0.5"), 3, 11), Some(A));

        // A handle reused for another server answers for that one only.
        assert_eq!(n.lookup(ip("10.1.0.6"), 3, 11), Some(B));
        assert_eq!(n.lookup(ip("10.1.0.5"), 3, 11), Some(A));
    }

    #[test]
    fn a_remembered_mac_ages_with_its_entry() {
        let mut n = table();
        let mut out = Vec::new();
        n.learn(ip("10.1.0.7"), A, 0, 100, &mut out);
        assert_eq!(n.lookup(ip("10.1.0.7"), 1, 100), Some(A));
        assert_eq!(n.lookup(ip("10.1.0.7"), 1, 100 + AGE_SECS), None);
        // Refreshed, it answers again.
        n.learn(ip("10.1.0.7"), B, 0, 100 + AGE_SECS, &mut out);
        assert_eq!(n.lookup(ip("10.1.0.7"), 1, 100 + AGE_SECS), Some(B));
    }

    #[test]
    fn no_dest_and_unknown_handles_use_the_table_alone() {
        let mut n = table();
        n.add_static(ip("10.1.0.5"), A, 0);
        assert_eq!(n.lookup(ip("10.1.0.5"), NO_DEST, 1), Some(A));
        assert_eq!(n.lookup(ip("10.1.0.5"), 1000, 1), Some(A));
        assert!(n.by_dest.iter().all(|r| r.generation == 0));
        assert_eq!(n.lookup(ip("10.9.9.9"), 2, 1), None);
    }
}
