//! Maglev hashing (Eisenbud et al., NSDI 2016, section 3.4), weighted and
//! with fallback as in ip_vs_mh.c.
//!
//! Each server gets a preference permutation of the table's slots from two
//! hashes of its address and port (offset, skip); servers take turns
//! claiming their next free preferred slot, a server with weight w taking
//! w/gcd turns per round (shifted right so no server takes more than 256).
//! The table size is a prime so every skip walks all slots. The hash is a
//! fixed, stable function: two load balancers (or one after a restart)
//! with the same servers build the same table, which is Maglev's point.

use std::net::IpAddr;

use super::{addr_fold, available, RsId, RsLoad, SchedError, NONE};

/// The default table size: a prime well above 100 x the servers of a big
/// service, so the table stays balanced.
pub const DEFAULT_MH_TABLE_SIZE: u32 = 65537;

const SEED_OFFSET: u64 = 0x9e37_79b9_7f4a_7c15;
const SEED_SKIP: u64 = 0xc2b2_ae3d_27d4_eb4f;
/// The most turns a server takes per round.
const MAX_TURN_BITS: u32 = 8;

/// Whether `n` is prime (trial division: table sizes are small).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// MurmurHash3's 64-bit finaliser over a seeded value.
fn mix(seed: u64, v: u32) -> u64 {
    let mut h = seed ^ u64::from(v);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// `h mod m` as an index; `m` is a table size, at most `u32::MAX`.
#[allow(clippy::cast_possible_truncation)] // the result is below m <= u32::MAX
fn reduce(h: u64, m: u64) -> usize {
    (h % m) as usize
}

fn key(addr: IpAddr, port: u16, offset: u32) -> u32 {
    offset
        .wrapping_add(u32::from(port))
        .wrapping_add(addr_fold(addr))
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Builds the lookup table of `size` slots (a prime) for the servers.
pub(super) fn build(ids: &[RsId], weights: &[u32], size: u32) -> Result<Box<[u16]>, SchedError> {
    if !is_prime(size) {
        return Err(SchedError::NotPrime(size));
    }
    if ids.len() > size as usize {
        return Err(SchedError::TableTooSmall {
            size,
            servers: ids.len(),
        });
    }
    let m = size as usize;
    let mut table = vec![NONE; m].into_boxed_slice();
    let g = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
    if g == 0 {
        return Ok(table);
    }
    let max_turns = weights.iter().map(|w| w / g).max().unwrap_or(0);
    let shift = (32 - max_turns.leading_zeros()).saturating_sub(MAX_TURN_BITS);
    let m64 = u64::from(size);
    let mut setup: Vec<(usize, usize, u32)> = ids
        .iter()
        .zip(weights)
        .map(|(id, &w)| {
            let k = key(id.addr, id.port, 0);
            let offset = reduce(mix(SEED_OFFSET, k), m64);
            let skip = reduce(mix(SEED_SKIP, k), m64 - 1) + 1;
            let turns = if w == 0 { 0 } else { ((w / g) >> shift).max(1) };
            (offset, skip, turns)
        })
        .collect();
    let mut filled = 0;
    while filled < m {
        for (i, (perm, skip, turns)) in setup.iter_mut().enumerate() {
            for _ in 0..*turns {
                while table[*perm] != NONE {
                    *perm += *skip;
                    if *perm >= m {
                        *perm -= m;
                    }
                }
                table[*perm] = u16::try_from(i).unwrap_or(NONE);
                filled += 1;
                if filled == m {
                    return Ok(table);
                }
            }
        }
    }
    Ok(table)
}

fn slot(table: &[u16], addr: IpAddr, port: u16, offset: u32) -> usize {
    reduce(
        mix(SEED_OFFSET, key(addr, port, offset)),
        table.len() as u64,
    )
}

/// The server of the flow's slot; with fallback, an unavailable one sends
/// the search on to the slots of the flow's following offsets.
pub(super) fn pick(
    table: &[u16],
    weights: &[u32],
    loads: &[RsLoad],
    src: IpAddr,
    port: u16,
    fallback: bool,
) -> Option<usize> {
    if table.is_empty() {
        return None;
    }
    let first = slot(table, src, port, 0);
    let d = usize::from(table[first]);
    if d >= weights.len() {
        return None;
    }
    if available(weights, loads, d) {
        return Some(d);
    }
    if !fallback {
        return None;
    }
    let m = u32::try_from(table.len()).unwrap_or(u32::MAX);
    let first = u32::try_from(first).unwrap_or(0);
    for offset in 0..m {
        let r = (offset + first) % m;
        let d = usize::from(table[slot(table, src, port, r)]);
        if d >= weights.len() {
            return None;
        }
        if available(weights, loads, d) {
            return Some(d);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn counts(table: &[u16], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &d in table {
            c[usize::from(d)] += 1;
        }
        c
    }

    #[test]
    fn primes() {
        assert!(is_prime(2) && is_prime(251) && is_prime(65537) && is_prime(4093));
        assert!(
            !is_prime(0) && !is_prime(1) && !is_prime(65536) && !is_prime(4095) && !is_prime(9)
        );
        assert_eq!(
            build(&ids(2), &[1, 1], 65536).unwrap_err(),
            SchedError::NotPrime(65536)
        );
        assert!(matches!(
            build(&ids(300), &vec![1; 300], 251),
            Err(SchedError::TableTooSmall { .. })
        ));
    }

    #[test]
    fn equal_weights_are_balanced_to_one_entry() {
        for n in [3, 100, 1000] {
            let t = build(&ids(n), &vec![1; n], DEFAULT_MH_TABLE_SIZE).unwrap();
            assert!(t.iter().all(|&d| usize::from(d) < n));
            let c = counts(&t, n);
            let (min, max) = (c.iter().min().unwrap(), c.iter().max().unwrap());
            assert!(max - min <= 1, "n={n}: min {min} max {max}");
        }
    }

    #[test]
    fn weights_are_proportional() {
        let t = build(&ids(3), &[1, 2, 4], DEFAULT_MH_TABLE_SIZE).unwrap();
        let c = counts(&t, 3);
        // 65537 slots in rounds of 7 claims: 1/7, 2/7, 4/7 each to within a round.
        for (got, share) in c.iter().zip([1, 2, 4]) {
            let want = 65537 * share / 7;
            assert!(got.abs_diff(want) <= 4, "{c:?}");
        }
        // Huge weights are shifted down but keep their ratio.
        let t = build(&ids(2), &[100_000, 300_000], 4093).unwrap();
        let c = counts(&t, 2);
        assert!((c[1] as f64 / c[0] as f64 - 3.0).abs() < 0.05, "{c:?}");
        // Zero weights take no slot.
        let t = build(&ids(3), &[1, 0, 1], 251).unwrap();
        assert_eq!(counts(&t, 3)[1], 0);
        assert!(build(&ids(2), &[0, 0], 251)
            .unwrap()
            .iter()
            .all(|&d| d == NONE));
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        let n = 100;
        let all = ids(n);
        let before = build(&all, &vec![1; n], DEFAULT_MH_TABLE_SIZE).unwrap();
        // Remove server 37: the others keep their identities (and so their
        // permutations) but shift down one index after it.
        let mut rest = all.clone();
        rest.remove(37);
        let after = build(&rest, &vec![1; n - 1], DEFAULT_MH_TABLE_SIZE).unwrap();
        let identity = |t: &[u16], ids: &[RsId], s: usize| ids[usize::from(t[s])];
        let moved = (0..before.len())
            .filter(|&s| identity(&before, &all, s) != identity(&after, &rest, s))
            .count();
        let owned_by_removed = before.iter().filter(|&&d| d == 37).count();
        let frac = moved as f64 / before.len() as f64;
        assert!(moved >= owned_by_removed);
        // Maglev: close to 1/N, with a little extra churn.
        assert!(
            frac < 1.0 / n as f64 * 1.6,
            "moved {frac:.4} of entries, 1/N = {:.4}",
            1.0 / n as f64
        );
    }

    #[test]
    fn lookup_is_sticky_and_falls_back() {
        let t = build(&ids(4), &[1; 4], 251).unwrap();
        let weights = [1; 4];
        let mut l = loads(4);
        let src = IpAddr::from([10, 0, 0, 9]);
        let d = pick(&t, &weights, &l, src, 0, false).unwrap();
        assert_eq!(pick(&t, &weights, &l, src, 0, false), Some(d));
        l[d].overloaded = true;
        assert_eq!(pick(&t, &weights, &l, src, 0, false), None);
        let other = pick(&t, &weights, &l, src, 0, true).unwrap();
        assert_ne!(other, d);
        // The table itself is a pure function of the servers.
        assert_eq!(build(&ids(4), &[1; 4], 251).unwrap(), t);
    }
}
