//! The demo app's virtual objects: keyed state plus deterministic handlers.
//!
//! | object     | handler | argument                       | result                         |
//! |------------|---------|--------------------------------|--------------------------------|
//! | `Counter`  | `add`   | integer delta                  | the new value                  |
//! | `Counter`  | `get`   | none                           | the value (0 if never added)   |
//! | `Set`      | `add`   | any JSON value                 | `true` if it was new           |
//! | `Set`      | `read`  | none                           | the elements, in insertion order |
//! | `Register` | `read`  | none                           | the value, `null` if never written |
//! | `Register` | `write` | any JSON value                 | the value written              |
//! | `Register` | `cas`   | `{"expect": v\|null, "value": w}` | `w`; 412 with the current value on mismatch |
//!
//! Handlers see their object's state through [`ObjectState`] (a key space of
//! their own), so a set stores one entry per element and an add never rewrites
//! the whole set. Arguments are validated at the ingress, before anything is
//! appended: a bad request changes nothing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ObjectType {
    Counter,
    Set,
    Register,
}

impl ObjectType {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "Counter" => Some(ObjectType::Counter),
            "Set" => Some(ObjectType::Set),
            "Register" => Some(ObjectType::Register),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ObjectType::Counter => "Counter",
            ObjectType::Set => "Set",
            ObjectType::Register => "Register",
        }
    }

    pub fn handlers(self) -> &'static [&'static str] {
        match self {
            ObjectType::Counter => &["add", "get"],
            ObjectType::Set => &["add", "read"],
            ObjectType::Register => &["read", "write", "cas"],
        }
    }

    /// Read-only handlers may also be called with `GET`.
    pub fn is_read_only(self, handler: &str) -> bool {
        matches!(
            (self, handler),
            (ObjectType::Counter, "get")
                | (ObjectType::Set, "read")
                | (ObjectType::Register, "read")
        )
    }
}

/// Why a request was refused (before or while applying).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum HandlerError {
    #[error("unknown object type {0:?} (known: Counter, Set, Register)")]
    UnknownObject(String),
    #[error("object {object} has no handler {handler:?} (handlers: {known})")]
    UnknownHandler {
        object: String,
        handler: String,
        known: String,
    },
    #[error("bad argument: {0}")]
    BadArgument(String),
    /// `Register/cas` found another value.
    #[error("precondition failed")]
    PreconditionFailed { current: Value },
}

impl HandlerError {
    pub fn http_status(&self) -> u16 {
        match self {
            HandlerError::UnknownObject(_) | HandlerError::UnknownHandler { .. } => 404,
            HandlerError::BadArgument(_) => 400,
            HandlerError::PreconditionFailed { .. } => 412,
        }
    }
}

/// One object's state as a handler sees it.
pub trait ObjectState {
    fn get(&self, sub: &[u8]) -> Option<Vec<u8>>;
    fn put(&mut self, sub: &[u8], value: Vec<u8>);
    /// Every entry of this object, in key order.
    fn scan(&self) -> Vec<(Vec<u8>, Vec<u8>)>;
}

/// Checks that `handler` exists on `object` and `arg` has the right shape.
pub fn validate(object: ObjectType, handler: &str, arg: &Value) -> Result<(), HandlerError> {
    if !object.handlers().contains(&handler) {
        return Err(HandlerError::UnknownHandler {
            object: object.name().into(),
            handler: handler.into(),
            known: object.handlers().join(", "),
        });
    }
    match (object, handler) {
        (ObjectType::Counter, "add") if !arg.is_i64() => {
            return Err(HandlerError::BadArgument(format!(
                "Counter/add takes an integer delta, got {arg}"
            )));
        }
        (ObjectType::Set, "add") | (ObjectType::Register, "write") if arg.is_null() => {
            return Err(HandlerError::BadArgument(format!(
                "{}/{handler} takes a JSON value, got null",
                object.name()
            )));
        }
        (ObjectType::Register, "cas") => {
            let ok = arg.as_object().is_some_and(|o| {
                o.contains_key("expect") && o.get("value").is_some_and(|v| !v.is_null())
            });
            if !ok {
                return Err(HandlerError::BadArgument(format!(
                    "Register/cas takes {{\"expect\": value-or-null, \"value\": value}}, got {arg}"
                )));
            }
        }
        _ => {}
    }
    Ok(())
}

const VALUE: &[u8] = b"v";
const ELEMENT: u8 = b'e';

