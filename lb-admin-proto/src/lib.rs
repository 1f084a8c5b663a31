//! The admin socket's protocol, defined once: `lb-dataplane` serves it and
//! `lb-ctl` speaks it, both compiled against these types, so a field
//! renamed on one side fails to build the other.
//!
//! On the wire it is newline-delimited JSON over a Unix socket. A request
//! is one line, `{"v": 1, "op": "list"}` with the operation's fields beside
//! `op` ([`Op`], written by [`Op::to_line`], read by [`decode_request`]).
//! An answer is one line ([`Reply`]): `{"ok": true, "data": ...}`, or
//! `{"ok": false, "error": "..."}` with `"code": "version"` when the
//! request was of another protocol version. Every operation names the type
//! of its `data` in its documentation. `version` is answered whatever
//! version a client speaks, so that a client can ask first and tell a
//! dataplane of another protocol apart from a refusal.
//!
//! It is a crate of its own, not a module of `lb-core`, because it is a
//! contract between two programs and nothing else: `lb-ctl` builds against
//! it without the schedulers, sessions and configuration schema, and a
//! change to the wire format is a change to this one file (and to the
//! fixtures under `tests/protocol/` that pin it).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The protocol version of these types. Raise it when a change would make
/// an older client or dataplane misread the other.
pub const PROTOCOL_VERSION: u64 = 1;

/// The longest request line a dataplane accepts.
pub const MAX_REQUEST: usize = 1 << 20;

/// A service as the protocol names it (ipvsadm's -A/-E arguments).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    /// `tcp` or `udp`; empty for a firewall-mark service.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vip: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u16,
    /// A firewall-mark service (ipvsadm -f) instead of protocol, VIP and
    /// port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fwmark: Option<u32>,
    /// A firewall-mark service's traffic, each `protocol:prefix:ports`
    /// (`tcp:198.18.0.10/32:80,443`); on edit, replaces the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
    /// Seconds; `Some(0)` removes persistence on edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netmask: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_addresses: Option<Vec<String>>,
    /// Other directors' local addresses (under ECMP, each its own): kept
    /// for the connections they sync here, never used for new ones; on
    /// edit, replaces the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_local_addresses: Option<Vec<String>>,
    /// Client prefixes that may open connections (empty: all), and those
    /// that may not; on edit, each replaces its list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<String>>,
}

fn is_zero(port: &u16) -> bool {
    *port == 0
}

/// A real server as the protocol names it (ipvsadm's -a/-e arguments).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RealDef {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `dr`, `nat`, `tun` or `fnat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<u32>,
}

/// An operation, with the type of its answer's `data`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// [`VersionInfo`].
    Version,
    /// ipvsadm -L: [`List`].
    List,
    /// ipvsadm -A: [`Committed`].
    AddService { service: ServiceDef },
    /// ipvsadm -E: [`Committed`].
    EditService { service: ServiceDef },
    /// ipvsadm -D: [`Committed`].
    DelService { service: ServiceDef },
    /// ipvsadm -a: [`Committed`].
    AddReal { service: ServiceDef, real: RealDef },
    /// ipvsadm -e: [`Committed`].
    EditReal { service: ServiceDef, real: RealDef },
    /// ipvsadm -d: [`Committed`].
    DelReal { service: ServiceDef, real: RealDef },
    /// ipvsadm -C: [`Committed`].
    Clear,
    /// ipvsadm -Z: [`Empty`].
    Zero,
    /// ipvsadm -L --timeout: [`Timeouts`].
    GetTimeouts,
    /// ipvsadm --set (0 leaves a timeout as it is): [`Committed`].
    SetTimeouts { tcp: u32, tcpfin: u32, udp: u32 },
    /// ipvsadm -L -c, a page at a time: [`Connections`].
    Connections {
        #[serde(default)]
        offset: usize,
        #[serde(default = "default_limit")]
        limit: usize,
    },
    /// [`Counters`].
    Counters,
    /// [`Health`].
    Health,
    /// [`Routes`].
    Routes,
    /// A static route; `port` by interface name: [`Committed`].
    AddRoute {
        prefix: String,
        port: String,
        #[serde(default)]
        gateway: Option<String>,
    },
    /// [`Committed`].
    DelRoute { prefix: String },
    /// The neighbour table (of the first worker; they learn from each
    /// other): [`Neighbors`].
    Neighbors,
    /// A static neighbour (replacing what was known of `address`); `port`
    /// by interface name: [`Empty`].
    AddNeighbor {
        address: String,
        mac: String,
        port: String,
    },
    /// Forgets a neighbour, static or learned: [`Empty`].
    DelNeighbor { address: String },
    /// Each worker's last stalls, by cause: [`Stalls`].
    Stalls,
    /// The running services and timeouts as configuration: [`Dump`].
    Dump,
    /// Replaces services and timeouts by a desired state: [`Applied`].
    Apply {
        toml: String,
        #[serde(default)]
        dry_run: bool,
    },
}

