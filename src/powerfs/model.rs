//! The pure model of what a disk keeps across a power loss: for every inode a
//! durable state and a volatile (current) one. No FUSE and no I/O here; the
//! file system layer asks the model what to do and performs it on the backing
//! directory.
//!
//! Rules (the minimum a real disk with ext4 guarantees):
//! - A file's data and size (write, truncate, fallocate) are volatile until
//!   that file is fsynced (fsync and fdatasync alike, through any handle).
//! - A directory entry (create, mkdir, unlink, rmdir, rename) is volatile until
//!   the directory holding it is fsynced. A rename becomes durable on both
//!   sides at once when either directory is fsynced; so do the renames it
//!   depends on (see [`Model::fsyncdir`]).
//! - Reads, attributes and listings see the current (volatile) view.
//! - [`Model::power_loss`] drops every volatile change: the view becomes the
//!   durable state, optionally with a torn prefix of the most recent unsynced
//!   write, and every handle opened before it answers EIO from then on.
//!
//! File data that is durable lives outside the model (in the backing files):
//! the model only knows each file's durable size, and reads answer with
//! [`Segment::Durable`] where those bytes are to be read from.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

use super::extents::Extents;

/// An inode number; also the FUSE node id.
pub type Ino = u64;
/// A file handle number.
pub type Fh = u64;
/// The root directory's inode.
pub const ROOT: Ino = 1;
/// Largest file size and offset accepted (what `off_t` can express).
pub const MAX_SIZE: u64 = i64::MAX as u64;
/// Longest file name accepted.
pub const NAME_MAX: usize = 255;

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// Why an operation was refused; each maps to one errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    /// ENOENT.
    #[error("no such file or directory")]
    NotFound,
    /// EEXIST.
    #[error("file exists")]
    Exists,
    /// ENOTDIR.
    #[error("not a directory")]
    NotDir,
    /// EISDIR.
    #[error("is a directory")]
    IsDir,
    /// ENOTEMPTY.
    #[error("directory not empty")]
    NotEmpty,
    /// EINVAL.
    #[error("invalid argument")]
    Invalid,
    /// EIO: the handle was opened before a power loss.
    #[error("handle opened before the last power loss")]
    Stale,
    /// EBADF.
    #[error("bad file handle")]
    BadHandle,
    /// ENAMETOOLONG.
    #[error("file name too long")]
    NameTooLong,
    /// EFBIG.
    #[error("file too large")]
    TooBig,
    /// EOPNOTSUPP.
    #[error("operation not supported")]
    Unsupported,
    /// EIO: the backing directory failed.
    #[error("backing store I/O error")]
    Io,
}

impl FsError {
    /// The errno to answer with.
    pub fn errno(self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::Invalid => libc::EINVAL,
            FsError::Stale | FsError::Io => libc::EIO,
            FsError::BadHandle => libc::EBADF,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::TooBig => libc::EFBIG,
            FsError::Unsupported => libc::EOPNOTSUPP,
        }
    }
}

/// Result of a model operation.
pub type FsResult<T> = Result<T, FsError>;

/// Metadata kept in memory only: not part of the durability model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (`0o7777` mask).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last access.
    pub atime: SystemTime,
    /// Last data change.
    pub mtime: SystemTime,
    /// Last status change.
    pub ctime: SystemTime,
}

impl Meta {
    /// Metadata of a new inode created at `now`.
    pub fn new(perm: u16, uid: u32, gid: u32, now: SystemTime) -> Self {
        Meta {
            perm,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
        }
    }
}

/// An inode's attributes as the current view sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// File or directory.
    pub kind: Kind,
    /// Current size (directories: 0).
    pub size: u64,
    /// Current link count.
    pub nlink: u32,
    /// In-memory metadata.
    pub meta: Meta,
}

/// One piece of a read, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'a> {
    /// Volatile bytes held by the model.
    Data(&'a [u8]),
    /// `len` bytes of the durable content starting at `offset`: read them
    /// from the backing file.
    Durable {
        /// Offset in the backing file.
        offset: u64,
        /// Length to read.
        len: u64,
    },
    /// A hole: `len` zero bytes.
    Zeros(u64),
}

