//! One parse of a frame into what every later step needs (offsets, tuple,
//! TCP flags), and the buffer abstraction the engine works on.
//!
//! The engine reads each header once here; rewrites then work at the known
//! offsets. [`PacketBuf`] is what lets a mode grow a packet at the front
//! (the IPIP header of TUN) without lb-core knowing about mbufs: the
//! dataplane implements it for its mbuf, tests for [`VecBuf`].

use crate::types::Addr;
use crate::types::FlowKey;
use crate::wire::ethernet::{self, ethertype};
use crate::wire::{ip_proto, ipv4, ipv6, tcp, udp, WireError};

/// A packet buffer with headroom, as the engine needs it.
pub trait PacketBuf {
    /// The frame's bytes.
    fn data(&self) -> &[u8];
    /// The frame's bytes, writable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Grows the frame at the front by `n` bytes; `false`, unchanged, if
    /// the headroom is too small.
    fn prepend(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the front; `false`, unchanged, if shorter.
    fn adj(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the end; `false`, unchanged, if shorter.
    fn trim(&mut self, n: usize) -> bool;
    /// What the receiving driver said of the transport checksum.
    fn rx_l4_sum(&self) -> RxL4Sum {
        RxL4Sum::Unknown
    }
}

/// What the receiving driver says of a frame's transport checksum (see
/// [`crate::offload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RxL4Sum {
    /// Nothing: the driver does not look.
    #[default]
    Unknown,
    /// Verified right by the device.
    Good,
    /// Verified wrong by the device.
    Bad,
    /// Not computed yet, the data intact: the field holds the
    /// pseudo-header sum (DPDK's `RTE_MBUF_F_RX_L4_CKSUM_NONE`).
    Partial,
}

/// A heap buffer with headroom, for tests, fuzzing and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecBuf {
    buf: Vec<u8>,
    start: usize,
}

impl VecBuf {
    /// `frame` with `headroom` free bytes in front of it.
    pub fn new(frame: &[u8], headroom: usize) -> VecBuf {
        let mut buf = vec![0; headroom];
        buf.extend_from_slice(frame);
        VecBuf {
            buf,
            start: headroom,
        }
    }
}

impl PacketBuf for VecBuf {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..]
    }
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        true
    }
    fn adj(&mut self, n: usize) -> bool {
        if n > self.buf.len() - self.start {
            return false;
        }
        self.start += n;
        true
    }
    fn trim(&mut self, n: usize) -> bool {
        if n > self.buf.len() - self.start {
            return false;
        }
        self.buf.truncate(self.buf.len() - n);
        true
    }
}

/// The network layer of a parsed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    Ipv4,
    Ipv6,
    Arp,
    Other(u16),
}

/// What the engine knows of a frame after one parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub l3: L3,
    pub vlan: Option<u16>,
    pub l3_offset: usize,
    /// Where the transport header starts (IP only).
    pub l4_offset: usize,
    /// Where the IP packet ends (its total length; any padding follows).
    pub l3_end: usize,
    /// The transport protocol (IP only).
    pub proto: u8,
    pub src: Addr,
    pub dst: Addr,
    /// TCP/UDP ports; ICMP echo identifier in `sport`; else 0.
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: tcp::Flags,
    /// A fragment other than the first: no transport header.
    pub later_fragment: bool,
    /// Any fragment (first or later).
    pub fragment: bool,
}

impl Parsed {
    /// The 5-tuple as sessions are keyed.
    pub fn key(&self) -> FlowKey {
        FlowKey {
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
        }
    }

    pub fn is_v4(&self) -> bool {
        self.l3 == L3::Ipv4
    }
}

/// Where a parse failed, for the drop counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    L2(WireError),
    L3(WireError),
    L4(WireError),
}

fn v4_mapped(b: [u8; 4]) -> Addr {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..].copy_from_slice(&b);
    a
}

/// Parses Ethernet (with VLAN tags), IPv4/IPv6 and TCP/UDP/ICMP headers.
#[inline]
pub fn parse(frame: &[u8]) -> Result<Parsed, ParseError> {
    match parse_common(frame) {
        Some(p) => Ok(p),
        None => parse_any(frame),
    }
}

