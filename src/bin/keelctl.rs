//! `keelctl`: read a running cluster's status for a person, and ask a node
//! for a partition snapshot.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use keel::cli::{local::fetch_status, table};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "keelctl", version, about = "Inspect a running keel cluster")]
struct Args {
    /// Any node's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:7201", global = true)]
    url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Nodes, partitions (leader, epoch, sequencer, applied/persisted LSN), restarts and waits.
    Status {
        /// Print the raw JSON of GET /cluster/status.
        #[arg(long)]
        json: bool,
    },
    /// Every log's chain of segments.
    Logs {
        #[arg(long)]
        json: bool,
    },
    /// Snapshot a partition's state now on the node at --url; prints the LSN
    /// the snapshot covers and its file.
    Snapshot {
        /// The partition.
        #[arg(long)]
        partition: u32,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
}

fn run(args: Args) -> Result<()> {
    let url = args.url.trim_end_matches('/');
    match args.command {
        Command::Status { json } => {
            let status = fetch_status(url)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", table::cluster_status(&status));
            }
        }
        Command::Logs { json } => {
            let chains: Vec<keel::log::Chain> = ureq::get(&format!("{url}/cluster/logs"))
                .timeout(Duration::from_secs(5))
                .call()
                .with_context(|| format!("GET {url}/cluster/logs"))?
                .into_json()
                .context("decoding /cluster/logs")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&chains)?);
            } else {
                print!("{}", table::chains(&chains));
            }
        }
        Command::Snapshot { partition, json } => {
            let endpoint = format!("{url}/partitions/{partition}/snapshot");
            let taken: keel::actors::partition_processor::SnapshotTaken =
                match ureq::post(&endpoint)
                    .timeout(Duration::from_secs(70))
                    .call()
                {
                    Ok(r) => r.into_json().context("decoding the snapshot answer")?,
                    Err(ureq::Error::Status(code, r)) => {
                        let body: serde_json::Value = r.into_json().unwrap_or_default();
                        let why = body["error"].as_str().unwrap_or("no reason given");
                        anyhow::bail!("POST {endpoint}: {code}: {why}");
                    }
                    Err(e) => return Err(e).with_context(|| format!("POST {endpoint}")),
                };
            if json {
                println!("{}", serde_json::to_string_pretty(&taken)?);
            } else {
                println!(
                    "partition {} snapshot at LSN {}: {}",
                    taken.partition, taken.lsn, taken.path
                );
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keelctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
