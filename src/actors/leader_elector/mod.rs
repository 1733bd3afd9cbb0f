//! The leader elector: one per partition and node. Leadership `{node, epoch}`
//! lives in the metadata register under `leader/<p>`.
//!
//! A node claims `epoch + 1` only when
//! 1. the current leader has been suspected by its failure detector for longer
//!    than a randomized election timeout,
//! 2. a pre-vote finds a majority (itself included) that suspects the leader
//!    too, and
//! 3. the compare-and-set on the register reaches a majority.
//!
//! The pre-vote is what keeps bridges and one-way partitions from flapping: a
//! node that alone lost sight of a healthy leader cannot depose it. A leader
//! that cannot reach a majority steps down within the same bound; leadership
//! never moves back by itself, so a heal changes it at most once.

use crate::actors::metadata::{CasOutcome, MetadataClient};
use crate::actors::partition_processor::{BecomeFollower, BecomeLeader, PartitionProcessor};
use crate::actors::supervisor::Slot;
use crate::node::Net;
use crate::types::{Epoch, NodeId, PartitionId};
use actix::prelude::*;
use futures::stream::StreamExt;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tracing::{debug, info, info_span};

/// The value of `leader/<p>`. Decoding checks it names a node (ids start
/// at 1): a register value that does not is a decode error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawLeadership")]
pub struct Leadership {
    pub node: NodeId,
    pub epoch: Epoch,
}

/// A leadership as encoded, before it is checked.
#[derive(Deserialize)]
struct RawLeadership {
    node: NodeId,
    epoch: Epoch,
}

impl TryFrom<RawLeadership> for Leadership {
    type Error = String;
    fn try_from(raw: RawLeadership) -> Result<Self, String> {
        if raw.node.0 == 0 {
            return Err(format!("leadership of node 0 at {}", raw.epoch));
        }
        Ok(Leadership {
            node: raw.node,
            epoch: raw.epoch,
        })
    }
}

pub fn leader_key(partition: PartitionId) -> String {
    format!("leader/{}", partition.0)
}

/// The node that leads `partition` when all are healthy (spreads leaders).
pub fn preferred_leader(partition: PartitionId, nodes: &[NodeId]) -> NodeId {
    nodes[partition.0 as usize % nodes.len()]
}

#[derive(Clone, Debug)]
pub struct ElectorConfig {
    /// Randomized wait after the leader becomes suspected: `[min, max)`.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// A leader without a majority this long stops serving.
    pub step_down_after: Duration,
    /// Linearizable re-read of the leadership this often.
    pub refresh_every: Duration,
    /// A partition that never had a leader waits this long for its preferred
    /// node (which may simply be starting) before another node claims it.
    pub initial_grace: Duration,
    pub tick: Duration,
}

impl Default for ElectorConfig {
    fn default() -> Self {
        ElectorConfig {
            election_timeout_min: Duration::from_millis(200),
            election_timeout_max: Duration::from_millis(700),
            step_down_after: Duration::from_millis(1000),
            refresh_every: Duration::from_secs(2),
            initial_grace: Duration::from_secs(3),
            tick: Duration::from_millis(100),
        }
    }
}

/// "Do you also suspect `leader` (of `epoch`)?"
#[derive(Clone, Debug, Serialize, Deserialize, Message)]
#[rtype(result = "PreVoteReply")]
pub struct PreVote {
    pub partition: PartitionId,
    pub leader: NodeId,
    pub epoch: Epoch,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteReply {
    pub suspects: bool,
}

/// For status.
#[derive(Clone, Debug, Serialize, Deserialize, Message)]
#[rtype(result = "ElectorStatus")]
pub struct GetElectorStatus;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ElectorStatus {
    pub leader: Option<Leadership>,
    pub elections_won: u64,
    pub claiming: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Told {
    Nothing,
    Leader(Epoch),
    Follower(Option<NodeId>),
}

pub struct LeaderElector {
    partition: PartitionId,
    net: Net,
    meta: MetadataClient,
    processor: Slot<PartitionProcessor>,
    config: ElectorConfig,
    /// Latest leadership known and the register version it was read at.
    current: Option<(u64, Leadership)>,
    /// When we last confirmed `current` with a linearizable read.
    confirmed_at: Option<Instant>,
    suspect_since: Option<Instant>,
    election_timeout: Duration,
    no_majority_since: Option<Instant>,
    busy: bool,
    told: Told,
    elections_won: u64,
    metrics: std::sync::Arc<crate::node::metrics::Metrics>,
    span: tracing::Span,
}

impl LeaderElector {
    pub fn new(
        partition: PartitionId,
        net: Net,
        meta: MetadataClient,
        processor: Slot<PartitionProcessor>,
        config: ElectorConfig,
        metrics: std::sync::Arc<crate::node::metrics::Metrics>,
    ) -> Self {
        let span = info_span!("elector", node = %net.me(), partition = %partition);
        LeaderElector {
            partition,
            net,
            meta,
            processor,
            config,
            current: None,
            confirmed_at: None,
            suspect_since: None,
            election_timeout: Duration::ZERO,
            no_majority_since: None,
            busy: false,
            told: Told::Nothing,
            elections_won: 0,
            metrics,
            span,
        }
    }

