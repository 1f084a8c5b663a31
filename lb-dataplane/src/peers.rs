//! Connection sync with peer directors (`[sync]`), on the control thread.
//!
//! Each worker hands its session records ([`lb_core::sync::SessionRecord`])
//! to the control thread over a bounded channel; the control thread packs
//! them into authenticated datagrams ([`lb_core::sync::encode`]) and sends
//! them from the director's DIP to every peer, through the exception path
//! like any traffic of the director's own. What the peers send arrives the
//! same way; each datagram is checked whole ([`lb_core::sync::decode`]),
//! rate-limited, and its records go to the worker that will see the
//! connection's packets: a Full-NAT session to the owner of its local port,
//! any other to every worker (which of them RSS gives the client's packets
//! to is not known here).

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use lb_core::config::SyncSetup;
use lb_core::laddr::owner_of;
use lb_core::sync::{self, Replay, SessionRecord, SyncError, MAX_DATAGRAM, MAX_RECORDS};
use lb_core::types::ForwardMode;

/// Records a worker may have on its way to or from the control thread.
const LINK: usize = 65_536;
/// Datagrams read per tick, and records taken from each worker.
const READS_PER_TICK: usize = 256;
const TAKES_PER_TICK: usize = 8192;
/// Senders the replay guard remembers.
const SENDERS: usize = 64;

/// A worker's ends of its links with the control thread.
#[derive(Debug)]
pub struct WorkerLinks {
    pub out: Sender<SessionRecord>,
    pub install: Receiver<SessionRecord>,
    /// Set when a peer started: tell it of every session.
    pub resync: Arc<AtomicBool>,
}

/// The control thread's side.
#[derive(Debug)]
pub struct Peers {
    socket: UdpSocket,
    peers: Vec<SocketAddr>,
    key: Vec<u8>,
    sender: u64,
    sequence: u64,
    replay: Replay,
    from_workers: Vec<Receiver<SessionRecord>>,
    to_workers: Vec<Sender<SessionRecord>>,
    resync: Vec<Arc<AtomicBool>>,
    max_rate: f64,
    tokens: f64,
    last: Instant,
    counters: BTreeMap<&'static str, u64>,
}

/// A number no other start of a director is likely to have chosen: from the
/// kernel's random source, else from the clock and the process id.
fn random_sender() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok()
    {
        return u64::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    u64::try_from(t & u128::from(u64::MAX)).unwrap_or(0) ^ (u64::from(std::process::id()) << 32)
}

impl Peers {
    /// Binds `setup.listen` and makes the links of `workers` workers.
    pub fn new(setup: &SyncSetup, workers: usize) -> std::io::Result<(Peers, Vec<WorkerLinks>)> {
        let socket = UdpSocket::bind(setup.listen)?;
        socket.set_nonblocking(true)?;
        let mut links = Vec::new();
        let mut from_workers = Vec::new();
        let mut to_workers = Vec::new();
        let mut resync = Vec::new();
        for _ in 0..workers {
            let (out, from) = bounded(LINK);
            let (to, install) = bounded(LINK);
            let flag = Arc::new(AtomicBool::new(false));
            links.push(WorkerLinks {
                out,
                install,
                resync: Arc::clone(&flag),
            });
            from_workers.push(from);
            to_workers.push(to);
            resync.push(flag);
        }
        let mut counters = BTreeMap::new();
        for name in [
            "datagrams_sent",
            "records_sent",
            "send_errors",
            "datagrams_received",
            "records_received",
            "rate_limited",
            "install_queue_full",
            "unknown_peer",
            "resyncs",
        ] {
            counters.insert(name, 0);
        }
        for e in SyncError::ALL {
            counters.insert(e.name(), 0);
        }
        let rate = f64::from(setup.max_rate);
        let mut peers = Peers {
            socket,
            peers: setup.peers.clone(),
            key: setup.key.clone(),
            sender: random_sender(),
            sequence: 0,
            replay: Replay::new(SENDERS),
            from_workers,
            to_workers,
            resync,
            max_rate: rate,
            tokens: rate,
            last: Instant::now(),
            counters,
        };
        // An empty datagram says "a director started": the peers, which
        // have not heard this sender yet, tell it of all their sessions.
        peers.send_batch(&[]);
        Ok((peers, links))
    }

    fn add(&mut self, name: &'static str, n: u64) {
        *self.counters.entry(name).or_default() += n;
    }

    /// Sends what the workers kept, and hands the peers' records on.
    pub fn tick(&mut self) {
        self.send();
        self.receive();
    }

    fn send(&mut self) {
        let mut batch: Vec<SessionRecord> = Vec::new();
        for w in 0..self.from_workers.len() {
            batch.extend(self.from_workers[w].try_iter().take(TAKES_PER_TICK));
        }
        for chunk in batch.chunks(MAX_RECORDS) {
            self.send_batch(chunk);
        }
    }

    fn send_batch(&mut self, records: &[SessionRecord]) {
        self.sequence += 1;
        let d = sync::encode(&self.key, self.sender, self.sequence, records);
        for i in 0..self.peers.len() {
            match self.socket.send_to(&d, self.peers[i]) {
                Ok(_) => {
                    self.add("datagrams_sent", 1);
                    self.add("records_sent", records.len() as u64);
                }
                Err(_) => self.add("send_errors", 1),
            }
        }
    }

    fn receive(&mut self) {
        let elapsed = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        self.tokens = (self.tokens + elapsed * self.max_rate).min(self.max_rate);
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        for _ in 0..READS_PER_TICK {
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => return,
            };
            self.add("datagrams_received", 1);
            // Only the configured peers are heard.
            if !self.peers.iter().any(|p| p.ip() == from.ip()) {
                self.add("unknown_peer", 1);
                continue;
            }
            let new_sender = !self.replay.knows(sync::sender_of(&buf[..n]));
            let records = match sync::decode(&self.key, &buf[..n], &mut self.replay) {
                Ok(r) => r,
                Err(e) => {
                    self.add(e.name(), 1);
                    continue;
                }
            };
            if new_sender {
                // A peer that started knows none of our sessions.
                self.add("resyncs", 1);
                for flag in &self.resync {
                    flag.store(true, Ordering::Relaxed);
                }
            }
            self.add("records_received", records.len() as u64);
            for r in records {
                if self.tokens < 1.0 {
                    self.add("rate_limited", 1);
                    continue;
                }
                self.tokens -= 1.0;
                self.hand_on(r);
            }
        }
    }

    fn hand_on(&mut self, r: SessionRecord) {
        let workers = u16::try_from(self.to_workers.len()).unwrap_or(u16::MAX);
        let targets = if r.mode == ForwardMode::Fnat {
            let w = usize::from(owner_of(r.laddr.1, workers));
            w..w + 1
        } else {
            0..self.to_workers.len()
        };
        for w in targets {
            if let Some(tx) = self.to_workers.get(w) {
                if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(r) {
                    self.add("install_queue_full", 1);
                }
            }
        }
    }

    /// Every counter, by name.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.counters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect()
    }
}
