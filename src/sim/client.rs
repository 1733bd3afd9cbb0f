//! Simulated clients: each one a Jepsen process issuing one Counter, Set or
//! Register operation at a time, recorded as harness history [`Op`]s. A
//! client does what the ingress does for a request (`ingress::http`): it
//! sends `Invoke` to the node it believes leads the partition, follows
//! `NotLeader` hints, retries with the same request id (applied at most
//! once) until its deadline, and ends `ok`, `fail` (certainly not applied)
//! or `info` (may have been applied). Counter adds carry an idempotency key;
//! after an `info`, a client sometimes issues the same key again, which must
//! not apply twice (checked by `invariants.rs`).

use crate::actors::partition_processor::{Invoke, InvokeReply};
use crate::harness::client::classify;
use crate::harness::history::{Op, OpType, F};
use crate::harness::workload::OpSpec;
use crate::ingress::http::partition_of;
use crate::objects::demo::DemoObject;
use crate::types::{NodeId, PartitionId};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long a client waits for one operation.
pub const OP_DEADLINE: Duration = Duration::from_secs(4);
/// A client's pause between two operations.
pub const THINK: Duration = Duration::from_millis(60);
/// Longest wait for one attempt at one node.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// The keys of a run: one of each object per partition.
#[derive(Clone, Debug)]
pub struct Keys {
    /// `(object, key, partition)`.
    pub keys: Vec<(DemoObject, String, PartitionId)>,
}

impl Keys {
    /// For each object, the first key of the form `<o><i>` that falls in
    /// each partition.
    pub fn new(partitions: u32) -> Keys {
        let mut keys = Vec::new();
        for (object, prefix) in [
            (DemoObject::Counter, "c"),
            (DemoObject::Set, "s"),
            (DemoObject::Register, "r"),
        ] {
            for p in 0..partitions {
                let key = (0..)
                    .map(|i| format!("{prefix}{i}"))
                    .find(|k| partition_of(object.name(), k, partitions) == PartitionId(p))
                    .expect("some key falls in every partition");
                keys.push((object, key, PartitionId(p)));
            }
        }
        Keys { keys }
    }
}

/// An operation being carried out.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The history's view of it.
    pub spec: OpSpec,
    /// The request sent (same request id on every attempt).
    pub invoke: Invoke,
    /// When the client gives up (µs since the start).
    pub deadline_us: u64,
    /// The node the next attempt goes to.
    pub target: NodeId,
    /// The node the history names (the first one asked).
    pub node: NodeId,
    /// An attempt may have reached a leader (the outcome is unknown).
    pub maybe_applied: bool,
    /// The last reason an attempt failed.
    pub last: String,
    /// The call id of the attempt in flight.
    pub call: Option<u64>,
}

/// What the world should do for a client.
#[derive(Clone, Debug)]
pub enum ClientAction {
    /// Send `invoke` to `to` as call `id`, giving up after `timeout`.
    Send {
        to: NodeId,
        invoke: Invoke,
        timeout: Duration,
    },
    /// Wake the client after `delay`.
    Sleep(Duration),
}

/// One counter add, by request id (for the exactly-once check).
#[derive(Clone, Debug)]
pub struct AddRecord {
    /// The counter.
    pub key: String,
    /// Its delta.
    pub delta: i64,
    /// When it was first issued (µs).
    pub issued_us: u64,
    /// When a call with this request id was first acknowledged (µs).
    pub acked_us: Option<u64>,
}

/// One client.
#[derive(Clone, Debug)]
pub struct Client {
    /// Its Jepsen process number.
    pub process: u64,
    /// The operation in flight.
    pub pending: Option<Pending>,
    /// Operations started.
    pub started: u64,
    /// A counter add to issue again with the same request id.
    pub retry: Option<(OpSpec, Invoke)>,
    /// Last known leader per partition.
    pub leaders: BTreeMap<PartitionId, NodeId>,
}

/// Everything the clients share: the keys, the history, counters of values.
#[derive(Clone, Debug)]
pub struct Clients {
    /// The clients.
    pub clients: Vec<Client>,
    /// The keys operated on.
    pub keys: Keys,
    /// The history, in the order things happened.
    pub history: Vec<Op>,
    /// The next unique value written or added.
    pub next_value: i64,
    /// Counter adds, by request id.
    pub adds: BTreeMap<String, AddRecord>,
    /// Generated request ids handed out.
    pub next_id: u64,
    /// The cluster's nodes.
    pub nodes: Vec<NodeId>,
    /// Partitions.
    pub partitions: u32,
    /// Request ids issued again after an unknown outcome.
    pub retried: BTreeSet<String>,
}

impl Clients {
    pub fn new(n: usize, nodes: Vec<NodeId>, partitions: u32) -> Self {
        Clients {
            clients: (0..n)
                .map(|i| Client {
                    process: i as u64,
                    pending: None,
                    started: 0,
                    retry: None,
                    leaders: BTreeMap::new(),
                })
                .collect(),
            keys: Keys::new(partitions),
            history: Vec::new(),
            next_value: 1,
            adds: BTreeMap::new(),
            next_id: 0,
            nodes,
            partitions,
            retried: BTreeSet::new(),
        }
    }

