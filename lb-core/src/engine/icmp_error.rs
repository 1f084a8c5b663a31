//! ICMP errors around balanced connections (IPv4).
//!
//! An error from the real server's side (a router on the way says
//! "fragmentation needed" about a packet we sent to the real server) must
//! reach the client as if it were about the client's own packet, and one
//! from the client's side must reach the real server. The quoted packet is
//! rewritten back to what the other side sent, the outer addresses are set
//! to that side's view, and the ICMP checksum is computed afresh (the
//! message is short and this path is rare).

use std::net::Ipv4Addr;

use super::{Action, Counter, Worker};
use crate::packet::{PacketBuf, Parsed};
use crate::session::{self, FlowKey};
use crate::types::Addr;
use crate::types::ForwardMode;
use crate::wire::{checksum, icmp, ip_proto, ipv4};

fn mapped(b: &[u8]) -> Addr {
    session::addr_v4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

/// Translates an ICMPv4 error quoting a packet of a session; `None` when no
/// session matches (the caller decides what else to do with it).
pub(super) fn translate(w: &mut Worker, buf: &mut impl PacketBuf, p: &Parsed) -> Option<Action> {
    let q_off = p.l4_offset + icmp::HEADER_LEN;
    let (rev, ihl) = {
        let q = buf.data().get(q_off..p.l3_end)?;
        if q.len() < ipv4::HEADER_LEN || q[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(q[0] & 0x0f) * 4;
        if ihl < ipv4::HEADER_LEN
            || q.len() < ihl + 8
            || !matches!(q[9], ip_proto::TCP | ip_proto::UDP)
        {
            return None;
        }
        let sport = u16::from_be_bytes([q[ihl], q[ihl + 1]]);
        let dport = u16::from_be_bytes([q[ihl + 2], q[ihl + 3]]);
        // The session sees the quoted packet's tuple reversed.
        let rev = FlowKey {
            src: mapped(&q[16..20]),
            dst: mapped(&q[12..16]),
            sport: dport,
            dport: sport,
            proto: q[9],
        };
        (rev, ihl)
    };
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
        q[12..16].copy_from_slice(&qsrc.0[12..]);
        q[16..20].copy_from_slice(&qdst.0[12..]);
        q[ihl..ihl + 2].copy_from_slice(&qsrc.1.to_be_bytes());
        q[ihl + 2..ihl + 4].copy_from_slice(&qdst.1.to_be_bytes());
        q[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(0, &q[..ihl]);
        q[10..12].copy_from_slice(&c.to_be_bytes());
    }
    if !crate::mode::forward(data, p, Some((&osrc, 0)), Some((&odst, 0))) {
        return Some(w.drop(Counter::DropTtlExceeded));
    }
    icmp::Packet::new_unchecked(&mut data[p.l4_offset..p.l3_end]).fill_checksum(0);
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
