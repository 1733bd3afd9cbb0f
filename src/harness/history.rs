//! The operation history and the nemesis log, as JSON lines.
//!
//! The format is Jepsen's (see `HISTORY-FORMAT.md`): one [`Op`] per line, an
//! `invoke` followed by exactly one `ok`, `fail` or `info` per process. Reading
//! is strict about types and names the offending line, because a checker that
//! silently skips a malformed line can pass a broken run.
//!
//! [`pair`] joins invocations with their completions into [`Call`]s, the unit
//! every checker works on. An `info` completion, or none at all, leaves the
//! outcome unknown: the operation may take effect at any later time, or never.

use crate::types::NodeId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, Write};

/// The kind of a history line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    /// It happened; `value` is the result.
    Ok,
    /// It certainly did not happen.
    Fail,
    /// Unknown outcome (timeout, lost connection, 5xx).
    Info,
}

impl fmt::Display for OpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpType::Invoke => "invoke",
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        })
    }
}

/// The function an operation calls, Jepsen's `:f`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum F {
    /// Counter add (value = delta) or set add (value = element).
    Add,
    /// Counter read.
    Get,
    /// Set read (ok value = array) or register read (ok value = int or null).
    Read,
    /// Register write.
    Write,
    /// Register compare-and-set: `{"expect": int|null, "value": int}`.
    Cas,
    /// Bank: fund an account (value = amount).
    Deposit,
    /// Bank: move money (key = from, value = `{"to": account, "amount": n}`).
    Transfer,
    /// Bank: an account's balance (ok value = int; value `"final"` for the
    /// reads after the load stopped and the outboxes drained).
    Balance,
}

impl fmt::Display for F {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            F::Add => "add",
            F::Get => "get",
            F::Read => "read",
            F::Write => "write",
            F::Cas => "cas",
            F::Deposit => "deposit",
            F::Transfer => "transfer",
            F::Balance => "balance",
        })
    }
}

/// One line of a history file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// The logical client; one operation at a time per process.
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: OpType,
    pub f: F,
    pub key: String,
    /// Missing is read as `null`, like Jepsen's `nil`.
    #[serde(default)]
    pub value: Value,
    /// The node whose ingress received the request (1-based).
    pub node: NodeId,
    /// Monotonic clock, shared with the nemesis log.
    pub time_ns: u64,
    /// Why a `fail` or `info` ended that way (Jepsen's `:error`), e.g.
    /// `unavailable`. A cas `fail` without one is the register's 412.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Reading or pairing a history failed; every variant names where.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("line {line}: {source}")]
    Io { line: usize, source: io::Error },
    #[error("line {line}: {source}")]
    Json {
        line: usize,
        source: serde_json::Error,
    },
    #[error("line {line}: {reason}")]
    Invalid { line: usize, reason: String },
}

/// Writes one JSON object per line. The caller wraps `W` in a `BufWriter`
/// if it wants buffering; nothing is flushed implicitly.
pub struct JsonLinesWriter<W: Write> {
    out: W,
}

impl<W: Write> JsonLinesWriter<W> {
    pub fn new(out: W) -> Self {
        JsonLinesWriter { out }
    }

    pub fn append<T: Serialize>(&mut self, item: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, item)?;
        self.out.write_all(b"\n")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Writes all items as JSON lines and flushes.
pub fn write_jsonl<'a, T, W>(out: W, items: impl IntoIterator<Item = &'a T>) -> io::Result<()>
where
    T: Serialize + 'a,
    W: Write,
{
    let mut w = JsonLinesWriter::new(out);
    for item in items {
        w.append(item)?;
    }
    w.flush()
}

/// Reads JSON lines; blank lines are skipped, anything else must parse.
/// Errors carry the 1-based line number.
pub fn read_jsonl<T: DeserializeOwned, R: BufRead>(input: R) -> Result<Vec<T>, HistoryError> {
    read_checked(input, |_: &T| Ok(()))
}

/// Reads a history file and checks what serde cannot: node ids start at 1.
pub fn read_history<R: BufRead>(input: R) -> Result<Vec<Op>, HistoryError> {
    read_checked(input, |op: &Op| {
        if op.node.0 == 0 {
            Err("node ids start at 1".to_string())
        } else {
            Ok(())
        }
    })
}

