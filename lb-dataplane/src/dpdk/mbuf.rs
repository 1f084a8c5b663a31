//! Owned packet buffers and bursts of them.
//!
//! An [`Mbuf`] is freed exactly once: on drop, or by the driver when a
//! transmit takes it. A [`MbufBurst`] is the fixed-capacity array that receive
//! and transmit work on, so the fast path never allocates: after a transmit
//! that took `n` buffers the burst keeps only the ones the driver refused.

use std::ptr::NonNull;

use arrayvec::ArrayVec;

/// The largest burst the dataplane moves at once.
pub const MAX_BURST: usize = 64;
const _: () = assert!(MAX_BURST <= u16::MAX as usize);

/// A burst length as DPDK's burst calls take it.
#[inline]
#[allow(clippy::cast_possible_truncation)] // n <= MAX_BURST, asserted above
pub fn burst_len(n: usize) -> u16 {
    debug_assert!(n <= MAX_BURST);
    n as u16
}

/// One packet buffer, owned.
#[repr(transparent)]
#[derive(Debug)]
pub struct Mbuf(NonNull<dpdk_sys::rte_mbuf>);

// SAFETY: an mbuf is plain memory owned by whoever holds this handle; moving
// it to another thread moves the ownership with it, and freeing returns it to
// a thread-safe pool.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `raw` must be a valid mbuf that nobody else owns or will free.
    pub(crate) unsafe fn from_raw(raw: NonNull<dpdk_sys::rte_mbuf>) -> Mbuf {
        Mbuf(raw)
    }

    /// Gives up ownership: the caller must pass the pointer on to someone
    /// who frees it (a ring, a driver) or take it back with `from_raw`.
    pub(crate) fn into_raw(self) -> NonNull<dpdk_sys::rte_mbuf> {
        let raw = self.0;
        std::mem::forget(self);
        raw
    }

    fn raw(&self) -> &dpdk_sys::rte_mbuf {
        // SAFETY: we own a valid mbuf; its header is not shared with anyone.
        unsafe { self.0.as_ref() }
    }

    pub(super) fn raw_mut(&mut self) -> &mut dpdk_sys::rte_mbuf {
        // SAFETY: as in `raw`, and &mut self makes the access exclusive.
        unsafe { self.0.as_mut() }
    }

    /// The packet's bytes in the first segment (all of them when
    /// [`is_contiguous`](Self::is_contiguous)).
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: buf_addr + data_off starts data_len initialised bytes inside
        // the buffer this mbuf owns (DPDK's rte_pktmbuf_mtod invariant).
        unsafe {
            std::slice::from_raw_parts(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    /// The first segment's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.raw_mut();
        // SAFETY: as in `data`; &mut self makes the access exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    /// The whole packet's length over all segments.
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        self.raw().pkt_len
    }

    /// The 802.1Q TCI the driver took off the frame (VLAN strip offload),
    /// if it did.
    #[inline]
    pub fn vlan_stripped(&self) -> Option<u16> {
        let m = self.raw();
        let stripped = u64::from(dpdk_sys::RTE_MBUF_F_RX_VLAN_STRIPPED);
        (m.ol_flags & stripped != 0).then_some(m.vlan_tci)
    }

    /// Forgets the driver's stripped tag (the frame is then untagged).
    pub fn clear_vlan_stripped(&mut self) {
        let flags = u64::from(dpdk_sys::RTE_MBUF_F_RX_VLAN_STRIPPED | dpdk_sys::RTE_MBUF_F_RX_VLAN);
        self.raw_mut().ol_flags &= !flags;
    }

    /// Whether the packet is in one segment.
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        self.raw().nb_segs == 1
    }

    /// The port the packet was received on.
    #[inline]
    pub fn port(&self) -> u16 {
        self.raw().port
    }

    /// Free bytes in front of the data.
    #[inline]
    pub fn headroom(&self) -> u16 {
        self.raw().data_off
    }

    /// Grows the packet at the front by `len` bytes (for encapsulation) and
    /// returns the new front; `None`, unchanged, if the headroom is too small.
    pub fn prepend(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: we own the mbuf; DPDK checks the headroom and changes
        // nothing when it is too small.
        let p = unsafe { dpdk_sys::rte_pktmbuf_prepend(self.0.as_ptr(), len) };
        if p.is_null() {
            return None;
        }
        Some(&mut self.data_mut()[..usize::from(len)])
    }

    /// Removes `len` bytes from the front; `false`, unchanged, if shorter.
    pub fn adj(&mut self, len: u16) -> bool {
        // SAFETY: we own the mbuf; DPDK checks the length.
        !unsafe { dpdk_sys::rte_pktmbuf_adj(self.0.as_ptr(), len) }.is_null()
    }

    /// Appends `len` bytes at the tail and returns them; `None`, unchanged,
    /// if the last segment's tailroom is too small.
    pub fn append(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: we own the mbuf; DPDK checks the tailroom.
        let p = unsafe { dpdk_sys::rte_pktmbuf_append(self.0.as_ptr(), len) };
        if p.is_null() {
            return None;
        }
        // SAFETY: DPDK returned a pointer to `len` fresh bytes in our buffer.
        Some(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), usize::from(len)) })
    }

    /// Removes `len` bytes from the tail; `false`, unchanged, if shorter.
    pub fn trim(&mut self, len: u16) -> bool {
        // SAFETY: we own the mbuf; DPDK checks the length.
        unsafe { dpdk_sys::rte_pktmbuf_trim(self.0.as_ptr(), len) == 0 }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and drop runs once.
        unsafe { dpdk_sys::rte_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// Up to [`MAX_BURST`] owned mbufs, without heap allocation.
#[derive(Debug)]
pub struct MbufBurst {
    bufs: ArrayVec<Mbuf, MAX_BURST>,
    /// How many a receive may fill (the configured burst size).
    limit: usize,
}

impl Default for MbufBurst {
    fn default() -> MbufBurst {
        MbufBurst::with_limit(MAX_BURST)
    }
}

impl MbufBurst {
    /// An empty burst that receives up to [`MAX_BURST`] at once.
    pub fn new() -> MbufBurst {
        MbufBurst::default()
    }

    /// An empty burst that receives up to `limit` (at most [`MAX_BURST`]).
    pub fn with_limit(limit: usize) -> MbufBurst {
        MbufBurst {
            bufs: ArrayVec::new(),
            limit: limit.clamp(1, MAX_BURST),
        }
    }

    /// How many mbufs it holds.
    #[inline]
    pub fn len(&self) -> usize {
        self.bufs.len()
    }

    /// Whether it holds none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Whether it cannot take another.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.bufs.is_full()
    }

    /// Adds an mbuf; gives it back when the burst is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        self.bufs.try_push(m).map_err(|e| e.element())
    }

    /// Removes the last mbuf.
    #[inline]
    pub fn pop(&mut self) -> Option<Mbuf> {
        self.bufs.pop()
    }

    /// The mbufs, for reading and rewriting in place.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        &mut self.bufs
    }

    /// The mbufs.
    #[inline]
    pub fn as_slice(&self) -> &[Mbuf] {
        &self.bufs
    }

    /// Moves every mbuf out, in order, leaving the burst empty.
    #[inline]
    pub fn drain(&mut self) -> arrayvec::Drain<'_, Mbuf, MAX_BURST> {
        self.bufs.drain(..)
    }

    /// Frees every mbuf in one bulk call.
    pub fn clear(&mut self) {
        let len = self.bufs.len();
        if len == 0 {
            return;
        }
        // SAFETY: the first `len` slots hold owned mbufs (Mbuf is a
        // transparent pointer); they are freed once and forgotten by set_len.
        unsafe {
            dpdk_sys::rte_pktmbuf_free_bulk(
                self.bufs.as_mut_ptr().cast::<*mut dpdk_sys::rte_mbuf>(),
                u32::from(burst_len(len)),
            );
            self.bufs.set_len(0);
        }
    }

    /// The free tail of the array up to the limit, for a driver to fill, as
    /// (pointer, room).
    pub(crate) fn spare(&mut self) -> (*mut *mut dpdk_sys::rte_mbuf, usize) {
        let len = self.bufs.len();
        let room = self.limit.saturating_sub(len);
        // SAFETY: len <= capacity, so the pointer stays inside the array.
        let ptr = unsafe { self.bufs.as_mut_ptr().add(len) }.cast::<*mut dpdk_sys::rte_mbuf>();
        (ptr, room)
    }

    /// Records that a driver filled `n` more slots after the current end.
    ///
    /// # Safety
    /// The `n` slots after the current end must now hold owned, valid mbufs.
    pub(crate) unsafe fn filled(&mut self, n: usize) {
        let len = self.bufs.len();
        debug_assert!(len + n <= MAX_BURST);
        // SAFETY: the caller initialised slots len..len + n.
        unsafe { self.bufs.set_len(len + n) };
    }

    /// The whole array as raw pointers, for a transmit call.
    pub(crate) fn raw_parts(&mut self) -> (*mut *mut dpdk_sys::rte_mbuf, usize) {
        (
            self.bufs.as_mut_ptr().cast::<*mut dpdk_sys::rte_mbuf>(),
            self.bufs.len(),
        )
    }

    /// Forgets the first `n` mbufs (a driver took them) and moves the rest
    /// to the front.
    ///
    /// # Safety
    /// Ownership of the first `n` mbufs must have passed to someone else.
    pub(crate) unsafe fn taken(&mut self, n: usize) {
        let len = self.bufs.len();
        debug_assert!(n <= len);
        let base = self.bufs.as_mut_ptr();
        // SAFETY: both ranges are inside the array's initialised part; copy
        // handles the overlap; set_len then forgets the moved-from tail.
        unsafe {
            std::ptr::copy(base.add(n), base, len - n);
            self.bufs.set_len(len - n);
        }
    }
}

