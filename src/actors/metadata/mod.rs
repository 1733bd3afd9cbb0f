//! The metadata register: a replicated key→value register with compare-and-set
//! on a version, on every node (CASPaxos). Keys: `chain/<log>` (a log's
//! segments) and `leader/<p>` (a partition's leader and epoch). It is the only
//! consensus in keel.
//!
//! The acceptor's rules are a core without I/O in `core.rs`
//! ([`AcceptorCore`](self::core::AcceptorCore)): promise, accept, what is
//! persisted before a reply.
//!
//! - [`MetadataStore`] is the acceptor actor, a shell over that core: it
//!   feeds each request to it and sends the answer, after syncing the state
//!   lane when the core says so.
//! - [`MetadataClient`] is the proposer: any node runs both phases against a
//!   majority with one deadline, backing off with jitter on contention.
//! - [`MetaCache`] keeps the latest value this node has seen of each key.

mod cache;
mod client;
pub mod core;
pub mod messages;
pub mod proposer;
pub mod proposer_core;
pub mod rejoin;
pub mod schema;

pub use cache::MetaCache;
pub use client::{CasOutcome, MetaError, MetadataClient};
pub use messages::*;

use self::core::{AcceptReply, AcceptorCore, AcceptorEffect, AcceptorInput, PrepareReply};
use crate::actors::env::Env;
use crate::sim::disk::Lane;
use crate::storage::{MetaStore, Storage};
use crate::types::NodeId;
use actix::prelude::*;
use std::time::Instant;
use tracing::info;

/// The acceptor actor: a shell over this node's [`AcceptorCore`].
pub struct MetadataStore {
    /// This node.
    node: NodeId,
    /// Syncs the lane a reply waits for.
    storage: Storage,
    /// The acceptor's rules and per-key state.
    core: AcceptorCore<MetaStore>,
}

impl MetadataStore {
    /// An acceptor that votes only if `voting` (false while this node
    /// rejoins after a lost disk, until its rejoin says it is safe).
    pub fn new(node: NodeId, storage: Storage, voting: bool) -> Self {
        let mut core = AcceptorCore::new(storage.meta.clone());
        core.set_voting(voting);
        MetadataStore {
            node,
            core,
            storage,
        }
    }

    /// Runs one request through the core and answers as it says.
    fn serve<T: Send + 'static>(
        &mut self,
        req: AcceptorRequest,
        reply: fn(AcceptorResponse) -> Option<Result<T, AcceptorError>>,
    ) -> ResponseFuture<Result<T, AcceptorError>> {
        // The acceptor's rules need no view of the cluster or the clock.
        let env = Env {
            now: Instant::now(),
            me: self.node,
            nodes: vec![self.node],
            suspected: Default::default(),
        };
        let input = AcceptorInput::Request {
            from: self.node,
            token: (),
            req,
        };
        let Some(effect) = self.core.handle(&env, input).pop() else {
            let e = AcceptorError::Storage("the acceptor gave no answer".into());
            return Box::pin(async move { Err(e) });
        };
        let (lane, resp) = match effect {
            AcceptorEffect::Respond { resp, .. } => (None, resp),
            AcceptorEffect::RespondAfterSync { lane, resp, .. } => (Some(lane), resp),
        };
        let answer = reply(resp).unwrap_or_else(|| {
            Err(AcceptorError::Storage(
                "the acceptor answered another phase".into(),
            ))
        });
        let storage = self.storage.clone();
        Box::pin(async move {
            let synced = match lane {
                None => Ok(()),
                Some(Lane::State) => storage.sync_state().await,
                Some(Lane::Records) => storage.sync_records().await,
            };
            synced.map_err(|e| AcceptorError::Storage(e.to_string()))?;
            answer
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
        self.serve(AcceptorRequest::Prepare(msg), |resp| match resp {
            AcceptorResponse::Prepare(r) => Some(r),
            AcceptorResponse::Accept(_) => None,
        })
    }
}

impl Handler<Accept> for MetadataStore {
    type Result = ResponseFuture<Result<AcceptReply, AcceptorError>>;
    fn handle(&mut self, msg: Accept, _: &mut Self::Context) -> Self::Result {
        self.serve(AcceptorRequest::Accept(msg), |resp| match resp {
            AcceptorResponse::Accept(r) => Some(r),
            AcceptorResponse::Prepare(_) => None,
        })
    }
}

impl Handler<ListKeys> for MetadataStore {
    type Result = Result<Vec<(String, u64)>, AcceptorError>;
    fn handle(&mut self, _: ListKeys, _: &mut Self::Context) -> Self::Result {
        self.core.list_keys()
    }
}

/// The rejoin of this node's register is complete: vote from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartVoting;

impl Handler<StartVoting> for MetadataStore {
    type Result = ();
    fn handle(&mut self, _: StartVoting, _: &mut Self::Context) {
        if !self.core.voting() {
            info!(node = %self.node, "acceptor votes again (rejoin of the register complete)");
        }
        self.core.set_voting(true);
    }
}

impl Handler<crate::actors::supervisor::Ping> for MetadataStore {
    type Result = ();
    fn handle(&mut self, _: crate::actors::supervisor::Ping, _: &mut Self::Context) {}
}
