//! The session table: a preallocated array, chained hash index, timer wheel.

use super::{flags, FlowKey, Session, NIL};

/// Bytes of table per session: the session plus its share of the heads
/// (at most two per session, one per tuple).
pub const SESSION_BYTES: usize = std::mem::size_of::<Session>() + 8;
const _: () = assert!(
    SESSION_BYTES <= 128,
    "a session must cost at most 128 bytes"
);

/// Slots of the timer wheel (seconds it covers in one turn).
const WHEEL_SLOTS: u32 = 4096;

/// A session's index in its table.
pub type SessionId = u32;

/// The table has no free session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// What became of sessions whose time came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExpireOutcome {
    /// Sessions removed.
    pub expired: u32,
    /// Sessions whose deadline had moved and were re-armed.
    pub rearmed: u32,
    /// Whether the budget ran out before the clock was caught up.
    pub more: bool,
}

/// One worker's sessions.
#[derive(Debug)]
pub struct SessionTable {
    sessions: Box<[Session]>,
    /// Bucket heads: refs (index * 2 + direction), NIL when empty.
    heads: Box<[u32]>,
    mask: u64,
    seed: [u64; 2],
    free: u32,
    len: u32,
    wheel: Box<[u32]>,
    /// The last second whose wheel slot was processed.
    clock: u32,
}

const DIR_IN: u32 = 0;
const DIR_OUT: u32 = 1;

#[inline]
#[allow(clippy::cast_possible_truncation)] // keeping both 64-bit halves is the point
fn fold(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    // Both halves of the 128-bit product, folded.
    (full as u64) ^ ((full >> 64) as u64)
}

#[inline]
fn word(a: &[u8; 16], i: usize) -> u64 {
    u64::from_ne_bytes([
        a[i],
        a[i + 1],
        a[i + 2],
        a[i + 3],
        a[i + 4],
        a[i + 5],
        a[i + 6],
        a[i + 7],
    ])
}

impl SessionTable {
    /// A table for `capacity` sessions, all memory allocated now.
    pub fn with_capacity(capacity: u32) -> SessionTable {
        let capacity = capacity.clamp(1, NIL / 2 - 1);
        let buckets = (u64::from(capacity) * 2).next_power_of_two();
        let mut sessions = vec![Session::EMPTY; capacity as usize].into_boxed_slice();
        for (i, s) in sessions.iter_mut().enumerate() {
            s.next_in = u32::try_from(i + 1)
                .ok()
                .filter(|&n| n < capacity)
                .unwrap_or(NIL);
        }
        let rs = ahash::RandomState::new();
        SessionTable {
            sessions,
            heads: vec![NIL; usize::try_from(buckets).unwrap_or(usize::MAX)].into_boxed_slice(),
            mask: buckets - 1,
            seed: [rs.hash_one(1u8), rs.hash_one(2u8) | 1],
            free: 0,
            len: 0,
            wheel: vec![NIL; WHEEL_SLOTS as usize].into_boxed_slice(),
            clock: 0,
        }
    }

    pub fn capacity(&self) -> u32 {
        u32::try_from(self.sessions.len()).unwrap_or(u32::MAX)
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.free == NIL
    }

    /// The table's clock: the last second expiry has processed.
    pub fn clock(&self) -> u32 {
        self.clock
    }

    /// Sets the clock before any session exists (a worker starting at a
    /// time other than 0).
    pub fn set_clock(&mut self, now: u32) {
        debug_assert!(self.is_empty());
        self.clock = now;
    }

    #[inline]
    fn bucket(&self, k: &FlowKey, dir: u32) -> usize {
        let mix = (u64::from(k.sport) << 32)
            | (u64::from(k.dport) << 16)
            | (u64::from(k.proto) << 8)
            | u64::from(dir);
        let mut h = fold(self.seed[0] ^ mix, 0x9e37_79b9_7f4a_7c15);
        h = fold(h ^ word(&k.src, 0), self.seed[1]);
        h = fold(h ^ word(&k.src, 8), 0xc2b2_ae3d_27d4_eb4f);
        h = fold(h ^ word(&k.dst, 0), self.seed[1]);
        h = fold(h ^ word(&k.dst, 8), 0x1656_67b1_9e37_79f9);
        // The mask keeps the value below the bucket count, a usize.
        usize::try_from(h & self.mask).unwrap_or(0)
    }

