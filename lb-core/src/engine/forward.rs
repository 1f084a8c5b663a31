//! A packet of an existing session, in either direction: its TCP state
//! and its real server's counts follow it ([`Worker::track`],
//! [`Worker::account`]), then its mode rewrites it: towards the real
//! server ([`Worker::inbound`], [`Worker::send_to_rs`], which a new
//! connection's first packet also takes) or back to the client
//! ([`Worker::outbound`], NAT and Full-NAT only).

use crate::mode::{self, tun};
use crate::packet::{PacketBuf, Parsed};
use crate::session::{flags, next_state, Direction, Hashed, Session, SessionId, State};
use crate::types::{ForwardMode, Prefetch, Protocol, NIL};
use crate::wire::ip_proto;

use super::{tunnel_of, Action, Counter, Worker, NO_DEST};

impl Worker {
    /// Updates a TCP session's state and deadline for a segment, with the
    /// active/inactive accounting of its real server.
    pub(super) fn track(&mut self, id: SessionId, p: &Parsed, dir: Direction) {
        let s = self.sessions.get_mut(id);
        let old = s.state;
        let new = if s.proto == ip_proto::TCP {
            next_state(old, dir, p.tcp_flags)
        } else {
            old
        };
        let expires = self.now.wrapping_add(new.timeout(&self.snap.timeouts));
        s.state = new;
        s.expires = expires;
        if old == new {
            return;
        }
        let dest = s.dest;
        let inactive = s.is_inactive();
        if inactive && new.is_active() {
            s.flags &= !flags::INACTIVE;
            self.dests.update_load(dest, |l| {
                l.inactive = l.inactive.saturating_sub(1);
                l.active += 1;
            });
        } else if !inactive && !new.is_active() {
            s.flags |= flags::INACTIVE;
            self.dests.update_load(dest, |l| {
                l.active = l.active.saturating_sub(1);
                l.inactive += 1;
            });
        }
        self.emit(id);
    }

    /// Counts a packet of `bytes` to or from real server `dest`, on it
    /// and on its service.
    pub(super) fn account(&mut self, dest: u32, bytes: usize, inbound: bool) {
        let svc = self.dests.dests[dest as usize].svc;
        let bytes = u64::try_from(bytes).unwrap_or(0);
        let d = &mut self.dests.dests[dest as usize].stats;
        let v = &mut self.dests.svcs[svc as usize].stats;
        for st in [d, v] {
            if inbound {
                st.in_pkts += 1;
                st.in_bytes += bytes;
            } else {
                st.out_pkts += 1;
                st.out_bytes += bytes;
            }
        }
    }

    /// Client to real server on an existing session.
    pub(super) fn inbound<P: Prefetch>(
        &mut self,
        buf: &mut impl PacketBuf,
        p: &Parsed,
        id: SessionId,
        h: Hashed,
        prefetch: &P,
    ) -> Action {
        let s = *self.sessions.get(id);
        if self.cfg.expire_nodest_conn
            && s.dest != NIL
            && self.dests.dests[s.dest as usize].idx == NIL
        {
            self.emit_removal(id);
            self.close(id);
            let starts = p.proto == ip_proto::UDP
                || (p.proto == ip_proto::TCP && p.tcp_flags.syn() && !p.tcp_flags.ack());
            if let (true, Some(proto)) = (starts, Protocol::from_number(p.proto)) {
                if let Some(si) = self.snap.lookup_addr(proto, &p.dst, p.dport) {
                    return self.new_session(buf, p, si, h, prefetch);
                }
            }
            return self.drop(Counter::DropDestRemoved);
        }
        // A new SYN on a closing connection's tuple starts a new connection:
        // after TIME_WAIT or CLOSE, and after FIN_WAIT when the LB never saw
        // the server's side (DR, TUN: the client closed; IPVS's
        // conn_reuse_mode bit 2). Otherwise a client reusing its port would
        // stick to the old server and skip the scheduler.
        let closing = match s.state {
            State::TimeWait | State::Close => true,
            State::FinWait => !s.has_outbound(),
            _ => false,
        };
        if p.proto == ip_proto::TCP && p.tcp_flags.syn() && !p.tcp_flags.ack() && closing {
            self.emit_removal(id);
            self.close(id);
            if let Some(si) = self.snap.lookup_addr(Protocol::Tcp, &p.dst, p.dport) {
                return self.new_session(buf, p, si, h, prefetch);
            }
        }
        let dir = if s.has_outbound() {
            Direction::Input
        } else {
            Direction::InputOnly
        };
        self.track(id, p, dir);
        self.account(s.dest, p.l3_end - p.l3_offset, true);
        self.send_to_rs(buf, p, &s)
    }

