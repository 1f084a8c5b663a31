//! TCP headers (RFC 9293): ports, sequence numbers, flags, and the MSS
//! option (clamped when encapsulation shrinks the path MTU).

use super::checksum;
use super::{get_u16, get_u32, set_u16, set_u32, WireError};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DOFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// The length of a header without options.
pub const HEADER_LEN: usize = 20;

/// TCP flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u8);

impl Flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;

    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }

    /// SYN with RST or FIN, which no TCP sends. One shift and test, as it
    /// runs for every packet: bit `k` of the mask says whether the
    /// combination `k` of FIN (1), SYN (2) and RST (4) is one of SYN+FIN
    /// (3), SYN+RST (6) and all three (7).
    pub fn syn_with_rst_or_fin(self) -> bool {
        const IMPOSSIBLE: u8 = 1 << 3 | 1 << 6 | 1 << 7;
        (IMPOSSIBLE >> (self.0 & 7)) & 1 != 0
    }
}

/// A view of a TCP segment.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Validates that the header, options included, fits the buffer.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = usize::from(b[field::DOFF] >> 4) * 4;
        if hl < HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        if hl > b.len() {
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

    pub fn seq(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SEQ)
    }

    pub fn ack_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::ACK)
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DOFF] >> 4) * 4
    }

    pub fn flags(&self) -> Flags {
        Flags(self.buffer.as_ref()[field::FLAGS])
    }

    pub fn window(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn urgent(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::URGENT)
    }

    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Whether the checksum is right, given the pseudo-header sum (the
    /// buffer must end where the segment ends).
    pub fn verify_checksum(&self, pseudo: u64) -> bool {
        checksum::checksum(pseudo, self.buffer.as_ref()) == 0
    }

    /// The MSS option's value and its offset in the segment, if present.
    pub fn mss(&self) -> Option<(u16, usize)> {
        let opts = self.options();
        let mut i = 0;
        while i < opts.len() {
            match opts[i] {
                0 => return None,
                1 => i += 1,
                kind => {
                    let len = usize::from(*opts.get(i + 1)?);
                    if len < 2 || i + len > opts.len() {
                        return None;
                    }
                    if kind == 2 && len == 4 {
                        return Some((get_u16(opts, i + 2), HEADER_LEN + i + 2));
                    }
                    i += len;
                }
            }
        }
        None
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    pub fn set_dst_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    pub fn set_seq(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::SEQ, v);
    }

    pub fn set_ack_number(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::ACK, v);
    }

    /// Writes the header length in bytes (a multiple of 4) and the flags.
    pub fn set_header_len_and_flags(&mut self, len: usize, flags: Flags) {
        let b = self.buffer.as_mut();
        b[field::DOFF] = u8::try_from(len / 4).unwrap_or(5) << 4;
        b[field::FLAGS] = flags.0;
    }

    pub fn set_window(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::WINDOW, v);
    }

    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    pub fn set_urgent(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::URGENT, v);
    }

    /// Computes and stores the checksum from scratch (the buffer must end
    /// where the segment ends).
    pub fn fill_checksum(&mut self, pseudo: u64) {
        self.set_checksum(0);
        let c = checksum::checksum(pseudo, self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Replaces the source port, updating the checksum.
    pub fn rewrite_src_port(&mut self, port: u16) {
        let c = checksum::update16(self.checksum(), self.src_port(), port);
        self.set_src_port(port);
        self.set_checksum(c);
    }

    /// Replaces the destination port, updating the checksum.
    pub fn rewrite_dst_port(&mut self, port: u16) {
        let c = checksum::update16(self.checksum(), self.dst_port(), port);
        self.set_dst_port(port);
        self.set_checksum(c);
    }

    /// Updates the checksum for an address in the pseudo-header changing
    /// from `old` to `new` (after an IPv4 rewrite).
    pub fn adjust_for_addr_v4(&mut self, old: u32, new: u32) {
        let c = checksum::update32(self.checksum(), old, new);
        self.set_checksum(c);
    }

    /// Updates the checksum for an IPv6 pseudo-header address change.
    pub fn adjust_for_addr_v6(&mut self, old: &[u8; 16], new: &[u8; 16]) {
        let c = checksum::update_bytes(self.checksum(), old, new);
        self.set_checksum(c);
    }

    /// Lowers the MSS option to `max` if it is larger; returns whether it
    /// changed. The checksum is updated.
    pub fn clamp_mss(&mut self, max: u16) -> bool {
        let Some((mss, at)) = self.mss() else {
            return false;
        };
        if mss <= max {
            return false;
        }
        let c = checksum::update16(self.checksum(), mss, max);
        set_u16(self.buffer.as_mut(), at, max);
        self.set_checksum(c);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_with_rst_or_fin_is_every_such_combination_and_only_those() {
        for f in 0..=u8::MAX {
            let flags = Flags(f);
            let want = flags.syn() && (flags.rst() || flags.fin());
            assert_eq!(flags.syn_with_rst_or_fin(), want, "flags {f:#04x}");
        }
    }

    /// A SYN 40000 -> 80, seq 1000, window 8192, MSS 1460, checksum left 0.
    const SYN: [u8; 24] = [
        0x9c, 0x40, 0x00, 0x50, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02, 0x20,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
    ];

    fn pseudo() -> u64 {
        checksum::pseudo_v4([10, 0, 0, 2], [198, 18, 0, 10], 6, 24)
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&SYN[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (40000, 80));
        assert_eq!(p.seq(), 1000);
        assert_eq!(p.header_len(), 24);
        assert!(p.flags().syn() && !p.flags().ack());
        assert_eq!(p.window(), 8192);
        assert_eq!(p.mss(), Some((1460, 22)));
        assert!(p.payload().is_empty());
    }

    #[test]
    fn construct() {
        let mut b = [0u8; 24];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_src_port(40000);
        p.set_dst_port(80);
        p.set_seq(1000);
        p.set_ack_number(0);
        p.set_header_len_and_flags(24, Flags(Flags::SYN));
        p.set_window(8192);
        b[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        assert_eq!(b, SYN);
    }

    #[test]
    fn rewrites_keep_the_checksum_right() {
        let mut b = SYN;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(pseudo());
        assert!(p.verify_checksum(pseudo()));
        p.rewrite_dst_port(8080);
        p.rewrite_src_port(1025);
        assert!(p.clamp_mss(1400));
        assert!(!p.clamp_mss(1460));
        assert_eq!(p.mss(), Some((1400, 22)));
        // The pseudo-header's source changes 10.0.0.2 -> 10.9.9.9.
        p.adjust_for_addr_v4(0x0a00_0002, 0x0a09_0909);
        let new_pseudo = checksum::pseudo_v4([10, 9, 9, 9], [198, 18, 0, 10], 6, 24);
        assert!(p.verify_checksum(new_pseudo));
        assert!(!p.verify_checksum(pseudo()));
    }

    #[test]
    fn malformed() {
        assert_eq!(
            Packet::new_checked(&SYN[..19]).err(),
            Some(WireError::Truncated)
        );
        let mut b = SYN;
        b[12] = 0x40;
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(WireError::BadHeaderLen)
        );
        b[12] = 0x70; // 28 bytes claimed, 24 present
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(WireError::Truncated)
        );
        // A malformed option list yields no MSS rather than a panic.
        let mut odd = SYN;
        odd[21] = 9;
        assert_eq!(Packet::new_checked(&odd[..]).unwrap().mss(), None);
        odd[21] = 0;
        assert_eq!(Packet::new_checked(&odd[..]).unwrap().mss(), None);
    }
}
