//! The command-line programs' logic (kept in the library so the binaries stay
//! thin and the test rig and harness can reuse it).

pub mod init;
pub mod local;
pub mod main;
pub mod node;
pub mod table;
