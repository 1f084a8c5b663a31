//! The least-connection family: lc, wlc, sed, nq (ip_vs_lc.c, ip_vs_wlc.c,
//! ip_vs_sed.c, ip_vs_nq.c) and weighted failover (ip_vs_fo.c).
//!
//! These are the scans, IPVS's definition of each choice; the engine asks
//! [`super::least`]'s tree, which gives the same answer without a scan.
//!
//! Loads are compared as `overhead / weight` without division, by
//! cross-multiplying (`loh * w_dest > doh * w_least`), and ties keep the
//! earlier server, exactly as the kernel does. Overheads stay below 2^41
//! and weights at most 65535, so the products fit in 64 bits (saturating
//! beyond, for weights no service accepts).

use super::{available, RsLoad};

/// lc: the least `active*256 + inactive`; weights matter only as 0 or not.
pub(super) fn lc(weights: &[u32], loads: &[RsLoad]) -> Option<usize> {
    let mut least: Option<(usize, u64)> = None;
    for i in 0..weights.len() {
        if !available(weights, loads, i) {
            continue;
        }
        let doh = loads[i].overhead();
        if least.is_none_or(|(_, loh)| doh < loh) {
            least = Some((i, doh));
        }
    }
    least.map(|(i, _)| i)
}

/// The weighted minimum of `overhead(i) / weight(i)` over available servers.
fn weighted_min(
    weights: &[u32],
    loads: &[RsLoad],
    overhead: impl Fn(&RsLoad) -> u64,
) -> Option<usize> {
    let mut least: Option<(usize, u64)> = None;
    for i in 0..weights.len() {
        if !available(weights, loads, i) {
            continue;
        }
        let doh = overhead(&loads[i]);
        match least {
            None => least = Some((i, doh)),
            Some((l, loh)) => {
                if lighter(doh, weights[i], loh, weights[l]) {
                    least = Some((i, doh));
                }
            }
        }
    }
    least.map(|(i, _)| i)
}

/// Whether `doh / dw` is strictly below `loh / lw`, IPVS's way:
/// `loh * dw > doh * lw`.
#[inline]
pub(super) fn lighter(doh: u64, dw: u32, loh: u64, lw: u32) -> bool {
    loh.saturating_mul(u64::from(dw)) > doh.saturating_mul(u64::from(lw))
}

/// wlc: the least `(active*256 + inactive) / weight`.
pub(super) fn wlc(weights: &[u32], loads: &[RsLoad]) -> Option<usize> {
    weighted_min(weights, loads, RsLoad::overhead)
}

/// sed: the least `(active + 1) / weight`, the expected delay.
pub(super) fn sed(weights: &[u32], loads: &[RsLoad]) -> Option<usize> {
    weighted_min(weights, loads, |l| u64::from(l.active) + 1)
}

/// nq: the first idle server (no active connections) if there is one,
/// else as sed.
pub(super) fn nq(weights: &[u32], loads: &[RsLoad]) -> Option<usize> {
    (0..weights.len())
        .find(|&i| available(weights, loads, i) && loads[i].active == 0)
        .or_else(|| sed(weights, loads))
}

/// fo: the available server with the highest weight (the first of equals).
pub(super) fn fo(weights: &[u32], loads: &[RsLoad]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for i in 0..weights.len() {
        if available(weights, loads, i) && best.is_none_or(|b| weights[i] > weights[b]) {
            best = Some(i);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(active: u32, inactive: u32) -> RsLoad {
        RsLoad {
            active,
            inactive,
            overloaded: false,
        }
    }

    #[test]
    fn lc_counts_active_256_times_inactive() {
        // 1 active (256) beats 300 inactive; ties go to the first.
        assert_eq!(lc(&[1, 1], &[l(0, 300), l(1, 0)]), Some(1));
        assert_eq!(lc(&[1, 1], &[l(1, 0), l(1, 0)]), Some(0));
        // Weight is only "zero or not" for lc.
        assert_eq!(lc(&[100, 1], &[l(2, 0), l(1, 0)]), Some(1));
        assert_eq!(lc(&[0, 1], &[l(0, 0), l(9, 0)]), Some(1));
    }

    #[test]
    fn wlc_divides_by_weight() {
        // 512/2 = 256 < 300/1.
        assert_eq!(wlc(&[1, 2], &[l(0, 300), l(2, 0)]), Some(1));
        // Equal ratios keep the first: 256/1 vs 512/2.
        assert_eq!(wlc(&[1, 2], &[l(1, 0), l(2, 0)]), Some(0));
        // Idle servers: the first available one.
        assert_eq!(wlc(&[0, 3, 1], &[l(0, 0); 3]), Some(1));
    }

    #[test]
    fn sed_and_nq() {
        // sed: (2+1)/3 = 1 vs (0+1)/1 = 1: a tie keeps the first.
        assert_eq!(sed(&[3, 1], &[l(2, 0), l(0, 0)]), Some(0));
        // sed: (3+1)/3 > (0+1)/1.
        assert_eq!(sed(&[3, 1], &[l(3, 0), l(0, 0)]), Some(1));
        // nq: an idle server wins at once, even with a lower weight.
        assert_eq!(nq(&[10, 1], &[l(1, 0), l(0, 0)]), Some(1));
        // nq without idle servers is sed; inactive connections do not count.
        assert_eq!(nq(&[10, 1], &[l(5, 0), l(1, 50)]), Some(0));
    }

    #[test]
    fn fo_prefers_the_heaviest() {
        assert_eq!(fo(&[1, 5, 5, 2], &[l(9, 9); 4]), Some(1));
        let mut loads = [l(0, 0); 4];
        loads[1].overloaded = true;
        assert_eq!(fo(&[1, 5, 5, 2], &loads), Some(2));
        assert_eq!(fo(&[0, 0], &[l(0, 0); 2]), None);
    }

    #[test]
    fn wlc_distribution_follows_weights() {
        // Connections that stay open: wlc spreads them 3:2:1.
        let weights = [3, 2, 1];
        let mut loads = [RsLoad::default(); 3];
        for _ in 0..600 {
            let i = wlc(&weights, &loads).unwrap();
            loads[i].active += 1;
        }
        assert_eq!(loads.map(|l| l.active), [300, 200, 100]);
    }
}
