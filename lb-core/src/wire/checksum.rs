//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Every rewrite in the dataplane changes a few 16-bit words of a header, so
//! it updates the stored checksum from the old and new words instead of
//! summing the packet again: `HC' = ~(~HC + ~m + m')` (RFC 1624, eqn. 3),
//! which also avoids the `0x0000`/`0xffff` pitfall of eqn. 2. The property
//! tests at the bottom check it against a full recomputation.

/// The one's-complement sum of `data` as big-endian 16-bit words (an odd
/// last byte is padded with zero), not yet folded.
#[inline]
pub fn sum(data: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes(c.try_into().expect("8 bytes"));
        acc += (w >> 48) + ((w >> 32) & 0xffff) + ((w >> 16) & 0xffff) + (w & 0xffff);
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a sum to 16 bits with end-around carry, in four fixed steps
/// rather than a loop: 2^32 and 2^16 are both 1 modulo 0xffff, and each
/// step keeps a nonzero sum nonzero.
#[inline]
pub fn fold(acc: u64) -> u16 {
    let a = (acc & 0xffff_ffff) + (acc >> 32); // at most 33 bits
    let a = (a & 0xffff) + (a >> 16); // at most 0x2fffe
    let a = (a & 0xffff) + (a >> 16); // at most 0x10001
    let a = (a & 0xffff) + (a >> 16); // at most 0xffff
    u16::try_from(a).unwrap_or(0xffff)
}

/// The checksum of `data` with an initial (pseudo-header) sum: the value to
/// store in the header, and 0 when verifying data that includes it.
#[inline]
pub fn checksum(initial: u64, data: &[u8]) -> u16 {
    !fold(initial + sum(data))
}

/// The pseudo-header sum for TCP/UDP over IPv4 (RFC 793/768).
#[inline]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u64 {
    sum(&src) + sum(&dst) + u64::from(proto) + u64::from(len)
}

/// The pseudo-header sum for upper layers over IPv6 (RFC 8200, 8.1).
#[inline]
pub fn pseudo_v6(src: [u8; 16], dst: [u8; 16], next_header: u8, len: u32) -> u64 {
    sum(&src) + sum(&dst) + u64::from(next_header) + u64::from(len >> 16) + u64::from(len & 0xffff)
}

/// Updates checksum `check` for one 16-bit word changing from `old` to `new`.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!check) + u64::from(!old) + u64::from(new))
}

/// Updates `check` for a 32-bit field (an IPv4 address, a TCP sequence
/// number) changing from `old` to `new`.
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let acc = u64::from(!check)
        + u64::from(!(old >> 16) & 0xffff)
        + u64::from(!old & 0xffff)
        + u64::from(new >> 16)
        + u64::from(new & 0xffff);
    !fold(acc)
}

/// Updates `check` for a run of bytes of even length changing from `old` to
/// `new` (an IPv6 address). Panics in debug builds if the lengths differ.
#[inline]
pub fn update_bytes(check: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    debug_assert!(old.len().is_multiple_of(2));
    // ~m summed word by word is (words * 0xffff) - sum(m).
    let words = (old.len() / 2) as u64;
    let acc = u64::from(!check) + words * 0xffff - sum(old) + sum(new);
    !fold(acc)
}

/// The accumulated change of several fields, applied to a checksum in one
/// step: RFC 1624's `HC' = ~(~HC + sum(~m) + sum(m'))` with every changed
/// word's `~m + m'` summed first, so a rewrite of four fields folds once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta(u64);

impl Delta {
    /// A 16-bit field changes from `old` to `new`.
    #[inline]
    pub fn add16(&mut self, old: u16, new: u16) {
        self.0 += u64::from(!old) + u64::from(new);
    }

    /// A 32-bit field changes.
    #[inline]
    pub fn add32(&mut self, old: u32, new: u32) {
        self.0 += u64::from(!(old >> 16) & 0xffff)
            + u64::from(!old & 0xffff)
            + u64::from(new >> 16)
            + u64::from(new & 0xffff);
    }

    /// A run of bytes of even length changes.
    #[inline]
    pub fn add_bytes(&mut self, old: &[u8], new: &[u8]) {
        debug_assert_eq!(old.len(), new.len());
        let words = (old.len() / 2) as u64;
        self.0 += words * 0xffff - sum(old) + sum(new);
    }

    /// Adds another delta (the address changes shared by the IP header and
    /// the transport pseudo-header).
    #[inline]
    pub fn merge(&mut self, other: Delta) {
        self.0 += other.0;
    }

