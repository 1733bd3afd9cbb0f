//! Group commit: one sync serves every writer that asked for durability
//! before it started.
//!
//! A [`SyncLane`] owns one kind of sync (the record log's `fdatasync`s, or
//! sled's flush plus `fdatasync`) on a dedicated thread, so async callers
//! never block an executor thread. Writers bump the lane's write generation
//! after each write; [`SyncLane::sync`] returns at once when nothing was
//! written since the last completed sync, and otherwise waits for the next
//! sync that starts after the call. Every waiter that arrives while a sync
//! runs is served by the one after it: under load each sync covers many
//! writes.
//!
//! A failed sync poisons the lane for good: after a failed `fsync` the
//! kernel may have dropped the dirty pages, so a later "successful" sync
//! proves nothing (PostgreSQL's fsync lesson). Nothing is acknowledged
//! from then on; the node reports the failure in status and must be
//! restarted, which re-reads what really is on disk.

use super::{Result, StorageError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

type Waiter = oneshot::Sender<std::result::Result<(), String>>;

/// The sync a lane performs.
pub type SyncAction = Box<dyn FnMut() -> std::result::Result<(), String> + Send>;

#[derive(Clone)]
pub struct SyncLane {
    /// Counters and the poison flag, shared with the lane's thread.
    shared: Arc<Shared>,
    /// The way to the lane's thread; the last handle's drop stops and joins it.
    thread: Arc<LaneThread>,
}

/// The lane's thread and the channel that feeds it. Dropped with the last
/// [`SyncLane`] handle: the channel closes, the thread drops its action (and
/// with it the files it syncs) and ends, and the drop waits for that. So no
/// sync, and no close of a file the lane held, outlives the storage: a
/// reopened directory never races the old lane for its files, and a process
/// never exits with a sync still in flight (on a FUSE mount served by the
/// same process that would wait forever).
struct LaneThread {
    /// Sends waiters to the thread; `None` once the drop has closed it.
    tx: Mutex<Option<mpsc::Sender<Waiter>>>,
    /// Joined by the drop.
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LaneThread {
    fn send(&self, waiter: Waiter) -> Result<()> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        match tx.as_ref() {
            Some(tx) => tx.send(waiter).map_err(|_| StorageError::Closed),
            None => Err(StorageError::Closed),
        }
    }
}

impl Drop for LaneThread {
    fn drop(&mut self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            // Never join from the lane's own thread (its action dropping the
            // last handle): it ends by itself once it returns.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

struct Shared {
    /// What the lane syncs, for messages.
    name: &'static str,
    /// Bumped after every write the lane must make durable.
    written: AtomicU64,
    /// The write generation the last completed sync covered.
    synced: AtomicU64,
    /// Syncs run (for metrics and tests).
    syncs: AtomicU64,
    /// Total and longest time spent syncing, in microseconds.
    sync_micros: AtomicU64,
    max_sync_micros: AtomicU64,
    /// Set by the first failed sync; every later sync fails with it.
    poisoned: Mutex<Option<String>>,
    /// Chaos only: every sync first waits this long (ms; 0: none), a slow
    /// disk as its callers see it (see [`SyncLane::set_slow_sync`]).
    slow_sync_ms: AtomicU64,
}

/// Counters of one lane.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LaneStats {
    pub syncs: u64,
    pub sync_micros_total: u64,
    pub max_sync_micros: u64,
    pub failed: Option<String>,
}

impl SyncLane {
    /// Starts the lane's thread. It ends when every handle is dropped, and
    /// the last drop waits for it.
    pub fn start(name: &'static str, mut action: SyncAction) -> Self {
        let shared = Arc::new(Shared {
            name,
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            sync_micros: AtomicU64::new(0),
            max_sync_micros: AtomicU64::new(0),
            poisoned: Mutex::new(None),
            slow_sync_ms: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel::<Waiter>();
        let lane = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("keel-sync-{name}"))
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let result = lane.run(&mut action);
                    for waiter in batch {
                        let _ = waiter.send(result.clone());
                    }
                }
            })
            .expect("spawning a sync thread");
        let thread = Arc::new(LaneThread {
            tx: Mutex::new(Some(tx)),
            handle: Mutex::new(Some(handle)),
        });
        SyncLane { shared, thread }
    }

    /// Records that something was written that a later `sync` must cover.
    /// Call it after the write.
    pub fn mark_written(&self) {
        self.shared.written.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether writes are waiting for a sync.
    pub fn is_dirty(&self) -> bool {
        self.shared.written.load(Ordering::SeqCst) > self.shared.synced.load(Ordering::SeqCst)
    }

    /// Resolves once every write marked before this call is durable.
    pub async fn sync(&self) -> Result<()> {
        if let Some(reason) = self.failure() {
            return Err(StorageError::Flush(reason));
        }
        if !self.is_dirty() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.thread.send(tx)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(StorageError::Flush(reason)),
            Err(_) => Err(StorageError::Closed),
        }
    }

    /// The same, blocking the calling thread (shutdown and tests only).
    pub fn sync_blocking(&self) -> Result<()> {
        if let Some(reason) = self.failure() {
            return Err(StorageError::Flush(reason));
        }
        if !self.is_dirty() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.thread.send(tx)?;
        match rx.blocking_recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(StorageError::Flush(reason)),
            Err(_) => Err(StorageError::Closed),
        }
    }

    /// Chaos: makes every later sync take at least `delay` longer (zero
    /// undoes it). The wait runs on the lane's own thread, as a slow
    /// `fsync` would, and counts in the lane's sync times.
    pub fn set_slow_sync(&self, delay: std::time::Duration) {
        let ms = delay.as_millis().min(u64::MAX as u128) as u64;
        self.shared.slow_sync_ms.store(ms, Ordering::Relaxed);
    }

    /// The delay [`set_slow_sync`](Self::set_slow_sync) set.
    pub fn slow_sync(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.shared.slow_sync_ms.load(Ordering::Relaxed))
    }

    /// Why the lane failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared
            .poisoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stats(&self) -> LaneStats {
        LaneStats {
            syncs: self.shared.syncs.load(Ordering::Relaxed),
            sync_micros_total: self.shared.sync_micros.load(Ordering::Relaxed),
            max_sync_micros: self.shared.max_sync_micros.load(Ordering::Relaxed),
            failed: self.failure(),
        }
    }
}

