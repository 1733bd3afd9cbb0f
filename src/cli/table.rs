//! Plain-text tables for people (`keelctl status`, `keelctl logs`, `keel local`).

use crate::log::Chain;
use crate::node::status::ClusterStatus;
use std::fmt::Write;

/// Left-aligned columns sized to their widest cell.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{:<w$}  ", cell, w = widths[i]);
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(|s| s.as_str()).collect(), &mut out);
    }
    out
}

fn ago(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms ago")
    } else if ms < 120_000 {
        format!("{:.1}s ago", ms as f64 / 1000.0)
    } else {
        format!("{}m ago", ms / 60_000)
    }
}

fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 120_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 7_200_000 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}h", ms / 3_600_000)
    }
}

/// The nodes table, the partitions table, restarts and pending waits.
pub fn cluster_status(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let mut nodes = Vec::new();
    let mut parts = Vec::new();
    let mut restarts = Vec::new();
    let mut waits = Vec::new();
    let mut degraded = Vec::new();
    for report in &status.nodes {
        let Some(s) = &report.status else {
            nodes.push(vec![
                report.node.to_string(),
                report.http.to_string(),
                "UNREACHABLE".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                report.error.clone().unwrap_or_default(),
            ]);
            continue;
        };
        let connected = s.peers.iter().filter(|p| p.connected).count();
        let sick: Vec<_> = s
            .peers
            .iter()
            .filter_map(|p| Some((p, p.health.as_ref().filter(|h| !h.healthy)?)))
            .collect();
        for (p, h) in &sick {
            degraded.push(vec![
                s.node.to_string(),
                p.node.to_string(),
                duration(h.for_ms),
                h.why.clone().unwrap_or_default(),
            ]);
        }
        let restart_total: u64 = s
            .supervision
            .children
            .iter()
            .map(|c| c.restarts_total)
            .sum();
        let oldest = s.supervision.waits.iter().max_by_key(|w| w.waited_ms);
        nodes.push(vec![
            s.node.to_string(),
            s.http.to_string(),
            if s.supervision.gave_up.is_some() {
                "FAILED".into()
            } else if let Some(r) = s.rejoin.as_ref().filter(|r| r.step != "done") {
                format!("REJOINING ({})", r.step)
            } else {
                "ALIVE".into()
            },
            disk(&s.storage),
            if sick.is_empty() {
                format!("{connected}/{}", s.peers.len())
            } else {
                format!("{connected}/{} ({} degraded)", s.peers.len(), sick.len())
            },
            duration(s.uptime_ms),
            restart_total.to_string(),
            oldest
                .map(|w| format!("{} ({}) for {}", w.what, w.owner, duration(w.waited_ms)))
                .unwrap_or_else(|| "-".into()),
        ]);
        for p in &s.partitions {
            parts.push(vec![
                p.partition.to_string(),
                s.node.to_string(),
                p.mode.clone(),
                match &p.restoring {
                    Some(r) => format!(
                        "{} (from {} at {})",
                        p.status,
                        r.from.map_or("-".into(), |n| n.to_string()),
                        r.lsn.map_or("-".into(), |l| l.to_string())
                    ),
                    None => p.status.clone(),
                },
                p.leader
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "-".into()),
                p.epoch.0.to_string(),
                p.sequencer
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "-".into()),
                p.applied_lsn.to_string(),
                p.persisted_lsn.to_string(),
                p.snapshot_lsn
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "-".into()),
                outbox(&p.outbox),
                ago(p.last_update_ms),
            ]);
        }
        for c in s
            .supervision
            .children
            .iter()
            .filter(|c| c.restarts_total > 0)
        {
            restarts.push(vec![
                s.node.to_string(),
                c.path.clone(),
                c.restarts_total.to_string(),
                c.last_restart
                    .as_ref()
                    .map(|r| r.reason.clone())
                    .unwrap_or_default(),
            ]);
        }
        for w in &s.supervision.waits {
            waits.push(vec![
                s.node.to_string(),
                w.owner.clone(),
                w.what.clone(),
                duration(w.waited_ms),
                duration(w.deadline_ms),
            ]);
        }
    }
    parts.sort_by(|a, b| {
        (a[0].parse::<u32>().unwrap_or(0), &a[1]).cmp(&(b[0].parse::<u32>().unwrap_or(0), &b[1]))
    });
    out.push_str(&render(
        &[
            "NODE",
            "HTTP",
            "STATE",
            "DISK",
            "PEERS",
            "UPTIME",
            "RESTARTS",
            "OLDEST-WAIT",
        ],
        &nodes,
    ));
    out.push('\n');
    out.push_str(&render(
        &[
            "P-ID",
            "NODE",
            "MODE",
            "STATUS",
            "LEADER",
            "EPOCH",
            "SEQUENCER",
            "APPLIED-LSN",
            "PERSISTED-LSN",
            "SNAPSHOT-LSN",
            "OUTBOX",
            "LAST-UPDATE",
        ],
        &parts,
    ));
    if !degraded.is_empty() {
        out.push('\n');
        out.push_str(&render(&["NODE", "DEGRADED-PEER", "FOR", "WHY"], &degraded));
    }
    if !restarts.is_empty() {
        out.push('\n');
        out.push_str(&render(
            &["NODE", "ACTOR", "RESTARTS", "LAST-REASON"],
            &restarts,
        ));
    }
    if !waits.is_empty() {
        out.push('\n');
        out.push_str(&render(
            &["NODE", "ACTOR", "WAITING-FOR", "FOR", "DEADLINE"],
            &waits,
        ));
    }
    out
}

/// A node's storage health in one cell: `ok`, damage found (and how much of
/// it is still unrepaired), `SUSPECT` (may lack records it cannot name) or
/// `SYNC-FAILED` (can no longer make writes durable).
fn disk(s: &crate::storage::StorageStats) -> String {
    if s.records_sync.failed.is_some() || s.state_sync.failed.is_some() {
        "SYNC-FAILED".into()
    } else if s.records.suspect.is_some() {
        "SUSPECT".into()
    } else if s.records.damaged_records > 0 {
        format!(
            "damaged {} ({} unrepaired)",
            s.records.damaged_records, s.records.unrepaired
        )
    } else {
        "ok".into()
    }
}

/// One row per segment of every log.
pub fn chains(chains: &[Chain]) -> String {
    let mut rows = Vec::new();
    for chain in chains {
        for s in &chain.segments {
            rows.push(vec![
                chain.log.to_string(),
                s.base_lsn.to_string(),
                s.loglet.to_string(),
                s.sequencer.to_string(),
                s.nodeset
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                s.replication.to_string(),
                s.sealed_tail
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "open".into()),
            ]);
        }
    }
    render(
        &[
            "LOG",
            "FROM-LSN",
            "LOGLET",
            "SEQUENCER",
            "NODESET",
            "REPLICATION",
            "SEALED-TAIL",
        ],
        &rows,
    )
}

/// A partition's outbox in one cell: undelivered messages (and the age of
/// the oldest), waiting timers; `-` when both are empty.
fn outbox(o: &crate::actors::partition_processor::OutboxStatus) -> String {
    let mut parts = Vec::new();
    if o.depth > 0 {
        let age = o.oldest_ms.map(|ms| format!(", oldest {}", duration(ms)));
        parts.push(format!("{} msgs{}", o.depth, age.unwrap_or_default()));
    }
    if o.timers > 0 {
        parts.push(format!("{} timers", o.timers));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let t = render(
            &["A", "LONG-HEADER"],
            &[
                vec!["wide-cell".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        assert_eq!(t, "A          LONG-HEADER\nwide-cell  x\ny          z\n");
    }
}
