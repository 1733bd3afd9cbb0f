//! Hostile input cannot crash or corrupt a node: random and mutated inputs
//! (at least 100,000 per target by default) fed to the frame codec, the
//! `Wire` decoder, the values peers write into the register, the
//! log-server and metadata acceptor actors, and the protocol cores. Each
//! target asserts no panic, bounded allocation where bytes are decoded, and
//! no state change a valid message could not cause (checked against a
//! model after every input).
//!
//! Every run first replays `tests/corpus/<target>/*.bin`, the inputs that
//! once failed. `KEEL_FUZZ_CASES=N` changes the number of generated cases,
//! `KEEL_FUZZ_SEED` / `KEEL_FUZZ_CASE` reproduce one; see
//! `docs/HOSTILE_INPUT.md`.

mod actors;
mod codec;
mod cores;
mod samples;
mod support;

#[global_allocator]
static ALLOCATOR: support::Tracking = support::Tracking;
