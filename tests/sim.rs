//! The deterministic simulator over keel's protocol cores: one seed gives one
//! run, event for event; the CI budget of seeds passes with no bug switched
//! on; and each deliberately reintroduced bug is caught within that budget.

use keel::actors::bugs::{Bug, BugSet};
use keel::sim::{run, Report, SimConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Seeds every `cargo test` runs with no bug on.
const CI_SEEDS: u64 = 1000;

/// Runs seeds `0..count` on every core; returns the failing reports (all of
/// them if `stop_at_first` is false), in seed order.
fn sweep(config: &SimConfig, count: u64, stop_at_first: bool) -> Vec<Report> {
    let next = AtomicU64::new(0);
    let stop = AtomicU64::new(u64::MAX);
    let failures = Mutex::new(Vec::new());
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= count || seed > stop.load(Ordering::Relaxed) {
                    return;
                }
                let report = run(seed, config);
                if !report.passed() {
                    if stop_at_first {
                        stop.fetch_min(seed, Ordering::Relaxed);
                    }
                    failures.lock().unwrap().push(report);
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|r| r.seed);
    failures
}

fn describe(r: &Report) -> String {
    format!(
        "seed {} failed at {:?}: {:#?}\nreplay: cargo run --release --bin keel-sim -- --seed {} --trace",
        r.seed, r.failed_at, r.violations, r.seed
    )
}

#[test]
fn one_seed_gives_one_run_event_for_event() {
    let config = SimConfig {
        full_trace: true,
        ..SimConfig::default()
    };
    for seed in [7, 1234] {
        let a = run(seed, &config);
        let b = run(seed, &config);
        assert!(a.events > 1000, "a run does something: {} events", a.events);
        assert_eq!(a.trace.count(), b.trace.count());
        for (x, y) in a.trace.entries().zip(b.trace.entries()) {
            assert_eq!(x, y, "seed {seed}: the runs diverge");
        }
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_eq!(a.violations, b.violations);
        assert_eq!(a.ops, b.ops);
    }
    let other = run(8, &config);
    assert_ne!(other.trace_hash, run(7, &config).trace_hash, "seeds differ");
}

#[test]
fn the_ci_seeds_pass_with_no_bug() {
    let started = std::time::Instant::now();
    all_pass(&SimConfig::default(), CI_SEEDS);
    eprintln!("{CI_SEEDS} seeds in {:?}", started.elapsed());
}

/// Asserts that seeds `0..count` of `config` all pass (showing the first
/// three that do not).
fn all_pass(config: &SimConfig, count: u64) {
    let failures = sweep(config, count, false);
    let shown: Vec<String> = failures.iter().take(3).map(describe).collect();
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed:\n{}",
        failures.len(),
        shown.join("\n")
    );
}

/// The first seed below the CI budget that catches `bug`.
fn caught(bug: Bug) -> Report {
    let config = SimConfig {
        bugs: BugSet::NONE.with(bug),
        ..SimConfig::default()
    };
    first_catch(&config, CI_SEEDS, bug)
}

/// The first of seeds `0..count` of `config` that fails (it switches `bug` on).
fn first_catch(config: &SimConfig, count: u64, bug: Bug) -> Report {
    let failures = sweep(config, count, true);
    let first = failures.into_iter().next();
    let report = first.unwrap_or_else(|| panic!("{bug:?} not caught in {count} seeds"));
    eprintln!("{bug:?}: {}", describe(&report));
    report
}

#[test]
fn catches_seal_wrong_quorum() {
    caught(Bug::SealWrongQuorum);
}

#[test]
fn catches_store_after_seal() {
    caught(Bug::StoreAfterSeal);
}

#[test]
fn catches_apply_stale_epoch() {
    caught(Bug::ApplyStaleEpoch);
}

/// Not caught, and not expected to be: the bug needs a fenced record
/// stamped at least 60 s (the retention of an internal request id) past the
/// partition's log clock. A leader's accepted records move that clock to its
/// own, fencing drops a deposed leader's requests at once, and a run lasts
/// 24 simulated seconds, so the only way there is a leader with a clock a
/// minute ahead all of whose first requests are fenced: none of 1,000 seeds
/// (nor of 1,000 with a stranded new leader) produces one. The rule is
/// proven by the processor's unit test
/// (`the_bug_switches_break_fencing_and_batch_independence`).
#[test]
#[ignore = "needs a fenced record a minute past the log's clock; see the comment"]
fn catches_purge_by_batch() {
    caught(Bug::PurgeByBatch);
}

/// Caught by the register clients' history (linearizability) and by the
/// check that no CAS reported as a conflict was chosen.
#[test]
fn catches_conflict_after_partial_accept() {
    caught(Bug::ConflictAfterPartialAccept);
}

/// A repeat (a client's retry, or the processor's own retry of an append
/// whose outcome it could not know) lands in the batch of its first
/// application on one replica and not on another: their states differ.
#[test]
fn catches_dedup_misses_own_batch() {
    caught(Bug::DedupMissesOwnBatch);
}

