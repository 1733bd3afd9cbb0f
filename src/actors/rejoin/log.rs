//! Re-replicating the log after a lost disk, without I/O.
//!
//! A rejoining node's fence (see [`super`]) marked every loglet of its
//! nodesets `lost`: its log-server takes no normal store of them and no seal
//! counts it. [`LogRejoinCore`] brings each back:
//!
//! 1. **Sealed first**: a lost loglet that is still the open tail of its
//!    chain is sealed (and the chain extended). Its records are final only
//!    once sealed; this node could not count toward its writes anyway.
//! 2. **Copy**: every record that any *other* member of the segment's
//!    nodeset holds below the sealed tail is read from it (page by page) and
//!    stored here as a repair. A committed record had `r ≥ 2` copies, so one
//!    survives on another member unless it was trimmed there, in which case
//!    no replica needs it. Every other member must answer for the whole
//!    range: one that is down may hold the only surviving copy.
//! 3. **Clear**: once every copy is stored (synced), the `lost` mark is
//!    cleared: the server counts again and the segment is back to `r` copies.
//!
//! A lost loglet that left the chain (trimmed) is cleared at once. Every
//! step that fails is retried after [`RETRY_PAUSE`].

use crate::actors::env::Env;
use crate::actors::log_server::RecordsReply;
use crate::log::{Chain, Record, Segment};
use crate::types::{LogId, LogletId, NodeId, Offset};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tracing::{debug, info};

/// How long after a failed step it is tried again.
pub const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What the log rejoin learns.
#[derive(Clone, Debug, PartialEq)]
pub enum LogRejoinInput {
    /// The loglets this node's log-server holds marked lost.
    Lost {
        result: Result<Vec<LogletId>, String>,
    },
    /// A linearizable read of `log`'s chain (or a seal's resulting chain).
    Chain {
        log: LogId,
        result: Result<Chain, String>,
    },
    /// `peer` answered a read of `loglet` from `from`.
    Records {
        loglet: LogletId,
        peer: NodeId,
        from: Offset,
        result: Result<RecordsReply, String>,
    },
    /// A repair store of `loglet` ended (synced, or not).
    Stored {
        loglet: LogletId,
        result: Result<(), String>,
    },
    /// Clearing `loglet`'s mark ended.
    Cleared {
        loglet: LogletId,
        result: Result<(), String>,
    },
    /// Time passed (see [`LogRejoinCore::next_wake`]).
    Tick,
}

/// What the log rejoin asks its host to do.
#[derive(Clone, Debug, PartialEq)]
pub enum LogRejoinEffect {
    /// List the lost loglets; answer with `Lost`.
    ReadLost,
    /// Read `log`'s chain linearizably; answer with `Chain`.
    ReadChain { log: LogId },
    /// Seal `segment` (still the open tail) and extend the chain; answer
    /// with `Chain` (the chain that has it sealed) for its log.
    Seal { segment: Segment },
    /// Read `loglet`'s records held by `peer` in `[from, to)`, uncommitted
    /// ones included; answer with `Records`.
    GetRecords {
        peer: NodeId,
        loglet: LogletId,
        from: Offset,
        to: Offset,
    },
    /// Store `records` at `first..` locally as a repair; answer with
    /// `Stored` once synced.
    Store {
        loglet: LogletId,
        first: Offset,
        records: Vec<Record>,
    },
    /// Clear `loglet`'s lost mark (durably); answer with `Cleared`.
    Clear { loglet: LogletId },
    /// Every lost loglet is back.
    Done,
}

/// Where one peer's copy of a loglet stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PeerCopy {
    /// Ask it for records from `from` (at `at`, or at once).
    Next { from: Offset, at: Option<Instant> },
    /// A read from `from` is out.
    Asking { from: Offset },
    /// It answered for the whole range.
    Done,
}