    pub(super) fn send_to_rs(
        &mut self,
        buf: &mut impl PacketBuf,
        p: &Parsed,
        s: &Session,
    ) -> Action {
        let (route, tunnel) = match self.dests.dests.get(s.dest as usize) {
            Some(d) => (d.route, d.tunnel),
            None => {
                let route = self.route(&s.rs);
                let net = &self.snap.network;
                (route, route.and_then(|(port, _)| tunnel_of(net, port)))
            }
        };
        let Some((port, hop)) = route else {
            return self.drop(Counter::DropNoRoute);
        };
        match s.mode {
            ForwardMode::Dr => {
                self.count(Counter::Forwarded);
                Action::Transmit {
                    port,
                    next_hop: mode::dr::next_hop(&s.rs),
                    dest: s.dest,
                }
            }
            ForwardMode::Nat | ForwardMode::Fnat => {
                let forwarded = if s.mode == ForwardMode::Nat {
                    mode::nat::inbound(buf.data_mut(), p, s)
                } else {
                    mode::fnat::inbound(buf.data_mut(), p, s)
                };
                if !forwarded {
                    return self.drop(Counter::DropTtlExceeded);
                }
                self.count(Counter::Forwarded);
                Action::Transmit {
                    port,
                    next_hop: hop,
                    dest: s.dest,
                }
            }
            ForwardMode::Tun => {
                let dst = std::net::Ipv6Addr::from(s.rs).to_ipv4_mapped();
                let (Some((src, mtu)), Some(dst)) = (tunnel, dst) else {
                    return self.drop(Counter::DropUnsupported);
                };
                let ident = self.next_ident();
                match tun::encap(buf, p, src, dst, ident, mtu) {
                    Ok(()) => {
                        self.count(Counter::Forwarded);
                        Action::Transmit {
                            port,
                            next_hop: hop,
                            dest: s.dest,
                        }
                    }
                    Err(tun::TunError::NoHeadroom) => self.drop(Counter::DropNoHeadroom),
                    Err(tun::TunError::NotIpv4) => self.drop(Counter::DropUnsupported),
                    Err(tun::TunError::TooBig { mtu }) => self.too_big(buf, p, mtu),
                }
            }
        }
    }

    /// Real server to client on an existing NAT or Full-NAT session.
    pub(super) fn outbound(
        &mut self,
        buf: &mut impl PacketBuf,
        p: &Parsed,
        id: SessionId,
    ) -> Action {
        let s = *self.sessions.get(id);
        self.track(id, p, Direction::Output);
        self.account(s.dest, p.l3_end - p.l3_offset, false);
        let Some((port, hop)) = self.route(&s.client) else {
            return self.drop(Counter::DropNoRoute);
        };
        let forwarded = if s.mode == ForwardMode::Nat {
            mode::nat::outbound(buf.data_mut(), p, &s)
        } else {
            mode::fnat::outbound(buf.data_mut(), p, &s)
        };
        if !forwarded {
            return self.drop(Counter::DropTtlExceeded);
        }
        self.count(Counter::Forwarded);
        Action::Transmit {
            port,
            next_hop: hop,
            dest: NO_DEST,
        }
    }
}
