//! The demo app's object types, written on the public API like any user's.
//!
//! | object     | handler    | argument                       | result                         |
//! |------------|------------|--------------------------------|--------------------------------|
//! | `Counter`  | `add`      | integer delta                  | the new value                  |
//! | `Counter`  | `get`      | none                           | the value (0 if never added)   |
//! | `Set`      | `add`      | any JSON value but `null`      | `true` if it was new           |
//! | `Set`      | `read`     | none                           | the elements, in insertion order |
//! | `Register` | `read`     | none                           | the value, `null` if never written |
//! | `Register` | `write`    | any JSON value but `null`      | the value written              |
//! | `Register` | `cas`      | `{"expect": v\|null, "value": w}` | `w`; 412 with the current value on mismatch |
//! | `Account`  | `deposit`  | positive integer amount        | the new balance                |
//! | `Account`  | `withdraw` | positive integer amount        | the new balance; 412 with the balance if it would go negative |
//! | `Account`  | `balance`  | none                           | the balance (0 if never used)  |
//! | `Account`  | `transfer` | `{"to": key, "amount": n}`     | the new balance; 412 as `withdraw`; the credit reaches `to` once, by message |
//! | `Account`  | `credit`   | `{"from": key, "amount": n}`   | the new balance (what a transfer sends) |
//! | `Reminder` | `schedule` | `{"after_ms": n, "note": v}`   | the reminder's number and due time; it fires once, `after_ms` later by the log's clock |
//! | `Reminder` | `fire`     | (sent by the timer)            | the reminder, now fired        |
//! | `Reminder` | `read`     | none                           | `{"pending": [...], "fired": [...]}` |
//!
//! A set stores one entry per element, so an add never rewrites the whole
//! set.

use super::{Context, HandlerError, ObjectType, Objects};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The demo's types: what the `keel` binary serves.
pub fn types() -> Vec<ObjectType> {
    vec![counter(), set(), register(), account(), reminder()]
}

/// The demo's types, registered.
pub fn objects() -> Objects {
    Objects::new(types()).expect("the demo types are valid")
}

/// The demo's types by name, for clients (the test harness, the simulator's
/// clients, the benches) that build requests for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
pub enum DemoObject {
    Counter,
    Set,
    Register,
    Account,
    Reminder,
}

impl DemoObject {
    /// The type's name, as registered.
    pub fn name(self) -> &'static str {
        match self {
            DemoObject::Counter => "Counter",
            DemoObject::Set => "Set",
            DemoObject::Register => "Register",
            DemoObject::Account => "Account",
            DemoObject::Reminder => "Reminder",
        }
    }
}

/// A JSON value that is not `null` (an argument where `null` means nothing).
#[derive(Debug)]
pub struct NonNull(pub Value);

impl<'de> Deserialize<'de> for NonNull {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Err(serde::de::Error::custom("expected a JSON value, got null")),
            v => Ok(NonNull(v)),
        }
    }
}

/// A counter's delta: any integer that fits 64 bits.
#[derive(Debug)]
pub struct Delta(pub i64);

impl<'de> Deserialize<'de> for Delta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) if n.is_i64() => Ok(Delta(n.as_i64().unwrap_or(0))),
            v => Err(serde::de::Error::custom(format!(
                "takes an integer delta, got {v}"
            ))),
        }
    }
}

/// A positive integer amount (of money, in the smallest unit).
#[derive(Debug)]
pub struct Amount(pub i64);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match i64::deserialize(d)? {
            n if n > 0 => Ok(Amount(n)),
            n => Err(serde::de::Error::custom(format!(
                "expected a positive amount, got {n}"
            ))),
        }
    }
}

/// The one-value state entry of Counter, Register and Account.
const VALUE: &str = "v";

