//! `keel`: run a node, generate a cluster's certificates, or start a local
//! three-node cluster on loopback, serving the demo's object types. See
//! `keel --help`; a binary of your own types is the same with
//! `keel::node::Builder` (see `examples/`).

use std::process::ExitCode;

/// jemalloc, not glibc's malloc: in five alternating runs of `cargo bench
/// --bench e2e` at 128 connections it served a median 7% more requests with
/// a lower p99 (median 35 against 40 ms; docs/PERF.md); allocation was about
/// a fifth of a node's CPU.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    keel::node::Builder::demo().main("keel")
}
