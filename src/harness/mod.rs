//! The Jepsen-style harness' pure parts: the history format, the nemesis
//! log, checkers, statistics and the latency plot. Nothing here does I/O
//! beyond reading and writing the files it is handed, so every piece is
//! tested with hand-written good and bad histories.
//!
//! A run produces `history.jsonl` (one [`Op`] per line, see
//! `HISTORY-FORMAT.md`) and `nemesis.jsonl` (one [`NemesisEvent`] per
//! line, same clock). [`pair`] turns ops into calls, [`FaultTimeline`]
//! turns events into fault windows and majority sides, and
//! [`check_all`] runs every checker.
//!
//! The live parts drive a real cluster: [`runner::run`] starts or attaches
//! to nodes ([`cluster`], optionally in network namespaces, [`netns`], and
//! with their data directories on powerfs mounts, [`power`]),
//! runs a [`workload`] through HTTP clients ([`client`]) while a nemesis
//! follows a seeded [`schedule`], records both logs ([`recorder`]) and
//! writes the [`report`]. A [`soak`] runs a healthy cluster under a long
//! mixed load and samples its memory and disk.

pub mod checker;
pub mod client;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod plot;
pub mod power;
pub mod recorder;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod soak;
pub mod stats;
pub mod workload;

#[cfg(test)]
mod testkit;

pub use checker::{check_all, check_all_with, render_results, CheckConfig, CheckResult, Validity};
pub use history::{pair, read_history, read_jsonl, write_jsonl, Call, Op, OpType, Outcome, F};
pub use nemesis::{ClusterState, Fault, FaultTimeline, FaultWindow, NemesisEvent};
pub use plot::{latency_svg, write_latency_svg};
pub use stats::{stats, Stats};
