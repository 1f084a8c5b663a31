//! IPv6 Neighbor Discovery (RFC 4861): the Neighbor Solicitation and
//! Advertisement messages that do for IPv6 what ARP does for IPv4, with
//! their link-layer address options.
//!
//! Reading checks what RFC 4861 section 7.1 asks of a receiver (hop limit
//! 255, so the message cannot have come from off the link; code 0; a
//! target that is not multicast; options of non-zero length; the ICMPv6
//! checksum), so that nothing from beyond the link can teach the dataplane
//! a neighbour. Writing builds whole frames: a solicitation for a next hop,
//! an advertisement answering one (in the solicitation's own buffer), and
//! an unsolicited one for an address the dataplane takes over.

use std::net::Ipv6Addr;

use super::checksum;
use super::icmp::v6::{NEIGHBOR_ADVERT, NEIGHBOR_SOLICIT};
use super::{ethernet, ip_proto, ipv6, MacAddr, WireError};

/// The ICMPv6 header and the message's fixed part (flags, target).
pub const MESSAGE_LEN: usize = 24;
/// A link-layer address option for Ethernet.
const LLADDR_OPTION_LEN: usize = 8;
/// A whole solicitation or advertisement frame with its link-layer
/// address option: Ethernet, IPv6, the message, the option.
pub const FRAME_LEN: usize =
    ethernet::HEADER_LEN + ipv6::HEADER_LEN + MESSAGE_LEN + LLADDR_OPTION_LEN;
/// Neighbor Discovery's hop limit, which a receiver insists on.
pub const HOP_LIMIT: u8 = 255;

mod option {
    pub const SOURCE_LLADDR: u8 = 1;
    pub const TARGET_LLADDR: u8 = 2;
}

/// An advertisement's flags (the first byte after the ICMPv6 header).
pub mod flags {
    pub const ROUTER: u8 = 0x80;
    pub const SOLICITED: u8 = 0x40;
    pub const OVERRIDE: u8 = 0x20;
}

/// A solicitation or an advertisement, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// [`NEIGHBOR_SOLICIT`] or [`NEIGHBOR_ADVERT`].
    pub kind: u8,
    /// An advertisement's flags (0 in a solicitation).
    pub flags: u8,
    pub target: Ipv6Addr,
    /// The source (solicitation) or target (advertisement) link-layer
    /// address option, if present.
    pub lladdr: Option<MacAddr>,
}

/// Whether an ICMPv6 type is one of the two messages read here.
pub fn is_ndisc(ty: u8) -> bool {
    ty == NEIGHBOR_SOLICIT || ty == NEIGHBOR_ADVERT
}

