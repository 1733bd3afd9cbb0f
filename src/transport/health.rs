//! Health, not just liveness: how well each peer's link works, scored from
//! what this node observes, without I/O.
//!
//! The failure detector (`peer.rs`) answers "is there a live connection?".
//! A link that loses 30% of its packets stays connected, yet every call over
//! it is slow or times out. [`HealthCore`] scores each peer from periodic
//! [`PeerSample`]s (the QUIC path's packets sent and lost and its RTT, how
//! many of this node's calls to the peer were answered or timed out, and how
//! long records this node stored waited for the commit of the peer's
//! sequencer), with hysteresis:
//!
//! - H1. A sample is *bad* when the link lost at least `max_loss` of the
//!   packets sent since the last sample (at least `min_packets` of them), or
//!   at least `max_timeouts` of the calls that ended (at least `min_calls`)
//!   timed out, or its RTT is at least `rtt_factor` times the best RTT
//!   among this node's peers and at least `min_rtt`, or the commits of the
//!   peer's sequencer lag (the peer's link may be fine while the node is
//!   too slow to sequence; `log_server::commit_watch`): at least
//!   `max_slow_commits` of the records stored here for it waited
//!   `SLOW_COMMIT` or more for their commit, or its loglets were stuck
//!   (a record waiting longer than that) for at least `max_stuck` of the
//!   time since commits were last judged. Packets, calls and commits are
//!   counted from the last sample that judged them, so a quiet link is
//!   judged once it has carried enough (commits: once a wait ended or was
//!   stuck); until then a sample is neither bad nor good and the streak
//!   stays as it is. A sequencer that lags commits little, so between two
//!   judgements of its commits a bad verdict holds the sample at neither
//!   (for at most `commit_memory`): a link's good packets alone do not
//!   break the streak.
//! - H2. A healthy peer becomes degraded after `enter_after` bad samples in
//!   a row; a degraded peer becomes healthy after `leave_after` good
//!   samples in a row (more than `enter_after`, so a flickering link stays
//!   degraded rather than flapping).
//! - H3. A new connection (another generation) restarts the packet counts;
//!   a peer without a connection is the failure detector's business and
//!   keeps its health.
//! - H4. RTT is judged against the best peer, so when every link is
//!   equally slow no peer is degraded by RTT alone.
//! - H5. A sample taken more than `max_gap` after the previous one says
//!   this node itself was stopped (a stalled runtime, a paused process):
//!   what its counters gathered since spans its own stop (calls that timed
//!   out while it stood still, commit waits it could not see end), so it
//!   judges nothing; the counts restart from it and the streaks stay.

use crate::actors::log_server::commit_watch::SLOW_COMMIT;
use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often the transport samples every peer.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// The thresholds of H1 and H2.
#[derive(Clone, Debug)]
pub struct HealthConfig {
    /// A share of lost packets at or above this is bad.
    pub max_loss: f64,
    /// Fewer packets sent than this say nothing about loss.
    pub min_packets: u64,
    /// A share of timed-out calls at or above this is bad.
    pub max_timeouts: f64,
    /// Fewer ended calls than this say nothing about timeouts.
    pub min_calls: u64,
    /// A share of slow commit waits at or above this is bad.
    pub max_slow_commits: f64,
    /// A share of time stuck at or above this is bad.
    pub max_stuck: f64,
    /// How long a bad verdict on commits holds samples that cannot judge
    /// commits at neither bad nor good.
    pub commit_memory: Duration,
    /// A sample this long after the previous one judges nothing (H5).
    pub max_gap: Duration,
    /// An RTT this many times the best peer's is bad...
    pub rtt_factor: f64,
    /// ...if it is also at least this long.
    pub min_rtt: Duration,
    /// Bad samples in a row that make a healthy peer degraded.
    pub enter_after: u32,
    /// Good samples in a row that make a degraded peer healthy again.
    pub leave_after: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            max_loss: 0.08,
            min_packets: 20,
            max_timeouts: 0.2,
            min_calls: 5,
            max_slow_commits: 0.5,
            max_stuck: 0.15,
            commit_memory: Duration::from_secs(2),
            max_gap: SAMPLE_EVERY * 2,
            rtt_factor: 5.0,
            min_rtt: Duration::from_millis(50),
            enter_after: 3,
            leave_after: 6,
        }
    }
}

