//! Nodes on powerfs: each node's data directory on its own `keel-powerfs`
//! mount, so that the `power-loss` nemesis can drop what a node never
//! synced (see `docs/POWERFS.md`).
//!
//! [`PowerMount::start`] takes the data directory `keel init` made (it holds
//! only the node's `IDENTITY`, written and fsynced before the mount, so it
//! is durable), moves it aside to `<data>.backing`, creates an empty
//! mountpoint where the config expects the data directory and starts one
//! `keel-powerfs mount` over the two (its output goes to
//! `n<i>.powerfs.log` in the run directory). It returns once powerfs said
//! "mounted" and the mountpoint really is a FUSE file system.
//!
//! The node must be stopped before its mount: [`PowerMount::stop`] (and
//! `Drop`) sends SIGTERM, waits a bounded time, and if powerfs is still
//! there kills it and detaches the mount lazily, so a failed run never
//! leaves a mount behind.

use crate::powerfs::control::{self, ControlError, Request, Response};
use crate::powerfs::{PowerLossReport, Stats};
use crate::types::NodeId;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The line `keel-powerfs mount` prints once it serves.
const MOUNTED: &str = "keel-powerfs: mounted";

/// The longest path a Unix socket address holds (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// `f_type` of a FUSE file system in `statfs`.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// What can go wrong with a node's powerfs.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    /// FUSE cannot be used on this machine.
    #[error("powerfs needs FUSE, which is unavailable here: {0}")]
    Unavailable(String),
    /// No `keel-powerfs` executable.
    #[error(
        "no keel-powerfs executable at {0}; build it (cargo build --bin keel-powerfs) or pass --powerfs-bin"
    )]
    NoExecutable(PathBuf),
    /// A file-system step of the setup failed.
    #[error("{node}: {what}: {source}")]
    Io {
        /// The node.
        node: NodeId,
        /// The step, e.g. "moving n1/data to n1/data.backing".
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The control socket's path does not fit a Unix socket address.
    #[error(
        "{node}: the control socket path {path} is {len} bytes, more than a Unix socket takes ({MAX_SOCKET_PATH}); use a shorter run directory"
    )]
    SocketPath {
        /// The node.
        node: NodeId,
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// `keel-powerfs` exited before it mounted.
    #[error("{node}: keel-powerfs exited before mounting ({status}); see {log}: {tail}")]
    MountExited {
        /// The node.
        node: NodeId,
        /// How it exited.
        status: String,
        /// Its log.
        log: PathBuf,
        /// The log's last line.
        tail: String,
    },
    /// `keel-powerfs` did not say "mounted" in time.
    #[error("{node}: keel-powerfs did not report \"mounted\" within {secs:.0} s; see {log}")]
    MountTimeout {
        /// The node.
        node: NodeId,
        /// The deadline.
        secs: f64,
        /// Its log.
        log: PathBuf,
    },
    /// It said "mounted" but the mountpoint is no FUSE file system.
    #[error("{node}: keel-powerfs reported mounted, but {path} is not a FUSE mount")]
    NotMounted {
        /// The node.
        node: NodeId,
        /// The mountpoint.
        path: PathBuf,
    },
    /// The node's powerfs process is gone.
    #[error("{node}: keel-powerfs is not running; see {log}")]
    NotRunning {
        /// The node.
        node: NodeId,
        /// Its log.
        log: PathBuf,
    },
    /// The control socket failed or answered something unexpected.
    #[error("{node}: {source}")]
    Control {
        /// The node.
        node: NodeId,
        /// The control client's error.
        source: ControlError,
    },
    /// The control socket answered with the wrong kind of response.
    #[error("{node}: the control socket answered {answer} to {request}")]
    Unexpected {
        /// The node.
        node: NodeId,
        /// What was asked.
        request: &'static str,
        /// What came back.
        answer: String,
    },
}

/// Checks once per process that FUSE works here (a probe mount).
pub fn check_available() -> Result<(), PowerError> {
    crate::powerfs::available().map_err(PowerError::Unavailable)
}

/// One node's `keel-powerfs mount` process and its directories.
#[derive(Debug)]
pub struct PowerMount {
    /// The node whose data directory this is.
    node: NodeId,
    /// The running `keel-powerfs mount`; `None` once stopped or gone.
    child: Option<Child>,
    /// Holds the durable state (what a power loss leaves).
    backing: PathBuf,
    /// Where the config expects the data directory.
    mountpoint: PathBuf,
    /// The control socket.
    control: PathBuf,
    /// `n<i>.powerfs.log` in the run directory.
    log: PathBuf,
}

