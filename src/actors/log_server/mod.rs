//! The log-server: one per node; stores the records of every loglet whose
//! nodeset holds this node.
//!
//! Every rule it keeps is in [`core`] (stores, the seal rule, the trim
//! point, reads below the known global tail, what waits for which sync).
//! The actor here is a shell: it hands each message to the core and carries
//! out the effects — it syncs the lane an answer waits for (the node's group
//! commit batches concurrent stores into one fsync), and publishes tail
//! changes to the node's [`TailWatch`] for local readers.
//!
//! The actor keeps no truth of its own: a new incarnation builds a new core,
//! which re-derives each loglet's state from storage on first use.

pub mod commit_watch;
pub mod core;
pub mod messages;
mod store;
mod tail_watch;

pub use messages::*;
pub use tail_watch::TailWatch;

use self::commit_watch::CommitCounts;
use self::core::{Effect, Input, Lane, LogServerConfig, LogServerCore, Request, Response, Token};
use crate::actors::bugs::BugSet;
use crate::actors::env::Env;
use crate::storage::{LogStore, Storage};
use crate::transport::health::SAMPLE_EVERY;
use crate::types::{LogletId, NodeId};
use actix::prelude::*;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;
use tracing::info;

pub struct LogServer {
    /// This node.
    node: NodeId,
    /// The node's storage: the core's store, and the lanes answers wait for.
    storage: Storage,
    /// Where tail changes are published for this node's readers.
    tails: TailWatch,
    /// The rules.
    core: LogServerCore<LogStore>,
    /// The next request token (answers are matched to requests by it).
    next_token: u64,
    /// Where the commit waits the core judged go (the transport's health
    /// score, in a node); `None`: nowhere.
    commit_sink: Option<CommitSink>,
}

/// Takes the commit waits judged on one node's sequencer (see
/// [`commit_watch`]).
pub type CommitSink = Arc<dyn Fn(NodeId, CommitCounts) + Send + Sync>;

impl LogServer {
    pub fn new(node: NodeId, storage: Storage, tails: TailWatch) -> Self {
        let config = LogServerConfig {
            node,
            bugs: BugSet::NONE,
        };
        LogServer {
            node,
            core: LogServerCore::new(config, storage.log.clone()),
            storage,
            tails,
            next_token: 0,
            commit_sink: None,
        }
    }

    /// Hands the commit waits the core judges to `sink`, every
    /// [`SAMPLE_EVERY`] (the health score's period).
    pub fn reporting_commits_to(mut self, sink: CommitSink) -> Self {
        self.commit_sink = Some(sink);
        self
    }

    /// Judges the commit waits due and reports what was judged.
    fn report_commits(&mut self) {
        let counts = self.core.judge_commits(Instant::now());
        if let Some(sink) = &self.commit_sink {
            for (node, c) in counts {
                sink(node, c);
            }
        }
    }

    /// What the core is told about the world (it uses none of it but the
    /// time: a log-server's rules do not depend on its peers).
    fn env(&self) -> Env {
        Env {
            now: Instant::now(),
            me: self.node,
            nodes: vec![self.node],
            suspected: BTreeSet::new(),
        }
    }

    /// Runs `input` through the core and carries out its effects; returns
    /// the answer to the request, if it was one.
    fn run(&mut self, input: Input) -> Option<Answer> {
        let effects = self.core.handle(&self.env(), input);
        let mut answer = None;
        for effect in effects {
            match effect {
                Effect::Tail { loglet, info } => self.tails.publish(loglet, info),
                Effect::Respond { resp, .. } => answer = Some(Answer::Now(resp)),
                Effect::RespondAfterSync { lane, resp, .. } => {
                    answer = Some(Answer::AfterSync(lane, resp))
                }
            }
        }
        answer
    }

    /// Serves `req` and answers with the reply `pick` takes from the core's
    /// response (`fallback` if the core gave none of that kind).
    fn serve<T: 'static>(
        &mut self,
        from: NodeId,
        req: Request,
        pick: fn(Response) -> Option<T>,
        fallback: fn() -> T,
    ) -> actix::Response<T> {
        let token = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1);
        let answer = self.run(Input::Request { from, token, req });
        match answer {
            Some(Answer::Now(resp)) => actix::Response::reply(pick(resp).unwrap_or_else(fallback)),
            Some(Answer::AfterSync(lane, resp)) => {
                // The sync runs outside the actor, so the stores that arrive
                // meanwhile join the same group commit.
                let storage = self.storage.clone();
                actix::Response::fut(async move {
                    let synced = match lane {
                        Lane::Records => storage.sync_records().await,
                        Lane::State => storage.sync_state().await,
                    };
                    let resp = match synced {
                        Ok(()) => resp,
                        Err(e) => resp.failed(e.into()),
                    };
                    pick(resp).unwrap_or_else(fallback)
                })
            }
            None => actix::Response::reply(fallback()),
        }
    }
}

