//! The log-server core's store in the simulator, over a node's [`SimDisk`]:
//! records in [`Lane::Records`] (as the record log), loglet states in
//! [`Lane::State`] (as sled), with the real store's rules:
//! - a store leaves offsets already held as they are;
//! - trim points are applied again whenever the store opens, so a trim
//!   whose record removals a crash lost stays trimmed (as the record log
//!   re-applies the durable trim points at open);
//! - the simulated disk never damages a record: `damaged_in` is always
//!   empty and the server is never suspect.
//!
//! The sequencer's "started" marks live here too (state lane): the
//! simulator keeps one disk per node, writes a mark when a sequencer core
//! asks (`Effect::PersistStartMark`) and reads it for
//! `sequencer::core::may_start` ("a marked loglet without a live sequencer
//! answers `Gone`").

use super::disk::{Lane, SimDisk};
use crate::actors::log_server::core::LogServerStore;
use crate::log::Record;
use crate::storage::{decode, encode, LogletState, Result};
use crate::types::{LogletId, Offset};
use std::cell::RefCell;
use std::rc::Rc;

/// Key prefix of records: `+ loglet (BE) + offset (BE)`.
const RECORDS: &[u8] = b"log/records/";
/// Key prefix of loglet states: `+ loglet (BE)`.
const LOGLETS: &[u8] = b"log/loglets/";
/// Key prefix of sequencer marks: `+ loglet (BE)`.
const MARKS: &[u8] = b"sequencer/started/";
/// The tree name in decode errors.
const LOGLETS_TREE: &str = "log_loglets";

fn loglet_key(prefix: &[u8], loglet: LogletId) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&loglet.0.to_be_bytes());
    k
}

fn record_key(loglet: LogletId, offset: Offset) -> Vec<u8> {
    let mut k = loglet_key(RECORDS, loglet);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// The offset a record key names (its last 8 bytes).
fn offset_of(key: &[u8]) -> Option<Offset> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(Offset::from_be_bytes(tail))
}

/// A log-server's store on one simulated node's disk (shared with the
/// node's other stores: the simulator runs on one thread).
#[derive(Clone, Debug)]
pub struct SimLogStore {
    /// The node's disk.
    disk: Rc<RefCell<SimDisk>>,
}

impl SimLogStore {
    /// Opens the store on `disk` (after a crash too): offsets below each
    /// loglet's trim point are dropped, whatever the record lane kept.
    pub fn open(disk: Rc<RefCell<SimDisk>>) -> Result<Self> {
        let store = SimLogStore { disk };
        let trims: Vec<(Vec<u8>, Vec<u8>)> = {
            let disk = store.disk.borrow();
            let mut trims = Vec::new();
            for (key, value) in disk.scan_prefix(LOGLETS) {
                let state: LogletState = decode(LOGLETS_TREE, value)?;
                if state.trim_point == 0 {
                    continue;
                }
                let Some(loglet) = offset_of(key).map(LogletId) else {
                    continue;
                };
                trims.push((record_key(loglet, 0), record_key(loglet, state.trim_point)));
            }
            trims
        };
        for (from, to) in trims {
            store.remove_records(&from, &to);
        }
        Ok(store)
    }

    /// The disk (for the simulator: syncs, crashes).
    pub fn disk(&self) -> &Rc<RefCell<SimDisk>> {
        &self.disk
    }

    /// Marks that this node started a sequencer for `loglet` (state lane;
    /// durable after the next sync of it).
    pub fn mark_sequencer_started(&self, loglet: LogletId) {
        self.disk
            .borrow_mut()
            .put(Lane::State, loglet_key(MARKS, loglet), vec![1]);
    }

    /// Whether this node ever started a sequencer for `loglet`.
    pub fn sequencer_was_started(&self, loglet: LogletId) -> bool {
        self.disk.borrow().get(&loglet_key(MARKS, loglet)).is_some()
    }

