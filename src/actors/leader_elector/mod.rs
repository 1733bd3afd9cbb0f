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
//!
//! Every rule lives in [`core`] ([`ElectorCore`]); this module is the actix
//! shell around it: it feeds the core the clock and the failure detector's
//! verdicts (`Net::env`), the metadata cache and the answers of the futures it
//! spawns for the core's effects, and wakes the core when it asks to be.

pub mod core;

pub use self::core::{
    leader_key, preferred_leader, ElectorConfig, ElectorCore, ElectorEffect, ElectorInput,
    Leadership, MetaChange, MetaResult, Told,
};

use crate::actors::metadata::MetadataClient;
use crate::actors::partition_processor::{BecomeFollower, BecomeLeader, PartitionProcessor};
use crate::actors::supervisor::Slot;
use crate::node::Net;
use crate::types::{Epoch, NodeId, PartitionId};
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tracing::{debug, info_span};

/// "Do you also suspect `leader` (of `epoch`)?"
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "PreVoteReply")]
pub struct PreVote {
    /// The partition whose leadership is in question.
    pub partition: PartitionId,
    /// The leader the candidate wants to depose.
    pub leader: NodeId,
    /// That leader's epoch, as the candidate knows it.
    pub epoch: Epoch,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteReply {
    /// Whether the asked node suspects that leader too (and knows no newer epoch).
    pub suspects: bool,
}

/// For status.
#[derive(Clone, Debug, Serialize, Deserialize, Message)]
#[rtype(result = "ElectorStatus")]
pub struct GetElectorStatus;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ElectorStatus {
    /// The leadership this node believes in.
    pub leader: Option<Leadership>,
    /// Elections this node's elector won.
    pub elections_won: u64,
    /// Whether a read or claim of the register is in flight.
    pub claiming: bool,
}

/// The actix shell of an [`ElectorCore`].
pub struct LeaderElector {
    /// The rules.
    core: ElectorCore,
    /// The partition elected for.
    partition: PartitionId,
    /// The clock and failure detector (`Net::env`), and pre-vote calls.
    net: Net,
    /// Reads and compare-and-sets of `leader/<p>`, and the node's cache.
    meta: MetadataClient,
    /// This node's processor of the partition, told its role.
    processor: Slot<PartitionProcessor>,
    /// The wake-up the core asked for, and its timer.
    timer: Option<(Instant, SpawnHandle)>,
    /// Counts elections won.
    metrics: std::sync::Arc<crate::node::metrics::Metrics>,
    /// This elector's log span.
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
            core: ElectorCore::new(partition, config, rand::random()),
            partition,
            net,
            meta,
            processor,
            timer: None,
            metrics,
            span,
        }
    }

    /// Feeds `input` to the core and carries out its effects.
    fn run(&mut self, input: ElectorInput, ctx: &mut Context<Self>) {
        let env = self.net.env();
        let effects = self.core.handle(&env, input);
        for effect in effects {
            self.carry_out(effect, ctx);
        }
        self.arm(ctx);
    }

    /// A timer tick: the links' health and the cache's leadership first,
    /// then the tick.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.timer = None;
        let degraded = self.net.degraded();
        self.run(ElectorInput::Health { degraded }, ctx);
        if let Some((version, leadership)) = self
            .meta
            .cached_typed::<Leadership>(&leader_key(self.partition))
        {
            self.run(
                ElectorInput::LeadershipSeen {
                    version,
                    leadership,
                },
                ctx,
            );
        }
        self.run(ElectorInput::Tick, ctx);
    }

    /// Keeps one timer, at the core's `next_wake`.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(at) = self.core.next_wake() else {
            return;
        };
        if let Some((armed, handle)) = self.timer {
            if armed == at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = at.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(delay, |act, ctx| act.tick(ctx));
        self.timer = Some((at, handle));
    }

    fn carry_out(&mut self, effect: ElectorEffect, ctx: &mut Context<Self>) {
        match effect {
            ElectorEffect::Meta {
                op,
                key,
                change,
                timeout,
            } => {
                let meta = self.meta.clone();
                let fut = async move {
                    match change {
                        MetaChange::Read => {
                            MetaResult::Read(meta.read_typed::<Leadership>(&key, timeout).await)
                        }
                        MetaChange::Cas { expect, value } => {
                            MetaResult::Cas(meta.cas_typed(&key, expect, &value, timeout).await)
                        }
                    }
                };
                ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                    act.run(ElectorInput::MetaDone { op, result }, ctx)
                }));
            }
            ElectorEffect::Call {
                to,
                call,
                req,
                timeout,
            } => {
                let net = self.net.clone();
                ctx.spawn(
                    async move { net.call(to, req, timeout).await }
                        .into_actor(self)
                        .map(move |result, act, ctx| {
                            act.run(
                                ElectorInput::Reply {
                                    call,
                                    from: to,
                                    result,
                                },
                                ctx,
                            )
                        }),
                );
            }
            // Requests are answered where they are handled.
            ElectorEffect::Respond { .. } => {}
            ElectorEffect::Tell(told) => {
                let Some(processor) = self.processor.addr() else {
                    return;
                };
                // A full mailbox drops this one: the core tells again next tick.
                let sent = match told {
                    Told::Leader(epoch) => processor.try_send(BecomeLeader { epoch }).is_ok(),
                    Told::Follower(leader) => processor.try_send(BecomeFollower { leader }).is_ok(),
                };
                if !sent {
                    debug!(parent: &self.span, ?told, "processor not told (mailbox full or stopped)");
                }
            }
            ElectorEffect::Elected { .. } => {
                self.metrics
                    .elections
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

impl Actor for LeaderElector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.tick(ctx);
    }
}

