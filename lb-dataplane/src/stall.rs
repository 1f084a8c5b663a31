//! A worker's stalls: passes of its loop [`STALL_NS`] or more apart, each
//! told apart by cause. While a worker is away from its loop nothing
//! drains its receive queues, so a stall longer than a queue covers at the
//! arriving rate loses packets at the port. Whose time it was decides the
//! remedy: a stall in which the thread ran is its own work (an expiry
//! sweep, a snapshot adopted, a long burst) and ours to fix; one in which
//! it did not (the kernel ran something else on its core, or the
//! hypervisor took the virtual CPU) is the machine's, answered by isolated
//! cores and real-time priority (docs/deploy.md).
//!
//! Telling them apart needs the thread's CPU time, a system call, so the
//! worker reads it only once a millisecond and after each stall: a stall's
//! interval then runs from the last reading to the stall's end, and the
//! wall time of that interval less its CPU time is the time the thread was
//! away ([`away_ns`]). The reading once a millisecond costs about 0.02 %
//! of the worker's time.
//!
//! The last [`LOG`] stalls are kept where the control thread reads them
//! (`lb-ctl stalls`), in records that only the worker writes: each record
//! carries a sequence number, cleared while it is rewritten, so a reader
//! that met a record half-written skips it instead of reading it torn.

use std::sync::atomic::{fence, AtomicU64, Ordering};

use lb_admin_proto::{stall_outside, Stall};

/// What a pass of the loop did besides its bursts, as bits (reported by
/// name in [`Stall::during`]).
pub mod during {
    pub const EXPIRY: u8 = 1;
    pub const NEIGHBOURS: u8 = 2;
    pub const SNAPSHOT: u8 = 4;
    pub const REQUESTS: u8 = 8;
    pub const SYNC: u8 = 16;
    /// Each bit's name.
    pub const NAMES: [(u8, &str); 5] = [
        (EXPIRY, "expiry"),
        (NEIGHBOURS, "neighbours"),
        (SNAPSHOT, "snapshot"),
        (REQUESTS, "requests"),
        (SYNC, "sync"),
    ];
}

/// A stall as the worker notes it: no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub end_ns: u64,
    pub gap_ns: u64,
    pub away_ns: u64,
    /// [`during`] bits.
    pub during: u8,
}

impl Record {
    pub fn outside(&self) -> bool {
        stall_outside(self.gap_ns, self.away_ns)
    }

    /// The record as the admin protocol reports it.
    pub fn report(&self) -> Stall {
        Stall {
            end_ns: self.end_ns,
            gap_ns: self.gap_ns,
            away_ns: self.away_ns,
            during: during::NAMES
                .iter()
                .filter(|(bit, _)| self.during & bit != 0)
                .map(|(_, name)| (*name).to_owned())
                .collect(),
        }
    }
}

/// A gap between two passes of the loop this long or longer is a stall (ns).
/// A 1024-slot receive ring covers 100 µs at 10 Mpps.
pub const STALL_NS: u64 = 100_000;
/// How often the worker reads its CPU time between stalls (ns).
const CHECK_NS: u64 = 1_000_000;
/// Stalls kept, per worker.
pub const LOG: usize = 1024;

/// The time a thread did not run in an interval of `wall_ns` in which it
/// ran `cpu_ns`, as the part of a stall of `gap_ns` at its end: at most the
/// stall itself.
pub fn away_ns(gap_ns: u64, wall_ns: u64, cpu_ns: u64) -> u64 {
    wall_ns.saturating_sub(cpu_ns).min(gap_ns)
}

/// The worker's side: when it last read its CPU time, and the threshold in
/// TSC cycles.
#[derive(Debug)]
pub struct StallWatch {
    hz: u64,
    stall_cycles: u64,
    check_cycles: u64,
    /// The last reading: TSC and the thread's CPU time (ns).
    check_tsc: u64,
    check_cpu_ns: u64,
}

