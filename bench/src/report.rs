//! Results on disk: `<date>-<host>.json` (`-2`, `-3`, ... for later runs on
//! the same day) and `latest.json`, a Markdown table with the goals checked,
//! and a PNG chart drawn by `bench/chart.py`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::appliance::Mode;
use crate::loss::LossResult;
use crate::run::{CaseResult, Kind, Replies, Results, NOISY};

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

fn find<'a>(
    r: &'a Results,
    mode: Mode,
    kind: Kind,
    flows: Option<u64>,
    sched: &str,
) -> Option<&'a CaseResult> {
    r.cases.iter().find(|c| {
        c.mode == mode
            && c.kind == kind
            && c.pkt_bytes == 64
            && c.scheduler == sched
            && c.workers == 1
            && c.reals == 1000
            && flows.is_none_or(|f| c.sessions.abs_diff(f) * 100 <= f)
    })
}

/// The goals of the benchmark issue, each with what this run measured.
pub fn goals(r: &Results) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for (flows, want) in [(100_000u64, 0.5), (1_000_000, 0.3)] {
        if let Some(c) = find(r, Mode::Fnat, Kind::Established, Some(flows), "rr") {
            out.push((
                format!("FNAT established at {}: >= {want} x 5tswap", human(flows)),
                format!(
                    "{:.3} x ({:.3}-{:.3}, {:.2} Mpps){}",
                    c.ratio_5tswap,
                    c.ratio_min,
                    c.ratio_max,
                    c.mpps,
                    if c.noisy {
                        format!(", noisy: pairs beyond ±{:.0}%", NOISY * 100.0)
                    } else if c.ratio_5tswap >= want {
                        String::new()
                    } else {
                        format!(", missed by {:.1}x", want / c.ratio_5tswap.max(1e-9))
                    }
                ),
                c.ratio_5tswap >= want && !c.noisy,
            ));
        }
    }
    if let Some(c) = find(r, Mode::Fnat, Kind::NewConn, None, "rr") {
        let want = 1.5e6;
        out.push((
            "new FNAT connections >= 1.5M/s per worker".into(),
            format!(
                "{:.2}M/s{}",
                c.conns_per_s / 1e6,
                if c.conns_per_s >= want {
                    String::new()
                } else {
                    format!(", missed by {:.1}x", want / c.conns_per_s.max(1.0))
                }
            ),
            c.conns_per_s >= want,
        ));
    }
    let two = r.cases.iter().find(|c| {
        c.mode == Mode::Fnat
            && c.kind == Kind::Established
            && c.workers == 2
            && c.replies == Replies::None
    });
    if let (Some(two), Some(one)) = (
        two,
        two.and_then(|t| find(r, Mode::Fnat, Kind::Established, Some(t.sessions), "rr")),
    ) {
        // Both ratios are to one core of testpmd on the same flows, so
        // their quotient is the scaling with the machine's mood divided out.
        let x = two.ratio_5tswap / one.ratio_5tswap.max(1e-9);
        out.push((
            format!(
                "two workers >= 1.8 x one (FNAT established at {})",
                human(two.sessions)
            ),
            format!(
                "{x:.2} x ({:.2} vs {:.2} Mpps){}",
                two.mpps,
                one.mpps,
                if two.noisy || one.noisy {
                    ", noisy"
                } else {
                    ""
                }
            ),
            x >= 1.8 && !two.noisy && !one.noisy,
        ));
    }
    for (reals, want) in [(1000u32, 2e6), (10_000, 1e6)] {
        let wlc = r.cases.iter().find(|c| {
            c.mode == Mode::Fnat
                && c.kind == Kind::NewConn
                && c.scheduler == "wlc"
                && c.reals == reals
        });
        if let Some(c) = wlc {
            out.push((
                format!(
                    "new FNAT connections with wlc over {} reals >= {}M/s",
                    human(u64::from(reals)),
                    want / 1e6
                ),
                format!("{:.2}M/s", c.conns_per_s / 1e6),
                c.conns_per_s >= want,
            ));
        }
    }
    for mode in [Mode::Dr, Mode::Tun] {
        for c in r
            .cases
            .iter()
            .filter(|c| c.mode == mode && c.kind == Kind::Established && c.pkt_bytes == 64)
        {
            if let Some(f) = find(r, Mode::Fnat, Kind::Established, Some(c.sessions), "rr") {
                out.push((
                    format!(
                        "{} >= FNAT at {} sessions",
                        mode.name().to_uppercase(),
                        human(c.sessions)
                    ),
                    format!("{:.2} vs {:.2} Mpps", c.mpps, f.mpps),
                    c.mpps >= f.mpps,
                ));
            }
        }
    }
    if !r.losses.is_empty() {
        let worst = r
            .losses
            .iter()
            .max_by(|a, b| a.loss_pct.total_cmp(&b.loss_pct))
            .expect("not empty");
        out.push((
            "no mode loses packets below its measured maximum".into(),
            format!(
                "worst {:.3}% ({} at {:.0}% of max)",
                worst.loss_pct,
                worst.mode.name().to_uppercase(),
                worst.fraction * 100.0
            ),
            worst.loss_pct == 0.0,
        ));
        let half: Vec<&LossResult> = r
            .losses
            .iter()
            .filter(|l| (l.fraction - 0.5).abs() < 1e-9)
            .collect();
        if let Some(worst) = half.iter().max_by_key(|l| l.lost.inside()) {
            let outside: u64 = half.iter().map(|l| l.lost.outside).sum();
            out.push((
                "at 50% of its maximum, no mode loses a packet inside the process".into(),
                format!(
                    "worst {} inside ({}); {} lost to the machine in all",
                    worst.lost.inside(),
                    worst.mode.name().to_uppercase(),
                    outside
                ),
                worst.lost.inside() == 0,
            ));
        }
    }
    out
}

