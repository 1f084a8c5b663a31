//! The Prometheus endpoint: `GET /metrics` over plain HTTP, in the text
//! exposition format, off unless `[metrics] listen` is configured.
//!
//! Service and real-server series carry the names and labels of
//! node_exporter's IPVS collector, so dashboards built for a kernel IPVS
//! director read this one unchanged:
//! `node_ipvs_{connections,incoming_packets,outgoing_packets,incoming_bytes,outgoing_bytes}_total`
//! (summed over services, without labels) and
//! `node_ipvs_backend_{connections_active,connections_inactive,weight}`
//! (labels `local_address`, `local_port`, `local_mark`, `proto`,
//! `remote_address`, `remote_port`). Our own series start with `lb_`: per
//! service totals, per worker counters and sessions, drops by reason, and
//! per port DPDK statistics.
//!
//! A scrape asks the control thread for `list` and `counters`, the way an
//! admin client does, so it costs the workers no more than `lb-ctl -L`.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender};
use lb_admin_proto::{Answer, Counters, List, Op};

use crate::admin::Pending;

/// How long a scrape waits for the control thread, and for a client.
const WAIT: Duration = Duration::from_secs(10);
/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// The running endpoint; stops accepting when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Listens on `addr` and answers scrapes with what `requests` (the control
/// thread) reports.
pub fn serve(addr: SocketAddr, requests: Sender<Pending>) -> io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_accept = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            while !stop_accept.load(Ordering::Relaxed) {
                match listener.accept() {
                    // One scrape at a time: Prometheus scrapes seldom, and
                    // a slow client is bounded by the timeouts.
                    Ok((stream, _)) => {
                        if let Err(e) = scrape(stream, &requests) {
                            tracing::debug!(error = %e, "metrics client");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(MetricsServer { addr, stop })
}

fn scrape(stream: TcpStream, requests: &Sender<Pending>) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    let mut reader = BufReader::new(io::Read::take(stream.try_clone()?, MAX_HEAD as u64));
    let mut first = String::new();
    reader.read_line(&mut first)?;
    // The rest of the head, up to the blank line.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 && line.trim_end() != "" {
        line.clear();
    }
    let mut words = first.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET", "/metrics") => match ask(requests) {
            Ok((list, counters)) => ("200 OK", render(&list, &counters)),
            Err(e) => ("503 Service Unavailable", format!("{e}\n")),
        },
        ("GET", "/") => ("200 OK", "lb-dataplane: metrics at /metrics\n".to_owned()),
        ("GET", _) => ("404 Not Found", "not found: try /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "only GET\n".to_owned()),
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

/// The control thread's `list` and `counters`.
fn ask(requests: &Sender<Pending>) -> Result<(List, Counters), String> {
    let call = |op: Op| -> Result<Answer, String> {
        let (tx, rx) = bounded(1);
        requests
            .send_timeout((op, tx), WAIT)
            .map_err(|_| "the control thread is not answering".to_owned())?;
        rx.recv_timeout(WAIT)
            .map_err(|_| "the control thread did not answer in time".to_owned())?
    };
    match (call(Op::List)?, call(Op::Counters)?) {
        (Answer::List(list), Answer::Counters(counters)) => Ok((list, counters)),
        _ => Err("the control thread answered another question".into()),
    }
}

/// A label value, escaped as the text format wants.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `{k="v",...}`.
fn labels(pairs: &[(&str, String)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// One metric family: its header and samples (label set, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (l, v) in samples {
        let _ = writeln!(out, "{name}{l} {v}");
    }
}

/// The exposition text for a `list` and a `counters` answer.
pub fn render(list: &List, counters: &Counters) -> String {
    let mut out = String::new();
    let services = &list.services;
    let stat = |s: &lb_admin_proto::Stats, key: &str| match key {
        "conns" => s.conns,
        "in_pkts" => s.in_pkts,
        "out_pkts" => s.out_pkts,
        "in_bytes" => s.in_bytes,
        _ => s.out_bytes,
    };
    let stat_names = [
        (
            "conns",
            "connections_total",
            "The total number of connections made.",
        ),
        (
            "in_pkts",
            "incoming_packets_total",
            "The total number of incoming packets.",
        ),
        (
            "out_pkts",
            "outgoing_packets_total",
            "The total number of outgoing packets.",
        ),
        (
            "in_bytes",
            "incoming_bytes_total",
            "The total amount of incoming data.",
        ),
        (
            "out_bytes",
            "outgoing_bytes_total",
            "The total amount of outgoing data.",
        ),
    ];
    for (key, name, help) in stat_names {
        let total: u64 = services.iter().map(|s| stat(&s.stats, key)).sum();
        family(
            &mut out,
            &format!("node_ipvs_{name}"),
            "counter",
            help,
            &[(String::new(), total)],
        );
    }
    let mut backend: [Vec<(String, u64)>; 3] = Default::default();
    let mut per_service: [Vec<(String, u64)>; 5] = Default::default();
    for s in services {
        let proto = s.protocol.to_uppercase();
        // A firewall-mark service is labelled by its mark, as node_exporter
        // labels IPVS's.
        let vip = if s.fwmark.is_some() {
            String::new()
        } else {
            s.vip.clone()
        };
        let port = s.port.to_string();
        let mark = s.fwmark.map(|m| m.to_string()).unwrap_or_default();
        let svc_labels = if mark.is_empty() {
            labels(&[
                ("local_address", vip.clone()),
                ("local_port", port.clone()),
                ("proto", proto.clone()),
            ])
        } else {
            labels(&[("local_mark", mark.clone()), ("proto", proto.clone())])
        };
        for (i, (key, _, _)) in stat_names.iter().enumerate() {
            per_service[i].push((svc_labels.clone(), stat(&s.stats, key)));
        }
        for r in &s.reals {
            let l = labels(&[
                ("local_address", vip.clone()),
                ("local_mark", mark.clone()),
                ("local_port", port.clone()),
                ("proto", proto.clone()),
                ("remote_address", r.address.clone()),
                ("remote_port", r.port.to_string()),
            ]);
            backend[0].push((l.clone(), r.active));
            backend[1].push((l.clone(), r.inactive));
            backend[2].push((l, u64::from(r.weight)));
        }
    }
    let helps = [
        (
            "connections_active",
            "The current active connections by local and remote address.",
        ),
        (
            "connections_inactive",
            "The current inactive connections by local and remote address.",
        ),
        (
            "weight",
            "The current backend weight by local and remote address.",
        ),
    ];
    for ((name, help), samples) in helps.iter().zip(&backend) {
        family(
            &mut out,
            &format!("node_ipvs_backend_{name}"),
            "gauge",
            help,
            samples,
        );
    }
    for ((_, name, help), samples) in stat_names.iter().zip(&per_service) {
        let help = format!("{} By service.", help.trim_end_matches('.'));
        family(
            &mut out,
            &format!("lb_service_{name}"),
            "counter",
            &help,
            samples,
        );
    }

    // Engine counters summed over workers: drops by reason apart.
    let mut events = Vec::new();
    let mut drops = Vec::new();
    let mut worker_drops = Vec::new();
    for (name, &v) in &counters.total {
        match name.strip_prefix("drop_") {
            Some(reason) => drops.push((labels(&[("reason", reason.to_owned())]), v)),
            None => events.push((labels(&[("event", name.clone())]), v)),
        }
    }
    let mut worker_events = Vec::new();
    let mut gaps = Vec::new();
    let mut stalls = Vec::new();
    let mut max_stalls = Vec::new();
    let mut sessions = Vec::new();
    let mut capacity = Vec::new();
    let (mut laddr_conns, mut laddr_ports) = (Vec::new(), Vec::new());
    for w in &counters.workers {
        let lcore = w.dataplane.as_ref().map_or(0, |d| d.lcore).to_string();
        sessions.push((labels(&[("lcore", lcore.clone())]), u64::from(w.sessions)));
        capacity.push((labels(&[("lcore", lcore.clone())]), u64::from(w.capacity)));
        for l in &w.local_addresses {
            let ls = labels(&[
                ("lcore", lcore.clone()),
                ("local_address", l.address.clone()),
                ("service", l.service.clone()),
            ]);
            laddr_conns.push((ls.clone(), u64::from(l.connections)));
            laddr_ports.push((ls, u64::from(l.ports)));
        }
        for (name, &v) in w.dataplane.iter().flat_map(|d| &d.counters) {
            let cause = match name.as_str() {
                "stalls_own" | "max_own_stall_ns" => Some("own"),
                "stalls_outside" | "max_outside_stall_ns" => Some("outside"),
                _ => None,
            };
            if name == "max_loop_gap_ns" {
                gaps.push((labels(&[("lcore", lcore.clone())]), v));
            } else if let Some(cause) = cause {
                let ls = labels(&[("cause", cause.to_owned()), ("lcore", lcore.clone())]);
                if name.starts_with("max_") {
                    max_stalls.push((ls, v));
                } else {
                    stalls.push((ls, v));
                }
            } else if let Some(reason) = name.strip_prefix("drop_") {
                worker_drops.push((
                    labels(&[("lcore", lcore.clone()), ("reason", reason.to_owned())]),
                    v,
                ));
            } else {
                worker_events.push((
                    labels(&[("event", name.clone()), ("lcore", lcore.clone())]),
                    v,
                ));
            }
        }
    }
    family(
        &mut out,
        "lb_engine_events_total",
        "counter",
        "Engine events summed over workers (sessions created, answered, ...).",
        &events,
    );
    family(
        &mut out,
        "lb_engine_drops_total",
        "counter",
        "Packets the engine dropped, by reason, summed over workers.",
        &drops,
    );
    family(
        &mut out,
        "lb_worker_drops_total",
        "counter",
        "Packets the worker loop dropped (TX full, no neighbour, ...), by reason.",
        &worker_drops,
    );
    family(
        &mut out,
        "lb_worker_events_total",
        "counter",
        "Worker loop counters (packets received and sent, polls, gratuitous ARPs).",
        &worker_events,
    );
    family(
        &mut out,
        "lb_worker_max_loop_gap_nanoseconds",
        "gauge",
        "The longest pass of the worker loop.",
        &gaps,
    );
    family(
        &mut out,
        "lb_worker_stalls_total",
        "counter",
        "Passes of the worker loop 100 us or more apart, by cause: own (the thread ran) or outside (it was preempted or its virtual CPU taken).",
        &stalls,
    );
    family(
        &mut out,
        "lb_worker_max_stall_nanoseconds",
        "gauge",
        "The longest stall of the worker loop, by cause.",
        &max_stalls,
    );
    family(
        &mut out,
        "lb_worker_sessions",
        "gauge",
        "Sessions in the worker's table (templates included).",
        &sessions,
    );
    family(
        &mut out,
        "lb_worker_session_capacity",
        "gauge",
        "Sessions the worker's table can hold.",
        &capacity,
    );
    family(
        &mut out,
        "lb_laddr_connections",
        "gauge",
        "Full-NAT connections using a local address, per service and worker.",
        &laddr_conns,
    );
    family(&mut out, "lb_laddr_ports", "gauge", "Local ports the worker owns on a local address (the most connections it can carry from it).", &laddr_ports);

    let mut ports: Vec<(&str, Vec<(String, u64)>)> = Vec::new();
    for p in &counters.ports {
        let l = labels(&[("port", p.name.clone())]);
        for (stat, v) in p.stats.fields() {
            match ports.iter_mut().find(|(s, _)| *s == stat) {
                Some((_, samples)) => samples.push((l.clone(), v)),
                None => ports.push((stat, vec![(l.clone(), v)])),
            }
        }
    }
    for (stat, samples) in &ports {
        family(
            &mut out,
            &format!("lb_port_{stat}_total"),
            "counter",
            "The port's DPDK statistic of that name.",
            samples,
        );
    }
    // Per-VLAN frames in and out.
    let (mut vlan_rx, mut vlan_tx) = (Vec::new(), Vec::new());
    for v in &counters.vlans {
        let l = labels(&[("interface", v.name.clone())]);
        vlan_rx.push((l.clone(), v.rx_packets));
        vlan_tx.push((l, v.tx_packets));
    }
    family(
        &mut out,
        "lb_vlan_rx_packets_total",
        "counter",
        "Frames received on a VLAN sub-interface.",
        &vlan_rx,
    );
    family(
        &mut out,
        "lb_vlan_tx_packets_total",
        "counter",
        "Frames sent on a VLAN sub-interface.",
        &vlan_tx,
    );
    // Connection sync (with `[sync]`): what went to and came from the
    // peers, and what was refused or lost, by reason.
    const SYNC_EVENTS: [&str; 5] = [
        "datagrams_sent",
        "records_sent",
        "datagrams_received",
        "records_received",
        "resyncs",
    ];
    let (events, drops): (Vec<_>, Vec<_>) = counters
        .sync
        .iter()
        .partition(|(name, _)| SYNC_EVENTS.contains(&name.as_str()));
    let sample = |key: &str, (name, v): &(&String, &u64)| (labels(&[(key, (*name).clone())]), **v);
    let events: Vec<(String, u64)> = events.iter().map(|e| sample("event", e)).collect();
    let drops: Vec<(String, u64)> = drops.iter().map(|d| sample("reason", d)).collect();
    family(
        &mut out,
        "lb_sync_events_total",
        "counter",
        "Connection sync: datagrams and records sent to and received from the peers, resyncs sent.",
        &events,
    );
    family(
        &mut out,
        "lb_sync_drops_total",
        "counter",
        "Connection sync datagrams or records refused or lost, by reason (a bad authenticator, a replay, over the rate, ...).",
        &drops,
    );
    let admin = &counters.admin;
    family(
        &mut out,
        "lb_admin_clients",
        "gauge",
        "Clients connected to the admin socket.",
        &[(String::new(), admin.clients)],
    );
    let closed: Vec<(String, u64)> = [
        ("idle", admin.closed_idle),
        ("slow", admin.closed_slow),
        ("evicted", admin.evicted),
        ("refused", admin.refused),
    ]
    .iter()
    .map(|&(reason, n)| (labels(&[("reason", reason.to_owned())]), n))
    .collect();
    family(
        &mut out,
        "lb_admin_clients_closed_total",
        "counter",
        "Admin clients closed by the dataplane: idle too long, a request too slow, evicted for a new client when all slots were taken, refused when all were busy.",
        &closed,
    );
    family(
        &mut out,
        "lb_admin_clients_accepted_total",
        "counter",
        "Admin clients accepted.",
        &[(String::new(), admin.accepted)],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_ipvs_series_and_ours() {
        use lb_admin_proto::{
            LaddrUse, LcoreCounters, PortInfo, PortStats, RealInfo, ServiceInfo, Stats,
            WorkerCounters,
        };
        let named = |pairs: &[(&str, u64)]| pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect();
        let list = List {
            version: 1,
            services: vec![
                ServiceInfo {
                    protocol: "tcp".into(),
                    vip: "198.18.0.10".into(),
                    port: 80,
                    stats: Stats {
                        conns: 3,
                        in_pkts: 30,
                        out_pkts: 20,
                        in_bytes: 3000,
                        out_bytes: 9000,
                    },
                    reals: vec![RealInfo {
                        address: "10.0.0.5".into(),
                        port: 8080,
                        weight: 2,
                        active: 1,
                        inactive: 2,
                        ..RealInfo::default()
                    }],
                    ..ServiceInfo::default()
                },
                ServiceInfo {
                    protocol: "udp".into(),
                    vip: "198.18.0.11".into(),
                    port: 53,
                    stats: Stats {
                        conns: 1,
                        in_pkts: 1,
                        out_pkts: 1,
                        in_bytes: 60,
                        out_bytes: 90,
                    },
                    ..ServiceInfo::default()
                },
            ],
        };
        let counters = Counters {
            total: named(&[("sessions_created", 4), ("drop_tcp_not_syn", 7)]),
            workers: vec![WorkerCounters {
                sessions: 5,
                capacity: 64,
                local_addresses: vec![LaddrUse {
                    service: "TCP 198.18.0.10:80".into(),
                    address: "10.0.0.100".into(),
                    connections: 2,
                    ports: 64511,
                }],
                dataplane: Some(LcoreCounters {
                    lcore: 1,
                    counters: named(&[
                        ("rx_packets", 52),
                        ("drop_tx_full", 0),
                        ("max_loop_gap_ns", 900),
                        ("stalls_outside", 3),
                        ("max_outside_stall_ns", 250_000),
                    ]),
                }),
                ..WorkerCounters::default()
            }],
            ports: vec![PortInfo {
                name: "net_pcap0".into(),
                stats: PortStats {
                    rx_packets: 52,
                    tx_packets: 50,
                    ..PortStats::default()
                },
                ..PortInfo::default()
            }],
            sync: named(&[("records_received", 9), ("bad_auth", 3)]),
            ..Counters::default()
        };
        let text = render(&list, &counters);
        let has = |line: &str| {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            )
        };
        has("node_ipvs_connections_total 4");
        has("node_ipvs_incoming_packets_total 31");
        has("node_ipvs_outgoing_bytes_total 9090");
        has("# TYPE node_ipvs_backend_weight gauge");
        let backend = "{local_address=\"198.18.0.10\",local_mark=\"\",local_port=\"80\",proto=\"TCP\",remote_address=\"10.0.0.5\",remote_port=\"8080\"}";
        has(&format!("node_ipvs_backend_connections_active{backend} 1"));
        has(&format!(
            "node_ipvs_backend_connections_inactive{backend} 2"
        ));
        has(&format!("node_ipvs_backend_weight{backend} 2"));
        has("lb_service_connections_total{local_address=\"198.18.0.11\",local_port=\"53\",proto=\"UDP\"} 1");
        has("lb_engine_events_total{event=\"sessions_created\"} 4");
        has("lb_engine_drops_total{reason=\"tcp_not_syn\"} 7");
        has("lb_worker_drops_total{lcore=\"1\",reason=\"tx_full\"} 0");
        has("lb_worker_events_total{event=\"rx_packets\",lcore=\"1\"} 52");
        has("lb_worker_max_loop_gap_nanoseconds{lcore=\"1\"} 900");
        has("lb_worker_stalls_total{cause=\"outside\",lcore=\"1\"} 3");
        has("lb_worker_max_stall_nanoseconds{cause=\"outside\",lcore=\"1\"} 250000");
        has("lb_worker_sessions{lcore=\"1\"} 5");
        has("lb_worker_session_capacity{lcore=\"1\"} 64");
        has("lb_laddr_connections{lcore=\"1\",local_address=\"10.0.0.100\",service=\"TCP 198.18.0.10:80\"} 2");
        has("lb_laddr_ports{lcore=\"1\",local_address=\"10.0.0.100\",service=\"TCP 198.18.0.10:80\"} 64511");
        has("lb_port_tx_packets_total{port=\"net_pcap0\"} 50");
        has("lb_sync_events_total{event=\"records_received\"} 9");
        has("lb_sync_drops_total{reason=\"bad_auth\"} 3");
        // Every sample line is `name{labels} value` or `name value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = l.rsplit_once(' ').unwrap();
            v.parse::<u64>().unwrap();
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("a", "x\"y\\z\n".into())]),
            "{a=\"x\\\"y\\\\z\\n\"}"
        );
    }
}