/// What the transport read about one peer's link, as running totals.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PeerSample {
    /// The live connection's generation (`None`: no connection).
    pub generation: Option<u64>,
    /// The connection's smoothed RTT.
    pub rtt: Duration,
    /// Packets the connection sent, since it was established.
    pub sent_packets: u64,
    /// Of those, packets it declared lost.
    pub lost_packets: u64,
    /// This node's calls to the peer that were answered, since start.
    pub calls_answered: u64,
    /// This node's calls to the peer that timed out, since start.
    pub calls_timed_out: u64,
    /// Commit waits on the peer's sequencer that ended on this node's
    /// log-server, since start.
    pub commit_waits: u64,
    /// Of those, the ones that took `SLOW_COMMIT` or more.
    pub commit_slow: u64,
    /// How long the loglets of the peer's sequencer were stuck on this
    /// node's log-server, since start.
    pub commit_stuck: Duration,
}

/// A peer's health as status, the metrics and the logs show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerHealth {
    /// Whether the link works well (H2).
    pub healthy: bool,
    /// Since when it is as it is, in ms ago (when shown).
    pub for_ms: u64,
    /// Why it is degraded, or why it was last (the bad sample's reading).
    pub why: Option<String>,
    /// The share of packets lost over the last sample that could judge it.
    pub loss: f64,
    /// The share of calls that timed out over the last sample that could.
    pub timeouts: f64,
    /// The share of time the loglets of the peer's sequencer were stuck on
    /// this node, over the last sample that could judge it.
    #[serde(default)]
    pub commit_stuck: f64,
}

/// A change of a peer's health, for the logs.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthChange {
    /// The peer.
    pub peer: NodeId,
    /// Its new health.
    pub healthy: bool,
    /// The reading that decided it.
    pub why: String,
}

/// One peer's score.
#[derive(Clone, Debug)]
struct Score {
    /// H2's state.
    healthy: bool,
    /// When it last changed.
    since: Instant,
    /// Bad (while healthy) or good (while degraded) samples in a row.
    streak: u32,
    /// The totals when packets, and calls, were last judged (H1 takes
    /// deltas from them; H3 compares generations).
    base: PeerSample,
    /// Why it is or was last degraded.
    why: Option<String>,
    /// The last judged loss share.
    loss: f64,
    /// The last judged timeout share.
    timeouts: f64,
    /// The last judged share of time stuck.
    commit_stuck: f64,
    /// When commits were last judged (H1 divides stuck time by the time
    /// since).
    commits_at: Instant,
    /// Why commits were judged bad last time, if they were (held until
    /// they are judged again, for at most `commit_memory`).
    commit_why: Option<String>,
}

/// Every peer's score.
#[derive(Clone, Debug)]
pub struct HealthCore {
    /// The thresholds.
    config: HealthConfig,
    /// By peer.
    peers: BTreeMap<NodeId, Score>,
    /// When the last sample was taken (H5).
    last_sample: Option<Instant>,
}

/// H1's verdict on one sample.
enum Verdict {
    Bad(String),
    Good,
    Unknown,
}

impl HealthCore {
    pub fn new(config: HealthConfig) -> Self {
        HealthCore {
            config,
            peers: BTreeMap::new(),
            last_sample: None,
        }
    }

