//! What the log's protocol cores (the seal job, `actors::sealer::core`; the
//! appender and reader, `log::core`) ask of other nodes and of their own
//! node's metadata register, as plain values: the requests (the existing wire
//! types), the replies, and the ids that pair a reply with its request.
//!
//! The cores never perform any of it. The actix shells do, with
//! [`perform`] and [`run_meta`] at the end of this file; the simulator
//! routes the same values to the target node's cores ([`Request::into_wire`]
//! and [`Response::from_wire`] translate to and from [`Wire`]).

use crate::actors::log_server::{
    GetRecords, LogServerError, RecordsReply, Seal, Store, StoreReply, TailInfo, Trim,
};
use crate::actors::metadata::proposer::{Change, Outcome};
use crate::actors::metadata::{MetaError, MetadataClient};
use crate::actors::sequencer::{Append, AppendOutcome, SequencerError};
use crate::node::{CallError, Net, Wire};
use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Pairs a call to another node with its one reply; chosen by the core that
/// makes the call (its own counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CallId(pub u64);

/// Pairs an operation on this node's metadata register (a read or a CAS of
/// `chain/<log>`) with its result; chosen by the core that asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MetaOp(pub u64);

/// A request a log core sends to a log-server or a sequencer.
#[derive(Clone, Debug)]
pub enum Request {
    /// Seal a loglet on a log-server (the seal job).
    Seal(Seal),
    /// Records of a loglet (the seal job's fetch, a reader's peer read).
    GetRecords(GetRecords),
    /// Store records (the seal job's repair, a reader's read repair).
    Store(Store),
    /// Append to a loglet's sequencer (the appender).
    Append(Append),
    /// Drop records below an offset (trim).
    Trim(Trim),
}

/// The reply to a [`Request`], of the matching kind.
#[derive(Clone, Debug)]
pub enum Response {
    /// To [`Request::Seal`].
    Seal(Result<TailInfo, LogServerError>),
    /// To [`Request::GetRecords`].
    Records(Result<RecordsReply, LogServerError>),
    /// To [`Request::Store`].
    Store(StoreReply),
    /// To [`Request::Append`].
    Append(Result<AppendOutcome, SequencerError>),
    /// To [`Request::Trim`].
    Trim(Result<(), LogServerError>),
}

impl Request {
    /// The request as it crosses the wire.
    pub fn into_wire(self) -> Wire {
        match self {
            Request::Seal(r) => Wire::Seal(r),
            Request::GetRecords(r) => Wire::GetRecords(r),
            Request::Store(r) => Wire::Store(r),
            Request::Append(r) => Wire::Append(r),
            Request::Trim(r) => Wire::Trim(r),
        }
    }
}

impl Response {
    /// The reply a [`Wire`] carries, or the wire message back if it is no
    /// reply to a log request.
    // The error hands the message back unchanged; boxing it would cost an
    // allocation on every reply to save a move of a few bytes.
    #[allow(clippy::result_large_err)]
    pub fn from_wire(wire: Wire) -> Result<Response, Wire> {
        match wire {
            Wire::SealResult(r) => Ok(Response::Seal(r)),
            Wire::GetRecordsResult(r) => Ok(Response::Records(r)),
            Wire::StoreResult(r) => Ok(Response::Store(r)),
            Wire::AppendResult(r) => Ok(Response::Append(r)),
            Wire::TrimResult(r) => Ok(Response::Trim(r)),
            other => Err(other),
        }
    }

    /// The reply as it crosses the wire.
    pub fn into_wire(self) -> Wire {
        match self {
            Response::Seal(r) => Wire::SealResult(r),
            Response::Records(r) => Wire::GetRecordsResult(r),
            Response::Store(r) => Wire::StoreResult(r),
            Response::Append(r) => Wire::AppendResult(r),
            Response::Trim(r) => Wire::TrimResult(r),
        }
    }
}

/// Field by field (the message types themselves do not compare), so core
/// tests can assert exact effects.
impl PartialEq for Request {
    fn eq(&self, other: &Request) -> bool {
        match (self, other) {
            (Request::Seal(a), Request::Seal(b)) => a.loglet == b.loglet,
            (Request::GetRecords(a), Request::GetRecords(b)) => {
                (a.loglet, a.from, a.to, a.max_bytes, a.include_uncommitted)
                    == (b.loglet, b.from, b.to, b.max_bytes, b.include_uncommitted)
            }
            (Request::Store(a), Request::Store(b)) => {
                (a.loglet, a.first, a.known_global_tail, a.repair)
                    == (b.loglet, b.first, b.known_global_tail, b.repair)
                    && a.records == b.records
            }
            (Request::Append(a), Request::Append(b)) => {
                a.segment == b.segment && a.records == b.records
            }
            (Request::Trim(a), Request::Trim(b)) => (a.loglet, a.below) == (b.loglet, b.below),
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------
// Carrying them out (the actix shells)

/// Sends `req` to `to` through `Net` (the local actor's mailbox or QUIC) and
/// waits at most `timeout` for its reply.
pub(crate) async fn perform(
    net: &Net,
    to: NodeId,
    req: Request,
    timeout: Duration,
) -> Result<Response, CallError> {
    match req {
        Request::Seal(r) => net.call(to, r, timeout).await.map(Response::Seal),
        Request::GetRecords(r) => net.call(to, r, timeout).await.map(Response::Records),
        Request::Store(r) => net.call(to, r, timeout).await.map(Response::Store),
        Request::Append(r) => net.call(to, r, timeout).await.map(Response::Append),
        Request::Trim(r) => net.call(to, r, timeout).await.map(Response::Trim),
    }
}

/// Runs `change` on `key` with this node's proposer. The proposer picks the
/// operation id of a CAS itself (it recognises its own write across its
/// retries with it); the id in `change` is for hosts whose proposer takes it.
pub(crate) async fn run_meta(
    meta: &MetadataClient,
    key: &str,
    change: Change,
    timeout: Duration,
) -> Result<Outcome, MetaError> {
    match change {
        Change::Read => meta.read(key, timeout).await.map(Outcome::Value),
        Change::Cas {
            expected, value, ..
        } => meta
            .cas(key, expected, value, timeout)
            .await
            .map(|r| match r {
                Ok(written) => Outcome::Value(Some(written)),
                Err(current) => Outcome::Conflict(current),
            }),
    }
}
