//! The metadata register: a replicated key→value register with compare-and-set
//! on a version, on every node (CASPaxos; see `core.rs` for the protocol and
//! its source). Keys: `chain/<log>` (a log's segments) and `leader/<p>`
//! (a partition's leader and epoch). It is the only consensus in keel.
//!
//! - [`MetadataStore`] is the acceptor actor: it persists (and flushes) its
//!   per-key state before every reply that depends on it.
//! - [`MetadataClient`] is the proposer: any node runs both phases against a
//!   majority with one deadline, backing off with jitter on contention.
//! - [`MetaCache`] keeps the latest value this node has seen of each key.

mod cache;
mod client;
pub mod core;
pub mod messages;
pub mod proposer;
pub mod schema;

pub use cache::MetaCache;
pub use client::{CasOutcome, MetaError, MetadataClient};
pub use messages::*;

use self::core::{AcceptorState, PrepareReply};
use crate::storage::Storage;
use crate::types::NodeId;
use actix::prelude::*;
use std::collections::HashMap;
use tracing::info;

pub struct MetadataStore {
    node: NodeId,
    storage: Storage,
    /// Acceptor state per key, loaded from storage on first use.
    state: HashMap<String, AcceptorState>,
}

impl MetadataStore {
    pub fn new(node: NodeId, storage: Storage) -> Self {
        MetadataStore {
            node,
            storage,
            state: HashMap::new(),
        }
    }

    fn state(
        &mut self,
        key: &str,
        ballot: self::core::Ballot,
    ) -> Result<&mut AcceptorState, AcceptorError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(AcceptorError::BadKey);
        }
        if ballot.round > self::core::Ballot::MAX_ROUND {
            return Err(AcceptorError::BadBallot(ballot.round));
        }
        if !self.state.contains_key(key) {
            let loaded = self
                .storage
                .meta
                .acceptor_get::<AcceptorState>(key)
                .map_err(|e| AcceptorError::Storage(e.to_string()))?
                .unwrap_or_default();
            self.state.insert(key.to_string(), loaded);
        }
        Ok(self.state.get_mut(key).expect("just inserted"))
    }

    /// Persists `key`'s state and replies once it is durable.
    fn reply_durably<T: Send + 'static>(
        &mut self,
        key: &str,
        changed: bool,
        reply: T,
    ) -> ResponseFuture<Result<T, AcceptorError>> {
        if !changed {
            return Box::pin(async move { Ok(reply) });
        }
        let state = self.state.get(key).cloned().unwrap_or_default();
        if let Err(e) = self.storage.meta.acceptor_put(key, &state) {
            return Box::pin(async move { Err(AcceptorError::Storage(e.to_string())) });
        }
        let storage = self.storage.clone();
        Box::pin(async move {
            storage
                .sync_state()
                .await
                .map_err(|e| AcceptorError::Storage(e.to_string()))?;
            Ok(reply)
        })
    }
}

impl Actor for MetadataStore {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        info!(node = %self.node, "metadata acceptor started");
    }
}

impl Handler<Prepare> for MetadataStore {
    type Result = ResponseFuture<Result<PrepareReply, AcceptorError>>;
    fn handle(&mut self, msg: Prepare, _: &mut Self::Context) -> Self::Result {
        let (reply, changed) = match self.state(&msg.key, msg.ballot) {
            Ok(state) => state.prepare(msg.ballot),
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        self.reply_durably(&msg.key, changed, reply)
    }
}

impl Handler<Accept> for MetadataStore {
    type Result = ResponseFuture<Result<self::core::AcceptReply, AcceptorError>>;
    fn handle(&mut self, msg: Accept, _: &mut Self::Context) -> Self::Result {
        if msg.value.value.len() > MAX_VALUE_LEN {
            let e = AcceptorError::TooLarge(msg.value.value.len());
            return Box::pin(async move { Err(e) });
        }
        if let Err(why) = schema::check(&msg.key, &msg.value.value) {
            return Box::pin(async move { Err(AcceptorError::BadValue(why)) });
        }
        let (reply, changed) = match self.state(&msg.key, msg.ballot) {
            Ok(state) => state.accept(msg.ballot, msg.value),
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        self.reply_durably(&msg.key, changed, reply)
    }
}

impl Handler<crate::actors::supervisor::Ping> for MetadataStore {
    type Result = ();
    fn handle(&mut self, _: crate::actors::supervisor::Ping, _: &mut Self::Context) {}
}
