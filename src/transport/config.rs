//! Transport configuration.
//!
//! The defaults are tuned for failure detection, not for WAN links: quinn's
//! own defaults (30 s idle timeout, no keep-alive, 333 ms initial RTT) would
//! leave a dead peer undetected and in-flight requests hanging for half a
//! minute. Durations are written in milliseconds (`keep_alive_ms = 250`).

use super::error::TransportError;
use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

/// One member of the cluster and its QUIC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerAddr {
    pub id: NodeId,
    pub addr: SocketAddr,
}

/// Everything the transport needs besides its identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    /// The UDP address this node binds (and peers dial).
    pub listen: SocketAddr,
    /// The cluster members. An entry for this node itself is allowed and
    /// ignored, so every node can share one member list.
    pub peers: Vec<PeerAddr>,
    /// QUIC keep-alive; keeps an idle but healthy link from timing out.
    #[serde(
        rename = "keep_alive_ms",
        with = "millis",
        default = "defaults::keep_alive"
    )]
    pub keep_alive: Duration,
    /// No packet from the peer for this long closes the connection: this is
    /// the failure detector's main clock. A peer that falls silent is
    /// suspected after between `idle_timeout` and `idle_timeout + keep_alive`
    /// (QUIC restarts the clock when we send after hearing from the peer).
    #[serde(
        rename = "idle_timeout_ms",
        with = "millis",
        default = "defaults::idle_timeout"
    )]
    pub idle_timeout: Duration,
    /// RTT assumed before the first sample; sets the first retransmission timeouts.
    #[serde(
        rename = "initial_rtt_ms",
        with = "millis",
        default = "defaults::initial_rtt"
    )]
    pub initial_rtt: Duration,
    /// Budget of one dial attempt (handshake plus the peer's hello). Short, so
    /// a fresh attempt with fresh retransmission timers starts soon after a heal.
    #[serde(
        rename = "connect_timeout_ms",
        with = "millis",
        default = "defaults::connect_timeout"
    )]
    pub connect_timeout: Duration,
    /// Smallest pause between dial attempts (jittered).
    #[serde(
        rename = "backoff_min_ms",
        with = "millis",
        default = "defaults::backoff_min"
    )]
    pub backoff_min: Duration,
    /// Largest pause between dial attempts (jittered).
    #[serde(
        rename = "backoff_max_ms",
        with = "millis",
        default = "defaults::backoff_max"
    )]
    pub backoff_max: Duration,
    /// Largest frame (version byte plus payload) accepted or sent.
    #[serde(default = "defaults::max_frame_len")]
    pub max_frame_len: usize,
    /// Frames that may wait in one connection's outbound queue.
    #[serde(default = "defaults::queue_capacity")]
    pub queue_capacity: usize,
    /// What this node serves above the transport (a node: its object
    /// types), sent in every hello. A peer whose hello names something else
    /// is refused: nodes that would apply one log differently must not form
    /// a cluster. Set by the embedding node, not by the config file.
    #[serde(skip)]
    pub app: String,
}

mod defaults {
    use std::time::Duration;
    pub fn keep_alive() -> Duration {
        Duration::from_millis(250)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_millis(1000)
    }
    pub fn initial_rtt() -> Duration {
        Duration::from_millis(10)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_millis(300)
    }
    pub fn backoff_min() -> Duration {
        Duration::from_millis(50)
    }
    pub fn backoff_max() -> Duration {
        Duration::from_millis(250)
    }
    pub fn max_frame_len() -> usize {
        16 * 1024 * 1024
    }
    pub fn queue_capacity() -> usize {
        8192
    }
}

/// Smallest `max_frame_len` that still fits any envelope header.
const MIN_FRAME_LEN: usize = 1024;

impl TransportConfig {
    /// A config with the default tuning.
    pub fn new(listen: SocketAddr, peers: Vec<PeerAddr>) -> Self {
        TransportConfig {
            listen,
            peers,
            keep_alive: defaults::keep_alive(),
            idle_timeout: defaults::idle_timeout(),
            initial_rtt: defaults::initial_rtt(),
            connect_timeout: defaults::connect_timeout(),
            backoff_min: defaults::backoff_min(),
            backoff_max: defaults::backoff_max(),
            max_frame_len: defaults::max_frame_len(),
            queue_capacity: defaults::queue_capacity(),
            app: String::new(),
        }
    }

    /// The peers other than `me`.
    pub fn others(&self, me: NodeId) -> impl Iterator<Item = PeerAddr> + '_ {
        self.peers.iter().copied().filter(move |p| p.id != me)
    }

    /// Rejects settings that would make the failure detector or the codec misbehave.
    pub fn validate(&self) -> Result<(), TransportError> {
        let bad = |m: String| Err(TransportError::Config(m));
        let mut seen = HashSet::new();
        for p in &self.peers {
            if !seen.insert(p.id) {
                return bad(format!("peer {} is listed twice", p.id));
            }
        }
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout {
            return bad("keep_alive must be positive and shorter than idle_timeout".into());
        }
        if self.initial_rtt.is_zero() {
            return bad("initial_rtt must be positive".into());
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout must be positive".into());
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return bad("backoff_min must be positive and at most backoff_max".into());
        }
        if self.max_frame_len < MIN_FRAME_LEN || self.max_frame_len > u32::MAX as usize {
            return bad(format!(
                "max_frame_len must be within {MIN_FRAME_LEN}..={}",
                u32::MAX
            ));
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity must be positive".into());
        }
        quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|e| TransportError::Config(format!("idle_timeout: {e}")))?;
        Ok(())
    }
}

/// `Duration` as whole milliseconds, the unit operators think in.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn toml_uses_defaults_and_millis() {
        let cfg: TransportConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:7001"
            keep_alive_ms = 100
            peers = [ { id = 1, addr = "127.0.0.1:7001" }, { id = 2, addr = "127.0.0.1:7002" } ]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.keep_alive, Duration::from_millis(100));
        assert_eq!(cfg.idle_timeout, Duration::from_secs(1));
        assert_eq!(cfg.queue_capacity, 8192);
        assert_eq!(cfg.others(NodeId(1)).count(), 1);
        cfg.validate().unwrap();
        let back: TransportConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r: Result<TransportConfig, _> =
            toml::from_str("listen = \"127.0.0.1:1\"\npeers = []\nidle_timeout = 5\n");
        assert!(r.is_err());
    }

    #[test]
    fn validate_rejects_nonsense() {
        let base = TransportConfig::new(
            addr(1),
            vec![PeerAddr {
                id: NodeId(2),
                addr: addr(2),
            }],
        );
        base.validate().unwrap();
        let cases: [fn(&mut TransportConfig); 6] = [
            |c| c.keep_alive = c.idle_timeout,
            |c| c.backoff_min = c.backoff_max * 2,
            |c| c.queue_capacity = 0,
            |c| c.max_frame_len = 10,
            |c| c.connect_timeout = Duration::ZERO,
            |c| c.peers.push(c.peers[0]),
        ];
        for (i, case) in cases.iter().enumerate() {
            let mut c = base.clone();
            case(&mut c);
            assert!(c.validate().is_err(), "case {i} accepted");
        }
    }
}
