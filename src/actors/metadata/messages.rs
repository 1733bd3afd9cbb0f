//! Messages of the metadata register: acceptor phases (request/response) and
//! the one-way hint a proposer broadcasts after a successful change.

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
}

/// Longest register key accepted.
pub const MAX_KEY_LEN: usize = 256;
/// Largest register value accepted (a chain of tens of thousands of
/// segments fits).
pub const MAX_VALUE_LEN: usize = 4 * 1024 * 1024;

#[derive(Clone, Debug, Serialize, Deserialize, Message)]
#[rtype(result = "Result<PrepareReply, AcceptorError>")]
pub struct Prepare {
    pub key: String,
    pub ballot: Ballot,
}

#[derive(Clone, Debug, Serialize, Deserialize, Message)]
#[rtype(result = "Result<AcceptReply, AcceptorError>")]
pub struct Accept {
    pub key: String,
    pub ballot: Ballot,
    pub value: Versioned,
}

/// One-way: "`key` now holds `value`". A cache hint only; truth is a
/// linearizable read.
#[derive(Clone, Debug, Serialize, Deserialize, Message)]
#[rtype(result = "()")]
pub struct MetaUpdate {
    pub key: String,
    pub value: Versioned,
}
