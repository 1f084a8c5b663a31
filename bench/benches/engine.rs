//! Engine micro-benchmarks (ns per packet or per operation, one core).
//!
//! - established Full-NAT: lookup + rewrite of a data segment of a random
//!   existing flow, with 1k, 100k and 1M sessions in the table (random
//!   flows, so the large tables really miss the caches); in bursts also on
//!   a port that finishes partial checksums (`rx_checksum = "finish"`),
//!   with complete checksums (checked only) and with partial ones
//!   (finished);
//! - a new Full-NAT connection: schedule, local port, insert, rewrite;
//! - each scheduler's pick among 1000 real servers;
//! - the Maglev table build for 100 and 1000 real servers.
//!
//! Run: `cargo bench -p lb-bench --bench engine`.
//!
//! The engine runs as the dataplane runs it, which is why this lives here
//! and not in lb-core: bursts prefetch with the dataplane's
//! [`CpuPrefetch`] (lb-core has no unsafe code, so no prefetch instruction
//! of its own; `burst_of_32_loads` shows the engine without it), and the
//! tables sit in transparent huge pages, as the dataplane starts itself
//! with glibc's `glibc.malloc.hugetlb=1` tunable; so does this benchmark
//! (set `GLIBC_TUNABLES`, even empty, to measure without).

mod fixture;

use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use fixture::{
    restart_with_huge_malloc, snapshot, worker_on, worker_with, PartialTemplate, Template,
};
use lb_core::engine::{Action, Counter, Worker, WorkerConfig};
use lb_core::offload::RxChecksum;
use lb_core::packet::VecBuf;
use lb_core::sched::{
    FlowInfo, RsId, RsLoad, SchedFlags, SchedKind, Scheduler, DEFAULT_MH_TABLE_SIZE,
};
use lb_core::session::{addr_v4, SESSION_BYTES};
use lb_core::wire::tcp::Flags;
use lb_dataplane::dpdk::CpuPrefetch;

fn established(c: &mut Criterion) {
    println!("memory per session: {SESSION_BYTES} bytes (session + its share of the index)");
    let mut g = c.benchmark_group("fnat_established");
    g.throughput(Throughput::Elements(1));
    for n in [1_000u32, 100_000, 1_000_000] {
        let mut w = worker_with(n, WorkerConfig::default().prefetch_from);
        let data = Template::new(Flags::ACK);
        let mut buf = VecBuf::new(&data.frame, 64);
        let mut x = 0x2545_f491_u32;
        let mut next = move || {
            // xorshift over the existing flows
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % n
        };
        g.bench_function(BenchmarkId::new("one_by_one", n), |b| {
            b.iter(|| {
                data.fill(&mut buf, next());
                black_box(w.process(&mut buf, 0, 2))
            })
        });
        let mut bufs: Vec<VecBuf> = (0..32).map(|_| VecBuf::new(&data.frame, 64)).collect();
        let mut actions = vec![Action::Exception; 32];
        g.throughput(Throughput::Elements(32));
        g.bench_function(BenchmarkId::new("burst_of_32", n), |b| {
            b.iter(|| {
                for buf in &mut bufs {
                    data.fill(buf, next());
                }
                w.process_burst_with(&mut bufs, 0, 2, &mut actions, &CpuPrefetch);
                black_box(&actions);
            })
        });
        g.bench_function(BenchmarkId::new("burst_of_32_loads", n), |b| {
            b.iter(|| {
                for buf in &mut bufs {
                    data.fill(buf, next());
                }
                w.process_burst(&mut bufs, 0, 2, &mut actions);
                black_box(&actions);
            })
        });
        // The same on a port that finishes partial checksums (a kernel-backed
        // port's default): complete checksums, checked only; then partial
        // ones, finished.
        let mut w = worker_on(n, WorkerConfig::default().prefetch_from, RxChecksum::Finish);
        g.bench_function(BenchmarkId::new("burst_of_32_finish_complete", n), |b| {
            b.iter(|| {
                for buf in &mut bufs {
                    data.fill(buf, next());
                }
                w.process_burst_with(&mut bufs, 0, 2, &mut actions, &CpuPrefetch);
                black_box(&actions);
            })
        });
        let partial = PartialTemplate::new(Flags::ACK, n);
        for buf in &mut bufs {
            partial.fill(buf, next());
        }
        w.process_burst_with(&mut bufs, 0, 2, &mut actions, &CpuPrefetch);
        assert_eq!(
            w.counters().get(Counter::RxChecksumFinished),
            32,
            "the partial frames are taken for partial"
        );
        g.bench_function(BenchmarkId::new("burst_of_32_finish_partial", n), |b| {
            b.iter(|| {
                for buf in &mut bufs {
                    partial.fill(buf, next());
                }
                w.process_burst_with(&mut bufs, 0, 2, &mut actions, &CpuPrefetch);
                black_box(&actions);
            })
        });
        g.throughput(Throughput::Elements(1));
    }
    g.finish();
}

