//! Targets on actors, driven in-process through their mailboxes exactly as
//! the router delivers peers' messages: the log-server and the metadata
//! acceptor, each on real storage (on tmpfs), each checked against a model
//! after every message, and restarted on the same storage after every
//! episode (what was acknowledged must still be there).

use crate::support::*;
use actix::prelude::*;
use keel::actors::log_server::{
    GetRecords, GetTail, LogServer, Release, Seal, Store, StoreReply, TailWatch, Trim,
    MAX_STORE_BYTES, MAX_STORE_RECORDS,
};
use keel::actors::metadata::core::{AcceptReply, Ballot, PrepareReply, Versioned};
use keel::actors::metadata::{schema, Accept, MetadataStore, Prepare, MAX_KEY_LEN, MAX_VALUE_LEN};
use keel::log::Record;
use keel::node::Wire;
use keel::storage::Storage;
use keel::types::{LogletId, NodeId, Offset};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Longest an actor may take to answer one message.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

async fn ask<A, M>(addr: &Addr<A>, msg: M, what: &str) -> M::Result
where
    A: Actor + Handler<M>,
    A::Context: actix::dev::ToEnvelope<A, M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    match tokio::time::timeout(ANSWER_WITHIN, addr.send(msg)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("{what}: the actor is gone: {e}"),
        Err(_) => panic!("{what}: no answer within {ANSWER_WITHIN:?}"),
    }
}

/// Runs an episode target: the corpus, then `default` generated episodes,
/// all inside one actix system.
fn run_episodes<S, F>(
    target: &'static str,
    default: u64,
    budget: Duration,
    setup: impl Fn() -> S,
    generate: impl Fn(&mut Gen, u64) -> Vec<Wire>,
    check: impl Fn(S, u64, Vec<Wire>) -> F,
) -> u64
where
    F: Future<Output = (S, u64)>,
{
    let seed = seed();
    let budget = Budget::new(target, budget);
    let corpus = corpus(target);
    let system = actix::System::new();
    let messages = system.block_on(async move {
        let mut messages = 0;
        // Each corpus episode on fresh storage: it names the loglets (or
        // keys) of the run that found it, which generated episodes reuse.
        for (i, (path, bytes)) in corpus.iter().enumerate() {
            let _guard = CaseGuard::new(target, corpus_label(path), bytes.clone());
            let msgs: Vec<Wire> = rmp_serde::from_slice(bytes)
                .unwrap_or_else(|e| panic!("corpus file {} does not decode: {e}", path.display()));
            messages += check(setup(), i as u64, msgs).await.1;
        }
        let mut state = setup();
        let cases = case_range(default);
        let n = cases.end - cases.start;
        for case in cases {
            let mut g = Gen::for_case(seed, target, case);
            let msgs = generate(&mut g, case);
            let bytes = rmp_serde::to_vec_named(&msgs).expect("encoding an episode");
            let _guard = CaseGuard::new(target, case_label(seed, case), bytes);
            let (next, n) = check(state, case, msgs).await;
            state = next;
            messages += n;
            if case % 64 == 0 {
                budget.check(case);
            }
        }
        budget.report(n, corpus.len());
        messages
    });
    eprintln!("hostile-input {target}: {messages} messages in all");
    messages
}

// ---------------------------------------------------------------------------
// Log-server

/// The loglets of episode `e`: two with small ids, two next to `u64::MAX`.
fn episode_loglets(e: u64) -> [LogletId; 4] {
    [
        LogletId(e << 8),
        LogletId((e << 8) | 1),
        LogletId(u64::MAX - 2 * e),
        LogletId(u64::MAX - 2 * e - 1),
    ]
}

/// The bytes an honest sequencer writes at `offset` of `loglet`.
fn canonical(loglet: LogletId, offset: Offset) -> Record {
    let h = loglet.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ offset.rotate_left(17);
    let len = (h % 13) as usize;
    Record(h.to_le_bytes().iter().cycle().take(len).copied().collect())
}

fn ls_offset(g: &mut Gen) -> Offset {
    match g.below(4) {
        0 | 1 => g.range(0, 32),
        2 => u64::MAX - g.range(0, 4),
        _ => g.edgy_u64(),
    }
}

