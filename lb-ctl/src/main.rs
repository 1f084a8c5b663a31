//! `lb-ctl`: administers a running lb-dataplane over its admin socket.
//!
//! With ipvsadm's options (`lb-ctl -A -t 198.18.0.10:80 -s wlc`,
//! `lb-ctl -a -t 198.18.0.10:80 -r 10.0.0.5:8080 -m -w 2`, `lb-ctl -Ln`,
//! `lb-ctl -S`, `lb-ctl -R < rules`) it behaves as ipvsadm does, listing
//! in ipvsadm's formats; subcommands say what ipvsadm cannot (`apply`,
//! `config dump`, `counters`, `laddr`, `completions`).
//!
//! Exit codes: 0 done, 1 refused by the dataplane, 2 usage, 3 the socket
//! cannot be reached, 4 the dataplane speaks another admin protocol.

mod client;
mod format;
mod keepalived;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use lb_admin_proto::{
    Applied, Committed, Connections, Counters, Dump, Empty, Health, List, Neighbors, Op, RealDef,
    Routes, ServiceDef, Stalls, Timeouts,
};

use client::{Client, Failure};
use format::Table;

/// `lb-ctl stalls`: per worker, its stalls by cause, then its `last`
/// latest, times on the machine's monotonic clock.
fn stalls_table(st: &Stalls, last: usize) -> String {
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut out = String::new();
    for w in &st.workers {
        let outside = w.stalls.iter().filter(|s| s.outside()).count();
        out.push_str(&format!(
            "lcore {}: {} stalls of {} us or more; of the {} kept, {} own, {} outside\n",
            w.lcore,
            w.total,
            st.threshold_ns / 1000,
            w.stalls.len(),
            w.stalls.len() - outside,
            outside
        ));
        if w.stalls.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "  {:>16} {:>10} {:>10}  {:<8} {}\n",
            "ended (s)", "gap (ms)", "away (ms)", "cause", "during"
        ));
        for s in &w.stalls[w.stalls.len().saturating_sub(last)..] {
            out.push_str(&format!(
                "  {:>16.6} {:>10.3} {:>10.3}  {:<8} {}\n",
                s.end_ns as f64 / 1e9,
                ms(s.gap_ns),
                ms(s.away_ns),
                if s.outside() { "outside" } else { "own" },
                if s.during.is_empty() {
                    "bursts".to_owned()
                } else {
                    s.during.join(",")
                }
            ));
        }
    }
    out
}

/// The socket lb-dataplane serves unless configured otherwise.
const DEFAULT_SOCKET: &str = "/run/lb-dataplane.sock";

const EXAMPLES: &str = "Examples (ipvsadm's syntax):
  lb-ctl -A -t 198.18.0.10:80 -s wlc                       add a TCP service
  lb-ctl -a -t 198.18.0.10:80 -r 10.0.0.5:8080 -m -w 2     add a NAT real server
  lb-ctl -a -t 198.18.0.10:80 -r 10.0.0.6 -g               add a DR real server
  lb-ctl -a -t 198.18.0.10:80 -r 10.0.1.5:8080 --fullnat   add a Full-NAT real server
  lb-ctl -e -t 198.18.0.10:80 -r 10.0.0.6 -w 0             quiesce it
  lb-ctl -Ln --stats                                        list with statistics
  lb-ctl -S > rules; lb-ctl -C; lb-ctl -R < rules           save, clear, restore
And beyond it:
  lb-ctl laddr add -t 198.18.0.10:80 -z 10.0.0.100         a Full-NAT local address
  lb-ctl apply -f desired.toml --dry-run                    what a desired state changes
  lb-ctl config dump                                        the running services as TOML
  lb-ctl counters -o json                                   per-worker counters
  lb-ctl health                                             health checks' verdicts
  lb-ctl route add 10.20.0.0/16 --port net_af_packet0 --via 10.0.0.254
  lb-ctl neigh add 10.0.0.5 --mac 02:00:00:00:02:05 --port net_af_packet0
  lb-ctl -A -f 1 -s rr -p 300 --match tcp:198.18.0.10/32:80,443   a firewall-mark service";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// ipvsadm's command line.