    #[inline]
    fn next_of(&self, r: u32) -> u32 {
        let s = &self.sessions[(r >> 1) as usize];
        if r & 1 == DIR_IN {
            s.next_in
        } else {
            s.next_out
        }
    }

    fn set_next(&mut self, r: u32, next: u32) {
        let s = &mut self.sessions[(r >> 1) as usize];
        if r & 1 == DIR_IN {
            s.next_in = next;
        } else {
            s.next_out = next;
        }
    }

    /// The buckets a tuple falls in as an inbound and as a reply tuple,
    /// for a burst to compute once and warm up ahead of the lookups.
    #[inline]
    pub fn buckets(&self, k: &FlowKey) -> (usize, usize) {
        (self.bucket(k, DIR_IN), self.bucket(k, DIR_OUT))
    }

    /// Reads a bucket's first entry: a burst does this for all its packets
    /// in one go, so the cache misses overlap instead of queueing.
    #[inline]
    pub fn warm_bucket(&self, bucket: usize) -> u32 {
        self.heads[bucket]
    }

    /// Reads the start, middle and end of an entry's session (116 bytes
    /// span up to three cache lines), for the same purpose.
    #[inline]
    pub fn warm_session(&self, r: u32) -> u32 {
        if r == NIL {
            0
        } else {
            let s = &self.sessions[(r >> 1) as usize];
            u32::from(s.client[0]) ^ u32::from(s.cport) ^ u32::from(s.timer_slot)
        }
    }

    /// The session whose client packets have this tuple.
    #[inline]
    pub fn lookup_in(&self, k: &FlowKey) -> Option<SessionId> {
        self.lookup_in_at(self.bucket(k, DIR_IN), k)
    }

    /// [`lookup_in`](Self::lookup_in) with the bucket already known.
    #[inline]
    pub fn lookup_in_at(&self, bucket: usize, k: &FlowKey) -> Option<SessionId> {
        let mut r = self.heads[bucket];
        while r != NIL {
            let s = &self.sessions[(r >> 1) as usize];
            if r & 1 == DIR_IN
                && s.cport == k.sport
                && s.vport == k.dport
                && s.proto == k.proto
                && s.client == k.src
                && s.vip == k.dst
            {
                return Some(r >> 1);
            }
            r = self.next_of(r);
        }
        None
    }

    /// The session whose real server's replies have this tuple.
    #[inline]
    pub fn lookup_out(&self, k: &FlowKey) -> Option<SessionId> {
        self.lookup_out_at(self.bucket(k, DIR_OUT), k)
    }

    /// [`lookup_out`](Self::lookup_out) with the bucket already known.
    #[inline]
    pub fn lookup_out_at(&self, bucket: usize, k: &FlowKey) -> Option<SessionId> {
        let mut r = self.heads[bucket];
        while r != NIL {
            let s = &self.sessions[(r >> 1) as usize];
            if r & 1 == DIR_OUT && s.outbound_key() == *k {
                return Some(r >> 1);
            }
            r = self.next_of(r);
        }
        None
    }

    /// Whether a reply tuple is taken (Full-NAT port allocation checks it).
    pub fn out_tuple_in_use(&self, k: &FlowKey) -> bool {
        self.lookup_out(k).is_some()
    }

    fn link(&mut self, id: SessionId, dir: u32, k: &FlowKey) {
        let b = self.bucket(k, dir);
        let r = id << 1 | dir;
        let head = self.heads[b];
        self.set_next(r, head);
        self.heads[b] = r;
    }

