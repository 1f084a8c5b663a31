//! ARP for IPv4 over Ethernet (RFC 826): the only kind a load balancer's
//! ports answer.

use std::net::Ipv4Addr;

use super::{get_u16, set_u16, MacAddr, WireError};

mod field {
    use std::ops::Range;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// The length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// ARP operations.
pub mod op {
    pub const REQUEST: u16 = 1;
    pub const REPLY: u16 = 2;
}

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer holding an Ethernet/IPv4 ARP packet; other hardware
    /// or protocol types are [`WireError::Unsupported`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let b = buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if get_u16(b, field::HTYPE) != 1
            || get_u16(b, field::PTYPE) != 0x0800
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(WireError::Unsupported);
        }
        Ok(Packet { buffer })
    }

    pub fn operation(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::OPER)
    }

    pub fn sender_mac(&self) -> MacAddr {
        MacAddr(
            self.buffer.as_ref()[field::SHA]
                .try_into()
                .expect("6 bytes"),
        )
    }

    pub fn sender_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(<[u8; 4]>::try_from(&self.buffer.as_ref()[field::SPA]).expect("4 bytes"))
    }

    pub fn target_mac(&self) -> MacAddr {
        MacAddr(
            self.buffer.as_ref()[field::THA]
                .try_into()
                .expect("6 bytes"),
        )
    }

    pub fn target_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(<[u8; 4]>::try_from(&self.buffer.as_ref()[field::TPA]).expect("4 bytes"))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes a whole Ethernet/IPv4 ARP packet.
    pub fn fill(
        &mut self,
        operation: u16,
        sha: MacAddr,
        spa: Ipv4Addr,
        tha: MacAddr,
        tpa: Ipv4Addr,
    ) {
        let b = self.buffer.as_mut();
        set_u16(b, field::HTYPE, 1);
        set_u16(b, field::PTYPE, 0x0800);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        set_u16(b, field::OPER, operation);
        b[field::SHA].copy_from_slice(&sha.0);
        b[field::SPA].copy_from_slice(&spa.octets());
        b[field::THA].copy_from_slice(&tha.0);
        b[field::TPA].copy_from_slice(&tpa.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Who has 10.0.0.1? Tell 10.0.0.2 (02:00:00:00:01:01).
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet/IPv4, request
        0x02, 0x00, 0x00, 0x00, 0x01, 0x01, 10, 0, 0, 2, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 1, // target
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.operation(), op::REQUEST);
        assert_eq!(p.sender_mac(), MacAddr([2, 0, 0, 0, 1, 1]));
        assert_eq!(p.sender_ip(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.target_mac(), MacAddr::ZERO);
        assert_eq!(p.target_ip(), Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn construct() {
        let mut b = [0xffu8; 28];
        Packet::new_unchecked(&mut b[..]).fill(
            op::REQUEST,
            MacAddr([2, 0, 0, 0, 1, 1]),
            Ipv4Addr::new(10, 0, 0, 2),
            MacAddr::ZERO,
            Ipv4Addr::new(10, 0, 0, 1),
        );
        assert_eq!(b, REQUEST);
    }

    #[test]
    fn rejects_other_kinds() {
        assert_eq!(
            Packet::new_checked(&REQUEST[..27]).err(),
            Some(WireError::Truncated)
        );
        let mut ieee = REQUEST;
        ieee[1] = 6;
        assert_eq!(
            Packet::new_checked(&ieee[..]).err(),
            Some(WireError::Unsupported)
        );
    }
}
