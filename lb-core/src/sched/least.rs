//! A tournament tree over a service's real servers, so that lc, wlc, sed,
//! nq and fo choose in O(1) and follow a count's change in O(log n).
//!
//! IPVS walks every real server for each new connection; with a thousand
//! endpoints behind one VIP (kube-proxy in IPVS mode does that) the walk is
//! the whole cost of a SYN. The choice is a minimum under one order, so a
//! tree of "winners" answers it at the root, and a count that changes
//! replays only the matches on its path to the root.
//!
//! The choice stays IPVS's exactly. Its scans keep the earlier server on a
//! tie (they replace the current best only on a strict improvement), so the
//! order here is "better by the scheduler's key, else the lower index". In
//! a bottom-up tree a left subtree holds only lower indexes than its right
//! sibling, so a match goes right only on a strict improvement. The keys
//! are compared as the scans compare them ([`super::lc`]'s cross
//! multiplication), which is exact for the weights a service accepts, so
//! the order is a total one and the root is the scan's answer
//! (`tree_matches_the_scan`).

use super::{available, lc, RsLoad, NONE};

/// What decides between two servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
    Lc,
    Wlc,
    Sed,
    Nq,
    Fo,
}

/// One worker's tree for one service (rebuilt with each snapshot, whose
/// weights it copies).
#[derive(Debug, Clone)]
pub(super) struct LeastTree {
    rule: Rule,
    weights: Box<[u32]>,
    /// Node k's winner (a server index, or NONE); node 1 is the root, the
    /// leaves start at `leaves` (a power of two), padding leaves are NONE.
    win: Box<[u16]>,
    leaves: usize,
}

impl LeastTree {
    pub(super) fn new(rule: Rule, weights: &[u32], loads: &[RsLoad]) -> LeastTree {
        debug_assert_eq!(weights.len(), loads.len());
        let leaves = weights.len().next_power_of_two().max(1);
        let mut t = LeastTree {
            rule,
            weights: weights.into(),
            win: vec![NONE; 2 * leaves].into_boxed_slice(),
            leaves,
        };
        for i in 0..weights.len() {
            t.win[leaves + i] = t.leaf(i, loads);
        }
        for k in (1..leaves).rev() {
            t.win[k] = t.play(t.win[2 * k], t.win[2 * k + 1], loads);
        }
        t
    }

    /// The servers this tree was built for.
    pub(super) fn len(&self) -> usize {
        self.weights.len()
    }

    /// The scheduler's choice, or None if no server is available.
    #[inline]
    pub(super) fn winner(&self) -> Option<usize> {
        let w = self.win[1];
        (w != NONE).then_some(usize::from(w))
    }

    /// Replays server `i`'s matches after its load changed.
    #[inline]
    pub(super) fn update(&mut self, i: usize, loads: &[RsLoad]) {
        if i >= self.weights.len() {
            return;
        }
        let mut k = self.leaves + i;
        self.win[k] = self.leaf(i, loads);
        while k > 1 {
            k /= 2;
            let w = self.play(self.win[2 * k], self.win[2 * k + 1], loads);
            // The same winner, whose load did not change: nothing above
            // can change either.
            if self.win[k] == w && usize::from(w) != i {
                break;
            }
            self.win[k] = w;
        }
    }

    fn leaf(&self, i: usize, loads: &[RsLoad]) -> u16 {
        if available(&self.weights, loads, i) {
            u16::try_from(i).unwrap_or(NONE)
        } else {
            NONE
        }
    }

    /// The winner of a match between `left` and `right` (left's index is
    /// the lower): right only if strictly better.
    #[inline]
    fn play(&self, left: u16, right: u16, loads: &[RsLoad]) -> u16 {
        if left == NONE {
            return right;
        }
        if right == NONE {
            return left;
        }
        let (l, r) = (usize::from(left), usize::from(right));
        let (wl, wr) = (self.weights[l], self.weights[r]);
        let right_better = match self.rule {
            Rule::Lc => loads[r].overhead() < loads[l].overhead(),
            Rule::Wlc => lc::lighter(loads[r].overhead(), wr, loads[l].overhead(), wl),
            Rule::Sed => lc::lighter(sed_key(&loads[r]), wr, sed_key(&loads[l]), wl),
            Rule::Nq => match (loads[l].active == 0, loads[r].active == 0) {
                (true, _) => false,
                (false, true) => true,
                (false, false) => lc::lighter(sed_key(&loads[r]), wr, sed_key(&loads[l]), wl),
            },
            Rule::Fo => wr > wl,
        };
        if right_better {
            right
        } else {
            left
        }
    }
}

