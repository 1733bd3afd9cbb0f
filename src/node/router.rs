//! Incoming traffic from peers, routed to this node's actors.
//!
//! Called on the transport's reader task, so nothing here blocks: each request
//! is handed to a task that awaits the actor (mailboxes exert backpressure on
//! that task, not on the connection), and one-way messages use `try_send`
//! (a full mailbox drops a hint, never stalls a peer).

use super::local::{LocalActors, LocalRoute};
use super::status::StatusSource;
use super::wire::{Rpc, Wire, WireError, WireErrorOwned};
use crate::transport::{Inbound, Responder};
use crate::types::NodeId;
use std::sync::{Arc, Mutex};
use tracing::debug;

pub struct Router {
    local: LocalActors,
    /// Set once the node is assembled (status needs the whole node);
    /// cleared when it stops, so handles kept elsewhere (a client's `Net`)
    /// do not keep the node's storage open.
    status: Mutex<Option<StatusSource>>,
    /// Serves `Relay` (set once the ingress exists; cleared with `status`).
    relay: Mutex<Option<RelayFn>>,
}

/// Takes one relayed request to the leader this node knows.
pub type RelayFn = Arc<
    dyn Fn(
            crate::actors::partition_processor::Invoke,
        )
            -> futures::future::BoxFuture<'static, crate::actors::partition_processor::InvokeReply>
        + Send
        + Sync,
>;

impl Router {
    pub fn new(local: LocalActors) -> Arc<Self> {
        Arc::new(Router {
            local,
            status: Mutex::new(None),
            relay: Mutex::new(None),
        })
    }

    pub fn set_status_source(&self, source: StatusSource) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    pub fn set_relay(&self, relay: RelayFn) {
        *self.relay.lock().unwrap_or_else(|p| p.into_inner()) = Some(relay);
    }

    /// Drops what ties the router to the node's state.
    pub fn detach(&self) {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.relay.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn serve<R>(&self, req: R, reply: Responder<Wire>)
    where
        R: Rpc,
        LocalActors: LocalRoute<R>,
    {
        let Some(recipient) = self.local.route(&req) else {
            reply.respond(Wire::Error(WireError::Unavailable(R::NAME).into()));
            return;
        };
        // The caller stops waiting at its deadline (capped by the transport);
        // so does this task, whatever the peer asked for.
        let deadline = tokio::time::Instant::from_std(reply.deadline());
        tokio::spawn(async move {
            match tokio::time::timeout_at(deadline, recipient.send(req)).await {
                Ok(Ok(answer)) => reply.respond(R::reply_into_wire(answer)),
                Ok(Err(_)) => reply.respond(Wire::Error(WireError::Unavailable(R::NAME).into())),
                // Nobody waits for the answer any more (dropping the
                // responder says so, should the caller still listen).
                Err(_) => drop(reply),
            }
        });
    }
}

impl Inbound<Wire> for Router {
    fn on_request(&self, from: NodeId, msg: Wire, reply: Responder<Wire>) {
        match msg {
            Wire::Prepare(r) => self.serve(r, reply),
            Wire::Accept(r) => self.serve(r, reply),
            Wire::Store(mut r) => {
                r.from = Some(from);
                self.serve(r, reply)
            }
            Wire::Seal(r) => self.serve(r, reply),
            Wire::GetTail(r) => self.serve(r, reply),
            Wire::GetRecords(r) => self.serve(r, reply),
            Wire::Trim(r) => self.serve(r, reply),
            Wire::Append(r) => self.serve(r, reply),
            Wire::PreVote(r) => self.serve(r, reply),
            Wire::Invoke(r) => self.serve(r, reply),
            Wire::Deliver(r) => self.serve(r, reply),
            Wire::GetPersisted(r) => self.serve(r, reply),
            Wire::ListKeys(r) => self.serve(r, reply),
            Wire::GetSnapshot(r) => self.serve(r, reply),
            Wire::GetNodeStatus => match self
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                Some(source) => {
                    let fut = source();
                    tokio::spawn(
                        async move { reply.respond(Wire::NodeStatus(Box::new(fut.await))) },
                    );
                }
                None => reply.respond(Wire::Error(WireError::Unavailable("status").into())),
            },
            Wire::Relay(invoke) => {
                let relay = self.relay.lock().unwrap_or_else(|p| p.into_inner()).clone();
                match relay {
                    Some(relay) => {
                        let fut = relay(*invoke);
                        tokio::spawn(async move { reply.respond(Wire::RelayResult(fut.await)) });
                    }
                    None => reply.respond(Wire::Error(WireError::Unavailable("ingress").into())),
                }
            }
            other => {
                debug!(%from, "not a request: {other:?}");
                reply.respond(Wire::Error(WireErrorOwned(WireError::Mismatch.to_string())));
            }
        }
    }

    fn on_message(&self, from: NodeId, msg: Wire) {
        match msg {
            Wire::MetaUpdate(update) => {
                // A hint that would not decode is not worth caching.
                match crate::actors::metadata::schema::check(&update.key, &update.value.value) {
                    Ok(()) => {
                        self.local.meta_cache.observe(&update.key, &update.value);
                    }
                    Err(why) => debug!(%from, "metadata hint dropped: {why}"),
                }
            }
            Wire::Release(release) => {
                self.local
                    .tails
                    .publish_global(release.loglet, release.global_tail);
                if let Some(ls) = self.local.log_server.addr() {
                    let _ = ls.try_send(release);
                }
            }
            other => debug!(%from, "unexpected one-way message: {other:?}"),
        }
    }
}
