//! The metadata acceptor's state on the simulated disk: [`AcceptorStore`]
//! over [`SimDisk`]'s `State` lane, one checksummed value per register key
//! (encoded as `storage::MetaStore` encodes it).
//!
//! A promise or an acceptance is a single put, so a crash keeps it whole or
//! not at all; the acceptor core answers only after the host synced the
//! lane, so what a proposer was told survives.

use super::disk::{Lane, SimDisk};
use crate::actors::metadata::core::{AcceptorState, AcceptorStore};
use crate::storage::{decode, encode, StorageError};
use std::cell::RefCell;
use std::rc::Rc;

/// Key prefix of acceptor states: `+ register key`.
const ACCEPTOR: &[u8] = b"meta/acceptor/";
/// The tree name in decode errors (the real store's tree).
const ACCEPTOR_TREE: &str = "meta_acceptor";

/// One node's acceptor store on its simulated disk (shared with the node's
/// other stores: the simulator runs on one thread).
#[derive(Clone, Debug)]
pub struct SimAcceptorStore {
    /// The node's disk.
    disk: Rc<RefCell<SimDisk>>,
}

impl SimAcceptorStore {
    /// Opens the store on `disk` (after a crash too: nothing to repair).
    pub fn open(disk: Rc<RefCell<SimDisk>>) -> Self {
        SimAcceptorStore { disk }
    }

    /// The node's disk.
    pub fn disk(&self) -> &Rc<RefCell<SimDisk>> {
        &self.disk
    }

    fn key(key: &str) -> Vec<u8> {
        let mut k = ACCEPTOR.to_vec();
        k.extend_from_slice(key.as_bytes());
        k
    }
}

impl AcceptorStore for SimAcceptorStore {
    fn get(&self, key: &str) -> Result<Option<AcceptorState>, StorageError> {
        let disk = self.disk.borrow();
        disk.get(&Self::key(key))
            .map(|v| decode(ACCEPTOR_TREE, v))
            .transpose()
    }

    fn put(&mut self, key: &str, state: &AcceptorState) -> Result<(), StorageError> {
        self.disk
            .borrow_mut()
            .put(Lane::State, Self::key(key), encode(state));
        Ok(())
    }

    fn keys(&self) -> Result<Vec<String>, StorageError> {
        let disk = self.disk.borrow();
        Ok(disk
            .scan_prefix(ACCEPTOR)
            .map(|(k, _)| String::from_utf8_lossy(&k[ACCEPTOR.len()..]).into_owned())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::env::Env;
    use crate::actors::metadata::core::{
        AcceptorCore, AcceptorEffect, AcceptorInput, Ballot, PrepareReply,
    };
    use crate::actors::metadata::{AcceptorRequest, AcceptorResponse, Prepare};
    use crate::types::NodeId;
    use rand::SeedableRng;
    use std::time::Instant;

    fn env() -> Env {
        Env {
            now: Instant::now(),
            me: NodeId(1),
            nodes: vec![NodeId(1), NodeId(2), NodeId(3)],
            suspected: Default::default(),
        }
    }

    fn prepare(round: u64) -> AcceptorInput<()> {
        AcceptorInput::Request {
            from: NodeId(2),
            token: (),
            req: AcceptorRequest::Prepare(Prepare {
                key: "leader/0".into(),
                ballot: Ballot { round, node: 2 },
            }),
        }
    }

    #[test]
    fn a_synced_promise_survives_a_crash_and_an_unsynced_one_may_not() {
        let disk = Rc::new(RefCell::new(SimDisk::default()));
        let mut core = AcceptorCore::new(SimAcceptorStore::open(disk.clone()));
        let effects = core.handle(&env(), prepare(3));
        assert!(matches!(
            effects[..],
            [AcceptorEffect::RespondAfterSync {
                lane: Lane::State,
                ..
            }]
        ));
        disk.borrow_mut().sync(Lane::State);
        core.handle(&env(), prepare(5));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        disk.borrow_mut().crash(&mut rng);
        let store = SimAcceptorStore::open(disk.clone());
        let promised = store.get("leader/0").expect("read").expect("kept").promised;
        assert!(
            promised.round == 3 || promised.round == 5,
            "synced or later: {promised:?}"
        );
        // A core over the reopened store refuses below what it promised.
        let mut core = AcceptorCore::new(store);
        assert_eq!(
            core.handle(&env(), prepare(3)),
            vec![AcceptorEffect::Respond {
                token: (),
                resp: AcceptorResponse::Prepare(Ok(PrepareReply::Reject { promised })),
            }]
        );
    }

    #[test]
    fn a_corrupt_value_is_an_error_never_absence() {
        let disk = Rc::new(RefCell::new(SimDisk::default()));
        disk.borrow_mut()
            .put(Lane::State, SimAcceptorStore::key("k"), b"garbage".to_vec());
        let store = SimAcceptorStore::open(disk);
        assert!(store.get("k").is_err());
        assert_eq!(store.get("other").expect("read"), None);
    }
}