#[derive(Debug, Parser)]
#[command(
    name = "lb-ctl",
    version,
    about = "Administer lb-dataplane: ipvsadm's options and output, plus subcommands (apply, config, counters, health, laddr, route, neigh, completions)",
    after_help = EXAMPLES
)]
struct Ipvsadm {
    /// Add a virtual service.
    #[arg(short = 'A', long = "add-service")]
    add_service: bool,
    /// Edit a virtual service.
    #[arg(short = 'E', long = "edit-service")]
    edit_service: bool,
    /// Delete a virtual service.
    #[arg(short = 'D', long = "delete-service")]
    delete_service: bool,
    /// Clear every virtual service.
    #[arg(short = 'C', long = "clear")]
    clear: bool,
    /// Restore rules from standard input (ipvsadm-save format).
    #[arg(short = 'R', long = "restore")]
    restore: bool,
    /// Save the rules to standard output (ipvsadm-save format).
    #[arg(short = 'S', long = "save")]
    save: bool,
    /// Add a real server.
    #[arg(short = 'a', long = "add-server")]
    add_server: bool,
    /// Edit a real server.
    #[arg(short = 'e', long = "edit-server")]
    edit_server: bool,
    /// Delete a real server.
    #[arg(short = 'd', long = "delete-server")]
    delete_server: bool,
    /// List the services (or one, with -t/-u).
    #[arg(short = 'L', long = "list", short_alias = 'l')]
    list: bool,
    /// Zero the statistics.
    #[arg(short = 'Z', long = "zero")]
    zero: bool,
    /// Add a Full-NAT local address (DPVS's --add-laddr, with -z).
    #[arg(short = 'P', long = "add-laddr")]
    add_laddr: bool,
    /// Delete a Full-NAT local address (DPVS's --del-laddr, with -z).
    #[arg(short = 'Q', long = "del-laddr")]
    del_laddr: bool,
    /// List Full-NAT local addresses (DPVS's --get-laddr).
    #[arg(short = 'G', long = "get-laddr")]
    get_laddr: bool,
    /// The local address for -P/-Q.
    #[arg(short = 'z', long = "laddr")]
    laddr: Option<String>,
    /// With -P/-Q: the address is another director's (under ECMP, each has
    /// its own): kept for the connections it syncs here, never used for new
    /// ones.
    #[arg(long = "peer")]
    peer: bool,
    /// The interface of a local address (accepted for DPVS's sake; ports
    /// are chosen by routing here).
    #[arg(short = 'F', long = "ifname")]
    ifname: Option<String>,
    /// Set the TCP, TCP-FIN and UDP timeouts in seconds (0 keeps one).
    #[arg(long = "set", num_args = 3, value_names = ["TCP", "TCPFIN", "UDP"])]
    set: Option<Vec<u32>>,
    /// A TCP service, host[:port].
    #[arg(short = 't', long = "tcp-service", value_name = "SERVICE")]
    tcp: Option<String>,
    /// A UDP service, host[:port].
    #[arg(short = 'u', long = "udp-service", value_name = "SERVICE")]
    udp: Option<String>,
    /// A firewall-mark service: one service for the traffic its --match
    /// list describes (several VIPs, ports or protocols).
    #[arg(short = 'f', long = "fwmark-service", value_name = "MARK")]
    fwmark: Option<u32>,
    /// What traffic a firewall-mark service takes, protocol:prefix:ports
    /// (tcp:198.18.0.10/32:80,443; udp:198.18.0.0/24:*); repeat for more.
    /// With -E, replaces the list.
    #[arg(long = "match", value_name = "MATCH")]
    matches: Vec<String>,
    /// Clients that may open connections to the service, a prefix
    /// (10.9.0.0/16) or an address; repeat for more (none: every client).
    /// With -E, replaces the list; `--allow none` empties it.
    #[arg(long = "allow", value_name = "PREFIX")]
    allow: Vec<String>,
    /// Clients that may not (checked first); as --allow.
    #[arg(long = "deny", value_name = "PREFIX")]
    deny: Vec<String>,
    /// The scheduler (rr wrr lc wlc sed nq dh sh lblc lblcr mh fo; default wlc).
    #[arg(short = 's', long = "scheduler")]
    scheduler: Option<String>,
    /// Persistence, in seconds (300 without a value).
    #[arg(short = 'p', long = "persistent", num_args = 0..=1, default_missing_value = "300", value_name = "TIMEOUT")]
    persistent: Option<u32>,
    /// The persistence netmask (255.255.255.0, or a prefix length).
    #[arg(short = 'M', long = "netmask")]
    netmask: Option<String>,
    /// Scheduler flags: sh-fallback, sh-port, mh-fallback, mh-port.
    #[arg(short = 'b', long = "sched-flags")]
    sched_flags: Option<String>,
    /// A real server, host[:port].
    #[arg(short = 'r', long = "real-server")]
    real: Option<String>,
    /// Direct routing (the default).
    #[arg(short = 'g', long = "gatewaying")]
    gatewaying: bool,
    /// IPIP tunnelling.
    #[arg(short = 'i', long = "ipip")]
    ipip: bool,
    /// NAT (masquerading).
    #[arg(short = 'm', long = "masquerading")]
    masquerading: bool,
    /// Full-NAT.
    #[arg(long = "fullnat")]
    fullnat: bool,
    /// The real server's weight (default 1; 0 quiesces it).
    #[arg(short = 'w', long = "weight")]
    weight: Option<u32>,
    /// Upper connection threshold.
    #[arg(short = 'x', long = "u-threshold")]
    upper: Option<u32>,
    /// Lower connection threshold.
    #[arg(short = 'y', long = "l-threshold")]
    lower: Option<u32>,
    /// Numeric output (always numeric here; accepted for ipvsadm's sake).
    #[arg(short = 'n', long = "numeric")]
    numeric: bool,
    /// List connections.
    #[arg(short = 'c', long = "connection")]
    connection: bool,
    /// List with statistics.
    #[arg(long)]
    stats: bool,
    /// List with rates.
    #[arg(long)]
    rate: bool,
    /// List the timeouts.
    #[arg(long)]
    timeout: bool,
    /// List with thresholds.
    #[arg(long)]
    thresholds: bool,
    /// List with each real server's persistence templates (PersistConn).
    #[arg(long = "persistent-conn")]
    persistent_conn: bool,
    /// Exact numbers (no K/M/G).
    #[arg(long)]
    exact: bool,
    /// Sorted listing (always sorted here, as ipvsadm's default).
    #[arg(long)]
    sort: bool,
    /// Output format of listings.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: Output,
    /// The admin socket.
    #[arg(long, env = "LB_CTL_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

/// What ipvsadm cannot say.
#[derive(Debug, Parser)]
#[command(name = "lb-ctl", version, after_help = EXAMPLES)]
struct Extra {
    #[command(subcommand)]
    command: Sub,
    /// The admin socket.
    #[arg(long, env = "LB_CTL_SOCKET", default_value = DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "text",
        global = true
    )]
    output: Output,
    /// Numeric output (always numeric; accepted anywhere, as ipvsadm's).
    #[arg(short = 'n', long = "numeric", global = true)]
    numeric: bool,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Replace services and timeouts by a desired state (TOML), atomically.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Only show what would change.
        #[arg(long)]
        dry_run: bool,
    },
    /// The running configuration.
    Config {
        #[command(subcommand)]
        what: ConfigWhat,
    },
    /// Per-worker and total counters (drops by reason, sessions, loop gaps).
    Counters,
    /// The health of every checked real server.
    Health,
    /// Each worker's last stalls (its loop 100 us or more between passes,
    /// when nothing drains its queues), by cause: its own work, or the
    /// machine's (preempted, or its virtual CPU taken).
    Stalls {
        /// How many of each worker's latest to show (it keeps 1024).
        #[arg(long, default_value_t = 20)]
        last: usize,
    },
    /// The load balancer's addresses and routes.
    Route {
        #[command(subcommand)]
        action: RouteAction,
    },
    /// The neighbour table: learned and static next hops' MACs.
    Neigh {
        #[command(subcommand)]
        action: NeighAction,
    },
    /// Full-NAT local addresses of a service.
    Laddr {
        #[command(subcommand)]
        action: Laddr,
    },
    /// Translate another tool's configuration into services (TOML, for
    /// `apply -f` or the dataplane's file), saying what it could not.
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
    /// Shell completions for ipvsadm-style use.
    Completions { shell: clap_complete::Shell },
    /// The manual page (roff), for packaging.
    #[command(hide = true)]
    Man,
}

