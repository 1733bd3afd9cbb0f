//! Gray failures on the rig: a node that is alive but sick. Its peers must
//! not take slowness for death, and partitions led by healthy nodes must
//! keep their leaders.

mod common;

use common::*;
use keel::rig::Rig;
use keel::types::{Epoch, NodeId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every ordered pair of distinct nodes that suspects the other right now.
fn suspicions(rig: &Rig) -> Vec<(u32, u32)> {
    let ids = rig.ids();
    let mut out = Vec::new();
    for a in &ids {
        for b in &ids {
            if a != b && rig.node(a.0).net.is_suspected(*b) {
                out.push((a.0, b.0));
            }
        }
    }
    out
}

/// Every `(observer, peer, why)` where the observer scores the peer's
/// commits as lagging right now.
fn commits_lagging(rig: &Rig) -> Vec<(u32, u32, String)> {
    let mut out = Vec::new();
    for a in rig.ids() {
        for p in rig.node(a.0).transport.peers() {
            let why = p.health.and_then(|h| h.why).unwrap_or_default();
            if why.contains("commits") {
                out.push((a.0, p.node.0, why));
            }
        }
    }
    out
}

/// Sequential counter adds through `via` until `until`, at most `max`;
/// returns (acknowledged, sent).
fn load(base: String, until: Instant, max: u64) -> std::thread::JoinHandle<(u64, u64)> {
    load_while(base, Arc::new(AtomicBool::new(false)), until, max)
}

/// As [`load`], also ending once `stop` is set.
fn load_while(
    base: String,
    stop: Arc<AtomicBool>,
    until: Instant,
    max: u64,
) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut ok, mut sent) = (0, 0);
        while Instant::now() < until && sent < max && !stop.load(Ordering::Relaxed) {
            let reply = post(&base, &format!("Counter/g{}/add", sent % 30), 1.into());
            sent += 1;
            ok += u64::from(reply.status == 200);
        }
        (ok, sent)
    })
}

