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
use crate::types::Addr;
use crate::wire::checksum::{self, Delta};
use crate::wire::{ip_proto, ipv4, ipv6};

/// Forwards the packet as a router that translates it: decrements the TTL
/// or hop limit and rewrites the source and/or destination (address, port),
/// updating every checksum. TCP and UDP carry ports; other protocols change
/// addresses only. The changes are summed into one delta per checksum, the
/// TTL's included, so each checksum is updated once. `false`, unchanged,
/// when the TTL does not allow forwarding.
#[inline(always)]
pub fn forward(
    frame: &mut [u8],
    p: &Parsed,
    src: Option<(&Addr, u16)>,
    dst: Option<(&Addr, u16)>,
) -> bool {
    let ttl_at = p.l3_offset + if p.is_v4() { 8 } else { 7 };
    if frame.get(ttl_at).is_none_or(|&ttl| ttl <= 1) {
        return false;
    }
    let fast = p.is_v4() && !p.later_fragment && p.l4_offset == p.l3_offset + ipv4::HEADER_LEN;
    let done = fast
        && match p.proto {
            ip_proto::TCP => translate_v4::<{ ipv4::HEADER_LEN + 18 }, 16>(frame, p, src, dst),
            ip_proto::UDP => translate_v4::<{ ipv4::HEADER_LEN + 8 }, 6>(frame, p, src, dst),
            _ => false,
        };
    if !done {
        translate(frame, p, src, dst);
    }
    true
}

/// The common case, IPv4 without options carrying TCP or UDP, on one
/// window over the IP header and the transport header up to its checksum
/// (`N` bytes; the checksum at `CHECK` past the IP header); `false`,
/// unchanged, if the frame is too short for the window.
///
/// It sums whole 32-bit fields (addresses, and the two ports as one) in
/// the byte order they are stored in: the one's-complement sum does not
/// depend on byte order as long as every word and the checksum are read
/// the same way (RFC 1071, 2.B), and 2^32 is 1 modulo 0xffff, so a 32-bit
/// field is the sum of its two words. The result is bit for bit that of
/// [`translate`], which the tests compare.
#[inline(always)]
fn translate_v4<const N: usize, const CHECK: usize>(
    frame: &mut [u8],
    p: &Parsed,
    src: Option<(&Addr, u16)>,
    dst: Option<(&Addr, u16)>,
) -> bool {
    let Some(w) = window::<N>(frame, p.l3_offset) else {
        return false;
    };
    let mut addrs = 0u64;
    if let Some((a, _)) = src {
        addrs += swap_ne32(field(w, 12), [a[12], a[13], a[14], a[15]]);
    }
    if let Some((a, _)) = dst {
        addrs += swap_ne32(field(w, 16), [a[12], a[13], a[14], a[15]]);
    }
    // The TTL/protocol word loses 0x100 (the TTL is above 1): in every
    // byte order its ~old + new is the constant 0xfeff, stored form.
    w[8] -= 1;
    let ttl = u64::from(u16::from_ne_bytes([0xfe, 0xff]));
    apply_ne(field(w, 10), addrs + ttl);
    let ports: &mut [u8; 4] = field(w, ipv4::HEADER_LEN);
    let mut new = *ports;
    if let Some((_, port)) = src {
        new[..2].copy_from_slice(&port.to_be_bytes());
    }
    if let Some((_, port)) = dst {
        new[2..].copy_from_slice(&port.to_be_bytes());
    }
    let l4 = addrs + swap_ne32(ports, new);
    let check: &mut [u8; 2] = field(w, ipv4::HEADER_LEN + CHECK);
    // UDP over IPv4: zero means "no checksum" and stays zero; a computed
    // zero is sent as 0xffff (RFC 768). Both read the same in any order.
    if p.proto == ip_proto::UDP && *check == [0, 0] {
        return true;
    }
    apply_ne(check, l4);
    if p.proto == ip_proto::UDP && *check == [0, 0] {
        *check = [0xff, 0xff];
    }
    true
}

/// Replaces a 32-bit field, returning `~old + new` in stored byte order.
#[inline(always)]
fn swap_ne32(field: &mut [u8; 4], new: [u8; 4]) -> u64 {
    let old = u32::from_ne_bytes(*field);
    *field = new;
    u64::from(!old) + u64::from(u32::from_ne_bytes(new))
}