fn counter() -> ObjectType {
    ObjectType::new("Counter")
        .handler("add", |ctx, Delta(delta)| {
            let cur: i64 = ctx.get(VALUE)?.unwrap_or(0);
            let next = cur.checked_add(delta).ok_or_else(|| {
                HandlerError::bad_argument(format!("Counter overflow: {cur} + {delta}"))
            })?;
            ctx.set(VALUE, &next);
            Ok(next)
        })
        .reader("get", |ctx, _: IgnoredAny| {
            Ok(ctx.get::<i64>(VALUE)?.unwrap_or(0))
        })
}

/// Set entries: `e` + the element's canonical JSON, holding its insertion
/// number; [`SET_COUNT`] holds the last number given.
const SET_ELEMENT: &str = "e";
const SET_COUNT: &str = "n";

fn set() -> ObjectType {
    ObjectType::new("Set")
        .handler("add", |ctx, NonNull(element)| {
            let name = format!("{SET_ELEMENT}{element}");
            if ctx.get::<u64>(&name)?.is_some() {
                return Ok(false);
            }
            let seq = ctx.get::<u64>(SET_COUNT)?.unwrap_or(0) + 1;
            ctx.set(SET_COUNT, &seq);
            ctx.set(&name, &seq);
            Ok(true)
        })
        .reader("read", |ctx, _: IgnoredAny| {
            let mut elements = Vec::new();
            for (name, seq) in ctx.scan::<u64>(SET_ELEMENT)? {
                let element: Value =
                    serde_json::from_str(&name[SET_ELEMENT.len()..]).map_err(|e| {
                        HandlerError::BadState {
                            name: name.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                elements.push((seq, element));
            }
            elements.sort_by_key(|(seq, _)| *seq);
            Ok(Value::Array(elements.into_iter().map(|(_, v)| v).collect()))
        })
}

/// `Register/cas`'s argument: `expect` must be present (`null`: never
/// written), `value` must not be `null`.
#[derive(Deserialize)]
struct Cas {
    /// The value the register must hold.
    expect: Value,
    /// The value to write.
    value: NonNull,
}

fn register() -> ObjectType {
    ObjectType::new("Register")
        .reader("read", |ctx, _: IgnoredAny| {
            Ok(ctx.get::<Value>(VALUE)?.unwrap_or(Value::Null))
        })
        .handler("write", |ctx, NonNull(value)| {
            ctx.set(VALUE, &value);
            Ok(value)
        })
        .handler("cas", |ctx, Cas { expect, value }| {
            let current = ctx.get::<Value>(VALUE)?.unwrap_or(Value::Null);
            if current != expect {
                return Err(HandlerError::PreconditionFailed { current });
            }
            ctx.set(VALUE, &value.0);
            Ok(value.0)
        })
}

fn balance(ctx: &Context<'_>) -> Result<i64, HandlerError> {
    Ok(ctx.get::<i64>(VALUE)?.unwrap_or(0))
}

/// Adds `amount` to the account's balance; the new balance.
fn add_to(ctx: &mut Context<'_>, amount: i64) -> Result<i64, HandlerError> {
    let cur = balance(ctx)?;
    let next = cur
        .checked_add(amount)
        .ok_or_else(|| HandlerError::bad_argument(format!("balance overflow: {cur} + {amount}")))?;
    ctx.set(VALUE, &next);
    Ok(next)
}

/// Takes `amount` from the balance (412 with the balance if it would go
/// negative); what is left.
fn take_from(ctx: &mut Context<'_>, amount: i64) -> Result<i64, HandlerError> {
    let cur = balance(ctx)?;
    if amount > cur {
        return Err(HandlerError::PreconditionFailed {
            current: Value::from(cur),
        });
    }
    ctx.set(VALUE, &(cur - amount));
    Ok(cur - amount)
}

fn account() -> ObjectType {
    ObjectType::new("Account")
        .handler("deposit", |ctx, Amount(amount)| add_to(ctx, amount))
        .handler("withdraw", |ctx, Amount(amount)| take_from(ctx, amount))
        .handler("transfer", |ctx, t: Transfer| {
            if t.to == ctx.key() {
                return Err(HandlerError::bad_argument(
                    "a transfer goes to another account",
                ));
            }
            let Amount(amount) = t.amount;
            let left = take_from(ctx, amount)?;
            let credit = serde_json::json!({ "from": ctx.key(), "amount": amount });
            ctx.send("Account", &t.to, "credit", &credit)?;
            Ok(left)
        })
        .handler("credit", |ctx, c: Credit| add_to(ctx, c.amount.0))
        .reader("balance", |ctx, _: IgnoredAny| balance(ctx))
}

/// `Account/transfer`'s argument.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Transfer {
    /// The account credited.
    to: String,
    /// How much moves.
    amount: Amount,
}

/// `Account/credit`'s argument.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credit {
    /// The account debited (for the record).
    #[allow(dead_code)]
    from: String,
    /// How much arrives.
    amount: Amount,
}

/// The longest a reminder may wait: 30 days.
pub const MAX_REMINDER_MS: u64 = 30 * 24 * 3600 * 1000;

/// `Reminder/schedule`'s argument.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Schedule {
    /// How long after the call it fires (log clock).
    after_ms: u64,
    /// What it carries.
    #[serde(default)]
    note: Value,
}

