//! New Full-NAT connections as the dataplane makes them: SYNs of new flows
//! in bursts of 32 with the CPU's prefetch, into a table of SESSIONS
//! connections. In the steady state (the default), the clock jumps and the
//! whole table expires each time it is full, and the expiry counts in the
//! time, as it does in the dataplane; with `--fresh`, a new, empty table
//! replaces a full one outside the timed part, as in the criterion
//! benchmark. Prints the median and the spread of ROUNDS rounds of 200,000
//! connections after two warm-up rounds.
//!
//! `cargo run --release -p lb-bench --example new_connections -- SESSIONS [ROUNDS] [--fresh]`
//!
//! Comparing two versions of the engine: build this at each and run the
//! two binaries in turn, several times, since the machine's speed drifts.

#[path = "../benches/fixture/mod.rs"]
mod fixture;

use std::hint::black_box;
use std::time::{Duration, Instant};

use lb_core::engine::{Action, Worker, WorkerConfig};
use lb_core::packet::VecBuf;
use lb_core::sched::SchedKind;
use lb_core::wire::tcp::Flags;
use lb_dataplane::dpdk::CpuPrefetch;

/// Connections per timed round.
const PER_ROUND: u32 = 200_000;

fn main() {
    fixture::restart_with_huge_malloc();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fresh = args.iter().any(|a| a == "--fresh");
    let mut numbers = args
        .iter()
        .filter(|a| *a != "--fresh")
        .map(|a| a.parse::<u32>());
    let (Some(Ok(n)), rounds) = (numbers.next(), numbers.next().unwrap_or(Ok(15))) else {
        eprintln!("usage: new_connections SESSIONS [ROUNDS] [--fresh]");
        std::process::exit(2);
    };
    let (n, rounds) = (n.max(64), rounds.unwrap_or(15).max(1));
    let make = || {
        Worker::new(
            WorkerConfig {
                capacity: n + 1024,
                ..WorkerConfig::default()
            },
            fixture::snapshot(64, SchedKind::Rr),
        )
    };
    let syn = fixture::Template::new(Flags::SYN);
    let mut bufs: Vec<VecBuf> = (0..32).map(|_| VecBuf::new(&syn.frame, 64)).collect();
    let mut actions = vec![Action::Exception; 32];
    let mut w = make();
    let (mut flow, mut now) = (0u32, 1u32);
    let mut ns = Vec::new();
    for round in 0..rounds + 2 {
        let mut left_out = Duration::ZERO;
        let start = Instant::now();
        let mut made = 0;
        while made < PER_ROUND {
            if w.sessions.len() + 32 > n {
                if fresh {
                    let t = Instant::now();
                    w = make();
                    left_out += t.elapsed();
                } else {
                    // Past every deadline: the whole table goes.
                    now += 1000;
                    while w.expire(now).more {}
                }
            }
            for b in &mut bufs {
                syn.fill(b, flow);
                flow = flow.wrapping_add(1);
            }
            w.process_burst_with(&mut bufs, 0, now, &mut actions, &CpuPrefetch);
            black_box(&actions);
            made += 32;
        }
        let took = start.elapsed() - left_out;
        if round >= 2 {
            ns.push(took.as_secs_f64() * 1e9 / f64::from(made));
        }
    }
    ns.sort_by(f64::total_cmp);
    println!(
        "{n} sessions{}: {:.1} ns per new connection (median of {rounds} rounds; {:.1} to {:.1})",
        if fresh {
            ", fresh tables"
        } else {
            ", steady state"
        },
        ns[ns.len() / 2],
        ns[0],
        ns[ns.len() - 1]
    );
}
