//! The CASPaxos proposer as a state machine without I/O: phases, backoff
//! and outcome rules, with calls, time and randomness as inputs and
//! effects. [`MetadataClient`](super::MetadataClient) is its shell on a
//! node (one task per node carries out its effects); the deterministic
//! simulator runs the same core (see `docs/CORES.md`).
//!
//! Rules (each with a test below):
//! - **Phases**: an attempt picks a ballot above every round seen, gathers
//!   promises from a majority (phase 1), applies the change to the value
//!   accepted under the highest ballot ([`current_value`], [`Change::apply`]),
//!   and has a majority accept the result (phase 2). A round ends as soon as
//!   its outcome is known ([`Tally`]).
//! - **Nothing to write**: a read of a register no majority ever accepted a
//!   value for is answered without phase 2.
//! - **Backoff**: every attempt after the first waits a jittered pause that
//!   doubles up to 320 ms (from the core's seeded RNG).
//! - **A partial accept is indeterminate**: once an accept of a CAS reached
//!   some acceptors but not a majority, a later conflict does not prove the
//!   CAS failed (another proposer may have adopted and completed it): the
//!   outcome is `Indeterminate`, and so is a deadline passed after it.
//! - **Deadline**: one per operation; a late reply changes nothing.
//! - **Chosen**: a value accepted by a majority is reported
//!   ([`ProposerEffect::Chosen`]) so the host can update its cache.
//!
//! `Bug::ConflictAfterPartialAccept` (simulator tests only) reports the
//! conflict instead of `Indeterminate`.

use super::core::{AcceptReply, Ballot, PrepareReply, Versioned};
use super::messages::{Accept, AcceptorRequest, AcceptorResponse, Prepare};
use super::proposer::{current_value, Change, Outcome};
use super::MetaError;
use crate::actors::bugs::{Bug, BugSet};
use crate::actors::env::Env;
use crate::actors::quorum::{Tally, Verdict};
use crate::node::CallError;
use crate::types::NodeId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest single acceptor round trip one attempt waits for.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1000);

/// An operation of the host's, chosen by the host.
pub type OpId = u64;

/// A call to an acceptor, chosen by the core (its own counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// What the proposer is configured with.
#[derive(Clone, Debug)]
pub struct ProposerConfig {
    /// Deliberately wrong rules (empty but in the simulator's tests).
    pub bugs: BugSet,
}

/// What the proposer learns.
#[derive(Clone, Debug)]
pub enum ProposerInput {
    /// Run `change` on `key` within `timeout`; answered with one
    /// [`ProposerEffect::Done`] for `op`.
    Run {
        op: OpId,
        key: String,
        change: Change,
        timeout: Duration,
    },
    /// The one reply to call `call`, or why there is none.
    Reply {
        call: CallId,
        from: NodeId,
        result: Result<AcceptorResponse, CallError>,
    },
    /// Time passed (see [`ProposerCore::next_wake`]).
    Tick,
}

/// What the proposer asks its host to do.
#[derive(Clone, Debug)]
pub enum ProposerEffect {
    /// Send `req` to `to`; answer with exactly one [`ProposerInput::Reply`].
    Call {
        to: NodeId,
        call: CallId,
        req: AcceptorRequest,
        timeout: Duration,
    },
    /// Operation `op` ended.
    Done {
        op: OpId,
        result: Result<Outcome, MetaError>,
    },
    /// `value` was accepted by a majority for `key` by operation `op` (the
    /// host's cache may take it and tell the other nodes).
    Chosen {
        op: OpId,
        key: String,
        value: Versioned,
    },
}

/// Where one operation stands.
#[derive(Clone, Debug)]
enum Phase {
    /// Waiting before the next attempt.
    Backoff { until: Instant },
    /// Phase 1 of an attempt at `ballot`.
    Prepare {
        /// The attempt's ballot.
        ballot: Ballot,
        /// Prepares not answered yet, to their acceptor.
        calls: BTreeMap<CallId, NodeId>,
        /// The promises so far: each acceptor's accepted ballot and value.
        promises: Vec<(Ballot, Option<Versioned>)>,
        /// Promises against refusals and failures.
        tally: Tally,
    },
    /// Phase 2 of an attempt, writing `next`.
    Accept {
        /// The value being written.
        next: Versioned,
        /// What the operation reports once a majority accepted.
        outcome: Outcome,
        /// Accepts not answered yet, to their acceptor.
        calls: BTreeMap<CallId, NodeId>,
        /// Accepts against refusals and failures.
        tally: Tally,
    },
}

