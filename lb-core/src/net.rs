//! The load balancer's own interfaces, addresses and routes: which port a
//! packet leaves by and towards which next hop, by longest prefix match.
//!
//! Routes are few on a load balancer (connected networks, a default
//! gateway, a handful of statics), so the table is a list sorted by prefix
//! length and scanned; each interface address contributes its connected
//! route.

use std::net::IpAddr;

use crate::offload::RxChecksum;
use crate::types::{addr, Addr};
use crate::wire::MacAddr;

/// One port of the load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The dataplane's port index.
    pub port: u16,
    pub mac: MacAddr,
    /// Its addresses (the DIP and others) with prefix lengths.
    pub addrs: Vec<(IpAddr, u8)>,
    pub mtu: u16,
    /// What the port does with the transport checksums it receives.
    pub rx_checksum: RxChecksum,
}

/// A static route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub prefix: IpAddr,
    pub len: u8,
    pub port: u16,
    /// `None` for an on-link (connected) network.
    pub gateway: Option<IpAddr>,
}

/// Interfaces and routes.
#[derive(Debug, Clone, Default)]
pub struct Network {
    pub interfaces: Vec<Interface>,
    /// The static routes as configured (connected ones come from the
    /// interfaces' addresses).
    pub statics: Vec<Route>,
    /// Sorted longest prefix first (connected routes included).
    routes: Vec<RouteEntry>,
}

/// Why a network description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("route {prefix}/{len}: the prefix length is too long for the address")]
    PrefixLen { prefix: IpAddr, len: u8 },
    #[error("route {prefix}/{len} leaves by port {port}, which has no interface")]
    UnknownPort { prefix: IpAddr, len: u8, port: u16 },
    #[error("port {0} has two interfaces")]
    DuplicatePort(u16),
}

/// Stored prefix length for a family: IPv4 lengths count from bit 96.
fn stored_len(a: IpAddr, len: u8) -> Option<u8> {
    match a {
        IpAddr::V4(_) if len <= 32 => Some(96 + len),
        IpAddr::V6(_) if len <= 128 => Some(len),
        _ => None,
    }
}

/// A route as looked up: the prefix and its mask as 128-bit numbers, so a
/// match is one XOR and one AND.
#[derive(Debug, Clone, Copy)]
struct RouteEntry {
    prefix: u128,
    mask: u128,
    len: u8,
    port: u16,
    gateway: Option<Addr>,
}

impl RouteEntry {
    fn new(prefix: &Addr, len: u8, port: u16, gateway: Option<Addr>) -> RouteEntry {
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len))
        };
        RouteEntry {
            prefix: u128::from_be_bytes(*prefix) & mask,
            mask,
            len,
            port,
            gateway,
        }
    }
}

impl Network {
    /// Validates interfaces and routes; every interface address adds its
    /// connected route.
    pub fn new(interfaces: Vec<Interface>, routes: &[Route]) -> Result<Network, NetError> {
        let mut table = Vec::new();
        let mut ports = std::collections::HashSet::new();
        for i in &interfaces {
            if !ports.insert(i.port) {
                return Err(NetError::DuplicatePort(i.port));
            }
            for &(a, len) in &i.addrs {
                let l = stored_len(a, len).ok_or(NetError::PrefixLen { prefix: a, len })?;
                table.push(RouteEntry::new(&addr(a), l, i.port, None));
            }
        }
        for r in routes {
            let l = stored_len(r.prefix, r.len).ok_or(NetError::PrefixLen {
                prefix: r.prefix,
                len: r.len,
            })?;
            if !ports.contains(&r.port) {
                return Err(NetError::UnknownPort {
                    prefix: r.prefix,
                    len: r.len,
                    port: r.port,
                });
            }
            table.push(RouteEntry::new(
                &addr(r.prefix),
                l,
                r.port,
                r.gateway.map(addr),
            ));
        }
        table.sort_by_key(|r| std::cmp::Reverse(r.len));
        Ok(Network {
            interfaces,
            statics: routes.to_vec(),
            routes: table,
        })
    }

