//! The nemesis log: which faults were active when.
//!
//! The nemesis writes one [`NemesisEvent`] per line to its own file, on the
//! history's clock. Each network event (`partition`, `bridge`) *replaces* the
//! network's state; process events (`kill`/`restart`, `pause`/`resume`,
//! `stall`/`unstall`) toggle one node; `power-loss` takes down a set of
//! nodes until each one's `restart`; `heal` puts everything back. The
//! harness must have done what an event says before it logs it.
//!
//! [`FaultTimeline`] replays the events into a piecewise-constant
//! [`ClusterState`], so checkers can ask, for any instant, which nodes were
//! faulted and which were on the majority side.

use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One fault injected or undone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisEvent {
    #[serde(flatten)]
    pub fault: Fault,
    /// Which nemesis did it, e.g. `partition-random-node` (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nemesis: Option<String>,
    pub time_ns: u64,
}

/// What changed, tagged by `"event"`.
///
/// ```json
/// {"event":"partition","nemesis":"partition-random-node","groups":[[1,2],[3]],"time_ns":1}
/// {"event":"bridge","cut":[[1,3]],"time_ns":2}
/// {"event":"kill","node":2,"time_ns":3}
/// {"event":"power-loss","nodes":[1,2,3],"tear":true,"waited_ms":4,"dropped":[{"node":1,"bytes_dropped":4096,...}],"time_ns":3}
/// {"event":"stall","node":2,"actor":"sealer","time_ns":4}
/// {"event":"heal","time_ns":5}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Fault {
    /// Nodes talk only within their group; `groups` must list every node
    /// exactly once. `cut` (pairs that cannot talk) may be given instead or
    /// as well.
    Partition {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        groups: Vec<Vec<NodeId>>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        cut: Vec<[NodeId; 2]>,
    },
    /// Exactly these pairs cannot talk (both directions); all others can.
    Bridge {
        cut: Vec<[NodeId; 2]>,
    },
    /// `kill -9`: the node is down until `restart` or `heal`.
    Kill {
        node: NodeId,
    },
    Restart {
        node: NodeId,
    },
    /// A lost disk: `kill -9`, then everything in the node's data directory
    /// deleted; down until its `restart` (with `--rejoin`) or `heal`.
    Wipe {
        node: NodeId,
    },
    /// `kill -9` of each node in `nodes`, then a power loss of its powerfs
    /// mount (unsynced writes dropped): down until its `restart` or `heal`.
    #[serde(rename = "power-loss")]
    PowerLoss {
        /// The nodes that lost power.
        nodes: Vec<NodeId>,
        /// Whether a torn write was asked for.
        tear: bool,
        /// How long the nemesis waited for a victim to hold unsynced
        /// writes before it struck (absent: it did not wait).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        waited_ms: Option<u64>,
        /// What each node's mount dropped, as its control socket reported.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        dropped: Vec<PowerLossDrop>,
    },
    /// `SIGSTOP` until `resume` or `heal`.
    Pause {
        node: NodeId,
    },
    Resume {
        node: NodeId,
    },
    /// One actor of the node is stuck; the node still talks.
    Stall {
        node: NodeId,
        actor: String,
    },
    Unstall {
        node: NodeId,
        actor: String,
    },
    /// Gray: `percent`% of the packets between `node` and its peers are
    /// lost at random, both directions.
    Loss {
        node: NodeId,
        percent: u8,
    },
    /// Gray: every packet `node` sends to its peers (`outbound`), or
    /// receives from them (`inbound`), is lost; the other direction works.
    #[serde(rename = "one-way")]
    OneWay {
        node: NodeId,
        direction: OneWayDirection,
    },
    /// Gray: every sync of `node` takes `ms` longer.
    #[serde(rename = "slow-disk")]
    SlowDisk {
        node: NodeId,
        ms: u64,
    },
    /// Gray: `node`'s runtime thread stops for `stall_ms` of every
    /// `every_ms`.
    #[serde(rename = "slow-node")]
    SlowNode {
        node: NodeId,
        stall_ms: u64,
        every_ms: u64,
    },
    /// Network whole, every node up, resumed, unstalled and well.
    Heal,
}