/// What a file fsync must apply to the file's durable content, borrowed from
/// the model; after applying it call [`Model::commit_sync`].
#[derive(Debug)]
pub struct SyncPlan<'a> {
    /// The file.
    pub ino: Ino,
    /// Shrink the durable content to this length first (a truncate happened
    /// since the last sync).
    pub truncate_to: Option<u64>,
    /// Volatile extents to write, in offset order.
    pub writes: Vec<(u64, &'a [u8])>,
    /// The size the durable content must have afterwards.
    pub size: u64,
    /// Whether there is anything to apply at all.
    pub dirty: bool,
}

/// The torn write a power loss applied to a file's durable content: the
/// layer must write `data` at `offset` of the backing file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TornWrite {
    /// The file.
    pub ino: Ino,
    /// Where the write started.
    pub offset: u64,
    /// The prefix that became durable (possibly empty).
    #[serde(skip)]
    pub data: Vec<u8>,
    /// How many bytes the write had.
    pub write_len: u64,
    /// How many of them were kept (`data.len()`).
    pub kept: u64,
}

/// What a power loss did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PowerLossReport {
    /// Volatile data bytes dropped (held unsynced writes).
    pub bytes_dropped: u64,
    /// Files whose data or size had unsynced changes.
    pub files_reverted: u64,
    /// Directories whose entries had unsynced changes.
    pub dirs_reverted: u64,
    /// Inodes that existed only in the volatile view and are gone.
    pub inodes_dropped: u64,
    /// Handles invalidated (they answer EIO from now on).
    pub handles_invalidated: u64,
    /// The torn write, if one was asked for and there was a candidate.
    pub torn: Option<TornWrite>,
}

/// Counters for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Write operations received.
    pub writes: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Data bytes currently held unsynced.
    pub bytes_unsynced: u64,
    /// Files with unsynced data or size changes.
    pub files_unsynced: u64,
    /// Directories with unsynced entry changes.
    pub dirs_unsynced: u64,
    /// File fsyncs (fsync and fdatasync).
    pub fsyncs: u64,
    /// Directory fsyncs.
    pub fsyncdirs: u64,
    /// Power losses so far.
    pub power_losses: u64,
    /// Data bytes dropped at the last power loss.
    pub bytes_dropped_last: u64,
    /// Live inodes.
    pub inodes: u64,
    /// Open handles (valid ones).
    pub open_handles: u64,
}

/// The last unsynced write of a file, kept for a torn write.
#[derive(Debug, Clone)]
struct LastWrite {
    /// Global order of writes: the largest wins.
    seq: u64,
    /// Where it started.
    offset: u64,
    /// Its bytes.
    data: Vec<u8>,
}

/// A regular file's two states.
#[derive(Debug, Clone)]
struct FileData {
    /// Size of the durable content (the backing file's length).
    durable_size: u64,
    /// How much of the durable content the current view still shows at the
    /// bottom: a truncate since the last sync lowers it; bytes past it read
    /// as zeros unless overwritten.
    base_len: u64,
    /// Current size.
    size: u64,
    /// Volatile bytes written since the last sync.
    overlay: Extents,
    /// The most recent unsynced write, the torn-write candidate.
    last_write: Option<LastWrite>,
    /// Current directory entries naming this file.
    nlink: u32,
}

impl FileData {
    fn new(durable_size: u64) -> Self {
        FileData {
            durable_size,
            base_len: durable_size,
            size: durable_size,
            overlay: Extents::new(),
            last_write: None,
            nlink: 0,
        }
    }

    fn dirty(&self) -> bool {
        !self.overlay.is_empty()
            || self.size != self.durable_size
            || self.base_len != self.durable_size
    }

    fn revert(&mut self) {
        self.overlay.clear();
        self.size = self.durable_size;
        self.base_len = self.durable_size;
        self.last_write = None;
    }
}

/// A directory's two states.
#[derive(Debug, Clone, Default)]
struct DirData {
    /// Entries in the current view.
    entries: BTreeMap<OsString, Ino>,
    /// Entries as they would be found after a power loss.
    durable: BTreeMap<OsString, Ino>,
    /// Parent in the current view (the root is its own parent).
    parent: Ino,
}

