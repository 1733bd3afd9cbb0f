//! The failure detector on the rig: a node whose packets stop arriving is
//! suspected within 1.5 s by every peer, and a healed link is back within 1 s.

use keel::rig::Rig;
use keel::types::NodeId;
use std::time::{Duration, Instant};

#[test]
fn isolated_node_is_suspected_within_1_5s_and_back_within_1s_of_the_heal() {
    let rig = Rig::builder(3).logs_only().start().unwrap();
    rig.wait_for("all links up", Duration::from_secs(10), |r| {
        r.ids().iter().all(|&a| {
            r.ids()
                .iter()
                .all(|&b| a == b || !r.node(a.0).net.is_suspected(b))
        })
    })
    .unwrap();

    let cut_at = Instant::now();
    rig.isolate(1);
    let mut suspected_after = Vec::new();
    for (observer, target) in [(2, 1), (3, 1), (1, 2), (1, 3)] {
        rig.wait_for(
            &format!("N{observer} suspects N{target}"),
            Duration::from_secs(3),
            |r| r.node(observer).net.is_suspected(NodeId(target)),
        )
        .unwrap();
        suspected_after.push(cut_at.elapsed());
    }
    // The majority keeps its own link.
    assert!(!rig.node(2).net.is_suspected(NodeId(3)));
    let worst_detection = *suspected_after.iter().max().unwrap();

    let healed_at = Instant::now();
    rig.heal();
    rig.wait_for(
        "N1 reconnected to both peers",
        Duration::from_secs(3),
        |r| {
            [2, 3]
                .iter()
                .all(|&p| !r.node(1).net.is_suspected(NodeId(p)))
                && [2, 3]
                    .iter()
                    .all(|&p| !r.node(p).net.is_suspected(NodeId(1)))
        },
    )
    .unwrap();
    let reconnect = healed_at.elapsed();
    eprintln!("detection: worst {worst_detection:?}; reconnect after heal: {reconnect:?}");
    assert!(
        worst_detection < Duration::from_millis(1500),
        "detection took {worst_detection:?}"
    );
    assert!(
        reconnect < Duration::from_secs(1),
        "reconnect took {reconnect:?}"
    );
}
