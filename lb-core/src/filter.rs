//! Allow and deny lists of client prefixes: which sources may open a
//! connection to a service. Built once per snapshot on the control thread
//! (prefix-trie's longest-prefix-match trie per family), read by a worker
//! once per new connection, never per packet of an established one.

use std::net::IpAddr;

use prefix_trie::PrefixSet;

use crate::types::Addr;

/// A prefix as configured: an address with its host bits clear, and a
/// length.
pub type Prefix = (IpAddr, u8);

/// Parses `10.0.0.0/8`, `2001:db8::/32` or one address (a whole prefix).
pub fn parse_prefix(text: &str) -> Result<Prefix, String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not an address or prefix (10.0.0.0/8, 2001:db8::/32)"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|&l| l <= max)
            .ok_or_else(|| format!("{text:?}: a prefix length is 0 to {max}"))?,
        None => max,
    };
    let clear = match addr {
        IpAddr::V4(a) => IpAddr::from(std::net::Ipv4Addr::from(u32::from(a) & mask32(len))),
        IpAddr::V6(a) => IpAddr::from(std::net::Ipv6Addr::from(u128::from(a) & mask128(len))),
    };
    if clear != addr {
        return Err(format!(
            "{text:?} has host bits set; the prefix is {clear}/{len}"
        ));
    }
    Ok((addr, len))
}

fn mask32(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}

/// A set of prefixes, for "is this address in one of them".
#[derive(Clone, Default)]
pub struct PrefixList {
    v4: PrefixSet<(u32, u8)>,
    v6: PrefixSet<(u128, u8)>,
    len: usize,
}

impl std::fmt::Debug for PrefixList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrefixList({} prefixes)", self.len)
    }
}

impl PrefixList {
    pub fn new(prefixes: &[Prefix]) -> PrefixList {
        let mut list = PrefixList::default();
        for &(a, len) in prefixes {
            match a {
                IpAddr::V4(v4) => list.v4.insert((u32::from(v4), len)),
                IpAddr::V6(v6) => list.v6.insert((u128::from(v6), len)),
            };
        }
        list.len = prefixes.len();
        list
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the stored address `a` (IPv4 mapped into IPv6) is in one of
    /// the prefixes.
    pub fn contains(&self, a: &Addr) -> bool {
        let v6 = std::net::Ipv6Addr::from(*a);
        match v6.to_ipv4_mapped() {
            Some(v4) => self.v4.get_lpm(&(u32::from(v4), 32)).is_some(),
            None => self.v6.get_lpm(&(u128::from(v6), 128)).is_some(),
        }
    }
}

/// What a service's lists say of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// In the deny list.
    Denied,
    /// The allow list is not empty and the client is not in it.
    NotAllowed,
}

/// A service's allow and deny lists.
#[derive(Debug, Clone, Default)]
pub struct Screen {
    allow: PrefixList,
    deny: PrefixList,
}

impl Screen {
    pub fn new(allow: &[Prefix], deny: &[Prefix]) -> Screen {
        Screen {
            allow: PrefixList::new(allow),
            deny: PrefixList::new(deny),
        }
    }

    /// Deny first: a client in both lists is denied.
    #[inline]
    pub fn verdict(&self, client: &Addr) -> Verdict {
        if !self.deny.is_empty() && self.deny.contains(client) {
            Verdict::Denied
        } else if !self.allow.is_empty() && !self.allow.contains(client) {
            Verdict::NotAllowed
        } else {
            Verdict::Pass
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::addr;

    fn p(s: &str) -> Prefix {
        parse_prefix(s).unwrap()
    }

    fn ip(s: &str) -> Addr {
        addr(s.parse().unwrap())
    }

    #[test]
    fn prefixes_read_strictly() {
        assert_eq!(p("10.0.0.0/8"), ("10.0.0.0".parse().unwrap(), 8));
        assert_eq!(p("10.1.2.3").1, 32);
        assert_eq!(p("2001:db8::/32").1, 32);
        assert!(parse_prefix("10.0.0.1/8")
            .unwrap_err()
            .contains("10.0.0.0/8"));
        assert!(parse_prefix("10.0.0.0/33").is_err());
        assert!(parse_prefix("example.com").is_err());
    }

    #[test]
    fn deny_wins_and_an_empty_allow_list_allows_all() {
        let open = Screen::default();
        assert_eq!(open.verdict(&ip("192.0.2.1")), Verdict::Pass);
        let s = Screen::new(
            &[p("10.9.0.0/16"), p("2001:db8::/32")],
            &[p("10.9.0.66"), p("10.9.1.0/24")],
        );
        assert_eq!(s.verdict(&ip("10.9.0.2")), Verdict::Pass);
        assert_eq!(s.verdict(&ip("10.9.0.66")), Verdict::Denied);
        assert_eq!(s.verdict(&ip("10.9.1.200")), Verdict::Denied);
        assert_eq!(s.verdict(&ip("10.8.0.1")), Verdict::NotAllowed);
        assert_eq!(s.verdict(&ip("2001:db8::5")), Verdict::Pass);
        assert_eq!(s.verdict(&ip("2001:db9::5")), Verdict::NotAllowed);
        // IPv4 prefixes never match IPv6 clients and the other way round.
        let v4_only = Screen::new(&[], &[p("0.0.0.0/0")]);
        assert_eq!(v4_only.verdict(&ip("::1")), Verdict::Pass);
        assert_eq!(v4_only.verdict(&ip("127.0.0.1")), Verdict::Denied);
    }

    #[test]
    fn thousands_of_prefixes() {
        let many: Vec<Prefix> = (0..4096u32)
            .map(|i| {
                (
                    IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 | (i << 8))),
                    24,
                )
            })
            .collect();
        let s = Screen::new(&[], &many);
        assert_eq!(s.verdict(&ip("10.0.15.7")), Verdict::Denied);
        assert_eq!(s.verdict(&ip("10.16.0.1")), Verdict::Pass);
    }
}
