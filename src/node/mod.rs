//! A keel node: its actors, how they find each other, and the wire between nodes.

pub mod local;
pub mod metrics;
pub mod net;
pub mod wire;

pub use local::{LocalActors, LocalRoute};
pub use net::{CallError, Net, Remote};
pub use wire::{Rpc, Wire};
