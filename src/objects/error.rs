//! Why a call failed, and the HTTP status the ingress answers it with.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a call was refused, before it was appended or while it applied.
///
/// A handler returns [`HandlerError::BadArgument`],
/// [`HandlerError::PreconditionFailed`] or [`HandlerError::Rejected`]; the
/// runtime adds the others. Whatever a handler returns, its writes of that
/// call are dropped: a failed call changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum HandlerError {
    /// No object type of that name is registered (404).
    #[error("unknown object type {name:?} (known: {known})")]
    UnknownObject {
        /// The name asked for.
        name: String,
        /// The registered names, comma-separated.
        known: String,
    },
    /// The object type has no handler of that name (404).
    #[error("object {object} has no handler {handler:?} (handlers: {known})")]
    UnknownHandler {
        /// The object type.
        object: String,
        /// The handler asked for.
        handler: String,
        /// Its handlers, comma-separated.
        known: String,
    },
    /// The argument does not have the handler's shape (400).
    #[error("bad argument: {0}")]
    BadArgument(String),
    /// The object's state does not allow the call; `current` tells the
    /// caller what it is (412, `current` in the body).
    #[error("precondition failed")]
    PreconditionFailed {
        /// What the caller should know of the state (JSON).
        current: Value,
    },
    /// The handler refused the call with its own status (a 4xx) and reason.
    #[error("{message}")]
    Rejected {
        /// The HTTP status, 400..=499 (anything else answers 400).
        status: u16,
        /// Why, for the caller.
        message: String,
    },
    /// The handler panicked (500); the same on every replica, since
    /// handlers are deterministic. Its writes are dropped.
    #[error("handler panicked: {0}")]
    Panicked(String),
    /// The runtime cannot take the call now (503): its partition's outbox
    /// is full because the messages' targets do not keep up.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The object's stored state could not be decoded as the type asked
    /// for (500): a handler changed its state's shape without migrating it.
    #[error("stored state {name:?} does not decode: {reason}")]
    BadState {
        /// The state entry's name.
        name: String,
        /// The decoder's complaint.
        reason: String,
    },
}

impl HandlerError {
    /// A refusal with `status` (a 4xx) and `message`.
    pub fn rejected(status: u16, message: impl Into<String>) -> Self {
        HandlerError::Rejected {
            status,
            message: message.into(),
        }
    }

    /// A bad argument, with `message` saying what was expected.
    pub fn bad_argument(message: impl Into<String>) -> Self {
        HandlerError::BadArgument(message.into())
    }

    /// The status the ingress answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            HandlerError::UnknownObject { .. } | HandlerError::UnknownHandler { .. } => 404,
            HandlerError::BadArgument(_) => 400,
            HandlerError::PreconditionFailed { .. } => 412,
            HandlerError::Rejected { status, .. } if (400..=499).contains(status) => *status,
            HandlerError::Rejected { .. } => 400,
            HandlerError::Panicked(_) | HandlerError::BadState { .. } => 500,
            HandlerError::Overloaded(_) => 503,
        }
    }
}
