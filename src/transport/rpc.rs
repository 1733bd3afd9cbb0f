//! The receiving half of a request: [`Responder`].

use super::error::RemoteError;
use super::frame::{self, Envelope};
use super::WireMessage;
use crate::types::NodeId;
use std::marker::PhantomData;
use std::time::Instant;
use tokio::sync::mpsc;

/// Answers one request, on the connection it arrived on.
///
/// Dropping it without calling [`respond`](Self::respond) answers
/// [`RemoteError::Dropped`], so the caller fails fast instead of waiting out
/// its timeout. If that connection has died, the answer is discarded: the
/// caller has already been told `ConnectionLost`.
#[must_use = "dropping a Responder answers RemoteError::Dropped"]
pub struct Responder<M: WireMessage> {
    id: u64,
    from: NodeId,
    deadline: Instant,
    max_frame_len: usize,
    out: Option<mpsc::Sender<Vec<u8>>>,
    _msg: PhantomData<fn(M)>,
}

impl<M: WireMessage> std::fmt::Debug for Responder<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("id", &self.id)
            .field("from", &self.from)
            .finish()
    }
}

impl<M: WireMessage> Responder<M> {
    pub(crate) fn new(
        id: u64,
        from: NodeId,
        deadline: Instant,
        max_frame_len: usize,
        out: mpsc::Sender<Vec<u8>>,
    ) -> Self {
        Responder {
            id,
            from,
            deadline,
            max_frame_len,
            out: Some(out),
            _msg: PhantomData,
        }
    }

    /// Sends the answer.
    pub fn respond(mut self, msg: M) {
        self.finish(Ok(msg));
    }

    /// When the caller stops waiting (its timeout, measured from arrival).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The node that asked.
    pub fn from(&self) -> NodeId {
        self.from
    }

    fn finish(&mut self, result: Result<M, RemoteError>) {
        let Some(out) = self.out.take() else { return };
        let env = Envelope::Response {
            id: self.id,
            result,
        };
        let bytes = match frame::encode(&env, self.max_frame_len) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(peer = %self.from, request = self.id, error = %e, "cannot encode response");
                let env: Envelope<M> = Envelope::Response {
                    id: self.id,
                    result: Err(RemoteError::Encode(e.to_string())),
                };
                match frame::encode(&env, self.max_frame_len) {
                    Ok(b) => b,
                    Err(_) => return,
                }
            }
        };
        match out.try_send(bytes) {
            Ok(()) => {}
            // Overload: the caller will time out; worth an operator's attention.
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(peer = %self.from, request = self.id, "response dropped: outbound queue full");
            }
            // The caller has already been told ConnectionLost.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!(peer = %self.from, request = self.id, "response dropped: connection gone");
            }
        }
    }
}

impl<M: WireMessage> Drop for Responder<M> {
    fn drop(&mut self) {
        self.finish(Err(RemoteError::Dropped));
    }
}
