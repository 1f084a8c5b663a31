//! Packet-buffer pools. A pool lives for the rest of the process: mbufs carry
//! a raw pointer to their pool and may be freed anywhere, so the pool is never
//! returned to DPDK, and a `&'static Mempool` says exactly that.

use std::ffi::CString;
use std::ptr::NonNull;

use super::{rte_errno, Eal, Errno, Mbuf, SOCKET_ID_ANY};

/// Bytes of buffer per mbuf for a standard Ethernet frame plus headroom
/// (DPDK's `RTE_MBUF_DEFAULT_BUF_SIZE`).
#[allow(clippy::cast_possible_truncation)] // bounded by the assertion below
pub const DEFAULT_DATA_ROOM: u16 = dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16;
const _: () = assert!(dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE <= u16::MAX as u32);

/// The room DPDK keeps in front of every mbuf's data.
pub const HEADROOM: u32 = dpdk_sys::RTE_PKTMBUF_HEADROOM;

/// Why a pool could not be created.
#[derive(Debug, thiserror::Error)]
pub enum MempoolError {
    #[error("mempool name {0:?} is invalid (empty, too long or with a NUL byte)")]
    BadName(String),
    #[error("cannot create mempool `{name}` of {count} mbufs of {data_room} bytes: {errno}")]
    Create {
        name: String,
        count: u32,
        data_room: u16,
        errno: Errno,
    },
}

/// A pool of packet buffers (`rte_pktmbuf_pool_create`).
#[derive(Debug)]
pub struct Mempool {
    raw: NonNull<dpdk_sys::rte_mempool>,
    name: String,
}

// SAFETY: DPDK mempools are multi-producer/multi-consumer safe for get and put
// from any thread (per-lcore caches are indexed by the caller's lcore id), and
// the pool itself is never freed.
unsafe impl Send for Mempool {}
// SAFETY: as above: every operation exposed here is thread-safe in DPDK.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `count` mbufs with `data_room` bytes each (headroom
    /// included; `RTE_MBUF_DEFAULT_BUF_SIZE` is the usual value) and a
    /// per-lcore cache of `cache` buffers.
    pub fn create(
        eal: &Eal,
        name: &str,
        count: u32,
        cache: u32,
        data_room: u16,
    ) -> Result<&'static Mempool, MempoolError> {
        Mempool::create_on(eal, name, count, cache, data_room, None)
    }

    /// [`create`](Mempool::create), with the memory on NUMA node `node`
    /// (`None`: any node, the calling thread's first).
    pub fn create_on(
        _eal: &Eal,
        name: &str,
        count: u32,
        cache: u32,
        data_room: u16,
        node: Option<u32>,
    ) -> Result<&'static Mempool, MempoolError> {
        let socket = node
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(SOCKET_ID_ANY);
        let bad_name = || MempoolError::BadName(name.to_owned());
        if name.is_empty() || name.len() >= dpdk_sys::RTE_MEMPOOL_NAMESIZE as usize {
            return Err(bad_name());
        }
        let c = CString::new(name).map_err(|_| bad_name())?;
        // SAFETY: EAL is initialised (the &Eal proves it) and c is a valid C
        // string that DPDK copies.
        let raw = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(c.as_ptr(), count, cache, 0, data_room, socket)
        };
        let raw = NonNull::new(raw).ok_or_else(|| MempoolError::Create {
            name: name.to_owned(),
            count,
            data_room,
            errno: Errno(rte_errno()),
        })?;
        Ok(Box::leak(Box::new(Mempool {
            raw,
            name: name.to_owned(),
        })))
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes one mbuf, reset and empty; `None` when the pool is exhausted.
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is a valid pktmbuf pool for the life of the process.
        let m = unsafe { dpdk_sys::rte_pktmbuf_alloc(self.raw.as_ptr()) };
        // SAFETY: a non-null result is a fresh mbuf that nobody else owns.
        NonNull::new(m).map(|m| unsafe { Mbuf::from_raw(m) })
    }

    /// Buffers currently free in the pool (including lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is valid; the count is a racy snapshot by design.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Buffers currently taken from the pool.
    pub fn in_use(&self) -> u32 {
        // SAFETY: as for `available`.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }

    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.raw.as_ptr()
    }
}
