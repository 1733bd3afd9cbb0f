//! powerfs: a FUSE file system for durability tests. It passes through to a
//! real backing directory but keeps every write in memory until it is synced,
//! and on command "loses power": everything unsynced is dropped.

mod extents;
pub mod model;
