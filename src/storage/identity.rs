//! Which cluster and which node a data directory belongs to.
//!
//! A node's durable state is only meaningful together with the promises it
//! made: an acceptor that forgot its promises, or a log-server that forgot
//! its seals and records, breaks the safety of the register and of the logs
//! without any error being visible. So a data directory carries a small file,
//! [`FILE`] (`IDENTITY`), naming the cluster and the node it was created for,
//! and a node refuses to start on a directory that does not carry its own
//! identity. A missing or empty directory is refused too: it cannot be told
//! apart from a lost disk, which is why only `keel init` (through [`stamp`])
//! creates identities, before a node ever runs, and a node only [`verify`]s.
//!
//! ```toml
//! # keel data directory identity (written by `keel init`; do not edit)
//! format = 1
//! cluster = "5f0c9a3e4d2b1a0f8e7d6c5b4a392817"
//! node = 1
//! created = "2026-11-27T04:45:01.233Z"
//! ```
//!
//! The cluster id is derived from the cluster CA certificate
//! ([`ClusterId::from_ca_der`]), so every node that holds `ca.pem` knows it
//! without a new configuration field, and two `keel init` runs never share it.
//!
//! The file is written atomically: a temporary file, fsynced, renamed over
//! `IDENTITY`, then the directory (and its parent, when the directory was
//! created) fsynced. A reader therefore sees either no identity or a whole
//! one; a damaged file (a disk error, a hand edit) is a clear error.

use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the identity file inside a data directory.
pub const FILE: &str = "IDENTITY";

/// The format version this build writes and the newest it reads.
pub const FORMAT: u32 = 1;

/// The temporary file [`stamp`] writes before renaming it to [`FILE`]; a
/// crash can leave it behind, and it counts as nothing.
const TEMP: &str = "IDENTITY.tmp";

/// The mark of a rejoin in progress (see [`prepare_rejoin`]): present from
/// before the identity is written until the rejoin completed, so a crash
/// during a rejoin resumes it and never leaves a node voting on promises it
/// forgot.
pub const REJOIN_FILE: &str = "REJOINING";

/// Entries a directory may hold and still count as empty: what `mkfs`
/// leaves on a fresh disk, a stamp a crash cut short, and the rejoin mark
/// of a rejoin that crashed before its identity was written.
const IGNORED: &[&str] = &["lost+found", TEMP, REJOIN_FILE];

/// What the message of a refused blank directory says about its cause.
const BLANK_HINT: &str = "this node was never initialized by `keel init`, or its disk was lost \
     (start it with `keel node --rejoin` to bring it back under its old identity)";

/// A cluster's identity: the first 16 bytes of the SHA-256 of its CA
/// certificate (DER), written as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(
    /// The digest prefix; 128 bits make an accidental collision between two
    /// clusters' CAs impossible in practice.
    [u8; 16],
);

impl ClusterId {
    /// The id of the cluster whose CA certificate is `der`.
    pub fn from_ca_der(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest.as_ref()[..16]);
        ClusterId(id)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({self})")
    }
}

impl std::str::FromStr for ClusterId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("cluster id {s:?} is not 32 hex digits");
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(ClusterId(id))
    }
}

/// The contents of an `IDENTITY` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The cluster the directory belongs to; a node of another cluster
    /// (another CA) must not start on it.
    pub cluster: ClusterId,
    /// The node the directory belongs to; another node of the same cluster
    /// must not start on it.
    pub node: NodeId,
    /// When `keel init` created it (UTC, RFC 3339), for the operator only.
    pub created: String,
}

/// The file as TOML. Kept apart from [`Identity`] so that what is on disk is
/// checked field by field before anything trusts it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    /// Bumped when the meaning of the file changes; a newer format is
    /// refused rather than misread.
    format: u32,
    /// [`ClusterId`] as hex.
    cluster: String,
    /// The node id as a plain integer, as in the node's config.
    node: u32,
    /// See [`Identity::created`].
    created: String,
}