    /// The loglets whose state is marked lost (a rejoin's fence).
    pub fn lost_loglets(&self) -> Result<Vec<LogletId>> {
        let disk = self.disk.borrow();
        let mut out = Vec::new();
        for (key, value) in disk.scan_prefix(LOGLETS) {
            let state: LogletState = decode(LOGLETS_TREE, value)?;
            if let (true, Some(offset)) = (state.lost, offset_of(key)) {
                out.push(LogletId(offset));
            }
        }
        Ok(out)
    }

    fn remove_records(&self, from: &[u8], to: &[u8]) {
        let mut disk = self.disk.borrow_mut();
        let keys: Vec<Vec<u8>> = disk.range(from, to).map(|(k, _)| k.to_vec()).collect();
        for k in keys {
            disk.remove(Lane::Records, &k);
        }
    }
}

impl LogServerStore for SimLogStore {
    fn loglet_state(&self, loglet: LogletId) -> Result<LogletState> {
        match self.disk.borrow().get(&loglet_key(LOGLETS, loglet)) {
            Some(bytes) => decode(LOGLETS_TREE, bytes),
            None => Ok(LogletState::default()),
        }
    }

    fn put_loglet_state(&mut self, loglet: LogletId, state: &LogletState) -> Result<()> {
        self.disk
            .borrow_mut()
            .put(Lane::State, loglet_key(LOGLETS, loglet), encode(state));
        Ok(())
    }

    fn put_records(&mut self, loglet: LogletId, first: Offset, records: &[Record]) -> Result<()> {
        let mut disk = self.disk.borrow_mut();
        for (i, record) in records.iter().enumerate() {
            let Some(offset) = first.checked_add(i as Offset) else {
                return Err(crate::storage::StorageError::Invalid(format!(
                    "offsets {first}+{} overflow",
                    records.len()
                )));
            };
            let key = record_key(loglet, offset);
            if disk.get(&key).is_none() {
                disk.put(Lane::Records, key, record.0.clone());
            }
        }
        Ok(())
    }

    fn read_records(
        &self,
        loglet: LogletId,
        from: Offset,
        to: Offset,
        max_bytes: usize,
    ) -> Result<Vec<(Offset, Record)>> {
        let mut out: Vec<(Offset, Record)> = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let disk = self.disk.borrow();
        let mut bytes = 0usize;
        for (key, value) in disk.range(&record_key(loglet, from), &record_key(loglet, to)) {
            let Some(offset) = offset_of(key) else {
                continue;
            };
            if !out.is_empty() && bytes.saturating_add(value.len()) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(value.len());
            out.push((offset, Record(value.to_vec())));
        }
        Ok(out)
    }

    fn local_tail(&self, loglet: LogletId) -> Result<Offset> {
        let prefix = loglet_key(RECORDS, loglet);
        let disk = self.disk.borrow();
        let last = disk
            .scan_prefix(&prefix)
            .filter_map(|(k, _)| offset_of(k))
            .last();
        Ok(last.map_or(0, |o| o.saturating_add(1)))
    }

    fn trim(&mut self, loglet: LogletId, below: Offset) -> Result<()> {
        self.remove_records(&record_key(loglet, 0), &record_key(loglet, below));
        Ok(())
    }

    fn damaged_in(&self, _: LogletId, _: Offset, _: Offset) -> Vec<Offset> {
        Vec::new()
    }