/// Runs a validated handler against the object's state.
pub fn invoke(
    object: ObjectType,
    handler: &str,
    arg: &Value,
    state: &mut dyn ObjectState,
) -> Result<Value, HandlerError> {
    validate(object, handler, arg)?;
    let value = |state: &dyn ObjectState| -> Value {
        state
            .get(VALUE)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    match (object, handler) {
        (ObjectType::Counter, "add") => {
            let cur = value(state).as_i64().unwrap_or(0);
            let delta = arg.as_i64().unwrap_or(0);
            let next = cur.checked_add(delta).ok_or_else(|| {
                HandlerError::BadArgument(format!("Counter overflow: {cur} + {delta}"))
            })?;
            state.put(VALUE, next.to_string().into_bytes());
            Ok(Value::from(next))
        }
        (ObjectType::Counter, "get") => Ok(Value::from(value(state).as_i64().unwrap_or(0))),
        (ObjectType::Set, "add") => {
            let canonical = serde_json::to_vec(arg).unwrap_or_default();
            let mut sub = vec![ELEMENT];
            sub.extend_from_slice(&canonical);
            if state.get(&sub).is_some() {
                return Ok(Value::Bool(false));
            }
            // Insertion order: a sequence number per element.
            let seq = value(state).as_u64().unwrap_or(0) + 1;
            state.put(VALUE, seq.to_string().into_bytes());
            state.put(&sub, seq.to_be_bytes().to_vec());
            Ok(Value::Bool(true))
        }
        (ObjectType::Set, "read") => {
            let mut elements: Vec<(u64, Value)> = state
                .scan()
                .into_iter()
                .filter(|(k, _)| k.first() == Some(&ELEMENT))
                .filter_map(|(k, v)| {
                    let seq = u64::from_be_bytes(v.as_slice().try_into().ok()?);
                    Some((seq, serde_json::from_slice(&k[1..]).ok()?))
                })
                .collect();
            elements.sort_by_key(|(seq, _)| *seq);
            Ok(Value::Array(elements.into_iter().map(|(_, v)| v).collect()))
        }
        (ObjectType::Register, "read") => Ok(value(state)),
        (ObjectType::Register, "write") => {
            state.put(VALUE, serde_json::to_vec(arg).unwrap_or_default());
            Ok(arg.clone())
        }
        (ObjectType::Register, "cas") => {
            let expect = arg.get("expect").cloned().unwrap_or(Value::Null);
            let next = arg.get("value").cloned().unwrap_or(Value::Null);
            let current = value(state);
            if current != expect {
                return Err(HandlerError::PreconditionFailed { current });
            }
            state.put(VALUE, serde_json::to_vec(&next).unwrap_or_default());
            Ok(next)
        }
        _ => unreachable!("validated above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Mem(BTreeMap<Vec<u8>, Vec<u8>>);
    impl ObjectState for Mem {
        fn get(&self, sub: &[u8]) -> Option<Vec<u8>> {
            self.0.get(sub).cloned()
        }
        fn put(&mut self, sub: &[u8], value: Vec<u8>) {
            self.0.insert(sub.to_vec(), value);
        }
        fn scan(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
            self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        }
    }

    #[test]
    fn counter_adds_and_gets() {
        let mut s = Mem::default();
        assert_eq!(
            invoke(ObjectType::Counter, "get", &Value::Null, &mut s),
            Ok(json!(0))
        );
        assert_eq!(
            invoke(ObjectType::Counter, "add", &json!(5), &mut s),
            Ok(json!(5))
        );
        assert_eq!(
            invoke(ObjectType::Counter, "add", &json!(-2), &mut s),
            Ok(json!(3))
        );
        assert_eq!(
            invoke(ObjectType::Counter, "get", &Value::Null, &mut s),
            Ok(json!(3))
        );
        let err = invoke(ObjectType::Counter, "add", &json!("x"), &mut s).unwrap_err();
        assert_eq!(err.http_status(), 400);
        let err = invoke(ObjectType::Counter, "add", &json!(i64::MAX), &mut s).unwrap_err();
        assert_eq!(err.http_status(), 400);
        assert_eq!(
            invoke(ObjectType::Counter, "get", &Value::Null, &mut s),
            Ok(json!(3))
        );
    }

    #[test]
    fn set_keeps_insertion_order_and_reports_duplicates() {
        let mut s = Mem::default();
        for v in [json!(10), json!(9), json!("a"), json!(10)] {
            invoke(ObjectType::Set, "add", &v, &mut s).unwrap();
        }
        assert_eq!(
            invoke(ObjectType::Set, "add", &json!(9), &mut s),
            Ok(json!(false))
        );
        assert_eq!(
            invoke(ObjectType::Set, "read", &Value::Null, &mut s),
            Ok(json!([10, 9, "a"]))
        );
    }

    #[test]
    fn register_cas_fails_with_the_current_value() {
        let mut s = Mem::default();
        assert_eq!(
            invoke(ObjectType::Register, "read", &Value::Null, &mut s),
            Ok(Value::Null)
        );
        assert_eq!(
            invoke(
                ObjectType::Register,
                "cas",
                &json!({"expect": null, "value": 1}),
                &mut s
            ),
            Ok(json!(1))
        );
        let err = invoke(
            ObjectType::Register,
            "cas",
            &json!({"expect": 2, "value": 3}),
            &mut s,
        )
        .unwrap_err();
        assert_eq!(err, HandlerError::PreconditionFailed { current: json!(1) });
        assert_eq!(err.http_status(), 412);
        assert_eq!(
            invoke(ObjectType::Register, "write", &json!(7), &mut s),
            Ok(json!(7))
        );
        assert_eq!(
            invoke(ObjectType::Register, "read", &Value::Null, &mut s),
            Ok(json!(7))
        );
    }

    #[test]
    fn unknown_handlers_and_bad_shapes_are_refused() {
        assert_eq!(
            validate(ObjectType::Set, "pop", &Value::Null)
                .unwrap_err()
                .http_status(),
            404
        );
        assert!(validate(ObjectType::Register, "cas", &json!({"value": 1})).is_err());
        assert!(validate(ObjectType::Register, "cas", &json!(5)).is_err());
        assert!(validate(ObjectType::Set, "add", &Value::Null).is_err());
        assert!(ObjectType::parse("Nope").is_none());
        assert!(ObjectType::Register.is_read_only("read"));
        assert!(!ObjectType::Register.is_read_only("cas"));
    }
}
