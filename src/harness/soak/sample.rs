//! What the soak measures of each node: resident memory and bytes written
//! (from `/proc/<pid>`), and the bytes its data directory takes, split by
//! what holds them: `records/` (the log's segment files), `state/` (sled:
//! partition state, dedup table, log metadata), `snapshots/` (partition
//! snapshots) and everything else (identity, probes). Bytes are allocated
//! blocks, as `du` counts them.

use std::io;
use std::path::Path;

/// One node at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Milliseconds since the load started.
    pub t_ms: u64,
    /// The node's id.
    pub node: u32,
    /// Resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Bytes the process caused to be written to storage (`write_bytes`
    /// of `/proc/<pid>/io`), since it started.
    pub write_bytes: u64,
    /// Bytes under `records/`.
    pub records: u64,
    /// Bytes under `state/`.
    pub state: u64,
    /// Bytes under `snapshots/`.
    pub snapshots: u64,
    /// Bytes of the data directory outside those three.
    pub other: u64,
    /// Requests acknowledged (200) cluster-wide so far.
    pub acked: u64,
}

/// The first line of `resources.csv`.
pub const CSV_HEADER: &str =
    "t_s,node,rss_kib,write_bytes,records_bytes,state_bytes,snapshots_bytes,other_bytes,acked";

impl Sample {
    /// Everything in the data directory.
    pub fn disk(&self) -> u64 {
        self.records + self.state + self.snapshots + self.other
    }

    /// One `resources.csv` line (no newline).
    pub fn csv_line(&self) -> String {
        format!(
            "{:.3},{},{},{},{},{},{},{},{}",
            self.t_ms as f64 / 1000.0,
            self.node,
            self.rss_kib,
            self.write_bytes,
            self.records,
            self.state,
            self.snapshots,
            self.other,
            self.acked
        )
    }

    /// Parses a [`Sample::csv_line`].
    pub fn parse_csv_line(line: &str) -> Option<Sample> {
        let f: Vec<&str> = line.trim().split(',').collect();
        if f.len() != 9 {
            return None;
        }
        let n = |i: usize| f[i].parse::<u64>().ok();
        let t_s: f64 = f[0].parse().ok()?;
        Some(Sample {
            t_ms: (t_s * 1000.0).round() as u64,
            node: f[1].parse().ok()?,
            rss_kib: n(2)?,
            write_bytes: n(3)?,
            records: n(4)?,
            state: n(5)?,
            snapshots: n(6)?,
            other: n(7)?,
            acked: n(8)?,
        })
    }
}

/// Every sample of a `resources.csv` (the header and bad lines skipped).
pub fn parse_csv(text: &str) -> Vec<Sample> {
    text.lines().filter_map(Sample::parse_csv_line).collect()
}

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `write_bytes` from the text of `/proc/<pid>/io`.
pub fn parse_write_bytes(io: &str) -> Option<u64> {
    let line = io.lines().find(|l| l.starts_with("write_bytes:"))?;
    line["write_bytes:".len()..].trim().parse().ok()
}

/// Bytes `path` takes on disk (allocated blocks), recursively. Files that
/// vanish while it counts (a trimmed segment, a replaced snapshot) count
/// as nothing; a missing `path` is 0.
pub fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return own;
    };
    own + entries
        .filter_map(|e| e.ok())
        .map(|e| allocated_bytes(&e.path()))
        .sum::<u64>()
}

/// A data directory's bytes: `(records, state, snapshots, other)`.
pub fn data_dir_bytes(dir: &Path) -> (u64, u64, u64, u64) {
    let records = allocated_bytes(&dir.join("records"));
    let state = allocated_bytes(&dir.join("state"));
    let snapshots = allocated_bytes(&dir.join("snapshots"));
    let all = allocated_bytes(dir);
    let other = all.saturating_sub(records + state + snapshots);
    (records, state, snapshots, other)
}

/// Samples node `node` (process `pid`, data in `data_dir`) now.
pub fn sample_node(
    t_ms: u64,
    node: u32,
    pid: u32,
    data_dir: &Path,
    acked: u64,
) -> io::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let io_text = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("no {what}"));
    let (records, state, snapshots, other) = data_dir_bytes(data_dir);
    Ok(Sample {
        t_ms,
        node,
        rss_kib: parse_vm_rss_kib(&status).ok_or_else(|| bad("VmRSS"))?,
        write_bytes: parse_write_bytes(&io_text).ok_or_else(|| bad("write_bytes"))?,
        records,
        state,
        snapshots,
        other,
        acked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_parsed() {
        let status = "Name:\tkeel\nVmPeak:\t  900000 kB\nVmRSS:\t   71234 kB\nThreads:\t12\n";
        assert_eq!(parse_vm_rss_kib(status), Some(71234));
        assert_eq!(parse_vm_rss_kib("Name: x\n"), None);
        let io = "rchar: 10\nwchar: 20\nread_bytes: 4096\nwrite_bytes: 123456789\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_write_bytes(io), Some(123_456_789));
    }

    #[test]
    fn csv_lines_round_trip() {
        let s = Sample {
            t_ms: 15_250,
            node: 2,
            rss_kib: 70_000,
            write_bytes: 1 << 30,
            records: 5,
            state: 6,
            snapshots: 7,
            other: 8,
            acked: 9_999,
        };
        let text = format!("{CSV_HEADER}\n{}\n{}\n", s.csv_line(), s.csv_line());
        assert_eq!(parse_csv(&text), vec![s.clone(), s.clone()]);
        assert_eq!(s.disk(), 26);
    }

    #[test]
    fn this_process_and_a_directory_can_be_measured() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for sub in ["records", "state/db", "snapshots"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("records/seg"), vec![1u8; 40_000]).unwrap();
        std::fs::write(d.join("state/db/blob"), vec![1u8; 9_000]).unwrap();
        std::fs::write(d.join("IDENTITY"), b"n1").unwrap();
        let me = std::process::id();
        let s = sample_node(1, 1, me, d, 7).unwrap();
        assert!(s.rss_kib > 0);
        assert!(s.records >= 40_000, "{s:?}");
        assert!(s.state >= 9_000, "{s:?}");
        assert!(s.other > 0, "the identity file and the directories: {s:?}");
        assert_eq!(allocated_bytes(&d.join("gone")), 0);
    }
}