    fn suspect(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::bugs::BugSet;
    use crate::actors::env::Env;
    use crate::actors::log_server::core::{
        Effect, Input, LogServerConfig, LogServerCore, Request, Response, Token,
    };
    use crate::actors::log_server::{GetRecords, Seal, Store, StoreReply, Trim};
    use crate::types::NodeId;
    use rand::SeedableRng;
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::time::Instant;

    const L: LogletId = LogletId(3);

    fn rec(o: Offset) -> Record {
        Record(vec![o as u8; 4])
    }

    fn held(store: &SimLogStore, loglet: LogletId) -> Vec<Offset> {
        store
            .read_records(loglet, 0, Offset::MAX, usize::MAX)
            .expect("reading")
            .into_iter()
            .map(|(o, _)| o)
            .collect()
    }

    #[test]
    fn records_and_states_read_back_as_written() {
        let disk = Rc::new(RefCell::new(SimDisk::default()));
        let mut s = SimLogStore::open(disk).expect("opening");
        s.put_records(L, 2, &[rec(2), rec(3)]).expect("put");
        s.put_records(L, 3, &[Record(b"other".to_vec()), rec(4)])
            .expect("put");
        assert_eq!(
            s.read_records(L, 0, 10, usize::MAX).expect("read"),
            vec![(2, rec(2)), (3, rec(3)), (4, rec(4))],
            "a held offset keeps its first bytes"
        );
        assert_eq!(s.read_records(L, 0, 10, 1).expect("read").len(), 1);
        assert_eq!(s.read_records(L, 3, 4, usize::MAX).expect("read").len(), 1);
        assert!(s
            .read_records(L, 5, 2, usize::MAX)
            .expect("read")
            .is_empty());
        assert_eq!(s.local_tail(L).expect("tail"), 5);
        assert_eq!(s.local_tail(LogletId(4)).expect("tail"), 0);
        let last = LogletId(u64::MAX);
        s.put_records(last, Offset::MAX, &[rec(1)]).expect("put");
        assert_eq!(s.local_tail(last).expect("tail"), Offset::MAX);
        assert!(s.put_records(last, Offset::MAX, &[rec(1), rec(2)]).is_err());
        let state = LogletState {
            sealed: true,
            known_global_tail: 2,
            trim_point: 0,
            lost: false,
        };
        s.put_loglet_state(L, &state).expect("put state");
        assert_eq!(s.loglet_state(L).expect("state"), state);
        assert_eq!(
            s.loglet_state(LogletId(9)).expect("state"),
            LogletState::default()
        );
        s.trim(L, 4).expect("trim");
        assert_eq!(held(&s, L), vec![4]);
        assert!(s.damaged_in(L, 0, 10).is_empty() && !s.suspect());
    }

    #[test]
    fn a_crash_keeps_what_was_synced_and_a_prefix_of_the_rest() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..100 {
            let disk = Rc::new(RefCell::new(SimDisk::default()));
            let mut s = SimLogStore::open(disk.clone()).expect("opening");
            s.put_records(L, 0, &[rec(0), rec(1), rec(2)]).expect("put");
            disk.borrow_mut().sync(Lane::Records);
            for o in 3..8 {
                s.put_records(L, o, &[rec(o)]).expect("put");
            }
            s.put_loglet_state(
                L,
                &LogletState {
                    sealed: true,
                    ..LogletState::default()
                },
            )
            .expect("put state");
            disk.borrow_mut().crash(&mut rng);
            let s = SimLogStore::open(disk.clone()).expect("reopening");
            let got = held(&s, L);
            assert!(got.len() >= 3, "synced records lost: {got:?}");
            assert_eq!(
                got,
                (0..got.len() as Offset).collect::<Vec<_>>(),
                "a prefix"
            );
            assert_eq!(s.local_tail(L).expect("tail"), got.len() as Offset);
            // The unsynced seal may or may not be there, but reads fine.
            s.loglet_state(L).expect("state");
        }
    }

