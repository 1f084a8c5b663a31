//! What a NIC's receive checksum offload would have done, for ports that
//! have none: transport checksums finished where a kernel sender left them
//! partial, and verified where a packet is about to create a session.
//!
//! A kernel sender over veth or TAP, and a kernel router forwarding its
//! packets, hands its TCP and UDP segments over *partial*
//! (`CHECKSUM_PARTIAL`): the checksum field holds only the folded
//! pseudo-header sum, for the device to finish. Kernel-backed DPDK drivers
//! (`net_af_packet`, `net_af_xdp`) do not pass on the kernel's "checksum not
//! ready" status, so such a segment arrives looking corrupt, and after an
//! incremental rewrite it *is* corrupt for the next receiver. A partial field
//! is recognisable: it equals the folded pseudo-header sum of the packet
//! itself. Finishing sets the field to the checksum of what arrived, which
//! for a field that was already right is the value it had, so the test can
//! only ever mend: a genuinely wrong checksum stays wrong unless it happens
//! to equal the pseudo-header sum (one in 65,536 corrupt segments).
//!
//! Drivers that report a status ([`RxL4Sum`], DPDK's RX L4 checksum flags)
//! are taken at their word: `Good` and `Bad` need no sum, `Partial`
//! (virtio's `NEEDS_CSUM`) is finished without the test.

pub use crate::packet::RxL4Sum;
use crate::packet::{Parsed, L3};
use crate::wire::{checksum, ip_proto};

/// How a port treats the transport checksums it receives (`rx_checksum`
/// of a `[[port]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RxChecksum {
    /// As they come: complete from the sender, or verified by the NIC
    /// (PCI NICs). The fast path pays nothing.
    #[default]
    Trust,
    /// Partial checksums are finished (kernel-backed ports: af_packet,
    /// af_xdp, TAP, virtio-user).
    Finish,
}

/// The drivers whose frames come from the kernel's stack, which hands
/// segments over with partial checksums and says so only in metadata these
/// drivers drop or pass on as flags.
pub const KERNEL_BACKED: [&str; 4] = ["net_af_packet", "net_af_xdp", "net_tap", "net_virtio_user"];

/// A port's default: [`RxChecksum::Finish`] for kernel-backed drivers,
/// [`RxChecksum::Trust`] for the rest (PCI NICs verify in hardware, pcap and
/// ring ports carry what was written).
pub fn default_for_driver(driver: &str) -> RxChecksum {
    if KERNEL_BACKED.contains(&driver) {
        RxChecksum::Finish
    } else {
        RxChecksum::Trust
    }
}

/// Where a TCP or UDP checksum field sits in `frame`, and the packet's
/// pseudo-header sum; `None` for anything else, for fragments (the
/// checksum covers the whole datagram) and for a UDP datagram over IPv4
/// without a checksum.
fn l4_sum(frame: &[u8], p: &Parsed) -> Option<(usize, u64)> {
    if p.fragment {
        return None;
    }
    let at = match p.proto {
        ip_proto::TCP => p.l4_offset + 16,
        ip_proto::UDP => p.l4_offset + 6,
        _ => return None,
    };
    let len = p.l3_end.checked_sub(p.l4_offset)?;
    let pseudo = match p.l3 {
        L3::Ipv4 => {
            let v4 = |a: &[u8; 16]| [a[12], a[13], a[14], a[15]];
            checksum::pseudo_v4(v4(&p.src), v4(&p.dst), p.proto, u16::try_from(len).ok()?)
        }
        L3::Ipv6 => checksum::pseudo_v6(p.src, p.dst, p.proto, u32::try_from(len).ok()?),
        _ => return None,
    };
    let field = frame.get(at..at + 2)?;
    if p.proto == ip_proto::UDP && p.l3 == L3::Ipv4 && field == [0, 0] {
        return None;
    }
    Some((at, pseudo))
}

/// Whether the checksum field of `p` holds the folded pseudo-header sum,
/// as a kernel sender leaves it for the device to finish.
pub fn is_partial(frame: &[u8], p: &Parsed) -> bool {
    match l4_sum(frame, p) {
        Some((at, pseudo)) => {
            u16::from_be_bytes([frame[at], frame[at + 1]]) == checksum::fold(pseudo)
        }
        None => false,
    }
}