    fn op(
        process: u64,
        kind: OpType,
        spec: &OpSpec,
        value: Value,
        node: NodeId,
        now_us: u64,
    ) -> Op {
        Op {
            process,
            kind,
            f: spec.f,
            key: spec.key.clone(),
            value,
            node,
            time_ns: now_us * 1000,
            error: None,
        }
    }

    /// Client `c` is idle: start its next operation (reads only when
    /// `final_reads`).
    pub fn start(
        &mut self,
        c: usize,
        now_us: u64,
        final_reads: bool,
        rng: &mut StdRng,
    ) -> ClientAction {
        let (spec, mut invoke) = match self.clients[c].retry.take() {
            Some(again) if !final_reads => again,
            _ => self.draw(final_reads, now_us, rng),
        };
        let partition = invoke.partition;
        let client = &mut self.clients[c];
        client.started += 1;
        let target = client
            .leaders
            .get(&partition)
            .copied()
            .unwrap_or_else(|| self.nodes[rng.gen_range(0..self.nodes.len())]);
        invoke.timeout_ms = OP_DEADLINE.as_millis() as u64;
        let op = Self::op(
            client.process,
            OpType::Invoke,
            &spec,
            spec.value.clone(),
            target,
            now_us,
        );
        self.history.push(op);
        client.pending = Some(Pending {
            spec,
            invoke,
            deadline_us: now_us + OP_DEADLINE.as_micros() as u64,
            target,
            node: target,
            maybe_applied: false,
            last: "no attempt".into(),
            call: None,
        });
        self.attempt(c, now_us)
    }

    /// Draws an operation.
    fn draw(&mut self, final_reads: bool, now_us: u64, rng: &mut StdRng) -> (OpSpec, Invoke) {
        let (object, key, partition) =
            self.keys.keys[rng.gen_range(0..self.keys.keys.len())].clone();
        let roll = rng.gen_range(0..100);
        let read = final_reads || roll < 30;
        let (f, handler, value, arg) = match object {
            DemoObject::Counter if read => (F::Get, "get", Value::Null, Value::Null),
            DemoObject::Counter => {
                let d: i64 = rng.gen_range(1..=3);
                (F::Add, "add", json!(d), json!(d))
            }
            DemoObject::Set if read => (F::Read, "read", Value::Null, Value::Null),
            DemoObject::Set => {
                let v = self.next_value;
                self.next_value += 1;
                (F::Add, "add", json!(v), json!(v))
            }
            DemoObject::Register if read => (F::Read, "read", Value::Null, Value::Null),
            DemoObject::Register if roll < 65 => {
                let v = self.next_value;
                self.next_value += 1;
                (F::Write, "write", json!(v), json!(v))
            }
            DemoObject::Account | DemoObject::Reminder => {
                unreachable!("the simulator's keys are counters, sets and registers")
            }
            DemoObject::Register => {
                let v = self.next_value;
                self.next_value += 1;
                let expect = if rng.gen_bool(0.2) {
                    Value::Null
                } else {
                    json!(rng.gen_range((v - 4).max(1)..=v))
                };
                let arg = json!({"expect": expect, "value": v});
                (F::Cas, "cas", arg.clone(), arg)
            }
        };
        self.next_id += 1;
        // Changes whose double application a checker would see carry an
        // idempotency key (kept 24 h); set adds and reads get generated ids
        // (kept 60 s by the log's clock).
        let request_id = if matches!(f, F::Add | F::Write | F::Cas) && object != DemoObject::Set {
            format!("u:{}/{key}/{handler}/k{}", object.name(), self.next_id)
        } else {
            format!("g:sim-{}", self.next_id)
        };
        if f == F::Add && object == DemoObject::Counter {
            self.adds.insert(
                request_id.clone(),
                AddRecord {
                    key: key.clone(),
                    delta: value.as_i64().unwrap_or(0),
                    issued_us: now_us,
                    acked_us: None,
                },
            );
        }
        let invoke = Invoke {
            partition,
            request_id,
            object: object.name().into(),
            key: key.clone(),
            handler: handler.to_string(),
            arg: serde_json::to_vec(&arg).unwrap_or_default(),
            timeout_ms: 0,
        };
        (OpSpec { f, key, value }, invoke)
    }

    /// The next attempt of client `c`'s operation, or its end.
    fn attempt(&mut self, c: usize, now_us: u64) -> ClientAction {
        let Some(p) = &mut self.clients[c].pending else {
            return ClientAction::Sleep(Duration::from_millis(10));
        };
        if now_us >= p.deadline_us {
            return self.complete_failed(c, now_us);
        }
        let left = Duration::from_micros(p.deadline_us - now_us);
        p.invoke.timeout_ms = left.as_millis() as u64;
        ClientAction::Send {
            to: p.target,
            invoke: p.invoke.clone(),
            timeout: left.min(ATTEMPT_TIMEOUT),
        }
    }