    /// The port and next hop towards `dst`.
    #[inline]
    pub fn route(&self, dst: &Addr) -> Option<(u16, Addr)> {
        let d = u128::from_be_bytes(*dst);
        self.routes
            .iter()
            .find(|r| (d ^ r.prefix) & r.mask == 0)
            .map(|r| (r.port, r.gateway.unwrap_or(*dst)))
    }

    /// The interface of a port.
    pub fn interface(&self, port: u16) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.port == port)
    }

    /// Whether `a` is an address of one of the interfaces.
    pub fn is_local(&self, a: &Addr) -> bool {
        self.interfaces
            .iter()
            .any(|i| i.addrs.iter().any(|(x, _)| addr(*x) == *a))
    }

    /// The first IPv4 address of a port's interface (a tunnel's source).
    pub fn ipv4_of(&self, port: u16) -> Option<std::net::Ipv4Addr> {
        self.interface(port)?
            .addrs
            .iter()
            .find_map(|(a, _)| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Network {
        Network::new(
            vec![
                Interface {
                    port: 0,
                    mac: MacAddr([2, 0, 0, 0, 0, 1]),
                    addrs: vec![("10.0.0.1".parse().unwrap(), 24)],
                    mtu: 1500,
                    rx_checksum: Default::default(),
                },
                Interface {
                    port: 1,
                    mac: MacAddr([2, 0, 0, 0, 0, 2]),
                    addrs: vec![
                        ("10.1.0.1".parse().unwrap(), 16),
                        ("fd01::1".parse().unwrap(), 64),
                    ],
                    mtu: 9000,
                    rx_checksum: Default::default(),
                },
            ],
            &[
                Route {
                    prefix: "0.0.0.0".parse().unwrap(),
                    len: 0,
                    port: 0,
                    gateway: Some("10.0.0.254".parse().unwrap()),
                },
                Route {
                    prefix: "10.9.0.0".parse().unwrap(),
                    len: 20,
                    port: 1,
                    gateway: Some("10.1.0.254".parse().unwrap()),
                },
            ],
        )
        .unwrap()
    }

    fn a(s: &str) -> Addr {
        addr(s.parse().unwrap())
    }

    #[test]
    fn longest_prefix_wins() {
        let n = net();
        assert_eq!(
            n.route(&a("10.0.0.7")),
            Some((0, a("10.0.0.7"))),
            "connected"
        );
        assert_eq!(n.route(&a("10.1.200.3")), Some((1, a("10.1.200.3"))));
        assert_eq!(n.route(&a("10.9.15.1")), Some((1, a("10.1.0.254"))));
        assert_eq!(
            n.route(&a("10.9.16.1")),
            Some((0, a("10.0.0.254"))),
            "outside the /20: the default"
        );
        assert_eq!(
            n.route(&a("192.168.1.1")),
            Some((0, a("10.0.0.254"))),
            "default"
        );
        assert_eq!(n.route(&a("fd01::77")), Some((1, a("fd01::77"))));
        assert_eq!(n.route(&a("fd02::1")), None, "no IPv6 default");
        assert!(n.is_local(&a("10.1.0.1")) && !n.is_local(&a("10.1.0.2")));
        assert_eq!(n.ipv4_of(1), Some("10.1.0.1".parse().unwrap()));
    }

    #[test]
    fn refusals() {
        let bad = Route {
            prefix: "10.0.0.0".parse().unwrap(),
            len: 33,
            port: 0,
            gateway: None,
        };
        assert!(matches!(
            Network::new(vec![], &[bad]),
            Err(NetError::PrefixLen { .. })
        ));
        let bad = Route {
            prefix: "10.0.0.0".parse().unwrap(),
            len: 8,
            port: 5,
            gateway: None,
        };
        assert!(matches!(
            Network::new(vec![], &[bad]),
            Err(NetError::UnknownPort { port: 5, .. })
        ));
    }
}