/// Why a data directory is not (or cannot become) a given node's.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("data directory {} does not exist: {BLANK_HINT}", dir.display())]
    Missing {
        /// The directory the node was configured with.
        dir: PathBuf,
    },
    #[error("data directory {} is empty: {BLANK_HINT}", dir.display())]
    Empty {
        /// The directory the node was configured with.
        dir: PathBuf,
    },
    #[error(
        "data directory {} holds data but no {FILE} file (written by an older keel, or not a \
         keel data directory); refusing to start on data that may belong to another node",
        dir.display()
    )]
    Unstamped {
        /// The directory the node was configured with.
        dir: PathBuf,
    },
    #[error(
        "data directory {} belongs to cluster {found}, not to this node's cluster {expected} \
         (the fingerprint of its ca.pem); refusing to start on another cluster's data",
        dir.display()
    )]
    OtherCluster {
        /// The directory the node was configured with.
        dir: PathBuf,
        /// The cluster named in the directory's identity.
        found: ClusterId,
        /// The cluster of the node's CA certificate.
        expected: ClusterId,
    },
    #[error(
        "data directory {} belongs to {found}, not to {expected}; refusing to start on another \
         node's data",
        dir.display()
    )]
    OtherNode {
        /// The directory the node was configured with.
        dir: PathBuf,
        /// The node named in the directory's identity.
        found: NodeId,
        /// The node that was to start (or be stamped).
        expected: NodeId,
    },
    #[error("{} is damaged: {reason}", path.display())]
    Damaged {
        /// The identity file.
        path: PathBuf,
        /// What is wrong with it (one line; the contents are not echoed).
        reason: String,
    },
    #[error(
        "{} has format {found}, newer than the {FORMAT} this keel understands; upgrade keel",
        path.display()
    )]
    NewerFormat {
        /// The identity file.
        path: PathBuf,
        /// The format version it declares.
        found: u64,
    },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "open data directory".
        action: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> IdentityError + 'a {
    move |source| IdentityError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What a data directory holds, as far as identity goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// No directory at all.
    Missing,
    /// A directory with nothing in it (see [`IGNORED`]).
    Empty,
    /// Something, but no `IDENTITY`.
    Unstamped,
    /// A valid identity.
    Stamped(Identity),
}

/// Looks at `dir` without changing anything.
pub fn inspect(dir: &Path) -> Result<Found, IdentityError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(source) => {
            return Err(IdentityError::Io {
                action: "open data directory",
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut has_identity = false;
    let mut has_other = false;
    for entry in entries {
        let entry = entry.map_err(io("list data directory", dir))?;
        let name = entry.file_name();
        if name == FILE {
            has_identity = true;
        } else if !IGNORED.iter().any(|i| name == *i) {
            has_other = true;
        }
    }
    match (has_identity, has_other) {
        (true, _) => read(dir).map(Found::Stamped),
        (false, true) => Ok(Found::Unstamped),
        (false, false) => Ok(Found::Empty),
    }
}

/// Reads and checks `dir/IDENTITY`.
pub fn read(dir: &Path) -> Result<Identity, IdentityError> {
    let path = dir.join(FILE);
    let damaged = |reason: String| IdentityError::Damaged {
        path: path.clone(),
        reason,
    };
    let bytes = std::fs::read(&path).map_err(io("read", &path))?;
    let text = String::from_utf8(bytes).map_err(|_| damaged("not UTF-8 text".into()))?;
    // The version first, from a loose parse: a newer format may have
    // fields this one does not know.
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| damaged(format!("not valid TOML: {}", one_line(e.message()))))?;
    match table.get("format") {
        Some(toml::Value::Integer(v)) if *v == i64::from(FORMAT) => {}
        Some(toml::Value::Integer(v)) if *v > i64::from(FORMAT) => {
            return Err(IdentityError::NewerFormat {
                path,
                found: *v as u64,
            })
        }
        Some(toml::Value::Integer(v)) => return Err(damaged(format!("unknown format {v}"))),
        Some(_) => return Err(damaged("`format` is not an integer".into())),
        None => return Err(damaged("no `format` field".into())),
    }
    let file: IdentityFile =
        toml::from_str(&text).map_err(|e| damaged(one_line(e.message()).to_string()))?;
    let cluster = file.cluster.parse().map_err(damaged)?;
    if file.node == 0 {
        return Err(damaged("node id 0 (ids start at 1)".into()));
    }
    Ok(Identity {
        cluster,
        node: NodeId(file.node),
        created: file.created,
    })
}

fn one_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// Succeeds only if `dir` carries exactly this identity. Never creates or
/// changes anything, so a refused directory is left as it was.
pub fn verify(dir: &Path, cluster: ClusterId, node: NodeId) -> Result<Identity, IdentityError> {
    let dir_buf = dir.to_path_buf();
    match inspect(dir)? {
        Found::Missing => Err(IdentityError::Missing { dir: dir_buf }),
        Found::Empty => Err(IdentityError::Empty { dir: dir_buf }),
        Found::Unstamped => Err(IdentityError::Unstamped { dir: dir_buf }),
        Found::Stamped(id) => check(dir, &id, cluster, node).map(|()| id),
    }
}

fn check(dir: &Path, id: &Identity, cluster: ClusterId, node: NodeId) -> Result<(), IdentityError> {
    if id.cluster != cluster {
        return Err(IdentityError::OtherCluster {
            dir: dir.to_path_buf(),
            found: id.cluster,
            expected: cluster,
        });
    }
    if id.node != node {
        return Err(IdentityError::OtherNode {
            dir: dir.to_path_buf(),
            found: id.node,
            expected: node,
        });
    }
    Ok(())
}

/// What [`stamp`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Stamped {
    /// The identity was written (the directory was absent or empty).
    Created,
    /// The directory already carried exactly this identity; nothing changed.
    Already,
}

