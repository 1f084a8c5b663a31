//! Unit tests of the safe layer against a real EAL. EAL starts once per
//! process, so one test runs every check in order; the ports are virtual
//! (`net_ring0` created by EAL loops its TX ring back to its RX).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::*;

fn seq_of(m: &Mbuf) -> u32 {
    u32::from_be_bytes(m.data()[..4].try_into().unwrap())
}

fn packet(pool: &Mempool, seq: u32) -> Mbuf {
    let mut m = pool.alloc().expect("pool has room");
    let body = m.append(60).expect("tailroom for 60 bytes");
    body.fill(0xab);
    body[..4].copy_from_slice(&seq.to_be_bytes());
    m
}

fn mbuf_editing(pool: &Mempool) {
    let mut m = pool.alloc().unwrap();
    assert_eq!(m.data().len(), 0);
    assert_eq!(
        m.headroom(),
        u16::try_from(dpdk_sys::RTE_PKTMBUF_HEADROOM).unwrap()
    );
    m.append(10).unwrap().copy_from_slice(b"0123456789");
    assert_eq!(m.data(), b"0123456789");
    m.prepend(2).unwrap().copy_from_slice(b"ab");
    assert_eq!(m.data(), b"ab0123456789");
    assert_eq!(m.pkt_len(), 12);
    assert!(m.adj(3));
    assert!(m.trim(4));
    assert_eq!(m.data(), b"12345");
    m.data_mut()[0] = b'x';
    assert_eq!(m.data(), b"x2345");
    assert!(m.is_contiguous());
    // Failures change nothing.
    assert!(!m.adj(6));
    assert!(!m.trim(6));
    assert!(m.prepend(u16::MAX).is_none());
    assert!(m.append(u16::MAX).is_none());
    assert_eq!(m.data(), b"x2345");
}

fn burst_ownership(pool: &'static Mempool) {
    let before = pool.in_use();
    let mut b = MbufBurst::with_limit(8);
    for i in 0..u32::from(burst_len(MAX_BURST)) {
        b.push(packet(pool, i)).unwrap();
    }
    assert!(b.is_full());
    let extra = packet(pool, 999);
    let back = b.push(extra).unwrap_err();
    assert_eq!(seq_of(&back), 999);
    drop(back);
    assert_eq!(pool.in_use(), before + u32::from(burst_len(MAX_BURST)));
    let last = b.pop().unwrap();
    assert_eq!(seq_of(&last), u32::from(burst_len(MAX_BURST)) - 1);
    drop(last);
    let drained: Vec<u32> = b.drain().take(2).map(|m| seq_of(&m)).collect();
    assert_eq!(drained, [0, 1]);
    assert!(b.is_empty());
    assert_eq!(pool.in_use(), before, "drain frees what it does not yield");
    for i in 0..5 {
        b.push(packet(pool, i)).unwrap();
    }
    b.clear();
    assert_eq!(pool.in_use(), before, "clear frees in bulk");
    for i in 0..5 {
        b.push(packet(pool, i)).unwrap();
    }
    drop(b);
    assert_eq!(pool.in_use(), before, "drop frees");
}

/// Fills the looping ring until a transmit is partial: the refused mbufs
/// stay in the burst, in order, and every mbuf comes back exactly once.
fn tx_partial_and_rx(eal: &Eal, pool: &'static Mempool) {
    eal.probe("net_ring0").unwrap();
    let (port, mut rx, mut tx) =
        Port::open(eal, "net_ring0", pool, &PortConfig::default()).unwrap();
    assert_eq!(port.driver(), "net_ring");
    assert!(port.link().up);
    let before = pool.in_use();
    let mut seq = 0u32;
    let mut sent = 0usize;
    let mut burst = MbufBurst::new();
    let refused = loop {
        while !burst.is_full() {
            burst.push(packet(pool, seq)).unwrap();
            seq += 1;
        }
        let n = tx[0].tx_burst(&mut burst);
        sent += n;
        if n < MAX_BURST {
            break burst.len();
        }
        assert!(burst.is_empty());
    };
    assert_eq!(sent + refused, seq as usize);
    assert!(refused > 0);
    // The refused ones are the newest, still in order.
    let first_refused = seq_of(&burst.as_slice()[0]);
    assert_eq!(first_refused as usize, sent);
    for (i, m) in burst.as_slice().iter().enumerate() {
        assert_eq!(seq_of(m) as usize, sent + i);
    }
    assert_eq!(pool.in_use() as usize, before as usize + sent + refused);
    burst.clear();

    let mut got = Vec::new();
    let mut rxb = MbufBurst::with_limit(16);
    loop {
        let n = rx[0].rx_burst(&mut rxb);
        if n == 0 {
            break;
        }
        assert!(n <= 16);
        got.extend(rxb.drain().map(|m| {
            assert_eq!(m.data().len(), 60);
            seq_of(&m)
        }));
    }
    assert_eq!(got, (0..u32::try_from(sent).unwrap()).collect::<Vec<_>>());
    assert_eq!(pool.in_use(), before, "every mbuf freed exactly once");

    let stats = port.stats();
    assert_eq!(stats.tx_packets, sent as u64);
    assert_eq!(stats.rx_packets, sent as u64);
    assert!(!port.xstats().is_empty());
    // The queues keep the port open after the Port handle goes.
    drop(port);
    let mut b = MbufBurst::new();
    b.push(packet(pool, 1)).unwrap();
    assert_eq!(tx[0].tx_burst(&mut b), 1);
    assert_eq!(rx[0].rx_burst(&mut b), 1);
}