/// One operation in flight.
#[derive(Clone, Debug)]
struct Running {
    /// The register key.
    key: String,
    /// What it does to the value.
    change: Change,
    /// When it gives up.
    deadline: Instant,
    /// Its whole budget (for the timeout error).
    timeout: Duration,
    /// Attempts started.
    attempts: u32,
    /// An accept of this CAS reached some acceptors but not a majority.
    partially_written: bool,
    /// Why the last attempt failed (for the timeout error).
    last: String,
    /// Where it stands.
    phase: Phase,
}

/// A node's proposer: every register operation it runs.
pub struct ProposerCore {
    /// Bug switches.
    config: ProposerConfig,
    /// Backoff jitter (seeded: the simulator's runs repeat).
    rng: StdRng,
    /// The highest round used or seen; the next ballot is above it.
    round: u64,
    /// Operations in flight.
    ops: BTreeMap<OpId, Running>,
    /// Calls in flight, to their operation.
    calls: BTreeMap<CallId, OpId>,
    /// The last call id handed out.
    next_call: u64,
}

impl ProposerCore {
    pub fn new(config: ProposerConfig, seed: u64) -> Self {
        ProposerCore {
            config,
            rng: StdRng::seed_from_u64(seed),
            round: 0,
            ops: BTreeMap::new(),
            calls: BTreeMap::new(),
            next_call: 0,
        }
    }

    /// Operations in flight.
    pub fn ops(&self) -> usize {
        self.ops.len()
    }

    /// The one entry point.
    pub fn handle(&mut self, env: &Env, input: ProposerInput) -> Vec<ProposerEffect> {
        let mut out = Vec::new();
        match input {
            ProposerInput::Run {
                op,
                key,
                change,
                timeout,
            } => {
                let running = Running {
                    key,
                    change,
                    deadline: env.now.checked_add(timeout).unwrap_or(env.now),
                    timeout,
                    attempts: 0,
                    partially_written: false,
                    last: "no attempt finished".into(),
                    phase: Phase::Backoff { until: env.now },
                };
                self.ops.insert(op, running);
                self.attempt(env, op, &mut out);
            }
            ProposerInput::Reply { call, from, result } => {
                if let Some(op) = self.calls.remove(&call) {
                    self.reply(env, op, call, from, result, &mut out);
                }
            }
            ProposerInput::Tick => {
                let due: Vec<OpId> = self
                    .ops
                    .iter()
                    .filter(|(_, r)| {
                        env.now >= r.deadline
                            || matches!(r.phase, Phase::Backoff { until } if until <= env.now)
                    })
                    .map(|(op, _)| *op)
                    .collect();
                for op in due {
                    self.attempt(env, op, &mut out);
                }
            }
        }
        out
    }

    /// When an operation's backoff or deadline is due.
    pub fn next_wake(&self) -> Option<Instant> {
        self.ops
            .values()
            .map(|r| match r.phase {
                Phase::Backoff { until } => until.min(r.deadline),
                _ => r.deadline,
            })
            .min()
    }

    /// Ends `op` with `result`.
    fn finish(
        &mut self,
        op: OpId,
        result: Result<Outcome, MetaError>,
        out: &mut Vec<ProposerEffect>,
    ) {
        self.ops.remove(&op);
        self.calls.retain(|_, o| *o != op);
        out.push(ProposerEffect::Done { op, result });
    }

    /// The error of an operation out of time.
    fn expired(r: &Running) -> MetaError {
        if r.partially_written {
            MetaError::Indeterminate { key: r.key.clone() }
        } else {
            MetaError::Timeout {
                op: match r.change {
                    Change::Read => "read",
                    Change::Cas { .. } => "cas",
                },
                key: r.key.clone(),
                timeout: r.timeout,
                attempts: r.attempts,
                last: r.last.clone(),
            }
        }
    }

