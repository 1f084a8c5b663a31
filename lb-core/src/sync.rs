//! Connection sync between directors: the messages a director sends its
//! peers about its sessions, so that a peer that takes over (a keepalived
//! failover, an ECMP rehash) carries the connections on.
//!
//! A datagram is a header, up to [`MAX_RECORDS`] fixed-size records and an
//! authenticator:
//!
//! ```text
//! "LBSY" | version 1 | 0 | records: u16 | sender: u64 | sequence: u64
//! records x 84 bytes | HMAC-SHA256 of everything before, with the shared key
//! ```
//!
//! All integers are big-endian. `sender` is chosen at random when a director
//! starts, and `sequence` grows by one per datagram, so a receiver drops a
//! datagram it has seen (or an older one) from the same sender
//! ([`Replay`]). Anything that does not decode, authenticate or come in
//! order is refused as a whole, with its reason ([`SyncError`]): nothing of
//! it is installed.

use std::collections::HashMap;
use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::types::{Addr, ForwardMode};

pub const MAGIC: [u8; 4] = *b"LBSY";
pub const VERSION: u8 = 1;
const HEADER: usize = 24;
const RECORD: usize = 84;
const TAG: usize = 32;
/// Records per datagram: one fits a 1500-byte link with room to spare.
pub const MAX_RECORDS: usize = 14;
/// The longest datagram.
pub const MAX_DATAGRAM: usize = HEADER + MAX_RECORDS * RECORD + TAG;

/// One session as a peer needs it to carry the connection on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRecord {
    pub proto: u8,
    pub mode: ForwardMode,
    /// The TCP state (`State as u8`), or UDP/ICMP's.
    pub state: u8,
    pub client: (Addr, u16),
    pub vip: (Addr, u16),
    pub rs: (Addr, u16),
    /// Full-NAT's local address and port; zeros otherwise.
    pub laddr: (Addr, u16),
    /// The service's firewall mark (0: the service is proto, VIP, port).
    pub mark: u32,
    /// The VIP port of the service (a catch-all service's is 0, not the
    /// connection's).
    pub service_port: u16,
}

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncError {
    /// Shorter than a header and an authenticator, or a length that does
    /// not match its record count.
    Length,
    Magic,
    Version,
    /// The authenticator does not match: another key, or changed bytes.
    Auth,
    /// A sequence number this sender already used.
    Replay,
    /// A record with a protocol, mode or state that cannot be.
    Malformed,
}

impl SyncError {
    pub const ALL: [SyncError; 6] = [
        SyncError::Length,
        SyncError::Magic,
        SyncError::Version,
        SyncError::Auth,
        SyncError::Replay,
        SyncError::Malformed,
    ];

    /// The counter's name.
    pub fn name(self) -> &'static str {
        match self {
            SyncError::Length => "bad_length",
            SyncError::Magic => "bad_magic",
            SyncError::Version => "bad_version",
            SyncError::Auth => "bad_auth",
            SyncError::Replay => "replayed",
            SyncError::Malformed => "malformed",
        }
    }
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn tag(key: &[u8], bytes: &[u8]) -> [u8; TAG] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(bytes);
    mac.finalize().into_bytes().into()
}

fn mode_byte(m: ForwardMode) -> u8 {
    match m {
        ForwardMode::Dr => 1,
        ForwardMode::Nat => 2,
        ForwardMode::Tun => 3,
        ForwardMode::Fnat => 4,
    }
}

fn mode_of(b: u8) -> Option<ForwardMode> {
    Some(match b {
        1 => ForwardMode::Dr,
        2 => ForwardMode::Nat,
        3 => ForwardMode::Tun,
        4 => ForwardMode::Fnat,
        _ => return None,
    })
}

fn put_end(out: &mut Vec<u8>, (a, port): (Addr, u16)) {
    out.extend_from_slice(&a);
    out.extend_from_slice(&port.to_be_bytes());
}