fn lcores(eal: &Eal) {
    let workers = eal.worker_lcores();
    assert_eq!(workers, [1]);
    let hits = Arc::new(AtomicU32::new(0));
    let h = {
        let hits = Arc::clone(&hits);
        launch(eal, 1, move || {
            hits.fetch_add(1, Ordering::SeqCst);
            crate::dpdk::current_lcore()
        })
        .unwrap()
    };
    assert_eq!(h.lcore(), 1);
    assert_eq!(h.join().unwrap(), 1);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    let h = launch(eal, 1, || -> u32 { panic!("worker failure") }).unwrap();
    assert!(h.join().is_err(), "a panic comes back as Err");

    assert!(matches!(
        launch(eal, 0, || ()),
        Err(LaunchError::MainLcore(0))
    ));
    assert!(matches!(
        launch(eal, 7, || ()),
        Err(LaunchError::NotEnabled(7))
    ));
    let busy = launch(eal, 1, || {
        std::thread::sleep(std::time::Duration::from_millis(200))
    })
    .unwrap();
    assert!(matches!(
        launch(eal, 1, || ()),
        Err(LaunchError::Busy { lcore: 1, .. })
    ));
    busy.join().unwrap();
}

fn errors(eal: &Eal, pool: &'static Mempool) {
    assert!(matches!(
        Eal::init(["--no-huge"]),
        Err(EalError::AlreadyInitialised)
    ));
    let e = eal.probe("net_nosuchdriver0").unwrap_err();
    assert!(e.to_string().contains("net_nosuchdriver0"), "{e}");
    let e = Port::open(eal, "net_nothere9", pool, &PortConfig::default()).unwrap_err();
    // net_ring0 was closed when its last queue dropped: no port is left.
    assert!(e.to_string().contains("ports that exist: none"), "{e}");
    let two = PortConfig {
        rx_queues: 2,
        tx_queues: 2,
        ..PortConfig::default()
    };
    eal.probe("net_ring5").unwrap();
    let e = Port::open(eal, "net_ring5", pool, &two).unwrap_err();
    assert!(matches!(e, PortError::NoRss { queues: 2, .. }), "{e}");
    assert!(e.to_string().contains("use one worker"), "{e}");
    // One pcap input makes one RX queue.
    let empty = std::env::temp_dir().join(format!("lb-unit-{}.pcap", std::process::id()));
    let mut header = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    header.extend_from_slice(&[0; 8]);
    header.extend_from_slice(&[0xff, 0xff, 0, 0, 1, 0, 0, 0]);
    std::fs::write(&empty, header).unwrap();
    let p = empty.display();
    eal.probe(&format!("net_pcap5,rx_pcap={p},tx_pcap=/dev/null"))
        .unwrap();
    let e = Port::open(eal, "net_pcap5", pool, &two).unwrap_err();
    // A file per queue: two queues, no RSS needed (the files divide the
    // flows), as lb-bench feeds two workers.
    eal.probe(&format!("net_pcap6,rx_pcap={p},rx_pcap={p}"))
        .unwrap();
    let port = Port::open(eal, "net_pcap6", pool, &two);
    let _ = std::fs::remove_file(&empty);
    assert!(port.is_ok(), "{:?}", port.err());
    drop(port);
    assert!(
        matches!(
            e,
            PortError::TooManyQueues {
                max: 1,
                wanted: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        Mempool::create(eal, "", 10, 0, 2048),
        Err(MempoolError::BadName(_))
    ));
    assert!(matches!(
        Mempool::create(eal, "lb_mbufs", 1 << 30, 0, 2048),
        Err(MempoolError::Create { .. })
    ));
}

#[test]
fn safe_layer_against_a_real_eal() {
    let eal = Eal::init([
        "--no-huge",
        "--no-shconf",
        "-m",
        "256",
        "--no-pci",
        "-l",
        "0-1",
        "--log-level=lib.eal:error",
        &format!("--file-prefix=lb-unit-{}", std::process::id()),
    ])
    .expect("EAL starts without hugepages");
    let pool = Mempool::create(&eal, "lb_mbufs", 4095, 0, DEFAULT_DATA_ROOM).unwrap();
    assert_eq!(pool.name(), "lb_mbufs");
    assert_eq!(pool.in_use(), 0);
    assert_eq!(pool.available(), 4095);
    mbuf_editing(pool);
    burst_ownership(pool);
    tx_partial_and_rx(&eal, pool);
    lcores(&eal);
    errors(&eal, pool);
    assert_eq!(pool.in_use(), 0);
}
