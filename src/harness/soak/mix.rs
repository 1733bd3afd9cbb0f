//! The soak's mixed workload: which operation a client sends next, over a
//! fixed key space whose live state stays bounded (counters and registers
//! hold one number each, a set at most [`SET_UNIVERSE`] elements). Pure: a
//! seeded generator in, an operation out.

use crate::harness::history::F;
use crate::harness::workload::OpSpec;
use crate::objects::demo::DemoObject;
use rand::Rng;
use serde_json::{json, Value};

/// What a soak operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `Counter/add 1` without an idempotency key.
    CounterAdd,
    /// `Counter/add 1` with a fresh idempotency key; `repeat`: sent a second
    /// time with the same key right after the first answer.
    CounterAddKeyed { repeat: bool },
    /// `Counter/get`.
    CounterGet,
    /// `Register/write` of a number.
    RegisterWrite,
    /// `Register/read`.
    RegisterRead,
    /// `Set/add` of an element from the key's small universe.
    SetAdd,
    /// `Set/read`.
    SetRead,
}

/// Percent of operations of each kind (keyed adds split by `repeat` below).
pub const MIX: [(Kind, u32); 7] = [
    (Kind::CounterAdd, 40),
    (Kind::CounterAddKeyed { repeat: false }, 15),
    (Kind::CounterGet, 10),
    (Kind::RegisterWrite, 15),
    (Kind::RegisterRead, 5),
    (Kind::SetAdd, 10),
    (Kind::SetRead, 5),
];

/// Percent of keyed adds that are sent twice with the same key.
pub const KEYED_REPEAT_PERCENT: u32 = 20;

/// Elements a set may hold: a set's state stays bounded however often it
/// is added to.
pub const SET_UNIVERSE: i64 = 8;

/// Register values are below this (a bounded number of digits).
const REGISTER_VALUES: i64 = 1_000_000;

/// One operation to send.
#[derive(Clone, Debug, PartialEq)]
pub struct SoakOp {
    /// What it does.
    pub kind: Kind,
    /// The object type it addresses.
    pub object: DemoObject,
    /// Index of its key in `0..keys` (the counter ledger's slot).
    pub key_index: usize,
    /// The request (handler, key, argument) as the harness' client sends it.
    pub spec: OpSpec,
}

/// The name of key `i`; the same name under each object type is a
/// different object.
pub fn key_name(i: usize) -> String {
    format!("k{i}")
}

/// The next operation over `keys` keys (at least 1).
pub fn next_op(rng: &mut impl Rng, keys: usize) -> SoakOp {
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut roll = rng.gen_range(0..total);
    let mut kind = MIX[0].0;
    for (k, w) in MIX {
        if roll < w {
            kind = k;
            break;
        }
        roll -= w;
    }
    if let Kind::CounterAddKeyed { .. } = kind {
        kind = Kind::CounterAddKeyed {
            repeat: rng.gen_range(0..100) < KEYED_REPEAT_PERCENT,
        };
    }
    let key_index = rng.gen_range(0..keys.max(1));
    let (object, f, value): (DemoObject, F, Value) = match kind {
        Kind::CounterAdd | Kind::CounterAddKeyed { .. } => (DemoObject::Counter, F::Add, json!(1)),
        Kind::CounterGet => (DemoObject::Counter, F::Read, Value::Null),
        Kind::RegisterWrite => (
            DemoObject::Register,
            F::Write,
            json!(rng.gen_range(0..REGISTER_VALUES)),
        ),
        Kind::RegisterRead => (DemoObject::Register, F::Read, Value::Null),
        Kind::SetAdd => (
            DemoObject::Set,
            F::Add,
            json!(rng.gen_range(0..SET_UNIVERSE)),
        ),
        Kind::SetRead => (DemoObject::Set, F::Read, Value::Null),
    };
    SoakOp {
        kind,
        object,
        key_index,
        spec: OpSpec {
            f,
            key: key_name(key_index),
            value,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    #[test]
    fn the_mix_follows_its_weights_and_stays_in_bounds() {
        let mut rng = StdRng::seed_from_u64(5);
        let n = 20_000;
        let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
        let mut repeats = 0;
        for _ in 0..n {
            let op = next_op(&mut rng, 50);
            assert!(op.key_index < 50);
            assert_eq!(op.spec.key, key_name(op.key_index));
            let name = match op.kind {
                Kind::CounterAdd => "add",
                Kind::CounterAddKeyed { repeat } => {
                    repeats += u32::from(repeat);
                    "keyed"
                }
                Kind::CounterGet => "get",
                Kind::RegisterWrite => "write",
                Kind::RegisterRead => "rread",
                Kind::SetAdd => {
                    let e = op.spec.value.as_i64().unwrap();
                    assert!((0..SET_UNIVERSE).contains(&e));
                    "sadd"
                }
                Kind::SetRead => "sread",
            };
            *counts.entry(name).or_default() += 1;
        }
        let pct = |k: &str| counts[k] as f64 * 100.0 / n as f64;
        assert!((pct("add") - 40.0).abs() < 2.0, "{counts:?}");
        assert!((pct("keyed") - 15.0).abs() < 2.0, "{counts:?}");
        assert!((pct("sread") - 5.0).abs() < 1.5, "{counts:?}");
        let repeat_pct = repeats as f64 * 100.0 / counts["keyed"] as f64;
        assert!((repeat_pct - 20.0).abs() < 4.0, "{repeat_pct}");
    }

    #[test]
    fn operations_map_to_the_object_routes() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let op = next_op(&mut rng, 3);
            let (path, _) = op.spec.request(op.object);
            seen.insert(path.rsplit('/').next().unwrap().to_string());
            match op.kind {
                Kind::CounterAdd | Kind::CounterAddKeyed { .. } => {
                    assert_eq!(op.spec.request(op.object).1, "1");
                    assert!(path.starts_with("/Counter/k"), "{path}");
                }
                Kind::CounterGet => assert!(path.ends_with("/get"), "{path}"),
                Kind::RegisterWrite => assert!(path.starts_with("/Register/"), "{path}"),
                _ => {}
            }
        }
        let handlers: Vec<&str> = seen.iter().map(String::as_str).collect();
        assert_eq!(handlers, ["add", "get", "read", "write"]);
    }
}
