//! The fault schedule of a run, drawn from its seed: windows of one fault
//! each (a node isolated, a one-way cut, a crash and restart, a lossy and
//! duplicating link, and, if asked, a lost disk or the gray faults of a
//! slow disk and a stalling node), each undone at its window's end, then a
//! final heal (every link whole, every node up, every disk fast) and a
//! quiet period.

use crate::types::NodeId;
use rand::rngs::StdRng;
use rand::Rng;
use std::time::Duration;

/// One change to the world.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Cut `node` off from every other node, both ways.
    Isolate(NodeId),
    /// Cut `from → to` only.
    CutOneWay { from: NodeId, to: NodeId },
    /// Cut the cluster in two: `minority` on one side.
    Split { minority: Vec<NodeId> },
    /// Power loss of `node` (unsynced writes lost, a prefix kept).
    Crash(NodeId),
    /// `node` starts again from its disk.
    Restart(NodeId),
    /// `node` loses power and its disk: it comes back (at `Rejoin`, or at
    /// the final heal) blank, as `keel node --rejoin`.
    Wipe(NodeId),
    /// A wiped `node` starts again with `--rejoin` (a plain `Restart` if
    /// it was not wiped).
    Rejoin(NodeId),
    /// `from → to` drops and duplicates messages.
    Lossy {
        from: NodeId,
        to: NodeId,
        drop: f64,
        duplicate: f64,
    },
    /// `node` hears nothing (every link into it cut) but is heard.
    Deafen(NodeId),
    /// Nothing `node` sends arrives (every link out of it cut), but it
    /// hears everyone.
    Strand(NodeId),
    /// Every sync of `node` takes `delay` longer (zero: a healthy disk
    /// again). Links and the node's other work are unaffected.
    SlowDisk { node: NodeId, delay: Duration },
    /// `node` handles nothing for `length` (a stalled runtime: messages,
    /// timers and sync completions wait and are handled late, in order).
    Stall { node: NodeId, length: Duration },
    /// `node` handles every event `delay` late, in order (an overloaded
    /// host: its links and its peers are fine, its work waits; zero: on
    /// time again).
    Overload { node: NodeId, delay: Duration },
    /// Every link whole again (nodes stay as they are).
    HealLinks,
    /// Every link whole, every node up, every disk fast: the last fault
    /// is over.
    HealAll,
}

/// When each fault happens.
#[derive(Clone, Debug, Default)]
pub struct Schedule {
    /// `(time since the start, fault)`, in time order.
    pub events: Vec<(Duration, Fault)>,
    /// When the final heal happens.
    pub healed_at: Duration,
}

/// How faults are drawn.
#[derive(Clone, Debug)]
pub struct FaultConfig {
    /// No fault before this (the cluster starts up).
    pub start: Duration,
    /// The final heal.
    pub heal: Duration,
    /// Longest fault window.
    pub max_window: Duration,
    /// Whether half the crashes lose the disk too (`Wipe`, then `Rejoin`).
    /// Off by default, so the seeds of the other runs keep their schedules.
    pub wipes: bool,
    /// Whether the gray faults are drawn too: a slow disk, a node that
    /// stalls again and again. Off by default, as `wipes`.
    pub gray: bool,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            start: Duration::from_secs(3),
            heal: Duration::from_secs(11),
            max_window: Duration::from_secs(5),
            wipes: false,
            gray: false,
        }
    }
}

