//! Durable state of one node: one sled database, opened once, with a typed
//! store per kind of state. Nothing outside this module touches sled directly,
//! so the engine stays behind a narrow interface of our own (sled 0.34 has open
//! crash-consistency reports; our crash-restart tests exercise this boundary).
//!
//! Durability rule: a write is acknowledged to anyone only after
//! [`Storage::sync`] returned for it. `sync` is a group commit: every caller that
//! arrives while a flush is running is served by the next flush, so many
//! concurrent writers share one fsync.

mod group_commit;
pub mod identity;
mod log_store;
mod meta_store;
mod partition_store;

pub use group_commit::GroupCommit;
pub use log_store::{LogStore, LogletState};
pub use meta_store::MetaStore;
pub use partition_store::{PartitionStore, PartitionWrite};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage engine error: {0}")]
    Engine(#[from] sled::Error),
    #[error("cannot open data directory {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("corrupt value in {tree}: {reason}")]
    Corrupt { tree: &'static str, reason: String },
    #[error("flush failed: {0}")]
    Flush(String),
    #[error("storage is shut down")]
    Closed,
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// A node's database and its typed stores. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    db: Arc<sled::Db>,
    pub log: LogStore,
    pub meta: MetaStore,
    commit: GroupCommit,
}

impl Storage {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Open {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        // Probe writability up front: sled reports a read-only directory late
        // and obscurely.
        let probe = dir.join(".keel-write-probe");
        std::fs::write(&probe, b"ok")
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| StorageError::Open {
                path: dir.to_path_buf(),
                reason: format!("not writable: {e}"),
            })?;
        let config = sled::Config::new()
            .path(dir.join("db"))
            // Our own group commit decides when data is durable; sled's
            // background flush is a bonus, not a guarantee.
            .flush_every_ms(Some(1000))
            .cache_capacity(256 * 1024 * 1024);
        // A previous incarnation in this process (a restarted node in the test
        // rig) may still be releasing the file lock: wait for it, bounded.
        let deadline = Instant::now() + Duration::from_secs(5);
        let db = loop {
            match config.open() {
                Ok(db) => break Arc::new(db),
                Err(e) if is_lock_error(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(StorageError::Open {
                        path: dir.to_path_buf(),
                        reason: e.to_string(),
                    })
                }
            }
        };
        Ok(Storage {
            log: LogStore::open(&db)?,
            meta: MetaStore::open(&db)?,
            commit: GroupCommit::start(&db),
            db,
        })
    }

    /// Makes every write issued before this call durable (group commit).
    pub async fn sync(&self) -> Result<()> {
        self.commit.sync().await
    }

    /// Synchronous flush, for shutdown and tests.
    pub fn sync_blocking(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// The store of one partition's processor state. Opening it completes a
    /// write a crash cut short, so open it where the partition's single
    /// writer starts.
    pub fn partition(&self, partition: crate::types::PartitionId) -> Result<PartitionStore> {
        PartitionStore::open(&self.db, partition)
    }

    /// How many flushes the group commit has run (for metrics and tests).
    pub fn flush_count(&self) -> u64 {
        self.commit.flush_count()
    }

    /// Bytes on disk, for status.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

fn is_lock_error(e: &sled::Error) -> bool {
    // sled wraps the `flock` failure in a new io::Error, so look at both.
    matches!(e, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("could not acquire lock"))
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Encoding our own plain data types cannot fail (no maps with non-string
    // keys are serialized as structs with `to_vec_named`).
    rmp_serde::to_vec_named(value).expect("encoding a storage value")
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| StorageError::Corrupt {
        tree,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LogId, LogletId, Lsn, PartitionId};

    #[tokio::test]
    async fn synced_writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let loglet = LogletId::new(LogId(1), 3);
        {
            let s = Storage::open(dir.path()).unwrap();
            s.log
                .put_records(loglet, 0, &[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()])
                .unwrap();
            s.log
                .put_loglet_state(
                    loglet,
                    &LogletState {
                        sealed: true,
                        known_global_tail: 2,
                        trim_point: 0,
                    },
                )
                .unwrap();
            s.meta.acceptor_put("chain/1", &(7u64, "v")).unwrap();
            let p = s.partition(PartitionId(2)).unwrap();
            let mut w = PartitionWrite::default();
            w.put_object(b"Counter/x", b"41");
            w.set_applied(Lsn(9));
            p.apply(w).unwrap();
            s.sync().await.unwrap();
            assert!(s.flush_count() >= 1);
        }
        let s = Storage::open(dir.path()).unwrap();
        let recs = s.log.read_records(loglet, 0, 10, usize::MAX).unwrap();
        assert_eq!(
            recs,
            vec![(0, b"a".to_vec()), (1, b"b".to_vec()), (2, b"c".to_vec())]
        );
        assert_eq!(s.log.local_tail(loglet).unwrap(), 3);
        assert!(s.log.loglet_state(loglet).unwrap().sealed);
        assert_eq!(
            s.meta.acceptor_get::<(u64, String)>("chain/1").unwrap(),
            Some((7, "v".to_string()))
        );
        let p = s.partition(PartitionId(2)).unwrap();
        assert_eq!(p.applied_lsn().unwrap(), Lsn(9));
        assert_eq!(p.object(b"Counter/x").unwrap(), Some(b"41".to_vec()));
    }

    #[tokio::test]
    async fn concurrent_syncs_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        let loglet = LogletId::new(LogId(0), 0);
        let mut tasks = Vec::new();
        for i in 0..64u64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.log.put_records(loglet, i, &[vec![i as u8]]).unwrap();
                s.sync().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(s.log.local_tail(loglet).unwrap(), 64);
        // 64 callers, strictly fewer fsyncs: the group commit batched them.
        assert!(s.flush_count() < 64, "flushes: {}", s.flush_count());
    }

    #[test]
    fn ranges_gaps_and_trim() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        let a = LogletId::new(LogId(0), 1);
        let b = LogletId::new(LogId(0), 2);
        s.log.put_records(a, 0, &[vec![0], vec![1]]).unwrap();
        s.log.put_records(a, 3, &[vec![3]]).unwrap();
        s.log.put_records(b, 0, &[vec![9]]).unwrap();
        assert_eq!(s.log.local_tail(a).unwrap(), 4);
        assert_eq!(s.log.contiguous_end(a, 0).unwrap(), 2);
        assert_eq!(s.log.contiguous_end(a, 3).unwrap(), 4);
        assert_eq!(s.log.local_tail(LogletId::new(LogId(5), 0)).unwrap(), 0);
        let got: Vec<_> = s
            .log
            .read_records(a, 0, 10, 1)
            .unwrap()
            .into_iter()
            .map(|(o, _)| o)
            .collect();
        assert_eq!(
            got,
            vec![0],
            "max_bytes bounds the read but returns one record"
        );
        s.log.trim(a, 2).unwrap();
        let left: Vec<_> = s
            .log
            .read_records(a, 0, 10, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(o, _)| o)
            .collect();
        assert_eq!(left, vec![3]);
        assert_eq!(s.log.read_records(b, 0, 10, usize::MAX).unwrap().len(), 1);
    }

    #[test]
    fn unwritable_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let err = Storage::open(&file.join("sub")).err().expect("must fail");
        assert!(
            err.to_string().contains("cannot open data directory"),
            "{err}"
        );
    }
}
