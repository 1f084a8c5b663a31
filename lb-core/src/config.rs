//! The dataplane's configuration file (TOML): schema, defaults and validation.
//!
//! Parsing is strict: an unknown key is an error, not a silently ignored typo.
//! Every error carries the line it concerns, so a message reads
//! `demo.toml:12: [[forward]] to: no port named "p9" (ports: p0, p1)`.
//!
//! A file either describes a plain forwarder (`[[forward]]` rules) or a load
//! balancer (`[[service]]` entries, with the ports' addresses, routes and
//! neighbours). [`Config::from_toml`] also turns the load balancer's part into
//! lb-core's own types ([`LbSetup`]), validating every service as a snapshot
//! would, so a bad service is reported with its line before anything starts.

use crate::filter::parse_prefix;
use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;
use toml::Spanned;

use crate::sched::{SchedFlags, SchedKind, DEFAULT_MH_TABLE_SIZE};
use crate::service::{
    self, HealthCheck, HealthKind, MarkMatch, OnFailure, Persistence, RealServer, ServiceKey,
    ServiceSpec,
};
use crate::types::{ForwardMode, Protocol, Timeouts};
use crate::wire::MacAddr;

/// A whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub eal: Eal,
    pub workers: Workers,
    #[serde(default)]
    pub mempool: MempoolConfig,
    #[serde(rename = "port")]
    pub ports: Vec<Port>,
    #[serde(default, rename = "forward")]
    pub forwards: Vec<Forward>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    #[serde(default, rename = "neighbor")]
    pub neighbors: Vec<NeighborConfig>,
    #[serde(default)]
    pub sessions: SessionsConfig,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    pub exception: Option<ExceptionConfig>,
    pub admin: Option<AdminConfig>,
    pub metrics: Option<MetricsConfig>,
    pub sync: Option<SyncConfig>,
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
    /// The load balancer's part in lb-core's types, filled by validation.
    #[serde(skip)]
    pub lb: Option<LbSetup>,
}

/// `[[route]]`: a static route (`prefix = "0.0.0.0/0"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: Spanned<String>,
    pub port: Spanned<String>,
    pub gateway: Option<Spanned<String>>,
}

/// `[[neighbor]]`: a static neighbour (no ARP needed for it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighborConfig {
    pub address: Spanned<String>,
    pub mac: Spanned<String>,
    pub port: Spanned<String>,
}

/// `[sessions]`: each worker's session table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// Sessions per worker (115 bytes each).
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// Full-NAT local ports, inclusive.
    #[serde(default = "default_local_ports")]
    pub local_ports: Spanned<[u16; 2]>,
    /// IPVS's `expire_nodest_conn`: end the sessions of a removed real
    /// server at their next client packet instead of letting them finish.
    #[serde(default)]
    pub expire_nodest_conn: bool,
    /// IPVS's `sloppy_tcp`: a TCP segment other than a SYN opens a session
    /// (for directors behind ECMP, with `mh`).
    #[serde(default)]
    pub sloppy_tcp: bool,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            capacity: default_capacity(),
            local_ports: default_local_ports(),
            expire_nodest_conn: false,
            sloppy_tcp: false,
        }
    }
}

/// `[timeouts]`: seconds, named as `ipvsadm --set` names them (tcp, tcpfin,
/// udp), plus the other TCP states.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    pub tcp: Option<u32>,
    pub tcpfin: Option<u32>,
    pub udp: Option<u32>,
    pub syn_recv: Option<u32>,
    pub time_wait: Option<u32>,
    pub close: Option<u32>,
    pub close_wait: Option<u32>,
    pub last_ack: Option<u32>,
    pub icmp: Option<u32>,
}

/// `[exception]`: where traffic for the load balancer itself that no service
/// claims goes (a TAP port towards the kernel).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionConfig {
    pub port: Spanned<String>,
    /// The kernel's side of the port (a TAP interface's name) and the
    /// addresses the dataplane gives it at start, so kernel programs
    /// (health checks, routing daemons) can use the DIP.
    pub interface: Option<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    /// A VIP is served while the kernel holds it on `interface` (where
    /// keepalived's `virtual_ipaddress` puts it on the VRRP master), and
    /// only then: its services are configured but on standby otherwise.
    pub follow_vips: Option<Spanned<bool>>,
    /// The kernel routing table in which the dataplane keeps a route to
    /// each VIP it can serve (on `interface`): while the VIP is served and
    /// one of its services has a real server to send new connections to.
    /// A routing daemon (BIRD's kernel protocol with `learn`) announces
    /// what it finds there.
    pub announce_table: Option<Spanned<u32>>,
    /// How long a stopping dataplane goes on forwarding after it withdrew
    /// its routes, for the routing daemon to tell the routers (default
    /// 1000 ms).
    pub announce_drain_ms: Option<u64>,
}

/// `[admin]`: the admin socket that lb-ctl talks to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Its path (default [`DEFAULT_ADMIN_SOCKET`]).
    #[serde(default = "default_admin_socket")]
    pub socket: String,
    /// A group (name or number) whose members may use the socket too: the
    /// socket then belongs to it with mode 0660 (else 0600, owner only).
    pub group: Option<Spanned<String>>,
    /// Clients served at once (default 64); when all are connected, a new
    /// one takes the slot of the one idle longest.
    pub max_clients: Option<Spanned<usize>>,
    /// Seconds a client may stay connected without a request (default 60).
    pub idle_timeout: Option<Spanned<f64>>,
    /// Seconds a request may take to arrive whole from its first byte
    /// (default 5).
    pub request_timeout: Option<Spanned<f64>>,
}

impl AdminConfig {
    /// `max_clients`, if set.
    pub fn max_clients(&self) -> Option<usize> {
        self.max_clients.as_ref().map(|n| *n.get_ref())
    }

    /// `idle_timeout`, if set (validated: positive and at most a day).
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        secs(self.idle_timeout.as_ref())
    }

    /// `request_timeout`, if set (validated like `idle_timeout`).
    pub fn request_timeout(&self) -> Option<std::time::Duration> {
        secs(self.request_timeout.as_ref())
    }

    /// The group's id, if one is configured and exists.
    pub fn gid(&self) -> Option<u32> {
        self.group.as_ref().and_then(|g| group_id(g.get_ref()))
    }
}

fn secs(t: Option<&Spanned<f64>>) -> Option<std::time::Duration> {
    t.and_then(|t| std::time::Duration::try_from_secs_f64(*t.get_ref()).ok())
}

/// A group's id, from a number or from its name in /etc/group.
pub fn group_id(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse() {
        return Some(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let mut fields = l.split(':');
        (fields.next()? == group).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// `[sync]`: connection sync with peer directors (absent: off).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// The address and UDP port this director receives on: its DIP, which
    /// the exception path carries to the kernel ("10.0.0.1:8848").
    pub listen: Spanned<String>,
    /// The peers' listen addresses.
    pub peers: Vec<Spanned<String>>,
    /// The shared key the datagrams are authenticated with, or a file
    /// holding it (`key_file`, which stays out of the configuration).
    pub key: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    /// The most records a second taken from the peers (default 100000):
    /// beyond it they are dropped and counted.
    pub max_rate: Option<u32>,
}

/// `[sync]` validated.
#[derive(Clone, PartialEq, Eq)]
pub struct SyncSetup {
    pub listen: std::net::SocketAddr,
    pub peers: Vec<std::net::SocketAddr>,
    pub key: Vec<u8>,
    pub max_rate: u32,
}

impl std::fmt::Debug for SyncSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log.
        f.debug_struct("SyncSetup")
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("max_rate", &self.max_rate)
            .finish()
    }
}

/// `[metrics]`: the Prometheus endpoint (absent: off).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to serve `GET /metrics`, e.g. "127.0.0.1:9110".
    pub listen: Spanned<String>,
}

impl MetricsConfig {
    /// The validated address.
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.get_ref().parse().ok()
    }
}

