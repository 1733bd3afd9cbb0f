//! One HTTP call per operation, and what its answer means for the history.
//!
//! The mapping is where a harness most easily lies, so it is one pure
//! function, [`classify`], with the ingress' contract spelled out:
//! 200 `ok`; 412 on a cas `fail` (the value differed); 503 `fail` (no
//! leader reachable: certainly not applied); 504, other 5xx, read errors
//! and client timeouts `info` (unknown). A refused or failed *connect*
//! is a `fail`: no byte of the request reached a server. Any other 4xx
//! is a `fail` the summary counts as a harness or service bug, since a
//! well-formed workload should never see one.
//!
//! Every `fail` and `info` carries an `error` in the history (Jepsen's
//! `:error`) except a cas' 412, so checkers can tell "the register said no"
//! from "nobody answered".

use crate::harness::history::{OpType, F};
use crate::harness::workload::OpSpec;
use crate::objects::demo::DemoObject;
use serde_json::Value;
use std::time::Duration;

/// How an operation ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub kind: OpType,
    /// The completion value for the history.
    pub value: Value,
    /// Set for answers that a correct harness and service never produce.
    pub bug: Option<String>,
    /// Why it was not ok, for the history's `error` field. `None` on a
    /// cas' 412: that is the register's answer, not an error.
    pub error: Option<String>,
}

impl Completion {
    fn ok(value: Value) -> Self {
        Completion {
            kind: OpType::Ok,
            value,
            bug: None,
            error: None,
        }
    }

    fn not_ok(kind: OpType, value: Value, error: String) -> Self {
        Completion {
            kind,
            value,
            bug: None,
            error: Some(error),
        }
    }
}

/// Maps an HTTP answer to a completion. `op.value` is echoed for writes
/// (Jepsen's convention); reads and counter adds return the result.
pub fn classify(op: &OpSpec, status: u16, body: &str) -> Completion {
    let echo = op.value.clone();
    match status {
        200 => {
            let parsed: Result<Value, _> = serde_json::from_str(body.trim());
            match (op.f, parsed) {
                (F::Read | F::Get | F::Balance, Ok(v)) => Completion::ok(v),
                (F::Add, Ok(v)) if v.is_i64() => Completion::ok(v), // counter total
                (F::Add | F::Write | F::Cas | F::Deposit | F::Transfer, Ok(_)) => {
                    Completion::ok(echo)
                }
                (_, Err(e)) => Completion {
                    kind: OpType::Info,
                    value: echo,
                    bug: Some(format!("200 with an unreadable body ({e}): {body:.80}")),
                    error: Some("unreadable-200".into()),
                },
            }
        }
        // The register's "the value differed", the bank's "too little".
        412 if matches!(op.f, F::Cas | F::Transfer) => Completion {
            kind: OpType::Fail,
            value: echo,
            bug: None,
            error: None,
        },
        503 => Completion::not_ok(OpType::Fail, echo, "unavailable".into()),
        504 => Completion::not_ok(OpType::Info, echo, "timeout".into()),
        500..=599 => Completion::not_ok(OpType::Info, echo, format!("http-{status}")),
        _ => Completion {
            kind: OpType::Fail,
            value: echo,
            bug: Some(format!("{} {status}: {body:.120}", op.f)),
            error: Some(format!("http-{status}")),
        },
    }
}

/// A client's connection to one node's ingress. Not shared: each client
/// thread owns its agent, so connections are never contended.
pub struct NodeClient {
    agent: ureq::Agent,
    base: String,
    object: DemoObject,
    server_timeout_ms: u64,
}

impl NodeClient {
    /// `base` is `http://host:port`. The client timeout is the server's
    /// deadline plus one second, so the server normally answers 504 first.
    pub fn new(base: &str, object: DemoObject, server_timeout: Duration) -> Self {
        let server_timeout_ms = server_timeout.as_millis().clamp(1, 60_000) as u64;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_millis(1000))
            .timeout(Duration::from_millis(server_timeout_ms + 1000))
            .max_idle_connections_per_host(2)
            .build();
        NodeClient {
            agent,
            base: base.trim_end_matches('/').to_string(),
            object,
            server_timeout_ms,
        }
    }

    /// The object type this client calls.
    pub fn object(&self) -> DemoObject {
        self.object
    }

    /// Performs `op` and classifies the answer. Never panics, never hangs
    /// past the client timeout.
    pub fn call(&self, op: &OpSpec) -> Completion {
        self.call_with(self.object, op, None)
    }

    /// [`NodeClient::call`] on an `object` of any type, with an
    /// `idempotency-key` header if one is given (a retry with the same key
    /// applies at most once while the result is retained).
    pub fn call_with(
        &self,
        object: DemoObject,
        op: &OpSpec,
        idempotency_key: Option<&str>,
    ) -> Completion {
        let (path, body) = op.request(object);
        let mut req = self
            .agent
            .post(&format!("{}{path}", self.base))
            .set("keel-timeout-ms", &self.server_timeout_ms.to_string())
            .set("content-type", "application/json");
        if let Some(key) = idempotency_key {
            req = req.set("idempotency-key", key);
        }
        let answer = if body.is_empty() {
            req.call()
        } else {
            req.send_string(&body)
        };
        match answer {
            Ok(resp) => {
                let status = resp.status();
                match resp.into_string() {
                    Ok(text) => classify(op, status, &text),
                    Err(e) => {
                        Completion::not_ok(OpType::Info, op.value.clone(), format!("body: {e}"))
                    }
                }
            }
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                classify(op, status, &text)
            }
            Err(ureq::Error::Transport(t)) => transport_error(op, t.kind()),
        }
    }
}

