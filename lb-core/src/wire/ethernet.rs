//! Ethernet II frames, with up to two VLAN tags (802.1Q, 802.1ad).

use super::{get_u16, set_u16, MacAddr, WireError};

/// EtherType values the load balancer knows.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
    pub const IPV6: u16 = 0x86dd;
}

mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
}

/// The length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// The length of one VLAN tag.
pub const VLAN_TAG_LEN: usize = 4;
/// Tags the parser follows before giving up.
const MAX_TAGS: usize = 2;

/// A view of an Ethernet frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

/// What lies under the Ethernet header (after any VLAN tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2 {
    /// The innermost EtherType.
    pub ethertype: u16,
    /// The outermost VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// Where the network-layer header starts.
    pub l3_offset: usize,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking it; accessors may panic if it is
    /// shorter than [`HEADER_LEN`].
    pub fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps a buffer that holds at least an Ethernet header.
    pub fn new_checked(buffer: T) -> Result<Frame<T>, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Frame { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn dst(&self) -> MacAddr {
        MacAddr(
            self.buffer.as_ref()[field::DST]
                .try_into()
                .expect("6 bytes"),
        )
    }

    pub fn src(&self) -> MacAddr {
        MacAddr(
            self.buffer.as_ref()[field::SRC]
                .try_into()
                .expect("6 bytes"),
        )
    }

    /// The outer EtherType (a VLAN TPID if tagged).
    pub fn ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Follows VLAN tags to the network layer.
    #[inline]
    pub fn l2(&self) -> Result<L2, WireError> {
        let b = self.buffer.as_ref();
        let mut ethertype = self.ethertype();
        let mut off = HEADER_LEN;
        let mut vlan = None;
        let mut tags = 0;
        while ethertype == ethertype::VLAN || ethertype == ethertype::QINQ {
            if tags == MAX_TAGS {
                return Err(WireError::Unsupported);
            }
            if b.len() < off + VLAN_TAG_LEN {
                return Err(WireError::Truncated);
            }
            vlan.get_or_insert(get_u16(b, off) & 0x0fff);
            ethertype = get_u16(b, off + 2);
            off += VLAN_TAG_LEN;
            tags += 1;
        }
        Ok(L2 {
            ethertype,
            vlan,
            l3_offset: off,
        })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac.0);
    }

    pub fn set_src(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac.0);
    }

    pub fn set_ethertype(&mut self, t: u16) {
        set_u16(self.buffer.as_mut(), field::ETHERTYPE, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNTAGGED: [u8; 16] = [
        0x02, 0, 0, 0, 0, 0x01, // dst
        0x02, 0, 0, 0, 0, 0x02, // src
        0x08, 0x00, // IPv4
        0x45, 0x00,
    ];

    #[test]
    fn deconstruct() {
        let f = Frame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(f.dst(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.src(), MacAddr([2, 0, 0, 0, 0, 2]));
        assert_eq!(
            f.l2().unwrap(),
            L2 {
                ethertype: ethertype::IPV4,
                vlan: None,
                l3_offset: 14
            }
        );
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 14];
        let mut f = Frame::new_unchecked(&mut buf[..]);
        f.set_dst(MacAddr([2, 0, 0, 0, 0, 1]));
        f.set_src(MacAddr([2, 0, 0, 0, 0, 2]));
        f.set_ethertype(ethertype::IPV4);
        assert_eq!(buf, UNTAGGED[..14]);
    }

    #[test]
    fn vlan_tags() {
        let mut b = UNTAGGED[..12].to_vec();
        b.extend_from_slice(&[0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x20, 0x0a, 0x86, 0xdd]);
        let l2 = Frame::new_checked(&b[..]).unwrap().l2().unwrap();
        assert_eq!(
            (l2.ethertype, l2.vlan, l2.l3_offset),
            (ethertype::IPV6, Some(100), 22)
        );
        // Three tags are more than the parser follows.
        let mut three = UNTAGGED[..12].to_vec();
        for _ in 0..3 {
            three.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
        }
        three.extend_from_slice(&[0x08, 0x00]);
        assert_eq!(
            Frame::new_checked(&three[..]).unwrap().l2(),
            Err(WireError::Unsupported)
        );
        // A tag cut short.
        let cut = &b[..16];
        assert_eq!(
            Frame::new_checked(cut).unwrap().l2(),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn too_short() {
        assert_eq!(
            Frame::new_checked(&UNTAGGED[..13]).err(),
            Some(WireError::Truncated)
        );
    }
}
