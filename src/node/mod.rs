//! A keel node: its actors, how they find each other, the wire between
//! nodes, and the HTTP endpoints it serves.

pub mod admin;
mod builder;
pub mod local;
pub mod metrics;
pub mod net;
pub mod router;
pub mod stall;
mod start;
pub mod status;
pub mod wire;

pub use builder::Builder;
pub use local::{LocalActors, LocalRoute};
pub use net::{CallError, Net, Remote};
pub use start::{Node, NodeError, NodeOptions};
pub use wire::{Rpc, Wire};
