//! Locality-based least connection, with and without replication
//! (ip_vs_lblc.c, ip_vs_lblcr.c): a table from destination address to the
//! server (lblc) or set of servers (lblcr) that served it, for cache
//! clusters.
//!
//! The table is preallocated to IPVS's maximum (16 x 1024 entries) and never
//! grows: when it is full, picks are made without caching them until
//! [`Locality::expire`] has made room, which it does as IPVS's periodic timer
//! does (entries idle for 6 minutes when full; every 30th call, entries
//! idle for a day).

use std::collections::HashMap;
use std::net::IpAddr;

use arrayvec::ArrayVec;

use super::{available, lc, RsLoad};

/// Entries unused this long may go when the table is full (s).
const ENTRY_TIMEOUT: u64 = 6 * 60;
/// Entries unused this long go at the full check; lblcr also drops a
/// set's busiest member after a set has not changed this long (s).
pub const EXPIRATION: u64 = 24 * 60 * 60;
/// IPVS's table: 1024 buckets x 16.
pub const MAX_ENTRIES: usize = 1024 * 16;
/// The most servers an lblcr set holds.
const MAX_SET: usize = 16;
/// Every this many calls of `expire`, the full check runs.
const FULL_CHECK_EVERY: u32 = 30;

#[derive(Debug, Clone)]
struct Entry {
    last_use: u64,
    last_mod: u64,
    set: ArrayVec<u16, MAX_SET>,
}

/// One worker's locality table for one service.
#[derive(Debug)]
pub(super) struct Locality {
    map: HashMap<IpAddr, Entry, ahash::RandomState>,
    counter: u32,
}

/// IPVS's lblc/lblcr overload test: the server has more active connections
/// than its weight while some server is less than half loaded.
fn overloaded(d: usize, weights: &[u32], loads: &[RsLoad]) -> bool {
    u64::from(loads[d].active) > u64::from(weights[d])
        && (0..weights.len()).any(|i| u64::from(loads[i].active) * 2 < u64::from(weights[i]))
}

/// The least loaded available member of a set (weighted by overhead).
fn set_min(set: &[u16], weights: &[u32], loads: &[RsLoad]) -> Option<usize> {
    let mut least: Option<usize> = None;
    for d in set
        .iter()
        .map(|&d| usize::from(d))
        .filter(|&d| d < weights.len())
    {
        if !available(weights, loads, d) {
            continue;
        }
        match least {
            None => least = Some(d),
            Some(l) => {
                if loads[l].overhead().saturating_mul(u64::from(weights[d]))
                    > loads[d].overhead().saturating_mul(u64::from(weights[l]))
                {
                    least = Some(d);
                }
            }
        }
    }
    least
}

/// The most loaded member of a set with a positive weight.
fn set_max(set: &[u16], weights: &[u32], loads: &[RsLoad]) -> Option<usize> {
    let mut most: Option<usize> = None;
    for d in set
        .iter()
        .map(|&d| usize::from(d))
        .filter(|&d| d < weights.len() && weights[d] > 0)
    {
        match most {
            None => most = Some(d),
            Some(m) => {
                if loads[m].overhead().saturating_mul(u64::from(weights[d]))
                    < loads[d].overhead().saturating_mul(u64::from(weights[m]))
                {
                    most = Some(d);
                }
            }
        }
    }
    most
}

impl Locality {
    pub(super) fn new() -> Locality {
        Locality {
            map: HashMap::with_capacity_and_hasher(MAX_ENTRIES, ahash::RandomState::new()),
            counter: 1,
        }
    }

    fn index(d: usize) -> u16 {
        u16::try_from(d).unwrap_or(super::NONE)
    }

    pub(super) fn lblc(
        &mut self,
        weights: &[u32],
        loads: &[RsLoad],
        dst: IpAddr,
        now: u64,
    ) -> Option<usize> {
        if let Some(en) = self.map.get_mut(&dst) {
            en.last_use = now;
            let d = usize::from(en.set[0]);
            if d < weights.len() && available(weights, loads, d) && !overloaded(d, weights, loads) {
                return Some(d);
            }
        }
        let d = lc::wlc(weights, loads)?;
        let full = self.map.len() >= MAX_ENTRIES;
        match self.map.get_mut(&dst) {
            Some(en) => {
                en.set.clear();
                en.set.push(Self::index(d));
                en.last_mod = now;
            }
            None if !full => {
                let mut set = ArrayVec::new();
                set.push(Self::index(d));
                self.map.insert(
                    dst,
                    Entry {
                        last_use: now,
                        last_mod: now,
                        set,
                    },
                );
            }
            None => {}
        }
        Some(d)
    }