impl PowerMount {
    /// Moves `data_dir` (as `keel init` left it) to `<data_dir>.backing`,
    /// creates an empty mountpoint in its place and mounts powerfs there;
    /// returns once it serves, or fails within `deadline`.
    pub fn start(
        exe: &Path,
        node: NodeId,
        data_dir: &Path,
        run_dir: &Path,
        deadline: Duration,
    ) -> Result<PowerMount, PowerError> {
        if !exe.is_file() {
            return Err(PowerError::NoExecutable(exe.to_path_buf()));
        }
        let io_err = |what: String| move |source| PowerError::Io { node, what, source };
        let mut backing = data_dir.as_os_str().to_owned();
        backing.push(".backing");
        let backing = PathBuf::from(backing);
        let control = run_dir.join(format!("n{}.powerfs.sock", node.0));
        let log = run_dir.join(format!("n{}.powerfs.log", node.0));
        let len = std::path::absolute(&control)
            .map(|p| p.as_os_str().len())
            .unwrap_or(control.as_os_str().len());
        if len > MAX_SOCKET_PATH {
            return Err(PowerError::SocketPath {
                node,
                path: control,
                len,
            });
        }
        std::fs::rename(data_dir, &backing).map_err(io_err(format!(
            "moving {} to {}",
            data_dir.display(),
            backing.display()
        )))?;
        std::fs::create_dir(data_dir).map_err(io_err(format!(
            "creating mountpoint {}",
            data_dir.display()
        )))?;
        let out =
            std::fs::File::create(&log).map_err(io_err(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("opening {}", log.display())))?;
        let child = Command::new(exe)
            .arg("mount")
            .arg("--backing")
            .arg(&backing)
            .arg("--mountpoint")
            .arg(data_dir)
            .arg("--control")
            .arg(&control)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C to the harness must not
            // unmount the file system under nodes that still run; the
            // harness stops the nodes, then powerfs.
            .process_group(0)
            .spawn()
            .map_err(io_err(format!("starting {}", exe.display())))?;
        let mut mount = PowerMount {
            node,
            child: Some(child),
            backing,
            mountpoint: data_dir.to_path_buf(),
            control,
            log,
        };
        mount.wait_mounted(deadline)?;
        Ok(mount)
    }

