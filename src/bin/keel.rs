//! `keel`: run a node, generate a cluster's certificates, or start a local
//! three-node cluster on loopback. See `keel --help`.

use clap::{Parser, Subcommand};
use keel::cli;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "keel",
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
    Node(cli::node::NodeArgs),
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
    /// Start a local cluster on loopback (3 node processes); Ctrl-C stops it.
    Local(cli::local::LocalArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Node(a) => cli::node::run(a),
        Command::Init {
            dir,
            nodes,
            base_port,
            chaos,
        } => cli::init::run(&dir, nodes, base_port, chaos).map(|paths| {
            for p in paths {
                println!("wrote {}", p.display());
            }
            println!(
                "copy each {}/n<i>/ as a whole to node i's host; keep {}/ca/ (it holds the CA key) offline",
                dir.display(),
                dir.display()
            );
        }),
        Command::Local(a) => cli::local::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