impl Drop for MbufBurst {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The engine works on mbufs through lb-core's buffer trait.
impl lb_core::packet::PacketBuf for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        Mbuf::data(self)
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        Mbuf::data_mut(self)
    }

    fn prepend(&mut self, n: usize) -> bool {
        u16::try_from(n).is_ok_and(|n| Mbuf::prepend(self, n).is_some())
    }

    fn adj(&mut self, n: usize) -> bool {
        u16::try_from(n).is_ok_and(|n| Mbuf::adj(self, n))
    }

    fn trim(&mut self, n: usize) -> bool {
        u16::try_from(n).is_ok_and(|n| Mbuf::trim(self, n))
    }

    #[inline]
    fn rx_l4_sum(&self) -> lb_core::packet::RxL4Sum {
        use lb_core::packet::RxL4Sum;
        let mask = u64::from(dpdk_sys::RTE_MBUF_F_RX_L4_CKSUM_MASK);
        match self.raw().ol_flags & mask {
            f if f == u64::from(dpdk_sys::RTE_MBUF_F_RX_L4_CKSUM_GOOD) => RxL4Sum::Good,
            f if f == u64::from(dpdk_sys::RTE_MBUF_F_RX_L4_CKSUM_BAD) => RxL4Sum::Bad,
            f if f == u64::from(dpdk_sys::RTE_MBUF_F_RX_L4_CKSUM_NONE) => RxL4Sum::Partial,
            _ => RxL4Sum::Unknown,
        }
    }
}
