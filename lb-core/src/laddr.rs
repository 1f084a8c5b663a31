//! Full-NAT local-address pools: which (local address, port) a new
//! connection leaves from.
//!
//! Each worker owns a disjoint share of the port space: the ports with
//! `port % workers == worker`. A reply's owner is therefore a function of
//! its destination port ([`owner_of`]), which is what lets RSS-less ports,
//! rte_flow rules or a hand-over ring bring it to the right worker.
//!
//! A (local address, port) pair may serve several real servers at once,
//! since their reply tuples differ, as with DPVS's per-real-server
//! sub-pools. Rather than keep a free list per (address, server) pair, an
//! allocation probes candidate ports against the session table (is that
//! reply tuple taken?), so a port is free again the moment its session is
//! removed, with no memory per port. Exhaustion after a bounded number of
//! probes is an error the caller counts as a drop.

use crate::session::Addr;

/// How many candidate ports one allocation tries per local address.
pub const PROBES: u32 = 64;
/// The default local port range (ports below are left to the kernel side).
pub const DEFAULT_PORT_RANGE: (u16, u16) = (1025, 65535);

/// Why a pool could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaddrError {
    #[error("a Full-NAT service needs at least one local address")]
    Empty,
    #[error("local port range {min}-{max} is empty")]
    BadRange { min: u16, max: u16 },
    #[error("local port range {min}-{max} gives worker {worker} of {workers} no port")]
    TooManyWorkers {
        min: u16,
        max: u16,
        worker: u16,
        workers: u16,
    },
}

/// The worker that owns local port `port` among `workers`.
#[inline]
pub fn owner_of(port: u16, workers: u16) -> u16 {
    port % workers.max(1)
}

/// One worker's share of a service's local addresses and ports.
#[derive(Debug, Clone)]
pub struct LaddrPool {
    laddrs: Box<[Addr]>,
    /// Connections using each address, for the pool-use metric.
    in_use: Box<[u32]>,
    first: u32,
    /// How many ports this worker owns in the range.
    count: u32,
    step: u32,
    /// The next port index to try, and the next address.
    cursor: u32,
    next_laddr: usize,
}

impl LaddrPool {
    /// Worker `worker` of `workers`' share of `laddrs` over the inclusive
    /// port range `min..=max`.
    pub fn new(
        laddrs: &[Addr],
        worker: u16,
        workers: u16,
        (min, max): (u16, u16),
    ) -> Result<LaddrPool, LaddrError> {
        if laddrs.is_empty() {
            return Err(LaddrError::Empty);
        }
        if min > max || min == 0 {
            return Err(LaddrError::BadRange { min, max });
        }
        let workers = workers.max(1);
        // The first port >= min that this worker owns.
        let step = u32::from(workers);
        let offset = (u32::from(worker) + step - u32::from(min) % step) % step;
        let first = u32::from(min) + offset;
        if first > u32::from(max) || worker >= workers {
            return Err(LaddrError::TooManyWorkers {
                min,
                max,
                worker,
                workers,
            });
        }
        let count = (u32::from(max) - first) / step + 1;
        Ok(LaddrPool {
            laddrs: laddrs.into(),
            in_use: vec![0; laddrs.len()].into_boxed_slice(),
            first,
            count,
            step,
            cursor: 0,
            next_laddr: 0,
        })
    }

    /// The ports this worker owns per address.
    pub fn ports_per_laddr(&self) -> u32 {
        self.count
    }

    /// Picks a (local address, port) whose reply tuple is free, asking
    /// `taken(laddr, port)`; addresses are used in turn. `None` when
    /// [`PROBES`] ports of every address are taken.
    pub fn allocate(&mut self, mut taken: impl FnMut(&Addr, u16) -> bool) -> Option<(Addr, u16)> {
        let n = self.laddrs.len();
        // Indices wrap with a compare rather than `%`: divisions cost more
        // than the rest of the loop. Both stay below their bounds.
        let wrap = |i: usize| if i >= n { i - n } else { i };
        for a in 0..n {
            let li = wrap(self.next_laddr + a);
            for _ in 0..PROBES.min(self.count) {
                let idx = self.cursor;
                self.cursor = if idx + 1 >= self.count { 0 } else { idx + 1 };
                let port = u16::try_from(self.first + idx * self.step).unwrap_or(u16::MAX);
                if !taken(&self.laddrs[li], port) {
                    self.next_laddr = wrap(li + 1);
                    self.in_use[li] += 1;
                    return Some((self.laddrs[li], port));
                }
            }
        }
        None
    }

