//! The log-server: one per node; stores the records of every loglet whose
//! nodeset holds this node.
//!
//! Rules it keeps (DESIGN.md, "The log"):
//! - a store is acknowledged only after the records are flushed (the node's
//!   group commit batches concurrent stores into one fsync);
//! - a seal is persisted and flushed before `Sealed` is answered, and every
//!   later normal store is refused, so once an f-majority sealed no new write
//!   quorum can form; tail-repair stores are still accepted;
//! - reads are served below the known global tail unless the caller asks for
//!   uncommitted records (a sealer, reading a sealed loglet).
//!
//! The actor keeps no truth of its own: a new incarnation re-derives each
//! loglet's state from storage on first use.

pub mod messages;
mod tail_watch;

pub use messages::*;
pub use tail_watch::TailWatch;

use crate::storage::{LogletState, Storage};
use crate::types::{LogletId, NodeId, Offset};
use actix::prelude::*;
use futures::FutureExt;
use std::collections::HashMap;
use tracing::{debug, info};

/// What a reply must wait for.
enum Durable {
    /// A store: its records (the loglet's known global tail is advisory and
    /// rides along with the next state sync).
    Records,
    /// A seal or a trim: the loglet's state. (Stores this server
    /// acknowledged are durable already: each waited for its records.)
    LogletState,
}

struct Loglet {
    /// The loglet's durable state (sealed, trim point), as last written.
    state: LogletState,
    /// One past the highest offset stored here.
    local_tail: Offset,
    /// Whether this server may lack records it cannot name.
    suspect: bool,
}

impl Loglet {
    fn tail_info(&self) -> TailInfo {
        TailInfo {
            sealed: self.state.sealed,
            local_tail: self.local_tail,
            known_global_tail: self.state.known_global_tail,
            suspect: self.suspect,
        }
    }
}

pub struct LogServer {
    node: NodeId,
    storage: Storage,
    tails: TailWatch,
    loglets: HashMap<LogletId, Loglet>,
}

impl LogServer {
    pub fn new(node: NodeId, storage: Storage, tails: TailWatch) -> Self {
        LogServer {
            node,
            storage,
            tails,
            loglets: HashMap::new(),
        }
    }

    fn loglet(&mut self, id: LogletId) -> Result<&mut Loglet, LogServerError> {
        if !self.loglets.contains_key(&id) {
            let state = self.storage.log.loglet_state(id)?;
            let local_tail = self.storage.log.local_tail(id)?;
            let suspect = self.storage.log.records().suspect().is_some();
            let loglet = Loglet {
                state,
                local_tail,
                suspect,
            };
            self.tails.publish(id, loglet.tail_info());
            self.loglets.insert(id, loglet);
        }
        Ok(self.loglets.get_mut(&id).expect("just inserted"))
    }

    /// Reply once what the reply depends on is durable: the records stored
    /// so far, or the loglet state written so far.
    fn after_sync<T: Send + 'static>(
        &self,
        what: Durable,
        reply: T,
        on_error: impl FnOnce(LogServerError) -> T + Send + 'static,
    ) -> ResponseFuture<T> {
        let storage = self.storage.clone();
        Box::pin(async move {
            let synced = match what {
                Durable::Records => storage.sync_records().await,
                Durable::LogletState => storage.sync_state().await,
            };
            match synced {
                Ok(()) => reply,
                Err(e) => on_error(e.into()),
            }
        })
    }
}

impl Actor for LogServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        info!(node = %self.node, "log-server started");
    }
}

impl Handler<Store> for LogServer {
    type Result = ResponseFuture<StoreReply>;

    fn handle(&mut self, msg: Store, _: &mut Self::Context) -> Self::Result {
        let bytes: usize = msg.records.iter().map(|r| r.len()).sum();
        if msg.records.len() > MAX_STORE_RECORDS || bytes > MAX_STORE_BYTES {
            let err = LogServerError::TooLarge {
                records: msg.records.len(),
                bytes,
            };
            return Box::pin(async move { StoreReply::Failed(err) });
        }
        let storage = self.storage.clone();
        let tails = self.tails.clone();
        let loglet = match self.loglet(msg.loglet) {
            Ok(l) => l,
            Err(e) => return Box::pin(async move { StoreReply::Failed(e) }),
        };
        if loglet.state.sealed && !msg.repair {
            let local_tail = loglet.local_tail;
            debug!(loglet = %msg.loglet, first = msg.first, "store refused: sealed");
            return Box::pin(async move { StoreReply::Sealed { local_tail } });
        }
        let Some(end) = msg.first.checked_add(msg.records.len() as Offset) else {
            let err = LogServerError::OutOfRange {
                first: msg.first,
                records: msg.records.len(),
            };
            return Box::pin(async move { StoreReply::Failed(err) });
        };
        // Offsets below the trim point are gone for good: a late resend or
        // a repair of them must not bring them back.
        let skip = loglet.state.trim_point.saturating_sub(msg.first);
        let kept = msg.records.get(skip as usize..).unwrap_or_default();
        let first = msg.first.saturating_add(skip);
        if let Err(e) = storage.log.put_records(msg.loglet, first, kept) {
            return Box::pin(async move { StoreReply::Failed(e.into()) });
        }
        // A store of no records stores no offset: the tail stays.
        if !msg.records.is_empty() {
            loglet.local_tail = loglet.local_tail.max(end);
        }
        if msg.known_global_tail > loglet.state.known_global_tail {
            loglet.state.known_global_tail = msg.known_global_tail;
        }
        let local_tail = loglet.local_tail;
        tails.publish(msg.loglet, loglet.tail_info());
        self.after_sync(
            Durable::Records,
            StoreReply::Stored { local_tail },
            StoreReply::Failed,
        )
    }
}

