//! IPv4 headers (RFC 791), options and fragments recognised.

use std::net::Ipv4Addr;

use super::checksum;
use super::{get_u16, get_u32, set_u16, set_u32, WireError};

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// The length of a header without options.
pub const HEADER_LEN: usize = 20;
const DF: u16 = 0x4000;
const MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet. The buffer may be longer than the packet
/// (Ethernet padding); [`payload`](Self::payload) ends at the total length.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Validates version, header length and total length against the buffer.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hl < HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        if b.len() < hl {
            return Err(WireError::Truncated);
        }
        let total = usize::from(get_u16(b, field::LENGTH));
        if total < hl {
            return Err(WireError::BadLength);
        }
        if total > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF) & DF != 0
    }

    pub fn more_frags(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF) & MF != 0
    }

    /// The fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (get_u16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK) * 8
    }

    /// Whether this is a fragment (first or later) of a larger datagram.
    pub fn is_fragment(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF) & (MF | OFFSET_MASK) != 0
    }

    /// Whether this is a fragment other than the first, which carries no
    /// transport header.
    pub fn is_later_fragment(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK != 0
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_u32(self.buffer.as_ref(), field::SRC))
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_u32(self.buffer.as_ref(), field::DST))
    }

    /// The options, if any.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The header including options.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// What follows the header, up to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }

    /// Whether the header checksum is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(0, self.header()) == 0
    }

    /// The pseudo-header sum for the transport checksum.
    pub fn pseudo_sum(&self) -> u64 {
        let len = self.total_len() - u16::try_from(self.header_len()).unwrap_or(0);
        checksum::pseudo_v4(
            self.src_addr().octets(),
            self.dst_addr().octets(),
            self.protocol(),
            len,
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes version 4 and a header length in bytes (a multiple of 4).
    pub fn set_version_and_header_len(&mut self, len: usize) {
        debug_assert!(len.is_multiple_of(4) && (HEADER_LEN..=60).contains(&len));
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | u8::try_from(len / 4).unwrap_or(5);
    }

    pub fn set_tos(&mut self, v: u8) {
        self.buffer.as_mut()[field::TOS] = v;
    }

    pub fn set_total_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    pub fn set_ident(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets DF and clears MF and the offset (an unfragmented datagram).
    pub fn set_unfragmented(&mut self, dont_frag: bool) {
        set_u16(
            self.buffer.as_mut(),
            field::FLG_OFF,
            if dont_frag { DF } else { 0 },
        );
    }

    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        set_u32(self.buffer.as_mut(), field::SRC, u32::from(a));
    }

    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        set_u32(self.buffer.as_mut(), field::DST, u32::from(a));
    }

    /// Computes and stores the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(0, self.header());
        self.set_checksum(c);
    }

    /// Replaces the source address, updating the header checksum; returns
    /// the old address (for the transport checksum's pseudo-header).
    pub fn rewrite_src_addr(&mut self, a: Ipv4Addr) -> Ipv4Addr {
        let old = self.src_addr();
        self.set_src_addr(a);
        let c = checksum::update32(self.checksum(), u32::from(old), u32::from(a));
        self.set_checksum(c);
        old
    }

    /// Replaces the destination address, updating the header checksum;
    /// returns the old address.
    pub fn rewrite_dst_addr(&mut self, a: Ipv4Addr) -> Ipv4Addr {
        let old = self.dst_addr();
        self.set_dst_addr(a);
        let c = checksum::update32(self.checksum(), u32::from(old), u32::from(a));
        self.set_checksum(c);
        old
    }

    /// Decrements the TTL as a router does, updating the checksum; `false`,
    /// unchanged, when the TTL is already 0 or 1 (the packet must not be
    /// forwarded).
    pub fn decrement_ttl(&mut self) -> bool {
        let ttl = self.ttl();
        if ttl <= 1 {
            return false;
        }
        // TTL shares its 16-bit word with the protocol.
        let b = self.buffer.as_ref();
        let old = get_u16(b, field::TTL);
        self.set_ttl(ttl - 1);
        let new = get_u16(self.buffer.as_ref(), field::TTL);
        let c = checksum::update16(self.checksum(), old, new);
        self.set_checksum(c);
        true
    }

    /// The header, writable.
    pub fn header_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[..hl]
    }

    /// What follows the header up to the total length, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, total) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[hl..total]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10.0.0.2 -> 198.18.0.10, TCP, 40 bytes, TTL 64, DF, id 1. Its
    /// checksum by hand: the words 4500 0028 0001 4000 4006 0a00 0002 c612
    /// 000a sum to 0x1954d, which folds to 0x954e; the complement is 0x6ab1.
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x40, 0x00, 0x40, 0x06, 0x6a, 0xb1, 10, 0, 0, 2, 198,
        18, 0, 10,
    ];

    fn packet() -> Vec<u8> {
        let mut p = HEADER.to_vec();
        p.extend_from_slice(&[0u8; 20]);
        p
    }

    #[test]
    fn deconstruct() {
        let b = packet();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 40);
        assert_eq!(p.ident(), 1);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 6);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(198, 18, 0, 10));
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 20);
        assert!(p.options().is_empty());
    }

    #[test]
    fn construct() {
        let mut b = [0u8; 20];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_version_and_header_len(20);
        p.set_total_len(40);
        p.set_ident(1);
        p.set_unfragmented(true);
        p.set_ttl(64);
        p.set_protocol(6);
        p.set_src_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.set_dst_addr(Ipv4Addr::new(198, 18, 0, 10));
        p.fill_checksum();
        assert_eq!(b, HEADER);
    }

    #[test]
    fn rewrites_keep_the_checksum_right() {
        let mut b = packet();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(
            p.rewrite_dst_addr(Ipv4Addr::new(10, 1, 0, 7)),
            Ipv4Addr::new(198, 18, 0, 10)
        );
        assert_eq!(
            p.rewrite_src_addr(Ipv4Addr::new(10, 2, 0, 1)),
            Ipv4Addr::new(10, 0, 0, 2)
        );
        assert!(p.decrement_ttl());
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum());
        let stored = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), stored);
        p.set_ttl(1);
        p.fill_checksum();
        assert!(!p.decrement_ttl());
        assert_eq!(p.ttl(), 1);
    }

    #[test]
    fn fragments() {
        let mut b = packet();
        b[6] = 0x20; // MF, offset 0: the first fragment
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.is_fragment() && !p.is_later_fragment());
        b[6] = 0x00;
        b[7] = 0x03; // offset 24 bytes
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.is_later_fragment());
        assert_eq!(p.frag_offset(), 24);
    }

    #[test]
    fn options_and_padding() {
        let mut b = HEADER.to_vec();
        b[0] = 0x46; // 24-byte header
        b[3] = 44;
        b.extend_from_slice(&[0x01, 0x01, 0x01, 0x00]); // NOP NOP NOP EOL
        b.extend_from_slice(&[0xaa; 20]);
        b.extend_from_slice(&[0; 6]); // Ethernet padding past the total length
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), [1, 1, 1, 0]);
        assert_eq!(p.payload(), [0xaa; 20]);
    }

    #[test]
    fn malformed() {
        let b = packet();
        assert_eq!(
            Packet::new_checked(&b[..19]).err(),
            Some(WireError::Truncated)
        );
        let mut v6 = b.clone();
        v6[0] = 0x65;
        assert_eq!(
            Packet::new_checked(&v6[..]).err(),
            Some(WireError::BadVersion)
        );
        let mut short = b.clone();
        short[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&short[..]).err(),
            Some(WireError::BadHeaderLen)
        );
        let mut long = b.clone();
        long[3] = 41;
        assert_eq!(
            Packet::new_checked(&long[..]).err(),
            Some(WireError::Truncated)
        );
        let mut tiny = b.clone();
        tiny[3] = 19;
        assert_eq!(
            Packet::new_checked(&tiny[..]).err(),
            Some(WireError::BadLength)
        );
        let mut opts = b;
        opts[0] = 0x4f; // 60-byte header in a 40-byte packet
        assert_eq!(
            Packet::new_checked(&opts[..]).err(),
            Some(WireError::Truncated)
        );
    }
}