    /// Starts the next attempt of `op` if its backoff is over (or ends it
    /// past its deadline); an attempt after the first backs off first.
    fn attempt(&mut self, env: &Env, op: OpId, out: &mut Vec<ProposerEffect>) {
        let Some(r) = self.ops.get_mut(&op) else {
            return;
        };
        if env.now >= r.deadline {
            let e = Self::expired(r);
            self.finish(op, Err(e), out);
            return;
        }
        match r.phase {
            Phase::Backoff { until } if until <= env.now => {}
            Phase::Backoff { .. } => return,
            _ => {
                // The attempt in flight failed: back off.
                let cap = 10u64 * 2u64.pow(r.attempts.min(5));
                let pause = Duration::from_millis(self.rng.gen_range(cap / 2..=cap));
                r.phase = Phase::Backoff {
                    until: env.now.checked_add(pause).unwrap_or(r.deadline),
                };
                self.calls.retain(|_, o| *o != op);
                return;
            }
        }
        r.attempts += 1;
        let per_call = r
            .deadline
            .saturating_duration_since(env.now)
            .min(CALL_TIMEOUT);
        self.round = self.round.saturating_add(1).min(Ballot::MAX_ROUND);
        let ballot = Ballot::new(self.round, env.me);
        let key = r.key.clone();
        let mut calls = BTreeMap::new();
        for to in env.nodes.clone() {
            self.next_call += 1;
            let call = CallId(self.next_call);
            calls.insert(call, to);
            self.calls.insert(call, op);
            out.push(ProposerEffect::Call {
                to,
                call,
                req: AcceptorRequest::Prepare(Prepare {
                    key: key.clone(),
                    ballot,
                }),
                timeout: per_call,
            });
        }
        if let Some(r) = self.ops.get_mut(&op) {
            r.phase = Phase::Prepare {
                ballot,
                calls,
                promises: Vec::new(),
                tally: Tally::majority(env.nodes.iter().copied()),
            };
        }
    }

    fn observe_round(&mut self, promised: Ballot) {
        let round = promised.round.min(Ballot::MAX_ROUND - 1);
        self.round = self.round.max(round);
    }

    fn reply(
        &mut self,
        env: &Env,
        op: OpId,
        call: CallId,
        from: NodeId,
        result: Result<AcceptorResponse, CallError>,
        out: &mut Vec<ProposerEffect>,
    ) {
        let Some(r) = self.ops.get_mut(&op) else {
            return;
        };
        enum Next {
            Wait,
            Retry,
            Decided,
        }
        // What the answer says, whichever phase it belongs to: a yes (with
        // the promise, in phase 1), or why not (with a higher promise seen).
        let (yes, promise, refused, why) = match result {
            Ok(AcceptorResponse::Prepare(Ok(PrepareReply::Promise { accepted, value }))) => {
                (true, Some((accepted, value)), None, None)
            }
            Ok(AcceptorResponse::Accept(Ok(AcceptReply::Accepted))) => (true, None, None, None),
            Ok(
                AcceptorResponse::Prepare(Ok(PrepareReply::Reject { promised }))
                | AcceptorResponse::Accept(Ok(AcceptReply::Reject { promised })),
            ) => (
                false,
                None,
                Some(promised),
                Some(format!("{from} promised a higher ballot")),
            ),
            Ok(AcceptorResponse::Prepare(Err(e)) | AcceptorResponse::Accept(Err(e))) => {
                (false, None, None, Some(format!("{from}: {e}")))
            }
            Err(e) => (false, None, None, Some(e.to_string())),
        };
        let next = match &mut r.phase {
            Phase::Prepare {
                calls,
                promises,
                tally,
                ..
            } => {
                if calls.remove(&call).is_none() {
                    return;
                }
                if let Some(why) = why {
                    r.last = why;
                }
                // An accept's answer to a prepare is a wrong reply: a no.
                let verdict = match promise {
                    Some(p) if yes => {
                        promises.push(p);
                        tally.yes(from)
                    }
                    _ => {
                        if yes {
                            r.last = format!("{from}: a wrong reply");
                        }
                        tally.no(from)
                    }
                };
                match verdict {
                    Verdict::Reached => Next::Decided,
                    Verdict::Impossible => Next::Retry,
                    Verdict::Possible => Next::Wait,
                }
            }
            Phase::Accept { calls, tally, .. } => {
                if calls.remove(&call).is_none() {
                    return;
                }
                if let Some(why) = why {
                    r.last = why;
                }
                // A promise is a wrong reply to an accept: a no.
                let verdict = if yes && promise.is_none() {
                    tally.yes(from)
                } else {
                    if yes {
                        r.last = format!("{from}: a wrong reply");
                    }
                    tally.no(from)
                };
                match verdict {
                    Verdict::Reached => Next::Decided,
                    Verdict::Impossible => {
                        if matches!(r.change, Change::Cas { .. }) {
                            // A new version sent to some acceptors may be
                            // chosen by whoever runs the next prepare.
                            r.partially_written = true;
                        }
                        Next::Retry
                    }
                    Verdict::Possible => Next::Wait,
                }
            }
            Phase::Backoff { .. } => return,
        };
        // Only an answer still awaited gets here.
        if let Some(promised) = refused {
            self.observe_round(promised);
        }
        match next {
            Next::Wait => {}
            Next::Retry => self.attempt(env, op, out),
            Next::Decided => self.decided(env, op, out),
        }
    }

