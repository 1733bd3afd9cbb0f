//! Durable state of one node, behind typed stores of our own. Nothing outside
//! this module touches sled or a file of the data directory directly.
//!
//! Layout of a data directory:
//! ```text
//! IDENTITY     the cluster and node this directory belongs to (see `identity`)
//! records/     the record log: log records of every loglet this node stores
//! state/       sled: loglet state, acceptor state, sequencer marks, partition state
//! snapshots/   partition snapshots, p<partition>/<lsn>.snap (see `snapshot`;
//!              the directory is configurable)
//! ```
//!
//! **Durable means synced.** A write is acknowledged to anyone only after
//! [`Storage::sync`] returned for it, and `sync` reaches stable storage:
//! - records: `fdatasync` of every segment written, `fsync` of `records/`
//!   when a segment was created (see [`record_log`]);
//! - sled: `Db::flush()` (which on Linux is only `sync_file_range`: it neither
//!   flushes the device cache nor persists the file size), then `fdatasync` of
//!   sled's data file, and `fsync` of every file sled created since the last
//!   sync (snapshots, blobs) and of their directories.
//!
//! Each kind has its own group-commit lane ([`SyncLane`]): a sync waits only
//! for the lanes written since their last sync, and one sync serves every
//! writer that arrived before it. Every value we write carries a checksum;
//! a value that fails it is a `Corrupt` error, never "absent".

mod group_commit;
pub mod identity;
mod log_store;
mod meta_store;
mod partition_store;
pub mod record_log;
pub mod snapshot;

pub use group_commit::{LaneStats, SyncLane};
pub use log_store::{LogStore, LogletState};
pub use meta_store::{MetaStore, RejoinProgress};
pub use partition_store::{PartitionStore, PartitionWrite};
pub use record_log::{RecordLog, RecordLogStats};
pub use snapshot::{Snapshot, SnapshotDir, SnapshotError};

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
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
    #[error("i/o error: {0}")]
    Io(String),
    #[error("refused: {0}")]
    Invalid(String),
    #[error("sync failed: {0}")]
    Flush(String),
    #[error("storage is shut down")]
    Closed,
    /// Injected by a test (see [`PartitionStore::inject_read_error_after`]).
    #[error("injected read error")]
    Injected,
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// sled's segment size. A value (really: a tree node) larger than a quarter
/// of it is written to a separate blob file; 8 MiB keeps every node we write
/// inline in sled's log (blob files are still synced if one appears).
const SLED_SEGMENT_BYTES: usize = 8 * 1024 * 1024;

/// How often sled's background thread flushes, fsyncs and then rewrites
/// pages out of mostly-dead segments (for up to half this time), so that
/// freed segments are reused and the file stays near the live data.
const SLED_FLUSH_EVERY_MS: u64 = 500;
/// sled's page cache for `state/` unless configured (`state_cache_mib`).
pub const DEFAULT_STATE_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// A node's stores. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    db: Arc<sled::Db>,
    pub log: LogStore,
    pub meta: MetaStore,
    /// Group commit of the record log.
    records_lane: SyncLane,
    /// Group commit of sled.
    state_lane: SyncLane,
}

/// Storage counters for status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageStats {
    pub records: RecordLogStats,
    pub records_sync: LaneStats,
    pub state_sync: LaneStats,
}