    /// Waits for the "mounted" line in the log, bounded.
    fn wait_mounted(&mut self, deadline: Duration) -> Result<(), PowerError> {
        let until = Instant::now() + deadline;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains(MOUNTED) {
                break;
            }
            if let Some(status) = self.exited() {
                return Err(PowerError::MountExited {
                    node: self.node,
                    status: describe(status),
                    log: self.log.clone(),
                    tail: text.lines().last().unwrap_or("(empty)").to_string(),
                });
            }
            if Instant::now() >= until {
                return Err(PowerError::MountTimeout {
                    node: self.node,
                    secs: deadline.as_secs_f64(),
                    log: self.log.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !is_fuse(&self.mountpoint) {
            return Err(PowerError::NotMounted {
                node: self.node,
                path: self.mountpoint.clone(),
            });
        }
        Ok(())
    }

    /// The node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The backing directory: the durable state.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// The mountpoint (the node's data directory).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The powerfs log.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// If powerfs exited (on its own: nobody else stops it but
    /// [`PowerMount::stop`]), how; reaps it.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    fn running(&mut self) -> Result<(), PowerError> {
        if self.child.is_none() || self.exited().is_some() {
            return Err(PowerError::NotRunning {
                node: self.node,
                log: self.log.clone(),
            });
        }
        Ok(())
    }

    /// Cuts the power: every unsynced change is dropped; with `tear`, the
    /// last unsynced write keeps a prefix chosen by the seed. The node must
    /// not be running (its open handles would answer EIO).
    pub fn power_loss(&mut self, tear: Option<u64>) -> Result<PowerLossReport, PowerError> {
        self.running()?;
        match self.ask(&Request::PowerLoss { tear })? {
            Response::PowerLoss { report } => Ok(report),
            other => Err(self.unexpected("power-loss", &other)),
        }
    }

    /// The mount's counters.
    pub fn stats(&mut self) -> Result<Stats, PowerError> {
        self.running()?;
        match self.ask(&Request::Status)? {
            Response::Status { stats } => Ok(stats),
            other => Err(self.unexpected("status", &other)),
        }
    }

    fn ask(&self, req: &Request) -> Result<Response, PowerError> {
        control::request(&self.control, req).map_err(|source| PowerError::Control {
            node: self.node,
            source,
        })
    }

    fn unexpected(&self, request: &'static str, answer: &Response) -> PowerError {
        PowerError::Unexpected {
            node: self.node,
            request,
            answer: serde_json::to_string(answer).unwrap_or_else(|_| format!("{answer:?}")),
        }
    }

    /// SIGTERM (powerfs unmounts and exits), then up to `grace` for it to
    /// exit; past that SIGKILL and a lazy unmount. Stop the node first.
    /// Returns a note when the stop was not clean.
    pub fn stop(&mut self, grace: Duration) -> Option<String> {
        let mut child = self.child.take()?;
        // SAFETY: a plain syscall on a pid this process spawned and has not
        // reaped (`child` is still held).
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let until = Instant::now() + grace;
        let note = loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => break None,
                Ok(Some(status)) => {
                    break Some(format!(
                        "{}: keel-powerfs exited with {} at the unmount; see {}",
                        self.node,
                        describe(status),
                        self.log.display()
                    ))
                }
                Err(e) => break Some(format!("{}: waiting for keel-powerfs: {e}", self.node)),
                Ok(None) if Instant::now() >= until => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Some(format!(
                        "{}: keel-powerfs did not exit within {:.0} s of SIGTERM; killed it",
                        self.node,
                        grace.as_secs_f64()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        // A powerfs that died (or was killed) leaves a dead mount behind:
        // detach it so the run directory can be removed.
        if is_fuse(&self.mountpoint) {
            lazy_unmount(&self.mountpoint);
        }
        note
    }
}

impl Drop for PowerMount {
    fn drop(&mut self) {
        if let Some(note) = self.stop(Duration::from_secs(10)) {
            eprintln!("keel-jepsen: {note}");
        }
    }
}

/// Whether `path` is on a FUSE file system (a dead FUSE mount, whose
/// daemon is gone, answers ENOTCONN: also a mount).
fn is_fuse(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path and `buf` a statfs the
    // call may fill.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut buf) };
    if rc != 0 {
        return io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN);
    }
    buf.f_type as i64 == FUSE_SUPER_MAGIC
}

fn lazy_unmount(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        eprintln!(
            "keel-jepsen: lazy unmount of {} failed: {}",
            path.display(),
            io::Error::last_os_error()
        );
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "unknown status".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_missing_executable_and_a_socket_path_too_long() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("n1/data");
        std::fs::create_dir_all(&data).unwrap();
        let err = PowerMount::start(
            &tmp.path().join("nope"),
            NodeId(1),
            &data,
            tmp.path(),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, PowerError::NoExecutable(_)), "{err}");
        // Any existing file passes the executable check; the socket path
        // is checked before anything is moved.
        let exe = tmp.path().join("exe");
        std::fs::write(&exe, b"").unwrap();
        let deep = tmp.path().join("d".repeat(120));
        let err =
            PowerMount::start(&exe, NodeId(1), &data, &deep, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, PowerError::SocketPath { .. }), "{err}");
        assert!(err.to_string().contains("shorter run directory"), "{err}");
        assert!(data.is_dir(), "the data directory was left where it was");
    }

    #[test]
    fn a_powerfs_that_exits_before_mounting_is_reported_with_its_log() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("n2/data");
        std::fs::create_dir_all(&data).unwrap();
        // Stands in for keel-powerfs: prints an error and exits 1.
        let exe = tmp.path().join("fake-powerfs");
        std::fs::write(
            &exe,
            "#!/bin/sh\necho 'keel-powerfs: no fuse for you' >&2\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = PowerMount::start(&exe, NodeId(2), &data, tmp.path(), Duration::from_secs(30))
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, PowerError::MountExited { .. }), "{text}");
        assert!(text.contains("no fuse for you"), "{text}");
        assert!(text.contains("exit code 1"), "{text}");
        assert!(tmp.path().join("n2/data.backing").is_dir());
        assert!(!is_fuse(&data));
    }
}
