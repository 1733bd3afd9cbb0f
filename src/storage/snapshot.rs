//! Snapshots of a partition's state: every key and value of the partition
//! store at one applied LSN, in one checksummed file. A replica that the log
//! can no longer serve (it was trimmed past what the replica needs) restores
//! a peer's snapshot and follows the log from the snapshot's LSN + 1; the
//! leader may trim the log below what a majority's retained snapshots cover.
//!
//! ```text
//! header   [b"KEELSNAP"][format u32 = 1][partition u32][applied LSN u64][entries u64]
//! entry    [key len u32][key][value len u32][value]     (entries × , in key order)
//! trailer  [crc32 u32 of every byte before it]
//! ```
//! All integers are big-endian. Keys are the partition store's keys, values
//! the values written (the store's per-value checksums are checked when the
//! entries are read and stripped; the file's CRC covers them instead).
//!
//! Files live at `<dir>/p<partition>/<lsn:020>.snap`. A file is written to
//! `<lsn:020>.snap.tmp`, fsynced, renamed into place and its directory
//! fsynced: a snapshot is either whole and durable or absent. A leftover
//! temporary file (a crash mid-write) is ignored by [`SnapshotDir::list`]
//! and removed by [`SnapshotDir::retain`]. Reading verifies everything: a
//! damaged or truncated file is a [`SnapshotError`], never a panic and never
//! partial state.

use super::record_log::format::crc;
use super::record_log::sync_dir;
use crate::types::{Lsn, PartitionId};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The first bytes of every snapshot file.
pub const MAGIC: &[u8; 8] = b"KEELSNAP";
/// The format this build writes and reads.
pub const FORMAT: u32 = 1;
/// Header bytes: magic, format, partition, LSN, entry count.
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8;
/// The file name suffix of a snapshot.
const SUFFIX: &str = ".snap";
/// The suffix of a snapshot being written.
const TEMP_SUFFIX: &str = ".snap.tmp";

/// Keys and values of a partition store, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Why a snapshot could not be written, found or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot i/o error: {0}")]
    Io(String),
    #[error("damaged snapshot: {0}")]
    Damaged(String),
    #[error("snapshot format {0} is not supported (this build reads format {FORMAT})")]
    Format(u32),
    #[error("no snapshot of partition {partition} at LSN {lsn}")]
    Missing { partition: PartitionId, lsn: Lsn },
}

fn io(what: impl std::fmt::Display, e: std::io::Error) -> SnapshotError {
    SnapshotError::Io(format!("{what}: {e}"))
}

fn damaged(why: impl Into<String>) -> SnapshotError {
    SnapshotError::Damaged(why.into())
}

/// A decoded, verified snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The partition whose state it is.
    pub partition: PartitionId,
    /// The LSN the state covers: a restored replica reads on from `lsn + 1`.
    pub lsn: Lsn,
    /// The store's keys and values at `lsn`.
    pub entries: Entries,
}

impl Snapshot {
    /// The file's bytes (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .entries
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum();
        let mut out = Vec::with_capacity(HEADER_LEN + size + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_be_bytes());
        out.extend_from_slice(&self.partition.0.to_be_bytes());
        out.extend_from_slice(&self.lsn.0.to_be_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_be_bytes());
        for (k, v) in &self.entries {
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v);
        }
        let sum = crc(&[&out]);
        out.extend_from_slice(&sum.to_be_bytes());
        out
    }

    /// Decodes and verifies a file's bytes: any damage is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let (body, sum) = bytes
            .split_last_chunk::<4>()
            .ok_or_else(|| damaged("shorter than its checksum"))?;
        if body.len() < HEADER_LEN {
            return Err(damaged("shorter than its header"));
        }
        if &body[..8] != MAGIC {
            return Err(damaged("not a snapshot (bad magic)"));
        }
        if crc(&[body]) != u32::from_be_bytes(*sum) {
            return Err(damaged("checksum mismatch"));
        }
        let mut r = Cursor { bytes: body, at: 8 };
        let format = r.u32()?;
        if format != FORMAT {
            return Err(SnapshotError::Format(format));
        }
        let partition = PartitionId(r.u32()?);
        let lsn = Lsn(r.u64()?);
        let count = r.u64()?;
        // Each entry takes at least 8 bytes: a count beyond that is damage
        // (and must not size an allocation).
        let room = (body.len() - HEADER_LEN) as u64 / 8;
        if count > room {
            return Err(damaged(format!("{count} entries cannot fit")));
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let klen = r.u32()? as usize;
            let key = r.take(klen)?.to_vec();
            let vlen = r.u32()? as usize;
            let value = r.take(vlen)?.to_vec();
            entries.push((key, value));
        }
        if r.at != body.len() {
            return Err(damaged("trailing bytes after the entries"));
        }
        if entries.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(damaged("entries out of key order"));
        }
        Ok(Snapshot {
            partition,
            lsn,
            entries,
        })
    }
}

