//! The leader elector's protocol, without I/O: one [`ElectorCore`] per
//! partition and node. Leadership `{node, epoch}` lives in the metadata
//! register under `leader/<p>`; this core decides when to read it, when to
//! claim it, and what the node's processor is told.
//!
//! The rules, each with a test below:
//! - **Tick**: every `tick` the core looks at what it knows; a host may tick
//!   earlier (a completed read or claim runs the same step at once).
//! - **Refresh**: the leadership is re-read linearizably when it was not
//!   confirmed for `refresh_every` (or never); nothing else happens until it
//!   is. A read that returns while nothing newer arrived is the truth, even
//!   if it is older than what was believed (a value the register never
//!   chose); otherwise only a version at least as new is taken.
//! - **Cache**: a newer version seen anywhere on this node
//!   ([`ElectorInput::LeadershipSeen`]) is taken at once.
//! - **Suspicion**: a node claims only after the leader has been suspected
//!   for longer than an election timeout drawn at random from
//!   `[election_timeout_min, election_timeout_max)` (from the core's own
//!   seeded RNG), drawn anew for every suspicion episode.
//! - **Initial grace**: a partition never led is claimed by its preferred
//!   node at once; any other node waits until the preferred node has been
//!   suspected for `initial_grace`.
//! - **Pre-vote**: before deposing a leader, a majority (counting this node)
//!   must also suspect it; a voter says yes only if it suspects that very
//!   leader and knows no newer epoch. A node that alone lost sight of a
//!   healthy leader (bridges, one-way partitions) therefore deposes nobody.
//! - **Degraded leader**: a leader whose link is scored degraded
//!   ([`ElectorInput::Health`]) counts as suspected, for the wait and the
//!   pre-vote, by a node whose links to a majority of the cluster without
//!   the leader (itself counted) are connected and healthy. So a sick leader
//!   is replaced when the healthy nodes agree it is sick and can work
//!   without it; the sick node itself (whose every link looks bad) deposes
//!   nobody, nothing moves when every link is equally bad, and leadership
//!   does not bounce back: the new leader is healthy to the others.
//! - **Claim**: a compare-and-set of `leader/<p>` from the version read to
//!   `{me, epoch + 1}`; a conflict teaches the current value. There is no
//!   epoch after `u64::MAX` to claim (a peer may have written any epoch).
//!   Whatever a claim's outcome, the next one needs a new suspicion episode.
//! - **Step down**: a leader that cannot reach a majority for
//!   `step_down_after` tells its processor to stop serving, whatever else the
//!   core is doing, and must re-confirm the register before serving again.
//! - **Tell**: the processor is told its role on every tick (a restarted
//!   processor learns it at once).

use super::{ElectorStatus, PreVote, PreVoteReply};
use crate::actors::env::Env;
use crate::actors::metadata::{CasOutcome, MetaError};
use crate::actors::quorum::{Tally, Verdict};
use crate::node::CallError;
use crate::types::{Epoch, NodeId, PartitionId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tracing::{debug, info};

/// How long one read or compare-and-set of `leader/<p>` may take.
pub const META_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a pre-vote waits for each peer's answer.
pub const PRE_VOTE_TIMEOUT: Duration = Duration::from_millis(500);

/// The value of `leader/<p>`. Decoding checks it names a node (ids start
/// at 1): a register value that does not is a decode error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawLeadership")]
pub struct Leadership {
    /// The node that leads.
    pub node: NodeId,
    /// Its reign's generation (strictly increasing).
    pub epoch: Epoch,
}

/// A leadership as encoded, before it is checked.
#[derive(Deserialize)]
struct RawLeadership {
    /// As encoded, possibly 0.
    node: NodeId,
    /// As encoded.
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

/// The register key of `partition`'s leadership.
pub fn leader_key(partition: PartitionId) -> String {
    format!("leader/{}", partition.0)
}

/// The node that leads `partition` when all are healthy (spreads leaders).
pub fn preferred_leader(partition: PartitionId, nodes: &[NodeId]) -> NodeId {
    nodes[partition.0 as usize % nodes.len()]
}

#[derive(Clone, Debug)]
pub struct ElectorConfig {
    /// Lower bound of the randomized wait after the leader becomes suspected.
    pub election_timeout_min: Duration,
    /// Upper bound (exclusive) of that wait; randomizing it keeps nodes that
    /// suspect at once from claiming at once.
    pub election_timeout_max: Duration,
    /// A leader without a majority this long stops serving.
    pub step_down_after: Duration,
    /// Linearizable re-read of the leadership this often.
    pub refresh_every: Duration,
    /// A partition that never had a leader waits this long for its preferred
    /// node (which may simply be starting) before another node claims it.
    pub initial_grace: Duration,
    /// How often the core wants a [`ElectorInput::Tick`].
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

/// A metadata operation the core asked for (its id, chosen by the core).
pub type OpId = u64;
/// A host's handle on a request it is serving.
pub type Token = u64;

/// A call to another node, chosen by the core (its own counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// What the processor of this node is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Told {
    /// Lead at this epoch.
    Leader(Epoch),
    /// Follow (the leader, if known).
    Follower(Option<NodeId>),
}

/// A change of `leader/<p>` for the metadata proposer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaChange {
    /// A linearizable read.
    Read,
    /// Write `value` if the register is at version `expect`.
    Cas { expect: u64, value: Leadership },
}

/// The outcome of a [`MetaChange`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaResult {
    /// The value and its version (`None`: never written).
    Read(Result<Option<(u64, Leadership)>, MetaError>),
    /// Written, or the value the register held instead.
    Cas(Result<CasOutcome<Leadership>, MetaError>),
}