fn sed_key(l: &RsLoad) -> u64 {
    u64::from(l.active) + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scan(rule: Rule, weights: &[u32], loads: &[RsLoad]) -> Option<usize> {
        match rule {
            Rule::Lc => lc::lc(weights, loads),
            Rule::Wlc => lc::wlc(weights, loads),
            Rule::Sed => lc::sed(weights, loads),
            Rule::Nq => lc::nq(weights, loads),
            Rule::Fo => lc::fo(weights, loads),
        }
    }

    const RULES: [Rule; 5] = [Rule::Lc, Rule::Wlc, Rule::Sed, Rule::Nq, Rule::Fo];

    fn load() -> impl Strategy<Value = RsLoad> {
        // Small counts make ties common; a few large ones reach the
        // overheads' upper range.
        (
            prop_oneof![0u32..4, Just(u32::MAX), 0u32..100_000],
            prop_oneof![0u32..4, Just(u32::MAX), 0u32..100_000],
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(active, inactive, overloaded)| RsLoad {
                active,
                inactive,
                overloaded,
            })
    }

    fn weight() -> impl Strategy<Value = u32> {
        // 65535: the largest weight a service accepts.
        prop_oneof![0u32..4, Just(65_535), 1u32..1000]
    }

    /// A change to one server's load, as the engine makes them.
    #[derive(Debug, Clone)]
    enum Change {
        Open(usize),
        Establish(usize),
        Close(usize),
        Overload(usize, bool),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (0usize..64).prop_map(Change::Open),
            (0usize..64).prop_map(Change::Establish),
            (0usize..64).prop_map(Change::Close),
            (0usize..64, any::<bool>()).prop_map(|(i, o)| Change::Overload(i, o)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// The root is what IPVS's scan chooses, after building and after
        /// every change of counts.
        #[test]
        fn tree_matches_the_scan(
            servers in proptest::collection::vec((weight(), load()), 0..40),
            changes in proptest::collection::vec(change(), 0..200),
        ) {
            let weights: Vec<u32> = servers.iter().map(|s| s.0).collect();
            let loads: Vec<RsLoad> = servers.iter().map(|s| s.1).collect();
            for rule in RULES {
                let mut loads = loads.clone();
                let mut t = LeastTree::new(rule, &weights, &loads);
                prop_assert_eq!(t.winner(), scan(rule, &weights, &loads), "{:?} built", rule);
                for c in &changes {
                    let n = loads.len();
                    if n == 0 {
                        break;
                    }
                    let i = match c {
                        Change::Open(i) => {
                            loads[i % n].inactive = loads[i % n].inactive.saturating_add(1);
                            i % n
                        }
                        Change::Establish(i) => {
                            let l = &mut loads[i % n];
                            if l.inactive > 0 {
                                l.inactive -= 1;
                                l.active = l.active.saturating_add(1);
                            }
                            i % n
                        }
                        Change::Close(i) => {
                            let l = &mut loads[i % n];
                            if l.active > 0 {
                                l.active -= 1;
                            } else {
                                l.inactive = l.inactive.saturating_sub(1);
                            }
                            i % n
                        }
                        Change::Overload(i, o) => {
                            loads[i % n].overloaded = *o;
                            i % n
                        }
                    };
                    t.update(i, &loads);
                    prop_assert_eq!(t.winner(), scan(rule, &weights, &loads), "{:?} after {:?}", rule, c);
                }
            }
        }
    }

    #[test]
    fn ties_keep_the_first_server() {
        let loads = [RsLoad::default(); 5];
        for rule in RULES {
            let t = LeastTree::new(rule, &[0, 2, 2, 2, 1], &loads);
            assert_eq!(t.winner(), Some(1), "{rule:?}");
        }
    }

    #[test]
    fn connections_held_open_spread_by_weight() {
        // wlc's classic result, through the tree: 3:2:1.
        let weights = [3, 2, 1];
        let mut loads = [RsLoad::default(); 3];
        let mut t = LeastTree::new(Rule::Wlc, &weights, &loads);
        for _ in 0..600 {
            let i = t.winner().unwrap();
            loads[i].active += 1;
            t.update(i, &loads);
        }
        assert_eq!(loads.map(|l| l.active), [300, 200, 100]);
    }

    #[test]
    fn no_available_server_no_winner() {
        let loads = [RsLoad {
            overloaded: true,
            ..RsLoad::default()
        }];
        for rule in RULES {
            assert_eq!(LeastTree::new(rule, &[1], &loads).winner(), None);
            assert_eq!(LeastTree::new(rule, &[], &[]).winner(), None);
        }
    }
}