fn read_checked<T, R>(
    input: R,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<Vec<T>, HistoryError>
where
    T: DeserializeOwned,
    R: BufRead,
{
    let mut items = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|source| HistoryError::Io {
            line: line_no,
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let item: T = serde_json::from_str(&line).map_err(|source| HistoryError::Json {
            line: line_no,
            source,
        })?;
        check(&item).map_err(|reason| HistoryError::Invalid {
            line: line_no,
            reason,
        })?;
        items.push(item);
    }
    Ok(items)
}

/// How a call ended, as far as the client knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Fail,
    /// An `info` completion: the client gave up, the effect is unknown.
    Info,
    /// The history ended before any completion: as unknown as `info`.
    Pending,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
            Outcome::Pending => "pending",
        })
    }
}

/// An invocation joined with its completion.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Call {
    pub process: u64,
    pub f: F,
    pub key: String,
    pub node: NodeId,
    /// The invocation's value (the argument).
    pub value: Value,
    /// The completion's value (the result); `null` without a completion.
    pub result: Value,
    pub outcome: Outcome,
    pub invoke_ns: u64,
    /// When the client saw the completion (`None` if it never did).
    pub complete_ns: Option<u64>,
    /// 1-based position of the invocation in the history.
    pub index: usize,
    /// The completion's `error`, if any.
    pub error: Option<String>,
}

impl Call {
    /// The outcome is unknown: it may have taken effect, at any time after
    /// the invocation.
    pub fn is_unknown(&self) -> bool {
        matches!(self.outcome, Outcome::Info | Outcome::Pending)
    }

    /// The service gave a definite answer. A `cas` that fails without an
    /// `error` is the register's normal "the value differed" reply (HTTP
    /// 412), not an error; any other `fail` (a cas refused with 503, or
    /// never delivered) is a refusal.
    pub fn served(&self) -> bool {
        match self.outcome {
            Outcome::Ok => true,
            Outcome::Fail => matches!(self.f, F::Cas | F::Transfer) && self.error.is_none(),
            Outcome::Info | Outcome::Pending => false,
        }
    }

    /// Latency as the client saw it, for calls that completed.
    pub fn latency_ns(&self) -> Option<u64> {
        self.complete_ns.map(|c| c.saturating_sub(self.invoke_ns))
    }

    /// A one-line description for check reports.
    pub fn describe(&self) -> String {
        let result = match self.outcome {
            Outcome::Ok if !self.result.is_null() => format!(" -> {}", self.result),
            _ => String::new(),
        };
        let value = if self.value.is_null() {
            String::new()
        } else {
            format!(" {}", self.value)
        };
        format!(
            "#{} p{} {} {}{}{} on {} ({})",
            self.index, self.process, self.f, self.key, value, result, self.node, self.outcome,
        )
    }
}

/// A history that cannot be paired: the client broke Jepsen's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    #[error("op #{index}: process {process} invoked while its call from op #{open} is still open")]
    AlreadyOpen {
        index: usize,
        process: u64,
        open: usize,
    },
    #[error("op #{index}: {kind} from process {process}, which has no open call")]
    NoInvocation {
        index: usize,
        process: u64,
        kind: OpType,
    },
    #[error("op #{index}: completion ({got}) does not match its invocation op #{open} ({want})")]
    Mismatch {
        index: usize,
        open: usize,
        got: String,
        want: String,
    },
    #[error("op #{index}: completed at {complete_ns} ns, before its invocation at {invoke_ns} ns")]
    Backwards {
        index: usize,
        invoke_ns: u64,
        complete_ns: u64,
    },
}