/// The common case in one window and a few tests: untagged IPv4 without
/// options, not a fragment, carrying TCP or UDP. `None` for anything else,
/// well-formed or not, which [`parse_any`] then handles; where this returns
/// a parse it is the one `parse_any` gives (the tests compare them).
#[inline(always)]
fn parse_common(frame: &[u8]) -> Option<Parsed> {
    const IP: usize = ethernet::HEADER_LEN;
    const L4: usize = IP + ipv4::HEADER_LEN;
    // Up to the end of a TCP header without options; UDP's is shorter.
    let h: &[u8; L4 + tcp::HEADER_LEN] = frame.get(..L4 + tcp::HEADER_LEN)?.try_into().ok()?;
    let be16 = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
    // IPv4 with a 20-byte header; neither more fragments nor an offset.
    if be16(12) != ethertype::IPV4 || h[IP] != 0x45 || be16(IP + 6) & 0x3fff != 0 {
        return None;
    }
    let l3_end = IP + usize::from(be16(IP + 2));
    if l3_end < L4 || l3_end > frame.len() {
        return None;
    }
    let proto = h[IP + 9];
    let tcp_flags = match proto {
        // The data offset within 5..=15 words, all inside the packet.
        ip_proto::TCP if h[L4 + 12] >= 0x50 && L4 + usize::from(h[L4 + 12] >> 4) * 4 <= l3_end => {
            tcp::Flags(h[L4 + 13])
        }
        // The UDP length covers the header and stays inside the packet.
        ip_proto::UDP if (8..=l3_end - L4).contains(&usize::from(be16(L4 + 4))) => tcp::Flags(0),
        _ => return None,
    };
    let mapped = |at: usize| v4_mapped([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    Some(Parsed {
        l3: L3::Ipv4,
        vlan: None,
        l3_offset: IP,
        l4_offset: L4,
        l3_end,
        proto,
        src: mapped(IP + 12),
        dst: mapped(IP + 16),
        sport: be16(L4),
        dport: be16(L4 + 2),
        tcp_flags,
        later_fragment: false,
        fragment: false,
    })
}

/// Every frame the engine accepts, header by header.
fn parse_any(frame: &[u8]) -> Result<Parsed, ParseError> {
    let eth = ethernet::Frame::new_checked(frame).map_err(ParseError::L2)?;
    // Untagged frames, the common case, skip the tag walk.
    let l2 = match eth.ethertype() {
        ethertype::VLAN | ethertype::QINQ => eth.l2().map_err(ParseError::L2)?,
        t => ethernet::L2 {
            ethertype: t,
            vlan: None,
            l3_offset: ethernet::HEADER_LEN,
        },
    };
    let mut p = Parsed {
        l3: L3::Other(l2.ethertype),
        vlan: l2.vlan,
        l3_offset: l2.l3_offset,
        l4_offset: l2.l3_offset,
        l3_end: frame.len(),
        proto: 0,
        src: [0; 16],
        dst: [0; 16],
        sport: 0,
        dport: 0,
        tcp_flags: tcp::Flags(0),
        later_fragment: false,
        fragment: false,
    };
    let rest = &frame[l2.l3_offset..];
    match l2.ethertype {
        ethertype::ARP => {
            p.l3 = L3::Arp;
            return Ok(p);
        }
        ethertype::IPV4 => {
            let ip = ipv4::Packet::new_checked(rest).map_err(ParseError::L3)?;
            p.l3 = L3::Ipv4;
            p.proto = ip.protocol();
            p.src = v4_mapped(ip.src_addr().octets());
            p.dst = v4_mapped(ip.dst_addr().octets());
            p.l4_offset = l2.l3_offset + ip.header_len();
            p.l3_end = l2.l3_offset + usize::from(ip.total_len());
            p.fragment = ip.is_fragment();
            p.later_fragment = ip.is_later_fragment();
        }
        ethertype::IPV6 => {
            let ip = ipv6::Packet::new_checked(rest).map_err(ParseError::L3)?;
            let upper = ip.upper_layer().map_err(ParseError::L3)?;
            p.l3 = L3::Ipv6;
            p.proto = upper.protocol;
            p.src = ip.src_addr().octets();
            p.dst = ip.dst_addr().octets();
            p.l4_offset = l2.l3_offset + upper.offset;
            p.l3_end = l2.l3_offset + ipv6::HEADER_LEN + usize::from(ip.payload_len());
            p.fragment = upper.fragment;
            p.later_fragment = upper.later_fragment;
        }
        _ => return Ok(p),
    }
    if p.later_fragment {
        return Ok(p);
    }
    let l4 = &frame[p.l4_offset..p.l3_end];
    match p.proto {
        ip_proto::TCP => {
            let t = tcp::Packet::new_checked(l4).map_err(ParseError::L4)?;
            p.sport = t.src_port();
            p.dport = t.dst_port();
            p.tcp_flags = t.flags();
        }
        ip_proto::UDP => {
            let u = udp::Packet::new_checked(l4).map_err(ParseError::L4)?;
            p.sport = u.src_port();
            p.dport = u.dst_port();
        }
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            if l4.len() < crate::wire::icmp::HEADER_LEN {
                return Err(ParseError::L4(WireError::Truncated));
            }
            p.sport = u16::from_be_bytes([l4[4], l4[5]]);
        }
        _ => {}
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testpkt::Builder;

    #[test]
    fn parses_tcp_over_vlan() {
        let f = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", tcp::Flags::SYN)
            .vlan(100)
            .build();
        let p = parse(&f).unwrap();
        assert_eq!(p.l3, L3::Ipv4);
        assert_eq!(p.vlan, Some(100));
        assert_eq!((p.l3_offset, p.l4_offset), (18, 38));
        assert_eq!((p.sport, p.dport, p.proto), (40000, 80, 6));
        assert!(p.tcp_flags.syn());
        assert_eq!(
            crate::types::ip(&p.dst),
            "198.18.0.10".parse::<std::net::IpAddr>().unwrap()
        );
    }

    #[test]
    fn parses_udp_v6_and_errors() {
        let f = Builder::udp_v6("[fd00::2]:1000", "[fd00::10]:53", b"q").build();
        let p = parse(&f).unwrap();
        assert_eq!((p.l3, p.sport, p.dport, p.proto), (L3::Ipv6, 1000, 53, 17));
        assert_eq!(parse(&f[..10]), Err(ParseError::L2(WireError::Truncated)));
        assert_eq!(parse(&f[..30]), Err(ParseError::L3(WireError::Truncated)));
        let mut bad = Builder::tcp_v4("10.0.0.2:1", "10.0.0.1:2", 0).build();
        bad[14 + 20 + 12] = 0x20; // TCP data offset 8 bytes
        assert_eq!(parse(&bad), Err(ParseError::L4(WireError::BadHeaderLen)));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Where the common-case parse answers, it answers what the full
        /// parse does, whatever the header bytes and the frame's length.
        #[test]
        fn the_common_case_parses_as_the_full_parse_does(
            udp: bool,
            payload in 0usize..40,
            edits in proptest::collection::vec(
                (
                    proptest::sample::select(vec![12usize, 13, 14, 16, 17, 20, 21, 23, 38, 39, 46, 47]),
                    // Values at the edges of what each field allows.
                    proptest::prop_oneof![
                        proptest::sample::select(vec![0u8, 4, 5, 6, 7, 8, 0x11, 0x1f, 0x20, 0x3f, 0x40, 0x45, 0x4f, 0x50, 0x86, 0xff]),
                        proptest::prelude::any::<u8>(),
                    ],
                ),
                0..3,
            ),
            cut in proptest::prop_oneof![3 => proptest::strategy::Just(0usize), 1 => 0usize..80],
        ) {
            let data = vec![7u8; payload];
            let mut f = if udp {
                Builder::udp_v4("10.0.0.2:40000", "198.18.0.10:53", &data).build()
            } else {
                Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", tcp::Flags::ACK)
                    .payload(&data)
                    .build()
            };
            let unedited = edits.is_empty() && cut == 0;
            for (at, v) in edits {
                if let Some(b) = f.get_mut(at) {
                    *b = v;
                }
            }
            f.truncate(f.len().saturating_sub(cut));
            match parse_common(&f) {
                Some(p) => proptest::prop_assert_eq!(Ok(p), parse_any(&f)),
                // The frames as built are the common case.
                None => proptest::prop_assert!(!unedited || f.len() < 54),
            }
        }
    }

    #[test]
    fn vecbuf_headroom() {
        let mut b = VecBuf::new(&[1, 2, 3], 2);
        assert!(b.prepend(2));
        assert!(!b.prepend(1));
        b.data_mut()[0] = 9;
        assert_eq!(b.data(), [9, 0, 1, 2, 3]);
        assert!(b.adj(4));
        assert!(b.trim(1));
        assert!(b.data().is_empty());
        assert!(!b.adj(1));
    }
}