fn default_limit() -> usize {
    1000
}

/// A request as it goes on the wire: the version beside the operation.
#[derive(Serialize)]
struct Envelope<'a> {
    v: u64,
    #[serde(flatten)]
    op: &'a Op,
}

impl Op {
    /// The request line for this operation, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(&Envelope {
            v: PROTOCOL_VERSION,
            op: self,
        })
        .unwrap_or_default();
        line.push('\n');
        line
    }
}

/// Why a request line was refused before anything was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Another protocol version, or none (answered with
    /// [`Code::Version`]).
    Version(String),
    /// Not JSON, not an operation, or not its fields.
    Bad(String),
}

/// Reads one request line. `version` is read whatever its version.
pub fn decode_request(line: &[u8]) -> Result<Op, Refused> {
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line)
        .map_err(|e| Refused::Bad(format!("not a JSON request: {e}")))?;
    let version = v.remove("v");
    if v.get("op").and_then(|o| o.as_str()) == Some("version") {
        return Ok(Op::Version);
    }
    match version.as_ref().and_then(serde_json::Value::as_u64) {
        Some(PROTOCOL_VERSION) => {}
        Some(other) => {
            return Err(Refused::Version(format!(
            "protocol version {other} is not supported (this dataplane speaks {PROTOCOL_VERSION})"
        )))
        }
        None => {
            return Err(Refused::Version(format!(
                "the request has no protocol version: add \"v\": {PROTOCOL_VERSION}"
            )))
        }
    }
    let keys: Vec<String> = v.keys().cloned().collect();
    let op: Op = serde_json::from_value(serde_json::Value::Object(v))
        .map_err(|e| Refused::Bad(format!("bad request: {e}")))?;
    // serde lets a unit variant (`list`) ignore fields it does not have:
    // refuse them here, as the struct variants do.
    if let Ok(serde_json::Value::Object(known)) = serde_json::to_value(&op) {
        if let Some(k) = keys.iter().find(|k| !known.contains_key(k.as_str())) {
            return Err(Refused::Bad(format!(
                "bad request: unknown field `{k}` for `{}`",
                known.get("op").and_then(|o| o.as_str()).unwrap_or("?")
            )));
        }
    }
    Ok(op)
}

/// What kind of refusal an answer is, when it is not a plain one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The request's protocol version is not the dataplane's.
    Version,
}

/// One answer line.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Reply<T> {
    pub ok: bool,
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Code>,
}

impl<T: Serialize> Reply<T> {
    pub fn done(data: T) -> Reply<T> {
        Reply {
            ok: true,
            data: Some(data),
            error: None,
            code: None,
        }
    }

    pub fn refused(error: impl Into<String>, code: Option<Code>) -> Reply<T> {
        Reply {
            ok: false,
            data: None,
            error: Some(error.into()),
            code,
        }
    }

    /// The answer line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// An answer that could not be taken as its operation's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// Refused, with the dataplane's reason and code.
    Refused(String, Option<Code>),
    /// Not an answer of this protocol.
    Unreadable(String),
}

