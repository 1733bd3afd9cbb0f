//! The backing directory: where durable state lives, on a real file system.
//!
//! Invariant: the backing tree is exactly the model's durable tree (what a
//! power loss would leave), and each file there holds that file's durable
//! bytes. Volatile data never reaches it; it is held by the model in memory.
//!
//! A file fsynced before any of its directory entries is durable has nowhere
//! in that tree to live, so its durable bytes go to a hidden staging
//! directory `.powerfs/` at the backing root (`f<ino>`), on the same file
//! system so a later directory fsync can rename it into place. The staging
//! directory is hidden from the mount and emptied at every mount (like ext4
//! discarding orphan inodes after a crash).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::model::{Ino, Kind, Meta, Model, SyncPlan, TornWrite, ROOT};

/// Name of the hidden staging directory at the backing root.
pub const STAGING: &str = ".powerfs";

/// How many backing files are kept open at once.
const MAX_OPEN: usize = 256;

/// The backing directory and where each durable inode is placed in it.
#[derive(Debug)]
pub struct Backing {
    /// The backing root (canonical).
    root: PathBuf,
    /// `root/.powerfs`, where unplaced durable file bytes live.
    staging: PathBuf,
    /// The durable tree as it is laid out in the backing directory now:
    /// inode -> (parent, name). Kept equal to `Model::durable_positions`.
    positions: HashMap<Ino, (Ino, OsString)>,
    /// Files whose durable bytes are in `staging/f<ino>`.
    staged: HashSet<Ino>,
    /// Open backing files by inode; a rename of the backing file leaves the
    /// descriptor valid, so it never needs to follow the placement.
    open: HashMap<Ino, File>,
}

/// In-memory metadata of a backing file or directory.
pub fn meta_of(m: &fs::Metadata) -> Meta {
    let t = |r: io::Result<SystemTime>| r.unwrap_or(SystemTime::UNIX_EPOCH);
    Meta {
        perm: (m.mode() & 0o7777) as u16,
        uid: m.uid(),
        gid: m.gid(),
        atime: t(m.accessed()),
        mtime: t(m.modified()),
        ctime: t(m.modified()),
    }
}

