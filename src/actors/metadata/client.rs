//! The CASPaxos proposer's shell: one task per node carries out the effects
//! of [`ProposerCore`] (`proposer_core.rs`, where the rules are): calls to
//! the acceptors, the wait until its next due time, results, and what the
//! cache learns. Any node may propose; every operation has one deadline and
//! ends in a value, a conflict or a typed error.

use super::cache::CacheMark;
use super::core::Versioned;
use super::messages::{AcceptorRequest, AcceptorResponse, MetaUpdate};
use super::proposer::{Change, Outcome};
use super::proposer_core::{OpId, ProposerConfig, ProposerCore, ProposerEffect, ProposerInput};
use super::MetaCache;
use crate::actors::bugs::BugSet;
use crate::actors::env::Env;
use crate::node::{CallError, Net, Wire};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("metadata {op} of {key:?} did not reach a majority within {timeout:?} ({attempts} attempts; last: {last})")]
    Timeout {
        op: &'static str,
        key: String,
        timeout: Duration,
        attempts: u32,
        last: String,
    },
    #[error("metadata value of {key:?} cannot be decoded: {reason}")]
    Decode { key: String, reason: String },
    /// A write of this operation reached some acceptors but not a majority,
    /// and a later attempt found the register moved on: another proposer may
    /// have adopted and completed it. Re-read to learn the outcome.
    #[error("metadata cas of {key:?}: outcome unknown (a partial write may have been adopted)")]
    Indeterminate { key: String },
}

/// Result of a typed compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome<T> {
    /// Written as `version`.
    Applied { version: u64 },
    /// The register held another version: here it is (`None`: never written).
    Conflict(Option<(u64, T)>),
}

#[derive(Clone)]
pub struct MetadataClient {
    /// Where this node's values are cached (hints; truth is a read).
    cache: MetaCache,
    /// Operations to the node's proposer task.
    runs: mpsc::UnboundedSender<Run>,
}

/// One operation handed to the proposer task.
struct Run {
    /// The register key.
    key: String,
    /// What the operation does.
    change: Change,
    /// Its whole budget.
    timeout: Duration,
    /// What the cache held when it started (a read corrects what came after).
    mark: CacheMark,
    /// Where its result goes.
    done: oneshot::Sender<Result<Outcome, MetaError>>,
}

fn change_kind(change: &Change) -> &'static str {
    match change {
        Change::Read => "read",
        Change::Cas { .. } => "cas",
    }
}

/// The shell of the node's [`ProposerCore`]: one task that feeds it every
/// operation, acceptor reply and due time, and carries out its effects
/// (calls, results, cache updates). One task per node, so every operation
/// of the node shares the core's round counter.
struct Driver {
    /// Calls to the acceptors (every node, this one included).
    net: Net,
    /// Learns every value an operation finds or chooses.
    cache: MetaCache,
    /// The rules.
    core: ProposerCore,
    /// Operations in flight: how each ends.
    waiting: BTreeMap<OpId, Run>,
    /// The last operation id handed out.
    next_op: OpId,
}

type Replies = FuturesUnordered<BoxFuture<'static, ProposerInput>>;

impl Driver {
    fn env(&self) -> Env {
        self.net.env()
    }

    async fn run(mut self, mut runs: mpsc::UnboundedReceiver<Run>) {
        let mut calls: Replies = FuturesUnordered::new();
        loop {
            let wake = self.core.next_wake();
            let input = tokio::select! {
                run = runs.recv() => match run {
                    Some(run) => {
                        self.next_op += 1;
                        let op = self.next_op;
                        let input = ProposerInput::Run {
                            op,
                            key: run.key.clone(),
                            change: run.change.clone(),
                            timeout: run.timeout,
                        };
                        self.waiting.insert(op, run);
                        input
                    }
                    // Every client handle is gone: the node is stopping.
                    None => return,
                },
                Some(reply) = calls.next(), if !calls.is_empty() => reply,
                _ = sleep_until(wake), if wake.is_some() => ProposerInput::Tick,
            };
            let env = self.env();
            for effect in self.core.handle(&env, input) {
                self.apply(effect, &mut calls);
            }
        }
    }

