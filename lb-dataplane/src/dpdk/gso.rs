//! Software segmentation of TCP super-frames (DPDK's `librte_gso`).
//!
//! A kernel sender with TSO hands over TCP frames of up to 64 KB; a
//! kernel-backed port can receive them whole, but no receiver accepts a
//! frame larger than its MTU. [`Gso::segment`] cuts such a frame into
//! MTU-sized segments with `rte_gso_segment`, which copies the headers into
//! a fresh mbuf per segment and points an indirect mbuf at its share of the
//! payload. Each segment is then made contiguous (`rte_pktmbuf_linearize`):
//! not every driver transmits chained mbufs (af_xdp copies one segment),
//! and the checksums that librte_gso leaves to the NIC are computed over
//! the flat bytes by the caller. librte_gso in DPDK 22.11 segments TCP over
//! IPv4 only.

use std::ptr::NonNull;

use super::{Errno, Mbuf, Mempool};

/// The most segments one super-frame may become (64 KB in segments of a
/// 1500-byte MTU is 46).
pub const MAX_SEGMENTS: usize = 64;

/// Why a frame was not segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    #[error("segmentation failed: {0}")]
    Segment(Errno),
    #[error("a segment could not be made contiguous")]
    Linearize,
}

/// A segmentation context: where segment headers and payload references
/// come from, and how large a segment may be.
#[derive(Debug)]
pub struct Gso {
    ctx: dpdk_sys::rte_gso_ctx,
}

// SAFETY: the context holds pointers to two mempools that live for the whole
// process and are thread-safe; a `Gso` is used by one worker at a time
// (`segment` takes `&self` but DPDK only reads the context).
unsafe impl Send for Gso {}

impl Gso {
    /// Segments take their header copies from `direct` (which must hold a
    /// whole segment, for the linearising) and their payload references
    /// from `indirect` (a pool of data-room-0 mbufs).
    pub fn new(direct: &'static Mempool, indirect: &'static Mempool) -> Gso {
        Gso {
            ctx: dpdk_sys::rte_gso_ctx {
                direct_pool: direct.as_ptr(),
                indirect_pool: indirect.as_ptr(),
                flag: 0,
                gso_types: dpdk_sys::RTE_ETH_TX_OFFLOAD_TCP_TSO,
                gso_size: 0,
            },
        }
    }

    /// Cuts the TCP/IPv4 frame `m`, whose headers are `l2`, `l3` and `l4`
    /// bytes long, into contiguous segments of at most `seg_len` bytes
    /// (Ethernet header included) pushed to `out`; `m` is
    /// consumed either way. Sequence numbers, IP lengths and identifiers
    /// are set per segment (FIN and PSH only on the last); the IPv4 and TCP
    /// checksums are left for the caller.
    pub fn segment(
        &self,
        mut m: Mbuf,
        (l2, l3, l4): (u16, u16, u16),
        seg_len: u16,
        out: &mut arrayvec::ArrayVec<Mbuf, MAX_SEGMENTS>,
    ) -> Result<(), GsoError> {
        let ctx = dpdk_sys::rte_gso_ctx {
            gso_size: seg_len,
            ..self.ctx
        };
        {
            let raw = m.raw_mut();
            raw.ol_flags |= dpdk_sys::RTE_MBUF_F_TX_TCP_SEG | dpdk_sys::RTE_MBUF_F_TX_IPV4;
            // tx_offload's layout (rte_mbuf_core.h): l2_len in bits 0-6,
            // l3_len in 7-15, l4_len in 16-23.
            raw.__bindgen_anon_3.tx_offload =
                u64::from(l2 & 0x7f) | (u64::from(l3 & 0x1ff) << 7) | (u64::from(l4) << 16);
        }
        let mut segs = [std::ptr::null_mut::<dpdk_sys::rte_mbuf>(); MAX_SEGMENTS];
        let n_max = u16::try_from(MAX_SEGMENTS.min(out.remaining_capacity())).unwrap_or(0);
        let raw = m.into_raw();
        // SAFETY: raw is a valid mbuf we own, ctx points at two live pools,
        // and segs has room for n_max pointers. rte_gso_segment never frees
        // its input; on success the segments' indirect mbufs hold references
        // to raw's buffer, so raw is freed (below) after them at no risk:
        // the buffer lives until its last reference goes.
        let n = unsafe { dpdk_sys::rte_gso_segment(raw.as_ptr(), &ctx, segs.as_mut_ptr(), n_max) };
        // SAFETY: raw is still ours (rte_gso_segment does not take it).
        drop(unsafe { Mbuf::from_raw(raw) });
        let n = usize::try_from(n).map_err(|_| GsoError::Segment(Errno(-n)))?;
        let mut result = Ok(());
        for &s in &segs[..n] {
            let Some(s) = NonNull::new(s) else {
                continue;
            };
            // SAFETY: each of the first n pointers is a new segment that
            // rte_gso_segment handed to us and nobody else holds.
            let mut seg = unsafe { Mbuf::from_raw(s) };
            // SAFETY: seg is a valid chained mbuf we own; linearize copies
            // the chain into the first segment's tailroom and frees the rest.
            if unsafe { dpdk_sys::rte_pktmbuf_linearize(seg.raw_mut()) } != 0 {
                result = Err(GsoError::Linearize);
                continue;
            }
            // n is at most out's remaining capacity: this always fits.
            let _ = out.try_push(seg);
        }
        result
    }
}
