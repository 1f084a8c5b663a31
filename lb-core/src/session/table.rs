//! The session table: a preallocated array of sessions, an index of
//! cache-line buckets, and a timer wheel.
//!
//! The index is open-addressed: a tuple's hash picks its home bucket and a
//! 16-bit tag. A bucket is one cache line holding [`SLOTS`] entries (tag
//! and session reference); an entry whose home is full goes to the next
//! bucket with room, and every bucket it passes counts it in `overflow`, so
//! a lookup stops at the first bucket that nothing passed. Both tuples of
//! a session are indexed by the same hash of their bytes, so a packet,
//! whichever way it goes, reads one bucket line and then its session.

use arrayvec::ArrayVec;

use super::{flags, FlowKey, Session, NIL};
use crate::types::Prefetch;

/// Entries in one bucket.
const SLOTS: usize = 10;

/// Index entries per bucket on average when the table is full (of
/// [`SLOTS`]): the rest is room that keeps overflow rare.
const REFS_PER_BUCKET: usize = 7;

/// The tag of an empty slot, which no tuple has: a bucket finds its free
/// slots as it finds a tag's.
const EMPTY_TAG: u16 = 0;

/// One cache line of the index.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    tags: [u16; SLOTS],
    /// Entries placed beyond this bucket whose home is this one or an
    /// earlier one.
    overflow: u32,
    /// Session refs (index * 2 + direction), NIL when free.
    refs: [u32; SLOTS],
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

impl Bucket {
    const EMPTY: Bucket = Bucket {
        tags: [0; SLOTS],
        overflow: 0,
        refs: [NIL; SLOTS],
    };

    /// Bit `j` set where `tags[j]` is `tag`: all ten compared at once, so
    /// that where a match sits costs no mispredicted loop exit.
    #[inline]
    fn matching(&self, tag: u16) -> u32 {
        let mut m = 0;
        for (j, t) in self.tags.iter().enumerate() {
            m |= u32::from(*t == tag) << j;
        }
        m
    }
}

/// Bytes of table per session: the session plus its share of the index
/// (at most two entries per session, one per tuple).
pub const SESSION_BYTES: usize =
    std::mem::size_of::<Session>() + (2 * std::mem::size_of::<Bucket>()).div_ceil(REFS_PER_BUCKET);
const _: () = assert!(
    SESSION_BYTES <= 128,
    "a session must cost at most 128 bytes"
);

/// Reply tuples that can wait for the index at once (a burst's worth of
/// new connections, twice over).
const PENDING_LINKS: usize = 64;

/// How far down a wheel list a sweep prefetches the buckets of the
/// sessions it is about to examine.
pub const EXPIRE_AHEAD: usize = 8;

/// Slots of the timer wheel (seconds it covers in one turn).
const WHEEL_SLOTS: u32 = 4096;

/// The wheel's extra list: the rest of a second whose sweep ran out of
/// budget, which the next sweep takes up first.
const PENDING: u32 = WHEEL_SLOTS;

/// Marks a session's `timer_prev` as the first of its wheel slot (or of
/// the [`PENDING`] list), the slot in the low bits. Session ids stay below
/// it.
pub(super) const HEAD: u32 = 0x8000_0000;
const _: () = assert!(PENDING < 0xffff && NIL / 2 - 1 < HEAD);

/// A session's index in its table.
pub type SessionId = u32;

/// Which of its tuples a lookup matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's tuple (towards the VIP).
    In,
    /// The reply tuple (from the real server).
    Out,
}