    /// Takes one sample of every peer at `now`; returns the changes.
    pub fn observe(
        &mut self,
        now: Instant,
        samples: &BTreeMap<NodeId, PeerSample>,
    ) -> Vec<HealthChange> {
        // H5: after a stop of this node, restart the counts, judge nothing.
        let stopped = self
            .last_sample
            .replace(now)
            .is_some_and(|last| now.saturating_duration_since(last) > self.config.max_gap);
        if stopped {
            for (peer, sample) in samples {
                if let Some(score) = self.peers.get_mut(peer) {
                    score.base = *sample;
                    score.commits_at = now;
                }
            }
            return Vec::new();
        }
        // H4: the best RTT among connected peers.
        let best_rtt = samples
            .values()
            .filter(|s| s.generation.is_some() && !s.rtt.is_zero())
            .map(|s| s.rtt)
            .min();
        let mut changes = Vec::new();
        for (&peer, &sample) in samples {
            let score = self.peers.entry(peer).or_insert(Score {
                healthy: true,
                since: now,
                streak: 0,
                // Every total counts from zero (since start, or since the
                // connection was established).
                base: PeerSample::default(),
                why: None,
                loss: 0.0,
                timeouts: 0.0,
                commit_stuck: 0.0,
                commits_at: now,
                commit_why: None,
            });
            let verdict = judge(&self.config, now, score, &sample, best_rtt);
            let (bad, why) = match verdict {
                Verdict::Unknown => continue,
                Verdict::Bad(why) => (true, why),
                Verdict::Good => (false, String::new()),
            };
            // H2: a streak counts samples against the current state.
            if bad == score.healthy {
                score.streak += 1;
                if bad {
                    score.why = Some(why.clone());
                }
            } else {
                score.streak = 0;
            }
            let flip = if score.healthy {
                score.streak >= self.config.enter_after
            } else {
                score.streak >= self.config.leave_after
            };
            if flip {
                score.healthy = !score.healthy;
                score.since = now;
                score.streak = 0;
                changes.push(HealthChange {
                    peer,
                    healthy: score.healthy,
                    why: if score.healthy {
                        format!("{} good samples in a row", self.config.leave_after)
                    } else {
                        why
                    },
                });
            }
        }
        changes
    }

    /// Whether `peer`'s link works well (an unknown peer does).
    pub fn is_healthy(&self, peer: NodeId) -> bool {
        self.peers.get(&peer).is_none_or(|s| s.healthy)
    }

    /// `peer`'s health for status, at `now`.
    pub fn health(&self, peer: NodeId, now: Instant) -> PeerHealth {
        match self.peers.get(&peer) {
            Some(s) => PeerHealth {
                healthy: s.healthy,
                for_ms: now.saturating_duration_since(s.since).as_millis() as u64,
                why: s.why.clone(),
                loss: s.loss,
                timeouts: s.timeouts,
                commit_stuck: s.commit_stuck,
            },
            None => PeerHealth {
                healthy: true,
                for_ms: 0,
                why: None,
                loss: 0.0,
                timeouts: 0.0,
                commit_stuck: 0.0,
            },
        }
    }
}