    #[test]
    fn a_durable_trim_point_stays_applied_after_a_crash() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for _ in 0..50 {
            let disk = Rc::new(RefCell::new(SimDisk::default()));
            let mut s = SimLogStore::open(disk.clone()).expect("opening");
            s.put_records(L, 0, &[rec(0), rec(1), rec(2), rec(3)])
                .expect("put");
            disk.borrow_mut().sync(Lane::Records);
            s.trim(L, 3).expect("trim");
            s.put_loglet_state(
                L,
                &LogletState {
                    trim_point: 3,
                    ..LogletState::default()
                },
            )
            .expect("put state");
            // Only the state is synced, as a trim's answer waits for.
            disk.borrow_mut().sync(Lane::State);
            disk.borrow_mut().crash(&mut rng);
            let s = SimLogStore::open(disk.clone()).expect("reopening");
            assert_eq!(held(&s, L), vec![3]);
        }
    }

    #[test]
    fn sequencer_marks_are_state_and_survive_once_synced() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let disk = Rc::new(RefCell::new(SimDisk::default()));
        let s = SimLogStore::open(disk.clone()).expect("opening");
        assert!(!s.sequencer_was_started(L));
        s.mark_sequencer_started(L);
        assert!(s.sequencer_was_started(L));
        assert!(disk.borrow().is_dirty(Lane::State));
        disk.borrow_mut().sync(Lane::State);
        disk.borrow_mut().crash(&mut rng);
        assert!(SimLogStore::open(disk)
            .expect("reopening")
            .sequencer_was_started(L));
    }

    /// The core over this store, as the simulator drives it: every store it
    /// acknowledged (answered after its lane's sync) survives a crash.
    #[test]
    fn what_the_core_acknowledged_survives_a_crash() {
        let env = Env {
            now: Instant::now(),
            me: NodeId(1),
            nodes: vec![NodeId(1)],
            suspected: BTreeSet::new(),
        };
        let config = LogServerConfig {
            node: NodeId(1),
            bugs: BugSet::NONE,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        for round in 0..30u64 {
            let disk = Rc::new(RefCell::new(SimDisk::default()));
            let store = SimLogStore::open(disk.clone()).expect("opening");
            let mut core = LogServerCore::new(config.clone(), store);
            let mut acked = Vec::new();
            for first in 0..6u64 {
                let req = Request::Store(Store {
                    loglet: L,
                    first,
                    records: Arc::new(vec![rec(first)]),
                    known_global_tail: first,
                    repair: false,
                    from: None,
                });
                let effects = core.handle(
                    &env,
                    Input::Request {
                        from: NodeId(2),
                        token: Token(first),
                        req,
                    },
                );
                for e in effects {
                    if let Effect::RespondAfterSync { lane, resp, .. } = e {
                        // Some answers are sent (after a sync), some not.
                        if (first + round) % 2 == 0 {
                            disk.borrow_mut().sync(lane);
                            assert!(matches!(resp, Response::Store(StoreReply::Stored { .. })));
                            acked.push(first);
                        }
                    }
                }
            }
            let seal = Request::Seal(Seal { loglet: L });
            let trim = Request::Trim(Trim {
                loglet: L,
                below: 1,
            });
            for (token, req) in [(10, seal), (11, trim)] {
                for e in core.handle(
                    &env,
                    Input::Request {
                        from: NodeId(2),
                        token: Token(token),
                        req,
                    },
                ) {
                    if let Effect::RespondAfterSync { lane, .. } = e {
                        disk.borrow_mut().sync(lane);
                    }
                }
            }
            disk.borrow_mut().crash(&mut rng);
            let store = SimLogStore::open(disk.clone()).expect("reopening");
            let mut core = LogServerCore::new(config.clone(), store);
            let read = Request::GetRecords(GetRecords {
                loglet: L,
                from: 0,
                to: Offset::MAX,
                max_bytes: u32::MAX,
                include_uncommitted: true,
            });
            let effects = core.handle(
                &env,
                Input::Request {
                    from: NodeId(2),
                    token: Token(20),
                    req: read,
                },
            );
            let Some(Effect::Respond {
                resp: Response::GetRecords(Ok(reply)),
                ..
            }) = effects.last()
            else {
                panic!("no records: {effects:?}");
            };
            assert!(reply.tail.sealed, "the synced seal survived");
            let offsets: Vec<Offset> = reply.records.iter().map(|(o, _)| *o).collect();
            for o in acked.iter().filter(|o| **o >= 1) {
                assert!(offsets.contains(o), "acknowledged {o} lost: {offsets:?}");
            }
            assert!(!offsets.contains(&0), "trimmed offsets stay trimmed");
        }
    }
}