/// Bounds-checked reading of a snapshot's body.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let s = self
            .bytes
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| damaged("cut short"))?;
        self.at += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes(
            b.try_into().map_err(|_| damaged("u32"))?,
        ))
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes(
            b.try_into().map_err(|_| damaged("u64"))?,
        ))
    }
}

/// A node's snapshot directory (by default `<data_dir>/snapshots`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDir {
    /// Holds one `p<partition>` directory per partition.
    root: PathBuf,
}

impl SnapshotDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SnapshotDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of `partition`'s snapshots.
    pub fn partition_dir(&self, partition: PartitionId) -> PathBuf {
        self.root.join(format!("p{}", partition.0))
    }

    /// The file of `partition`'s snapshot at `lsn`.
    pub fn path(&self, partition: PartitionId, lsn: Lsn) -> PathBuf {
        self.partition_dir(partition)
            .join(format!("{:020}{SUFFIX}", lsn.0))
    }

    /// Writes a snapshot durably: temp file, fsync, rename, fsync of the
    /// directory (and of the directories it had to create). Returns its path.
    pub fn write(&self, snapshot: &Snapshot) -> Result<PathBuf, SnapshotError> {
        let dir = self.partition_dir(snapshot.partition);
        self.create(&dir)?;
        let path = self.path(snapshot.partition, snapshot.lsn);
        let temp = dir.join(format!("{:020}{TEMP_SUFFIX}", snapshot.lsn.0));
        let mut f = File::create(&temp).map_err(|e| io(format!("create {}", temp.display()), e))?;
        f.write_all(&snapshot.encode())
            .and_then(|()| f.sync_all())
            .map_err(|e| io(format!("write {}", temp.display()), e))?;
        drop(f);
        std::fs::rename(&temp, &path).map_err(|e| io(format!("rename {}", path.display()), e))?;
        sync_dir(&dir).map_err(|e| SnapshotError::Io(e.to_string()))?;
        Ok(path)
    }

    /// Creates `dir` and the root, syncing each parent whose entry is new.
    fn create(&self, dir: &Path) -> Result<(), SnapshotError> {
        for d in [self.root.as_path(), dir] {
            if d.is_dir() {
                continue;
            }
            std::fs::create_dir_all(d).map_err(|e| io(format!("create {}", d.display()), e))?;
            if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent).map_err(|e| SnapshotError::Io(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// The LSNs of `partition`'s snapshots, newest first (temporary files
    /// and foreign names are not snapshots; a missing directory holds none).
    pub fn list(&self, partition: PartitionId) -> Result<Vec<Lsn>, SnapshotError> {
        let dir = self.partition_dir(partition);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(format!("list {}", dir.display()), e)),
        };
        let mut lsns = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io(format!("list {}", dir.display()), e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(digits) = name.strip_suffix(SUFFIX) else {
                continue;
            };
            if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(lsn) = digits.parse::<u64>() {
                    lsns.push(Lsn(lsn));
                }
            }
        }
        lsns.sort_by(|a, b| b.cmp(a));
        Ok(lsns)
    }

    /// The newest snapshot's LSN, if any.
    pub fn latest(&self, partition: PartitionId) -> Result<Option<Lsn>, SnapshotError> {
        Ok(self.list(partition)?.first().copied())
    }

    /// The whole file of a snapshot, unverified (what a peer is sent; the
    /// peer verifies it).
    pub fn read_bytes(&self, partition: PartitionId, lsn: Lsn) -> Result<Vec<u8>, SnapshotError> {
        let path = self.path(partition, lsn);
        match std::fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(SnapshotError::Missing { partition, lsn })
            }
            Err(e) => Err(io(format!("read {}", path.display()), e)),
        }
    }

    /// Up to `max` bytes of a snapshot's file from `offset` on, unverified,
    /// and the file's length (what a peer is sent, chunk by chunk). An
    /// offset past the end is an error.
    pub fn read_range(
        &self,
        partition: PartitionId,
        lsn: Lsn,
        offset: u64,
        max: usize,
    ) -> Result<(u64, Vec<u8>), SnapshotError> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.path(partition, lsn);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SnapshotError::Missing { partition, lsn })
            }
            Err(e) => return Err(io(format!("open {}", path.display()), e)),
        };
        let what = || format!("read {}", path.display());
        let total = f.metadata().map_err(|e| io(what(), e))?.len();
        if offset > total {
            return Err(SnapshotError::Io(format!(
                "offset {offset} is past the end of {} ({total} bytes)",
                path.display()
            )));
        }
        let len = (total - offset).min(max as u64) as usize;
        let mut bytes = vec![0; len];
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_exact(&mut bytes))
            .map_err(|e| io(what(), e))?;
        Ok((total, bytes))
    }

    /// Reads and verifies a snapshot, including that it is the one its name
    /// says it is.
    pub fn read(&self, partition: PartitionId, lsn: Lsn) -> Result<Snapshot, SnapshotError> {
        let snapshot = Snapshot::decode(&self.read_bytes(partition, lsn)?)?;
        if (snapshot.partition, snapshot.lsn) != (partition, lsn) {
            return Err(damaged(format!(
                "the file of partition {partition} at LSN {lsn} holds partition {} at LSN {}",
                snapshot.partition, snapshot.lsn
            )));
        }
        Ok(snapshot)
    }

    /// Keeps the newest `keep` (at least 1) snapshots of `partition`,
    /// deletes the older ones and any leftover temporary file, and syncs the
    /// directory. Returns the LSNs deleted.
    pub fn retain(&self, partition: PartitionId, keep: usize) -> Result<Vec<Lsn>, SnapshotError> {
        let dir = self.partition_dir(partition);
        let lsns = self.list(partition)?;
        let old: Vec<Lsn> = lsns.into_iter().skip(keep.max(1)).collect();
        let mut changed = false;
        for lsn in &old {
            let path = self.path(partition, *lsn);
            std::fs::remove_file(&path).map_err(|e| io(format!("remove {}", path.display()), e))?;
            changed = true;
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
                    let _ = std::fs::remove_file(entry.path());
                    changed = true;
                }
            }
        }
        if changed {
            sync_dir(&dir).map_err(|e| SnapshotError::Io(e.to_string()))?;
        }
        Ok(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PartitionId = PartitionId(3);

    fn sample(lsn: u64) -> Snapshot {
        Snapshot {
            partition: P,
            lsn: Lsn(lsn),
            entries: vec![
                (b"\x00applied".to_vec(), lsn.to_be_bytes().to_vec()),
                (b"dg:1".to_vec(), b"response".to_vec()),
                (b"mepoch".to_vec(), 2u64.to_be_bytes().to_vec()),
                (b"oCounter/a".to_vec(), b"41".to_vec()),
                (b"oempty".to_vec(), Vec::new()),
            ],
        }
    }

    #[test]
    fn a_snapshot_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::new(dir.path().join("snapshots"));
        assert_eq!(snaps.list(P).unwrap(), vec![], "no directory: none");
        let path = snaps.write(&sample(42)).unwrap();
        assert_eq!(
            path,
            dir.path().join("snapshots/p3/00000000000000000042.snap")
        );
        assert_eq!(snaps.read(P, Lsn(42)).unwrap(), sample(42));
        // Chunk by chunk, the same bytes.
        let whole = snaps.read_bytes(P, Lsn(42)).unwrap();
        let mut joined = Vec::new();
        while joined.len() < whole.len() {
            let (total, chunk) = snaps
                .read_range(P, Lsn(42), joined.len() as u64, 7)
                .unwrap();
            assert_eq!(total, whole.len() as u64);
            assert!(!chunk.is_empty() && chunk.len() <= 7);
            joined.extend(chunk);
        }
        assert_eq!(joined, whole);
        let end = whole.len() as u64;
        assert_eq!(
            snaps.read_range(P, Lsn(42), end, 7).unwrap().1,
            Vec::<u8>::new()
        );
        assert!(snaps.read_range(P, Lsn(42), end + 1, 7).is_err());
        assert_eq!(snaps.latest(P).unwrap(), Some(Lsn(42)));
        assert_eq!(
            snaps.read(P, Lsn(7)),
            Err(SnapshotError::Missing {
                partition: P,
                lsn: Lsn(7)
            })
        );
        let empty = Snapshot {
            partition: P,
            lsn: Lsn(0),
            entries: vec![],
        };
        assert_eq!(Snapshot::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn a_flipped_byte_anywhere_is_an_error() {
        let bytes = sample(9).encode();
        for i in 0..bytes.len() {
            for bit in [0x01, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                assert!(Snapshot::decode(&bad).is_err(), "byte {i} bit {bit:#x}");
            }
        }
    }

    #[test]
    fn a_truncated_or_padded_file_is_an_error() {
        let bytes = sample(9).encode();
        for cut in 0..bytes.len() {
            assert!(Snapshot::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Snapshot::decode(&longer).is_err());
        // A checksum that matches a body that lies about its contents.
        let mut lying = bytes[..bytes.len() - 4].to_vec();
        lying[24..32].copy_from_slice(&u64::MAX.to_be_bytes());
        let sum = crc(&[&lying]);
        lying.extend_from_slice(&sum.to_be_bytes());
        assert!(matches!(
            Snapshot::decode(&lying),
            Err(SnapshotError::Damaged(_))
        ));
        let mut future = bytes[..bytes.len() - 4].to_vec();
        future[8..12].copy_from_slice(&2u32.to_be_bytes());
        let sum = crc(&[&future]);
        future.extend_from_slice(&sum.to_be_bytes());
        assert_eq!(Snapshot::decode(&future), Err(SnapshotError::Format(2)));
    }

    #[test]
    fn a_damaged_file_on_disk_is_refused_and_a_misnamed_one_too() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::new(dir.path());
        let path = snaps.write(&sample(5)).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 4;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            snaps.read(P, Lsn(5)),
            Err(SnapshotError::Damaged(_))
        ));
        // A whole snapshot under another snapshot's name.
        std::fs::write(snaps.path(P, Lsn(6)), sample(5).encode()).unwrap();
        assert!(matches!(
            snaps.read(P, Lsn(6)),
            Err(SnapshotError::Damaged(_))
        ));
    }

    /// Sizes and times for the README:
    /// `cargo test --lib snapshot_of_100k_keys -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn snapshot_of_100k_keys() {
        use crate::storage::{PartitionWrite, Storage};
        use std::time::Instant;
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&dir.path().join("data")).unwrap();
        let store = storage.partition(P).unwrap();
        let mut w = PartitionWrite::default();
        for i in 0..100_000u32 {
            w.put_object(format!("Counter/key-{i:08}").as_bytes(), &[b'7'; 64]);
        }
        w.set_applied(Lsn(100_000));
        store.apply(w).unwrap();
        storage.sync_blocking().unwrap();
        let snaps = SnapshotDir::new(dir.path().join("snapshots"));
        let t = Instant::now();
        let entries = store.entries().unwrap();
        let read_ms = t.elapsed().as_millis();
        let t = Instant::now();
        let snapshot = Snapshot {
            partition: P,
            lsn: Lsn(100_000),
            entries,
        };
        let path = snaps.write(&snapshot).unwrap();
        let write_ms = t.elapsed().as_millis();
        let t = Instant::now();
        let back = snaps.read(P, Lsn(100_000)).unwrap();
        let verify_ms = t.elapsed().as_millis();
        let other = storage.partition(PartitionId(9)).unwrap();
        let t = Instant::now();
        let mut restore = PartitionWrite::default();
        for (k, v) in &back.entries {
            restore.put_raw(k, v).unwrap();
        }
        other.apply(restore).unwrap();
        storage.sync_blocking().unwrap();
        let restore_ms = t.elapsed().as_millis();
        let bytes = std::fs::metadata(&path).unwrap().len();
        eprintln!(
            "100,000 keys: snapshot {:.1} MiB; entries read {read_ms} ms, written+fsynced {write_ms} ms, \
             read+verified {verify_ms} ms, restored (one journaled write + sync) {restore_ms} ms",
            bytes as f64 / (1 << 20) as f64
        );
        assert_eq!(back.entries.len(), 100_001);
    }

    #[test]
    fn retention_keeps_the_newest_and_leftover_temp_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::new(dir.path());
        for lsn in [10, 30, 20, 40] {
            snaps.write(&sample(lsn)).unwrap();
        }
        let pdir = snaps.partition_dir(P);
        std::fs::write(pdir.join("00000000000000000050.snap.tmp"), b"half").unwrap();
        std::fs::write(pdir.join("notes.txt"), b"x").unwrap();
        assert_eq!(
            snaps.list(P).unwrap(),
            vec![Lsn(40), Lsn(30), Lsn(20), Lsn(10)],
            "newest first, the temp file is no snapshot"
        );
        assert_eq!(snaps.retain(P, 2).unwrap(), vec![Lsn(20), Lsn(10)]);
        assert_eq!(snaps.list(P).unwrap(), vec![Lsn(40), Lsn(30)]);
        assert!(!pdir.join("00000000000000000050.snap.tmp").exists());
        assert!(pdir.join("notes.txt").exists(), "not ours to delete");
        assert_eq!(snaps.retain(P, 0).unwrap(), vec![Lsn(30)], "at least one");
        assert_eq!(snaps.read(P, Lsn(40)).unwrap(), sample(40));
        // Other partitions are apart.
        assert_eq!(snaps.list(PartitionId(4)).unwrap(), vec![]);
    }
}