    /// The checksum after the changes.
    #[inline]
    pub fn apply(self, check: u16) -> u16 {
        !fold(u64::from(!check) + self.0)
    }
}

/// Updates a UDP checksum: like [`update16`]/[`update32`], except that a
/// stored zero means "no checksum" over IPv4 and stays zero, and a computed
/// zero is sent as `0xffff` (RFC 768).
#[inline]
pub fn udp_adjust(check: u16, update: impl FnOnce(u16) -> u16) -> u16 {
    if check == 0 {
        return 0;
    }
    match update(check) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fold_matches_the_end_around_carry_loop() {
        let by_loop = |mut acc: u64| {
            while acc >> 16 != 0 {
                acc = (acc & 0xffff) + (acc >> 16);
            }
            acc
        };
        let edges = [0, 1, 0xffff, 0x1_0000, 0x1_ffff, 0xffff_ffff, 0x1_0000_0000];
        for acc in edges
            .into_iter()
            .chain([u64::MAX, u64::MAX - 1, 0xffff_0000_ffff])
        {
            assert_eq!(u64::from(fold(acc)), by_loop(acc), "{acc:#x}");
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for acc in [x, x >> 20, x >> 40] {
                assert_eq!(u64::from(fold(acc)), by_loop(acc), "{acc:#x}");
            }
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071, section 3: the words 0001 f203 f4f5 f6f7 sum to 0x2ddf0,
        // which folds to 0xddf2; the checksum is its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(0, &data), 0x220d);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn ipv4_header_known_value() {
        // The IPv4 header used as the worked example of the header checksum
        // in many texts (e.g. Wikipedia's "IPv4 header checksum"):
        // 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(0, &h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(0, &h), 0);
    }

    #[test]
    fn update_avoids_negative_zero() {
        // One word 0x1234 with its checksum 0xedcb; the word becomes 0xffff,
        // whose checksum is 0x0000. RFC 1624's eqn. 2 would give 0xffff.
        assert_eq!(checksum(0, &[0x12, 0x34]), 0xedcb);
        assert_eq!(checksum(0, &[0xff, 0xff]), 0x0000);
        assert_eq!(update16(0xedcb, 0x1234, 0xffff), 0x0000);
    }

    fn recompute_with(data: &[u8], at: usize, new: &[u8]) -> u16 {
        let mut d = data.to_vec();
        d[at..at + new.len()].copy_from_slice(new);
        checksum(0, &d)
    }

    proptest! {
        #[test]
        fn update16_equals_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 2..64),
            at in 0usize..32,
            new in any::<u16>(),
        ) {
            if data.len() % 2 == 1 { data.push(0); }
            let at = (at * 2) % data.len();
            let check = checksum(0, &data);
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            prop_assert_eq!(update16(check, old, new), recompute_with(&data, at, &new.to_be_bytes()));
        }

        #[test]
        fn update32_equals_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 4..64),
            at in 0usize..30,
            new in any::<u32>(),
        ) {
            if data.len() % 2 == 1 { data.push(0); }
            let at = (at * 2) % (data.len() - 2);
            let check = checksum(0, &data);
            let old = u32::from_be_bytes(data[at..at + 4].try_into().unwrap());
            prop_assert_eq!(update32(check, old, new), recompute_with(&data, at, &new.to_be_bytes()));
        }

        #[test]
        fn update_bytes_equals_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 16..80),
            at in 0usize..32,
            new in proptest::array::uniform16(any::<u8>()),
        ) {
            if data.len() % 2 == 1 { data.push(0); }
            let at = (at * 2) % (data.len() - 14);
            let check = checksum(0, &data);
            let old = data[at..at + 16].to_vec();
            prop_assert_eq!(update_bytes(check, &old, &new), recompute_with(&data, at, &new));
        }

        #[test]
        fn delta_equals_successive_updates(
            check in any::<u16>(),
            a in any::<u32>(), b in any::<u32>(), c in any::<u16>(), d in any::<u16>(),
            x in proptest::array::uniform16(any::<u8>()), y in proptest::array::uniform16(any::<u8>()),
        ) {
            let mut delta = Delta::default();
            delta.add32(a, b);
            delta.add16(c, d);
            delta.add_bytes(&x, &y);
            let stepwise = update_bytes(update16(update32(check, a, b), c, d), &x, &y);
            prop_assert_eq!(delta.apply(check), stepwise);
        }

        #[test]
        fn sum_matches_word_by_word(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut acc = 0u64;
            for c in data.chunks(2) {
                acc += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
            prop_assert_eq!(fold(sum(&data)), fold(acc));
        }
    }
}
