//! The object types a node serves.

use super::{Context, Handler, HandlerError, ObjectType};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a set of object types cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two types share one name.
    #[error("object type {0} is registered twice")]
    Duplicate(String),
    /// A type's name or a handler's is not allowed.
    #[error("{0}")]
    BadName(String),
}

/// The object types of a node, by name: shared by its ingress (routing and
/// argument checks) and its partition processors (running handlers). Every
/// node of a cluster must serve the same types: a peer whose
/// [`Objects::fingerprint`] differs is refused.
#[derive(Clone, Default)]
pub struct Objects {
    /// The types, by name.
    types: Arc<BTreeMap<String, ObjectType>>,
}

impl Objects {
    /// The registry of `types`; refused if two share a name or a name is
    /// not allowed.
    pub fn new(types: impl IntoIterator<Item = ObjectType>) -> Result<Self, RegistryError> {
        let mut map = BTreeMap::new();
        for t in types {
            if let Some(problem) = t.problem() {
                return Err(RegistryError::BadName(problem));
            }
            let name = t.name().to_string();
            if map.insert(name.clone(), t).is_some() {
                return Err(RegistryError::Duplicate(name));
            }
        }
        Ok(Objects {
            types: Arc::new(map),
        })
    }

    /// The type named `name`.
    pub fn get(&self, name: &str) -> Result<&ObjectType, HandlerError> {
        self.types
            .get(name)
            .ok_or_else(|| HandlerError::UnknownObject {
                name: name.to_string(),
                known: self.names().collect::<Vec<_>>().join(", "),
            })
    }

    /// The registered names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// The handler `object/handler`, if `arg` has its shape: what the
    /// ingress checks before anything is appended.
    pub fn check(
        &self,
        object: &str,
        handler: &str,
        arg: &Value,
    ) -> Result<&Handler, HandlerError> {
        self.get(object)?.check(handler, arg)
    }

    /// Runs `object/handler` on `arg` (panics caught).
    pub fn call(
        &self,
        object: &str,
        handler: &str,
        arg: Value,
        ctx: &mut Context<'_>,
    ) -> Result<Value, HandlerError> {
        self.get(object)?.call(handler, arg, ctx)
    }

    /// The handler `object/handler`, if both exist.
    pub fn handler(&self, object: &str, handler: &str) -> Option<&Handler> {
        self.types.get(object)?.handler_named(handler)
    }

    /// Whether `object/handler` exists and only reads.
    pub fn is_read_only(&self, object: &str, handler: &str) -> bool {
        self.handler(object, handler)
            .is_some_and(Handler::is_read_only)
    }

    /// One line naming every type and handler (`r` read-only, `w` writes),
    /// for the refusal of a peer that serves other types.
    pub fn describe(&self) -> String {
        self.types
            .values()
            .map(|t| {
                let handlers: Vec<String> = t
                    .handler_names()
                    .map(|h| {
                        let reads = t.handler_named(h).is_some_and(Handler::is_read_only);
                        let kind = if reads { 'r' } else { 'w' };
                        format!("{h}:{kind}")
                    })
                    .collect();
                format!("{}({})", t.name(), handlers.join(","))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A hash of [`Objects::describe`] (FNV-1a, stable across builds): two
    /// nodes serve the same types exactly when their fingerprints agree.
    pub fn fingerprint(&self) -> u64 {
        crate::types::fnv1a(crate::types::FNV1A_START, self.describe().bytes())
    }
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
