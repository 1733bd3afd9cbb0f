//! `keel init`: a cluster CA, and one directory per node, ready to copy to
//! that node's host.
//!
//! ```text
//! D/ca/ca.pem, ca.key    the cluster CA; ca.key stays with the operator (offline)
//! D/ca/n<i>.pem          a copy of every certificate issued: the record that
//!                        N<i> was initialized, so it is never initialized twice
//! D/n<i>/ca.pem          the CA certificate (no key)
//! D/n<i>/n<i>.pem, .key  this node's certificate and key, and no other's
//! D/n<i>/n<i>.toml       its config; paths relative to D/n<i>/
//! D/n<i>/data/IDENTITY   its data directory, stamped with the cluster and node
//! ```
//!
//! Creating the data directories here, with their identity, is what lets a
//! node tell its cluster's first start from a lost disk: a node never creates
//! its own identity (see [`crate::storage::identity`]). Re-running keeps the
//! CA, the certificates and the identities, so it never invalidates running
//! nodes; it refuses, changing nothing of that node, when a node it
//! initialized before lost its directory or its data.

use crate::config::Config;
use crate::storage::identity::{self, ClusterId};
use crate::transport::{CaCert, ClusterCa};
use crate::types::NodeId;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The CA directory, relative to the `--dir`.
pub const CA_DIR: &str = "ca";

/// A node's directory, relative to the `--dir`.
pub fn node_dir(dir: &Path, node: NodeId) -> PathBuf {
    dir.join(format!("n{}", node.0))
}

/// The data directory inside a node's directory, as its config names it.
pub const DATA_DIR: &str = "data";

/// Stamps a node's data directory with the identity of the cluster whose CA
/// certificate is `ca`. The one way identities are created: by `keel init`
/// and by the in-process test rig, never by a node.
pub fn stamp_data_dir(
    data_dir: &Path,
    ca: &CaCert,
    node: NodeId,
) -> Result<identity::Stamped, identity::IdentityError> {
    identity::stamp(data_dir, ClusterId::from_ca_der(ca.der()), node)
}

/// The cluster CA as init found or made it. The key is read only when a
/// certificate must be issued, so once every node is initialized it may
/// live offline.
struct Ca {
    /// `D/ca/`: where the key is read from and the issued certificates are
    /// recorded.
    dir: PathBuf,
    /// What every node directory gets a copy of, and the cluster id's source.
    cert: CaCert,
    /// The CA with its key, once loaded (or just generated).
    signer: Option<ClusterCa>,
}

impl Ca {
    fn signer(&mut self) -> Result<&ClusterCa> {
        if self.signer.is_none() {
            let ca = ClusterCa::load(&self.dir).with_context(|| {
                format!(
                    "issuing a node certificate needs the CA key {}",
                    self.dir.join("ca.key").display()
                )
            })?;
            if ca.cert() != self.cert {
                bail!("{} does not match its ca.pem", self.dir.display());
            }
            self.signer = Some(ca);
        }
        Ok(self.signer.as_ref().expect("just loaded"))
    }
}

