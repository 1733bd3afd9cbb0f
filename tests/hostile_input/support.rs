//! What every target shares: a seeded generator, byte mutations, case
//! counts, the corpus of inputs that once failed, failure reports that say
//! how to reproduce, and a bound on allocations.
//!
//! Reproducing a failure: each case is generated from `(seed, target, case)`
//! alone, so `KEEL_FUZZ_SEED=<seed> KEEL_FUZZ_CASE=<case>` replays exactly
//! the failing case; the failing input is also written to
//! `target/hostile-input/<target>/` as a corpus file (see
//! `docs/HOSTILE_INPUT.md`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

/// A small, portable, seedable generator (xoshiro256**, seeded through
/// splitmix64): the same seed gives the same cases on every build and
/// platform, whatever `rand` does across versions.
#[derive(Clone)]
pub struct Gen {
    s: [u64; 4],
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of a target name (FNV-1a).
fn name_hash(name: &str) -> u64 {
    keel::types::fnv1a(keel::types::FNV1A_START, name.bytes())
}

impl Gen {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        Gen {
            s: [
                splitmix(&mut x),
                splitmix(&mut x),
                splitmix(&mut x),
                splitmix(&mut x),
            ],
        }
    }

    /// The generator of one case of one target.
    pub fn for_case(seed: u64, target: &str, case: u64) -> Self {
        Gen::new(seed ^ name_hash(target) ^ case.wrapping_mul(0xd6e8_feb8_6659_fd93))
    }

