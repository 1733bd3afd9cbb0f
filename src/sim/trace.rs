//! The event trace of a run: every event the world handles, as a compact
//! entry (time, node, kind, one number), hashed as it goes so two runs can
//! be compared cheaply, and kept in full or as the last entries only (what
//! a failing seed prints).

use std::collections::VecDeque;
use std::fmt;

/// One handled event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Virtual time since the start, in microseconds.
    pub at_us: u64,
    /// The node it happened on (0: the world or a client).
    pub node: u32,
    /// What happened.
    pub what: &'static str,
    /// A number that tells events of one kind apart (a call id, a loglet).
    pub detail: u64,
    /// A readable description, kept only in full traces.
    pub text: Option<String>,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>10.3} ms  n{}  {:<14} {}",
            self.at_us as f64 / 1000.0,
            self.node,
            self.what,
            self.detail
        )?;
        if let Some(text) = &self.text {
            write!(f, "  {text}")?;
        }
        Ok(())
    }
}

/// The trace of one run.
#[derive(Clone, Debug)]
pub struct Trace {
    /// Keep every entry (and texts) instead of the last [`Trace::KEEP`].
    full: bool,
    /// The entries kept.
    entries: VecDeque<Entry>,
    /// FNV-1a over every entry recorded (texts excluded).
    hash: u64,
    /// Entries recorded.
    count: u64,
}

impl Trace {
    /// Entries a short trace keeps.
    pub const KEEP: usize = 400;

    pub fn new(full: bool) -> Self {
        Trace {
            full,
            entries: VecDeque::new(),
            hash: crate::types::FNV1A_START,
            count: 0,
        }
    }

    /// Whether texts are wanted (callers skip formatting them otherwise).
    pub fn is_full(&self) -> bool {
        self.full
    }

    pub fn record(&mut self, at_us: u64, node: u32, what: &'static str, detail: u64) {
        self.record_text(at_us, node, what, detail, None);
    }

    pub fn record_text(
        &mut self,
        at_us: u64,
        node: u32,
        what: &'static str,
        detail: u64,
        text: Option<String>,
    ) {
        let bytes = at_us
            .to_le_bytes()
            .into_iter()
            .chain(node.to_le_bytes())
            .chain(what.bytes())
            .chain(detail.to_le_bytes());
        self.hash = crate::types::fnv1a(self.hash, bytes);
        self.count += 1;
        if !self.full && self.entries.len() == Self::KEEP {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            at_us,
            node,
            what,
            detail,
            text: if self.full { text } else { None },
        });
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// The entries kept, one per line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            out.push_str(&e.to_string());
            out.push('\n');
        }
        out
    }
}
