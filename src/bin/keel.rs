//! `keel`: run a node, generate a cluster's certificates, or start a local
//! three-node cluster on loopback, serving the demo's object types. See
//! `keel --help`; a binary of your own types is the same with
//! `keel::node::Builder` (see `examples/`).

use std::process::ExitCode;

fn main() -> ExitCode {
    keel::node::Builder::demo().main("keel")
}
