//! Builds test frames field by field, with every checksum computed from
//! scratch, so a rewrite under test (incremental checksums) is compared
//! with an independently built expectation. Used by unit tests, the golden
//! table, fuzz seeds and benchmarks, which also share the configuration of
//! [`fnat_snapshot`].

use std::net::{IpAddr, SocketAddr};

use crate::net::{Interface, Network};
use crate::sched::SchedKind;
use crate::service::{RealServer, ServiceKey, ServiceSpec, Snapshot};
use crate::types::{ForwardMode, Protocol, Timeouts};
use crate::wire::ethernet::{self, ethertype};
use crate::wire::{checksum, icmp, ip_proto, ipv4, ipv6, tcp, udp, MacAddr};

/// A frame under construction.
#[derive(Debug, Clone)]
pub struct Builder {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub vlan: Option<u16>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub proto: u8,
    pub ttl: u8,
    pub ident: u16,
    pub tcp_flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub mss: Option<u16>,
    pub payload: Vec<u8>,
    pub icmp_type: u8,
    pub dont_frag: bool,
}

fn sock(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| panic!("{s} is not address:port"))
}

/// The MAC test frames are sent to (the load balancer's port).
pub const LB_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
/// The MAC test frames come from.
pub const PEER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x01, 0x01]);

/// One Full-NAT TCP service, 198.18.0.10:80, over `servers` real servers
/// (10.1.0.0 and up, port 8080) with 16 local addresses (10.2.0.1-16),
/// behind port 0 ([`LB_MAC`], 10.0.0.1/8): the configuration benchmarks
/// and profiles run, for frames from [`Builder`] to that VIP.
pub fn fnat_snapshot(servers: u32, sched: SchedKind) -> Snapshot {
    let mut s = ServiceSpec::new(ServiceKey {
        proto: Protocol::Tcp,
        vip: IpAddr::from([198, 18, 0, 10]),
        port: 80,
        mark: 0,
    });
    s.sched = sched;
    s.reals = (0..servers)
        .map(|i| RealServer {
            addr: IpAddr::from(std::net::Ipv4Addr::from(0x0a01_0000 + i)),
            port: 8080,
            mode: ForwardMode::Fnat,
            weight: 1,
            upper: 0,
            lower: 0,
        })
        .collect();
    s.laddrs = (1..=16).map(|i| IpAddr::from([10, 2, 0, i])).collect();
    let net = Network::new(
        vec![Interface {
            port: 0,
            mac: LB_MAC,
            addrs: vec![(IpAddr::from([10, 0, 0, 1]), 8)],
            mtu: 1500,
            rx_checksum: Default::default(),
        }],
        &[],
    )
    .expect("a valid network");
    Snapshot::build(1, vec![s], Timeouts::default())
        .expect("a valid service")
        .with_network(net)
}

impl Builder {
    fn base(src: &str, dst: &str, proto: u8) -> Builder {
        Builder {
            src_mac: PEER_MAC,
            dst_mac: LB_MAC,
            vlan: None,
            src: sock(src),
            dst: sock(dst),
            proto,
            ttl: 64,
            ident: 1,
            tcp_flags: 0,
            seq: 1000,
            ack: 0,
            mss: None,
            payload: Vec::new(),
            icmp_type: 8,
            dont_frag: true,
        }
    }

    pub fn tcp_v4(src: &str, dst: &str, flags: u8) -> Builder {
        let mut b = Builder::base(src, dst, ip_proto::TCP);
        b.tcp_flags = flags;
        b
    }

    pub fn tcp_v6(src: &str, dst: &str, flags: u8) -> Builder {
        Builder::tcp_v4(src, dst, flags)
    }

    pub fn udp_v4(src: &str, dst: &str, payload: &[u8]) -> Builder {
        let mut b = Builder::base(src, dst, ip_proto::UDP);
        b.payload = payload.to_vec();
        b
    }

    pub fn udp_v6(src: &str, dst: &str, payload: &[u8]) -> Builder {
        Builder::udp_v4(src, dst, payload)
    }

    /// An ICMP echo request; the identifier is the source "port".
    pub fn icmp_echo(src: &str, dst: &str, ident: u16, payload: &[u8]) -> Builder {
        let mut b = Builder::base(
            &format!("{src}:{ident}"),
            &format!("{dst}:0"),
            ip_proto::ICMP,
        );
        b.payload = payload.to_vec();
        b
    }

    pub fn vlan(mut self, id: u16) -> Builder {
        self.vlan = Some(id);
        self
    }
    pub fn macs(mut self, src: MacAddr, dst: MacAddr) -> Builder {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }
    pub fn ttl(mut self, ttl: u8) -> Builder {
        self.ttl = ttl;
        self
    }
    pub fn ident(mut self, id: u16) -> Builder {
        self.ident = id;
        self
    }
    pub fn seq_ack(mut self, seq: u32, ack: u32) -> Builder {
        self.seq = seq;
        self.ack = ack;
        self
    }
    pub fn mss(mut self, mss: u16) -> Builder {
        self.mss = Some(mss);
        self
    }
    pub fn payload(mut self, p: &[u8]) -> Builder {
        self.payload = p.to_vec();
        self
    }
    pub fn dont_frag(mut self, df: bool) -> Builder {
        self.dont_frag = df;
        self
    }
    pub fn src(mut self, s: &str) -> Builder {
        self.src = sock(s);
        self
    }
    pub fn dst(mut self, s: &str) -> Builder {
        self.dst = sock(s);
        self
    }

