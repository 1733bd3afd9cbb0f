//! The fence of a rejoin, without I/O: which loglets of a chain a node
//! whose disk was replaced must treat as lost, and what it writes for them.
//!
//! A node may have held state for a loglet in two roles: as a member of its
//! nodeset (records, a seal) and as its sequencer (the start mark that keeps
//! a restarted sequencer from handing out offsets a second time). A
//! sequencer need not be in its own nodeset, so both roles are looked at.

use crate::log::Chain;
use crate::storage::LogletState;
use crate::types::{LogletId, NodeId};

/// What the fence does to one loglet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceMark {
    /// The loglet.
    pub loglet: LogletId,
    /// This node is in its nodeset: its log-server marks it lost and sealed
    /// (unless it already holds state for it: a fence repeated after a
    /// crash, or a loglet re-replicated since). Its sequencer's start mark
    /// is written either way.
    pub lost: bool,
}

/// The loglets of `chain` that `me` may have held state for before a wipe.
pub fn fence_marks(me: NodeId, chain: &Chain) -> Vec<FenceMark> {
    chain
        .segments
        .iter()
        .filter(|s| s.nodeset.contains(&me) || s.sequencer == me)
        .map(|s| FenceMark {
            loglet: s.loglet,
            lost: s.nodeset.contains(&me),
        })
        .collect()
}

/// The state a fence writes for a lost loglet the store knows nothing of:
/// sealed (no normal store is taken, so it never reads as empty and open)
/// and lost (no seal counts it; its tails are suspect).
pub fn fenced_state() -> LogletState {
    LogletState {
        sealed: true,
        lost: true,
        ..LogletState::default()
    }
}

/// Whether the fence writes [`fenced_state`] over `current` (only over a
/// loglet the store holds nothing for).
pub fn needs_fencing(current: &LogletState) -> bool {
    *current == LogletState::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LogId;

    #[test]
    fn nodeset_members_are_lost_and_a_sequencer_outside_it_only_marked() {
        let (n1, n2, n3) = (NodeId(1), NodeId(2), NodeId(3));
        let chain = Chain::initial(LogId(0), n3, vec![n1, n2], 2);
        assert_eq!(
            fence_marks(n1, &chain),
            vec![FenceMark {
                loglet: chain.segments[0].loglet,
                lost: true
            }]
        );
        assert_eq!(
            fence_marks(n3, &chain),
            vec![FenceMark {
                loglet: chain.segments[0].loglet,
                lost: false
            }],
            "the sequencer outside the nodeset keeps its start mark"
        );
        assert!(fence_marks(NodeId(4), &chain).is_empty());
    }

    #[test]
    fn only_an_unknown_loglet_is_fenced() {
        assert!(needs_fencing(&LogletState::default()));
        assert!(!needs_fencing(&fenced_state()));
        let repaired = LogletState {
            sealed: true,
            ..LogletState::default()
        };
        assert!(!needs_fencing(&repaired), "state held since is kept");
    }
}