fn ls_episode(g: &mut Gen, e: u64) -> Vec<Wire> {
    let loglets = episode_loglets(e);
    (0..g.range(4, 40))
        .map(|_| {
            let loglet = *g.pick(&loglets);
            match g.below(20) {
                0..=7 => {
                    let first = ls_offset(g);
                    let records: Vec<Record> = if g.one_in(2000) {
                        // Over the count limit.
                        vec![Record(Vec::new()); MAX_STORE_RECORDS + 1]
                    } else if g.one_in(4000) {
                        // Over the byte limit.
                        vec![Record(vec![7; MAX_STORE_BYTES + 1])]
                    } else {
                        let n = *g.pick(&[0, 1, 1, 2, 3, 8]);
                        let honest = !g.one_in(5);
                        (0..n)
                            .map(|i| {
                                let o = first.wrapping_add(i);
                                if honest {
                                    canonical(loglet, o)
                                } else {
                                    let len = g.usize(0, 8);
                                    Record(g.bytes(len))
                                }
                            })
                            .collect()
                    };
                    Wire::Store(Store {
                        loglet,
                        first,
                        records: Arc::new(records),
                        known_global_tail: ls_offset(g),
                        repair: g.one_in(4),
                        // Whatever the router says the sender was.
                        from: Some(NodeId(g.usize(0, 5) as u32)),
                    })
                }
                8 => Wire::Seal(Seal { loglet }),
                9 | 10 => Wire::GetTail(GetTail { loglet }),
                11..=14 => Wire::GetRecords(GetRecords {
                    loglet,
                    from: ls_offset(g),
                    to: if g.bool() { u64::MAX } else { ls_offset(g) },
                    max_bytes: {
                        let any = g.u64() as u32;
                        *g.pick(&[0, 1, 16, 4096, u32::MAX, any])
                    },
                    include_uncommitted: g.bool(),
                }),
                15 => Wire::Trim(Trim {
                    loglet,
                    below: ls_offset(g),
                }),
                _ => Wire::Release(Release {
                    loglet,
                    global_tail: ls_offset(g),
                }),
            }
        })
        .collect()
}

/// What a log-server must have, per loglet.
#[derive(Default)]
struct LogletModel {
    /// Sealed by a `Seal` (durably: a restart keeps it).
    sealed: bool,
    /// The first bytes ever acknowledged at each offset: an offset never
    /// holds anything else.
    first_bytes: BTreeMap<Offset, Vec<u8>>,
    /// Acknowledged offsets not trimmed since: they must be readable.
    present: BTreeMap<Offset, ()>,
    /// The highest `Trim` point seen.
    trim: Offset,
    /// One past the highest offset a store acknowledged (a store of no
    /// records acknowledges none).
    end: Offset,
}

/// A log-server on its own storage (on tmpfs).
struct LogServerTarget {
    storage: Storage,
    tails: TailWatch,
    /// The current incarnation.
    addr: Addr<LogServer>,
    _dir: tempfile::TempDir,
}

impl LogServerTarget {
    fn new() -> Self {
        let dir = fast_tempdir("keel-hostile-ls-");
        let storage = Storage::open(dir.path()).expect("opening storage");
        let tails = TailWatch::default();
        let addr = LogServer::new(NodeId(1), storage.clone(), tails.clone()).start();
        LogServerTarget {
            storage,
            tails,
            addr,
            _dir: dir,
        }
    }

    /// A new incarnation on the same storage (as a supervisor restart).
    fn restart(&mut self) {
        self.addr = LogServer::new(NodeId(1), self.storage.clone(), self.tails.clone()).start();
    }
}

fn check_records(
    model: &LogletModel,
    loglet: LogletId,
    records: &[(Offset, Record)],
    from: Offset,
    to: Offset,
) {
    let mut last: Option<Offset> = None;
    for (o, r) in records {
        assert!(
            (from..to).contains(o),
            "loglet {loglet}: offset {o} outside the asked range {from}..{to}"
        );
        assert!(
            last.is_none_or(|l| l < *o),
            "loglet {loglet}: offsets out of order"
        );
        last = Some(*o);
        match model.first_bytes.get(o) {
            Some(b) => assert_eq!(&r.0, b, "loglet {loglet}: offset {o} changed"),
            None => panic!("loglet {loglet}: offset {o} was never acknowledged"),
        }
    }
}