/// Writes (or reuses) the CA, each node's directory and config; returns the
/// config paths (`D/n<i>/n<i>.toml`).
pub fn run(dir: &Path, nodes: u32, base_port: u16, chaos: bool) -> Result<Vec<PathBuf>> {
    if !(1..=9).contains(&nodes) {
        bail!("--nodes must be between 1 and 9, got {nodes}");
    }
    if dir.join("certs").exists() {
        bail!(
            "{} was laid out by an older keel (one shared certs/ directory, data without an \
             identity); move it aside and run `keel init` again to start a new cluster",
            dir.display()
        );
    }
    let mut ca = open_or_create_ca(dir, nodes)?;
    // Every node first: a refusal leaves every config as it was.
    for i in 1..=nodes {
        let node = NodeId(i);
        init_node(dir, &mut ca, node).with_context(|| format!("{node}"))?;
    }
    let mut paths = Vec::new();
    for i in 1..=nodes {
        let node = NodeId(i);
        let mut config = Config::local_cluster(nodes, i, dir, base_port);
        config.data_dir = PathBuf::from(DATA_DIR);
        config.tls.dir = PathBuf::from(".");
        config.chaos = chaos;
        config.validate()?;
        let path = node_dir(dir, node).join(format!("n{i}.toml"));
        std::fs::write(&path, config.to_toml())
            .with_context(|| format!("writing {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

fn open_or_create_ca(dir: &Path, nodes: u32) -> Result<Ca> {
    let ca_dir = dir.join(CA_DIR);
    if ca_dir.join("ca.pem").exists() {
        let cert = CaCert::load(&ca_dir).context("loading the existing cluster CA")?;
        return Ok(Ca {
            dir: ca_dir,
            cert,
            signer: None,
        });
    }
    // A node directory without the CA that made it: the CA was lost or moved,
    // and a new one would make that node a stranger.
    for i in 1..=nodes {
        let nd = node_dir(dir, NodeId(i));
        if nd.join("ca.pem").exists() {
            bail!(
                "{} exists but {} does not: restore the cluster's CA directory, or start a new \
                 cluster in another directory",
                nd.display(),
                ca_dir.join("ca.pem").display()
            );
        }
    }
    std::fs::create_dir_all(&ca_dir).with_context(|| format!("creating {}", ca_dir.display()))?;
    let signer = ClusterCa::generate().context("generating the cluster CA")?;
    signer.save(&ca_dir).context("saving the cluster CA")?;
    Ok(Ca {
        dir: ca_dir,
        cert: signer.cert(),
        signer: Some(signer),
    })
}

fn init_node(dir: &Path, ca: &mut Ca, node: NodeId) -> Result<()> {
    let nd = node_dir(dir, node);
    let data = nd.join(DATA_DIR);
    let record = ca.dir.join(format!("n{}.pem", node.0));
    let cert_path = nd.join(format!("n{}.pem", node.0));
    let cluster = ClusterId::from_ca_der(ca.cert.der());

    // A node directory of another cluster is never reused.
    let ca_copy = nd.join("ca.pem");
    if ca_copy.exists() {
        let theirs = CaCert::load(&nd).context("reading the node's ca.pem")?;
        if theirs != ca.cert {
            bail!(
                "{} belongs to another cluster (its ca.pem is not {})",
                nd.display(),
                ca.dir.join("ca.pem").display()
            );
        }
    }

    if record.exists() {
        // Initialized before: keep everything, and check it is still whole.
        if !nd.exists() {
            bail!(
                "{node} was initialized before ({} exists) but {} is gone (copied to its host \
                 and removed?); `keel init` never creates a node twice: a second {node} would \
                 start on blank data",
                record.display(),
                nd.display()
            );
        }
        let issued =
            std::fs::read(&record).with_context(|| format!("reading {}", record.display()))?;
        match std::fs::read(&cert_path) {
            Ok(found) if found == issued => {}
            Ok(_) => bail!(
                "{} is not the certificate this CA issued to {node} ({})",
                cert_path.display(),
                record.display()
            ),
            Err(e) => bail!(
                "{node} was initialized before but {}: {e}",
                cert_path.display()
            ),
        }
        identity::verify(&data, cluster, node)
            .context("initialized before, but its data directory is not usable")?;
        if !ca_copy.exists() {
            ca.cert.save(&nd).context("writing the node's ca.pem")?;
        }
        return Ok(());
    }

    // A new node: its data directory first (refused if it holds anything),
    // then its certificate, then the CA's record that it exists. A crash in
    // between leaves no record, and a re-run picks up where this stopped.
    let cert = ca.cert.clone();
    let signer = ca.signer()?;
    std::fs::create_dir_all(&nd).with_context(|| format!("creating {}", nd.display()))?;
    stamp_data_dir(&data, &cert, node)?;
    let id = signer
        .issue_node_cert(node)
        .context("issuing its certificate")?;
    id.save(&nd).context("saving its certificate")?;
    cert.save(&nd).context("writing the node's ca.pem")?;
    let issued =
        std::fs::read(&cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
    std::fs::write(&record, issued).with_context(|| format!("writing {}", record.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::identity::IdentityError;

    /// Every file under `dir`, relative, sorted.
    fn files(dir: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    #[test]
    fn lays_out_one_directory_per_node_and_the_ca_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let paths = run(d, 3, 7100, false).unwrap();
        assert_eq!(paths[1], d.join("n2/n2.toml"));
        let mut expected = vec!["ca/ca.key".to_string(), "ca/ca.pem".to_string()];
        for i in 1..=3 {
            expected.push(format!("ca/n{i}.pem"));
            for f in ["ca.pem", "data/IDENTITY", &format!("n{i}.key")] {
                expected.push(format!("n{i}/{f}"));
            }
            expected.push(format!("n{i}/n{i}.pem"));
            expected.push(format!("n{i}/n{i}.toml"));
        }
        expected.sort();
        assert_eq!(files(d), expected);

        let ca = CaCert::load(&d.join("ca")).unwrap();
        for i in 1..=3u32 {
            let nd = d.join(format!("n{i}"));
            assert_eq!(CaCert::load(&nd).unwrap(), ca);
            let written = Config::load_as_written(&nd.join(format!("n{i}.toml"))).unwrap();
            assert_eq!(written.data_dir, PathBuf::from("data"));
            assert_eq!(written.tls.dir, PathBuf::from("."));
            let config = Config::load(&nd.join(format!("n{i}.toml"))).unwrap();
            assert_eq!(config.data_dir, nd.join("data"));
            identity::verify(
                &config.data_dir,
                ClusterId::from_ca_der(ca.der()),
                NodeId(i),
            )
            .unwrap();
        }
    }

    #[test]
    fn a_rerun_keeps_the_ca_certificates_and_identities() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        run(d, 3, 7100, false).unwrap();
        let snapshot = |d: &Path| -> Vec<(String, Vec<u8>)> {
            files(d)
                .into_iter()
                .filter(|f| !f.ends_with(".toml"))
                .map(|f| (f.clone(), std::fs::read(d.join(&f)).unwrap()))
                .collect()
        };
        let before = snapshot(d);
        // Chaos on: the configs change, nothing else does.
        run(d, 3, 7100, true).unwrap();
        assert_eq!(snapshot(d), before);
        assert!(Config::load(&d.join("n1/n1.toml")).unwrap().chaos);

        // Once every node exists, the CA key may be offline.
        let offline = tempfile::tempdir().unwrap();
        std::fs::rename(d.join("ca/ca.key"), offline.path().join("ca.key")).unwrap();
        run(d, 3, 7100, false).unwrap();
        assert_eq!(snapshot(d).len(), before.len() - 1, "only ca.key is gone");
        // Issuing a new node's certificate needs it, and a refusal leaves
        // the configs as they were.
        let config = std::fs::read(d.join("n1/n1.toml")).unwrap();
        let err = format!("{:#}", run(d, 4, 7100, false).unwrap_err());
        assert!(
            err.contains("N4: issuing a node certificate needs the CA key"),
            "{err}"
        );
        assert_eq!(std::fs::read(d.join("n1/n1.toml")).unwrap(), config);
        assert!(!d.join("n4").exists(), "a half-made N4");
    }

    #[test]
    fn a_node_that_lost_its_data_or_directory_is_not_initialized_again() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        run(d, 3, 7100, false).unwrap();

        std::fs::remove_file(d.join("n2/data/IDENTITY")).unwrap();
        let err = format!("{:#}", run(d, 3, 7100, false).unwrap_err());
        assert!(err.contains("N2: initialized before"), "{err}");
        assert!(err.contains("is empty"), "{err}");
        assert!(
            std::fs::read_dir(d.join("n2/data"))
                .unwrap()
                .next()
                .is_none(),
            "init wrote into the wiped directory"
        );

        std::fs::remove_dir_all(d.join("n2")).unwrap();
        let err = format!("{:#}", run(d, 3, 7100, false).unwrap_err());
        assert!(err.contains("never creates a node twice"), "{err}");
        assert!(!d.join("n2").exists(), "init re-created N2");
    }

    #[test]
    fn foreign_and_old_directories_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        run(&a, 3, 7100, false).unwrap();
        run(&b, 3, 7100, false).unwrap();
        // b's N1 directory dropped into a: another cluster's.
        std::fs::remove_dir_all(a.join("n1")).unwrap();
        std::fs::remove_file(a.join("ca/n1.pem")).unwrap();
        std::fs::rename(b.join("n1"), a.join("n1")).unwrap();
        let err = format!("{:#}", run(&a, 3, 7100, false).unwrap_err());
        assert!(err.contains("belongs to another cluster"), "{err}");

        // A data directory with data in it is never stamped.
        std::fs::remove_dir_all(a.join("n1")).unwrap();
        std::fs::create_dir_all(a.join("n1/data/db")).unwrap();
        let err = run(&a, 3, 7100, false).unwrap_err();
        assert!(
            matches!(
                err.root_cause().downcast_ref::<IdentityError>(),
                Some(IdentityError::Unstamped { .. })
            ),
            "{err:#}"
        );
        assert!(!a.join("n1/data/IDENTITY").exists());

        // The layout of an older keel.
        let old = tmp.path().join("old");
        std::fs::create_dir_all(old.join("certs")).unwrap();
        let err = format!("{:#}", run(&old, 3, 7100, false).unwrap_err());
        assert!(err.contains("older keel"), "{err}");

        // A CA that went missing is not silently replaced.
        std::fs::remove_dir_all(b.join("ca")).unwrap();
        let err = format!("{:#}", run(&b, 3, 7100, false).unwrap_err());
        assert!(err.contains("restore the cluster's CA"), "{err}");
        assert!(!b.join("ca").exists());
    }
}