/// Computes and stores the transport checksum of `p` over what the frame
/// holds.
fn fill(frame: &mut [u8], p: &Parsed, at: usize, pseudo: u64) {
    frame[at] = 0;
    frame[at + 1] = 0;
    let sum = checksum::checksum(pseudo, &frame[p.l4_offset..p.l3_end]);
    // UDP sends a computed zero as all ones (RFC 768); TCP's zero is zero.
    let sum = if sum == 0 && p.proto == ip_proto::UDP {
        0xffff
    } else {
        sum
    };
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// Finishes the transport checksum of `p` if the driver says it is
/// partial or, when it says nothing, if the field holds the pseudo-header
/// sum. Returns whether it finished one.
pub fn finish_partial(frame: &mut [u8], p: &Parsed, rx: RxL4Sum) -> bool {
    let Some((at, pseudo)) = l4_sum(frame, p) else {
        return false;
    };
    let partial = match rx {
        RxL4Sum::Partial => true,
        RxL4Sum::Unknown => {
            u16::from_be_bytes([frame[at], frame[at + 1]]) == checksum::fold(pseudo)
        }
        RxL4Sum::Good | RxL4Sum::Bad => false,
    };
    if partial {
        fill(frame, p, at, pseudo);
    }
    partial
}

/// Whether the transport checksum of `p` is right, as the driver reports
/// it or as summed here. Packets without one (not TCP or UDP, UDP over
/// IPv4 without a checksum, fragments) pass.
pub fn l4_checksum_ok(frame: &[u8], p: &Parsed, rx: RxL4Sum) -> bool {
    match rx {
        RxL4Sum::Good | RxL4Sum::Partial => return true,
        RxL4Sum::Bad => return false,
        RxL4Sum::Unknown => {}
    }
    match l4_sum(frame, p) {
        Some((_, pseudo)) => checksum::checksum(pseudo, &frame[p.l4_offset..p.l3_end]) == 0,
        None => true,
    }
}

/// What a frame larger than its port's MTU is, for segmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// Its IP packet fits the MTU after all (a VLAN tag made the frame
    /// longer): send as it is.
    Fits,
    /// TCP over IPv4, with its header lengths (Ethernet, IP, TCP): what
    /// the segmentation library cuts.
    TcpV4 { l2: u16, l3: u16, l4: u16 },
    /// A TCP/IPv4 super-frame that TUN mode wrapped in a 20-byte outer
    /// IPv4 header (IPIP), with the inner header lengths: cut as
    /// [`TcpV4`](Oversize::TcpV4) without the outer header, which each
    /// segment then gets back ([`unwrap_outer`], [`rewrap`]).
    IpipTcpV4 { l2: u16, l3: u16, l4: u16 },
    /// TCP over IPv6, which DPDK 22.11's segmentation library does not
    /// cut: [`TcpV6Cut`] does.
    TcpV6(TcpV6Cut),
    /// Anything else (UDP, fragments): not segmented.
    Other,
}

/// Classifies a frame longer than `mtu` + its Ethernet header.
pub fn oversize(frame: &[u8], mtu: u16) -> Oversize {
    let Ok(p) = crate::packet::parse(frame) else {
        return Oversize::Other;
    };
    if p.l3_end - p.l3_offset <= usize::from(mtu) {
        return Oversize::Fits;
    }
    if p.fragment {
        return Oversize::Other;
    }
    if p.l3 == L3::Ipv6 {
        return match TcpV6Cut::new(frame, &p, mtu) {
            Some(cut) => Oversize::TcpV6(cut),
            None => Oversize::Other,
        };
    }
    if p.l3 != L3::Ipv4 {
        return Oversize::Other;
    }
    let len = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    match p.proto {
        ip_proto::TCP => match tcp_header_len(frame, p.l4_offset) {
            Some(l4) => Oversize::TcpV4 {
                l2: len(p.l3_offset),
                l3: len(p.l4_offset - p.l3_offset),
                l4,
            },
            None => Oversize::Other,
        },
        ip_proto::IPIP if p.l4_offset - p.l3_offset == OUTER_LEN => {
            match inner_tcp_v4(&frame[p.l4_offset..p.l3_end]) {
                Some((l3, l4)) => Oversize::IpipTcpV4 {
                    l2: len(p.l3_offset),
                    l3,
                    l4,
                },
                None => Oversize::Other,
            }
        }
        _ => Oversize::Other,
    }
}

/// The outer header TUN mode writes (no options).
const OUTER_LEN: usize = crate::wire::ipv4::HEADER_LEN;

