//! The simulated network: per directed link, a delay drawn from a range (so
//! messages reorder), a chance to drop and a chance to duplicate, and cuts
//! that can be one-way. Everything random comes from the caller's seeded RNG,
//! so one seed gives one run.

use crate::types::NodeId;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How a link behaves when nothing is wrong with it.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// One-way delay, uniformly in `[min_delay, max_delay]`.
    pub min_delay: Duration,
    /// The upper bound of that delay.
    pub max_delay: Duration,
    /// Chance that a message is lost.
    pub drop: f64,
    /// Chance that a message is delivered twice.
    pub duplicate: f64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            min_delay: Duration::from_micros(100),
            max_delay: Duration::from_millis(2),
            drop: 0.0,
            duplicate: 0.0,
        }
    }
}

/// The network's state: the healthy link behaviour, what is cut, and links
/// degraded on purpose.
#[derive(Clone, Debug, Default)]
pub struct SimNet {
    /// How healthy links behave.
    pub config: LinkConfig,
    /// Directed links `(from, to)` that deliver nothing.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Links with their own behaviour (loss, extra delay).
    degraded: BTreeMap<(NodeId, NodeId), LinkConfig>,
}

impl SimNet {
    pub fn new(config: LinkConfig) -> Self {
        SimNet {
            config,
            ..SimNet::default()
        }
    }

    /// When copies of a message sent now from `from` to `to` arrive, as
    /// delays: empty if it is lost, two if it is duplicated. Messages to
    /// oneself are delivered at once and never lost.
    pub fn deliveries(
        &self,
        from: NodeId,
        to: NodeId,
        rng: &mut impl rand::RngCore,
    ) -> Vec<Duration> {
        if from == to {
            return vec![Duration::ZERO];
        }
        if self.cut.contains(&(from, to)) {
            return Vec::new();
        }
        let link = self.degraded.get(&(from, to)).unwrap_or(&self.config);
        if link.drop > 0.0 && rng.gen_bool(link.drop.min(1.0)) {
            return Vec::new();
        }
        let delay = |rng: &mut dyn rand::RngCore| {
            if link.max_delay <= link.min_delay {
                link.min_delay
            } else {
                rng.gen_range(link.min_delay..=link.max_delay)
            }
        };
        let mut out = vec![delay(rng)];
        if link.duplicate > 0.0 && rng.gen_bool(link.duplicate.min(1.0)) {
            out.push(delay(rng));
        }
        out
    }

    /// Whether anything sent from `from` can reach `to` now.
    pub fn can_send(&self, from: NodeId, to: NodeId) -> bool {
        from == to || !self.cut.contains(&(from, to))
    }

    /// Cuts `from → to` (one way).
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        if from != to {
            self.cut.insert((from, to));
        }
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Cuts `node` off from every other node of `nodes`, both ways.
    pub fn isolate(&mut self, node: NodeId, nodes: &[NodeId]) {
        for &other in nodes {
            self.cut(node, other);
        }
    }

    /// Gives `from → to` its own behaviour (loss, slowness).
    pub fn degrade(&mut self, from: NodeId, to: NodeId, link: LinkConfig) {
        self.degraded.insert((from, to), link);
    }

    /// Every link whole and healthy again.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.degraded.clear();
    }

    /// The directed links that are cut.
    pub fn cuts(&self) -> impl Iterator<Item = (NodeId, NodeId)> + '_ {
        self.cut.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn cuts_loss_duplicates_and_one_way_cuts() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (a, b, c) = (NodeId(1), NodeId(2), NodeId(3));
        let mut net = SimNet::new(LinkConfig::default());
        assert_eq!(net.deliveries(a, b, &mut rng).len(), 1);
        assert_eq!(net.deliveries(a, a, &mut rng), vec![Duration::ZERO]);
        net.cut_one_way(a, b);
        assert!(net.deliveries(a, b, &mut rng).is_empty());
        assert_eq!(
            net.deliveries(b, a, &mut rng).len(),
            1,
            "the other way still works"
        );
        net.isolate(c, &[a, b, c]);
        assert!(
            net.deliveries(c, a, &mut rng).is_empty() && net.deliveries(b, c, &mut rng).is_empty()
        );
        net.heal();
        assert!(net.can_send(a, b) && net.can_send(c, a));
        net.degrade(
            a,
            b,
            LinkConfig {
                drop: 0.5,
                duplicate: 0.5,
                ..LinkConfig::default()
            },
        );
        let counts: Vec<usize> = (0..1000)
            .map(|_| net.deliveries(a, b, &mut rng).len())
            .collect();
        let lost = counts.iter().filter(|n| **n == 0).count();
        let doubled = counts.iter().filter(|n| **n == 2).count();
        assert!((400..600).contains(&lost), "{lost}");
        assert!((150..350).contains(&doubled), "{doubled}");
    }

    #[test]
    fn delays_vary_so_messages_reorder() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let net = SimNet::new(LinkConfig::default());
        let delays: BTreeSet<Duration> = (0..100)
            .map(|_| net.deliveries(NodeId(1), NodeId(2), &mut rng)[0])
            .collect();
        assert!(delays.len() > 50);
    }
}
