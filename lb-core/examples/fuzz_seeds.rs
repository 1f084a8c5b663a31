//! Writes seed inputs for the `engine` fuzz target: real conversations of
//! each mode in the target's input format (length/8, port, frame).
//! `cargo run -p lb-core --example fuzz_seeds -- lb-core/fuzz/corpus/engine`

use lb_core::testpkt::{Builder, LB_MAC};
use lb_core::wire::tcp::Flags;
use lb_core::wire::MacAddr;

fn record(out: &mut Vec<u8>, port: u8, frame: &[u8]) {
    let mut f = frame.to_vec();
    f.resize(f.len().div_ceil(8) * 8, 0);
    out.push(u8::try_from(f.len() / 8).expect("frames under 2 KiB"));
    out.push(port);
    out.extend_from_slice(&f);
}

fn main() {
    let dir = std::env::args().nth(1).expect("the corpus directory");
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    let rs_side = MacAddr([2, 0, 0, 0, 0, 2]);
    let rs_mac = MacAddr([2, 0, 0, 0, 2, 5]);
    let (syn, ack, fin) = (Flags::SYN, Flags::ACK, Flags::FIN);
    for (i, vport) in [80u16, 81, 82, 83, 84].into_iter().enumerate() {
        let vip = format!("198.18.0.10:{vport}");
        let rs = if vport <= 81 {
            "10.1.0.5:8080".to_string()
        } else {
            format!("10.1.0.5:{vport}")
        };
        let back_to = if vport == 80 {
            "10.2.0.1:1025"
        } else {
            "10.0.0.2:40000"
        };
        let mut s = Vec::new();
        record(
            &mut s,
            0,
            &Builder::tcp_v4("10.0.0.2:40000", &vip, syn)
                .mss(1460)
                .build(),
        );
        record(
            &mut s,
            1,
            &Builder::tcp_v4(&rs, back_to, syn | ack)
                .macs(rs_mac, rs_side)
                .build(),
        );
        record(
            &mut s,
            0,
            &Builder::tcp_v4("10.0.0.2:40000", &vip, ack)
                .payload(b"GET / HTTP/1.0\r\n\r\n")
                .build(),
        );
        record(
            &mut s,
            0,
            &Builder::tcp_v4("10.0.0.2:40000", &vip, fin | ack).build(),
        );
        record(
            &mut s,
            1,
            &Builder::tcp_v4(&rs, back_to, fin | ack)
                .macs(rs_mac, rs_side)
                .build(),
        );
        std::fs::write(format!("{dir}/tcp-{i}"), s).expect("write a seed");
    }
    let mut u = Vec::new();
    record(
        &mut u,
        0,
        &Builder::udp_v4("10.0.0.2:5000", "198.18.0.10:53", b"query").build(),
    );
    record(
        &mut u,
        1,
        &Builder::udp_v4("10.1.0.5:8080", "10.2.0.1:1025", b"answer")
            .macs(rs_mac, rs_side)
            .build(),
    );
    std::fs::write(format!("{dir}/udp"), u).expect("write a seed");
    let mut p = Vec::new();
    record(
        &mut p,
        0,
        &Builder::icmp_echo("10.0.0.2", "10.0.0.1", 7, b"ping").build(),
    );
    let mut arp = lb_core::testpkt::frame(rs_mac, MacAddr::BROADCAST, None, 0x0806, &[0u8; 28]);
    lb_core::wire::arp::Packet::new_unchecked(&mut arp[14..]).fill(
        1,
        rs_mac,
        "10.0.0.2".parse().unwrap(),
        MacAddr::ZERO,
        "198.18.0.10".parse().unwrap(),
    );
    record(&mut p, 0, &arp);
    let _ = LB_MAC;
    std::fs::write(format!("{dir}/icmp-arp"), p).expect("write a seed");
}