    /// The phase in flight of `op` reached its quorum.
    fn decided(&mut self, env: &Env, op: OpId, out: &mut Vec<ProposerEffect>) {
        let bugs = self.config.bugs;
        let Some(r) = self.ops.get_mut(&op) else {
            return;
        };
        match &r.phase {
            Phase::Prepare {
                ballot, promises, ..
            } => {
                let ballot = *ballot;
                let current = current_value(promises.iter().map(|(b, v)| (b, v)));
                let (next, outcome) = r.change.apply(current);
                if r.partially_written && matches!(outcome, Outcome::Conflict(_)) {
                    let result = if bugs.has(Bug::ConflictAfterPartialAccept) {
                        Ok(outcome)
                    } else {
                        Err(MetaError::Indeterminate { key: r.key.clone() })
                    };
                    self.finish(op, result, out);
                    return;
                }
                let Some(next) = next else {
                    // Nothing was ever accepted by this majority.
                    self.finish(op, Ok(outcome), out);
                    return;
                };
                let per_call = r
                    .deadline
                    .saturating_duration_since(env.now)
                    .min(CALL_TIMEOUT);
                let key = r.key.clone();
                let mut calls = BTreeMap::new();
                for to in env.nodes.clone() {
                    self.next_call += 1;
                    let call = CallId(self.next_call);
                    calls.insert(call, to);
                    self.calls.insert(call, op);
                    out.push(ProposerEffect::Call {
                        to,
                        call,
                        req: AcceptorRequest::Accept(Accept {
                            key: key.clone(),
                            ballot,
                            value: next.clone(),
                        }),
                        timeout: per_call,
                    });
                }
                if let Some(r) = self.ops.get_mut(&op) {
                    r.phase = Phase::Accept {
                        next,
                        outcome,
                        calls,
                        tally: Tally::majority(env.nodes.iter().copied()),
                    };
                }
            }
            Phase::Accept { next, outcome, .. } => {
                let (key, next, outcome) = (r.key.clone(), next.clone(), outcome.clone());
                out.push(ProposerEffect::Chosen {
                    op,
                    key,
                    value: next,
                });
                self.finish(op, Ok(outcome), out);
            }
            Phase::Backoff { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::metadata::core::AcceptorState;

    fn env(now: Instant) -> Env {
        Env {
            now,
            me: NodeId(1),
            nodes: vec![NodeId(1), NodeId(2), NodeId(3)],
            suspected: Default::default(),
        }
    }

    /// Runs every call of `effects` against `acceptors` (those listed in
    /// `reach` answer, the others fail), feeding replies back, until done.
    fn drive(
        p: &mut ProposerCore,
        acceptors: &mut BTreeMap<NodeId, AcceptorState>,
        reach: &[u32],
        accept_reach: &[u32],
        mut effects: Vec<ProposerEffect>,
        now: Instant,
    ) -> Vec<ProposerEffect> {
        let mut done = Vec::new();
        // In order: a host carries effects out in the order they come.
        while !effects.is_empty() {
            let e = effects.remove(0);
            match e {
                ProposerEffect::Call { to, call, req, .. } => {
                    let result = match req {
                        AcceptorRequest::Prepare(m) if reach.contains(&to.0) => {
                            Ok(AcceptorResponse::Prepare(Ok(acceptors
                                .entry(to)
                                .or_default()
                                .prepare(m.ballot)
                                .0)))
                        }
                        AcceptorRequest::Accept(m) if accept_reach.contains(&to.0) => {
                            Ok(AcceptorResponse::Accept(Ok(acceptors
                                .entry(to)
                                .or_default()
                                .accept(m.ballot, m.value)
                                .0)))
                        }
                        _ => Err(CallError::Timeout(to, CALL_TIMEOUT)),
                    };
                    effects.extend(p.handle(
                        &env(now),
                        ProposerInput::Reply {
                            call,
                            from: to,
                            result,
                        },
                    ));
                }
                other => done.push(other),
            }
        }
        done
    }

    fn cas(expected: u64, v: u8, op: u64) -> Change {
        Change::Cas {
            expected,
            value: vec![v],
            op,
        }
    }

    #[test]
    fn a_cas_on_a_majority_is_chosen_and_reported() {
        let t0 = Instant::now();
        let mut p = ProposerCore::new(ProposerConfig { bugs: BugSet::NONE }, 1);
        let mut acc = BTreeMap::new();
        let run = ProposerInput::Run {
            op: 7,
            key: "k".into(),
            change: cas(0, 1, 5),
            timeout: Duration::from_secs(1),
        };
        let first = p.handle(&env(t0), run);
        assert_eq!(first.len(), 3, "a prepare to every acceptor");
        let done = drive(&mut p, &mut acc, &[1, 2], &[1, 2], first, t0);
        assert!(matches!(done[0], ProposerEffect::Chosen { .. }), "{done:?}");
        match &done[1] {
            ProposerEffect::Done {
                op: 7,
                result: Ok(Outcome::Value(Some(v))),
            } => assert_eq!((v.version, v.value.clone()), (1, vec![1])),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.ops(), 0);
    }

    #[test]
    fn a_read_of_an_empty_register_skips_phase_two() {
        let t0 = Instant::now();
        let mut p = ProposerCore::new(ProposerConfig { bugs: BugSet::NONE }, 1);
        let mut acc = BTreeMap::new();
        let run = ProposerInput::Run {
            op: 1,
            key: "k".into(),
            change: Change::Read,
            timeout: Duration::from_secs(1),
        };
        let first = p.handle(&env(t0), run);
        let done = drive(&mut p, &mut acc, &[1, 2, 3], &[], first, t0);
        assert!(matches!(
            done.as_slice(),
            [ProposerEffect::Done {
                result: Ok(Outcome::Value(None)),
                ..
            }]
        ));
    }

    /// A CAS whose accept reached one acceptor, then meets a conflict: the
    /// outcome is unknown (with the bug: a conflict).
    fn partial_then_conflict(bugs: BugSet) -> Result<Outcome, MetaError> {
        let t0 = Instant::now();
        let mut p = ProposerCore::new(ProposerConfig { bugs }, 1);
        let mut acc = BTreeMap::new();
        let run = ProposerInput::Run {
            op: 1,
            key: "k".into(),
            change: cas(0, 1, 9),
            timeout: Duration::from_secs(5),
        };
        let first = p.handle(&env(t0), run);
        // Prepare reaches all, the accept only node 1.
        let done = drive(&mut p, &mut acc, &[1, 2, 3], &[1], first, t0);
        assert!(done.is_empty(), "retrying: {done:?}");
        // Someone else writes version 1 on nodes 2 and 3 under a high ballot.
        let other = Ballot { round: 50, node: 2 };
        for n in [2, 3] {
            let a = acc.entry(NodeId(n)).or_default();
            a.prepare(other);
            a.accept(
                other,
                Versioned {
                    version: 1,
                    value: vec![2],
                    writer: 77,
                },
            );
        }
        let later = t0 + Duration::from_secs(1);
        let retry = p.handle(&env(later), ProposerInput::Tick);
        let done = drive(&mut p, &mut acc, &[2, 3], &[2, 3], retry, later);
        let retry = if done.is_empty() {
            // Rejected (ballot too low): the next attempt goes above it.
            let later = later + Duration::from_secs(1);
            let e = p.handle(&env(later), ProposerInput::Tick);
            drive(&mut p, &mut acc, &[2, 3], &[2, 3], e, later)
        } else {
            done
        };
        match retry.into_iter().last() {
            Some(ProposerEffect::Done { result, .. }) => result,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_partial_accept_makes_a_later_conflict_indeterminate() {
        assert!(matches!(
            partial_then_conflict(BugSet::NONE),
            Err(MetaError::Indeterminate { .. })
        ));
        assert!(matches!(
            partial_then_conflict(BugSet::NONE.with(Bug::ConflictAfterPartialAccept)),
            Ok(Outcome::Conflict(_))
        ));
    }

    #[test]
    fn the_deadline_ends_an_operation() {
        let t0 = Instant::now();
        let mut p = ProposerCore::new(ProposerConfig { bugs: BugSet::NONE }, 1);
        let run = ProposerInput::Run {
            op: 3,
            key: "k".into(),
            change: Change::Read,
            timeout: Duration::from_millis(100),
        };
        p.handle(&env(t0), run);
        assert_eq!(p.next_wake(), Some(t0 + Duration::from_millis(100)));
        let out = p.handle(&env(t0 + Duration::from_millis(100)), ProposerInput::Tick);
        assert!(matches!(
            out.as_slice(),
            [ProposerEffect::Done {
                op: 3,
                result: Err(MetaError::Timeout { .. })
            }]
        ));
    }
    /// Three nodes' proposers run CASes at once against three acceptors;
    /// every call is answered in a seeded random order, some fail, time
    /// jumps to the next due backoff. Every value reported chosen for a
    /// version is the only one, and a conflict reports a chosen value.
    #[test]
    fn concurrent_proposers_under_random_delivery_never_choose_two_values() {
        use rand::seq::SliceRandom;
        for seed in 0..200u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let t0 = Instant::now();
            let nodes = [NodeId(1), NodeId(2), NodeId(3)];
            let env_of = |me: NodeId, now: Instant| Env {
                now,
                me,
                nodes: nodes.to_vec(),
                suspected: Default::default(),
            };
            let mut proposers: BTreeMap<NodeId, ProposerCore> = nodes
                .iter()
                .map(|&n| {
                    (
                        n,
                        ProposerCore::new(ProposerConfig { bugs: BugSet::NONE }, seed + n.0 as u64),
                    )
                })
                .collect();
            let mut acceptors: BTreeMap<NodeId, AcceptorState> = BTreeMap::new();
            let mut chosen: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            // (proposer, effect) waiting to be carried out.
            let mut pending: Vec<(NodeId, ProposerEffect)> = Vec::new();
            let mut now = t0;
            let mut next_op = 0u64;
            for &n in &nodes {
                for _ in 0..3 {
                    next_op += 1;
                    let run = ProposerInput::Run {
                        op: next_op,
                        key: "k".into(),
                        change: cas(rng.gen_range(0..4), next_op as u8, next_op),
                        timeout: Duration::from_secs(5),
                    };
                    let fx = proposers.get_mut(&n).unwrap().handle(&env_of(n, now), run);
                    pending.extend(fx.into_iter().map(|e| (n, e)));
                }
            }
            let mut done = 0;
            for _step in 0..10_000 {
                if pending.is_empty() {
                    // Jump to the earliest due time, or stop when all ended.
                    let Some(at) = proposers.values().filter_map(|p| p.next_wake()).min() else {
                        break;
                    };
                    now = now.max(at);
                    for &n in &nodes {
                        let fx = proposers
                            .get_mut(&n)
                            .unwrap()
                            .handle(&env_of(n, now), ProposerInput::Tick);
                        pending.extend(fx.into_iter().map(|e| (n, e)));
                    }
                    continue;
                }
                pending.shuffle(&mut rng);
                let (n, effect) = pending.pop().unwrap();
                match effect {
                    ProposerEffect::Call { to, call, req, .. } => {
                        let result = if rng.gen_bool(0.15) {
                            Err(CallError::Timeout(to, CALL_TIMEOUT))
                        } else {
                            let a = acceptors.entry(to).or_default();
                            Ok(match req {
                                AcceptorRequest::Prepare(m) => {
                                    AcceptorResponse::Prepare(Ok(a.prepare(m.ballot).0))
                                }
                                AcceptorRequest::Accept(m) => {
                                    AcceptorResponse::Accept(Ok(a.accept(m.ballot, m.value).0))
                                }
                            })
                        };
                        let fx = proposers.get_mut(&n).unwrap().handle(
                            &env_of(n, now),
                            ProposerInput::Reply {
                                call,
                                from: to,
                                result,
                            },
                        );
                        pending.extend(fx.into_iter().map(|e| (n, e)));
                    }
                    ProposerEffect::Chosen { value, .. } => {
                        if let Some(prev) = chosen.insert(value.version, value.value.clone()) {
                            assert_eq!(
                                prev, value.value,
                                "seed {seed}: version {} chosen twice",
                                value.version
                            );
                        }
                    }
                    ProposerEffect::Done { result, .. } => {
                        done += 1;
                        if let Ok(Outcome::Conflict(Some(cur)) | Outcome::Value(Some(cur))) =
                            &result
                        {
                            if let Some(prev) = chosen.get(&cur.version) {
                                assert_eq!(
                                    prev, &cur.value,
                                    "seed {seed}: reported a value never chosen"
                                );
                            }
                        }
                    }
                }
            }
            assert_eq!(done, 9, "seed {seed}: every operation ends");
        }
    }
}
