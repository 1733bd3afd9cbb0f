//! What the nemesis does and when, decided without touching a cluster.
//!
//! A run is `--time` seconds of alternating healthy and faulted stretches
//! (it starts healthy, so the workload's first seconds measure the cluster
//! at rest), then a final heal and a post-heal phase. [`fault_windows`]
//! lays out the faulted stretches, [`Chooser`] picks each window's victim
//! from a seeded RNG, and [`flap_toggles`] spaces the cut/heal toggles of
//! the `flap` nemesis. Keeping all of it pure makes a failing seed
//! reproducible and the choices unit-testable.

use crate::harness::nemesis::{Fault, OneWayDirection};
use crate::types::NodeId;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The fault a run injects, one kind per run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NemesisKind {
    None,
    /// Isolate one random node from the other two.
    PartitionRandomNode,
    /// Isolate the node leading the most partitions.
    PartitionLeader,
    /// A majority/minority split that changes every cycle.
    PartitionHalves,
    /// Two nodes cannot see each other; both see the third.
    Bridge,
    /// `kill -9` one node; restart it on the same data at the heal.
    Kill,
    /// `SIGSTOP` one node; `SIGCONT` at the heal.
    Pause,
    /// Cut and heal the same node every 1–2 s during the window.
    Flap,
    /// Wedge one actor on one node; its supervisor must restart it.
    Stall,
    /// `kill -9` and cut the power of the nodes' powerfs mounts (unsynced
    /// writes are lost): one random node on odd cycles, all of them at
    /// once on even cycles; restart them on what survived at the heal.
    PowerLoss,
    /// A lost disk: `kill -9` one node and delete everything in its data
    /// directory; restart it with `--rejoin` at the heal.
    Wipe,
    /// Gray: one random node's links to its peers lose a share of their
    /// packets ([`GrayParams::loss_percent`]), both directions.
    Loss,
    /// Gray: one random node's outbound packets (odd cycles) or inbound
    /// ones (even cycles) are all lost; the other direction works.
    OneWay,
    /// Gray: one random node's syncs take [`GrayParams::slow_disk`] longer.
    SlowDisk,
    /// Gray: one random node's runtime stops for
    /// [`GrayParams::stall`] of every [`GrayParams::stall_every`].
    SlowNode,
}

/// The strength of the gray nemeses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrayParams {
    /// `loss`: percent of packets lost.
    pub loss_percent: u8,
    /// `slow-disk`: extra time every sync takes.
    pub slow_disk: Duration,
    /// `slow-node`: each stall of the runtime.
    pub stall: Duration,
    /// `slow-node`: one stall starts every this long.
    pub stall_every: Duration,
}

impl Default for GrayParams {
    /// The strengths of the targets: 30% loss, 300 ms syncs,
    /// 200 ms of every second stalled.
    fn default() -> Self {
        GrayParams {
            loss_percent: 30,
            slow_disk: Duration::from_millis(300),
            stall: Duration::from_millis(200),
            stall_every: Duration::from_secs(1),
        }
    }
}

pub const ALL_NEMESES: [NemesisKind; 15] = [
    NemesisKind::None,
    NemesisKind::PartitionRandomNode,
    NemesisKind::PartitionLeader,
    NemesisKind::PartitionHalves,
    NemesisKind::Bridge,
    NemesisKind::Kill,
    NemesisKind::Pause,
    NemesisKind::Flap,
    NemesisKind::Stall,
    NemesisKind::PowerLoss,
    NemesisKind::Wipe,
    NemesisKind::Loss,
    NemesisKind::OneWay,
    NemesisKind::SlowDisk,
    NemesisKind::SlowNode,
];