#[test]
fn a_node_whose_syncs_take_500_ms_is_not_suspected_and_healthy_leaders_stay() {
    // Three partitions on three nodes: each node leads one.
    let rig = Rig::builder(3).partitions(3).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    rig.wait_for("no suspicions", Duration::from_secs(5), |r| {
        suspicions(r).is_empty()
    })
    .unwrap();
    let before = leaders(&rig);
    let slow = 3;
    assert!(
        before.values().any(|(n, _)| *n != NodeId(slow)),
        "a healthy node leads something: {before:?}"
    );

    rig.node(slow)
        .storage
        .set_slow_sync(Duration::from_millis(500));
    let window = Duration::from_secs(6);
    let until = Instant::now() + window;
    let clients: Vec<_> = [1, 2]
        .iter()
        .map(|&via| load(rig.http(via), until, 20_000))
        .collect();
    let mut seen = Vec::new();
    let mut lagging = Vec::new();
    let mut max_epochs = std::collections::BTreeMap::new();
    while Instant::now() < until {
        seen.extend(suspicions(&rig));
        lagging.extend(commits_lagging(&rig));
        for (p, (_, e)) in leaders(&rig) {
            let m = max_epochs.entry(p).or_insert(e);
            *m = (*m).max(e);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, sent) = clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    rig.node(slow).storage.set_slow_sync(Duration::ZERO);

    // The fault was real: the slow node's syncs really took 500 ms.
    let stats = rig.node(slow).storage.stats();
    let slowest = stats
        .records_sync
        .max_sync_micros
        .max(stats.state_sync.max_sync_micros);
    assert!(slowest >= 500_000, "slowest sync {slowest} µs: {stats:?}");
    eprintln!("{ok} of {sent} requests acknowledged during the slow disk");
    assert!(ok > 0, "nothing was served during the slow disk");
    assert!(seen.is_empty(), "suspected during a slow disk: {seen:?}");
    // N3's sequencer commits through the two fast servers: a slow disk is
    // not a slow sequencer.
    assert!(lagging.is_empty(), "commits called lagging: {lagging:?}");
    for (p, (leader, epoch)) in &before {
        if *leader != NodeId(slow) {
            assert_eq!(
                max_epochs[p], *epoch,
                "partition {p}, led by healthy {leader}, changed leader"
            );
        }
    }
}

#[test]
fn in_a_bridge_the_follower_cut_off_from_the_sequencer_keeps_applying_without_a_seal() {
    let rig = Rig::builder(3).partitions(1).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    rig.wait_connected(Duration::from_secs(10)).unwrap();
    let leader = (1..=3)
        .find(|&n| leader_mode(&rig, n, 0).as_deref() == Some("Leader"))
        .unwrap();
    let sequencer = sequencer_of(&rig, leader, LOG).0;
    let follower = (1..=3).find(|&n| n != sequencer).unwrap();
    let segments = chain(&rig, leader, LOG).segments.len();
    // Some committed records first, so every replica is applying.
    add_counters(&rig, leader, 0, 20);

    // A bridge: the follower cannot reach the sequencer; both reach the third.
    rig.cut(sequencer, follower);
    rig.wait_for("the cut is noticed", Duration::from_secs(5), |r| {
        r.node(follower).net.is_suspected(NodeId(sequencer))
    })
    .unwrap();
    // For the whole fault, every replica's applied LSN grows within every
    // window (the sequencer's node and the third node by the stores they
    // get, the cut-off follower only through the third node).
    let fault = Duration::from_secs(6);
    let window = Duration::from_millis(1_500);
    let start = Instant::now();
    let writer = load(rig.http(leader), start + fault, 20_000);
    let applied = |r: &Rig| -> Vec<u64> {
        (1..=3)
            .map(|n| processor_status(r, n).map_or(0, |s| s.applied_lsn.0))
            .collect()
    };
    let mut before = applied(&rig);
    let mut steps = 0;
    while start.elapsed() < fault {
        let grew = rig.wait_until("every replica applies more", window, |r| {
            let now = applied(r);
            now.iter().zip(&before).all(|(a, b)| a > b).then_some(now)
        });
        before = grew.unwrap_or_else(|e| {
            panic!(
                "{:?} into the fault: applied {:?}, a window ago {before:?} \
                 (follower N{follower} cut from sequencer N{sequencer}): {e}",
                start.elapsed(),
                applied(&rig),
            )
        });
        steps += 1;
        assert!(
            rig.node(follower).net.is_suspected(NodeId(sequencer)),
            "the bridge still holds"
        );
    }
    assert!(steps >= 2, "{steps} steps of progress in {fault:?}");
    let (ok, sent) = writer.join().unwrap();
    assert!(ok > 0, "{ok} of {sent} adds acknowledged");
    assert_eq!(
        chain(&rig, leader, LOG).segments.len(),
        segments,
        "no seal was needed: the follower learned the commit through the third node"
    );
    let probes = rig
        .node(follower)
        .logs
        .metrics()
        .tail_probes_ahead
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(probes > 0, "the follower learned the tail from a peer");
    rig.heal();
}

#[test]
fn a_node_whose_links_lose_30_percent_is_scored_degraded_by_both_peers_and_healthy_after_the_heal()
{
    let rig = Rig::builder(3).partitions(3).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    rig.wait_connected(Duration::from_secs(10)).unwrap();
    let healthy = |r: &Rig, at: u32, peer: u32| r.node(at).transport.is_healthy(NodeId(peer));
    assert!(
        (1..=3).all(|a| (1..=3).all(|b| healthy(&rig, a, b))),
        "every link starts healthy"
    );
    // 30% of the packets to and from N3 are lost, on N3's socket.
    for peer in [1, 2] {
        let addr = rig.config(peer).address(NodeId(peer)).unwrap().quic;
        rig.fault(3).modify(addr, |r| {
            r.loss_outbound_pct = 30;
            r.loss_inbound_pct = 30;
        });
    }
    // Traffic over every link (N3 leads a partition, so stores go both
    // ways), through the heal too: a link is judged by what it carries.
    let until = Instant::now() + Duration::from_secs(30);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [1, 2]
        .into_iter()
        .map(|n| load_while(rig.http(n), stop.clone(), until, 5_000))
        .collect();
    let took = rig
        .wait_for(
            "both peers score N3 degraded",
            Duration::from_secs(10),
            |r| !healthy(r, 1, 3) && !healthy(r, 2, 3),
        )
        .unwrap();
    eprintln!("N3 scored degraded by both peers {took:?} into the loss");
    assert!(
        healthy(&rig, 1, 2) && healthy(&rig, 2, 1),
        "the healthy pair stays healthy"
    );
    // Status says why, and the peers are still connected: liveness alone
    // would not tell.
    let n3 = rig
        .node(1)
        .transport
        .peers()
        .into_iter()
        .find(|p| p.node == NodeId(3))
        .unwrap();
    let health = n3.health.clone().expect("health in status");
    assert!(n3.connected, "still connected: {n3:?}");
    assert!(!health.healthy && health.loss > 0.1, "{health:?}");
    assert!(
        health.why.as_deref().is_some_and(|w| w.contains("packets")),
        "{health:?}"
    );
    rig.heal();
    rig.wait_for(
        "every link healthy again after the heal",
        Duration::from_secs(15),
        |r| (1..=3).all(|a| (1..=3).all(|b| healthy(r, a, b))),
    )
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let (ok, sent) = w.join().unwrap();
        assert!(ok > 0, "{ok} of {sent}");
    }
}

