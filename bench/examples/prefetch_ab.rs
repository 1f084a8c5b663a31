//! Paired comparison of the engine's two ways of reading a burst's
//! sessions ahead: loads in stages (`process_burst`) and the CPU's prefetch
//! pipelined over the burst (`process_burst_with(.., &CpuPrefetch)`). The
//! two alternate on the same table, round after round, so the machine's
//! noise falls on both alike; the medians and the median of the per-round
//! ratios are printed.
//!
//! `cargo run --release -p lb-bench --example prefetch_ab -- SESSIONS [ROUNDS]`
//! (established Full-NAT data segments of random flows, bursts of 32).

#[path = "../benches/fixture/mod.rs"]
mod fixture;

use std::hint::black_box;
use std::time::Instant;

use lb_core::engine::Action;
use lb_core::packet::VecBuf;
use lb_core::wire::tcp::Flags;
use lb_dataplane::dpdk::CpuPrefetch;

/// Bursts per timed stretch.
const BURSTS: u32 = 4_000;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    fixture::restart_with_huge_malloc();
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u32>());
    let (Some(Ok(n)), rounds) = (args.next(), args.next().unwrap_or(Ok(51))) else {
        eprintln!("usage: prefetch_ab SESSIONS [ROUNDS]");
        std::process::exit(2);
    };
    let rounds = rounds.unwrap_or(51).max(1);
    // Prefetching whatever the table's size, to compare at every size.
    let mut w = fixture::worker_with(n, 0);
    let data = fixture::Template::new(Flags::ACK);
    let mut bufs: Vec<VecBuf> = (0..32).map(|_| VecBuf::new(&data.frame, 64)).collect();
    let mut actions = vec![Action::Exception; 32];
    let mut x = 0x2545_f491_u32;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x % n.max(1)
    };
    let (mut loads, mut prefetch, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let mut ns = [0.0; 2];
        for (i, fetching) in [false, true].into_iter().enumerate() {
            let start = Instant::now();
            for _ in 0..BURSTS {
                for buf in &mut bufs {
                    data.fill(buf, next());
                }
                if fetching {
                    w.process_burst_with(&mut bufs, 0, 2, &mut actions, &CpuPrefetch);
                } else {
                    w.process_burst(&mut bufs, 0, 2, &mut actions);
                }
                black_box(&actions);
            }
            ns[i] = start.elapsed().as_secs_f64() * 1e9 / f64::from(BURSTS * 32);
        }
        loads.push(ns[0]);
        prefetch.push(ns[1]);
        ratio.push(ns[1] / ns[0]);
    }
    println!(
        "{n} sessions, {rounds} rounds: loads {:.1} ns/packet, prefetch {:.1} ns/packet, \
         prefetch/loads {:.3} (medians)",
        median(&mut loads),
        median(&mut prefetch),
        median(&mut ratio)
    );
}
