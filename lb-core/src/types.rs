//! The shared vocabulary of the crate: addresses in their stored form,
//! the transport protocol, the forwarding mode, timeouts, statistics and
//! the prefetch hook. Every module may import it; it imports nothing of
//! the crate, so the modules above it form no circle (the crate's top
//! comment gives the layers).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address as sessions store it: IPv4 mapped into IPv6 (::ffff:a.b.c.d),
/// so both families share one layout.
pub type Addr = [u8; 16];

/// Converts an address to the stored form.
#[inline]
pub fn addr(a: IpAddr) -> Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Converts a stored address back.
#[inline]
pub fn ip(a: &Addr) -> IpAddr {
    let v6 = Ipv6Addr::from(*a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The stored form of an IPv4 address.
#[inline]
pub fn addr_v4(a: Ipv4Addr) -> Addr {
    a.to_ipv6_mapped().octets()
}

/// A packet's 5-tuple, as looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// No session / no link.
pub const NIL: u32 = u32::MAX;

/// The transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    /// The protocol of an IP protocol number, if a service can use it.
    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// How packets reach a real server (ipvsadm's -g, -m, -i, and Full-NAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardMode {
    /// Direct routing: only the destination MAC changes.
    Dr,
    /// NAT: destination rewritten; replies come back through the LB.
    Nat,
    /// IPIP tunnel to the real server.
    Tun,
    /// Full-NAT: source and destination rewritten.
    Fnat,
}

impl ForwardMode {
    /// ipvsadm's name in listings (`Route`, `Masq`, `Tunnel`, `FullNat`).
    pub fn ipvsadm_name(self) -> &'static str {
        match self {
            ForwardMode::Dr => "Route",
            ForwardMode::Nat => "Masq",
            ForwardMode::Tun => "Tunnel",
            ForwardMode::Fnat => "FullNat",
        }
    }

    /// Whether the mode can send to a port other than the VIP's.
    pub fn maps_ports(self) -> bool {
        matches!(self, ForwardMode::Nat | ForwardMode::Fnat)
    }
}

impl fmt::Display for ForwardMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForwardMode::Dr => "dr",
            ForwardMode::Nat => "nat",
            ForwardMode::Tun => "tun",
            ForwardMode::Fnat => "fnat",
        })
    }
}

impl FromStr for ForwardMode {
    type Err = String;

    fn from_str(s: &str) -> Result<ForwardMode, String> {
        match s.to_ascii_lowercase().as_str() {
            "dr" | "route" | "gatewaying" => Ok(ForwardMode::Dr),
            "nat" | "masq" | "masquerading" => Ok(ForwardMode::Nat),
            "tun" | "tunnel" | "ipip" => Ok(ForwardMode::Tun),
            "fnat" | "fullnat" | "full-nat" => Ok(ForwardMode::Fnat),
            _ => Err(format!(
                "unknown forwarding mode {s:?}; valid: dr, nat, tun, fnat"
            )),
        }
    }
}

/// Connection timeouts in seconds, per TCP state and for UDP and ICMP.
/// Defaults are IPVS's (`tcp_timeouts` in ip_vs_proto_tcp.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_established: u32,
    pub tcp_syn_sent: u32,
    pub tcp_syn_recv: u32,
    pub tcp_fin_wait: u32,
    pub tcp_time_wait: u32,
    pub tcp_close: u32,
    pub tcp_close_wait: u32,
    pub tcp_last_ack: u32,
    pub udp: u32,
    pub icmp: u32,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            tcp_established: 900,
            tcp_syn_sent: 120,
            tcp_syn_recv: 60,
            tcp_fin_wait: 120,
            tcp_time_wait: 120,
            tcp_close: 10,
            tcp_close_wait: 60,
            tcp_last_ack: 30,
            udp: 300,
            icmp: 60,
        }
    }
}

/// ipvsadm --stats counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub conns: u64,
    pub in_pkts: u64,
    pub out_pkts: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.conns += o.conns;
        self.in_pkts += o.in_pkts;
        self.out_pkts += o.out_pkts;
        self.in_bytes += o.in_bytes;
        self.out_bytes += o.out_bytes;
    }
}

/// Loading a cache line early, without waiting for it: how a burst
/// overlaps the misses of its session lookups with the work on earlier
/// frames. A prefetch instruction is `unsafe` to call in Rust and lb-core
/// has no unsafe code, so the caller brings one (the dataplane's DPDK layer
/// has it); [`NoPrefetch`] makes the engine read lines ahead with ordinary
/// loads instead, in stages.
pub trait Prefetch {
    /// Whether [`prefetch`](Self::prefetch) really prefetches. If not, the
    /// engine never calls it.
    const ACTIVE: bool = true;
    /// Starts loading the cache line that holds the start of `r`.
    fn prefetch<T>(&self, r: &T);
}

/// No prefetch instruction: [`Worker::process_burst`](crate::engine::Worker::process_burst) reads ahead with
/// loads.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPrefetch;

impl Prefetch for NoPrefetch {
    const ACTIVE: bool = false;
    fn prefetch<T>(&self, _: &T) {}
}
