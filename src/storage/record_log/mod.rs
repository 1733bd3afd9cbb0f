//! The record log: where a log-server keeps the records of every loglet it
//! stores. Purpose-built instead of sled, for three reasons:
//! - **durability we can prove**: records are appended to segment files and
//!   made durable with `fdatasync` (plus an `fsync` of the directory when a
//!   file is created), by one group commit for every writer (see
//!   [`super::SyncLane`]); sled's `flush()` is only `sync_file_range`;
//! - **corruption is a missing record, never a crash or a lost suffix**: every
//!   record carries a checksum over its loglet, offset and bytes (see
//!   [`format`]); a damaged record is dropped from the index, counted, and
//!   re-stored by whoever has a good copy, while everything else stays
//!   readable (sled would stop recovering at the first bad page);
//! - **the append path is one `write` and a shared `fdatasync`**, with no page
//!   cache of our own to copy through.
//!
//! Segments (`records/<seq>.seg`, about 64 MiB each) are written append-only;
//! each open starts a new one, so a torn tail left by a crash is never written
//! after. An in-memory [`index::Index`] maps each stored offset to its entry;
//! it is rebuilt at open by scanning the segments (headers only are checked;
//! record checksums are checked on every read). Trimming edits the index and
//! deletes a segment once nothing in it is live; trim points themselves are
//! kept by the caller (the loglet state) and applied again at open, so a
//! deletion lost in a crash is redone.

pub mod format;
pub mod index;

use self::format::{HeaderError, RecordSlot};
use self::index::{Index, Location, Piece};
use super::{Result, StorageError};
use crate::types::{LogletId, Offset};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// A new segment is started once the current one reaches this size.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// How many recently damaged offsets are kept for status.
const RECENT_DAMAGE: usize = 32;

/// The records of every loglet this node stores. Cheap to clone.
#[derive(Clone)]
pub struct RecordLog {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    /// Damaged records found since open (checksum mismatches on read or scan).
    damaged: AtomicU64,
    /// Why this server may have lost records it cannot name (a damaged entry
    /// whose headers are both unreadable), kept durably in `SUSPECT`. Such a
    /// server must not count toward a seal: it may lack an acknowledged
    /// record without knowing it.
    suspect: Option<String>,
}

/// The marker of unattributable damage (see `Shared::suspect`).
const SUSPECT_FILE: &str = "SUSPECT";

struct State {
    index: Index,
    /// Open handles of every segment file still on disk.
    files: HashMap<u64, Arc<File>>,
    /// The segment appends go to, and where its next entry starts.
    active: u64,
    active_end: u64,
    /// Segments written since the last sync (they need an `fdatasync`).
    dirty: BTreeSet<u64>,
    /// A segment file was created since the last sync (the directory needs
    /// an `fsync` for it to exist after a power loss).
    dir_dirty: bool,
    /// The latest damaged offsets found, for status.
    recent_damage: VecDeque<(LogletId, Offset)>,
    /// Offsets found damaged and not stored again since: what this server
    /// is known to lack although it may have acknowledged it.
    damaged: BTreeSet<(LogletId, Offset)>,
}

/// What an open found, for the log and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Segments scanned.
    pub segments: usize,
    /// Entries indexed.
    pub entries: usize,
    /// Bytes of torn (incomplete) entries at the ends of segments.
    pub torn_bytes: u64,
    /// Bytes skipped because an entry header was damaged mid-segment.
    pub damaged_bytes: u64,
    /// Segment files that could not be used at all (bad file header).
    pub unreadable_segments: Vec<PathBuf>,
}

/// Counters for status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordLogStats {
    pub segments: usize,
    pub bytes_on_disk: u64,
    /// Records found damaged (and treated as missing) since the node started.
    pub damaged_records: u64,
    /// The latest damaged records, as `loglet/offset`.
    pub recent_damage: Vec<String>,
    /// Damaged records not yet stored again from a peer's copy.
    pub unrepaired: usize,
    /// Set when this server may lack records it cannot name.
    pub suspect: Option<String>,
}

fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> StorageError {
    StorageError::Io(format!("{what}: {e}"))
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.seg"))
}