/// Applies a summed change to a checksum stored in `check`, all in stored
/// byte order: `~(~HC + change)` (RFC 1624, eqn. 3).
#[inline(always)]
fn apply_ne(check: &mut [u8; 2], change: u64) {
    let hc = u16::from_ne_bytes(*check);
    *check = (!checksum::fold(u64::from(!hc) + change)).to_ne_bytes();
}

/// The rewrite itself, on fixed-size windows of the headers so that each
/// field is read and written without a bounds check of its own. The parse
/// has checked that the headers are there; a frame that is somehow shorter
/// is left as it is. Out of line: IPv6, IPv4 options, ICMP and later
/// fragments take it, not the common case.
#[inline(never)]
fn translate(frame: &mut [u8], p: &Parsed, src: Option<(&Addr, u16)>, dst: Option<(&Addr, u16)>) {
    // Where the transport checksum sits, and the bytes up to its end.
    let l4_fields = match p.proto {
        ip_proto::TCP => Some((16, 18)),
        ip_proto::UDP => Some((6, 8)),
        _ => None,
    };
    let (head, l4) = frame.split_at_mut(p.l4_offset.min(frame.len()));
    // The address changes: they enter both the IP header's checksum (IPv4)
    // and the transport's pseudo-header.
    let mut addrs = Delta::default();
    if p.is_v4() {
        let Some(ip) = window::<{ ipv4::HEADER_LEN }>(head, p.l3_offset) else {
            return;
        };
        if let Some((a, _)) = src {
            put_v4(field(ip, 12), a, &mut addrs);
        }
        if let Some((a, _)) = dst {
            put_v4(field(ip, 16), a, &mut addrs);
        }
        let mut header = addrs;
        // TTL shares its 16-bit word with the protocol.
        let word: &mut [u8; 2] = field(ip, 8);
        let old = u16::from_be_bytes(*word);
        header.add16(old, old - 0x100);
        word[0] -= 1;
        let check: &mut [u8; 2] = field(ip, 10);
        *check = header.apply(u16::from_be_bytes(*check)).to_be_bytes();
    } else {
        let Some(ip) = window::<{ ipv6::HEADER_LEN }>(head, p.l3_offset) else {
            return;
        };
        if let Some((a, _)) = src {
            put_v6(field(ip, 8), a, &mut addrs);
        }
        if let Some((a, _)) = dst {
            put_v6(field(ip, 24), a, &mut addrs);
        }
        ip[7] -= 1;
    }
    let Some((check_at, len)) = l4_fields.filter(|_| !p.later_fragment) else {
        return;
    };
    let Some(l4) = l4.get_mut(..len) else {
        return;
    };
    let mut d = addrs;
    if let Some((_, port)) = src {
        put_port(field(l4, 0), port, &mut d);
    }
    if let Some((_, port)) = dst {
        put_port(field(l4, 2), port, &mut d);
    }
    let check: &mut [u8; 2] = field(l4, check_at);
    let old = u16::from_be_bytes(*check);
    let new = if p.proto == ip_proto::UDP {
        checksum::udp_adjust(old, |c| d.apply(c))
    } else {
        d.apply(old)
    };
    *check = new.to_be_bytes();
}

/// Replaces a 4-byte field with an IPv4 address's stored form, adding
/// the change to `d`.
#[inline]
fn put_v4(field: &mut [u8; 4], a: &Addr, d: &mut Delta) {
    let new = [a[12], a[13], a[14], a[15]];
    d.add32(u32::from_be_bytes(*field), u32::from_be_bytes(new));
    *field = new;
}

/// Replaces a 16-byte field with an IPv6 address, adding the change to `d`.
#[inline]
fn put_v6(field: &mut [u8; 16], a: &Addr, d: &mut Delta) {
    d.add_bytes(field, a);
    *field = *a;
}

/// Replaces a 2-byte field (a port), adding the change to `d`.
#[inline]
fn put_port(field: &mut [u8; 2], port: u16, d: &mut Delta) {
    d.add16(u16::from_be_bytes(*field), port);
    *field = port.to_be_bytes();
}

/// A fixed-size window of a header.
#[inline]
fn window<const N: usize>(b: &mut [u8], at: usize) -> Option<&mut [u8; N]> {
    b.get_mut(at..at.checked_add(N)?)?.try_into().ok()
}

