//! Hand-over rings: a multi-producer, single-consumer `rte_ring` of mbufs
//! per worker, through which other workers pass it the packets it owns (a
//! Full-NAT reply to one of its local ports that RSS gave to another).
//!
//! Like a mempool, a ring lives for the rest of the process. Any thread may
//! enqueue through the shared [`HandOverRing`]; exactly one
//! [`RingConsumer`] exists per ring, and dequeuing takes it by `&mut`.

use std::ffi::CString;
use std::ptr::NonNull;

use super::{burst_len, rte_errno, Eal, Errno, Mbuf, MbufBurst, SOCKET_ID_ANY};

/// `RING_F_SC_DEQ` of rte_ring_core.h (a macro bindgen does not carry):
/// one consumer dequeues.
const RING_F_SC_DEQ: u32 = 0x0002;

/// Why a ring could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("ring name {0:?} is invalid (empty, too long or with a NUL byte)")]
    BadName(String),
    #[error("cannot create ring `{name}` of {count} slots: {errno}")]
    Create {
        name: String,
        count: u32,
        errno: Errno,
    },
}

/// The producers' side of a hand-over ring.
#[derive(Debug)]
pub struct HandOverRing {
    raw: NonNull<dpdk_sys::rte_ring>,
}

// SAFETY: the ring was created multi-producer: rte_ring_mp_enqueue_burst is
// safe from any number of threads at once, and the ring is never freed.
unsafe impl Send for HandOverRing {}
// SAFETY: as above; the only shared operation is the MP enqueue.
unsafe impl Sync for HandOverRing {}

/// The one consumer of a hand-over ring.
#[derive(Debug)]
pub struct RingConsumer {
    ring: &'static HandOverRing,
}

impl HandOverRing {
    /// A ring of `count` slots (a power of two; `count - 1` usable).
    pub fn create(
        _eal: &Eal,
        name: &str,
        count: u32,
    ) -> Result<(&'static HandOverRing, RingConsumer), RingError> {
        let bad_name = || RingError::BadName(name.to_owned());
        if name.is_empty() || name.len() >= dpdk_sys::RTE_RING_NAMESIZE as usize {
            return Err(bad_name());
        }
        let c = CString::new(name).map_err(|_| bad_name())?;
        // SAFETY: EAL is initialised (the &Eal proves it), c is a valid C
        // string that outlives the call, and the flags are DPDK's own.
        let raw =
            unsafe { dpdk_sys::rte_ring_create(c.as_ptr(), count, SOCKET_ID_ANY, RING_F_SC_DEQ) };
        let raw = NonNull::new(raw).ok_or_else(|| RingError::Create {
            name: name.to_owned(),
            count,
            errno: Errno(rte_errno()),
        })?;
        let ring: &'static HandOverRing = Box::leak(Box::new(HandOverRing { raw }));
        Ok((ring, RingConsumer { ring }))
    }

    /// Passes `m` to the ring's consumer; gives it back when the ring is
    /// full.
    #[inline]
    pub fn enqueue(&self, m: Mbuf) -> Result<(), Mbuf> {
        let obj = [m.into_raw().as_ptr().cast::<std::ffi::c_void>()];
        // SAFETY: the ring is valid and multi-producer; obj holds one
        // pointer to an mbuf we own, which the ring takes on success.
        let n = unsafe {
            dpdk_sys::rte_ring_mp_enqueue_burst(
                self.raw.as_ptr(),
                obj.as_ptr(),
                1,
                std::ptr::null_mut(),
            )
        };
        if n == 1 {
            Ok(())
        } else {
            // SAFETY: the ring did not take it: it is still ours, valid.
            Err(unsafe { Mbuf::from_raw(NonNull::new_unchecked(obj[0].cast())) })
        }
    }
}

impl RingConsumer {
    /// Moves up to the burst's free room of handed-over mbufs into it;
    /// returns how many.
    #[inline]
    pub fn dequeue(&mut self, burst: &mut MbufBurst) -> usize {
        let (ptr, room) = burst.spare();
        if room == 0 {
            return 0;
        }
        // SAFETY: the ring is valid and this is its only consumer (&mut self
        // on the one RingConsumer); ptr has room for `room` pointers, and the
        // ring holds only owned mbufs that producers gave up.
        let n = unsafe {
            dpdk_sys::rte_ring_sc_dequeue_burst(
                self.ring.raw.as_ptr(),
                ptr.cast::<*mut std::ffi::c_void>(),
                u32::from(burst_len(room)),
                std::ptr::null_mut(),
            )
        } as usize;
        // SAFETY: the ring wrote n owned mbuf pointers after the burst's end.
        unsafe { burst.filled(n) };
        n
    }
}
