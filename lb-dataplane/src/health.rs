//! Health checks of real servers, run by the control thread like any
//! kernel-side program: its sockets go out through the exception path (the
//! TAP that carries the DIP) and their answers come back the same way.
//!
//! Each check is a short blocking probe on a thread of its own (a TCP
//! connect, an HTTP GET with the status expected, a UDP datagram that must
//! get an answer), at most one in flight per real server. `fall` failures
//! in a row take a server out, `rise` successes bring it back; the control
//! thread then publishes a snapshot in which the server has weight 0 (or is
//! absent), while the configured state stays as it was.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use lb_core::service::{HealthKind, OnFailure, ServiceKey, ServiceSpec};

/// Probes one server once.
pub fn probe(target: SocketAddr, kind: &HealthKind, timeout: Duration) -> Result<(), String> {
    match kind {
        HealthKind::Tcp => TcpStream::connect_timeout(&target, timeout)
            .map(drop)
            .map_err(|e| e.to_string()),
        HealthKind::Http { path, expect } => {
            let mut s = TcpStream::connect_timeout(&target, timeout).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            s.set_write_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            // One write: a server may answer and close before a request
            // sent in pieces is complete.
            let request = format!(
                "GET {path} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
                target.ip()
            );
            s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
            let mut line = String::new();
            BufReader::new(s)
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            let status: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("not an HTTP answer: {:?}", line.trim()))?;
            if status == *expect {
                Ok(())
            } else {
                Err(format!("HTTP status {status}, expected {expect}"))
            }
        }
        HealthKind::Udp { payload } => {
            let local: SocketAddr = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()
            .expect("a socket address");
            let s = UdpSocket::bind(local).map_err(|e| e.to_string())?;
            s.connect(target).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            s.send(payload).map_err(|e| e.to_string())?;
            let mut buf = [0u8; 1500];
            s.recv(&mut buf).map(drop).map_err(|e| e.to_string())
        }
    }
}

type Id = (ServiceKey, IpAddr, u16);

#[derive(Debug)]
struct State {
    up: bool,
    successes: u32,
    failures: u32,
    last: String,
    changed: Instant,
    in_flight: bool,
    due: Instant,
}

/// Every checked server's state.
#[derive(Debug)]
pub struct Health {
    states: HashMap<Id, State>,
    tx: Sender<(Id, Result<(), String>)>,
    rx: Receiver<(Id, Result<(), String>)>,
}

impl Default for Health {
    fn default() -> Health {
        let (tx, rx) = unbounded();
        Health {
            states: HashMap::new(),
            tx,
            rx,
        }
    }
}

impl Health {
    /// Starts the probes that are due for `specs`; forgets servers no longer
    /// configured.
    pub fn schedule(&mut self, specs: &[ServiceSpec]) {
        let now = Instant::now();
        let mut seen = Vec::new();
        for svc in specs {
            let Some(check) = &svc.health else { continue };
            for rs in &svc.reals {
                let id = (svc.key, rs.addr, rs.port);
                seen.push(id);
                let st = self.states.entry(id).or_insert_with(|| State {
                    up: true,
                    successes: 0,
                    failures: 0,
                    last: "not checked yet".into(),
                    changed: now,
                    in_flight: false,
                    due: now,
                });
                if st.in_flight || now < st.due {
                    continue;
                }
                st.in_flight = true;
                st.due = now + Duration::from_millis(u64::from(check.interval_ms));
                let target = SocketAddr::new(rs.addr, check.port.unwrap_or(rs.port));
                let (kind, timeout, tx) = (
                    check.kind.clone(),
                    Duration::from_millis(u64::from(check.timeout_ms)),
                    self.tx.clone(),
                );
                let spawned = std::thread::Builder::new()
                    .name("health".into())
                    .spawn(move || {
                        let _ = tx.send((id, probe(target, &kind, timeout)));
                    });
                if spawned.is_err() {
                    st.in_flight = false;
                }
            }
        }
        self.states.retain(|id, _| seen.contains(id));
    }