/// Where one lost loglet stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// Its chain was not read yet.
    AwaitChain,
    /// Still the open tail: a seal is out (or will be asked again at).
    AwaitSeal { again: Option<Instant> },
    /// Copying records below `tail` from each other member.
    Copying {
        /// The sealed tail: the range is `[0, tail)`.
        tail: Offset,
        /// Each other member of the nodeset.
        peers: BTreeMap<NodeId, PeerCopy>,
        /// Repair stores not synced yet.
        storing: usize,
    },
    /// Clear the mark (at `again`, or at once).
    Clearing { again: Option<Instant> },
    /// Clearing the mark is out.
    ClearAsked,
    /// Counted again.
    Cleared,
}

/// The log half of one node's rejoin.
#[derive(Clone, Debug)]
pub struct LogRejoinCore {
    /// How many logs the cluster has.
    logs: u32,
    /// Lost loglets and where each stands (`None`: not listed yet).
    loglets: Option<BTreeMap<LogletId, Step>>,
    /// When to list the lost loglets again after a failure.
    list_again: Option<Instant>,
    /// Logs whose chain read is out.
    reading: BTreeSet<LogId>,
    /// Logs whose chain must be read again, and when.
    read_again: BTreeMap<LogId, Instant>,
    /// The first `Tick` was handled.
    started: bool,
    /// `Done` was emitted.
    done: bool,
}

/// For status: the lost loglets and how many are back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRejoinStatus {
    /// Lost loglets (`None`: not listed yet).
    pub lost: Option<usize>,
    /// Of them, counted again.
    pub cleared: usize,
    /// Of them, still the open tail (a seal is needed first).
    pub awaiting_seal: usize,
    /// Of them, waiting for a peer's records: those peers.
    pub waiting_for: BTreeSet<NodeId>,
}

impl LogRejoinCore {
    pub fn new(logs: u32) -> Self {
        LogRejoinCore {
            logs,
            loglets: None,
            list_again: None,
            reading: BTreeSet::new(),
            read_again: BTreeMap::new(),
            started: false,
            done: false,
        }
    }