/// Reads one answer line as operation data of type `T`.
pub fn decode_reply<T: DeserializeOwned>(line: &str) -> Result<T, Answered> {
    let r: Reply<T> =
        serde_json::from_str(line).map_err(|e| Answered::Unreadable(e.to_string()))?;
    match (r.ok, r.data) {
        (true, Some(data)) => Ok(data),
        (true, None) => Err(Answered::Unreadable("an answer without data".into())),
        (false, _) => Err(Answered::Refused(
            r.error.unwrap_or_else(|| "refused without a reason".into()),
            r.code,
        )),
    }
}

/// The data of any answer, for the dataplane to send.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Version(VersionInfo),
    Committed(Committed),
    Empty(Empty),
    Timeouts(Timeouts),
    List(List),
    Connections(Connections),
    Counters(Counters),
    Health(Health),
    Routes(Routes),
    Neighbors(Neighbors),
    Stalls(Stalls),
    Dump(Dump),
    Applied(Applied),
}

/// `version`: the dataplane's protocol and release.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct VersionInfo {
    pub protocol: u64,
    pub version: String,
}

/// A change was published as configuration `version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct Committed {
    pub version: u64,
}

/// Done, with nothing to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct Empty {}

/// Session timeouts in seconds, as ipvsadm --set orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcpfin: u32,
    pub udp: u32,
}

/// Totals since start (or the last `zero`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct Stats {
    pub conns: u64,
    pub in_pkts: u64,
    pub out_pkts: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// Smoothed rates per second.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize, Serialize)]
pub struct Rates {
    pub cps: f64,
    pub in_pps: f64,
    pub out_pps: f64,
    pub in_bps: f64,
    pub out_bps: f64,
}

/// `list`: every service, in the dataplane's order.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct List {
    /// The configuration's version.
    pub version: u64,
    pub services: Vec<ServiceInfo>,
}

/// A service as `list` shows it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct ServiceInfo {
    /// `TCP`, `UDP`, or `FWM` for a firewall-mark service (whose `vip` is
    /// its family's unspecified address and `port` 0).
    pub protocol: String,
    pub vip: String,
    pub port: u16,
    /// A firewall-mark service's mark.
    pub fwmark: Option<u32>,
    /// A firewall-mark service's traffic (`protocol:prefix:ports`).
    pub matches: Vec<String>,
    pub scheduler: String,
    /// ipvsadm's `-b` list, empty for none.
    pub flags: String,
    pub persistence: Option<u32>,
    pub netmask: Option<u8>,
    pub local_addresses: Vec<String>,
    pub stats: Stats,
    pub rates: Rates,
    pub reals: Vec<RealInfo>,
    /// Configured but not served: VIPs are followed (`[exception]
    /// follow_vips`) and this director does not hold this one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby: bool,
    /// Its allow and deny lists (`10.9.0.0/16`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Other directors' local addresses, kept for their synced connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_local_addresses: Vec<String>,
}

/// A real server as `list` shows it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct RealInfo {
    pub address: String,
    pub port: u16,
    /// `dr`, `nat`, `tun` or `fnat`.
    pub mode: String,
    /// ipvsadm's name for the mode (`Route`, `Masq`, `Tunnel`, `FullNat`).
    pub forward: String,
    pub weight: u32,
    pub upper: u32,
    pub lower: u32,
    pub active: u64,
    pub inactive: u64,
    /// Persistence templates pointing at it (ipvsadm's PersistConn).
    pub persistent: u64,
    /// `up` or `down`; none when not checked.
    pub health: Option<String>,
    pub stats: Stats,
    pub rates: Rates,
}

/// `connections`: one page of live sessions.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Connections {
    pub connections: Vec<Connection>,
}

/// One live session (`ipvsadm -L -c`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Connection {
    pub protocol: String,
    pub client: String,
    pub virtual_: String,
    pub real: String,
    /// Full-NAT's local address and port.
    pub local: Option<String>,
    pub state: String,
    pub expires_in: u32,
}

