//! Virtual objects: the public API for defining what a keel node serves.
//!
//! An [`ObjectType`] is a name and named handlers; an object is an instance
//! of a type under a key, with keyed state of its own. A call
//! `POST /{Object}/{key}/{handler}` (or `GET` for a read-only handler)
//! becomes a log record of the key's partition; every replica applies the
//! record by running the handler against the object's state, so all
//! replicas hold the same state and the leader answers with the result.
//!
//! # Handlers must be deterministic
//!
//! A handler runs once on every replica, and again whenever a replica
//! rebuilds its state from the log, so it must compute the same result and
//! the same writes from the same argument and state every time. It must not:
//! - read the wall clock (use [`Context::now_ms`], the log's clock);
//! - draw OS or thread-local randomness (use [`Context::random_u64`], seeded
//!   by the call);
//! - do I/O (files, network, environment variables) or talk to other threads;
//! - keep or read mutable global state (statics, caches between calls);
//! - depend on iteration order that is not fixed (`HashMap`, `HashSet`: use
//!   `BTreeMap`, or sort).
//!
//! What a handler returns or writes may depend only on its argument, its
//! object's state and the context. A handler that panics fails its one call
//! (HTTP 500 with the panic's message, the same on every replica); its writes
//! are dropped and the partition carries on.

mod context;
mod definition;
pub mod demo;
mod error;
mod registry;

pub use context::{Address, Context, MemoryState, ObjectState, Outgoing, Reply};
pub use definition::{Handler, ObjectType, MAX_NAME};
pub use error::HandlerError;
pub use registry::{Objects, RegistryError};

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IgnoredAny;
    use serde_json::{json, Value};

    fn run(
        objects: &Objects,
        object: &str,
        handler: &str,
        arg: Value,
        state: &mut MemoryState,
    ) -> Result<Value, HandlerError> {
        let mut ctx = Context::new("k", state, 1_000, 7);
        objects.call(object, handler, arg, &mut ctx)
    }

    #[test]
    fn a_panicking_handler_fails_its_call_with_the_reason() {
        let objects = Objects::new([ObjectType::new("Boom").handler("go", |ctx, n: u32| {
            ctx.set("before", &n);
            if n == 13 {
                panic!("unlucky {n}");
            }
            Ok(n)
        })])
        .unwrap();
        let mut state = MemoryState::default();
        let err = run(&objects, "Boom", "go", json!(13), &mut state).unwrap_err();
        assert_eq!(err, HandlerError::Panicked("unlucky 13".into()));
        assert_eq!(err.http_status(), 500);
        assert_eq!(
            run(&objects, "Boom", "go", json!(1), &mut state),
            Ok(json!(1))
        );
    }

    #[test]
    fn two_types_with_one_name_or_a_bad_name_are_refused() {
        let t = || ObjectType::new("Twice").reader("r", |_, _: IgnoredAny| Ok(0));
        assert_eq!(
            Objects::new([t(), t()]).unwrap_err(),
            RegistryError::Duplicate("Twice".into())
        );
        for bad in [
            "",
            "lower",
            "Has space",
            "cluster",
            &"A".repeat(MAX_NAME + 1),
        ] {
            let t = ObjectType::new(bad).reader("r", |_, _: IgnoredAny| Ok(0));
            assert!(
                matches!(Objects::new([t]), Err(RegistryError::BadName(_))),
                "{bad:?}"
            );
        }
        let no_handlers = ObjectType::new("Empty");
        assert!(Objects::new([no_handlers]).is_err());
        let bad_handler = ObjectType::new("Ok").reader("a/b", |_, _: IgnoredAny| Ok(0));
        assert!(Objects::new([bad_handler]).is_err());
    }

    #[test]
    fn the_context_is_deterministic_per_call() {
        let objects = Objects::new([ObjectType::new("Dice")
            .handler("roll", |ctx, _: IgnoredAny| {
                Ok((ctx.random_u64(), ctx.random_u64(), ctx.now_ms()))
            })])
        .unwrap();
        let roll = || {
            run(
                &objects,
                "Dice",
                "roll",
                Value::Null,
                &mut MemoryState::default(),
            )
        };
        let (a, b) = (roll().unwrap(), roll().unwrap());
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
        assert_eq!(a[2], json!(1_000));
    }

    #[test]
    fn state_is_keyed_scanned_and_deleted_by_name() {
        let objects = Objects::new([ObjectType::new("Bag")
            .handler("put", |ctx, (k, v): (String, i64)| {
                ctx.set(&format!("i:{k}"), &v);
                Ok(())
            })
            .handler("drop", |ctx, k: String| {
                ctx.delete(&format!("i:{k}"));
                Ok(())
            })
            .reader("all", |ctx, _: IgnoredAny| ctx.scan::<i64>("i:"))])
        .unwrap();
        let mut state = MemoryState::default();
        for (k, v) in [("b", 2), ("a", 1), ("c", 3)] {
            run(&objects, "Bag", "put", json!([k, v]), &mut state).unwrap();
        }
        run(&objects, "Bag", "drop", json!("b"), &mut state).unwrap();
        let all = run(&objects, "Bag", "all", Value::Null, &mut state).unwrap();
        assert_eq!(all, json!([["i:a", 1], ["i:c", 3]]));
        let err = run(&objects, "Bag", "put", json!("nope"), &mut state).unwrap_err();
        assert_eq!(err.http_status(), 400);
        assert!(err.to_string().contains("Bag/put"), "{err}");
    }

    #[test]
    fn registries_with_the_same_types_share_a_fingerprint() {
        let a = demo::objects();
        let b = demo::objects();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = Objects::new([ObjectType::new("Counter").reader("get", |_, _: IgnoredAny| Ok(0))])
            .unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert!(
            a.describe()
                .contains("Account(balance:r,credit:w,deposit:w,transfer:w,withdraw:w)"),
            "{}",
            a.describe()
        );
    }
}
