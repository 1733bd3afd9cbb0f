//! keel: an actor runtime and replicated log whose clusters never get stuck
//! after a network partition. See `README.md` for the tour and
//! `docs/` for the protocol notes.

pub mod actors;
pub mod types;