/// `fsync` of a directory, so entries created or renamed in it survive.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(format_args!("syncing directory {}", dir.display()), e))
}

impl RecordLog {
    /// Opens (or creates) the record log in `dir`. `trim_points` are the
    /// durable trim points of the loglets: offsets below them are not
    /// indexed, whatever the segments still hold.
    pub fn open(dir: &Path, trim_points: &HashMap<LogletId, Offset>) -> Result<(Self, OpenReport)> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir)
            .map_err(|e| io_err(format_args!("creating {}", dir.display()), e))?;
        if created {
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(dir)
            .map_err(|e| io_err(format_args!("listing {}", dir.display()), e))?
        {
            let entry = entry.map_err(|e| io_err("listing record segments", e))?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            seqs.push(seq);
        }
        seqs.sort_unstable();
        let mut index = Index::default();
        let mut files = HashMap::new();
        let mut report = OpenReport::default();
        let mut damaged = 0u64;
        for &seq in &seqs {
            let path = segment_path(dir, seq);
            let file = OpenOptions::new()
                .read(true)
                .open(&path)
                .map_err(|e| io_err(format_args!("opening {}", path.display()), e))?;
            let bytes = std::fs::read(&path)
                .map_err(|e| io_err(format_args!("reading {}", path.display()), e))?;
            match scan_segment(seq, &bytes, &mut index, &mut report) {
                Ok(()) => {
                    report.segments += 1;
                    files.insert(seq, Arc::new(file));
                }
                Err(why) => {
                    warn!(path = %path.display(), "record segment unusable: {why}");
                    damaged += 1;
                    report.unreadable_segments.push(path);
                }
            }
        }
        for (&loglet, &below) in trim_points {
            if below > 0 {
                index.remove_range(loglet, 0, below);
            }
        }
        // Segments nothing refers to any more (trimmed before a crash took
        // their deletion with it, or holding only superseded copies).
        for &seq in &seqs {
            if files.contains_key(&seq) && !index.is_live(seq) {
                files.remove(&seq);
                let _ = std::fs::remove_file(segment_path(dir, seq));
            }
        }
        if report.damaged_bytes > 0 || report.torn_bytes > 0 {
            warn!(
                torn_bytes = report.torn_bytes,
                damaged_bytes = report.damaged_bytes,
                "record segments had torn or damaged entries"
            );
        }
        let marker = dir.join(SUSPECT_FILE);
        if report.damaged_bytes > 0 && !marker.exists() {
            let reason = format!(
                "{} bytes of record segments had unattributable damage (both copies of an entry header); records this server acknowledged may be lost without a trace",
                report.damaged_bytes
            );
            std::fs::write(&marker, reason.as_bytes())
                .and_then(|_| File::open(&marker)?.sync_all())
                .map_err(|e| io_err("writing the SUSPECT marker", e))?;
            sync_dir(dir)?;
        }
        let suspect = match std::fs::read(&marker) {
            Ok(reason) => Some(String::from_utf8_lossy(&reason).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("reading the SUSPECT marker", e)),
        };
        if let Some(reason) = &suspect {
            warn!("this log-server is suspect and will not count toward seals: {reason}");
        }
        let active = seqs.last().map_or(1, |s| s + 1);
        let file = create_segment(dir, active)?;
        sync_dir(dir)?;
        files.insert(active, Arc::new(file));
        info!(
            segments = report.segments,
            entries = report.entries,
            active,
            "record log open"
        );
        let state = State {
            index,
            files,
            active,
            active_end: format::FILE_HEADER_LEN as u64,
            dirty: BTreeSet::new(),
            dir_dirty: false,
            recent_damage: VecDeque::new(),
            damaged: BTreeSet::new(),
        };
        let log = RecordLog {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                state: Mutex::new(state),
                damaged: AtomicU64::new(damaged),
                suspect,
            }),
        };
        Ok((log, report))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `records` at `first, first+1, ...` (durable after the next
    /// [`sync`](Self::sync)). Offsets already held are left alone: a
    /// sequencer writes each offset once, so a resend or a repair carries
    /// the bytes already there. Each missing stretch becomes one entry.
    pub fn put<R: AsRef<[u8]>>(
        &self,
        loglet: LogletId,
        first: Offset,
        records: &[R],
    ) -> Result<()> {
        let end = (records.len() as u64).checked_add(first).ok_or_else(|| {
            StorageError::Invalid(format!("offsets {first}+{} overflow", records.len()))
        })?;
        let mut state = self.state();
        for (lo, hi) in state.index.missing(loglet, first, end) {
            let stretch = &records[(lo - first) as usize..(hi - first) as usize];
            let bytes = format::encode_entry(loglet, lo, stretch).ok_or_else(|| {
                StorageError::Invalid(format!(
                    "a store of {} records is too large to encode",
                    stretch.len()
                ))
            })?;
            let at = self.append(&mut state, &bytes)?;
            state.index.insert(loglet, Piece { lo, hi, at });
            let repaired: Vec<_> = state
                .damaged
                .range((loglet, lo)..(loglet, hi))
                .copied()
                .collect();
            for d in repaired {
                state.damaged.remove(&d);
            }
        }
        Ok(())
    }

    /// Appends one encoded entry to the active segment, starting a new
    /// segment when the active one is full.
    fn append(&self, state: &mut State, bytes: &[u8]) -> Result<Location> {
        let len = bytes.len() as u64;
        if state.active_end > format::FILE_HEADER_LEN as u64
            && state.active_end + len > SEGMENT_BYTES
        {
            let next = state.active + 1;
            let file = create_segment(&self.shared.dir, next)?;
            state.files.insert(next, Arc::new(file));
            if !state.index.is_live(state.active) {
                self.delete_segment(state, state.active);
            }
            state.active = next;
            state.active_end = format::FILE_HEADER_LEN as u64;
            state.dir_dirty = true;
            state.dirty.insert(next);
        }
        let file = state
            .files
            .get(&state.active)
            .expect("the active segment is open")
            .clone();
        let pos = state.active_end;
        file.write_all_at(bytes, pos)
            .map_err(|e| io_err(format_args!("writing record segment {}", state.active), e))?;
        state.active_end += len;
        state.dirty.insert(state.active);
        Ok(Location {
            segment: state.active,
            pos,
            len,
        })
    }

    /// Makes every record written before the call durable: `fdatasync` of
    /// each segment written since the last sync, and `fsync` of the
    /// directory when a segment was created. Blocking; run it on the sync
    /// lane's thread.
    pub fn sync(&self) -> Result<()> {
        let (files, dir_dirty) = {
            let mut state = self.state();
            let dirty = std::mem::take(&mut state.dirty);
            let files: Vec<(u64, Arc<File>)> = dirty
                .into_iter()
                .filter_map(|s| state.files.get(&s).map(|f| (s, f.clone())))
                .collect();
            (files, std::mem::take(&mut state.dir_dirty))
        };
        // A failure poisons the sync lane (see `group_commit`): nothing is
        // retried, nothing written before it is trusted.
        for (seq, file) in files {
            file.sync_data()
                .map_err(|e| io_err(format_args!("fdatasync of record segment {seq}"), e))?;
        }
        if dir_dirty {
            sync_dir(&self.shared.dir)?;
        }
        Ok(())
    }

    /// Records in `[from, to)`, in offset order, stopping after `max_bytes`
    /// (at least one record is returned if any is held). Missing and damaged
    /// offsets are simply absent; a damaged one is dropped from the index
    /// (so a later store can replace it) and counted.
    pub fn read(
        &self,
        loglet: LogletId,
        from: Offset,
        to: Offset,
        max_bytes: usize,
    ) -> Result<Vec<(Offset, Vec<u8>)>> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let pieces: Vec<(Piece, Arc<File>)> = {
            let state = self.state();
            state
                .index
                .pieces(loglet, from, to)
                .into_iter()
                .filter_map(|p| state.files.get(&p.at.segment).map(|f| (p, f.clone())))
                .collect()
        };
        let mut bytes = 0usize;
        let mut damaged = Vec::new();
        'pieces: for (piece, file) in pieces {
            let mut buf = vec![0u8; piece.at.len as usize];
            file.read_exact_at(&mut buf, piece.at.pos).map_err(|e| {
                io_err(
                    format_args!("reading record segment {}", piece.at.segment),
                    e,
                )
            })?;
            let header = match format::decode_entry_header(&buf) {
                Ok(h) if h.loglet == loglet && h.first <= piece.lo && piece.hi <= h.end() => h,
                _ => {
                    damaged.push((piece, piece.lo, piece.hi));
                    continue;
                }
            };
            for (offset, slot) in format::decode_records(&header, &buf[format::ENTRY_HEADER_LEN..])
            {
                if offset < piece.lo {
                    continue;
                }
                if offset >= piece.hi {
                    break;
                }
                match slot {
                    RecordSlot::Intact(record) => {
                        if !out.is_empty() && bytes + record.len() > max_bytes {
                            break 'pieces;
                        }
                        bytes += record.len();
                        out.push((offset, record.to_vec()));
                    }
                    RecordSlot::Damaged => damaged.push((piece, offset, offset + 1)),
                }
            }
        }
        if !damaged.is_empty() {
            self.drop_damaged(loglet, damaged);
            // What is returned must be the contiguous truth of what is held:
            // keep the records read, every one of them verified.
        }
        Ok(out)
    }

    fn drop_damaged(&self, loglet: LogletId, damaged: Vec<(Piece, Offset, Offset)>) {
        let mut state = self.state();
        for (piece, lo, hi) in damaged {
            // Only if the offsets still live where they were read: a copy
            // re-stored meanwhile is a good one.
            let still_there = state
                .index
                .pieces(loglet, lo, hi)
                .iter()
                .all(|p| p.at == piece.at);
            if !still_there {
                continue;
            }
            warn!(%loglet, lo, hi, segment = piece.at.segment, pos = piece.at.pos, "damaged record(s) dropped; a peer's copy is needed");
            self.shared.damaged.fetch_add(hi - lo, Ordering::Relaxed);
            for o in lo..hi.min(lo + RECENT_DAMAGE as Offset) {
                if state.recent_damage.len() == RECENT_DAMAGE {
                    state.recent_damage.pop_front();
                }
                state.recent_damage.push_back((loglet, o));
            }
            for o in lo..hi {
                state.damaged.insert((loglet, o));
            }
            for seg in state.index.remove_range(loglet, lo, hi) {
                self.delete_segment(&mut state, seg);
            }
        }
    }

    /// Offsets of `[from, to)` found damaged here and not stored again since.
    pub fn damaged_in(&self, loglet: LogletId, from: Offset, to: Offset) -> Vec<Offset> {
        if from >= to {
            return Vec::new();
        }
        self.state()
            .damaged
            .range((loglet, from)..(loglet, to))
            .map(|(_, o)| *o)
            .collect()
    }

    /// Why this server may lack records it cannot name, if it may.
    pub fn suspect(&self) -> Option<String> {
        self.shared.suspect.clone()
    }

    /// One past the highest offset held for `loglet` (0 if none).
    pub fn local_tail(&self, loglet: LogletId) -> Offset {
        self.state().index.local_tail(loglet)
    }

    /// End of the run of held offsets starting at `from`.
    pub fn contiguous_end(&self, loglet: LogletId, from: Offset) -> Offset {
        self.state().index.contiguous_end(loglet, from)
    }

    /// Forgets the offsets below `below`; deletes segments left with nothing.
    pub fn trim(&self, loglet: LogletId, below: Offset) {
        let mut state = self.state();
        let gone: Vec<_> = state
            .damaged
            .range((loglet, 0)..(loglet, below))
            .copied()
            .collect();
        for d in gone {
            state.damaged.remove(&d);
        }
        for seg in state.index.remove_range(loglet, 0, below) {
            self.delete_segment(&mut state, seg);
        }
    }

    /// Forgets every record of `loglet`.
    pub fn forget(&self, loglet: LogletId) {
        let mut state = self.state();
        let gone: Vec<_> = state
            .damaged
            .range((loglet, 0)..=(loglet, Offset::MAX))
            .copied()
            .collect();
        for d in gone {
            state.damaged.remove(&d);
        }
        for seg in state.index.forget(loglet) {
            self.delete_segment(&mut state, seg);
        }
    }

    fn delete_segment(&self, state: &mut State, seq: u64) {
        if seq == state.active {
            return;
        }
        state.files.remove(&seq);
        state.dirty.remove(&seq);
        let path = segment_path(&self.shared.dir, seq);
        if let Err(e) = std::fs::remove_file(&path) {
            warn!(path = %path.display(), "could not delete a trimmed segment: {e}");
        }
    }

    pub fn stats(&self) -> RecordLogStats {
        let state = self.state();
        let bytes_on_disk = state
            .files
            .keys()
            .map(|s| std::fs::metadata(segment_path(&self.shared.dir, *s)).map_or(0, |m| m.len()))
            .sum();
        RecordLogStats {
            segments: state.files.len(),
            bytes_on_disk,
            damaged_records: self.shared.damaged.load(Ordering::Relaxed),
            recent_damage: state
                .recent_damage
                .iter()
                .map(|(l, o)| format!("{l}/{o}"))
                .collect(),
            unrepaired: state.damaged.len(),
            suspect: self.shared.suspect.clone(),
        }
    }

    /// Damaged records found since open.
    pub fn damaged_records(&self) -> u64 {
        self.shared.damaged.load(Ordering::Relaxed)
    }

    /// The directory holding the segments (tests flip bytes in it).
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