#[test]
fn a_leader_whose_links_lose_30_percent_is_replaced_once_and_healthy_leaders_stay() {
    let rig = Rig::builder(3).partitions(3).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    rig.wait_connected(Duration::from_secs(10)).unwrap();
    let before = leaders(&rig);
    let (sick, sick_epoch) = before[&0];
    let sick = sick.0;
    for peer in (1..=3).filter(|&p| p != sick) {
        let addr = rig.config(peer).address(NodeId(peer)).unwrap().quic;
        rig.fault(sick).modify(addr, |r| {
            r.loss_outbound_pct = 30;
            r.loss_inbound_pct = 30;
        });
    }
    let healthy: Vec<u32> = (1..=3).filter(|&n| n != sick).collect();
    let until = Instant::now() + Duration::from_secs(40);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = healthy
        .iter()
        .map(|&n| load_while(rig.http(n), stop.clone(), until, 20_000))
        .collect();
    let took = rig
        .wait_for(
            "a healthy node leads partition 0",
            Duration::from_secs(15),
            |r| {
                healthy
                    .iter()
                    .any(|&n| leader_mode(r, n, 0).as_deref() == Some("Leader"))
            },
        )
        .unwrap();
    eprintln!("partition 0 moved off the lossy N{sick} {took:?} into the loss");
    // While the loss goes on: no ping-pong back to the sick node, and the
    // partitions healthy nodes led keep their leaders.
    let max = observe_epochs(&rig, Duration::from_secs(4));
    assert_eq!(
        max[&0],
        Epoch(sick_epoch.0 + 1),
        "partition 0 changed leader exactly once"
    );
    for (p, (leader, epoch)) in &before {
        if leader.0 != sick {
            assert_eq!(
                max[p], *epoch,
                "partition {p}, led by healthy {leader}, moved"
            );
        }
    }
    let now = leaders(&rig);
    assert_ne!(now[&0].0 .0, sick, "{now:?}");
    // The new reign moved the log's sequencer off the sick node too.
    let new_leader = now[&0].0 .0;
    rig.wait_for(
        "partition 0's sequencer is its new leader",
        Duration::from_secs(5),
        |r| sequencer_of(r, new_leader, LOG) == NodeId(new_leader),
    )
    .unwrap();
    rig.heal();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let (ok, sent) = w.join().unwrap();
        assert!(ok > 0, "{ok} of {sent}");
    }
}