#[test]
fn catches_repair_stops_at_first_gap() {
    caught(Bug::RepairStopsAtFirstGap);
}

/// Seeds every `cargo test` runs with lost disks in the schedule.
const WIPE_SEEDS: u64 = 300;

fn with_wipes(bugs: BugSet) -> SimConfig {
    let mut config = SimConfig {
        bugs,
        ..SimConfig::default()
    };
    config.faults.wipes = true;
    config
}

/// Half the crashes also lose the disk; the node comes back blank with
/// `--rejoin`. Every invariant holds (acknowledged records back at `r`
/// copies, the register linearizable, replicas equal), every rejoin ends,
/// and the runs really lost disks.
#[test]
fn the_wipe_seeds_pass_and_every_rejoin_ends() {
    let config = with_wipes(BugSet::NONE);
    all_pass(&config, WIPE_SEEDS);
    let (mut wipes, mut rejoins) = (0, 0);
    for seed in 0..40 {
        let r = run(seed, &config);
        wipes += r.wipes.0;
        rejoins += r.wipes.1;
    }
    assert!(wipes >= 10, "40 seeds lost only {wipes} disks");
    assert_eq!(rejoins, wipes, "every lost disk was rejoined");
}

/// A wiped node that starts blank (votes at once, takes its loglets for
/// empty and open) is caught.
#[test]
fn catches_rejoin_blank() {
    let config = with_wipes(BugSet::NONE.with(Bug::RejoinBlank));
    first_catch(&config, WIPE_SEEDS, Bug::RejoinBlank);
}

/// Seeds every `cargo test` runs with the gray faults in the schedule.
const GRAY_SEEDS: u64 = 150;

/// A slow disk (syncs 50–500 ms late) and a node that stalls for tens to
/// hundreds of milliseconds again and again, among the other faults: every
/// invariant holds, and the runs really slowed syncs and stalled nodes.
#[test]
fn the_gray_seeds_pass() {
    let mut config = SimConfig::default();
    config.faults.gray = true;
    all_pass(&config, GRAY_SEEDS);
    let (mut slow, mut stalled) = (0, 0);
    for seed in 0..40 {
        let r = run(seed, &config);
        slow += r.gray.0;
        stalled += r.gray.1;
    }
    assert!(slow > 100, "40 seeds delayed only {slow} syncs");
    assert!(stalled > 100, "40 seeds held back only {stalled} events");
}

/// A schedule that overloads N1 (partition 0's preferred leader: it
/// handles every event `delay` late) from 3 s to 9 s, then heals at 11 s.
fn overloading_n1(delay: u64) -> keel::sim::faults::Schedule {
    use keel::sim::faults::{Fault, Schedule};
    use keel::types::NodeId;
    use std::time::Duration;
    let overload = |ms| Fault::Overload {
        node: NodeId(1),
        delay: Duration::from_millis(ms),
    };
    let healed_at = Duration::from_secs(11);
    let events = vec![
        (Duration::from_secs(3), overload(delay)),
        (Duration::from_secs(9), overload(0)),
        (healed_at, Fault::HealAll),
    ];
    Schedule { events, healed_at }
}

/// An overloaded leader (every event handled 200 ms late): its links stay
/// up (the simulated detector never suspects it), but the records its
/// peers store for its sequencer wait for their commit, so its peers score
/// it degraded from commit progress alone (the simulated health score has
/// no link statistics) and a healthy node takes partition 0 over. A node
/// 20 ms late degrades nobody.
#[test]
fn an_overloaded_leader_is_scored_degraded_by_its_commits_and_replaced() {
    let config = |delay| SimConfig {
        schedule: Some(overloading_n1(delay)),
        ..SimConfig::default()
    };
    let heavy = run(1, &config(200));
    assert!(heavy.passed(), "{}", describe(&heavy));
    assert!(heavy.gray.1 > 100, "N1 really was late: {:?}", heavy.gray);
    let degraded = heavy.degradations.get(&1).copied().unwrap_or(0);
    assert!(
        degraded >= 2,
        "N1 scored degraded {degraded} times: {:?}",
        heavy.degradations
    );
    let p0_leaders: std::collections::BTreeSet<u32> = heavy
        .elected
        .iter()
        .filter(|((p, _), _)| *p == 0)
        .flat_map(|(_, nodes)| nodes.iter().copied())
        .collect();
    assert!(
        p0_leaders.contains(&1),
        "N1 led partition 0 first: {p0_leaders:?}"
    );
    assert!(
        p0_leaders.iter().any(|n| *n != 1),
        "partition 0 moved off N1: {:?}",
        heavy.elected
    );
    let light = run(1, &config(20));
    assert!(light.passed(), "{}", describe(&light));
    assert!(light.gray.1 > 100, "N1 really was late: {:?}", light.gray);
    assert_eq!(light.degradations.get(&1), None, "{:?}", light.degradations);
}