/// Which of a node's directions a one-way cut breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OneWayDirection {
    /// What the node sends is lost.
    Outbound,
    /// What the node receives is lost.
    Inbound,
}

impl OneWayDirection {
    pub fn name(self) -> &'static str {
        match self {
            OneWayDirection::Outbound => "outbound",
            OneWayDirection::Inbound => "inbound",
        }
    }
}

impl Fault {
    /// The event's name as written in the file.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Partition { .. } => "partition",
            Fault::Bridge { .. } => "bridge",
            Fault::Kill { .. } => "kill",
            Fault::Restart { .. } => "restart",
            Fault::Wipe { .. } => "wipe",
            Fault::PowerLoss { .. } => "power-loss",
            Fault::Pause { .. } => "pause",
            Fault::Resume { .. } => "resume",
            Fault::Stall { .. } => "stall",
            Fault::Unstall { .. } => "unstall",
            Fault::Loss { .. } => "loss",
            Fault::OneWay { .. } => "one-way",
            Fault::SlowDisk { .. } => "slow-disk",
            Fault::SlowNode { .. } => "slow-node",
            Fault::Heal => "heal",
        }
    }
}

/// What one node's powerfs mount dropped at a power loss.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerLossDrop {
    /// The node whose data directory the mount holds.
    pub node: NodeId,
    /// The mount's own report (bytes, files, directories, inodes dropped;
    /// the torn write, if any).
    #[serde(flatten)]
    pub report: crate::powerfs::PowerLossReport,
}

/// A nemesis log that cannot describe a cluster of the given size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NemesisError {
    #[error("event #{index} ({event}): node {node} is not in a cluster of {nodes}")]
    UnknownNode {
        index: usize,
        event: &'static str,
        node: u32,
        nodes: usize,
    },
    #[error("event #{index} (partition): {reason}")]
    BadGroups { index: usize, reason: String },
    #[error("event #{index} ({event}): a node cannot be cut from itself ({node})")]
    SelfCut {
        index: usize,
        event: &'static str,
        node: u32,
    },
    #[error("a cluster needs at least one node")]
    NoNodes,
}

/// What is broken at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterState {
    /// Pairs `(low, high)` that cannot talk.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Down: killed, or killed and powered off (`power-loss`).
    pub killed: BTreeSet<NodeId>,
    pub paused: BTreeSet<NodeId>,
    /// `(node, actor)`.
    pub stalled: BTreeSet<(NodeId, String)>,
    /// Alive but sick (a gray fault: lossy links, a one-way cut, a slow
    /// disk, a stalling runtime). Such a node still counts as up; only a
    /// one-way cut also cuts its pairs (no connection survives one).
    pub degraded: BTreeSet<NodeId>,
}

impl ClusterState {
    pub fn is_healthy(&self) -> bool {
        self.cut.is_empty()
            && self.killed.is_empty()
            && self.paused.is_empty()
            && self.stalled.is_empty()
            && self.degraded.is_empty()
    }

    /// Killed and paused nodes neither send nor answer.
    pub fn is_up(&self, node: NodeId) -> bool {
        !self.killed.contains(&node) && !self.paused.contains(&node)
    }

    pub fn can_talk(&self, a: NodeId, b: NodeId) -> bool {
        a == b || !self.cut.contains(&ordered(a, b))
    }

    /// Nodes that are up and reach a majority of `nodes` directly, counting
    /// themselves. Direct links are what quorum protocols use: nothing is
    /// relayed, so in a bridge both sides of the bridge node count.
    pub fn majority_side(&self, nodes: usize) -> BTreeSet<NodeId> {
        let all = all_nodes(nodes);
        let majority = crate::actors::quorum::majority(nodes);
        all.clone()
            .into_iter()
            .filter(|&v| self.is_up(v))
            .filter(|&v| {
                all.iter()
                    .filter(|&&u| self.is_up(u) && self.can_talk(u, v))
                    .count()
                    >= majority
            })
            .collect()
    }
}