/// What an inode holds, by kind.
#[derive(Debug, Clone)]
enum Body {
    /// A regular file's data states.
    File(FileData),
    /// A directory's entry states.
    Dir(DirData),
}

/// One inode.
#[derive(Debug, Clone)]
struct Inode {
    /// Mode, owner and times (in memory only).
    meta: Meta,
    /// Its file or directory state.
    body: Body,
}

impl Inode {
    fn kind(&self) -> Kind {
        match self.body {
            Body::File(_) => Kind::File,
            Body::Dir(_) => Kind::Dir,
        }
    }
}

/// One directory entry: (directory, name).
type Entry = (Ino, OsString);

/// A rename not yet made durable.
#[derive(Debug, Clone)]
struct PendingRename {
    /// Where the inode was.
    src: Entry,
    /// Where it went.
    dst: Entry,
    /// Whether it moved a directory (those are made durable together).
    is_dir: bool,
}

/// An open handle.
#[derive(Debug, Clone, Copy)]
struct Handle {
    /// The inode it was opened on.
    ino: Ino,
    /// The power-loss count when it was opened; older ones are stale.
    epoch: u64,
}

/// The whole model.
#[derive(Debug, Clone)]
pub struct Model {
    /// Every live inode.
    inodes: HashMap<Ino, Inode>,
    /// Next inode number; never reused, so the kernel's cached node ids
    /// never alias.
    next_ino: Ino,
    /// Open handles, valid and stale.
    handles: HashMap<Fh, Handle>,
    /// Next handle number.
    next_fh: Fh,
    /// Power losses so far; a handle from an older epoch is stale.
    epoch: u64,
    /// Renames not yet made durable, oldest first.
    pending_renames: Vec<PendingRename>,
    /// Order of writes, for the torn-write candidate.
    write_seq: u64,
    /// Counters.
    stats: Stats,
    /// Inodes forgotten since the layer last asked (it deletes their
    /// staged backing files).
    dropped: Vec<Ino>,
}

/// Checks a name the kernel handed us.
pub fn check_name(name: &OsStr) -> FsResult<()> {
    use std::os::unix::ffi::OsStrExt;
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(FsError::Invalid);
    }
    if b.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    Ok(())
}

