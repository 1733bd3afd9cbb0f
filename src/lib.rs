//! keel: an actor runtime and replicated log whose clusters never get stuck
//! after a network partition. See `README.md` for the tour and
//! `docs/` for the protocol notes.

pub mod actors;
pub mod cli;
pub mod config;
pub mod harness;
pub mod ingress;
pub mod log;
pub mod node;
pub mod objects;
pub mod powerfs;
pub mod rig;
pub mod sim;
pub mod storage;
pub mod transport;
pub mod types;
