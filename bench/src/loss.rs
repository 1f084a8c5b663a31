//! Loss below the maximum rate: the generator (`lb-bench gen` in a process
//! of its own, on the main lcore's CPU) feeds the appliance through a
//! memif pair at fractions of the most the appliance takes on that path. A memif ring that is full
//! refuses the frame, which the generator drops and counts, as a wire
//! would; the appliance counts its own drops. Pcap replay cannot show
//! this: the worker pulls from it at its own pace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::appliance::{Appliance, Mode, Sample, Setup, CLIENTS, VIP};

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
    /// Frames the appliance dropped (every drop counter).
    pub dropped: u64,
    pub loss_pct: f64,
    /// The worker's longest time away from its loop in the run (a stall
    /// the ring could not cover shows here), milliseconds.
    pub max_loop_gap_ms: f64,
    /// Times the kernel took the worker's core from it during the data
    /// (`nonvoluntary_ctxt_switches` of its thread).
    pub preempted: u64,
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
    fn offer(
        &self,
        app: &Appliance,
        socket: &str,
        rate: Option<f64>,
    ) -> Result<(serde_json::Value, Sample, Sample, u64), String> {
        let before = app.sample()?;
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
        let after = app.sample()?;
        let preempted = crate::noise::preemptions(app.pid()).saturating_sub(preempted_before);
        Ok((report, before, after, preempted))
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
        let (flat, ..) = self.offer(&app, &socket, None)?;
        let max = n(&flat["sent"]) as f64 / flat["seconds"].as_f64().unwrap_or(1.0).max(1e-9);
        let mut out = Vec::new();
        for &fraction in &self.fractions {
            let target = max * fraction;
            let (r, before, after, preempted) = self.offer(&app, &socket, Some(target))?;
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
                dropped,
                max_loop_gap_ms: after.max_loop_gap_ns as f64 / 1e6,
                preempted,
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