/// How the core answered a request.
enum Answer {
    /// At once.
    Now(Response),
    /// Once the lane is synced.
    AfterSync(Lane, Response),
}

impl Actor for LogServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(SAMPLE_EVERY, |act, _| act.report_commits());
        info!(node = %self.node, "log-server started");
    }
}

impl Handler<Store> for LogServer {
    type Result = actix::Response<StoreReply>;

    fn handle(&mut self, msg: Store, _: &mut Self::Context) -> Self::Result {
        let from = msg.from.unwrap_or(self.node);
        self.serve(
            from,
            Request::Store(msg),
            |r| match r {
                Response::Store(r) => Some(r),
                _ => None,
            },
            || StoreReply::Failed(LogServerError::Unavailable),
        )
    }
}

impl Handler<Seal> for LogServer {
    type Result = actix::Response<Result<TailInfo, LogServerError>>;

    fn handle(&mut self, msg: Seal, _: &mut Self::Context) -> Self::Result {
        self.serve(
            self.node,
            Request::Seal(msg),
            |r| match r {
                Response::Seal(r) => Some(r),
                _ => None,
            },
            || Err(LogServerError::Unavailable),
        )
    }
}

impl Handler<GetTail> for LogServer {
    type Result = actix::Response<Result<TailInfo, LogServerError>>;

    fn handle(&mut self, msg: GetTail, _: &mut Self::Context) -> Self::Result {
        self.serve(
            self.node,
            Request::GetTail(msg),
            |r| match r {
                Response::GetTail(r) => Some(r),
                _ => None,
            },
            || Err(LogServerError::Unavailable),
        )
    }
}

impl Handler<GetRecords> for LogServer {
    type Result = actix::Response<Result<RecordsReply, LogServerError>>;

    fn handle(&mut self, msg: GetRecords, _: &mut Self::Context) -> Self::Result {
        self.serve(
            self.node,
            Request::GetRecords(msg),
            |r| match r {
                Response::GetRecords(r) => Some(r),
                _ => None,
            },
            || Err(LogServerError::Unavailable),
        )
    }
}

impl Handler<Trim> for LogServer {
    type Result = actix::Response<Result<(), LogServerError>>;

    fn handle(&mut self, msg: Trim, _: &mut Self::Context) -> Self::Result {
        self.serve(
            self.node,
            Request::Trim(msg),
            |r| match r {
                Response::Trim(r) => Some(r),
                _ => None,
            },
            || Err(LogServerError::Unavailable),
        )
    }
}

/// Local only: a rejoin re-replicated `loglet`; it counts again once the
/// cleared mark is durable (see [`LogServerCore::clear_lost`]).
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<(), LogServerError>")]
pub struct ClearLost {
    /// The loglet whose records were copied back.
    pub loglet: LogletId,
}

impl Handler<ClearLost> for LogServer {
    type Result = ResponseFuture<Result<(), LogServerError>>;

    fn handle(&mut self, msg: ClearLost, _: &mut Self::Context) -> Self::Result {
        let (changed, effects) = match self.core.clear_lost(msg.loglet) {
            Ok(done) => done,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        for effect in effects {
            if let Effect::Tail { loglet, info } = effect {
                self.tails.publish(loglet, info);
            }
        }
        let storage = self.storage.clone();
        Box::pin(async move {
            if changed {
                storage.sync_state().await?;
            }
            Ok(())
        })
    }
}

impl Handler<Release> for LogServer {
    type Result = ();

    fn handle(&mut self, msg: Release, _: &mut Self::Context) {
        self.run(Input::Release(msg));
    }
}

impl Handler<crate::actors::supervisor::Ping> for LogServer {
    type Result = ();
    fn handle(&mut self, _: crate::actors::supervisor::Ping, _: &mut Self::Context) {}
}
