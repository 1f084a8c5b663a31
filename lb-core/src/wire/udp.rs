//! UDP headers (RFC 768). A zero checksum over IPv4 means "none" and stays
//! zero through rewrites.

use super::checksum;
use super::{get_u16, set_u16, WireError};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// The header length.
pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram; the buffer may extend past its length.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Validates the length field against the header and the buffer.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = usize::from(get_u16(b, field::LENGTH));
        if len < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if len > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) == HEADER_LEN
    }

    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// Whether the checksum is right (or absent, over IPv4).
    pub fn verify_checksum(&self, pseudo: u64) -> bool {
        self.checksum() == 0
            || checksum::checksum(pseudo, &self.buffer.as_ref()[..usize::from(self.len())]) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    pub fn set_dst_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    pub fn set_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Computes and stores the checksum from scratch.
    pub fn fill_checksum(&mut self, pseudo: u64) {
        self.set_checksum(0);
        let len = usize::from(self.len());
        let c = checksum::checksum(pseudo, &self.buffer.as_ref()[..len]);
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    pub fn rewrite_src_port(&mut self, port: u16) {
        let old = self.src_port();
        let c = checksum::udp_adjust(self.checksum(), |c| checksum::update16(c, old, port));
        self.set_src_port(port);
        self.set_checksum(c);
    }

    pub fn rewrite_dst_port(&mut self, port: u16) {
        let old = self.dst_port();
        let c = checksum::udp_adjust(self.checksum(), |c| checksum::update16(c, old, port));
        self.set_dst_port(port);
        self.set_checksum(c);
    }

    pub fn adjust_for_addr_v4(&mut self, old: u32, new: u32) {
        let c = checksum::udp_adjust(self.checksum(), |c| checksum::update32(c, old, new));
        self.set_checksum(c);
    }

    pub fn adjust_for_addr_v6(&mut self, old: &[u8; 16], new: &[u8; 16]) {
        let c = checksum::udp_adjust(self.checksum(), |c| checksum::update_bytes(c, old, new));
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DNS: [u8; 12] = [
        0x14, 0xe9, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, b'q', b'u', b'e', b'r',
    ];

    fn pseudo(src: [u8; 4]) -> u64 {
        checksum::pseudo_v4(src, [198, 18, 0, 10], 17, 12)
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&DNS[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (5353, 53, 12));
        assert_eq!(p.payload(), b"quer");
        assert!(
            p.verify_checksum(pseudo([10, 0, 0, 2])),
            "zero means no checksum"
        );
    }

    #[test]
    fn rewrites() {
        let mut b = DNS;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.rewrite_dst_port(5300);
        p.adjust_for_addr_v4(0x0a00_0002, 0x0a00_0003);
        assert_eq!(p.checksum(), 0, "an absent checksum stays absent");
        p.fill_checksum(pseudo([10, 0, 0, 3]));
        assert!(p.verify_checksum(pseudo([10, 0, 0, 3])));
        p.rewrite_src_port(1);
        p.adjust_for_addr_v4(0x0a00_0003, 0x0a00_0009);
        assert!(p.verify_checksum(pseudo([10, 0, 0, 9])));
        assert!(!p.verify_checksum(pseudo([10, 0, 0, 3])));
    }

    #[test]
    fn malformed() {
        assert_eq!(
            Packet::new_checked(&DNS[..7]).err(),
            Some(WireError::Truncated)
        );
        let mut b = DNS;
        b[5] = 7;
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(WireError::BadLength)
        );
        b[5] = 13;
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(WireError::Truncated)
        );
    }
}
