//! Loss below the maximum rate: the generator (`lb-bench gen` in a process
//! of its own, on the main lcore's CPU) feeds the appliance through a
//! memif pair at fractions of the most the appliance takes on that path. A memif ring that is full
//! refuses the frame, which the generator drops and counts, as a wire
//! would; the appliance counts its own drops. Pcap replay cannot show
//! this: the worker pulls from it at its own pace.
//!
//! Every refused frame is set beside the appliance's stalls (`lb-ctl
//! stalls`) on the machine's monotonic clock: frames refused while the
//! worker's thread was away (preempted, or its virtual CPU taken) are the
//! machine's loss, reported apart from the loss inside the process, which
//! is everything else: frames refused while the worker did its own work,
//! or while it was there but did not keep up, and every drop it counted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lb_admin_proto::Stall;
use lb_dataplane::dpdk::monotonic_ns;
use serde::Serialize;

use crate::appliance::{Appliance, Mode, Sample, Setup, CLIENTS, VIP};
use crate::port_gen::REFUSAL_SLOT_NS;

/// The memif ring's slots (`rsize=12`).
pub const RING_SLOTS: u64 = 1 << 12;
/// How far from a stall a refusal still counts as its doing (ns): the
/// generator notes the time after its burst is refused, and the ring takes
/// a moment to drain once the worker is back.
const SLACK_NS: u64 = 200_000;

/// The appliance's memif port's MAC, where the generator's frames go.
const MEMIF_MAC: &str = "02:6d:65:6d:69:66";

/// What a loss run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LossResult {
    pub mode: Mode,
    pub sessions: u64,
    pub pkt_bytes: usize,
    /// The most the appliance took through memif, the generator flat out.
    pub max_mpps: f64,
    /// The fraction of that maximum offered.
    pub fraction: f64,
    pub target_mpps: f64,
    /// What the generator achieved, refused frames included.
    pub offered_mpps: f64,
    pub offered: u64,
    /// Frames the appliance's memif ring refused.
    pub refused: u64,
    /// Frames the generator skipped, not offered, because it was
    /// descheduled (it does not catch up in a burst no wire would carry).
    pub skipped: u64,
    /// Frames the appliance dropped (every drop counter).
    pub dropped: u64,
    pub loss_pct: f64,
    /// The worker's longest time away from its loop in the run (a stall
    /// the ring could not cover shows here), milliseconds.
    pub max_loop_gap_ms: f64,
    /// Times the kernel took the worker's core from it during the data
    /// (`nonvoluntary_ctxt_switches` of its thread).
    pub preempted: u64,
    /// Where the lost frames were lost.
    pub lost: Attribution,
    /// The worker's stalls in the window, by cause, and the longest of
    /// each (ms).
    pub stalls_own: u64,
    pub stalls_outside: u64,
    pub max_own_stall_ms: f64,
    pub max_outside_stall_ms: f64,
    /// Whether the stall log held every stall of the window.
    pub stalls_complete: bool,
    /// The ring, and the slots that would have covered the window's
    /// longest stall at the offered rate.
    pub ring_slots: u64,
    pub ring_needed: u64,
}

/// A window's lost frames by where they were lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Attribution {
    /// Refused while the worker's thread was away: the machine's.
    pub outside: u64,
    /// Refused while the worker did its own work.
    pub own_stall: u64,
    /// Refused with no stall near: the worker was there and did not keep up.
    pub unexplained: u64,
    /// Dropped by the appliance (its drop counters).
    pub dropped: u64,
}

impl Attribution {
    /// The loss inside the process: all but the machine's.
    pub fn inside(&self) -> u64 {
        self.own_stall + self.unexplained + self.dropped
    }
}

/// Sets each slot of refusals (start ns, frames) beside the stalls
/// (ordered by time, none overlapping: they are gaps of one loop) that
/// overlap it, within [`SLACK_NS`]; an outside stall takes precedence.
pub fn attribute(refusals: &[(u64, u64)], stalls: &[Stall], dropped: u64) -> Attribution {
    let mut a = Attribution {
        dropped,
        ..Attribution::default()
    };
    for &(at, n) in refusals {
        let end = at + REFUSAL_SLOT_NS;
        let first = stalls.partition_point(|s| s.end_ns + SLACK_NS < at);
        let mut near = stalls[first..]
            .iter()
            .take_while(|s| s.start_ns().saturating_sub(SLACK_NS) < end)
            .peekable();
        if near.peek().is_none() {
            a.unexplained += n;
        } else if near.any(Stall::outside) {
            a.outside += n;
        } else {
            a.own_stall += n;
        }
    }
    a
}

