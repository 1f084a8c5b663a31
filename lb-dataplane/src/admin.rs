//! The admin socket: a Unix socket, mode 0600 (0660 with a configured
//! group), speaking newline-delimited
//! JSON. Each request is one line, `{"v": 1, "op": "...", ...}`; each answer
//! one line, `{"ok": true, "data": ...}` or `{"ok": false, "error": "..."}`.
//!
//! Connections get a thread each (at most [`Limits::max_clients`] at once)
//! and pass their requests to the control thread, which owns the
//! configuration. A client cannot hold a slot for nothing: one silent for
//! [`Limits::idle`] is closed, so is one whose request does not arrive
//! whole within [`Limits::request`] of its first byte, and when every slot
//! is taken a new client takes the slot of the one idle longest
//! ([`AdminStats`] counts each). A
//! request longer than [`MAX_REQUEST`] bytes, malformed JSON, an unknown
//! operation or another protocol version gets an error answer; the
//! connection and the process go on.
//!
//! The operations and their answers are [`lb_admin_proto`]'s, which
//! lb-ctl compiles against too.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use lb_admin_proto::{decode_request, Answer, Code, Op, Refused, Reply, VersionInfo};
pub use lb_admin_proto::{MAX_REQUEST, PROTOCOL_VERSION};

use crate::control::Control;
/// How many clients, how long an idle one is kept, and how long a request
/// may take to arrive (`[admin]` `max_clients`, `idle_timeout`,
/// `request_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_clients: usize,
    pub idle: Duration,
    pub request: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_clients: 64,
            idle: Duration::from_secs(60),
            request: Duration::from_secs(5),
        }
    }
}

impl Limits {
    /// The limits `[admin]` sets, the defaults for what it leaves out.
    pub fn of(config: Option<&lb_core::config::AdminConfig>) -> Limits {
        let d = Limits::default();
        let Some(a) = config else {
            return d;
        };
        Limits {
            max_clients: a.max_clients().unwrap_or(d.max_clients),
            idle: a.idle_timeout().unwrap_or(d.idle),
            request: a.request_timeout().unwrap_or(d.request),
        }
    }
}

/// What the admin socket did with its clients, for the metrics.
#[derive(Debug, Default)]
pub struct AdminStats {
    /// Connected now.
    pub clients: AtomicU64,
    pub accepted: AtomicU64,
    /// Closed after [`Limits::idle`] without a request.
    pub closed_idle: AtomicU64,
    /// Closed because a request did not arrive whole in time.
    pub closed_slow: AtomicU64,
    /// Closed to make room for a new client.
    pub evicted: AtomicU64,
    /// Refused: every slot was busy with a request.
    pub refused: AtomicU64,
}

impl AdminStats {
    /// The counts now, as the protocol carries them.
    pub fn read(&self) -> lb_admin_proto::AdminCounters {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        lb_admin_proto::AdminCounters {
            clients: n(&self.clients),
            accepted: n(&self.accepted),
            closed_idle: n(&self.closed_idle),
            closed_slow: n(&self.closed_slow),
            evicted: n(&self.evicted),
            refused: n(&self.refused),
        }
    }
}

/// A connected client, as the acceptor sees it.
#[derive(Debug)]
struct Slot {
    id: u64,
    stream: UnixStream,
    /// Reading or answering a request: not to be evicted.
    busy: bool,
    since: Instant,
}

/// Every connected client; the acceptor evicts from it.
#[derive(Debug, Default)]
struct Slots(Mutex<Vec<Slot>>);

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_busy(&self, id: u64, busy: bool) {
        if let Some(slot) = self.lock().iter_mut().find(|s| s.id == id) {
            slot.busy = busy;
            slot.since = Instant::now();
        }
    }

    /// Forgets client `id` (gone, or evicted before); how many are left.
    fn remove(&self, id: u64) -> usize {
        let mut slots = self.lock();
        slots.retain(|s| s.id != id);
        slots.len()
    }

    /// Takes a slot for a new client, closing the one idle longest when
    /// all `max` are taken; `Err` when all are busy. Returns whether it
    /// evicted one, and how many clients there are now.
    fn admit(&self, slot: Slot, max: usize) -> Result<(bool, usize), Slot> {
        let mut slots = self.lock();
        let mut evicted = false;
        if slots.len() >= max {
            let oldest = slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.busy)
                .min_by_key(|(_, s)| s.since)
                .map(|(i, _)| i);
            let Some(i) = oldest else {
                return Err(slot);
            };
            let _ = slots[i].stream.shutdown(std::net::Shutdown::Both);
            slots.swap_remove(i);
            evicted = true;
        }
        slots.push(slot);
        Ok((evicted, slots.len()))
    }
}
/// How long a client waits for the control thread.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// A request on its way to the control thread, with where to answer.
pub type Pending = (Op, Sender<Result<Answer, String>>);

