//! Messages of the metadata register: acceptor phases (request/response) and
//! the one-way hint a proposer broadcasts after a successful change; and the
//! two enums that carry either phase between the proposer core and the
//! acceptor core ([`AcceptorRequest`], [`AcceptorResponse`]).

use super::core::{AcceptReply, Ballot, PrepareReply, Versioned};
use actix::Message;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AcceptorError {
    #[error("acceptor storage failure: {0}")]
    Storage(String),
    #[error("register key too long or empty")]
    BadKey,
    /// A ballot above [`Ballot::MAX_ROUND`](super::core::Ballot::MAX_ROUND).
    #[error("ballot round {0} is above the highest round taken")]
    BadBallot(u64),
    #[error("register value of {0} bytes exceeds the limit of {MAX_VALUE_LEN}")]
    TooLarge(usize),
    /// A value for a key whose values have a type (see `schema`) that does
    /// not decode as it.
    #[error("register value refused: {0}")]
    BadValue(String),
    /// This acceptor lost its disk and is rejoining: it votes again once
    /// that is safe (see `rejoin.rs`).
    #[error("acceptor is rejoining after a lost disk and does not vote yet")]
    Rejoining,
}

/// Longest register key accepted.
pub const MAX_KEY_LEN: usize = 256;
/// Largest register value accepted (a chain of tens of thousands of
/// segments fits).
pub const MAX_VALUE_LEN: usize = 4 * 1024 * 1024;

/// Phase 1: "promise to take nothing below `ballot` for `key`, and tell me
/// what you accepted".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<PrepareReply, AcceptorError>")]
pub struct Prepare {
    /// The register key (each key is a register of its own).
    pub key: String,
    /// The proposer's ballot for this attempt.
    pub ballot: Ballot,
}

/// Phase 2: "accept `value` for `key` under `ballot`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<AcceptReply, AcceptorError>")]
pub struct Accept {
    /// The register key.
    pub key: String,
    /// The ballot a majority promised in phase 1.
    pub ballot: Ballot,
    /// The proposer's change applied to the current value.
    pub value: Versioned,
}

/// "Which register keys does your acceptor hold state for, and at which
/// accepted version each?" Asked by a rejoining node (`rejoin.rs`); an acceptor that does not vote yet refuses
/// (`Rejoining`): its list may lack keys it forgot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Result<Vec<(String, u64)>, AcceptorError>")]
pub struct ListKeys {}

/// One-way: "`key` now holds `value`". A cache hint only; truth is a
/// linearizable read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "()")]
pub struct MetaUpdate {
    /// The register key.
    pub key: String,
    /// The value just chosen for it.
    pub value: Versioned,
}

/// A request a proposer makes of an acceptor: either phase. The proposer
/// core's `Call`s carry one, the acceptor core's `Request`s take one, so the
/// simulator can hand one to the other unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptorRequest {
    Prepare(Prepare),
    Accept(Accept),
}

/// An acceptor's answer to an [`AcceptorRequest`], of the same phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptorResponse {
    Prepare(Result<PrepareReply, AcceptorError>),
    Accept(Result<AcceptReply, AcceptorError>),
}
