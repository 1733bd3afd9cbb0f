//! The README's first command: `keel local` starts three node processes,
//! waits until every partition has a leader, prints how to call them, stops
//! them all on Ctrl-C, and finds its state again when run a second time.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const READY_WITHIN: Duration = Duration::from_secs(60);
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// A running `keel local`; on drop (a failed test) it is stopped like a user
/// would, then killed.
struct Local {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Local {
    fn start(dir: &Path, base: u16) -> Local {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["local", "--dir", dir.to_str().unwrap(), "--base-port"])
            .arg(base.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting keel local");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Local {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads its output until a line contains `needle`; everything read so
    /// far is kept in `seen`.
    fn wait_for_line(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(e) => panic!(
                    "no line with {needle:?} within {within:?} ({e}); output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args([sig, &pid]).status();
    }

    /// Ctrl-C, then waits for a clean exit.
    fn interrupt(&mut self) {
        self.signal("-INT");
        let deadline = Instant::now() + STOP_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "keel local exited with {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "keel local still running {STOP_WITHIN:?} after Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_for_line("stopped; state kept in", Duration::from_secs(5));
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal("-TERM");
            let deadline = Instant::now() + STOP_WITHIN;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn call(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let req = ureq::request(method, url).timeout(Duration::from_secs(10));
    let res = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    match res {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

#[test]
fn keel_local_starts_serves_stops_and_keeps_its_state() {
    let dir = tempfile::tempdir().unwrap();
    // Below 32768, where the ephemeral range begins.
    let slot = (std::process::id() % 50) as u16;
    let base = keel::config::free_base_port(3, (0..40u16).map(|n| 10_000 + slot * 400 + n * 10))
        .expect("a free port range");
    let urls: Vec<String> = (1..=3)
        .map(|i| format!("http://127.0.0.1:{}", base + 100 + i))
        .collect();

    let mut local = Local::start(dir.path(), base);
    local.wait_for_line("Ctrl-C stops all 3 nodes.", READY_WITHIN);
    let out = local.seen.join("\n");
    for url in &urls {
        assert!(
            out.contains(url.as_str()),
            "ingress {url} not printed:\n{out}"
        );
    }
    assert!(out.contains("curl -s -X POST"), "no curl example:\n{out}");
    assert!(
        out.contains("P-ID") && out.contains("LEADER"),
        "no status table:\n{out}"
    );
    for i in 1..=3 {
        // `keel init`'s layout: one directory per node, its data stamped.
        let node = dir.path().join(format!("n{i}"));
        assert!(node.join(format!("n{i}.toml")).exists());
        assert!(node.join("data/IDENTITY").exists());
    }

    // Every node accepts any request.
    assert_eq!(
        call(
            "POST",
            &format!("{}/Counter/visits/add", urls[1]),
            Some("1")
        ),
        (200, "1".to_string())
    );
    assert_eq!(
        call(
            "POST",
            &format!("{}/Counter/visits/add", urls[2]),
            Some("2")
        ),
        (200, "3".to_string())
    );
    local.interrupt();
    // Ctrl-C stopped every node: their ports are free again.
    assert_eq!(keel::config::free_base_port(3, [base]), Some(base));
    drop(local);

    // Again, on the same folder: the state is still there.
    let mut local = Local::start(dir.path(), base);
    local.wait_for_line("Ctrl-C stops all 3 nodes.", READY_WITHIN);
    assert_eq!(
        call("GET", &format!("{}/Counter/visits/get", urls[0]), None),
        (200, "3".to_string())
    );
    local.interrupt();
}