/// Everything the elector learns.
#[derive(Clone, Debug)]
pub enum ElectorInput {
    /// Time passed (see [`ElectorCore::next_wake`]).
    Tick,
    /// This node's metadata cache holds `leadership` at `version` (hosts
    /// feed it before each tick).
    LeadershipSeen {
        version: u64,
        leadership: Leadership,
    },
    /// A metadata operation asked for with [`ElectorEffect::Meta`] ended.
    MetaDone { op: OpId, result: MetaResult },
    /// The answer to a pre-vote call (or why there is none).
    Reply {
        call: CallId,
        from: NodeId,
        result: Result<PreVoteReply, CallError>,
    },
    /// A candidate asks whether this node suspects its leader too.
    Request { token: Token, req: PreVote },
    /// The peers whose links are scored degraded now (hosts feed it before
    /// each tick; without it none is).
    Health { degraded: BTreeSet<NodeId> },
}

/// Everything the elector asks its host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElectorEffect {
    /// Run `change` on the register key `key` within `timeout`; answer with
    /// [`ElectorInput::MetaDone`].
    Meta {
        op: OpId,
        key: String,
        change: MetaChange,
        timeout: Duration,
    },
    /// Ask `to` for its pre-vote; answer with exactly one
    /// [`ElectorInput::Reply`].
    Call {
        to: NodeId,
        call: CallId,
        req: PreVote,
        timeout: Duration,
    },
    /// Answer the request of `token`.
    Respond { token: Token, resp: PreVoteReply },
    /// Tell this node's processor of the partition its role.
    Tell(Told),
    /// This node won an election at `epoch` (for metrics).
    Elected { epoch: Epoch },
}

/// An election step in flight (at most one at a time).
#[derive(Clone, Debug)]
enum Busy {
    /// A linearizable read; `before` is what was believed when it started.
    Refresh {
        op: OpId,
        before: Option<(u64, Leadership)>,
    },
    /// A pre-vote round before deposing `leader`.
    PreVote {
        calls: BTreeMap<CallId, NodeId>,
        tally: Tally,
        claim: Claim,
    },
    /// The compare-and-set of a claim.
    Cas { op: OpId, claim: Claim },
}

/// What a claim writes, and over which version.
#[derive(Clone, Copy, Debug)]
struct Claim {
    /// The register version the claim replaces.
    version: u64,
    /// The value written.
    next: Leadership,
}

pub struct ElectorCore {
    /// The partition elected for.
    partition: PartitionId,
    /// Timeouts and periods.
    config: ElectorConfig,
    /// Draws election timeouts (seeded: the simulator's runs repeat).
    rng: StdRng,
    /// Latest leadership known and the register version it was read at.
    current: Option<(u64, Leadership)>,
    /// When `current` was last confirmed (a read or a claim's answer).
    confirmed_at: Option<Instant>,
    /// Since when the node watched for (leader, or preferred node) is suspected.
    suspect_since: Option<Instant>,
    /// This suspicion episode's timeout (zero: not drawn yet).
    election_timeout: Duration,
    /// Since when this node, as leader, reaches no majority.
    no_majority_since: Option<Instant>,
    /// The step in flight.
    busy: Option<Busy>,
    /// What the processor was last told (for logs).
    told: Option<Told>,
    /// Elections this node won (status).
    elections_won: u64,
    /// The last tick (the next is due `tick` after it).
    last_tick: Option<Instant>,
    /// The next metadata operation id.
    next_op: OpId,
    /// The next call id.
    next_call: u64,
    /// Peers whose links are scored degraded (the last `Health`).
    degraded: BTreeSet<NodeId>,
}

impl ElectorCore {
    /// An elector of `partition` that knows nothing yet; `seed` seeds its RNG.
    pub fn new(partition: PartitionId, config: ElectorConfig, seed: u64) -> Self {
        ElectorCore {
            partition,
            config,
            rng: StdRng::seed_from_u64(seed),
            current: None,
            confirmed_at: None,
            suspect_since: None,
            election_timeout: Duration::ZERO,
            no_majority_since: None,
            busy: None,
            told: None,
            elections_won: 0,
            last_tick: None,
            next_op: 1,
            next_call: 1,
            degraded: BTreeSet::new(),
        }
    }

    /// The one entry point.
    pub fn handle(&mut self, env: &Env, input: ElectorInput) -> Vec<ElectorEffect> {
        let mut out = Vec::new();
        match input {
            ElectorInput::Tick => {
                self.last_tick = Some(env.now);
                self.tick(env, &mut out);
            }
            ElectorInput::LeadershipSeen {
                version,
                leadership,
            } => {
                if self.current.is_none_or(|(v, _)| version > v) {
                    self.current = Some((version, leadership));
                }
            }
            ElectorInput::MetaDone { op, result } => self.meta_done(env, op, result, &mut out),
            ElectorInput::Reply { call, result, .. } => self.pre_vote_reply(call, result, &mut out),
            ElectorInput::Request { token, req } => {
                // Only a suspicion of the very leader the candidate wants to
                // replace counts; if we know a newer epoch, it is behind.
                let newer = self.current.is_some_and(|(_, l)| l.epoch > req.epoch);
                let suspects = !newer && self.deposable(env, req.leader);
                out.push(ElectorEffect::Respond {
                    token,
                    resp: PreVoteReply { suspects },
                });
            }
            ElectorInput::Health { degraded } => {
                // The transport logs each change once per node ("peer
                // degraded"); once per partition here would repeat it.
                if degraded != self.degraded {
                    debug!(partition = %self.partition, ?degraded, "peers scored degraded");
                }
                self.degraded = degraded;
            }
        }
        out
    }

