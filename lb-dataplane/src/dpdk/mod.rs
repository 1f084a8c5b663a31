//! The safe layer over DPDK: the only place in the dataplane with `unsafe`.
//!
//! It gives DPDK objects Rust ownership so the type system states who may touch
//! what: [`Eal`] is initialised once per process; a [`Mempool`] lives for the
//! rest of the process; an [`Mbuf`] is freed exactly once (on drop, or by the
//! driver after a successful transmit); an [`RxQueue`] or [`TxQueue`] is owned
//! by one worker (`Send`, not `Sync`) and keeps its port open; work runs on EAL
//! lcores through [`launch`]. Everything that can fail returns a typed error
//! that names the culprit; nothing here panics on a DPDK failure.

#![allow(unsafe_code)]

mod eal;
mod gso;
mod lcore;
mod mbuf;
mod mempool;
mod port;
mod prefetch;
mod realtime;
mod ring;

pub use eal::{Eal, EalError};
pub use gso::{Gso, GsoError, MAX_SEGMENTS};
pub use lcore::{launch, LaunchError, LcoreHandle};
pub use mbuf::{burst_len, Mbuf, MbufBurst, MAX_BURST};
pub use mempool::{Mempool, MempoolError, DEFAULT_DATA_ROOM, HEADROOM};
pub use port::{Link, Port, PortConfig, PortError, PortStats, RxQueue, TxQueue};
pub use prefetch::CpuPrefetch;
pub use realtime::{lock_memory, monotonic_ns, set_realtime, thread_cpu_ns, RealtimeError};
pub use ring::{HandOverRing, RingConsumer, RingError};

use std::ffi::CStr;

/// DPDK's `SOCKET_ID_ANY`, a macro bindgen cannot see.
const SOCKET_ID_ANY: i32 = -1;

/// The calling thread's `rte_errno`.
fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local int through a C accessor; no preconditions.
    unsafe { dpdk_sys::lb_rte_errno() }
}

/// DPDK's text for an errno value (covers DPDK's own codes beyond libc's).
fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror accepts any value and returns a pointer to a static
    // or thread-local NUL-terminated string, valid until the next call on this
    // thread; it is copied out at once.
    unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(errno)) }
        .to_string_lossy()
        .into_owned()
}

/// An errno value with DPDK's description, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (errno {})", strerror(self.0), self.0)
    }
}

/// The TSC frequency, for turning cycle counts into time.
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value EAL calibrated at init; valid on any thread.
    unsafe { dpdk_sys::rte_get_tsc_hz() }
}

/// The current TSC value.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: reads the CPU's time-stamp counter; no memory is touched.
    unsafe { dpdk_sys::rte_rdtsc() }
}

#[cfg(test)]
mod tests;

/// The EAL lcore id of the calling thread (`u32::MAX` off EAL threads).
pub fn current_lcore() -> u32 {
    // SAFETY: reads a thread-local through a C accessor; no preconditions.
    unsafe { dpdk_sys::lb_rte_lcore_id() }
}
