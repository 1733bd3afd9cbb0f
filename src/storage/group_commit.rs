//! Group commit: one fsync serves every writer that asked for durability
//! before it started.
//!
//! A dedicated thread owns the flushing, so the async callers never block an
//! executor thread and the mechanism works under any runtime (actix arbiters,
//! plain tokio, tests).

use super::{Result, StorageError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

type Waiter = oneshot::Sender<std::result::Result<(), String>>;

#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Waiter>,
    flushes: Arc<AtomicU64>,
}

impl GroupCommit {
    /// The flush thread holds the database only weakly, so dropping the last
    /// `Storage` really closes it (and releases its file lock) for a restart.
    pub fn start(db: &Arc<sled::Db>) -> Self {
        let db = Arc::downgrade(db);
        let (tx, rx) = mpsc::channel::<Waiter>();
        let flushes = Arc::new(AtomicU64::new(0));
        let counter = flushes.clone();
        std::thread::Builder::new()
            .name("keel-flush".into())
            .spawn(move || {
                // Ends when every sender (every Storage clone) is gone.
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let result = match db.upgrade() {
                        Some(db) => db.flush().map(|_| ()).map_err(|e| e.to_string()),
                        None => Err("database closed".to_string()),
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    for waiter in batch {
                        let _ = waiter.send(result.clone());
                    }
                }
            })
            .expect("spawning the flush thread");
        GroupCommit { tx, flushes }
    }

    /// Resolves once a flush that started after this call has completed.
    pub async fn sync(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| StorageError::Closed)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(StorageError::Flush(reason)),
            Err(_) => Err(StorageError::Closed),
        }
    }

    pub fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}