async fn ls_check(mut t: LogServerTarget, e: u64, msgs: Vec<Wire>) -> (LogServerTarget, u64) {
    let mut models: HashMap<LogletId, LogletModel> = HashMap::new();
    let n = msgs.len() as u64;
    let addr = t.addr.clone();
    let mut touched = Vec::new();
    let verbose = verbose();
    for msg in msgs {
        if verbose {
            eprintln!("-> {msg:?}");
        }
        let loglet = match msg {
            Wire::Store(s) => {
                let loglet = s.loglet;
                let m = models.entry(loglet).or_default();
                let reply = ask(&addr, s.clone(), "Store").await;
                if verbose {
                    eprintln!("<- {reply:?}");
                }
                match reply {
                    StoreReply::Stored { local_tail } => {
                        assert!(
                            !m.sealed || s.repair,
                            "loglet {loglet}: sealed, yet a normal store was accepted"
                        );
                        let end =
                            s.first
                                .checked_add(s.records.len() as u64)
                                .unwrap_or_else(|| {
                                    panic!(
                                        "loglet {loglet}: stored offsets {}+{} overflow",
                                        s.first,
                                        s.records.len()
                                    )
                                });
                        for (i, r) in s.records.iter().enumerate() {
                            let o = s.first + i as u64;
                            if o < m.trim {
                                continue;
                            }
                            m.first_bytes.entry(o).or_insert_with(|| r.0.clone());
                            m.present.insert(o, ());
                        }
                        if !s.records.is_empty() {
                            m.end = m.end.max(end);
                        }
                        assert_eq!(local_tail, m.end, "loglet {loglet}: local tail");
                    }
                    StoreReply::Sealed { .. } => {
                        assert!(
                            m.sealed && !s.repair,
                            "loglet {loglet}: refused as sealed: {s:?}"
                        )
                    }
                    StoreReply::Failed(_) => {}
                }
                loglet
            }
            Wire::Seal(s) => {
                let info = ask(&addr, s.clone(), "Seal").await.expect("sealing");
                assert!(info.sealed);
                models.entry(s.loglet).or_default().sealed = true;
                s.loglet
            }
            Wire::GetTail(q) => {
                let info = ask(&addr, q.clone(), "GetTail").await.expect("tail");
                let m = models.entry(q.loglet).or_default();
                assert_eq!(info.sealed, m.sealed, "loglet {}: sealed flag", q.loglet);
                assert_eq!(info.local_tail, m.end, "loglet {}: local tail", q.loglet);
                q.loglet
            }
            Wire::GetRecords(q) => {
                let reply = ask(&addr, q.clone(), "GetRecords").await.expect("reading");
                if verbose {
                    eprintln!("<- {reply:?}");
                }
                let m = models.entry(q.loglet).or_default();
                check_records(m, q.loglet, &reply.records, q.from, q.to);
                if !q.include_uncommitted {
                    for (o, _) in &reply.records {
                        assert!(
                            *o < reply.tail.known_global_tail,
                            "loglet {}: uncommitted offset {o} served",
                            q.loglet
                        );
                    }
                }
                let bytes: usize = reply.records.iter().map(|(_, r)| r.len()).sum();
                let limit = (q.max_bytes as usize).min(MAX_STORE_BYTES);
                if reply.records.len() > 1 {
                    assert!(
                        bytes <= limit,
                        "loglet {}: {bytes} bytes over {limit}",
                        q.loglet
                    );
                }
                q.loglet
            }
            Wire::Trim(q) => {
                ask(&addr, q.clone(), "Trim").await.expect("trimming");
                let m = models.entry(q.loglet).or_default();
                m.trim = m.trim.max(q.below);
                m.present.retain(|o, _| *o >= q.below);
                q.loglet
            }
            Wire::Release(q) => {
                ask(&addr, q.clone(), "Release").await;
                q.loglet
            }
            other => panic!("not a log-server message: {other:?}"),
        };
        // Whatever came in, the actor still answers.
        let info = ask(&addr, GetTail { loglet }, "GetTail after a message")
            .await
            .expect("tail");
        assert_eq!(info.sealed, models.entry(loglet).or_default().sealed);
        touched.push(loglet);
    }
    // A new incarnation finds everything acknowledged: seals and records.
    t.restart();
    let addr = t.addr.clone();
    touched.sort_unstable();
    touched.dedup();
    for loglet in touched {
        let m = &models[&loglet];
        let info = ask(&addr, GetTail { loglet }, "GetTail after restart")
            .await
            .expect("tail");
        assert_eq!(
            info.sealed, m.sealed,
            "loglet {loglet}: seal lost by a restart"
        );
        assert!(
            info.local_tail <= m.end,
            "loglet {loglet}: local tail grew by a restart"
        );
        let mut from = 0;
        let mut seen = Vec::new();
        for _ in 0..m.first_bytes.len() + 2 {
            let reply = ask(
                &addr,
                GetRecords {
                    loglet,
                    from,
                    to: u64::MAX,
                    max_bytes: u32::MAX,
                    include_uncommitted: true,
                },
                "reading back",
            )
            .await
            .expect("reading back");
            check_records(m, loglet, &reply.records, from, u64::MAX);
            let Some(&(last, _)) = reply.records.last() else {
                break;
            };
            seen.extend(reply.records.into_iter().map(|(o, _)| o));
            match last.checked_add(1) {
                Some(next) => from = next,
                None => break,
            }
        }
        for o in m.present.keys() {
            assert!(
                seen.binary_search(o).is_ok(),
                "loglet {loglet}: acknowledged offset {o} is gone (episode {e})"
            );
        }
    }
    (t, n)
}

