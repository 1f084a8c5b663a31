//! Traffic profiles: packet templates whose 5-tuples walk configurable
//! ranges, turned into frames one at a time (for a pcap file or a port).
//!
//! Flow `i` of a profile comes from client address `clients + i / ports`
//! and port `client_ports.0 + i % ports`, where `ports` is the size of the
//! client port range, and goes to the VIP. Frames are `pkt_bytes - 4` long
//! (the size on the wire counts the Ethernet FCS, as pktgen's does), or the
//! headers' length when that is more.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lb_core::testpkt::Builder;
use lb_core::wire::{tcp, MacAddr};

/// What each packet of a flow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// TCP SYN: every packet opens a connection.
    Syn,
    /// TCP data (ACK|PSH) on established flows, after one SYN per flow.
    Data,
    /// UDP datagrams.
    Udp,
}

/// A profile: a template and the ranges its flows walk.
#[derive(Debug, Clone)]
pub struct Profile {
    pub template: Template,
    /// On-the-wire size, FCS included (64 to 1518).
    pub pkt_bytes: usize,
    pub flows: u32,
    /// The first client address; IPv6 when this is.
    pub clients: IpAddr,
    /// Client ports, inclusive.
    pub client_ports: (u16, u16),
    pub vip: SocketAddr,
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    /// Passes over the flows (data and UDP); each pass in a new random order
    /// when `shuffle` is set.
    pub rounds: u32,
    pub shuffle: bool,
    /// Data profiles: open each flow with a SYN first.
    pub handshake: bool,
    /// Data profiles: the rounds carry real servers' answers instead of
    /// the clients' data, flow `i`'s from `replies[i].0` to `replies[i].1`
    /// (a Full-NAT local address and port); empty for client data.
    pub replies: Vec<(SocketAddr, SocketAddr)>,
}

/// Why a profile cannot be made.
#[derive(Debug, PartialEq, Eq)]
pub struct ProfileError(pub String);

impl std::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProfileError {}

/// The Ethernet FCS, counted in a packet's size on the wire.
const FCS: usize = 4;

impl Profile {
    /// Checks the ranges: enough client addresses and ports for the flows,
    /// one address family, a size an Ethernet frame can have.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let err = |m: String| Err(ProfileError(m));
        if self.flows == 0 {
            return err("a profile needs at least one flow".into());
        }
        if !(64..=1518).contains(&self.pkt_bytes) {
            return err(format!(
                "packet size {} is not an Ethernet size (64 to 1518 bytes)",
                self.pkt_bytes
            ));
        }
        if self.clients.is_ipv4() != self.vip.is_ipv4() {
            return err("clients and VIP must be of one address family".into());
        }
        let (lo, hi) = self.client_ports;
        if lo == 0 || lo > hi {
            return err(format!("client ports {lo}-{hi} are not a range of ports"));
        }
        if self.clients.is_ipv4() {
            let last = u64::from(u32::from(v4(self.clients))) + u64::from(self.addresses() - 1);
            if last > u64::from(u32::MAX) {
                return err(format!(
                    "{} flows from {} run past the last IPv4 address",
                    self.flows, self.clients
                ));
            }
        }
        Ok(())
    }

    fn ports_per_address(&self) -> u32 {
        u32::from(self.client_ports.1 - self.client_ports.0) + 1
    }

    /// How many client addresses the flows use.
    pub fn addresses(&self) -> u32 {
        self.flows.div_ceil(self.ports_per_address())
    }

    /// Flow `i`'s client address and port.
    pub fn client(&self, i: u32) -> SocketAddr {
        let per = self.ports_per_address();
        let port = self.client_ports.0 + u16::try_from(i % per).unwrap_or(0);
        let n = i / per;
        let ip = match self.clients {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(n))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(n.into()))),
        };
        SocketAddr::new(ip, port)
    }

    /// Packets in the whole profile.
    pub fn packets(&self) -> u64 {
        let flows = u64::from(self.flows);
        match self.template {
            Template::Syn => flows,
            Template::Data => flows * u64::from(self.rounds) + u64::from(self.handshake) * flows,
            Template::Udp => flows * u64::from(self.rounds),
        }
    }

    /// The frame of flow `i`, as `syn` or as the template says.
    pub fn frame(&self, i: u32, syn: bool, round: u32) -> Vec<u8> {
        let client = self.client(i);
        let mut b = match self.template {
            Template::Udp => Builder::udp_v4("1.1.1.1:1", "2.2.2.2:2", &[]),
            _ if syn => Builder::tcp_v4("1.1.1.1:1", "2.2.2.2:2", tcp::Flags::SYN),
            _ => Builder::tcp_v4("1.1.1.1:1", "2.2.2.2:2", tcp::Flags::ACK | tcp::Flags::PSH)
                .seq_ack(1001 + round.wrapping_mul(1000), 1),
        };
        b.src = client;
        b.dst = self.vip;
        if let Some(&(server, local)) = self.replies.get(i as usize).filter(|_| !syn) {
            b.src = server;
            b.dst = local;
        }
        b = b.macs(self.src_mac, self.dst_mac);
        let headers = b.build().len();
        let want = self.pkt_bytes - FCS;
        if want > headers {
            b.payload = vec![0x5a; want - headers];
        }
        b.build()
    }

    /// Every frame of the profile in order: for data, the SYNs of all flows
    /// first, then the rounds.
    pub fn for_each_frame(&self, mut f: impl FnMut(&[u8])) {
        if self.template == Template::Syn || (self.template == Template::Data && self.handshake) {
            for i in 0..self.flows {
                f(&self.frame(i, true, 0));
            }
            if self.template == Template::Syn {
                return;
            }
        }
        let mut order: Vec<u32> = (0..self.flows).collect();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..self.rounds {
            if self.shuffle {
                rng.shuffle(&mut order);
            }
            for &i in &order {
                f(&self.frame(i, false, round));
            }
        }
    }

    /// Writes every frame to a pcap file at `path`; returns how many.
    pub fn write_pcap(&self, path: &std::path::Path) -> Result<u64, String> {
        let failed = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
        let mut w = crate::pcap::Writer::create(path).map_err(failed)?;
        let mut err = None;
        self.for_each_frame(|f| {
            if err.is_none() {
                err = w.write(f).err();
            }
        });
        if let Some(e) = err {
            return Err(failed(e));
        }
        w.finish().map_err(failed)
    }
}