impl NemesisKind {
    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::None => "none",
            NemesisKind::PartitionRandomNode => "partition-random-node",
            NemesisKind::PartitionLeader => "partition-leader",
            NemesisKind::PartitionHalves => "partition-halves",
            NemesisKind::Bridge => "bridge",
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
            NemesisKind::Flap => "flap",
            NemesisKind::Stall => "stall",
            NemesisKind::PowerLoss => "power-loss",
            NemesisKind::Wipe => "wipe",
            NemesisKind::Loss => "loss",
            NemesisKind::OneWay => "one-way",
            NemesisKind::SlowDisk => "slow-disk",
            NemesisKind::SlowNode => "slow-node",
        }
    }

    /// A gray failure: the victim is alive and reachable, only sick.
    pub fn is_gray(self) -> bool {
        matches!(
            self,
            NemesisKind::Loss | NemesisKind::OneWay | NemesisKind::SlowDisk | NemesisKind::SlowNode
        )
    }

    /// Needs node processes the harness started (signals, restarts).
    pub fn needs_processes(self) -> bool {
        matches!(
            self,
            NemesisKind::Kill | NemesisKind::Pause | NemesisKind::PowerLoss | NemesisKind::Wipe
        )
    }

    /// Needs every node's data directory on its own powerfs mount.
    pub fn needs_powerfs(self) -> bool {
        self == NemesisKind::PowerLoss
    }

    /// Cuts links between nodes.
    pub fn is_network(self) -> bool {
        matches!(
            self,
            NemesisKind::PartitionRandomNode
                | NemesisKind::PartitionLeader
                | NemesisKind::PartitionHalves
                | NemesisKind::Bridge
                | NemesisKind::Flap
                | NemesisKind::Loss
                | NemesisKind::OneWay
        )
    }
}

impl fmt::Display for NemesisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NemesisKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ALL_NEMESES
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ALL_NEMESES.iter().map(|k| k.name()).collect();
                format!("unknown nemesis {s:?} (one of: {})", names.join(", "))
            })
    }
}

/// One faulted stretch, as offsets from the start of the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: Duration,
    pub end: Duration,
}

/// Faulted stretches within `time`: healthy for `heal`, faulted for
/// `fault`, repeated; the last window ends by `time`. If not even one full
/// cycle fits, one shortened window ends at `time`, so a short run still
/// sees a fault.
pub fn fault_windows(time: Duration, fault: Duration, heal: Duration) -> Vec<Window> {
    let mut out = Vec::new();
    if fault.is_zero() || time <= heal {
        return out;
    }
    let mut start = heal;
    while start + fault <= time {
        out.push(Window {
            start,
            end: start + fault,
        });
        start += fault + heal;
    }
    if out.is_empty() {
        out.push(Window { start, end: time });
    }
    out
}

/// `(offset, cut?)` toggles for `flap` in `[start, end)`: cut at the start,
/// then heal and cut alternately every 1–2 s. The window's own end heals.
pub fn flap_toggles(rng: &mut impl Rng, start: Duration, end: Duration) -> Vec<(Duration, bool)> {
    let mut out = Vec::new();
    let mut t = start;
    let mut cut = true;
    // At least one toggle per second: bounded by the window length.
    while t < end && out.len() < 10_000 {
        out.push((t, cut));
        cut = !cut;
        t += Duration::from_millis(rng.gen_range(1000..=2000));
    }
    out
}

/// One fault to inject, chosen for one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Injection {
    /// Isolate these groups from each other.
    Partition {
        groups: Vec<Vec<NodeId>>,
    },
    /// Exactly these pairs cannot talk.
    Bridge {
        cut: Vec<[NodeId; 2]>,
    },
    Kill(NodeId),
    /// `kill -9` and delete the node's data (restarted with `--rejoin`).
    Wipe(NodeId),
    Pause(NodeId),
    /// `kill -9` these nodes, then cut their powerfs' power.
    PowerLoss {
        /// The victims, sorted: one node, or the whole cluster.
        nodes: Vec<NodeId>,
        /// Seed of the torn writes (`None`: no torn write); each node's
        /// mount gets its own seed derived from it ([`tear_seed`]).
        tear: Option<u64>,
    },
    Stall {
        node: NodeId,
        actor: String,
        /// Deadline of the registered wait (the watchdog path); `None`
        /// leaves the stuck actor to the supervisor's ping.
        wait_ms: Option<u64>,
    },
    /// `node` loses `percent`% of its packets to and from every peer.
    Loss {
        node: NodeId,
        percent: u8,
    },
    /// `node`'s packets in one direction are all lost.
    OneWay {
        node: NodeId,
        direction: OneWayDirection,
    },
    /// Every sync of `node` takes `ms` longer.
    SlowDisk {
        node: NodeId,
        ms: u64,
    },
    /// `node`'s runtime stops for `stall_ms` of every `every_ms`.
    SlowNode {
        node: NodeId,
        stall_ms: u64,
        every_ms: u64,
    },
}

