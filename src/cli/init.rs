//! `keel init`: a cluster CA, one certificate per node and one config file
//! per node, all under one directory.

use crate::config::Config;
use crate::transport::ClusterCa;
use crate::types::NodeId;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Writes (or reuses) certificates and configs; returns the config paths.
/// An existing CA is kept, so re-running never invalidates running nodes.
pub fn run(dir: &Path, nodes: u32, base_port: u16, chaos: bool) -> Result<Vec<PathBuf>> {
    if !(1..=9).contains(&nodes) {
        bail!("--nodes must be between 1 and 9, got {nodes}");
    }
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).with_context(|| format!("creating {}", certs.display()))?;
    let ca = if certs.join("ca.pem").exists() {
        ClusterCa::load(&certs).context("loading the existing cluster CA")?
    } else {
        let ca = ClusterCa::generate().context("generating the cluster CA")?;
        ca.save(&certs).context("saving the cluster CA")?;
        ca
    };
    let mut paths = Vec::new();
    for i in 1..=nodes {
        if !certs.join(format!("n{i}.pem")).exists() {
            ca.issue_node_cert(NodeId(i))
                .and_then(|id| id.save(&certs))
                .with_context(|| format!("issuing the certificate of N{i}"))?;
        }
        let mut config = Config::local_cluster(nodes, i, dir, base_port);
        config.chaos = chaos;
        config.validate()?;
        let path = dir.join(format!("n{i}.toml"));
        std::fs::write(&path, config.to_toml())
            .with_context(|| format!("writing {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}
