//! TUN (LVS-TUN, IPIP): the client's packet is sent unchanged inside an
//! outer IPv4 header from the load balancer's tunnel address to the real
//! server, which decapsulates it and answers the client directly.
//!
//! The outer header copies the inner TOS and TTL and the DF bit (so path
//! MTU discovery still works end to end), as IPVS's tunnel transmitter
//! does; it needs [`ipv4::HEADER_LEN`] bytes of headroom from the caller.

use std::net::Ipv4Addr;

use crate::packet::{PacketBuf, Parsed};
use crate::wire::{checksum, ip_proto, ipv4};

/// Why a packet could not be encapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunError {
    /// The buffer has no room in front for the outer header.
    NoHeadroom,
    /// Only IPv4 in IPv4 is supported.
    NotIpv4,
    /// The encapsulated packet would exceed the MTU and has DF set: the
    /// client must be told (ICMP fragmentation needed) with this MTU.
    TooBig { mtu: u16 },
}

/// Wraps the IPv4 packet of `p` in an outer header `src` -> `dst`. The
/// Ethernet header (and VLAN tag) stays in front. `mtu` is the outgoing
/// link's.
pub fn encap(
    buf: &mut impl PacketBuf,
    p: &Parsed,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    mtu: u16,
) -> Result<(), TunError> {
    if !p.is_v4() {
        return Err(TunError::NotIpv4);
    }
    let inner_len = p.l3_end - p.l3_offset;
    let total = inner_len + ipv4::HEADER_LEN;
    let (tos, ttl, df) = {
        let inner = ipv4::Packet::new_unchecked(&buf.data()[p.l3_offset..p.l3_end]);
        (inner.tos(), inner.ttl(), inner.dont_frag())
    };
    // A TCP segment larger than the MTU itself came as a kernel sender's
    // super-frame (no link of this MTU carried it whole): it is wrapped as
    // it is, and the port cuts it into segments that fit once wrapped
    // (`offload::Oversize::IpipTcpV4`), as the kernel's tunnel does with
    // a GSO packet. A single packet that only the outer header makes too
    // big is the sender's to shrink: ICMP, as IPVS sends.
    let super_frame = inner_len > usize::from(mtu) && p.proto == ip_proto::TCP && !p.fragment;
    if total > usize::from(u16::MAX) {
        return Err(TunError::TooBig { mtu });
    }
    if total > usize::from(mtu) && !super_frame {
        if df {
            return Err(TunError::TooBig {
                mtu: mtu.saturating_sub(u16::try_from(ipv4::HEADER_LEN).unwrap_or(20)),
            });
        }
        // Without DF the packet may be fragmented on the way; this
        // dataplane does not fragment, so it is still too big.
        return Err(TunError::TooBig { mtu });
    }
    if !buf.prepend(ipv4::HEADER_LEN) {
        return Err(TunError::NoHeadroom);
    }
    let data = buf.data_mut();
    // Move the link-layer header to the new front.
    data.copy_within(ipv4::HEADER_LEN..ipv4::HEADER_LEN + p.l3_offset, 0);
    let mut outer = ipv4::Packet::new_unchecked(&mut data[p.l3_offset..p.l3_offset + total]);
    outer.set_version_and_header_len(ipv4::HEADER_LEN);
    outer.set_tos(tos);
    outer.set_total_len(u16::try_from(total).unwrap_or(u16::MAX));
    outer.set_ident(ident);
    outer.set_unfragmented(df);
    outer.set_ttl(ttl);
    outer.set_protocol(ip_proto::IPIP);
    outer.set_src_addr(src);
    outer.set_dst_addr(dst);
    // Summed from the values just written rather than read back: reading
    // freshly stored narrow fields as wide words stalls store forwarding,
    // which cost TUN a tenth of its cycles.
    let word = |hi: u8, lo: u8| u64::from(u16::from_be_bytes([hi, lo]));
    let (s, d) = (src.octets(), dst.octets());
    let sum = word(0x45, tos)
        + total as u64
        + u64::from(ident)
        + if df { 0x4000 } else { 0 }
        + word(ttl, ip_proto::IPIP)
        + word(s[0], s[1])
        + word(s[2], s[3])
        + word(d[0], d[1])
        + word(d[2], d[3]);
    outer.set_checksum(!checksum::fold(sum));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::SYN;
    use super::*;
    use crate::packet::{parse, VecBuf};
    use crate::testpkt::{frame, ip_packet, Builder, LB_MAC, PEER_MAC};
    use crate::wire::ethernet::ethertype;

    #[test]
    fn wraps_the_packet_unchanged() {
        let client = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", SYN)
            .mss(1460)
            .vlan(7);
        let input = client.build();
        let p = parse(&input).unwrap();
        let mut b = VecBuf::new(&input, 64);
        encap(
            &mut b,
            &p,
            "10.0.0.1".parse().unwrap(),
            "10.1.0.5".parse().unwrap(),
            77,
            1500,
        )
        .unwrap();
        let inner = client.build_ip();
        let outer = ip_packet(
            "10.0.0.1".parse().unwrap(),
            "10.1.0.5".parse().unwrap(),
            4,
            64,
            77,
            true,
            &inner,
        );
        assert_eq!(
            b.data(),
            frame(PEER_MAC, LB_MAC, Some(7), ethertype::IPV4, &outer)
        );
    }

    #[test]
    fn outer_checksum_holds_for_every_tos_flag_and_ident() {
        for (tos, df, ident) in [(0, true, 0), (0xb8, false, 0xffff), (0x10, true, 0x8001)] {
            let mut input = Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", SYN)
                .dont_frag(df)
                .build();
            // The inner TOS, with the inner header checksum fixed up.
            input[15] = tos;
            input[24..26].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(0, &input[14..34]);
            input[24..26].copy_from_slice(&c.to_be_bytes());
            let p = parse(&input).unwrap();
            let mut b = VecBuf::new(&input, 64);
            encap(
                &mut b,
                &p,
                [10, 0, 0, 1].into(),
                [10, 255, 254, 253].into(),
                ident,
                1500,
            )
            .unwrap();
            let outer = ipv4::Packet::new_unchecked(&b.data()[14..34]);
            assert_eq!(
                checksum::checksum(0, outer.header()),
                0,
                "{tos} {df} {ident}"
            );
            assert_eq!(
                (outer.tos(), outer.dont_frag(), outer.ident()),
                (tos, df, ident)
            );
        }
    }

    #[test]
    fn a_tcp_super_frame_is_wrapped_whole_and_a_full_packet_is_refused() {
        let wrap = |payload: usize| {
            let f = Builder::tcp_v4(
                "10.9.0.2:40000",
                "198.18.0.10:80",
                crate::wire::tcp::Flags::ACK,
            )
            .payload(&vec![0x42; payload])
            .build();
            let p = parse(&f).unwrap();
            let mut b = VecBuf::new(&f, 64);
            let r = encap(
                &mut b,
                &p,
                [10, 0, 0, 1].into(),
                [10, 1, 0, 5].into(),
                9,
                1500,
            );
            (r, b.data().len() - f.len())
        };
        // 3,040 bytes of IP on a 1,500-byte link: a super-frame, for the
        // port to cut.
        assert_eq!(wrap(3000), (Ok(()), ipv4::HEADER_LEN));
        // 1,500 bytes: one real packet, which the header makes too big.
        assert_eq!(wrap(1460).0, Err(TunError::TooBig { mtu: 1480 }));
    }

    #[test]
    fn refuses_what_it_cannot_send() {
        let big = Builder::udp_v4("10.0.0.2:1", "198.18.0.10:53", &[0u8; 1472]).build();
        let p = parse(&big).unwrap();
        let mut b = VecBuf::new(&big, 64);
        assert_eq!(
            encap(
                &mut b,
                &p,
                [10, 0, 0, 1].into(),
                [10, 1, 0, 5].into(),
                1,
                1500
            ),
            Err(TunError::TooBig { mtu: 1480 })
        );
        assert_eq!(b.data(), &big[..], "unchanged");
        let small = Builder::udp_v4("10.0.0.2:1", "198.18.0.10:53", b"x").build();
        let p = parse(&small).unwrap();
        let mut b = VecBuf::new(&small, 10);
        assert_eq!(
            encap(
                &mut b,
                &p,
                [10, 0, 0, 1].into(),
                [10, 1, 0, 5].into(),
                1,
                1500
            ),
            Err(TunError::NoHeadroom)
        );
        let v6 = Builder::udp_v6("[fd00::2]:1", "[fd00::10]:53", b"x").build();
        let p = parse(&v6).unwrap();
        let mut b = VecBuf::new(&v6, 64);
        assert_eq!(
            encap(
                &mut b,
                &p,
                [10, 0, 0, 1].into(),
                [10, 1, 0, 5].into(),
                1,
                1500
            ),
            Err(TunError::NotIpv4)
        );
    }
}