impl Backing {
    /// Opens the backing directory `root` and loads what it holds into a new
    /// model, all of it durable. Empties the staging directory.
    pub fn load(root: &Path) -> io::Result<(Backing, Model)> {
        let root = root.canonicalize()?;
        let root_meta = fs::metadata(&root)?;
        if !root_meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("backing {} is not a directory", root.display()),
            ));
        }
        let staging = root.join(STAGING);
        if staging.exists() {
            fs::remove_dir_all(&staging)?;
        }
        fs::create_dir(&staging)?;
        sync_dir(&root)?;
        let mut model = Model::new(meta_of(&root_meta));
        let mut stack = vec![(ROOT, root.clone())];
        while let Some((dir, path)) = stack.pop() {
            for entry in fs::read_dir(&path)? {
                let entry = entry?;
                let name = entry.file_name();
                if dir == ROOT && name == STAGING {
                    continue;
                }
                let md = fs::symlink_metadata(entry.path())?;
                let loaded = if md.is_dir() {
                    model
                        .load_dir(dir, &name, meta_of(&md))
                        .map(|ino| stack.push((ino, entry.path())))
                } else if md.is_file() {
                    model
                        .load_file(dir, &name, md.len(), meta_of(&md))
                        .map(|_| ())
                } else {
                    tracing::warn!(path = %entry.path().display(), "powerfs: skipping a backing entry that is neither file nor directory");
                    Ok(())
                };
                if let Err(e) = loaded {
                    tracing::warn!(path = %entry.path().display(), error = %e, "powerfs: skipping a backing entry");
                }
            }
        }
        let backing = Backing {
            positions: model.durable_positions(),
            root,
            staging,
            staged: HashSet::new(),
            open: HashMap::new(),
        };
        Ok((backing, model))
    }

    /// Path of `ino` in the placed tree (`None` if it is not placed).
    fn placed_path(&self, positions: &HashMap<Ino, (Ino, OsString)>, ino: Ino) -> Option<PathBuf> {
        let mut names: Vec<&OsStr> = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let (parent, name) = positions.get(&cur)?;
            names.push(name);
            cur = *parent;
            if names.len() > positions.len() {
                return None;
            }
        }
        let mut p = self.root.clone();
        for n in names.iter().rev() {
            p.push(n);
        }
        Some(p)
    }

    fn staged_file(&self, ino: Ino) -> PathBuf {
        self.staging.join(format!("f{ino}"))
    }

    fn staged_dir(&self, ino: Ino) -> PathBuf {
        self.staging.join(format!("d{ino}"))
    }

    /// The open backing file of `ino`; with `create`, an unplaced file with
    /// no backing bytes yet gets a staged one.
    fn file(&mut self, ino: Ino, create: bool) -> io::Result<&File> {
        if !self.open.contains_key(&ino) {
            let path = match self.placed_path(&self.positions, ino) {
                Some(p) => p,
                None => self.staged_file(ino),
            };
            let exists = self.positions.contains_key(&ino) || self.staged.contains(&ino);
            let f = if exists {
                OpenOptions::new().read(true).write(true).open(&path)?
            } else if create {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                self.staged.insert(ino);
                sync_dir(&self.staging)?;
                f
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("inode {ino} has no backing file"),
                ));
            };
            if self.open.len() >= MAX_OPEN {
                self.open.clear();
            }
            self.open.insert(ino, f);
        }
        self.open
            .get(&ino)
            .ok_or_else(|| io::Error::other("backing file cache lost an entry"))
    }

    /// Reads durable bytes of `ino` at `offset` into `buf`; bytes past the
    /// backing file's end read as zeros.
    pub fn read_at(&mut self, ino: Ino, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let f = self.file(ino, false)?;
        let mut done = 0;
        while done < buf.len() {
            match f.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf[done..].fill(0);
        Ok(())
    }

    /// Applies a file fsync's plan to the backing file, then fsyncs it.
    pub fn apply_sync(&mut self, plan: &SyncPlan<'_>) -> io::Result<()> {
        let f = self.file(plan.ino, true)?;
        if let Some(t) = plan.truncate_to {
            f.set_len(t)?;
        }
        for (off, data) in &plan.writes {
            f.write_all_at(data, *off)?;
        }
        f.set_len(plan.size)?;
        f.sync_all()
    }

    /// Applies a torn write to its (placed) backing file, then fsyncs it.
    pub fn apply_torn(&mut self, t: &TornWrite) -> io::Result<()> {
        if t.data.is_empty() {
            return Ok(());
        }
        let f = self.file(t.ino, false)?;
        f.write_all_at(&t.data, t.offset)?;
        f.sync_all()
    }

    /// Forgets inodes the model dropped: their staged bytes are deleted.
    pub fn forget(&mut self, inos: Vec<Ino>) -> io::Result<()> {
        let mut result = Ok(());
        for ino in inos {
            self.open.remove(&ino);
            if self.staged.remove(&ino) {
                if let Err(e) = fs::remove_file(self.staged_file(ino)) {
                    result = Err(e);
                }
            }
        }
        result
    }

    /// Makes the backing tree match the model's durable tree after directory
    /// entries became durable: moves whatever left its place to staging
    /// (deepest first), then puts everything in its new place (shallowest
    /// first), creating files and directories that had no backing yet, and
    /// fsyncs every directory touched.
    pub fn reconcile(&mut self, model: &Model) -> io::Result<()> {
        let new = model.durable_positions();
        if new == self.positions {
            return Ok(());
        }
        // Paths are resolved against `old` while moving; `self.positions`
        // becomes `new` only once every move succeeded.
        let old = self.positions.clone();
        let depth = |pos: &HashMap<Ino, (Ino, OsString)>, mut ino: Ino| {
            let mut d = 0usize;
            while let Some((p, _)) = pos.get(&ino) {
                d += 1;
                ino = *p;
                if d > pos.len() {
                    break;
                }
            }
            d
        };
        let mut touched: HashSet<Ino> = HashSet::new();
        let mut staged_dirs: HashSet<Ino> = HashSet::new();

        let mut detach: Vec<Ino> = old
            .iter()
            .filter(|(i, p)| new.get(i) != Some(p))
            .map(|(i, _)| *i)
            .collect();
        detach.sort_by_key(|i| std::cmp::Reverse(depth(&old, *i)));
        for ino in detach {
            let Some(from) = self.placed_path(&old, ino) else {
                continue;
            };
            if let Some((p, _)) = old.get(&ino) {
                touched.insert(*p);
            }
            if fs::symlink_metadata(&from)?.is_dir() {
                fs::rename(&from, self.staged_dir(ino))?;
                staged_dirs.insert(ino);
            } else {
                fs::rename(&from, self.staged_file(ino))?;
                self.staged.insert(ino);
            }
        }

        let mut attach: Vec<Ino> = new
            .iter()
            .filter(|(i, p)| old.get(i) != Some(p))
            .map(|(i, _)| *i)
            .collect();
        attach.sort_by_key(|i| depth(&new, *i));
        for ino in attach {
            let Some(to) = self.placed_path(&new, ino) else {
                continue;
            };
            if let Some((p, _)) = new.get(&ino) {
                touched.insert(*p);
            }
            let perm = model.attr(ino).map(|a| a.meta.perm).unwrap_or(0o644);
            match model.kind(ino) {
                Ok(Kind::Dir) => {
                    if staged_dirs.remove(&ino) {
                        fs::rename(self.staged_dir(ino), &to)?;
                    } else {
                        fs::DirBuilder::new().mode(u32::from(perm)).create(&to)?;
                    }
                    touched.insert(ino);
                }
                Ok(Kind::File) => {
                    if self.staged.remove(&ino) {
                        fs::rename(self.staged_file(ino), &to)?;
                    } else {
                        OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(u32::from(perm))
                            .open(&to)?
                            .sync_all()?;
                    }
                }
                Err(_) => {}
            }
        }
        // Directories that left the tree for good: their children were
        // detached before them, so they are empty.
        for ino in staged_dirs {
            let p = self.staged_dir(ino);
            if fs::remove_dir(&p).is_err() {
                tracing::warn!(path = %p.display(), "powerfs: a detached directory was not empty");
                fs::remove_dir_all(&p)?;
            }
        }
        self.positions = new;
        for d in touched {
            if let Some(p) = self.placed_path(&self.positions, d) {
                sync_dir(&p)?;
            }
        }
        sync_dir(&self.staging)
    }

    /// `statvfs` of the backing file system.
    pub fn statfs(&self) -> io::Result<libc::statvfs> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(self.root.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `c` is a valid NUL-terminated path and `out` a valid,
        // writable statvfs that the call fills in.
        let mut out: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut out) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(out)
    }
}

/// fsyncs a directory.
fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}
