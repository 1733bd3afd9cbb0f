//! What every run must satisfy, checked over the world while it runs
//! ([`replicas_agree`]) and at its end ([`check_end`]):
//! - **no acknowledged append lost**: every record the log acknowledged is,
//!   at the end, inside its segment's sealed tail (or its open tail) and
//!   held with the same bytes by `r` replicas (unless trimmed): a crash
//!   keeps what was synced, and a lost disk is re-replicated by its rejoin;
//! - **every rejoin ends**: no node is still rejoining after a lost disk at
//!   the end;
//! - **one value per offset**: no two replicas hold different records at
//!   one offset of one loglet;
//! - **one leader per epoch**: no two nodes won one epoch of a partition
//!   (recorded by the world as elections are won);
//! - **equal replicas at equal LSNs**: two processors of a partition that
//!   applied up to the same LSN hold the same state;
//! - **the objects are correct**: the harness checkers (set, linearizable
//!   register, counter) pass on the simulated history, the metadata
//!   register clients' history included (linearizable);
//! - **exactly once**: a counter's final value counts every idempotency key
//!   at most once, and every acknowledged one;
//! - **the register's answers are true**: a CAS reported as a conflict
//!   never wrote (no majority of acceptors accepted its value);
//! - **liveness**: after the final heal, every partition acknowledges a
//!   client operation invoked after the heal within [`LIVENESS_BOUND`].

use super::world::World;
use crate::actors::log_server::core::LogServerStore;
use crate::actors::metadata::core::AcceptorStore;
use crate::actors::metadata::core::Versioned;
use crate::actors::partition_processor::core::Entries;
use crate::harness::checker::{
    classify, counter, linearizable::Budget, register, set, Validity, Workload,
};
use crate::harness::history::{pair, Call, OpType, Outcome, F};
use crate::log::{chain_key, Chain};
use crate::sim::store_meta::SimAcceptorStore;
use crate::types::{LogId, Lsn};
use std::collections::BTreeMap;
use std::time::Duration;

/// How soon after the final heal every partition serves again: a suspicion
/// clears within 150 ms, an election takes at most a 700 ms timeout plus
/// a pre-vote and a register write, the new leader's announcement may wait
/// for a seal (bounded by the 10 s seal timeout in the worst case) and a
/// client retries every few tens of ms. 12 s covers one failed seal and a
/// second attempt on a healthy network.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(12);

/// Checks that processors of one partition at one applied LSN hold the same
/// state; returns what differs.
pub fn replicas_agree(world: &World) -> Vec<String> {
    let mut out = Vec::new();
    for p in 0..world.setup.partitions as usize {
        let mut seen: BTreeMap<Lsn, (u32, Entries)> = BTreeMap::new();
        for node in &world.nodes {
            let Some(pp) = node.cores.as_ref().and_then(|c| c.processors[p].as_ref()) else {
                continue;
            };
            let applied = pp.state().applied;
            let dump = pp.store().dump();
            match seen.get(&applied) {
                Some((other, d)) if *d != dump => {
                    let diff = first_difference(d, &dump);
                    out.push(format!(
                        "partition {p}: nodes {other} and {} both applied up to {} but differ ({diff})",
                        node.id.0, applied.0
                    ));
                }
                Some(_) => {}
                None => {
                    seen.insert(applied, (node.id.0, dump));
                }
            }
        }
    }
    out
}

fn first_difference(a: &[(Vec<u8>, Vec<u8>)], b: &[(Vec<u8>, Vec<u8>)]) -> String {
    let a: BTreeMap<_, _> = a.iter().cloned().collect();
    let b: BTreeMap<_, _> = b.iter().cloned().collect();
    for (k, v) in &a {
        if b.get(k) != Some(v) {
            return format!("key {:?}", String::from_utf8_lossy(k));
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            return format!("key {:?}", String::from_utf8_lossy(k));
        }
    }
    "nothing".into()
}

