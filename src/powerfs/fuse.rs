//! The FUSE file system: kernel requests answered from the model, durable
//! bytes read from and synced to the backing directory.
//!
//! Kernel caching is kept out of the way so that every operation reaches the
//! model: every file is opened with `FOPEN_DIRECT_IO` (no page cache, so a
//! read after a power loss cannot be served from pages the power loss
//! dropped), entry and attribute timeouts are zero, and the kernel's
//! writeback cache (`FUSE_WRITEBACK_CACHE`) is never requested, so each
//! `write()` reaches the daemon before it returns and nothing is written
//! back behind our back. `sync_file_range` has no FUSE request at all, so it
//! makes nothing durable here, as on a real disk it does not make metadata
//! durable nor flush the drive's cache.
//!
//! Locks (`flock`, `fcntl`) are not implemented here: the kernel then
//! handles them locally, which is all a single-machine test needs.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::backing::{Backing, STAGING};
use super::model::{
    Attr, Fh, FsError, FsResult, Kind, Meta, Model, PowerLossReport, Segment, Stats, ROOT,
};

/// Entry and attribute timeout: zero, so the kernel asks every time.
const TTL: Duration = Duration::ZERO;

/// Model and backing directory, behind one lock.
#[derive(Debug)]
pub struct State {
    /// The durable/volatile model.
    pub model: Model,
    /// The backing directory.
    pub backing: Backing,
}

impl State {
    /// Deletes the staged bytes of inodes the model dropped.
    fn forget_dropped(&mut self) {
        let dropped = self.model.take_dropped();
        if let Err(e) = self.backing.forget(dropped) {
            tracing::warn!(error = %e, "powerfs: could not delete staged bytes of a dropped file");
        }
    }

    /// fsync of a file: apply its volatile data to the backing file, fsync
    /// that, then record it as durable.
    fn fsync(&mut self, fh: Fh) -> FsResult<()> {
        let plan = self.model.sync_plan(fh)?;
        let ino = plan.ino;
        if !plan.dirty {
            return Ok(());
        }
        if let Err(e) = self.backing.apply_sync(&plan) {
            tracing::error!(ino, error = %e, "powerfs: applying an fsync to the backing file failed");
            return Err(FsError::Io);
        }
        self.model.commit_sync(ino)
    }

    /// fsync of a directory: its entries (and the renames they drag in)
    /// become durable and the backing tree is rearranged to match.
    fn fsyncdir(&mut self, fh: Fh) -> FsResult<()> {
        self.model.fsyncdir(fh)?;
        let r = self.backing.reconcile(&self.model);
        self.forget_dropped();
        r.map_err(|e| {
            tracing::error!(error = %e, "powerfs: rearranging the backing directory failed");
            FsError::Io
        })
    }

    /// Drops every volatile change (see [`Model::power_loss`]).
    pub fn power_loss(&mut self, tear: Option<u64>) -> std::io::Result<PowerLossReport> {
        let report = self.model.power_loss(tear);
        let torn = report
            .torn
            .as_ref()
            .map(|t| self.backing.apply_torn(t))
            .transpose();
        self.forget_dropped();
        torn?;
        tracing::info!(
            bytes_dropped = report.bytes_dropped,
            files = report.files_reverted,
            dirs = report.dirs_reverted,
            torn = ?report.torn.as_ref().map(|t| (t.ino, t.offset, t.kept, t.write_len)),
            "powerfs: power loss"
        );
        Ok(report)
    }

    /// The model's counters.
    pub fn stats(&self) -> Stats {
        self.model.stats()
    }
}

/// State shared by the FUSE session and the handles that cut the power.
pub type Shared = Arc<Mutex<State>>;

/// Locks the shared state, surviving a panicked holder (the state stays
/// usable: every model operation leaves it consistent before it returns).
pub fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `fuser::Filesystem` over the shared state.
#[derive(Debug)]
pub struct PowerFsFs {
    /// Model and backing directory.
    pub shared: Shared,
}

