//! The harness end to end against three real `keel` node processes: a set
//! workload, a register workload and a bank workload (transfers between
//! accounts in different partitions, by message), each while one random node is
//! isolated twice, then a heal, final reads and every checker. Proves the harness drives a real cluster (the
//! isolated node really lost its peers) and that keel passes: no
//! acknowledged add lost, every node serving again within the bound after
//! the heal, the majority side available throughout, register histories
//! linearizable. About 25 s each.

use keel::harness::checker::Validity;
use keel::harness::history::read_jsonl;
use keel::harness::nemesis::{Fault, NemesisEvent};
use keel::harness::runner::{run, RunOptions};
use keel::harness::schedule::NemesisKind;
use keel::harness::workload::WorkloadKind;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

#[test]
fn set_under_partition_random_node_passes_every_checker() {
    smoke(WorkloadKind::Set, "set", 7);
}

#[test]
fn register_under_partition_random_node_passes_every_checker() {
    smoke(WorkloadKind::Register, "register", 11);
}

#[test]
fn bank_under_partition_random_node_passes_every_checker() {
    smoke(WorkloadKind::Bank, "bank", 13);
}

fn smoke(workload: WorkloadKind, checker: &str, seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut opts = RunOptions::new(workload, NemesisKind::PartitionRandomNode, seed);
    opts.keel = Some(PathBuf::from(env!("CARGO_BIN_EXE_keel")));
    opts.dir = Some(dir.clone());
    opts.concurrency = 6;
    // Two windows: faulted 3-6 s and 9-12 s, final heal at 12 s. After
    // it, 10 s of quiet window plus the 3 s a call in flight at the heal
    // may still take (2 s server deadline, 1 s client slack).
    opts.time = Duration::from_secs(12);
    opts.fault = Duration::from_secs(3);
    opts.heal = Duration::from_secs(3);
    opts.post_heal = Duration::from_secs(13);
    opts.request_timeout = Duration::from_millis(2000);
    assert!(opts.warnings().is_empty(), "{:?}", opts.warnings());
    opts.progress = None;

    let out = run(&opts).expect("the run completes");
    let s = &out.summary;
    let text = s.render();
    for name in [
        "history.jsonl",
        "nemesis.jsonl",
        "latency.svg",
        "summary.txt",
        "summary.json",
        "n1.log",
    ] {
        assert!(dir.join(name).is_file(), "{name} missing\n{text}");
    }
    // A valid run drops the nodes' data, keeping logs and histories.
    assert!(!dir.join("n1").exists(), "{text}");

    // The nemesis really cut nodes off.
    let events: Vec<NemesisEvent> =
        read_jsonl(std::fs::read(dir.join("nemesis.jsonl")).unwrap().as_slice()).unwrap();
    let isolated: BTreeSet<String> = events
        .iter()
        .filter_map(|e| match &e.fault {
            Fault::Partition { groups, .. } => groups
                .iter()
                .find(|g| g.len() == 1)
                .map(|g| g[0].to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(s.fault_windows, 2, "{text}");
    assert!(!isolated.is_empty(), "{events:?}");
    for node in &isolated {
        let dropped = s.dropped_datagrams.get(node).copied().unwrap_or(0);
        assert!(dropped > 0, "{node} dropped no datagrams\n{text}");
    }
    let cut_calls: usize = s.minority_calls.values().map(|m| m.failed_while_cut).sum();
    assert!(
        cut_calls > 0,
        "no call failed on an isolated node during its isolation\n{text}"
    );

    // keel passes.
    assert_eq!(s.bugs, 0, "{text}");
    assert!(s.node_exits.is_empty(), "{text}");
    assert!(s.nemesis_errors.is_empty(), "{text}");
    let names: Vec<&str> = s.results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["history", checker, "heal", "availability"],
        "{text}"
    );
    assert_eq!(s.valid, Validity::Valid, "{text}");
    assert!(s.ok > 100, "{text}");
    assert_eq!(s.recovery_ms.len(), 3, "{text}");
    assert!(
        s.recovery_ms
            .values()
            .all(|r| r.is_some_and(|ms| ms <= 3000.0)),
        "{text}"
    );
}