/// Reads the message `icmp` (the ICMPv6 message, type first) of an IPv6
/// packet from `src` to `dst` with hop limit `hop_limit`.
pub fn parse(
    icmp: &[u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
) -> Result<Message, WireError> {
    if icmp.len() < MESSAGE_LEN {
        return Err(WireError::Truncated);
    }
    let kind = icmp[0];
    if !is_ndisc(kind) || icmp[1] != 0 || hop_limit != HOP_LIMIT {
        return Err(WireError::Unsupported);
    }
    let len = u32::try_from(icmp.len()).map_err(|_| WireError::BadLength)?;
    let sum = checksum::checksum(
        checksum::pseudo_v6(src.octets(), dst.octets(), ip_proto::ICMPV6, len),
        icmp,
    );
    if sum != 0 {
        return Err(WireError::BadLength);
    }
    let mut t = [0u8; 16];
    t.copy_from_slice(&icmp[8..24]);
    let target = Ipv6Addr::from(t);
    if target.is_multicast() {
        return Err(WireError::Unsupported);
    }
    let wanted = if kind == NEIGHBOR_SOLICIT {
        option::SOURCE_LLADDR
    } else {
        option::TARGET_LLADDR
    };
    let mut lladdr = None;
    let mut rest = &icmp[MESSAGE_LEN..];
    while !rest.is_empty() {
        if rest.len() < 2 {
            return Err(WireError::Truncated);
        }
        let olen = usize::from(rest[1]) * 8;
        if olen == 0 {
            return Err(WireError::BadLength);
        }
        let opt = rest.get(..olen).ok_or(WireError::Truncated)?;
        if opt[0] == wanted && olen == LLADDR_OPTION_LEN {
            let mut m = [0u8; 6];
            m.copy_from_slice(&opt[2..8]);
            lladdr = Some(MacAddr(m));
        }
        rest = &rest[olen..];
    }
    Ok(Message {
        kind,
        flags: if kind == NEIGHBOR_ADVERT { icmp[4] } else { 0 },
        target,
        lladdr,
    })
}

/// The solicited-node multicast address of `ip` (ff02::1:ffXX:XXXX), where
/// its solicitations go.
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet address of IPv6 multicast group `ip` (33:33 and its last
/// four bytes, RFC 2464).
pub fn multicast_mac(ip: Ipv6Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// All nodes on the link, where unsolicited advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Writes into `frame` (at least [`FRAME_LEN`] bytes) a whole frame: an
/// ICMPv6 message of `kind` from `src` (at `src_mac`) to `dst` (at
/// `dst_mac`), with `flags`, `target` and a link-layer address option
/// carrying `src_mac` when `with_lladdr`. Returns the frame's length.
fn write(
    frame: &mut [u8],
    kind: u8,
    (src_mac, dst_mac): (MacAddr, MacAddr),
    (src, dst): (Ipv6Addr, Ipv6Addr),
    flags: u8,
    target: Ipv6Addr,
    with_lladdr: bool,
) -> Option<usize> {
    let icmp_len = MESSAGE_LEN + if with_lladdr { LLADDR_OPTION_LEN } else { 0 };
    let len = ethernet::HEADER_LEN + ipv6::HEADER_LEN + icmp_len;
    let frame = frame.get_mut(..len)?;
    frame[0..6].copy_from_slice(&dst_mac.0);
    frame[6..12].copy_from_slice(&src_mac.0);
    frame[12..14].copy_from_slice(&ethernet::ethertype::IPV6.to_be_bytes());
    let (ip, icmp) = frame[ethernet::HEADER_LEN..].split_at_mut(ipv6::HEADER_LEN);
    ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    let icmp_len16 = u16::try_from(icmp_len).ok()?;
    ip[4..6].copy_from_slice(&icmp_len16.to_be_bytes());
    ip[6] = ip_proto::ICMPV6;
    ip[7] = HOP_LIMIT;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    icmp.fill(0);
    icmp[0] = kind;
    icmp[4] = flags;
    icmp[8..24].copy_from_slice(&target.octets());
    if with_lladdr {
        icmp[24] = if kind == NEIGHBOR_SOLICIT {
            option::SOURCE_LLADDR
        } else {
            option::TARGET_LLADDR
        };
        icmp[25] = 1;
        icmp[26..32].copy_from_slice(&src_mac.0);
    }
    let sum = checksum::checksum(
        checksum::pseudo_v6(
            src.octets(),
            dst.octets(),
            ip_proto::ICMPV6,
            u32::from(icmp_len16),
        ),
        icmp,
    );
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(len)
}

/// A solicitation for `target` from `src` at `mac`, to the target's
/// solicited-node group; the frame's length, or `None` if `frame` is
/// shorter than [`FRAME_LEN`].
pub fn write_solicit(
    frame: &mut [u8],
    mac: MacAddr,
    src: Ipv6Addr,
    target: Ipv6Addr,
) -> Option<usize> {
    let group = solicited_node(target);
    write(
        frame,
        NEIGHBOR_SOLICIT,
        (mac, multicast_mac(group)),
        (src, group),
        0,
        target,
        true,
    )
}

/// An advertisement of `target` at `mac`: to `dst` at `dst_mac` answering
/// a solicitation (`flags` with [`flags::SOLICITED`]), or unsolicited to
/// [`ALL_NODES`]. `with_lladdr` leaves the option out (a unicast
/// solicitation's answer fits a frame without it). Returns the length.
pub fn write_advert(
    frame: &mut [u8],
    (mac, dst_mac): (MacAddr, MacAddr),
    (target, dst): (Ipv6Addr, Ipv6Addr),
    flags: u8,
    with_lladdr: bool,
) -> Option<usize> {
    write(
        frame,
        NEIGHBOR_ADVERT,
        (mac, dst_mac),
        (target, dst),
        flags,
        target,
        with_lladdr,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);

    fn icmp_of(frame: &[u8]) -> &[u8] {
        &frame[ethernet::HEADER_LEN + ipv6::HEADER_LEN..]
    }

    #[test]
    fn a_solicitation_goes_to_the_targets_group_and_reads_back() {
        let src: Ipv6Addr = "fd00::1".parse().unwrap();
        let target: Ipv6Addr = "fd00::12:3456".parse().unwrap();
        let mut f = [0u8; FRAME_LEN];
        assert_eq!(write_solicit(&mut f, MAC, src, target), Some(FRAME_LEN));
        // 33:33:ff:12:34:56, from our MAC, IPv6.
        assert_eq!(
            &f[..14],
            &[0x33, 0x33, 0xff, 0x12, 0x34, 0x56, 2, 0, 0, 0, 0, 1, 0x86, 0xdd]
        );
        let group: Ipv6Addr = "ff02::1:ff12:3456".parse().unwrap();
        assert_eq!(f[14 + 7], 255);
        assert_eq!(&f[14 + 24..14 + 40], &group.octets());
        let m = parse(icmp_of(&f), src, group, 255).unwrap();
        assert_eq!(
            m,
            Message {
                kind: NEIGHBOR_SOLICIT,
                flags: 0,
                target,
                lladdr: Some(MAC)
            }
        );
    }

    #[test]
    fn an_advertisement_reads_back_with_its_flags() {
        let target: Ipv6Addr = "fd00::100".parse().unwrap();
        let dst: Ipv6Addr = "fd00::10".parse().unwrap();
        let peer = MacAddr([2, 0, 0, 0, 0, 9]);
        let mut f = [0u8; FRAME_LEN];
        let fl = flags::SOLICITED | flags::OVERRIDE;
        let n = write_advert(&mut f, (MAC, peer), (target, dst), fl, true).unwrap();
        let m = parse(icmp_of(&f[..n]), target, dst, 255).unwrap();
        assert_eq!(
            (m.kind, m.flags, m.target, m.lladdr),
            (NEIGHBOR_ADVERT, fl, target, Some(MAC))
        );
        // Without the option: 8 bytes shorter, no address.
        let n = write_advert(&mut f, (MAC, peer), (target, dst), fl, false).unwrap();
        assert_eq!(n, FRAME_LEN - 8);
        assert_eq!(
            parse(icmp_of(&f[..n]), target, dst, 255).unwrap().lladdr,
            None
        );
    }

    #[test]
    fn what_could_come_from_off_the_link_or_is_malformed_is_refused() {
        let src: Ipv6Addr = "fd00::1".parse().unwrap();
        let target: Ipv6Addr = "fd00::2".parse().unwrap();
        let group = solicited_node(target);
        let mut f = [0u8; FRAME_LEN];
        write_solicit(&mut f, MAC, src, target).unwrap();
        let icmp = icmp_of(&f).to_vec();
        // Routed here (hop limit below 255).
        assert_eq!(parse(&icmp, src, group, 254), Err(WireError::Unsupported));
        // A checksum that does not hold (or other addresses than summed).
        assert_eq!(parse(&icmp, src, ALL_NODES, 255), Err(WireError::BadLength));
        // An option of length 0 (checksum fixed up so that only it is wrong).
        let mut bad = icmp.clone();
        bad[25] = 0;
        bad[2] = 0;
        bad[3] = 0;
        let s = checksum::checksum(
            checksum::pseudo_v6(src.octets(), group.octets(), ip_proto::ICMPV6, 32),
            &bad,
        );
        bad[2..4].copy_from_slice(&s.to_be_bytes());
        assert_eq!(parse(&bad, src, group, 255), Err(WireError::BadLength));
        assert_eq!(
            parse(&icmp[..20], src, group, 255),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn multicast_addresses_map_as_rfc_2464_says() {
        let ip: Ipv6Addr = "2001:db8::1:2:3:4".parse().unwrap();
        assert_eq!(
            solicited_node(ip),
            "ff02::1:ff03:4".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(multicast_mac(ALL_NODES), MacAddr([0x33, 0x33, 0, 0, 0, 1]));
    }
}