#[derive(Debug, Subcommand)]
enum RouteAction {
    /// Addresses (and the connected routes they give) and static routes.
    List,
    /// Add a static route: `route add 10.20.0.0/16 --port net_af_packet0 --via 10.0.0.254`.
    Add {
        prefix: String,
        #[arg(long)]
        port: String,
        #[arg(long = "via")]
        via: Option<String>,
    },
    /// Remove a static route.
    Del { prefix: String },
}

#[derive(Debug, Subcommand)]
enum NeighAction {
    /// Every neighbour known, learned or static.
    List,
    /// A static neighbour: `neigh add 10.0.0.5 --mac 02:00:00:00:02:05 --port net_af_packet0`.
    Add {
        address: String,
        #[arg(long)]
        mac: String,
        #[arg(long)]
        port: String,
    },
    /// Forget a neighbour (a learned one is learned again from ARP).
    Del { address: String },
}

#[derive(Debug, Subcommand)]
enum ImportFrom {
    /// keepalived.conf's virtual_server blocks (its vrrp_instance blocks
    /// stay keepalived's): `lb-ctl import keepalived /etc/keepalived/keepalived.conf > services.toml`.
    Keepalived { file: PathBuf },
}

#[derive(Debug, Subcommand)]
enum ConfigWhat {
    /// Services and timeouts as TOML (what `apply` takes).
    Dump,
}

#[derive(Debug, Subcommand)]
enum Laddr {
    Add {
        #[arg(short = 't', long = "tcp-service")]
        tcp: Option<String>,
        #[arg(short = 'u', long = "udp-service")]
        udp: Option<String>,
        #[arg(short = 'z', long = "laddr")]
        laddr: String,
        /// Another director's address, kept for its synced connections.
        #[arg(long = "peer")]
        peer: bool,
    },
    Del {
        #[arg(short = 't', long = "tcp-service")]
        tcp: Option<String>,
        #[arg(short = 'u', long = "udp-service")]
        udp: Option<String>,
        #[arg(short = 'z', long = "laddr")]
        laddr: String,
        /// Another director's address, kept for its synced connections.
        #[arg(long = "peer")]
        peer: bool,
    },
    List,
}