/// Creates segment `seq` with its header written (synced with the segment's
/// first `fdatasync`; the caller syncs the directory).
fn create_segment(dir: &Path, seq: u64) -> Result<File> {
    let path = segment_path(dir, seq);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_err(format_args!("creating {}", path.display()), e))?;
    file.write_all_at(&format::encode_file_header(seq), 0)
        .map_err(|e| io_err(format_args!("writing {}", path.display()), e))?;
    file.sync_data()
        .map_err(|e| io_err(format_args!("syncing {}", path.display()), e))?;
    Ok(file)
}

/// Indexes the entries of one segment. A torn entry at the end (a crash
/// mid-write) ends the scan quietly; a damaged header followed by intact
/// entries is skipped to the next intact one and counted.
fn scan_segment(
    seq: u64,
    bytes: &[u8],
    index: &mut Index,
    report: &mut OpenReport,
) -> std::result::Result<(), String> {
    let found = format::decode_file_header(bytes)?;
    if found != seq {
        return Err(format!("header says segment {found}"));
    }
    let len = bytes.len() as u64;
    let mut pos = format::FILE_HEADER_LEN as u64;
    while pos < len {
        match format::decode_entry_header(&bytes[pos as usize..]) {
            Ok(h)
                if pos + h.entry_len() <= len
                    && h.count > 0
                    && h.first.checked_add(h.count as Offset).is_some() =>
            {
                let at = Location {
                    segment: seq,
                    pos,
                    len: h.entry_len(),
                };
                index.insert_over(
                    h.loglet,
                    Piece {
                        lo: h.first,
                        hi: h.end(),
                        at,
                    },
                );
                report.entries += 1;
                pos += h.entry_len();
            }
            Ok(h) if pos + h.entry_len() > len => {
                report.torn_bytes += len - pos;
                break;
            }
            Err(HeaderError::Short) => {
                report.torn_bytes += len - pos;
                break;
            }
            _ => match next_intact_entry(bytes, pos + 1) {
                Some(next) => {
                    report.damaged_bytes += next - pos;
                    pos = next;
                }
                None => {
                    // Nothing intact after it: a torn tail, not damage.
                    report.torn_bytes += len - pos;
                    break;
                }
            },
        }
    }
    Ok(())
}

