//! New Full-NAT connections as the dataplane makes them: SYNs of new flows
//! in bursts of 32 with the CPU's prefetch. A round fills a table of
//! SESSIONS connections. In the steady state (the default) the round first
//! expires the previous round's connections, all at once, and that expiry
//! counts in the time, as it does in the dataplane; with `--fresh`, each
//! round fills a new, empty table, as in the criterion benchmark. Prints
//! the median and the spread of ROUNDS rounds after one warm-up round.
//!
//! `cargo run --release -p lb-bench --example new_connections -- SESSIONS [ROUNDS] [--fresh]`
//!
//! Comparing two versions of the engine: build this at each and run the
//! two binaries in turn, several times, since the machine's speed drifts.

#[path = "../benches/fixture/mod.rs"]
mod fixture;

use std::hint::black_box;
use std::time::Instant;

use lb_core::engine::{Action, Worker, WorkerConfig};
use lb_core::packet::VecBuf;
use lb_core::sched::SchedKind;
use lb_core::wire::tcp::Flags;
use lb_dataplane::dpdk::CpuPrefetch;

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
    for round in 0..rounds + 1 {
        // One round: a table's worth of connections, after emptying the
        // table (timed in the steady state) or replacing it (not timed).
        let start;
        if fresh {
            w = make();
            start = Instant::now();
        } else {
            start = Instant::now();
            // Past every deadline: the whole table goes.
            now += 1000;
            while w.expire(now).more {}
        }
        let mut made = 0;
        while made + 32 <= n {
            for b in &mut bufs {
                syn.fill_checked(b, flow);
                flow = flow.wrapping_add(1);
            }
            w.process_burst_with(&mut bufs, 0, now, &mut actions, &CpuPrefetch);
            black_box(&actions);
            made += 32;
        }
        let took = start.elapsed();
        assert_eq!(w.sessions.len(), made, "every SYN made a connection");
        // The first round warms up.
        if round > 0 {
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