    /// Takes the probes' results; `true` if a server went up or down.
    pub fn collect(&mut self, specs: &[ServiceSpec]) -> bool {
        let mut changed = false;
        for (id, result) in self.rx.try_iter() {
            let Some(st) = self.states.get_mut(&id) else {
                continue;
            };
            let Some(check) = specs
                .iter()
                .find(|s| s.key == id.0)
                .and_then(|s| s.health.as_ref())
            else {
                continue;
            };
            st.in_flight = false;
            let name = format!("{} -> {}", id.0, SocketAddr::new(id.1, id.2));
            match result {
                Ok(()) => {
                    st.successes += 1;
                    st.failures = 0;
                    st.last = "ok".into();
                    if !st.up && st.successes >= check.rise {
                        st.up = true;
                        st.changed = Instant::now();
                        changed = true;
                        tracing::info!(server = %name, "real server is healthy again");
                    }
                }
                Err(e) => {
                    st.failures += 1;
                    st.successes = 0;
                    st.last = e.clone();
                    if st.up && st.failures >= check.fall {
                        st.up = false;
                        st.changed = Instant::now();
                        changed = true;
                        tracing::warn!(server = %name, error = %e, "real server failed its health check");
                    }
                }
            }
        }
        changed
    }

    /// The specs as the workers should see them: failed servers quiesced
    /// (weight 0) or removed, per their service's check.
    pub fn effective(&self, specs: &[ServiceSpec]) -> Vec<ServiceSpec> {
        specs
            .iter()
            .map(|svc| {
                let mut s = svc.clone();
                let Some(check) = &svc.health else { return s };
                let down = |addr: IpAddr, port: u16| {
                    self.states
                        .get(&(svc.key, addr, port))
                        .is_some_and(|st| !st.up)
                };
                match check.on_failure {
                    OnFailure::Quiesce => {
                        for r in &mut s.reals {
                            if down(r.addr, r.port) {
                                r.weight = 0;
                            }
                        }
                    }
                    OnFailure::Remove => s.reals.retain(|r| !down(r.addr, r.port)),
                }
                s
            })
            .collect()
    }

    /// A server's health, if checked: "up" or "down".
    pub fn status(&self, key: &ServiceKey, addr: IpAddr, port: u16) -> Option<&'static str> {
        self.states
            .get(&(*key, addr, port))
            .map(|s| if s.up { "up" } else { "down" })
    }

    /// Every checked server, for `lb-ctl health`.
    pub fn report(&self) -> lb_admin_proto::Health {
        let mut servers: Vec<lb_admin_proto::ServerHealth> = self
            .states
            .iter()
            .map(|((key, addr, port), st)| lb_admin_proto::ServerHealth {
                service: key.to_string(),
                server: SocketAddr::new(*addr, *port).to_string(),
                state: if st.up { "up" } else { "down" }.into(),
                successes: st.successes,
                failures: st.failures,
                last: st.last.clone(),
                since_secs: st.changed.elapsed().as_secs(),
            })
            .collect();
        servers.sort_by(|a, b| (&a.service, &a.server).cmp(&(&b.service, &b.server)));
        lb_admin_proto::Health { servers }
    }
}

/// What a check looks like when none is configured: nothing to do.
pub fn checked(specs: &[ServiceSpec]) -> bool {
    specs.iter().any(|s| s.health.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn probes_against_local_servers() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(2) {
                let mut s = s.unwrap();
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                // The rest of the request head, as a real server reads it.
                let mut header = String::new();
                while reader.read_line(&mut header).unwrap() > 2 {
                    header.clear();
                }
                let status = if line.contains("/ok") {
                    "200 OK"
                } else {
                    "503 Busy"
                };
                write!(s, "HTTP/1.0 {status}\r\n\r\n").unwrap();
            }
        });
        let t = Duration::from_secs(2);
        assert_eq!(
            probe(
                addr,
                &HealthKind::Http {
                    path: "/ok".into(),
                    expect: 200
                },
                t
            ),
            Ok(())
        );
        let e = probe(
            addr,
            &HealthKind::Http {
                path: "/busy".into(),
                expect: 200,
            },
            t,
        )
        .unwrap_err();
        assert!(e.contains("503"), "{e}");
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(probe(closed, &HealthKind::Tcp, t).is_err());
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let uaddr = udp.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 64];
            let (n, from) = udp.recv_from(&mut b).unwrap();
            udp.send_to(&b[..n], from).unwrap();
        });
        assert_eq!(
            probe(
                uaddr,
                &HealthKind::Udp {
                    payload: b"ping".to_vec()
                },
                t
            ),
            Ok(())
        );
    }
}
