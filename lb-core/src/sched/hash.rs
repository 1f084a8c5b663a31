//! Destination and source hashing (ip_vs_dh.c, ip_vs_sh.c): a 256-bucket
//! table built per snapshot maps a hashed address to a server.

use std::net::IpAddr;

use super::{addr_fold, available, RsLoad, NONE};

const TAB_BITS: u32 = 8;
const TAB_SIZE: usize = 1 << TAB_BITS;

/// The kernel's `hash_32`: multiply by the golden ratio, keep the top bits.
fn hash_32(v: u32, bits: u32) -> usize {
    (v.wrapping_mul(0x61C8_8647) >> (32 - bits)) as usize
}

/// dh's table: servers in turn, one bucket each (weights ignored).
pub(super) fn dh_table(servers: usize) -> Box<[u16]> {
    (0..TAB_SIZE)
        .map(|b| {
            if servers == 0 {
                NONE
            } else {
                u16::try_from(b % servers).unwrap_or(NONE)
            }
        })
        .collect()
}

/// sh's table: each server fills as many consecutive buckets as its weight
/// before the next one starts (a zero weight still takes one bucket, as in
/// the kernel, where it is then unavailable).
pub(super) fn sh_table(weights: &[u32]) -> Box<[u16]> {
    let mut t = vec![NONE; TAB_SIZE];
    if weights.is_empty() {
        return t.into_boxed_slice();
    }
    let (mut d, mut count) = (0usize, 0u32);
    for b in &mut t {
        *b = u16::try_from(d).unwrap_or(NONE);
        count += 1;
        if count >= weights[d] {
            d = (d + 1) % weights.len();
            count = 0;
        }
    }
    t.into_boxed_slice()
}

/// dh: the bucket of the destination address; no fallback.
pub(super) fn dh(table: &[u16], weights: &[u32], loads: &[RsLoad], dst: IpAddr) -> Option<usize> {
    let d = usize::from(table[hash_32(addr_fold(dst), TAB_BITS)]);
    (d < weights.len() && available(weights, loads, d)).then_some(d)
}

fn sh_bucket(src: IpAddr, port: u16, offset: usize) -> usize {
    (offset + hash_32(u32::from(port).wrapping_add(addr_fold(src)), TAB_BITS)) % TAB_SIZE
}

/// sh: the bucket of the source address (and port with `sh-port`); with
/// `sh-fallback`, an unavailable server sends the search around the table.
pub(super) fn sh(
    table: &[u16],
    weights: &[u32],
    loads: &[RsLoad],
    src: IpAddr,
    port: u16,
    fallback: bool,
) -> Option<usize> {
    let first = sh_bucket(src, port, 0);
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
    (0..TAB_SIZE)
        .map(|offset| usize::from(table[sh_bucket(src, port, (offset + first) % TAB_SIZE)]))
        .find(|&d| d < weights.len() && available(weights, loads, d))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn tables() {
        let t = dh_table(3);
        assert_eq!(t[..5], [0, 1, 2, 0, 1]);
        let t = sh_table(&[2, 1, 3]);
        assert_eq!(t[..8], [0, 0, 1, 2, 2, 2, 0, 0]);
        assert!(sh_table(&[]).iter().all(|&b| b == NONE));
    }

    #[test]
    fn sh_is_sticky_and_weighted() {
        let weights = [3, 1];
        let table = sh_table(&weights);
        let loads = loads(2);
        let mut counts = [0; 2];
        for i in 0..=255u8 {
            for j in 0..16u8 {
                let src = IpAddr::from([10, j, 0, i]);
                let a = sh(&table, &weights, &loads, src, 0, false).unwrap();
                assert_eq!(
                    sh(&table, &weights, &loads, src, 0, false),
                    Some(a),
                    "same source, same server"
                );
                counts[a] += 1;
            }
        }
        let share = f64::from(counts[0]) / f64::from(counts[0] + counts[1]);
        assert!((0.70..0.80).contains(&share), "weight 3:1 gives {counts:?}");
    }

    #[test]
    fn sh_port_and_fallback() {
        let weights = [1, 1, 1, 1];
        let table = sh_table(&weights);
        let mut loads = loads(4);
        let src = IpAddr::from([10, 0, 0, 7]);
        // With sh-port, ports of one client spread over servers.
        let spread: std::collections::HashSet<_> = (0..64)
            .map(|p| sh(&table, &weights, &loads, src, 40000 + p, false).unwrap())
            .collect();
        assert!(spread.len() > 1);
        // Without fallback an overloaded target yields none; with it, another.
        let d = sh(&table, &weights, &loads, src, 0, false).unwrap();
        loads[d].overloaded = true;
        assert_eq!(sh(&table, &weights, &loads, src, 0, false), None);
        let other = sh(&table, &weights, &loads, src, 0, true).unwrap();
        assert_ne!(other, d);
    }

    #[test]
    fn dh_hashes_the_destination() {
        let weights = [1, 1, 1];
        let table = dh_table(3);
        let loads = loads(3);
        let a = dh(&table, &weights, &loads, IpAddr::from([192, 168, 1, 1])).unwrap();
        for _ in 0..5 {
            assert_eq!(
                dh(&table, &weights, &loads, IpAddr::from([192, 168, 1, 1])),
                Some(a)
            );
        }
        let picks: std::collections::HashSet<_> = (0..=255u8)
            .filter_map(|i| dh(&table, &weights, &loads, IpAddr::from([192, 168, 1, i])))
            .collect();
        assert_eq!(picks.len(), 3);
        let _ = flow([0, 0, 0, 0]);
    }
}