impl Storage {
    /// Opens (or creates) the stores under `dir`. Whether `dir` belongs to
    /// this node is the caller's to check first (see `identity`).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, DEFAULT_STATE_CACHE_BYTES)
    }

    /// [`Storage::open`] with the size of sled's page cache for `state/`
    /// (bytes). The cache is most of a loaded node's memory: it fills up
    /// to this size and then stays there (see README, "Resource use over
    /// time").
    pub fn open_with(dir: &Path, state_cache_bytes: u64) -> Result<Self> {
        let open_err = |reason: String| StorageError::Open {
            path: dir.to_path_buf(),
            reason,
        };
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        if created {
            // The directory's own entry must survive a power loss too.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                record_log::sync_dir(parent)?;
            }
        }
        // Probe writability up front: sled reports a read-only directory late
        // and obscurely.
        let probe = dir.join(".keel-write-probe");
        std::fs::write(&probe, b"ok")
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| open_err(format!("not writable: {e}")))?;
        if dir.join("db").join("conf").exists() {
            return Err(open_err(
                "it holds a database in the layout of an older keel (db/); move it away to start this node afresh".into(),
            ));
        }
        let state_dir = dir.join("state");
        // Both stores exist from the first start on: one without the other
        // is a directory that lost part of its data, not a fresh one.
        let (has_state, has_records) =
            (state_dir.join("db").exists(), dir.join("records").exists());
        if has_state != has_records {
            let (kept, lost) = if has_state {
                ("state", "records")
            } else {
                ("records", "state")
            };
            return Err(open_err(format!(
                "it has {kept}/ but no {lost}/: part of this node's data is lost; refusing to start on it"
            )));
        }
        let config = sled::Config::new()
            .path(&state_dir)
            .segment_size(SLED_SEGMENT_BYTES)
            // Durability is ours (the state lane), but sled's periodic
            // flusher is also the only thing that runs its segment cleaner
            // in bulk: without it the file grows with every write, however
            // small the live state (see README, "Resource use over time").
            // Its extra writes and fsyncs only make data durable sooner.
            .flush_every_ms(Some(SLED_FLUSH_EVERY_MS))
            .cache_capacity(state_cache_bytes);
        // A previous incarnation in this process (a restarted node in the test
        // rig) may still be releasing the file lock: wait for it, bounded.
        let deadline = Instant::now() + Duration::from_secs(5);
        let db = loop {
            match config.open() {
                Ok(db) => break Arc::new(db),
                Err(e) if is_lock_error(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(open_err(e.to_string())),
            }
        };
        let mut state_files = StateFiles::new(&state_dir).map_err(|e| open_err(e.to_string()))?;
        let state_lane = {
            let db = Arc::downgrade(&db);
            SyncLane::start(
                "state",
                Box::new(move || {
                    let db = db.upgrade().ok_or("database closed")?;
                    db.flush().map_err(|e| format!("sled flush: {e}"))?;
                    state_files.sync().map_err(|e| e.to_string())
                }),
            )
        };
        let loglets = log_store::open_loglets(&db)?;
        let trims: HashMap<_, _> = log_store::loglet_states(&loglets)?
            .into_iter()
            .map(|(l, s)| (l, s.trim_point))
            .collect();
        let (records, _report) = RecordLog::open(&dir.join("records"), &trims)?;
        let records_lane = {
            let records = records.clone();
            SyncLane::start(
                "records",
                Box::new(move || records.sync().map_err(|e| e.to_string())),
            )
        };
        // `state/` and `records/` must themselves survive a power loss.
        record_log::sync_dir(dir)?;
        Ok(Storage {
            log: LogStore::new(loglets, records, records_lane.clone(), state_lane.clone()),
            meta: MetaStore::open(&db, state_lane.clone())?,
            db,
            records_lane,
            state_lane,
        })
    }

    /// Makes every write issued before this call durable (group commit; only
    /// the lanes written since their last sync do any work).
    pub async fn sync(&self) -> Result<()> {
        let (records, state) = futures::join!(self.records_lane.sync(), self.state_lane.sync());
        records.and(state)
    }

    /// Makes every *record* written before this call durable (the record
    /// lane only: a log-server's store must not wait for sled).
    pub async fn sync_records(&self) -> Result<()> {
        self.records_lane.sync().await
    }

    /// Makes every write to sled before this call durable (loglet state,
    /// acceptor, sequencer marks, partition state), not the records.
    pub async fn sync_state(&self) -> Result<()> {
        self.state_lane.sync().await
    }

    /// The same as [`sync`](Self::sync), blocking (shutdown and tests).
    pub fn sync_blocking(&self) -> Result<()> {
        self.records_lane.sync_blocking()?;
        self.state_lane.sync_blocking()
    }

    /// The store of one partition's processor state. Opening it completes a
    /// write a crash cut short, so open it where the partition's single
    /// writer starts.
    pub fn partition(&self, partition: crate::types::PartitionId) -> Result<PartitionStore> {
        PartitionStore::open(&self.db, partition, self.state_lane.clone())
    }

    /// Chaos: every sync of either lane takes at least `delay` longer
    /// (zero undoes it): a slow disk, without touching the file system.
    pub fn set_slow_sync(&self, delay: Duration) {
        self.records_lane.set_slow_sync(delay);
        self.state_lane.set_slow_sync(delay);
    }

    /// The delay [`set_slow_sync`](Self::set_slow_sync) set.
    pub fn slow_sync(&self) -> Duration {
        self.records_lane.slow_sync()
    }

    /// How many syncs the lanes have run (for metrics and tests).
    pub fn flush_count(&self) -> u64 {
        self.records_lane.stats().syncs + self.state_lane.stats().syncs
    }

    /// Bytes on disk, for status.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0) + self.log.records().stats().bytes_on_disk
    }

    /// Why storage can no longer make writes durable, if it cannot.
    pub fn failure(&self) -> Option<String> {
        self.records_lane
            .failure()
            .or_else(|| self.state_lane.failure())
    }

    pub fn stats(&self) -> StorageStats {
        StorageStats {
            records: self.log.records().stats(),
            records_sync: self.records_lane.stats(),
            state_sync: self.state_lane.stats(),
        }
    }
}

