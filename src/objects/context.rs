//! What a handler sees: its object's key, its object's state, the log's
//! clock, a seeded random source, and the messages and timers it sends.

use super::{HandlerError, Objects};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::Cell;

/// Where a message goes: a handler of an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// The object's type name.
    pub object: String,
    /// The object's key.
    pub key: String,
    /// The handler that receives the message.
    pub handler: String,
}

/// A message a handler sent, kept by the runtime until the call succeeds
/// (a failed call sends nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Who receives it.
    pub to: Address,
    /// The argument, as JSON.
    pub arg: Vec<u8>,
    /// A timer: deliver no earlier than this many ms of log clock after
    /// the call (`None`: at once).
    pub delay_ms: Option<u64>,
    /// A request: the receiver's result goes to this handler of the
    /// sender's own object, as a [`Reply`].
    pub reply_to: Option<String>,
}

/// What the handler named in [`Context::request`] receives: the status and
/// body the receiving handler's call ended with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Who answered.
    pub from: Address,
    /// The HTTP status the call would have had (200: it succeeded).
    pub status: u16,
    /// Its result, or `{"error": ...}`.
    pub body: serde_json::Value,
}

/// One object's state, as the runtime hands it to a handler: a key space of
/// its own (the names are the object's, never another's). Reads see the
/// call's own earlier writes.
pub trait ObjectState {
    /// The value stored under `name`.
    fn get(&self, name: &[u8]) -> Option<Vec<u8>>;
    /// Stores `value` under `name`.
    fn put(&mut self, name: &[u8], value: Vec<u8>);
    /// Removes `name`.
    fn remove(&mut self, name: &[u8]);
    /// Every entry of this object whose name starts with `prefix`, in name
    /// order.
    fn scan(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)>;
}

/// The context of one call: everything a handler may depend on.
///
/// Handlers run on every replica and must reach the same result on each, so
/// a handler depends only on its argument and on what this context gives:
/// state values are JSON, time is the log's clock, randomness is seeded by
/// the call.
pub struct Context<'s> {
    /// The object's key (the `{key}` of `/{Object}/{key}/{handler}`).
    key: &'s str,
    /// The object's state.
    state: &'s mut dyn ObjectState,
    /// The log's clock at this call (ms since the Unix epoch).
    now_ms: u64,
    /// The state of the call's random source (splitmix64).
    random: Cell<u64>,
    /// The messages and timers sent so far (delivered only if the call
    /// succeeds).
    outgoing: Vec<Outgoing>,
    /// The types messages may go to (`None`: not checked, as in a handler's
    /// unit test without a registry).
    types: Option<&'s Objects>,
    /// The object's type name (where replies come back to).
    object: &'s str,
}

impl<'s> Context<'s> {
    /// A context for the call with `seed` (the same on every replica: the
    /// runtime derives it from the record) at the log's time `now_ms`.
    pub fn new(key: &'s str, state: &'s mut dyn ObjectState, now_ms: u64, seed: u64) -> Self {
        Context {
            key,
            state,
            now_ms,
            random: Cell::new(seed),
            outgoing: Vec::new(),
            types: None,
            object: "",
        }
    }

    /// The same context for a call on `object` of `types`: messages are
    /// checked against `types` when sent (the runtime's contexts).
    pub fn for_object(mut self, object: &'s str, types: &'s Objects) -> Self {
        self.object = object;
        self.types = Some(types);
        self
    }

    /// The messages and timers this call sent, in order.
    pub fn into_outgoing(self) -> Vec<Outgoing> {
        self.outgoing
    }

    /// Sends `arg` to `handler` of the object `object/key`, exactly once,
    /// after this call succeeds (nothing is sent if it fails). Messages
    /// from one partition to another arrive in the order sent. The
    /// receiver's result is dropped; use [`Context::request`] for one.
    /// Refused (400) if no such handler exists or `arg` does not fit it.
    pub fn send<T: Serialize + ?Sized>(
        &mut self,
        object: &str,
        key: &str,
        handler: &str,
        arg: &T,
    ) -> Result<(), HandlerError> {
        self.push(object, key, handler, arg, None, None)
    }

    /// Like [`Context::send`], but delivered no earlier than `delay_ms`
    /// after this call by the log's clock (a durable timer: it survives
    /// restarts and leader changes and fires once).
    pub fn send_after<T: Serialize + ?Sized>(
        &mut self,
        delay_ms: u64,
        object: &str,
        key: &str,
        handler: &str,
        arg: &T,
    ) -> Result<(), HandlerError> {
        self.push(object, key, handler, arg, Some(delay_ms), None)
    }

