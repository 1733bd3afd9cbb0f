//! The deterministic simulator: every node's protocol cores on one thread,
//! a virtual clock that jumps to the next event, a network that delays,
//! reorders, duplicates, drops and cuts (also one way), disks that lose
//! unsynced writes on a crash, and clients, all driven by one seed: the same
//! seed gives the same run, event for event.

pub mod disk;
pub mod net;
pub mod scheduler;
pub mod store_log;
pub mod store_meta;
pub mod store_partition;