/// `counters`: the engines' counters summed and per worker, the ports',
/// the VLANs' and the admin socket's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Counters {
    pub total: BTreeMap<String, u64>,
    pub workers: Vec<WorkerCounters>,
    pub ports: Vec<PortInfo>,
    pub vlans: Vec<VlanCounters>,
    pub admin: AdminCounters,
    /// With connection sync: datagrams and records sent and received, and
    /// those refused, by reason (`bad_auth`, `replayed`, `rate_limited`...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sync: BTreeMap<String, u64>,
}

/// One worker's part of [`Counters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct WorkerCounters {
    pub sessions: u32,
    pub capacity: u32,
    /// The configuration version the worker runs.
    pub version: u64,
    /// Receive, transmit, drop and loop counters of its lcore.
    pub dataplane: Option<LcoreCounters>,
    pub local_addresses: Vec<LaddrUse>,
    /// The engine's counters.
    pub counters: BTreeMap<String, u64>,
}

/// A worker's own counters, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct LcoreCounters {
    pub lcore: u32,
    pub counters: BTreeMap<String, u64>,
}

/// How much of a Full-NAT local address one worker uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct LaddrUse {
    pub service: String,
    pub address: String,
    pub connections: u32,
    pub ports: u32,
}

/// A port: its driver, link and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct PortInfo {
    pub name: String,
    pub driver: String,
    pub link: Link,
    pub stats: PortStats,
}

/// Link state as the driver reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Link {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// The basic counters of a port (DPDK's `rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_nombuf: u64,
}

impl PortStats {
    /// Each counter with its name, in the order above.
    pub fn fields(&self) -> [(&'static str, u64); 8] {
        [
            ("rx_packets", self.rx_packets),
            ("tx_packets", self.tx_packets),
            ("rx_bytes", self.rx_bytes),
            ("tx_bytes", self.tx_bytes),
            ("rx_missed", self.rx_missed),
            ("rx_errors", self.rx_errors),
            ("tx_errors", self.tx_errors),
            ("rx_nombuf", self.rx_nombuf),
        ]
    }
}

/// Frames in and out of a VLAN sub-interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct VlanCounters {
    pub name: String,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// What the admin socket did with its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct AdminCounters {
    /// Connected now.
    pub clients: u64,
    pub accepted: u64,
    pub closed_idle: u64,
    pub closed_slow: u64,
    pub evicted: u64,
    pub refused: u64,
}

/// `health`: every checked server, by service and server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Health {
    pub servers: Vec<ServerHealth>,
}

/// One checked server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ServerHealth {
    pub service: String,
    pub server: String,
    /// `up` or `down`.
    pub state: String,
    pub successes: u32,
    pub failures: u32,
    /// The last check's outcome (`ok` or why not).
    pub last: String,
    pub since_secs: u64,
}

/// `routes`: the interfaces' addresses and the static routes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Routes {
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
}

/// An address of an interface, `addr/len`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Address {
    pub port: String,
    pub address: String,
}

/// A static route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Route {
    pub prefix: String,
    pub port: String,
    pub gateway: Option<String>,
}

/// `neighbors`: what the dataplane knows of its neighbours' MACs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Neighbors {
    pub neighbors: Vec<Neighbor>,
}

/// One neighbour.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Neighbor {
    pub address: String,
    pub mac: String,
    pub port: String,
    /// Configured (never ages) rather than learned from ARP.
    #[serde(rename = "static")]
    pub fixed: bool,
    /// Seconds a learned entry has left; none for a static one.
    pub expires_in: Option<u32>,
}

/// `stalls`: each worker's last stalls (passes of its loop further apart
/// than the dataplane's stall threshold), oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Stalls {
    /// The threshold: a gap between two passes this long or longer is a
    /// stall (ns).
    pub threshold_ns: u64,
    pub workers: Vec<WorkerStalls>,
}

/// One worker's part of [`Stalls`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct WorkerStalls {
    pub lcore: u32,
    /// Stalls since the worker started, the log's older ones included.
    pub total: u64,
    pub stalls: Vec<Stall>,
}

