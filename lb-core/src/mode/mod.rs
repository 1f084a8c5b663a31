//! The four forwarding modes as transforms on a frame.
//!
//! - DR ([`dr`]): nothing at the network layer; the dataplane's neighbour
//!   step sends the frame to the real server's MAC.
//! - NAT ([`nat`]): the destination becomes the real server's; replies get
//!   the VIP back as source.
//! - TUN ([`tun`]): an outer IPv4 header to the real server (IPIP).
//! - Full-NAT ([`fnat`]): source and destination both rewritten, in both
//!   directions.
//!
//! Every rewrite keeps the IP and transport checksums right incrementally
//! (RFC 1624), touching only the words it changes.

pub mod dr;
pub mod fnat;
pub mod nat;
pub mod tun;

use crate::packet::Parsed;
use crate::session::Addr;
use crate::wire::checksum::{self, Delta};
use crate::wire::{ip_proto, ipv4, ipv6, tcp, udp};

fn v4(a: &Addr) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(a[12], a[13], a[14], a[15])
}

/// Rewrites the source and/or destination (address, port) of the IP packet
/// described by `p`, updating every checksum. TCP and UDP carry ports; other
/// protocols change addresses only. The changes are summed into one delta
/// per checksum, so each checksum is updated once.
pub fn rewrite(frame: &mut [u8], p: &Parsed, src: Option<(Addr, u16)>, dst: Option<(Addr, u16)>) {
    let (l3, l4) = (p.l3_offset, p.l4_offset);
    // The address changes: they enter both the IP header's checksum (IPv4)
    // and the transport's pseudo-header.
    let mut addrs = Delta::default();
    if p.is_v4() {
        let mut ip = ipv4::Packet::new_unchecked(&mut frame[l3..p.l3_end]);
        if let Some((a, _)) = src {
            addrs.add32(u32::from(ip.src_addr()), u32::from(v4(&a)));
            ip.set_src_addr(v4(&a));
        }
        if let Some((a, _)) = dst {
            addrs.add32(u32::from(ip.dst_addr()), u32::from(v4(&a)));
            ip.set_dst_addr(v4(&a));
        }
        let c = addrs.apply(ip.checksum());
        ip.set_checksum(c);
    } else {
        let mut ip = ipv6::Packet::new_unchecked(&mut frame[l3..p.l3_end]);
        if let Some((a, _)) = src {
            addrs.add_bytes(&ip.src_addr().octets(), &a);
            ip.set_src_addr(a.into());
        }
        if let Some((a, _)) = dst {
            addrs.add_bytes(&ip.dst_addr().octets(), &a);
            ip.set_dst_addr(a.into());
        }
    }
    if p.later_fragment {
        return;
    }
    let seg = &mut frame[l4..p.l3_end];
    match p.proto {
        ip_proto::TCP => {
            let mut t = tcp::Packet::new_unchecked(seg);
            let mut d = addrs;
            if let Some((_, port)) = src {
                d.add16(t.src_port(), port);
                t.set_src_port(port);
            }
            if let Some((_, port)) = dst {
                d.add16(t.dst_port(), port);
                t.set_dst_port(port);
            }
            let c = d.apply(t.checksum());
            t.set_checksum(c);
        }
        ip_proto::UDP => {
            let mut u = udp::Packet::new_unchecked(seg);
            let mut d = addrs;
            if let Some((_, port)) = src {
                d.add16(u.src_port(), port);
                u.set_src_port(port);
            }
            if let Some((_, port)) = dst {
                d.add16(u.dst_port(), port);
                u.set_dst_port(port);
            }
            let c = checksum::udp_adjust(u.checksum(), |c| d.apply(c));
            u.set_checksum(c);
        }
        _ => {}
    }
}

/// Decrements the TTL or hop limit as a router does; `false` (unchanged)
/// when the packet must not be forwarded.
pub fn decrement_ttl(frame: &mut [u8], p: &Parsed) -> bool {
    let ip = &mut frame[p.l3_offset..p.l3_end];
    if p.is_v4() {
        ipv4::Packet::new_unchecked(ip).decrement_ttl()
    } else {
        ipv6::Packet::new_unchecked(ip).decrement_hop_limit()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::packet::{parse, VecBuf};
    use crate::wire::tcp::Flags;

    /// Parses, applies `f`, and returns the frame.
    pub fn apply(frame: Vec<u8>, f: impl FnOnce(&mut VecBuf, &crate::packet::Parsed)) -> Vec<u8> {
        let p = parse(&frame).unwrap();
        let mut b = VecBuf::new(&frame, 64);
        f(&mut b, &p);
        crate::packet::PacketBuf::data(&b).to_vec()
    }

    pub const SYN: u8 = Flags::SYN;
    pub const ACK: u8 = Flags::ACK;
}