    /// A connection from `laddr` ended.
    pub fn release(&mut self, laddr: &Addr) {
        if let Some(i) = self.laddrs.iter().position(|l| l == laddr) {
            self.in_use[i] = self.in_use[i].saturating_sub(1);
        }
    }

    /// Connections per address, in order.
    pub fn in_use(&self) -> &[u32] {
        &self.in_use
    }

    /// The addresses, in order.
    pub fn laddrs(&self) -> &[Addr] {
        &self.laddrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::addr_v4;
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    fn lips(n: u8) -> Vec<Addr> {
        (1..=n)
            .map(|i| addr_v4(Ipv4Addr::new(10, 2, 0, i)))
            .collect()
    }

    #[test]
    fn workers_share_the_ports_disjointly_and_own_their_replies() {
        let workers = 3;
        let mut seen = HashSet::new();
        for w in 0..workers {
            let mut p = LaddrPool::new(&lips(1), w, workers, (1025, 1100)).unwrap();
            let mut got = HashSet::new();
            while let Some((_, port)) = p.allocate(|_, port| got.contains(&port)) {
                assert_eq!(owner_of(port, workers), w);
                assert!((1025..=1100).contains(&port));
                got.insert(port);
            }
            assert_eq!(u32::try_from(got.len()).unwrap(), p.ports_per_laddr());
            for port in got {
                assert!(seen.insert(port), "port {port} given to two workers");
            }
        }
        assert_eq!(seen.len(), 76, "every port of the range has an owner");
    }

    #[test]
    fn one_port_serves_several_real_servers() {
        // The reply tuple includes the real server: a port busy towards one
        // server is free towards another.
        let mut p = LaddrPool::new(&lips(1), 0, 1, (2000, 2000)).unwrap();
        let mut busy: HashSet<(u8, u16)> = HashSet::new();
        for rs in 0..5u8 {
            let (_, port) = p.allocate(|_, port| busy.contains(&(rs, port))).unwrap();
            assert_eq!(port, 2000);
            busy.insert((rs, port));
        }
        assert_eq!(
            p.allocate(|_, port| busy.contains(&(0, port))),
            None,
            "exhausted towards server 0"
        );
    }

    #[test]
    fn addresses_in_turn_and_use_counts() {
        let mut p = LaddrPool::new(&lips(2), 0, 1, DEFAULT_PORT_RANGE).unwrap();
        let (a, _) = p.allocate(|_, _| false).unwrap();
        let (b, _) = p.allocate(|_, _| false).unwrap();
        assert_ne!(a, b);
        assert_eq!(p.in_use(), [1, 1]);
        p.release(&a);
        p.release(&a);
        assert_eq!(p.in_use(), [0, 1]);
        // When one address is exhausted, the next one serves.
        let first = p.laddrs()[0];
        let (c, _) = p.allocate(|l, _| *l == first).unwrap();
        assert_eq!(c, p.laddrs()[1]);
        assert_eq!(p.allocate(|_, _| true), None);
    }

    #[test]
    fn bad_pools() {
        assert_eq!(
            LaddrPool::new(&[], 0, 1, DEFAULT_PORT_RANGE).unwrap_err(),
            LaddrError::Empty
        );
        assert!(matches!(
            LaddrPool::new(&lips(1), 0, 1, (10, 5)),
            Err(LaddrError::BadRange { .. })
        ));
        assert!(matches!(
            LaddrPool::new(&lips(1), 3, 4, (1024, 1026)),
            Err(LaddrError::TooManyWorkers { .. })
        ));
        assert_eq!(owner_of(1027, 4), 3);
    }
}