impl Handler<PreVote> for LeaderElector {
    type Result = MessageResult<PreVote>;

    fn handle(&mut self, req: PreVote, ctx: &mut Self::Context) -> Self::Result {
        let env = self.net.env();
        let mut answer = PreVoteReply { suspects: false };
        for effect in self
            .core
            .handle(&env, ElectorInput::Request { token: 0, req })
        {
            match effect {
                ElectorEffect::Respond { resp, .. } => answer = resp,
                other => self.carry_out(other, ctx),
            }
        }
        self.arm(ctx);
        MessageResult(answer)
    }
}

impl Handler<GetElectorStatus> for LeaderElector {
    type Result = MessageResult<GetElectorStatus>;

    fn handle(&mut self, _: GetElectorStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.core.status())
    }
}

impl Handler<crate::actors::supervisor::Ping> for LeaderElector {
    type Result = ();
    fn handle(&mut self, _: crate::actors::supervisor::Ping, _: &mut Self::Context) {}
}

/// The leader of `partition` in this node's cache of the register.
pub fn cached_leader(meta: &MetadataClient, partition: PartitionId) -> Option<NodeId> {
    meta.cached_typed::<Leadership>(&leader_key(partition))
        .map(|(_, l)| l.node)
}

/// The cached leader of `partition`, or, when this node has not looked yet
/// or `fresh` is asked for (the cached one said it does not lead), the
/// register's answer (one read, which also fills the cache). `Err` says why
/// there is none.
pub async fn leader_of(
    meta: &MetadataClient,
    partition: PartitionId,
    timeout: std::time::Duration,
    fresh: bool,
) -> Result<NodeId, String> {
    if let Some(leader) = cached_leader(meta, partition).filter(|_| !fresh) {
        return Ok(leader);
    }
    match meta
        .read_typed::<Leadership>(&leader_key(partition), timeout)
        .await
    {
        Ok(Some((_, l))) => Ok(l.node),
        Ok(None) => Err(format!("partition {partition} has no leader yet")),
        Err(e) => Err(format!("reading partition {partition}'s leader: {e}")),
    }
}