/// The subcommand `args` (the program's name first) name, if any: the
/// first word that is neither a global option (`--socket P`, `-o json`,
/// `--output=json`, `-n`) nor its value, so that the global options go
/// before or after a subcommand, as operators type them.
fn subcommand_of(args: &[String]) -> Option<&str> {
    let mut words = args.iter().skip(1);
    while let Some(w) = words.next() {
        match w.as_str() {
            "--socket" | "-o" | "--output" => {
                words.next();
            }
            "-n" | "--numeric" => {}
            w if w.starts_with("--socket=") || w.starts_with("--output=") => {}
            w if w.starts_with("-o") && w.len() > 2 => {}
            w => return Extra::command().find_subcommand(w).is_some().then_some(w),
        }
    }
    None
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = if subcommand_of(&args).is_some() {
        let extra = Extra::parse();
        run_extra(extra)
    } else {
        run_ipvsadm(Ipvsadm::parse())
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(Error::Usage(m)) => {
            eprintln!("lb-ctl: {m}\nTry 'lb-ctl --help'.");
            ExitCode::from(2)
        }
        Err(Error::Failed(f)) => {
            eprintln!("lb-ctl: {f}");
            ExitCode::from(f.exit_code())
        }
    }
}

#[derive(Debug)]
enum Error {
    Usage(String),
    Failed(Failure),
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        Error::Failed(f)
    }
}

/// A port number, or a service name as ipvsadm-save writes without -n
/// (`http`), looked up in /etc/services, else in a few well-known names.
fn port_of(p: &str) -> Option<u16> {
    if let Ok(n) = p.parse() {
        return Some(n);
    }
    if let Ok(services) = std::fs::read_to_string("/etc/services") {
        for line in services.lines() {
            let mut words = line.split('#').next().unwrap_or("").split_whitespace();
            let (Some(name), Some(port_proto)) = (words.next(), words.next()) else {
                continue;
            };
            if name == p || words.any(|alias| alias == p) {
                if let Some(n) = port_proto.split('/').next().and_then(|n| n.parse().ok()) {
                    return Some(n);
                }
            }
        }
    }
    [
        ("ftp", 21),
        ("ssh", 22),
        ("smtp", 25),
        ("domain", 53),
        ("http", 80),
        ("pop3", 110),
        ("imap", 143),
        ("https", 443),
        ("imaps", 993),
        ("mysql", 3306),
        ("postgresql", 5432),
    ]
    .iter()
    .find(|(n, _)| *n == p)
    .map(|(_, port)| *port)
}

/// host[:port] (IPv6 in brackets) into (address, port).
fn split_host(s: &str) -> Result<(String, Option<u16>), Error> {
    let bad = || {
        Error::Usage(format!(
            "{s:?} is not host[:port] (IPv6: [addr]:port; port a number or a service name)"
        ))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once(']').ok_or_else(bad)?;
        let port = match p.strip_prefix(':') {
            Some(p) => Some(port_of(p).ok_or_else(bad)?),
            None if p.is_empty() => None,
            None => return Err(bad()),
        };
        return Ok((h.to_owned(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((h.to_owned(), Some(port_of(p).ok_or_else(bad)?))),
        _ => Ok((s.to_owned(), None)),
    }
}

fn service_of(
    tcp: &Option<String>,
    udp: &Option<String>,
    fwmark: Option<u32>,
) -> Result<ServiceDef, Error> {
    let (proto, spec) = match (tcp, udp, fwmark) {
        (None, None, Some(mark)) => {
            return Ok(ServiceDef {
                fwmark: Some(mark),
                ..ServiceDef::default()
            })
        }
        (Some(t), None, None) => ("tcp", t),
        (None, Some(u), None) => ("udp", u),
        (None, None, None) => {
            return Err(Error::Usage(
                "a service is needed: -t host:port, -u host:port or -f mark".into(),
            ))
        }
        _ => return Err(Error::Usage("one service at a time: -t, -u or -f".into())),
    };
    let (host, port) = split_host(spec)?;
    Ok(ServiceDef {
        protocol: proto.into(),
        vip: host,
        port: port.unwrap_or(0),
        ..ServiceDef::default()
    })
}

/// A netmask as a prefix length (255.255.255.0 -> 24).
fn prefix_of(m: &str) -> Result<u8, Error> {
    if let Ok(n) = m.trim_start_matches('/').parse::<u8>() {
        return Ok(n);
    }
    let a: std::net::Ipv4Addr = m.parse().map_err(|_| {
        Error::Usage(format!(
            "netmask {m:?} is neither a.b.c.d nor a prefix length"
        ))
    })?;
    let bits = u32::from(a);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(Error::Usage(format!("netmask {m} is not contiguous")));
    }
    Ok(u8::try_from(bits.leading_ones()).unwrap_or(32))
}

fn mode_of(a: &Ipvsadm) -> Result<Option<&'static str>, Error> {
    let modes: Vec<&str> = [
        (a.gatewaying, "dr"),
        (a.ipip, "tun"),
        (a.masquerading, "nat"),
        (a.fullnat, "fnat"),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, m)| m)
    .collect();
    match modes.as_slice() {
        [] => Ok(None),
        [m] => Ok(Some(m)),
        _ => Err(Error::Usage(
            "one forwarding method at a time: -g, -i, -m or --fullnat".into(),
        )),
    }
}

