//! The soak end to end against three real `keel` node processes, short:
//! 15 s of mixed load over 1,000 keys, a sample every 2 s. Proves that
//! every node is sampled (memory, disk, bytes written), that requests are
//! acknowledged, and that every counter read back lies between its
//! acknowledged and attempted adds. About 20 s.

use keel::harness::soak::sample::parse_csv;
use keel::harness::soak::{run, SoakOptions};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

#[test]
fn a_short_soak_samples_every_node_and_its_counters_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("soak");
    let mut opts = SoakOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_keel")), dir.clone());
    opts.time = Duration::from_secs(15);
    opts.keys = 1000;
    opts.sample = Duration::from_secs(2);
    opts.idempotency_retention = Duration::from_secs(5);
    opts.progress = false;
    opts.seed = 3;

    let out = run(&opts).expect("the soak runs");
    let text = &out.summary;
    assert!(out.passed(), "{text}");
    assert!(out.counters.ok > 100, "{text}");
    assert!(out.acked > 1000, "{text}");

    let csv = std::fs::read_to_string(dir.join("resources.csv")).unwrap();
    let samples = parse_csv(&csv);
    assert_eq!(samples, out.samples, "the csv holds what was sampled");
    let nodes: BTreeSet<u32> = samples.iter().map(|s| s.node).collect();
    assert_eq!(nodes, BTreeSet::from([1, 2, 3]), "{csv}");
    for node in 1..=3 {
        let mine: Vec<_> = samples.iter().filter(|s| s.node == node).collect();
        // 15 s every 2 s: the first at 0 s, then 2 s, 4 s, ... and a last.
        assert!(mine.len() >= 6, "n{node}: {csv}");
        let last = mine.last().unwrap();
        assert!(mine.iter().all(|s| s.rss_kib > 0), "n{node}: {csv}");
        assert!(last.records > 0 && last.state > 0, "n{node}: {csv}");
        assert!(last.write_bytes > 0, "n{node}: {csv}");
        assert!(last.acked > 0, "n{node}: {csv}");
    }
    assert!(
        text.contains("bytes written per acknowledged request"),
        "{text}"
    );
    assert!(text.contains("counter check: PASS"), "{text}");
    let summary = std::fs::read_to_string(dir.join("summary.txt")).unwrap();
    assert!(summary.trim_end().ends_with("PASS"), "{summary}");
    assert!(
        !dir.join("n1").exists(),
        "a passing run drops the nodes' data"
    );
    assert!(dir.join("n1.log").is_file());
}
