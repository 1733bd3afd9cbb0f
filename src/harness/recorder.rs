//! Writes `history.jsonl` and `nemesis.jsonl` as events happen, on one
//! monotonic clock.
//!
//! The clock is read under the same lock as the write, so both files are
//! in time order and an event's timestamp is never earlier than one
//! already written. Lines are flushed as they go: a run that dies midway
//! still leaves a readable (if unfinished) history.

use super::history::{JsonLinesWriter, Op};
use super::nemesis::{Fault, NemesisEvent};
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

struct Inner {
    history: JsonLinesWriter<BufWriter<File>>,
    nemesis: JsonLinesWriter<BufWriter<File>>,
    ops: Vec<Op>,
    events: Vec<NemesisEvent>,
    /// First write error; later writes are skipped and the run reports it.
    error: Option<String>,
}

pub struct Recorder {
    start: Instant,
    /// Wall clock at `time_ns` 0, to line the history up with node logs.
    start_unix_ms: u64,
    inner: Mutex<Inner>,
}

impl Recorder {
    pub fn create(dir: &Path) -> io::Result<Recorder> {
        let open = |name: &str| File::create(dir.join(name)).map(BufWriter::new);
        Ok(Recorder {
            start: Instant::now(),
            start_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            inner: Mutex::new(Inner {
                history: JsonLinesWriter::new(open("history.jsonl")?),
                nemesis: JsonLinesWriter::new(open("nemesis.jsonl")?),
                ops: Vec::new(),
                events: Vec::new(),
                error: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unix time in ms when `time_ns` was 0.
    pub fn start_unix_ms(&self) -> u64 {
        self.start_unix_ms
    }

    /// Nanoseconds since the recorder was created.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Appends `op` stamped now (its own `time_ns` is replaced); returns
    /// the stamp.
    pub fn op(&self, mut op: Op) -> u64 {
        let mut inner = self.lock();
        let time_ns = self.now_ns();
        op.time_ns = time_ns;
        if inner.error.is_none() {
            let r = inner
                .history
                .append(&op)
                .and_then(|_| inner.history.flush());
            if let Err(e) = r {
                inner.error = Some(format!("writing history.jsonl: {e}"));
            }
        }
        inner.ops.push(op);
        time_ns
    }

    /// Appends one nemesis event stamped now. Call it after the fault was
    /// injected (or undone), never before.
    pub fn event(&self, fault: Fault, nemesis: &str) -> u64 {
        let mut inner = self.lock();
        let time_ns = self.now_ns();
        let event = NemesisEvent {
            fault,
            nemesis: Some(nemesis.to_string()),
            time_ns,
        };
        if inner.error.is_none() {
            let r = inner
                .nemesis
                .append(&event)
                .and_then(|_| inner.nemesis.flush());
            if let Err(e) = r {
                inner.error = Some(format!("writing nemesis.jsonl: {e}"));
            }
        }
        inner.events.push(event);
        time_ns
    }

    /// Everything recorded so far, and the first write error if any.
    pub fn snapshot(&self) -> (Vec<Op>, Vec<NemesisEvent>, Option<String>) {
        let mut inner = self.lock();
        let _ = inner.history.flush();
        let _ = inner.nemesis.flush();
        (inner.ops.clone(), inner.events.clone(), inner.error.clone())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let mut inner = self.lock();
        let _ = inner.history.flush();
        let _ = inner.nemesis.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::history::{read_history, read_jsonl, OpType, F};
    use crate::types::NodeId;

    #[test]
    fn lines_are_written_in_clock_order_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::create(dir.path()).unwrap();
        let line = |kind| Op {
            process: 1,
            kind,
            f: F::Add,
            key: "s".into(),
            value: 5.into(),
            node: NodeId(2),
            time_ns: 0,
            error: None,
        };
        let t1 = rec.op(line(OpType::Invoke));
        let t2 = rec.event(Fault::Kill { node: NodeId(3) }, "kill");
        let t3 = rec.op(line(OpType::Ok));
        assert!(t1 <= t2 && t2 <= t3);
        let (ops, events, err) = rec.snapshot();
        assert_eq!(err, None);
        assert_eq!(ops.len(), 2);
        let file = std::fs::read(dir.path().join("history.jsonl")).unwrap();
        assert_eq!(read_history(file.as_slice()).unwrap(), ops);
        let file = std::fs::read(dir.path().join("nemesis.jsonl")).unwrap();
        let back: Vec<NemesisEvent> = read_jsonl(file.as_slice()).unwrap();
        assert_eq!(back, events);
        assert_eq!(back[0].nemesis.as_deref(), Some("kill"));
    }
}
