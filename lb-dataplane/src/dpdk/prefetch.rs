//! The CPU's prefetch instruction, which the engine's bursts use to overlap
//! their session lookups' cache misses (lb-core has no unsafe code, so it
//! takes the instruction from here).

use lb_core::engine::Prefetch;

/// `prefetcht0`: the line into every cache level, as DPDK's
/// `rte_prefetch0` does. On other architectures, no prefetch (the engine
/// then reads ahead with loads).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuPrefetch;

impl Prefetch for CpuPrefetch {
    const ACTIVE: bool = cfg!(target_arch = "x86_64");

    #[inline(always)]
    fn prefetch<T>(&self, r: &T) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint. It cannot fault, whatever the
        // address, and changes nothing the program can observe; here the
        // address is a live reference besides. The intrinsic is `unsafe`
        // only because it takes a raw pointer and needs SSE, which every
        // x86_64 CPU has.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                std::ptr::from_ref(r).cast(),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = r;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::engine::{Action, Worker, WorkerConfig};
    use lb_core::packet::{PacketBuf, VecBuf};
    use lb_core::sched::SchedKind;
    use lb_core::testpkt::{fnat_snapshot, Builder};
    use lb_core::wire::tcp::Flags;
    use std::sync::Arc;

    fn worker() -> Worker {
        Worker::new(
            WorkerConfig {
                capacity: 256,
                prefetch_from: 0,
                ..WorkerConfig::default()
            },
            Arc::new(fnat_snapshot(4, SchedKind::Rr)),
        )
    }

    /// Bursts of SYNs then data on 48 flows give the same frames and
    /// actions with the CPU's prefetch as with loads ahead.
    #[test]
    fn prefetching_changes_nothing_but_speed() {
        let frames = |flags: u8| -> Vec<VecBuf> {
            (0..48)
                .map(|i| {
                    let c = format!("10.0.0.2:{}", 30000 + i);
                    VecBuf::new(&Builder::tcp_v4(&c, "198.18.0.10:80", flags).build(), 64)
                })
                .collect()
        };
        let (mut plain, mut fetching) = (worker(), worker());
        for flags in [Flags::SYN, Flags::ACK, Flags::ACK | Flags::FIN] {
            let (mut a, mut b) = (frames(flags), frames(flags));
            let mut acts_a = vec![Action::Exception; a.len()];
            let mut acts_b = acts_a.clone();
            plain.process_burst(&mut a, 0, 1, &mut acts_a);
            fetching.process_burst_with(&mut b, 0, 1, &mut acts_b, &CpuPrefetch);
            assert_eq!(acts_a, acts_b);
            assert!(acts_b.iter().all(|a| matches!(a, Action::Transmit { .. })));
            let data = |v: &[VecBuf]| v.iter().map(|f| f.data().to_vec()).collect::<Vec<_>>();
            assert_eq!(data(&a), data(&b));
        }
        assert_eq!(fetching.sessions.len(), 48);
    }
}
