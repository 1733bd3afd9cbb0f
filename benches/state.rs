//! The partition state's write path alone: `PartitionStore::apply` of the
//! batches a processor writes for `Counter/add` requests, on a real sled
//! store in a temporary directory (what every replica does for every
//! applied batch, so its cost is paid three times per request).
//!
//! Each request writes what the applier writes for an add with a generated
//! request id: the counter (8 bytes), the request's stored result (a
//! MessagePack entry of about 60 bytes) and its expiry-index key; each batch
//! also sets the applied LSN. Batches of 1, 16 and 256 requests, over 100
//! and 100,000 keys, for `KEEL_BENCH_SECS` (default 2) each. Nothing expires
//! within a run (a node also removes expired results, from a minute into a
//! load on). The bench never syncs the state (a node does every 200 ms on
//! its state lane, off this path); sled's own flusher runs as in a node.
//!
//! Run with `cargo bench --bench state`.

mod common;

use anyhow::Result;
use common::*;
use keel::actors::partition_processor::core::expiry_key;
use keel::storage::{PartitionWrite, Storage};
use keel::types::{Lsn, PartitionId};
use std::time::Instant;

fn main() -> Result<()> {
    let secs = phase_secs(2);
    println!(
        "keel state benchmark: PartitionStore::apply of Counter/add batches (sled, one partition)"
    );
    println!(
        "machine: {}; load average at start: {}",
        machine(),
        load_average()
    );
    let dir = tempfile::Builder::new().prefix("keel-state-").tempdir()?;
    let fsync = Latency::of(&mut fsync_samples(dir.path(), 100)?);
    let mut rows = vec![Row::fsync(fsync, dir.path())];
    let mut lsn = 0u64;
    for keys in [100u64, 100_000] {
        for batch in [1usize, 16, 256] {
            let storage = Storage::open(&dir.path().join(format!("s-{keys}-{batch}")))?;
            let store = storage.partition(PartitionId(0))?;
            let mut samples = Vec::new();
            let mut requests = 0usize;
            let started = Instant::now();
            while started.elapsed() < secs {
                let mut write = PartitionWrite::default();
                for _ in 0..batch {
                    let n = requests as u64;
                    let key = format!("Counter/k{}", n.wrapping_mul(2_654_435_761) % keys);
                    write.put_object(key.as_bytes(), &n.to_be_bytes());
                    let id = format!("g:1:{n:016x}");
                    write.put_dedup(id.as_bytes(), &[0x93; 60]);
                    write.put_meta(&expiry_key(n + 60_000, id.as_bytes()), b"");
                    requests += 1;
                }
                lsn += 1;
                write.set_applied(Lsn(lsn));
                let t = Instant::now();
                store.apply(write)?;
                samples.push(t.elapsed());
            }
            let elapsed = started.elapsed();
            let latency = Latency::of(&mut samples);
            rows.push(Row {
                phase: format!("batch {batch}, {keys} keys"),
                clients: 1,
                ops: requests,
                errors: 0,
                per_sec: Some(requests as f64 / elapsed.as_secs_f64()),
                latency,
                fsync_p50: fsync.p50,
                note: format!("{} batches; latency is per batch", latency.count),
            });
            drop(store);
            drop(storage);
        }
    }
    println!();
    print_table("requests", &rows);
    Ok(())
}