    /// Like [`Context::send`], and the receiver's result comes back as a
    /// message to `reply_handler` of this object, whose argument is a
    /// [`Reply`].
    pub fn request<T: Serialize + ?Sized>(
        &mut self,
        object: &str,
        key: &str,
        handler: &str,
        arg: &T,
        reply_handler: &str,
    ) -> Result<(), HandlerError> {
        if let Some(types) = self.types {
            if types.handler(self.object, reply_handler).is_none() {
                return Err(HandlerError::bad_argument(format!(
                    "replies go to {}/{reply_handler}, which does not exist",
                    self.object
                )));
            }
        }
        self.push(
            object,
            key,
            handler,
            arg,
            None,
            Some(reply_handler.to_string()),
        )
    }

    fn push<T: Serialize + ?Sized>(
        &mut self,
        object: &str,
        key: &str,
        handler: &str,
        arg: &T,
        delay_ms: Option<u64>,
        reply_to: Option<String>,
    ) -> Result<(), HandlerError> {
        use crate::actors::partition_processor::{outbox::MAX_SENDS_PER_CALL, MAX_ARG_BYTES};
        if self.outgoing.len() >= MAX_SENDS_PER_CALL {
            return Err(HandlerError::bad_argument(format!(
                "a call sends at most {MAX_SENDS_PER_CALL} messages"
            )));
        }
        let value = serde_json::to_value(arg)
            .map_err(|e| HandlerError::bad_argument(format!("message argument: {e}")))?;
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        if bytes.len() > MAX_ARG_BYTES {
            return Err(HandlerError::bad_argument(format!(
                "a message's argument is at most {MAX_ARG_BYTES} bytes"
            )));
        }
        if key.is_empty() || key.len() > crate::ingress::http::MAX_OBJECT_KEY {
            return Err(HandlerError::bad_argument(format!(
                "message to {object}: the key must be 1..={} bytes",
                crate::ingress::http::MAX_OBJECT_KEY
            )));
        }
        if let Some(types) = self.types {
            types.check(object, handler, &value).map_err(|e| {
                HandlerError::bad_argument(format!("message to {object}/{key}/{handler}: {e}"))
            })?;
        }
        self.outgoing.push(Outgoing {
            to: Address {
                object: object.to_string(),
                key: key.to_string(),
                handler: handler.to_string(),
            },
            arg: bytes,
            delay_ms,
            reply_to,
        });
        Ok(())
    }

    /// The object's key.
    pub fn key(&self) -> &str {
        self.key
    }

    /// The log's clock at this call, in ms since the Unix epoch: the time
    /// the leader wrote into the record, never earlier than any record
    /// before it. The same on every replica, unlike the wall clock.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// A random number from the call's seeded source: the same sequence on
    /// every replica, a different one for every call.
    pub fn random_u64(&self) -> u64 {
        let mut z = self.random.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.random.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The value stored under `name`, `None` if there is none. A stored
    /// value that does not decode as `T` is an error (500).
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, HandlerError> {
        self.state
            .get(name.as_bytes())
            .map(|bytes| decode(name, &bytes))
            .transpose()
    }

    /// Stores `value` under `name` (as JSON).
    pub fn set<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) {
        let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
        self.state.put(name.as_bytes(), bytes);
    }

    /// Removes `name` (nothing if it was never set).
    pub fn delete(&mut self, name: &str) {
        self.state.remove(name.as_bytes());
    }

    /// Every entry whose name starts with `prefix` (`""`: all of them), in
    /// name order, each decoded as `T`.
    pub fn scan<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, HandlerError> {
        self.state
            .scan(prefix.as_bytes())
            .into_iter()
            .map(|(name, bytes)| {
                let name = String::from_utf8_lossy(&name).into_owned();
                let value = decode(&name, &bytes)?;
                Ok((name, value))
            })
            .collect()
    }
}

fn decode<T: DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<T, HandlerError> {
    serde_json::from_slice(bytes).map_err(|e| HandlerError::BadState {
        name: name.to_string(),
        reason: e.to_string(),
    })
}

/// An in-memory [`ObjectState`], for testing handlers without a cluster.
#[derive(Clone, Debug, Default)]
pub struct MemoryState {
    /// The entries, by name.
    pub entries: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
}

impl ObjectState for MemoryState {
    fn get(&self, name: &[u8]) -> Option<Vec<u8>> {
        self.entries.get(name).cloned()
    }
    fn put(&mut self, name: &[u8], value: Vec<u8>) {
        self.entries.insert(name.to_vec(), value);
    }
    fn remove(&mut self, name: &[u8]) {
        self.entries.remove(name);
    }
    fn scan(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.entries
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
