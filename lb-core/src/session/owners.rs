//! Which worker holds a NAT session, by its reply tuple, shared by all
//! workers: NAT replies (real server to client) carry no port the engine
//! chose, so RSS may give them to any worker; the one that finds no session
//! asks here and hands the packet over.
//!
//! A fixed array of atomic words, one per slot: the upper 48 bits are a tag
//! from the tuple's hash, the lower 16 the owner. The creating worker
//! overwrites its slot; a reader trusts a slot only when the tag matches.
//! Nothing locks or allocates after creation. Two live tuples that share a
//! slot cost the older one its hand-overs (its replies are then dropped as
//! sessionless and counted); entries are never cleared, and a stale one only
//! sends a sessionless packet to a worker that drops it instead.

use std::sync::atomic::{AtomicU64, Ordering};

use super::FlowKey;

/// The shared table.
#[derive(Debug)]
pub struct NatOwners {
    slots: Box<[AtomicU64]>,
    mask: u64,
    hasher: ahash::RandomState,
}

impl NatOwners {
    /// A table of at least `slots` slots (rounded up to a power of two).
    pub fn new(slots: usize) -> NatOwners {
        let n = slots.max(2).next_power_of_two();
        NatOwners {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: (n - 1) as u64,
            hasher: ahash::RandomState::new(),
        }
    }

    fn place(&self, reply: &FlowKey) -> (usize, u64) {
        let h = self.hasher.hash_one(reply);
        // The tag is never 0, so an empty slot never matches.
        let tag = (h >> 16) | (1 << 47);
        // The mask came from a usize, so the index fits one.
        (usize::try_from(h & self.mask).unwrap_or(0), tag << 16)
    }

    /// Records `worker` as the owner of the session whose replies carry
    /// `reply`.
    #[inline]
    pub fn set(&self, reply: &FlowKey, worker: u16) {
        let (i, tag) = self.place(reply);
        self.slots[i].store(tag | u64::from(worker), Ordering::Release);
    }

    /// The owner of `reply`'s session, if one was recorded.
    #[inline]
    pub fn get(&self, reply: &FlowKey) -> Option<u16> {
        let (i, tag) = self.place(reply);
        let v = self.slots[i].load(Ordering::Acquire);
        (v & !0xffff == tag).then_some(u16::try_from(v & 0xffff).unwrap_or(u16::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::addr_v4;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            src: addr_v4("10.0.0.5".parse().unwrap()),
            dst: addr_v4("10.9.0.2".parse().unwrap()),
            sport: 8080,
            dport: port,
            proto: 6,
        }
    }

    #[test]
    fn remembers_owners_and_knows_nothing_else() {
        let t = NatOwners::new(1 << 12);
        // The hash is seeded at random: two tuples share a slot one time
        // in 4,096 (and then the later one wins, as documented), so the
        // second tuple is one in another slot.
        let other = (2..)
            .find(|&p| t.place(&key(p)).0 != t.place(&key(1)).0)
            .unwrap();
        assert_eq!(t.get(&key(1)), None);
        t.set(&key(1), 1);
        t.set(&key(other), 0);
        assert_eq!(t.get(&key(1)), Some(1));
        assert_eq!(t.get(&key(other)), Some(0));
        assert_eq!(t.get(&key(other + 1)), None);
        t.set(&key(1), 3);
        assert_eq!(t.get(&key(1)), Some(3), "the latest owner wins");
    }
}
