//! The replicated log as its users see it (Bifrost-style): a chain of
//! segments per log, an appender that gets records their LSNs, and a reader
//! that follows a log across segments.

pub mod calls;
pub mod chain;
pub mod client;
pub mod config;
pub mod core;
pub mod record;

pub use chain::{chain_key, Chain, Segment};
pub use client::{AppendError, LogClient, ReadError};
pub use config::LogConfig;
pub use record::{Record, MAX_RECORD_BYTES};