/// H1, H3: what `sample` says next to the previous one.
fn judge(
    config: &HealthConfig,
    now: Instant,
    score: &mut Score,
    sample: &PeerSample,
    best_rtt: Option<Duration>,
) -> Verdict {
    let mut judged = false;
    let mut bad = Vec::new();
    if sample.generation.is_some() {
        // H3: counts restart with a new connection.
        if sample.generation != score.base.generation {
            score.base.generation = sample.generation;
            score.base.sent_packets = 0;
            score.base.lost_packets = 0;
        }
        let sent = sample.sent_packets.saturating_sub(score.base.sent_packets);
        let lost = sample.lost_packets.saturating_sub(score.base.lost_packets);
        if sent >= config.min_packets {
            judged = true;
            score.base.sent_packets = sample.sent_packets;
            score.base.lost_packets = sample.lost_packets;
            score.loss = lost as f64 / sent as f64;
            if score.loss >= config.max_loss {
                bad.push(format!("lost {lost} of {sent} packets"));
            }
        }
        if let Some(best) = best_rtt {
            if sample.rtt >= config.min_rtt
                && sample.rtt.as_secs_f64() >= best.as_secs_f64() * config.rtt_factor
            {
                judged = true;
                bad.push(format!(
                    "rtt {:?} against the best peer's {best:?}",
                    sample.rtt
                ));
            }
        }
    }
    let answered = sample
        .calls_answered
        .saturating_sub(score.base.calls_answered);
    let timed_out = sample
        .calls_timed_out
        .saturating_sub(score.base.calls_timed_out);
    if answered + timed_out >= config.min_calls {
        judged = true;
        score.base.calls_answered = sample.calls_answered;
        score.base.calls_timed_out = sample.calls_timed_out;
        score.timeouts = timed_out as f64 / (answered + timed_out) as f64;
        if score.timeouts >= config.max_timeouts {
            bad.push(format!(
                "{timed_out} of {} calls timed out",
                answered + timed_out
            ));
        }
    }
    let waits = sample.commit_waits.saturating_sub(score.base.commit_waits);
    let slow = sample.commit_slow.saturating_sub(score.base.commit_slow);
    let stuck = sample.commit_stuck.saturating_sub(score.base.commit_stuck);
    let over = now.saturating_duration_since(score.commits_at);
    let mut held = false;
    if (waits > 0 || !stuck.is_zero()) && !over.is_zero() {
        judged = true;
        score.base.commit_waits = sample.commit_waits;
        score.base.commit_slow = sample.commit_slow;
        score.base.commit_stuck = sample.commit_stuck;
        score.commits_at = now;
        score.commit_stuck = (stuck.as_secs_f64() / over.as_secs_f64()).min(1.0);
        let mut why = Vec::new();
        if waits > 0 && slow as f64 / waits as f64 >= config.max_slow_commits {
            why.push(format!(
                "{slow} of {waits} commits of its sequencer took {} ms or more",
                SLOW_COMMIT.as_millis()
            ));
        }
        if score.commit_stuck >= config.max_stuck {
            why.push(format!(
                "its sequencer's commits were stuck {} ms of the last {} ms",
                stuck.as_millis(),
                over.as_millis()
            ));
        }
        score.commit_why = (!why.is_empty()).then(|| why.join(", "));
        bad.extend(why);
    } else if score.commit_why.is_some() {
        held = over <= config.commit_memory;
        if !held {
            score.commit_why = None;
        }
    }
    if held && bad.is_empty() {
        return Verdict::Unknown;
    }
    match (judged, bad.is_empty()) {
        (false, _) => Verdict::Unknown,
        (true, true) => Verdict::Good,
        (true, false) => Verdict::Bad(bad.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u32) -> NodeId {
        NodeId(i)
    }

    /// Running totals per peer, advanced one sample at a time.
    struct Links {
        core: HealthCore,
        now: Instant,
        totals: BTreeMap<NodeId, PeerSample>,
    }

    impl Links {
        fn new() -> Self {
            let totals = [n(2), n(3)]
                .into_iter()
                .map(|p| {
                    let s = PeerSample {
                        generation: Some(1),
                        rtt: Duration::from_millis(1),
                        ..PeerSample::default()
                    };
                    (p, s)
                })
                .collect();
            Links {
                core: HealthCore::new(HealthConfig::default()),
                now: Instant::now(),
                totals,
            }
        }

        /// One sample: `sent` packets to `peer`, `lost` of them lost, and
        /// 100 packets without loss to every other peer.
        fn step(&mut self, peer: NodeId, sent: u64, lost: u64) -> Vec<HealthChange> {
            for (p, t) in self.totals.iter_mut() {
                if *p == peer {
                    t.sent_packets += sent;
                    t.lost_packets += lost;
                } else {
                    t.sent_packets += 100;
                }
            }
            self.now += SAMPLE_EVERY;
            self.core.observe(self.now, &self.totals)
        }
    }

    #[test]
    fn h1_h2_a_lossy_link_is_degraded_after_three_bad_samples_and_healthy_after_six_good() {
        let mut l = Links::new();
        assert!(l.step(n(3), 100, 30).is_empty());
        assert!(l.step(n(3), 100, 30).is_empty());
        let changes = l.step(n(3), 100, 30);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(!changes[0].healthy && changes[0].peer == n(3));
        assert_eq!(changes[0].why, "lost 30 of 100 packets");
        assert!(!l.core.is_healthy(n(3)));
        assert!(l.core.is_healthy(n(2)), "the other link stays healthy");
        let h = l.core.health(n(3), l.now);
        assert!((h.loss - 0.3).abs() < 1e-9 && !h.healthy);
        for _ in 0..5 {
            assert!(l.step(n(3), 100, 0).is_empty());
        }
        let changes = l.step(n(3), 100, 0);
        assert!(changes.len() == 1 && changes[0].healthy, "{changes:?}");
    }

    #[test]
    fn h2_a_flickering_link_neither_enters_nor_leaves_on_single_samples() {
        let mut l = Links::new();
        // Bad, bad, good: the streak restarts; never three in a row.
        for _ in 0..10 {
            assert!(l.step(n(3), 100, 30).is_empty());
            assert!(l.step(n(3), 100, 30).is_empty());
            assert!(l.step(n(3), 100, 0).is_empty());
        }
        assert!(l.core.is_healthy(n(3)));
        // Degraded: one bad sample among good ones keeps it degraded.
        for _ in 0..3 {
            l.step(n(3), 100, 30);
        }
        assert!(!l.core.is_healthy(n(3)));
        for _ in 0..10 {
            for _ in 0..4 {
                l.step(n(3), 100, 0);
            }
            l.step(n(3), 100, 30);
        }
        assert!(!l.core.is_healthy(n(3)), "no flapping back and forth");
    }

    #[test]
    fn h1_too_few_packets_say_nothing_until_enough_have_gone() {
        let mut l = Links::new();
        // 10 packets a sample: judged every second sample (20 packets).
        let mut changes = Vec::new();
        let mut samples = 0;
        while changes.is_empty() && samples < 20 {
            changes = l.step(n(3), 10, 5);
            samples += 1;
        }
        assert_eq!(samples, 6, "three judged samples of two each");
        assert_eq!(changes[0].why, "lost 10 of 20 packets");
    }

    #[test]
    fn h1_timed_out_calls_are_bad() {
        let mut l = Links::new();
        let mut changes = Vec::new();
        for _ in 0..3 {
            let t = l.totals.get_mut(&n(2)).unwrap();
            t.calls_answered += 6;
            t.calls_timed_out += 4;
            changes = l.step(n(3), 100, 0);
        }
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].peer, n(2));
        assert_eq!(changes[0].why, "4 of 10 calls timed out");
    }

    #[test]
    fn h1_a_sequencer_whose_commits_are_stuck_is_bad_on_a_lossless_fast_link() {
        let mut l = Links::new();
        let mut changes = Vec::new();
        // N2's link loses nothing and its RTT is the best, but records
        // stored for its sequencer were stuck 200 ms of every 500 (after a
        // first sample, which starts the score).
        l.step(n(3), 100, 0);
        for _ in 0..3 {
            let t = l.totals.get_mut(&n(2)).unwrap();
            t.commit_waits += 40;
            t.commit_slow += 4;
            t.commit_stuck += Duration::from_millis(200);
            changes = l.step(n(3), 100, 0);
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].peer, n(2));
        assert_eq!(
            changes[0].why,
            "its sequencer's commits were stuck 200 ms of the last 500 ms"
        );
        assert!((l.core.health(n(2), l.now).commit_stuck - 0.4).abs() < 1e-9);
    }

    #[test]
    fn h1_an_overloaded_sequencer_committing_little_and_late_is_bad_between_its_commits() {
        let mut l = Links::new();
        l.step(n(3), 100, 0);
        let mut changes = Vec::new();
        // N2 commits one record a second, each 200 ms after it was stored:
        // the samples between are held, the lossless link does not reset
        // the streak.
        for i in 0..6 {
            if i % 2 == 0 {
                let t = l.totals.get_mut(&n(2)).unwrap();
                t.commit_waits += 1;
                t.commit_slow += 1;
                t.commit_stuck += Duration::from_millis(100);
            }
            changes.extend(l.step(n(3), 100, 0));
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            changes[0].why,
            "1 of 1 commits of its sequencer took 100 ms or more"
        );
        // It moves away and is never waited on again: the verdict lapses
        // and good samples bring it back.
        for _ in 0..10 {
            changes = l.step(n(3), 100, 0);
            if !changes.is_empty() {
                break;
            }
        }
        assert!(changes.len() == 1 && changes[0].healthy, "{changes:?}");
    }

    #[test]
    fn h1_one_slow_commit_then_quick_ones_or_silence_degrade_nobody() {
        let mut l = Links::new();
        l.step(n(3), 100, 0);
        for i in 0..12 {
            let t = l.totals.get_mut(&n(2)).unwrap();
            if i == 0 {
                t.commit_waits += 1;
                t.commit_slow += 1;
            } else if i == 8 {
                t.commit_waits += 10;
            }
            assert!(l.step(n(3), 100, 0).is_empty());
        }
        assert!(l.core.is_healthy(n(2)));
    }

    #[test]
    fn h5_after_this_node_stood_still_what_piled_up_meanwhile_is_not_held_against_its_peers() {
        let mut l = Links::new();
        l.step(n(3), 100, 0);
        // This node is stopped for 5 s: its calls to N2 time out meanwhile
        // and a commit wait spans the stop; its next sample comes late.
        let t = l.totals.get_mut(&n(2)).unwrap();
        t.calls_timed_out += 12;
        t.commit_waits += 1;
        t.commit_slow += 1;
        t.commit_stuck += Duration::from_secs(5);
        l.now += Duration::from_secs(5);
        assert!(l.step(n(3), 100, 0).is_empty());
        // Then everything is well again: nothing of the stop counts.
        for _ in 0..10 {
            let t = l.totals.get_mut(&n(2)).unwrap();
            t.calls_answered += 10;
            t.commit_waits += 10;
            assert!(l.step(n(3), 100, 0).is_empty());
        }
        assert!(l.core.is_healthy(n(2)));
        let h = l.core.health(n(2), l.now);
        assert!(h.timeouts == 0.0 && h.commit_stuck == 0.0, "{h:?}");
        // Without the gap, the same readings are bad.
        let mut l = Links::new();
        l.step(n(3), 100, 0);
        let t = l.totals.get_mut(&n(2)).unwrap();
        t.calls_timed_out += 12;
        l.step(n(3), 100, 0);
        assert!(l.core.health(n(2), l.now).timeouts > 0.9);
    }

    #[test]
    fn h1_short_stalls_and_quiet_sequencers_leave_a_peer_healthy() {
        let mut l = Links::new();
        for i in 0..20 {
            // N2: stuck 100 ms once a second (a short stall): 20% of a
            // sample at worst, below the share.
            let t = l.totals.get_mut(&n(2)).unwrap();
            t.commit_waits += 40;
            if i % 2 == 0 {
                t.commit_stuck += Duration::from_millis(100);
            }
            // N3 sequences nothing: its commits are never judged.
            assert!(l.step(n(3), 100, 0).is_empty());
        }
        assert!(l.core.is_healthy(n(2)) && l.core.is_healthy(n(3)));
        // A rare wait after a long quiet stretch is judged over all of it.
        let t = l.totals.get_mut(&n(3)).unwrap();
        t.commit_waits += 1;
        t.commit_stuck += Duration::from_millis(400);
        l.step(n(3), 100, 0);
        let h = l.core.health(n(3), l.now);
        assert!(h.commit_stuck > 0.0 && h.commit_stuck < 0.1, "{h:?}");
    }

    #[test]
    fn h3_a_new_connection_restarts_the_packet_counts() {
        let mut l = Links::new();
        for _ in 0..3 {
            l.step(n(3), 100, 0);
        }
        // Reconnected: totals start again from small numbers, no loss.
        let t = l.totals.get_mut(&n(3)).unwrap();
        *t = PeerSample {
            generation: Some(2),
            rtt: Duration::from_millis(1),
            sent_packets: 0,
            lost_packets: 0,
            ..*t
        };
        for _ in 0..5 {
            assert!(l.step(n(3), 100, 0).is_empty());
        }
        assert!(l.core.is_healthy(n(3)));
        assert!((l.core.health(n(3), l.now).loss).abs() < 1e-9);
    }

    #[test]
    fn h4_rtt_is_judged_against_the_best_peer_so_equal_slowness_degrades_nobody() {
        let mut l = Links::new();
        for t in l.totals.values_mut() {
            t.rtt = Duration::from_millis(400);
        }
        for _ in 0..10 {
            assert!(l.step(n(3), 100, 0).is_empty());
        }
        l.totals.get_mut(&n(2)).unwrap().rtt = Duration::from_millis(20);
        let mut changes = Vec::new();
        for _ in 0..3 {
            changes.extend(l.step(n(3), 100, 0));
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].peer, n(3));
        assert!(
            changes[0].why.starts_with("rtt 400ms"),
            "{}",
            changes[0].why
        );
    }
}
