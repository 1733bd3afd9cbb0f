//! Quorums, in one place: every protocol that counts answers (the metadata
//! register's phases, seals, tail repair, pre-votes, a leader's majority
//! check, a sequencer's commit rule) asks this module.
//!
//! - a **majority** of `n` is `n / 2 + 1`: any two intersect;
//! - the **f-majority** of a loglet with nodeset `n` and replication `r` is
//!   `n - r + 1`: it intersects every write quorum of `r`, so after an
//!   f-majority sealed, no write quorum can form any more and every committed
//!   record is on at least one of them;
//! - a [`Tally`] counts the answers of one round and says whether the quorum
//!   is reached, still possible, or impossible (too many refused or silent),
//!   so a round ends as soon as its outcome is known.

use crate::types::NodeId;
use std::collections::BTreeSet;

/// Majority of `n` voters.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The seal quorum of a nodeset of `n` servers with replication `r`
/// (`n - r + 1`, at least 1).
pub fn f_majority(n: usize, r: usize) -> usize {
    n.saturating_sub(r).saturating_add(1).max(1)
}

/// Where a round stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Enough voters said yes.
    Reached,
    /// Not yet, but the voters still to answer could make it.
    Possible,
    /// Not even if every voter still to answer said yes.
    Impossible,
}

/// The answers of one round among a fixed set of voters. Each voter counts
/// once; answers from outside the set are ignored.
#[derive(Clone, Debug)]
pub struct Tally {
    /// Who may vote (answers from anyone else are ignored).
    voters: BTreeSet<NodeId>,
    /// Yes-votes that decide the round.
    need: usize,
    /// Who said yes.
    yes: BTreeSet<NodeId>,
    /// Who said no or failed to answer.
    no: BTreeSet<NodeId>,
}

impl Tally {
    /// A round among `voters` that needs `need` yes-votes.
    pub fn new(voters: impl IntoIterator<Item = NodeId>, need: usize) -> Self {
        Tally {
            voters: voters.into_iter().collect(),
            need,
            yes: BTreeSet::new(),
            no: BTreeSet::new(),
        }
    }

    /// A majority round among `voters`.
    pub fn majority(voters: impl IntoIterator<Item = NodeId>) -> Self {
        let voters: BTreeSet<NodeId> = voters.into_iter().collect();
        let need = majority(voters.len());
        Tally::new(voters, need)
    }

    /// `from` said yes (the first answer of a voter counts).
    pub fn yes(&mut self, from: NodeId) -> Verdict {
        if self.voters.contains(&from) && !self.no.contains(&from) {
            self.yes.insert(from);
        }
        self.verdict()
    }

    /// `from` said no, or failed to answer.
    pub fn no(&mut self, from: NodeId) -> Verdict {
        if self.voters.contains(&from) && !self.yes.contains(&from) {
            self.no.insert(from);
        }
        self.verdict()
    }

    pub fn verdict(&self) -> Verdict {
        if self.yes.len() >= self.need {
            Verdict::Reached
        } else if self.voters.len() - self.no.len() < self.need {
            Verdict::Impossible
        } else {
            Verdict::Possible
        }
    }

    /// Who said yes.
    pub fn ayes(&self) -> &BTreeSet<NodeId> {
        &self.yes
    }

    /// Voters that have not answered yet.
    pub fn pending(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters
            .iter()
            .copied()
            .filter(|v| !self.yes.contains(v) && !self.no.contains(v))
    }

    pub fn need(&self) -> usize {
        self.need
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u32) -> NodeId {
        NodeId(i)
    }

    #[test]
    fn sizes() {
        assert_eq!([1, 2, 3, 4, 5].map(majority), [1, 2, 2, 3, 3]);
        assert_eq!(f_majority(3, 2), 2);
        assert_eq!(f_majority(3, 3), 1);
        assert_eq!(f_majority(3, 1), 3);
        assert_eq!(f_majority(5, 3), 3);
        assert_eq!(f_majority(2, 5), 1, "never zero");
    }

    #[test]
    fn a_tally_is_decided_as_soon_as_it_can_be() {
        let mut t = Tally::majority([n(1), n(2), n(3)]);
        assert_eq!(t.verdict(), Verdict::Possible);
        assert_eq!(t.no(n(1)), Verdict::Possible);
        assert_eq!(t.yes(n(2)), Verdict::Possible);
        assert_eq!(t.yes(n(2)), Verdict::Possible, "a voter counts once");
        assert_eq!(t.yes(n(3)), Verdict::Reached);
        let mut t = Tally::majority([n(1), n(2), n(3)]);
        t.no(n(1));
        assert_eq!(t.no(n(2)), Verdict::Impossible);
        assert_eq!(t.pending().collect::<Vec<_>>(), vec![n(3)]);
        let mut t = Tally::new([n(1), n(2), n(3)], 2);
        assert_eq!(t.yes(n(9)), Verdict::Possible, "outsiders do not count");
        assert_eq!(t.yes(n(1)), Verdict::Possible);
        assert_eq!(t.no(n(1)), Verdict::Possible, "a yes is not taken back");
        assert_eq!(t.yes(n(3)), Verdict::Reached);
        assert_eq!(t.ayes().len(), 2);
    }
}