    fn unlink(&mut self, id: SessionId, dir: u32, k: &FlowKey) {
        let b = self.bucket(k, dir);
        let r = id << 1 | dir;
        let next = self.next_of(r);
        if self.heads[b] == r {
            self.heads[b] = next;
            return;
        }
        let mut prev = self.heads[b];
        while prev != NIL {
            let after = self.next_of(prev);
            if after == r {
                self.set_next(prev, next);
                return;
            }
            prev = after;
        }
        debug_assert!(false, "unlinking a session that is not in its bucket");
    }

    fn wheel_link(&mut self, id: SessionId) {
        let expires = self.sessions[id as usize].expires;
        // A deadline beyond one turn goes to the last slot of this turn and
        // is re-armed when that slot comes round.
        let at = expires.clamp(
            self.clock.wrapping_add(1),
            self.clock.wrapping_add(WHEEL_SLOTS - 1),
        );
        let slot = (at % WHEEL_SLOTS) as usize;
        let head = self.wheel[slot];
        {
            let s = &mut self.sessions[id as usize];
            s.timer_prev = NIL;
            s.timer_next = head;
            s.timer_slot = u16::try_from(slot).unwrap_or(0);
        }
        if head != NIL {
            self.sessions[head as usize].timer_prev = id;
        }
        self.wheel[slot] = id;
    }

    fn wheel_unlink(&mut self, id: SessionId, slot: usize) {
        let (prev, next) = {
            let s = &self.sessions[id as usize];
            (s.timer_prev, s.timer_next)
        };
        if prev == NIL {
            if self.wheel[slot] == id {
                self.wheel[slot] = next;
            }
        } else {
            self.sessions[prev as usize].timer_next = next;
        }
        if next != NIL {
            self.sessions[next as usize].timer_prev = prev;
        }
    }

    /// Inserts a session that expires at `expires` (seconds, table clock).
    /// The caller has checked that its tuples are not taken.
    pub fn insert(&mut self, mut s: Session, expires: u32) -> Result<SessionId, TableFull> {
        if self.free == NIL {
            return Err(TableFull);
        }
        let id = self.free;
        self.free = self.sessions[id as usize].next_in;
        s.flags |= flags::USED;
        s.expires = expires;
        self.sessions[id as usize] = s;
        self.link(id, DIR_IN, &s.inbound_key());
        if s.has_outbound() {
            self.link(id, DIR_OUT, &s.outbound_key());
        }
        self.wheel_link(id);
        self.len += 1;
        Ok(id)
    }

    /// Removes a session now.
    pub fn remove(&mut self, id: SessionId) {
        let s = self.sessions[id as usize];
        debug_assert!(s.flags & flags::USED != 0);
        self.unlink(id, DIR_IN, &s.inbound_key());
        if s.has_outbound() {
            self.unlink(id, DIR_OUT, &s.outbound_key());
        }
        self.wheel_unlink(id, usize::from(s.timer_slot));
        self.release(id);
    }

    fn release(&mut self, id: SessionId) {
        let s = &mut self.sessions[id as usize];
        *s = Session::EMPTY;
        s.next_in = self.free;
        self.free = id;
        self.len -= 1;
    }

    #[inline]
    pub fn get(&self, id: SessionId) -> &Session {
        &self.sessions[id as usize]
    }

    /// The session, to update its state, deadline or counters. Its tuples
    /// must not change (they are indexed).
    #[inline]
    pub fn get_mut(&mut self, id: SessionId) -> &mut Session {
        &mut self.sessions[id as usize]
    }