/// Gives `dir` this identity. Only for a directory that is absent or empty
/// (created here if absent), or already stamped with exactly this identity;
/// anything else is refused unchanged. Only `keel init` and the test rig
/// call this: a node never creates its own identity.
pub fn stamp(dir: &Path, cluster: ClusterId, node: NodeId) -> Result<Stamped, IdentityError> {
    let created_dir = match inspect(dir)? {
        Found::Stamped(id) => return check(dir, &id, cluster, node).map(|()| Stamped::Already),
        Found::Unstamped => {
            return Err(IdentityError::Unstamped {
                dir: dir.to_path_buf(),
            })
        }
        Found::Empty => false,
        Found::Missing => {
            std::fs::create_dir_all(dir).map_err(io("create data directory", dir))?;
            true
        }
    };
    let file = IdentityFile {
        format: FORMAT,
        cluster: cluster.to_string(),
        node: node.0,
        created: now_rfc3339(),
    };
    let body = toml::to_string(&file).map_err(|e| IdentityError::Damaged {
        path: dir.join(FILE),
        reason: format!("cannot encode: {e}"),
    })?;
    let text = format!(
        "# keel data directory identity (written by `keel init`; do not edit).\n\
         # A node starts only on a directory that names its own cluster and node.\n{body}"
    );
    let temp = dir.join(TEMP);
    let mut f = File::create(&temp).map_err(io("create", &temp))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("write", &temp))?;
    drop(f);
    let path = dir.join(FILE);
    std::fs::rename(&temp, &path).map_err(io("rename into place", &path))?;
    sync_dir(dir)?;
    if created_dir {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(Stamped::Created)
}

/// What [`prepare_rejoin`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum RejoinStart {
    /// The directory was blank (a lost disk): it now carries this node's
    /// identity and the rejoin mark.
    Blank,
    /// A rejoin was already under way (the mark is there): it resumes.
    Resumed,
    /// The directory holds this node's data and no rejoin is under way:
    /// nothing to do, the node starts as usual.
    NotNeeded,
}