/// Where the admin socket is unless configured otherwise.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/lb-dataplane.sock";

fn default_admin_socket() -> String {
    DEFAULT_ADMIN_SOCKET.to_owned()
}

/// `[[service]]`: a virtual service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// "tcp" or "udp" (not for a firewall-mark service).
    pub protocol: Option<Spanned<String>>,
    pub vip: Option<Spanned<String>>,
    /// 0 is a catch-all for every port of the VIP.
    pub port: Option<u16>,
    /// A firewall-mark service (ipvsadm -f): one service for the traffic
    /// its `match` list describes, instead of protocol, vip and port.
    pub fwmark: Option<Spanned<u32>>,
    /// A firewall-mark service's traffic, each `protocol:prefix:ports`
    /// (`tcp:198.18.0.10/32:80,443`, `udp:198.18.1.0/24:*`).
    #[serde(default, rename = "match")]
    pub matches: Vec<Spanned<String>>,
    #[serde(default = "default_scheduler")]
    pub scheduler: Spanned<String>,
    /// ipvsadm's -b list, e.g. "sh-port,sh-fallback".
    #[serde(default = "default_flags")]
    pub flags: Spanned<String>,
    /// Persistence timeout in seconds (ipvsadm -p).
    pub persistence: Option<u32>,
    /// Persistence netmask as a prefix length (ipvsadm -M).
    pub netmask: Option<u8>,
    #[serde(default)]
    pub local_addresses: Vec<Spanned<String>>,
    /// The other directors' local addresses of this service, under ECMP
    /// where each director has its own: kept for the connections they sync
    /// here, never used for new ones.
    #[serde(default)]
    pub peer_local_addresses: Vec<Spanned<String>>,
    /// Client prefixes that may open connections (empty: all) and those
    /// that may not (`10.9.0.0/16`, `2001:db8::/32`, one address).
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
    pub mh_table_size: Option<u32>,
    pub health: Option<HealthConfig>,
    #[serde(default, rename = "real")]
    pub reals: Vec<RealConfig>,
}

/// `[service.health]`: how the control thread checks the real servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// "tcp", "http" or "udp".
    pub kind: Spanned<String>,
    /// The port probed (default: each real server's).
    pub port: Option<u16>,
    /// http: the path asked for (default "/") and the status expected (200).
    pub path: Option<String>,
    pub expect: Option<u16>,
    /// udp: what to send (default empty).
    pub payload: Option<String>,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    #[serde(default = "default_rise_fall")]
    pub rise: u32,
    #[serde(default = "default_rise_fall")]
    pub fall: u32,
    /// "quiesce" (weight 0, the default) or "remove".
    pub on_failure: Option<Spanned<String>>,
}

fn default_interval_ms() -> u32 {
    2000
}
fn default_timeout_ms() -> u32 {
    1000
}
fn default_rise_fall() -> u32 {
    2
}

/// `[[service.real]]`: a real server of the service above it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealConfig {
    pub address: Spanned<String>,
    /// 0 or absent takes the service's port.
    #[serde(default)]
    pub port: u16,
    /// dr, nat, tun or fnat.
    pub mode: Spanned<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub upper: u32,
    #[serde(default)]
    pub lower: u32,
}

/// The load balancer's configuration in lb-core's types.
#[derive(Debug, Clone, Default)]
pub struct LbSetup {
    pub services: Vec<ServiceSpec>,
    /// Per interface (ports, then VLAN sub-interfaces, as
    /// [`Config::interfaces`] lists them): its addresses with prefix
    /// lengths.
    pub addresses: Vec<Vec<(IpAddr, u8)>>,
    /// The VLAN sub-interfaces, after the ports: (port index, VLAN id).
    pub vlans: Vec<(usize, u16)>,
    /// (prefix, length, port index, gateway).
    pub routes: Vec<(IpAddr, u8, usize, Option<IpAddr>)>,
    /// (address, MAC, port index).
    pub neighbors: Vec<(IpAddr, MacAddr, usize)>,
    pub exception_port: Option<usize>,
    /// `[exception] follow_vips`: VIPs are served while the kernel holds
    /// them on the exception interface.
    pub follow_vips: bool,
    /// `[exception] announce_table`: the kernel routing table that holds
    /// a route to each VIP that can be served.
    pub announce_table: Option<u32>,
    /// `[exception] announce_drain_ms`.
    pub announce_drain: std::time::Duration,
    pub sync: Option<SyncSetup>,
    pub timeouts: Timeouts,
    pub capacity: u32,
    pub local_ports: (u16, u16),
    pub expire_nodest_conn: bool,
    pub sloppy_tcp: bool,
}

/// `[eal]`: arguments for DPDK's environment abstraction layer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eal {
    /// Passed to `rte_eal_init` as they are. Without `-l`/`-c`/`--lcores`
    /// the dataplane adds `-l` with the main and worker lcores; without
    /// `--file-prefix` it adds one unique to the process.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `[workers]`: the lcores that run the forwarding loop.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workers {
    /// The main (control) lcore.
    #[serde(default)]
    pub main_lcore: u32,
    /// One worker per lcore; worker i polls queue i of every port.
    pub lcores: Spanned<Vec<u32>>,
    /// Packets per receive burst (1 to 64).
    #[serde(default = "default_burst")]
    pub burst: Spanned<u16>,
    /// `SCHED_FIFO` priority of the worker threads, 1 to 99; 0 leaves them
    /// ordinary threads. For isolated cores only: a real-time thread that
    /// polls flat out takes its core from everything else.
    #[serde(default = "default_realtime")]
    pub realtime_priority: Spanned<u8>,
    /// Lock the process's memory in RAM (`mlockall`).
    #[serde(default)]
    pub lock_memory: bool,
}

/// `[mempool]`: the packet-buffer pool shared by every port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MempoolConfig {
    /// Buffers in the pool; 0 sizes it from the ports' descriptor rings.
    #[serde(default)]
    pub mbufs: u32,
    /// Per-lcore cache.
    #[serde(default = "default_cache")]
    pub cache: u32,
    /// Bytes of buffer in each mbuf, headroom (128) included; 0 takes
    /// DPDK's default (2176). Smaller buffers chain longer packets.
    #[serde(default)]
    pub data_room: u16,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            mbufs: 0,
            cache: default_cache(),
            data_room: 0,
        }
    }
}

/// `[[port]]`: one DPDK port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// The DPDK device name: a vdev name (`net_pcap0`) or a PCI address.
    pub name: Spanned<String>,
    /// Device arguments to probe at start-up (`net_pcap0,rx_pcap=in.pcap`);
    /// without it the device must come from EAL's own arguments.
    pub device: Option<Spanned<String>>,
    #[serde(default = "default_descriptors")]
    pub rx_descriptors: u16,
    #[serde(default = "default_descriptors")]
    pub tx_descriptors: u16,
    pub mtu: Option<u16>,
    #[serde(default = "default_true")]
    pub promiscuous: bool,
    /// The port's addresses with prefix lengths, e.g. "10.0.0.1/24".
    #[serde(default)]
    pub addresses: Vec<Spanned<String>>,
    /// What the port does with received transport checksums: "finish"
    /// (partial ones from kernel senders are finished) or "trust" (as they
    /// come); absent: "finish" for kernel-backed drivers, else "trust"
    /// ([`crate::offload::default_for_driver`]).
    pub rx_checksum: Option<crate::offload::RxChecksum>,
    /// 802.1Q sub-interfaces on this port (`[[port.vlan]]`).
    #[serde(default, rename = "vlan")]
    pub vlans: Vec<VlanConfig>,
}

/// `[[port.vlan]]`: an 802.1Q sub-interface of its port, named
/// `<port>.<id>` in routes and neighbours: its own addresses, its own ARP,
/// frames tagged with `id` in and out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanConfig {
    /// The VLAN id, 1 to 4094.
    pub id: Spanned<u16>,
    #[serde(default)]
    pub addresses: Vec<Spanned<String>>,
}