    /// Processes the wheel up to `now`, calling `on_expire` for each session
    /// whose deadline has passed before removing it (it may adjust other
    /// sessions, such as templates, through the table), and re-arming those
    /// whose deadline moved. At most `budget` sessions are examined, so a
    /// worker's pause stays short; the rest wait for the next call.
    pub fn expire(
        &mut self,
        now: u32,
        budget: u32,
        mut on_expire: impl FnMut(&mut SessionTable, SessionId) -> bool,
    ) -> ExpireOutcome {
        let mut out = ExpireOutcome::default();
        let mut examined = 0u32;
        while self.clock != now {
            let t = self.clock.wrapping_add(1);
            let slot = (t % WHEEL_SLOTS) as usize;
            // Detach the slot's list so re-armed sessions that land in the
            // same slot wait for its next turn.
            let mut cur = std::mem::replace(&mut self.wheel[slot], NIL);
            while cur != NIL {
                if examined == budget {
                    // Put the rest back and stop before this second.
                    self.sessions[cur as usize].timer_prev = NIL;
                    let mut tail = cur;
                    while self.sessions[tail as usize].timer_next != NIL {
                        tail = self.sessions[tail as usize].timer_next;
                    }
                    let head = self.wheel[slot];
                    self.sessions[tail as usize].timer_next = head;
                    if head != NIL {
                        self.sessions[head as usize].timer_prev = tail;
                    }
                    self.wheel[slot] = cur;
                    out.more = true;
                    return out;
                }
                examined += 1;
                let next = self.sessions[cur as usize].timer_next;
                if next != NIL {
                    self.sessions[next as usize].timer_prev = NIL;
                }
                let expires = self.sessions[cur as usize].expires;
                // Deadlines are compared on the wrapping clock.
                let due = expires.wrapping_sub(t) as i32 <= 0;
                if due && on_expire(self, cur) {
                    let s = self.sessions[cur as usize];
                    self.unlink(cur, DIR_IN, &s.inbound_key());
                    if s.has_outbound() {
                        self.unlink(cur, DIR_OUT, &s.outbound_key());
                    }
                    self.release(cur);
                    out.expired += 1;
                } else {
                    // Not due yet, or kept alive by the callback.
                    let saved = self.clock;
                    self.clock = t;
                    self.wheel_link(cur);
                    self.clock = saved;
                    out.rearmed += 1;
                }
                cur = next;
            }
            self.clock = t;
        }
        out
    }

    /// Every live session, for listings (control path).
    pub fn iter(&self) -> impl Iterator<Item = (SessionId, &Session)> {
        self.sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.flags & flags::USED != 0)
            .map(|(i, s)| (u32::try_from(i).unwrap_or(NIL), s))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{addr_v4, State};
    use super::*;
    use crate::service::ForwardMode;
    use std::net::Ipv4Addr;

    fn a(x: u32) -> [u8; 16] {
        addr_v4(Ipv4Addr::from(x))
    }

    fn fnat(i: u32) -> Session {
        Session::new(
            6,
            (a(0x0a00_0000 + i), 40000),
            (a(0xc612_000a), 80),
            (a(0x0a01_0001), 8080),
            (a(0x0a02_0001), u16::try_from(1024 + i % 60000).unwrap()),
            ForwardMode::Fnat,
            State::SynRecv,
        )
    }

    #[test]
    fn insert_lookup_both_ways_remove() {
        let mut t = SessionTable::with_capacity(16);
        let s = fnat(1);
        let id = t.insert(s, 60).unwrap();
        assert_eq!(t.lookup_in(&s.inbound_key()), Some(id));
        assert_eq!(t.lookup_out(&s.outbound_key()), Some(id));
        // The reply tuple does not match as an inbound one and vice versa.
        assert_eq!(t.lookup_in(&s.outbound_key()), None);
        assert_eq!(t.lookup_out(&s.inbound_key()), None);
        let mut other = s.inbound_key();
        other.sport += 1;
        assert_eq!(t.lookup_in(&other), None);
        assert_eq!(t.len(), 1);
        t.remove(id);
        assert_eq!(t.lookup_in(&s.inbound_key()), None);
        assert_eq!(t.lookup_out(&s.outbound_key()), None);
        assert!(t.is_empty());
    }

    #[test]
    fn dr_sessions_have_no_reply_tuple() {
        let mut t = SessionTable::with_capacity(4);
        let mut s = fnat(1);
        s = Session::new(
            6,
            (s.client, s.cport),
            (s.vip, s.vport),
            (s.rs, 80),
            ([0; 16], 0),
            ForwardMode::Dr,
            State::SynRecv,
        );
        let id = t.insert(s, 10).unwrap();
        assert!(!t.get(id).has_outbound());
        assert_eq!(t.lookup_out(&s.outbound_key()), None);
        assert_eq!(t.lookup_in(&s.inbound_key()), Some(id));
    }

