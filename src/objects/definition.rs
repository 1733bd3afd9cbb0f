//! An object type: a name and its named handlers.

use super::{Context, HandlerError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// Longest object type or handler name.
pub const MAX_NAME: usize = 64;

/// What a handler does with a call: the argument in, the result out.
type Run = dyn Fn(&mut Context<'_>, Value) -> Result<Value, HandlerError> + Send + Sync;
/// Whether an argument has the handler's shape (run at the ingress, before
/// anything is appended).
type Check = dyn Fn(&Value) -> Result<(), HandlerError> + Send + Sync;

/// One handler of an object type.
#[derive(Clone)]
pub struct Handler {
    /// Read-only handlers see the state but cannot change it; they may be
    /// called with `GET` and their results are not kept for deduplication.
    read_only: bool,
    /// The argument's shape.
    check: Arc<Check>,
    /// The handler itself.
    run: Arc<Run>,
}

impl Handler {
    /// Whether the handler only reads.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
}

/// A virtual object type: a name and its handlers. Objects of a type are
/// addressed by key (`/{Object}/{key}/{handler}`); each key has its own
/// state, and calls on one key apply one at a time, in log order.
///
/// ```
/// use keel::objects::{ObjectType, HandlerError};
///
/// let greeter = ObjectType::new("Greeter")
///     .handler("greet", |ctx, name: String| {
///         let seen: u64 = ctx.get("seen")?.unwrap_or(0);
///         ctx.set("seen", &(seen + 1));
///         Ok(format!("hello {name}, #{}", seen + 1))
///     })
///     .reader("seen", |ctx, _: serde::de::IgnoredAny| {
///         Ok(ctx.get::<u64>("seen")?.unwrap_or(0))
///     });
/// assert_eq!(greeter.name(), "Greeter");
/// ```
#[derive(Clone)]
pub struct ObjectType {
    /// The type's name: the `{Object}` of the route.
    name: String,
    /// Its handlers, by name.
    handlers: BTreeMap<String, Handler>,
}

impl ObjectType {
    /// A type named `name` with no handlers yet. Names start with an ASCII
    /// capital and go on with letters, digits and `_` (at most 64 bytes), so
    /// they never collide with the node's own lower-case routes; a bad name
    /// is refused when the type is registered.
    pub fn new(name: impl Into<String>) -> Self {
        ObjectType {
            name: name.into(),
            handlers: BTreeMap::new(),
        }
    }

    /// The type's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The handler names, in order.
    pub fn handler_names(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    /// The handler called `name`.
    pub fn handler_named(&self, name: &str) -> Option<&Handler> {
        self.handlers.get(name)
    }

    /// Adds a handler that may change the object's state. Its argument is
    /// decoded from JSON as `A` (a call whose argument does not decode is
    /// refused with 400 before anything is appended); its result is encoded
    /// as JSON. A handler registered twice under one name replaces the first.
    pub fn handler<A, R, F>(self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
        F: Fn(&mut Context<'_>, A) -> Result<R, HandlerError> + Send + Sync + 'static,
    {
        self.add(name, false, f)
    }

    /// Adds a read-only handler: it sees the state through `&Context` and
    /// cannot change it.
    pub fn reader<A, R, F>(self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
        F: Fn(&Context<'_>, A) -> Result<R, HandlerError> + Send + Sync + 'static,
    {
        self.add(name, true, move |ctx: &mut Context<'_>, arg| f(ctx, arg))
    }

    /// Registers `f` as the handler `name`: its argument decoded as `A`
    /// (the same decoding checks it at the ingress), its result as JSON.
    fn add<A, R, F>(mut self, name: &str, read_only: bool, f: F) -> Self
    where
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
        F: Fn(&mut Context<'_>, A) -> Result<R, HandlerError> + Send + Sync + 'static,
    {
        let label = format!("{}/{name}", self.name);
        let check_label = label.clone();
        let check = move |arg: &Value| decode_arg::<A>(&check_label, arg).map(drop);
        let run = move |ctx: &mut Context<'_>, arg: Value| -> Result<Value, HandlerError> {
            encode(f(ctx, decode_arg(&label, &arg)?)?)
        };
        let handler = Handler {
            read_only,
            check: Arc::new(check),
            run: Arc::new(run),
        };
        self.handlers.insert(name.to_string(), handler);
        self
    }

    /// Why this type cannot be registered, if it cannot.
    pub(super) fn problem(&self) -> Option<String> {
        if !valid_name(&self.name, true) {
            return Some(format!(
                "object type name {:?} must be 1..={MAX_NAME} bytes of [A-Za-z0-9_], starting with an ASCII capital",
                self.name
            ));
        }
        if self.handlers.is_empty() {
            return Some(format!("object type {} has no handlers", self.name));
        }
        self.handlers
            .keys()
            .find(|h| !valid_name(h, false))
            .map(|h| {
                format!(
                    "handler name {h:?} of {} must be 1..={MAX_NAME} bytes of [A-Za-z0-9_-]",
                    self.name
                )
            })
    }

    /// The handler `handler`, if `arg` has its shape.
    pub fn check(&self, handler: &str, arg: &Value) -> Result<&Handler, HandlerError> {
        let h = self.handler_or_err(handler)?;
        (h.check)(arg)?;
        Ok(h)
    }

    fn handler_or_err(&self, handler: &str) -> Result<&Handler, HandlerError> {
        self.handlers
            .get(handler)
            .ok_or_else(|| HandlerError::UnknownHandler {
                object: self.name.clone(),
                handler: handler.to_string(),
                known: self.handler_names().collect::<Vec<_>>().join(", "),
            })
    }

    /// Runs `handler` on `arg`. A panic in the handler is caught and becomes
    /// [`HandlerError::Panicked`]; the caller drops the call's writes on any
    /// error.
    pub fn call(
        &self,
        handler: &str,
        arg: Value,
        ctx: &mut Context<'_>,
    ) -> Result<Value, HandlerError> {
        let h = self.handler_or_err(handler)?;
        match catch_unwind(AssertUnwindSafe(|| (h.run)(ctx, arg))) {
            Ok(result) => result,
            Err(payload) => Err(HandlerError::Panicked(panic_reason(payload.as_ref()))),
        }
    }
}

/// `arg` decoded as `A`, without copying it (`&Value` is a deserializer).
fn decode_arg<A: DeserializeOwned>(label: &str, arg: &Value) -> Result<A, HandlerError> {
    A::deserialize(arg).map_err(|e| HandlerError::BadArgument(format!("{label}: {e}")))
}

fn encode<R: Serialize>(result: R) -> Result<Value, HandlerError> {
    serde_json::to_value(result).map_err(|e| HandlerError::Panicked(format!("result: {e}")))
}

fn panic_reason(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

fn valid_name(name: &str, capital: bool) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || (!capital && c == '-');
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(ok)
        && (!capital || name.starts_with(|c: char| c.is_ascii_uppercase()))
}