impl Shared {
    fn run(&self, action: &mut SyncAction) -> std::result::Result<(), String> {
        if let Some(reason) = self
            .poisoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(reason);
        }
        // Every waiter in the batch marked its writes before it asked.
        let generation = self.written.load(Ordering::SeqCst);
        if generation <= self.synced.load(Ordering::SeqCst) {
            return Ok(());
        }
        let started = Instant::now();
        let slow = self.slow_sync_ms.load(Ordering::Relaxed);
        if slow > 0 {
            std::thread::sleep(std::time::Duration::from_millis(slow));
        }
        let result = action();
        let micros = started.elapsed().as_micros() as u64;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_sync_micros.fetch_max(micros, Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.synced.fetch_max(generation, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => {
                let reason = format!(
                    "{} sync failed: {e}; nothing more is acknowledged until the node restarts",
                    self.name
                );
                tracing::error!("{reason}");
                *self.poisoned.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
                Err(reason)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn concurrent_waiters_share_syncs_and_clean_lanes_skip() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let lane = SyncLane::start(
            "test",
            Box::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(2));
                Ok(())
            }),
        );
        lane.sync().await.unwrap();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            0,
            "nothing written, nothing synced"
        );
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let lane = lane.clone();
            tasks.push(tokio::spawn(async move {
                lane.mark_written();
                lane.sync().await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let n = runs.load(Ordering::SeqCst);
        assert!((1..64).contains(&n), "{n} syncs for 64 writers");
        assert!(!lane.is_dirty());
        assert_eq!(lane.stats().syncs, n as u64);
    }

    #[tokio::test]
    async fn a_slow_lane_holds_its_waiters_and_shows_it_in_its_times() {
        let lane = SyncLane::start("test", Box::new(|| Ok(())));
        let slow = std::time::Duration::from_millis(60);
        lane.set_slow_sync(slow);
        assert_eq!(lane.slow_sync(), slow);
        lane.mark_written();
        let started = Instant::now();
        lane.sync().await.unwrap();
        assert!(started.elapsed() >= slow, "{:?}", started.elapsed());
        assert!(lane.stats().max_sync_micros >= 60_000, "{:?}", lane.stats());
        lane.set_slow_sync(std::time::Duration::ZERO);
        lane.mark_written();
        lane.sync().await.unwrap();
        assert_eq!(lane.stats().syncs, 2);
    }

    #[tokio::test]
    async fn a_failed_sync_poisons_the_lane() {
        let fail = Arc::new(AtomicUsize::new(1));
        let f = fail.clone();
        let lane = SyncLane::start(
            "test",
            Box::new(move || {
                if f.load(Ordering::SeqCst) > 0 {
                    Err("EIO".into())
                } else {
                    Ok(())
                }
            }),
        );
        lane.mark_written();
        assert!(lane.sync().await.is_err());
        fail.store(0, Ordering::SeqCst);
        lane.mark_written();
        let e = lane.sync().await.unwrap_err().to_string();
        assert!(e.contains("EIO"), "{e}");
        assert!(lane.stats().failed.is_some());
    }

    #[test]
    fn the_last_handle_waits_for_the_thread_and_its_action_to_end() {
        // What the action owns (the files it syncs) must be gone when the
        // storage is: the drop of the last handle returns only after the
        // thread dropped its action, even while a sync is running.
        struct Owned(Arc<AtomicU64>);
        impl Drop for Owned {
            fn drop(&mut self) {
                std::thread::sleep(std::time::Duration::from_millis(50));
                self.0.store(1, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicU64::new(0));
        let owned = Owned(dropped.clone());
        let lane = SyncLane::start(
            "test",
            Box::new(move || {
                let _keep = &owned;
                std::thread::sleep(std::time::Duration::from_millis(20));
                Ok(())
            }),
        );
        let other = lane.clone();
        lane.mark_written();
        let (tx, _rx) = oneshot::channel();
        lane.thread.send(tx).unwrap();
        drop(lane);
        assert_eq!(dropped.load(Ordering::SeqCst), 0, "a handle is still alive");
        drop(other);
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "the drop returned before the thread ended"
        );
    }
}