/// The kind of traffic, and the workers when more than one.
fn traffic(c: &CaseResult) -> String {
    let kind = match c.kind {
        Kind::Established => "established",
        Kind::NewConn => "new conns",
    };
    let replies = match c.replies {
        Replies::None => "",
        Replies::OwnQueue => ", replies on owner's queue",
        Replies::OtherQueue => ", replies handed over",
    };
    if c.workers > 1 {
        format!("{kind}, {} workers{replies}", c.workers)
    } else {
        kind.to_owned()
    }
}

/// The pairs' lowest and highest ratio, and whether that makes the case
/// noisy.
fn spread(c: &CaseResult) -> String {
    format!(
        "{:.3}-{:.3}{}",
        c.ratio_min,
        c.ratio_max,
        if c.noisy { " noisy" } else { "" }
    )
}

/// A symbol without its crate path: `Worker::process_parsed`.
fn short(sym: &str) -> String {
    let parts: Vec<&str> = sym.split("::").collect();
    if parts.len() > 2 {
        parts[parts.len() - 2..].join("::")
    } else {
        sym.to_owned()
    }
}

/// The Markdown report of a run.
pub fn markdown(r: &Results) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Run of {} on `{}`: {}, {} cores at {:.0} MHz, {} GiB, Linux {}, DPDK {}, {}; one worker core{}.\n",
        r.date,
        m.host,
        m.cpu,
        m.cores,
        m.cpu_mhz,
        m.memory_gib,
        m.kernel,
        m.dpdk,
        m.memory_mode,
        if r.quick { " (quick smoke run: short windows, not for comparison)" } else { "" }
    );
    let _ = writeln!(
        s,
        "Ceiling: dpdk-testpmd, one core, on the same ports replaying the same profile (each case's ratio is to its own profile's):\n"
    );
    let _ = writeln!(
        s,
        "| profile | packet | io Mpps | 5tswap Mpps |\n|---|---:|---:|---:|"
    );
    for b in &r.baselines {
        let _ = writeln!(
            s,
            "| {} {} | {} B | {:.2} | {:.2} |",
            human(u64::from(b.flows)),
            match b.kind {
                Kind::Established => "established flows",
                Kind::NewConn => "SYNs",
            },
            b.pkt_bytes,
            b.io_mpps,
            b.five_tuple_swap_mpps
        );
    }
    let _ = writeln!(
        s,
        "\nEach case ran as {} interleaved pairs (testpmd 5tswap, then the appliance, fresh processes); `x 5tswap` is the median of the pairs' ratios, `spread` their lowest and highest; a case with a pair more than ±{:.0}% from the median is marked noisy and is no result. Steal is the machine's steal time in the worst window, preempted the worker's involuntary context switches in all windows.\n",
        r.cases.first().map_or(0, |c| c.pairs.len()),
        NOISY * 100.0
    );
    let _ = writeln!(
        s,
        "| mode | traffic | sessions | packet | scheduler / reals | Mpps | x 5tswap | spread | ns/pkt | cycles/pkt | new conns/s | drops | steal | preempted | pairs' ratios |\n|---|---|---:|---:|---|---:|---:|---|---:|---:|---:|---|---:|---:|---|"
    );
    for c in &r.cases {
        let drops = if c.drops.is_empty() {
            "0".to_owned()
        } else {
            c.drops
                .iter()
                .map(|(k, v)| format!("{}: {v}", k.trim_start_matches("drop_")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} B | {} / {} | {:.2} | {:.3} | {} | {:.0} | {:.0} | {} | {} | {:.1}% | {} | {} |",
            c.mode.name().to_uppercase(),
            traffic(c),
            human(c.sessions),
            c.pkt_bytes,
            c.scheduler,
            c.reals,
            c.mpps,
            c.ratio_5tswap,
            spread(c),
            c.ns_per_pkt,
            c.cycles_per_pkt,
            if c.kind == Kind::NewConn {
                format!("{:.0}", c.conns_per_s)
            } else {
                "-".into()
            },
            drops,
            c.pairs
                .iter()
                .map(|p| p.steal_pct.max(p.ceiling_steal_pct))
                .fold(0.0, f64::max),
            c.pairs.iter().map(|p| p.preempted).sum::<u64>(),
            c.pairs
                .iter()
                .map(|p| format!("{:.3}", p.ratio))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let profiled: Vec<&CaseResult> = r.cases.iter().filter(|c| !c.profile.is_empty()).collect();
    if !profiled.is_empty() {
        let _ = writeln!(
            s,
            "\nWhere the worker's cycles go (`perf record -e cpu-clock` on its thread in the window; a library in parentheses is its code without symbols):\n"
        );
        for c in profiled {
            let top: Vec<String> = c
                .profile
                .iter()
                .map(|(sym, pct)| format!("{} {pct:.0}%", short(sym)))
                .collect();
            let _ = writeln!(
                s,
                "- {} {} {} B, {}: {}",
                c.mode.name().to_uppercase(),
                match c.kind {
                    Kind::Established => format!("established {}", human(c.sessions)),
                    Kind::NewConn => format!("new conns ({})", c.scheduler),
                },
                c.pkt_bytes,
                format_args!("{:.0} ns/pkt", c.ns_per_pkt),
                top.join(", ")
            );
        }
    }
    if !r.losses.is_empty() {
        let _ = writeln!(
            s,
            "\nLoss below the maximum: `lb-bench gen` on the other core feeds the appliance through a memif pair (4096-slot ring), first flat out (the maximum on this path), then at fractions of that; a full ring refuses the frame, as a NIC's would. Each refused frame is set beside the worker's stalls (`lb-ctl stalls`, gaps of 100 us or more in its loop) on the machine's monotonic clock: refused while the worker's thread was away (preempted, or its virtual CPU taken) is lost *outside* the process; refused during the worker's own work, or with no stall near, and every frame the appliance dropped, is lost *inside*. `ring needed` is the slots that would have covered the window's longest stall at the offered rate:\n"
        );
        let _ = writeln!(
            s,
            "| mode | sessions | max via memif | offered | of max | refused | dropped | lost | lost outside | lost inside | stalls own / outside | longest own | longest outside | ring needed | worker preempted |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for l in &r.losses {
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} Mpps | {:.2} Mpps | {:.0}% | {} | {} | {:.3}% | {} | {}{} | {} / {}{} | {:.2} ms | {:.2} ms | {} of {} | {} times |",
                l.mode.name().to_uppercase(),
                human(l.sessions),
                l.max_mpps,
                l.offered_mpps,
                l.fraction * 100.0,
                l.refused,
                l.dropped,
                l.loss_pct,
                l.lost.outside,
                l.lost.inside(),
                if l.lost.inside() > 0 {
                    format!(
                        " (own stalls {}, no stall {}, dropped {})",
                        l.lost.own_stall, l.lost.unexplained, l.lost.dropped
                    )
                } else {
                    String::new()
                },
                l.stalls_own,
                l.stalls_outside,
                if l.stalls_complete { "" } else { " (log overrun)" },
                l.max_own_stall_ms,
                l.max_outside_stall_ms,
                l.ring_needed,
                l.ring_slots,
                l.preempted
            );
        }
    }
    goals_and_failures(r, &mut s);
    s
}