/// A maximal stretch during which something was broken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultWindow {
    pub start_ns: u64,
    /// `None`: never healed within the log.
    pub end_ns: Option<u64>,
    /// Names of the events inside the window, deduplicated, in order.
    pub faults: Vec<String>,
    /// Nemesis names seen inside the window.
    pub nemeses: Vec<String>,
}

/// One stretch of constant state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub from_ns: u64,
    pub state: ClusterState,
    pub majority: BTreeSet<NodeId>,
}

/// The replayed nemesis log.
#[derive(Clone, Debug)]
pub struct FaultTimeline {
    nodes: usize,
    /// Sorted by `from_ns`; the first starts at 0 and is healthy.
    segments: Vec<Segment>,
    windows: Vec<FaultWindow>,
}

impl FaultTimeline {
    /// Replays `events` (sorted by time, stably) for a cluster of `nodes`
    /// nodes numbered `1..=nodes`.
    pub fn new(events: &[NemesisEvent], nodes: usize) -> Result<Self, NemesisError> {
        if nodes == 0 {
            return Err(NemesisError::NoNodes);
        }
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by_key(|&i| events[i].time_ns);

        let healthy = ClusterState::default();
        let mut segments = vec![Segment {
            from_ns: 0,
            majority: healthy.majority_side(nodes),
            state: healthy,
        }];
        let mut windows: Vec<FaultWindow> = Vec::new();
        let mut state = ClusterState::default();
        for &i in &order {
            let event = &events[i];
            apply(&mut state, &event.fault, i + 1, nodes)?;
            let last = segments.last_mut().expect("starts with one segment");
            if last.state == state {
                // A no-op (resume of a running node, heal when healthy).
            } else if last.from_ns == event.time_ns {
                last.state = state.clone();
                last.majority = state.majority_side(nodes);
            } else {
                segments.push(Segment {
                    from_ns: event.time_ns,
                    majority: state.majority_side(nodes),
                    state: state.clone(),
                });
            }
            track_window(&mut windows, &state, event);
        }
        // Same-instant merges can leave equal neighbours; fold them, and
        // forget windows that opened and closed at one instant.
        segments.dedup_by(|later, earlier| later.state == earlier.state);
        windows.retain(|w| w.end_ns != Some(w.start_ns));
        Ok(FaultTimeline {
            nodes,
            segments,
            windows,
        })
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Node ids `1..=nodes`.
    pub fn all_nodes(&self) -> BTreeSet<NodeId> {
        all_nodes(self.nodes)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn windows(&self) -> &[FaultWindow] {
        &self.windows
    }

    fn segment_at(&self, t_ns: u64) -> &Segment {
        let i = self.segments.partition_point(|s| s.from_ns <= t_ns);
        &self.segments[i.saturating_sub(1)]
    }

    /// The state at `t_ns` (events at exactly `t_ns` have happened).
    pub fn state_at(&self, t_ns: u64) -> &ClusterState {
        &self.segment_at(t_ns).state
    }

    /// Nodes on the majority side at `t_ns`.
    pub fn majority_side(&self, t_ns: u64) -> &BTreeSet<NodeId> {
        &self.segment_at(t_ns).majority
    }

    /// When the cluster last became whole again, if it ended whole after
    /// some fault. `None` if there was no fault or it never healed.
    pub fn final_heal(&self) -> Option<u64> {
        self.windows.last().and_then(|w| w.end_ns)
    }

    /// Whether faults were still active when the log ended.
    pub fn ends_faulted(&self) -> bool {
        self.windows.last().is_some_and(|w| w.end_ns.is_none())
    }
}

fn all_nodes(nodes: usize) -> BTreeSet<NodeId> {
    (1..=nodes as u32).map(NodeId).collect()
}

fn ordered(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

fn check_node(
    node: NodeId,
    index: usize,
    event: &'static str,
    nodes: usize,
) -> Result<(), NemesisError> {
    if node.0 == 0 || node.0 as usize > nodes {
        return Err(NemesisError::UnknownNode {
            index,
            event,
            node: node.0,
            nodes,
        });
    }
    Ok(())
}

fn cut_pairs(
    pairs: &[[NodeId; 2]],
    index: usize,
    event: &'static str,
    nodes: usize,
) -> Result<BTreeSet<(NodeId, NodeId)>, NemesisError> {
    let mut cut = BTreeSet::new();
    for &[a, b] in pairs {
        check_node(a, index, event, nodes)?;
        check_node(b, index, event, nodes)?;
        if a == b {
            return Err(NemesisError::SelfCut {
                index,
                event,
                node: a.0,
            });
        }
        cut.insert(ordered(a, b));
    }
    Ok(cut)
}

fn group_cut(
    groups: &[Vec<NodeId>],
    index: usize,
    nodes: usize,
) -> Result<BTreeSet<(NodeId, NodeId)>, NemesisError> {
    let mut group_of = vec![usize::MAX; nodes + 1];
    for (g, group) in groups.iter().enumerate() {
        for &n in group {
            check_node(n, index, "partition", nodes)?;
            if group_of[n.0 as usize] != usize::MAX {
                return Err(NemesisError::BadGroups {
                    index,
                    reason: format!("{n} is in two groups"),
                });
            }
            group_of[n.0 as usize] = g;
        }
    }
    if let Some(n) = (1..=nodes).find(|&n| group_of[n] == usize::MAX) {
        return Err(NemesisError::BadGroups {
            index,
            reason: format!("N{n} is in no group; list every node"),
        });
    }
    let mut cut = BTreeSet::new();
    for a in 1..=nodes {
        for b in a + 1..=nodes {
            if group_of[a] != group_of[b] {
                cut.insert((NodeId(a as u32), NodeId(b as u32)));
            }
        }
    }
    Ok(cut)
}

fn apply(
    state: &mut ClusterState,
    fault: &Fault,
    index: usize,
    nodes: usize,
) -> Result<(), NemesisError> {
    let name = fault.name();
    match fault {
        Fault::Partition { groups, cut } => {
            if groups.is_empty() && cut.is_empty() {
                return Err(NemesisError::BadGroups {
                    index,
                    reason: "a partition needs `groups` or `cut`".into(),
                });
            }
            let mut all = cut_pairs(cut, index, name, nodes)?;
            if !groups.is_empty() {
                all.extend(group_cut(groups, index, nodes)?);
            }
            state.cut = all;
        }
        Fault::Bridge { cut } => state.cut = cut_pairs(cut, index, name, nodes)?,
        Fault::Kill { node } | Fault::Wipe { node } => {
            check_node(*node, index, name, nodes)?;
            kill(state, *node);
        }
        Fault::PowerLoss {
            nodes: victims,
            dropped,
            ..
        } => {
            for node in victims.iter().chain(dropped.iter().map(|d| &d.node)) {
                check_node(*node, index, name, nodes)?;
            }
            for node in victims {
                kill(state, *node);
            }
        }
        Fault::Restart { node } => {
            check_node(*node, index, name, nodes)?;
            state.killed.remove(node);
            state.paused.remove(node);
            state.stalled.retain(|(n, _)| n != node);
            state.degraded.remove(node);
        }
        Fault::Pause { node } => {
            check_node(*node, index, name, nodes)?;
            if !state.killed.contains(node) {
                state.paused.insert(*node);
            }
        }
        Fault::Resume { node } => {
            check_node(*node, index, name, nodes)?;
            state.paused.remove(node);
        }
        Fault::Stall { node, actor } => {
            check_node(*node, index, name, nodes)?;
            state.stalled.insert((*node, actor.clone()));
        }
        Fault::Unstall { node, actor } => {
            check_node(*node, index, name, nodes)?;
            state.stalled.remove(&(*node, actor.clone()));
        }
        Fault::Loss { node, .. } | Fault::SlowDisk { node, .. } | Fault::SlowNode { node, .. } => {
            check_node(*node, index, name, nodes)?;
            state.degraded.insert(*node);
        }
        Fault::OneWay { node, .. } => {
            check_node(*node, index, name, nodes)?;
            state.degraded.insert(*node);
            for other in all_nodes(nodes) {
                if other != *node {
                    state.cut.insert(ordered(*node, other));
                }
            }
        }
        Fault::Heal => *state = ClusterState::default(),
    }
    Ok(())
}

/// `node` is down; a killed process is no longer stopped or stalled.
fn kill(state: &mut ClusterState, node: NodeId) {
    state.killed.insert(node);
    state.paused.remove(&node);
    state.stalled.retain(|(n, _)| *n != node);
    state.degraded.remove(&node);
}

/// Opens, extends or closes the current window after `event` was applied.
fn track_window(windows: &mut Vec<FaultWindow>, state: &ClusterState, event: &NemesisEvent) {
    let open = windows.last_mut().filter(|w| w.end_ns.is_none());
    let window = match (open, state.is_healthy()) {
        (None, true) => return,
        (Some(w), _) => w,
        (None, false) => {
            windows.push(FaultWindow {
                start_ns: event.time_ns,
                end_ns: None,
                faults: Vec::new(),
                nemeses: Vec::new(),
            });
            windows.last_mut().expect("just pushed")
        }
    };
    let name = event.fault.name().to_string();
    if !window.faults.contains(&name) {
        window.faults.push(name);
    }
    if let Some(n) = &event.nemesis {
        if !window.nemeses.contains(n) {
            window.nemeses.push(n.clone());
        }
    }
    if state.is_healthy() {
        window.end_ns = Some(event.time_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::history::read_jsonl;

    fn n(ids: &[u32]) -> BTreeSet<NodeId> {
        ids.iter().map(|&i| NodeId(i)).collect()
    }

    fn ev(fault: Fault, t: u64) -> NemesisEvent {
        NemesisEvent {
            fault,
            nemesis: None,
            time_ns: t,
        }
    }

    #[test]
    fn parses_every_event_kind() {
        let text = r#"{"event":"partition","nemesis":"partition-random-node","groups":[[1,2],[3]],"time_ns":10}
{"event":"partition","cut":[[2,1],[2,3]],"time_ns":15}
{"event":"bridge","cut":[[1,3]],"time_ns":20}
{"event":"kill","node":2,"time_ns":30}
{"event":"restart","node":2,"time_ns":40}
{"event":"pause","node":2,"time_ns":50}
{"event":"resume","node":2,"time_ns":60}
{"event":"stall","node":2,"actor":"sealer","time_ns":70}
{"event":"unstall","node":2,"actor":"sealer","time_ns":75}
{"event":"heal","time_ns":80}
{"event":"power-loss","nodes":[1,3],"tear":true,"waited_ms":12,"dropped":[{"node":1,"bytes_dropped":4096,"files_reverted":2,"dirs_reverted":1,"inodes_dropped":0,"handles_invalidated":3,"torn":{"ino":7,"offset":100,"write_len":50,"kept":20}}],"time_ns":90}
"#;
        let events: Vec<NemesisEvent> = read_jsonl(text.as_bytes()).unwrap();
        assert_eq!(events.len(), 11);
        let Fault::PowerLoss {
            nodes,
            tear,
            waited_ms,
            dropped,
        } = &events[10].fault
        else {
            panic!("{:?}", events[10])
        };
        assert_eq!(nodes, &[NodeId(1), NodeId(3)]);
        assert!(tear);
        assert_eq!(*waited_ms, Some(12));
        assert_eq!(dropped[0].node, NodeId(1));
        assert_eq!(dropped[0].report.bytes_dropped, 4096);
        assert_eq!(dropped[0].report.torn.as_ref().map(|t| t.kept), Some(20));
        assert_eq!(events[0].nemesis.as_deref(), Some("partition-random-node"));
        assert_eq!(
            events[0].fault,
            Fault::Partition {
                groups: vec![vec![NodeId(1), NodeId(2)], vec![NodeId(3)]],
                cut: vec![]
            }
        );
        assert_eq!(events[9].fault, Fault::Heal);
        assert_eq!(events[9].time_ns, 80);
        // Round trip through the writer.
        let mut buf = Vec::new();
        crate::harness::history::write_jsonl(&mut buf, &events).unwrap();
        let back: Vec<NemesisEvent> = read_jsonl(buf.as_slice()).unwrap();
        assert_eq!(back, events);
        let written = String::from_utf8(buf).unwrap();
        assert!(written.starts_with(r#"{"event":"partition""#));
        assert!(
            written.contains(r#"{"event":"power-loss","nodes":[1,3],"tear":true,"waited_ms":12,"#),
            "{written}"
        );
        // An unknown event is an error naming its line.
        let bad = read_jsonl::<NemesisEvent, _>(&b"{\"event\":\"flood\",\"time_ns\":1}\n"[..]);
        assert!(bad.unwrap_err().to_string().starts_with("line 1:"));
    }

    #[test]
    fn isolating_one_node_leaves_the_other_two_on_the_majority_side() {
        let events = [
            ev(
                Fault::Partition {
                    groups: vec![vec![NodeId(1), NodeId(2)], vec![NodeId(3)]],
                    cut: vec![],
                },
                100,
            ),
            ev(Fault::Heal, 200),
        ];
        let t = FaultTimeline::new(&events, 3).unwrap();
        assert_eq!(t.majority_side(99), &n(&[1, 2, 3]));
        assert_eq!(t.majority_side(100), &n(&[1, 2]));
        assert_eq!(t.majority_side(199), &n(&[1, 2]));
        assert_eq!(t.majority_side(200), &n(&[1, 2, 3]));
        assert!(!t.state_at(150).can_talk(NodeId(1), NodeId(3)));
        assert!(t.state_at(150).can_talk(NodeId(1), NodeId(2)));
        assert_eq!(t.windows().len(), 1);
        assert_eq!(t.windows()[0].start_ns, 100);
        assert_eq!(t.windows()[0].end_ns, Some(200));
        assert_eq!(t.windows()[0].faults, vec!["partition", "heal"]);
        assert_eq!(t.final_heal(), Some(200));
        assert!(!t.ends_faulted());
    }

    #[test]
    fn a_bridge_keeps_everyone_on_the_majority_side_in_three_nodes() {
        // 1 and 3 cannot talk, 2 sees both: each of 1 and 3 still reaches
        // two of three nodes (itself and 2).
        let cut = vec![[NodeId(1), NodeId(3)]];
        let t = FaultTimeline::new(&[ev(Fault::Bridge { cut }, 5)], 3).unwrap();
        assert_eq!(t.majority_side(6), &n(&[1, 2, 3]));
        assert!(t.ends_faulted());
        assert_eq!(t.final_heal(), None);
        // In five nodes, a node cut from three others is on the minority side.
        let cut = vec![
            [NodeId(1), NodeId(3)],
            [NodeId(1), NodeId(4)],
            [NodeId(1), NodeId(5)],
        ];
        let t = FaultTimeline::new(&[ev(Fault::Bridge { cut }, 5)], 5).unwrap();
        assert_eq!(t.majority_side(6), &n(&[2, 3, 4, 5]));
    }

    #[test]
    fn killed_and_paused_nodes_are_off_and_shrink_everyone_s_majority() {
        let events = [
            ev(Fault::Kill { node: NodeId(1) }, 10),
            ev(Fault::Pause { node: NodeId(2) }, 20),
            ev(Fault::Resume { node: NodeId(2) }, 30),
            ev(Fault::Restart { node: NodeId(1) }, 40),
        ];
        let t = FaultTimeline::new(&events, 3).unwrap();
        assert_eq!(t.majority_side(15), &n(&[2, 3]));
        // Two of three down: nobody reaches a majority.
        assert_eq!(t.majority_side(25), &n(&[]));
        assert_eq!(t.majority_side(35), &n(&[2, 3]));
        assert_eq!(t.majority_side(45), &n(&[1, 2, 3]));
        // Restart and resume end the window without a heal event.
        assert_eq!(t.windows().len(), 1);
        assert_eq!(t.windows()[0].end_ns, Some(40));
        assert_eq!(t.final_heal(), Some(40));
    }

    #[test]
    fn gray_faults_keep_the_sick_node_up_but_a_one_way_cut_takes_it_off_the_majority() {
        let text = r#"{"event":"loss","node":2,"percent":30,"time_ns":10}
{"event":"heal","time_ns":20}
{"event":"one-way","node":3,"direction":"outbound","time_ns":30}
{"event":"heal","time_ns":40}
{"event":"slow-disk","node":1,"ms":300,"time_ns":50}
{"event":"heal","time_ns":60}
{"event":"slow-node","node":1,"stall_ms":200,"every_ms":1000,"time_ns":70}
{"event":"heal","time_ns":80}
"#;
        let events: Vec<NemesisEvent> = read_jsonl(text.as_bytes()).unwrap();
        assert_eq!(
            events[2].fault,
            Fault::OneWay {
                node: NodeId(3),
                direction: OneWayDirection::Outbound
            }
        );
        let t = FaultTimeline::new(&events, 3).unwrap();
        // Lossy, slow or stalling: still up, still on the majority side.
        for at in [15, 55, 75] {
            assert_eq!(t.majority_side(at), &n(&[1, 2, 3]), "at {at}");
            assert!(!t.state_at(at).is_healthy(), "at {at}");
        }
        // No connection survives a one-way cut.
        assert_eq!(t.majority_side(35), &n(&[1, 2]));
        let names: Vec<_> = t.windows().iter().map(|w| w.faults[0].clone()).collect();
        assert_eq!(names, ["loss", "one-way", "slow-disk", "slow-node"]);
        assert_eq!(t.final_heal(), Some(80));
    }

    #[test]
    fn power_loss_takes_nodes_down_until_each_restarts() {
        let all = vec![NodeId(1), NodeId(2), NodeId(3)];
        let loss = |nodes: Vec<NodeId>| Fault::PowerLoss {
            nodes,
            tear: false,
            waited_ms: None,
            dropped: vec![],
        };
        let events = [
            ev(loss(vec![NodeId(2)]), 10),
            ev(Fault::Restart { node: NodeId(2) }, 20),
            ev(Fault::Heal, 20),
            ev(loss(all.clone()), 30),
            ev(Fault::Restart { node: NodeId(1) }, 40),
            ev(Fault::Restart { node: NodeId(2) }, 41),
            ev(Fault::Restart { node: NodeId(3) }, 42),
            ev(Fault::Heal, 42),
        ];
        let t = FaultTimeline::new(&events, 3).unwrap();
        assert_eq!(t.majority_side(15), &n(&[1, 3]));
        assert!(!t.state_at(15).is_up(NodeId(2)));
        assert_eq!(t.majority_side(25), &n(&[1, 2, 3]));
        // The whole cluster down: no majority side, nobody expected to serve.
        assert_eq!(t.majority_side(35), &n(&[]));
        assert!(all.iter().all(|&v| !t.state_at(35).is_up(v)));
        // Restarts one by one: a majority again once two are up.
        assert_eq!(t.majority_side(40), &n(&[]));
        assert_eq!(t.majority_side(41), &n(&[1, 2]));
        assert_eq!(t.majority_side(42), &n(&[1, 2, 3]));
        let w = t.windows();
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].start_ns, w[0].end_ns), (10, Some(20)));
        assert_eq!((w[1].start_ns, w[1].end_ns), (30, Some(42)));
        assert_eq!(w[1].faults, vec!["power-loss", "restart"]);
        assert_eq!(t.final_heal(), Some(42));
        // A power loss of a node outside the cluster is refused.
        let bad = [ev(loss(vec![NodeId(4)]), 1)];
        assert!(matches!(
            FaultTimeline::new(&bad, 3),
            Err(NemesisError::UnknownNode { node: 4, .. })
        ));
    }

    #[test]
    fn a_new_partition_replaces_the_old_one_and_a_stall_is_a_fault_window() {
        let p = |groups: Vec<Vec<u32>>| Fault::Partition {
            groups: groups
                .into_iter()
                .map(|g| g.into_iter().map(NodeId).collect())
                .collect(),
            cut: vec![],
        };
        let events = [
            ev(p(vec![vec![1, 2], vec![3]]), 10),
            ev(p(vec![vec![1], vec![2, 3]]), 20),
            ev(Fault::Heal, 30),
            ev(
                Fault::Stall {
                    node: NodeId(2),
                    actor: "sealer".into(),
                },
                40,
            ),
            ev(Fault::Heal, 50),
        ];
        let t = FaultTimeline::new(&events, 3).unwrap();
        assert_eq!(t.majority_side(25), &n(&[2, 3]));
        assert!(t.state_at(25).can_talk(NodeId(1), NodeId(1)));
        assert!(!t.state_at(25).can_talk(NodeId(1), NodeId(2)));
        // Stalled nodes still count as reachable.
        assert_eq!(t.majority_side(45), &n(&[1, 2, 3]));
        let w = t.windows();
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].start_ns, w[0].end_ns), (10, Some(30)));
        assert_eq!((w[1].start_ns, w[1].end_ns), (40, Some(50)));
        assert_eq!(w[1].faults, vec!["stall", "heal"]);
    }

    #[test]
    fn events_out_of_order_are_replayed_in_time_order() {
        let events = [ev(Fault::Heal, 30), ev(Fault::Kill { node: NodeId(3) }, 10)];
        let t = FaultTimeline::new(&events, 3).unwrap();
        assert_eq!(t.majority_side(20), &n(&[1, 2]));
        assert_eq!(t.majority_side(30), &n(&[1, 2, 3]));
    }

    #[test]
    fn rejects_events_that_do_not_fit_the_cluster() {
        let kill4 = [ev(Fault::Kill { node: NodeId(4) }, 1)];
        assert!(matches!(
            FaultTimeline::new(&kill4, 3),
            Err(NemesisError::UnknownNode { node: 4, .. })
        ));
        let missing = [ev(
            Fault::Partition {
                groups: vec![vec![NodeId(1)], vec![NodeId(2)]],
                cut: vec![],
            },
            1,
        )];
        assert!(matches!(
            FaultTimeline::new(&missing, 3),
            Err(NemesisError::BadGroups { .. })
        ));
        let twice = [ev(
            Fault::Partition {
                groups: vec![vec![NodeId(1), NodeId(2)], vec![NodeId(2), NodeId(3)]],
                cut: vec![],
            },
            1,
        )];
        assert!(FaultTimeline::new(&twice, 3).is_err());
        let empty = [ev(
            Fault::Partition {
                groups: vec![],
                cut: vec![],
            },
            1,
        )];
        assert!(matches!(
            FaultTimeline::new(&empty, 3),
            Err(NemesisError::BadGroups { .. })
        ));
        let selfcut = [ev(
            Fault::Bridge {
                cut: vec![[NodeId(2), NodeId(2)]],
            },
            1,
        )];
        assert!(matches!(
            FaultTimeline::new(&selfcut, 3),
            Err(NemesisError::SelfCut { .. })
        ));
        assert_eq!(
            FaultTimeline::new(&[], 0).unwrap_err(),
            NemesisError::NoNodes
        );
    }
}