/// Readies `dir` for a rejoin under this identity (`keel node --rejoin`).
/// A blank directory gets the rejoin mark ([`REJOIN_FILE`], durable) and
/// then the identity, in that order, so the identity never exists without
/// the mark until [`finish_rejoin`]. A directory of this node is left as it
/// is; anything else is refused unchanged, as [`verify`] would.
pub fn prepare_rejoin(
    dir: &Path,
    cluster: ClusterId,
    node: NodeId,
) -> Result<RejoinStart, IdentityError> {
    match inspect(dir)? {
        Found::Stamped(id) => {
            check(dir, &id, cluster, node)?;
            Ok(if rejoining(dir) {
                RejoinStart::Resumed
            } else {
                RejoinStart::NotNeeded
            })
        }
        Found::Unstamped => Err(IdentityError::Unstamped {
            dir: dir.to_path_buf(),
        }),
        Found::Missing | Found::Empty => {
            std::fs::create_dir_all(dir).map_err(io("create data directory", dir))?;
            let mark = dir.join(REJOIN_FILE);
            let mut f = File::create(&mark).map_err(io("create", &mark))?;
            f.write_all(b"# this node is rejoining its cluster after a lost disk\n")
                .and_then(|()| f.sync_all())
                .map_err(io("write", &mark))?;
            drop(f);
            sync_dir(dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
            stamp(dir, cluster, node)?;
            Ok(RejoinStart::Blank)
        }
    }
}

/// Whether a rejoin of `dir` is under way (its mark is present).
pub fn rejoining(dir: &Path) -> bool {
    dir.join(REJOIN_FILE).exists()
}

/// Ends a rejoin: removes its mark, durably.
pub fn finish_rejoin(dir: &Path) -> Result<(), IdentityError> {
    let mark = dir.join(REJOIN_FILE);
    match std::fs::remove_file(&mark) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(IdentityError::Io {
            action: "remove",
            path: mark,
            source,
        }),
    }
}

/// Makes a directory's entries (a rename, a new child) durable.
fn sync_dir(dir: &Path) -> Result<(), IdentityError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))
}

