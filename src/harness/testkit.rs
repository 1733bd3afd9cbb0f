//! Hand-written histories for the checkers' tests.

use super::history::{pair, Call, Op, OpType, F};
use super::nemesis::{Fault, NemesisEvent};
use crate::types::NodeId;
use serde_json::Value;

/// Builds a history from calls with millisecond times; `ops()` sorts the
/// lines by time like the harness' writer would.
#[derive(Default)]
pub struct Hist {
    ops: Vec<(u64, usize, Op)>,
    node: u32,
}

pub const MS: u64 = 1_000_000;

impl Hist {
    pub fn new() -> Self {
        Hist {
            ops: Vec::new(),
            node: 1,
        }
    }

    /// Calls added from now on go to `node`.
    pub fn on(&mut self, node: u32) -> &mut Self {
        self.node = node;
        self
    }

    fn line(&mut self, process: u64, kind: OpType, f: F, key: &str, value: Value, t_ns: u64) {
        let seq = self.ops.len();
        self.ops.push((
            t_ns,
            seq,
            Op {
                process,
                kind,
                f,
                key: key.to_string(),
                value,
                node: NodeId(self.node),
                time_ns: t_ns,
                error: None,
            },
        ));
    }

    /// A call completed with `kind` and `result` (times in ns).
    #[allow(clippy::too_many_arguments)]
    pub fn call_ns(
        &mut self,
        process: u64,
        f: F,
        key: &str,
        value: Value,
        kind: OpType,
        result: Value,
        start: u64,
        end: u64,
    ) -> &mut Self {
        self.line(process, OpType::Invoke, f, key, value, start);
        self.line(process, kind, f, key, result, end);
        self
    }

    #[allow(clippy::too_many_arguments)]
    pub fn ok(
        &mut self,
        p: u64,
        f: F,
        key: &str,
        value: Value,
        result: Value,
        start_ms: u64,
        end_ms: u64,
    ) -> &mut Self {
        self.call_ns(
            p,
            f,
            key,
            value,
            OpType::Ok,
            result,
            start_ms * MS,
            end_ms * MS,
        )
    }

    /// A call that failed (`Fail`) or whose outcome is unknown (`Info`);
    /// the completion carries the invoked value.
    #[allow(clippy::too_many_arguments)]
    pub fn ended(
        &mut self,
        kind: OpType,
        p: u64,
        f: F,
        key: &str,
        value: Value,
        start_ms: u64,
        end_ms: u64,
    ) -> &mut Self {
        let result = value.clone();
        self.call_ns(p, f, key, value, kind, result, start_ms * MS, end_ms * MS)
    }

    pub fn fail(
        &mut self,
        p: u64,
        f: F,
        key: &str,
        value: Value,
        start_ms: u64,
        end_ms: u64,
    ) -> &mut Self {
        self.ended(OpType::Fail, p, f, key, value, start_ms, end_ms)
    }

    pub fn info(
        &mut self,
        p: u64,
        f: F,
        key: &str,
        value: Value,
        start_ms: u64,
        end_ms: u64,
    ) -> &mut Self {
        self.ended(OpType::Info, p, f, key, value, start_ms, end_ms)
    }

    /// An invocation that never completes.
    pub fn pending(&mut self, p: u64, f: F, key: &str, value: Value, start_ms: u64) -> &mut Self {
        self.line(p, OpType::Invoke, f, key, value, start_ms * MS);
        self
    }

    /// Background load: every `every_ms` from `from_ms` until `to_ms`,
    /// each of nodes `1..=nodes` gets a 10 ms register read of `load`
    /// (never written, so `null`), completed as `outcome(node, t_ms)` says.
    pub fn steady(
        &mut self,
        nodes: u32,
        from_ms: u64,
        to_ms: u64,
        every_ms: u64,
        outcome: impl Fn(u32, u64) -> OpType,
    ) -> &mut Self {
        let saved = self.node;
        let mut t = from_ms;
        while t < to_ms {
            for node in 1..=nodes {
                self.node = node;
                let p = u64::from(node) * 1_000_000 + t;
                let kind = outcome(node, t);
                self.call_ns(
                    p,
                    F::Read,
                    "load",
                    Value::Null,
                    kind,
                    Value::Null,
                    t * MS,
                    (t + 10) * MS,
                );
            }
            t += every_ms;
        }
        self.node = saved;
        self
    }

    pub fn ops(&self) -> Vec<Op> {
        let mut ops = self.ops.clone();
        ops.sort_by_key(|(t, seq, _)| (*t, *seq));
        ops.into_iter().map(|(_, _, op)| op).collect()
    }

    pub fn calls(&self) -> Vec<Call> {
        pair(&self.ops()).expect("test history pairs")
    }
}

/// The fault timeline the checkers' tests share: N3 cut off from N1 and N2
/// at 2 s by `partition-random-node`, healed at 5 s.
pub fn isolate_n3_2s_to_5s() -> Vec<NemesisEvent> {
    vec![
        NemesisEvent {
            fault: Fault::Partition {
                groups: vec![vec![NodeId(1), NodeId(2)], vec![NodeId(3)]],
                cut: vec![],
            },
            nemesis: Some("partition-random-node".into()),
            time_ns: 2000 * MS,
        },
        NemesisEvent {
            fault: Fault::Heal,
            nemesis: None,
            time_ns: 5000 * MS,
        },
    ]
}