fn service_fields(a: &Ipvsadm, service: &mut ServiceDef, adding: bool) -> Result<(), Error> {
    service.scheduler = match &a.scheduler {
        Some(sc) => Some(sc.clone()),
        None if adding => Some("wlc".into()),
        None => None,
    };
    service.flags.clone_from(&a.sched_flags);
    service.persistence = a.persistent;
    service.netmask = a.netmask.as_deref().map(prefix_of).transpose()?;
    if !a.matches.is_empty() {
        if a.fwmark.is_none() {
            return Err(Error::Usage(
                "--match belongs to a firewall-mark service (-f mark)".into(),
            ));
        }
        service.matches = Some(a.matches.clone());
    }
    let list = |l: &[String]| -> Option<Vec<String>> {
        match l {
            [] => None,
            [none] if none == "none" => Some(Vec::new()),
            l => Some(l.to_vec()),
        }
    };
    service.allow = list(&a.allow);
    service.deny = list(&a.deny);
    Ok(())
}

fn real_fields(a: &Ipvsadm, adding: bool) -> Result<RealDef, Error> {
    let spec = a
        .real
        .as_ref()
        .ok_or_else(|| Error::Usage("a real server is needed: -r host[:port]".into()))?;
    let (address, port) = split_host(spec)?;
    Ok(RealDef {
        address,
        port,
        mode: mode_of(a)?.or(adding.then_some("dr")).map(str::to_owned),
        weight: a.weight.or(adding.then_some(1)),
        upper: a.upper,
        lower: a.lower,
    })
}

/// The service `want` names, in `list`.
fn find_service<'a>(
    list: &'a List,
    want: &ServiceDef,
) -> Result<&'a lb_admin_proto::ServiceInfo, Error> {
    list.services
        .iter()
        .find(|s| same_service(s, want))
        .ok_or_else(|| {
            Error::Failed(Failure::Rejected(format!(
                "no service {}",
                service_name(want)
            )))
        })
}

fn same_service(s: &lb_admin_proto::ServiceInfo, want: &ServiceDef) -> bool {
    match want.fwmark {
        Some(mark) => s.fwmark == Some(mark),
        None => {
            s.fwmark.is_none()
                && s.protocol.eq_ignore_ascii_case(&want.protocol)
                && s.vip == want.vip
                && s.port == want.port
        }
    }
}

/// A service as messages name it.
fn service_name(want: &ServiceDef) -> String {
    match want.fwmark {
        Some(mark) => format!("FWM {mark}"),
        None => format!(
            "{} {}",
            want.protocol.to_ascii_uppercase(),
            format::addr_port(&want.vip, want.port)
        ),
    }
}

fn run_ipvsadm(a: Ipvsadm) -> Result<String, Error> {
    let commands = [
        a.add_service,
        a.edit_service,
        a.delete_service,
        a.clear,
        a.restore,
        a.save,
        a.add_server,
        a.edit_server,
        a.delete_server,
        a.list,
        a.zero,
        a.set.is_some(),
        a.add_laddr,
        a.del_laddr,
        a.get_laddr,
    ]
    .iter()
    .filter(|c| **c)
    .count();
    if commands > 1 {
        return Err(Error::Usage(
            "one command at a time (-A -E -D -C -R -S -a -e -d -L -Z --set -P -Q -G)".into(),
        ));
    }
    let mut c = Client::connect(&a.socket)?;
    if a.add_laddr || a.del_laddr {
        let laddr = a
            .laddr
            .clone()
            .ok_or_else(|| Error::Usage("a local address is needed: -z address".into()))?;
        let list: List = c.call(&Op::List)?;
        return change_laddr(
            &mut c,
            &list,
            service_of(&a.tcp, &a.udp, a.fwmark)?,
            laddr,
            Change {
                add: a.add_laddr,
                peer: a.peer,
            },
        );
    }
    if a.get_laddr {
        return laddr(&mut c, Laddr::List, a.output == Output::Json);
    }
    if a.add_service || a.edit_service || a.delete_service {
        let mut service = service_of(&a.tcp, &a.udp, a.fwmark)?;
        let op = if a.add_service {
            service_fields(&a, &mut service, true)?;
            Op::AddService { service }
        } else if a.edit_service {
            service_fields(&a, &mut service, false)?;
            Op::EditService { service }
        } else {
            Op::DelService { service }
        };
        let _: Committed = c.call(&op)?;
        return Ok(String::new());
    }
    if a.add_server || a.edit_server || a.delete_server {
        let service = service_of(&a.tcp, &a.udp, a.fwmark)?;
        let op = if a.add_server {
            Op::AddReal {
                service,
                real: real_fields(&a, true)?,
            }
        } else if a.edit_server {
            Op::EditReal {
                service,
                real: real_fields(&a, false)?,
            }
        } else {
            Op::DelReal {
                service,
                real: real_fields(&a, false)?,
            }
        };
        let _: Committed = c.call(&op)?;
        return Ok(String::new());
    }
    if a.clear {
        let _: Committed = c.call(&Op::Clear)?;
        return Ok(String::new());
    }
    if a.zero {
        let _: Empty = c.call(&Op::Zero)?;
        return Ok(String::new());
    }
    if let Some(t) = &a.set {
        let _: Committed = c.call(&Op::SetTimeouts {
            tcp: t[0],
            tcpfin: t[1],
            udp: t[2],
        })?;
        return Ok(String::new());
    }
    if a.save {
        return Ok(format::save(&c.call(&Op::List)?));
    }
    if a.restore {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::Usage(format!("cannot read the rules from standard input: {e}")))?;
        return restore(&mut c, &text).map(|()| String::new());
    }
    // -L, or no command at all (ipvsadm lists then).
    if a.timeout {
        let t: Timeouts = c.call(&Op::GetTimeouts)?;
        return Ok(match a.output {
            Output::Json => json_line(&t),
            Output::Text => format!(
                "Timeout (tcp tcpfin udp): {} {} {}\n",
                t.tcp, t.tcpfin, t.udp
            ),
        });
    }
    if a.connection {
        let conns: Connections = c.call(&Op::Connections {
            offset: 0,
            limit: 10_000,
        })?;
        return Ok(match a.output {
            Output::Json => json_line(&conns),
            Output::Text => format::connections(&conns),
        });
    }
    let mut list: List = c.call(&Op::List)?;
    if a.tcp.is_some() || a.udp.is_some() || a.fwmark.is_some() {
        let want = service_of(&a.tcp, &a.udp, a.fwmark)?;
        let one = find_service(&list, &want)?.clone();
        list.services = vec![one];
    }
    if a.output == Output::Json {
        list.services = format::sorted(&list);
        return Ok(json_line(&list));
    }
    let table = if a.stats {
        Table::Stats
    } else if a.rate {
        Table::Rate
    } else if a.thresholds {
        Table::Thresholds
    } else if a.persistent_conn {
        Table::PersistentConn
    } else {
        Table::Plain
    };
    Ok(format::listing(&list, table, a.exact))
}