/// The files of sled's directory and what syncing them takes beyond the
/// flush: sled's data file gets an `fdatasync`; a file sled created since
/// the last sync (a snapshot, a blob) gets an `fsync`, and so does the
/// directory it appeared in.
struct StateFiles {
    dir: PathBuf,
    /// sled's data file (`state/db`), opened once.
    data: File,
    /// Files already synced once, per directory.
    known: HashMap<PathBuf, BTreeSet<std::ffi::OsString>>,
}

impl StateFiles {
    fn new(dir: &Path) -> std::io::Result<Self> {
        Ok(StateFiles {
            dir: dir.to_path_buf(),
            data: File::open(dir.join("db"))?,
            known: HashMap::new(),
        })
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.data.sync_data()?;
        for dir in [self.dir.clone(), self.dir.join("blobs")] {
            let mut names = BTreeSet::new();
            for entry in std::fs::read_dir(&dir)? {
                names.insert(entry?.file_name());
            }
            let known = self.known.entry(dir.clone()).or_default();
            let new: Vec<_> = names.difference(known).cloned().collect();
            for name in &new {
                let path = dir.join(name);
                if path.is_file() {
                    // Gone meanwhile (sled replaced a snapshot): nothing to keep.
                    match File::open(&path) {
                        Ok(f) => f.sync_all()?,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            if !new.is_empty() || names.len() != known.len() {
                File::open(&dir)?.sync_all()?;
            }
            *known = names;
        }
        Ok(())
    }
}

fn is_lock_error(e: &sled::Error) -> bool {
    // sled wraps the `flock` failure in a new io::Error, so look at both.
    matches!(e, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("could not acquire lock"))
}

/// A value as stored: `[crc32 u32 BE][rmp bytes]`.
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Encoding our own plain data types cannot fail (no maps with non-string
    // keys are serialized as structs with `to_vec_named`).
    let body = rmp_serde::to_vec_named(value).expect("encoding a storage value");
    seal_value(&body)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T> {
    let body = open_value(tree, bytes)?;
    rmp_serde::from_slice(body).map_err(|e| StorageError::Corrupt {
        tree,
        reason: e.to_string(),
    })
}

/// Prefixes `body` with its checksum.
pub(crate) fn seal_value(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&record_log::format::crc(&[body]).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of a checksummed value, or `Corrupt`.
pub(crate) fn open_value<'a>(tree: &'static str, bytes: &'a [u8]) -> Result<&'a [u8]> {
    let corrupt = |reason: &str| StorageError::Corrupt {
        tree,
        reason: reason.to_string(),
    };
    let (crc, body) = bytes
        .split_at_checked(4)
        .ok_or_else(|| corrupt("value shorter than its checksum"))?;
    let want = u32::from_be_bytes(crc.try_into().expect("4 bytes"));
    if record_log::format::crc(&[body]) != want {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(body)
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
                        lost: false,
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
            assert!(s.flush_count() >= 2, "both lanes synced");
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
    async fn concurrent_syncs_share_flushes_and_idle_lanes_do_nothing() {
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
        let stats = s.stats();
        // 64 callers, strictly fewer fdatasyncs: the group commit batched them.
        assert!(
            stats.records_sync.syncs < 64,
            "syncs: {:?}",
            stats.records_sync
        );
        assert_eq!(stats.state_sync.syncs, 0, "no sled write, no sled sync");
        let before = s.flush_count();
        s.sync().await.unwrap();
        assert_eq!(s.flush_count(), before, "nothing written since: no sync");
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

    #[test]
    fn an_old_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("db")).unwrap();
        std::fs::write(dir.path().join("db/conf"), b"segment_size: 524288").unwrap();
        let err = Storage::open(dir.path())
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("older keel"), "{err}");
    }

    #[test]
    fn a_directory_that_lost_one_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Storage::open(dir.path()).unwrap());
        std::fs::remove_dir_all(dir.path().join("records")).unwrap();
        let err = Storage::open(dir.path())
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("no records/"), "{err}");
        assert!(!dir.path().join("records").exists(), "nothing created");
    }

    #[test]
    fn checksummed_values_catch_damage() {
        let v = encode(&(1u32, "x"));
        assert_eq!(decode::<(u32, String)>("t", &v).unwrap(), (1, "x".into()));
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 0x10;
            assert!(decode::<(u32, String)>("t", &bad).is_err(), "byte {i}");
        }
        assert!(decode::<u32>("t", &[1, 2]).is_err());
    }
}