    /// The transport header and payload, checksum filled for the pseudo
    /// header of `src`/`dst`.
    fn l4(&self) -> Vec<u8> {
        let (src, dst) = (self.src.ip(), self.dst.ip());
        match self.proto {
            ip_proto::TCP => {
                let opts = self
                    .mss
                    .map(|m| {
                        let [hi, lo] = m.to_be_bytes();
                        vec![2, 4, hi, lo]
                    })
                    .unwrap_or_default();
                let hl = tcp::HEADER_LEN + opts.len();
                let mut b = vec![0u8; hl + self.payload.len()];
                b[tcp::HEADER_LEN..hl].copy_from_slice(&opts);
                b[hl..].copy_from_slice(&self.payload);
                let len = b.len();
                let mut t = tcp::Packet::new_unchecked(&mut b[..]);
                t.set_src_port(self.src.port());
                t.set_dst_port(self.dst.port());
                t.set_seq(self.seq);
                t.set_ack_number(self.ack);
                t.set_header_len_and_flags(hl, tcp::Flags(self.tcp_flags));
                t.set_window(8192);
                t.fill_checksum(pseudo(src, dst, ip_proto::TCP, len));
                b
            }
            ip_proto::UDP => {
                let mut b = vec![0u8; udp::HEADER_LEN + self.payload.len()];
                b[udp::HEADER_LEN..].copy_from_slice(&self.payload);
                let len = b.len();
                let mut u = udp::Packet::new_unchecked(&mut b[..]);
                u.set_src_port(self.src.port());
                u.set_dst_port(self.dst.port());
                u.set_len(u16::try_from(len).unwrap());
                u.fill_checksum(pseudo(src, dst, ip_proto::UDP, len));
                b
            }
            _ => {
                let mut b = vec![0u8; icmp::HEADER_LEN + self.payload.len()];
                b[icmp::HEADER_LEN..].copy_from_slice(&self.payload);
                let mut i = icmp::Packet::new_unchecked(&mut b[..]);
                i.set_msg_type(self.icmp_type);
                i.set_echo_ident(self.src.port());
                i.set_echo_seq(1);
                i.fill_checksum(0);
                b
            }
        }
    }

    /// The IP packet (header and payload).
    pub fn build_ip(&self) -> Vec<u8> {
        let l4 = self.l4();
        ip_packet(
            self.src.ip(),
            self.dst.ip(),
            self.proto,
            self.ttl,
            self.ident,
            self.dont_frag,
            &l4,
        )
    }

    /// The whole frame.
    pub fn build(&self) -> Vec<u8> {
        let ip = self.build_ip();
        let et = if self.src.is_ipv4() {
            ethertype::IPV4
        } else {
            ethertype::IPV6
        };
        frame(self.src_mac, self.dst_mac, self.vlan, et, &ip)
    }
}

fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u64 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            checksum::pseudo_v4(s.octets(), d.octets(), proto, u16::try_from(len).unwrap())
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            checksum::pseudo_v6(s.octets(), d.octets(), proto, u32::try_from(len).unwrap())
        }
        _ => panic!("mixed address families"),
    }
}

/// An IP header (v4 or v6 by the addresses) in front of `payload`.
pub fn ip_packet(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ttl: u8,
    ident: u16,
    df: bool,
    payload: &[u8],
) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut b = vec![0u8; ipv4::HEADER_LEN + payload.len()];
            b[ipv4::HEADER_LEN..].copy_from_slice(payload);
            let total = u16::try_from(b.len()).unwrap();
            let mut ip = ipv4::Packet::new_unchecked(&mut b[..]);
            ip.set_version_and_header_len(ipv4::HEADER_LEN);
            ip.set_total_len(total);
            ip.set_ident(ident);
            ip.set_unfragmented(df);
            ip.set_ttl(ttl);
            ip.set_protocol(proto);
            ip.set_src_addr(s);
            ip.set_dst_addr(d);
            ip.fill_checksum();
            b
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut b = vec![0u8; ipv6::HEADER_LEN + payload.len()];
            b[ipv6::HEADER_LEN..].copy_from_slice(payload);
            let mut ip = ipv6::Packet::new_unchecked(&mut b[..]);
            ip.set_version_tc_flow(0, 0);
            ip.set_payload_len(u16::try_from(payload.len()).unwrap());
            ip.set_next_header(proto);
            ip.set_hop_limit(ttl);
            ip.set_src_addr(s);
            ip.set_dst_addr(d);
            b
        }
        _ => panic!("mixed address families"),
    }
}

/// An Ethernet frame around a network-layer packet.
pub fn frame(src: MacAddr, dst: MacAddr, vlan: Option<u16>, et: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ethernet::HEADER_LEN];
    {
        let mut e = ethernet::Frame::new_unchecked(&mut f[..]);
        e.set_dst(dst);
        e.set_src(src);
        e.set_ethertype(if vlan.is_some() { ethertype::VLAN } else { et });
    }
    if let Some(id) = vlan {
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&et.to_be_bytes());
    }
    f.extend_from_slice(l3);
    f
}
