//! Every long-lived component of a node is an actor started under the node's
//! supervision tree. Each actor module holds the actix shell (`mod.rs`) and,
//! where there is a protocol, its I/O-free core (`core.rs`).

pub mod supervisor;
