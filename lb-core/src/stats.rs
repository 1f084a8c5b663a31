//! Statistics as `ipvsadm --stats` and `--rate` show them, per service and
//! per real server.
//!
//! Counters are kept per worker (no shared atomics on the fast path) and
//! summed by whoever reads them: [`ServiceReport::merge`] adds one worker's
//! report into another's. Rates are estimated from successive totals like
//! IPVS's estimator: a sample every interval, smoothed with weight 1/4.

use std::net::IpAddr;

use crate::sched::SchedKind;
use crate::service::ServiceKey;
use crate::types::ForwardMode;

pub use crate::types::Stats;

/// Connections and packets/bytes per second (`ipvsadm --rate`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub cps: f64,
    pub in_pps: f64,
    pub out_pps: f64,
    pub in_bps: f64,
    pub out_bps: f64,
}

/// Smooths rates from successive totals.
#[derive(Debug, Clone, Default)]
pub struct RateEstimator {
    last: Option<Stats>,
    rates: Rates,
}

impl RateEstimator {
    /// Takes the totals `now` seen `elapsed` seconds after the previous
    /// sample and returns the smoothed rates.
    pub fn sample(&mut self, now: &Stats, elapsed: f64) -> Rates {
        if let (Some(last), true) = (self.last, elapsed > 0.0) {
            // Counters are monotonic; a reset (zeroed counters) reads as 0.
            let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / elapsed;
            let r = Rates {
                cps: d(now.conns, last.conns),
                in_pps: d(now.in_pkts, last.in_pkts),
                out_pps: d(now.out_pkts, last.out_pkts),
                in_bps: d(now.in_bytes, last.in_bytes) * 8.0,
                out_bps: d(now.out_bytes, last.out_bytes) * 8.0,
            };
            let s = |old: f64, new: f64| old + (new - old) / 4.0;
            self.rates = Rates {
                cps: s(self.rates.cps, r.cps),
                in_pps: s(self.rates.in_pps, r.in_pps),
                out_pps: s(self.rates.out_pps, r.out_pps),
                in_bps: s(self.rates.in_bps, r.in_bps),
                out_bps: s(self.rates.out_bps, r.out_bps),
            };
        }
        self.last = Some(*now);
        self.rates
    }
}

/// One real server in a report.
#[derive(Debug, Clone, PartialEq)]
pub struct RealReport {
    pub addr: IpAddr,
    pub port: u16,
    pub mode: ForwardMode,
    pub weight: u32,
    pub active: u64,
    pub inactive: u64,
    /// Persistence templates (ipvsadm's PersistConn).
    pub persistent: u64,
    pub stats: Stats,
}

/// One service in a report.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceReport {
    pub key: ServiceKey,
    pub sched: SchedKind,
    pub stats: Stats,
    pub reals: Vec<RealReport>,
}

impl ServiceReport {
    /// Adds another worker's report of the same service.
    pub fn merge(&mut self, other: &ServiceReport) {
        debug_assert_eq!(self.key, other.key);
        self.stats.add(&other.stats);
        for o in &other.reals {
            match self
                .reals
                .iter_mut()
                .find(|r| r.addr == o.addr && r.port == o.port)
            {
                Some(r) => {
                    r.active += o.active;
                    r.inactive += o.inactive;
                    r.persistent += o.persistent;
                    r.stats.add(&o.stats);
                }
                None => self.reals.push(o.clone()),
            }
        }
    }
}

/// Sums per-worker reports into one per service.
pub fn merge_reports(per_worker: &[Vec<ServiceReport>]) -> Vec<ServiceReport> {
    let mut out: Vec<ServiceReport> = Vec::new();
    for report in per_worker.iter().flatten() {
        match out.iter_mut().find(|s| s.key == report.key) {
            Some(s) => s.merge(report),
            None => out.push(report.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Protocol;

    #[test]
    fn rates_smooth_towards_the_measured_value() {
        let mut e = RateEstimator::default();
        let at = |conns, pkts| Stats {
            conns,
            in_pkts: pkts,
            out_pkts: 0,
            in_bytes: pkts * 100,
            out_bytes: 0,
        };
        assert_eq!(
            e.sample(&at(0, 0), 2.0),
            Rates::default(),
            "the first sample is the baseline"
        );
        let r = e.sample(&at(200, 2000), 2.0);
        // 100 conn/s measured; a quarter of the way from 0.
        assert_eq!(r.cps, 25.0);
        assert_eq!(r.in_pps, 250.0);
        assert_eq!(r.in_bps, 250.0 * 800.0);
        let mut last = r.cps;
        for i in 2..40u64 {
            last = e.sample(&at(200 * i, 2000 * i), 2.0).cps;
        }
        assert!((last - 100.0).abs() < 0.1, "{last}");
    }

    #[test]
    fn reports_sum_over_workers() {
        let key = ServiceKey {
            proto: Protocol::Tcp,
            vip: "198.18.0.10".parse().unwrap(),
            port: 80,
            mark: 0,
        };
        let rs = |addr: &str, active, conns| RealReport {
            addr: addr.parse().unwrap(),
            port: 80,
            mode: ForwardMode::Dr,
            weight: 1,
            active,
            inactive: 1,
            persistent: 0,
            stats: Stats {
                conns,
                ..Stats::default()
            },
        };
        let w = |reals: Vec<RealReport>, conns| ServiceReport {
            key,
            sched: SchedKind::Wlc,
            stats: Stats {
                conns,
                ..Stats::default()
            },
            reals,
        };
        let merged = merge_reports(&[
            vec![w(vec![rs("10.1.0.5", 2, 3)], 3)],
            vec![w(vec![rs("10.1.0.5", 1, 4), rs("10.1.0.6", 5, 6)], 10)],
        ]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].stats.conns, 13);
        assert_eq!(
            (
                merged[0].reals[0].active,
                merged[0].reals[0].inactive,
                merged[0].reals[0].stats.conns
            ),
            (3, 2, 7)
        );
        assert_eq!(merged[0].reals[1].active, 5);
    }
}