    fn me(&self) -> NodeId {
        self.net.me()
    }

    fn majority(&self) -> usize {
        crate::actors::quorum::majority(self.net.nodes().len())
    }

    fn tell(&mut self, told: Told) {
        // Re-sent every tick: a restarted processor learns its role at once.
        let Some(processor) = self.processor.addr() else {
            return;
        };
        if told != self.told {
            debug!(parent: &self.span, ?told, "telling the processor");
        }
        let sent = match told {
            Told::Leader(epoch) => processor.try_send(BecomeLeader { epoch }).is_ok(),
            Told::Follower(leader) => processor.try_send(BecomeFollower { leader }).is_ok(),
            Told::Nothing => true,
        };
        if sent {
            self.told = told;
        }
    }

    fn random_timeout(&self) -> Duration {
        let (lo, hi) = (
            self.config.election_timeout_min,
            self.config.election_timeout_max,
        );
        if hi <= lo {
            return lo;
        }
        rand::thread_rng().gen_range(lo..hi)
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        // Pick up newer leadership seen by anyone on this node.
        if let Some((version, leadership)) = self
            .meta
            .cached_typed::<Leadership>(&leader_key(self.partition))
        {
            if self.current.is_none_or(|(v, _)| version > v) {
                self.current = Some((version, leadership));
            }
        }
        let me = self.me();
        // A leader without a majority stops serving within `step_down_after`,
        // whatever else this elector is busy with.
        if let Some((_, l)) = self.current.filter(|(_, l)| l.node == me) {
            if self.net.reachable() >= self.majority() {
                self.no_majority_since = None;
            } else {
                let since = *self.no_majority_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.config.step_down_after {
                    if self.told != Told::Follower(None) {
                        info!(parent: &self.span, epoch = %l.epoch, "lost the majority; not serving");
                    }
                    self.tell(Told::Follower(None));
                    // Regaining the majority must re-confirm the register first.
                    self.confirmed_at = None;
                }
            }
        }
        if self.busy {
            return;
        }
        let stale = self
            .confirmed_at
            .is_none_or(|t| t.elapsed() >= self.config.refresh_every);
        if stale {
            self.refresh(ctx);
            return;
        }
        match self.current {
            None => {
                // Never elected: the preferred node goes first; the others
                // wait until it is suspected.
                self.tell(Told::Follower(None));
                let preferred = preferred_leader(self.partition, self.net.nodes());
                let grace_over = self.suspected_long_enough(preferred)
                    && self
                        .suspect_since
                        .is_some_and(|t| t.elapsed() >= self.config.initial_grace);
                if preferred == me || grace_over {
                    self.claim(0, Epoch(0), None, ctx);
                }
            }
            Some((_, l)) if l.node == me => {
                if self.no_majority_since.is_none() {
                    self.tell(Told::Leader(l.epoch));
                }
            }
            Some((version, l)) => {
                self.tell(Told::Follower(Some(l.node)));
                if self.suspected_long_enough(l.node) {
                    self.claim(version, l.epoch, Some(l.node), ctx);
                }
            }
        }
    }

    /// Whether `node` has been suspected longer than this episode's election timeout.
    fn suspected_long_enough(&mut self, node: NodeId) -> bool {
        if !self.net.is_suspected(node) {
            self.suspect_since = None;
            return false;
        }
        let since = *self.suspect_since.get_or_insert_with(Instant::now);
        if self.election_timeout.is_zero() || since.elapsed() < Duration::from_millis(1) {
            self.election_timeout = self.random_timeout();
        }
        since.elapsed() >= self.election_timeout
    }

    fn refresh(&mut self, ctx: &mut Context<Self>) {
        self.busy = true;
        let meta = self.meta.clone();
        let key = leader_key(self.partition);
        let before = self.current;
        ctx.spawn(
            async move {
                meta.read_typed::<Leadership>(&key, Duration::from_secs(2))
                    .await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.busy = false;
                if let Ok(current) = result {
                    if act.current == before {
                        // Nothing newer arrived during the read: the read
                        // is the truth, even if it is older than what was
                        // believed (a value the register never held).
                        act.current = current;
                    } else if let Some((v, l)) = current {
                        if act.current.is_none_or(|(cv, _)| v >= cv) {
                            act.current = Some((v, l));
                        }
                    }
                    act.confirmed_at = Some(Instant::now());
                    act.tick(ctx);
                }
            }),
        );
    }