impl Injection {
    /// The nemesis-log event saying this was done.
    pub fn fault(&self) -> Fault {
        match self {
            Injection::Partition { groups } => Fault::Partition {
                groups: groups.clone(),
                cut: Vec::new(),
            },
            Injection::Bridge { cut } => Fault::Bridge { cut: cut.clone() },
            Injection::Kill(node) => Fault::Kill { node: *node },
            Injection::Wipe(node) => Fault::Wipe { node: *node },
            Injection::Pause(node) => Fault::Pause { node: *node },
            Injection::PowerLoss { nodes, tear } => Fault::PowerLoss {
                nodes: nodes.clone(),
                tear: tear.is_some(),
                waited_ms: None,
                dropped: Vec::new(),
            },
            Injection::Stall { node, actor, .. } => Fault::Stall {
                node: *node,
                actor: actor.clone(),
            },
            Injection::Loss { node, percent } => Fault::Loss {
                node: *node,
                percent: *percent,
            },
            Injection::OneWay { node, direction } => Fault::OneWay {
                node: *node,
                direction: *direction,
            },
            Injection::SlowDisk { node, ms } => Fault::SlowDisk {
                node: *node,
                ms: *ms,
            },
            Injection::SlowNode {
                node,
                stall_ms,
                every_ms,
            } => Fault::SlowNode {
                node: *node,
                stall_ms: *stall_ms,
                every_ms: *every_ms,
            },
        }
    }

    /// Pairs of nodes that cannot talk (network faults only).
    pub fn cut(&self) -> Vec<[NodeId; 2]> {
        match self {
            Injection::Partition { groups } => {
                let mut cut = Vec::new();
                for (i, a) in groups.iter().enumerate() {
                    for b in &groups[i + 1..] {
                        for &x in a {
                            for &y in b {
                                cut.push(if x < y { [x, y] } else { [y, x] });
                            }
                        }
                    }
                }
                cut.sort();
                cut
            }
            Injection::Bridge { cut } => cut.clone(),
            _ => Vec::new(),
        }
    }

    /// A short description for the progress line.
    pub fn describe(&self) -> String {
        let list = |g: &[NodeId]| {
            g.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Injection::Partition { groups } => {
                let gs: Vec<String> = groups.iter().map(|g| format!("[{}]", list(g))).collect();
                format!("partition {}", gs.join(" | "))
            }
            Injection::Bridge { cut } => {
                let cs: Vec<String> = cut.iter().map(|[a, b]| format!("{a}-x-{b}")).collect();
                format!("bridge {}", cs.join(" "))
            }
            Injection::Kill(n) => format!("kill -9 {n}"),
            Injection::Wipe(n) => format!("wipe {n} (kill -9, delete its data)"),
            Injection::Pause(n) => format!("SIGSTOP {n}"),
            Injection::PowerLoss { nodes, tear } => format!(
                "power loss {}{}",
                list(nodes),
                if tear.is_some() { " (torn write)" } else { "" }
            ),
            Injection::Stall { node, actor, .. } => format!("stall {actor} on {node}"),
            Injection::Loss { node, percent } => format!("{percent}% loss on {node}'s links"),
            Injection::OneWay { node, direction } => {
                format!("one-way cut: {node}'s {} packets lost", direction.name())
            }
            Injection::SlowDisk { node, ms } => format!("slow disk on {node}: syncs +{ms} ms"),
            Injection::SlowNode {
                node,
                stall_ms,
                every_ms,
            } => format!("slow node {node}: stalled {stall_ms} ms of every {every_ms} ms"),
        }
    }
}