/// A time the worker was away from its loop: while it is, nothing drains
/// its receive queues.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Stall {
    /// When it ended, on the machine's `CLOCK_MONOTONIC` (ns), the clock
    /// other processes' events can be set beside.
    pub end_ns: u64,
    /// How long the loop was away (ns).
    pub gap_ns: u64,
    /// How much of that the thread did not run: preempted by the kernel
    /// or its virtual CPU taken by the hypervisor (ns, an estimate good to
    /// the worker's 1 ms reading of its CPU time).
    pub away_ns: u64,
    /// What the stalled pass did besides its bursts: `expiry` (a sweep of
    /// the session table), `neighbours` (the neighbour table's ageing),
    /// `snapshot` (a new configuration adopted), `requests` (the control
    /// thread's: reports, listings), `sync`.
    #[serde(default)]
    pub during: Vec<String>,
}

/// Whether a stall of `gap_ns` in which the thread was away `away_ns` was
/// the machine's (away for at least half of it) rather than the worker's.
pub fn stall_outside(gap_ns: u64, away_ns: u64) -> bool {
    away_ns.saturating_mul(2) >= gap_ns
}

impl Stall {
    /// Whether the machine took the time (the thread was away for at
    /// least half of it) rather than the worker's own work.
    pub fn outside(&self) -> bool {
        stall_outside(self.gap_ns, self.away_ns)
    }

    /// When it started, on `CLOCK_MONOTONIC` (ns).
    pub fn start_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.gap_ns)
    }
}

/// `dump`: the running services and timeouts in the configuration schema.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Dump {
    pub toml: String,
}

/// `apply`: what changed (or, in a dry run, would).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Applied {
    /// `+ service ...`, `- service ...`, `~ service ...`, `~ timeouts`.
    pub diff: Vec<String>,
    pub applied: bool,
    /// The version published; none in a dry run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_its_version_beside_the_operation() {
        let line = Op::SetTimeouts {
            tcp: 900,
            tcpfin: 120,
            udp: 300,
        }
        .to_line();
        assert_eq!(
            line,
            "{\"v\":1,\"op\":\"set_timeouts\",\"tcp\":900,\"tcpfin\":120,\"udp\":300}\n"
        );
        assert_eq!(
            decode_request(line.trim_end().as_bytes()),
            Ok(Op::SetTimeouts {
                tcp: 900,
                tcpfin: 120,
                udp: 300
            })
        );
    }

    #[test]
    fn versions_are_told_apart_from_bad_requests() {
        assert_eq!(
            decode_request(br#"{"v": 7, "op": "version"}"#),
            Ok(Op::Version)
        );
        assert!(matches!(
            decode_request(br#"{"v": 7, "op": "list"}"#),
            Err(Refused::Version(_))
        ));
        assert!(matches!(
            decode_request(br#"{"op": "list"}"#),
            Err(Refused::Version(_))
        ));
        assert!(matches!(
            decode_request(br#"{"v": 1, "op": "list", "extra": 1}"#),
            Err(Refused::Bad(_))
        ));
        assert!(matches!(
            decode_request(br#"{"v": 1, "op": "launch"}"#),
            Err(Refused::Bad(_))
        ));
        assert!(matches!(decode_request(b"list"), Err(Refused::Bad(_))));
    }

    #[test]
    fn refusals_come_back_with_their_code() {
        let line = Reply::<Empty>::refused("no", Some(Code::Version)).to_line();
        let text = String::from_utf8(line).unwrap();
        assert_eq!(
            text,
            "{\"ok\":false,\"error\":\"no\",\"code\":\"version\"}\n"
        );
        assert_eq!(
            decode_reply::<List>(&text),
            Err(Answered::Refused("no".into(), Some(Code::Version)))
        );
        assert_eq!(
            decode_reply::<Committed>("{\"ok\":true,\"data\":{\"version\":3}}"),
            Ok(Committed { version: 3 })
        );
        assert!(matches!(
            decode_reply::<Committed>("{\"ok\":true,\"data\":{\"services\":[]}}"),
            Err(Answered::Unreadable(_))
        ));
    }
}
