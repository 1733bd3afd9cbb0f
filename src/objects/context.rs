//! What a handler sees: its object's key, its object's state, the log's
//! clock and a seeded random source.

use super::HandlerError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::Cell;

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
        }
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