fn v4(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

/// A small reproducible generator for the shuffles.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn shuffle(&mut self, v: &mut [u32]) {
        for i in (1..v.len()).rev() {
            let j = usize::try_from(self.next() % (i as u64 + 1)).unwrap_or(0);
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::testpkt::{LB_MAC, PEER_MAC};

    fn profile(template: Template) -> Profile {
        Profile {
            template,
            pkt_bytes: 64,
            flows: 70_000,
            clients: "172.16.0.1".parse().unwrap(),
            client_ports: (1024, 65535),
            vip: "198.18.0.10:80".parse().unwrap(),
            src_mac: PEER_MAC,
            dst_mac: LB_MAC,
            rounds: 1,
            shuffle: true,
            handshake: true,
            replies: Vec::new(),
        }
    }

    #[test]
    fn flows_walk_ports_then_addresses() {
        let p = profile(Template::Syn);
        assert_eq!(p.client(0), "172.16.0.1:1024".parse().unwrap());
        assert_eq!(p.client(64_511), "172.16.0.1:65535".parse().unwrap());
        assert_eq!(p.client(64_512), "172.16.0.2:1024".parse().unwrap());
        assert_eq!(p.addresses(), 2);
    }

    #[test]
    fn frames_have_the_size_on_the_wire_less_the_fcs() {
        let mut p = profile(Template::Data);
        assert_eq!(p.frame(5, false, 0).len(), 60);
        p.pkt_bytes = 1518;
        assert_eq!(p.frame(5, true, 0).len(), 1514);
        p.clients = "2001:db8::1".parse().unwrap();
        p.vip = "[2001:db8:1::10]:80".parse().unwrap();
        p.pkt_bytes = 64;
        // 14 + 40 + 20: IPv6 headers are longer than 60 bytes.
        assert_eq!(p.frame(5, false, 0).len(), 74);
    }

    #[test]
    fn data_profile_opens_every_flow_then_visits_each_once_a_round() {
        let mut p = profile(Template::Data);
        p.flows = 1000;
        p.rounds = 3;
        let mut syns = 0;
        let mut seen = vec![0u32; 1000];
        p.for_each_frame(|f| {
            let flags = f[14 + 20 + 13];
            if flags & tcp::Flags::SYN != 0 {
                syns += 1;
            } else {
                let port = u16::from_be_bytes([f[34], f[35]]);
                seen[usize::from(port - 1024)] += 1;
            }
        });
        assert_eq!(syns, 1000);
        assert!(seen.iter().all(|&n| n == 3));
        assert_eq!(p.packets(), 4000);
    }

    #[test]
    fn bad_ranges_are_refused() {
        let mut p = profile(Template::Udp);
        p.pkt_bytes = 40;
        assert!(p.validate().unwrap_err().0.contains("64 to 1518"));
        let mut p = profile(Template::Udp);
        p.vip = "[2001:db8::1]:80".parse().unwrap();
        assert!(p.validate().unwrap_err().0.contains("one address family"));
        let mut p = profile(Template::Udp);
        p.clients = "255.255.255.255".parse().unwrap();
        assert!(p.validate().unwrap_err().0.contains("past the last"));
        assert!(profile(Template::Syn).validate().is_ok());
    }
}