fn new_connections(c: &mut Criterion) {
    let mut g = c.benchmark_group("fnat_new_connection");
    g.throughput(Throughput::Elements(1));
    const PER_WORKER: u32 = 1_000_000;
    // One by one, and in bursts of 32 as the dataplane hands them over
    // (which overlaps the misses of the lookups that find nothing).
    for burst in [1usize, 32] {
        let name = if burst == 1 {
            "64_servers".to_string()
        } else {
            format!("64_servers_burst_of_{burst}")
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let syn = Template::new(Flags::SYN);
                let mut bufs: Vec<VecBuf> =
                    (0..burst).map(|_| VecBuf::new(&syn.frame, 64)).collect();
                let mut actions = vec![Action::Exception; burst];
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let mut w = Worker::new(
                        WorkerConfig {
                            capacity: PER_WORKER,
                            ..WorkerConfig::default()
                        },
                        snapshot(64, SchedKind::Rr),
                    );
                    let batch = u32::try_from(left.min(u64::from(PER_WORKER))).unwrap();
                    let start = Instant::now();
                    let mut i = 0;
                    while i < batch {
                        for (buf, j) in bufs.iter_mut().zip(i..) {
                            syn.fill_checked(buf, j);
                        }
                        let n = usize::try_from(batch - i).unwrap().min(burst);
                        if burst == 1 {
                            black_box(w.process(&mut bufs[0], 0, 1));
                        } else {
                            w.process_burst_with(
                                &mut bufs[..n],
                                0,
                                1,
                                &mut actions[..n],
                                &CpuPrefetch,
                            );
                            black_box(&actions);
                        }
                        i += u32::try_from(n).unwrap();
                    }
                    total += start.elapsed();
                    assert_eq!(
                        w.counters().get(Counter::SessionsCreated),
                        u64::from(batch),
                        "every SYN made a session"
                    );
                    left -= u64::from(batch);
                }
                total
            })
        });
    }
    g.finish();
}

/// One new connection's scheduling: the pick, then the chosen server's
/// load change that the engine reports (what the lc family's tree replays).
fn schedulers(c: &mut Criterion) {
    let mut g = c.benchmark_group("sched_new_conn");
    let mut cases: Vec<(SchedKind, u32)> = SchedKind::ALL.iter().map(|&k| (k, 1000)).collect();
    for kind in [SchedKind::Lc, SchedKind::Wlc, SchedKind::Sed, SchedKind::Nq] {
        cases.push((kind, 10));
        cases.push((kind, 10_000));
    }
    for (kind, n) in cases {
        let ids: Vec<RsId> = (0..n)
            .map(|i| RsId {
                addr: IpAddr::from(std::net::Ipv4Addr::from(0x0a01_0000 + i)),
                port: 80,
            })
            .collect();
        let weights: Vec<u32> = (0..n).map(|i| 1 + i % 4).collect();
        let mut loads: Vec<RsLoad> = (0..n)
            .map(|i| RsLoad {
                active: i % 7,
                inactive: i % 3,
                overloaded: false,
            })
            .collect();
        let s = Scheduler::new(
            kind,
            SchedFlags::default(),
            &ids,
            &weights,
            DEFAULT_MH_TABLE_SIZE,
        )
        .unwrap();
        let mut st = s.new_state(&weights, &loads);
        let mut x = 1u32;
        g.bench_function(format!("{}/{n}", kind.name()), |b| {
            b.iter(|| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let flow = FlowInfo {
                    src: addr_v4(std::net::Ipv4Addr::from(x)),
                    src_port: 40000,
                    dst: addr_v4(std::net::Ipv4Addr::from(x >> 8)),
                };
                let i = s.pick(&mut st, &weights, &loads, &flow, 0);
                if let Some(i) = i {
                    loads[i].inactive += 1;
                    st.load_changed(i, &loads);
                }
                black_box(i)
            })
        });
    }
    g.finish();
}

fn maglev_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build_65537");
    for n in [100u32, 1000] {
        let ids: Vec<RsId> = (0..n)
            .map(|i| RsId {
                addr: IpAddr::from(std::net::Ipv4Addr::from(0x0a01_0000 + i)),
                port: 80,
            })
            .collect();
        let weights = vec![1u32; n as usize];
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                black_box(
                    Scheduler::new(
                        SchedKind::Mh,
                        SchedFlags::default(),
                        &ids,
                        &weights,
                        DEFAULT_MH_TABLE_SIZE,
                    )
                    .unwrap(),
                )
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = established, new_connections, schedulers, maglev_build
}

fn main() {
    restart_with_huge_malloc();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