#[inline]
fn field<const N: usize>(h: &mut [u8], at: usize) -> &mut [u8; N] {
    // Callers pass constant offsets inside a window at least that long.
    window(h, at).expect("a field inside its header")
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

    fn addr(s: &str) -> crate::types::Addr {
        crate::types::addr(s.parse().unwrap())
    }

    #[test]
    fn forward_rewrites_and_takes_one_from_the_ttl() {
        use crate::testpkt::Builder;
        let (l, r) = (addr("10.2.0.1"), addr("10.1.0.5"));
        for (ttl, udp) in [(64, false), (2, false), (200, true)] {
            let b = if udp {
                Builder::udp_v4("10.0.0.2:40000", "198.18.0.10:53", b"q")
            } else {
                Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", SYN)
            };
            let input = b.ttl(ttl).build();
            let out = apply(input, |b, p| {
                assert!(super::forward(
                    crate::packet::PacketBuf::data_mut(b),
                    p,
                    Some((&l, 1027)),
                    Some((&r, 8080)),
                ));
            });
            let want = if udp {
                Builder::udp_v4("10.2.0.1:1027", "10.1.0.5:8080", b"q")
            } else {
                Builder::tcp_v4("10.2.0.1:1027", "10.1.0.5:8080", SYN)
            };
            // The builder computes every checksum from scratch.
            assert_eq!(out, want.ttl(ttl - 1).build(), "ttl {ttl}");
        }
        let v6 = Builder::tcp_v6("[fd00::2]:40000", "[fd00::10]:80", SYN)
            .ttl(9)
            .build();
        let (l6, r6) = (addr("fd00::1:1"), addr("fd00::5"));
        let out = apply(v6, |b, p| {
            assert!(super::forward(
                crate::packet::PacketBuf::data_mut(b),
                p,
                Some((&l6, 1027)),
                Some((&r6, 8080)),
            ));
        });
        assert_eq!(
            out,
            Builder::tcp_v6("[fd00::1:1]:1027", "[fd00::5]:8080", SYN)
                .ttl(8)
                .build()
        );
    }

    proptest::proptest! {
        /// The IPv4 fast path writes exactly what the general rewrite
        /// writes, for any header contents (checksums that do not match
        /// included) and each combination of rewritten sides.
        #[test]
        fn the_ipv4_fast_path_matches_the_general_rewrite(
            udp: bool,
            ttl in 2u8..,
            header: [u8; 12],
            checks: [u8; 4],
            zero_udp_check: bool,
            sides in 1u8..4,
            new_src: [u8; 4],
            new_dst: [u8; 4],
            ports: (u16, u16),
        ) {
            use crate::testpkt::Builder;
            let b = if udp {
                Builder::udp_v4("10.0.0.2:40000", "198.18.0.10:53", b"query")
            } else {
                Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", ACK).payload(b"data")
            };
            let mut input = b.ttl(ttl).build();
            // Addresses and ports, then both checksums, as drawn.
            input[26..38].copy_from_slice(&header);
            input[24..26].copy_from_slice(&checks[..2]);
            let l4_check = if udp { 34 + 6 } else { 34 + 16 };
            input[l4_check..l4_check + 2].copy_from_slice(&checks[2..]);
            if udp && zero_udp_check {
                input[l4_check..l4_check + 2].copy_from_slice(&[0, 0]);
            }
            let mut src = [0u8; 16];
            src[12..].copy_from_slice(&new_src);
            let mut dst = [0u8; 16];
            dst[12..].copy_from_slice(&new_dst);
            let src = (sides & 1 != 0).then_some((&src, ports.0));
            let dst = (sides & 2 != 0).then_some((&dst, ports.1));
            let fast = apply(input.clone(), |b, p| {
                let data = crate::packet::PacketBuf::data_mut(b);
                assert!(super::forward(data, p, src, dst));
            });
            let general = apply(input, |b, p| {
                let data = crate::packet::PacketBuf::data_mut(b);
                super::translate(data, p, src, dst);
            });
            proptest::prop_assert_eq!(fast, general);
        }
    }

    #[test]
    fn forward_refuses_an_expiring_ttl_and_leaves_the_packet() {
        use crate::testpkt::Builder;
        let a = addr("10.2.0.1");
        for input in [
            Builder::tcp_v4("10.0.0.2:40000", "198.18.0.10:80", SYN)
                .ttl(1)
                .build(),
            Builder::tcp_v6("[fd00::2]:40000", "[fd00::10]:80", SYN)
                .ttl(0)
                .build(),
        ] {
            let out = apply(input.clone(), |b, p| {
                let data = crate::packet::PacketBuf::data_mut(b);
                assert!(!super::forward(data, p, Some((&a, 1)), None));
            });
            assert_eq!(out, input);
        }
    }
}