/// One datagram of `records` (at most [`MAX_RECORDS`]; the rest are left
/// out), from `sender` with `sequence`, authenticated with `key`.
pub fn encode(key: &[u8], sender: u64, sequence: u64, records: &[SessionRecord]) -> Vec<u8> {
    let records = &records[..records.len().min(MAX_RECORDS)];
    let mut out = Vec::with_capacity(HEADER + records.len() * RECORD + TAG);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(0);
    out.extend_from_slice(&u16::try_from(records.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&sender.to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    for r in records {
        out.push(r.proto);
        out.push(mode_byte(r.mode));
        out.push(r.state);
        out.push(0);
        for end in [r.client, r.vip, r.rs, r.laddr] {
            put_end(&mut out, end);
        }
        out.extend_from_slice(&r.mark.to_be_bytes());
        out.extend_from_slice(&r.service_port.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
    let t = tag(key, &out);
    out.extend_from_slice(&t);
    out
}

/// The highest sequence seen per sender, for [`decode`]. Holds at most
/// `limit` senders: a new one beyond that replaces the one heard from
/// longest ago, so a flood of made-up senders cannot grow it.
#[derive(Debug)]
pub struct Replay {
    seen: HashMap<u64, (u64, u64)>,
    limit: usize,
    clock: u64,
}

impl Replay {
    pub fn new(limit: usize) -> Replay {
        Replay {
            seen: HashMap::new(),
            limit: limit.max(1),
            clock: 0,
        }
    }

    /// Whether `sender` was heard from (and not forgotten since).
    pub fn knows(&self, sender: u64) -> bool {
        self.seen.contains_key(&sender)
    }

    fn accept(&mut self, sender: u64, sequence: u64) -> bool {
        self.clock += 1;
        if let Some((last, at)) = self.seen.get_mut(&sender) {
            if sequence <= *last {
                return false;
            }
            *last = sequence;
            *at = self.clock;
            return true;
        }
        if self.seen.len() >= self.limit {
            if let Some(oldest) = self
                .seen
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(s, _)| *s)
            {
                self.seen.remove(&oldest);
            }
        }
        self.seen.insert(sender, (sequence, self.clock));
        true
    }
}

fn end_at(b: &[u8], at: usize) -> (Addr, u16) {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    (a, u16::from_be_bytes([b[at + 16], b[at + 17]]))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes([
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
        b[at + 7],
    ])
}

/// The sender a datagram claims (0 if it is too short to say); only
/// [`decode`] tells whether to believe it.
pub fn sender_of(bytes: &[u8]) -> u64 {
    if bytes.len() < HEADER {
        return 0;
    }
    u64_at(bytes, 8)
}

/// The records of a datagram, if it is whole, authentic and new.
pub fn decode(
    key: &[u8],
    bytes: &[u8],
    replay: &mut Replay,
) -> Result<Vec<SessionRecord>, SyncError> {
    if bytes.len() < HEADER + TAG {
        return Err(SyncError::Length);
    }
    if bytes[..4] != MAGIC {
        return Err(SyncError::Magic);
    }
    if bytes[4] != VERSION {
        return Err(SyncError::Version);
    }
    let count = usize::from(u16::from_be_bytes([bytes[6], bytes[7]]));
    if count > MAX_RECORDS || bytes.len() != HEADER + count * RECORD + TAG {
        return Err(SyncError::Length);
    }
    let (body, got) = bytes.split_at(bytes.len() - TAG);
    let want = tag(key, body);
    // A comparison that takes the same time wherever the tags differ.
    if want.iter().zip(got).fold(0u8, |d, (a, b)| d | (a ^ b)) != 0 {
        return Err(SyncError::Auth);
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let r = &body[HEADER + i * RECORD..HEADER + (i + 1) * RECORD];
        let mode = mode_of(r[1]).ok_or(SyncError::Malformed)?;
        if !matches!(r[0], 6 | 17) {
            return Err(SyncError::Malformed);
        }
        out.push(SessionRecord {
            proto: r[0],
            mode,
            state: r[2],
            client: end_at(r, 4),
            vip: end_at(r, 22),
            rs: end_at(r, 40),
            laddr: end_at(r, 58),
            mark: u32_at(r, 76),
            service_port: u16::from_be_bytes([r[80], r[81]]),
        });
    }
    // Only an authentic datagram moves the sender's sequence on.
    if !replay.accept(u64_at(body, 8), u64_at(body, 16)) {
        return Err(SyncError::Replay);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::addr;

    fn record(port: u16) -> SessionRecord {
        SessionRecord {
            proto: 6,
            mode: ForwardMode::Fnat,
            state: 1,
            client: (addr("10.9.0.2".parse().unwrap()), port),
            vip: (addr("198.18.0.10".parse().unwrap()), 80),
            rs: (addr("10.0.0.10".parse().unwrap()), 8080),
            laddr: (addr("10.0.0.100".parse().unwrap()), 2000),
            mark: 0,
            service_port: 80,
        }
    }

    #[test]
    fn records_go_through_and_come_out_the_same() {
        let rs: Vec<SessionRecord> = (0..5).map(|i| record(40000 + i)).collect();
        let d = encode(b"key", 7, 1, &rs);
        let mut replay = Replay::new(8);
        assert_eq!(decode(b"key", &d, &mut replay).unwrap(), rs);
        assert_eq!(encode(b"key", 7, 2, &[]).len(), HEADER + TAG);
        let many: Vec<SessionRecord> = (0..40).map(record).collect();
        assert_eq!(encode(b"key", 7, 3, &many).len(), MAX_DATAGRAM);
    }

    #[test]
    fn each_kind_of_bad_datagram_is_refused_for_its_reason() {
        let good = encode(b"key", 7, 5, &[record(1)]);
        let mut replay = Replay::new(8);
        assert_eq!(
            decode(b"key", &good[..20], &mut replay),
            Err(SyncError::Length)
        );
        let mut magic = good.clone();
        magic[0] = b'X';
        assert_eq!(decode(b"key", &magic, &mut replay), Err(SyncError::Magic));
        let mut version = good.clone();
        version[4] = 2;
        assert_eq!(
            decode(b"key", &version, &mut replay),
            Err(SyncError::Version)
        );
        assert_eq!(decode(b"other", &good, &mut replay), Err(SyncError::Auth));
        let mut changed = good.clone();
        changed[30] ^= 1;
        assert_eq!(decode(b"key", &changed, &mut replay), Err(SyncError::Auth));
        let mut bad_mode = record(1);
        bad_mode.proto = 1;
        let d = encode(b"key", 7, 4, &[bad_mode]);
        assert_eq!(decode(b"key", &d, &mut replay), Err(SyncError::Malformed));
        assert!(decode(b"key", &good, &mut replay).is_ok());
        assert_eq!(decode(b"key", &good, &mut replay), Err(SyncError::Replay));
        let older = encode(b"key", 7, 4, &[record(1)]);
        assert_eq!(decode(b"key", &older, &mut replay), Err(SyncError::Replay));
        // Another sender (a director that restarted) starts its own count.
        assert!(decode(b"key", &encode(b"key", 8, 1, &[]), &mut replay).is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_pass() {
        // xorshift: lengths around the real ones, contents at random, and
        // real datagrams with one byte changed.
        let mut x = 0x2545_f491_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut replay = Replay::new(4);
        let good = encode(b"key", 1, 1, &[record(9), record(10)]);
        for _ in 0..20_000 {
            let n = usize::try_from(next() % (MAX_DATAGRAM as u64 + 64)).unwrap();
            let mut b: Vec<u8> = (0..n).map(|_| next().to_le_bytes()[0]).collect();
            if n > 8 && next() % 2 == 0 {
                b[..4].copy_from_slice(&MAGIC);
                b[4] = VERSION;
            }
            assert!(decode(b"key", &b, &mut replay).is_err());
            let mut flipped = good.clone();
            let at = usize::try_from(next() % good.len() as u64).unwrap();
            flipped[at] ^= 1 | next().to_le_bytes()[0];
            assert!(decode(b"key", &flipped, &mut replay).is_err());
        }
    }

    #[test]
    fn made_up_senders_do_not_grow_the_replay_table() {
        let mut replay = Replay::new(4);
        for s in 0..100 {
            assert!(decode(b"k", &encode(b"k", s, 1, &[]), &mut replay).is_ok());
        }
        assert_eq!(replay.seen.len(), 4);
    }
}
