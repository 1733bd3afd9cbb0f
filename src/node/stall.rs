//! Chaos: a node whose runtime is alive but keeps stopping (a GC pause, a
//! starved VM, a thread blocked on a slow disk).
//!
//! [`RuntimeStaller`] blocks the node's runtime thread, the one that drives
//! every actor, QUIC and the timers, for `stall` out of every `every`. It
//! is the one place in keel that blocks that thread, on purpose.

use actix::ArbiterHandle;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest single stall a caller may ask for.
pub const MAX_STALL: Duration = Duration::from_secs(5);
/// The longest period.
pub const MAX_EVERY: Duration = Duration::from_secs(60);

/// A stall pattern: `stall` out of every `every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StallPattern {
    /// How long each stall blocks the runtime thread (ms in JSON).
    #[serde(rename = "stall_ms", serialize_with = "millis")]
    pub stall: Duration,
    /// The period: one stall starts every `every` (ms in JSON).
    #[serde(rename = "every_ms", serialize_with = "millis")]
    pub every: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl StallPattern {
    /// Checks the bounds: a stall of 1 ms to [`MAX_STALL`], a period longer
    /// than the stall and at most [`MAX_EVERY`].
    pub fn new(stall: Duration, every: Duration) -> Result<Self, String> {
        if stall.is_zero() || stall > MAX_STALL {
            return Err(format!("stall must be 1..={} ms", MAX_STALL.as_millis()));
        }
        if every <= stall || every > MAX_EVERY {
            return Err(format!(
                "every must exceed the stall and be at most {} ms",
                MAX_EVERY.as_millis()
            ));
        }
        Ok(StallPattern { stall, every })
    }
}

/// Stalls one node's runtime thread on a schedule. Cheap to clone.
#[derive(Clone)]
pub struct RuntimeStaller {
    /// The runtime to stall: the node's own arbiter.
    arbiter: ArbiterHandle,
    /// Bumped by every change; a stall loop ends once it is not current.
    generation: Arc<AtomicU64>,
    /// The pattern in force, for status.
    current: Arc<Mutex<Option<StallPattern>>>,
}

impl RuntimeStaller {
    /// A staller of the runtime this is called on.
    pub fn for_current_runtime() -> Self {
        RuntimeStaller {
            arbiter: actix::Arbiter::current(),
            generation: Arc::new(AtomicU64::new(0)),
            current: Arc::new(Mutex::new(None)),
        }
    }

    /// Starts stalling by `pattern`, replacing any earlier pattern.
    pub fn start(&self, pattern: StallPattern) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(pattern);
        let current = self.generation.clone();
        let run = pattern.every - pattern.stall;
        self.arbiter.spawn(async move {
            while current.load(Ordering::SeqCst) == generation {
                tokio::time::sleep(run).await;
                if current.load(Ordering::SeqCst) != generation {
                    break;
                }
                // The point of this fault: the whole thread stops.
                std::thread::sleep(pattern.stall);
            }
        });
    }

    /// Stops stalling (the stall under way, if any, still ends on time).
    pub fn stop(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The pattern in force.
    pub fn current(&self) -> Option<StallPattern> {
        *self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn patterns_are_bounded() {
        let ms = Duration::from_millis;
        assert!(StallPattern::new(ms(200), ms(1000)).is_ok());
        assert!(StallPattern::new(ms(0), ms(1000)).is_err());
        assert!(StallPattern::new(ms(1000), ms(1000)).is_err());
        assert!(StallPattern::new(ms(6000), ms(10_000)).is_err());
        assert!(StallPattern::new(ms(10), ms(61_000)).is_err());
    }

    #[test]
    fn a_stalled_runtime_runs_its_timers_late_until_stopped() {
        let system = actix::System::new();
        system.block_on(async {
            let staller = RuntimeStaller::for_current_runtime();
            let pattern =
                StallPattern::new(Duration::from_millis(150), Duration::from_millis(200)).unwrap();
            staller.start(pattern);
            assert_eq!(staller.current(), Some(pattern));
            // A 10 ms timer, ten times in a row: together they outlast the
            // 50 ms between two stalls, so one of them straddles a stall.
            let mut worst = Duration::ZERO;
            for _ in 0..10 {
                let started = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
                worst = worst.max(started.elapsed());
            }
            assert!(worst >= Duration::from_millis(100), "worst {worst:?}");
            staller.stop();
            assert_eq!(staller.current(), None);
        });
    }
}