/// A connect that failed sent nothing: `fail`. Anything later may have
/// delivered the request: `info`.
fn transport_error(op: &OpSpec, kind: ureq::ErrorKind) -> Completion {
    match kind {
        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => {
            Completion::not_ok(OpType::Fail, op.value.clone(), "connect".into())
        }
        ureq::ErrorKind::Io => Completion::not_ok(OpType::Info, op.value.clone(), "io".into()),
        _ => Completion::not_ok(OpType::Info, op.value.clone(), format!("{kind}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(f: F, value: Value) -> OpSpec {
        OpSpec {
            f,
            key: "k".into(),
            value,
        }
    }

    #[test]
    fn ok_answers_echo_writes_and_return_reads() {
        let c = classify(&op(F::Add, json!(5)), 200, "true");
        assert_eq!((c.kind, c.value), (OpType::Ok, json!(5)));
        let c = classify(&op(F::Add, json!(5)), 200, "17");
        assert_eq!(c.value, json!(17), "a counter add returns the new total");
        let c = classify(&op(F::Read, Value::Null), 200, "[1,2,3]\n");
        assert_eq!((c.kind, c.value), (OpType::Ok, json!([1, 2, 3])));
        let c = classify(&op(F::Read, Value::Null), 200, "null");
        assert_eq!((c.kind, c.value), (OpType::Ok, Value::Null));
        let cas = json!({"expect": 1, "value": 2});
        let c = classify(&op(F::Cas, cas.clone()), 200, "2");
        assert_eq!((c.kind, c.value), (OpType::Ok, cas));
        assert_eq!(c.bug, None);
    }

    #[test]
    fn refusals_are_fail_and_unknowns_are_info() {
        let cas = op(F::Cas, json!({"expect": 1, "value": 2}));
        assert_eq!(
            classify(&cas, 412, r#"{"error":"x","current":3}"#).kind,
            OpType::Fail
        );
        assert_eq!(classify(&cas, 412, "").bug, None);
        assert_eq!(classify(&cas, 412, "").error, None, "412 is an answer");
        // A refused cas is not the register's answer: it carries an error.
        assert_eq!(
            classify(&cas, 503, "{}").error.as_deref(),
            Some("unavailable")
        );
        let add = op(F::Add, json!(1));
        assert_eq!(classify(&add, 503, "{}").kind, OpType::Fail);
        assert_eq!(classify(&add, 504, "{}").kind, OpType::Info);
        assert_eq!(classify(&add, 500, "").kind, OpType::Info);
        assert_eq!(classify(&add, 504, "").bug, None);
    }

    #[test]
    fn unexpected_client_errors_are_counted_as_bugs() {
        let add = op(F::Add, json!(1));
        for status in [400, 404, 405, 413] {
            let c = classify(&add, status, r#"{"error":"no"}"#);
            assert_eq!(c.kind, OpType::Fail, "{status}");
            assert!(c.bug.is_some(), "{status}");
        }
        // 412 on anything but a cas is not the documented mismatch.
        assert!(classify(&add, 412, "").bug.is_some());
        // A 200 that cannot be read: the outcome is unknown, and a bug.
        let c = classify(&op(F::Read, Value::Null), 200, "<html>");
        assert_eq!(c.kind, OpType::Info);
        assert!(c.bug.is_some());
    }

    #[test]
    fn connect_failures_fail_and_later_errors_are_unknown() {
        let add = op(F::Add, json!(1));
        assert_eq!(
            transport_error(&add, ureq::ErrorKind::ConnectionFailed).kind,
            OpType::Fail
        );
        assert!(transport_error(&add, ureq::ErrorKind::ConnectionFailed)
            .error
            .is_some());
        assert_eq!(
            transport_error(&add, ureq::ErrorKind::Io).kind,
            OpType::Info
        );
    }

    #[test]
    fn a_closed_port_is_a_definite_failure_without_hanging() {
        // Bind then drop: the port is (almost certainly) closed now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = NodeClient::new(
            &format!("http://127.0.0.1:{port}"),
            DemoObject::Set,
            Duration::from_millis(500),
        );
        let started = std::time::Instant::now();
        let c = client.call(&op(F::Add, json!(1)));
        assert_eq!(c.kind, OpType::Fail, "{c:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