fn tcp_header_len(frame: &[u8], at: usize) -> Option<u16> {
    frame.get(at + 12).map(|&doff| u16::from(doff >> 4) * 4)
}

/// The header lengths of an inner IPv4 packet that is an unfragmented TCP
/// segment.
fn inner_tcp_v4(inner: &[u8]) -> Option<(u16, u16)> {
    let &first = inner.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    let frag = u16::from_be_bytes([*inner.get(6)?, *inner.get(7)?]);
    if first >> 4 != 4 || ihl < 20 || inner.get(9) != Some(&ip_proto::TCP) || frag & 0x3fff != 0 {
        return None;
    }
    Some((u16::try_from(ihl).ok()?, tcp_header_len(inner, ihl)?))
}

/// Takes the outer IPv4 header off an [`Oversize::IpipTcpV4`] frame whose
/// link header is `l2` bytes: the link header moves up over it, so the
/// frame minus its first 20 bytes is the inner packet behind that header.
/// Returns the outer header, for [`rewrap`].
pub fn unwrap_outer(frame: &mut [u8], l2: usize) -> [u8; OUTER_LEN] {
    let mut outer = [0u8; OUTER_LEN];
    outer.copy_from_slice(&frame[l2..l2 + OUTER_LEN]);
    frame.copy_within(0..l2, OUTER_LEN);
    outer
}

/// Puts `outer` back on a segment cut from an unwrapped frame: `frame`
/// starts with 20 free bytes, then the link header (`l2` bytes) and the
/// inner packet. The link header moves back to the front, and the outer
/// header gets the segment's length, identifier `outer`'s + `k` (each
/// segment is its own datagram) and its checksum.
pub fn rewrap(frame: &mut [u8], l2: usize, outer: &[u8; OUTER_LEN], k: u16) {
    frame.copy_within(OUTER_LEN..OUTER_LEN + l2, 0);
    let total = u16::try_from(frame.len() - l2).unwrap_or(u16::MAX);
    frame[l2..l2 + OUTER_LEN].copy_from_slice(outer);
    let mut header = crate::wire::ipv4::Packet::new_unchecked(&mut frame[l2..l2 + OUTER_LEN]);
    let ident = u16::from_be_bytes([outer[4], outer[5]]).wrapping_add(k);
    header.set_total_len(total);
    header.set_ident(ident);
    header.fill_checksum();
}

/// How a TCP/IPv6 super-frame is cut into segments that fit an MTU, as a
/// NIC's TSO would: every segment carries the frame's headers (extension
/// headers included) and at most `mss` bytes of its payload, with the
/// sequence number advanced, the IPv6 payload length set, CWR only on the
/// first, FIN and PSH only on the last, and its checksum computed. (DPDK
/// 22.11's librte_gso cuts TCP over IPv4 only; later DPDKs add IPv6, and
/// this goes when the project moves to one.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpV6Cut {
    /// The bytes of headers: link, IPv6 with its extension headers, TCP.
    headers: usize,
    /// Where the IPv6 header and the TCP header start.
    l3: usize,
    l4: usize,
    payload: usize,
    mss: usize,
}

impl TcpV6Cut {
    fn new(frame: &[u8], p: &Parsed, mtu: u16) -> Option<TcpV6Cut> {
        if p.proto != ip_proto::TCP {
            return None;
        }
        let l4_len = usize::from(tcp_header_len(frame, p.l4_offset)?);
        let headers = p.l4_offset + l4_len;
        let payload = p.l3_end.checked_sub(headers)?;
        let mss = usize::from(mtu).checked_sub(headers - p.l3_offset)?;
        if mss == 0 || l4_len < 20 {
            return None;
        }
        Some(TcpV6Cut {
            headers,
            l3: p.l3_offset,
            l4: p.l4_offset,
            payload,
            mss,
        })
    }

    /// How many segments.
    pub fn count(&self) -> usize {
        self.payload.div_ceil(self.mss).max(1)
    }

    /// The length of segment `k`'s frame.
    pub fn seg_len(&self, k: usize) -> usize {
        self.headers
            + self
                .mss
                .min(self.payload - (k * self.mss).min(self.payload))
    }

