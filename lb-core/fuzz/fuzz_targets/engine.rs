//! Arbitrary bytes through the per-packet entry points, under every mode.
//!
//! Two workers hold a service of each mode (DR, NAT, TUN, Full-NAT, UDP
//! Full-NAT, and a persistent one) on a two-port network. Each input is
//! split into frames (a length byte, a port byte, the frame), and the
//! frames into bursts: a burst ends where the port changes or after a
//! frame whose port byte has bit 2 set. One worker takes every frame
//! through `process`, the other every burst through `process_burst_with`
//! with a prefetch that is active (a no-op here) from the first session,
//! so that read-ahead hints, reply tuples waiting for the index and the
//! rest of the burst path are exercised; after each burst the clock moves
//! and both expire sessions (the second with the prefetching sweep). Each is worker 0 of 2 with a NAT owners table
//! of its own and `expire_nodest_conn` on; a frame whose port byte has bit
//! 1 set first switches both to the snapshot without each service's first
//! real server (and back), so removed servers' sessions are exercised. The
//! engine must never panic, what it sends on must parse, and the burst
//! must give each frame the action and bytes that `process` gave it.

#![no_main]

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use lb_core::engine::{Action, Prefetch, Worker, WorkerConfig};
use lb_core::net::{Interface, Network, Route};
use lb_core::packet::{parse, PacketBuf, VecBuf};
use lb_core::sched::SchedKind;
use lb_core::session::NatOwners;
use lb_core::service::{ForwardMode, Persistence, Protocol, RealServer, ServiceKey, ServiceSpec, Snapshot, Timeouts};
use lb_core::testpkt::LB_MAC;
use lb_core::wire::MacAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn snapshot() -> Arc<Snapshot> {
    static SNAP: OnceLock<Arc<Snapshot>> = OnceLock::new();
    Arc::clone(SNAP.get_or_init(|| build(false)))
}

fn shrunk() -> Arc<Snapshot> {
    static SNAP: OnceLock<Arc<Snapshot>> = OnceLock::new();
    Arc::clone(SNAP.get_or_init(|| build(true)))
}

fn build(without_first: bool) -> Arc<Snapshot> {
    {
        let svc = |proto, port, mode, sched| {
            let mut s = ServiceSpec::new(ServiceKey { proto, vip: ip("198.18.0.10"), port, mark: 0 });
            s.sched = sched;
            let rport = if mode == ForwardMode::Fnat || mode == ForwardMode::Nat { 8080 } else { port };
            s.reals = ["10.1.0.5", "10.1.0.6"]
                .iter()
                .map(|a| RealServer { addr: ip(a), port: rport, mode, weight: 1, upper: 2, lower: 1 })
                .collect();
            if mode == ForwardMode::Fnat {
                s.laddrs = vec![ip("10.2.0.1")];
            }
            s
        };
        let mut persistent = svc(Protocol::Tcp, 84, ForwardMode::Nat, SchedKind::Sh);
        persistent.persistence = Some(Persistence { timeout: 30, prefix_len: 24 });
        let specs = vec![
            svc(Protocol::Tcp, 80, ForwardMode::Fnat, SchedKind::Rr),
            svc(Protocol::Tcp, 81, ForwardMode::Nat, SchedKind::Wlc),
            svc(Protocol::Tcp, 82, ForwardMode::Dr, SchedKind::Lblcr),
            svc(Protocol::Tcp, 83, ForwardMode::Tun, SchedKind::Mh),
            svc(Protocol::Udp, 53, ForwardMode::Fnat, SchedKind::Wrr),
            persistent,
        ];
        let net = Network::new(
            vec![
                Interface { port: 0, mac: LB_MAC, addrs: vec![(ip("10.0.0.1"), 24)], mtu: 1500 },
                Interface { port: 1, mac: MacAddr([2, 0, 0, 0, 0, 2]), addrs: vec![(ip("10.1.0.1"), 16)], mtu: 1400 },
            ],
            &[Route { prefix: ip("0.0.0.0"), len: 0, port: 0, gateway: Some(ip("10.0.0.254")) }],
        )
        .unwrap();
        let mut specs = specs;
        if without_first {
            for s in &mut specs {
                s.reals.remove(0);
            }
        }
        let version = if without_first { 2 } else { 1 };
        Arc::new(Snapshot::build(version, specs, Timeouts::default()).unwrap().with_network(net))
    }
}

/// Active, so the engine takes its prefetching path, but prefetching
/// nothing.
struct Active;

impl Prefetch for Active {
    fn prefetch<T>(&self, _: &T) {}
}

fn worker(prefetch_from: u32) -> Worker {
    let mut w = Worker::new(
        WorkerConfig {
            capacity: 16,
            workers: 2,
            expire_nodest_conn: true,
            prefetch_from,
            ..WorkerConfig::default()
        },
        snapshot(),
    );
    w.share_nat_owners(Arc::new(NatOwners::new(64)));
    w
}

fuzz_target!(|data: &[u8]| {
    let mut one = worker(u32::MAX);
    let mut burst = worker(0);
    let mut small = false;
    let mut rest = data;
    let mut now = 0u32;
    while rest.len() >= 2 {
        // One burst: frames on one port.
        let port = u16::from(rest[1] & 1);
        let mut bufs = Vec::new();
        let mut tick = 0u32;
        while rest.len() >= 2 && u16::from(rest[1] & 1) == port && bufs.len() < 80 {
            let len = usize::from(rest[0]) * 8;
            let flags = rest[1];
            if flags & 2 != 0 {
                if bufs.is_empty() {
                    small = !small;
                    for w in [&mut one, &mut burst] {
                        w.adopt(if small { shrunk() } else { snapshot() });
                    }
                } else {
                    // Snapshots change between bursts: this frame starts
                    // the next one.
                    break;
                }
            }
            rest = &rest[2..];
            let n = len.min(rest.len());
            let (frame, tail) = rest.split_at(n);
            rest = tail;
            tick = u32::from(frame.first().copied().unwrap_or(0) % 8);
            bufs.push(VecBuf::new(frame, 64));
            if flags & 4 != 0 {
                break;
            }
        }
        let mut singles = bufs.clone();
        let want: Vec<Action> = singles.iter_mut().map(|b| one.process(b, port, now)).collect();
        let mut actions = vec![Action::Exception; bufs.len()];
        burst.process_burst_with(&mut bufs, port, now, &mut actions, &Active);
        for ((a, b), (wa, wb)) in actions.iter().zip(&bufs).zip(want.iter().zip(&singles)) {
            assert_eq!(a, wa, "a burst's action differs from the frame's alone");
            assert_eq!(b.data(), wb.data(), "a burst's frame differs from the frame alone");
            if matches!(a, Action::Transmit { .. } | Action::Reply { .. }) {
                parse(b.data()).expect("what the engine sends parses");
            }
        }
        now = now.wrapping_add(tick);
        one.expire(now);
        burst.expire_with(now, &Active);
    }
    let _ = one.report();
    let _ = burst.report();
});