#[test]
fn log_server_survives_hostile_messages() {
    // Episodes of 4..40 messages: about 103k messages by default.
    run_episodes(
        "log_server",
        4_700,
        Duration::from_secs(180),
        LogServerTarget::new,
        ls_episode,
        ls_check,
    );
}

// ---------------------------------------------------------------------------
// Metadata acceptor

/// The keys of episode `e`: register-like ones, odd characters, exactly the
/// longest accepted, and two that must be refused (empty, one too long).
fn episode_keys(e: u64) -> Vec<String> {
    let long = format!("{e}:");
    vec![
        format!("chain/{e}"),
        format!("leader/{e}"),
        format!("{e}/é😀\0\n\u{202e}"),
        format!("{long}{}", "k".repeat(MAX_KEY_LEN - long.len())),
        String::new(),
        format!("{long}{}", "k".repeat(MAX_KEY_LEN + 1 - long.len())),
    ]
}

fn edgy_ballot(g: &mut Gen) -> Ballot {
    Ballot {
        round: match g.below(5) {
            0 => g.range(0, 8),
            1 => u64::MAX - g.range(0, 2),
            2 => Ballot::MAX_ROUND - 1 + g.range(0, 2),
            _ => g.edgy_u64(),
        },
        node: *g.pick(&[0, 1, 2, 3, u32::MAX]),
    }
}

fn meta_value(g: &mut Gen) -> Versioned {
    let value = match g.below(5) {
        0 => rmp_serde::to_vec_named(&crate::samples::chain(g)).expect("encoding"),
        1 => rmp_serde::to_vec_named(&crate::samples::leadership(g)).expect("encoding"),
        2 if g.one_in(200) => vec![0xc1; 2 * 1024 * 1024],
        2 if g.one_in(400) => vec![0xc1; MAX_VALUE_LEN + 1],
        _ => {
            let n = g.usize(0, 24);
            g.bytes(n)
        }
    };
    Versioned {
        version: g.edgy_u64(),
        value,
        writer: g.u64(),
    }
}

fn meta_episode(g: &mut Gen, e: u64) -> Vec<Wire> {
    let keys = episode_keys(e);
    (0..g.range(4, 40))
        .map(|_| {
            let key = g.pick(&keys).clone();
            if g.bool() {
                Wire::Prepare(Prepare {
                    key,
                    ballot: edgy_ballot(g),
                })
            } else {
                Wire::Accept(Accept {
                    key,
                    ballot: edgy_ballot(g),
                    value: meta_value(g),
                })
            }
        })
        .collect()
}

/// What an acceptor must hold for one key.
#[derive(Clone, Debug, Default, PartialEq)]
struct KeyModel {
    /// The highest ballot promised (or accepted).
    promised: Ballot,
    /// The ballot of the last accepted value.
    accepted: Ballot,
    /// The last accepted value.
    value: Option<Versioned>,
}

/// A metadata acceptor on its own storage (on tmpfs).
struct AcceptorTarget {
    storage: Storage,
    /// The current incarnation.
    addr: Addr<MetadataStore>,
    _dir: tempfile::TempDir,
}

impl AcceptorTarget {
    fn new() -> Self {
        let dir = fast_tempdir("keel-hostile-meta-");
        let storage = Storage::open(dir.path()).expect("opening storage");
        let addr = MetadataStore::new(NodeId(1), storage.clone(), true).start();
        AcceptorTarget {
            storage,
            addr,
            _dir: dir,
        }
    }
}

fn key_ok(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN
}

