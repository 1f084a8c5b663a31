//! The addresses the kernel holds on the exception interface, followed
//! through rtnetlink: keepalived's `virtual_ipaddress` puts a VIP there when
//! its VRRP instance becomes master and takes it away when it stops being
//! one, and with `[exception] follow_vips` the dataplane serves a VIP's
//! services exactly while the kernel holds it.
//!
//! A thread subscribes to the IPv4 and IPv6 address groups, asks for a dump
//! of every address, and after each batch of messages sends the interface's
//! whole set when it changed. A lost batch (the socket's buffer overflowed,
//! `ENOBUFS`) is made good by a new dump.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crossbeam_channel::{unbounded, Receiver, Sender};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// The legacy multicast masks of `bind`: RTMGRP_IPV4_IFADDR and
/// RTMGRP_IPV6_IFADDR.
const GROUPS: u32 = 0x10 | 0x100;

/// What the kernel holds on one interface, as it changes.
#[derive(Debug)]
pub struct KernelVips {
    pub interface: String,
    rx: Receiver<BTreeSet<IpAddr>>,
}

impl KernelVips {
    /// The latest set, if it changed since the last call.
    pub fn changed(&self) -> Option<BTreeSet<IpAddr>> {
        self.rx.try_iter().last()
    }
}

/// The interface index of `name`, from sysfs.
pub(crate) fn ifindex(name: &str) -> std::io::Result<u32> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))?;
    text.trim()
        .parse()
        .map_err(|e| std::io::Error::other(format!("/sys/class/net/{name}/ifindex: {e}")))
}

fn dump_request() -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetAddress(AddressMessage::default())),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// The address an address message is about: its local address (the
/// interface's own; `IFA_ADDRESS` is the peer's on point-to-point links).
fn address_of(m: &AddressMessage) -> Option<IpAddr> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

/// Applies the messages in `bytes` to `held`; whether a dump ended.
fn apply(bytes: &[u8], index: u32, held: &mut BTreeSet<IpAddr>) -> bool {
    let mut done = false;
    let mut at = 0;
    while at < bytes.len() {
        let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[at..]) else {
            break;
        };
        let len = msg.header.length as usize;
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m))
                if m.header.index == index =>
            {
                if let Some(a) = address_of(&m) {
                    held.insert(a);
                }
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(m))
                if m.header.index == index =>
            {
                if let Some(a) = address_of(&m) {
                    held.remove(&a);
                }
            }
            NetlinkPayload::Done(_) => done = true,
            _ => {}
        }
        if len == 0 {
            break;
        }
        // Messages are aligned to 4 bytes.
        at += len.div_ceil(4) * 4;
    }
    done
}

/// Starts following the addresses of `interface`.
pub fn watch(interface: &str) -> std::io::Result<KernelVips> {
    let index = ifindex(interface)?;
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&SocketAddr::new(0, GROUPS))?;
    socket.send(&dump_request(), 0)?;
    let (tx, rx) = unbounded();
    let name = interface.to_owned();
    std::thread::Builder::new()
        .name("lb-kernel-vips".into())
        .spawn(move || follow(&socket, index, &name, &tx))?;
    Ok(KernelVips {
        interface: interface.to_owned(),
        rx,
    })
}

fn follow(socket: &Socket, index: u32, interface: &str, tx: &Sender<BTreeSet<IpAddr>>) {
    let mut held = BTreeSet::new();
    // Nothing is sent before the first dump is whole: a partial set would
    // release VIPs the kernel holds.
    let mut synced = false;
    let mut sent: Option<BTreeSet<IpAddr>> = None;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match socket.recv(&mut &mut buf[..], 0) {
            Ok(n) => {
                if apply(&buf[..n], index, &mut held) {
                    synced = true;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                tracing::warn!(
                    interface,
                    "address events were lost: reading them all again"
                );
                held.clear();
                synced = false;
                if let Err(e) = socket.send(&dump_request(), 0) {
                    tracing::error!(interface, error = %e, "cannot ask the kernel for its addresses");
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::error!(interface, error = %e, "the kernel's address events stopped");
                return;
            }
        }
        if synced && sent.as_ref() != Some(&held) {
            if tx.send(held.clone()).is_err() {
                return;
            }
            sent = Some(held.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::AddressFamily;

    fn message(new: bool, index: u32, ip: &str) -> Vec<u8> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = 32;
        m.header.index = index;
        m.attributes
            .push(AddressAttribute::Local(ip.parse().unwrap()));
        let inner = if new {
            RouteNetlinkMessage::NewAddress(m)
        } else {
            RouteNetlinkMessage::DelAddress(m)
        };
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(inner));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        buf
    }

    #[test]
    fn events_of_the_interface_change_the_set_and_others_do_not() {
        let mut held = BTreeSet::new();
        let mut batch = message(true, 7, "198.18.0.10");
        batch.extend(message(true, 8, "198.18.0.11"));
        batch.extend(message(true, 7, "10.0.0.1"));
        assert!(!apply(&batch, 7, &mut held));
        let ips: Vec<String> = held.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.0.0.1", "198.18.0.10"]);
        apply(&message(false, 7, "198.18.0.10"), 7, &mut held);
        assert_eq!(held.len(), 1);
        // Garbage ends the batch without a panic.
        apply(&[0xff; 7], 7, &mut held);
        assert_eq!(held.len(), 1);
    }
}
