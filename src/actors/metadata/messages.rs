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
}

/// Longest register key accepted.
pub const MAX_KEY_LEN: usize = 256;

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