/// Applies ipvsadm-save lines one by one; stops at the first refused one.
fn restore(c: &mut Client, text: &str) -> Result<(), Error> {
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words = std::iter::once("lb-ctl").chain(line.split_whitespace());
        let a = Ipvsadm::try_parse_from(words).map_err(|e| {
            Error::Usage(format!(
                "line {}: {line:?}: {}",
                n + 1,
                e.to_string().lines().next().unwrap_or("")
            ))
        })?;
        if !(a.add_service || a.add_server || a.edit_service || a.edit_server || a.add_laddr) {
            return Err(Error::Usage(format!(
                "line {}: {line:?}: only -A, -a, -E, -e and -P belong in a rules file",
                n + 1
            )));
        }
        let result = if a.add_laddr {
            let laddr = a
                .laddr
                .clone()
                .ok_or_else(|| Error::Usage(format!("line {}: -P needs -z", n + 1)))?;
            let service = service_of(&a.tcp, &a.udp, a.fwmark)?;
            c.call(&Op::List).and_then(|list: List| {
                let change = Change {
                    add: true,
                    peer: a.peer,
                };
                change_laddr(c, &list, service, laddr, change)
                    .map(|_| ())
                    .map_err(|e| match e {
                        Error::Failed(f) => f,
                        Error::Usage(m) => Failure::Rejected(m),
                    })
            })
        } else if a.add_service || a.edit_service {
            let mut service = service_of(&a.tcp, &a.udp, a.fwmark)?;
            service_fields(&a, &mut service, a.add_service)?;
            let op = if a.add_service {
                Op::AddService { service }
            } else {
                Op::EditService { service }
            };
            c.call(&op).map(|_: Committed| ())
        } else {
            let service = service_of(&a.tcp, &a.udp, a.fwmark)?;
            let real = real_fields(&a, a.add_server)?;
            let op = if a.add_server {
                Op::AddReal { service, real }
            } else {
                Op::EditReal { service, real }
            };
            c.call(&op).map(|_: Committed| ())
        };
        result.map_err(|e| match e {
            Failure::Rejected(m) => {
                Error::Failed(Failure::Rejected(format!("line {}: {line}: {m}", n + 1)))
            }
            other => Error::Failed(other),
        })?;
    }
    Ok(())
}

/// The services of a keepalived.conf on stdout; what was left behind, and
/// why, on stderr.
fn import_keepalived(file: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| Error::Usage(format!("cannot read {}: {err}", file.display())))?;
    let t = keepalived::translate(&text)
        .map_err(|m| Error::Failed(Failure::Rejected(format!("{}: {m}", file.display()))))?;
    for s in &t.skipped {
        eprintln!("lb-ctl: {}: {s}", file.display());
    }
    eprintln!(
        "lb-ctl: {} service(s) translated, {} line(s) not",
        t.services,
        t.skipped.len()
    );
    Ok(t.toml)
}