    /// Pre-vote, then CAS `leader/<p>` from `version` to `{me, epoch + 1}`.
    fn claim(
        &mut self,
        version: u64,
        epoch: Epoch,
        leader: Option<NodeId>,
        ctx: &mut Context<Self>,
    ) {
        self.busy = true;
        let net = self.net.clone();
        let meta = self.meta.clone();
        let partition = self.partition;
        let need = self.majority();
        let me = self.me();
        let span = self.span.clone();
        // The epoch was read from the register, which a peer may have
        // written: there is no epoch after `u64::MAX` to claim.
        let Some(next_epoch) = epoch.0.checked_add(1).map(Epoch) else {
            debug!(parent: &self.span, %epoch, "no epoch left to claim");
            self.busy = false;
            return;
        };
        let fut = async move {
            if let Some(leader) = leader {
                let mut votes = 1; // our own
                let others: Vec<NodeId> =
                    net.nodes().iter().copied().filter(|n| *n != me).collect();
                let make = || PreVote {
                    partition,
                    leader,
                    epoch,
                };
                let mut calls = net.broadcast(&others, make, Duration::from_millis(500));
                while let Some((_, reply)) = calls.next().await {
                    if let Ok(PreVoteReply { suspects: true }) = reply {
                        votes += 1;
                    }
                    if votes >= need {
                        break;
                    }
                }
                if votes < need {
                    debug!(parent: &span, %leader, votes, "pre-vote failed: the leader is alive for a majority");
                    return None;
                }
            }
            let next = Leadership {
                node: me,
                epoch: next_epoch,
            };
            match meta
                .cas_typed(
                    &leader_key(partition),
                    version,
                    &next,
                    Duration::from_secs(2),
                )
                .await
            {
                Ok(CasOutcome::Applied { version }) => Some((true, version, next)),
                Ok(CasOutcome::Conflict(Some((v, current)))) => Some((false, v, current)),
                _ => None,
            }
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.busy = false;
            act.suspect_since = None;
            act.election_timeout = Duration::ZERO;
            if let Some((won, version, leadership)) = result {
                if won {
                    act.elections_won += 1;
                    act.metrics
                        .elections
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    info!(parent: &act.span, epoch = %leadership.epoch, "won the election");
                }
                act.current = Some((version, leadership));
                act.confirmed_at = Some(Instant::now());
                act.tick(ctx);
            }
        }));
    }
}

impl Actor for LeaderElector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.config.tick, |act, ctx| act.tick(ctx));
        self.tick(ctx);
    }
}

impl Handler<PreVote> for LeaderElector {
    type Result = MessageResult<PreVote>;

    fn handle(&mut self, msg: PreVote, _: &mut Self::Context) -> Self::Result {
        // Only a suspicion of the very leader the candidate wants to replace
        // counts; if we know a newer epoch, the candidate is behind.
        let newer = self.current.is_some_and(|(_, l)| l.epoch > msg.epoch);
        let suspects = !newer && self.net.is_suspected(msg.leader);
        MessageResult(PreVoteReply { suspects })
    }
}

impl Handler<GetElectorStatus> for LeaderElector {
    type Result = MessageResult<GetElectorStatus>;

    fn handle(&mut self, _: GetElectorStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(ElectorStatus {
            leader: self.current.map(|(_, l)| l),
            elections_won: self.elections_won,
            claiming: self.busy,
        })
    }
}

impl Handler<crate::actors::supervisor::Ping> for LeaderElector {
    type Result = ();
    fn handle(&mut self, _: crate::actors::supervisor::Ping, _: &mut Self::Context) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leadership_of_node_0_does_not_decode() {
        let ok = Leadership {
            node: NodeId(2),
            epoch: Epoch(u64::MAX),
        };
        let bytes = rmp_serde::to_vec_named(&ok).unwrap();
        assert_eq!(rmp_serde::from_slice::<Leadership>(&bytes).unwrap(), ok);
        let bad = rmp_serde::to_vec_named(&RawLeadershipOut {
            node: NodeId(0),
            epoch: Epoch(3),
        })
        .unwrap();
        let err = rmp_serde::from_slice::<Leadership>(&bad).unwrap_err();
        assert!(err.to_string().contains("node 0"), "{err}");
    }

    #[derive(Serialize)]
    struct RawLeadershipOut {
        node: NodeId,
        epoch: Epoch,
    }
}