/// Carries out one operation on the control thread.
pub fn execute(control: &mut Control, op: Op) -> Result<Answer, String> {
    Ok(match op {
        Op::Version => Answer::Version(VersionInfo {
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").into(),
        }),
        Op::List => Answer::List(control.list()?),
        Op::AddService { service } => Answer::Committed(control.add_service(&service)?),
        Op::EditService { service } => Answer::Committed(control.edit_service(&service)?),
        Op::DelService { service } => Answer::Committed(control.del_service(&service)?),
        Op::AddReal { service, real } => Answer::Committed(control.add_real(&service, &real)?),
        Op::EditReal { service, real } => Answer::Committed(control.edit_real(&service, &real)?),
        Op::DelReal { service, real } => Answer::Committed(control.del_real(&service, &real)?),
        Op::Clear => Answer::Committed(control.clear()?),
        Op::Zero => Answer::Empty(control.zero()?),
        Op::GetTimeouts => Answer::Timeouts(control.timeouts()),
        Op::SetTimeouts { tcp, tcpfin, udp } => {
            Answer::Committed(control.set_timeouts(tcp, tcpfin, udp)?)
        }
        Op::Connections { offset, limit } => {
            Answer::Connections(control.connections(offset, limit)?)
        }
        Op::Counters => Answer::Counters(control.counters()?),
        Op::Health => Answer::Health(control.health_report()),
        Op::Routes => Answer::Routes(control.routes()),
        Op::AddRoute {
            prefix,
            port,
            gateway,
        } => Answer::Committed(control.change_route(
            &prefix,
            Some(&port),
            gateway.as_deref(),
            true,
        )?),
        Op::DelRoute { prefix } => {
            Answer::Committed(control.change_route(&prefix, None, None, false)?)
        }
        Op::Neighbors => Answer::Neighbors(control.neighbors()?),
        Op::AddNeighbor { address, mac, port } => {
            Answer::Empty(control.change_neighbor(&address, Some((&mac, &port)))?)
        }
        Op::DelNeighbor { address } => Answer::Empty(control.change_neighbor(&address, None)?),
        Op::Stalls => Answer::Stalls(control.stalls()),
        Op::Dump => Answer::Dump(control.dump()),
        Op::Apply { toml, dry_run } => Answer::Applied(control.apply(&toml, dry_run)?),
    })
}

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("another process answers on the admin socket {0}; stop it or choose another path")]
    InUse(PathBuf),
    #[error("cannot serve the admin socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The running server; removes its socket when dropped.
