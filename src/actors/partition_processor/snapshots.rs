//! The processor shell's snapshot I/O: writing a snapshot the core took,
//! serving this node's snapshots to peers chunk by chunk, and fetching one
//! from the peers for a core behind the trim point. The rules (when to take
//! one, which to accept, how to restore it) are the core's (`lifecycle.rs`).
//!
//! A fetch first asks every reachable peer which snapshot it holds (a
//! [`GetSnapshot`] for zero bytes), then downloads from the peer with the
//! newest, chunk by chunk, each call with its own deadline; the assembled
//! file is verified (checksum, partition, LSN) before the core sees it. A
//! damaged file, a peer that goes away or a snapshot deleted meanwhile
//! moves on to the next peer.

use super::messages::{
    FetchError, GetSnapshot, SnapshotChunk, SnapshotServeError, MAX_SNAPSHOT_CHUNK,
};
use crate::node::Net;
use crate::storage::{Snapshot, SnapshotDir, SnapshotError, Storage};
use crate::types::{Lsn, NodeId, PartitionId};
use std::time::Duration;
use tracing::warn;

/// How long a peer has to say which snapshot it holds.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one chunk of a snapshot may take.
pub const CHUNK_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest snapshot file accepted from a peer (a length beyond it is
/// a garbage answer, not an allocation to make).
pub const MAX_SNAPSHOT_BYTES: u64 = 8 << 30;

/// Where and how often this node snapshots its partitions.
#[derive(Clone, Debug)]
pub struct SnapshotSettings {
    /// The snapshot directory.
    pub dir: SnapshotDir,
    /// Applied records between two scheduled snapshots (0: on demand only).
    pub every: u64,
    /// Snapshots kept per partition (at least 1).
    pub retain: usize,
}

impl SnapshotSettings {
    /// From a node's configuration.
    pub fn from_config(config: &crate::config::Config) -> Self {
        SnapshotSettings {
            dir: SnapshotDir::new(config.snapshot_dir()),
            every: config.snapshot_every_records,
            retain: config.snapshot_retain.max(1) as usize,
        }
    }
}

/// Syncs the state lane, then writes `snapshot` durably and applies the
/// retention: the snapshot counts only once this returns `Ok`.
pub async fn write(
    storage: Storage,
    settings: SnapshotSettings,
    snapshot: Snapshot,
) -> Result<(), String> {
    storage
        .sync_state()
        .await
        .map_err(|e| format!("syncing state before the snapshot: {e}"))?;
    let partition = snapshot.partition;
    let written = tokio::task::spawn_blocking(move || {
        settings.dir.write(&snapshot)?;
        if let Err(e) = settings.dir.retain(partition, settings.retain) {
            // The new snapshot is whole and durable; an old one lingers.
            warn!(%partition, "removing old snapshots failed: {e}");
        }
        Ok::<(), SnapshotError>(())
    })
    .await;
    match written {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("snapshot writer failed: {e}")),
    }
}

/// Answers a peer's [`GetSnapshot`] from `dir` (blocking file reads).
pub fn serve(
    dir: &SnapshotDir,
    partition: PartitionId,
    req: &GetSnapshot,
) -> Result<SnapshotChunk, SnapshotServeError> {
    if req.partition != partition {
        return Err(SnapshotServeError::BadRequest(format!(
            "partition {} asked of partition {partition}'s processor",
            req.partition
        )));
    }
    let unreadable = |e: SnapshotError| SnapshotServeError::Unreadable(e.to_string());
    let newest = dir.latest(partition).map_err(unreadable)?;
    let lsn = match req.lsn {
        Some(lsn) => lsn,
        None => newest.unwrap_or_default(),
    };
    if newest.is_none() || lsn < req.at_least {
        return Err(SnapshotServeError::NoneHeld {
            partition,
            at_least: req.at_least,
            newest,
        });
    }
    let max = req.max_bytes.min(MAX_SNAPSHOT_CHUNK) as usize;
    match dir.read_range(partition, lsn, req.offset, max) {
        Ok((total_len, bytes)) => Ok(SnapshotChunk {
            lsn,
            total_len,
            bytes,
        }),
        Err(SnapshotError::Missing { .. }) => Err(SnapshotServeError::NoneHeld {
            partition,
            at_least: req.at_least,
            newest,
        }),
        Err(e @ SnapshotError::Io(_)) if req.offset > 0 => {
            Err(SnapshotServeError::BadRequest(e.to_string()))
        }
        Err(e) => Err(unreadable(e)),
    }
}

/// The peers holding a snapshot of `partition` at `at_least` or later, the
/// newest first.
pub async fn probe(net: &Net, partition: PartitionId, at_least: Lsn) -> Vec<(NodeId, Lsn)> {
    let env = net.env();
    let asks = env.peers().filter(|p| !env.is_suspected(*p)).map(|peer| {
        let net = net.clone();
        async move {
            let req = GetSnapshot {
                partition,
                at_least,
                lsn: None,
                offset: 0,
                max_bytes: 0,
            };
            match net.call(peer, req, PROBE_TIMEOUT).await {
                Ok(Ok(chunk)) if chunk.lsn >= at_least => Some((peer, chunk.lsn)),
                _ => None,
            }
        }
    });
    let mut found: Vec<(NodeId, Lsn)> = futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    found.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    found
}

