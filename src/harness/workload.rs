//! What the clients ask: operations for the `set`, `register` and
//! `counter` workloads, and the final reads.
//!
//! Keys carry a per-run prefix, so a run against an already used cluster
//! (`--nodes-url`) never reads elements or values of an earlier run. Added
//! set elements and written register values are unique within a run: the
//! set checker needs that to tell adds apart, and the linearizability
//! checker prunes unobserved unknown writes only when values are unique.

use crate::harness::history::{OpType, F};
use crate::objects::demo::DemoObject;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Set,
    Register,
    Counter,
    /// Transfers among a few accounts spread over the partitions (Jepsen's
    /// bank), checked for conservation once every outbox drained.
    Bank,
}

/// What every account of the bank workload starts with.
pub const INITIAL_BALANCE: i64 = 100;

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Set => "set",
            WorkloadKind::Register => "register",
            WorkloadKind::Counter => "counter",
            WorkloadKind::Bank => "bank",
        }
    }

    pub fn object(self) -> DemoObject {
        match self {
            WorkloadKind::Set => DemoObject::Set,
            WorkloadKind::Register => DemoObject::Register,
            WorkloadKind::Counter => DemoObject::Counter,
            WorkloadKind::Bank => DemoObject::Account,
        }
    }

    /// How many keys the workload spreads over. A few keys land on
    /// different partitions; more would thin out each register's history
    /// until nothing interesting is concurrent.
    pub fn default_keys(self) -> usize {
        match self {
            WorkloadKind::Set => 4,
            WorkloadKind::Register => 4,
            WorkloadKind::Counter => 3,
            WorkloadKind::Bank => 5,
        }
    }

    /// The function of a final read.
    pub fn read_f(self) -> F {
        match self {
            WorkloadKind::Counter => F::Get,
            WorkloadKind::Bank => F::Balance,
            _ => F::Read,
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WorkloadKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "set" => Ok(WorkloadKind::Set),
            "register" => Ok(WorkloadKind::Register),
            "counter" => Ok(WorkloadKind::Counter),
            "bank" => Ok(WorkloadKind::Bank),
            _ => Err(format!(
                "unknown workload {s:?} (one of: set, register, counter, bank)"
            )),
        }
    }
}

/// One operation to invoke.
#[derive(Clone, Debug, PartialEq)]
pub struct OpSpec {
    pub f: F,
    pub key: String,
    /// The invocation value (history format).
    pub value: Value,
}

impl OpSpec {
    /// `POST /{Object}/{key}/{handler}` path and body for this op.
    pub fn request(&self, object: DemoObject) -> (String, String) {
        let handler = match (object, self.f) {
            (DemoObject::Counter, F::Read) => "get".to_string(),
            (_, f) => f.to_string(),
        };
        let body = if self.value.is_null() {
            String::new()
        } else {
            self.value.to_string()
        };
        (format!("/{}/{}/{handler}", object.name(), self.key), body)
    }
}

/// Generates operations; shared by every client thread.
pub struct Workload {
    pub kind: WorkloadKind,
    pub keys: Vec<String>,
    next_value: AtomicI64,
    /// Register: the last value each key was seen to hold, so that a cas
    /// has a fair chance of expecting the current value.
    last_seen: Mutex<HashMap<String, Option<i64>>>,
}

impl Workload {
    /// `prefix` makes keys unique to the run.
    pub fn new(kind: WorkloadKind, prefix: &str, keys: usize) -> Self {
        let letter = match kind {
            WorkloadKind::Set => "s",
            WorkloadKind::Register => "r",
            WorkloadKind::Counter => "c",
            WorkloadKind::Bank => "a",
        };
        Workload {
            kind,
            keys: (0..keys.max(1))
                .map(|i| format!("{prefix}-{letter}{i}"))
                .collect(),
            next_value: AtomicI64::new(1),
            last_seen: Mutex::new(HashMap::new()),
        }
    }

