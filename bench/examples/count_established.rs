//! A fixed amount of established Full-NAT work for an instruction counter
//! (valgrind's callgrind): `BURSTS` bursts of 32 data segments of random
//! existing flows, on a trust port, prefetching as the dataplane does.
//!
//! `cargo build --release -p lb-bench --example count_established`, then
//! `valgrind --tool=callgrind target/release/examples/count_established SESSIONS BURSTS`
//! twice with different BURSTS: the difference of the totals over the
//! difference of the packets is the instructions per packet, without the
//! table's setup.

#[path = "../benches/fixture/mod.rs"]
mod fixture;

use std::hint::black_box;

use lb_core::engine::{Action, WorkerConfig};
use lb_core::packet::VecBuf;
use lb_core::wire::tcp::Flags;
use lb_dataplane::dpdk::CpuPrefetch;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u32>());
    let (Some(Ok(n)), Some(Ok(bursts))) = (args.next(), args.next()) else {
        eprintln!("usage: count_established SESSIONS BURSTS");
        std::process::exit(2);
    };
    let mut w = fixture::worker_with(n, WorkerConfig::default().prefetch_from);
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
    // Every session established first (its first data segment moves it
    // from SYN_RECV), so that the counted bursts are the steady state.
    for first in (0..n).step_by(32) {
        for (k, buf) in (0u32..).zip(bufs.iter_mut()) {
            data.fill(buf, (first + k) % n.max(1));
        }
        w.process_burst_with(&mut bufs, 0, 2, &mut actions, &CpuPrefetch);
    }
    for _ in 0..bursts {
        for buf in &mut bufs {
            data.fill(buf, next());
        }
        w.process_burst_with(&mut bufs, 0, 2, &mut actions, &CpuPrefetch);
        black_box(&actions);
    }
}