/// Joins each invocation with its process's next completion. Calls come out
/// in invocation order; calls never completed are [`Outcome::Pending`].
pub fn pair(history: &[Op]) -> Result<Vec<Call>, PairError> {
    let mut calls: Vec<Call> = Vec::new();
    // process -> position in `calls` of its open invocation
    let mut open: HashMap<u64, usize> = HashMap::new();
    for (i, op) in history.iter().enumerate() {
        let index = i + 1;
        if op.kind == OpType::Invoke {
            if let Some(&pos) = open.get(&op.process) {
                return Err(PairError::AlreadyOpen {
                    index,
                    process: op.process,
                    open: calls[pos].index,
                });
            }
            open.insert(op.process, calls.len());
            calls.push(Call {
                process: op.process,
                f: op.f,
                key: op.key.clone(),
                node: op.node,
                value: op.value.clone(),
                result: Value::Null,
                outcome: Outcome::Pending,
                invoke_ns: op.time_ns,
                complete_ns: None,
                index,
                error: None,
            });
            continue;
        }
        let Some(pos) = open.remove(&op.process) else {
            return Err(PairError::NoInvocation {
                index,
                process: op.process,
                kind: op.kind,
            });
        };
        let call = &mut calls[pos];
        if call.f != op.f || call.key != op.key || call.node != op.node {
            return Err(PairError::Mismatch {
                index,
                open: call.index,
                got: format!("{} {} on {}", op.f, op.key, op.node),
                want: format!("{} {} on {}", call.f, call.key, call.node),
            });
        }
        if op.time_ns < call.invoke_ns {
            return Err(PairError::Backwards {
                index,
                invoke_ns: call.invoke_ns,
                complete_ns: op.time_ns,
            });
        }
        call.outcome = match op.kind {
            OpType::Ok => Outcome::Ok,
            OpType::Fail => Outcome::Fail,
            OpType::Info | OpType::Invoke => Outcome::Info,
        };
        call.result = op.value.clone();
        call.complete_ns = Some(op.time_ns);
        call.error = op.error.clone();
    }
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testkit::Hist;
    use serde_json::json;

    const LINES: &str = r#"{"process": 3, "type": "invoke", "f": "cas",  "key": "k7", "value": {"expect": 1, "value": 4}, "node": 2, "time_ns": 1782883663261}
{"process": 3, "type": "fail",   "f": "cas",  "key": "k7", "value": {"expect": 1, "value": 4}, "node": 2, "time_ns": 1782883664012}
"#;

    #[test]
    fn reads_the_documented_example() {
        let ops = read_history(LINES.as_bytes()).unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].kind, OpType::Invoke);
        assert_eq!(ops[1].kind, OpType::Fail);
        assert_eq!(ops[0].f, F::Cas);
        assert_eq!(ops[0].node, NodeId(2));
        assert_eq!(ops[0].value, json!({"expect": 1, "value": 4}));
        assert_eq!(ops[1].time_ns, 1782883664012);
    }

    #[test]
    fn write_then_read_round_trips_and_writes_one_object_per_line() {
        let mut h = Hist::new();
        h.ok(1, F::Write, "r", json!(5), Value::Null, 0, 3)
            .info(2, F::Read, "r", Value::Null, 1, 9)
            .pending(3, F::Cas, "r", json!({"expect": null, "value": 6}), 4);
        let ops = h.ops();
        let mut buf = Vec::new();
        write_jsonl(&mut buf, &ops).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert_eq!(text.lines().count(), ops.len());
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["type"], "invoke");
        assert_eq!(first["value"], 5);
        // `null` values are written, not omitted.
        assert!(text.lines().nth(1).unwrap().contains(r#""value":null"#));
        assert_eq!(read_history(buf.as_slice()).unwrap(), ops);
    }

    #[test]
    fn reader_errors_name_the_line() {
        let bad = format!("{LINES}\n{{\"process\": 1, \"type\": \"maybe\"}}\n");
        let err = read_history(bad.as_bytes()).unwrap_err();
        assert!(matches!(err, HistoryError::Json { line: 4, .. }), "{err}");
        assert!(err.to_string().starts_with("line 4:"), "{err}");

        let zero = LINES.replace(r#""node": 2"#, r#""node": 0"#);
        let err = read_history(zero.as_bytes()).unwrap_err();
        assert!(
            matches!(err, HistoryError::Invalid { line: 1, .. }),
            "{err}"
        );

        let unknown_f = LINES.replace(r#""cas""#, r#""append""#);
        assert!(read_history(unknown_f.as_bytes()).is_err());
        let garbage = read_jsonl::<Op, _>(&b"not json\n"[..]).unwrap_err();
        assert!(matches!(garbage, HistoryError::Json { line: 1, .. }));
    }

    #[test]
    fn pairs_completions_and_leaves_unknowns_in_flight() {
        let mut h = Hist::new();
        h.ok(1, F::Add, "s", json!(1), Value::Null, 0, 2)
            .fail(2, F::Add, "s", json!(2), 1, 3)
            .info(3, F::Add, "s", json!(3), 1, 50)
            .pending(4, F::Read, "s", Value::Null, 60)
            .ok(5, F::Read, "s", Value::Null, json!([1, 3]), 61, 62);
        let calls = h.calls();
        let by_value = |v: i64| calls.iter().find(|c| c.value == json!(v)).unwrap();
        assert_eq!(by_value(1).outcome, Outcome::Ok);
        assert_eq!(by_value(2).outcome, Outcome::Fail);
        assert_eq!(by_value(3).outcome, Outcome::Info);
        assert!(by_value(3).is_unknown());
        let pending = calls.iter().find(|c| c.process == 4).unwrap();
        assert_eq!(pending.outcome, Outcome::Pending);
        assert_eq!(pending.complete_ns, None);
        let read = calls.iter().find(|c| c.process == 5).unwrap();
        assert_eq!(read.result, json!([1, 3]));
        assert_eq!(read.latency_ns(), Some(1_000_000));
        // Calls come out in invocation order.
        assert!(calls.windows(2).all(|w| w[0].index < w[1].index));
    }

    #[test]
    fn served_counts_a_cas_412_as_an_answer_but_not_other_failures() {
        let mut h = Hist::new();
        h.fail(1, F::Cas, "r", json!({"expect": 1, "value": 2}), 0, 1)
            .fail(2, F::Write, "r", json!(3), 0, 1)
            .info(3, F::Read, "r", Value::Null, 0, 1);
        let calls = h.calls();
        assert!(calls[0].served());
        assert!(!calls[1].served());
        assert!(!calls[2].served());
        // A cas refused before reaching the register is not an answer.
        let mut refused = h.ops();
        let i = refused
            .iter()
            .position(|o| o.process == 1 && o.kind == OpType::Fail)
            .unwrap();
        refused[i].error = Some("unavailable".into());
        let calls = pair(&refused).unwrap();
        assert!(!calls[0].served());
        assert_eq!(calls[0].error.as_deref(), Some("unavailable"));
        let text = serde_json::to_string(&refused[i]).unwrap();
        assert!(text.contains(r#""error":"unavailable""#), "{text}");
        assert!(!serde_json::to_string(&refused[0])
            .unwrap()
            .contains("error"));
    }

    fn op(process: u64, kind: OpType, f: F, t: u64) -> Op {
        Op {
            process,
            kind,
            f,
            key: "k".into(),
            value: Value::Null,
            node: NodeId(1),
            time_ns: t,
            error: None,
        }
    }

    #[test]
    fn pairing_rejects_histories_that_break_the_rules() {
        let double = [
            op(1, OpType::Invoke, F::Read, 0),
            op(1, OpType::Invoke, F::Read, 1),
        ];
        assert_eq!(
            pair(&double),
            Err(PairError::AlreadyOpen {
                index: 2,
                process: 1,
                open: 1
            })
        );
        let orphan = [op(1, OpType::Ok, F::Read, 0)];
        assert!(matches!(
            pair(&orphan),
            Err(PairError::NoInvocation { index: 1, .. })
        ));
        let mismatch = [
            op(1, OpType::Invoke, F::Read, 0),
            op(1, OpType::Ok, F::Write, 1),
        ];
        assert!(matches!(
            pair(&mismatch),
            Err(PairError::Mismatch {
                index: 2,
                open: 1,
                ..
            })
        ));
        let backwards = [
            op(1, OpType::Invoke, F::Read, 5),
            op(1, OpType::Ok, F::Read, 4),
        ];
        assert!(matches!(
            pair(&backwards),
            Err(PairError::Backwards { index: 2, .. })
        ));
        // After a completion, including info, the process may invoke again.
        let reuse = [
            op(1, OpType::Invoke, F::Read, 0),
            op(1, OpType::Info, F::Read, 1),
            op(1, OpType::Invoke, F::Read, 2),
        ];
        assert_eq!(pair(&reuse).unwrap().len(), 2);
    }
}