/// `[[forward]]`: packets received on `from` leave through `to`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
}

fn default_capacity() -> u32 {
    1 << 20
}
fn default_local_ports() -> Spanned<[u16; 2]> {
    Spanned::new(0..0, [1025, 65535])
}
fn default_scheduler() -> Spanned<String> {
    Spanned::new(0..0, "wlc".to_owned())
}
fn default_flags() -> Spanned<String> {
    Spanned::new(0..0, String::new())
}
fn default_weight() -> u32 {
    1
}

fn default_burst() -> Spanned<u16> {
    Spanned::new(0..0, 32)
}
fn default_realtime() -> Spanned<u8> {
    Spanned::new(0..0, 0)
}
fn default_cache() -> u32 {
    256
}
fn default_descriptors() -> u16 {
    1024
}
fn default_true() -> bool {
    true
}

/// The smallest `[mempool] data_room`: the headroom and a minimum frame.
pub const MIN_DATA_ROOM: u16 = 256;

/// The largest receive burst the dataplane supports.
pub const MAX_BURST: u16 = 64;

/// What is wrong with a configuration file, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The key (path) concerned, e.g. `[[forward]] to`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

struct Checker<'a> {
    text: &'a str,
}

impl Checker<'_> {
    fn error(&self, span: std::ops::Range<usize>, key: &str, message: String) -> ConfigError {
        ConfigError {
            // Defaults carry an empty span at 0: they have no line.
            line: (span.end > 0).then(|| line_of(self.text, span.start)),
            key: key.to_owned(),
            message,
        }
    }
}

impl Config {
    /// What of this configuration changes only with a restart (EAL,
    /// workers, ports, addresses, VLANs, routes, neighbours, the exception
    /// path, sessions), in a form to compare with another file's: a reload
    /// applies services and timeouts and says when this differs.
    pub fn restart_only(&self) -> String {
        let lb = self.lb.as_ref().map(|l| LbSetup {
            services: Vec::new(),
            timeouts: Timeouts::default(),
            ..l.clone()
        });
        let names: Vec<String> = self.interfaces().into_iter().map(|(n, _, _)| n).collect();
        format!(
            "{:?} {} {:?} {:?} {:?} {lb:?}",
            self.eal.args,
            self.workers.main_lcore,
            self.workers.lcores.get_ref(),
            self.mempool,
            names,
        )
    }