impl Model {
    /// An empty file system whose root has `root_meta`; everything durable.
    pub fn new(root_meta: Meta) -> Self {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT,
            Inode {
                meta: root_meta,
                body: Body::Dir(DirData {
                    parent: ROOT,
                    ..DirData::default()
                }),
            },
        );
        Model {
            inodes,
            next_ino: ROOT + 1,
            handles: HashMap::new(),
            next_fh: 1,
            epoch: 0,
            pending_renames: Vec::new(),
            write_seq: 0,
            stats: Stats::default(),
            dropped: Vec::new(),
        }
    }

    fn dir(&self, ino: Ino) -> FsResult<&DirData> {
        match self.inodes.get(&ino).map(|i| &i.body) {
            Some(Body::Dir(d)) => Ok(d),
            Some(Body::File(_)) => Err(FsError::NotDir),
            None => Err(FsError::NotFound),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> FsResult<&mut DirData> {
        match self.inodes.get_mut(&ino).map(|i| &mut i.body) {
            Some(Body::Dir(d)) => Ok(d),
            Some(Body::File(_)) => Err(FsError::NotDir),
            None => Err(FsError::NotFound),
        }
    }

    fn file(&self, ino: Ino) -> FsResult<&FileData> {
        match self.inodes.get(&ino).map(|i| &i.body) {
            Some(Body::File(f)) => Ok(f),
            Some(Body::Dir(_)) => Err(FsError::IsDir),
            None => Err(FsError::NotFound),
        }
    }

    fn file_mut(&mut self, ino: Ino) -> FsResult<&mut FileData> {
        match self.inodes.get_mut(&ino).map(|i| &mut i.body) {
            Some(Body::File(f)) => Ok(f),
            Some(Body::Dir(_)) => Err(FsError::IsDir),
            None => Err(FsError::NotFound),
        }
    }

    fn alloc_ino(&mut self) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    // ----- loading what the backing directory already holds -----

    /// Adds an existing, durable directory (when loading the backing dir).
    pub fn load_dir(&mut self, parent: Ino, name: &OsStr, meta: Meta) -> FsResult<Ino> {
        self.load(parent, name, meta, None)
    }

    /// Adds an existing, durable file of `size` bytes (when loading the
    /// backing dir).
    pub fn load_file(&mut self, parent: Ino, name: &OsStr, size: u64, meta: Meta) -> FsResult<Ino> {
        self.load(parent, name, meta, Some(size))
    }

    fn load(&mut self, parent: Ino, name: &OsStr, meta: Meta, size: Option<u64>) -> FsResult<Ino> {
        check_name(name)?;
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(FsError::Exists);
        }
        let ino = self.alloc_ino();
        let body = match size {
            Some(s) => {
                let mut f = FileData::new(s);
                f.nlink = 1;
                Body::File(f)
            }
            None => Body::Dir(DirData {
                parent,
                ..DirData::default()
            }),
        };
        self.inodes.insert(ino, Inode { meta, body });
        let d = self.dir_mut(parent)?;
        d.entries.insert(name.to_owned(), ino);
        d.durable.insert(name.to_owned(), ino);
        Ok(ino)
    }

    // ----- the current view -----

    /// Looks `name` up in directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> FsResult<Ino> {
        self.dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or(FsError::NotFound)
    }

    /// What `ino` is.
    pub fn kind(&self, ino: Ino) -> FsResult<Kind> {
        self.inodes
            .get(&ino)
            .map(Inode::kind)
            .ok_or(FsError::NotFound)
    }

    /// Attributes in the current view.
    pub fn attr(&self, ino: Ino) -> FsResult<Attr> {
        let i = self.inodes.get(&ino).ok_or(FsError::NotFound)?;
        let (size, nlink) = match &i.body {
            Body::File(f) => (f.size, f.nlink),
            Body::Dir(d) => {
                let subdirs = d
                    .entries
                    .values()
                    .filter(|c| matches!(self.kind(**c), Ok(Kind::Dir)))
                    .count();
                (0, 2 + subdirs as u32)
            }
        };
        Ok(Attr {
            ino,
            kind: i.kind(),
            size,
            nlink,
            meta: i.meta,
        })
    }

    /// Mutable in-memory metadata (mode, owner, times).
    pub fn meta_mut(&mut self, ino: Ino) -> FsResult<&mut Meta> {
        self.inodes
            .get_mut(&ino)
            .map(|i| &mut i.meta)
            .ok_or(FsError::NotFound)
    }

    /// The current entries of a directory, in name order, with their kinds.
    pub fn readdir(&self, dir: Ino) -> FsResult<Vec<(OsString, Ino, Kind)>> {
        let d = self.dir(dir)?;
        Ok(d.entries
            .iter()
            .filter_map(|(n, &i)| self.kind(i).ok().map(|k| (n.clone(), i, k)))
            .collect())
    }

    /// A directory's current parent.
    pub fn parent(&self, dir: Ino) -> FsResult<Ino> {
        Ok(self.dir(dir)?.parent)
    }

    // ----- namespace changes (volatile until the directory is synced) -----

    /// Creates a file or directory `name` in `parent`.
    pub fn create(&mut self, parent: Ino, name: &OsStr, kind: Kind, meta: Meta) -> FsResult<Ino> {
        check_name(name)?;
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(FsError::Exists);
        }
        let ino = self.alloc_ino();
        let body = match kind {
            Kind::File => {
                let mut f = FileData::new(0);
                f.nlink = 1;
                Body::File(f)
            }
            Kind::Dir => Body::Dir(DirData {
                parent,
                ..DirData::default()
            }),
        };
        self.inodes.insert(ino, Inode { meta, body });
        self.dir_mut(parent)?.entries.insert(name.to_owned(), ino);
        self.touch_dir(parent, meta.ctime);
        Ok(ino)
    }

    fn touch_dir(&mut self, dir: Ino, now: SystemTime) {
        if let Some(i) = self.inodes.get_mut(&dir) {
            i.meta.mtime = now;
            i.meta.ctime = now;
        }
    }

    /// Removes the file entry `name` from `parent`.
    pub fn unlink(&mut self, parent: Ino, name: &OsStr, now: SystemTime) -> FsResult<()> {
        let ino = self.lookup(parent, name)?;
        self.file(ino)?;
        self.dir_mut(parent)?.entries.remove(name);
        self.unlinked(ino);
        self.touch_dir(parent, now);
        self.collect_garbage();
        Ok(())
    }

    fn unlinked(&mut self, ino: Ino) {
        if let Ok(f) = self.file_mut(ino) {
            f.nlink = f.nlink.saturating_sub(1);
        }
    }

    /// Removes the empty directory `name` from `parent`.
    pub fn rmdir(&mut self, parent: Ino, name: &OsStr, now: SystemTime) -> FsResult<()> {
        let ino = self.lookup(parent, name)?;
        if !self.dir(ino)?.entries.is_empty() {
            return Err(FsError::NotEmpty);
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.touch_dir(parent, now);
        self.collect_garbage();
        Ok(())
    }

    /// Whether `dir` is `ancestor` or lies below it in the current view.
    fn is_within(&self, mut dir: Ino, ancestor: Ino) -> bool {
        // The current tree is acyclic; bound the walk anyway.
        for _ in 0..=self.inodes.len() {
            if dir == ancestor {
                return true;
            }
            match self.dir(dir) {
                Ok(d) if d.parent != dir => dir = d.parent,
                _ => return false,
            }
        }
        false
    }

    /// Renames `parent/name` to `new_parent/new_name`, replacing a
    /// compatible target (`noreplace`: fail with EEXIST instead).
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        noreplace: bool,
        now: SystemTime,
    ) -> FsResult<()> {
        check_name(new_name)?;
        let ino = self.lookup(parent, name)?;
        self.dir(new_parent)?;
        let kind = self.kind(ino)?;
        let target = self.dir(new_parent)?.entries.get(new_name).copied();
        if let Some(t) = target {
            if noreplace {
                return Err(FsError::Exists);
            }
            if t == ino {
                return Ok(());
            }
            match (kind, self.kind(t)?) {
                (Kind::Dir, Kind::Dir) => {
                    if !self.dir(t)?.entries.is_empty() {
                        return Err(FsError::NotEmpty);
                    }
                }
                (Kind::Dir, Kind::File) => return Err(FsError::NotDir),
                (Kind::File, Kind::Dir) => return Err(FsError::IsDir),
                (Kind::File, Kind::File) => {}
            }
        }
        if kind == Kind::Dir && self.is_within(new_parent, ino) {
            return Err(FsError::Invalid);
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.dir_mut(new_parent)?
            .entries
            .insert(new_name.to_owned(), ino);
        if let Some(t) = target {
            self.unlinked(t);
        }
        if kind == Kind::Dir {
            self.dir_mut(ino)?.parent = new_parent;
        }
        self.pending_renames.push(PendingRename {
            src: (parent, name.to_owned()),
            dst: (new_parent, new_name.to_owned()),
            is_dir: kind == Kind::Dir,
        });
        self.touch_dir(parent, now);
        self.touch_dir(new_parent, now);
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.meta.ctime = now;
        }
        self.collect_garbage();
        Ok(())
    }

    // ----- handles -----

    /// Opens a handle on `ino` (file or directory).
    pub fn open(&mut self, ino: Ino) -> FsResult<Fh> {
        if !self.inodes.contains_key(&ino) {
            return Err(FsError::NotFound);
        }
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(
            fh,
            Handle {
                ino,
                epoch: self.epoch,
            },
        );
        Ok(fh)
    }

    /// The inode a valid handle is open on (EIO for a handle from before a
    /// power loss, EBADF for one never opened).
    pub fn handle(&self, fh: Fh) -> FsResult<Ino> {
        match self.handles.get(&fh) {
            Some(h) if h.epoch == self.epoch => Ok(h.ino),
            Some(_) => Err(FsError::Stale),
            None => Err(FsError::BadHandle),
        }
    }

    /// Closes a handle, valid or stale.
    pub fn release(&mut self, fh: Fh) {
        if let Some(h) = self.handles.remove(&fh) {
            let unlinked = matches!(self.file(h.ino), Ok(f) if f.nlink == 0);
            if unlinked || self.kind(h.ino) == Ok(Kind::Dir) {
                self.collect_garbage();
            }
        }
    }

    // ----- file data (volatile until the file is synced) -----

    /// Reads up to `len` bytes at `offset` of the file open as `fh`.
    pub fn read(&self, fh: Fh, offset: u64, len: u64) -> FsResult<Vec<Segment<'_>>> {
        let ino = self.handle(fh)?;
        let f = self.file(ino)?;
        if offset >= f.size {
            return Ok(Vec::new());
        }
        let end = f.size.min(offset.saturating_add(len));
        let mut out = Vec::new();
        let mut pos = offset;
        let fill = |out: &mut Vec<Segment<'_>>, from: u64, to: u64| {
            // The gap [from, to) is not overlaid: durable bytes, then zeros.
            if from >= to {
                return;
            }
            let durable_end = f.base_len.min(to);
            if from < durable_end {
                out.push(Segment::Durable {
                    offset: from,
                    len: durable_end - from,
                });
            }
            let zeros_from = from.max(durable_end);
            if zeros_from < to {
                out.push(Segment::Zeros(to - zeros_from));
            }
        };
        for (start, data) in f.overlay.overlapping(offset, end - offset) {
            fill(&mut out, pos, start);
            out.push(Segment::Data(data));
            pos = start + data.len() as u64;
        }
        fill(&mut out, pos, end);
        Ok(out)
    }

    /// Writes `data` at `offset` of the file open as `fh`.
    pub fn write(&mut self, fh: Fh, offset: u64, data: &[u8], now: SystemTime) -> FsResult<u32> {
        let ino = self.handle(fh)?;
        let len = u32::try_from(data.len()).map_err(|_| FsError::Invalid)?;
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= MAX_SIZE)
            .ok_or(FsError::TooBig)?;
        self.write_seq += 1;
        let seq = self.write_seq;
        let f = self.file_mut(ino)?;
        f.overlay.write(offset, data);
        f.size = f.size.max(end);
        // Reuse the previous candidate's buffer: appends replace it often.
        let mut buf = f.last_write.take().map(|w| w.data).unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        f.last_write = Some(LastWrite {
            seq,
            offset,
            data: buf,
        });
        self.stats.writes += 1;
        self.stats.bytes_written += data.len() as u64;
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.meta.mtime = now;
            i.meta.ctime = now;
        }
        Ok(len)
    }

    /// Sets the size of `ino` (truncate or extend with zeros).
    pub fn set_size(&mut self, ino: Ino, size: u64, now: SystemTime) -> FsResult<()> {
        if size > MAX_SIZE {
            return Err(FsError::TooBig);
        }
        let f = self.file_mut(ino)?;
        if size < f.size {
            f.overlay.truncate(size);
            f.base_len = f.base_len.min(size);
        }
        f.size = size;
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.meta.mtime = now;
            i.meta.ctime = now;
        }
        Ok(())
    }

    /// `fallocate`: mode 0 extends the size to cover the range; with
    /// `keep_size` nothing visible changes. Other modes are not supported.
    pub fn allocate(
        &mut self,
        fh: Fh,
        offset: u64,
        len: u64,
        keep_size: bool,
        now: SystemTime,
    ) -> FsResult<()> {
        let ino = self.handle(fh)?;
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= MAX_SIZE)
            .ok_or(FsError::TooBig)?;
        let size = self.file(ino)?.size;
        if !keep_size && end > size {
            self.set_size(ino, end, now)?;
        }
        Ok(())
    }

    /// What an fsync of the file open as `fh` must apply to its durable
    /// content. Counts the fsync. Apply it, then call [`Model::commit_sync`].
    pub fn sync_plan(&mut self, fh: Fh) -> FsResult<SyncPlan<'_>> {
        let ino = self.handle(fh)?;
        self.file(ino)?;
        self.stats.fsyncs += 1;
        let f = self.file(ino)?;
        Ok(SyncPlan {
            ino,
            truncate_to: (f.base_len < f.durable_size).then_some(f.base_len),
            writes: f.overlay.iter().collect(),
            size: f.size,
            dirty: f.dirty(),
        })
    }

    /// Records that the plan of [`Model::sync_plan`] for `ino` was applied:
    /// the current data and size are now durable.
    pub fn commit_sync(&mut self, ino: Ino) -> FsResult<()> {
        let f = self.file_mut(ino)?;
        f.durable_size = f.size;
        f.base_len = f.size;
        f.overlay.clear();
        f.last_write = None;
        Ok(())
    }

    /// A file's durable size (the length its backing file must have).
    pub fn durable_size(&self, ino: Ino) -> FsResult<u64> {
        Ok(self.file(ino)?.durable_size)
    }

    // ----- directory sync -----

    /// Makes the entries of the directory open as `fh` durable, and with them
    /// both sides of every pending rename into or out of it. Closure: a rename
    /// made durable drags in the pending renames that touched either of its
    /// entries (so a chain `a -> b -> c` never leaves the inode at both `a`
    /// and `c`), and a directory rename drags in every pending directory
    /// rename (so the durable tree never gains a cycle or loses a subtree).
    pub fn fsyncdir(&mut self, fh: Fh) -> FsResult<()> {
        let dir = self.handle(fh)?;
        self.dir(dir)?;
        self.stats.fsyncdirs += 1;
        let mut entries: HashSet<Entry> = HashSet::new();
        let mut all_dir_renames = false;
        let mut pending = std::mem::take(&mut self.pending_renames);
        loop {
            let touches = |e: &Entry, entries: &HashSet<Entry>| e.0 == dir || entries.contains(e);
            let (now_in, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|r| {
                touches(&r.src, &entries)
                    || touches(&r.dst, &entries)
                    || (all_dir_renames && r.is_dir)
            });
            pending = rest;
            if now_in.is_empty() {
                break;
            }
            for r in now_in {
                all_dir_renames |= r.is_dir;
                entries.insert(r.src);
                entries.insert(r.dst);
            }
        }
        self.pending_renames = pending;
        let d = self.dir_mut(dir)?;
        d.durable = d.entries.clone();
        for (parent, name) in entries {
            if parent == dir {
                continue;
            }
            if let Ok(d) = self.dir_mut(parent) {
                match d.entries.get(&name).copied() {
                    Some(i) => d.durable.insert(name, i),
                    None => d.durable.remove(&name),
                };
            }
        }
        self.collect_garbage();
        Ok(())
    }

    /// The durable tree: every inode reachable from the root through durable
    /// entries, with its (parent, name). The root is not listed.
    pub fn durable_positions(&self) -> HashMap<Ino, (Ino, OsString)> {
        let mut out = HashMap::new();
        let mut queue = VecDeque::from([ROOT]);
        let mut seen = HashSet::from([ROOT]);
        while let Some(d) = queue.pop_front() {
            let Ok(dd) = self.dir(d) else { continue };
            for (name, &child) in &dd.durable {
                if !self.inodes.contains_key(&child) || !seen.insert(child) {
                    continue;
                }
                out.insert(child, (d, name.clone()));
                if self.kind(child) == Ok(Kind::Dir) {
                    queue.push_back(child);
                }
            }
        }
        out
    }

    // ----- power loss -----

    /// Drops every volatile change. With `tear`, the most recent unsynced
    /// write of a file whose entry is durable has a prefix of its bytes
    /// (length chosen by the seed, possibly zero) made durable: the layer must
    /// write [`TornWrite::data`] to the backing file. Every handle open now
    /// answers EIO from then on.
    pub fn power_loss(&mut self, tear: Option<u64>) -> PowerLossReport {
        let positions = self.durable_positions();
        let torn = tear.and_then(|seed| {
            let (ino, w) = self
                .inodes
                .iter()
                .filter(|(ino, _)| positions.contains_key(ino))
                .filter_map(|(ino, i)| match &i.body {
                    Body::File(f) => f.last_write.as_ref().map(|w| (*ino, w)),
                    Body::Dir(_) => None,
                })
                .max_by_key(|(_, w)| w.seq)?;
            let kept = splitmix64(seed) % (w.data.len() as u64 + 1);
            Some(TornWrite {
                ino,
                offset: w.offset,
                data: w.data[..kept as usize].to_vec(),
                write_len: w.data.len() as u64,
                kept,
            })
        });
        let mut report = PowerLossReport {
            bytes_dropped: 0,
            files_reverted: 0,
            dirs_reverted: 0,
            inodes_dropped: 0,
            handles_invalidated: self
                .handles
                .values()
                .filter(|h| h.epoch == self.epoch)
                .count() as u64,
            torn: None,
        };
        for i in self.inodes.values_mut() {
            match &mut i.body {
                Body::File(f) => {
                    if f.dirty() {
                        report.files_reverted += 1;
                    }
                    report.bytes_dropped += f.overlay.bytes();
                    f.revert();
                    f.nlink = 0;
                }
                Body::Dir(d) => {
                    if d.entries != d.durable {
                        report.dirs_reverted += 1;
                    }
                    d.entries = d.durable.clone();
                }
            }
        }
        self.pending_renames.clear();
        self.epoch += 1;
        // Stale handles stay listed (they answer EIO) but keep nothing alive.
        // Recompute parents and link counts from the durable tree.
        for (&child, (parent, _)) in &positions {
            match self.inodes.get_mut(&child).map(|i| &mut i.body) {
                Some(Body::Dir(d)) => d.parent = *parent,
                Some(Body::File(f)) => f.nlink += 1,
                None => {}
            }
        }
        if let Some(t) = &torn {
            if let Ok(f) = self.file_mut(t.ino) {
                let end = t.offset + t.kept;
                if end > f.durable_size && t.kept > 0 {
                    f.durable_size = end;
                    f.revert();
                }
            }
        }
        let before = self.inodes.len();
        self.collect_garbage();
        report.inodes_dropped = (before - self.inodes.len()) as u64;
        self.stats.power_losses += 1;
        self.stats.bytes_dropped_last = report.bytes_dropped;
        report.torn = torn;
        report
    }

    /// Forgets inodes nothing can reach any more: not through current or
    /// durable entries from the root, nor through a valid handle.
    fn collect_garbage(&mut self) {
        let mut live: HashSet<Ino> = HashSet::from([ROOT]);
        let mut queue: VecDeque<Ino> = VecDeque::from([ROOT]);
        for h in self.handles.values() {
            if h.epoch == self.epoch && self.inodes.contains_key(&h.ino) && live.insert(h.ino) {
                queue.push_back(h.ino);
            }
        }
        while let Some(i) = queue.pop_front() {
            if let Ok(d) = self.dir(i) {
                for &c in d.entries.values().chain(d.durable.values()) {
                    if self.inodes.contains_key(&c) && live.insert(c) {
                        queue.push_back(c);
                    }
                }
            }
        }
        if live.len() == self.inodes.len() {
            return;
        }
        let dead: Vec<Ino> = self
            .inodes
            .keys()
            .copied()
            .filter(|i| !live.contains(i))
            .collect();
        for i in dead {
            self.inodes.remove(&i);
            self.dropped.push(i);
        }
        let inodes = &self.inodes;
        self.pending_renames
            .retain(|r| inodes.contains_key(&r.src.0) || inodes.contains_key(&r.dst.0));
    }

    /// Inodes forgotten since the last call (their staged backing files can
    /// go).
    pub fn take_dropped(&mut self) -> Vec<Ino> {
        std::mem::take(&mut self.dropped)
    }

    /// Counters, with the current unsynced totals.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.bytes_unsynced = 0;
        s.files_unsynced = 0;
        s.dirs_unsynced = 0;
        for i in self.inodes.values() {
            match &i.body {
                Body::File(f) => {
                    s.bytes_unsynced += f.overlay.bytes();
                    s.files_unsynced += u64::from(f.dirty());
                }
                Body::Dir(d) => s.dirs_unsynced += u64::from(d.entries != d.durable),
            }
        }
        s.inodes = self.inodes.len() as u64;
        s.open_handles = self
            .handles
            .values()
            .filter(|h| h.epoch == self.epoch)
            .count() as u64;
        s
    }
}

/// A fixed, version-independent mix of the seed (SplitMix64), so a seed picks
/// the same torn length on every build.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
