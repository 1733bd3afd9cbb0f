//! Typed errors of the transport.
//!
//! The split that matters to callers is [`TransportError::maybe_delivered`]:
//! a log appender may retry a message that certainly never left this node,
//! but must treat "outcome unknown" as possibly applied.

use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a remote node answered a request without a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// The handler dropped its [`Responder`](super::Responder) without answering.
    #[error("the remote handler dropped the request without answering")]
    Dropped,
    /// The handler answered, but the answer could not be encoded (e.g. too large).
    #[error("the remote could not encode its answer: {0}")]
    Encode(String),
}

/// Everything that can go wrong sending, receiving or setting up the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// There is no live connection to the peer: the message was *not* sent.
    #[error("peer {0} is unavailable (no live connection)")]
    PeerUnavailable(NodeId),
    /// The peer's bounded outbound queue is full: the message was *not* sent.
    #[error("outbound queue to {0} is full")]
    QueueFull(NodeId),
    /// No answer within the timeout: the request may or may not have been applied.
    #[error("request to {peer} timed out after {after:?}")]
    Timeout { peer: NodeId, after: Duration },
    /// The connection died while the request was in flight: outcome unknown.
    #[error("connection to {0} was lost with the request in flight")]
    ConnectionLost(NodeId),
    /// The peer received the request and answered with an error.
    #[error("remote error: {0}")]
    Remote(#[from] RemoteError),
    /// The node is not in the configured peer set.
    #[error("unknown peer {0}")]
    UnknownPeer(NodeId),
    /// The message could not be encoded (nothing was sent).
    #[error("cannot encode message: {0}")]
    Encode(#[from] FrameError),
    /// The transport has been shut down.
    #[error("transport is shut down")]
    Shutdown,
    /// Invalid configuration.
    #[error("invalid transport config: {0}")]
    Config(String),
    /// Socket or endpoint setup failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Certificates, keys or TLS configuration are unusable.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
}

impl TransportError {
    /// True unless the message certainly never left this node.
    ///
    /// `Timeout`, `ConnectionLost` and `Remote` mean the peer may have seen
    /// (and acted on) the message; every other error means it was not sent.
    pub fn maybe_delivered(&self) -> bool {
        matches!(
            self,
            TransportError::Timeout { .. }
                | TransportError::ConnectionLost(_)
                | TransportError::Remote(_)
        )
    }
}

/// A frame that cannot be encoded or decoded. Decoding errors close the
/// connection they arrived on; they never panic.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized { len: usize, max: usize },
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    #[error("empty frame (no version byte)")]
    Empty,
    #[error("stream ended inside a frame ({0} bytes left over)")]
    Truncated(usize),
    #[error("undecodable payload: {0}")]
    Decode(String),
    #[error("{0} trailing bytes after the payload")]
    TrailingBytes(usize),
    #[error("unencodable payload: {0}")]
    Encode(String),
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// Certificate, key and TLS setup errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("quic crypto: {0}")]
    NoInitialCipherSuite(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Pem(String),
}
