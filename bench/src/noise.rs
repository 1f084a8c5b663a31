//! The machine's noise beside a measurement: the hypervisor's steal time
//! (from `/proc/stat`) and the worker thread's preemptions (its
//! `nonvoluntary_ctxt_switches`), so a reader can tell a slow window caused
//! by the machine from one caused by the appliance.

use serde::Serialize;

/// The machine's CPU time so far, in clock ticks (all CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CpuTimes {
    /// Time the hypervisor gave to someone else while we wanted it.
    pub steal: u64,
    /// user + nice + system + idle + iowait + irq + softirq + steal.
    pub total: u64,
}

impl CpuTimes {
    /// Reads the aggregate `cpu` line of `/proc/stat`.
    pub fn now() -> CpuTimes {
        CpuTimes::parse(&std::fs::read_to_string("/proc/stat").unwrap_or_default())
    }

    fn parse(stat: &str) -> CpuTimes {
        let fields: Vec<u64> = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .take(8)
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        CpuTimes {
            steal: fields.get(7).copied().unwrap_or(0),
            total: fields.iter().sum(),
        }
    }

    /// The share of CPU time stolen between `self` and `later`, percent.
    pub fn steal_pct(&self, later: &CpuTimes) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        later.steal.saturating_sub(self.steal) as f64 * 100.0 / total as f64
    }
}

/// The appliance's worker threads' involuntary context switches so far.
pub fn preemptions(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.starts_with("rte-worker"))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_eighth_field_of_the_cpu_line() {
        let a = CpuTimes::parse("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 1 2 3\n");
        assert_eq!(
            a,
            CpuTimes {
                steal: 35,
                total: 1000
            }
        );
        let b = CpuTimes {
            steal: 35 + 50,
            total: 1000 + 200,
        };
        assert_eq!(a.steal_pct(&b), 25.0);
        assert_eq!(a.steal_pct(&a), 0.0);
        assert_eq!(CpuTimes::parse("garbage"), CpuTimes::default());
    }

    #[test]
    fn this_machine_has_a_cpu_line() {
        assert!(CpuTimes::now().total > 0);
    }
}
