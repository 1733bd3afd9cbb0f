//! Local subscribers (readers on this node) learn of each loglet's tail
//! without polling the actor: the log-server publishes, readers watch.
//! The registry outlives log-server restarts; values only grow.

use super::TailInfo;
use crate::types::LogletId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Clone, Default)]
pub struct TailWatch {
    /// One channel per loglet a reader follows; the log-server publishes into it.
    inner: Arc<Mutex<HashMap<LogletId, watch::Sender<TailInfo>>>>,
}

impl TailWatch {
    pub fn subscribe(&self, loglet: LogletId) -> watch::Receiver<TailInfo> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(loglet)
            .or_insert_with(|| watch::channel(TailInfo::default()).0)
            .subscribe()
    }

    pub fn current(&self, loglet: LogletId) -> Option<TailInfo> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&loglet).map(|s| *s.borrow())
    }

    /// Merges `info` into what subscribers see (monotonically).
    pub fn publish(&self, loglet: LogletId, info: TailInfo) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let sender = map
            .entry(loglet)
            .or_insert_with(|| watch::channel(TailInfo::default()).0);
        sender.send_if_modified(|cur| {
            let next = TailInfo {
                sealed: cur.sealed || info.sealed,
                local_tail: cur.local_tail.max(info.local_tail),
                known_global_tail: cur.known_global_tail.max(info.known_global_tail),
                suspect: cur.suspect || info.suspect,
            };
            let changed = next != *cur;
            *cur = next;
            changed
        });
    }

    /// Raises the known committed tail only.
    pub fn publish_global(&self, loglet: LogletId, global_tail: crate::types::Offset) {
        self.publish(
            loglet,
            TailInfo {
                known_global_tail: global_tail,
                ..TailInfo::default()
            },
        );
    }

    /// Forget loglets that are fully read and sealed (bounded memory).
    pub fn forget(&self, loglet: LogletId) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&loglet);
    }
}
