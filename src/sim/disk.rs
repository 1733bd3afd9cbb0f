//! The simulated disk of one node: a key-value space written in *lanes* (the
//! record log, sled's state), with the durability rules of the real storage
//! (see `src/storage/`):
//! - a write is visible at once and durable only after a sync of its lane;
//! - a sync makes everything its lane wrote before it durable;
//! - a crash keeps what was durable, and of each lane's unsynced writes a
//!   prefix in write order (possibly none, possibly all): the record log
//!   appends to its segment files and a torn entry ends the scan, and sled
//!   recovers a prefix of its log, so neither ever keeps a later write
//!   without the earlier ones. "Tearing the last write" is that prefix
//!   ending inside the unsynced writes.
//!
//! The store traits of the protocol cores are implemented over it in the
//! simulator's node model.

use rand::Rng;
use std::collections::BTreeMap;

/// A kind of durable state with a sync of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// The log-server's records (the real record log).
    Records,
    /// Everything in sled: loglet state, acceptor, sequencer marks, partitions.
    State,
}

/// One write: a key and its new value (`None`: removed).
type Write = (Vec<u8>, Option<Vec<u8>>);

/// One node's disk.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    /// What survives a crash.
    durable: BTreeMap<Vec<u8>, Vec<u8>>,
    /// What reads see: `durable` plus every unsynced write.
    view: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Unsynced writes per lane, in order (`None`: a removal).
    pending: BTreeMap<Lane, Vec<Write>>,
    /// Syncs done (for stats).
    pub syncs: u64,
}

/// What a crash did to the unsynced writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Unsynced writes that survived.
    pub kept: usize,
    /// Unsynced writes that were lost.
    pub lost: usize,
}

impl SimDisk {
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.view.get(key).map(|v| v.as_slice())
    }

    /// Keys and values in `[from, to)`, in order.
    pub fn range<'a>(
        &'a self,
        from: &[u8],
        to: &[u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        self.view
            .range(from.to_vec()..to.to_vec())
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Keys and values starting with `prefix`, in order.
    pub fn scan_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        self.view
            .range(prefix.to_vec()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    pub fn put(&mut self, lane: Lane, key: Vec<u8>, value: Vec<u8>) {
        self.view.insert(key.clone(), value.clone());
        self.pending
            .entry(lane)
            .or_default()
            .push((key, Some(value)));
    }

    pub fn remove(&mut self, lane: Lane, key: &[u8]) {
        self.view.remove(key);
        self.pending
            .entry(lane)
            .or_default()
            .push((key.to_vec(), None));
    }

    /// Whether `lane` has unsynced writes.
    pub fn is_dirty(&self, lane: Lane) -> bool {
        self.pending.get(&lane).is_some_and(|p| !p.is_empty())
    }

    /// Makes everything `lane` wrote so far durable.
    pub fn sync(&mut self, lane: Lane) {
        if let Some(writes) = self.pending.remove(&lane) {
            Self::apply(&mut self.durable, writes);
            self.syncs += 1;
        }
    }

    /// The power goes: of each lane's unsynced writes a prefix survives (its
    /// length chosen by `rng`, from none to all), the rest is lost; reads
    /// then see only what survived.
    pub fn crash(&mut self, rng: &mut impl Rng) -> CrashReport {
        let mut report = CrashReport::default();
        for (_, writes) in std::mem::take(&mut self.pending) {
            let keep = rng.gen_range(0..=writes.len());
            report.kept += keep;
            report.lost += writes.len() - keep;
            Self::apply(&mut self.durable, writes.into_iter().take(keep));
        }
        self.view = self.durable.clone();
        report
    }

    /// The disk is replaced: nothing survives.
    pub fn wipe(&mut self) {
        *self = SimDisk::default();
    }

    fn apply(
        map: &mut BTreeMap<Vec<u8>, Vec<u8>>,
        writes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) {
        for (k, v) in writes {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn synced_writes_survive_and_unsynced_ones_survive_as_a_prefix() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..50 {
            let mut d = SimDisk::default();
            d.put(Lane::State, b"a".to_vec(), b"1".to_vec());
            d.put(Lane::Records, b"r0".to_vec(), b"x".to_vec());
            d.sync(Lane::State);
            for i in 1..=5u8 {
                d.put(Lane::Records, vec![b'r', b'0' + i], vec![i]);
            }
            d.remove(Lane::State, b"a");
            assert_eq!(d.get(b"a"), None, "reads see unsynced writes");
            assert!(d.is_dirty(Lane::Records) && d.is_dirty(Lane::State));
            let report = d.crash(&mut rng);
            assert_eq!(report.kept + report.lost, 7);
            // The synced put may only be undone by the (unsynced) remove
            // surviving; records survive as a prefix r0.., never with a hole.
            let kept: Vec<u8> = (0..=5u8)
                .filter(|i| d.get(&[b'r', b'0' + i]).is_some())
                .collect();
            assert_eq!(
                kept,
                (0..kept.len() as u8).collect::<Vec<_>>(),
                "a prefix: {kept:?}"
            );
        }
    }

    #[test]
    fn a_synced_lane_is_durable_whatever_happens_to_the_other() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let mut d = SimDisk::default();
        d.put(Lane::Records, b"k".to_vec(), b"v".to_vec());
        d.sync(Lane::Records);
        d.put(Lane::State, b"s".to_vec(), b"t".to_vec());
        d.crash(&mut rng);
        assert_eq!(d.get(b"k"), Some(&b"v"[..]));
        d.wipe();
        assert_eq!(d.get(b"k"), None);
        assert_eq!(d.scan_prefix(b"").count(), 0);
    }
}
