//! The engine's golden table and behaviours: frames in, actions and frames
//! out, on a fixed configuration (two ports, one service per mode).

use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::net::{Interface, Network, Route};
use crate::packet::VecBuf;
use crate::sched::SchedKind;
use crate::service::{Persistence, RealServer, ServiceKey, ServiceSpec};
use crate::session::{flags, Session, State};
use crate::testpkt::{frame, ip_packet, Builder, LB_MAC, PEER_MAC};
use crate::types::{FlowKey, Timeouts};
use crate::wire::ethernet::ethertype;
use crate::wire::tcp::{self, Flags};

const RS_SIDE_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
const RS_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x02, 0x05]);
const SYN: u8 = Flags::SYN;
const ACK: u8 = Flags::ACK;
const FIN: u8 = Flags::FIN;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn a(s: &str) -> Addr {
    session::addr(ip(s))
}

fn rs(addr: &str, port: u16, mode: ForwardMode) -> RealServer {
    RealServer {
        addr: ip(addr),
        port,
        mode,
        weight: 1,
        upper: 0,
        lower: 0,
    }
}

fn svc(proto: Protocol, port: u16, sched: SchedKind, reals: Vec<RealServer>) -> ServiceSpec {
    let mut s = ServiceSpec::new(ServiceKey {
        proto,
        vip: ip("198.18.0.10"),
        port,
        mark: 0,
    });
    s.sched = sched;
    s.reals = reals;
    if s.reals.iter().any(|r| r.mode == ForwardMode::Fnat) {
        s.laddrs = vec![ip("10.2.0.1")];
    }
    s
}

fn network() -> Network {
    Network::new(
        vec![
            Interface {
                port: 0,
                mac: LB_MAC,
                addrs: vec![(ip("10.0.0.1"), 24)],
                mtu: 1500,
                rx_checksum: Default::default(),
            },
            Interface {
                port: 1,
                mac: RS_SIDE_MAC,
                addrs: vec![(ip("10.1.0.1"), 16)],
                mtu: 1500,
                rx_checksum: Default::default(),
            },
        ],
        &[Route {
            prefix: ip("0.0.0.0"),
            len: 0,
            port: 0,
            gateway: Some(ip("10.0.0.254")),
        }],
    )
    .unwrap()
}

fn specs() -> Vec<ServiceSpec> {
    let mut persistent = svc(
        Protocol::Tcp,
        84,
        SchedKind::Rr,
        vec![
            rs("10.1.0.5", 84, ForwardMode::Nat),
            rs("10.1.0.6", 84, ForwardMode::Nat),
            rs("10.1.0.7", 84, ForwardMode::Nat),
        ],
    );
    persistent.persistence = Some(Persistence {
        timeout: 300,
        prefix_len: 24,
    });
    vec![
        svc(
            Protocol::Tcp,
            80,
            SchedKind::Rr,
            vec![
                rs("10.1.0.5", 8080, ForwardMode::Fnat),
                rs("10.1.0.6", 8080, ForwardMode::Fnat),
            ],
        ),
        svc(
            Protocol::Tcp,
            81,
            SchedKind::Wlc,
            vec![rs("10.1.0.5", 8081, ForwardMode::Nat)],
        ),
        svc(
            Protocol::Tcp,
            82,
            SchedKind::Wlc,
            vec![rs("10.1.0.5", 0, ForwardMode::Dr)],
        ),
        svc(
            Protocol::Tcp,
            83,
            SchedKind::Wlc,
            vec![rs("10.1.0.5", 0, ForwardMode::Tun)],
        ),
        svc(
            Protocol::Udp,
            53,
            SchedKind::Rr,
            vec![rs("10.1.0.5", 5353, ForwardMode::Fnat)],
        ),
        persistent,
    ]
}

fn snapshot(specs: Vec<ServiceSpec>) -> Arc<Snapshot> {
    Arc::new(
        Snapshot::build(1, specs, Timeouts::default())
            .unwrap()
            .with_network(network()),
    )
}

fn worker() -> Worker {
    Worker::new(
        WorkerConfig {
            capacity: 64,
            ..WorkerConfig::default()
        },
        snapshot(specs()),
    )
}

fn run(w: &mut Worker, f: &[u8], port: u16, now: u32) -> (Action, Vec<u8>) {
    let mut b = VecBuf::new(f, 64);
    let act = without_dest(w.process(&mut b, port, now));
    (act, b.data().to_vec())
}

/// The action with its real-server handle left out, for comparing with
/// [`tx`] (`dest_names_the_real_server` checks the handles).
fn without_dest(act: Action) -> Action {
    match act {
        Action::Transmit { port, next_hop, .. } => Action::Transmit {
            port,
            next_hop,
            dest: NO_DEST,
        },
        other => other,
    }
}

fn tx(port: u16, hop: &str) -> Action {
    Action::Transmit {
        port,
        next_hop: a(hop),
        dest: NO_DEST,
    }
}

/// From the real servers' side, addressed to the LB's port 1.
fn from_rs(b: Builder) -> Vec<u8> {
    b.macs(RS_MAC, RS_SIDE_MAC).build()
}

#[test]
fn dest_names_the_real_server_towards_it_and_none_back() {
    let mut w = worker();
    let syn = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", SYN).build();
    let mut b = VecBuf::new(&syn, 64);
    let Action::Transmit { dest, next_hop, .. } = w.process(&mut b, 0, 1) else {
        panic!("the SYN is forwarded");
    };
    assert!((dest as usize) < w.dest_slots());
    assert_eq!(w.dests.dests[dest as usize].addr, next_hop);
    assert_eq!(next_hop, a("10.1.0.5"));
    let reply =
        from_rs(Builder::tcp_v4("10.1.0.5:8080", "10.2.0.1:1025", SYN | ACK).seq_ack(5000, 1001));
    let mut b = VecBuf::new(&reply, 64);
    let act = w.process(&mut b, 1, 1);
    assert!(
        matches!(act, Action::Transmit { dest: NO_DEST, .. }),
        "{act:?}"
    );
}

