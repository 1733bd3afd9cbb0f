//! Simulated clients of the metadata register itself: one per node, each
//! using that node's proposer the way the sealer and the elector do, all on
//! one key, so proposers duel. Each client reads the key, then tries a CAS
//! from the version it read to a value written once in the run, and again.
//! Every operation goes into the run's history as a Jepsen register
//! operation (`read`, or `cas` from the value read to the new one), so the
//! harness's linearizability checker judges the register's answers: a CAS
//! reported as a conflict whose value a later read sees is caught there.
//!
//! A CAS by version is a CAS by value here: every value is written once and
//! every write raises the version by one, so a version names one value.

use crate::actors::metadata::core::Versioned;
use crate::actors::metadata::proposer::{Change, Outcome};
use crate::actors::metadata::MetaError;
use crate::harness::history::{Op, OpType, F};
use crate::types::NodeId;
use serde_json::{json, Value};
use std::time::Duration;

/// The register key the clients share (no keel component uses it).
pub const REGISTER_KEY: &str = "sim/register";
/// How long one operation may take.
pub const REGISTER_OP_TIMEOUT: Duration = Duration::from_secs(2);
/// A client's pause between operations, in µs (drawn per pause).
pub const REGISTER_THINK_US: std::ops::RangeInclusive<u64> = 2_000..=30_000;

/// What an operation in flight asked.
#[derive(Clone, Debug, PartialEq)]
pub enum RegisterCall {
    /// A linearizable read.
    Read,
    /// Version `expected` (holding `expect`) to `value`.
    Cas {
        /// The version read before.
        expected: u64,
        /// The value that version holds (`None`: never written).
        expect: Option<i64>,
        /// The new value (unique in the run).
        value: i64,
    },
}

/// An operation in flight.
#[derive(Clone, Debug)]
pub struct RegisterPending {
    /// The world's id of the proposer operation.
    pub op: u64,
    /// What it asked.
    pub call: RegisterCall,
    /// Past this (µs since the start) without an answer, the node running
    /// it crashed: the outcome is unknown.
    pub give_up_us: u64,
}

/// One register client.
#[derive(Clone, Debug)]
pub struct RegisterClient {
    /// The node whose proposer it uses (by index).
    pub node: usize,
    /// Its Jepsen process number (after the object clients').
    pub process: u64,
    /// The operation in flight.
    pub pending: Option<RegisterPending>,
    /// What its last read returned: the version and its value; the next
    /// operation is a CAS from it.
    pub read: Option<(u64, Option<i64>)>,
}

/// What a client should do next.
#[derive(Clone, Debug, PartialEq)]
pub enum RegisterAction {
    /// Run `change` on [`REGISTER_KEY`] on the client's node.
    Run(Change),
    /// Nothing to start now; wake again after this long.
    Sleep(Duration),
}

/// All register clients.
#[derive(Clone, Debug, Default)]
pub struct RegisterClients {
    /// The clients.
    pub clients: Vec<RegisterClient>,
}

/// Decodes a value the clients wrote.
pub fn decode(v: &Versioned) -> Result<i64, String> {
    let bytes: [u8; 8] = v.value.as_slice().try_into().map_err(|_| {
        format!(
            "register {REGISTER_KEY} holds {} bytes at version {}, not a client's value",
            v.value.len(),
            v.version
        )
    })?;
    Ok(i64::from_be_bytes(bytes))
}

impl RegisterClients {
    /// One client per node, with processes numbered from `first_process`.
    pub fn new(nodes: usize, first_process: u64) -> Self {
        RegisterClients {
            clients: (0..nodes)
                .map(|i| RegisterClient {
                    node: i,
                    process: first_process + i as u64,
                    pending: None,
                    read: None,
                })
                .collect(),
        }
    }

    fn op(client: &RegisterClient, kind: OpType, f: F, value: Value, now_us: u64) -> Op {
        Op {
            process: client.process,
            kind,
            f,
            key: REGISTER_KEY.to_string(),
            value,
            node: NodeId(client.node as u32 + 1),
            time_ns: now_us * 1000,
            error: None,
        }
    }

    fn invocation(call: &RegisterCall) -> (F, Value) {
        match call {
            RegisterCall::Read => (F::Read, Value::Null),
            RegisterCall::Cas { expect, value, .. } => {
                (F::Cas, json!({"expect": expect, "value": value}))
            }
        }
    }

    /// Client `c` woke at `now_us`. With nothing in flight it starts its
    /// next operation (a CAS with the value `fresh` if it holds a read,
    /// else a read) and records the invocation in `history`; with an
    /// operation whose node never answered, that ends as `info`.
    pub fn wake(
        &mut self,
        c: usize,
        now_us: u64,
        node_up: bool,
        fresh: impl FnOnce() -> i64,
        history: &mut Vec<Op>,
    ) -> RegisterAction {
        let client = &mut self.clients[c];
        if let Some(p) = &client.pending {
            if now_us < p.give_up_us {
                return RegisterAction::Sleep(Duration::from_micros(p.give_up_us - now_us));
            }
            let (f, value) = Self::invocation(&p.call);
            let mut op = Self::op(client, OpType::Info, f, value, now_us);
            op.error = Some("the node went down".into());
            history.push(op);
            client.pending = None;
            client.read = None;
        }
        if !node_up {
            return RegisterAction::Sleep(Duration::from_millis(100));
        }
        let call = match client.read.take() {
            Some((expected, expect)) => RegisterCall::Cas {
                expected,
                expect,
                value: fresh(),
            },
            None => RegisterCall::Read,
        };
        let (f, value) = Self::invocation(&call);
        history.push(Self::op(client, OpType::Invoke, f, value, now_us));
        let change = match &call {
            RegisterCall::Read => Change::Read,
            RegisterCall::Cas {
                expected, value, ..
            } => Change::Cas {
                expected: *expected,
                value: value.to_be_bytes().to_vec(),
                op: 0,
            },
        };
        client.pending = Some(RegisterPending {
            op: 0,
            call,
            give_up_us: now_us
                + (REGISTER_OP_TIMEOUT + Duration::from_millis(500)).as_micros() as u64,
        });
        RegisterAction::Run(change)
    }

