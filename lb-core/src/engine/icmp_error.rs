//! ICMP and ICMPv6 errors around balanced connections.
//!
//! An error from the real server's side (a router on the way says
//! "fragmentation needed", or IPv6's "packet too big", about a packet we
//! sent to the real server) must
//! reach the client as if it were about the client's own packet, and one
//! from the client's side must reach the real server. The quoted packet is
//! rewritten back to what the other side sent, the outer addresses are set
//! to that side's view, and the ICMP checksum is computed afresh (the
//! message is short and this path is rare; ICMPv6's covers the
//! pseudo-header, so the new outer addresses too). A quoted IPv6 packet
//! must carry its transport header right after the fixed header: one
//! quoting extension headers is left alone.

use std::net::Ipv4Addr;

use super::{Action, Counter, Worker};
use crate::packet::{PacketBuf, Parsed};
use crate::session::{self, FlowKey};
use crate::types::Addr;
use crate::types::ForwardMode;
use crate::wire::{checksum, icmp, ip_proto, ipv4, ipv6};

fn mapped(b: &[u8]) -> Addr {
    session::addr_v4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

/// The tuple a session sees for the packet `q` quotes (reversed), and
/// where the quoted transport header starts; `None` for anything but TCP or
/// UDP of the outer packet's family with its ports in the quote.
fn quoted(q: &[u8], v4: bool) -> Option<(FlowKey, usize)> {
    let (l4, proto, src, dst) = if v4 {
        if q.len() < ipv4::HEADER_LEN || q[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(q[0] & 0x0f) * 4;
        if ihl < ipv4::HEADER_LEN {
            return None;
        }
        (ihl, q[9], mapped(&q[16..20]), mapped(&q[12..16]))
    } else {
        if q.len() < ipv6::HEADER_LEN || q[0] >> 4 != 6 {
            return None;
        }
        let field = |at: usize| -> Addr { q[at..at + 16].try_into().unwrap_or([0; 16]) };
        (ipv6::HEADER_LEN, q[6], field(24), field(8))
    };
    if q.len() < l4 + 8 || !matches!(proto, ip_proto::TCP | ip_proto::UDP) {
        return None;
    }
    let sport = u16::from_be_bytes([q[l4], q[l4 + 1]]);
    let dport = u16::from_be_bytes([q[l4 + 2], q[l4 + 3]]);
    // The session sees the quoted packet's tuple reversed.
    let rev = FlowKey {
        src,
        dst,
        sport: dport,
        dport: sport,
        proto,
    };
    Some((rev, l4))
}

/// Translates an ICMP or ICMPv6 error quoting a packet of a session;
/// `None` when no session matches (the caller decides what else to do
/// with it).
pub(super) fn translate(w: &mut Worker, buf: &mut impl PacketBuf, p: &Parsed) -> Option<Action> {
    let q_off = p.l4_offset + icmp::HEADER_LEN;
    let v4 = p.is_v4();
    let (rev, ihl) = quoted(buf.data().get(q_off..p.l3_end)?, v4)?;
    // (quoted src, quoted dst, outer src, outer dst, towards)
    let (qsrc, qdst, osrc, odst, towards) = if let Some(id) = w.sessions.lookup_out(&rev) {
        // About our packet to the real server: tell the client about its
        // own packet to the VIP.
        let s = *w.sessions.get(id);
        (
            (s.client, s.cport),
            (s.vip, s.vport),
            s.vip,
            s.client,
            s.client,
        )
    } else if let Some(id) = w.sessions.lookup_in(&rev) {
        // About our reply to the client: tell the real server about its
        // own reply.
        let s = *w.sessions.get(id);
        if !s.has_outbound() {
            return None;
        }
        let peer = if s.mode == ForwardMode::Fnat {
            (s.laddr, s.lport)
        } else {
            (s.client, s.cport)
        };
        ((s.rs, s.rport), peer, peer.0, s.rs, s.rs)
    } else {
        return None;
    };
    let Some((port, hop)) = w.route(&towards) else {
        return Some(w.drop(Counter::DropNoRoute));
    };
    let data = buf.data_mut();
    {
        let q = &mut data[q_off..p.l3_end];
        if v4 {
            q[12..16].copy_from_slice(&qsrc.0[12..]);
            q[16..20].copy_from_slice(&qdst.0[12..]);
        } else {
            q[8..24].copy_from_slice(&qsrc.0);
            q[24..40].copy_from_slice(&qdst.0);
        }
        q[ihl..ihl + 2].copy_from_slice(&qsrc.1.to_be_bytes());
        q[ihl + 2..ihl + 4].copy_from_slice(&qdst.1.to_be_bytes());
        if v4 {
            q[10..12].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(0, &q[..ihl]);
            q[10..12].copy_from_slice(&c.to_be_bytes());
        }
    }
    if !crate::mode::forward(data, p, Some((&osrc, 0)), Some((&odst, 0))) {
        return Some(w.drop(Counter::DropTtlExceeded));
    }
    let pseudo = if v4 {
        0
    } else {
        let len = u32::try_from(p.l3_end - p.l4_offset).unwrap_or(0);
        checksum::pseudo_v6(osrc, odst, ip_proto::ICMPV6, len)
    };
    icmp::Packet::new_unchecked(&mut data[p.l4_offset..p.l3_end]).fill_checksum(pseudo);
    w.count(Counter::IcmpTranslated);
    Some(Action::Transmit {
        port,
        next_hop: hop,
        dest: super::NO_DEST,
    })
}

/// Rebuilds the frame in place as an ICMP "fragmentation needed" from
/// `src` to the packet's sender, quoting its IP header and 8 bytes.
pub(super) fn frag_needed(
    w: &mut Worker,
    buf: &mut impl PacketBuf,
    p: &Parsed,
    src: Ipv4Addr,
    mtu: u16,
) -> Option<Action> {
    if !p.is_v4() {
        return None;
    }
    let l3 = p.l3_offset;
    let (sender, ihl) = {
        let ip = ipv4::Packet::new_unchecked(&buf.data()[l3..p.l3_end]);
        (ip.src_addr(), ip.header_len())
    };
    let quoted = (ihl + 8).min(p.l3_end - l3);
    let extra = ipv4::HEADER_LEN + icmp::HEADER_LEN;
    if !buf.prepend(extra) {
        return None;
    }
    let keep = l3 + extra + quoted;
    let len = buf.data().len();
    if !buf.trim(len - keep) {
        return None;
    }
    let ident = w.next_ident();
    let data = buf.data_mut();
    data.copy_within(extra..extra + l3, 0);
    let total = u16::try_from(extra + quoted).ok()?;
    {
        let mut ip = ipv4::Packet::new_unchecked(&mut data[l3..l3 + ipv4::HEADER_LEN]);
        ip.set_version_and_header_len(ipv4::HEADER_LEN);
        ip.set_tos(0);
        ip.set_total_len(total);
        ip.set_ident(ident);
        ip.set_unfragmented(false);
        ip.set_ttl(64);
        ip.set_protocol(ip_proto::ICMP);
        ip.set_src_addr(src);
        ip.set_dst_addr(sender);
        ip.fill_checksum();
    }
    {
        let mut m = icmp::Packet::new_unchecked(&mut data[l3 + ipv4::HEADER_LEN..keep]);
        m.set_msg_type(icmp::v4::DEST_UNREACHABLE);
        m.set_code(icmp::v4::CODE_FRAG_NEEDED);
        m.set_mtu(u32::from(mtu));
        m.fill_checksum(0);
    }
    let (port, hop) = w.route(&session::addr_v4(sender))?;
    Some(Action::Transmit {
        port,
        next_hop: hop,
        dest: super::NO_DEST,
    })
}