    /// The one entry point (the first input is a `Tick`).
    pub fn handle(&mut self, env: &Env, input: LogRejoinInput) -> Vec<LogRejoinEffect> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if !self.started {
            self.started = true;
            out.push(LogRejoinEffect::ReadLost);
        }
        match input {
            LogRejoinInput::Lost { result } => match result {
                Ok(lost) => {
                    info!(lost = lost.len(), "loglets lost with the disk listed");
                    self.loglets = Some(lost.into_iter().map(|l| (l, Step::AwaitChain)).collect());
                    let logs: BTreeSet<LogId> = self.logs_of_lost();
                    for log in logs {
                        self.read_chain(log, &mut out);
                    }
                }
                Err(why) => {
                    debug!("listing lost loglets failed: {why}");
                    self.list_again = Some(env.now + RETRY_PAUSE);
                }
            },
            LogRejoinInput::Chain { log, result } => {
                self.reading.remove(&log);
                match result {
                    Ok(chain) => self.on_chain(env, &chain, &mut out),
                    Err(why) => {
                        debug!(%log, "chain read (or seal) failed: {why}");
                        self.read_again.insert(log, env.now + RETRY_PAUSE);
                        for step in self.steps_of(log) {
                            if let Step::AwaitSeal { again } = step {
                                *again = Some(env.now + RETRY_PAUSE);
                            }
                        }
                    }
                }
            }
            LogRejoinInput::Records {
                loglet,
                peer,
                from,
                result,
            } => self.on_records(env, loglet, peer, from, result, &mut out),
            LogRejoinInput::Stored { loglet, result } => {
                if let Some(Step::Copying { peers, storing, .. }) = self.step(loglet) {
                    *storing = storing.saturating_sub(1);
                    if let Err(why) = result {
                        // Which offsets are missing is not known: copy again.
                        debug!(%loglet, "repair store failed: {why}");
                        for p in peers.values_mut() {
                            *p = PeerCopy::Next {
                                from: 0,
                                at: Some(env.now + RETRY_PAUSE),
                            };
                        }
                    }
                }
            }
            LogRejoinInput::Cleared { loglet, result } => {
                if let Some(step @ Step::ClearAsked) = self.step(loglet) {
                    *step = match result {
                        Ok(()) => Step::Cleared,
                        Err(why) => {
                            debug!(%loglet, "clearing the lost mark failed: {why}");
                            Step::Clearing {
                                again: Some(env.now + RETRY_PAUSE),
                            }
                        }
                    };
                }
            }
            LogRejoinInput::Tick => {}
        }
        self.step_all(env, &mut out);
        out
    }

    fn logs_of_lost(&self) -> BTreeSet<LogId> {
        self.loglets
            .iter()
            .flat_map(|m| m.keys())
            .map(|l| l.log())
            .filter(|log| log.0 < self.logs)
            .collect()
    }

    fn step(&mut self, loglet: LogletId) -> Option<&mut Step> {
        self.loglets.as_mut().and_then(|m| m.get_mut(&loglet))
    }

    fn steps_of(&mut self, log: LogId) -> impl Iterator<Item = &mut Step> {
        self.loglets
            .iter_mut()
            .flat_map(|m| m.iter_mut())
            .filter(move |(l, _)| l.log() == log)
            .map(|(_, s)| s)
    }

    fn read_chain(&mut self, log: LogId, out: &mut Vec<LogRejoinEffect>) {
        if self.reading.insert(log) {
            self.read_again.remove(&log);
            out.push(LogRejoinEffect::ReadChain { log });
        }
    }

    fn on_chain(&mut self, env: &Env, chain: &Chain, out: &mut Vec<LogRejoinEffect>) {
        let me = env.me;
        let log = chain.log;
        let Some(loglets) = self.loglets.as_mut() else {
            return;
        };
        for (id, step) in loglets.iter_mut().filter(|(l, _)| l.log() == log) {
            if !matches!(step, Step::AwaitChain | Step::AwaitSeal { .. }) {
                continue;
            }
            match chain.segment(*id) {
                // Trimmed away, or never this node's: nothing to copy.
                None => *step = Step::Clearing { again: None },
                Some(s) if !s.nodeset.contains(&me) => *step = Step::Clearing { again: None },
                Some(s) => match s.sealed_tail {
                    Some(tail) => {
                        let peers = s
                            .nodeset
                            .iter()
                            .filter(|n| **n != me)
                            .map(|n| (*n, PeerCopy::Next { from: 0, at: None }))
                            .collect();
                        *step = Step::Copying {
                            tail,
                            peers,
                            storing: 0,
                        };
                    }
                    None => {
                        info!(loglet = %id, "lost loglet is the open tail: sealing it");
                        *step = Step::AwaitSeal { again: None };
                        self.reading.insert(log);
                        out.push(LogRejoinEffect::Seal { segment: s.clone() });
                    }
                },
            }
        }
    }

    fn on_records(
        &mut self,
        env: &Env,
        loglet: LogletId,
        peer: NodeId,
        from: Offset,
        result: Result<RecordsReply, String>,
        out: &mut Vec<LogRejoinEffect>,
    ) {
        let Some(Step::Copying {
            tail,
            peers,
            storing,
        }) = self.step(loglet)
        else {
            return;
        };
        let Some(state) = peers.get_mut(&peer) else {
            return;
        };
        if *state != (PeerCopy::Asking { from }) {
            return;
        }
        let reply = match result {
            Ok(reply) => reply,
            Err(why) => {
                debug!(%loglet, %peer, "reading a peer's copy failed: {why}");
                *state = PeerCopy::Next {
                    from,
                    at: Some(env.now + RETRY_PAUSE),
                };
                return;
            }
        };
        let records: Vec<(Offset, Record)> = reply
            .records
            .into_iter()
            .filter(|(o, _)| *o >= from && *o < *tail)
            .collect();
        let Some(&(last, _)) = records.last() else {
            *state = PeerCopy::Done;
            return;
        };
        *state = PeerCopy::Next {
            from: last + 1,
            at: None,
        };
        // One repair store per contiguous run.
        let mut run: Vec<Record> = Vec::new();
        let mut first = records[0].0;
        for (o, r) in records {
            if o != first + run.len() as Offset {
                *storing += 1;
                out.push(LogRejoinEffect::Store {
                    loglet,
                    first,
                    records: std::mem::take(&mut run),
                });
                first = o;
            }
            run.push(r);
        }
        *storing += 1;
        out.push(LogRejoinEffect::Store {
            loglet,
            first,
            records: run,
        });
    }

    fn step_all(&mut self, env: &Env, out: &mut Vec<LogRejoinEffect>) {
        let due = |at: &Option<Instant>| at.is_none_or(|at| env.now >= at);
        if self.loglets.is_none() {
            if self.list_again.is_some_and(|at| env.now >= at) {
                self.list_again = None;
                out.push(LogRejoinEffect::ReadLost);
            }
            return;
        }
        let again: Vec<LogId> = self
            .read_again
            .iter()
            .filter(|(_, at)| env.now >= **at)
            .map(|(l, _)| *l)
            .collect();
        for log in again {
            self.read_chain(log, out);
        }
        let mut reread = BTreeSet::new();
        let Some(loglets) = self.loglets.as_mut() else {
            return;
        };
        for (id, step) in loglets.iter_mut() {
            match step {
                Step::AwaitSeal { again: Some(at) } if env.now >= *at => {
                    *step = Step::AwaitChain;
                    reread.insert(id.log());
                }
                Step::Copying {
                    tail,
                    peers,
                    storing,
                } => {
                    for (peer, state) in peers.iter_mut() {
                        if let PeerCopy::Next { from, at } = state {
                            if due(at) {
                                out.push(LogRejoinEffect::GetRecords {
                                    peer: *peer,
                                    loglet: *id,
                                    from: *from,
                                    to: *tail,
                                });
                                *state = PeerCopy::Asking { from: *from };
                            }
                        }
                    }
                    if *storing == 0 && peers.values().all(|p| *p == PeerCopy::Done) {
                        *step = Step::Clearing { again: None };
                    }
                }
                _ => {}
            }
            if let Step::Clearing { again } = step {
                if due(again) {
                    *step = Step::ClearAsked;
                    out.push(LogRejoinEffect::Clear { loglet: *id });
                }
            }
        }
        for log in reread {
            self.read_chain(log, out);
        }
        let all_cleared = self
            .loglets
            .as_ref()
            .is_some_and(|m| m.values().all(|s| *s == Step::Cleared));
        if all_cleared && self.reading.is_empty() {
            self.done = true;
            info!("every lost loglet is re-replicated");
            out.push(LogRejoinEffect::Done);
        }
    }

    /// When the core wants a `Tick`: the earliest retry.
    pub fn next_wake(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        let mut wakes: Vec<Instant> = self.list_again.into_iter().collect();
        wakes.extend(self.read_again.values().copied());
        for step in self.loglets.iter().flat_map(|m| m.values()) {
            match step {
                Step::AwaitSeal { again: Some(at) } | Step::Clearing { again: Some(at) } => {
                    wakes.push(*at)
                }
                Step::Copying { peers, .. } => {
                    wakes.extend(peers.values().filter_map(|p| match p {
                        PeerCopy::Next { at, .. } => *at,
                        _ => None,
                    }))
                }
                _ => {}
            }
        }
        wakes.into_iter().min()
    }

    /// Whether every lost loglet is back.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// For status.
    pub fn status(&self) -> LogRejoinStatus {
        let mut s = LogRejoinStatus {
            lost: self.loglets.as_ref().map(BTreeMap::len),
            cleared: 0,
            awaiting_seal: 0,
            waiting_for: BTreeSet::new(),
        };
        for step in self.loglets.iter().flat_map(|m| m.values()) {
            match step {
                Step::Cleared => s.cleared += 1,
                Step::AwaitSeal { .. } => s.awaiting_seal += 1,
                Step::Copying { peers, .. } => s.waiting_for.extend(
                    peers
                        .iter()
                        .filter(|(_, p)| **p != PeerCopy::Done)
                        .map(|(n, _)| *n),
                ),
                _ => {}
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::log_server::TailInfo;
    use crate::types::Lsn;

    fn n(i: u32) -> NodeId {
        NodeId(i)
    }

    fn env(now: Instant) -> Env {
        Env {
            now,
            me: n(1),
            nodes: vec![n(1), n(2), n(3)],
            suspected: BTreeSet::new(),
        }
    }

    const LOG: LogId = LogId(0);

    /// Log 0's chain: segment 0 sealed at `sealed0` records, segment 1 open.
    fn chain(sealed0: Offset) -> Chain {
        let nodes = vec![n(1), n(2), n(3)];
        Chain::initial(LOG, n(2), nodes.clone(), 2)
            .sealed_and_extended(LogletId::new(LOG, 0), sealed0, n(2), nodes, 2)
            .unwrap()
    }

    /// Peers' records by (peer, loglet, offset); the peers that answer.
    struct Peers {
        held: BTreeMap<(NodeId, LogletId, Offset), Record>,
        up: BTreeSet<NodeId>,
        page: usize,
    }

    impl Peers {
        fn read(
            &self,
            peer: NodeId,
            loglet: LogletId,
            from: Offset,
            to: Offset,
        ) -> Result<RecordsReply, String> {
            if !self.up.contains(&peer) {
                return Err(format!("{peer} unreachable"));
            }
            let records: Vec<(Offset, Record)> = self
                .held
                .range((peer, loglet, from)..(peer, loglet, to))
                .take(self.page)
                .map(|((_, _, o), r)| (*o, r.clone()))
                .collect();
            Ok(RecordsReply {
                records,
                tail: TailInfo::default(),
                damaged: Vec::new(),
                trimmed_below: 0,
            })
        }
    }

    /// What [`run`] saw: stored locally, cleared, finished, seals asked.
    type Outcome = (
        BTreeMap<(LogletId, Offset), Record>,
        BTreeSet<LogletId>,
        bool,
        usize,
    );

    /// Runs the core until it is done or `steps` rounds passed; what it
    /// stored locally, what it cleared, and whether it finished.
    fn run(
        core: &mut LogRejoinCore,
        lost: Vec<LogletId>,
        mut chain: Chain,
        peers: &Peers,
        steps: usize,
    ) -> Outcome {
        let mut now = Instant::now();
        let mut stored = BTreeMap::new();
        let mut cleared = BTreeSet::new();
        let mut seals = 0;
        let mut queue = core.handle(&env(now), LogRejoinInput::Tick);
        for _ in 0..steps {
            let mut inputs = Vec::new();
            for e in queue.drain(..) {
                inputs.push(match e {
                    LogRejoinEffect::ReadLost => LogRejoinInput::Lost {
                        result: Ok(lost.clone()),
                    },
                    LogRejoinEffect::ReadChain { log } => LogRejoinInput::Chain {
                        log,
                        result: Ok(chain.clone()),
                    },
                    LogRejoinEffect::Seal { segment } => {
                        seals += 1;
                        chain = chain
                            .sealed_and_extended(segment.loglet, 4, n(2), segment.nodeset, 2)
                            .unwrap();
                        LogRejoinInput::Chain {
                            log: LOG,
                            result: Ok(chain.clone()),
                        }
                    }
                    LogRejoinEffect::GetRecords {
                        peer,
                        loglet,
                        from,
                        to,
                    } => LogRejoinInput::Records {
                        loglet,
                        peer,
                        from,
                        result: peers.read(peer, loglet, from, to),
                    },
                    LogRejoinEffect::Store {
                        loglet,
                        first,
                        records,
                    } => {
                        for (i, r) in records.into_iter().enumerate() {
                            stored.insert((loglet, first + i as Offset), r);
                        }
                        LogRejoinInput::Stored {
                            loglet,
                            result: Ok(()),
                        }
                    }
                    LogRejoinEffect::Clear { loglet } => {
                        cleared.insert(loglet);
                        LogRejoinInput::Cleared {
                            loglet,
                            result: Ok(()),
                        }
                    }
                    LogRejoinEffect::Done => return (stored, cleared, true, seals),
                });
            }
            if inputs.is_empty() {
                now = core.next_wake().unwrap_or(now + RETRY_PAUSE);
                inputs.push(LogRejoinInput::Tick);
            }
            for input in inputs {
                queue.extend(core.handle(&env(now), input));
            }
        }
        (stored, cleared, false, seals)
    }

    fn rec(i: u64) -> Record {
        Record(i.to_be_bytes().to_vec())
    }

    #[test]
    fn every_record_any_other_member_holds_is_copied_back_before_the_mark_clears() {
        let l0 = LogletId::new(LOG, 0);
        let mut held = BTreeMap::new();
        // Ten records, each on one of the two others (this node had the
        // second copy), none past the sealed tail counted.
        for o in 0..10u64 {
            held.insert((n(2 + (o % 2) as u32), l0, o), rec(o));
        }
        held.insert((n(2), l0, 12), rec(12));
        let peers = Peers {
            held,
            up: [n(2), n(3)].into(),
            page: 3,
        };
        let mut core = LogRejoinCore::new(1);
        let (stored, cleared, done, seals) = run(&mut core, vec![l0], chain(10), &peers, 100);
        assert!(done);
        assert_eq!(seals, 0);
        let offsets: Vec<Offset> = stored.keys().map(|(_, o)| *o).collect();
        assert_eq!(offsets, (0..10).collect::<Vec<_>>());
        assert_eq!(cleared, [l0].into());
        assert_eq!(core.status().cleared, 1);
    }

    #[test]
    fn a_member_that_is_down_holds_the_rejoin_until_it_answers() {
        let l0 = LogletId::new(LOG, 0);
        let held = (0..4u64).map(|o| ((n(2), l0, o), rec(o))).collect();
        let mut peers = Peers {
            held,
            up: [n(2)].into(),
            page: 10,
        };
        let mut core = LogRejoinCore::new(1);
        let (_, cleared, done, _) = run(&mut core, vec![l0], chain(4), &peers, 50);
        assert!(!done && cleared.is_empty());
        assert_eq!(core.status().waiting_for, [n(3)].into());
        peers.up.insert(n(3));
        let (stored, cleared, done, _) = run(&mut core, vec![l0], chain(4), &peers, 50);
        assert!(done, "{:?}", core.status());
        assert_eq!(cleared, [l0].into());
        assert!(stored.len() <= 4);
    }

    #[test]
    fn an_open_lost_tail_is_sealed_first_and_a_trimmed_one_cleared_at_once() {
        let (l0, l1) = (LogletId::new(LOG, 0), LogletId::new(LOG, 1));
        let held = (0..4u64).map(|o| ((n(3), l1, o), rec(o))).collect();
        let peers = Peers {
            held,
            up: [n(2), n(3)].into(),
            page: 10,
        };
        // Segment 0 left the chain (trimmed); segment 1 is the open tail.
        let trimmed = chain(6).trimmed_below(Lsn(7)).unwrap();
        assert!(trimmed.segment(l0).is_none());
        let mut core = LogRejoinCore::new(1);
        let (stored, cleared, done, seals) = run(&mut core, vec![l0, l1], trimmed, &peers, 100);
        assert!(done);
        assert_eq!(seals, 1);
        assert_eq!(cleared, [l0, l1].into());
        assert_eq!(stored.len(), 4);
    }
}
