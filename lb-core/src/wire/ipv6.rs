//! IPv6 headers (RFC 8200) and the walk over extension headers to the
//! upper layer.

use std::net::Ipv6Addr;

use super::checksum;
use super::{get_u16, get_u32, set_u16, set_u32, WireError};

mod field {
    use std::ops::Range;
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// The length of the fixed header.
pub const HEADER_LEN: usize = 40;
/// Extension headers followed before giving up.
const MAX_EXTENSIONS: usize = 8;

/// Extension header numbers.
pub mod ext {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AUTH: u8 = 51;
    pub const DEST_OPTS: u8 = 60;
    pub const NO_NEXT: u8 = 59;
}

/// Where the upper layer starts, after any extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// The upper-layer protocol (TCP, UDP, ICMPv6, ...).
    pub protocol: u8,
    /// Its offset from the start of the IPv6 header.
    pub offset: usize,
    /// Whether a fragment header says this is not the first fragment (no
    /// transport header follows).
    pub later_fragment: bool,
    /// Whether a fragment header is present.
    pub fragment: bool,
}

/// A view of an IPv6 packet; the buffer may extend past the payload.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Validates the version and the payload length against the buffer.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::BadVersion);
        }
        if HEADER_LEN + usize::from(get_u16(b, field::PAYLOAD_LEN)) > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    pub fn traffic_class(&self) -> u8 {
        u8::try_from((get_u32(self.buffer.as_ref(), field::VER_TC_FLOW) >> 20) & 0xff).unwrap_or(0)
    }

    pub fn flow_label(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(<[u8; 16]>::try_from(&self.buffer.as_ref()[field::SRC]).expect("16 bytes"))
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(<[u8; 16]>::try_from(&self.buffer.as_ref()[field::DST]).expect("16 bytes"))
    }

    /// The payload (extension headers included), up to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }

    /// Follows extension headers to the upper layer.
    pub fn upper_layer(&self) -> Result<UpperLayer, WireError> {
        let b = self.buffer.as_ref();
        let end = HEADER_LEN + usize::from(self.payload_len());
        let mut next = self.next_header();
        let mut off = HEADER_LEN;
        let mut fragment = false;
        let mut later_fragment = false;
        for _ in 0..MAX_EXTENSIONS {
            let len = match next {
                ext::HOP_BY_HOP | ext::ROUTING | ext::DEST_OPTS => {
                    let l = *b
                        .get(off + 1)
                        .filter(|_| off + 2 <= end)
                        .ok_or(WireError::Truncated)?;
                    (usize::from(l) + 1) * 8
                }
                ext::AUTH => {
                    let l = *b
                        .get(off + 1)
                        .filter(|_| off + 2 <= end)
                        .ok_or(WireError::Truncated)?;
                    (usize::from(l) + 2) * 4
                }
                ext::FRAGMENT => {
                    if off + 8 > end {
                        return Err(WireError::Truncated);
                    }
                    fragment = true;
                    later_fragment = get_u16(b, off + 2) & 0xfff8 != 0;
                    8
                }
                protocol => {
                    return Ok(UpperLayer {
                        protocol,
                        offset: off,
                        later_fragment,
                        fragment,
                    })
                }
            };
            if off + len > end {
                return Err(WireError::Truncated);
            }
            next = b[off];
            off += len;
        }
        Err(WireError::Unsupported)
    }

    /// The pseudo-header sum for an upper layer of `len` bytes.
    pub fn pseudo_sum(&self, protocol: u8, len: u32) -> u64 {
        checksum::pseudo_v6(
            self.src_addr().octets(),
            self.dst_addr().octets(),
            protocol,
            len,
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes version 6, a traffic class and a flow label.
    pub fn set_version_tc_flow(&mut self, tc: u8, flow: u32) {
        set_u32(
            self.buffer.as_mut(),
            field::VER_TC_FLOW,
            (6 << 28) | (u32::from(tc) << 20) | (flow & 0xfffff),
        );
    }

    pub fn set_payload_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::PAYLOAD_LEN, v);
    }

    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = v;
    }

    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    /// Decrements the hop limit; `false`, unchanged, at 0 or 1. IPv6 has
    /// no header checksum to update.
    pub fn decrement_hop_limit(&mut self) -> bool {
        let h = self.hop_limit();
        if h <= 1 {
            return false;
        }
        self.set_hop_limit(h - 1);
        true
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0x60, 0x00, 0x00, 0x00];
        b.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        b.extend_from_slice(&[next, 64]);
        b.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&"fd00::10".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn deconstruct() {
        let b = packet(17, &[0, 1, 0, 2, 0, 8, 0, 0]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload_len(), 8);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "fd00::10".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            p.upper_layer().unwrap(),
            UpperLayer {
                protocol: 17,
                offset: 40,
                later_fragment: false,
                fragment: false
            }
        );
    }

    #[test]
    fn construct() {
        let mut b = vec![0u8; 48];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_version_tc_flow(0, 0);
        p.set_payload_len(8);
        p.set_next_header(17);
        p.set_hop_limit(64);
        p.set_src_addr("fd00::2".parse().unwrap());
        p.set_dst_addr("fd00::10".parse().unwrap());
        p.payload_mut().copy_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        assert_eq!(b, packet(17, &[0, 1, 0, 2, 0, 8, 0, 0]));
    }

    #[test]
    fn extension_headers() {
        // Hop-by-hop (8 bytes) -> fragment (offset 0, M) -> TCP.
        let mut payload = vec![ext::FRAGMENT, 0, 1, 4, 0, 0, 0, 0];
        payload.extend_from_slice(&[6, 0, 0x00, 0x01, 0, 0, 0, 1]);
        payload.extend_from_slice(&[0u8; 20]);
        let b = packet(ext::HOP_BY_HOP, &payload);
        let u = Packet::new_checked(&b[..]).unwrap().upper_layer().unwrap();
        assert_eq!(
            (u.protocol, u.offset, u.fragment, u.later_fragment),
            (6, 56, true, false)
        );
        // A later fragment (offset 8).
        let mut later = payload.clone();
        later[10] = 0x00;
        later[11] = 0x08;
        let b = packet(ext::HOP_BY_HOP, &later);
        assert!(
            Packet::new_checked(&b[..])
                .unwrap()
                .upper_layer()
                .unwrap()
                .later_fragment
        );
        // An extension header claiming more than the payload holds.
        let b = packet(ext::DEST_OPTS, &[6, 9, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().upper_layer(),
            Err(WireError::Truncated)
        );
        // A chain longer than the walk follows.
        let chain: Vec<u8> = (0..9)
            .flat_map(|_| [ext::DEST_OPTS, 0, 0, 0, 0, 0, 0, 0])
            .collect();
        let b = packet(ext::DEST_OPTS, &chain);
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().upper_layer(),
            Err(WireError::Unsupported)
        );
    }

    #[test]
    fn malformed() {
        let b = packet(17, &[0; 8]);
        assert_eq!(
            Packet::new_checked(&b[..39]).err(),
            Some(WireError::Truncated)
        );
        assert_eq!(
            Packet::new_checked(&b[..47]).err(),
            Some(WireError::Truncated)
        );
        let mut v4 = b;
        v4[0] = 0x45;
        assert_eq!(
            Packet::new_checked(&v4[..]).err(),
            Some(WireError::BadVersion)
        );
    }
}