fn run_extra(e: Extra) -> Result<String, Error> {
    if let Sub::Completions { shell } = e.command {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Ipvsadm::command(), "lb-ctl", &mut out);
        return Ok(String::from_utf8_lossy(&out).into_owned());
    }
    if let Sub::Man = e.command {
        return Ok(man_page());
    }
    if let Sub::Import {
        from: ImportFrom::Keepalived { file },
    } = &e.command
    {
        return import_keepalived(file);
    }
    let mut c = Client::connect(&e.socket)?;
    let json_out = e.output == Output::Json;
    match e.command {
        Sub::Apply { file, dry_run } => {
            let toml = std::fs::read_to_string(&file)
                .map_err(|err| Error::Usage(format!("cannot read {}: {err}", file.display())))?;
            let r: Applied = c.call(&Op::Apply { toml, dry_run })?;
            if json_out {
                return Ok(json_line(&r));
            }
            let mut out = if r.diff.is_empty() {
                "no change\n".to_owned()
            } else {
                r.diff.join("\n") + "\n"
            };
            if let Some(v) = r.version {
                out.push_str(&format!("applied (version {v})\n"));
            }
            Ok(out)
        }
        Sub::Config {
            what: ConfigWhat::Dump,
        } => {
            let d: Dump = c.call(&Op::Dump)?;
            Ok(if json_out { json_line(&d) } else { d.toml })
        }
        Sub::Counters => {
            let d: Counters = c.call(&Op::Counters)?;
            if json_out {
                return Ok(json_line(&d));
            }
            let mut out = String::from("total:\n");
            for (k, v) in &d.total {
                out.push_str(&format!("  {k:<24} {v}\n"));
            }
            for p in &d.ports {
                out.push_str(&format!("port {} ({}):\n", p.name, p.driver));
                for (k, v) in p.stats.fields() {
                    out.push_str(&format!("  {k:<24} {v}\n"));
                }
            }
            for v in &d.vlans {
                out.push_str(&format!("vlan {}:\n", v.name));
                for (k, n) in [("rx_packets", v.rx_packets), ("tx_packets", v.tx_packets)] {
                    out.push_str(&format!("  {k:<24} {n}\n"));
                }
            }
            for (i, w) in d.workers.iter().enumerate() {
                out.push_str(&format!("worker {i} (sessions {}):\n", w.sessions));
                for (k, v) in w.dataplane.iter().flat_map(|d| &d.counters) {
                    out.push_str(&format!("  {k:<24} {v}\n"));
                }
            }
            if !d.sync.is_empty() {
                out.push_str("sync:\n");
                for (k, v) in &d.sync {
                    out.push_str(&format!("  {k:<24} {v}\n"));
                }
            }
            Ok(out)
        }
        Sub::Stalls { last } => {
            let st: Stalls = c.call(&Op::Stalls)?;
            if json_out {
                return Ok(json_line(&st));
            }
            Ok(stalls_table(&st, last))
        }
        Sub::Health => {
            let h: Health = c.call(&Op::Health)?;
            if json_out {
                return Ok(json_line(&h));
            }
            let mut out = format!(
                "{:<28} {:<24} {:<6} {:>5} {:>5}  {}\n",
                "Service", "Server", "State", "OK", "Fail", "Last"
            );
            for s in &h.servers {
                out.push_str(&format!(
                    "{:<28} {:<24} {:<6} {:>5} {:>5}  {}\n",
                    s.service, s.server, s.state, s.successes, s.failures, s.last
                ));
            }
            Ok(out)
        }
        Sub::Route { action } => match action {
            RouteAction::List => {
                let r: Routes = c.call(&Op::Routes)?;
                if json_out {
                    return Ok(json_line(&r));
                }
                let mut out = String::from("addresses:\n");
                for a in &r.addresses {
                    out.push_str(&format!("  {:<24} on {}\n", a.address, a.port));
                }
                out.push_str("static routes:\n");
                for rt in &r.routes {
                    let via = rt
                        .gateway
                        .as_ref()
                        .map(|g| format!(" via {g}"))
                        .unwrap_or_default();
                    out.push_str(&format!("  {:<24} on {}{via}\n", rt.prefix, rt.port));
                }
                Ok(out)
            }
            RouteAction::Add { prefix, port, via } => {
                let _: Committed = c.call(&Op::AddRoute {
                    prefix,
                    port,
                    gateway: via,
                })?;
                Ok(String::new())
            }
            RouteAction::Del { prefix } => {
                let _: Committed = c.call(&Op::DelRoute { prefix })?;
                Ok(String::new())
            }
        },
        Sub::Neigh { action } => match action {
            NeighAction::List => {
                let n: Neighbors = c.call(&Op::Neighbors)?;
                if json_out {
                    return Ok(json_line(&n));
                }
                let mut out = format!(
                    "{:<16} {:<18} {:<16} {}\n",
                    "Address", "MAC", "Port", "State"
                );
                for e in &n.neighbors {
                    let state = e
                        .expires_in
                        .map_or("static".to_owned(), |s| format!("learned, {s} s left"));
                    out.push_str(&format!(
                        "{:<16} {:<18} {:<16} {state}\n",
                        e.address, e.mac, e.port
                    ));
                }
                Ok(out)
            }
            NeighAction::Add { address, mac, port } => {
                let _: Empty = c.call(&Op::AddNeighbor { address, mac, port })?;
                Ok(String::new())
            }
            NeighAction::Del { address } => {
                let _: Empty = c.call(&Op::DelNeighbor { address })?;
                Ok(String::new())
            }
        },
        Sub::Laddr { action } => laddr(&mut c, action, json_out),
        Sub::Completions { .. } | Sub::Man | Sub::Import { .. } => unreachable!("handled above"),
    }
}

