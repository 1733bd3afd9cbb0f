//! Every long-lived component of a node is an actor started under the node's
//! supervision tree. Each actor module holds the actix shell (`mod.rs`) and,
//! where there is a protocol, its I/O-free core (`core.rs`).

pub mod bugs;
pub mod env;
pub mod leader_elector;
pub mod log_server;
pub mod metadata;
pub mod partition_processor;
pub mod quorum;
pub mod rejoin;
pub mod sealer;
pub mod sequencer;
pub mod supervisor;

use actix::prelude::*;

/// Runs `f` on the actor once its mailbox is drained, so every message
/// already queued is handled first (the batching actors gather what arrived
/// meanwhile into one batch). Not `run_later(Duration::ZERO)`: that goes
/// through the timer wheel and waits for its next millisecond tick.
pub(crate) fn when_mailbox_drained<A, F>(ctx: &mut Context<A>, f: F)
where
    A: Actor<Context = Context<A>>,
    F: FnOnce(&mut A, &mut Context<A>) + 'static,
{
    ctx.spawn(fut::ready(()).map(move |(), act: &mut A, ctx: &mut Context<A>| f(act, ctx)));
}
