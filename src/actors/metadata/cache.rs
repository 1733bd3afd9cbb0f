//! This node's latest known value of each register key. A hint for fast paths
//! (which segment is the tail, who leads a partition); anything that must be
//! right reads through the register instead. Only ever moves forward.

use super::core::Versioned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Clone)]
pub struct MetaCache {
    values: Arc<Mutex<HashMap<String, Versioned>>>,
    /// Bumped on every change, so waiters can re-check the keys they follow.
    changes: Arc<watch::Sender<u64>>,
}

impl Default for MetaCache {
    fn default() -> Self {
        MetaCache {
            values: Default::default(),
            changes: Arc::new(watch::channel(0).0),
        }
    }
}

impl MetaCache {
    pub fn get(&self, key: &str) -> Option<Versioned> {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Records `value` if it is newer than what is cached; returns whether it was.
    pub fn observe(&self, key: &str, value: &Versioned) -> bool {
        let mut map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let newer = map.get(key).is_none_or(|cur| value.version > cur.version);
        if newer {
            map.insert(key.to_string(), value.clone());
            drop(map);
            self.changes.send_modify(|n| *n += 1);
        }
        newer
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