    /// The proposer took client `c`'s operation as `op`.
    pub fn started(&mut self, c: usize, op: u64) {
        if let Some(p) = &mut self.clients[c].pending {
            p.op = op;
        }
    }

    /// The proposer answered operation `op` of client `c`; records the
    /// completion. A value that is not a client's is returned as an error.
    pub fn done(
        &mut self,
        c: usize,
        op: u64,
        result: Result<Outcome, MetaError>,
        now_us: u64,
        history: &mut Vec<Op>,
    ) -> Result<(), String> {
        let client = &mut self.clients[c];
        let Some(p) = client.pending.take_if(|p| p.op == op) else {
            return Ok(());
        };
        let (f, invoked) = Self::invocation(&p.call);
        let read_value = |v: &Option<Versioned>| -> Result<(u64, Option<i64>), String> {
            match v {
                None => Ok((0, None)),
                Some(v) => Ok((v.version, Some(decode(v)?))),
            }
        };
        let (kind, value, error) = match (&p.call, result) {
            (RegisterCall::Read, Ok(Outcome::Value(v) | Outcome::Conflict(v))) => {
                let (version, seen) = read_value(&v)?;
                client.read = Some((version, seen));
                (OpType::Ok, json!(seen), None)
            }
            (RegisterCall::Cas { value, .. }, Ok(Outcome::Value(Some(v)))) => {
                if decode(&v)? != *value {
                    return Err(format!(
                        "register {REGISTER_KEY}: a CAS of {value} was answered as applied with version {} holding another value",
                        v.version
                    ));
                }
                (OpType::Ok, invoked, None)
            }
            (RegisterCall::Cas { .. }, Ok(Outcome::Conflict(_))) => (OpType::Fail, invoked, None),
            (RegisterCall::Cas { .. }, Ok(Outcome::Value(None))) => (
                OpType::Info,
                invoked,
                Some("a CAS answered with no value".to_string()),
            ),
            (_, Err(e)) => (OpType::Info, invoked, Some(e.to_string())),
        };
        let mut done = Self::op(client, kind, f, value, now_us);
        done.error = error;
        history.push(done);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versioned(version: u64, value: i64) -> Versioned {
        Versioned {
            version,
            value: value.to_be_bytes().to_vec(),
            writer: 9,
        }
    }

    #[test]
    fn a_client_reads_then_cases_from_what_it_read() {
        let mut rc = RegisterClients::new(3, 10);
        let mut h = Vec::new();
        assert_eq!(
            rc.wake(1, 0, true, || 7, &mut h),
            RegisterAction::Run(Change::Read)
        );
        rc.started(1, 42);
        rc.done(1, 41, Ok(Outcome::Value(None)), 5, &mut h).unwrap();
        assert_eq!(h.len(), 1, "an answer to another operation is ignored");
        rc.done(1, 42, Ok(Outcome::Value(Some(versioned(3, 5)))), 5, &mut h)
            .unwrap();
        assert_eq!((h[1].kind, &h[1].value), (OpType::Ok, &json!(5)));
        let RegisterAction::Run(Change::Cas {
            expected, value, ..
        }) = rc.wake(1, 10, true, || 7, &mut h)
        else {
            panic!("a CAS after a read");
        };
        assert_eq!((expected, value), (3, 7i64.to_be_bytes().to_vec()));
        assert_eq!(h[2].value, json!({"expect": 5, "value": 7}));
        rc.started(1, 43);
        rc.done(1, 43, Ok(Outcome::Conflict(None)), 12, &mut h)
            .unwrap();
        assert_eq!(h[3].kind, OpType::Fail);
        assert_eq!(h[3].process, 11);
    }

    #[test]
    fn an_unanswered_operation_ends_unknown_and_bad_bytes_are_reported() {
        let mut rc = RegisterClients::new(1, 0);
        let mut h = Vec::new();
        rc.wake(0, 0, true, || 1, &mut h);
        rc.started(0, 1);
        let give_up = rc.clients[0].pending.as_ref().unwrap().give_up_us;
        assert!(matches!(
            rc.wake(0, give_up - 1, true, || 1, &mut h),
            RegisterAction::Sleep(_)
        ));
        assert_eq!(
            rc.wake(0, give_up, false, || 1, &mut h),
            RegisterAction::Sleep(Duration::from_millis(100))
        );
        assert_eq!(h[1].kind, OpType::Info);
        rc.wake(0, give_up + 1, true, || 1, &mut h);
        rc.started(0, 2);
        let bad = Versioned {
            version: 1,
            value: vec![1, 2],
            writer: 1,
        };
        assert!(rc
            .done(0, 2, Ok(Outcome::Value(Some(bad))), 1, &mut h)
            .is_err());
    }
}