/// The position of the next entry with an intact header at or after `from`.
fn next_intact_entry(bytes: &[u8], from: u64) -> Option<u64> {
    let magic = format::ENTRY_MAGIC.to_be_bytes();
    let mut pos = from as usize;
    while pos + format::ENTRY_HEADER_LEN <= bytes.len() {
        if bytes[pos..pos + 4] == magic {
            if let Ok(h) = format::decode_entry_header(&bytes[pos..]) {
                if pos as u64 + h.entry_len() <= bytes.len() as u64 {
                    return Some(pos as u64);
                }
            }
        }
        pos += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LogId;

    fn recs(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
        range.map(|o| format!("record-{o}").into_bytes()).collect()
    }

    fn offsets(log: &RecordLog, l: LogletId) -> Vec<Offset> {
        log.read(l, 0, Offset::MAX, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(o, r)| {
                assert_eq!(r, format!("record-{o}").into_bytes());
                o
            })
            .collect()
    }

    fn open(dir: &Path) -> RecordLog {
        RecordLog::open(dir, &HashMap::new()).unwrap().0
    }

    #[test]
    fn synced_records_are_found_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let l = LogletId::new(LogId(1), 0);
        {
            let log = open(dir.path());
            log.put(l, 0, &recs(0..5)).unwrap();
            log.put(l, 5, &recs(5..8)).unwrap();
            log.sync().unwrap();
        }
        let log = open(dir.path());
        assert_eq!(offsets(&log, l), (0..8).collect::<Vec<_>>());
        assert_eq!(log.local_tail(l), 8);
        assert_eq!(log.contiguous_end(l, 2), 8);
        // Every open starts a new segment; the old one still serves reads.
        log.put(l, 8, &recs(8..9)).unwrap();
        assert_eq!(offsets(&log, l), (0..9).collect::<Vec<_>>());
    }

    #[test]
    fn overlapping_puts_fill_only_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let l = LogletId::new(LogId(2), 1);
        log.put(l, 2, &recs(2..4)).unwrap();
        log.put(l, 6, &recs(6..8)).unwrap();
        log.put(l, 0, &recs(0..10)).unwrap();
        assert_eq!(offsets(&log, l), (0..10).collect::<Vec<_>>());
        let before = log.stats().bytes_on_disk;
        log.put(l, 3, &recs(3..7)).unwrap();
        assert_eq!(log.stats().bytes_on_disk, before, "a resend writes nothing");
        // Byte budget: at least one record, then stop before exceeding it.
        let got = log.read(l, 0, 10, 9).unwrap();
        assert_eq!(got.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![0]);
        let got = log.read(l, 0, 10, 0).unwrap();
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn trim_is_exact_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let l = LogletId::new(LogId(3), 0);
        let other = LogletId::new(LogId(3), 1);
        {
            let log = open(dir.path());
            log.put(l, 0, &recs(0..10)).unwrap();
            log.put(other, 0, &recs(0..3)).unwrap();
            log.trim(l, 4);
            assert_eq!(offsets(&log, l), (4..10).collect::<Vec<_>>());
            log.sync().unwrap();
        }
        // The trim point is the caller's to keep; reopening without it finds
        // the records again, with it they stay gone.
        let log = RecordLog::open(dir.path(), &HashMap::from([(l, 4)]))
            .unwrap()
            .0;
        assert_eq!(offsets(&log, l), (4..10).collect::<Vec<_>>());
        assert_eq!(offsets(&log, other), vec![0, 1, 2]);
    }

    #[test]
    fn fully_trimmed_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let l = LogletId::new(LogId(4), 0);
        {
            let log = open(dir.path());
            log.put(l, 0, &recs(0..3)).unwrap();
            log.sync().unwrap();
        }
        let log = open(dir.path());
        assert_eq!(log.stats().segments, 2);
        log.put(l, 3, &recs(3..4)).unwrap();
        log.trim(l, 3);
        assert_eq!(
            log.stats().segments,
            1,
            "the first segment held only trimmed records"
        );
        assert_eq!(offsets(&log, l), vec![3]);
    }

    #[test]
    fn a_flipped_byte_loses_one_record_and_a_restore_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let l = LogletId::new(LogId(5), 0);
        {
            let log = open(dir.path());
            log.put(l, 0, &recs(0..5)).unwrap();
            log.sync().unwrap();
        }
        // Flip one byte inside record 2's bytes.
        let seg = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        let needle = b"record-2";
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        bytes[at + 3] ^= 0x20;
        std::fs::write(&seg, &bytes).unwrap();

        let log = open(dir.path());
        assert_eq!(
            offsets(&log, l),
            vec![0, 1, 3, 4],
            "the damaged record is missing"
        );
        assert_eq!(log.damaged_records(), 1);
        assert_eq!(log.stats().recent_damage, vec![format!("{l}/2")]);
        assert_eq!(log.contiguous_end(l, 0), 2);
        assert_eq!(
            log.damaged_in(l, 0, 10),
            vec![2],
            "known lost until repaired"
        );
        // A repair from a peer's good copy fills exactly the hole.
        log.put(l, 0, &recs(0..5)).unwrap();
        assert!(log.damaged_in(l, 0, 10).is_empty());
        assert_eq!(offsets(&log, l), (0..5).collect::<Vec<_>>());
        log.sync().unwrap();
        drop(log);
        // After a reopen the later, good copy wins over the damaged one.
        let log = open(dir.path());
        assert_eq!(offsets(&log, l), (0..5).collect::<Vec<_>>());
        assert_eq!(log.damaged_records(), 0);
    }

    #[test]
    fn a_damaged_header_skips_one_entry_and_a_torn_tail_is_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let l = LogletId::new(LogId(6), 0);
        {
            let log = open(dir.path());
            log.put(l, 0, &recs(0..2)).unwrap();
            log.put(l, 2, &recs(2..4)).unwrap();
            log.put(l, 4, &recs(4..6)).unwrap();
            log.sync().unwrap();
        }
        let seg = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        let second = format::FILE_HEADER_LEN
            + format::decode_entry_header(&bytes[format::FILE_HEADER_LEN..])
                .unwrap()
                .entry_len() as usize;
        // One header copy damaged: still attributed, nothing lost.
        let mut one = bytes.clone();
        one[second + 17] ^= 0xff;
        std::fs::write(&seg, &one).unwrap();
        let (log, report) = RecordLog::open(dir.path(), &HashMap::new()).unwrap();
        assert_eq!(offsets(&log, l), (0..6).collect::<Vec<_>>());
        assert_eq!(report.damaged_bytes, 0);
        assert!(log.suspect().is_none());
        drop(log);
        // Both copies: the entry's records cannot be named.
        bytes[second + 17] ^= 0xff; // inside the second entry's `first`
        bytes[second + format::HEADER_COPY_LEN + 17] ^= 0xff;
        // And a torn write after the last entry.
        let torn = format::encode_entry(l, 6, &recs(6..7)).unwrap();
        bytes.extend_from_slice(&torn[..torn.len() - 3]);
        std::fs::write(&seg, &bytes).unwrap();

        let (log, report) = RecordLog::open(dir.path(), &HashMap::new()).unwrap();
        assert_eq!(offsets(&log, l), vec![0, 1, 4, 5]);
        assert_eq!(report.entries, 2);
        assert!(report.damaged_bytes > 0);
        assert_eq!(report.torn_bytes, torn.len() as u64 - 3);
        // This server cannot say what it lost: it is suspect, durably.
        assert!(log.suspect().is_some());
        drop(log);
        let log = open(dir.path());
        assert!(
            log.suspect().unwrap().contains("unattributable"),
            "{:?}",
            log.suspect()
        );
    }

    #[test]
    fn offsets_that_overflow_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let l = LogletId::new(LogId(7), 0);
        assert!(matches!(
            log.put(l, u64::MAX - 1, &recs(0..3)),
            Err(StorageError::Invalid(_))
        ));
        assert_eq!(log.local_tail(l), 0);
        assert!(log.read(l, u64::MAX, 0, 10).unwrap().is_empty());
    }

    #[test]
    fn segments_roll_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let l = LogletId::new(LogId(8), 0);
        let big = vec![vec![7u8; 1024 * 1024]; 8];
        let mut first = 0;
        for _ in 0..9 {
            log.put(l, first, &big).unwrap();
            first += big.len() as u64;
        }
        assert!(log.stats().segments >= 2);
        log.sync().unwrap();
        drop(log);
        let log = open(dir.path());
        assert_eq!(log.local_tail(l), first);
        assert_eq!(log.contiguous_end(l, 0), first);
        let r = log.read(l, first - 1, first, usize::MAX).unwrap();
        assert_eq!(r[0].1, vec![7u8; 1024 * 1024]);
    }
}