/// lb-ctl(8): ipvsadm's options, then the subcommands, then the examples.
fn man_page() -> String {
    let ipvsadm = Ipvsadm::command();
    let man = clap_mangen::Man::new(ipvsadm.clone())
        .section("8")
        .manual("lb manual");
    let extra = clap_mangen::Man::new(Extra::command().name("lb-ctl"));
    let mut out = Vec::new();
    let rendered = man
        .render_title(&mut out)
        .and_then(|()| man.render_name_section(&mut out))
        .and_then(|()| man.render_synopsis_section(&mut out))
        .and_then(|()| man.render_description_section(&mut out))
        .and_then(|()| man.render_options_section(&mut out))
        .and_then(|()| extra.render_subcommands_section(&mut out))
        .and_then(|()| man.render_extra_section(&mut out))
        .and_then(|()| man.render_version_section(&mut out));
    match rendered {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(e) => format!("cannot render the manual page: {e}\n"),
    }
}

/// A value as one line of JSON (`-o json`).
fn json_line(v: &impl serde::Serialize) -> String {
    let mut line = serde_json::to_string(v).unwrap_or_default();
    line.push('\n');
    line
}

/// A service's local addresses, as `laddr list -o json` shows them.
#[derive(serde::Serialize)]
struct LaddrListing<'a> {
    service: String,
    local_addresses: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    peer_local_addresses: &'a [String],
}

fn laddr(c: &mut Client, action: Laddr, json_out: bool) -> Result<String, Error> {
    let list: List = c.call(&Op::List)?;
    match action {
        Laddr::List => {
            let services = format::sorted(&list);
            if json_out {
                let l: Vec<LaddrListing<'_>> = services
                    .iter()
                    .map(|s| LaddrListing {
                        service: format!("{} {}", s.protocol, format::addr_port(&s.vip, s.port)),
                        local_addresses: &s.local_addresses,
                        peer_local_addresses: &s.peer_local_addresses,
                    })
                    .collect();
                return Ok(json_line(&l));
            }
            let mut out = format!("{:<24} {:<8} {:<20}\n", "VIP:VPORT", "TOTAL", "LADDR");
            for s in &services {
                let name = format::addr_port(&s.vip, s.port);
                out.push_str(&format!("{name:<24} {:<8}\n", s.local_addresses.len()));
                for a in &s.local_addresses {
                    out.push_str(&format!("{:<24} {:<8} {a:<20}\n", "", ""));
                }
                for a in &s.peer_local_addresses {
                    out.push_str(&format!("{:<24} {:<8} {a:<20} peer\n", "", ""));
                }
            }
            Ok(out)
        }
        Laddr::Add {
            tcp,
            udp,
            laddr,
            peer,
        } => {
            let change = Change { add: true, peer };
            change_laddr(c, &list, service_of(&tcp, &udp, None)?, laddr, change)
        }
        Laddr::Del {
            tcp,
            udp,
            laddr,
            peer,
        } => {
            let change = Change { add: false, peer };
            change_laddr(c, &list, service_of(&tcp, &udp, None)?, laddr, change)
        }
    }
}

/// Which change [`change_laddr`] makes: an address added or removed, and
/// whether it is this director's or a peer's.
#[derive(Debug, Clone, Copy)]
struct Change {
    add: bool,
    peer: bool,
}

/// Adds or removes one local address of a service (an edit of the service).
fn change_laddr(
    c: &mut Client,
    list: &List,
    mut service: ServiceDef,
    laddr: String,
    change: Change,
) -> Result<String, Error> {
    let found = find_service(list, &service)?;
    let (mut addrs, what) = if change.peer {
        (found.peer_local_addresses.clone(), "a peer local address")
    } else {
        (found.local_addresses.clone(), "a local address")
    };
    if change.add {
        if addrs.contains(&laddr) {
            return Err(Error::Failed(Failure::Rejected(format!(
                "{laddr} is already {what} of this service"
            ))));
        }
        addrs.push(laddr);
    } else {
        let before = addrs.len();
        addrs.retain(|a| *a != laddr);
        if addrs.len() == before {
            return Err(Error::Failed(Failure::Rejected(format!(
                "{laddr} is not {what} of this service"
            ))));
        }
    }
    if change.peer {
        service.peer_local_addresses = Some(addrs);
    } else {
        service.local_addresses = Some(addrs);
    }
    let _: Committed = c.call(&Op::EditService { service })?;
    Ok(String::new())
}