    #[test]
    fn full_table_refuses_and_recovers() {
        let mut t = SessionTable::with_capacity(100);
        let ids: Vec<_> = (0..100).map(|i| t.insert(fnat(i), 60).unwrap()).collect();
        assert!(t.is_full());
        assert_eq!(t.insert(fnat(1000), 60), Err(TableFull));
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(
                t.lookup_in(&fnat(u32::try_from(i).unwrap()).inbound_key()),
                Some(id),
                "established untouched"
            );
        }
        t.remove(ids[50]);
        assert!(t.insert(fnat(1000), 60).is_ok());
    }

    #[test]
    fn many_sessions_with_colliding_buckets() {
        let mut t = SessionTable::with_capacity(20_000);
        let ids: Vec<_> = (0..20_000)
            .map(|i| t.insert(fnat(i), 60).unwrap())
            .collect();
        for (i, &id) in ids.iter().enumerate().step_by(3) {
            t.remove(id);
            assert_eq!(
                t.lookup_in(&fnat(u32::try_from(i).unwrap()).inbound_key()),
                None
            );
        }
        for (i, &id) in ids.iter().enumerate() {
            let s = fnat(u32::try_from(i).unwrap());
            let want = (i % 3 != 0).then_some(id);
            assert_eq!(t.lookup_in(&s.inbound_key()), want);
            assert_eq!(t.lookup_out(&s.outbound_key()), want);
        }
    }

    #[test]
    fn expiry_is_lazy_and_bounded() {
        let mut t = SessionTable::with_capacity(64);
        let a = t.insert(fnat(1), 10).unwrap();
        let b = t.insert(fnat(2), 10).unwrap();
        let c = t.insert(fnat(3), 5000).unwrap(); // beyond one wheel turn
                                                  // b's deadline moves on (a packet arrived); only a expires at 10.
        t.get_mut(b).expires = 30;
        let mut gone = Vec::new();
        let out = t.expire(10, 100, |_, id| {
            gone.push(id);
            true
        });
        assert_eq!(gone, [a]);
        assert_eq!(out.expired, 1);
        assert!(t.lookup_in(&fnat(2).inbound_key()).is_some());
        let out = t.expire(30, 100, |_, _| true);
        assert_eq!(out.expired, 1);
        assert_eq!(t.lookup_in(&fnat(2).inbound_key()), None);
        // c survives a full turn of the wheel and goes at 5000.
        t.expire(4999, 100, |_, _| true);
        assert_eq!(t.lookup_in(&fnat(3).inbound_key()), Some(c));
        t.expire(5000, 100, |_, _| true);
        assert!(t.is_empty());

        // The budget stops the sweep and the next call resumes it.
        for i in 0..50 {
            t.insert(fnat(100 + i), 5010).unwrap();
        }
        let out = t.expire(5010, 20, |_, _| true);
        assert!(out.more);
        assert_eq!(out.expired, 20);
        assert_eq!(t.len(), 30);
        let out = t.expire(5010, 100, |_, _| true);
        assert!(!out.more);
        assert!(t.is_empty());
    }

    #[test]
    fn callback_can_keep_a_session() {
        let mut t = SessionTable::with_capacity(4);
        let id = t.insert(fnat(1), 10).unwrap();
        let out = t.expire(10, 10, |table, id| {
            table.get_mut(id).expires = 20;
            false
        });
        assert_eq!((out.expired, out.rearmed), (0, 1));
        t.expire(20, 10, |_, _| true);
        assert_eq!(t.lookup_in(&fnat(1).inbound_key()), None);
        let _ = id;
    }

    #[test]
    fn iter_lists_live_sessions() {
        let mut t = SessionTable::with_capacity(8);
        let a = t.insert(fnat(1), 10).unwrap();
        let b = t.insert(fnat(2), 10).unwrap();
        t.remove(a);
        let ids: Vec<_> = t.iter().map(|(id, _)| id).collect();
        assert_eq!(ids, [b]);
    }
}