/// The current time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    format!("{}Z", crate::harness::report::timestamp_ms(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(seed: u8) -> ClusterId {
        ClusterId::from_ca_der(&[seed; 40])
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn cluster_id_is_the_ca_fingerprint_in_hex() {
        let a = ClusterId::from_ca_der(b"certificate a");
        assert_eq!(a, ClusterId::from_ca_der(b"certificate a"));
        assert_ne!(a, ClusterId::from_ca_der(b"certificate b"));
        let hex = a.to_string();
        assert_eq!(hex.len(), 32);
        assert_eq!(hex.parse::<ClusterId>().unwrap(), a);
        // SHA-256("abc") starts ba7816bf 8f01cfea 414140de 5dae2223.
        assert_eq!(
            ClusterId::from_ca_der(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223"
        );
        assert!("zz".repeat(16).parse::<ClusterId>().is_err());
        assert!("ab".parse::<ClusterId>().is_err());
        assert!("é".repeat(16).parse::<ClusterId>().is_err());
    }

    #[test]
    fn stamp_then_verify_round_trips_and_the_file_reads_as_toml() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("n2").join("data");
        assert_eq!(
            stamp(&dir, cluster(1), NodeId(2)).unwrap(),
            Stamped::Created
        );
        let id = verify(&dir, cluster(1), NodeId(2)).unwrap();
        assert_eq!((id.cluster, id.node), (cluster(1), NodeId(2)));
        assert_eq!(entries(&dir), vec![FILE.to_string()]);

        let text = std::fs::read_to_string(dir.join(FILE)).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table["format"].as_integer(), Some(1));
        assert_eq!(table["cluster"].as_str(), Some(&*cluster(1).to_string()));
        assert_eq!(table["node"].as_integer(), Some(2));
        let created = table["created"].as_str().unwrap();
        assert!(created.len() == 24 && created.ends_with('Z'), "{created}");
    }

    #[test]
    fn stamp_is_idempotent_for_the_same_identity_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        stamp(dir, cluster(1), NodeId(1)).unwrap();
        let before = std::fs::read(dir.join(FILE)).unwrap();
        assert_eq!(stamp(dir, cluster(1), NodeId(1)).unwrap(), Stamped::Already);
        assert_eq!(std::fs::read(dir.join(FILE)).unwrap(), before, "rewritten");

        let err = stamp(dir, cluster(1), NodeId(3)).unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::OtherNode {
                    found: NodeId(1),
                    ..
                }
            ),
            "{err}"
        );
        let err = stamp(dir, cluster(2), NodeId(1)).unwrap_err();
        assert!(matches!(err, IdentityError::OtherCluster { .. }), "{err}");
        assert_eq!(std::fs::read(dir.join(FILE)).unwrap(), before, "changed");
    }

    #[test]
    fn stamp_refuses_a_directory_with_data_and_leaves_it_alone() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("db")).unwrap();
        let err = stamp(tmp.path(), cluster(1), NodeId(1)).unwrap_err();
        assert!(matches!(err, IdentityError::Unstamped { .. }), "{err}");
        assert_eq!(entries(tmp.path()), vec!["db".to_string()]);
    }

    #[test]
    fn a_fresh_disk_and_an_interrupted_stamp_count_as_empty() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("lost+found")).unwrap();
        std::fs::write(tmp.path().join(TEMP), b"format = 1\ncluster = \"tru").unwrap();
        let err = verify(tmp.path(), cluster(1), NodeId(1)).unwrap_err();
        assert!(matches!(err, IdentityError::Empty { .. }), "{err}");
        assert_eq!(
            stamp(tmp.path(), cluster(1), NodeId(1)).unwrap(),
            Stamped::Created
        );
        verify(tmp.path(), cluster(1), NodeId(1)).unwrap();
        assert_eq!(
            entries(tmp.path()),
            vec![FILE.to_string(), "lost+found".into()]
        );
    }

    #[test]
    fn verify_refuses_blank_foreign_and_old_directories_without_touching_them() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("gone");
        let err = verify(&missing, cluster(1), NodeId(1)).unwrap_err();
        assert!(matches!(err, IdentityError::Missing { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("never initialized by `keel init`"), "{msg}");
        assert!(msg.contains("disk was lost"), "{msg}");
        assert!(!missing.exists(), "verify created the directory");

        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = verify(&empty, cluster(1), NodeId(1)).unwrap_err();
        assert!(matches!(err, IdentityError::Empty { .. }), "{err}");
        assert!(entries(&empty).is_empty());

        let old = tmp.path().join("old");
        std::fs::create_dir_all(old.join("db")).unwrap();
        let err = verify(&old, cluster(1), NodeId(1)).unwrap_err();
        assert!(matches!(err, IdentityError::Unstamped { .. }), "{err}");
        assert!(err.to_string().contains("older keel"), "{err}");

        let n2 = tmp.path().join("n2");
        stamp(&n2, cluster(1), NodeId(2)).unwrap();
        let err = verify(&n2, cluster(1), NodeId(1)).unwrap_err();
        assert!(
            err.to_string().contains("belongs to N2, not to N1"),
            "{err}"
        );
        let err = verify(&n2, cluster(9), NodeId(2)).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("belongs to cluster {}", cluster(1))),
            "{err}"
        );

        let file = tmp.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let err = verify(&file, cluster(1), NodeId(1)).unwrap_err();
        assert!(matches!(err, IdentityError::Io { .. }), "{err}");
        assert!(
            err.to_string().contains("cannot open data directory"),
            "{err}"
        );
    }

    #[test]
    fn a_damaged_identity_file_is_a_clear_one_line_error() {
        let tmp = tempfile::tempdir().unwrap();
        let good = format!(
            "format = 1\ncluster = \"{}\"\nnode = 1\ncreated = \"x\"\n",
            cluster(1)
        );
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not UTF-8", vec![0xff, 0xfe, 0x00, 0x80]),
            ("not valid TOML", b"format = 1\ncluster = \"abc".to_vec()),
            ("not valid TOML", b"\0\0\0\0\0\0".to_vec()),
            ("no `format`", b"".to_vec()),
            ("no `format`", b"cluster = \"x\"".to_vec()),
            ("not an integer", b"format = \"1\"".to_vec()),
            ("unknown format 0", b"format = 0".to_vec()),
            (
                "missing field `cluster`",
                b"format = 1\nnode = 1\ncreated = \"x\"".to_vec(),
            ),
            (
                "not 32 hex digits",
                good.replace(&cluster(1).to_string(), "beef").into_bytes(),
            ),
            (
                "node id 0",
                good.replace("node = 1", "node = 0").into_bytes(),
            ),
            (
                "invalid",
                good.replace("node = 1", "node = -4").into_bytes(),
            ),
            ("unknown field", format!("{good}extra = 1\n").into_bytes()),
            // A write cut short (what the rename protects against).
            ("not valid TOML", good.as_bytes()[..good.len() / 2].to_vec()),
        ];
        for (needle, bytes) in cases {
            std::fs::write(tmp.path().join(FILE), &bytes).unwrap();
            let err = verify(tmp.path(), cluster(1), NodeId(1)).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, IdentityError::Damaged { .. }),
                "{needle}: {msg}"
            );
            assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
            assert!(msg.contains("IDENTITY is damaged"), "{msg}");
            assert_eq!(msg.lines().count(), 1, "{msg:?}");
            // Stamping over a damaged file is refused too: it may be the
            // only trace of whose data this is.
            assert!(stamp(tmp.path(), cluster(1), NodeId(1)).is_err());
        }
        std::fs::write(tmp.path().join(FILE), &good).unwrap();
        verify(tmp.path(), cluster(1), NodeId(1)).unwrap();
    }

    #[test]
    fn a_newer_format_is_refused_not_misread() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(FILE), "format = 2\nsomething_new = true\n").unwrap();
        let err = verify(tmp.path(), cluster(1), NodeId(1)).unwrap_err();
        assert!(
            matches!(err, IdentityError::NewerFormat { found: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade keel"), "{err}");
    }

    #[test]
    fn a_rejoin_stamps_a_blank_directory_with_its_mark_and_resumes_until_finished() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        assert_eq!(
            prepare_rejoin(&dir, cluster(1), NodeId(2)).unwrap(),
            RejoinStart::Blank
        );
        assert!(rejoining(&dir));
        assert_eq!(verify(&dir, cluster(1), NodeId(2)).unwrap().node, NodeId(2));
        // A crash during the rejoin: the next start resumes it.
        assert_eq!(
            prepare_rejoin(&dir, cluster(1), NodeId(2)).unwrap(),
            RejoinStart::Resumed
        );
        finish_rejoin(&dir).unwrap();
        assert!(!rejoining(&dir));
        // Asking again once done changes nothing.
        assert_eq!(
            prepare_rejoin(&dir, cluster(1), NodeId(2)).unwrap(),
            RejoinStart::NotNeeded
        );
        finish_rejoin(&dir).unwrap();
        assert_eq!(entries(&dir), vec![FILE.to_string()]);
    }

    #[test]
    fn a_rejoin_refuses_foreign_and_unstamped_directories_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        stamp(dir, cluster(1), NodeId(1)).unwrap();
        let err = prepare_rejoin(dir, cluster(1), NodeId(3)).unwrap_err();
        assert!(matches!(err, IdentityError::OtherNode { .. }), "{err}");
        let err = prepare_rejoin(dir, cluster(2), NodeId(1)).unwrap_err();
        assert!(matches!(err, IdentityError::OtherCluster { .. }), "{err}");
        assert!(!rejoining(dir));
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("state"), b"x").unwrap();
        let err = prepare_rejoin(other.path(), cluster(1), NodeId(1)).unwrap_err();
        assert!(matches!(err, IdentityError::Unstamped { .. }), "{err}");
        assert_eq!(entries(other.path()), vec!["state".to_string()]);
    }

    #[test]
    fn a_mark_without_identity_counts_as_blank_and_a_plain_start_refuses_it() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(REJOIN_FILE), b"").unwrap();
        let err = verify(tmp.path(), cluster(1), NodeId(1)).unwrap_err();
        assert!(matches!(err, IdentityError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("--rejoin"), "{err}");
        assert_eq!(
            prepare_rejoin(tmp.path(), cluster(1), NodeId(1)).unwrap(),
            RejoinStart::Blank
        );
    }
}