    /// Writes segment `k` of `frame` into `out`, which is
    /// [`seg_len`](Self::seg_len)`(k)` bytes long.
    pub fn write(&self, frame: &[u8], k: usize, out: &mut [u8]) {
        let from = self.headers + k * self.mss;
        let body = out.len() - self.headers;
        out[..self.headers].copy_from_slice(&frame[..self.headers]);
        out[self.headers..].copy_from_slice(&frame[from..from + body]);
        let plen = u16::try_from(out.len() - self.l3 - 40).unwrap_or(u16::MAX);
        out[self.l3 + 4..self.l3 + 6].copy_from_slice(&plen.to_be_bytes());
        let seq = u32::from_be_bytes([
            out[self.l4 + 4],
            out[self.l4 + 5],
            out[self.l4 + 6],
            out[self.l4 + 7],
        ])
        .wrapping_add(u32::try_from(k * self.mss).unwrap_or(0));
        out[self.l4 + 4..self.l4 + 8].copy_from_slice(&seq.to_be_bytes());
        const FIN_PSH: u8 = crate::wire::tcp::Flags::FIN | crate::wire::tcp::Flags::PSH;
        const CWR: u8 = 0x80;
        let flags = &mut out[self.l4 + 13];
        if k + 1 < self.count() {
            *flags &= !FIN_PSH;
        }
        if k > 0 {
            *flags &= !CWR;
        }
        fill_checksums(out);
    }
}

