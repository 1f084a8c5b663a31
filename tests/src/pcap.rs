//! Classic pcap files: both byte orders, microsecond and nanosecond stamps
//! (DPDK's net_pcap writes nanosecond ones). Only Ethernet link type is
//! written; reading keeps whatever link type the file states.

use std::io;
use std::path::Path;

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;

/// One captured packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Seconds and nanoseconds since the epoch.
    pub ts: (u32, u32),
    /// Length on the wire (may exceed `data.len()` if the capture was cut).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

impl Packet {
    /// A packet captured whole, at time zero.
    pub fn new(data: Vec<u8>) -> Packet {
        Packet {
            ts: (0, 0),
            orig_len: len32(&data),
            data,
        }
    }
}

/// A whole capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub linktype: u32,
    pub packets: Vec<Packet>,
}

/// A frame's length as pcap stores it (frames are far below 4 GiB).
fn len32(data: &[u8]) -> u32 {
    u32::try_from(data.len()).expect("a frame shorter than 4 GiB")
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Parses a pcap file's bytes.
pub fn parse(bytes: &[u8]) -> io::Result<Capture> {
    let header = bytes
        .get(..24)
        .ok_or_else(|| bad("shorter than a pcap file header (24 bytes)"))?;
    let magic_le = u32::from_le_bytes(header[..4].try_into().unwrap());
    let magic_be = u32::from_be_bytes(header[..4].try_into().unwrap());
    let (le, nanos) = match (magic_le, magic_be) {
        (MAGIC_US, _) => (true, false),
        (MAGIC_NS, _) => (true, true),
        (_, MAGIC_US) => (false, false),
        (_, MAGIC_NS) => (false, true),
        _ => return Err(bad(format!("not a pcap file (magic {magic_le:#010x})"))),
    };
    let u32_at = |b: &[u8], off: usize| {
        let raw: [u8; 4] = b[off..off + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        }
    };
    let linktype = u32_at(header, 20);
    let mut packets = Vec::new();
    let mut off = 24;
    while off < bytes.len() {
        let rec = bytes.get(off..off + 16).ok_or_else(|| {
            bad(format!(
                "record header of packet {} is cut short",
                packets.len() + 1
            ))
        })?;
        let (sec, frac, incl, orig) = (
            u32_at(rec, 0),
            u32_at(rec, 4),
            u32_at(rec, 8),
            u32_at(rec, 12),
        );
        let start = off + 16;
        let data = bytes
            .get(start..start + incl as usize)
            .ok_or_else(|| bad(format!("data of packet {} is cut short", packets.len() + 1)))?;
        packets.push(Packet {
            ts: (
                sec,
                if nanos {
                    frac
                } else {
                    frac.saturating_mul(1000)
                },
            ),
            orig_len: orig,
            data: data.to_vec(),
        });
        off = start + incl as usize;
    }
    Ok(Capture { linktype, packets })
}

/// Reads a pcap file.
pub fn read(path: &Path) -> io::Result<Capture> {
    let bytes = std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    parse(&bytes).map_err(|e| bad(format!("{}: {e}", path.display())))
}

/// Serialises packets as a little-endian, nanosecond, Ethernet pcap file.
pub fn to_bytes(packets: &[Packet]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + packets.iter().map(|p| 16 + p.data.len()).sum::<usize>());
    out.extend_from_slice(&MAGIC_NS.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    for p in packets {
        for v in [p.ts.0, p.ts.1, len32(&p.data), p.orig_len] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&p.data);
    }
    out
}

/// Writes packets to a pcap file.
pub fn write(path: &Path, packets: &[Packet]) -> io::Result<()> {
    std::fs::write(path, to_bytes(packets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let pkts = vec![
            Packet {
                ts: (1, 2),
                orig_len: 3,
                data: vec![1, 2, 3],
            },
            Packet::new(vec![]),
        ];
        let cap = parse(&to_bytes(&pkts)).unwrap();
        assert_eq!(cap.linktype, LINKTYPE_ETHERNET);
        assert_eq!(cap.packets, pkts);
    }

    #[test]
    fn reads_big_endian_microseconds() {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC_US.to_be_bytes());
        b.extend_from_slice(&[
            0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 1,
        ]);
        b.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 2, 0xaa, 0xbb]);
        let cap = parse(&b).unwrap();
        assert_eq!(cap.packets[0].ts, (7, 5000));
        assert_eq!(cap.packets[0].data, [0xaa, 0xbb]);
    }

    #[test]
    fn truncated_files_are_errors() {
        assert!(parse(&[0xd4, 0xc3]).is_err());
        let mut b = to_bytes(&[Packet::new(vec![1, 2, 3, 4])]);
        b.pop();
        let e = parse(&b).unwrap_err();
        assert!(e.to_string().contains("packet 1"), "{e}");
        assert!(parse(&[0u8; 24]).is_err());
    }
}