    fn unique(&self) -> i64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }

    /// The next operation of a client.
    pub fn next_op(&self, rng: &mut impl Rng) -> OpSpec {
        let key = self.keys[rng.gen_range(0..self.keys.len())].clone();
        let roll = rng.gen_range(0..100);
        let (f, value) = match self.kind {
            // Reads return the whole set: keep them rare.
            WorkloadKind::Set if roll < 5 => (F::Read, Value::Null),
            WorkloadKind::Set => (F::Add, json!(self.unique())),
            WorkloadKind::Counter if roll < 30 => (F::Get, Value::Null),
            WorkloadKind::Counter => (F::Add, json!(rng.gen_range(1..=5))),
            WorkloadKind::Register if roll < 40 => (F::Read, Value::Null),
            WorkloadKind::Register if roll < 70 => (F::Write, json!(self.unique())),
            WorkloadKind::Bank if roll < 25 => (F::Balance, Value::Null),
            WorkloadKind::Bank => {
                let others: Vec<&String> = self.keys.iter().filter(|k| **k != key).collect();
                let to = match others.as_slice() {
                    [] => key.clone(),
                    o => o[rng.gen_range(0..o.len())].clone(),
                };
                (
                    F::Transfer,
                    json!({"to": to, "amount": rng.gen_range(1..=5)}),
                )
            }
            WorkloadKind::Register => {
                let expect = self
                    .last_seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&key)
                    .copied()
                    .flatten();
                (F::Cas, json!({"expect": expect, "value": self.unique()}))
            }
        };
        OpSpec { f, key, value }
    }

    /// Final reads: every key, once per node (the caller picks the node).
    /// The bank's are marked `"final"`: they come after every outbox drained.
    pub fn final_reads(&self) -> Vec<OpSpec> {
        let value = match self.kind {
            WorkloadKind::Bank => json!("final"),
            _ => Value::Null,
        };
        self.keys
            .iter()
            .map(|k| OpSpec {
                f: self.kind.read_f(),
                key: k.clone(),
                value: value.clone(),
            })
            .collect()
    }

    /// What must be acknowledged before the load starts: the bank's
    /// deposits of [`INITIAL_BALANCE`] into every account.
    pub fn setup(&self) -> Vec<OpSpec> {
        match self.kind {
            WorkloadKind::Bank => self
                .keys
                .iter()
                .map(|k| OpSpec {
                    f: F::Deposit,
                    key: k.clone(),
                    value: json!(INITIAL_BALANCE),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Learns from a completion (register: what value a key holds).
    pub fn observe(&self, op: &OpSpec, kind: OpType, result: &Value) {
        if self.kind != WorkloadKind::Register || kind != OpType::Ok {
            return;
        }
        let seen = match op.f {
            F::Read => result.as_i64(),
            F::Write => op.value.as_i64(),
            F::Cas => op.value.get("value").and_then(Value::as_i64),
            _ => return,
        };
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(op.key.clone(), seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::HashSet;

    fn ops(kind: WorkloadKind, n: usize) -> (Workload, Vec<OpSpec>) {
        let w = Workload::new(kind, "t1", kind.default_keys());
        let mut rng = StdRng::seed_from_u64(11);
        let ops = (0..n).map(|_| w.next_op(&mut rng)).collect();
        (w, ops)
    }

    #[test]
    fn set_adds_unique_integers_and_sometimes_reads() {
        let (w, ops) = ops(WorkloadKind::Set, 2000);
        let adds: Vec<i64> = ops
            .iter()
            .filter(|o| o.f == F::Add)
            .map(|o| o.value.as_i64().unwrap())
            .collect();
        let unique: HashSet<i64> = adds.iter().copied().collect();
        assert_eq!(unique.len(), adds.len());
        let reads = ops.iter().filter(|o| o.f == F::Read).count();
        assert!(reads > 20 && reads < 250, "{reads}");
        let keys: HashSet<&str> = ops.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys.len(), w.keys.len());
        assert!(keys.iter().all(|k| k.starts_with("t1-s")));
    }

    #[test]
    fn register_writes_are_unique_and_cas_expects_the_last_seen_value() {
        let (w, ops) = ops(WorkloadKind::Register, 3000);
        let mut written = HashSet::new();
        for o in &ops {
            let v = match o.f {
                F::Write => o.value.as_i64(),
                F::Cas => o.value["value"].as_i64(),
                F::Read => continue,
                f => panic!("{f}"),
            };
            assert!(written.insert(v.unwrap()), "{o:?}");
        }
        // Nothing observed yet: cas expects null.
        let cas = ops.iter().find(|o| o.f == F::Cas).unwrap();
        assert_eq!(cas.value["expect"], Value::Null);

        let key = w.keys[0].clone();
        let read = OpSpec {
            f: F::Read,
            key: key.clone(),
            value: Value::Null,
        };
        w.observe(&read, OpType::Ok, &json!(77));
        // A failed or unknown op teaches nothing.
        w.observe(&read, OpType::Info, &json!(78));
        let mut rng = StdRng::seed_from_u64(3);
        let next_cas = std::iter::repeat_with(|| w.next_op(&mut rng))
            .take(1000)
            .find(|o| o.f == F::Cas && o.key == key)
            .unwrap();
        assert_eq!(next_cas.value["expect"], json!(77));
    }

    #[test]
    fn counter_adds_positive_deltas_and_reads_with_get() {
        let (w, ops) = ops(WorkloadKind::Counter, 1000);
        assert!(ops
            .iter()
            .filter(|o| o.f == F::Add)
            .all(|o| (1..=5).contains(&o.value.as_i64().unwrap())));
        assert!(ops.iter().any(|o| o.f == F::Get));
        assert!(w.final_reads().iter().all(|o| o.f == F::Get));
    }

    #[test]
    fn requests_map_to_the_ingress_routes() {
        let op = OpSpec {
            f: F::Cas,
            key: "k".into(),
            value: json!({"expect": null, "value": 4}),
        };
        let (path, body) = op.request(DemoObject::Register);
        assert_eq!(path, "/Register/k/cas");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"expect": null, "value": 4})
        );
        let get = OpSpec {
            f: F::Get,
            key: "c".into(),
            value: Value::Null,
        };
        assert_eq!(
            get.request(DemoObject::Counter),
            ("/Counter/c/get".into(), String::new())
        );
        let read = OpSpec {
            f: F::Read,
            key: "s".into(),
            value: Value::Null,
        };
        assert_eq!(read.request(DemoObject::Set).0, "/Set/s/read");
    }

    #[test]
    fn bank_transfers_go_between_two_accounts_after_the_deposits() {
        let (w, ops) = ops(WorkloadKind::Bank, 1000);
        let setup = w.setup();
        assert_eq!(setup.len(), 5);
        assert!(setup
            .iter()
            .all(|o| o.f == F::Deposit && o.value == json!(INITIAL_BALANCE)));
        let transfers: Vec<&OpSpec> = ops.iter().filter(|o| o.f == F::Transfer).collect();
        assert!(transfers.len() > 600, "{}", transfers.len());
        for t in &transfers {
            let to = t.value["to"].as_str().unwrap();
            assert_ne!(to, t.key);
            assert!(w.keys.iter().any(|k| k == to));
            assert!((1..=5).contains(&t.value["amount"].as_i64().unwrap()));
        }
        let (path, body) = transfers[0].request(DemoObject::Account);
        assert_eq!(path, format!("/Account/{}/transfer", transfers[0].key));
        assert!(body.contains("\"to\""));
        assert!(w
            .final_reads()
            .iter()
            .all(|o| o.f == F::Balance && o.value == json!("final")));
        assert_eq!("bank".parse(), Ok(WorkloadKind::Bank));
    }

    #[test]
    fn final_reads_cover_every_key() {
        let w = Workload::new(WorkloadKind::Set, "x", 4);
        let reads = w.final_reads();
        assert_eq!(reads.len(), 4);
        assert!(reads.iter().all(|o| o.f == F::Read && o.value.is_null()));
        assert!("queue".parse::<WorkloadKind>().is_err());
        assert_eq!("register".parse(), Ok(WorkloadKind::Register));
    }
}