impl StallWatch {
    /// A watch for a thread whose TSC runs at `hz`, reading its CPU time
    /// now (call on the worker's thread).
    pub fn new(hz: u64, tsc: u64, cpu_ns: u64) -> StallWatch {
        let cycles = |ns: u64| u64::try_from(u128::from(ns) * u128::from(hz) / 1_000_000_000);
        StallWatch {
            hz: hz.max(1),
            stall_cycles: cycles(STALL_NS).unwrap_or(u64::MAX).max(1),
            check_cycles: cycles(CHECK_NS).unwrap_or(u64::MAX).max(1),
            check_tsc: tsc,
            check_cpu_ns: cpu_ns,
        }
    }

    fn ns(&self, cycles: u64) -> u64 {
        u64::try_from(u128::from(cycles) * 1_000_000_000 / u128::from(self.hz)).unwrap_or(u64::MAX)
    }

    /// Called at every pass of the loop with the previous pass's TSC and
    /// this one's, and what the previous pass did besides its bursts
    /// ([`during`] bits); `clocks` reads (the thread's CPU time,
    /// `CLOCK_MONOTONIC`) in ns, and is called only once a millisecond or
    /// after a stall. Returns the stall, if the gap was one.
    #[inline]
    pub fn pass(
        &mut self,
        last: u64,
        tsc: u64,
        did: u8,
        clocks: impl FnOnce() -> (u64, u64),
    ) -> Option<Record> {
        let gap = tsc.wrapping_sub(last);
        if gap >= self.stall_cycles {
            return Some(self.stalled(gap, tsc, did, clocks()));
        }
        if tsc.wrapping_sub(self.check_tsc) >= self.check_cycles {
            self.check_tsc = tsc;
            self.check_cpu_ns = clocks().0;
        }
        None
    }

    #[cold]
    fn stalled(&mut self, gap: u64, tsc: u64, did: u8, (cpu_ns, now_ns): (u64, u64)) -> Record {
        let gap_ns = self.ns(gap);
        let wall_ns = self.ns(tsc.wrapping_sub(self.check_tsc));
        let away = away_ns(gap_ns, wall_ns, cpu_ns.saturating_sub(self.check_cpu_ns));
        self.check_tsc = tsc;
        self.check_cpu_ns = cpu_ns;
        Record {
            end_ns: now_ns,
            gap_ns,
            away_ns: away,
            during: did,
        }
    }
}

/// The last [`LOG`] stalls of one worker: written by it, read by the
/// control thread.
#[derive(Debug)]
pub struct StallLog {
    /// Stalls written so far.
    written: AtomicU64,
    /// Each record: sequence (its number + 1; 0 while being written), end,
    /// gap, away, during.
    records: Box<[[AtomicU64; 5]]>,
}

impl Default for StallLog {
    fn default() -> Self {
        StallLog {
            written: AtomicU64::new(0),
            records: (0..LOG).map(|_| Default::default()).collect(),
        }
    }
}

impl StallLog {
    /// The record that stall `k` (counting from 0) goes in.
    fn record(&self, k: u64) -> &[AtomicU64; 5] {
        // Below LOG: fits any usize.
        let slot = usize::try_from(k % LOG as u64).unwrap_or(0);
        &self.records[slot]
    }

    /// Adds a stall, over the oldest when full (the worker only).
    pub fn push(&self, s: Record) {
        let n = self.written.load(Ordering::Relaxed);
        let r = self.record(n);
        r[0].store(0, Ordering::Relaxed);
        // The cleared sequence is seen before any new field.
        fence(Ordering::Release);
        r[1].store(s.end_ns, Ordering::Relaxed);
        r[2].store(s.gap_ns, Ordering::Relaxed);
        r[3].store(s.away_ns, Ordering::Relaxed);
        r[4].store(u64::from(s.during), Ordering::Relaxed);
        r[0].store(n + 1, Ordering::Release);
        self.written.store(n + 1, Ordering::Release);
    }

