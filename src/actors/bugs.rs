//! Known bugs, reintroduced on purpose: the simulator's proof that it finds
//! what it is meant to find (`src/sim/`, tests under `tests/sim_*.rs`). Each
//! core that can carry one reads its config's `BugSet`; the default is empty,
//! and nothing but the simulator's tests ever sets one.

/// One deliberately wrong rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bug {
    /// The sealer counts `n - r` sealed servers as enough (one short of the
    /// f-majority), so a write quorum can still form after the seal.
    SealWrongQuorum,
    /// A log-server accepts a normal store after it was sealed.
    StoreAfterSeal,
    /// The partition processor applies requests of an older epoch than the
    /// last announced one (no fencing).
    ApplyStaleEpoch,
    /// Idempotency results are purged by the newest timestamp of the batch
    /// being applied, so the result depends on how records were batched.
    PurgeByBatch,
    /// The metadata proposer reports a conflict after a partial accept
    /// instead of an unknown outcome.
    ConflictAfterPartialAccept,
    /// The dedup lookup reads only the store, missing results written
    /// earlier in the same batch: a repeat applies again if it was batched
    /// with its first application.
    DedupMissesOwnBatch,
    /// Tail repair re-replicates only up to the first offset missing on the
    /// first responder, not the union of the sealed responders.
    RepairStopsAtFirstGap,
    /// A node whose disk was replaced starts blank instead of rejoining:
    /// its acceptor votes with every promise forgotten, and its log-server
    /// takes its loglets for empty and open.
    RejoinBlank,
}

/// A set of [`Bug`]s (empty by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BugSet(u32);

impl BugSet {
    pub const NONE: BugSet = BugSet(0);

    pub fn with(self, bug: Bug) -> BugSet {
        BugSet(self.0 | 1 << bug as u32)
    }

    pub fn has(self, bug: Bug) -> bool {
        self.0 & (1 << bug as u32) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_hold_what_was_put_in() {
        let s = BugSet::NONE.with(Bug::StoreAfterSeal);
        assert!(s.has(Bug::StoreAfterSeal) && !s.has(Bug::SealWrongQuorum));
        assert!(BugSet::default().is_empty() && !s.is_empty());
    }
}