fn err(e: FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.meta.atime,
        mtime: a.meta.mtime,
        ctime: a.meta.ctime,
        crtime: a.meta.ctime,
        kind: file_type(a.kind),
        perm: a.meta.perm,
        nlink: a.nlink,
        uid: a.meta.uid,
        gid: a.meta.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// The root's staging directory is not part of the mounted view.
fn reserved(parent: INodeNo, name: &OsStr) -> bool {
    parent.0 == ROOT && name == STAGING
}

impl PowerFsFs {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    fn new_node(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        umask: u32,
    ) -> FsResult<Attr> {
        if reserved(parent, name) {
            return Err(FsError::Exists);
        }
        let perm = (mode & !umask & 0o7777) as u16;
        let meta = Meta::new(perm, req.uid(), req.gid(), SystemTime::now());
        let mut s = self.state();
        let ino = s.model.create(parent.0, name, kind, meta)?;
        s.model.attr(ino)
    }
}

impl Filesystem for PowerFsFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if reserved(parent, name) {
            return reply.error(Errno::ENOENT);
        }
        let s = self.state();
        match s.model.lookup(parent.0, name).and_then(|i| s.model.attr(i)) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = self.state();
        let r = fh
            .map_or(Ok(ino.0), |fh| s.model.handle(fh.0))
            .and_then(|_| s.model.attr(ino.0));
        match r {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.state();
        let now = SystemTime::now();
        let r = (|| {
            if let Some(fh) = fh {
                s.model.handle(fh.0)?;
            }
            s.model.attr(ino.0)?;
            if let Some(size) = size {
                s.model.set_size(ino.0, size, now)?;
            }
            let m = s.model.meta_mut(ino.0)?;
            if let Some(mode) = mode {
                m.perm = (mode & 0o7777) as u16;
            }
            if let Some(uid) = uid {
                m.uid = uid;
            }
            if let Some(gid) = gid {
                m.gid = gid;
            }
            if let Some(t) = atime {
                m.atime = time(t);
            }
            if let Some(t) = mtime {
                m.mtime = time(t);
            }
            m.ctime = now;
            s.model.attr(ino.0)
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        match self.new_node(req, parent, name, Kind::File, mode, umask) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.new_node(req, parent, name, Kind::Dir, mode, umask) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if reserved(parent, name) {
            return reply.error(Errno::ENOENT);
        }
        let mut s = self.state();
        let r = s.model.unlink(parent.0, name, SystemTime::now());
        s.forget_dropped();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if reserved(parent, name) {
            return reply.error(Errno::ENOENT);
        }
        let mut s = self.state();
        let r = s.model.rmdir(parent.0, name, SystemTime::now());
        s.forget_dropped();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if reserved(parent, name) || reserved(newparent, newname) {
            return reply.error(Errno::ENOENT);
        }
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let mut s = self.state();
        let r = s.model.rename(
            parent.0,
            name,
            newparent.0,
            newname,
            noreplace,
            SystemTime::now(),
        );
        s.forget_dropped();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.state();
        let r = (|| {
            if s.model.kind(ino.0)? == Kind::Dir {
                return Err(FsError::IsDir);
            }
            if flags.0 & libc::O_TRUNC != 0 {
                s.model.set_size(ino.0, 0, SystemTime::now())?;
            }
            s.model.open(ino.0)
        })();
        match r {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(err(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return reply.error(Errno::EPERM);
        }
        let r = self
            .new_node(req, parent, name, Kind::File, mode, umask)
            .and_then(|a| Ok((a, self.state().model.open(a.ino)?)));
        match r {
            Ok((a, fh)) => reply.created(
                &TTL,
                &file_attr(&a),
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(err(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut guard = self.state();
        let State { model, backing } = &mut *guard;
        let r = (|| {
            let ino = model.handle(fh.0)?;
            let segments = model.read(fh.0, offset, u64::from(size))?;
            let total: u64 = segments
                .iter()
                .map(|s| match s {
                    Segment::Data(d) => d.len() as u64,
                    Segment::Durable { len, .. } | Segment::Zeros(len) => *len,
                })
                .sum();
            let mut buf = vec![0u8; usize::try_from(total).map_err(|_| FsError::Invalid)?];
            let mut at = 0usize;
            for s in segments {
                match s {
                    Segment::Data(d) => {
                        buf[at..at + d.len()].copy_from_slice(d);
                        at += d.len();
                    }
                    Segment::Zeros(len) => at += len as usize,
                    Segment::Durable { offset, len } => {
                        let end = at + len as usize;
                        backing.read_at(ino, offset, &mut buf[at..end]).map_err(|e| {
                            tracing::error!(ino, error = %e, "powerfs: reading the backing file failed");
                            FsError::Io
                        })?;
                        at = end;
                    }
                }
            }
            Ok(buf)
        })();
        match r {
            Ok(buf) => reply.data(&buf),
            Err(e) => reply.error(err(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self
            .state()
            .model
            .write(fh.0, offset, data, SystemTime::now())
        {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(err(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.state().model.handle(fh.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.state();
        s.model.release(fh.0);
        s.forget_dropped();
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.state().fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.state();
        let r = match s.model.kind(ino.0) {
            Ok(Kind::Dir) => s.model.open(ino.0),
            Ok(Kind::File) => Err(FsError::NotDir),
            Err(e) => Err(e),
        };
        match r {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = self.state();
        let r = (|| {
            s.model.handle(fh.0)?;
            let parent = s.model.parent(ino.0)?;
            let mut all = vec![
                (OsStr::new(".").to_owned(), ino.0, Kind::Dir),
                (OsStr::new("..").to_owned(), parent, Kind::Dir),
            ];
            all.extend(s.model.readdir(ino.0)?);
            Ok(all)
        })();
        match r {
            Ok(all) => {
                let skip = usize::try_from(offset).unwrap_or(usize::MAX);
                for (i, (name, child, kind)) in all.iter().enumerate().skip(skip) {
                    if reply.add(INodeNo(*child), i as u64 + 1, file_type(*kind), name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.state();
        s.model.release(fh.0);
        s.forget_dropped();
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.state().fsyncdir(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.state().backing.statfs() {
            Ok(v) => reply.statfs(
                v.f_blocks,
                v.f_bfree,
                v.f_bavail,
                v.f_files,
                v.f_ffree,
                u32::try_from(v.f_bsize).unwrap_or(4096),
                u32::try_from(v.f_namemax).unwrap_or(255),
                u32::try_from(v.f_frsize).unwrap_or(4096),
            ),
            Err(e) => reply.error(Errno::from(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let keep_size = match mode {
            0 => false,
            libc::FALLOC_FL_KEEP_SIZE => true,
            _ => return reply.error(Errno::from_i32(libc::EOPNOTSUPP)),
        };
        match self
            .state()
            .model
            .allocate(fh.0, offset, length, keep_size, SystemTime::now())
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }
}