impl Schedule {
    /// A schedule over `nodes`, drawn from `rng`.
    pub fn draw(config: &FaultConfig, nodes: &[NodeId], rng: &mut StdRng) -> Schedule {
        let mut events = Vec::new();
        let mut t = config.start + Duration::from_millis(rng.gen_range(0..1000));
        let max_ms = config.max_window.as_millis().max(300) as u64;
        while t < config.heal {
            let len = Duration::from_millis(rng.gen_range(300..=max_ms));
            let end = (t + len).min(config.heal);
            let a = nodes[rng.gen_range(0..nodes.len())];
            let mut b = nodes[rng.gen_range(0..nodes.len())];
            if b == a {
                b = nodes[(nodes.iter().position(|n| *n == a).unwrap_or(0) + 1) % nodes.len()];
            }
            let kinds = if config.gray { 10 } else { 8 };
            match rng.gen_range(0..kinds) {
                0 => {
                    events.push((t, Fault::Isolate(a)));
                    events.push((end, Fault::HealLinks));
                }
                1 => {
                    events.push((t, Fault::CutOneWay { from: a, to: b }));
                    if rng.gen_bool(0.5) {
                        events.push((t, Fault::CutOneWay { from: b, to: a }));
                    }
                    events.push((end, Fault::HealLinks));
                }
                2..=4 if config.wipes && rng.gen_bool(0.5) => {
                    events.push((t, Fault::Wipe(a)));
                    events.push((end, Fault::Rejoin(a)));
                }
                2..=4 => {
                    events.push((t, Fault::Crash(a)));
                    events.push((end, Fault::Restart(a)));
                }
                5 => {
                    events.push((
                        t,
                        Fault::Lossy {
                            from: a,
                            to: b,
                            drop: rng.gen_range(0.1..0.6),
                            duplicate: rng.gen_range(0.0..0.4),
                        },
                    ));
                    events.push((
                        t,
                        Fault::Lossy {
                            from: b,
                            to: a,
                            drop: rng.gen_range(0.0..0.3),
                            duplicate: rng.gen_range(0.0..0.4),
                        },
                    ));
                    events.push((end, Fault::HealLinks));
                }
                8 => {
                    let delay = Duration::from_millis(rng.gen_range(50..=500));
                    events.push((t, Fault::SlowDisk { node: a, delay }));
                    events.push((
                        end,
                        Fault::SlowDisk {
                            node: a,
                            delay: Duration::ZERO,
                        },
                    ));
                }
                // One stalling window in three, the node is overloaded
                // instead: everything it does happens 50-300 ms late.
                9 if rng.gen_bool(1.0 / 3.0) => {
                    let delay = Duration::from_millis(rng.gen_range(50..=300));
                    events.push((t, Fault::Overload { node: a, delay }));
                    events.push((
                        end,
                        Fault::Overload {
                            node: a,
                            delay: Duration::ZERO,
                        },
                    ));
                }
                9 => {
                    // Stalls of tens to hundreds of milliseconds, one per
                    // period, for the window.
                    let period = Duration::from_millis(rng.gen_range(400..=1000));
                    let mut at = t;
                    while at < end {
                        let length = Duration::from_millis(rng.gen_range(20..=300));
                        events.push((at, Fault::Stall { node: a, length }));
                        at += period;
                    }
                }
                _ => {
                    events.push((t, Fault::Split { minority: vec![a] }));
                    events.push((end, Fault::HealLinks));
                }
            }
            t = end + Duration::from_millis(rng.gen_range(100..800));
        }
        events.push((config.heal, Fault::HealAll));
        Schedule {
            events,
            healed_at: config.heal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_schedule_ends_with_the_heal_and_is_the_seeds() {
        let nodes = [NodeId(1), NodeId(2), NodeId(3)];
        let draw = |seed| {
            Schedule::draw(
                &FaultConfig::default(),
                &nodes,
                &mut StdRng::seed_from_u64(seed),
            )
        };
        let s = draw(5);
        assert_eq!(s.events.last(), Some(&(s.healed_at, Fault::HealAll)));
        assert!(s.events.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(s.events, draw(5).events);
    }

    #[test]
    fn gray_faults_are_drawn_only_when_asked_and_each_slow_disk_ends() {
        let nodes = [NodeId(1), NodeId(2), NodeId(3)];
        let draw = |seed, gray| {
            let config = FaultConfig {
                gray,
                ..FaultConfig::default()
            };
            Schedule::draw(&config, &nodes, &mut StdRng::seed_from_u64(seed)).events
        };
        let gray = |f: &Fault| {
            matches!(
                f,
                Fault::SlowDisk { .. } | Fault::Stall { .. } | Fault::Overload { .. }
            )
        };
        let plain: Vec<_> = (0..50).flat_map(|s| draw(s, false)).collect();
        assert!(!plain.iter().any(|(_, f)| gray(f)));
        let with: Vec<_> = (0..50).flat_map(|s| draw(s, true)).collect();
        let stalls = with
            .iter()
            .filter(|(_, f)| matches!(f, Fault::Stall { .. }))
            .count();
        let slowed = with
            .iter()
            .filter(|(_, f)| matches!(f, Fault::SlowDisk { delay, .. } if !delay.is_zero()))
            .count();
        let restored = with
            .iter()
            .filter(|(_, f)| matches!(f, Fault::SlowDisk { delay, .. } if delay.is_zero()))
            .count();
        let overloads = |on: bool| {
            with.iter()
                .filter(
                    |(_, f)| matches!(f, Fault::Overload { delay, .. } if delay.is_zero() != on),
                )
                .count()
        };
        assert!(overloads(true) > 0, "some windows overload a node");
        assert_eq!(overloads(true), overloads(false), "and every overload ends");
        assert!(
            stalls > 10 && slowed > 3,
            "{stalls} stalls, {slowed} slow disks"
        );
        assert_eq!(slowed, restored, "every slow disk is made fast again");
    }
}