#[test]
fn golden_table() {
    let mut w = worker();
    let client = |to: &str, flags: u8| Builder::tcp_v4("10.0.0.2:40000", to, flags);
    // (what, input frame, input port, expected action, expected frame)
    type Case = (&'static str, Vec<u8>, u16, Action, Vec<u8>);
    let cases: Vec<Case> = vec![
        (
            "FNAT SYN: source becomes LIP:1025, destination the first RS, TTL 63",
            client("198.18.0.10:80", SYN).mss(1460).build(),
            0,
            tx(1, "10.1.0.5"),
            Builder::tcp_v4("10.2.0.1:1025", "10.1.0.5:8080", SYN)
                .mss(1460)
                .ttl(63)
                .build(),
        ),
        (
            "FNAT SYN-ACK from the RS to LIP:1025 goes back to the client from the VIP",
            from_rs(
                Builder::tcp_v4("10.1.0.5:8080", "10.2.0.1:1025", SYN | ACK).seq_ack(5000, 1001),
            ),
            1,
            tx(0, "10.0.0.2"),
            Builder::tcp_v4("198.18.0.10:80", "10.0.0.2:40000", SYN | ACK)
                .seq_ack(5000, 1001)
                .ttl(63)
                .macs(RS_MAC, RS_SIDE_MAC)
                .build(),
        ),
        (
            "FNAT data on the session",
            client("198.18.0.10:80", ACK)
                .seq_ack(1001, 5001)
                .payload(b"GET / HTTP/1.0\r\n\r\n")
                .build(),
            0,
            tx(1, "10.1.0.5"),
            Builder::tcp_v4("10.2.0.1:1025", "10.1.0.5:8080", ACK)
                .seq_ack(1001, 5001)
                .payload(b"GET / HTTP/1.0\r\n\r\n")
                .ttl(63)
                .build(),
        ),
        (
            "NAT SYN: only the destination changes",
            client("198.18.0.10:81", SYN).build(),
            0,
            tx(1, "10.1.0.5"),
            Builder::tcp_v4("10.0.0.2:40000", "10.1.0.5:8081", SYN)
                .ttl(63)
                .build(),
        ),
        (
            "NAT reply: the VIP becomes the source again",
            from_rs(Builder::tcp_v4(
                "10.1.0.5:8081",
                "10.0.0.2:40000",
                SYN | ACK,
            )),
            1,
            tx(0, "10.0.0.2"),
            Builder::tcp_v4("198.18.0.10:81", "10.0.0.2:40000", SYN | ACK)
                .ttl(63)
                .macs(RS_MAC, RS_SIDE_MAC)
                .build(),
        ),
        (
            "DR: the frame is untouched, the next hop is the RS",
            client("198.18.0.10:82", SYN).build(),
            0,
            tx(1, "10.1.0.5"),
            client("198.18.0.10:82", SYN).build(),
        ),
        (
            "TUN: IPIP from the egress port's address to the RS",
            client("198.18.0.10:83", SYN).build(),
            0,
            tx(1, "10.1.0.5"),
            frame(
                PEER_MAC,
                LB_MAC,
                None,
                ethertype::IPV4,
                &ip_packet(
                    ip("10.1.0.1"),
                    ip("10.1.0.5"),
                    4,
                    64,
                    1,
                    true,
                    &client("198.18.0.10:83", SYN).build_ip(),
                ),
            ),
        ),
        (
            "UDP FNAT",
            Builder::udp_v4("10.0.0.2:40001", "198.18.0.10:53", b"query").build(),
            0,
            tx(1, "10.1.0.5"),
            // Each service has its own share of the local ports.
            Builder::udp_v4("10.2.0.1:1025", "10.1.0.5:5353", b"query")
                .ttl(63)
                .build(),
        ),
    ];
    for (what, input, port, want_action, want_frame) in cases {
        let (act, out) = run(&mut w, &input, port, 1);
        assert_eq!(act, want_action, "{what}");
        assert_eq!(out, want_frame, "{what}");
    }
    assert_eq!(w.counters.get(Counter::SessionsCreated), 5);
    assert_eq!(w.counters.get(Counter::Forwarded), 8);
}

/// 10.0.0.2's ARP request for `target`, broadcast.
fn arp_request(target: &str) -> Vec<u8> {
    let mut f = frame(
        PEER_MAC,
        MacAddr::BROADCAST,
        None,
        ethertype::ARP,
        &[0u8; 28],
    );
    arp::Packet::new_unchecked(&mut f[14..]).fill(
        arp::op::REQUEST,
        PEER_MAC,
        "10.0.0.2".parse().unwrap(),
        MacAddr::ZERO,
        target.parse().unwrap(),
    );
    f
}

#[test]
fn arp_and_echo_for_owned_addresses() {
    let mut w = worker();
    let req = arp_request;
    for owned in ["198.18.0.10", "10.0.0.1", "10.2.0.1"] {
        let (act, out) = run(&mut w, &req(owned), 0, 1);
        assert_eq!(
            act,
            Action::Neighbor {
                learn: Some((
                    crate::session::addr_v4("10.0.0.2".parse().unwrap()),
                    PEER_MAC
                )),
                reply: true
            },
            "{owned}"
        );
        let mut want = frame(LB_MAC, PEER_MAC, None, ethertype::ARP, &[0u8; 28]);
        arp::Packet::new_unchecked(&mut want[14..]).fill(
            arp::op::REPLY,
            LB_MAC,
            owned.parse().unwrap(),
            PEER_MAC,
            "10.0.0.2".parse().unwrap(),
        );
        assert_eq!(out, want, "{owned}");
    }
    let (act, _) = run(&mut w, &req("10.0.0.99"), 0, 1);
    assert_eq!(
        act,
        Action::Neighbor {
            learn: Some((
                crate::session::addr_v4("10.0.0.2".parse().unwrap()),
                PEER_MAC
            )),
            reply: false
        }
    );

    let ping = Builder::icmp_echo("10.0.0.2", "10.0.0.1", 0x1234, b"ping").build();
    let (act, out) = run(&mut w, &ping, 0, 1);
    assert_eq!(act, Action::Reply { port: 0 });
    let mut pong =
        Builder::icmp_echo("10.0.0.1", "10.0.0.2", 0x1234, b"ping").macs(LB_MAC, PEER_MAC);
    pong.icmp_type = 0;
    assert_eq!(out, pong.build());
}

#[test]
fn what_is_not_balanced() {
    let mut w = worker();
    // To an owned address, no service: the kernel's.
    let ssh = Builder::tcp_v4("10.0.0.2:40000", "10.0.0.1:22", SYN).build();
    assert_eq!(run(&mut w, &ssh, 0, 1).0, Action::Exception);
    // Not our MAC.
    let other = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", SYN)
        .macs(PEER_MAC, RS_MAC)
        .build();
    assert_eq!(
        run(&mut w, &other, 0, 1).0,
        Action::Drop(Counter::DropNotOurMac)
    );
    // A segment other than SYN without a session.
    let stray = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", ACK).build();
    assert_eq!(
        run(&mut w, &stray, 0, 1).0,
        Action::Drop(Counter::DropTcpNotSyn)
    );
    // Malformed at each layer.
    let f = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", SYN).build();
    assert_eq!(
        run(&mut w, &f[..12], 0, 1).0,
        Action::Drop(Counter::DropL2Malformed)
    );
    // Shorter than its IP header says: cut short on the way.
    assert_eq!(
        run(&mut w, &f[..30], 0, 1).0,
        Action::Drop(Counter::DropTruncated)
    );
    assert_eq!(
        run(&mut w, &f[..f.len() - 1], 0, 1).0,
        Action::Drop(Counter::DropTruncated)
    );
    let mut v5 = f.clone();
    v5[14] = 0x55;
    assert_eq!(
        run(&mut w, &v5, 0, 1).0,
        Action::Drop(Counter::DropL3Malformed)
    );
    let mut bad = f.clone();
    bad[14 + 20 + 12] = 0x10;
    assert_eq!(
        run(&mut w, &bad, 0, 1).0,
        Action::Drop(Counter::DropL4Malformed)
    );
    // A reply to a local port with no session.
    let late = from_rs(Builder::tcp_v4("10.1.0.5:8080", "10.2.0.1:2000", ACK));
    assert_eq!(
        run(&mut w, &late, 1, 1).0,
        Action::Drop(Counter::DropNoSession)
    );
    // TTL 1 cannot be forwarded by NAT.
    let ttl1 = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:81", SYN)
        .ttl(1)
        .build();
    assert_eq!(
        run(&mut w, &ttl1, 0, 1).0,
        Action::Drop(Counter::DropTtlExceeded)
    );
    assert_eq!(w.counters.get(Counter::Exception), 1);
}

#[test]
fn round_robin_spreads_new_connections() {
    let mut w = worker();
    let mut seen = Vec::new();
    for i in 0..4u16 {
        let syn =
            Builder::tcp_v4(&format!("10.0.0.2:{}", 41000 + i), "198.18.0.10:80", SYN).build();
        let (act, _) = run(&mut w, &syn, 0, 1);
        seen.push(act);
    }
    assert_eq!(
        seen,
        [
            tx(1, "10.1.0.5"),
            tx(1, "10.1.0.6"),
            tx(1, "10.1.0.5"),
            tx(1, "10.1.0.6")
        ]
    );
}

#[test]
fn tcp_states_drive_loads_and_expiry() {
    let mut w = worker();
    let c = |flags: u8| Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:81", flags).build();
    let r = |flags: u8| from_rs(Builder::tcp_v4("10.1.0.5:8081", "10.0.0.2:40000", flags));
    let load = |w: &Worker| {
        let h = w.dests.svc_index[&ServiceKey {
            proto: Protocol::Tcp,
            vip: ip("198.18.0.10"),
            port: 81,
            mark: 0,
        }];
        w.dests.svcs[h as usize].loads[0]
    };
    run(&mut w, &c(SYN), 0, 0);
    assert_eq!((load(&w).active, load(&w).inactive), (0, 1));
    run(&mut w, &r(SYN | ACK), 1, 0);
    run(&mut w, &c(ACK), 0, 0);
    assert_eq!(
        (load(&w).active, load(&w).inactive),
        (1, 0),
        "ESTABLISHED is active"
    );
    let id = w
        .sessions
        .lookup_in(&parse(&c(ACK)).unwrap().key())
        .unwrap();
    assert_eq!(w.sessions.get(id).state, State::Established);
    // Established sessions live 900 s.
    w.expire(899);
    assert_eq!(w.sessions.len(), 1);
    run(&mut w, &c(FIN | ACK), 0, 899);
    run(&mut w, &r(ACK), 1, 899);
    run(&mut w, &r(FIN | ACK), 1, 899);
    run(&mut w, &c(ACK), 0, 899);
    assert_eq!(w.sessions.get(id).state, State::TimeWait);
    assert_eq!((load(&w).active, load(&w).inactive), (0, 1));
    w.expire(899 + 119);
    assert_eq!(w.sessions.len(), 1, "TIME_WAIT lasts 120 s");
    w.expire(899 + 120);
    assert!(w.sessions.is_empty());
    assert_eq!(load(&w), crate::sched::RsLoad::default());
    assert_eq!(w.counters.get(Counter::SessionsExpired), 1);
}

/// IPVS's wlc walk (ip_vs_wlc.c), written out here as the reference the
/// engine's choice is held to.
fn wlc_walk(weights: &[u32], loads: &[crate::sched::RsLoad]) -> Option<usize> {
    let mut least: Option<usize> = None;
    for j in (0..loads.len()).filter(|&j| weights[j] > 0 && !loads[j].overloaded) {
        let replace = least.is_none_or(|l| {
            loads[l].overhead() * u64::from(weights[j])
                > loads[j].overhead() * u64::from(weights[l])
        });
        if replace {
            least = Some(j);
        }
    }
    least
}

/// wlc's choice through the engine: every connection's opening,
/// establishing, closing and expiry reaches the scheduler, so each new
/// connection goes where IPVS's walk over the servers would send it.
#[test]
fn wlc_follows_every_change_of_a_servers_connections() {
    let reals: Vec<RealServer> = (0..7)
        .map(|i| RealServer {
            weight: [3, 1, 2, 0, 5, 1, 2][i],
            ..rs(&format!("10.1.0.{}", 10 + i), 8081, ForwardMode::Nat)
        })
        .collect();
    let mut w = Worker::new(
        WorkerConfig {
            capacity: 4096,
            ..WorkerConfig::default()
        },
        snapshot(vec![svc(Protocol::Tcp, 81, SchedKind::Wlc, reals)]),
    );
    let h = w.dests.svc_index[&ServiceKey {
        proto: Protocol::Tcp,
        vip: ip("198.18.0.10"),
        port: 81,
        mark: 0,
    }] as usize;
    let weights = w.snap.services[0].weights.clone();
    let client = |i: u16| format!("10.0.0.2:{}", 20000 + i);
    let mut established = std::collections::VecDeque::new();
    for i in 0..600u16 {
        let now = u32::from(i / 4);
        let expect = wlc_walk(&weights, &w.dests.svcs[h].loads).unwrap();
        let rs_addr = format!("10.1.0.{}", 10 + expect);
        let syn = Builder::tcp_v4(&client(i), "198.18.0.10:81", SYN).build();
        assert_eq!(
            run(&mut w, &syn, 0, now).0,
            tx(1, &rs_addr),
            "connection {i}"
        );
        // Two in three complete the handshake (active), the rest stay
        // half-open (inactive) until they time out (syn_recv: 60 s).
        if i % 3 != 0 {
            let reply = Builder::tcp_v4(&format!("{rs_addr}:8081"), &client(i), SYN | ACK);
            run(&mut w, &from_rs(reply), 1, now);
            let ack = Builder::tcp_v4(&client(i), "198.18.0.10:81", ACK).build();
            run(&mut w, &ack, 0, now);
            established.push_back(i);
        }
        // Every fifth step the oldest established connection is reset.
        if i % 5 == 4 {
            if let Some(j) = established.pop_front() {
                let rst = Builder::tcp_v4(&client(j), "198.18.0.10:81", Flags::RST).build();
                run(&mut w, &rst, 0, now);
            }
        }
        w.expire(now);
    }
    let loads = &w.dests.svcs[h].loads;
    assert_eq!(
        loads[3],
        crate::sched::RsLoad::default(),
        "weight 0 gets nothing"
    );
    assert!(
        w.counters.get(Counter::SessionsExpired) > 0,
        "some timed out"
    );
    assert!(loads.iter().map(|l| l.active).sum::<u32>() > 200);
}

#[test]
fn fnat_ports_return_when_sessions_go_and_syn_reuses_time_wait() {
    let mut w = worker();
    let pool_use = |w: &Worker| {
        let h = w.dests.svc_index[&ServiceKey {
            proto: Protocol::Tcp,
            vip: ip("198.18.0.10"),
            port: 80,
            mark: 0,
        }];
        w.dests.svcs[h as usize].pool.as_ref().unwrap().in_use()[0]
    };
    let syn = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", SYN).build();
    run(&mut w, &syn, 0, 0);
    assert_eq!(pool_use(&w), 1);
    let ack = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", ACK).build();
    run(&mut w, &ack, 0, 0);
    let rst = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", Flags::RST | ACK).build();
    run(&mut w, &rst, 0, 0);
    let id = w.sessions.lookup_in(&parse(&syn).unwrap().key()).unwrap();
    assert_eq!(w.sessions.get(id).state, State::Close);
    // A new SYN on the closed tuple is a new connection (to the next RS).
    let (act, _) = run(&mut w, &syn, 0, 1);
    assert_eq!(act, tx(1, "10.1.0.6"));
    assert_eq!(w.sessions.len(), 1);
    assert_eq!(pool_use(&w), 1);
    w.expire(1000);
    assert_eq!(pool_use(&w), 0);
}

#[test]
fn a_connection_closed_in_the_burst_that_made_it_leaves_no_reply_entry() {
    // A Full-NAT session's reply tuple enters the index when its burst is
    // over. One made and closed (established, reset, then a new SYN on the
    // closed tuple) within a burst must leave no trace of it, and its successor and a
    // neighbour must be whole.
    let mut w = worker();
    let c = "10.0.0.2:40000";
    let frames = [
        Builder::tcp_v4(c, "198.18.0.10:80", SYN).build(),
        Builder::tcp_v4(c, "198.18.0.10:80", ACK).build(),
        Builder::tcp_v4(c, "198.18.0.10:80", Flags::RST | ACK).build(),
        Builder::tcp_v4(c, "198.18.0.10:80", SYN).build(),
        Builder::tcp_v4("10.0.0.3:40000", "198.18.0.10:80", SYN).build(),
    ];
    let mut bufs: Vec<VecBuf> = frames.iter().map(|f| VecBuf::new(f, 64)).collect();
    let mut actions = vec![Action::Exception; bufs.len()];
    w.process_burst(&mut bufs, 0, 5, &mut actions);
    assert!(actions.iter().all(|a| matches!(a, Action::Transmit { .. })));
    // The reply tuples the real servers saw, by the frames sent to them.
    let reply = |b: &VecBuf| {
        let k = parse(b.data()).unwrap().key();
        FlowKey {
            src: k.dst,
            dst: k.src,
            sport: k.dport,
            dport: k.sport,
            proto: k.proto,
        }
    };
    let (gone, kept, other) = (reply(&bufs[0]), reply(&bufs[3]), reply(&bufs[4]));
    assert_ne!(gone, kept);
    assert_eq!(w.sessions.len(), 2);
    assert_eq!(w.sessions.entries(), 4);
    assert_eq!(w.sessions.lookup_out(&gone), None);
    let ports = w.lports.as_ref().unwrap();
    assert_eq!(ports.sessions(&gone.dst, gone.dport), 0);
    for k in [kept, other] {
        let id = w.sessions.lookup_out(&k).unwrap();
        assert_eq!(w.sessions.get(id).outbound_key(), k);
        assert_eq!(ports.sessions(&k.dst, k.dport), 1);
    }
    // The successor's replies reach the client.
    let syn_ack = from_rs(Builder::tcp_v4(
        &format!("{}:{}", session::ip(&kept.src), kept.sport),
        &format!("{}:{}", session::ip(&kept.dst), kept.dport),
        SYN | ACK,
    ));
    let (act, out) = run(&mut w, &syn_ack, 1, 5);
    assert_eq!(act, tx(0, "10.0.0.2"));
    assert_eq!(parse(&out).unwrap().key().dst, a("10.0.0.2"));
}

#[test]
fn a_reply_in_the_burst_of_its_connections_first_packet_is_found() {
    // As a replayed capture can have it: the SYN and the server's SYN-ACK
    // in one burst on one port. The reply tuple is not in the index yet
    // when the SYN-ACK is looked up, and is found all the same.
    let frames = [
        Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", SYN).build(),
        Builder::tcp_v4("10.1.0.5:8080", "10.2.0.1:1025", SYN | ACK).build(),
    ];
    let mut one = worker();
    let want: Vec<_> = frames.iter().map(|f| run(&mut one, f, 0, 5)).collect();
    assert_eq!(
        want[1].0,
        tx(0, "10.0.0.2"),
        "the SYN-ACK goes to the client"
    );
    let mut w = worker();
    let mut bufs: Vec<VecBuf> = frames.iter().map(|f| VecBuf::new(f, 64)).collect();
    let mut actions = vec![Action::Exception; bufs.len()];
    w.process_burst(&mut bufs, 0, 5, &mut actions);
    let got: Vec<_> = bufs
        .iter()
        .zip(actions)
        .map(|(b, a)| (without_dest(a), b.data().to_vec()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn a_reply_tuple_waiting_for_the_index_is_taken() {
    // One local port: two new flows to the one real server of the UDP
    // service in one burst cannot both have it, though the first's reply
    // tuple is not in the index yet when the second asks.
    let mut w = Worker::new(
        WorkerConfig {
            capacity: 64,
            local_ports: (2000, 2000),
            ..WorkerConfig::default()
        },
        snapshot(specs()),
    );
    let frames = [
        Builder::udp_v4("10.0.0.2:1000", "198.18.0.10:53", b"q").build(),
        Builder::udp_v4("10.0.0.3:1000", "198.18.0.10:53", b"q").build(),
    ];
    let mut bufs: Vec<VecBuf> = frames.iter().map(|f| VecBuf::new(f, 64)).collect();
    let mut actions = vec![Action::Exception; bufs.len()];
    w.process_burst(&mut bufs, 0, 5, &mut actions);
    assert!(matches!(actions[0], Action::Transmit { .. }));
    assert_eq!(actions[1], Action::Drop(Counter::DropLaddrExhausted));
    assert_eq!(w.sessions.len(), 1);
    assert_eq!(w.sessions.entries(), 2);
}

#[test]
fn dr_syn_after_the_clients_fin_is_a_new_connection() {
    let mut specs = specs();
    specs[2] = svc(
        Protocol::Tcp,
        82,
        SchedKind::Rr,
        vec![
            rs("10.1.0.5", 0, ForwardMode::Dr),
            rs("10.1.0.6", 0, ForwardMode::Dr),
        ],
    );
    let mut w = Worker::new(
        WorkerConfig {
            capacity: 64,
            ..WorkerConfig::default()
        },
        snapshot(specs),
    );
    let c = |flags: u8| Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:82", flags).build();
    assert_eq!(run(&mut w, &c(SYN), 0, 1).0, tx(1, "10.1.0.5"));
    assert_eq!(run(&mut w, &c(ACK), 0, 1).0, tx(1, "10.1.0.5"));
    assert_eq!(run(&mut w, &c(Flags::FIN | ACK), 0, 1).0, tx(1, "10.1.0.5"));
    let id = w
        .sessions
        .lookup_in(&parse(&c(SYN)).unwrap().key())
        .unwrap();
    assert_eq!(w.sessions.get(id).state, State::FinWait);
    // The client reuses its port: scheduled anew, not stuck to 10.1.0.5.
    assert_eq!(run(&mut w, &c(SYN), 0, 2).0, tx(1, "10.1.0.6"));
    assert_eq!(w.sessions.len(), 1);
}

#[test]
fn persistence_keeps_a_client_network_on_one_server() {
    let mut w = worker();
    let mut targets = std::collections::HashSet::new();
    for (client, port) in [
        ("10.0.0.2", 40000),
        ("10.0.0.2", 40001),
        ("10.0.0.77", 40002),
    ] {
        let syn = Builder::tcp_v4(&format!("{client}:{port}"), "198.18.0.10:84", SYN).build();
        let (act, _) = run(&mut w, &syn, 0, 1);
        targets.insert(act);
    }
    assert_eq!(
        targets.len(),
        1,
        "one /24: one server, though rr would rotate"
    );
    assert_eq!(w.counters.get(Counter::TemplatesCreated), 1);
    // Another network gets rr's next pick.
    let syn = Builder::tcp_v4("10.0.1.2:40000", "198.18.0.10:84", SYN).build();
    assert!(!targets.contains(&run(&mut w, &syn, 0, 1).0));
    // The template outlives its connections by the persistence timeout.
    w.expire(1 + 60);
    let left: Vec<_> = w.sessions.iter().filter(|(_, s)| s.is_template()).collect();
    assert_eq!(
        left.len(),
        2,
        "connections in SYN_RECV expired, templates stay"
    );
    w.expire(1 + 60 + 300);
    assert!(w.sessions.is_empty());
}

#[test]
fn a_quiesced_template_leaves_the_index_but_outlives_its_connections() {
    let mut w = worker();
    let syn =
        |port: u16| Builder::tcp_v4(&format!("10.0.0.2:{port}"), "198.18.0.10:84", SYN).build();
    let (first, _) = run(&mut w, &syn(40000), 0, 1);
    let templates = |w: &Worker| -> Vec<Session> {
        w.sessions
            .iter()
            .filter(|(_, s)| s.is_template())
            .map(|(_, s)| *s)
            .collect()
    };
    let old = templates(&w)[0];
    assert_eq!(old.refs(), 1);
    // The template's server goes to weight 0 while its connection lives.
    let mut quiesced = specs();
    let svc = quiesced.iter_mut().find(|s| s.key.port == 84).unwrap();
    let r = svc
        .reals
        .iter_mut()
        .find(|r| session::addr(r.addr) == old.rs)
        .unwrap();
    r.weight = 0;
    w.adopt(snapshot(quiesced));
    let (second, _) = run(&mut w, &syn(40001), 0, 2);
    assert_ne!(first, second, "a new template, on another server");
    assert_eq!(w.counters.get(Counter::TemplatesCreated), 2);
    let both = templates(&w);
    assert_eq!(both.len(), 2, "the old one stays for its connection");
    assert_eq!(
        both.iter()
            .filter(|t| t.flags & flags::UNHASHED != 0)
            .count(),
        1
    );
    // A packet with a template's own tuple is no connection of it.
    let probe = Builder::tcp_v4("10.0.0.0:0", "198.18.0.10:84", ACK).build();
    assert_eq!(
        run(&mut w, &probe, 0, 2).0,
        Action::Drop(Counter::DropTcpNotSyn)
    );
    // The connections go (SYN_RECV), then both templates, with no
    // reference left dangling.
    w.expire(2 + 60);
    assert_eq!(templates(&w).iter().map(Session::refs).sum::<u32>(), 0);
    w.expire(2 + 60 + 300);
    assert!(w.sessions.is_empty());
}

#[test]
fn an_empty_later_icmp_fragment_to_an_owned_address_is_no_echo() {
    // Found by the fuzzer: a later fragment has no ICMP header to read.
    let mut w = worker();
    for (src, dst) in [("10.0.0.2", "10.0.0.1"), ("10.0.0.2", "198.18.0.10")] {
        let mut ip = ip_packet(
            src.parse().unwrap(),
            dst.parse().unwrap(),
            ip_proto::ICMP,
            64,
            7,
            false,
            &[],
        );
        // Fragment offset 8 (in 8-byte units), no payload.
        ip[6..8].copy_from_slice(&8u16.to_be_bytes());
        ipv4::Packet::new_unchecked(&mut ip[..]).fill_checksum();
        let f = frame(PEER_MAC, LB_MAC, None, ethertype::IPV4, &ip);
        let (act, _) = run(&mut w, &f, 0, 1);
        assert!(!matches!(act, Action::Transmit { .. }), "{dst}: {act:?}");
    }
}

#[test]
fn full_table_drops_new_flows_only() {
    let mut w = Worker::new(
        WorkerConfig {
            capacity: 4,
            ..WorkerConfig::default()
        },
        snapshot(specs()),
    );
    for i in 0..4u16 {
        let syn = Builder::tcp_v4(&format!("10.0.0.2:{}", 1000 + i), "198.18.0.10:81", SYN).build();
        assert_eq!(run(&mut w, &syn, 0, 1).0, tx(1, "10.1.0.5"));
    }
    let syn = Builder::tcp_v4("10.0.0.2:2000", "198.18.0.10:81", SYN).build();
    assert_eq!(
        run(&mut w, &syn, 0, 1).0,
        Action::Drop(Counter::DropTableFull)
    );
    let ack = Builder::tcp_v4("10.0.0.2:1000", "198.18.0.10:81", ACK).build();
    assert_eq!(
        run(&mut w, &ack, 0, 1).0,
        tx(1, "10.1.0.5"),
        "established flows go on"
    );
}

#[test]
fn replies_of_another_worker_are_handed_over() {
    let cfg = |id| WorkerConfig {
        id,
        workers: 2,
        capacity: 64,
        ..WorkerConfig::default()
    };
    let mut w0 = Worker::new(cfg(0), snapshot(specs()));
    let mut w1 = Worker::new(cfg(1), snapshot(specs()));
    let syn = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", SYN).build();
    let (_, out) = run(&mut w1, &syn, 0, 1);
    let lport = parse(&out).unwrap().sport;
    assert_eq!(lport % 2, 1, "worker 1 of 2 uses odd ports");
    let reply = from_rs(Builder::tcp_v4(
        "10.1.0.5:8080",
        &format!("10.2.0.1:{lport}"),
        SYN | ACK,
    ));
    assert_eq!(run(&mut w0, &reply, 1, 1).0, Action::HandOver { worker: 1 });
    assert_eq!(run(&mut w1, &reply, 1, 1).0, tx(0, "10.0.0.2"));
    assert_eq!(w0.counters.get(Counter::HandedOver), 1);
}

#[test]
fn nat_replies_find_their_owner_through_the_shared_table() {
    let cfg = |id| WorkerConfig {
        id,
        workers: 2,
        capacity: 64,
        ..WorkerConfig::default()
    };
    let owners = Arc::new(crate::session::NatOwners::new(1 << 10));
    let mut w0 = Worker::new(cfg(0), snapshot(specs()));
    let mut w1 = Worker::new(cfg(1), snapshot(specs()));
    w0.share_nat_owners(Arc::clone(&owners));
    w1.share_nat_owners(owners);
    let syn = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:81", SYN).build();
    assert_eq!(run(&mut w1, &syn, 0, 1).0, tx(1, "10.1.0.5"));
    let reply = from_rs(Builder::tcp_v4(
        "10.1.0.5:8081",
        "10.0.0.2:40000",
        SYN | ACK,
    ));
    assert_eq!(run(&mut w0, &reply, 1, 1).0, Action::HandOver { worker: 1 });
    assert_eq!(run(&mut w1, &reply, 1, 1).0, tx(0, "10.0.0.2"));
    // Anything else without a session stays where it is.
    let stray = from_rs(Builder::tcp_v4(
        "10.1.0.5:8081",
        "10.0.0.2:40001",
        SYN | ACK,
    ));
    assert!(matches!(run(&mut w0, &stray, 1, 1).0, Action::Drop(_)));
    assert_eq!(w0.counters.get(Counter::HandedOver), 1);
}

#[test]
fn quiescing_and_removing_a_server_keeps_its_connections() {
    let mut w = worker();
    let c = |port: u16, flags: u8| {
        Builder::tcp_v4(&format!("10.0.0.2:{port}"), "198.18.0.10:80", flags).build()
    };
    assert_eq!(run(&mut w, &c(40000, SYN), 0, 1).0, tx(1, "10.1.0.5"));
    // 10.1.0.5 goes to weight 0, then leaves the service.
    let mut quiesced = specs();
    quiesced[0].reals[0].weight = 0;
    w.adopt(snapshot(quiesced));
    assert_eq!(
        run(&mut w, &c(40000, ACK), 0, 2).0,
        tx(1, "10.1.0.5"),
        "existing connection continues"
    );
    assert_eq!(
        run(&mut w, &c(40001, SYN), 0, 2).0,
        tx(1, "10.1.0.6"),
        "new ones avoid it"
    );
    assert_eq!(run(&mut w, &c(40002, SYN), 0, 2).0, tx(1, "10.1.0.6"));
    let mut removed = specs();
    removed[0].reals.remove(0);
    w.adopt(snapshot(removed));
    assert_eq!(
        run(&mut w, &c(40000, ACK), 0, 3).0,
        tx(1, "10.1.0.5"),
        "still served after removal"
    );
    let d = w
        .sessions
        .get(
            w.sessions
                .lookup_in(&parse(&c(40000, ACK)).unwrap().key())
                .unwrap(),
        )
        .dest;
    assert_eq!(
        w.dests.dests[d as usize].idx, NIL,
        "its entry left the snapshot"
    );
    w.expire(10_000);
    assert!(w.sessions.is_empty());
    assert!(
        !w.dests
            .dest_index
            .contains_key(&(specs()[0].key, a("10.1.0.5"), 8080)),
        "and was freed"
    );
}

#[test]
fn a_real_servers_new_mode_applies_to_new_connections_only() {
    let mut w = worker();
    let c = |port: u16, flags: u8| {
        Builder::tcp_v4(&format!("10.0.0.2:{port}"), "198.18.0.10:81", flags).build()
    };
    // Service 81: one NAT real server; the client's address reaches it.
    let (act, out) = run(&mut w, &c(40000, SYN), 0, 1);
    assert_eq!(act, tx(1, "10.1.0.5"));
    assert_eq!(&out[26..30], &[10, 0, 0, 2]);
    // ipvsadm -e ... -m becomes Full-NAT (the same real server entry).
    let mut edited = specs();
    edited[1].reals[0].mode = ForwardMode::Fnat;
    edited[1].laddrs = vec![ip("10.2.0.1")];
    w.adopt(snapshot(edited));
    let (act, out) = run(&mut w, &c(40001, SYN), 0, 2);
    assert_eq!(act, tx(1, "10.1.0.5"));
    assert_eq!(
        &out[26..30],
        &[10, 2, 0, 1],
        "a new connection leaves from the local address"
    );
    let (_, out) = run(&mut w, &c(40000, ACK), 0, 2);
    assert_eq!(&out[26..30], &[10, 0, 0, 2], "the NAT connection stays NAT");
}

#[test]
fn expire_nodest_conn_ends_sessions_of_removed_servers() {
    let mut w = Worker::new(
        WorkerConfig {
            capacity: 64,
            expire_nodest_conn: true,
            ..WorkerConfig::default()
        },
        snapshot(specs()),
    );
    let c = |port: u16, flags: u8| {
        Builder::tcp_v4(&format!("10.0.0.2:{port}"), "198.18.0.10:80", flags).build()
    };
    assert_eq!(run(&mut w, &c(40000, SYN), 0, 1).0, tx(1, "10.1.0.5"));
    assert_eq!(run(&mut w, &c(40002, SYN), 0, 1).0, tx(1, "10.1.0.6"));
    assert_eq!(run(&mut w, &c(40004, SYN), 0, 1).0, tx(1, "10.1.0.5"));
    // Weight 0 is not removal: the connection continues.
    let mut quiesced = specs();
    quiesced[0].reals[0].weight = 0;
    w.adopt(snapshot(quiesced));
    assert_eq!(run(&mut w, &c(40000, ACK), 0, 2).0, tx(1, "10.1.0.5"));
    let mut removed = specs();
    removed[0].reals.remove(0);
    w.adopt(snapshot(removed));
    assert_eq!(
        run(&mut w, &c(40000, ACK), 0, 3).0,
        Action::Drop(Counter::DropDestRemoved),
        "not sent to the removed server"
    );
    assert_eq!(w.counters().get(Counter::DropDestRemoved), 1);
    assert_eq!(
        run(&mut w, &c(40000, ACK), 0, 3).0,
        Action::Drop(Counter::DropTcpNotSyn),
        "the session is gone"
    );
    assert_eq!(
        run(&mut w, &c(40004, SYN), 0, 3).0,
        tx(1, "10.1.0.6"),
        "a SYN on the old tuple is scheduled anew"
    );
    assert_eq!(
        run(&mut w, &c(40002, ACK), 0, 3).0,
        tx(1, "10.1.0.6"),
        "sessions of servers that stay are untouched"
    );
}

#[test]
fn sloppy_tcp_takes_up_connections_another_director_began() {
    let mut with_mh = specs();
    with_mh.push(svc(
        Protocol::Tcp,
        91,
        SchedKind::Mh,
        ["10.1.0.5", "10.1.0.6", "10.1.0.7"]
            .iter()
            .map(|r| rs(r, 91, ForwardMode::Dr))
            .collect(),
    ));
    let sloppy = || {
        Worker::new(
            WorkerConfig {
                capacity: 256,
                sloppy_tcp: true,
                ..WorkerConfig::default()
            },
            snapshot(with_mh.clone()),
        )
    };
    let (mut first, mut second) = (sloppy(), sloppy());
    // mh hashes the client's address: one port each of many clients.
    let c = |port: u16, flags: u8| {
        let client = format!("10.3.{}.{}:{port}", port % 7, port % 251);
        Builder::tcp_v4(&client, "198.18.0.10:91", flags).build()
    };
    let mut servers = std::collections::BTreeSet::new();
    for port in 40000..40040 {
        // One director saw the SYN, the other gets the connection later.
        let began = run(&mut first, &c(port, SYN), 0, 1).0;
        let taken_up = run(&mut second, &c(port, ACK), 0, 1).0;
        assert_eq!(taken_up, began, "the same real server for port {port}");
        servers.insert(format!("{began:?}"));
        assert_eq!(
            run(&mut second, &c(port, ACK), 0, 2).0,
            began,
            "then its session"
        );
    }
    assert!(servers.len() > 1, "mh spreads the clients: {servers:?}");
    assert_eq!(second.counters().get(Counter::SessionsPickedUp), 40);
    assert_eq!(first.counters().get(Counter::SessionsPickedUp), 0);
    let id = second.sessions.lookup_in(&FlowKey {
        src: a(&format!("10.3.{}.{}", 40000 % 7, 40000 % 251)),
        dst: a("198.18.0.10"),
        sport: 40000,
        dport: 91,
        proto: crate::wire::ip_proto::TCP,
    });
    assert_eq!(
        second.sessions.get(id.unwrap()).state,
        State::Established,
        "a connection taken up is established"
    );
    assert_eq!(
        run(&mut second, &c(41000, Flags::RST), 0, 3).0,
        Action::Drop(Counter::DropTcpNotSyn),
        "a RST opens nothing"
    );
    let mut strict = Worker::new(
        WorkerConfig {
            capacity: 64,
            ..WorkerConfig::default()
        },
        snapshot(with_mh),
    );
    assert_eq!(
        run(&mut strict, &c(40000, ACK), 0, 1).0,
        Action::Drop(Counter::DropTcpNotSyn),
        "without sloppy_tcp, only a SYN opens a session"
    );
}

#[test]
fn allow_and_deny_lists_screen_new_connections_only() {
    let screened = |allow: &[&str], deny: &[&str]| {
        let mut s = specs();
        s[0].allow = allow
            .iter()
            .map(|p| crate::filter::parse_prefix(p).unwrap())
            .collect();
        s[0].deny = deny
            .iter()
            .map(|p| crate::filter::parse_prefix(p).unwrap())
            .collect();
        snapshot(s)
    };
    let mut w = Worker::new(
        WorkerConfig {
            capacity: 64,
            ..WorkerConfig::default()
        },
        screened(&["10.0.0.0/24"], &["10.0.0.66"]),
    );
    let c = |client: &str, flags: u8| {
        Builder::tcp_v4(&format!("{client}:40000"), "198.18.0.10:80", flags).build()
    };
    assert_eq!(run(&mut w, &c("10.0.0.2", SYN), 0, 1).0, tx(1, "10.1.0.5"));
    assert_eq!(
        run(&mut w, &c("10.0.0.66", SYN), 0, 1).0,
        Action::Drop(Counter::DropDenied)
    );
    assert_eq!(
        run(&mut w, &c("10.0.1.2", SYN), 0, 1).0,
        Action::Drop(Counter::DropNotAllowed)
    );
    assert_eq!(
        w.counters().get(Counter::SessionsCreated),
        1,
        "nothing held for them"
    );
    // A list that changes leaves established connections alone.
    w.adopt(screened(&[], &["10.0.0.0/24"]));
    assert_eq!(run(&mut w, &c("10.0.0.2", ACK), 0, 2).0, tx(1, "10.1.0.5"));
    assert_eq!(
        run(&mut w, &c("10.0.0.3", SYN), 0, 2).0,
        Action::Drop(Counter::DropDenied)
    );
    assert_eq!(w.counters().get(Counter::DropDenied), 2);
    assert_eq!(w.counters().get(Counter::DropNotAllowed), 1);
}

/// A director's worker with connection sync, following `specs`.
fn syncing(specs: Vec<ServiceSpec>) -> Worker {
    Worker::new(
        WorkerConfig {
            capacity: 64,
            sync: true,
            ..WorkerConfig::default()
        },
        snapshot(specs),
    )
}

/// A busy connection's deadline moves with each packet on its director,
/// not on a peer, which sees none: each time the director's sweep re-arms
/// it (about once per timeout), the peers hear of it again, so that their
/// copy is there when the connection moves to them however long it ran.
#[test]
fn a_busy_connection_is_synced_again_each_time_it_outlives_its_timeout() {
    let director = || syncing(specs());
    let (mut master, mut backup) = (director(), director());
    let c = |flags: u8| Builder::tcp_v4("10.0.0.2:5000", "198.18.0.10:80", flags).build();
    run(&mut master, &c(SYN), 0, 0);
    run(&mut master, &c(ACK), 0, 0);
    let mut told = Vec::new();
    // A segment every 100 s for 2000 s (the established timeout is 900),
    // both directors sweeping as the dataplane makes them.
    for t in (0..=2000).step_by(100) {
        run(&mut master, &c(ACK), 0, t);
        master.expire(t);
        let records: Vec<_> = master.take_sync().collect();
        if t > 0 {
            told.extend(records.iter().map(|_| t));
        }
        for r in &records {
            backup.install(r, t).unwrap();
        }
        backup.expire(t);
    }
    // First at the handshake's deadline (60 s, the slot the session was
    // armed in), then once per timeout: never longer apart than the
    // peer's copy lives.
    assert_eq!(told, [100, 1000, 1900], "at each re-arm");
    assert_eq!(backup.sessions.len(), 1, "the backup's copy is alive");
    let on_backup = run(&mut backup, &c(ACK), 0, 2000);
    assert_eq!(on_backup, run(&mut master, &c(ACK), 0, 2000));
    // Without sync, nothing is kept for anyone.
    let mut alone = Worker::new(
        WorkerConfig {
            capacity: 64,
            ..WorkerConfig::default()
        },
        snapshot(specs()),
    );
    run(&mut alone, &c(SYN), 0, 0);
    run(&mut alone, &c(ACK), 0, 0);
    run(&mut alone, &c(ACK), 0, 500);
    alone.expire(900);
    assert_eq!(alone.take_sync().count(), 0);
}

/// Persistence survives a failover: the master's template reaches the
/// peer with its connection, and the client network's next connection,
/// opened on the peer, goes to the master's server, not to the one the
/// peer's scheduler would pick.
#[test]
fn a_peer_sends_a_client_network_where_the_master_sent_it() {
    let director = || syncing(specs());
    let (mut master, mut backup, mut unaware) = (director(), director(), director());
    let syn = |client: &str| Builder::tcp_v4(client, "198.18.0.10:84", SYN).build();
    let (on_master, _) = run(&mut master, &syn("10.0.0.2:40000"), 0, 1);
    // The peers' schedulers have moved on (another network came first).
    for peer in [&mut backup, &mut unaware] {
        run(peer, &syn("10.0.9.2:40000"), 0, 1);
        peer.take_sync().count();
    }
    let records: Vec<_> = master.take_sync().collect();
    assert_eq!(
        records.len(),
        2,
        "the template and the connection: {records:?}"
    );
    for r in &records {
        backup.install(r, 2).unwrap();
        if r.state != State::Template as u8 {
            unaware.install(r, 2).unwrap();
        }
    }
    let next = syn("10.0.0.77:40001");
    assert_eq!(run(&mut backup, &next, 0, 3).0, on_master);
    assert_eq!(
        backup.counters().get(Counter::TemplatesCreated),
        1,
        "its own network's only"
    );
    assert_ne!(
        run(&mut unaware, &next, 0, 3).0,
        on_master,
        "without the template, the scheduler picks"
    );
    // A record renews the template; it lasts the persistence timeout
    // (300 s) from the last one, with no connection of its own.
    backup.install(&records[0], 200).unwrap();
    backup.expire(200 + 299);
    let has_template = |w: &Worker| {
        w.sessions
            .iter()
            .any(|(_, s)| s.is_template() && crate::session::ip(&s.client) == ip("10.0.0.0"))
    };
    assert!(has_template(&backup));
    backup.expire(200 + 301);
    assert!(!has_template(&backup));
    // A service without persistence on the peer refuses templates.
    let mut plain = specs();
    plain[5].persistence = None;
    let mut other = syncing(plain);
    assert_eq!(other.install(&records[0], 2), Err(Counter::SyncUnknown));
}

/// A tuple reused for a new connection (a SYN after RST) goes to another
/// server from another local port: the peer hears that the old session
/// went before it hears of the new one, so its copy is the new one. A
/// flushed server's sessions go from the peer too.
#[test]
fn a_peer_forgets_what_the_director_closed_before_its_time() {
    let (mut master, mut backup) = (syncing(specs()), syncing(specs()));
    let c = |flags: u8| Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", flags).build();
    run(&mut master, &c(SYN), 0, 0);
    run(&mut master, &c(ACK), 0, 0);
    run(&mut master, &c(Flags::RST | ACK), 0, 0);
    let (again, _) = run(&mut master, &c(SYN), 0, 1);
    assert_eq!(again, tx(1, "10.1.0.6"), "the reused tuple's new server");
    let records: Vec<_> = master.take_sync().collect();
    let removals = records
        .iter()
        .filter(|r| r.state == State::None as u8)
        .count();
    assert_eq!(removals, 1, "{records:?}");
    for r in &records {
        backup.install(r, 1).unwrap();
    }
    assert_eq!(backup.counters().get(Counter::SyncRemoved), 1);
    assert_eq!(backup.sessions.len(), 1);
    let on_master = run(&mut master, &c(ACK), 0, 2);
    assert_eq!(run(&mut backup, &c(ACK), 0, 2), on_master);
    // The operator flushes the new connection's server.
    let dest = master.sessions.iter().next().unwrap().1.dest;
    assert_eq!(master.flush_dest(dest), 1);
    for r in master.take_sync().collect::<Vec<_>>() {
        backup.install(&r, 3).unwrap();
    }
    assert!(backup.sessions.is_empty());
    // A removal of what the peer does not have is nothing.
    let mut unknown = records[0];
    unknown.state = State::None as u8;
    unknown.client.1 = 9;
    assert_eq!(backup.install(&unknown, 4), Ok(()));
    assert_eq!(backup.counters().get(Counter::SyncRemoved), 2);
}

#[test]
fn a_peer_carries_on_the_connections_it_was_synced() {
    let director = || syncing(specs());
    let (mut master, mut backup) = (director(), director());
    let c = |port: u16, flags: u8| {
        Builder::tcp_v4(
            &format!("10.0.0.2:{port}"),
            &format!("198.18.0.10:{port}"),
            flags,
        )
    };
    // Full-NAT (80), NAT (81) and DR (82) connections, established on the
    // master: a record when each opened and one when it was established.
    for port in [80, 81, 82] {
        run(&mut master, &c(port, SYN).build(), 0, 1);
        run(&mut master, &c(port, ACK).build(), 0, 1);
    }
    let records: Vec<_> = master.take_sync().collect();
    assert_eq!(records.len(), 6, "{records:?}");
    assert_eq!(master.take_sync().count(), 0, "taken once");
    for r in &records {
        backup.install(r, 5).unwrap();
    }
    assert_eq!(backup.counters().get(Counter::SyncInstalled), 3);
    assert_eq!(backup.counters().get(Counter::SyncUpdated), 3);
    // The client's next segment, on the backup: rewritten exactly as the
    // master does it (the same real server, local address and port).
    for port in [80, 81, 82] {
        let on_master = run(&mut master, &c(port, ACK).build(), 0, 2);
        let on_backup = run(&mut backup, &c(port, ACK).build(), 0, 6);
        assert_eq!(on_backup, on_master, "port {port}");
    }
    // The Full-NAT server's answer to the local address finds the session.
    let (_, to_rs) = run(&mut backup, &c(80, ACK).build(), 0, 6);
    let to_rs = parse(&to_rs).unwrap();
    let reply = from_rs(Builder::tcp_v4(
        &format!(
            "10.1.0.{}:8080",
            if to_rs.dst == a("10.1.0.5") { 5 } else { 6 }
        ),
        &format!("10.2.0.1:{}", to_rs.sport),
        ACK,
    ));
    assert_eq!(run(&mut backup, &reply, 1, 6).0, tx(0, "10.0.0.2"));
    // Its local port is taken on the backup, as on the master.
    let h = backup.dests.svc_index[&ServiceKey::new(Protocol::Tcp, ip("198.18.0.10"), 80)];
    assert_eq!(
        backup.dests.svcs[h as usize]
            .pool
            .as_ref()
            .unwrap()
            .in_use()[0],
        1
    );
    // A director that starts knows nothing: a resync tells it everything.
    let mut fresh = director();
    master.resync();
    let mut told = Vec::new();
    for _ in 0..3 {
        master.resync_step();
        told.extend(master.take_sync());
    }
    assert_eq!(told.len(), 3, "one record per connection: {told:?}");
    for r in &told {
        fresh.install(r, 7).unwrap();
    }
    assert_eq!(fresh.counters().get(Counter::SyncInstalled), 3);
    let on_fresh = run(&mut fresh, &c(81, ACK).build(), 0, 7);
    assert_eq!(on_fresh, run(&mut master, &c(81, ACK).build(), 0, 7));
    // A record of a service or server the backup does not have.
    let mut unknown = records[0];
    unknown.service_port = 99;
    unknown.client.1 = 2;
    assert_eq!(backup.install(&unknown, 6), Err(Counter::SyncUnknown));
    let mut other_rs = records[0];
    other_rs.client.1 = 1;
    other_rs.rs.0 = a("10.1.0.99");
    assert_eq!(backup.install(&other_rs, 6), Err(Counter::SyncUnknown));
}

#[test]
fn under_ecmp_a_peer_takes_over_the_connections_of_a_local_address_not_its_own() {
    // Each director its own local address, the other's as a peer's.
    let director = |own: &str, peer: &str| {
        let mut s = specs();
        for spec in s.iter_mut().filter(|s| !s.laddrs.is_empty()) {
            spec.laddrs = vec![ip(own)];
            spec.peer_laddrs = vec![ip(peer)];
        }
        syncing(s)
    };
    let (mut first, mut second) = (
        director("10.2.0.1", "10.2.0.9"),
        director("10.2.0.9", "10.2.0.1"),
    );
    let c = |flags: u8| Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", flags).build();
    let (_, to_rs) = run(&mut first, &c(SYN), 0, 1);
    run(&mut first, &c(ACK), 0, 1);
    let to_rs = parse(&to_rs).unwrap();
    assert_eq!(to_rs.src, a("10.2.0.1"));
    for r in first.take_sync().collect::<Vec<_>>() {
        second.install(&r, 2).unwrap();
    }
    // The flow moves to the second director: the same translation.
    assert_eq!(
        run(&mut second, &c(ACK), 0, 3),
        run(&mut first, &c(ACK), 0, 3)
    );
    // The server's answer to the first's address, routed to the second.
    let rs = if to_rs.dst == a("10.1.0.5") { 5 } else { 6 };
    let reply = from_rs(Builder::tcp_v4(
        &format!("10.1.0.{rs}:8080"),
        &format!("10.2.0.1:{}", to_rs.sport),
        ACK,
    ));
    assert_eq!(run(&mut second, &reply, 1, 3).0, tx(0, "10.0.0.2"));
    let h = second.dests.svc_index[&ServiceKey::new(Protocol::Tcp, ip("198.18.0.10"), 80)];
    let pool = second.dests.svcs[h as usize].pool.as_ref().unwrap();
    assert_eq!(pool.in_use(), [0, 1], "the peer's port is held");
    // The second's own connections leave from its own address only, and
    // it does not answer ARP for the first's.
    for port in 40001..40009 {
        let syn = Builder::tcp_v4(&format!("10.0.0.3:{port}"), "198.18.0.10:80", SYN).build();
        let (_, out) = run(&mut second, &syn, 0, 4);
        assert_eq!(parse(&out).unwrap().src, a("10.2.0.9"));
    }
    assert!(!matches!(
        run(&mut second, &arp_request("10.2.0.1"), 0, 4).0,
        Action::Neighbor { reply: true, .. }
    ));
    assert!(matches!(
        run(&mut second, &arp_request("10.2.0.9"), 0, 4).0,
        Action::Neighbor { reply: true, .. }
    ));
    // A packet to the peer's address that no session has is a drop.
    let stray = from_rs(Builder::tcp_v4("10.1.0.5:8080", "10.2.0.1:1111", ACK));
    assert_eq!(
        run(&mut second, &stray, 1, 4).0,
        Action::Drop(Counter::DropNoSession)
    );
}

#[test]
fn icmp_errors_are_translated_to_the_other_side() {
    let mut w = worker();
    let syn = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", SYN).build();
    let (_, sent) = run(&mut w, &syn, 0, 1);
    // A router on the RS side says "fragmentation needed" about what we sent.
    let quoted = &sent[14..14 + 28];
    let mut body = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
    body.extend_from_slice(quoted);
    let mut err = frame(
        RS_MAC,
        RS_SIDE_MAC,
        None,
        ethertype::IPV4,
        &ip_packet(ip("10.1.0.254"), ip("10.2.0.1"), 1, 64, 9, false, &body),
    );
    crate::wire::icmp::Packet::new_unchecked(&mut err[34..]).fill_checksum(0);
    let (act, out) = run(&mut w, &err, 1, 1);
    assert_eq!(act, tx(0, "10.0.0.2"));
    // What the client sees: from the VIP, quoting its own SYN to the VIP
    // (addresses and ports translated; the TTL is what the router saw).
    let client_view = &Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", SYN)
        .ttl(63)
        .build()[14..14 + 28];
    let mut want_body = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
    want_body.extend_from_slice(client_view);
    let mut want = frame(
        RS_MAC,
        RS_SIDE_MAC,
        None,
        ethertype::IPV4,
        &ip_packet(
            ip("198.18.0.10"),
            ip("10.0.0.2"),
            1,
            63,
            9,
            false,
            &want_body,
        ),
    );
    crate::wire::icmp::Packet::new_unchecked(&mut want[34..]).fill_checksum(0);
    assert_eq!(out, want);
    assert_eq!(w.counters.get(Counter::IcmpTranslated), 1);
}

#[test]
fn tunnel_too_big_tells_the_client() {
    let mut w = worker();
    let big = Builder::udp_v4("10.0.0.2:40000", "198.18.0.10:83", &[7u8; 1400]);
    let mut spec = specs();
    spec.push(svc(
        Protocol::Udp,
        83,
        SchedKind::Rr,
        vec![rs("10.1.0.5", 0, ForwardMode::Tun)],
    ));
    w.adopt(snapshot(spec));
    let input = big.clone().payload(&[7u8; 1472]).build();
    let (act, out) = run(&mut w, &input, 0, 1);
    assert_eq!(act, tx(0, "10.0.0.2"));
    let p = parse(&out).unwrap();
    assert_eq!(
        (p.proto, session::ip(&p.src), session::ip(&p.dst)),
        (1, ip("10.0.0.1"), ip("10.0.0.2"))
    );
    let icmp = crate::wire::icmp::Packet::new_checked(&out[p.l4_offset..p.l3_end]).unwrap();
    assert_eq!((icmp.msg_type(), icmp.code(), icmp.mtu()), (3, 4, 1480));
    assert!(icmp.verify_checksum(0));
    assert_eq!(
        icmp.data(),
        &input[14..14 + 28],
        "quotes the header and 8 bytes"
    );
    assert_eq!(w.counters.get(Counter::DropTooBig), 1);
}

/// A worker on two IPv6 ports (fd00::1/64 towards the clients, fd01::1/64
/// towards the real servers) serving `spec`.
fn v6_worker(spec: ServiceSpec) -> Worker {
    let net = Network::new(
        vec![
            Interface {
                port: 0,
                mac: LB_MAC,
                addrs: vec![(ip("fd00::1"), 64)],
                mtu: 1500,
                rx_checksum: Default::default(),
            },
            Interface {
                port: 1,
                mac: RS_SIDE_MAC,
                addrs: vec![(ip("fd01::1"), 64)],
                mtu: 1500,
                rx_checksum: Default::default(),
            },
        ],
        &[],
    )
    .unwrap();
    let snap = Snapshot::build(1, vec![spec], Timeouts::default())
        .unwrap()
        .with_network(net);
    Worker::new(
        WorkerConfig {
            capacity: 8,
            ..WorkerConfig::default()
        },
        Arc::new(snap),
    )
}

#[test]
fn ipv6_nat() {
    let mut spec = ServiceSpec::new(ServiceKey {
        proto: Protocol::Tcp,
        vip: ip("fd00::10"),
        port: 80,
        mark: 0,
    });
    spec.reals = vec![rs("fd01::5", 8080, ForwardMode::Nat)];
    let mut w = v6_worker(spec);
    let syn = Builder::tcp_v6("[fd00::2]:40000", "[fd00::10]:80", SYN).build();
    let (act, out) = run(&mut w, &syn, 0, 1);
    assert_eq!(act, tx(1, "fd01::5"));
    assert_eq!(
        out,
        Builder::tcp_v6("[fd00::2]:40000", "[fd01::5]:8080", SYN)
            .ttl(63)
            .build()
    );
}

#[test]
fn reports_count_connections_packets_and_bytes() {
    let mut w = worker();
    let syn = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:81", SYN).build();
    let reply = from_rs(Builder::tcp_v4(
        "10.1.0.5:8081",
        "10.0.0.2:40000",
        SYN | ACK,
    ));
    run(&mut w, &syn, 0, 1);
    run(&mut w, &reply, 1, 1);
    let r = w.report();
    let nat = r.iter().find(|s| s.key.port == 81).unwrap();
    assert_eq!(
        (nat.stats.conns, nat.stats.in_pkts, nat.stats.out_pkts),
        (1, 1, 1)
    );
    assert_eq!(nat.stats.in_bytes, 40);
    assert_eq!((nat.reals[0].inactive, nat.reals[0].stats.conns), (1, 1));
    w.zero_stats();
    let r = w.report();
    let nat = r.iter().find(|s| s.key.port == 81).unwrap();
    assert_eq!(nat.stats, Stats::default());
    assert_eq!(
        nat.reals[0].inactive, 1,
        "connection counts are not statistics"
    );
    let mut total = Counters::default();
    total.merge(&w.counters);
    total.merge(&w.counters);
    assert_eq!(total.get(Counter::Forwarded), 4);
}

#[test]
fn bursts_match_frame_by_frame_processing() {
    // A conversation whose later frames depend on sessions made by earlier
    // frames of the same burst, plus strays and malformed frames.
    let mut frames = Vec::new();
    for i in 0..20u16 {
        let c = format!("10.0.0.2:{}", 30000 + i);
        let vip = format!("198.18.0.10:{}", [80, 81, 82, 83][usize::from(i % 4)]);
        frames.push((0, Builder::tcp_v4(&c, &vip, SYN).build()));
        frames.push((0, Builder::tcp_v4(&c, &vip, ACK).payload(b"data").build()));
    }
    frames.push((
        1,
        from_rs(Builder::tcp_v4(
            "10.1.0.5:8081",
            "10.0.0.2:30001",
            SYN | ACK,
        )),
    ));
    frames.push((0, vec![0u8; 10]));
    frames.push((
        0,
        Builder::udp_v4("10.0.0.9:1", "198.18.0.10:53", b"q").build(),
    ));
    let mut one = worker();
    let want: Vec<(u16, Action, Vec<u8>)> = frames
        .iter()
        .map(|(port, f)| {
            let (a, out) = run(&mut one, f, *port, 5);
            (*port, a, out)
        })
        .collect();
    // Same-port frames in bursts of up to 7 and of up to 64 (longer than
    // the prefetch distance), in order, with loads or prefetches ahead.
    let prefetches = Counting::default();
    for (max, prefetching) in [(7, false), (64, false), (7, true), (64, true)] {
        let mut burst = Worker::new(
            WorkerConfig {
                capacity: 64,
                prefetch_from: 0,
                ..WorkerConfig::default()
            },
            snapshot(specs()),
        );
        let mut got = Vec::new();
        let mut i = 0;
        while i < frames.len() {
            let port = frames[i].0;
            let mut j = i;
            while j < frames.len() && frames[j].0 == port && j - i < max {
                j += 1;
            }
            let mut bufs: Vec<VecBuf> = frames[i..j]
                .iter()
                .map(|(_, f)| VecBuf::new(f, 64))
                .collect();
            let mut actions = vec![Action::Exception; bufs.len()];
            if prefetching {
                burst.process_burst_with(&mut bufs, port, 5, &mut actions, &prefetches);
            } else {
                burst.process_burst(&mut bufs, port, 5, &mut actions);
            }
            got.extend(
                bufs.iter()
                    .zip(actions)
                    .map(|(b, a)| (port, without_dest(a), b.data().to_vec())),
            );
            i = j;
        }
        assert_eq!(got, want, "bursts of {max}, prefetching: {prefetching}");
        assert_eq!(
            burst.counters.iter().collect::<Vec<_>>(),
            one.counters.iter().collect::<Vec<_>>()
        );
    }
    // Every frame's bucket, and the sessions of the frames that had one.
    let counted = prefetches.0.get();
    assert!(counted > 2 * frames.len(), "{counted}");
    // A table below `prefetch_from` sessions is read ahead with loads.
    let mut small = Worker::new(
        WorkerConfig {
            capacity: 64,
            prefetch_from: 64,
            ..WorkerConfig::default()
        },
        snapshot(specs()),
    );
    let mut bufs: Vec<VecBuf> = frames[..10]
        .iter()
        .map(|(_, f)| VecBuf::new(f, 64))
        .collect();
    let mut actions = vec![Action::Exception; bufs.len()];
    small.process_burst_with(&mut bufs, 0, 5, &mut actions, &prefetches);
    assert_eq!(prefetches.0.get(), counted);
}

/// A prefetch that only counts.
#[derive(Default)]
struct Counting(std::cell::Cell<usize>);

impl crate::types::Prefetch for Counting {
    fn prefetch<T>(&self, _: &T) {
        self.0.set(self.0.get() + 1);
    }
}

/// The worker of [`worker`], whose client-side port 0 is kernel-backed:
/// it finishes partial checksums.
fn kernel_worker() -> Worker {
    let mut net = network();
    net.interfaces[0].rx_checksum = RxChecksum::Finish;
    let snap = Snapshot::build(1, specs(), Timeouts::default())
        .unwrap()
        .with_network(Network::new(net.interfaces, &net.statics).unwrap());
    Worker::new(
        WorkerConfig {
            capacity: 64,
            ..WorkerConfig::default()
        },
        Arc::new(snap),
    )
}

/// `f` as a kernel sender hands it over veth: the transport checksum
/// field holds only the folded pseudo-header sum.
fn partial(mut f: Vec<u8>) -> Vec<u8> {
    let p = parse(&f).unwrap();
    let at = p.l4_offset + if p.proto == ip_proto::TCP { 16 } else { 6 };
    let len = u16::try_from(p.l3_end - p.l4_offset).unwrap();
    let v4 = |a: &Addr| [a[12], a[13], a[14], a[15]];
    let pseudo = crate::wire::checksum::pseudo_v4(v4(&p.src), v4(&p.dst), p.proto, len);
    f[at..at + 2].copy_from_slice(&crate::wire::checksum::fold(pseudo).to_be_bytes());
    f
}

fn checksum_ok(f: &[u8]) -> bool {
    offload::l4_checksum_ok(f, &parse(f).unwrap(), Default::default())
}

#[test]
fn partial_checksums_from_a_kernel_port_leave_finished_in_every_mode() {
    let mut w = kernel_worker();
    for (k, port) in [80u16, 81, 82, 83, 84].into_iter().enumerate() {
        let client = format!("10.0.0.2:{}", 42000 + k);
        let vip = format!("198.18.0.10:{port}");
        for (flags, payload) in [(SYN, &b""[..]), (ACK, &[0x61; 1200][..])] {
            let f = partial(
                Builder::tcp_v4(&client, &vip, flags)
                    .payload(payload)
                    .build(),
            );
            assert!(!checksum_ok(&f));
            let (act, out) = run(&mut w, &f, 0, 1);
            assert!(matches!(act, Action::Transmit { .. }), "{port}: {act:?}");
            // TUN's segment is inside the IPIP packet: the Ethernet header
            // and the inner packet, without the outer IPv4 header.
            let inner = match port {
                83 => [&out[..14], &out[34..]].concat(),
                _ => out,
            };
            assert!(
                checksum_ok(&inner),
                "{port} {flags:#x}: checksum left unfinished"
            );
        }
    }
    let udp = partial(Builder::udp_v4("10.0.0.2:5000", "198.18.0.10:53", b"query").build());
    let (act, out) = run(&mut w, &udp, 0, 1);
    assert_eq!(act, tx(1, "10.1.0.5"));
    assert!(checksum_ok(&out));
    assert_eq!(w.counters.get(Counter::RxChecksumFinished), 11);
    assert_eq!(w.counters.get(Counter::DropBadChecksum), 0);
}

#[test]
fn a_port_that_trusts_its_checksums_sees_a_partial_one_as_wrong() {
    let mut w = worker();
    let f = partial(Builder::tcp_v4("10.0.0.2:42000", "198.18.0.10:80", SYN).build());
    assert_eq!(
        run(&mut w, &f, 0, 1).0,
        Action::Drop(Counter::DropBadChecksum)
    );
    assert_eq!(w.counters.get(Counter::RxChecksumFinished), 0);
    assert_eq!(w.sessions.len(), 0);
}

#[test]
fn a_first_packet_with_a_wrong_checksum_opens_no_session() {
    for mut w in [worker(), kernel_worker()] {
        let mut syn = Builder::tcp_v4("10.0.0.2:42000", "198.18.0.10:80", SYN).build();
        syn[14 + 20 + 16] ^= 0x01;
        let mut udp = Builder::udp_v4("10.0.0.2:5000", "198.18.0.10:53", b"query").build();
        udp[14 + 20 + 6] ^= 0x01;
        for f in [&syn, &udp] {
            assert_eq!(
                run(&mut w, f, 0, 1).0,
                Action::Drop(Counter::DropBadChecksum)
            );
        }
        assert_eq!(w.sessions.len(), 0);
        assert_eq!(w.counters.get(Counter::SessionsCreated), 0);
        // Once the session exists, segments are not summed again.
        let good = Builder::tcp_v4("10.0.0.2:42000", "198.18.0.10:80", SYN).build();
        assert!(matches!(
            run(&mut w, &good, 0, 1).0,
            Action::Transmit { .. }
        ));
        let mut data = Builder::tcp_v4("10.0.0.2:42000", "198.18.0.10:80", ACK)
            .payload(b"hello")
            .build();
        data[14 + 20 + 16] ^= 0x01;
        assert!(matches!(
            run(&mut w, &data, 0, 1).0,
            Action::Transmit { .. }
        ));
        assert_eq!(w.counters.get(Counter::DropBadChecksum), 2);
    }
}

#[test]
fn syn_with_rst_or_fin_neither_opens_nor_passes() {
    let mut w = worker();
    let rst = tcp::Flags::RST;
    for flags in [SYN | rst, SYN | FIN, SYN | ACK | rst, SYN | FIN | rst] {
        let f = Builder::tcp_v4("10.0.0.2:42000", "198.18.0.10:80", flags).build();
        assert_eq!(
            run(&mut w, &f, 0, 1).0,
            Action::Drop(Counter::DropTcpBadFlags)
        );
    }
    assert_eq!(w.sessions.len(), 0);
    // Nor on a connection that exists, in either direction.
    let syn = Builder::tcp_v4("10.0.0.2:42000", "198.18.0.10:81", SYN).build();
    assert!(matches!(run(&mut w, &syn, 0, 1).0, Action::Transmit { .. }));
    let f = Builder::tcp_v4("10.0.0.2:42000", "198.18.0.10:81", SYN | FIN).build();
    assert_eq!(
        run(&mut w, &f, 0, 1).0,
        Action::Drop(Counter::DropTcpBadFlags)
    );
    let back = from_rs(Builder::tcp_v4(
        "10.1.0.5:8081",
        "10.0.0.2:42000",
        SYN | rst | ACK,
    ));
    assert_eq!(
        run(&mut w, &back, 1, 1).0,
        Action::Drop(Counter::DropTcpBadFlags)
    );
    assert_eq!(w.counters.get(Counter::DropTcpBadFlags), 6);
}

#[test]
fn tagged_frames_are_never_balanced_as_if_untagged() {
    let mut w = worker();
    let syn = || Builder::tcp_v4("10.0.0.2:42000", "198.18.0.10:80", SYN);
    assert_eq!(
        run(&mut w, &syn().vlan(100).build(), 0, 1).0,
        Action::Drop(Counter::DropVlanUnknown)
    );
    // Two 802.1Q tags, and an 802.1ad outer tag.
    let mut double = syn().vlan(100).build();
    double.splice(16..16, [0x81, 0x00, 0x00, 0x07]);
    assert_eq!(
        run(&mut w, &double, 0, 1).0,
        Action::Drop(Counter::DropQinq)
    );
    let mut ad = syn().vlan(100).build();
    ad[12..14].copy_from_slice(&ethertype::QINQ.to_be_bytes());
    assert_eq!(run(&mut w, &ad, 0, 1).0, Action::Drop(Counter::DropQinq));
    // Nor ARP on a VLAN nobody has.
    let arp = frame(
        PEER_MAC,
        MacAddr::BROADCAST,
        Some(100),
        ethertype::ARP,
        &[0; 28],
    );
    assert_eq!(
        run(&mut w, &arp, 0, 1).0,
        Action::Drop(Counter::DropVlanUnknown)
    );
    assert_eq!(w.sessions.len(), 0);
}

/// A firewall-mark service over ports 80 and 443 of two VIPs, NAT to three
/// servers without ports, persistent per client.
fn fwmark_worker() -> Worker {
    let mut s = ServiceSpec::new(ServiceKey::fwmark(7, false));
    s.sched = SchedKind::Rr;
    s.matches = vec![
        "tcp:198.18.0.20/31:80,443".parse().unwrap(),
        "udp:198.18.0.20/32:*".parse().unwrap(),
    ];
    s.reals = ["10.1.0.5", "10.1.0.6", "10.1.0.7"]
        .iter()
        .map(|a| rs(a, 0, ForwardMode::Nat))
        .collect();
    s.persistence = Some(Persistence {
        timeout: 300,
        prefix_len: 32,
    });
    Worker::new(
        WorkerConfig {
            capacity: 64,
            ..WorkerConfig::default()
        },
        snapshot(vec![s]),
    )
}

#[test]
fn a_fwmark_service_keeps_a_client_on_one_server_across_its_ports() {
    let mut w = fwmark_worker();
    let mut servers = std::collections::HashSet::new();
    for (i, dport) in [80u16, 443, 80, 443].into_iter().enumerate() {
        let syn = Builder::tcp_v4(
            &format!("10.0.0.2:{}", 40000 + i),
            &format!("198.18.0.20:{dport}"),
            SYN,
        )
        .build();
        let (act, out) = run(&mut w, &syn, 0, 1);
        assert!(matches!(act, Action::Transmit { .. }), "{act:?}");
        let d = crate::packet::parse(&out).unwrap();
        servers.insert(d.dst);
        assert_eq!(d.dport, dport, "a server without a port keeps the packet's");
    }
    assert_eq!(servers.len(), 1, "one template for both ports");
    assert_eq!(w.counters.get(Counter::TemplatesCreated), 1);
    // Another client is scheduled afresh (rr's next server).
    let syn = Builder::tcp_v4("10.0.0.3:40000", "198.18.0.20:443", SYN).build();
    let (_, out) = run(&mut w, &syn, 0, 1);
    assert!(!servers.contains(&crate::packet::parse(&out).unwrap().dst));
    // The second address of the /31 and UDP to every port match too;
    // another port or address does not.
    let syn = Builder::tcp_v4("10.0.0.4:40000", "198.18.0.21:80", SYN).build();
    assert!(matches!(run(&mut w, &syn, 0, 1).0, Action::Transmit { .. }));
    let udp = Builder::udp_v4("10.0.0.4:5000", "198.18.0.20:5353", b"q").build();
    assert!(matches!(run(&mut w, &udp, 0, 1).0, Action::Transmit { .. }));
    let other = Builder::tcp_v4("10.0.0.4:40001", "198.18.0.20:8080", SYN).build();
    assert!(!matches!(
        run(&mut w, &other, 0, 1).0,
        Action::Transmit { .. }
    ));
}

/// A worker whose port 0 also has fd00::1/64.
fn worker_v6() -> Worker {
    let mut net = network();
    net.interfaces[0].addrs.push((ip("fd00::1"), 64));
    let net = Network::new(net.interfaces, &[]).unwrap();
    let snap = Snapshot::build(1, specs(), Timeouts::default())
        .unwrap()
        .with_network(net);
    Worker::new(
        WorkerConfig {
            capacity: 64,
            ..WorkerConfig::default()
        },
        Arc::new(snap),
    )
}

/// The ICMPv6 message of an IPv6 frame, and the frame's addresses and hop
/// limit, to read with `ndisc::parse`.
fn icmp6_of(f: &[u8]) -> (&[u8], std::net::Ipv6Addr, std::net::Ipv6Addr, u8) {
    let ip = crate::wire::ipv6::Packet::new_unchecked(&f[14..]);
    (&f[54..], ip.src_addr(), ip.dst_addr(), ip.hop_limit())
}

#[test]
fn neighbor_solicitations_for_owned_addresses_are_answered_and_senders_learned() {
    use crate::wire::ndisc;
    let mut w = worker_v6();
    let peer: std::net::Ipv6Addr = "fd00::2".parse().unwrap();
    let me: std::net::Ipv6Addr = "fd00::1".parse().unwrap();
    let v6 = |a: std::net::Ipv6Addr| crate::session::addr(IpAddr::V6(a));
    let mut ns = [0u8; ndisc::FRAME_LEN];
    ndisc::write_solicit(&mut ns, PEER_MAC, peer, me).unwrap();
    let (act, out) = run(&mut w, &ns, 0, 1);
    assert_eq!(
        act,
        Action::Neighbor {
            learn: Some((v6(peer), PEER_MAC)),
            reply: true
        }
    );
    // An advertisement from us to the asker, solicited, with our MAC.
    assert_eq!(&out[..12], &[PEER_MAC.0, LB_MAC.0].concat()[..]);
    let (icmp, src, dst, hops) = icmp6_of(&out);
    assert_eq!((src, dst, hops), (me, peer, 255));
    let m = ndisc::parse(icmp, src, dst, hops).unwrap();
    assert_eq!(m.kind, crate::wire::icmp::v6::NEIGHBOR_ADVERT);
    assert_eq!(m.target, me);
    assert_eq!(m.lladdr, Some(LB_MAC));
    assert_eq!(
        m.flags,
        ndisc::flags::ROUTER | ndisc::flags::SOLICITED | ndisc::flags::OVERRIDE
    );
    assert_eq!(w.counters.get(Counter::Answered), 1);

    // For another host's address: the sender is learned, nothing answered.
    ndisc::write_solicit(&mut ns, PEER_MAC, peer, "fd00::9".parse().unwrap()).unwrap();
    assert_eq!(
        run(&mut w, &ns, 0, 1).0,
        Action::Neighbor {
            learn: Some((v6(peer), PEER_MAC)),
            reply: false
        }
    );
    // An advertisement teaches its target.
    let mut na = [0u8; ndisc::FRAME_LEN];
    let target: std::net::Ipv6Addr = "fd00::10".parse().unwrap();
    ndisc::write_advert(
        &mut na,
        (RS_MAC, LB_MAC),
        (target, me),
        ndisc::flags::SOLICITED,
        true,
    )
    .unwrap();
    assert_eq!(
        run(&mut w, &na, 0, 1).0,
        Action::Neighbor {
            learn: Some((v6(target), RS_MAC)),
            reply: false
        }
    );
    // One routed here (hop limit 254, checksum still right: the hop limit
    // is not in it) is refused and counted.
    ndisc::write_solicit(&mut ns, PEER_MAC, peer, me).unwrap();
    ns[14 + 7] = 254;
    assert_eq!(
        run(&mut w, &ns, 0, 1).0,
        Action::Drop(Counter::DropNdiscInvalid)
    );
    // Another node's duplicate address detection (from ::): no answer.
    let mut dad = [0u8; ndisc::FRAME_LEN];
    ndisc::write_solicit(&mut dad, PEER_MAC, std::net::Ipv6Addr::UNSPECIFIED, me).unwrap();
    let dad = &dad[..ndisc::FRAME_LEN - 8];
    let mut dad = dad.to_vec();
    // Without its option (as DAD sends it): payload 24 bytes, summed again.
    dad[18..20].copy_from_slice(&24u16.to_be_bytes());
    dad[56..58].copy_from_slice(&[0, 0]);
    let (icmp, src, dst, _) = icmp6_of(&dad);
    let sum = crate::wire::checksum::checksum(
        crate::wire::checksum::pseudo_v6(src.octets(), dst.octets(), 58, 24),
        icmp,
    );
    dad[56..58].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(
        run(&mut w, &dad, 0, 1).0,
        Action::Neighbor {
            learn: None,
            reply: false
        }
    );
}

#[test]
fn icmpv6_errors_are_translated_to_the_other_side() {
    let mut spec = ServiceSpec::new(ServiceKey {
        proto: Protocol::Tcp,
        vip: ip("fd00::10"),
        port: 80,
        mark: 0,
    });
    spec.reals = vec![rs("fd01::5", 8080, ForwardMode::Fnat)];
    spec.laddrs = vec![ip("fd01::100")];
    let mut w = v6_worker(spec);
    let syn = Builder::tcp_v6("[fd00::2]:40000", "[fd00::10]:80", SYN).build();
    let (_, sent) = run(&mut w, &syn, 0, 1);
    // A router on the real server's side: "packet too big" (MTU 1280)
    // about what we sent there, quoting its IPv6 header and 8 bytes.
    let icmp6 = |src: &str, dst: &str, hops: u8, quoted: &[u8]| {
        let mut body = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00];
        body.extend_from_slice(quoted);
        let mut f = frame(
            RS_MAC,
            RS_SIDE_MAC,
            None,
            ethertype::IPV6,
            &ip_packet(ip(src), ip(dst), 58, hops, 0, false, &body),
        );
        let len = u32::try_from(body.len()).unwrap();
        let pseudo = crate::wire::checksum::pseudo_v6(a(src), a(dst), 58, len);
        crate::wire::icmp::Packet::new_unchecked(&mut f[54..]).fill_checksum(pseudo);
        f
    };
    let err = icmp6("fd01::fe", "fd01::100", 64, &sent[14..14 + 48]);
    let (act, out) = run(&mut w, &err, 1, 1);
    assert_eq!(act, tx(0, "fd00::2"));
    // What the client sees: from the VIP, quoting its own SYN to the VIP
    // (addresses and ports translated; the hop limit is what the router
    // saw), the checksum over the new pseudo-header.
    let client_view = Builder::tcp_v6("[fd00::2]:40000", "[fd00::10]:80", SYN)
        .ttl(63)
        .build();
    let want = icmp6("fd00::10", "fd00::2", 63, &client_view[14..14 + 48]);
    assert_eq!(out, want);
    assert_eq!(w.counters.get(Counter::IcmpTranslated), 1);
    // Quoting extension headers (next header 0, hop-by-hop): not
    // translated; to the director's own (local) address, it is the
    // kernel's.
    let mut odd = sent[14..14 + 48].to_vec();
    odd[6] = 0;
    let err = icmp6("fd01::fe", "fd01::100", 64, &odd);
    assert_eq!(run(&mut w, &err, 1, 1).0, Action::Exception);
    assert_eq!(w.counters.get(Counter::IcmpTranslated), 1);
}