/// A tuple's place in the index, computed once per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hashed {
    bucket: u32,
    tag: u16,
}

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
    index: Box<[Bucket]>,
    seed: [u64; 4],
    /// Free sessions, linked through `timer_next`.
    free: u32,
    len: u32,
    wheel: Box<[u32]>,
    /// The last second whose wheel slot was processed.
    clock: u32,
    /// Sessions whose reply tuple is not in the index yet, with its hash.
    pending: ArrayVec<(SessionId, Hashed), PENDING_LINKS>,
    /// Bit `tag % 256` set for every pending reply tuple's tag (and maybe
    /// others since removed): a lookup that misses scans the pending list
    /// only when its bit is set, about one time in sixteen with a burst's
    /// worth pending (one in five with 64 bits).
    pending_tags: [u64; 4],
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
        let buckets = (capacity as usize * 2).div_ceil(REFS_PER_BUCKET).max(2);
        let mut sessions = vec![Session::EMPTY; capacity as usize].into_boxed_slice();
        for (i, s) in sessions.iter_mut().enumerate() {
            s.timer_next = u32::try_from(i + 1)
                .ok()
                .filter(|&n| n < capacity)
                .unwrap_or(NIL);
        }
        let rs = ahash::RandomState::new();
        SessionTable {
            sessions,
            index: vec![Bucket::EMPTY; buckets].into_boxed_slice(),
            seed: [
                rs.hash_one(1u8),
                rs.hash_one(2u8),
                rs.hash_one(3u8),
                rs.hash_one(4u8),
            ],
            free: 0,
            len: 0,
            wheel: vec![NIL; PENDING as usize + 1].into_boxed_slice(),
            clock: 0,
            pending: ArrayVec::new(),
            pending_tags: [0; 4],
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

    /// Where a tuple sits in the index. The three products are independent,
    /// so their latencies overlap; the last one mixes them.
    #[inline(always)]
    pub fn hash(&self, k: &FlowKey) -> Hashed {
        let ports = (u64::from(k.sport) << 32) | (u64::from(k.dport) << 16) | u64::from(k.proto);
        let src = fold(
            word(&k.src, 0) ^ self.seed[0],
            word(&k.src, 8) ^ self.seed[1],
        );
        let dst = fold(
            word(&k.dst, 0) ^ self.seed[2],
            word(&k.dst, 8) ^ self.seed[3],
        );
        let h = fold(src ^ dst.rotate_left(29) ^ ports, self.seed[1] | 1);
        let n = self.index.len() as u64;
        let tag = (h & 0xffff) as u16;
        Hashed {
            // Multiply-shift maps the high half onto the bucket count.
            bucket: u32::try_from(((h >> 32) * n) >> 32).unwrap_or(0),
            // Never an empty slot's.
            tag: tag + u16::from(tag == EMPTY_TAG),
        }
    }

    #[inline]
    fn next_bucket(&self, b: usize) -> usize {
        if b + 1 == self.index.len() {
            0
        } else {
            b + 1
        }
    }

    /// Reads a tuple's home bucket: a burst does this for all its packets
    /// in one go, so the cache misses overlap instead of queueing.
    #[inline]
    pub fn warm_bucket(&self, h: Hashed) -> u32 {
        u32::from(self.index[h.bucket as usize].tags[0])
    }

    /// The first entry of the home bucket whose tag matches, or NIL: the
    /// session a burst should read ahead.
    #[inline]
    pub fn candidate(&self, h: Hashed) -> u32 {
        let b = &self.index[h.bucket as usize];
        let mut m = b.matching(h.tag);
        while m != 0 {
            let r = b.refs[m.trailing_zeros() as usize % SLOTS];
            if r != NIL {
                return r;
            }
            m &= m - 1;
        }
        NIL
    }

    /// Prefetches a tuple's home bucket.
    #[inline]
    pub fn prefetch_bucket(&self, h: Hashed, p: &impl Prefetch) {
        p.prefetch(&self.index[h.bucket as usize]);
    }

    /// Prefetches both cache lines of the session of entry `r` (a
    /// [`candidate`](Self::candidate), which read the bucket, so that
    /// should be on its way already), if any.
    #[inline]
    pub fn prefetch_session(&self, r: u32, p: &impl Prefetch) {
        if r != NIL {
            let s = &self.sessions[(r >> 1) as usize];
            // Its first and its last field: a session spans two lines.
            p.prefetch(s);
            p.prefetch(&s.timer_prev);
        }
    }

    /// Reads both cache lines of an entry's session, for the same purpose.
    #[inline]
    pub fn warm_session(&self, r: u32) -> u32 {
        if r == NIL {
            0
        } else {
            let s = &self.sessions[(r >> 1) as usize];
            u32::from(s.client[0]) ^ s.timer_prev
        }
    }

    /// Calls `found` on every entry whose tag matches, in probe order,
    /// until it returns true.
    #[inline]
    fn probe(&self, h: Hashed, mut found: impl FnMut(u32) -> bool) {
        let mut b = h.bucket as usize;
        for _ in 0..self.index.len() {
            let bucket = &self.index[b];
            let mut m = bucket.matching(h.tag);
            while m != 0 {
                let r = bucket.refs[m.trailing_zeros() as usize % SLOTS];
                if r != NIL && found(r) {
                    return;
                }
                m &= m - 1;
            }
            if bucket.overflow == 0 {
                return;
            }
            b = self.next_bucket(b);
        }
    }

    #[inline]
    fn matches(&self, r: u32, k: &FlowKey) -> bool {
        let s = &self.sessions[(r >> 1) as usize];
        if r & 1 == DIR_IN {
            s.cport == k.sport
                && s.vport == k.dport
                && s.proto == k.proto
                && s.client == k.src
                && s.vip == k.dst
        } else {
            s.outbound_key() == *k
        }
    }

    /// [`lookup_at`](Self::lookup_at), trying first the entry `hint` (a
    /// [`candidate`](Self::candidate) read earlier, maybe stale: it is
    /// checked against the key and taken only as a live connection's
    /// client tuple, which no other entry can also match).
    #[inline]
    pub fn lookup_hinted(&self, h: Hashed, k: &FlowKey, hint: u32) -> Option<(SessionId, Side)> {
        if hint != NIL && hint & 1 == DIR_IN {
            let s = &self.sessions[(hint >> 1) as usize];
            let live = s.flags & (flags::USED | flags::UNHASHED | flags::TEMPLATE) == flags::USED;
            if live && self.matches(hint, k) {
                return Some((hint >> 1, Side::In));
            }
        }
        self.lookup_at(h, k)
    }

    /// The connection a packet with this tuple belongs to, and which of its
    /// tuples it matched; a client tuple wins over a reply tuple. Templates
    /// are not connections, so a packet never matches one.
    #[inline]
    pub fn lookup_at(&self, h: Hashed, k: &FlowKey) -> Option<(SessionId, Side)> {
        let mut out = None;
        self.probe(h, |r| {
            if !self.matches(r, k) || self.sessions[(r >> 1) as usize].is_template() {
                return false;
            }
            if r & 1 == DIR_IN {
                out = Some((r >> 1, Side::In));
                return true;
            }
            out.get_or_insert((r >> 1, Side::Out));
            false
        });
        if out.is_none() {
            out = self.pending_out(h, k).map(|id| (id, Side::Out));
        }
        out
    }

    /// The session whose reply tuple, waiting for the index, is `k`.
    #[inline]
    fn pending_out(&self, h: Hashed, k: &FlowKey) -> Option<SessionId> {
        if self.pending_tags[usize::from(h.tag >> 6) % 4] & 1 << (h.tag % 64) == 0 {
            return None;
        }
        self.pending
            .iter()
            .find(|&&(id, hp)| hp == h && self.sessions[id as usize].outbound_key() == *k)
            .map(|&(id, _)| id)
    }

    fn lookup_dir(&self, k: &FlowKey, dir: u32) -> Option<SessionId> {
        self.lookup_dir_at(self.hash(k), k, dir)
    }

    #[inline]
    fn lookup_dir_at(&self, h: Hashed, k: &FlowKey, dir: u32) -> Option<SessionId> {
        let mut out = None;
        self.probe(h, |r| {
            if r & 1 == dir && self.matches(r, k) {
                out = Some(r >> 1);
                return true;
            }
            false
        });
        if out.is_none() && dir == DIR_OUT {
            out = self.pending_out(h, k);
        }
        out
    }

    /// The session whose client packets have this tuple.
    pub fn lookup_in(&self, k: &FlowKey) -> Option<SessionId> {
        self.lookup_dir(k, DIR_IN)
    }

    /// The session whose real server's replies have this tuple.
    pub fn lookup_out(&self, k: &FlowKey) -> Option<SessionId> {
        self.lookup_dir(k, DIR_OUT)
    }

    /// Whether a reply tuple is taken (the local port's and NAT's checks),
    /// for a tuple already hashed (`h` is [`hash`](Self::hash) of `k`).
    #[inline]
    pub fn out_tuple_in_use_at(&self, h: Hashed, k: &FlowKey) -> bool {
        self.lookup_dir_at(h, k, DIR_OUT).is_some()
    }

    fn link(&mut self, id: SessionId, dir: u32, h: Hashed) {
        let r = id << 1 | dir;
        let mut b = h.bucket as usize;
        // There are more slots than entries, so a free one exists.
        for _ in 0..self.index.len() {
            let bucket = &mut self.index[b];
            let free = bucket.matching(EMPTY_TAG);
            if free != 0 {
                let j = free.trailing_zeros() as usize % SLOTS;
                debug_assert_eq!(bucket.refs[j], NIL);
                bucket.refs[j] = r;
                bucket.tags[j] = h.tag;
                return;
            }
            bucket.overflow += 1;
            b = self.next_bucket(b);
        }
        debug_assert!(false, "the index has no free slot");
    }

    fn unlink(&mut self, id: SessionId, dir: u32, k: &FlowKey) {
        let h = self.hash(k);
        let r = id << 1 | dir;
        let mut b = h.bucket as usize;
        for _ in 0..self.index.len() {
            let bucket = &mut self.index[b];
            let mut m = bucket.matching(h.tag);
            while m != 0 && bucket.refs[m.trailing_zeros() as usize % SLOTS] != r {
                m &= m - 1;
            }
            if m != 0 {
                let j = m.trailing_zeros() as usize % SLOTS;
                bucket.refs[j] = NIL;
                bucket.tags[j] = EMPTY_TAG;
                // Undo the overflow counts of the buckets it passed.
                let mut p = h.bucket as usize;
                while p != b {
                    self.index[p].overflow -= 1;
                    p = self.next_bucket(p);
                }
                return;
            }
            b = self.next_bucket(b);
        }
        debug_assert!(false, "unlinking a session that is not in the index");
    }

    fn wheel_link(&mut self, id: SessionId) {
        let expires = self.sessions[id as usize].expires;
        // A deadline beyond one turn goes to the last slot of this turn and
        // is re-armed when that slot comes round.
        let at = expires.clamp(
            self.clock.wrapping_add(1),
            self.clock.wrapping_add(WHEEL_SLOTS - 1),
        );
        let slot = at % WHEEL_SLOTS;
        let head = self.wheel[slot as usize];
        {
            let s = &mut self.sessions[id as usize];
            s.timer_prev = HEAD | slot;
            s.timer_next = head;
        }
        if head != NIL {
            self.sessions[head as usize].timer_prev = id;
        }
        self.wheel[slot as usize] = id;
    }

    fn wheel_unlink(&mut self, id: SessionId) {
        let (prev, next) = {
            let s = &self.sessions[id as usize];
            (s.timer_prev, s.timer_next)
        };
        if prev == NIL {
            // In a slot's list that expiry has detached: nothing points here
            // but the list being walked, which has moved past it.
        } else if prev & HEAD != 0 {
            let slot = (prev & !HEAD) as usize;
            debug_assert_eq!(self.wheel[slot], id);
            self.wheel[slot] = next;
        } else {
            self.sessions[prev as usize].timer_next = next;
        }
        if next != NIL {
            self.sessions[next as usize].timer_prev = prev;
        }
    }

    /// Inserts a session that expires at `expires` (seconds, table clock).
    /// The caller has checked that its tuples are not taken.
    pub fn insert(&mut self, s: Session, expires: u32) -> Result<SessionId, TableFull> {
        let hin = self.hash(&s.inbound_key());
        let hout = if s.has_outbound() {
            self.hash(&s.outbound_key())
        } else {
            Hashed::default()
        };
        self.insert_hashed(s, expires, hin, hout)
    }

    /// [`insert`](Self::insert) with the tuples already hashed, as the
    /// engine has them from the lookup and the local port's check: `hin`
    /// and `hout` are [`hash`](Self::hash) of the inbound and outbound
    /// keys (`hout` unused without an outbound tuple).
    #[inline]
    pub fn insert_hashed(
        &mut self,
        s: Session,
        expires: u32,
        hin: Hashed,
        hout: Hashed,
    ) -> Result<SessionId, TableFull> {
        let id = self.place(s, expires, hin, hout)?;
        if s.has_outbound() {
            self.link(id, DIR_OUT, hout);
        }
        Ok(id)
    }

    /// Stores a session in a free slot, on the wheel and in the index by
    /// its client tuple (`hout` is only checked: linking the reply tuple is
    /// the caller's).
    #[inline]
    fn place(
        &mut self,
        mut s: Session,
        expires: u32,
        hin: Hashed,
        hout: Hashed,
    ) -> Result<SessionId, TableFull> {
        debug_assert_eq!(hin, self.hash(&s.inbound_key()));
        debug_assert!(!s.has_outbound() || hout == self.hash(&s.outbound_key()));
        if self.free == NIL {
            return Err(TableFull);
        }
        let id = self.free;
        self.free = self.sessions[id as usize].timer_next;
        s.flags |= flags::USED;
        s.expires = expires;
        self.sessions[id as usize] = s;
        self.link(id, DIR_IN, hin);
        self.wheel_link(id);
        self.len += 1;
        Ok(id)
    }

    /// [`insert_hashed`](Self::insert_hashed), but the reply tuple enters
    /// the index only at the next [`link_pending`](Self::link_pending).
    /// Meanwhile the bucket line it goes to can be on its way (the caller
    /// has prefetched it) while the rest of the burst is handled, instead
    /// of being waited for. Lookups find it all the same, in the pending
    /// list (scanned only when a filter of its tags says it may be there:
    /// a reply cannot come before the connection's first packet has left,
    /// but a replayed capture can hold both in one burst); removing the
    /// session drops the pending link.
    #[inline]
    pub fn insert_deferred(
        &mut self,
        s: Session,
        expires: u32,
        hin: Hashed,
        hout: Hashed,
    ) -> Result<SessionId, TableFull> {
        let id = self.place(s, expires, hin, hout)?;
        if s.has_outbound() {
            if self.pending.is_full() {
                self.link(id, DIR_OUT, hout);
            } else {
                self.sessions[id as usize].flags |= flags::OUT_PENDING;
                self.pending.push((id, hout));
                self.pending_tags[usize::from(hout.tag >> 6) % 4] |= 1 << (hout.tag % 64);
            }
        }
        Ok(id)
    }

    /// Prefetches the session the next insert will fill (both its lines),
    /// if any.
    #[inline]
    pub fn prefetch_free(&self, p: &impl Prefetch) {
        if let Some(s) = self.sessions.get(self.free as usize) {
            p.prefetch(s);
            p.prefetch(&s.timer_prev);
        }
    }

    /// Puts the reply tuples of [`insert_deferred`](Self::insert_deferred)
    /// into the index.
    #[inline]
    pub fn link_pending(&mut self) {
        for i in 0..self.pending.len() {
            let (id, h) = self.pending[i];
            self.sessions[id as usize].flags &= !flags::OUT_PENDING;
            self.link(id, DIR_OUT, h);
        }
        self.pending.clear();
        self.pending_tags = [0; 4];
    }

    /// Removes a session now.
    pub fn remove(&mut self, id: SessionId) {
        debug_assert!(self.sessions[id as usize].flags & flags::USED != 0);
        self.unhash(id);
        self.wheel_unlink(id);
        self.release(id);
    }

    /// Takes a session out of the index, so lookups no longer find it,
    /// and leaves it alive until it expires or is removed (IPVS unhashes a
    /// template the same way while connections still point at it).
    pub fn unhash(&mut self, id: SessionId) {
        let s = self.sessions[id as usize];
        if s.flags & flags::UNHASHED != 0 {
            return;
        }
        self.unlink(id, DIR_IN, &s.inbound_key());
        if s.flags & flags::OUT_PENDING != 0 {
            self.pending.retain(|(p, _)| *p != id);
            self.sessions[id as usize].flags &= !flags::OUT_PENDING;
        } else if s.has_outbound() {
            self.unlink(id, DIR_OUT, &s.outbound_key());
        }
        self.sessions[id as usize].flags |= flags::UNHASHED;
    }

    fn release(&mut self, id: SessionId) {
        let s = &mut self.sessions[id as usize];
        *s = Session::EMPTY;
        s.timer_next = self.free;
        self.free = id;
        self.len -= 1;
    }

    /// Entries in the index (two per connection with a reply tuple once
    /// linked, one otherwise), for tests.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.index
            .iter()
            .map(|b| b.refs.iter().filter(|&&r| r != NIL).count())
            .sum()
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
    /// worker's pause stays short; the rest wait for the next call, which
    /// takes up a second's sweep where this one stopped (the time a call
    /// takes is bounded by its budget, however many sessions share a
    /// second).
    pub fn expire(
        &mut self,
        now: u32,
        budget: u32,
        on_expire: impl FnMut(&mut SessionTable, SessionId) -> bool,
    ) -> ExpireOutcome {
        self.expire_with(now, budget, on_expire, |_, _| {}, &crate::types::NoPrefetch)
    }

    /// [`expire`](Self::expire), prefetching the index buckets of the
    /// session [`EXPIRE_AHEAD`] places further down the list than the one
    /// being examined: a removal takes both its entries out of their
    /// buckets, a miss each in a large table, and a sweep removes sessions
    /// by the thousand. `on_rearmed` hears of each session re-armed: its
    /// deadline moved (the session carried traffic since it was armed:
    /// about once per timeout for a busy connection), lies beyond one turn
    /// of the wheel, or `on_expire` kept it.
    pub fn expire_with<P: Prefetch>(
        &mut self,
        now: u32,
        budget: u32,
        mut on_expire: impl FnMut(&mut SessionTable, SessionId) -> bool,
        mut on_rearmed: impl FnMut(&SessionTable, SessionId),
        prefetch: &P,
    ) -> ExpireOutcome {
        let mut out = ExpireOutcome::default();
        let mut examined = 0u32;
        loop {
            let t = self.clock.wrapping_add(1);
            // The rest of second `t`, if the last sweep stopped inside it;
            // else `t`'s slot, detached so that re-armed sessions landing
            // in the same slot wait for its next turn.
            let mut cur = std::mem::replace(&mut self.wheel[PENDING as usize], NIL);
            if cur == NIL {
                if self.clock == now {
                    break;
                }
                cur = std::mem::replace(&mut self.wheel[(t % WHEEL_SLOTS) as usize], NIL);
            }
            // The session whose buckets are on their way, EXPIRE_AHEAD
            // places down the list (NIL past its end).
            let mut ahead = cur;
            if P::ACTIVE {
                for _ in 0..EXPIRE_AHEAD {
                    self.prefetch_entries(ahead, prefetch);
                    ahead = self.next_of(ahead);
                }
            }
            while cur != NIL {
                if P::ACTIVE {
                    self.prefetch_entries(ahead, prefetch);
                    ahead = self.next_of(ahead);
                }
                if examined == budget {
                    // The rest waits, as the pending list, for the next call.
                    self.sessions[cur as usize].timer_prev = HEAD | PENDING;
                    self.wheel[PENDING as usize] = cur;
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
                    self.unhash(cur);
                    self.release(cur);
                    out.expired += 1;
                } else {
                    // Not due yet, or kept alive by the callback.
                    let saved = self.clock;
                    self.clock = t;
                    self.wheel_link(cur);
                    self.clock = saved;
                    out.rearmed += 1;
                    on_rearmed(self, cur);
                }
                cur = next;
            }
            self.clock = t;
        }
        out
    }

    /// The next session of a wheel list, NIL after the last (or for NIL).
    #[inline]
    fn next_of(&self, id: SessionId) -> SessionId {
        self.sessions.get(id as usize).map_or(NIL, |s| s.timer_next)
    }

    /// Prefetches the home buckets of a session's tuples (nothing for NIL).
    #[inline]
    fn prefetch_entries(&self, id: SessionId, p: &impl Prefetch) {
        if let Some(s) = self.sessions.get(id as usize) {
            self.prefetch_bucket(self.hash(&s.inbound_key()), p);
            if s.has_outbound() {
                self.prefetch_bucket(self.hash(&s.outbound_key()), p);
            }
        }
    }

    /// Every live session, for listings (control path).
    /// Slots in the table, used or not: ids are below it.
    pub fn slots(&self) -> u32 {
        u32::try_from(self.sessions.len()).unwrap_or(u32::MAX)
    }

    /// The session in slot `id`, if the slot holds one.
    pub fn get_used(&self, id: SessionId) -> Option<&Session> {
        self.sessions
            .get(id as usize)
            .filter(|s| s.flags & flags::USED != 0)
    }

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
    use crate::types::ForwardMode;
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

    /// Recomputes every bucket's overflow count from where entries sit,
    /// and checks that each entry is found from its tuple.
    fn check_index(t: &SessionTable) -> u32 {
        let mut overflow = vec![0u32; t.index.len()];
        let mut placed_away = 0;
        for (b, bucket) in t.index.iter().enumerate() {
            for &r in bucket.refs.iter().filter(|&&r| r != NIL) {
                let s = t.get(r >> 1);
                let k = if r & 1 == DIR_IN {
                    s.inbound_key()
                } else {
                    s.outbound_key()
                };
                let mut p = t.hash(&k).bucket as usize;
                while p != b {
                    overflow[p] += 1;
                    placed_away += 1;
                    p = t.next_bucket(p);
                }
                let found = if r & 1 == DIR_IN {
                    t.lookup_in(&k)
                } else {
                    t.lookup_out(&k)
                };
                assert_eq!(found, Some(r >> 1));
            }
        }
        let counted: Vec<u32> = t.index.iter().map(|b| b.overflow).collect();
        assert_eq!(counted, overflow);
        placed_away
    }

    #[test]
    fn no_tuple_has_the_empty_tag() {
        // A million tuples: about 15 would have tag 0 if it were not
        // avoided.
        let t = SessionTable::with_capacity(8);
        for i in 0..1_000_000 {
            assert_ne!(t.hash(&fnat(i).inbound_key()).tag, EMPTY_TAG);
        }
    }

    #[test]
    fn a_bucket_matches_every_slot_with_the_tag() {
        let mut b = Bucket::EMPTY;
        b.tags = [7, 0, 7, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(b.matching(7), 0b10_0000_0101);
        assert_eq!(b.matching(0), 0b00_0000_0010);
        assert_eq!(b.matching(8), 0);
        assert_eq!(Bucket::EMPTY.matching(0), 0b11_1111_1111);
    }

    #[test]
    fn entries_sharing_a_tag_are_all_tried() {
        let mut t = SessionTable::with_capacity(64);
        let (a, b) = (fnat(1), fnat(2));
        let ida = t.insert(a, 60).unwrap();
        let idb = t.insert(b, 60).unwrap();
        // Put an entry of b, with a's tag, in front of a's entry in a's
        // bucket: a lookup of a must pass over it.
        let h = t.hash(&a.inbound_key());
        let bucket = &mut t.index[h.bucket as usize];
        let at = bucket.refs.iter().position(|&r| r == ida << 1).unwrap();
        let free = bucket.refs.iter().position(|&r| r == NIL).unwrap();
        bucket.refs.swap(at, free);
        bucket.tags.swap(at, free);
        let (first, second) = (at.min(free), at.max(free));
        bucket.refs[first] = idb << 1;
        bucket.tags[first] = h.tag;
        bucket.refs[second] = ida << 1;
        bucket.tags[second] = h.tag;
        assert_eq!(t.candidate(h), idb << 1, "the first match is the hint");
        assert_eq!(t.lookup_at(h, &a.inbound_key()), Some((ida, Side::In)));
        assert_eq!(t.lookup_in(&a.inbound_key()), Some(ida));
    }

    #[test]
    fn a_stale_hint_falls_back_to_the_lookup() {
        let mut t = SessionTable::with_capacity(8);
        let (a, b) = (fnat(1), fnat(2));
        let (ka, kb) = (a.inbound_key(), b.inbound_key());
        let (ha, hb) = (t.hash(&ka), t.hash(&kb));
        let ida = t.insert(a, 60).unwrap();
        let hint = t.candidate(ha);
        assert_eq!(hint, ida << 1);
        assert_eq!(t.lookup_hinted(ha, &ka, hint), Some((ida, Side::In)));
        // Another tuple's entry, a reply entry, or none: the lookup decides.
        assert_eq!(t.lookup_hinted(hb, &kb, hint), None);
        assert_eq!(
            t.lookup_hinted(ha, &ka, ida << 1 | DIR_OUT),
            Some((ida, Side::In))
        );
        assert_eq!(t.lookup_hinted(ha, &ka, NIL), Some((ida, Side::In)));
        // The session went: its freed slot matches nothing, even a tuple
        // of zeros like the empty slot's.
        t.remove(ida);
        assert_eq!(t.lookup_hinted(ha, &ka, hint), None);
        let zero = Session::EMPTY.inbound_key();
        assert_eq!(t.lookup_hinted(t.hash(&zero), &zero, hint), None);
        // Its slot now holds another connection: found by its own tuple
        // only.
        let idb = t.insert(b, 60).unwrap();
        assert_eq!(idb, ida);
        assert_eq!(t.lookup_hinted(ha, &ka, hint), None);
        assert_eq!(t.lookup_hinted(hb, &kb, hint), Some((idb, Side::In)));
        // A template is no connection, hint or not.
        t.get_mut(idb).flags |= flags::TEMPLATE;
        assert_eq!(t.lookup_hinted(hb, &kb, hint), None);
    }

    #[test]
    fn overflowing_buckets_stay_consistent() {
        // 35 sessions: 70 entries in 10 buckets of 10, so some spill over.
        let mut t = SessionTable::with_capacity(35);
        assert_eq!(t.index.len(), 10);
        let mut live: Vec<(u32, SessionId)> = Vec::new();
        let mut x = 12345u32;
        let mut spilled = 0;
        for step in 0..5000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if !t.is_full() && (live.is_empty() || !x.is_multiple_of(3)) {
                let i = step + 100;
                live.push((i, t.insert(fnat(i), 60).unwrap()));
            } else {
                let (i, id) = live.swap_remove(x as usize % live.len());
                t.remove(id);
                assert_eq!(t.lookup_in(&fnat(i).inbound_key()), None);
                assert_eq!(t.lookup_out(&fnat(i).outbound_key()), None);
            }
            if step.is_multiple_of(7) {
                spilled += check_index(&t);
            }
        }
        assert!(spilled > 0, "the test never made a bucket overflow");
        for (_, id) in live.drain(..) {
            t.remove(id);
        }
        assert_eq!(check_index(&t), 0);
        assert!(t.index.iter().all(|b| b.overflow == 0));
    }

    #[test]
    fn one_lookup_finds_either_tuple_preferring_the_client_side() {
        let mut t = SessionTable::with_capacity(8);
        let s = fnat(1);
        let id = t.insert(s, 60).unwrap();
        let k_in = s.inbound_key();
        let k_out = s.outbound_key();
        assert_eq!(t.lookup_at(t.hash(&k_in), &k_in), Some((id, Side::In)));
        assert_eq!(t.lookup_at(t.hash(&k_out), &k_out), Some((id, Side::Out)));
        // A session whose client tuple equals the first one's reply tuple:
        // the client side wins, as it did when the two were separate lookups.
        let twin = Session::new(
            6,
            (k_out.src, k_out.sport),
            (k_out.dst, k_out.dport),
            (a(0x0a01_0009), 8080),
            (a(0x0a02_0009), 2000),
            ForwardMode::Fnat,
            State::SynRecv,
        );
        let id2 = t.insert(twin, 60).unwrap();
        assert_eq!(t.lookup_at(t.hash(&k_out), &k_out), Some((id2, Side::In)));
        assert_eq!(t.lookup_out(&k_out), Some(id));
        assert_eq!(t.lookup_in(&k_out), Some(id2));
    }

    #[test]
    fn expiry_is_lazy_and_bounded() {
        let mut t = SessionTable::with_capacity(64);
        let a = t.insert(fnat(1), 10).unwrap();
        let b = t.insert(fnat(2), 10).unwrap();
        let c = t.insert(fnat(3), 5000).unwrap(); // beyond one wheel turn
                                                  // b's deadline moves on (a packet arrived); only a expires at 10.
        t.get_mut(b).expires = 30;
        let (mut gone, mut moved) = (Vec::new(), Vec::new());
        let out = t.expire_with(
            10,
            100,
            |_, id| {
                gone.push(id);
                true
            },
            |_, id| moved.push(id),
            &crate::types::NoPrefetch,
        );
        assert_eq!(gone, [a]);
        assert_eq!(moved, [b], "b is re-armed, and said so");
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

    /// Counts what it is asked to prefetch.
    #[derive(Default)]
    struct Counting(std::cell::Cell<usize>);

    impl Prefetch for Counting {
        fn prefetch<T>(&self, _: &T) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn a_prefetching_sweep_does_what_a_plain_one_does() {
        // Two tables filled alike; sweeps with and without the prefetch,
        // with budgets that cut slots short, lists that end before the
        // prefetch distance, re-armed sessions and kept ones.
        let fill = |t: &mut SessionTable| {
            for i in 0..300u32 {
                let id = t.insert(fnat(i), 10 + i % 7).unwrap();
                if i % 5 == 0 {
                    t.get_mut(id).expires = 40;
                }
            }
        };
        let (mut plain, mut fetching) = (
            SessionTable::with_capacity(400),
            SessionTable::with_capacity(400),
        );
        fill(&mut plain);
        fill(&mut fetching);
        let p = Counting::default();
        for (now, budget) in [(12, 50), (12, 7), (13, 1000), (16, 3), (16, 1000), (50, 40)] {
            for _ in 0..3 {
                let keep =
                    |_: &mut SessionTable, id: SessionId| !id.is_multiple_of(11) || now >= 50;
                let a = plain.expire(now, budget, keep);
                let b = fetching.expire_with(now, budget, keep, |_, _| {}, &p);
                assert_eq!(a, b, "at {now} with a budget of {budget}");
            }
            let ids = |t: &SessionTable| t.iter().map(|(id, _)| id).collect::<Vec<_>>();
            assert_eq!(ids(&plain), ids(&fetching));
            if now == 16 {
                // Re-armed and kept ones wait.
                assert!(!plain.is_empty() && plain.len() < 300, "{}", plain.len());
            }
        }
        assert!(plain.is_empty());
        assert!(p.0.get() > 300, "{} prefetches", p.0.get());
    }

    #[test]
    fn removing_any_session_of_a_timer_slot_keeps_the_rest() {
        let mut t = SessionTable::with_capacity(16);
        // Five sessions in one slot: the last inserted is its first.
        let ids: Vec<_> = (0..5).map(|i| t.insert(fnat(i), 10).unwrap()).collect();
        t.remove(ids[4]); // the first of the slot
        t.remove(ids[2]); // one in the middle
        t.remove(ids[0]); // the last
        let mut gone = Vec::new();
        let out = t.expire(10, 100, |_, id| {
            gone.push(id);
            true
        });
        gone.sort_unstable();
        assert_eq!(gone, [ids[1], ids[3]]);
        assert_eq!(out.expired, 2);
        assert!(t.is_empty());

        // A budget that stops inside a slot puts the rest back as its
        // first; removing that one then must not lose the others.
        let ids: Vec<_> = (0..4).map(|i| t.insert(fnat(i), 20).unwrap()).collect();
        let out = t.expire(20, 1, |_, _| true);
        assert!(out.more);
        assert_eq!(t.len(), 3);
        let left: Vec<_> = ids
            .iter()
            .copied()
            .filter(|&id| t.get(id).flags & flags::USED != 0)
            .collect();
        t.remove(left[0]);
        t.remove(left[2]);
        let out = t.expire(20, 100, |_, _| true);
        assert_eq!((out.expired, out.more), (1, false));
        assert!(t.is_empty());
        assert!(t.wheel.iter().all(|&h| h == NIL));
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
