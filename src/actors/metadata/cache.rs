//! This node's latest known value of each register key. A hint for fast paths
//! (which segment is the tail, who leads a partition); anything that must be
//! right reads through the register instead.
//!
//! It moves forward on hints (a higher version wins) and is corrected by
//! linearizable reads: every value a node caches honestly was chosen, and
//! the register only moves forward, so a read that returns an older version
//! than one cached before the read began proves the cached value was never
//! chosen (a corrupt or hostile hint). [`MetaCache::settle`] replaces it.

use super::core::Versioned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Clone)]
pub struct MetaCache {
    /// The values, shared by every clone on this node.
    inner: Arc<Mutex<Inner>>,
    /// Bumped on every change, so waiters can re-check the keys they follow.
    changes: Arc<watch::Sender<u64>>,
}

#[derive(Default)]
struct Inner {
    /// Each key's value and the sequence number of the change that put it.
    values: HashMap<String, (Versioned, u64)>,
    /// Changes so far (see [`MetaCache::mark`]).
    seq: u64,
}

/// A point in the cache's history, taken before a linearizable read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheMark(u64);

impl Default for MetaCache {
    fn default() -> Self {
        MetaCache {
            inner: Default::default(),
            changes: Arc::new(watch::channel(0).0),
        }
    }
}

impl MetaCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Versioned> {
        self.lock().values.get(key).map(|(v, _)| v.clone())
    }

    /// Records `value` if it is newer than what is cached; returns whether it was.
    pub fn observe(&self, key: &str, value: &Versioned) -> bool {
        let mut inner = self.lock();
        let newer = inner
            .values
            .get(key)
            .is_none_or(|(cur, _)| value.version > cur.version);
        if newer {
            inner.seq += 1;
            let seq = inner.seq;
            inner.values.insert(key.to_string(), (value.clone(), seq));
            drop(inner);
            self.changes.send_modify(|n| *n += 1);
        }
        newer
    }

    /// Where the cache is now: pass it to [`settle`](Self::settle) with the
    /// result of a linearizable read started after this call.
    pub fn mark(&self) -> CacheMark {
        CacheMark(self.lock().seq)
    }

    /// Records what a linearizable read (started after `mark`) returned:
    /// a newer value as [`observe`](Self::observe) does; and where the
    /// cache holds a newer version (or any, when the read found none) that
    /// was cached before the read began, that value was never chosen: it
    /// is replaced (or dropped). A value cached while the read ran is kept
    /// (it may be newer than the read). Returns whether anything changed.
    pub fn settle(&self, key: &str, read: Option<&Versioned>, mark: CacheMark) -> bool {
        let mut inner = self.lock();
        let changed = match (inner.values.get(key), read) {
            (None, None) => false,
            (None, Some(_)) => true,
            (Some((cur, _)), Some(v)) if v.version > cur.version => true,
            (Some((cur, seq)), Some(v)) => v.version < cur.version && *seq <= mark.0,
            (Some((_, seq)), None) => *seq <= mark.0,
        };
        if changed {
            inner.seq += 1;
            let seq = inner.seq;
            match read {
                Some(v) => {
                    inner.values.insert(key.to_string(), (v.clone(), seq));
                }
                None => {
                    inner.values.remove(key);
                }
            }
            drop(inner);
            self.changes.send_modify(|n| *n += 1);
        }
        changed
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(version: u64) -> Versioned {
        Versioned {
            version,
            value: vec![version as u8],
            writer: 0,
        }
    }

    #[test]
    fn a_read_corrects_a_value_the_register_never_held() {
        let c = MetaCache::default();
        assert!(c.observe("k", &v(3)));
        // A hint from a broken peer claims version u64::MAX.
        assert!(c.observe("k", &v(u64::MAX)));
        assert!(!c.observe("k", &v(4)), "hints alone never go back");
        let mark = c.mark();
        assert!(c.settle("k", Some(&v(4)), mark));
        assert_eq!(c.get("k"), Some(v(4)));
        // A read that found nothing drops what was cached before it.
        let mark = c.mark();
        assert!(c.settle("k", None, mark));
        assert_eq!(c.get("k"), None);
    }

    #[test]
    fn a_value_cached_during_the_read_is_kept() {
        let c = MetaCache::default();
        c.observe("k", &v(3));
        let mark = c.mark();
        // A newer value arrives while the read (which saw 3) is running.
        c.observe("k", &v(4));
        assert!(!c.settle("k", Some(&v(3)), mark));
        assert_eq!(c.get("k"), Some(v(4)));
        assert!(!c.settle("k", None, mark));
        assert_eq!(c.get("k"), Some(v(4)));
    }
}
