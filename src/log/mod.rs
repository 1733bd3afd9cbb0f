//! The replicated log as its users see it (Bifrost-style): a chain of
//! segments per log, an appender that gets records their LSNs, and a reader
//! that follows a log across segments.

pub mod chain;
pub mod record;

pub use chain::{Chain, Segment};
pub use record::{Record, MAX_RECORD_BYTES};
