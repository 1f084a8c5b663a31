//! Round robin (ip_vs_rr.c) and weighted round robin (ip_vs_wrr.c).

use super::{available, RsLoad};

/// rr: the next available server after the last one picked.
pub(super) fn rr(cursor: &mut usize, weights: &[u32], loads: &[RsLoad]) -> Option<usize> {
    let n = weights.len();
    if n == 0 {
        return None;
    }
    // Stepped with a compare rather than `%`: a division per step costs
    // more than the rest of the pick. The cursor is below `n` unless the
    // server list shrank since the last pick.
    let next = |i: usize| if i + 1 >= n { 0 } else { i + 1 };
    let mut i = if *cursor < n { *cursor } else { *cursor % n };
    for _ in 0..n {
        if available(weights, loads, i) {
            *cursor = next(i);
            return Some(i);
        }
        i = next(i);
    }
    None
}

/// wrr's per-snapshot constants: the largest weight and the gcd of the
/// positive weights.
#[derive(Debug, Clone, Copy)]
pub(super) struct WrrParams {
    max_weight: i64,
    gcd: i64,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl WrrParams {
    pub(super) fn new(weights: &[u32]) -> WrrParams {
        let g = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
        WrrParams {
            max_weight: i64::from(weights.iter().copied().max().unwrap_or(0)),
            gcd: i64::from(g.max(1)),
        }
    }
}

/// wrr's position: the current server (`None` = the list head) and weight.
#[derive(Debug, Default)]
pub(super) struct WrrCursor {
    current: Option<usize>,
    cw: i64,
}

/// wrr as IPVS does it: walk the list; at each wrap lower the current weight
/// by the gcd (back to the maximum below 1); pick the first server whose
/// weight reaches the current weight.
pub(super) fn wrr(
    p: &WrrParams,
    c: &mut WrrCursor,
    weights: &[u32],
    loads: &[RsLoad],
) -> Option<usize> {
    let n = weights.len();
    if n == 0 {
        return None;
    }
    // A full cycle visits every (server, weight level) pair once; beyond
    // that nothing can be found.
    let levels = usize::try_from((p.max_weight / p.gcd).max(1)).unwrap_or(usize::MAX);
    let limit = (n + 1).saturating_mul(levels).saturating_add(n + 1);
    for _ in 0..limit {
        let next = match c.current {
            None => {
                c.cw -= p.gcd;
                if c.cw <= 0 {
                    c.cw = p.max_weight;
                    if c.cw == 0 {
                        return None;
                    }
                }
                0
            }
            Some(i) if i + 1 == n => {
                c.current = None;
                continue;
            }
            Some(i) => i + 1,
        };
        c.current = Some(next);
        if !loads[next].overloaded && i64::from(weights[next]) >= c.cw && weights[next] > 0 {
            return Some(next);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{SchedFlags, SchedKind, Scheduler};

    fn sequence(kind: SchedKind, weights: &[u32], n: usize) -> Vec<usize> {
        let s = Scheduler::new(
            kind,
            SchedFlags::default(),
            &ids(weights.len()),
            weights,
            251,
        )
        .unwrap();
        let loads = loads(weights.len());
        let mut st = s.new_state(weights, &loads);
        (0..n)
            .map(|_| {
                s.pick(&mut st, weights, &loads, &flow([10, 0, 0, 1]), 0)
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn rr_cycles_and_skips() {
        assert_eq!(
            sequence(SchedKind::Rr, &[1, 1, 1], 7),
            [0, 1, 2, 0, 1, 2, 0]
        );
        assert_eq!(sequence(SchedKind::Rr, &[1, 0, 5], 4), [0, 2, 0, 2]);
    }

    #[test]
    fn rr_goes_on_from_where_it_was_when_the_list_shrinks() {
        let loads = loads(5);
        // The fifth of five was picked last; now there are three servers.
        let mut cursor = 4;
        let picks: Vec<_> = (0..4)
            .map(|_| super::rr(&mut cursor, &[1, 1, 1], &loads[..3]).unwrap())
            .collect();
        assert_eq!(picks, [1, 2, 0, 1]);
        assert_eq!(super::rr(&mut cursor, &[], &[]), None);
    }

    #[test]
    fn wrr_interleaves_by_weight() {
        // IPVS's wrr for weights 4, 3, 2: cw walks 4, 3, 2, 1.
        let one_period = [0, 0, 1, 0, 1, 2, 0, 1, 2];
        let seq = sequence(SchedKind::Wrr, &[4, 3, 2], 18);
        assert_eq!(seq[..9], one_period);
        assert_eq!(seq[9..], one_period);
        // gcd stepping: weights 100 and 50 behave as 2 and 1.
        assert_eq!(sequence(SchedKind::Wrr, &[100, 50], 6), [0, 0, 1, 0, 0, 1]);
        // A zero weight is never picked.
        assert_eq!(sequence(SchedKind::Wrr, &[0, 2, 1], 6), [1, 1, 2, 1, 1, 2]);
    }

    #[test]
    fn wrr_distribution_over_many_picks() {
        let seq = sequence(SchedKind::Wrr, &[5, 3, 1, 1], 10_000);
        let mut counts = [0; 4];
        for i in seq {
            counts[i] += 1;
        }
        assert_eq!(counts, [5000, 3000, 1000, 1000]);
    }

    #[test]
    fn wrr_all_overloaded_or_zero() {
        let s =
            Scheduler::new(SchedKind::Wrr, SchedFlags::default(), &ids(2), &[0, 0], 251).unwrap();
        let mut st = s.new_state(&[0, 0], &loads(2));
        assert_eq!(
            s.pick(&mut st, &[0, 0], &loads(2), &flow([1, 2, 3, 4]), 0),
            None
        );
        let s =
            Scheduler::new(SchedKind::Wrr, SchedFlags::default(), &ids(2), &[3, 1], 251).unwrap();
        let mut l = loads(2);
        l[0].overloaded = true;
        l[1].overloaded = true;
        assert_eq!(
            s.pick(
                &mut s.new_state(&[3, 1], &l),
                &[3, 1],
                &l,
                &flow([1, 2, 3, 4]),
                0
            ),
            None
        );
    }
}
