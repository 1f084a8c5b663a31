//! Zero-copy views over the headers the load balancer reads and rewrites.
//!
//! In the manner of smoltcp's `wire`: a view wraps any `T: AsRef<[u8]>`,
//! field offsets live in a private `field` module, `new_checked` validates
//! lengths once so that no accessor can panic afterwards, and setters need
//! `AsMut<[u8]>`. Fields are read at byte offsets rather than by casting to
//! C structs, which would make unaligned references. Rewrites that change a
//! checksummed field sit next to the field and update the checksum
//! incrementally ([`checksum`]). Malformed input is a [`WireError`], a cheap
//! value that the dataplane turns into a drop counter.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod ndisc;
pub mod tcp;
pub mod udp;

use std::fmt;

/// Why a header could not be read. Each maps to a drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The buffer ends before the header (or the length it declares) does.
    Truncated,
    /// The version field is not the expected one.
    BadVersion,
    /// A header-length field is smaller than the fixed header.
    BadHeaderLen,
    /// A total-length field disagrees with the header or the buffer.
    BadLength,
    /// A header kind the load balancer does not handle (e.g. non-Ethernet
    /// ARP, too many IPv6 extension headers or VLAN tags).
    Unsupported,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "truncated header",
            WireError::BadVersion => "wrong IP version",
            WireError::BadHeaderLen => "header length below the minimum",
            WireError::BadLength => "length field inconsistent with the packet",
            WireError::Unsupported => "unsupported header",
        })
    }
}

impl std::error::Error for WireError {}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Whether the group bit is set (broadcast or multicast).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<MacAddr, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts
                .next()
                .ok_or_else(|| format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
            *b = u8::from_str_radix(p, 16)
                .ok()
                .filter(|_| p.len() == 2)
                .ok_or_else(|| format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
        }
        Ok(MacAddr(out))
    }
}

/// IP protocol numbers the load balancer knows.
pub mod ip_proto {
    pub const ICMP: u8 = 1;
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

#[inline]
pub(crate) fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn set_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_show() {
        let m: MacAddr = "02:00:0a:ff:10:01".parse().unwrap();
        assert_eq!(m.0, [2, 0, 10, 255, 16, 1]);
        assert_eq!(m.to_string(), "02:00:0a:ff:10:01");
        assert!(!m.is_multicast());
        assert!(MacAddr::BROADCAST.is_multicast());
        for bad in [
            "",
            "02:00:0a:ff:10",
            "02:00:0a:ff:10:01:02",
            "2:00:0a:ff:10:01",
            "zz:00:0a:ff:10:01",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