    /// Whether `leader` may be deposed from here: suspected, or scored
    /// degraded while this node's healthy links reach a majority of the
    /// cluster without it (see **Degraded leader**).
    fn deposable(&self, env: &Env, leader: NodeId) -> bool {
        if env.is_suspected(leader) {
            return true;
        }
        if leader == env.me || !self.degraded.contains(&leader) {
            return false;
        }
        let healthy = env
            .nodes
            .iter()
            .filter(|n| **n != leader)
            .filter(|n| **n == env.me || (!env.is_suspected(**n) && !self.degraded.contains(n)))
            .count();
        healthy >= crate::actors::quorum::majority(env.nodes.len())
    }

    /// When the core wants its next [`ElectorInput::Tick`] (`None` before the
    /// first one: a host ticks once when it starts the core).
    pub fn next_wake(&self) -> Option<Instant> {
        self.last_tick.map(|t| t + self.config.tick)
    }

    /// For status.
    pub fn status(&self) -> ElectorStatus {
        ElectorStatus {
            leader: self.current.map(|(_, l)| l),
            elections_won: self.elections_won,
            claiming: self.busy.is_some(),
        }
    }

    /// The leadership believed and its register version.
    pub fn current(&self) -> Option<(u64, Leadership)> {
        self.current
    }

    fn tell(&mut self, told: Told, out: &mut Vec<ElectorEffect>) {
        if self.told != Some(told) {
            debug!(partition = %self.partition, ?told, "telling the processor");
        }
        self.told = Some(told);
        out.push(ElectorEffect::Tell(told));
    }

    fn random_timeout(&mut self) -> Duration {
        let (lo, hi) = (
            self.config.election_timeout_min,
            self.config.election_timeout_max,
        );
        if hi <= lo {
            return lo;
        }
        self.rng.gen_range(lo..hi)
    }