    pub fn u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, n)`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        ((self.u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        match (hi - lo).checked_add(1) {
            Some(n) => lo + self.below(n),
            None => self.u64(),
        }
    }

    pub fn usize(&mut self, lo: usize, hi: usize) -> usize {
        self.range(lo as u64, hi as u64) as usize
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    pub fn bool(&mut self) -> bool {
        self.u64() & 1 == 1
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.u64() as u8).collect()
    }

    /// An offset, LSN, epoch or count where bugs live: 0, small, around
    /// powers of two, next to `u64::MAX`, or anything.
    pub fn edgy_u64(&mut self) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => self.range(1, 16),
            2 => u64::MAX - self.range(0, 16),
            3 => 1u64 << self.below(64),
            4 => (1u64 << self.below(64)).wrapping_sub(1),
            5 => u32::MAX as u64 + self.range(0, 2) - 1,
            6 => self.range(0, 1 << 20),
            _ => self.u64(),
        }
    }

    /// A string that stresses decoders and key handling: empty, huge,
    /// control characters, multi-byte characters, path-like.
    pub fn edgy_string(&mut self, max_len: usize) -> String {
        let pieces = [
            "", "a", "/", "\0", "\n", "%ff", "é", "😀", "\u{fffd}", "\u{202e}", "..", "chain/",
            "leader/", " ", "\u{7f}",
        ];
        match self.below(6) {
            0 => String::new(),
            1 => "x".repeat(self.usize(0, max_len)),
            2 => {
                let n = self.usize(0, 12);
                (0..n).map(|_| *self.pick(&pieces)).collect()
            }
            3 => {
                let n = self.usize(0, 24);
                (0..n)
                    .map(|_| char::from_u32(self.range(0, 0x10ffff) as u32).unwrap_or('?'))
                    .collect()
            }
            _ => {
                let n = self.usize(0, 16);
                (0..n)
                    .map(|_| (b'a' + self.below(26) as u8) as char)
                    .collect()
            }
        }
    }
}

/// How many cases a target runs: `KEEL_FUZZ_CASES` overrides the default
/// (for every target; `KEEL_FUZZ_CASE` runs one case only).
pub fn case_range(default: u64) -> std::ops::Range<u64> {
    if let Some(one) = env_u64("KEEL_FUZZ_CASE") {
        return one..one + 1;
    }
    0..env_u64("KEEL_FUZZ_CASES").unwrap_or(default)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Whether to print every input and answer (`KEEL_FUZZ_VERBOSE=1`), for a
/// reproduced case.
pub fn verbose() -> bool {
    std::env::var_os("KEEL_FUZZ_VERBOSE").is_some()
}

/// The seed of this run: `KEEL_FUZZ_SEED`, or a fresh one (printed).
pub fn seed() -> u64 {
    env_u64("KEEL_FUZZ_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ ((std::process::id() as u64) << 32)
    })
}

/// Bounds the run time of a target: checked between cases, so a target
/// that gets slow fails loudly instead of eating the suite's budget.
pub struct Budget {
    target: &'static str,
    started: Instant,
    /// Longest the target may run.
    limit: Duration,
}

impl Budget {
    pub fn new(target: &'static str, limit: Duration) -> Self {
        Budget {
            target,
            started: Instant::now(),
            limit,
        }
    }

    pub fn check(&self, case: u64) {
        let spent = self.started.elapsed();
        assert!(
            spent <= self.limit,
            "{}: {case} cases took {spent:?}, over the budget of {:?} (a hang, or a slow machine: lower KEEL_FUZZ_CASES)",
            self.target,
            self.limit
        );
    }

    pub fn report(&self, cases: u64, corpus: usize) {
        eprintln!(
            "hostile-input {}: {cases} generated cases and {corpus} corpus inputs in {:.1?}",
            self.target,
            self.started.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------
// Mutations

/// Values that make length prefixes, markers and counters interesting.
const INTERESTING_U8: [u8; 16] = [
    0x00, 0x01, 0x7f, 0x80, 0xff, 0xc0, 0xc1, 0xc4, 0xc6, 0xcf, 0xd3, 0xdb, 0xdc, 0xdd, 0xde, 0xdf,
];

/// One to four random edits: bit flips, interesting bytes, big-endian
/// integers overwritten with extremes, insertions, deletions, truncation,
/// duplicated chunks.
pub fn mutate(g: &mut Gen, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let edits = g.range(1, 4);
    for _ in 0..edits {
        let len = out.len();
        match g.below(9) {
            0 if len > 0 => {
                let i = g.below(len as u64) as usize;
                out[i] ^= 1 << g.below(8);
            }
            1 if len > 0 => {
                let i = g.below(len as u64) as usize;
                out[i] = *g.pick(&INTERESTING_U8);
            }
            2 if len >= 4 => {
                let i = g.below(len as u64 - 3) as usize;
                let v: u32 = *g.pick(&[0, 1, u32::MAX, u32::MAX - 1, 1 << 31, 0xffff, 0x10000]);
                out[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            3 if len >= 8 => {
                let i = g.below(len as u64 - 7) as usize;
                let v: u64 = *g.pick(&[0, u64::MAX, u64::MAX - 1, 1 << 63, u32::MAX as u64]);
                out[i..i + 8].copy_from_slice(&v.to_be_bytes());
            }
            4 => {
                let i = g.below(len as u64 + 1) as usize;
                let n = g.usize(1, 8);
                let ins = g.bytes(n);
                out.splice(i..i, ins);
            }
            5 if len > 0 => {
                let i = g.below(len as u64) as usize;
                let n = g.usize(1, 8).min(len - i);
                out.drain(i..i + n);
            }
            6 if len > 0 => {
                let n = g.below(len as u64) as usize;
                out.truncate(n);
            }
            7 if len > 0 && len < 4096 => {
                let i = g.below(len as u64) as usize;
                let n = g.usize(1, 32).min(len - i);
                let chunk = out[i..i + n].to_vec();
                let at = g.below(out.len() as u64 + 1) as usize;
                out.splice(at..at, chunk);
            }
            _ => {
                if len > 0 {
                    let i = g.below(len as u64) as usize;
                    out[i] = g.u64() as u8;
                } else {
                    out.push(g.u64() as u8);
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Corpus and failure reports

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every input of `tests/corpus/<target>/*.bin`, sorted by name.
pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = manifest_dir().join("tests").join("corpus").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p)
                .unwrap_or_else(|e| panic!("reading corpus file {}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// The input of a case: its bytes, or how to encode it (done only if the
/// case fails, so passing cases pay nothing for it).
pub enum Input {
    /// The encoded input.
    Bytes(Vec<u8>),
    /// How to encode it.
    Lazy(Box<dyn Fn() -> Vec<u8>>),
}

impl Input {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Input::Bytes(b) => b.clone(),
            Input::Lazy(f) => f(),
        }
    }
}

/// What the current thread is working on, for the panic report.
struct Current {
    target: &'static str,
    /// `seed S case C`, or the corpus file.
    label: String,
    input: Input,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs (once) a panic hook that, on a thread working on a case, saves
/// the case's input as a corpus file and says how to reproduce it.
fn install_hook() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let saved = CURRENT
                .try_with(|c| c.borrow_mut().take())
                .ok()
                .flatten()
                .map(|cur| {
                    let input = cur.input.bytes();
                    (save_failure(cur.target, &cur.label, &input), input.len(), cur)
                });
            if let Some((path, len, cur)) = saved {
                eprintln!(
                    "\nhostile-input {} failed on {}\n  input ({} bytes) saved to {}\n  reproduce: {}\n  keep it: copy the file to tests/corpus/{}/ (see docs/HOSTILE_INPUT.md)\n",
                    cur.target,
                    cur.label,
                    len,
                    path.display(),
                    reproduce_hint(&cur.label),
                    cur.target
                );
            }
            default(info);
        }));
    });
}

fn reproduce_hint(label: &str) -> String {
    match label
        .strip_prefix("seed ")
        .and_then(|l| l.split_once(" case "))
    {
        Some((seed, case)) => {
            format!("KEEL_FUZZ_SEED={seed} KEEL_FUZZ_CASE={case} cargo test --test hostile_input")
        }
        None => format!("cargo test --test hostile_input (it replays {label} on every run)"),
    }
}

fn save_failure(target: &str, label: &str, input: &[u8]) -> PathBuf {
    let dir = manifest_dir()
        .join("target")
        .join("hostile-input")
        .join(target);
    let name: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let path = dir.join(format!("{name}.bin"));
    let _ = std::fs::create_dir_all(&dir);
    if let Err(e) = std::fs::write(&path, input) {
        eprintln!(
            "could not save the failing input to {}: {e}",
            path.display()
        );
    }
    path
}

/// Marks the input the current thread works on until the guard drops; a
/// panic meanwhile saves it (see [`install_hook`]).
pub struct CaseGuard;

impl CaseGuard {
    pub fn new(target: &'static str, label: String, input: Vec<u8>) -> Self {
        Self::with(target, label, Input::Bytes(input))
    }

    /// Like [`new`](Self::new), encoding the input only if the case fails.
    pub fn lazy(
        target: &'static str,
        label: String,
        encode: impl Fn() -> Vec<u8> + 'static,
    ) -> Self {
        Self::with(target, label, Input::Lazy(Box::new(encode)))
    }

    fn with(target: &'static str, label: String, input: Input) -> Self {
        install_hook();
        CURRENT.with(|c| {
            *c.borrow_mut() = Some(Current {
                target,
                label,
                input,
            })
        });
        CaseGuard
    }
}

impl Drop for CaseGuard {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|c| c.borrow_mut().take());
    }
}

pub fn case_label(seed: u64, case: u64) -> String {
    format!("seed {seed} case {case}")
}

pub fn corpus_label(path: &Path) -> String {
    format!(
        "corpus file {}",
        path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        )
    )
}

// ---------------------------------------------------------------------------
// Allocation bound

/// The system allocator, watching the sizes asked for on threads that
/// opted in (see [`measure_allocations`]).
pub struct Tracking;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACK.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
            let _ = TOTAL.try_with(|s| s.set(s.get().saturating_add(size)));
        }
    });
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// What [`measure_allocations`] saw.
#[derive(Clone, Copy, Debug)]
pub struct Allocations {
    /// The largest single allocation (or reallocation) asked for.
    pub largest: usize,
    /// The sum of every allocation's size.
    pub total: usize,
}

/// Runs `f` and reports the allocations this thread asked for meanwhile.
pub fn measure_allocations<R>(f: impl FnOnce() -> R) -> (R, Allocations) {
    LARGEST.with(|l| l.set(0));
    TOTAL.with(|s| s.set(0));
    TRACK.with(|t| t.set(true));
    let r = f();
    TRACK.with(|t| t.set(false));
    let seen = Allocations {
        largest: LARGEST.with(|l| l.get()),
        total: TOTAL.with(|s| s.get()),
    };
    (r, seen)
}

/// A directory on tmpfs when there is one (100k syncs must be cheap).
pub fn fast_tempdir(prefix: &str) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix(prefix);
        b
    };
    if shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return dir;
        }
    }
    builder.tempdir().expect("creating a temporary directory")
}

/// The demo's object types, which the generated records and requests call.
pub static DEMO: std::sync::LazyLock<keel::objects::Objects> =
    std::sync::LazyLock::new(keel::objects::demo::objects);

/// A demo object type and one of its handlers.
pub fn demo_handler(g: &mut Gen) -> (&'static str, &'static str) {
    let object = *g.pick(&["Counter", "Set", "Register", "Account"]);
    let handlers: Vec<&'static str> = DEMO
        .get(object)
        .expect("a demo type")
        .handler_names()
        .collect();
    (object, *g.pick(&handlers))
}
