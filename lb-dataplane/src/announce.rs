//! The VIPs the dataplane can serve, kept as routes in a kernel routing
//! table of their own (`[exception] announce_table`), for a routing daemon
//! to announce: BIRD's kernel protocol with `learn` reads the table and
//! exports what it finds over BGP.
//!
//! A VIP (a firewall-mark service's match prefix) has its route while it
//! is served (not on standby) and one of its services has a real server
//! with a weight: when the health checks take the last server out, the
//! route goes, the daemon withdraws the announcement and the router sends
//! the flows to the other directors. Full-NAT's local addresses (its own
//! and its peers', `peer_local_addresses`) have theirs while their service
//! is served. The routes point at the exception
//! interface, so the kernel removes them itself when the dataplane dies
//! and its TAP goes; a dataplane that stops deletes them first.
//!
//! Routes are written through rtnetlink (each change acknowledged), not by
//! running `ip route`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use lb_core::service::ServiceSpec;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

/// A prefix to announce: (address, length).
pub type Prefix = (IpAddr, u8);

/// What `specs` (the snapshot's, health applied) asks to announce: the
/// VIP of every served service with a real server that takes new
/// connections (for a firewall-mark service, each of its match prefixes),
/// and the Full-NAT local addresses of every served service, its own and
/// its peers' (the real servers' answers to the connections it carries or
/// may take over come back to them, healthy servers or not).
pub fn wanted<'a>(
    specs: impl IntoIterator<Item = &'a ServiceSpec>,
    standby: impl Fn(&ServiceSpec) -> bool,
) -> BTreeSet<Prefix> {
    let host = |a: &IpAddr| (*a, if a.is_ipv4() { 32 } else { 128 });
    let mut out = BTreeSet::new();
    for s in specs {
        if standby(s) {
            continue;
        }
        out.extend(s.laddrs.iter().chain(&s.peer_laddrs).map(host));
        if !s.reals.iter().any(|r| r.weight > 0) {
            continue;
        }
        if s.key.mark == 0 {
            out.insert(host(&s.key.vip));
        } else {
            out.extend(s.matches.iter().map(|m| (m.prefix, m.len)));
        }
    }
    out
}

/// The routes of one table, kept equal to what is asked.
#[derive(Debug)]
pub struct Announcer {
    socket: Socket,
    interface: String,
    index: u32,
    table: u32,
    held: BTreeSet<Prefix>,
    seq: u32,
}

impl Announcer {
    /// Routes in `table`, through the kernel interface `interface`.
    pub fn new(interface: &str, table: u32) -> std::io::Result<Announcer> {
        let index = crate::kernel_vips::ifindex(interface)?;
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        Ok(Announcer {
            socket,
            interface: interface.to_owned(),
            index,
            table,
            held: BTreeSet::new(),
            seq: 0,
        })
    }

    /// Adds the routes `want` has that the table lacks and deletes those
    /// it no longer has; each refused change is logged, and tried again
    /// at the next call.
    pub fn set(&mut self, want: &BTreeSet<Prefix>) {
        let gone: Vec<Prefix> = self.held.difference(want).copied().collect();
        let new: Vec<Prefix> = want.difference(&self.held).copied().collect();
        for p in gone {
            match self.change(p, false) {
                Ok(()) => {
                    self.held.remove(&p);
                    tracing::info!(prefix = %show(p), table = self.table, "withdrawn: no longer served here");
                }
                Err(e) => {
                    tracing::error!(prefix = %show(p), table = self.table, error = %e, "cannot delete the route")
                }
            }
        }
        for p in new {
            match self.change(p, true) {
                Ok(()) => {
                    self.held.insert(p);
                    tracing::info!(prefix = %show(p), table = self.table, interface = %self.interface, "announced: served here");
                }
                Err(e) => {
                    tracing::error!(prefix = %show(p), table = self.table, error = %e, "cannot add the route")
                }
            }
        }
    }

    /// What the table holds now.
    pub fn held(&self) -> &BTreeSet<Prefix> {
        &self.held
    }

    /// Adds (`add`) or deletes the route to `p`; the kernel's answer.
    fn change(&mut self, p: Prefix, add: bool) -> std::io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let request = route_request(p, self.index, self.table, add, self.seq);
        self.socket.send(&request, 0)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.socket.recv(&mut &mut buf[..], 0)?;
            if let Some(result) = ack_of(&buf[..n], self.seq) {
                return result;
            }
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.set(&BTreeSet::new());
    }
}

fn show((a, len): Prefix) -> String {
    format!("{a}/{len}")
}