    /// Stalls so far, the overwritten ones included.
    pub fn total(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// The stalls kept, oldest first; a record the worker was rewriting
    /// while it was read is left out.
    pub fn read(&self) -> Vec<Record> {
        let n = self.written.load(Ordering::Acquire);
        let first = n.saturating_sub(LOG as u64);
        (first..n)
            .filter_map(|k| {
                let r = self.record(k);
                let seq = r[0].load(Ordering::Acquire);
                let s = Record {
                    end_ns: r[1].load(Ordering::Relaxed),
                    gap_ns: r[2].load(Ordering::Relaxed),
                    away_ns: r[3].load(Ordering::Relaxed),
                    during: u8::try_from(r[4].load(Ordering::Relaxed)).unwrap_or(0),
                };
                // The fields are read before the sequence is read again.
                fence(Ordering::Acquire);
                (seq == k + 1 && r[0].load(Ordering::Relaxed) == seq).then_some(s)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 1_000_000_000; // one cycle a nanosecond

    #[test]
    fn a_short_gap_is_no_stall_and_reads_no_clock() {
        let mut w = StallWatch::new(HZ, 0, 0);
        let read = || panic!("no clock is read before a millisecond has passed");
        assert_eq!(w.pass(0, STALL_NS - 1, 0, read), None);
    }

    #[test]
    fn a_stall_in_which_the_thread_ran_is_its_own() {
        let mut w = StallWatch::new(HZ, 0, 0);
        // Ran all of 0.5 ms: a gap of 300 µs at its end, CPU time 500 µs.
        let s = w
            .pass(200_000, 500_000, during::EXPIRY, || (500_000, 7))
            .unwrap();
        assert_eq!((s.end_ns, s.gap_ns, s.away_ns), (7, 300_000, 0));
        assert!(!s.outside());
        assert_eq!(s.report().during, ["expiry"]);
    }

    #[test]
    fn a_stall_in_which_the_thread_was_away_is_the_machines() {
        let mut w = StallWatch::new(HZ, 0, 0);
        // The CPU time is read once a millisecond...
        assert_eq!(w.pass(999_990, 1_000_000, 0, || (1_000_000, 0)), None);
        // ...then 2 ms pass with the thread running 0.1 ms of them.
        let s = w.pass(1_100_000, 3_000_000, 0, || (1_100_000, 9)).unwrap();
        assert_eq!(s.gap_ns, 1_900_000);
        assert_eq!(s.away_ns, 1_900_000);
        assert!(s.outside());
        // The next stall is measured from this one's end.
        let s = w.pass(3_000_000, 3_200_000, 0, || (1_300_000, 10)).unwrap();
        assert_eq!((s.gap_ns, s.away_ns), (200_000, 0));
    }

    #[test]
    fn away_time_is_at_most_the_stall() {
        assert_eq!(away_ns(100, 1_000, 0), 100);
        assert_eq!(away_ns(100, 1_000, 950), 50);
        // CPU time read a little ahead of the TSC: nothing away.
        assert_eq!(away_ns(100, 1_000, 1_001), 0);
    }

    #[test]
    fn the_log_keeps_the_last_stalls_in_order() {
        let log = StallLog::default();
        assert!(log.read().is_empty());
        for k in 0..(LOG as u64 + 3) {
            log.push(Record {
                end_ns: k,
                gap_ns: 1,
                away_ns: 0,
                during: 0,
            });
        }
        let kept = log.read();
        assert_eq!(log.total(), LOG as u64 + 3);
        assert_eq!(kept.len(), LOG);
        assert_eq!(kept.first().map(|s| s.end_ns), Some(3));
        assert_eq!(kept.last().map(|s| s.end_ns), Some(LOG as u64 + 2));
    }

    #[test]
    fn a_reader_beside_the_writer_sees_only_whole_records() {
        let log = std::sync::Arc::new(StallLog::default());
        let writer = {
            let log = std::sync::Arc::clone(&log);
            std::thread::spawn(move || {
                for k in 1..200_000u64 {
                    // Every field of record k holds k.
                    log.push(Record {
                        end_ns: k,
                        gap_ns: k,
                        away_ns: k,
                        during: (k % 32) as u8,
                    });
                }
            })
        };
        while !writer.is_finished() {
            for s in log.read() {
                let whole = s.end_ns == s.gap_ns && s.gap_ns == s.away_ns;
                assert!(whole && u64::from(s.during) == s.end_ns % 32, "{s:?}");
            }
        }
        writer.join().unwrap();
    }
}