    fn apply(&mut self, effect: ProposerEffect, calls: &mut Replies) {
        match effect {
            ProposerEffect::Call {
                to,
                call,
                req,
                timeout,
            } => {
                let net = self.net.clone();
                calls.push(Box::pin(async move {
                    let result = match req {
                        AcceptorRequest::Prepare(p) => net
                            .call(to, p, timeout)
                            .await
                            .map(AcceptorResponse::Prepare),
                        AcceptorRequest::Accept(a) => {
                            net.call(to, a, timeout).await.map(AcceptorResponse::Accept)
                        }
                    };
                    ProposerInput::Reply {
                        call,
                        from: to,
                        result,
                    }
                }));
            }
            ProposerEffect::Chosen { op, key, value } => {
                let Some(run) = self.waiting.get(&op) else {
                    return;
                };
                match run.change {
                    // Chosen and the newest: every node may learn it.
                    Change::Cas { .. } => {
                        if self.cache.observe(&key, &value) {
                            broadcast_update(&self.net, &key, &value);
                        }
                    }
                    Change::Read => {
                        self.cache.settle(&key, Some(&value), run.mark);
                    }
                }
            }
            ProposerEffect::Done { op, result } => {
                let Some(run) = self.waiting.remove(&op) else {
                    return;
                };
                if matches!(run.change, Change::Read) && result == Ok(Outcome::Value(None)) {
                    // No majority ever accepted a value: the key is empty.
                    self.cache.settle(&run.key, None, run.mark);
                }
                if let Err(e) = &result {
                    debug!(
                        key = run.key,
                        "metadata {} failed: {e}",
                        change_kind(&run.change)
                    );
                }
                let _ = run.done.send(result);
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl MetadataClient {
    pub fn new(net: Net, cache: MetaCache) -> Self {
        let (runs, rx) = mpsc::unbounded_channel();
        let driver = Driver {
            core: ProposerCore::new(
                ProposerConfig { bugs: BugSet::NONE },
                rand::thread_rng().gen(),
            ),
            net,
            cache: cache.clone(),
            waiting: BTreeMap::new(),
            next_op: 0,
        };
        tokio::spawn(driver.run(rx));
        MetadataClient { cache, runs }
    }

    pub fn cache(&self) -> &MetaCache {
        &self.cache
    }

    /// Linearizable read. `None`: never written.
    pub async fn read(&self, key: &str, timeout: Duration) -> Result<Option<Versioned>, MetaError> {
        match self.run(key, Change::Read, timeout).await? {
            Outcome::Value(v) | Outcome::Conflict(v) => Ok(v),
        }
    }

    /// Writes `value` as version `expected + 1` if the register is at `expected`.
    /// `Ok(Err(current))` when it was not.
    pub async fn cas(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
        timeout: Duration,
    ) -> Result<Result<Versioned, Option<Versioned>>, MetaError> {
        let op = rand::thread_rng().gen::<u64>() | 1;
        match self
            .run(
                key,
                Change::Cas {
                    expected,
                    value,
                    op,
                },
                timeout,
            )
            .await?
        {
            Outcome::Value(Some(v)) => Ok(Ok(v)),
            Outcome::Value(None) => unreachable!("a successful CAS always writes"),
            Outcome::Conflict(cur) => Ok(Err(cur)),
        }
    }

    pub async fn read_typed<T: DeserializeOwned>(
        &self,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<(u64, T)>, MetaError> {
        self.read(key, timeout)
            .await?
            .map(|v| decode(key, &v))
            .transpose()
    }

    pub async fn cas_typed<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        expected: u64,
        value: &T,
        timeout: Duration,
    ) -> Result<CasOutcome<T>, MetaError> {
        let bytes = rmp_serde::to_vec_named(value).map_err(|e| MetaError::Decode {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        match self.cas(key, expected, bytes, timeout).await? {
            Ok(v) => Ok(CasOutcome::Applied { version: v.version }),
            Err(cur) => Ok(CasOutcome::Conflict(
                cur.map(|v| decode(key, &v)).transpose()?,
            )),
        }
    }

    /// The cached value of `key`, decoded (a hint, possibly stale).
    pub fn cached_typed<T: DeserializeOwned>(&self, key: &str) -> Option<(u64, T)> {
        self.cache.get(key).and_then(|v| decode(key, &v).ok())
    }

    /// Hands one operation to the node's proposer and waits for its end.
    async fn run(
        &self,
        key: &str,
        change: Change,
        timeout: Duration,
    ) -> Result<Outcome, MetaError> {
        let (tx, rx) = oneshot::channel();
        let closed = || MetaError::Timeout {
            op: change_kind(&change),
            key: key.to_string(),
            timeout,
            attempts: 0,
            last: "the node's proposer has stopped".into(),
        };
        let run = Run {
            key: key.to_string(),
            change: change.clone(),
            timeout,
            mark: self.cache.mark(),
            done: tx,
        };
        if self.runs.send(run).is_err() {
            return Err(closed());
        }
        rx.await.unwrap_or_else(|_| Err(closed()))
    }
}

fn decode<T: DeserializeOwned>(key: &str, v: &Versioned) -> Result<(u64, T), MetaError> {
    rmp_serde::from_slice(&v.value)
        .map(|t| (v.version, t))
        .map_err(|e| MetaError::Decode {
            key: key.to_string(),
            reason: e.to_string(),
        })
}

fn broadcast_update(net: &Net, key: &str, value: &Versioned) {
    for &to in net.nodes() {
        if to == net.me() {
            continue;
        }
        let msg = Wire::MetaUpdate(MetaUpdate {
            key: key.to_string(),
            value: value.clone(),
        });
        if let Err(e) = net.send(to, msg) {
            if !matches!(e, CallError::Unavailable(..)) {
                warn!(key, %to, "metadata update hint not sent: {e}");
            }
        }
    }
}
