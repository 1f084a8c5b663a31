//! ICMP (RFC 792) and ICMPv6 (RFC 4443) messages: echo, and the errors that
//! quote a packet of a balanced connection.

use super::checksum;
use super::{get_u16, get_u32, set_u16, set_u32, WireError};

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
}

/// The fixed header length (type, code, checksum, 4 bytes of rest).
pub const HEADER_LEN: usize = 8;

/// ICMPv4 types.
pub mod v4 {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAM_PROBLEM: u8 = 12;
    /// Destination unreachable: fragmentation needed and DF set.
    pub const CODE_FRAG_NEEDED: u8 = 4;
}

/// ICMPv6 types.
pub mod v6 {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAM_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;
}

/// Whether an ICMPv4 type is an error that quotes the offending packet.
pub fn is_error_v4(t: u8) -> bool {
    matches!(
        t,
        v4::DEST_UNREACHABLE | v4::SOURCE_QUENCH | v4::TIME_EXCEEDED | v4::PARAM_PROBLEM
    )
}

/// Whether an ICMPv6 type is an error that quotes the offending packet.
pub fn is_error_v6(t: u8) -> bool {
    t < 128
}

/// A view of an ICMP or ICMPv6 message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier.
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::REST)
    }

    /// Echo sequence number.
    pub fn echo_seq(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::REST + 2)
    }

    /// The next-hop MTU of an ICMPv4 "fragmentation needed" (the low 16
    /// bits of the rest) or the MTU of an ICMPv6 "packet too big".
    pub fn mtu(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::REST)
    }

    /// What follows the fixed header: echo data, or the quoted packet of an
    /// error.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Whether the checksum is right (`pseudo` is 0 for ICMPv4).
    pub fn verify_checksum(&self, pseudo: u64) -> bool {
        checksum::checksum(pseudo, self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    pub fn set_echo_ident(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::REST, v);
    }

    pub fn set_echo_seq(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::REST + 2, v);
    }

    pub fn set_mtu(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::REST, v);
    }

    /// The quoted packet or echo data, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Computes and stores the checksum from scratch.
    pub fn fill_checksum(&mut self, pseudo: u64) {
        self.set_checksum(0);
        let c = checksum::checksum(pseudo, self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Turns an echo request into its reply in place (type and checksum
    /// only; the caller swaps the addresses).
    pub fn echo_request_to_reply(&mut self, reply_type: u8) {
        let old = u16::from_be_bytes([self.msg_type(), self.code()]);
        self.set_msg_type(reply_type);
        let new = u16::from_be_bytes([self.msg_type(), self.code()]);
        let c = checksum::update16(self.checksum(), old, new);
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECHO: [u8; 12] = [8, 0, 0, 0, 0x12, 0x34, 0x00, 0x01, b'p', b'i', b'n', b'g'];

    #[test]
    fn echo_round_trip() {
        let mut b = ECHO;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(0);
        assert!(p.verify_checksum(0));
        assert_eq!((p.msg_type(), p.echo_ident(), p.echo_seq()), (8, 0x1234, 1));
        assert_eq!(p.data(), b"ping");
        p.echo_request_to_reply(v4::ECHO_REPLY);
        assert_eq!(p.msg_type(), 0);
        assert!(p.verify_checksum(0));
    }

    #[test]
    fn errors_and_mtu() {
        assert!(is_error_v4(3) && is_error_v4(11) && !is_error_v4(8) && !is_error_v4(0));
        assert!(is_error_v6(2) && !is_error_v6(128));
        let b = [3, 4, 0, 0, 0, 0, 0x05, 0xdc, 0x45];
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.code(), p.mtu()),
            (3, v4::CODE_FRAG_NEEDED, 1500)
        );
        assert_eq!(p.data(), [0x45]);
        assert_eq!(
            Packet::new_checked(&b[..7]).err(),
            Some(WireError::Truncated)
        );
    }
}