/// Computes a segment's IPv4 header checksum (IPv6 has none) and its
/// transport checksum from scratch (what segmentation leaves to the NIC).
/// Returns `false`, changing nothing, for a frame that is not TCP or UDP
/// over IP.
pub fn fill_checksums(frame: &mut [u8]) -> bool {
    let Ok(p) = crate::packet::parse(frame) else {
        return false;
    };
    let Some((at, pseudo)) = l4_sum(frame, &p) else {
        return false;
    };
    match p.l3 {
        L3::Ipv4 => {
            crate::wire::ipv4::Packet::new_unchecked(&mut frame[p.l3_offset..p.l4_offset])
                .fill_checksum();
        }
        L3::Ipv6 => {}
        _ => return false,
    }
    fill(frame, &p, at, pseudo);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::parse;
    use crate::testpkt::Builder;
    use crate::wire::tcp;

    /// A segment as a kernel sender hands it to veth: the checksum field
    /// holds the folded pseudo-header sum.
    fn partial(mut f: Vec<u8>) -> Vec<u8> {
        let p = parse(&f).unwrap();
        let (at, pseudo) = l4_sum(&f, &p).unwrap();
        f[at..at + 2].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        f
    }

    fn frames() -> Vec<Vec<u8>> {
        vec![
            Builder::tcp_v4("10.9.0.2:40000", "198.18.0.10:80", tcp::Flags::SYN).build(),
            Builder::tcp_v4("10.9.0.2:40000", "198.18.0.10:80", tcp::Flags::ACK)
                .payload(&[0x41; 1000])
                .build(),
            Builder::udp_v4("10.9.0.2:5000", "198.18.0.10:53", b"query").build(),
            Builder::tcp_v6("[fd00::2]:40000", "[fd00::10]:80", tcp::Flags::SYN).build(),
            Builder::udp_v6("[fd00::2]:5000", "[fd00::10]:53", b"odd").build(),
        ]
    }

    #[test]
    fn a_partial_checksum_is_recognised_and_finished_to_the_senders_value() {
        for good in frames() {
            let mut f = partial(good.clone());
            let p = parse(&f).unwrap();
            assert!(is_partial(&f, &p));
            assert!(!l4_checksum_ok(&f, &p, RxL4Sum::Unknown));
            assert!(finish_partial(&mut f, &p, RxL4Sum::Unknown));
            assert_eq!(f, good, "finished as the sender would have");
            assert!(l4_checksum_ok(&f, &p, RxL4Sum::Unknown));
        }
    }

    #[test]
    fn a_complete_checksum_is_left_alone_and_a_wrong_one_stays_wrong() {
        for good in frames() {
            let mut f = good.clone();
            let p = parse(&f).unwrap();
            assert!(!is_partial(&f, &p));
            assert!(!finish_partial(&mut f, &p, RxL4Sum::Unknown));
            assert_eq!(f, good);
            let (at, _) = l4_sum(&f, &p).unwrap();
            f[at] ^= 0x10;
            let bad = f.clone();
            assert!(!finish_partial(&mut f, &p, RxL4Sum::Unknown));
            assert_eq!(f, bad, "a wrong checksum is not mended");
            assert!(!l4_checksum_ok(&f, &p, RxL4Sum::Unknown));
        }
    }

    #[test]
    fn the_drivers_word_is_taken() {
        let good = frames().remove(1);
        let mut f = good.clone();
        let p = parse(&f).unwrap();
        let (at, _) = l4_sum(&f, &p).unwrap();
        f[at..at + 2].copy_from_slice(&[0x12, 0x34]);
        // Virtio's NEEDS_CSUM: whatever the field holds, it gets finished.
        assert!(finish_partial(&mut f, &p, RxL4Sum::Partial));
        assert_eq!(f, good);
        let mut g = partial(good.clone());
        assert!(!finish_partial(&mut g, &p, RxL4Sum::Good));
        assert!(l4_checksum_ok(&g, &p, RxL4Sum::Good));
        assert!(!l4_checksum_ok(&good, &p, RxL4Sum::Bad));
    }

    #[test]
    fn udp_without_a_checksum_fragments_and_icmp_pass_untouched() {
        let mut f = Builder::udp_v4("10.9.0.2:5000", "198.18.0.10:53", b"q").build();
        let p = parse(&f).unwrap();
        f[p.l4_offset + 6..p.l4_offset + 8].copy_from_slice(&[0, 0]);
        let before = f.clone();
        assert!(!finish_partial(&mut f, &p, RxL4Sum::Unknown));
        assert!(l4_checksum_ok(&f, &p, RxL4Sum::Unknown));
        assert_eq!(f, before);
        let echo = Builder::icmp_echo("10.9.0.2", "10.0.0.1", 7, b"ping").build();
        let p = parse(&echo).unwrap();
        assert!(l4_checksum_ok(&echo, &p, RxL4Sum::Unknown));
        let mut frag = Builder::tcp_v4("10.9.0.2:1", "198.18.0.10:80", tcp::Flags::SYN).build();
        let mut p = parse(&frag).unwrap();
        p.fragment = true;
        assert!(!finish_partial(&mut frag, &p, RxL4Sum::Unknown));
    }

    #[test]
    fn oversize_frames_are_told_apart() {
        let big = Builder::tcp_v4("10.9.0.2:40000", "198.18.0.10:80", tcp::Flags::ACK)
            .payload(&[0x42; 3000])
            .build();
        assert_eq!(
            oversize(&big, 1500),
            Oversize::TcpV4 {
                l2: 14,
                l3: 20,
                l4: 20
            }
        );
        assert_eq!(oversize(&big, 3040), Oversize::Fits);
        let tagged = Builder::tcp_v4("10.9.0.2:40000", "198.18.0.10:80", tcp::Flags::ACK)
            .payload(&[0x42; 1460])
            .vlan(7)
            .build();
        assert_eq!(oversize(&tagged, 1500), Oversize::Fits);
        let v6 = Builder::tcp_v6("[fd00::2]:40000", "[fd00::10]:80", tcp::Flags::ACK)
            .payload(&[0x42; 3000])
            .build();
        assert!(matches!(oversize(&v6, 1500), Oversize::TcpV6(_)));
        let v6_udp = Builder::udp_v6("[fd00::2]:1", "[fd00::10]:53", &[0; 3000]).build();
        assert_eq!(oversize(&v6_udp, 1500), Oversize::Other);
        let udp = Builder::udp_v4("10.9.0.2:5000", "198.18.0.10:53", &[0; 3000]).build();
        assert_eq!(oversize(&udp, 1500), Oversize::Other);
    }

    /// `f` in TUN mode's outer header (10.0.0.1 -> 10.1.0.5, ident 77).
    fn wrapped(f: &[u8]) -> Vec<u8> {
        let p = parse(f).unwrap();
        let mut b = crate::packet::VecBuf::new(f, 64);
        crate::mode::tun::encap(
            &mut b,
            &p,
            [10, 0, 0, 1].into(),
            [10, 1, 0, 5].into(),
            77,
            1500,
        )
        .unwrap();
        crate::packet::PacketBuf::data(&b).to_vec()
    }

    #[test]
    fn a_wrapped_super_frame_is_unwrapped_and_each_segment_rewrapped() {
        let big = Builder::tcp_v4("10.9.0.2:40000", "198.18.0.10:80", tcp::Flags::ACK)
            .payload(&[0x42; 3000])
            .vlan(7)
            .build();
        assert_eq!(
            oversize(&wrapped(&big), 1500),
            Oversize::IpipTcpV4 {
                l2: 18,
                l3: 20,
                l4: 20
            }
        );
        let mut other = wrapped(&big);
        other[18 + 20 + 9] = ip_proto::UDP;
        assert_eq!(oversize(&other, 1500), Oversize::Other, "only TCP is cut");

        let small = Builder::tcp_v4("10.9.0.2:40000", "198.18.0.10:80", tcp::Flags::ACK)
            .payload(&[0x42; 100])
            .vlan(7)
            .build();
        let mut frame = wrapped(&small);
        let before = frame.clone();
        let outer = unwrap_outer(&mut frame, 18);
        assert_eq!(
            &frame[20..],
            &small[..],
            "the inner frame behind the link header"
        );
        rewrap(&mut frame, 18, &outer, 0);
        assert_eq!(frame, before, "as it was");
        let mut third = frame.clone();
        let outer = unwrap_outer(&mut third, 18);
        rewrap(&mut third, 18, &outer, 3);
        let header = crate::wire::ipv4::Packet::new_unchecked(&third[18..38]);
        assert_eq!(header.ident(), 80);
        assert_eq!(checksum::checksum(0, header.header()), 0);
    }

    #[test]
    fn a_tcp_v6_super_frame_is_cut_as_tso_would() {
        let payload: Vec<u8> = (0..3000u32)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let flags = tcp::Flags::ACK | tcp::Flags::PSH | tcp::Flags::FIN | 0x80;
        let big = Builder::tcp_v6("[fd00::2]:40000", "[fd00::10]:80", flags)
            .payload(&payload)
            .build();
        let Oversize::TcpV6(cut) = oversize(&big, 1500) else {
            panic!("not cut");
        };
        // 1500 - 40 (IPv6) - 20 (TCP) = 1440 bytes a segment.
        assert_eq!(cut.count(), 3);
        let mut seen = Vec::new();
        for k in 0..cut.count() {
            let mut seg = vec![0u8; cut.seg_len(k)];
            cut.write(&big, k, &mut seg);
            let p = parse(&seg).unwrap();
            assert_eq!(p.l3_end, seg.len(), "the payload length fits the segment");
            assert!(p.l3_end - p.l3_offset <= 1500);
            assert!(l4_checksum_ok(&seg, &p, RxL4Sum::Unknown), "segment {k}");
            let t = &seg[p.l4_offset..];
            let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
            assert_eq!(seq, 1000 + 1440 * u32::try_from(k).unwrap());
            let f = t[13];
            assert_eq!(f & 0x80 != 0, k == 0, "CWR on the first only");
            assert_eq!(
                f & (tcp::Flags::FIN | tcp::Flags::PSH) != 0,
                k == 2,
                "FIN and PSH on the last only"
            );
            seen.extend_from_slice(&seg[p.l4_offset + 20..]);
        }
        assert_eq!(seen, payload, "every byte once, in order");
        assert_eq!((cut.seg_len(0), cut.seg_len(2)), (14 + 1500, 14 + 60 + 120));
    }

    #[test]
    fn checksums_are_filled_from_scratch() {
        let good = Builder::tcp_v4("10.9.0.2:40000", "198.18.0.10:80", tcp::Flags::ACK)
            .payload(&[0x42; 100])
            .build();
        let mut f = good.clone();
        f[14 + 10] ^= 0xff;
        f[14 + 20 + 16] ^= 0xff;
        assert!(fill_checksums(&mut f));
        assert_eq!(f, good);
        let v6 = Builder::tcp_v6("[fd00::2]:1", "[fd00::10]:80", tcp::Flags::ACK).build();
        let mut f = v6.clone();
        f[14 + 40 + 16] ^= 0xff;
        assert!(fill_checksums(&mut f));
        assert_eq!(f, v6);
        let echo = Builder::icmp_echo("10.9.0.2", "10.0.0.1", 7, b"ping").build();
        assert!(!fill_checksums(&mut echo.clone()));
    }

    #[test]
    fn a_computed_zero_udp_checksum_is_sent_as_all_ones() {
        // Search a payload whose UDP checksum computes to zero, then check
        // that finishing its partial form stores 0xffff.
        for x in 0..=u16::MAX {
            let f = Builder::udp_v4("10.9.0.2:5000", "198.18.0.10:53", &x.to_be_bytes()).build();
            let p = parse(&f).unwrap();
            if f[p.l4_offset + 6..p.l4_offset + 8] != [0xff, 0xff] {
                continue;
            }
            let mut g = partial(f.clone());
            assert!(finish_partial(&mut g, &p, RxL4Sum::Unknown));
            assert_eq!(g, f);
            return;
        }
        panic!("no payload sums to zero");
    }
}