/// Downloads `from`'s snapshot of `partition` at `lsn` and verifies it.
pub async fn download(
    net: &Net,
    from: NodeId,
    partition: PartitionId,
    lsn: Lsn,
) -> Result<Snapshot, FetchError> {
    let failed = |reason: String| FetchError::Failed { from, lsn, reason };
    let mut bytes: Vec<u8> = Vec::new();
    let mut total: Option<u64> = None;
    loop {
        let req = GetSnapshot {
            partition,
            at_least: lsn,
            lsn: Some(lsn),
            offset: bytes.len() as u64,
            max_bytes: MAX_SNAPSHOT_CHUNK,
        };
        let chunk = match net.call(from, req, CHUNK_TIMEOUT).await {
            Ok(Ok(chunk)) => chunk,
            Ok(Err(e)) => return Err(failed(e.to_string())),
            Err(e) => return Err(failed(e.to_string())),
        };
        if chunk.lsn != lsn {
            return Err(failed(format!("a chunk of the snapshot at {}", chunk.lsn)));
        }
        if chunk.total_len > MAX_SNAPSHOT_BYTES {
            return Err(failed(format!("{} bytes is too large", chunk.total_len)));
        }
        if total.is_some_and(|t| t != chunk.total_len) {
            return Err(failed("its length changed between chunks".into()));
        }
        total = Some(chunk.total_len);
        let got = bytes.len() as u64 + chunk.bytes.len() as u64;
        if got > chunk.total_len || (chunk.bytes.is_empty() && got < chunk.total_len) {
            return Err(failed("chunks do not add up to its length".into()));
        }
        bytes.extend_from_slice(&chunk.bytes);
        if got == chunk.total_len {
            break;
        }
    }
    let decoded = tokio::task::spawn_blocking(move || Snapshot::decode(&bytes))
        .await
        .map_err(|e| failed(format!("verifying: {e}")))?
        .map_err(|e| failed(e.to_string()))?;
    if (decoded.partition, decoded.lsn) != (partition, lsn) {
        return Err(failed(format!(
            "it holds partition {} at LSN {}",
            decoded.partition, decoded.lsn
        )));
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PartitionId = PartitionId(1);

    fn ask(at_least: u64, lsn: Option<u64>, offset: u64, max_bytes: u32) -> GetSnapshot {
        GetSnapshot {
            partition: P,
            at_least: Lsn(at_least),
            lsn: lsn.map(Lsn),
            offset,
            max_bytes,
        }
    }

    #[test]
    fn a_peer_is_served_the_newest_snapshot_in_chunks_and_garbage_gets_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::new(tmp.path());
        let none = serve(&dir, P, &ask(0, None, 0, 0));
        assert!(matches!(
            none,
            Err(SnapshotServeError::NoneHeld { newest: None, .. })
        ));
        for lsn in [5, 9] {
            let s = Snapshot {
                partition: P,
                lsn: Lsn(lsn),
                entries: vec![(b"oa".to_vec(), vec![lsn as u8; 100])],
            };
            dir.write(&s).unwrap();
        }
        let probe = serve(&dir, P, &ask(6, None, 0, 0)).unwrap();
        assert_eq!((probe.lsn, probe.bytes.len()), (Lsn(9), 0));
        let whole = dir.read_bytes(P, Lsn(9)).unwrap();
        assert_eq!(probe.total_len, whole.len() as u64);
        let chunk = serve(&dir, P, &ask(6, Some(9), 10, 50)).unwrap();
        assert_eq!(chunk.bytes, whole[10..60]);
        let huge = serve(&dir, P, &ask(0, Some(9), 0, u32::MAX)).unwrap();
        assert_eq!(huge.bytes, whole, "capped, and the file is small");
        // An older one on request, but never one older than asked for.
        assert_eq!(serve(&dir, P, &ask(0, Some(5), 0, 0)).unwrap().lsn, Lsn(5));
        assert!(matches!(
            serve(&dir, P, &ask(10, None, 0, 0)),
            Err(SnapshotServeError::NoneHeld {
                newest: Some(Lsn(9)),
                ..
            })
        ));
        assert!(matches!(
            serve(&dir, P, &ask(0, Some(7), 0, 10)),
            Err(SnapshotServeError::NoneHeld { .. })
        ));
        assert!(matches!(
            serve(&dir, P, &ask(0, Some(9), 1 << 40, 10)),
            Err(SnapshotServeError::BadRequest(_))
        ));
        let mut other = ask(0, None, 0, 0);
        other.partition = PartitionId(2);
        assert!(matches!(
            serve(&dir, P, &other),
            Err(SnapshotServeError::BadRequest(_))
        ));
    }
}
