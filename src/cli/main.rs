//! The `keel` command line (`node`, `init`, `local`), for any set of object
//! types: the `keel` binary runs it with the demo's, a user's binary (see
//! [`crate::node::Builder`]) with its own.

use super::{init, local, node};
use crate::objects::Objects;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "keel: a replicated log and actor runtime that never gets stuck after a partition"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node (from a TOML config and/or flags).
    Node(node::NodeArgs),
    /// Generate a cluster CA and one directory per node (certificate, key,
    /// config, stamped data directory), ready to copy to that node's host.
    Init {
        /// Directory to write `ca/` (the CA, key included) and `n<i>/` into.
        #[arg(long, default_value = "keel-data")]
        dir: PathBuf,
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// First port: QUIC on base+i, HTTP on base+100+i.
        #[arg(long, default_value_t = 7100)]
        base_port: u16,
        /// Expose the chaos endpoints on every node.
        #[arg(long)]
        chaos: bool,
    },
    /// Start a local cluster on loopback (3 node processes of this very
    /// binary, so they serve its object types); Ctrl-C stops it.
    Local(local::LocalArgs),
}

/// Parses the process's arguments and runs the command, serving `objects`.
/// `name` is the program's name in help and errors.
pub fn main(name: &'static str, objects: Objects) -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Args::command().name(name).get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let result = match args.command {
        Command::Node(a) => node::run(a, objects),
        Command::Init {
            dir,
            nodes,
            base_port,
            chaos,
        } => init::run(&dir, nodes, base_port, chaos).map(|paths| {
            for p in paths {
                println!("wrote {}", p.display());
            }
            println!(
                "copy each {}/n<i>/ as a whole to node i's host; keep {}/ca/ (it holds the CA key) offline",
                dir.display(),
                dir.display()
            );
        }),
        Command::Local(a) => local::run(a, &objects),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