/// The chain of `log` the register holds: the highest version a majority of
/// acceptors accepted (else the highest any holds).
pub fn final_chain(world: &World, log: LogId) -> Option<Chain> {
    let key = chain_key(log);
    let mut counts: BTreeMap<(u64, Vec<u8>), usize> = BTreeMap::new();
    for node in &world.nodes {
        let store = SimAcceptorStore::open(node.disk.clone());
        let state = store.get(&key).ok().flatten();
        if let Some(Versioned { version, value, .. }) = state.and_then(|s| s.value) {
            *counts.entry((version, value)).or_default() += 1;
        }
    }
    let need = world.nodes.len() / 2 + 1;
    let pick = counts
        .iter()
        .rev()
        .find(|(_, n)| **n >= need)
        .or_else(|| counts.iter().next_back())
        .map(|((_, v), _)| v.clone())?;
    rmp_serde::from_slice::<Chain>(&pick).ok()
}

/// Every end-of-run check; returns the violations.
pub fn check_end(world: &World) -> Vec<String> {
    let mut out = world.observed.violations.clone();
    out.extend(replicas_agree(world));
    out.extend(check_log(world));
    out.extend(check_history(world));
    out.extend(check_register(world));
    for node in world.still_rejoining() {
        out.push(format!(
            "node {}: its rejoin after a lost disk did not finish",
            node.0
        ));
    }
    out
}

/// A CAS the register reported as a conflict never took effect: no
/// majority of acceptors accepted its write.
fn check_register(world: &World) -> Vec<String> {
    let need = world.nodes.len() / 2 + 1;
    let mut out = Vec::new();
    for ((key, version, writer), who) in &world.observed.accepted {
        if who.len() >= need && world.observed.conflicts.contains(writer) {
            out.push(format!(
                "register {key}: a CAS reported as a conflict wrote version {version} (accepted by a majority)"
            ));
        }
    }
    out
}

/// Records at one offset agree; acknowledged appends survive.
fn check_log(world: &World) -> Vec<String> {
    let mut out = Vec::new();
    for p in 0..world.setup.partitions {
        let log = LogId(p);
        let Some(chain) = final_chain(world, log) else {
            if world.observed.acked.iter().any(|(l, _, _)| *l == log) {
                out.push(format!("log {p}: appends acknowledged but no chain"));
            }
            continue;
        };
        // What each replica holds, per segment.
        let mut held: Vec<BTreeMap<u64, Vec<u8>>> = Vec::new();
        // How many replicas hold each offset, per segment.
        let mut copies: Vec<BTreeMap<u64, usize>> = Vec::new();
        let mut trimmed: Vec<u64> = Vec::new();
        for seg in &chain.segments {
            let mut union: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let mut count: BTreeMap<u64, usize> = BTreeMap::new();
            let mut trim = 0;
            for node in &world.nodes {
                let store = match crate::sim::store_log::SimLogStore::open(node.disk.clone()) {
                    Ok(s) => s,
                    Err(e) => {
                        out.push(format!("node {}: log store does not open: {e}", node.id.0));
                        continue;
                    }
                };
                if let Ok(state) = store.loglet_state(seg.loglet) {
                    trim = trim.max(state.trim_point);
                }
                let Ok(records) = store.read_records(seg.loglet, 0, u64::MAX, usize::MAX) else {
                    continue;
                };
                for (offset, record) in records {
                    *count.entry(offset).or_default() += 1;
                    match union.get(&offset) {
                        Some(other) if *other != record.0 => out.push(format!(
                            "loglet {}: offset {offset} holds two different records (node {})",
                            seg.loglet.0, node.id.0
                        )),
                        Some(_) => {}
                        None => {
                            union.insert(offset, record.0);
                        }
                    }
                }
            }
            held.push(union);
            copies.push(count);
            trimmed.push(trim);
        }
        for (_, first, records) in world.observed.acked.iter().filter(|(l, _, _)| *l == log) {
            for (i, bytes) in records.iter().enumerate() {
                let lsn = first.0 + i as u64;
                if lsn < chain.first_lsn().0 {
                    // Trimmed, and its segment left the chain.
                    continue;
                }
                let found = chain
                    .segments
                    .iter()
                    .enumerate()
                    .rev()
                    .find(|(_, s)| s.base_lsn.0 <= lsn);
                let Some((si, seg)) = found else {
                    out.push(format!("log {p}: acknowledged LSN {lsn} is in no segment"));
                    continue;
                };
                let offset = lsn - seg.base_lsn.0;
                if seg.sealed_tail.is_some_and(|t| offset >= t) {
                    out.push(format!(
                        "log {p}: acknowledged LSN {lsn} lost: loglet {} sealed at {:?}",
                        seg.loglet.0, seg.sealed_tail
                    ));
                    continue;
                }
                if offset < trimmed[si] {
                    continue;
                }
                let r = copies[si].get(&offset).copied().unwrap_or(0);
                if r > 0 && r < seg.replication as usize {
                    out.push(format!(
                        "log {p}: acknowledged LSN {lsn} (loglet {} offset {offset}) has {r} of {} copies",
                        seg.loglet.0, seg.replication
                    ));
                }
                match held[si].get(&offset) {
                    Some(b) if b == bytes => {}
                    Some(_) => out.push(format!(
                        "log {p}: acknowledged LSN {lsn} holds another record"
                    )),
                    None => out.push(format!(
                        "log {p}: acknowledged LSN {lsn} (loglet {} offset {offset}) is on no replica",
                        seg.loglet.0
                    )),
                }
            }
        }
    }
    out
}