/// An RTM_NEWROUTE (created or replaced) or RTM_DELROUTE for `p`, a link
/// route through interface `index` in `table`, asking for an answer.
fn route_request(p: Prefix, index: u32, table: u32, add: bool, seq: u32) -> Vec<u8> {
    let mut m = RouteMessage::default();
    m.header.address_family = if p.0.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.destination_prefix_length = p.1;
    // Tables above 255 only fit the attribute; the header says so.
    m.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    m.header.protocol = RouteProtocol::Static;
    m.header.scope = RouteScope::Link;
    m.header.kind = RouteType::Unicast;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(p.0)));
    m.attributes.push(RouteAttribute::Oif(index));
    m.attributes.push(RouteAttribute::Table(table));
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    if add {
        header.flags |= NLM_F_CREATE | NLM_F_REPLACE;
    }
    header.sequence_number = seq;
    let inner = if add {
        RouteNetlinkMessage::NewRoute(m)
    } else {
        RouteNetlinkMessage::DelRoute(m)
    };
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(inner));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// The kernel's answer to request `seq` in `bytes`, if there: success, or
/// its error. A route already gone counts as deleted.
fn ack_of(bytes: &[u8], seq: u32) -> Option<std::io::Result<()>> {
    let mut at = 0;
    while at < bytes.len() {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[at..]).ok()?;
        let len = msg.header.length as usize;
        if msg.header.sequence_number == seq {
            if let NetlinkPayload::Error(e) = msg.payload {
                return Some(match e.code {
                    None => Ok(()),
                    Some(c) if -c.get() == libc::ESRCH => Ok(()),
                    Some(c) => Err(std::io::Error::from_raw_os_error(-c.get())),
                });
            }
        }
        if len == 0 {
            break;
        }
        at += len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::service::{ForwardMode, MarkMatch, Protocol, RealServer, ServiceKey};

    fn service(vip: &str, weights: &[u32]) -> ServiceSpec {
        let mut s = ServiceSpec::new(ServiceKey::new(Protocol::Tcp, vip.parse().unwrap(), 80));
        for (k, w) in weights.iter().enumerate() {
            s.reals.push(RealServer {
                addr: format!("10.0.0.{}", 10 + k).parse().unwrap(),
                port: 80,
                mode: ForwardMode::Dr,
                weight: *w,
                upper: 0,
                lower: 0,
            });
        }
        s
    }

    fn shown(set: &BTreeSet<Prefix>) -> Vec<String> {
        set.iter().map(|p| show(*p)).collect()
    }

    #[test]
    fn a_vip_is_announced_while_served_and_one_of_its_servers_takes_connections() {
        let up = service("198.18.0.10", &[0, 1]);
        let mut down = service("198.18.0.11", &[0, 0]);
        // Its local addresses stay: connections to quiesced servers go on.
        down.laddrs.push("10.0.1.1".parse().unwrap());
        down.peer_laddrs.push("10.0.1.2".parse().unwrap());
        let none = service("198.18.0.12", &[]);
        let mut standby = service("198.18.0.13", &[1]);
        standby.laddrs.push("10.0.2.1".parse().unwrap());
        let mut mark = service("0.0.0.0", &[1]);
        mark.key.mark = 1;
        mark.matches.push(MarkMatch {
            proto: Protocol::Tcp,
            prefix: "198.19.0.0".parse().unwrap(),
            len: 24,
            ports: Vec::new(),
        });
        // Another service of an announced VIP, without servers, keeps it.
        let mut other_port = service("198.18.0.10", &[]);
        other_port.key.port = 443;
        let specs = [up, down, none, standby, mark, other_port];
        let want = wanted(&specs, |s| s.key.vip.to_string() == "198.18.0.13");
        assert_eq!(
            shown(&want),
            [
                "10.0.1.1/32",
                "10.0.1.2/32",
                "198.18.0.10/32",
                "198.19.0.0/24"
            ]
        );
    }

    #[test]
    fn requests_carry_the_table_and_answers_are_read_by_sequence() {
        let p: Prefix = ("198.18.0.10".parse().unwrap(), 32);
        let bytes = route_request(p, 7, 1000, true, 42);
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(msg.header.sequence_number, 42);
        assert_ne!(msg.header.flags & NLM_F_CREATE, 0);
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)) = msg.payload else {
            panic!("not a new route: {msg:?}");
        };
        assert_eq!(m.header.destination_prefix_length, 32);
        assert!(m.attributes.contains(&RouteAttribute::Table(1000)));
        assert!(m.attributes.contains(&RouteAttribute::Oif(7)));
        // Garbage is no answer, and no panic.
        assert!(ack_of(&[0xff; 5], 42).is_none());
    }
}