/// A reminder, pending or fired.
#[derive(serde::Serialize, Deserialize)]
struct Reminder {
    /// Its number on this object.
    id: u64,
    /// What it carries.
    note: Value,
    /// When it is due (log clock, ms).
    due_ms: u64,
    /// When it fired (log clock, ms), once it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fired_ms: Option<u64>,
}

fn reminder() -> ObjectType {
    ObjectType::new("Reminder")
        .handler("schedule", |ctx, s: Schedule| {
            if s.after_ms > MAX_REMINDER_MS {
                return Err(HandlerError::bad_argument(format!(
                    "after_ms is at most {MAX_REMINDER_MS}"
                )));
            }
            let id = ctx.get::<u64>("next")?.unwrap_or(0) + 1;
            ctx.set("next", &id);
            let r = Reminder {
                id,
                note: s.note,
                due_ms: ctx.now_ms().saturating_add(s.after_ms),
                fired_ms: None,
            };
            ctx.set(&format!("p/{id:020}"), &r);
            let key = ctx.key().to_string();
            ctx.send_after(s.after_ms, "Reminder", &key, "fire", &id)?;
            Ok(serde_json::json!({ "id": id, "due_ms": r.due_ms }))
        })
        .handler("fire", |ctx, id: u64| {
            let pending = format!("p/{id:020}");
            let Some(mut r) = ctx.get::<Reminder>(&pending)? else {
                return Err(HandlerError::rejected(
                    404,
                    format!("no pending reminder {id}"),
                ));
            };
            ctx.delete(&pending);
            r.fired_ms = Some(ctx.now_ms());
            ctx.set(&format!("f/{id:020}"), &r);
            Ok(serde_json::to_value(&r).unwrap_or_default())
        })
        .reader("read", |ctx, _: IgnoredAny| {
            let list = |prefix: &str| -> Result<Vec<Value>, HandlerError> {
                Ok(ctx
                    .scan::<Value>(prefix)?
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect())
            };
            Ok(serde_json::json!({ "pending": list("p/")?, "fired": list("f/")? }))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::MemoryState;
    use serde_json::json;

    /// Calls `object/handler` on a key held in `state`, as a replica would.
    fn call(
        state: &mut MemoryState,
        object: &str,
        handler: &str,
        arg: Value,
    ) -> Result<Value, HandlerError> {
        let objects = objects();
        objects.check(object, handler, &arg)?;
        let mut scratch = state.clone();
        let result = {
            let mut ctx = Context::new("k", &mut scratch, 0, 1);
            objects.call(object, handler, arg, &mut ctx)
        };
        if result.is_ok() {
            *state = scratch;
        }
        result
    }

    #[test]
    fn counter_adds_and_gets() {
        let mut s = MemoryState::default();
        assert_eq!(call(&mut s, "Counter", "get", Value::Null), Ok(json!(0)));
        assert_eq!(call(&mut s, "Counter", "add", json!(5)), Ok(json!(5)));
        assert_eq!(call(&mut s, "Counter", "add", json!(-2)), Ok(json!(3)));
        let err = call(&mut s, "Counter", "add", json!("x")).unwrap_err();
        assert_eq!(err.http_status(), 400);
        let err = call(&mut s, "Counter", "add", json!(i64::MAX)).unwrap_err();
        assert_eq!(err.http_status(), 400);
        assert_eq!(call(&mut s, "Counter", "get", json!(5)), Ok(json!(3)));
    }

    #[test]
    fn set_keeps_insertion_order_and_reports_duplicates() {
        let mut s = MemoryState::default();
        for v in [json!(10), json!(9), json!("a"), json!(10)] {
            call(&mut s, "Set", "add", v).unwrap();
        }
        assert_eq!(call(&mut s, "Set", "add", json!(9)), Ok(json!(false)));
        assert_eq!(
            call(&mut s, "Set", "read", Value::Null),
            Ok(json!([10, 9, "a"]))
        );
        assert_eq!(
            call(&mut s, "Set", "add", Value::Null)
                .unwrap_err()
                .http_status(),
            400
        );
    }

    #[test]
    fn register_cas_fails_with_the_current_value() {
        let mut s = MemoryState::default();
        assert_eq!(
            call(&mut s, "Register", "read", Value::Null),
            Ok(Value::Null)
        );
        let first = json!({"expect": null, "value": 1});
        assert_eq!(call(&mut s, "Register", "cas", first), Ok(json!(1)));
        let err = call(&mut s, "Register", "cas", json!({"expect": 2, "value": 3})).unwrap_err();
        assert_eq!(err, HandlerError::PreconditionFailed { current: json!(1) });
        assert_eq!(err.http_status(), 412);
        assert_eq!(call(&mut s, "Register", "write", json!(7)), Ok(json!(7)));
        assert_eq!(call(&mut s, "Register", "read", Value::Null), Ok(json!(7)));
    }

    #[test]
    fn bad_shapes_and_unknown_names_are_refused_before_anything_runs() {
        let objects = objects();
        let status = |o: &str, h: &str, a: Value| {
            objects.check(o, h, &a).map(drop).unwrap_err().http_status()
        };
        assert_eq!(status("Set", "pop", Value::Null), 404);
        assert_eq!(status("Nope", "add", Value::Null), 404);
        assert_eq!(status("Register", "cas", json!({"value": 1})), 400);
        assert_eq!(
            status("Register", "cas", json!({"expect": 1, "value": null})),
            400
        );
        assert_eq!(status("Register", "cas", json!(5)), 400);
        assert_eq!(status("Register", "write", Value::Null), 400);
        assert_eq!(status("Account", "deposit", json!(0)), 400);
        assert_eq!(status("Account", "withdraw", json!(-3)), 400);
        assert!(objects.is_read_only("Register", "read"));
        assert!(!objects.is_read_only("Register", "cas"));
        assert!(!objects.is_read_only("Nope", "read"));
    }

    #[test]
    fn an_account_never_goes_negative() {
        let mut s = MemoryState::default();
        assert_eq!(call(&mut s, "Account", "deposit", json!(10)), Ok(json!(10)));
        assert_eq!(call(&mut s, "Account", "withdraw", json!(4)), Ok(json!(6)));
        let err = call(&mut s, "Account", "withdraw", json!(7)).unwrap_err();
        assert_eq!(err, HandlerError::PreconditionFailed { current: json!(6) });
        assert_eq!(
            call(&mut s, "Account", "balance", Value::Null),
            Ok(json!(6))
        );
    }
}