#[derive(Debug)]
pub struct AdminServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves `path`, passing requests to `requests`; with `group`, members of
/// that group may connect too. Clients are held to `limits` and counted in
/// `stats`.
pub fn serve(
    path: &Path,
    group: Option<u32>,
    requests: Sender<Pending>,
    limits: Limits,
    stats: Arc<AdminStats>,
) -> Result<AdminServer, AdminError> {
    let io_err = |source| AdminError::Io {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(AdminError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    // Bind under a private name, restrict it, then move it into place, so
    // the socket is never reachable with looser permissions.
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(io_err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(&tmp, None, Some(gid)).map_err(io_err)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660)).map_err(io_err)?;
    }
    std::fs::rename(&tmp, path).map_err(io_err)?;
    listener.set_nonblocking(true).map_err(io_err)?;
    let stop = Arc::new(AtomicBool::new(false));
    let slots = Arc::new(Slots::default());
    let stop_accept = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            let mut next_id = 0u64;
            while !stop_accept.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let Ok(handle) = stream.try_clone() else {
                            continue;
                        };
                        next_id += 1;
                        let id = next_id;
                        let slot = Slot {
                            id,
                            stream: handle,
                            busy: false,
                            since: Instant::now(),
                        };
                        match slots.admit(slot, limits.max_clients) {
                            Ok((evicted, n)) => {
                                if evicted {
                                    stats.evicted.fetch_add(1, Ordering::Relaxed);
                                }
                                stats.clients.store(n as u64, Ordering::Relaxed);
                            }
                            Err(_) => {
                                stats.refused.fetch_add(1, Ordering::Relaxed);
                                let _ = answer(
                                    &stream,
                                    &Err(format!(
                                        "too many clients, all busy (at most {})",
                                        limits.max_clients
                                    )),
                                );
                                continue;
                            }
                        }
                        stats.accepted.fetch_add(1, Ordering::Relaxed);
                        let (requests, own_slots, own_stats) =
                            (requests.clone(), Arc::clone(&slots), Arc::clone(&stats));
                        let spawned = std::thread::Builder::new()
                            .name("admin-client".into())
                            .spawn(move || {
                                client(
                                    stream,
                                    &requests,
                                    Session {
                                        id,
                                        limits,
                                        slots: &own_slots,
                                        stats: &own_stats,
                                    },
                                );
                                let n = own_slots.remove(id);
                                own_stats.clients.store(n as u64, Ordering::Relaxed);
                            });
                        if spawned.is_err() {
                            let n = slots.remove(id);
                            stats.clients.store(n as u64, Ordering::Relaxed);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "admin socket accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(io_err)?;
    Ok(AdminServer {
        path: path.to_owned(),
        stop,
    })
}

fn answer(mut stream: &UnixStream, result: &Result<Answer, String>) -> io::Result<()> {
    let reply = match result {
        Ok(data) => Reply::done(data),
        Err(e) => Reply::refused(e.as_str(), None),
    };
    stream.write_all(&reply.to_line())
}

/// What a read of one request line gave.
enum Line {
    Request(Vec<u8>),
    TooLong(usize),
    End,
    /// Nothing arrived within the idle time.
    Idle,
    /// A request began but did not arrive whole in time.
    Slow,
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads one line of at most `MAX_REQUEST` bytes; a longer one is read to
/// its end and reported, not kept. Waits `idle` for its first byte and
/// then at most `request` for the rest; `started` is called when the
/// first byte is in.
fn read_line(
    r: &mut BufReader<UnixStream>,
    idle: Duration,
    request: Duration,
    mut started: impl FnMut(),
) -> io::Result<Line> {
    let mut buf = Vec::new();
    let mut total = 0usize;
    let mut deadline: Option<Instant> = None;
    r.get_ref().set_read_timeout(Some(idle))?;
    loop {
        let chunk = match r.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if timed_out(&e) => {
                return Ok(if deadline.is_none() {
                    Line::Idle
                } else {
                    Line::Slow
                });
            }
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(if total == 0 && deadline.is_none() {
                Line::End
            } else if total > MAX_REQUEST {
                Line::TooLong(total)
            } else {
                Line::Request(buf)
            });
        }
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        total += part.len();
        if total <= MAX_REQUEST {
            buf.extend_from_slice(part);
        } else {
            buf = Vec::new();
        }
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() {
            return Ok(if total > MAX_REQUEST {
                Line::TooLong(total)
            } else {
                Line::Request(buf)
            });
        }
        let now = Instant::now();
        let end = *deadline.get_or_insert_with(|| {
            started();
            now + request
        });
        let Some(left) = end.checked_duration_since(now).filter(|d| !d.is_zero()) else {
            return Ok(Line::Slow);
        };
        r.get_ref().set_read_timeout(Some(left))?;
    }
}

/// A client's identity and what it is held to.
struct Session<'a> {
    id: u64,
    limits: Limits,
    slots: &'a Slots,
    stats: &'a AdminStats,
}

fn client(stream: UnixStream, requests: &Sender<Pending>, session: Session<'_>) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let Session {
        id,
        limits,
        slots,
        stats,
    } = session;
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    loop {
        let line = read_line(&mut reader, limits.idle, limits.request, || {
            slots.set_busy(id, true)
        });
        slots.set_busy(id, true);
        let result = match line {
            Ok(Line::End) | Err(_) => return,
            Ok(Line::Idle) => {
                stats.closed_idle.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Line::Slow) => {
                stats.closed_slow.fetch_add(1, Ordering::Relaxed);
                let _ = answer(
                    &stream,
                    &Err(format!(
                        "the request did not arrive whole within {:?}",
                        limits.request
                    )),
                );
                return;
            }
            Ok(Line::TooLong(n)) => Err(format!(
                "request of {n} bytes refused: at most {MAX_REQUEST} bytes"
            )),
            Ok(Line::Request(line)) if line.iter().all(u8::is_ascii_whitespace) => {
                slots.set_busy(id, false);
                continue;
            }
            Ok(Line::Request(line)) => match decode_request(&line) {
                Err(Refused::Version(e)) => {
                    let reply = Reply::<Answer>::refused(e, Some(Code::Version));
                    if (&stream).write_all(&reply.to_line()).is_err() {
                        return;
                    }
                    slots.set_busy(id, false);
                    continue;
                }
                Err(Refused::Bad(e)) => Err(e),
                Ok(op) => {
                    let (tx, rx) = bounded(1);
                    if requests.send((op, tx)).is_err() {
                        Err("the dataplane is stopping".into())
                    } else {
                        rx.recv_timeout(ANSWER_WITHIN).unwrap_or_else(|_| {
                            Err("the control thread did not answer in time".into())
                        })
                    }
                }
            },
        };
        if answer(&stream, &result).is_err() {
            return;
        }
        slots.set_busy(id, false);
    }
}