    /// The deadline passed: `info` if an attempt may have applied, else `fail`.
    fn complete_failed(&mut self, c: usize, now_us: u64) -> ClientAction {
        let Some(p) = self.clients[c].pending.take() else {
            return ClientAction::Sleep(Duration::from_millis(10));
        };
        let (kind, error) = if p.maybe_applied {
            (OpType::Info, "timeout")
        } else {
            (OpType::Fail, "unavailable")
        };
        let mut op = Self::op(
            self.clients[c].process,
            kind,
            &p.spec,
            p.spec.value.clone(),
            p.node,
            now_us,
        );
        op.error = Some(format!("{error}: {}", p.last));
        self.history.push(op);
        if kind == OpType::Info && p.invoke.request_id.starts_with("u:") && p.spec.f == F::Add {
            // Retry the same key as a new operation, once.
            if self.retried.insert(p.invoke.request_id.clone()) {
                self.clients[c].retry = Some((p.spec.clone(), p.invoke.clone()));
            }
        }
        ClientAction::Sleep(THINK)
    }

    /// The answer to client `c`'s call `call` (an error: `Err(maybe_delivered)`).
    pub fn reply(
        &mut self,
        c: usize,
        call: u64,
        result: Result<InvokeReply, (bool, String)>,
        now_us: u64,
    ) -> Option<ClientAction> {
        let nodes = self.nodes.clone();
        let process = self.clients[c].process;
        let p = self.clients[c].pending.as_mut()?;
        if p.call != Some(call) {
            return None;
        }
        p.call = None;
        let next_node = |n: NodeId| {
            let i = nodes.iter().position(|x| *x == n).unwrap_or(0);
            nodes[(i + 1) % nodes.len()]
        };
        let pause = match result {
            Ok(InvokeReply::Done(resp)) => {
                let body = String::from_utf8_lossy(&resp.body).to_string();
                let done = classify(&p.spec, resp.status, &body);
                // A repeat of an idempotency key is answered with the result
                // stored when it first applied: not a reading of the counter now.
                let value = if self.retried.contains(&p.invoke.request_id) && p.spec.f == F::Add {
                    Value::Null
                } else {
                    done.value
                };
                let mut op = Self::op(process, done.kind, &p.spec, value, p.node, now_us);
                op.error = done.error;
                let partition = p.invoke.partition;
                let target = p.target;
                if done.kind == OpType::Ok {
                    if let Some(a) = self.adds.get_mut(&p.invoke.request_id) {
                        a.acked_us.get_or_insert(now_us);
                    }
                }
                self.history.push(op);
                self.clients[c].pending = None;
                self.clients[c].leaders.insert(partition, target);
                return Some(ClientAction::Sleep(THINK));
            }
            Ok(InvokeReply::NotLeader { leader }) => {
                p.last = format!("{} does not lead", p.target);
                let hint = leader.filter(|l| *l != p.target);
                p.target = hint.unwrap_or_else(|| next_node(p.target));
                if hint.is_some() {
                    Duration::from_millis(1)
                } else {
                    Duration::from_millis(50)
                }
            }
            Ok(InvokeReply::Fenced) if !p.maybe_applied => {
                // Not applied, and no earlier attempt may have been: the
                // operation certainly failed.
                let mut op = Self::op(
                    process,
                    OpType::Fail,
                    &p.spec,
                    p.spec.value.clone(),
                    p.node,
                    now_us,
                );
                op.error = Some("fenced".into());
                self.history.push(op);
                self.clients[c].pending = None;
                return Some(ClientAction::Sleep(THINK));
            }
            Ok(InvokeReply::Fenced) => {
                p.last = "fenced".into();
                Duration::from_millis(20)
            }
            Ok(InvokeReply::Unavailable(why)) => {
                p.last = why;
                p.target = next_node(p.target);
                Duration::from_millis(50)
            }
            Ok(InvokeReply::Timeout) => {
                p.maybe_applied = true;
                p.last = "leader timed out".into();
                Duration::from_millis(10)
            }
            Err((maybe, why)) => {
                p.maybe_applied |= maybe;
                p.last = why;
                p.target = next_node(p.target);
                Duration::from_millis(20)
            }
        };
        Some(ClientAction::Sleep(pause))
    }

    /// Client `c` woke up: the next attempt of its operation, if it has one.
    pub fn resume(&mut self, c: usize, now_us: u64) -> Option<ClientAction> {
        self.clients[c].pending.as_ref()?;
        Some(self.attempt(c, now_us))
    }

    /// Notes that client `c`'s attempt went out as call `id`.
    pub fn sent(&mut self, c: usize, id: u64) {
        if let Some(p) = &mut self.clients[c].pending {
            p.call = Some(id);
        }
    }
}
