//! A keel node of your own object type: stock levels per item, reserved and
//! restocked through the replicated log.
//!
//! ```sh
//! cargo run --example inventory -- local          # a 3-node cluster of this binary
//! curl -X POST localhost:7201/Stock/apples/restock -d 10
//! curl -X POST localhost:7201/Stock/apples/reserve -d '{"qty": 3, "order": "o-1"}'
//! curl localhost:7202/Stock/apples/level
//! ```

use keel::objects::{Context, HandlerError, ObjectType};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::process::ExitCode;

/// `reserve`'s argument.
#[derive(Deserialize)]
struct Reserve {
    /// How many to set aside.
    qty: u32,
    /// The order they are for (one reservation per order).
    order: String,
}

/// What `level` answers.
#[derive(Serialize)]
struct Level {
    /// Units on the shelf, not reserved.
    available: u32,
    /// Reservations, by order.
    reserved: Vec<(String, u32)>,
}

fn available(ctx: &Context<'_>) -> Result<u32, HandlerError> {
    Ok(ctx.get("available")?.unwrap_or(0))
}

fn stock() -> ObjectType {
    ObjectType::new("Stock")
        .handler("restock", |ctx, qty: u32| {
            let now = available(ctx)?.saturating_add(qty);
            ctx.set("available", &now);
            Ok(now)
        })
        .handler("reserve", |ctx, r: Reserve| {
            let key = format!("order/{}", r.order);
            if ctx.get::<u32>(&key)?.is_some() {
                return Err(HandlerError::rejected(
                    409,
                    format!("order {} already reserved", r.order),
                ));
            }
            let now = available(ctx)?;
            if r.qty > now {
                // 412 with what is left: the caller can retry with less.
                return Err(HandlerError::PreconditionFailed {
                    current: now.into(),
                });
            }
            ctx.set("available", &(now - r.qty));
            ctx.set(&key, &r.qty);
            Ok(now - r.qty)
        })
        .handler("release", |ctx, order: String| {
            let key = format!("order/{order}");
            let qty: u32 = ctx.get(&key)?.unwrap_or(0);
            ctx.delete(&key);
            let now = available(ctx)?.saturating_add(qty);
            ctx.set("available", &now);
            Ok(now)
        })
        .reader("level", |ctx, _: IgnoredAny| {
            let reserved = ctx.scan::<u32>("order/")?;
            Ok(Level {
                available: available(ctx)?,
                reserved: reserved
                    .into_iter()
                    .map(|(k, q)| (k["order/".len()..].to_string(), q))
                    .collect(),
            })
        })
}

fn main() -> ExitCode {
    keel::node::Builder::new().object(stock()).main("inventory")
}
