//! The one message type that crosses the wire between keel nodes, and the
//! mapping from each typed request to its reply and to the local actor that
//! serves it. Adding an RPC is one line in the `rpcs!` table below.

use crate::actors::leader_elector::{PreVote, PreVoteReply};
use crate::actors::log_server::{
    GetRecords, GetTail, LogServerError, RecordsReply, Release, Seal, Store, StoreReply, TailInfo,
    Trim,
};
use crate::actors::metadata::core::{AcceptReply, PrepareReply};
use crate::actors::metadata::messages::{Accept, AcceptorError, ListKeys, MetaUpdate, Prepare};
use crate::actors::partition_processor::{
    Deliver, GetPersisted, GetSnapshot, Invoke, InvokeReply, PersistedReply, SnapshotChunk,
    SnapshotServeError,
};
use crate::actors::sequencer::{Append, AppendOutcome, SequencerError};
use serde::{Deserialize, Serialize};

/// Why a remote node could not produce a reply at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WireError {
    #[error("no local actor serves {0} right now (restarting or not running)")]
    Unavailable(&'static str),
    #[error("reply did not match the request")]
    Mismatch,
}

/// Defines `Wire` (every request, reply and one-way message) and the `Rpc`
/// implementation of each request type.
macro_rules! wire {
    (
        rpc { $( $req:ident => $reply_variant:ident($reply:ty) ),* $(,)? }
        oneway { $( $msg:ident ),* $(,)? }
        other { $( $other:ident $( ( $other_ty:ty ) )? ),* $(,)? }
    ) => {
        #[derive(Debug, Serialize, Deserialize)]
        pub enum Wire {
            $( $req($req), $reply_variant($reply), )*
            $( $msg($msg), )*
            $( $other $( ($other_ty) )?, )*
            Error(WireErrorOwned),
        }

        $(
            impl Rpc for $req {
                type Reply = $reply;
                const NAME: &'static str = stringify!($req);
                fn into_wire(self) -> Wire { Wire::$req(self) }
                fn reply_into_wire(reply: $reply) -> Wire { Wire::$reply_variant(reply) }
                fn reply_from_wire(wire: Wire) -> Result<$reply, Wire> {
                    match wire { Wire::$reply_variant(r) => Ok(r), other => Err(other) }
                }
            }
        )*
    };
}

/// `WireError` with owned strings, for the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{0}")]
pub struct WireErrorOwned(pub String);

impl From<WireError> for WireErrorOwned {
    fn from(e: WireError) -> Self {
        WireErrorOwned(e.to_string())
    }
}

/// A request type that can be served locally (actix) or remotely (QUIC).
pub trait Rpc: actix::Message<Result = <Self as Rpc>::Reply> + Send + 'static {
    type Reply: Send + 'static;
    const NAME: &'static str;
    fn into_wire(self) -> Wire;
    fn reply_into_wire(reply: Self::Reply) -> Wire;
    /// The error hands the message back unchanged (not boxed: that would
    /// cost an allocation per reply).
    #[allow(clippy::result_large_err)]
    fn reply_from_wire(wire: Wire) -> Result<Self::Reply, Wire>;
}

wire! {
    rpc {
        Prepare => PrepareResult(Result<PrepareReply, AcceptorError>),
        Accept => AcceptResult(Result<AcceptReply, AcceptorError>),
        Store => StoreResult(StoreReply),
        Seal => SealResult(Result<TailInfo, LogServerError>),
        GetTail => GetTailResult(Result<TailInfo, LogServerError>),
        GetRecords => GetRecordsResult(Result<RecordsReply, LogServerError>),
        Trim => TrimResult(Result<(), LogServerError>),
        Append => AppendResult(Result<AppendOutcome, SequencerError>),
        PreVote => PreVoteResult(PreVoteReply),
        Invoke => InvokeResult(InvokeReply),
        Deliver => DeliverResult(InvokeReply),
        GetPersisted => PersistedResult(PersistedReply),
        GetSnapshot => SnapshotResult(Result<SnapshotChunk, SnapshotServeError>),
        ListKeys => ListKeysResult(Result<Vec<(String, u64)>, AcceptorError>),
    }
    oneway { MetaUpdate, Release }
    other {
        // Served by the router from the whole node, not by one actor.
        GetNodeStatus,
        NodeStatus(Box<crate::node::status::NodeStatus>),
        // A request this node cannot take to the leader itself, passed to a
        // peer that can (served by the peer's ingress logic, one hop only).
        Relay(Box<Invoke>),
        RelayResult(InvokeReply),
    }
}
