//! powerfs: a FUSE file system for durability tests. It passes through to a
//! real backing directory but keeps every write in memory until it is synced,
//! and on command "loses power": everything unsynced is dropped, as a real
//! machine's page cache and disk cache would be.
//!
//! Layers, bottom up:
//! - [`model`]: the pure rules of durable vs volatile state (unit-tested);
//! - `backing`: the backing directory, kept equal to the durable state;
//! - `fuse`: the `fuser::Filesystem` over both;
//! - [`control`]: the Unix-socket protocol of `keel-powerfs`;
//! - here: [`PowerFs::mount`], [`Mounted`] and [`available`].
//!
//! See `docs/POWERFS.md` for the semantics, how to run it and its limits.

mod backing;
pub mod control;
mod extents;
mod fuse;
pub mod model;

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use fuser::{BackgroundSession, MountOption};

pub use model::{PowerLossReport, Stats, TornWrite};

use fuse::{lock, PowerFsFs, Shared, State};

/// Entry point: mounts powerfs.
#[derive(Debug)]
pub struct PowerFs;

impl PowerFs {
    /// Mounts a powerfs at `mountpoint` over the existing directory
    /// `backing`, whose contents are taken as durable. Returns once the
    /// mount is ready. Neither directory may contain the other.
    pub fn mount(backing: impl AsRef<Path>, mountpoint: impl AsRef<Path>) -> io::Result<Mounted> {
        let backing = backing.as_ref().canonicalize()?;
        let mountpoint = mountpoint.as_ref().canonicalize()?;
        if !mountpoint.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("mountpoint {} is not a directory", mountpoint.display()),
            ));
        }
        if backing.starts_with(&mountpoint) || mountpoint.starts_with(&backing) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "backing {} and mountpoint {} must not contain each other",
                    backing.display(),
                    mountpoint.display()
                ),
            ));
        }
        let (backing_dir, model) = backing::Backing::load(&backing)?;
        let shared: Shared = Arc::new(Mutex::new(State {
            model,
            backing: backing_dir,
        }));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName("keel-powerfs".into()),
            MountOption::Subtype("keel-powerfs".into()),
            MountOption::DefaultPermissions,
        ];
        config.n_threads = Some(1);
        let fs = PowerFsFs {
            shared: shared.clone(),
        };
        let session = fuser::spawn_mount(fs, &mountpoint, &config)?;
        tracing::info!(backing = %backing.display(), mountpoint = %mountpoint.display(), "powerfs: mounted");
        Ok(Mounted {
            handle: PowerHandle { shared },
            session: Some(session),
            mountpoint,
            backing,
        })
    }
}

/// A cloneable handle that cuts the power of a mounted powerfs or reads its
/// counters (for the control socket or another thread).
#[derive(Debug, Clone)]
pub struct PowerHandle {
    /// The mounted file system's state.
    shared: Shared,
}

impl PowerHandle {
    /// Drops every unsynced change; `tear`: seed of a torn write (see
    /// [`model::Model::power_loss`]). Handles open now answer EIO from then
    /// on: kill the processes using the mount first.
    pub fn power_loss(&self, tear: Option<u64>) -> io::Result<PowerLossReport> {
        lock(&self.shared).power_loss(tear)
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        lock(&self.shared).stats()
    }
}

/// A mounted powerfs; unmounts on drop.
#[derive(Debug)]
pub struct Mounted {
    /// Power and counters.
    handle: PowerHandle,
    /// The FUSE session thread; `None` once unmounted.
    session: Option<BackgroundSession>,
    /// Where it is mounted (canonical).
    mountpoint: PathBuf,
    /// The backing directory (canonical).
    backing: PathBuf,
}

impl Mounted {
    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The backing directory.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// A handle for cutting the power from elsewhere.
    pub fn handle(&self) -> PowerHandle {
        self.handle.clone()
    }

    /// See [`PowerHandle::power_loss`].
    pub fn power_loss(&self, tear: Option<u64>) -> io::Result<PowerLossReport> {
        self.handle.power_loss(tear)
    }

    /// See [`PowerHandle::stats`].
    pub fn stats(&self) -> Stats {
        self.handle.stats()
    }

    /// Unmounts. If the mount is busy (a process still has a file open or
    /// its working directory there) it is detached lazily instead, and the
    /// error says so.
    pub fn unmount(mut self) -> io::Result<()> {
        self.do_unmount()
    }

    fn do_unmount(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        match session.umount_and_join() {
            Ok(()) => {
                tracing::info!(mountpoint = %self.mountpoint.display(), "powerfs: unmounted");
                Ok(())
            }
            Err(e) => {
                lazy_unmount(&self.mountpoint);
                Err(io::Error::new(
                    e.kind(),
                    format!(
                        "unmounting {} failed ({e}); detached it lazily",
                        self.mountpoint.display()
                    ),
                ))
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.do_unmount() {
            tracing::warn!(error = %e, "powerfs: unmount on drop");
        }
    }
}

fn lazy_unmount(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        tracing::warn!(path = %path.display(), error = %io::Error::last_os_error(), "powerfs: lazy unmount failed");
    }
}

/// Whether FUSE can be used here: `/dev/fuse` exists and opens, and a
/// powerfs mounts and serves a file. `Err` says why not, for a test to print
/// when it skips. The answer is computed once per process.
pub fn available() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER.get_or_init(probe).clone()
}

fn probe() -> Result<(), String> {
    let dev = Path::new("/dev/fuse");
    if !dev.exists() {
        return Err("/dev/fuse does not exist (no FUSE in this kernel or container)".into());
    }
    // Without permission on the device a setuid fusermount3 may still mount
    // for us, so a failed open only explains a failed mount.
    let dev_note = match OpenOptions::new().read(true).write(true).open(dev) {
        Ok(_) => String::new(),
        Err(e) => format!("; opening /dev/fuse failed: {e}"),
    };
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let backing = dir.path().join("backing");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&backing)
        .and_then(|_| std::fs::create_dir(&mnt))
        .map_err(|e| format!("cannot create probe directories: {e}"))?;
    let mounted = PowerFs::mount(&backing, &mnt).map_err(|e| {
        format!(
            "mounting a FUSE file system failed: {e} (root mounts directly with mount(2); \
             other users need fusermount3 from Debian's fuse3 package){dev_note}"
        )
    })?;
    let file = mnt.join("probe");
    let served = std::fs::write(&file, b"ok").and_then(|_| std::fs::read(&file));
    let unmounted = mounted.unmount();
    match served {
        Ok(b) if b == b"ok" => {}
        Ok(b) => return Err(format!("the probe mount served {b:?} instead of \"ok\"")),
        Err(e) => return Err(format!("the probe mount did not serve a file: {e}")),
    }
    unmounted.map_err(|e| format!("the probe mount did not unmount: {e}"))
}
