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
    /// Where a node's rejoin after a lost disk stands (start the node with
    /// `keel node --rejoin`); with --wait, follows it until it is done.
    Rejoin {
        /// The rejoining node (N2 or 2).
        node: keel::types::NodeId,
        /// Follow the rejoin for at most this many seconds; fail if it is
        /// not done by then.
        #[arg(long)]
        wait: Option<u64>,
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

/// `node`'s rejoin as its status shows it (`Ok(None)`: it never rejoined
/// since it started); an error if it does not answer.
fn rejoin_of(
    url: &str,
    node: keel::types::NodeId,
) -> Result<Option<keel::actors::rejoin::RejoinView>> {
    let status = fetch_status(url)?;
    let report = status
        .nodes
        .into_iter()
        .find(|r| r.node == node)
        .with_context(|| format!("{node} is not a member of the cluster"))?;
    match report.status {
        Some(s) => Ok(s.rejoin),
        None => anyhow::bail!(
            "{node} is down or unreachable: {}",
            report.error.unwrap_or_else(|| "no status".into())
        ),
    }
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
        Command::Rejoin { node, wait, json } => {
            let until = wait.map(|s| std::time::Instant::now() + Duration::from_secs(s));
            let mut last = None;
            let mut first = true;
            loop {
                // A node that is restarting does not answer for a moment.
                let view = match rejoin_of(url, node) {
                    Ok(v) => v,
                    Err(e) if until.is_some_and(|u| std::time::Instant::now() < u) => {
                        eprintln!("keelctl: {e:#} (retrying)");
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if json {
                    println!("{}", serde_json::to_string(&view)?);
                } else if first || view != last {
                    match &view {
                        Some(v) => println!("{node}: {} — {}", v.step, v.detail),
                        None => println!("{node}: no rejoin since it started"),
                    }
                }
                let done = view.as_ref().is_none_or(|v| v.step == "done");
                last = view;
                first = false;
                match until {
                    _ if done => break,
                    None => break,
                    Some(u) if std::time::Instant::now() >= u => {
                        anyhow::bail!("{node}'s rejoin is not done after {}s", wait.unwrap_or(0))
                    }
                    Some(_) => std::thread::sleep(Duration::from_millis(500)),
                }
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
