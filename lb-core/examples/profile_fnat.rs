//! Runs the established Full-NAT path in a loop, for profilers:
//! `cargo build --release -p lb-core --example profile_fnat` then
//! `valgrind --tool=callgrind target/release/examples/profile_fnat 1000 2000000`
//! (arguments: sessions, packets).

use std::hint::black_box;
use std::sync::Arc;

use lb_core::engine::{Worker, WorkerConfig};
use lb_core::packet::{PacketBuf, VecBuf};
use lb_core::sched::SchedKind;
use lb_core::testpkt::{fnat_snapshot, Builder};
use lb_core::wire::tcp::Flags;

fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let (sessions, packets) = (
        args.first().copied().unwrap_or(1000),
        args.get(1).copied().unwrap_or(1_000_000),
    );
    let snap = Arc::new(fnat_snapshot(64, SchedKind::Rr));
    let mut w = Worker::new(
        WorkerConfig {
            capacity: sessions * 2 + 1024,
            ..WorkerConfig::default()
        },
        snap,
    );
    let fill = |frame: &[u8], buf: &mut VecBuf, i: u32| {
        let d = buf.data_mut();
        d.copy_from_slice(frame);
        d[26..30].copy_from_slice(&(0x0a00_0000 | (i / 50_000 + 2)).to_be_bytes());
        d[34..36].copy_from_slice(&u16::try_from(1024 + i % 50_000).unwrap().to_be_bytes());
    };
    let syn = Builder::tcp_v4("10.0.0.2:1024", "198.18.0.10:80", Flags::SYN)
        .payload(&[0; 6])
        .build();
    let data = Builder::tcp_v4("10.0.0.2:1024", "198.18.0.10:80", Flags::ACK)
        .payload(&[0; 6])
        .build();
    let mut buf = VecBuf::new(&syn, 64);
    if std::env::var_os("NEW_CONNECTIONS").is_some() {
        // Every packet a new connection, each of its own flow. When the
        // table holds `sessions`, the clock jumps and expiry empties it, so
        // the time includes each connection's removal as well.
        // BURST_ONLY=1 hands the SYNs over in bursts of 32.
        let burst = if std::env::var_os("BURST_ONLY").is_some() {
            32
        } else {
            1
        };
        let mut bufs: Vec<VecBuf> = (0..burst).map(|_| VecBuf::new(&syn, 64)).collect();
        let mut actions = vec![lb_core::engine::Action::Exception; burst];
        let mut now = 1;
        let start = std::time::Instant::now();
        for i in (0..packets).step_by(burst) {
            for (j, b) in (0u32..).zip(&mut bufs) {
                fill(&syn, b, i + j);
            }
            w.process_burst(&mut bufs, 0, now, &mut actions);
            black_box(&actions);
            if w.sessions.len() + 32 > sessions {
                now += 10_000;
                while w.expire(now).more {}
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(packets);
        println!("new connections: {ns:.1} ns each");
        return;
    }
    for i in 0..sessions {
        fill(&syn, &mut buf, i);
        w.process(&mut buf, 0, 1);
    }
    let mut x = 0x2545_f491_u32;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x % sessions
    };
    // BURST_ONLY=1 skips the one-by-one pass, so a profile shows bursts.
    let one_by_one = if std::env::var_os("BURST_ONLY").is_some() {
        0
    } else {
        packets
    };
    let start = std::time::Instant::now();
    for _ in 0..one_by_one {
        fill(&data, &mut buf, next());
        black_box(w.process(&mut buf, 0, 2));
    }
    let single = start.elapsed().as_nanos() as f64 / f64::from(one_by_one.max(1));
    let mut bufs: Vec<VecBuf> = (0..32).map(|_| VecBuf::new(&data, 64)).collect();
    let mut actions = vec![lb_core::engine::Action::Exception; 32];
    let start = std::time::Instant::now();
    for _ in 0..packets / 32 {
        for b in &mut bufs {
            fill(&data, b, next());
        }
        w.process_burst(&mut bufs, 0, 2, &mut actions);
        black_box(&actions);
    }
    let burst = start.elapsed().as_nanos() as f64 / f64::from(packets / 32 * 32);
    if one_by_one > 0 {
        println!("{sessions} sessions: {single:.1} ns/packet one by one");
    }
    println!("{sessions} sessions: {burst:.1} ns/packet in bursts of 32");
}
