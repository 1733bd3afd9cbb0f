//! Supervision inside a running node: a wedged or crashed actor is restarted
//! by its supervisor, the cluster keeps or resumes serving, and the restart
//! and the stuck wait are visible in `GET /cluster/status`.

mod common;

use common::*;
use keel::actors::supervisor::{Chaos, ChildStatus};
use keel::node::status::ClusterStatus;
use keel::rig::Rig;
use serde_json::json;
use std::time::Duration;

fn status(rig: &Rig, n: u32) -> ClusterStatus {
    ureq::get(&format!("{}/cluster/status", rig.http(n)))
        .timeout(Duration::from_secs(5))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

/// What node `n`'s status says of the supervised child at `path`.
fn child(rig: &Rig, n: u32, path: &str) -> Option<ChildStatus> {
    status(rig, n)
        .nodes
        .into_iter()
        .find(|r| r.node.0 == n)
        .and_then(|r| r.status)
        .and_then(|s| s.supervision.children.into_iter().find(|c| c.path == path))
}

fn restarts(rig: &Rig, n: u32, path: &str) -> u64 {
    child(rig, n, path).map_or(0, |c| c.restarts_total)
}

#[test]
fn a_wedged_leader_processor_is_restarted_and_its_partition_serves_again() {
    let rig = Rig::builder(3).partitions(1).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    let leader = leadership(&rig, 1, 0).unwrap().node.0;
    assert_eq!(post(&rig.http(1), "Counter/a/add", json!(1)).status, 200);
    // Wedge the leader's processor: its mailbox stops, with a stuck wait
    // registered (as a seal wait that never ends would be).
    rig.node(leader)
        .root
        .chaos(
            "root/partitions/processor-0",
            Chaos::Stall {
                wait: Some(Duration::from_millis(500)),
            },
        )
        .unwrap();
    let path = "root/partitions/processor-0";
    rig.wait_for(
        "the wedged processor is restarted",
        Duration::from_secs(5),
        |r| restarts(r, leader, path) >= 1,
    )
    .unwrap();
    let child = child(&rig, leader, path).unwrap();
    let reason = child.last_restart.unwrap().reason;
    assert!(
        reason.contains("chaos stall") || reason.contains("ping"),
        "restart reason: {reason}"
    );
    // The partition serves again, through every node.
    for n in 1..=3 {
        let r = post_raw(
            &rig.http(n),
            "Counter/a/add",
            "1",
            &[],
            Duration::from_secs(8),
        );
        assert_eq!(r.status, 200, "N{n} after the restart: {r:?}");
    }
    assert_eq!(
        post(&rig.http(2), "Counter/a/get", json!(null)).body,
        json!(4)
    );
}

#[test]
fn a_panicking_sealer_or_sequencer_manager_is_restarted_and_appends_continue() {
    let rig = Rig::builder(3).partitions(1).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    let leader = leadership(&rig, 1, 0).unwrap().node.0;
    for path in ["root/log/sealer", "root/log/sequencers"] {
        let before = restarts(&rig, leader, path);
        rig.node(leader).root.chaos(path, Chaos::Panic).unwrap();
        // A caught panic restarts at once; the deadline is for a loaded
        // machine (seen to miss 5 s with the two cores oversubscribed).
        rig.wait_for(&format!("{path} restarted"), Duration::from_secs(10), |r| {
            restarts(r, leader, path) > before
        })
        .unwrap();
        // Losing the sequencers means their loglet is sealed and the log moves
        // on; requests keep succeeding.
        let r = post_raw(
            &rig.http(leader),
            "Set/x/add",
            &format!("\"{path}\""),
            &[],
            Duration::from_secs(8),
        );
        assert_eq!(r.status, 200, "after restarting {path}: {r:?}");
    }
    assert_eq!(
        post(&rig.http(1), "Set/x/read", json!(null)).body,
        json!(["root/log/sealer", "root/log/sequencers"])
    );
}

#[test]
fn a_wedged_log_server_does_not_stop_the_cluster() {
    let rig = Rig::builder(3).partitions(1).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    let leader = leadership(&rig, 1, 0).unwrap().node.0;
    assert_eq!(post(&rig.http(1), "Counter/w/add", json!(1)).status, 200);
    let path = "root/log/log-server";
    // Wedge the leader's own log-server (no wait: only the ping notices).
    rig.node(leader)
        .root
        .chaos(path, Chaos::Stall { wait: None })
        .unwrap();
    // While it is wedged, the partition keeps serving through every node:
    // two other copies make a commit, and the leader reads what it cannot
    // find locally from its peers.
    for n in [leader, leader % 3 + 1, (leader + 1) % 3 + 1] {
        let r = post_raw(
            &rig.http(n),
            "Counter/w/add",
            "1",
            &[("keel-timeout-ms", "1000")],
            Duration::from_secs(3),
        );
        assert_eq!(
            r.status, 200,
            "N{n} while N{leader}'s log-server is wedged: {r:?}"
        );
    }
    assert_eq!(
        restarts(&rig, leader, path),
        0,
        "the requests above ran before the restart"
    );
    rig.wait_for(
        "the wedged log-server is restarted",
        Duration::from_secs(6),
        |r| restarts(r, leader, path) >= 1,
    )
    .unwrap();
    assert_eq!(
        post(&rig.http(2), "Counter/w/get", json!(null)).body,
        json!(4)
    );
}