/// A leader whose runtime stops 400 ms of every 500 (a starved host) under
/// load: its links lose nothing and no call times out, but the records its
/// peers store for its sequencer wait for their commit, so both peers score
/// it degraded from commit progress, and its partition moves to a healthy
/// node while the others keep theirs.
#[test]
fn a_leader_stalled_most_of_the_time_is_scored_degraded_by_its_commits_and_replaced() {
    let rig = Rig::builder(3).partitions(3).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    rig.wait_connected(Duration::from_secs(10)).unwrap();
    let before = leaders(&rig);
    let led_by_n3: Vec<u32> = before
        .iter()
        .filter(|(_, (n, _))| *n == NodeId(3))
        .map(|(p, _)| *p)
        .collect();
    assert!(!led_by_n3.is_empty(), "N3 leads a partition: {before:?}");
    let until = Instant::now() + Duration::from_secs(30);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [1, 2, 1, 2, 1, 2]
        .into_iter()
        .map(|n| load_while(rig.http(n), stop.clone(), until, 50_000))
        .collect();
    let pattern = keel::node::stall::StallPattern::new(
        Duration::from_millis(400),
        Duration::from_millis(500),
    )
    .unwrap();
    rig.node(3).staller.start(pattern);
    let healthy = |r: &Rig, at: u32| r.node(at).transport.is_healthy(NodeId(3));
    let took = rig.wait_for(
        "both peers score N3 degraded",
        Duration::from_secs(15),
        |r| !healthy(r, 1) && !healthy(r, 2),
    );
    let lagging = commits_lagging(&rig);
    let moved = rig.wait_for(
        "N3's partitions led elsewhere",
        Duration::from_secs(10),
        |r| {
            let now = leaders(r);
            led_by_n3
                .iter()
                .all(|p| now.get(p).is_some_and(|(n, _)| *n != NodeId(3)))
        },
    );
    rig.node(3).staller.stop();
    stop.store(true, Ordering::Relaxed);
    let after = leaders(&rig);
    for w in writers {
        let (ok, sent) = w.join().unwrap();
        assert!(ok > 0, "{ok} of {sent}");
    }
    let took = took.unwrap();
    eprintln!("N3 scored degraded by both peers {took:?} into the stalls");
    for observer in [1, 2] {
        assert!(
            lagging.iter().any(|(a, p, _)| *a == observer && *p == 3),
            "N{observer} calls N3's commits lagging: {lagging:?}"
        );
    }
    moved.unwrap();
    for (p, (leader, epoch)) in &before {
        if *leader != NodeId(3) {
            assert_eq!(
                after[p],
                (*leader, *epoch),
                "partition {p} kept its healthy leader"
            );
        }
    }
}

/// A healthy leader appending through a sequencer on another node (that
/// node sealed the log and took the sequencer over, as a reader does while
/// it suspects the leader), whose links then lose 30% of their packets: the
/// leader keeps its reign and moves the sequencer back to itself.
#[test]
fn a_healthy_leader_moves_its_sequencer_off_a_node_whose_links_turn_lossy() {
    let rig = Rig::builder(3).partitions(3).start().unwrap();
    wait_for_leaders(&rig, Duration::from_secs(10));
    rig.wait_connected(Duration::from_secs(10)).unwrap();
    let before = leaders(&rig);
    let (&p, &(leader, epoch)) = before
        .iter()
        .find(|(_, (n, _))| *n == NodeId(1))
        .expect("N1 leads a partition");
    let log = keel::types::LogId(p);
    let sequencer = |r: &Rig| {
        r.block_on(r.node(1).logs.refresh_chain(log, Duration::from_secs(3)))
            .ok()
            .map(|c| c.tail().sequencer)
    };
    assert_eq!(
        sequencer(&rig),
        Some(NodeId(1)),
        "the leader sequences its log"
    );
    // N3 seals the tail and extends the chain with a segment it sequences.
    let chain = rig
        .block_on(rig.node(3).logs.refresh_chain(log, Duration::from_secs(3)))
        .unwrap();
    rig.block_on(
        rig.node(3)
            .logs
            .seal_and_extend(chain.tail(), Duration::from_secs(5)),
    )
    .unwrap();
    assert_eq!(
        sequencer(&rig),
        Some(NodeId(3)),
        "N3 sequences N1's log now"
    );
    // A healthy remote sequencer stays put.
    let until = Instant::now() + Duration::from_secs(40);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [1, 2]
        .into_iter()
        .map(|n| load_while(rig.http(n), stop.clone(), until, 50_000))
        .collect();
    let calm = rig.wait_for(
        "the sequencer moves while N3 is healthy",
        Duration::from_secs(3),
        |r| sequencer(r) != Some(NodeId(3)),
    );
    assert!(calm.is_err(), "a healthy remote sequencer was moved");
    // Then N3's links turn lossy.
    for peer in [1, 2] {
        let addr = rig.config(peer).address(NodeId(peer)).unwrap().quic;
        rig.fault(3).modify(addr, |r| {
            r.loss_outbound_pct = 30;
            r.loss_inbound_pct = 30;
        });
    }
    let moved = rig.wait_for(
        "N1 moves the sequencer back to itself",
        Duration::from_secs(20),
        |r| sequencer(r) == Some(NodeId(1)),
    );
    rig.heal();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let (ok, sent) = w.join().unwrap();
        assert!(ok > 0, "{ok} of {sent}");
    }
    let took = moved.unwrap();
    eprintln!("sequencer back on N1 {took:?} into the loss");
    assert_eq!(
        leaders(&rig)[&p],
        (leader, epoch),
        "N1 kept its reign: only the sequencer moved"
    );
}