    fn tick(&mut self, env: &Env, out: &mut Vec<ElectorEffect>) {
        let now = env.now;
        // A leader without a majority stops serving within `step_down_after`,
        // whatever else this elector is busy with.
        if let Some((_, l)) = self.current.filter(|(_, l)| l.node == env.me) {
            if env.has_majority() {
                self.no_majority_since = None;
            } else {
                let since = *self.no_majority_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= self.config.step_down_after {
                    if self.told != Some(Told::Follower(None)) {
                        info!(partition = %self.partition, epoch = %l.epoch, "lost the majority; not serving");
                    }
                    self.tell(Told::Follower(None), out);
                    // Regaining the majority must re-confirm the register first.
                    self.confirmed_at = None;
                }
            }
        }
        if self.busy.is_some() {
            return;
        }
        let stale = self
            .confirmed_at
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.refresh_every);
        if stale {
            let op = self.op();
            self.busy = Some(Busy::Refresh {
                op,
                before: self.current,
            });
            out.push(ElectorEffect::Meta {
                op,
                key: leader_key(self.partition),
                change: MetaChange::Read,
                timeout: META_TIMEOUT,
            });
            return;
        }
        match self.current {
            None => {
                // Never elected: the preferred node goes first; the others
                // wait until it was suspected for the initial grace.
                self.tell(Told::Follower(None), out);
                let preferred = preferred_leader(self.partition, &env.nodes);
                let grace_over = self.suspected_long_enough(env, preferred)
                    && self.suspect_since.is_some_and(|t| {
                        now.saturating_duration_since(t) >= self.config.initial_grace
                    });
                if preferred == env.me || grace_over {
                    self.claim(env, 0, Epoch(0), None, out);
                }
            }
            Some((_, l)) if l.node == env.me => {
                if self.no_majority_since.is_none() {
                    self.tell(Told::Leader(l.epoch), out);
                }
            }
            Some((version, l)) => {
                self.tell(Told::Follower(Some(l.node)), out);
                if self.deposable_long_enough(env, l.node) {
                    self.claim(env, version, l.epoch, Some(l.node), out);
                }
            }
        }
    }

    /// Whether `node` has been suspected longer than this episode's election
    /// timeout (drawn when the episode starts).
    fn suspected_long_enough(&mut self, env: &Env, node: NodeId) -> bool {
        let suspected = env.is_suspected(node);
        self.long_enough(env, suspected)
    }

    /// Whether leader `node` has been deposable longer than this episode's
    /// election timeout.
    fn deposable_long_enough(&mut self, env: &Env, node: NodeId) -> bool {
        let deposable = self.deposable(env, node);
        if deposable && !env.is_suspected(node) && self.suspect_since.is_none() {
            info!(partition = %self.partition, leader = %node, "the leader's link is degraded and the others are healthy");
        }
        self.long_enough(env, deposable)
    }

    /// Whether a suspicion episode (`now`: whether it goes on) has lasted
    /// its election timeout.
    fn long_enough(&mut self, env: &Env, now: bool) -> bool {
        if !now {
            self.suspect_since = None;
            return false;
        }
        let since = *self.suspect_since.get_or_insert(env.now);
        let elapsed = env.now.saturating_duration_since(since);
        if self.election_timeout.is_zero() || elapsed < Duration::from_millis(1) {
            self.election_timeout = self.random_timeout();
        }
        elapsed >= self.election_timeout
    }

    /// Pre-vote (when deposing `leader`), then CAS `leader/<p>` from
    /// `version` to `{me, epoch + 1}`.
    fn claim(
        &mut self,
        env: &Env,
        version: u64,
        epoch: Epoch,
        leader: Option<NodeId>,
        out: &mut Vec<ElectorEffect>,
    ) {
        // The epoch was read from the register, which a peer may have
        // written: there is no epoch after `u64::MAX` to claim.
        let Some(next_epoch) = epoch.0.checked_add(1).map(Epoch) else {
            debug!(partition = %self.partition, %epoch, "no epoch left to claim");
            return;
        };
        let claim = Claim {
            version,
            next: Leadership {
                node: env.me,
                epoch: next_epoch,
            },
        };
        let Some(leader) = leader else {
            self.cas(claim, out);
            return;
        };
        let mut tally = Tally::majority(env.nodes.iter().copied());
        if tally.yes(env.me) == Verdict::Reached {
            self.cas(claim, out);
            return;
        }
        let mut calls = BTreeMap::new();
        for to in env.peers() {
            let call = CallId(self.next_call);
            self.next_call += 1;
            calls.insert(call, to);
            out.push(ElectorEffect::Call {
                to,
                call,
                req: PreVote {
                    partition: self.partition,
                    leader,
                    epoch,
                },
                timeout: PRE_VOTE_TIMEOUT,
            });
        }
        self.busy = Some(Busy::PreVote {
            calls,
            tally,
            claim,
        });
    }

    fn cas(&mut self, claim: Claim, out: &mut Vec<ElectorEffect>) {
        let op = self.op();
        self.busy = Some(Busy::Cas { op, claim });
        out.push(ElectorEffect::Meta {
            op,
            key: leader_key(self.partition),
            change: MetaChange::Cas {
                expect: claim.version,
                value: claim.next,
            },
            timeout: META_TIMEOUT,
        });
    }

    fn pre_vote_reply(
        &mut self,
        call: CallId,
        result: Result<PreVoteReply, CallError>,
        out: &mut Vec<ElectorEffect>,
    ) {
        let Some(Busy::PreVote { calls, tally, .. }) = &mut self.busy else {
            return;
        };
        // Answers to a round that is over (or to another call) are dropped.
        let Some(voter) = calls.remove(&call) else {
            return;
        };
        let verdict = match result {
            Ok(PreVoteReply { suspects: true }) => tally.yes(voter),
            _ => tally.no(voter),
        };
        match verdict {
            Verdict::Possible => {}
            Verdict::Reached => {
                let Some(Busy::PreVote { claim, .. }) = self.busy.take() else {
                    return;
                };
                self.cas(claim, out);
            }
            Verdict::Impossible => {
                debug!(partition = %self.partition, "pre-vote failed: the leader is alive for a majority");
                self.busy = None;
                self.episode_over();
            }
        }
    }

    fn meta_done(&mut self, env: &Env, op: OpId, result: MetaResult, out: &mut Vec<ElectorEffect>) {
        match (self.busy.take(), result) {
            (Some(Busy::Refresh { op: mine, before }), MetaResult::Read(result)) if mine == op => {
                let Ok(read) = result else {
                    return;
                };
                if self.current == before {
                    // Nothing newer arrived during the read: the read is the
                    // truth, even if it is older than what was believed (a
                    // value the register never held).
                    self.current = read;
                } else if let Some((v, l)) = read {
                    if self.current.is_none_or(|(cv, _)| v >= cv) {
                        self.current = Some((v, l));
                    }
                }
                self.confirmed_at = Some(env.now);
                self.tick(env, out);
            }
            (Some(Busy::Cas { op: mine, claim }), MetaResult::Cas(result)) if mine == op => {
                self.episode_over();
                let learned = match result {
                    Ok(CasOutcome::Applied { version }) => {
                        self.elections_won += 1;
                        info!(partition = %self.partition, epoch = %claim.next.epoch, "won the election");
                        out.push(ElectorEffect::Elected {
                            epoch: claim.next.epoch,
                        });
                        Some((version, claim.next))
                    }
                    Ok(CasOutcome::Conflict(Some(current))) => Some(current),
                    Ok(CasOutcome::Conflict(None)) | Err(_) => None,
                };
                if let Some(current) = learned {
                    self.current = Some(current);
                    self.confirmed_at = Some(env.now);
                    self.tick(env, out);
                }
            }
            // Not the operation in flight: it stays in flight.
            (busy, _) => self.busy = busy,
        }
    }

    /// A claim ended (won, lost or abandoned): the next needs a new
    /// suspicion episode, with a new timeout.
    fn episode_over(&mut self) {
        self.suspect_since = None;
        self.election_timeout = Duration::ZERO;
    }

    fn op(&mut self) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        op
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const P: PartitionId = PartitionId(0);

    fn n(i: u32) -> NodeId {
        NodeId(i)
    }

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    fn l(node: u32, epoch: u64) -> Leadership {
        Leadership {
            node: n(node),
            epoch: Epoch(epoch),
        }
    }

    /// A core on `me` of nodes 1..=3, and the virtual clock's origin.
    struct Rig {
        core: ElectorCore,
        t0: Instant,
        me: NodeId,
    }

    impl Rig {
        fn new(me: u32) -> Self {
            Rig {
                core: ElectorCore::new(P, ElectorConfig::default(), 7),
                t0: Instant::now(),
                me: n(me),
            }
        }

        fn env(&self, at: Duration, suspected: &[u32]) -> Env {
            Env {
                now: self.t0 + at,
                me: self.me,
                nodes: vec![n(1), n(2), n(3)],
                suspected: suspected.iter().map(|i| n(*i)).collect::<BTreeSet<_>>(),
            }
        }

        fn feed(
            &mut self,
            at: Duration,
            suspected: &[u32],
            input: ElectorInput,
        ) -> Vec<ElectorEffect> {
            let env = self.env(at, suspected);
            self.core.handle(&env, input)
        }

        fn tick(&mut self, at: Duration, suspected: &[u32]) -> Vec<ElectorEffect> {
            self.feed(at, suspected, ElectorInput::Tick)
        }

        /// Ticks, expects a read, answers it with `value`.
        fn confirm(
            &mut self,
            at: Duration,
            suspected: &[u32],
            value: Option<(u64, Leadership)>,
        ) -> Vec<ElectorEffect> {
            let effects = self.tick(at, suspected);
            let op = read_op(&effects);
            self.feed(
                at,
                suspected,
                ElectorInput::MetaDone {
                    op,
                    result: MetaResult::Read(Ok(value)),
                },
            )
        }
    }

    fn read_op(effects: &[ElectorEffect]) -> OpId {
        match effects {
            [ElectorEffect::Meta {
                op,
                change: MetaChange::Read,
                key,
                timeout,
            }] => {
                assert_eq!((key.as_str(), *timeout), ("leader/0", META_TIMEOUT));
                *op
            }
            other => panic!("expected one read, got {other:?}"),
        }
    }

    fn calls(effects: &[ElectorEffect]) -> Vec<(NodeId, CallId, PreVote)> {
        effects
            .iter()
            .filter_map(|e| match e {
                ElectorEffect::Call {
                    to,
                    call,
                    req,
                    timeout,
                } => {
                    assert_eq!(*timeout, PRE_VOTE_TIMEOUT);
                    Some((*to, *call, req.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn cas(effects: &[ElectorEffect]) -> Option<(OpId, u64, Leadership)> {
        effects.iter().find_map(|e| match e {
            ElectorEffect::Meta {
                op,
                change: MetaChange::Cas { expect, value },
                ..
            } => Some((*op, *expect, *value)),
            _ => None,
        })
    }

    /// N2 follows N1 (epoch 1, version 1), confirmed at 0.
    fn follower_of_n1() -> Rig {
        let mut r = Rig::new(2);
        let effects = r.confirm(ms(0), &[], Some((1, l(1, 1))));
        assert_eq!(
            effects,
            vec![ElectorEffect::Tell(Told::Follower(Some(n(1))))]
        );
        r
    }

    #[test]
    fn the_first_tick_reads_the_register_and_nothing_else_happens_until_it_answers() {
        let mut r = Rig::new(2);
        assert_eq!(r.core.next_wake(), None, "a host ticks once at start");
        let op = read_op(&r.tick(ms(0), &[]));
        assert!(r.core.status().claiming);
        assert_eq!(r.core.next_wake(), Some(r.t0 + ms(100)));
        assert_eq!(r.tick(ms(100), &[1]), vec![], "busy with the read");
        // Another operation's answer does not end the read.
        let other = r.feed(
            ms(150),
            &[],
            ElectorInput::MetaDone {
                op: op + 9,
                result: MetaResult::Read(Ok(None)),
            },
        );
        assert_eq!(other, vec![]);
        assert!(r.core.status().claiming);
        // A failed read leaves it to the next tick, which reads again.
        let failed = r.feed(
            ms(160),
            &[],
            ElectorInput::MetaDone {
                op,
                result: MetaResult::Read(Err(MetaError::Decode {
                    key: "leader/0".into(),
                    reason: "test".into(),
                })),
            },
        );
        assert_eq!(failed, vec![]);
        assert!(!r.core.status().claiming);
        read_op(&r.tick(ms(200), &[]));
    }

    #[test]
    fn the_leadership_is_re_read_every_refresh_period() {
        let mut r = follower_of_n1();
        let told = vec![ElectorEffect::Tell(Told::Follower(Some(n(1))))];
        assert_eq!(r.tick(ms(1999), &[]), told, "the role is told every tick");
        read_op(&r.tick(ms(2000), &[]));
    }

    #[test]
    fn a_read_while_nothing_newer_arrived_is_the_truth_even_if_older() {
        let mut r = Rig::new(2);
        r.feed(
            ms(0),
            &[],
            ElectorInput::LeadershipSeen {
                version: 5,
                leadership: l(3, 4),
            },
        );
        // The register never chose version 5: a linearizable read says 4.
        let effects = r.confirm(ms(0), &[], Some((4, l(1, 3))));
        assert_eq!(
            effects,
            vec![ElectorEffect::Tell(Told::Follower(Some(n(1))))]
        );
        assert_eq!(r.core.current(), Some((4, l(1, 3))));
        // But a newer value seen while a read is in flight wins over an older read.
        let op = read_op(&r.tick(ms(2000), &[]));
        r.feed(
            ms(2001),
            &[],
            ElectorInput::LeadershipSeen {
                version: 6,
                leadership: l(3, 5),
            },
        );
        r.feed(
            ms(2002),
            &[],
            ElectorInput::MetaDone {
                op,
                result: MetaResult::Read(Ok(Some((4, l(1, 3))))),
            },
        );
        assert_eq!(r.core.current(), Some((6, l(3, 5))));
    }

    #[test]
    fn the_cache_is_taken_only_when_newer() {
        let mut r = follower_of_n1();
        let seen = |version, leadership| ElectorInput::LeadershipSeen {
            version,
            leadership,
        };
        assert_eq!(r.feed(ms(1), &[], seen(3, l(3, 2))), vec![]);
        r.feed(ms(2), &[], seen(2, l(1, 9)));
        assert_eq!(r.core.current(), Some((3, l(3, 2))));
        assert_eq!(
            r.tick(ms(100), &[]),
            vec![ElectorEffect::Tell(Told::Follower(Some(n(3))))]
        );
    }

    #[test]
    fn the_preferred_node_claims_a_partition_never_led_at_once() {
        let mut r = Rig::new(1); // partition 0 prefers N1
        let effects = r.confirm(ms(0), &[], None);
        let (op, expect, value) = cas(&effects).expect("a claim");
        assert_eq!(effects[0], ElectorEffect::Tell(Told::Follower(None)));
        assert_eq!((expect, value), (0, l(1, 1)));
        assert!(calls(&effects).is_empty(), "no leader to pre-vote against");
        let effects = r.feed(
            ms(5),
            &[],
            ElectorInput::MetaDone {
                op,
                result: MetaResult::Cas(Ok(CasOutcome::Applied { version: 1 })),
            },
        );
        assert_eq!(
            effects,
            vec![
                ElectorEffect::Elected { epoch: Epoch(1) },
                ElectorEffect::Tell(Told::Leader(Epoch(1))),
            ]
        );
        assert_eq!(r.core.status().elections_won, 1);
        assert_eq!(r.core.current(), Some((1, l(1, 1))));
    }

    #[test]
    fn other_nodes_wait_the_initial_grace_for_the_preferred_node() {
        let mut r = Rig::new(2);
        let follow = vec![ElectorEffect::Tell(Told::Follower(None))];
        // The preferred node is healthy: never claimed.
        assert_eq!(r.confirm(ms(0), &[], None), follow);
        assert_eq!(r.tick(ms(1900), &[]), follow);
        // It is suspected from 2 s on: claimed once it was for 3 s.
        assert_eq!(r.confirm(ms(2000), &[1], None), follow);
        assert_eq!(r.tick(ms(3900), &[1]), follow);
        assert_eq!(r.confirm(ms(4000), &[1], None), follow);
        assert_eq!(r.tick(ms(4999), &[1]), follow);
        let effects = r.tick(ms(5000), &[1]);
        assert_eq!(cas(&effects).map(|(_, e, v)| (e, v)), Some((0, l(2, 1))));
        assert!(calls(&effects).is_empty());
    }

    #[test]
    fn a_leader_is_deposed_only_after_a_randomized_timeout() {
        // The timeout lies in [200, 700) ms: never before 200, always by 700.
        let mut first_claims = BTreeSet::new();
        for seed in 0..20 {
            let mut r = follower_of_n1();
            r.core.rng = StdRng::seed_from_u64(seed);
            let mut claimed_at = None;
            for t in (100..=800).step_by(10) {
                if !calls(&r.tick(ms(t), &[1])).is_empty() {
                    claimed_at = Some(t);
                    break;
                }
            }
            let t = claimed_at.expect("claimed by 700 ms after the suspicion");
            // The suspicion started at the first tick that saw it (100 ms).
            assert!((300..=800).contains(&t), "claimed at {t}");
            first_claims.insert(t);
        }
        assert!(first_claims.len() > 3, "timeouts vary: {first_claims:?}");
    }

    #[test]
    fn a_suspicion_that_ends_starts_over() {
        let mut r = follower_of_n1();
        r.core.config.election_timeout_min = ms(300);
        r.core.config.election_timeout_max = ms(300);
        r.tick(ms(100), &[1]);
        r.tick(ms(300), &[1]);
        r.tick(ms(350), &[]); // seen again
        assert!(
            calls(&r.tick(ms(400), &[1])).is_empty(),
            "a new episode at 400"
        );
        assert!(calls(&r.tick(ms(699), &[1])).is_empty());
        assert_eq!(calls(&r.tick(ms(700), &[1])).len(), 2);
    }

    /// N2 has suspected N1 long enough: the pre-vote calls.
    fn pre_voting() -> (Rig, Vec<(NodeId, CallId, PreVote)>) {
        let mut r = follower_of_n1();
        r.core.config.election_timeout_min = ms(200);
        r.core.config.election_timeout_max = ms(200);
        r.tick(ms(100), &[1]);
        let effects = r.tick(ms(300), &[1]);
        assert_eq!(effects[0], ElectorEffect::Tell(Told::Follower(Some(n(1)))));
        let c = calls(&effects);
        let req = PreVote {
            partition: P,
            leader: n(1),
            epoch: Epoch(1),
        };
        assert_eq!(
            c.iter()
                .map(|(to, _, r)| (*to, r.clone()))
                .collect::<Vec<_>>(),
            vec![(n(1), req.clone()), (n(3), req)]
        );
        assert!(cas(&effects).is_none(), "no claim before the pre-vote");
        (r, c)
    }

    #[test]
    fn a_pre_vote_that_a_majority_suspects_too_leads_to_the_claim() {
        let (mut r, c) = pre_voting();
        let yes = r.feed(
            ms(310),
            &[1],
            ElectorInput::Reply {
                call: c[1].1,
                from: n(3),
                result: Ok(PreVoteReply { suspects: true }),
            },
        );
        let (op, expect, value) = cas(&yes).expect("the claim");
        assert_eq!((expect, value), (1, l(2, 2)));
        // The deposed leader's late answer changes nothing.
        let late = r.feed(
            ms(320),
            &[1],
            ElectorInput::Reply {
                call: c[0].1,
                from: n(1),
                result: Ok(PreVoteReply { suspects: false }),
            },
        );
        assert_eq!(late, vec![]);
        let won = r.feed(
            ms(330),
            &[1],
            ElectorInput::MetaDone {
                op,
                result: MetaResult::Cas(Ok(CasOutcome::Applied { version: 2 })),
            },
        );
        assert_eq!(
            won,
            vec![
                ElectorEffect::Elected { epoch: Epoch(2) },
                ElectorEffect::Tell(Told::Leader(Epoch(2))),
            ]
        );
    }

    #[test]
    fn a_pre_vote_without_a_majority_deposes_nobody() {
        let (mut r, c) = pre_voting();
        let no = r.feed(
            ms(310),
            &[1],
            ElectorInput::Reply {
                call: c[1].1,
                from: n(3),
                result: Ok(PreVoteReply { suspects: false }),
            },
        );
        assert_eq!(no, vec![], "N1 may still answer");
        let lost = r.feed(
            ms(320),
            &[1],
            ElectorInput::Reply {
                call: c[0].1,
                from: n(1),
                result: Err(CallError::Timeout(n(1), PRE_VOTE_TIMEOUT)),
            },
        );
        assert_eq!(lost, vec![]);
        assert!(!r.core.status().claiming);
        assert_eq!(r.core.current(), Some((1, l(1, 1))), "N1 still leads");
        // The next attempt needs a whole new suspicion episode.
        assert!(calls(&r.tick(ms(400), &[1])).is_empty());
        assert!(calls(&r.tick(ms(599), &[1])).is_empty());
        assert_eq!(calls(&r.tick(ms(600), &[1])).len(), 2);
    }

    #[test]
    fn a_pre_vote_is_answered_from_what_this_node_knows() {
        let mut r = follower_of_n1();
        let ask = |epoch| ElectorInput::Request {
            token: 4,
            req: PreVote {
                partition: P,
                leader: n(1),
                epoch: Epoch(epoch),
            },
        };
        let answer = |suspects| {
            vec![ElectorEffect::Respond {
                token: 4,
                resp: PreVoteReply { suspects },
            }]
        };
        assert_eq!(r.feed(ms(1), &[1], ask(1)), answer(true));
        assert_eq!(r.feed(ms(1), &[3], ask(1)), answer(false), "N1 is seen");
        r.feed(
            ms(2),
            &[1],
            ElectorInput::LeadershipSeen {
                version: 2,
                leadership: l(3, 2),
            },
        );
        assert_eq!(
            r.feed(ms(3), &[1], ask(1)),
            answer(false),
            "a newer epoch is known"
        );
        assert_eq!(r.feed(ms(3), &[1], ask(2)), answer(true));
    }

    fn health(r: &mut Rig, at: Duration, degraded: &[u32]) {
        let degraded = degraded.iter().map(|i| n(*i)).collect();
        assert!(r
            .feed(at, &[], ElectorInput::Health { degraded })
            .is_empty());
    }

    #[test]
    fn a_degraded_leader_is_deposed_by_a_node_whose_other_links_are_healthy() {
        let mut r = follower_of_n1();
        r.core.config.election_timeout_min = ms(200);
        r.core.config.election_timeout_max = ms(200);
        // N1 is connected but its link is scored degraded; N3 is healthy.
        health(&mut r, ms(50), &[1]);
        assert!(calls(&r.tick(ms(100), &[])).is_empty(), "the wait first");
        let c = calls(&r.tick(ms(300), &[]));
        assert_eq!(c.len(), 2, "the pre-vote after the election timeout");
        // A voter that also scores N1 degraded (and this node healthy) says yes.
        let ask = ElectorInput::Request {
            token: 9,
            req: c[0].2.clone(),
        };
        let yes = r.feed(ms(310), &[], ask.clone());
        assert_eq!(
            yes,
            vec![ElectorEffect::Respond {
                token: 9,
                resp: PreVoteReply { suspects: true }
            }]
        );
        // Healthy again: no.
        health(&mut r, ms(320), &[]);
        let no = r.feed(ms(330), &[], ask);
        assert_eq!(
            no,
            vec![ElectorEffect::Respond {
                token: 9,
                resp: PreVoteReply { suspects: false }
            }]
        );
    }

    #[test]
    fn when_every_link_is_degraded_nothing_moves() {
        // N2 scores both peers degraded: it is the sick one, or everyone is.
        let mut r = follower_of_n1();
        r.core.config.election_timeout_min = ms(200);
        r.core.config.election_timeout_max = ms(200);
        health(&mut r, ms(50), &[1, 3]);
        for t in (100..3000).step_by(100) {
            assert!(calls(&r.tick(ms(t), &[])).is_empty(), "a claim at {t} ms");
        }
        let ask = ElectorInput::Request {
            token: 9,
            req: PreVote {
                partition: P,
                leader: n(1),
                epoch: Epoch(1),
            },
        };
        assert_eq!(
            r.feed(ms(3000), &[], ask),
            vec![ElectorEffect::Respond {
                token: 9,
                resp: PreVoteReply { suspects: false }
            }],
            "no vote against a leader while this node's own links are bad"
        );
        // A degraded link to a node that is suspected counts as gone too.
        health(&mut r, ms(3100), &[1]);
        assert!(calls(&r.tick(ms(3200), &[3])).is_empty());
        assert!(calls(&r.tick(ms(3500), &[3])).is_empty());
    }

    #[test]
    fn a_conflicting_claim_teaches_the_current_leadership() {
        let (mut r, c) = pre_voting();
        let yes = r.feed(
            ms(310),
            &[1],
            ElectorInput::Reply {
                call: c[1].1,
                from: n(3),
                result: Ok(PreVoteReply { suspects: true }),
            },
        );
        let (op, _, _) = cas(&yes).unwrap();
        let lost = r.feed(
            ms(320),
            &[1],
            ElectorInput::MetaDone {
                op,
                result: MetaResult::Cas(Ok(CasOutcome::Conflict(Some((2, l(3, 2)))))),
            },
        );
        assert_eq!(lost, vec![ElectorEffect::Tell(Told::Follower(Some(n(3))))]);
        assert_eq!(r.core.status().elections_won, 0);
        // An unknown outcome teaches nothing; the next tick reads again when due.
        let (mut r, c) = pre_voting();
        let yes = r.feed(
            ms(310),
            &[1],
            ElectorInput::Reply {
                call: c[1].1,
                from: n(3),
                result: Ok(PreVoteReply { suspects: true }),
            },
        );
        let (op, _, _) = cas(&yes).unwrap();
        let unknown = r.feed(
            ms(320),
            &[1],
            ElectorInput::MetaDone {
                op,
                result: MetaResult::Cas(Err(MetaError::Indeterminate {
                    key: "leader/0".into(),
                })),
            },
        );
        assert_eq!(unknown, vec![]);
        assert_eq!(r.core.current(), Some((1, l(1, 1))));
    }

    #[test]
    fn there_is_no_epoch_after_the_last_to_claim() {
        let mut r = Rig::new(2);
        r.core.config.election_timeout_min = ms(200);
        r.core.config.election_timeout_max = ms(200);
        r.confirm(ms(0), &[], Some((1, l(1, u64::MAX))));
        r.tick(ms(100), &[1]);
        let effects = r.tick(ms(300), &[1]);
        assert_eq!(
            effects,
            vec![ElectorEffect::Tell(Told::Follower(Some(n(1))))]
        );
        assert!(!r.core.status().claiming);
    }

    #[test]
    fn a_leader_without_a_majority_stops_serving_within_step_down_after_and_reconfirms() {
        let mut r = Rig::new(1);
        let lead = vec![ElectorEffect::Tell(Told::Leader(Epoch(1)))];
        assert_eq!(r.confirm(ms(0), &[], Some((1, l(1, 1)))), lead);
        // Cut off from both peers at 100 ms: no longer told to lead ...
        assert_eq!(r.tick(ms(100), &[2, 3]), vec![]);
        assert_eq!(r.tick(ms(1099), &[2, 3]), vec![]);
        // ... and told to stop 1 s later, whatever else is in flight: a
        // refresh (due at 2 s) is still running when the bound passes again.
        let effects = r.tick(ms(1100), &[2, 3]);
        assert_eq!(effects[0], ElectorEffect::Tell(Told::Follower(None)));
        let op = read_op(&effects[1..]);
        let again = r.tick(ms(1200), &[2, 3]);
        assert_eq!(again, vec![ElectorEffect::Tell(Told::Follower(None))]);
        // The majority is back: nothing is served before the register confirms.
        assert_eq!(r.tick(ms(1300), &[]), vec![], "the read is still running");
        let confirmed = r.feed(
            ms(1400),
            &[],
            ElectorInput::MetaDone {
                op,
                result: MetaResult::Read(Ok(Some((1, l(1, 1))))),
            },
        );
        assert_eq!(confirmed, lead);
    }

    #[test]
    fn the_same_seed_and_inputs_give_the_same_effects() {
        let run = || {
            let mut r = follower_of_n1();
            let mut all = Vec::new();
            for t in (100..=1000).step_by(50) {
                all.extend(r.tick(ms(t), &[1]));
            }
            all
        };
        assert_eq!(run(), run());
    }

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
