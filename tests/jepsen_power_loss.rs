//! The harness' `power-loss` nemesis end to end: three real `keel node`
//! processes, each with its data directory on its own powerfs mount, a set
//! workload, one power loss of a single node and then one of the whole
//! cluster at once (every node `kill -9`ed, every mount's unsynced writes
//! dropped), restarts on what survived, final reads and every checker.
//!
//! Proves that the power losses really happened and really dropped
//! unsynced data (from the mounts' own reports), that nothing was up while
//! the whole cluster was down, that the mounts are gone afterwards, and that
//! keel passes: no acknowledged add lost, every node serving again after
//! the final heal. About 30 s.
//!
//! Where FUSE cannot be used it prints `SKIPPED ...: FUSE unavailable: ...`
//! and returns; `KEEL_POWERFS_REQUIRED=1` makes that a failure.

use keel::harness::checker::Validity;
use keel::harness::history::read_jsonl;
use keel::harness::nemesis::{Fault, NemesisEvent};
use keel::harness::runner::{run, RunOptions};
use keel::harness::schedule::NemesisKind;
use keel::harness::workload::WorkloadKind;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Whether FUSE works here; prints why not (past libtest's capture, so a
/// skip never passes silently).
fn fuse_or_skip(test: &str) -> bool {
    match keel::powerfs::available() {
        Ok(()) => true,
        Err(why) => {
            if std::env::var_os("KEEL_POWERFS_REQUIRED").is_some() {
                panic!("{test}: KEEL_POWERFS_REQUIRED is set but FUSE is unavailable: {why}");
            }
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: FUSE unavailable: {why}");
            false
        }
    }
}

#[test]
fn set_under_single_node_and_whole_cluster_power_loss_loses_nothing_acknowledged() {
    let test = "set_under_single_node_and_whole_cluster_power_loss_loses_nothing_acknowledged";
    if !fuse_or_skip(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut opts = RunOptions::new(WorkloadKind::Set, NemesisKind::PowerLoss, 17);
    opts.keel = Some(PathBuf::from(env!("CARGO_BIN_EXE_keel")));
    opts.powerfs_exe = Some(PathBuf::from(env!("CARGO_BIN_EXE_keel-powerfs")));
    opts.dir = Some(dir.clone());
    opts.concurrency = 6;
    // Two windows: 3-6 s one node, 9-12 s the whole cluster; final heal at
    // 12 s. After it, 10 s of quiet window plus the 4 s a call in flight
    // at the heal may still take (3 s server deadline, 1 s client slack).
    opts.time = Duration::from_secs(12);
    opts.fault = Duration::from_secs(3);
    opts.heal = Duration::from_secs(3);
    opts.post_heal = Duration::from_secs(14);
    opts.request_timeout = Duration::from_millis(3000);
    assert!(opts.warnings().is_empty(), "{:?}", opts.warnings());
    opts.progress = None;

    let out = run(&opts).expect("the run completes");
    let s = &out.summary;
    let text = s.render();
    for name in [
        "history.jsonl",
        "nemesis.jsonl",
        "summary.txt",
        "n1.log",
        "n1.powerfs.log",
        "n2.powerfs.log",
        "n3.powerfs.log",
    ] {
        assert!(dir.join(name).is_file(), "{name} missing\n{text}");
    }

    // Two power losses: first one node, then all three at once.
    let events: Vec<NemesisEvent> =
        read_jsonl(std::fs::read(dir.join("nemesis.jsonl")).unwrap().as_slice()).unwrap();
    let losses: Vec<(usize, usize)> = events
        .iter()
        .filter_map(|e| match &e.fault {
            Fault::PowerLoss { nodes, dropped, .. } => Some((nodes.len(), dropped.len())),
            _ => None,
        })
        .collect();
    assert_eq!(losses, [(1, 1), (3, 3)], "{events:?}\n{text}");
    let restarts = events
        .iter()
        .filter(|e| matches!(e.fault, Fault::Restart { .. }))
        .count();
    assert_eq!(restarts, 4, "{events:?}");
    assert_eq!(s.fault_windows, 2, "{text}");
    assert!(s.on_powerfs, "{text}");
    assert_eq!(s.power_losses.len(), 2, "{text}");
    assert_eq!(s.power_losses[1].nodes.len(), 3, "{text}");

    // They dropped writes the nodes had not synced yet: the nemesis aims
    // at a moment a victim holds some.
    let dropped: u64 = s.power_losses.iter().map(|p| p.bytes_dropped()).sum();
    assert!(dropped > 0, "no power loss dropped unsynced data\n{text}");
    // The nodes really wrote through their mounts, and synced.
    assert_eq!(s.powerfs_stats.len(), 3, "{text}");
    for (node, st) in &s.powerfs_stats {
        assert!(st.fsyncs > 0 && st.writes > 0, "{node}: {st:?}\n{text}");
    }
    let cut: u64 = s.powerfs_stats.values().map(|st| st.power_losses).sum();
    assert_eq!(cut, 4, "the mounts count 1 + 3 power losses\n{text}");

    // While the whole cluster was down nobody served; every node's calls
    // failed (they were refused or timed out) while it was down.
    for node in ["N1", "N2", "N3"] {
        let m = s.minority_calls.get(node).cloned().unwrap_or_default();
        assert!(
            m.failed_while_cut > 0,
            "{node} never failed while down\n{text}"
        );
        assert_eq!(m.served_while_cut, 0, "{node} served while down\n{text}");
    }

    // The mounts are gone, and a valid run removed the data with them.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let root = tmp.path().canonicalize().unwrap();
    assert!(
        !mounts.lines().any(|l| l
            .split(' ')
            .nth(1)
            .is_some_and(|m| m.starts_with(root.to_str().unwrap()))),
        "a powerfs mount outlived the run:\n{mounts}"
    );

    // keel passes.
    assert_eq!(s.bugs, 0, "{text}");
    assert!(s.node_exits.is_empty(), "{text}");
    assert!(s.nemesis_errors.is_empty(), "{text}");
    let names: Vec<&str> = s.results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["history", "set", "heal", "availability"], "{text}");
    assert_eq!(s.valid, Validity::Valid, "{text}");
    assert!(!dir.join("n1").exists(), "{text}");
    assert!(s.ok > 100, "{text}");
}