/// What one window of offered data showed.
#[derive(Debug)]
struct Window {
    report: serde_json::Value,
    before: Sample,
    after: Sample,
    preempted: u64,
    /// The worker's stalls in the window, and whether the log had them all.
    stalls: Vec<Stall>,
    complete: bool,
}

/// A loss run's inputs.
#[derive(Debug, Clone)]
pub struct LossRun<'a> {
    pub generator: &'a Path,
    pub dataplane: &'a Path,
    pub mode: Mode,
    pub flows: u32,
    pub pkt_bytes: usize,
    pub fractions: Vec<f64>,
    pub duration: Duration,
    pub dir: PathBuf,
}

impl LossRun<'_> {
    fn gen(&self, socket: &str, args: &[String]) -> Result<serde_json::Value, String> {
        // Pinned to CPU 0 (the appliance's main lcore), so that not even
        // the generator's DPDK control threads land on the worker's core.
        let out = Command::new("taskset")
            .args(["-c", "0"])
            .arg(self.generator)
            .arg("gen")
            .args([
                "--flows",
                &self.flows.to_string(),
                "--size",
                &self.pkt_bytes.to_string(),
                "--clients",
                CLIENTS,
                "--vip",
                VIP,
                "--dst-mac",
                MEMIF_MAC,
                "--port",
                &format!("net_memif0,role=client,id=0,rsize=12,socket={socket}"),
            ])
            .args(args)
            .args([
                "--",
                "-l",
                "0",
                "--no-huge",
                "-m",
                "512",
                "--no-shconf",
                "--no-pci",
                "--log-level=lib.eal:warning",
                &format!("--file-prefix=lb-bench-gen-{}", std::process::id()),
            ])
            .output()
            .map_err(|e| format!("cannot run the generator: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().rev().find(|l| l.starts_with('{'));
        match (out.status.success(), line) {
            (true, Some(l)) => serde_json::from_str(l).map_err(|e| e.to_string()),
            _ => Err(format!(
                "the generator failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }

    /// Offers the data for the window at `rate` (flat out when `None`);
    /// returns the generator's report and the appliance's samples around it.
    fn offer(&self, app: &Appliance, socket: &str, rate: Option<f64>) -> Result<Window, String> {
        let before = app.sample()?;
        let stalls_before = app.stalls()?;
        let start_ns = monotonic_ns();
        let preempted_before = crate::noise::preemptions(app.pid());
        let mut args: Vec<String> = [
            "--template",
            "data",
            "--no-handshake",
            "--rounds",
            "2",
            "--duration",
        ]
        .map(String::from)
        .to_vec();
        args.push(self.duration.as_secs_f64().to_string());
        if let Some(r) = rate {
            args.push("--rate".into());
            args.push(format!("{r:.0}"));
        }
        let report = self.gen(socket, &args)?;
        let end_ns = monotonic_ns();
        let after = app.sample()?;
        let preempted = crate::noise::preemptions(app.pid()).saturating_sub(preempted_before);
        let stalls_after = app.stalls()?;
        // One worker in a loss run.
        let total = |s: &lb_admin_proto::Stalls| s.workers.first().map_or(0, |w| w.total);
        let happened = total(&stalls_after).saturating_sub(total(&stalls_before));
        let stalls: Vec<Stall> = stalls_after
            .workers
            .first()
            .map(|w| {
                w.stalls
                    .iter()
                    .filter(|s| s.end_ns >= start_ns && s.start_ns() <= end_ns)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let complete = stalls.len() as u64 >= happened;
        Ok(Window {
            report,
            before,
            after,
            preempted,
            stalls,
            complete,
        })
    }

    /// Opens every flow (SYNs at a rate the worker takes easily), finds the
    /// most the appliance takes through memif (the generator flat out),
    /// then offers each fraction of that for the window.
    pub fn run(&self, setup: &Setup) -> Result<Vec<LossResult>, String> {
        // An abstract socket (memif's default): nothing to clean up.
        let socket = format!(
            "/lb-bench-{}-{}.sock",
            std::process::id(),
            self.dir
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        let mut setup = setup.clone();
        setup.input =
            format!("net_memif0,role=server,id=0,rsize=12,socket={socket},mac={MEMIF_MAC}");
        let app = Appliance::start(self.dataplane, &setup, &self.dir)?;
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        let handshake = 500_000.0;
        self.gen(
            &socket,
            &[
                "--template".into(),
                "syn".into(),
                "--rate".into(),
                handshake.to_string(),
                "--duration".into(),
                (f64::from(self.flows) / handshake + 0.2).to_string(),
            ],
        )?;
        let opened = app.sample()?;
        if opened.sessions < u64::from(self.flows) {
            return Err(format!(
                "only {} of {} sessions made by the handshake",
                opened.sessions, self.flows
            ));
        }
        // The maximum on this path: what the appliance accepted with the
        // generator offering more than it could take.
        let flat = self.offer(&app, &socket, None)?.report;
        let max = n(&flat["sent"]) as f64 / flat["seconds"].as_f64().unwrap_or(1.0).max(1e-9);
        let mut out = Vec::new();
        for &fraction in &self.fractions {
            let target = max * fraction;
            let Window {
                report: r,
                before,
                after,
                preempted,
                stalls,
                complete,
            } = self.offer(&app, &socket, Some(target))?;
            let dropped: u64 = after
                .drops
                .iter()
                .map(|(k, v)| {
                    let b = before
                        .drops
                        .iter()
                        .find(|(x, _)| x == k)
                        .map_or(0, |(_, v)| *v);
                    v.saturating_sub(b)
                })
                .sum();
            let (sent, refused) = (n(&r["sent"]), n(&r["refused"]));
            let offered = sent + refused;
            let seconds = r["seconds"].as_f64().unwrap_or(1.0).max(1e-9);
            let refusals: Vec<(u64, u64)> =
                serde_json::from_value(r["refusals"].clone()).unwrap_or_default();
            let lost = attribute(&refusals, &stalls, dropped);
            // The timelines behind the attribution, for a reader to check.
            let timeline = serde_json::json!({ "refusals": refusals, "stalls": stalls });
            let file = self
                .dir
                .join(format!("window-{:.0}.json", fraction * 100.0));
            std::fs::write(&file, timeline.to_string())
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            let longest = |outside: bool| {
                stalls
                    .iter()
                    .filter(|s| s.outside() == outside)
                    .map(|s| s.gap_ns)
                    .max()
                    .unwrap_or(0)
            };
            let longest_ns = longest(true).max(longest(false));
            let offered_pps = offered as f64 / seconds;
            out.push(LossResult {
                mode: self.mode,
                sessions: after.sessions,
                pkt_bytes: self.pkt_bytes,
                max_mpps: max / 1e6,
                fraction,
                target_mpps: target / 1e6,
                offered_mpps: offered as f64 / seconds / 1e6,
                offered,
                refused,
                skipped: n(&r["skipped"]),
                dropped,
                max_loop_gap_ms: after.max_loop_gap_ns as f64 / 1e6,
                preempted,
                lost,
                stalls_own: stalls.iter().filter(|s| !s.outside()).count() as u64,
                stalls_outside: stalls.iter().filter(|s| s.outside()).count() as u64,
                max_own_stall_ms: longest(false) as f64 / 1e6,
                max_outside_stall_ms: longest(true) as f64 / 1e6,
                stalls_complete: complete,
                ring_slots: RING_SLOTS,
                // Frames arriving during the longest stall, rounded up.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                ring_needed: (longest_ns as f64 * offered_pps / 1e9).ceil() as u64,
                loss_pct: if offered > 0 {
                    (refused + dropped) as f64 * 100.0 / offered as f64
                } else {
                    0.0
                },
            });
        }
        app.stop()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stall(end_ns: u64, gap_ns: u64, outside: bool) -> Stall {
        Stall {
            end_ns,
            gap_ns,
            away_ns: if outside { gap_ns } else { 0 },
            during: Vec::new(),
        }
    }

    #[test]
    fn refusals_go_to_the_stall_they_fall_in() {
        let ms = 1_000_000;
        let stalls = [
            stall(10 * ms, 2 * ms, true),  // 8 to 10 ms, preempted
            stall(20 * ms, 3 * ms, false), // 17 to 20 ms, own work
        ];
        let refusals = [
            (9 * ms, 5),            // in the preemption
            (10 * ms + 100_000, 1), // just after it: the ring draining
            (18 * ms, 7),           // in the worker's own stall
            (30 * ms, 2),           // no stall near
        ];
        let a = attribute(&refusals, &stalls, 4);
        assert_eq!(
            a,
            Attribution {
                outside: 6,
                own_stall: 7,
                unexplained: 2,
                dropped: 4
            }
        );
        assert_eq!(a.inside(), 13);
    }

    #[test]
    fn an_outside_stall_takes_a_slot_both_touch() {
        let stalls = [
            stall(1_000_000, 500_000, false),
            stall(1_300_000, 250_000, true),
        ];
        let a = attribute(&[(1_000_000, 3)], &stalls, 0);
        assert_eq!((a.outside, a.own_stall), (3, 0));
    }
}