impl Handler<Seal> for LogServer {
    type Result = ResponseFuture<Result<TailInfo, LogServerError>>;

    fn handle(&mut self, msg: Seal, _: &mut Self::Context) -> Self::Result {
        let storage = self.storage.clone();
        let tails = self.tails.clone();
        let loglet = match self.loglet(msg.loglet) {
            Ok(l) => l,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        if !loglet.state.sealed {
            info!(loglet = %msg.loglet, local_tail = loglet.local_tail, "sealing");
            loglet.state.sealed = true;
        }
        if let Err(e) = storage.log.put_loglet_state(msg.loglet, &loglet.state) {
            return Box::pin(async move { Err(e.into()) });
        }
        let info = loglet.tail_info();
        tails.publish(msg.loglet, info);
        self.after_sync(Durable::LogletState, Ok(info), Err)
    }
}

impl Handler<GetTail> for LogServer {
    type Result = Result<TailInfo, LogServerError>;

    fn handle(&mut self, msg: GetTail, _: &mut Self::Context) -> Self::Result {
        Ok(self.loglet(msg.loglet)?.tail_info())
    }
}

impl Handler<GetRecords> for LogServer {
    type Result = Result<RecordsReply, LogServerError>;

    fn handle(&mut self, msg: GetRecords, _: &mut Self::Context) -> Self::Result {
        let storage = self.storage.clone();
        let loglet = self.loglet(msg.loglet)?;
        let tail = loglet.tail_info();
        let to = if msg.include_uncommitted {
            msg.to
        } else {
            msg.to.min(tail.known_global_tail)
        };
        let max_bytes = (msg.max_bytes as usize).min(MAX_STORE_BYTES);
        let records = storage
            .log
            .read_records(msg.loglet, msg.from, to, max_bytes)?
            .into_iter()
            .map(|(o, r)| (o, r.into()))
            .collect();
        // Reading may just have found damage: report it with the records.
        let damaged = storage.log.records().damaged_in(msg.loglet, msg.from, to);
        Ok(RecordsReply {
            records,
            tail,
            damaged,
        })
    }
}

impl Handler<Release> for LogServer {
    type Result = ();

    fn handle(&mut self, msg: Release, _: &mut Self::Context) {
        let tails = self.tails.clone();
        if let Ok(loglet) = self.loglet(msg.loglet) {
            if msg.global_tail > loglet.state.known_global_tail {
                loglet.state.known_global_tail = msg.global_tail;
                tails.publish(msg.loglet, loglet.tail_info());
            }
        }
    }
}

impl Handler<Trim> for LogServer {
    type Result = ResponseFuture<Result<(), LogServerError>>;

    fn handle(&mut self, msg: Trim, _: &mut Self::Context) -> Self::Result {
        let storage = self.storage.clone();
        let result = (|| {
            let loglet = self.loglet(msg.loglet)?;
            // The trimmer (a partition leader) asserts that everything below
            // `below` is committed and applied by every replica.
            let below = msg.below;
            loglet.state.known_global_tail = loglet.state.known_global_tail.max(below);
            if below <= loglet.state.trim_point {
                return Ok(false);
            }
            storage.log.trim(msg.loglet, below)?;
            loglet.state.trim_point = below;
            storage.log.put_loglet_state(msg.loglet, &loglet.state)?;
            Ok::<_, LogServerError>(true)
        })();
        match result {
            Ok(true) => self.after_sync(Durable::LogletState, Ok(()), Err),
            Ok(false) => async { Ok(()) }.boxed(),
            Err(e) => async move { Err(e) }.boxed(),
        }
    }
}

impl Handler<crate::actors::supervisor::Ping> for LogServer {
    type Result = ();
    fn handle(&mut self, _: crate::actors::supervisor::Ping, _: &mut Self::Context) {}
}