/// The harness checkers, exactly-once counters and liveness.
fn check_history(world: &World) -> Vec<String> {
    let mut out = Vec::new();
    let calls = match pair(&world.clients.history) {
        Ok(c) => c,
        Err(e) => return vec![format!("history does not pair: {e}")],
    };
    let classes = classify(&calls);
    let of = |w: Workload| -> Vec<Call> {
        calls
            .iter()
            .filter(|c| classes.keys.get(&c.key) == Some(&w))
            .cloned()
            .collect()
    };
    let mut results = Vec::new();
    let sets = of(Workload::Set);
    if !sets.is_empty() {
        results.push(set::check(&sets));
    }
    let registers = of(Workload::Register);
    if !registers.is_empty() {
        results.push(register::check(&registers, &Budget::default()));
    }
    let counters = of(Workload::Counter);
    if !counters.is_empty() {
        results.push(counter::check(&counters));
    }
    for r in results {
        if r.valid == Validity::Invalid {
            out.push(format!("{}: {}", r.name, r.summary));
        }
    }
    out.extend(exactly_once(world, &calls));
    out.extend(liveness(world, &calls));
    out
}

/// A counter's last ok read counts each idempotency key once at most, and
/// every key acknowledged before the read began.
fn exactly_once(world: &World, calls: &[Call]) -> Vec<String> {
    let mut out = Vec::new();
    let mut last_read: BTreeMap<&str, &Call> = BTreeMap::new();
    for c in calls
        .iter()
        .filter(|c| c.f == F::Get && c.outcome == Outcome::Ok)
    {
        let e = last_read.entry(c.key.as_str()).or_insert(c);
        if c.complete_ns > e.complete_ns {
            *e = c;
        }
    }
    for (key, read) in last_read {
        let Some(value) = read.result.as_i64() else {
            continue;
        };
        let (invoke_us, complete_us) =
            (read.invoke_ns / 1000, read.complete_ns.unwrap_or(0) / 1000);
        let adds = world.clients.adds.values().filter(|a| a.key == key);
        let (mut lo, mut hi) = (0i64, 0i64);
        for a in adds {
            if a.issued_us < complete_us {
                hi += a.delta;
            }
            if a.acked_us.is_some_and(|t| t < invoke_us) {
                lo += a.delta;
            }
        }
        if value > hi || value < lo {
            out.push(format!(
                "counter {key}: read {value} outside [{lo}, {hi}] counting each key once"
            ));
        }
    }
    out
}

/// Every partition acknowledges an operation invoked after the heal within
/// the bound.
fn liveness(world: &World, calls: &[Call]) -> Vec<String> {
    let heal_ns = world.schedule.healed_at.as_nanos() as u64;
    let bound_ns = heal_ns + LIVENESS_BOUND.as_nanos() as u64;
    let partition_of: BTreeMap<&str, u32> = world
        .clients
        .keys
        .keys
        .iter()
        .map(|(_, k, p)| (k.as_str(), p.0))
        .collect();
    let mut out = Vec::new();
    for p in 0..world.setup.partitions {
        let served = calls.iter().any(|c| {
            partition_of.get(c.key.as_str()) == Some(&p)
                && c.outcome == Outcome::Ok
                && c.invoke_ns >= heal_ns
                && c.complete_ns.is_some_and(|t| t <= bound_ns)
        });
        if !served {
            out.push(format!(
                "liveness: partition {p} served nothing invoked after the heal at {:?} within {:?}",
                world.schedule.healed_at, LIVENESS_BOUND
            ));
        }
    }
    let _ = OpType::Ok;
    out
}