/// The promised ballot, read without changing anything: a prepare at the
/// zero ballot is always refused and says what is promised.
async fn promised(addr: &Addr<MetadataStore>, key: &str) -> Option<Ballot> {
    let probe = Prepare {
        key: key.to_string(),
        ballot: Ballot::ZERO,
    };
    match ask(addr, probe, "probe").await {
        Ok(PrepareReply::Reject { promised }) => Some(promised),
        Ok(other) => panic!("key {key:?}: the zero ballot was promised: {other:?}"),
        Err(_) => None,
    }
}

async fn meta_check(mut t: AcceptorTarget, _e: u64, msgs: Vec<Wire>) -> (AcceptorTarget, u64) {
    let n = msgs.len() as u64;
    let addr = t.addr.clone();
    let mut models: BTreeMap<String, KeyModel> = BTreeMap::new();
    for msg in msgs {
        let key = match msg {
            Wire::Prepare(p) => {
                let m = models.entry(p.key.clone()).or_default();
                let refused = !key_ok(&p.key) || p.ballot.round > Ballot::MAX_ROUND;
                let reply = ask(&addr, p.clone(), "Prepare").await;
                assert_eq!(reply.is_err(), refused, "{p:?}: {reply:?}");
                match reply {
                    Ok(PrepareReply::Promise { accepted, value }) => {
                        assert!(
                            p.ballot > m.promised,
                            "promised {:?} not above {:?}",
                            p.ballot,
                            m.promised
                        );
                        assert_eq!(
                            (accepted, &value),
                            (m.accepted, &m.value),
                            "key {:?}",
                            p.key
                        );
                        m.promised = p.ballot;
                    }
                    Ok(PrepareReply::Reject { promised }) => {
                        assert!(p.ballot <= m.promised);
                        assert_eq!(promised, m.promised);
                    }
                    Err(_) => {}
                }
                p.key
            }
            Wire::Accept(a) => {
                let m = models.entry(a.key.clone()).or_default();
                let refused = !key_ok(&a.key)
                    || a.ballot.round > Ballot::MAX_ROUND
                    || a.value.value.len() > MAX_VALUE_LEN
                    || schema::check(&a.key, &a.value.value).is_err();
                let reply = ask(&addr, a.clone(), "Accept").await;
                assert_eq!(
                    reply.is_err(),
                    refused,
                    "{:?} {:?}: {reply:?}",
                    a.key,
                    a.ballot
                );
                match reply {
                    Ok(AcceptReply::Accepted) => {
                        assert!(a.ballot >= m.promised);
                        m.promised = a.ballot;
                        m.accepted = a.ballot;
                        m.value = Some(a.value.clone());
                    }
                    Ok(AcceptReply::Reject { promised }) => {
                        assert!(a.ballot < m.promised);
                        assert_eq!(promised, m.promised);
                    }
                    Err(_) => {}
                }
                a.key
            }
            other => panic!("not an acceptor message: {other:?}"),
        };
        // The promise never goes back, and bad keys hold nothing.
        let now = promised(&addr, &key).await;
        if key_ok(&key) {
            assert_eq!(now, Some(models[&key].promised), "key {key:?}: promise");
        } else {
            assert_eq!(now, None, "a bad key was served");
            assert_eq!(models[&key], KeyModel::default(), "a bad key holds state");
        }
    }
    // A restarted acceptor keeps every promise and acceptance.
    t.addr = MetadataStore::new(NodeId(1), t.storage.clone(), true).start();
    for (key, m) in &models {
        if !key_ok(key) {
            continue;
        }
        assert_eq!(
            promised(&t.addr, key).await,
            Some(m.promised),
            "key {key:?} after restart"
        );
        let stored: Option<keel::actors::metadata::core::AcceptorState> = t
            .storage
            .meta
            .acceptor_get(key)
            .expect("reading acceptor state");
        let stored = stored.unwrap_or_default();
        assert_eq!(
            (stored.promised, stored.accepted, stored.value.as_ref()),
            (m.promised, m.accepted, m.value.as_ref()),
            "key {key:?}: durable state"
        );
    }
    (t, n)
}

#[test]
fn metadata_acceptor_survives_hostile_messages() {
    // Episodes of 4..40 messages: about 103k messages by default.
    run_episodes(
        "metadata_acceptor",
        4_700,
        Duration::from_secs(180),
        AcceptorTarget::new,
        meta_episode,
        meta_check,
    );
}