/// What a hand-over costs: the two-worker reply cases, replies on another
/// worker's queue against replies on their owner's, per worker and packet.
pub fn handover(r: &Results) -> Option<String> {
    let case = |replies| {
        r.cases
            .iter()
            .find(|c| c.workers > 1 && c.replies == replies)
    };
    let (own, other) = (case(Replies::OwnQueue)?, case(Replies::OtherQueue)?);
    Some(format!(
        "Hand-over: with every Full-NAT reply on another worker's queue, {} workers forward {:.2} Mpps ({:.3} x 5tswap, {:.0} ns a packet per worker) against {:.2} Mpps ({:.3} x, {:.0} ns) with replies on their owner's queue: one hand-over costs about {:.0} ns{}.",
        other.workers,
        other.mpps,
        other.ratio_5tswap,
        other.ns_per_pkt,
        own.mpps,
        own.ratio_5tswap,
        own.ns_per_pkt,
        other.ns_per_pkt - own.ns_per_pkt,
        if own.noisy || other.noisy { " (noisy)" } else { "" }
    ))
}

/// The goals' table, then what failed (twice) with its error.
fn goals_and_failures(r: &Results, s: &mut String) {
    if let Some(h) = handover(r) {
        let _ = writeln!(s, "\n{h}");
    }
    let goals = goals(r);
    if !goals.is_empty() {
        let _ = writeln!(s, "\n| goal | measured | met |\n|---|---|---|");
        for (goal, got, met) in goals {
            let _ = writeln!(s, "| {goal} | {got} | {} |", if met { "yes" } else { "no" });
        }
    }
    if !r.failures.is_empty() {
        let _ = writeln!(s, "\nFailed twice, so not measured:\n");
        for f in &r.failures {
            let first = f.error.lines().next().unwrap_or_default();
            let _ = writeln!(s, "- {}: {first} (logs in `{}`)", f.case, f.dir.display());
        }
    }
}