    pub(super) fn lblcr(
        &mut self,
        weights: &[u32],
        loads: &[RsLoad],
        dst: IpAddr,
        now: u64,
    ) -> Option<usize> {
        if let Some(en) = self.map.get_mut(&dst) {
            en.last_use = now;
            let dest = set_min(&en.set, weights, loads);
            if en.set.len() > 1 && now > en.last_mod + EXPIRATION {
                if let Some(m) = set_max(&en.set, weights, loads) {
                    en.set.retain(|d| usize::from(*d) != m);
                    en.last_mod = now;
                }
            }
            if let Some(d) = dest.filter(|&d| !overloaded(d, weights, loads)) {
                return Some(d);
            }
            let d = lc::wlc(weights, loads)?;
            let idx = Self::index(d);
            if !en.set.contains(&idx) && !en.set.is_full() {
                en.set.push(idx);
                en.last_mod = now;
            }
            return Some(d);
        }
        let d = lc::wlc(weights, loads)?;
        if self.map.len() < MAX_ENTRIES {
            let mut set = ArrayVec::new();
            set.push(Self::index(d));
            self.map.insert(
                dst,
                Entry {
                    last_use: now,
                    last_mod: now,
                    set,
                },
            );
        }
        Some(d)
    }

    /// IPVS's periodic collection (call about once a minute).
    pub(super) fn expire(&mut self, now: u64) {
        if self.counter.is_multiple_of(FULL_CHECK_EVERY) {
            self.map.retain(|_, e| now < e.last_use + EXPIRATION);
            self.counter = 1;
            return;
        }
        if self.map.len() < MAX_ENTRIES {
            self.counter += 1;
            return;
        }
        let mut goal = (self.map.len() + 1 - MAX_ENTRIES) * 4 / 3;
        goal = goal.clamp(1, MAX_ENTRIES / 2);
        self.map.retain(|_, e| {
            if goal > 0 && now >= e.last_use + ENTRY_TIMEOUT {
                goal -= 1;
                false
            } else {
                true
            }
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(active: u32) -> RsLoad {
        RsLoad {
            active,
            inactive: 0,
            overloaded: false,
        }
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn lblc_keeps_a_destination_on_its_server() {
        let mut loc = Locality::new();
        let weights = [10, 10];
        let mut loads = [l(0), l(0)];
        assert_eq!(loc.lblc(&weights, &loads, ip(1), 0), Some(0));
        loads[0].active = 5;
        // wlc would now choose 1, but the cache keeps destination 1 on 0.
        assert_eq!(loc.lblc(&weights, &loads, ip(1), 1), Some(0));
        assert_eq!(loc.lblc(&weights, &loads, ip(2), 1), Some(1));
        // Server 0 above its weight while 1 is under half loaded: move.
        loads[0].active = 11;
        loads[1].active = 4;
        assert_eq!(loc.lblc(&weights, &loads, ip(1), 2), Some(1));
        assert_eq!(
            loc.lblc(&weights, &loads, ip(1), 3),
            Some(1),
            "the entry moved with it"
        );
    }

    #[test]
    fn lblcr_replicates_under_load_and_shrinks_after_expiry() {
        let mut loc = Locality::new();
        let weights = [10, 10, 10];
        let mut loads = [l(0), l(0), l(0)];
        assert_eq!(loc.lblcr(&weights, &loads, ip(1), 0), Some(0));
        // 0 overloaded (11 > 10) while 2 is under half: a second server joins.
        loads[0].active = 11;
        loads[1].active = 6;
        assert_eq!(loc.lblcr(&weights, &loads, ip(1), 10), Some(2));
        loads[0].active = 3;
        loads[2].active = 4;
        assert_eq!(
            loc.lblcr(&weights, &loads, ip(1), 20),
            Some(0),
            "the set's least loaded member"
        );
        // After a day without change, the busiest member (2) leaves.
        loads[2].active = 9;
        assert_eq!(loc.lblcr(&weights, &loads, ip(1), 20 + EXPIRATION), Some(0));
        loads[0].active = 9;
        loads[2].active = 0;
        assert_eq!(
            loc.lblcr(&weights, &loads, ip(1), 30 + EXPIRATION),
            Some(0),
            "2 is no longer in the set"
        );
    }

    #[test]
    fn table_is_bounded_and_collected() {
        let mut loc = Locality::new();
        let weights = [1, 1];
        let loads = [l(0), l(0)];
        for i in 0..u32::try_from(MAX_ENTRIES + 100).unwrap() {
            assert!(loc.lblc(&weights, &loads, ip(i), 0).is_some());
        }
        assert_eq!(loc.len(), MAX_ENTRIES, "picks go on uncached when full");
        loc.expire(ENTRY_TIMEOUT - 1);
        assert_eq!(loc.len(), MAX_ENTRIES, "nothing idle long enough yet");
        loc.expire(ENTRY_TIMEOUT);
        assert!(loc.len() < MAX_ENTRIES);
        // The full check (every 30th call) drops what is idle for a day.
        for _ in 0..FULL_CHECK_EVERY {
            loc.expire(EXPIRATION + 1);
        }
        assert_eq!(loc.len(), 0);
    }
}