/// For each node, the peers it must drop packets to and from, so that
/// exactly the pairs in `cut` are separated. Both ends block each other:
/// a one-sided rule would leave a one-way link.
pub fn block_lists(cut: &[[NodeId; 2]]) -> BTreeMap<NodeId, BTreeSet<NodeId>> {
    let mut out: BTreeMap<NodeId, BTreeSet<NodeId>> = BTreeMap::new();
    for &[a, b] in cut {
        if a == b {
            continue;
        }
        out.entry(a).or_default().insert(b);
        out.entry(b).or_default().insert(a);
    }
    out
}

/// The torn-write seed of `node`'s mount at a power loss whose seed is
/// `seed`: distinct per node, so the nodes of a whole-cluster power loss do
/// not all keep the same prefix length.
pub fn tear_seed(seed: u64, node: NodeId) -> u64 {
    seed ^ u64::from(node.0).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Actors a `stall` may wedge (`{p}` is a partition number).
pub const STALL_ACTORS: [&str; 6] = [
    "root/metadata",
    "root/log/log-server",
    "root/log/sequencers",
    "root/log/sealer",
    "root/partitions/processor-{p}",
    "root/partitions/elector-{p}",
];

/// Picks each window's victim; seeded, so a run can be repeated.
pub struct Chooser {
    kind: NemesisKind,
    /// How hard the gray nemeses hit.
    gray: GrayParams,
    rng: StdRng,
    partitions: u32,
    cycle: u64,
    last_minority: Option<Vec<NodeId>>,
}

impl Chooser {
    pub fn new(kind: NemesisKind, rng: StdRng, partitions: u32) -> Self {
        Chooser {
            kind,
            gray: GrayParams::default(),
            rng,
            partitions: partitions.max(1),
            cycle: 0,
            last_minority: None,
        }
    }

    /// The same, with gray nemeses of strength `gray`.
    pub fn with_gray(mut self, gray: GrayParams) -> Self {
        self.gray = gray;
        self
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// The fault for the next window. `leader` is the node leading the
    /// most partitions, if known (for `partition-leader`; a random node
    /// otherwise). `None` for the `none` nemesis or an empty cluster.
    pub fn next(&mut self, nodes: &[NodeId], leader: Option<NodeId>) -> Option<Injection> {
        self.cycle += 1;
        let victim = *nodes.choose(&mut self.rng)?;
        let isolate = |v: NodeId| Injection::Partition {
            groups: vec![nodes.iter().copied().filter(|&n| n != v).collect(), vec![v]],
        };
        Some(match self.kind {
            NemesisKind::None => return None,
            NemesisKind::PartitionRandomNode | NemesisKind::Flap => isolate(victim),
            NemesisKind::PartitionLeader => {
                isolate(leader.filter(|l| nodes.contains(l)).unwrap_or(victim))
            }
            NemesisKind::PartitionHalves => {
                let minority = self.new_minority(nodes);
                let majority = nodes
                    .iter()
                    .copied()
                    .filter(|n| !minority.contains(n))
                    .collect();
                Injection::Partition {
                    groups: vec![majority, minority],
                }
            }
            NemesisKind::Bridge => {
                // `victim` is the bridge; every other pair is cut.
                let others: Vec<NodeId> = nodes.iter().copied().filter(|&n| n != victim).collect();
                let mut cut = Vec::new();
                for (i, &a) in others.iter().enumerate() {
                    for &b in &others[i + 1..] {
                        cut.push([a.min(b), a.max(b)]);
                    }
                }
                if cut.is_empty() {
                    return None;
                }
                Injection::Bridge { cut }
            }
            NemesisKind::Kill => Injection::Kill(victim),
            NemesisKind::Wipe => Injection::Wipe(victim),
            NemesisKind::Loss => Injection::Loss {
                node: victim,
                percent: self.gray.loss_percent.min(100),
            },
            NemesisKind::OneWay => Injection::OneWay {
                node: victim,
                direction: if self.cycle % 2 == 1 {
                    OneWayDirection::Outbound
                } else {
                    OneWayDirection::Inbound
                },
            },
            NemesisKind::SlowDisk => Injection::SlowDisk {
                node: victim,
                ms: self.gray.slow_disk.as_millis() as u64,
            },
            NemesisKind::SlowNode => Injection::SlowNode {
                node: victim,
                stall_ms: self.gray.stall.as_millis() as u64,
                every_ms: self.gray.stall_every.as_millis() as u64,
            },
            NemesisKind::Pause => Injection::Pause(victim),
            NemesisKind::PowerLoss => {
                // Odd cycles one node, even cycles the whole cluster.
                let mut nodes = if self.cycle % 2 == 1 {
                    vec![victim]
                } else {
                    nodes.to_vec()
                };
                nodes.sort();
                let tear = self.rng.gen_bool(0.5).then(|| self.rng.gen());
                Injection::PowerLoss { nodes, tear }
            }
            NemesisKind::Stall => {
                let template = STALL_ACTORS.choose(&mut self.rng).copied().unwrap_or("");
                let p = self.rng.gen_range(0..self.partitions);
                Injection::Stall {
                    node: victim,
                    actor: template.replace("{p}", &p.to_string()),
                    // Alternate the two ways a supervisor notices.
                    wait_ms: (self.cycle % 2 == 1).then_some(2000),
                }
            }
        })
    }

    /// A minority (`n/2` nodes, sorted) different from the last one when
    /// the cluster allows it.
    fn new_minority(&mut self, nodes: &[NodeId]) -> Vec<NodeId> {
        let size = nodes.len() / 2;
        let mut pick = Vec::new();
        for _ in 0..8 {
            let mut shuffled = nodes.to_vec();
            shuffled.shuffle(&mut self.rng);
            pick = shuffled[..size].to_vec();
            pick.sort();
            if self.last_minority.as_ref() != Some(&pick) {
                break;
            }
        }
        if self.last_minority.as_ref() == Some(&pick) && size > 0 {
            // Eight unlucky draws: rotate deterministically instead.
            let mut sorted = nodes.to_vec();
            sorted.sort();
            let first = sorted.iter().position(|n| *n == pick[0]).unwrap_or(0);
            pick = (0..size)
                .map(|i| sorted[(first + 1 + i) % sorted.len()])
                .collect();
            pick.sort();
        }
        self.last_minority = Some(pick.clone());
        pick
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn nodes() -> Vec<NodeId> {
        vec![NodeId(1), NodeId(2), NodeId(3)]
    }

    #[test]
    fn windows_alternate_and_end_within_the_time() {
        let w = fault_windows(s(60), s(5), s(5));
        assert_eq!(w.len(), 6);
        assert_eq!((w[0].start, w[0].end), (s(5), s(10)));
        assert_eq!((w[1].start, w[1].end), (s(15), s(20)));
        assert_eq!(w[5].end, s(60));
        assert!(w.windows(2).all(|p| p[1].start - p[0].end == s(5)));
        // A run too short for a full cycle gets one shortened window.
        let short = fault_windows(s(8), s(5), s(5));
        assert_eq!(
            short,
            vec![Window {
                start: s(5),
                end: s(8)
            }]
        );
        // Nothing fits: no faults at all.
        assert!(fault_windows(s(5), s(5), s(5)).is_empty());
        assert!(fault_windows(s(60), Duration::ZERO, s(5)).is_empty());
    }

    #[test]
    fn flap_toggles_alternate_every_one_to_two_seconds() {
        let mut rng = StdRng::seed_from_u64(7);
        let t = flap_toggles(&mut rng, s(10), s(20));
        assert!(t.len() >= 5 && t.len() <= 10, "{t:?}");
        assert_eq!(t[0], (s(10), true));
        for p in t.windows(2) {
            assert_ne!(p[0].1, p[1].1);
            let gap = p[1].0 - p[0].0;
            assert!(gap >= s(1) && gap <= s(2), "{gap:?}");
        }
        assert!(t.iter().all(|(at, _)| *at < s(20)));
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for k in ALL_NEMESES {
            assert_eq!(k.name().parse::<NemesisKind>(), Ok(k));
        }
        let err = "flood".parse::<NemesisKind>().unwrap_err();
        assert!(err.contains("partition-leader"), "{err}");
    }

    #[test]
    fn isolating_a_node_cuts_it_from_both_others_on_both_ends() {
        let mut c = Chooser::new(
            NemesisKind::PartitionRandomNode,
            StdRng::seed_from_u64(1),
            4,
        );
        let inj = c.next(&nodes(), None).unwrap();
        let Injection::Partition { groups } = &inj else {
            panic!("{inj:?}")
        };
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[1].len(), 1);
        let v = groups[1][0];
        let cut = inj.cut();
        assert_eq!(cut.len(), 2);
        assert!(cut.iter().all(|p| p.contains(&v)));
        let blocks = block_lists(&cut);
        assert_eq!(blocks[&v].len(), 2);
        for other in nodes().into_iter().filter(|&n| n != v) {
            assert_eq!(blocks[&other], BTreeSet::from([v]));
        }
        // The event describes the same split the checkers will replay.
        let timeline = crate::harness::nemesis::FaultTimeline::new(
            &[crate::harness::nemesis::NemesisEvent {
                fault: inj.fault(),
                nemesis: None,
                time_ns: 1,
            }],
            3,
        )
        .unwrap();
        assert!(!timeline.majority_side(2).contains(&v));
        assert_eq!(timeline.majority_side(2).len(), 2);
    }

    #[test]
    fn the_leader_nemesis_isolates_the_leader_it_is_given() {
        let mut c = Chooser::new(NemesisKind::PartitionLeader, StdRng::seed_from_u64(3), 4);
        for _ in 0..10 {
            let inj = c.next(&nodes(), Some(NodeId(2))).unwrap();
            assert_eq!(
                inj,
                Injection::Partition {
                    groups: vec![vec![NodeId(1), NodeId(3)], vec![NodeId(2)]]
                }
            );
        }
        // An unknown leader falls back to a random node, not to nothing.
        assert!(c.next(&nodes(), Some(NodeId(9))).is_some());
    }

    #[test]
    fn halves_change_the_minority_every_cycle() {
        let mut c = Chooser::new(NemesisKind::PartitionHalves, StdRng::seed_from_u64(5), 4);
        let mut last = None;
        let five: Vec<NodeId> = (1..=5).map(NodeId).collect();
        for _ in 0..50 {
            let Some(Injection::Partition { groups }) = c.next(&five, None) else {
                panic!()
            };
            assert_eq!(groups[0].len(), 3);
            assert_eq!(groups[1].len(), 2);
            assert_ne!(last.as_ref(), Some(&groups[1]));
            last = Some(groups[1].clone());
        }
    }

    #[test]
    fn a_bridge_cuts_the_two_non_bridge_nodes_only() {
        let mut c = Chooser::new(NemesisKind::Bridge, StdRng::seed_from_u64(9), 4);
        for _ in 0..20 {
            let Some(Injection::Bridge { cut }) = c.next(&nodes(), None) else {
                panic!()
            };
            assert_eq!(cut.len(), 1);
            let [a, b] = cut[0];
            assert!(a < b);
            let blocks = block_lists(&cut);
            assert_eq!(blocks.len(), 2, "the bridge node blocks nothing");
        }
    }

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let run = |seed| {
            let mut c = Chooser::new(NemesisKind::Stall, StdRng::seed_from_u64(seed), 4);
            (0..20)
                .map(|_| c.next(&nodes(), None).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        for inj in run(42) {
            let Injection::Stall { actor, .. } = inj else {
                panic!()
            };
            assert!(actor.starts_with("root/"), "{actor}");
            assert!(!actor.contains('{'), "{actor}");
        }
    }

    #[test]
    fn power_loss_alternates_one_node_and_the_whole_cluster() {
        let mut c = Chooser::new(NemesisKind::PowerLoss, StdRng::seed_from_u64(21), 4);
        let mut tears = 0;
        for cycle in 1..=40 {
            let Some(Injection::PowerLoss {
                nodes: victims,
                tear,
            }) = c.next(&nodes(), None)
            else {
                panic!("cycle {cycle}")
            };
            if cycle % 2 == 1 {
                assert_eq!(victims.len(), 1, "cycle {cycle}");
                assert!(nodes().contains(&victims[0]));
            } else {
                assert_eq!(victims, nodes(), "cycle {cycle}");
            }
            tears += usize::from(tear.is_some());
        }
        // About half the power losses tear a write.
        assert!((10..=30).contains(&tears), "{tears} of 40");
        let inj = Injection::PowerLoss {
            nodes: nodes(),
            tear: Some(3),
        };
        assert!(inj.cut().is_empty());
        assert_eq!(inj.fault().name(), "power-loss");
        assert_eq!(inj.describe(), "power loss N1,N2,N3 (torn write)");
        // Each node of one power loss tears with its own seed.
        let seeds: BTreeSet<u64> = nodes().iter().map(|&n| tear_seed(3, n)).collect();
        assert_eq!(seeds.len(), 3);
        assert!(NemesisKind::PowerLoss.needs_processes());
        assert!(NemesisKind::PowerLoss.needs_powerfs());
        assert!(!NemesisKind::Kill.needs_powerfs());
    }

    #[test]
    fn none_injects_nothing_and_process_faults_name_one_node() {
        let mut c = Chooser::new(NemesisKind::None, StdRng::seed_from_u64(0), 4);
        assert_eq!(c.next(&nodes(), None), None);
        let mut c = Chooser::new(NemesisKind::Kill, StdRng::seed_from_u64(0), 4);
        let inj = c.next(&nodes(), None).unwrap();
        assert!(matches!(inj, Injection::Kill(n) if nodes().contains(&n)));
        assert!(inj.cut().is_empty());
        assert_eq!(inj.fault().name(), "kill");
    }

    #[test]
    fn gray_nemeses_hit_one_node_with_their_strength_and_one_way_alternates() {
        let gray = GrayParams {
            loss_percent: 40,
            slow_disk: Duration::from_millis(250),
            stall: Duration::from_millis(100),
            stall_every: Duration::from_millis(500),
        };
        let pick = |kind| {
            let mut c = Chooser::new(kind, StdRng::seed_from_u64(7), 4).with_gray(gray);
            (
                c.next(&nodes(), None).unwrap(),
                c.next(&nodes(), None).unwrap(),
            )
        };
        let (loss, _) = pick(NemesisKind::Loss);
        assert!(matches!(loss, Injection::Loss { percent: 40, node } if nodes().contains(&node)));
        let (disk, _) = pick(NemesisKind::SlowDisk);
        assert!(matches!(disk, Injection::SlowDisk { ms: 250, .. }));
        let (stall, _) = pick(NemesisKind::SlowNode);
        assert!(matches!(
            stall,
            Injection::SlowNode {
                stall_ms: 100,
                every_ms: 500,
                ..
            }
        ));
        let (first, second) = pick(NemesisKind::OneWay);
        let direction = |i: &Injection| match i {
            Injection::OneWay { direction, .. } => *direction,
            other => panic!("{other:?}"),
        };
        assert_eq!(direction(&first), OneWayDirection::Outbound);
        assert_eq!(direction(&second), OneWayDirection::Inbound);
        for kind in [
            NemesisKind::Loss,
            NemesisKind::OneWay,
            NemesisKind::SlowDisk,
            NemesisKind::SlowNode,
        ] {
            assert!(kind.is_gray() && !kind.needs_processes(), "{kind}");
            assert_eq!(kind.name().parse::<NemesisKind>(), Ok(kind));
            let (inj, _) = pick(kind);
            // The logged event names the nemesis; none of them cuts a pair.
            assert_eq!(inj.fault().name(), kind.name());
            assert!(inj.cut().is_empty());
        }
    }
}