/// The README's part of a run: the machine, one row per case (its rate,
/// its ratio to testpmd's `5tswap` on its own profile, the time per packet,
/// the new connections a second) and the goals; `report` is where the
/// whole report (ceilings, pairs, profiles, loss) is.
pub fn summary(r: &Results, report: &str) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Run of {} on `{}` ({}, {} cores, DPDK {}, {}), one worker core (two in the two-worker rows){}; the whole report, with testpmd's figures, every pair, the machine's noise and the loss below the maximum: [{report}]({report}).\n",
        r.date,
        m.host,
        m.cpu,
        m.cores,
        m.dpdk,
        m.memory_mode,
        if r.quick { " (quick smoke run: short windows, not for comparison)" } else { "" }
    );
    let _ = writeln!(
        s,
        "Made by `{}`. Each case is {} interleaved pairs of testpmd 5tswap and the appliance; `x 5tswap` is the median of the pairs' ratios, `spread` the lowest and highest; a noisy case (a pair beyond ±{:.0}%) is no result.\n",
        r.command,
        r.cases.first().map_or(0, |c| c.pairs.len()),
        NOISY * 100.0
    );
    let _ = writeln!(
        s,
        "| mode | traffic | sessions | packet | scheduler / reals | Mpps | x 5tswap | spread | ns/pkt | new conns/s |\n|---|---|---:|---:|---|---:|---:|---|---:|---:|"
    );
    for c in &r.cases {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} B | {} / {} | {:.2} | {:.3} | {} | {:.0} | {} |",
            c.mode.name().to_uppercase(),
            traffic(c),
            human(c.sessions),
            c.pkt_bytes,
            c.scheduler,
            human(u64::from(c.reals)),
            c.mpps,
            c.ratio_5tswap,
            spread(c),
            c.ns_per_pkt,
            if c.kind == Kind::NewConn {
                format!("{:.0}", c.conns_per_s)
            } else {
                "-".into()
            },
        );
    }
    goals_and_failures(r, &mut s);
    s
}

