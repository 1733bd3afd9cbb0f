//! The CASPaxos proposer: runs both phases against a majority of acceptors.
//! Any node may propose; contention backs off with jitter; every operation has
//! one deadline and ends in a value, a conflict or a typed error.

use super::core::{AcceptReply, Ballot, PrepareReply, Versioned};
use super::messages::{Accept, MetaUpdate, Prepare};
use super::proposer::{current_value, Change, Outcome};
use super::MetaCache;
use crate::actors::quorum::{Tally, Verdict};
use crate::node::{CallError, Net, Wire};
use futures::stream::StreamExt;
use rand::Rng;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
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
    /// Calls to the acceptors (every node, this one included).
    net: Net,
    /// Learns every value an operation finds or chooses.
    cache: MetaCache,
    /// The highest round used or seen refused: the next ballot goes past it.
    round: Arc<AtomicU64>,
}

/// Longest single acceptor round trip we wait for inside one attempt.
const CALL_TIMEOUT: Duration = Duration::from_millis(1000);

impl MetadataClient {
    pub fn new(net: Net, cache: MetaCache) -> Self {
        MetadataClient {
            net,
            cache,
            round: Arc::new(AtomicU64::new(0)),
        }
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

    async fn run(
        &self,
        key: &str,
        change: Change,
        timeout: Duration,
    ) -> Result<Outcome, MetaError> {
        let start = Instant::now();
        let deadline = start + timeout;
        let op = match change {
            Change::Read => "read",
            Change::Cas { .. } => "cas",
        };
        // What the cache held before this operation, so that a read can
        // correct a cached value the register never held.
        let mark = self.cache.mark();
        let mut attempts = 0u32;
        let mut partially_written = false;
        let mut last = String::from("no attempt finished");
        loop {
            let now = Instant::now();
            if now >= deadline {
                if partially_written {
                    return Err(MetaError::Indeterminate {
                        key: key.to_string(),
                    });
                }
                return Err(MetaError::Timeout {
                    op,
                    key: key.to_string(),
                    timeout,
                    attempts,
                    last,
                });
            }
            if attempts > 0 {
                // Contention or unreachable acceptors: back off with jitter.
                let cap = 10u64 * 2u64.pow(attempts.min(5));
                let pause = Duration::from_millis(rand::thread_rng().gen_range(cap / 2..=cap));
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(now))).await;
            }
            attempts += 1;
            let per_call = deadline
                .saturating_duration_since(Instant::now())
                .min(CALL_TIMEOUT);
            // `observe_round` keeps the counter at most `MAX_ROUND`, which
            // acceptors still take.
            let round = self.round.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            let ballot = Ballot::new(round.min(Ballot::MAX_ROUND), self.net.me());

            // Phase 1: promises from a majority.
            let make = || Prepare {
                key: key.to_string(),
                ballot,
            };
            let mut calls = self.net.broadcast(self.net.nodes(), make, per_call);
            let mut promises = Vec::new();
            let mut tally = Tally::majority(self.net.nodes().iter().copied());
            while let Some((from, reply)) = calls.next().await {
                let verdict = match reply {
                    Ok(Ok(PrepareReply::Promise { accepted, value })) => {
                        promises.push((accepted, value));
                        tally.yes(from)
                    }
                    Ok(Ok(PrepareReply::Reject { promised })) => {
                        self.observe_round(promised);
                        last = format!("{from} promised a higher ballot");
                        tally.no(from)
                    }
                    Ok(Err(e)) => {
                        last = format!("{from}: {e}");
                        tally.no(from)
                    }
                    Err(e) => {
                        last = e.to_string();
                        tally.no(from)
                    }
                };
                if verdict != Verdict::Possible {
                    break;
                }
            }
            drop(calls);
            if tally.verdict() != Verdict::Reached {
                debug!(key, attempts, %last, "prepare lacked a majority");
                continue;
            }
            let current = current_value(promises.iter().map(|(b, v)| (b, v)));
            let (next, outcome) = change.apply(current);
            if partially_written && matches!(outcome, Outcome::Conflict(_)) {
                return Err(MetaError::Indeterminate {
                    key: key.to_string(),
                });
            }
            let Some(next) = next else {
                // Nothing was ever accepted by this majority: the register is
                // empty and nothing can be chosen under a lower ballot any more.
                self.cache.settle(key, None, mark);
                return Ok(outcome);
            };

            // Phase 2: a majority accepts.
            let make = || Accept {
                key: key.to_string(),
                ballot,
                value: next.clone(),
            };
            let mut calls = self.net.broadcast(self.net.nodes(), make, per_call);
            let mut tally = Tally::majority(self.net.nodes().iter().copied());
            while let Some((from, reply)) = calls.next().await {
                let verdict = match reply {
                    Ok(Ok(AcceptReply::Accepted)) => tally.yes(from),
                    Ok(Ok(AcceptReply::Reject { promised })) => {
                        self.observe_round(promised);
                        last = format!("{from} promised a higher ballot");
                        tally.no(from)
                    }
                    Ok(Err(e)) => {
                        last = format!("{from}: {e}");
                        tally.no(from)
                    }
                    Err(e) => {
                        last = e.to_string();
                        tally.no(from)
                    }
                };
                if verdict != Verdict::Possible {
                    break;
                }
            }
            if tally.verdict() != Verdict::Reached {
                debug!(key, attempts, %last, "accept lacked a majority");
                // A new version sent to some acceptors may be chosen by
                // whoever runs the next prepare; from now on a conflict does
                // not prove this operation failed.
                partially_written |= matches!(change, Change::Cas { .. });
                continue;
            }
            match change {
                // The value is chosen and the newest: every node may learn it.
                Change::Cas { .. } => {
                    if self.cache.observe(key, &next) {
                        self.broadcast_update(key, &next);
                    }
                }
                Change::Read => {
                    self.cache.settle(key, Some(&next), mark);
                }
            }
            return Ok(outcome);
        }
    }

    fn observe_round(&self, promised: Ballot) {
        // An acceptor never promises above `MAX_ROUND`; a reply that says
        // so is not believed past it.
        let round = promised.round.min(Ballot::MAX_ROUND - 1);
        self.round.fetch_max(round, Ordering::Relaxed);
    }

    fn broadcast_update(&self, key: &str, value: &Versioned) {
        for &to in self.net.nodes() {
            if to == self.net.me() {
                continue;
            }
            let msg = Wire::MetaUpdate(MetaUpdate {
                key: key.to_string(),
                value: value.clone(),
            });
            if let Err(e) = self.net.send(to, msg) {
                if !matches!(e, CallError::Unavailable(..)) {
                    warn!(key, %to, "metadata update hint not sent: {e}");
                }
            }
        }
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