    /// Parses and validates a configuration file's text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            // toml's message already names the key; keep its first line only
            // (the rest is a snippet of the file) and give the line apart.
            let message = e.message().trim().to_owned();
            ConfigError {
                line: e.span().map(|s| line_of(text, s.start)),
                key: String::new(),
                message,
            }
        })?;
        config.validate(text)?;
        // A file without [[forward]] rules is a load balancer, with or
        // without services: one started empty is filled over the admin
        // socket, as an LVS director is by ipvsadm-restore or keepalived.
        if config.forwards.is_empty() {
            config.lb = Some(config.lb_setup(text)?);
        }
        Ok(config)
    }

    fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let c = Checker { text };
        let lcores = &self.workers.lcores;
        if lcores.get_ref().is_empty() {
            return Err(c.error(
                lcores.span(),
                "[workers] lcores",
                "needs at least one worker lcore, e.g. lcores = [1]".into(),
            ));
        }
        let mut seen = HashSet::new();
        for &l in lcores.get_ref() {
            if l == self.workers.main_lcore {
                return Err(c.error(
                    lcores.span(),
                    "[workers] lcores",
                    format!("lcore {l} is the main lcore; workers need lcores of their own"),
                ));
            }
            if !seen.insert(l) {
                return Err(c.error(
                    lcores.span(),
                    "[workers] lcores",
                    format!("lcore {l} is listed twice"),
                ));
            }
        }
        if let Some(g) = self.admin.as_ref().and_then(|a| a.group.as_ref()) {
            if group_id(g.get_ref()).is_none() {
                return Err(c.error(
                    g.span(),
                    "[admin] group",
                    format!("no group named {:?} (see /etc/group)", g.get_ref()),
                ));
            }
        }
        if let Some(a) = &self.admin {
            if let Some(n) = a.max_clients.as_ref().filter(|n| *n.get_ref() == 0) {
                return Err(c.error(
                    n.span(),
                    "[admin] max_clients",
                    "at least one client must be served".into(),
                ));
            }
            for (t, key) in [
                (&a.idle_timeout, "[admin] idle_timeout"),
                (&a.request_timeout, "[admin] request_timeout"),
            ] {
                if let Some(t) = t
                    .as_ref()
                    .filter(|t| !(0.001..=86_400.0).contains(t.get_ref()))
                {
                    return Err(c.error(
                        t.span(),
                        key,
                        format!("{} s: give seconds from 0.001 to 86400", t.get_ref()),
                    ));
                }
            }
        }
        if let Some(m) = &self.metrics {
            if m.addr().is_none() {
                return Err(c.error(
                    m.listen.span(),
                    "[metrics] listen",
                    format!(
                        "{:?} is not an address and port (e.g. \"127.0.0.1:9110\")",
                        m.listen.get_ref()
                    ),
                ));
            }
            if !self.forwards.is_empty() {
                return Err(c.error(
                    m.listen.span(),
                    "[metrics] listen",
                    "metrics are served in load-balancer mode only (a file with [[forward]] rules is a forwarder)".into(),
                ));
            }
        }
        let burst = &self.workers.burst;
        if !(1..=MAX_BURST).contains(burst.get_ref()) {
            return Err(c.error(
                burst.span(),
                "[workers] burst",
                format!("{} is out of range: use 1 to {MAX_BURST}", burst.get_ref()),
            ));
        }
        let rt = &self.workers.realtime_priority;
        if *rt.get_ref() > 99 {
            return Err(c.error(
                rt.span(),
                "[workers] realtime_priority",
                format!(
                    "{} is out of range: use 1 to 99 (SCHED_FIFO), or 0 for ordinary threads",
                    rt.get_ref()
                ),
            ));
        }
        let room = self.mempool.data_room;
        if room != 0 && room < MIN_DATA_ROOM {
            return Err(ConfigError {
                line: None,
                key: "[mempool] data_room".into(),
                message: format!(
                    "{room} bytes leave no room for a frame after the 128-byte headroom: \
                     use at least {MIN_DATA_ROOM} (or 0 for DPDK's default)"
                ),
            });
        }
        if self.ports.is_empty() {
            return Err(ConfigError {
                line: None,
                key: "[[port]]".into(),
                message: "at least one port is needed".into(),
            });
        }
        let mut names = HashSet::new();
        for p in &self.ports {
            let name = p.name.get_ref();
            if name.is_empty() || name.contains(',') {
                return Err(c.error(
                    p.name.span(),
                    "[[port]] name",
                    format!("{name:?} is not a DPDK device name (e.g. \"net_pcap0\" or \"0000:01:00.0\")"),
                ));
            }
            if !names.insert(name.as_str()) {
                return Err(c.error(
                    p.name.span(),
                    "[[port]] name",
                    format!("port {name:?} is defined twice"),
                ));
            }
            if let Some(dev) = &p.device {
                let dev_name = dev.get_ref().split(',').next().unwrap_or_default();
                if dev_name != name {
                    return Err(c.error(
                        dev.span(),
                        "[[port]] device",
                        format!(
                            "the device {dev_name:?} does not match the port's name {name:?}; DPDK names the port after the device"
                        ),
                    ));
                }
            }
        }
        let known = || {
            self.ports
                .iter()
                .map(|p| p.name.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.forwards.is_empty() && !self.services.is_empty() {
            return Err(c.error(
                self.forwards[0].from.span(),
                "[[forward]]",
                "a file is either a forwarder ([[forward]]) or a load balancer ([[service]]), not both".into(),
            ));
        }
        for f in &self.forwards {
            for (end, key) in [(&f.from, "[[forward]] from"), (&f.to, "[[forward]] to")] {
                if !names.contains(end.get_ref().as_str()) {
                    return Err(c.error(
                        end.span(),
                        key,
                        format!("no port named {:?} (ports: {})", end.get_ref(), known()),
                    ));
                }
            }
        }
        let mut froms = HashSet::new();
        for f in &self.forwards {
            if !froms.insert(f.from.get_ref().as_str()) {
                return Err(c.error(
                    f.from.span(),
                    "[[forward]] from",
                    format!(
                        "port {:?} already forwards elsewhere; a port has one destination",
                        f.from.get_ref()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn lb_setup(&self, text: &str) -> Result<LbSetup, ConfigError> {
        let c = Checker { text };
        let known = || {
            self.interfaces()
                .into_iter()
                .map(|(n, _, _)| n)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let port = |name: &Spanned<String>, key: &str| {
            self.interface_index(name.get_ref()).ok_or_else(|| {
                c.error(
                    name.span(),
                    key,
                    format!("no port named {:?} (ports: {})", name.get_ref(), known()),
                )
            })
        };
        let ip = |v: &Spanned<String>, key: &str| {
            v.get_ref().parse::<IpAddr>().map_err(|_| {
                c.error(
                    v.span(),
                    key,
                    format!("{:?} is not an IP address", v.get_ref()),
                )
            })
        };
        let prefix = |v: &Spanned<String>, key: &str| -> Result<(IpAddr, u8), ConfigError> {
            let bad = || {
                c.error(
                    v.span(),
                    key,
                    format!(
                        "{:?} is not address/length (e.g. \"10.0.0.1/24\")",
                        v.get_ref()
                    ),
                )
            };
            let (a, l) = v.get_ref().split_once('/').ok_or_else(bad)?;
            let a: IpAddr = a.parse().map_err(|_| bad())?;
            let l: u8 = l.parse().map_err(|_| bad())?;
            if l > if a.is_ipv4() { 32 } else { 128 } {
                return Err(bad());
            }
            Ok((a, l))
        };

        let mut setup = LbSetup {
            capacity: self.sessions.capacity,
            expire_nodest_conn: self.sessions.expire_nodest_conn,
            sloppy_tcp: self.sessions.sloppy_tcp,
            ..LbSetup::default()
        };
        if setup.capacity == 0 {
            return Err(ConfigError {
                line: None,
                key: "[sessions] capacity".into(),
                message: "must be at least 1".into(),
            });
        }
        let [lo, hi] = *self.sessions.local_ports.get_ref();
        if lo == 0 || lo > hi {
            return Err(c.error(
                self.sessions.local_ports.span(),
                "[sessions] local_ports",
                format!(
                    "[{lo}, {hi}] is not a port range: use [first, last] with 0 < first <= last"
                ),
            ));
        }
        setup.local_ports = (lo, hi);
        for p in &self.ports {
            let mut addrs = Vec::new();
            for a in &p.addresses {
                addrs.push(prefix(a, "[[port]] addresses")?);
            }
            setup.addresses.push(addrs);
        }
        for (i, p) in self.ports.iter().enumerate() {
            let mut ids = HashSet::new();
            for v in &p.vlans {
                let id = *v.id.get_ref();
                if !(1..=4094).contains(&id) {
                    return Err(c.error(
                        v.id.span(),
                        "[[port.vlan]] id",
                        format!("{id} is not a VLAN id: use 1 to 4094"),
                    ));
                }
                if !ids.insert(id) {
                    return Err(c.error(
                        v.id.span(),
                        "[[port.vlan]] id",
                        format!("VLAN {id} is defined twice on {:?}", p.name.get_ref()),
                    ));
                }
                let mut addrs = Vec::new();
                for a in &v.addresses {
                    addrs.push(prefix(a, "[[port.vlan]] addresses")?);
                }
                setup.addresses.push(addrs);
                setup.vlans.push((i, id));
            }
        }
        for r in &self.routes {
            let (a, l) = prefix(&r.prefix, "[[route]] prefix")?;
            let gw = r
                .gateway
                .as_ref()
                .map(|g| ip(g, "[[route]] gateway"))
                .transpose()?;
            setup
                .routes
                .push((a, l, port(&r.port, "[[route]] port")?, gw));
        }
        for n in &self.neighbors {
            let mac = n
                .mac
                .get_ref()
                .parse::<MacAddr>()
                .map_err(|e| c.error(n.mac.span(), "[[neighbor]] mac", e))?;
            setup.neighbors.push((
                ip(&n.address, "[[neighbor]] address")?,
                mac,
                port(&n.port, "[[neighbor]] port")?,
            ));
        }
        if let Some(e) = &self.exception {
            let i = port(&e.port, "[exception] port")?;
            if i >= self.ports.len() {
                return Err(c.error(
                    e.port.span(),
                    "[exception] port",
                    "the exception path is a port of its own (a TAP), not a VLAN".into(),
                ));
            }
            setup.exception_port = Some(i);
            if let Some(f) = e.follow_vips.as_ref().filter(|f| *f.get_ref()) {
                if e.interface.is_some() {
                    setup.follow_vips = true;
                } else {
                    return Err(c.error(
                    f.span(),
                    "[exception] follow_vips",
                    "the VIPs are followed on the exception path's kernel interface: name it with `interface`".into(),
                ));
                }
            }
            if let Some(t) = &e.announce_table {
                if e.interface.is_none() {
                    return Err(c.error(
                        t.span(),
                        "[exception] announce_table",
                        "the VIPs are routed to the exception path's kernel interface: name it with `interface`".into(),
                    ));
                }
                // 0 is no table; 253 to 255 are the kernel's own (default,
                // main, local).
                if *t.get_ref() == 0 || (253..=255).contains(t.get_ref()) {
                    return Err(c.error(
                        t.span(),
                        "[exception] announce_table",
                        format!(
                            "table {} is reserved (0 is none; 253, 254 and 255 are the kernel's default, main and local): choose 1 to 252, or above 255",
                            t.get_ref()
                        ),
                    ));
                }
                setup.announce_table = Some(*t.get_ref());
            }
            setup.announce_drain =
                std::time::Duration::from_millis(e.announce_drain_ms.unwrap_or(1000));
        }
        if let Some(sy) = &self.sync {
            let addr = |v: &Spanned<String>, key: &str| {
                v.get_ref().parse::<std::net::SocketAddr>().map_err(|_| {
                    c.error(
                        v.span(),
                        key,
                        format!(
                            "{:?} is not an address and port (10.0.0.1:8848)",
                            v.get_ref()
                        ),
                    )
                })
            };
            let listen = addr(&sy.listen, "[sync] listen")?;
            let peers = sy
                .peers
                .iter()
                .map(|p| addr(p, "[sync] peers"))
                .collect::<Result<Vec<_>, _>>()?;
            let key = match (&sy.key, &sy.key_file) {
                (Some(k), None) => k.get_ref().as_bytes().to_vec(),
                (None, Some(f)) => std::fs::read(f.get_ref())
                    .map(|k| k.trim_ascii().to_vec())
                    .map_err(|e| {
                        c.error(
                            f.span(),
                            "[sync] key_file",
                            format!("cannot read {}: {e}", f.get_ref()),
                        )
                    })?,
                _ => {
                    return Err(c.error(
                        sy.listen.span(),
                        "[sync]",
                        "give the shared key with `key` or `key_file`, one of them".into(),
                    ))
                }
            };
            if key.len() < 16 {
                return Err(c.error(
                    sy.key
                        .as_ref()
                        .or(sy.key_file.as_ref())
                        .map_or(0..0, Spanned::span),
                    "[sync] key",
                    "the key is at least 16 bytes".into(),
                ));
            }
            setup.sync = Some(SyncSetup {
                listen,
                peers,
                key,
                max_rate: sy.max_rate.unwrap_or(100_000),
            });
        }
        setup.timeouts = timeouts_of(&self.timeouts);
        setup.services = services_of(&c, &self.services)?;
        Ok(setup)
    }

    /// The index in `ports` of the port called `name`.
    pub fn port_index(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name.get_ref() == name)
    }

    /// The load balancer's interfaces: every port in order, then every
    /// VLAN sub-interface in order, as (name, port index, VLAN id). The
    /// engine's port numbers are positions in this list.
    pub fn interfaces(&self) -> Vec<(String, usize, Option<u16>)> {
        let ports = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.get_ref().clone(), i, None));
        let vlans = self.ports.iter().enumerate().flat_map(|(i, p)| {
            p.vlans.iter().map(move |v| {
                let id = *v.id.get_ref();
                (format!("{}.{id}", p.name.get_ref()), i, Some(id))
            })
        });
        ports.chain(vlans).collect()
    }

    /// The position in [`interfaces`](Self::interfaces) of the interface
    /// called `name` (a port, or `<port>.<id>` for a VLAN).
    pub fn interface_index(&self, name: &str) -> Option<usize> {
        self.interfaces().iter().position(|(n, _, _)| n == name)
    }
}

/// A `[service.health]` section as a check.
fn health_of(c: &Checker<'_>, h: &HealthConfig) -> Result<HealthCheck, ConfigError> {
    let kind = match h.kind.get_ref().as_str() {
        "tcp" => HealthKind::Tcp,
        "http" => HealthKind::Http {
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            expect: h.expect.unwrap_or(200),
        },
        "udp" => HealthKind::Udp {
            payload: h.payload.clone().unwrap_or_default().into_bytes(),
        },
        other => {
            return Err(c.error(
                h.kind.span(),
                "[service.health] kind",
                format!("{other:?} is not a health check: use \"tcp\", \"http\" or \"udp\""),
            ))
        }
    };
    let on_failure = match &h.on_failure {
        None => OnFailure::Quiesce,
        Some(o) => match o.get_ref().as_str() {
            "quiesce" => OnFailure::Quiesce,
            "remove" => OnFailure::Remove,
            other => {
                return Err(c.error(
                    o.span(),
                    "[service.health] on_failure",
                    format!("{other:?}: use \"quiesce\" (weight 0) or \"remove\""),
                ))
            }
        },
    };
    if h.rise == 0 || h.fall == 0 || h.interval_ms == 0 || h.timeout_ms == 0 {
        return Err(c.error(
            h.kind.span(),
            "[service.health]",
            "interval_ms, timeout_ms, rise and fall must be at least 1".into(),
        ));
    }
    Ok(HealthCheck {
        kind,
        port: h.port,
        interval_ms: h.interval_ms,
        timeout_ms: h.timeout_ms,
        rise: h.rise,
        fall: h.fall,
        on_failure,
    })
}

/// Timeouts from the `[timeouts]` section, IPVS's defaults for the rest.
fn timeouts_of(tc: &TimeoutsConfig) -> Timeouts {
    let t = tc;
    let d = Timeouts::default();
    Timeouts {
        tcp_established: t.tcp.unwrap_or(d.tcp_established),
        tcp_fin_wait: t.tcpfin.unwrap_or(d.tcp_fin_wait),
        udp: t.udp.unwrap_or(d.udp),
        tcp_syn_recv: t.syn_recv.unwrap_or(d.tcp_syn_recv),
        tcp_time_wait: t.time_wait.unwrap_or(d.tcp_time_wait),
        tcp_close: t.close.unwrap_or(d.tcp_close),
        tcp_close_wait: t.close_wait.unwrap_or(d.tcp_close_wait),
        tcp_last_ack: t.last_ack.unwrap_or(d.tcp_last_ack),
        icmp: t.icmp.unwrap_or(d.icmp),
        ..d
    }
}

/// Services from `[[service]]` entries, each validated as a snapshot would
/// validate it, errors carrying their lines.
fn services_of(
    c: &Checker<'_>,
    configs: &[ServiceConfig],
) -> Result<Vec<ServiceSpec>, ConfigError> {
    let ip = |v: &Spanned<String>, key: &str| {
        v.get_ref().parse::<IpAddr>().map_err(|_| {
            c.error(
                v.span(),
                key,
                format!("{:?} is not an IP address", v.get_ref()),
            )
        })
    };
    let mut out = Vec::new();
    let mut keys = HashSet::new();
    for sc in configs {
        let (key, at) = match &sc.fwmark {
            Some(mark) => {
                let at = mark.span();
                if sc.protocol.is_some() || sc.vip.is_some() || sc.port.is_some() {
                    return Err(c.error(
                        at,
                        "[[service]] fwmark",
                        "a firewall-mark service has no protocol, vip or port: its `match` list says what traffic it takes".into(),
                    ));
                }
                if *mark.get_ref() == 0 {
                    return Err(c.error(
                        at,
                        "[[service]] fwmark",
                        "firewall marks start at 1".into(),
                    ));
                }
                let mut v6 = None;
                for m in &sc.matches {
                    let parsed: MarkMatch = m
                        .get_ref()
                        .parse()
                        .map_err(|e| c.error(m.span(), "[[service]] match", e))?;
                    v6.get_or_insert(parsed.prefix.is_ipv6());
                }
                (ServiceKey::fwmark(*mark.get_ref(), v6.unwrap_or(false)), at)
            }
            None => {
                let (Some(protocol), Some(vip), Some(port)) = (&sc.protocol, &sc.vip, sc.port)
                else {
                    let at = sc
                        .protocol
                        .as_ref()
                        .or(sc.vip.as_ref())
                        .map_or(0..0, Spanned::span);
                    return Err(c.error(
                        at,
                        "[[service]]",
                        "a service needs protocol, vip and port (or fwmark and match)".into(),
                    ));
                };
                if let Some(m) = sc.matches.first() {
                    return Err(c.error(
                        m.span(),
                        "[[service]] match",
                        "only a firewall-mark service (fwmark = N) has matches".into(),
                    ));
                }
                let proto = match protocol.get_ref().to_ascii_lowercase().as_str() {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    other => {
                        return Err(c.error(
                            protocol.span(),
                            "[[service]] protocol",
                            format!("{other:?} is not a service protocol: use \"tcp\" or \"udp\""),
                        ))
                    }
                };
                let vip_addr = ip(vip, "[[service]] vip")?;
                (ServiceKey::new(proto, vip_addr, port), vip.span())
            }
        };
        let vip = key.vip;
        if !keys.insert(key) {
            return Err(c.error(
                at.clone(),
                "[[service]]",
                format!("service {key} is defined twice"),
            ));
        }
        let sched: SchedKind = sc
            .scheduler
            .get_ref()
            .parse()
            .map_err(|e| c.error(sc.scheduler.span(), "[[service]] scheduler", e))?;
        let flags = SchedFlags::parse(sched, sc.flags.get_ref())
            .map_err(|e| c.error(sc.flags.span(), "[[service]] flags", e))?;
        let mut spec = ServiceSpec::new(key);
        for m in &sc.matches {
            spec.matches.push(
                m.get_ref()
                    .parse()
                    .map_err(|e| c.error(m.span(), "[[service]] match", e))?,
            );
        }
        for (list, key, out) in [
            (&sc.allow, "[[service]] allow", &mut spec.allow),
            (&sc.deny, "[[service]] deny", &mut spec.deny),
        ] {
            for p in list {
                out.push(parse_prefix(p.get_ref()).map_err(|e| c.error(p.span(), key, e))?);
            }
        }
        spec.sched = sched;
        spec.flags = flags;
        spec.mh_table_size = sc.mh_table_size.unwrap_or(DEFAULT_MH_TABLE_SIZE);
        spec.persistence = sc.persistence.map(|timeout| Persistence {
            timeout,
            prefix_len: sc.netmask.unwrap_or(if vip.is_ipv4() { 32 } else { 128 }),
        });
        for l in &sc.local_addresses {
            spec.laddrs.push(ip(l, "[[service]] local_addresses")?);
        }
        for l in &sc.peer_local_addresses {
            spec.peer_laddrs
                .push(ip(l, "[[service]] peer_local_addresses")?);
        }
        if let Some(h) = &sc.health {
            spec.health = Some(health_of(c, h)?);
        }
        for r in &sc.reals {
            let mode: ForwardMode = r
                .mode
                .get_ref()
                .parse()
                .map_err(|e| c.error(r.mode.span(), "[[service.real]] mode", e))?;
            spec.reals.push(RealServer {
                addr: ip(&r.address, "[[service.real]] address")?,
                port: r.port,
                mode,
                weight: r.weight,
                upper: r.upper,
                lower: r.lower,
            });
        }
        // Validate as a snapshot would, so the error has this line.
        let built = service::build_service(spec)
            .map_err(|e| c.error(at.clone(), "[[service]]", e.to_string()))?;
        out.push(built.spec);
    }
    Ok(out)
}

/// The part of a configuration that can change while the dataplane runs:
/// services and timeouts (what `lb-ctl apply` sends).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
}

/// Parses and validates a desired state: every service as a snapshot would
/// validate it, errors with their lines.
pub fn parse_desired(text: &str) -> Result<(Vec<ServiceSpec>, Timeouts), ConfigError> {
    let d: DesiredState = toml::from_str(text).map_err(|e| ConfigError {
        line: e.span().map(|s| line_of(text, s.start)),
        key: String::new(),
        message: e.message().trim().to_owned(),
    })?;
    let c = Checker { text };
    Ok((services_of(&c, &d.services)?, timeouts_of(&d.timeouts)))
}

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

/// Writes services and timeouts in the configuration's schema, the way
/// [`parse_desired`] reads them back (`lb-ctl config dump`).
pub fn desired_to_toml(services: &[ServiceSpec], t: &Timeouts) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "[timeouts]");
    let _ = writeln!(
        s,
        "tcp = {}\ntcpfin = {}\nudp = {}",
        t.tcp_established, t.tcp_fin_wait, t.udp
    );
    let _ = writeln!(
        s,
        "syn_recv = {}\ntime_wait = {}\nclose = {}\nclose_wait = {}\nlast_ack = {}\nicmp = {}",
        t.tcp_syn_recv, t.tcp_time_wait, t.tcp_close, t.tcp_close_wait, t.tcp_last_ack, t.icmp
    );
    for svc in services {
        let k = svc.key;
        let _ = writeln!(s, "\n[[service]]");
        if k.mark != 0 {
            let _ = writeln!(s, "fwmark = {}", k.mark);
            let m: Vec<String> = svc
                .matches
                .iter()
                .map(|m| toml_str(&m.to_string()))
                .collect();
            let _ = writeln!(s, "match = [{}]", m.join(", "));
        } else {
            let _ = writeln!(
                s,
                "protocol = {}",
                toml_str(&k.proto.to_string().to_ascii_lowercase())
            );
            let _ = writeln!(s, "vip = {}", toml_str(&k.vip.to_string()));
            let _ = writeln!(s, "port = {}", k.port);
        }
        let _ = writeln!(s, "scheduler = {}", toml_str(svc.sched.name()));
        let flags = svc.flags.to_list(svc.sched);
        if !flags.is_empty() {
            let _ = writeln!(s, "flags = {}", toml_str(&flags));
        }
        if let Some(p) = svc.persistence {
            let _ = writeln!(s, "persistence = {}\nnetmask = {}", p.timeout, p.prefix_len);
        }
        if !svc.laddrs.is_empty() {
            let l: Vec<String> = svc
                .laddrs
                .iter()
                .map(|a| toml_str(&a.to_string()))
                .collect();
            let _ = writeln!(s, "local_addresses = [{}]", l.join(", "));
        }
        if !svc.peer_laddrs.is_empty() {
            let l: Vec<String> = svc
                .peer_laddrs
                .iter()
                .map(|a| toml_str(&a.to_string()))
                .collect();
            let _ = writeln!(s, "peer_local_addresses = [{}]", l.join(", "));
        }
        for (name, list) in [("allow", &svc.allow), ("deny", &svc.deny)] {
            if !list.is_empty() {
                let l: Vec<String> = list
                    .iter()
                    .map(|(a, len)| toml_str(&format!("{a}/{len}")))
                    .collect();
                let _ = writeln!(s, "{name} = [{}]", l.join(", "));
            }
        }
        if svc.mh_table_size != DEFAULT_MH_TABLE_SIZE {
            let _ = writeln!(s, "mh_table_size = {}", svc.mh_table_size);
        }
        if let Some(h) = &svc.health {
            let _ = writeln!(s, "\n[service.health]");
            match &h.kind {
                HealthKind::Tcp => {
                    let _ = writeln!(s, "kind = \"tcp\"");
                }
                HealthKind::Http { path, expect } => {
                    let _ = writeln!(
                        s,
                        "kind = \"http\"\npath = {}\nexpect = {expect}",
                        toml_str(path)
                    );
                }
                HealthKind::Udp { payload } => {
                    let _ = writeln!(
                        s,
                        "kind = \"udp\"\npayload = {}",
                        toml_str(&String::from_utf8_lossy(payload))
                    );
                }
            }
            if let Some(p) = h.port {
                let _ = writeln!(s, "port = {p}");
            }
            let on = if h.on_failure == OnFailure::Remove {
                "remove"
            } else {
                "quiesce"
            };
            let _ = writeln!(
                s,
                "interval_ms = {}\ntimeout_ms = {}\nrise = {}\nfall = {}\non_failure = \"{on}\"",
                h.interval_ms, h.timeout_ms, h.rise, h.fall
            );
        }
        for r in &svc.reals {
            let _ = writeln!(s, "\n[[service.real]]");
            let _ = writeln!(s, "address = {}", toml_str(&r.addr.to_string()));
            let _ = writeln!(s, "port = {}", r.port);
            let _ = writeln!(s, "mode = {}", toml_str(&r.mode.to_string()));
            let _ = writeln!(
                s,
                "weight = {}\nupper = {}\nlower = {}",
                r.weight, r.upper, r.lower
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[eal]
args = ["--no-huge"]

[workers]
lcores = [1]

[[port]]
name = "net_pcap0"
device = "net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap"

[[port]]
name = "net_null0"

[[forward]]
from = "net_pcap0"
to = "net_null0"
"#;

    #[test]
    fn parses_with_defaults() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.eal.args, ["--no-huge"]);
        assert_eq!(c.workers.lcores.get_ref(), &[1]);
        assert_eq!(*c.workers.burst.get_ref(), 32);
        assert_eq!(c.ports[0].rx_descriptors, 1024);
        assert!(c.ports[1].device.is_none());
        assert_eq!(c.port_index("net_null0"), Some(1));
        assert_eq!(c.mempool.cache, 256);
        assert_eq!(c.mempool.data_room, 0);
    }

    fn err(text: &str) -> ConfigError {
        Config::from_toml(text).unwrap_err()
    }

    #[test]
    fn vlan_sub_interfaces_follow_the_ports() {
        let text = LB.replace(
            "addresses = [\"10.0.0.1/24\"]\n",
            "addresses = [\"10.0.0.1/24\"]\n[[port.vlan]]\nid = 100\naddresses = [\"10.100.0.1/24\"]\n",
        ) + "[[route]]\nprefix = \"10.9.0.0/24\"\nport = \"net_pcap0.100\"\ngateway = \"10.100.0.254\"\n";
        let c = Config::from_toml(&text).unwrap();
        let lb = c.lb.as_ref().unwrap();
        assert_eq!(lb.vlans, vec![(0, 100)]);
        assert_eq!(lb.addresses[1], vec![("10.100.0.1".parse().unwrap(), 24)]);
        assert_eq!(c.interface_index("net_pcap0.100"), Some(1));
        assert!(lb.routes.iter().any(|r| r.2 == 1));
        for (bad, says) in [("0", "not a VLAN id"), ("4095", "not a VLAN id")] {
            let e = err(&text.replace("id = 100", &format!("id = {bad}")));
            assert!(e.message.contains(says), "{e}");
            assert_eq!(e.key, "[[port.vlan]] id");
        }
        let twice = text.replace(
            "[[port.vlan]]\nid = 100\n",
            "[[port.vlan]]\nid = 100\n[[port.vlan]]\nid = 100\n",
        );
        assert!(
            err(&twice).message.contains("defined twice"),
            "{}",
            err(&twice)
        );
        let e = err(&text.replace("port = \"net_pcap0.100\"", "port = \"net_pcap0.200\""));
        assert!(e.message.contains("net_pcap0.100"), "{e}");
    }

    #[test]
    fn unknown_port_in_forward_names_line_and_ports() {
        let e = err(&GOOD.replace("to = \"net_null0\"", "to = \"p9\""));
        assert_eq!(e.line, Some(17));
        assert_eq!(e.key, "[[forward]] to");
        assert!(e.message.contains("\"p9\""), "{e}");
        assert!(e.message.contains("net_pcap0, net_null0"), "{e}");
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let e = err(&GOOD.replace("lcores = [1]", "lcores = [1]\nlcoers = [2]"));
        assert_eq!(e.line, Some(7));
        assert!(e.message.contains("lcoers"), "{e}");
    }

    #[test]
    fn metrics_listen_must_be_an_address_in_load_balancer_mode() {
        let e = err(&format!("{GOOD}\n[metrics]\nlisten = \"localhost:nope\"\n"));
        assert_eq!(e.key, "[metrics] listen");
        assert!(e.message.contains("\"localhost:nope\""), "{e}");
        assert!(e.line.is_some());
        let e = err(&format!("{GOOD}\n[metrics]\nlisten = \"127.0.0.1:9110\"\n"));
        assert!(e.message.contains("load-balancer mode only"), "{e}");
    }

    #[test]
    fn data_room_must_hold_headroom_and_a_frame() {
        let e = err(&format!("{GOOD}\n[mempool]\ndata_room = 200\n"));
        assert_eq!(e.key, "[mempool] data_room");
        assert!(e.message.contains("at least 256"), "{e}");
        let c = Config::from_toml(&format!("{GOOD}\n[mempool]\ndata_room = 384\n")).unwrap();
        assert_eq!(c.mempool.data_room, 384);
    }

    #[test]
    fn malformed_toml_reports_line() {
        let e = err("[workers\nlcores = [1]\n");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn missing_section_is_named() {
        let e = err("[[port]]\nname = \"x\"\n");
        assert!(e.message.contains("workers"), "{e}");
    }

    const LB: &str = r#"
[workers]
lcores = [1]

[[port]]
name = "net_pcap0"
addresses = ["10.0.0.1/24"]

[[route]]
prefix = "0.0.0.0/0"
port = "net_pcap0"
gateway = "10.0.0.254"

[[neighbor]]
address = "10.0.0.5"
mac = "02:00:00:00:00:05"
port = "net_pcap0"

[timeouts]
tcp = 600

[[service]]
protocol = "tcp"
vip = "198.18.0.10"
port = 80
scheduler = "rr"
local_addresses = ["10.0.0.100"]

[[service.real]]
address = "10.0.0.5"
port = 8080
mode = "fnat"
weight = 3
"#;

    #[test]
    fn following_the_kernels_vips_needs_its_interface() {
        let with = |exception: &str| {
            let text = LB.replace(
                "[timeouts]",
                &format!("[[port]]\nname = \"net_tap0\"\n[exception]\nport = \"net_tap0\"\n{exception}\n[timeouts]"),
            );
            Config::from_toml(&text)
        };
        let lb = with("interface = \"lbtap\"\nfollow_vips = true")
            .unwrap()
            .lb
            .unwrap();
        assert!(lb.follow_vips);
        assert!(
            !with("interface = \"lbtap\"")
                .unwrap()
                .lb
                .unwrap()
                .follow_vips
        );
        let e = with("follow_vips = true").unwrap_err();
        assert!(e.to_string().contains("name it with `interface`"), "{e}");
    }

    #[test]
    fn the_announce_table_needs_the_interface_and_a_table_of_its_own() {
        let with = |exception: &str| {
            let text = LB.replace(
                "[timeouts]",
                &format!("[[port]]\nname = \"net_tap0\"\n[exception]\nport = \"net_tap0\"\n{exception}\n[timeouts]"),
            );
            Config::from_toml(&text)
        };
        let lb = with("interface = \"lbtap\"\nannounce_table = 100")
            .unwrap()
            .lb
            .unwrap();
        assert_eq!(lb.announce_table, Some(100));
        let e = with("announce_table = 100").unwrap_err();
        assert!(e.to_string().contains("name it with `interface`"), "{e}");
        for table in [0, 254] {
            let e = with(&format!("interface = \"lbtap\"\nannounce_table = {table}")).unwrap_err();
            assert!(e.to_string().contains("is reserved"), "{e}");
        }
    }

    #[test]
    fn sync_needs_addresses_and_a_key_of_sixteen_bytes() {
        let with = |sync: &str| {
            Config::from_toml(&LB.replace("[timeouts]", &format!("{sync}\n[timeouts]")))
        };
        let lb = with("[sync]\nlisten = \"10.0.0.1:8848\"\npeers = [\"10.0.0.2:8848\"]\nkey = \"sixteen bytes ok\"")
            .unwrap()
            .lb
            .unwrap();
        let sync = lb.sync.unwrap();
        assert_eq!(sync.peers, ["10.0.0.2:8848".parse().unwrap()]);
        assert_eq!(sync.max_rate, 100_000);
        assert!(
            !format!("{sync:?}").contains("sixteen"),
            "the key stays out of logs"
        );
        for (bad, says) in [
            (
                "[sync]\nlisten = \"10.0.0.1\"\npeers = []\nkey = \"sixteen bytes ok\"",
                "not an address and port",
            ),
            (
                "[sync]\nlisten = \"10.0.0.1:1\"\npeers = []\nkey = \"short\"",
                "at least 16 bytes",
            ),
            (
                "[sync]\nlisten = \"10.0.0.1:1\"\npeers = []",
                "`key` or `key_file`",
            ),
        ] {
            let e = with(bad).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn load_balancer_setup() {
        let c = Config::from_toml(LB).unwrap();
        let lb = c.lb.unwrap();
        assert_eq!(lb.addresses, vec![vec![("10.0.0.1".parse().unwrap(), 24)]]);
        assert_eq!(
            lb.routes,
            vec![(
                "0.0.0.0".parse().unwrap(),
                0,
                0,
                Some("10.0.0.254".parse().unwrap())
            )]
        );
        assert_eq!(lb.neighbors[0].1, MacAddr([2, 0, 0, 0, 0, 5]));
        assert_eq!(lb.timeouts.tcp_established, 600);
        assert_eq!(lb.timeouts.udp, 300);
        let s = &lb.services[0];
        assert_eq!(
            (s.sched, s.reals[0].weight, s.reals[0].port, s.reals[0].mode),
            (SchedKind::Rr, 3, 8080, ForwardMode::Fnat)
        );
        assert_eq!(lb.capacity, 1 << 20);
    }

    #[test]
    fn desired_state_round_trips() {
        let lb = Config::from_toml(LB).unwrap().lb.unwrap();
        let mut specs = lb.services.clone();
        specs[0].persistence = Some(Persistence {
            timeout: 300,
            prefix_len: 24,
        });
        specs[0].sched = SchedKind::Sh;
        specs[0].flags = SchedFlags {
            fallback: true,
            port: true,
        };
        specs[0].health = Some(HealthCheck {
            kind: HealthKind::Http {
                path: "/health".into(),
                expect: 204,
            },
            port: Some(9000),
            interval_ms: 500,
            timeout_ms: 300,
            rise: 3,
            fall: 2,
            on_failure: OnFailure::Remove,
        });
        let text = desired_to_toml(&specs, &lb.timeouts);
        let (back, timeouts) = parse_desired(&text).unwrap();
        assert_eq!(back, specs, "{text}");
        assert_eq!(timeouts, lb.timeouts);
        let e =
            parse_desired("[[service]]\nprotocol = \"tcp\"\nvip = \"x\"\nport = 1\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("[[service]] vip", Some(3)));
    }

    #[test]
    fn load_balancer_errors_name_the_line() {
        let e = err(&LB.replace("mode = \"fnat\"", "mode = \"dr\""));
        assert_eq!(e.line, Some(24), "{e}");
        assert!(
            e.message
                .contains("DR (-g), which cannot change the destination port"),
            "{e}"
        );
        let e = err(&LB.replace("scheduler = \"rr\"", "scheduler = \"wrrr\""));
        assert_eq!(
            (e.key.as_str(), e.line),
            ("[[service]] scheduler", Some(26))
        );
        assert!(e.message.contains("valid schedulers: rr, wrr"), "{e}");
        let e = err(&LB.replace("local_addresses = [\"10.0.0.100\"]\n", ""));
        assert!(e.message.contains("no local addresses"), "{e}");
        let e = err(&LB.replace("\"10.0.0.1/24\"", "\"10.0.0.1\""));
        assert_eq!((e.key.as_str(), e.line), ("[[port]] addresses", Some(7)));
        let e = err(&LB.replace("port = \"net_pcap0\"\ngateway", "port = \"eth1\"\ngateway"));
        assert!(e.message.contains("no port named \"eth1\""), "{e}");
        let e = err(&LB.replace("02:00:00:00:00:05", "02:00:00:00:05"));
        assert_eq!(e.key, "[[neighbor]] mac");
        let e = err(&LB.replace("protocol = \"tcp\"", "protocol = \"sctp\""));
        assert!(e.message.contains("use \"tcp\" or \"udp\""), "{e}");
        let e = err(&format!(
            "{LB}\n[[forward]]\nfrom = \"net_pcap0\"\nto = \"net_pcap0\"\n"
        ));
        assert!(e.message.contains("not both"), "{e}");
    }

    #[test]
    fn semantic_checks() {
        let e = err(&GOOD.replace("lcores = [1]", "lcores = [0]"));
        assert!(e.message.contains("main lcore"), "{e}");
        let e = err(&GOOD.replace("lcores = [1]", "lcores = [1, 1]"));
        assert!(e.message.contains("twice"), "{e}");
        let e = err(&GOOD.replace("lcores = [1]", "lcores = [1]\nburst = 65"));
        assert_eq!((e.key.as_str(), e.line), ("[workers] burst", Some(7)));
        let e = err(&GOOD.replace("lcores = [1]", "lcores = [1]\nrealtime_priority = 100"));
        assert_eq!(
            (e.key.as_str(), e.line),
            ("[workers] realtime_priority", Some(7))
        );
        assert!(e.message.contains("use 1 to 99"), "{e}");
        let e = err(&GOOD.replace("name = \"net_null0\"", "name = \"net_pcap0\""));
        assert!(e.message.contains("defined twice"), "{e}");
        let e = err(&GOOD.replace("device = \"net_pcap0,", "device = \"net_pcap1,"));
        assert_eq!((e.key.as_str(), e.line), ("[[port]] device", Some(10)));
        let e = err(&format!(
            "{GOOD}\n[[forward]]\nfrom = \"net_pcap0\"\nto = \"net_pcap0\"\n"
        ));
        assert!(e.message.contains("already forwards"), "{e}");
    }

    #[test]
    fn allow_and_deny_lists_read_and_dump() {
        let text = r#"
[[service]]
protocol = "tcp"
vip = "198.18.0.10"
port = 80
allow = ["10.9.0.0/16", "192.0.2.7"]
deny = ["10.9.0.66"]

[[service.real]]
address = "10.0.0.5"
mode = "dr"
"#;
        let (specs, t) = parse_desired(text).unwrap();
        assert_eq!(specs[0].allow.len(), 2);
        assert_eq!(specs[0].deny, [("10.9.0.66".parse().unwrap(), 32)]);
        let dumped = desired_to_toml(&specs, &t);
        assert!(
            dumped
                .contains("allow = [\"10.9.0.0/16\", \"192.0.2.7/32\"]\ndeny = [\"10.9.0.66/32\"]"),
            "{dumped}"
        );
        assert_eq!(parse_desired(&dumped).unwrap().0, specs);
        let host_bits = text.replace("10.9.0.0/16", "10.9.0.1/16");
        let e = parse_desired(&host_bits).unwrap_err();
        assert!(e.to_string().contains("host bits"), "{e}");
        assert_eq!(e.line, Some(6));
        let family = text.replace("192.0.2.7", "2001:db8::/32");
        let e = parse_desired(&family).unwrap_err();
        assert!(e.to_string().contains("other address family"), "{e}");
    }

    #[test]
    fn peer_local_addresses_read_and_dump() {
        let text = r#"
[[service]]
protocol = "tcp"
vip = "198.18.0.10"
port = 80
local_addresses = ["10.0.1.1"]
peer_local_addresses = ["10.0.1.2", "10.0.1.3"]

[[service.real]]
address = "10.0.0.5"
mode = "fnat"
"#;
        let (specs, t) = parse_desired(text).unwrap();
        assert_eq!(specs[0].peer_laddrs.len(), 2);
        let dumped = desired_to_toml(&specs, &t);
        assert!(
            dumped.contains("peer_local_addresses = [\"10.0.1.2\", \"10.0.1.3\"]"),
            "{dumped}"
        );
        assert_eq!(parse_desired(&dumped).unwrap().0, specs);
        let both = text.replace("\"10.0.1.3\"", "\"10.0.1.1\"");
        let e = parse_desired(&both).unwrap_err();
        assert!(
            e.to_string().contains("both a local address and a peer's"),
            "{e}"
        );
        let v6 = text.replace("\"10.0.1.3\"", "\"2001:db8::3\"");
        let e = parse_desired(&v6).unwrap_err();
        assert!(e.to_string().contains("address family"), "{e}");
    }

    #[test]
    fn fwmark_services_read_and_dump() {
        let text = r#"
[[service]]
fwmark = 3
match = ["tcp:198.18.0.10:80,443"]
scheduler = "rr"
persistence = 600

[[service.real]]
address = "10.0.0.5"
mode = "dr"
"#;
        let (specs, t) = parse_desired(text).unwrap();
        assert_eq!(specs[0].key, ServiceKey::fwmark(3, false));
        assert_eq!(specs[0].matches[0].to_string(), "tcp:198.18.0.10/32:80,443");
        let dumped = desired_to_toml(&specs, &t);
        assert!(
            dumped.contains("fwmark = 3\nmatch = [\"tcp:198.18.0.10/32:80,443\"]"),
            "{dumped}"
        );
        assert_eq!(parse_desired(&dumped).unwrap().0, specs);
        for (bad, says) in [
            ("[[service]]\nfwmark = 3\nprotocol = \"tcp\"\n", "has no protocol, vip or port"),
            ("[[service]]\nfwmark = 3\nmatch = [\"tcp:1.2.3.4:x\"]\n", "protocol:prefix:ports"),
            ("[[service]]\nprotocol = \"tcp\"\nvip = \"1.2.3.4\"\nport = 80\nmatch = [\"tcp:1.2.3.4:80\"]\n", "only a firewall-mark service"),
            ("[[service]]\nprotocol = \"tcp\"\nvip = \"1.2.3.4\"\n", "needs protocol, vip and port"),
        ] {
            let e = parse_desired(bad).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
            assert!(e.line.is_some(), "{bad}: {e} has a line");
        }
    }
}