/// Writes the JSON, Markdown and chart of a run into `dir`; returns the JSON
/// file's path.
pub fn write(r: &Results, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let stem = free_stem(dir, &format!("{}-{}", r.date, r.machine.host));
    let json = serde_json::to_string_pretty(r).expect("results serialise") + "\n";
    let md = markdown(r);
    let put = |name: String, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    put(format!("{stem}.json"), &json)?;
    put("latest.json".into(), &json)?;
    put(format!("{stem}.md"), &md)?;
    put("latest.md".into(), &md)?;
    let png = dir.join(format!("{stem}.png"));
    chart(&dir.join(format!("{stem}.json")), &png)?;
    std::fs::copy(&png, dir.join("latest.png"))
        .map_err(|e| format!("cannot copy the chart: {e}"))?;
    Ok(dir.join(format!("{stem}.json")))
}

/// `base`, or `base-2`, `base-3`, ...: the first name no run in `dir` has
/// yet, so a second run on the same day and machine keeps the first.
fn free_stem(dir: &Path, base: &str) -> String {
    (1u32..)
        .map(|n| {
            if n == 1 {
                base.to_string()
            } else {
                format!("{base}-{n}")
            }
        })
        .find(|stem| !dir.join(format!("{stem}.json")).exists())
        .expect("some number is free")
}

/// Draws the chart with matplotlib (Debian's python3-matplotlib).
fn chart(json: &Path, png: &Path) -> Result<(), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("chart.py");
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(json)
        .arg(png)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "the chart failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Replaces the part of `readme` between the bench markers with `table`.
pub fn update_readme(readme: &Path, table: &str) -> Result<(), String> {
    const BEGIN: &str = "<!-- bench:begin -->";
    const END: &str = "<!-- bench:end -->";
    let text = std::fs::read_to_string(readme)
        .map_err(|e| format!("cannot read {}: {e}", readme.display()))?;
    let (Some(a), Some(b)) = (text.find(BEGIN), text.find(END)) else {
        return Err(format!(
            "{} has no {BEGIN} ... {END} section",
            readme.display()
        ));
    };
    let new = format!("{}{BEGIN}\n{table}{}", &text[..a], &text[b..]);
    std::fs::write(readme, new).map_err(|e| format!("cannot write {}: {e}", readme.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_never_replaces_an_earlier_one() {
        let dir = std::env::temp_dir().join(format!("lb-bench-stem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(free_stem(&dir, "2026-11-21-vm"), "2026-11-21-vm");
        std::fs::write(dir.join("2026-11-21-vm.json"), "{}").unwrap();
        assert_eq!(free_stem(&dir, "2026-11-21-vm"), "2026-11-21-vm-2");
        std::fs::write(dir.join("2026-11-21-vm-2.json"), "{}").unwrap();
        assert_eq!(free_stem(&dir, "2026-11-21-vm"), "2026-11-21-vm-3");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn counts_read_as_operators_write_them() {
        assert_eq!(human(1000), "1k");
        assert_eq!(human(1_000_000), "1M");
        assert_eq!(human(100_000), "100k");
        assert_eq!(human(1234), "1234");
    }
}
