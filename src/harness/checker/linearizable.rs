//! A generic linearizability search: Wing & Gong's algorithm with Lowe's
//! "just-in-time linearization" and memoization (the same search as
//! porcupine's, and knossos' `wgl`).
//!
//! Operations are call and return events on a doubly linked list sorted by
//! time. From the head, the search tries to *linearize* (apply to the model
//! and lift out of the list) each call that precedes the first return; when
//! it meets a return whose call it has not linearized, that operation's
//! deadline has passed, so it backtracks. A memo of (linearized set, model
//! state) prunes every configuration already explored, which is what makes
//! the search practical: the linearized set is a bitset with an incremental
//! Zobrist hash, so a memo lookup costs O(1) unless hashes collide.
//!
//! Unknown outcomes (`info`, or no completion) have no return event: they
//! may be linearized at any point after their call, or never. `fail`ed
//! operations must be dropped by the caller (they did not happen).
//!
//! One reduction on top: a read-only call ([`Model::is_read_only`]) that
//! fits the current state is linearized at once, with no alternatives
//! tried at that point. Without it, k concurrent reads of the same value
//! give 2^k configurations that differ only in which reads are placed.
//!
//! The search is bounded by a [`Budget`]; when it runs out the answer is
//! [`Verdict::Unknown`], which is neither valid nor invalid.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::{Duration, Instant};

/// A sequential specification: a deterministic state machine.
pub trait Model: Clone + Eq + Hash {
    /// What an operation asks (Jepsen's `f` and invocation value).
    type Input;
    /// What it returned (the completion value).
    type Output;

    /// The state after applying `input` to `self`, if that is allowed to
    /// produce `output`; `None` if this operation cannot happen here.
    /// `output` is `None` when the outcome is unknown: any output is fine.
    fn step(&self, input: &Self::Input, output: Option<&Self::Output>) -> Option<Self>;

    /// True if `input` never changes any state (a pure observation, like a
    /// read): `step` returns either `None` or the state unchanged. The
    /// search then linearizes such a call as soon as it fits, without
    /// trying alternatives (moving a pure observation earlier, to a point
    /// where it fits and that respects real time, keeps any linearization
    /// valid), and ignores those with unknown outcome.
    fn is_read_only(_input: &Self::Input) -> bool {
        false
    }
}

/// One operation of a single object's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<I, O> {
    pub input: I,
    pub invoke_ns: u64,
    /// `Some((complete_ns, output))` when the operation completed `ok`;
    /// `None` when its outcome is unknown (it may take effect at any time
    /// after `invoke_ns`, or never).
    pub completion: Option<(u64, O)>,
}

/// Bounds on one search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Search steps (one per list entry visited).
    pub max_steps: u64,
    pub max_time: Duration,
    /// Approximate bytes held by the memo (about 100 per configuration).
    pub max_memo_bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_steps: 200_000_000,
            max_time: Duration::from_secs(10),
            max_memo_bytes: 512 << 20,
        }
    }
}

/// Which bound ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhausted {
    Steps,
    Time,
    Memory,
}

/// Where the search got furthest before giving up on every branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck<M> {
    /// Index (into the entries) of the operation that could not be
    /// linearized before it returned, at the furthest point reached.
    pub entry: usize,
    /// The most operations linearized in any branch.
    pub max_linearized: usize,
    /// Model states the search held when it met that return (at most 8).
    pub states: Vec<M>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<M> {
    Linearizable,
    NotLinearizable(Stuck<M>),
    /// The budget ran out: neither valid nor invalid.
    Unknown(Exhausted),
}

/// A verdict and what it cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Search<M> {
    pub verdict: Verdict<M>,
    pub steps: u64,
    pub elapsed: Duration,
    pub memo_entries: usize,
}

/// Looks for a linearization of `entries` starting from `init`.
pub fn check<M: Model>(
    init: &M,
    entries: &[Entry<M::Input, M::Output>],
    budget: &Budget,
) -> Search<M> {
    let started = Instant::now();
    let words = entries.len().div_ceil(64).max(1);
    let mut s = Searcher {
        entries,
        list: EventList::new(entries),
        state: init.clone(),
        stack: Vec::new(),
        linearized: vec![0u64; words],
        zobrist: 0,
        memo: Memo::default(),
        remaining: entries.iter().filter(|e| e.completion.is_some()).count(),
        max_depth: 0,
    };
    let mut stuck: Option<Stuck<M>> = None;
    let mut stuck_rank = 0usize;
    let mut steps: u64 = 0;

    let finish = |verdict, steps, memo: &Memo<M>| Search {
        verdict,
        steps,
        elapsed: started.elapsed(),
        memo_entries: memo.len,
    };
    let not_linearizable = |stuck: Option<Stuck<M>>, s: &Searcher<M>, steps| {
        let mut stuck = stuck.unwrap_or(Stuck {
            entry: 0,
            max_linearized: 0,
            states: vec![s.state.clone()],
        });
        stuck.max_linearized = s.max_depth;
        finish(Verdict::NotLinearizable(stuck), steps, &s.memo)
    };

    // `fresh`: the search just reached a new configuration.
    let mut fresh = true;
    let mut node = s.list.first();
    loop {
        steps += 1;
        if steps > budget.max_steps {
            return finish(Verdict::Unknown(Exhausted::Steps), steps, &s.memo);
        }
        if steps & 0xfff == 0 && started.elapsed() > budget.max_time {
            return finish(Verdict::Unknown(Exhausted::Time), steps, &s.memo);
        }
        if s.memo.bytes > budget.max_memo_bytes {
            return finish(Verdict::Unknown(Exhausted::Memory), steps, &s.memo);
        }
        if s.remaining == 0 {
            // Every completed operation is placed; unknown ones left over
            // simply never took effect.
            return finish(Verdict::Linearizable, steps, &s.memo);
        }
        if fresh {
            fresh = false;
            // A pure observation that fits the current state goes first and
            // alone: if no linearization starts with it, none exists here.
            if let Some(op) = s.fitting_observation(&mut steps) {
                if s.linearize(op, true) {
                    fresh = true;
                    continue;
                }
                // Explored before, so this configuration is dead.
                match s.backtrack() {
                    Some(next) => node = next,
                    None => return not_linearizable(stuck, &s, steps),
                }
                continue;
            }
            node = s.list.first();
        }
        if node != s.list.tail && s.list.is_call(node) {
            let op = node / 2;
            // Pure observations were tried above and did not fit.
            if !M::is_read_only(&entries[op].input) && s.linearize(op, false) {
                fresh = true;
                continue;
            }
            node = s.list.next(node);
            continue;
        }
        // A return whose call is still in the list (or, defensively, the
        // end of the list): this branch is dead.
        if node != s.list.tail {
            let rank = s.list.rank[node];
            if stuck.is_none() || rank > stuck_rank {
                stuck_rank = rank;
                stuck = Some(Stuck {
                    entry: node / 2,
                    max_linearized: 0,
                    states: vec![s.state.clone()],
                });
            } else if rank == stuck_rank {
                if let Some(st) = stuck.as_mut() {
                    if st.states.len() < 8 && !st.states.contains(&s.state) {
                        st.states.push(s.state.clone());
                    }
                }
            }
        }
        match s.backtrack() {
            Some(next) => node = next,
            None => return not_linearizable(stuck, &s, steps),
        }
    }
}

/// One linearized operation on the search path.
struct Frame<M> {
    op: usize,
    previous: M,
    /// Linearized without alternatives (a fitting pure observation).
    forced: bool,
}

/// The search's mutable state.
struct Searcher<'a, M: Model> {
    entries: &'a [Entry<M::Input, M::Output>],
    list: EventList,
    state: M,
    stack: Vec<Frame<M>>,
    linearized: Vec<u64>,
    zobrist: u64,
    memo: Memo<M>,
    /// Completed operations not yet linearized.
    remaining: usize,
    max_depth: usize,
}

impl<M: Model> Searcher<'_, M> {
    /// Linearizes `op` now if the model allows it and the resulting
    /// configuration is new; false otherwise.
    fn linearize(&mut self, op: usize, forced: bool) -> bool {
        let entry = &self.entries[op];
        let output = entry.completion.as_ref().map(|c| &c.1);
        let Some(next) = self.state.step(&entry.input, output) else {
            return false;
        };
        flip(&mut self.linearized, op);
        self.zobrist ^= zobrist_key(op);
        if !self.memo.insert(self.zobrist, &self.linearized, &next) {
            flip(&mut self.linearized, op);
            self.zobrist ^= zobrist_key(op);
            return false;
        }
        let previous = std::mem::replace(&mut self.state, next);
        self.stack.push(Frame {
            op,
            previous,
            forced,
        });
        self.max_depth = self.max_depth.max(self.stack.len());
        self.list.lift(op);
        if entry.completion.is_some() {
            self.remaining -= 1;
        }
        true
    }

    /// Undoes linearizations up to the latest one with alternatives left;
    /// returns the node after it, where the scan resumes. `None` when the
    /// path is empty: no linearization exists.
    fn backtrack(&mut self) -> Option<usize> {
        while let Some(frame) = self.stack.pop() {
            self.state = frame.previous;
            flip(&mut self.linearized, frame.op);
            self.zobrist ^= zobrist_key(frame.op);
            self.list.unlift(frame.op);
            if self.entries[frame.op].completion.is_some() {
                self.remaining += 1;
            }
            if !frame.forced {
                return Some(self.list.next(2 * frame.op));
            }
        }
        None
    }

    /// A completed, read-only call that may be linearized now and fits the
    /// current state.
    fn fitting_observation(&self, steps: &mut u64) -> Option<usize> {
        let mut node = self.list.first();
        while node != self.list.tail && self.list.is_call(node) {
            *steps += 1;
            let entry = &self.entries[node / 2];
            if let (true, Some((_, output))) = (M::is_read_only(&entry.input), &entry.completion) {
                if self.state.step(&entry.input, Some(output)).is_some() {
                    return Some(node / 2);
                }
            }
            node = self.list.next(node);
        }
        None
    }
}

/// Call and return events in time order, as a doubly linked list over
/// arrays. Operation `i` has call node `2i` and return node `2i + 1`.
struct EventList {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Position in time order, to find the furthest point reached.
    rank: Vec<usize>,
    has_return: Vec<bool>,
    head: usize,
    tail: usize,
}

impl EventList {
    fn new<I, O>(entries: &[Entry<I, O>]) -> Self {
        let n = entries.len();
        let (head, tail) = (2 * n, 2 * n + 1);
        // (time, returns after calls at the same instant, node): equal
        // timestamps count as concurrent, never as ordered.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
        let mut has_return = vec![false; n];
        for (i, e) in entries.iter().enumerate() {
            events.push((e.invoke_ns, 0, 2 * i));
            if let Some((complete_ns, _)) = &e.completion {
                events.push(((*complete_ns).max(e.invoke_ns), 1, 2 * i + 1));
                has_return[i] = true;
            }
        }
        events.sort_unstable();
        let mut next = vec![usize::MAX; 2 * n + 2];
        let mut prev = vec![usize::MAX; 2 * n + 2];
        let mut rank = vec![usize::MAX; 2 * n + 2];
        let mut last = head;
        for (r, &(_, _, node)) in events.iter().enumerate() {
            next[last] = node;
            prev[node] = last;
            rank[node] = r;
            last = node;
        }
        next[last] = tail;
        prev[tail] = last;
        EventList {
            next,
            prev,
            rank,
            has_return,
            head,
            tail,
        }
    }

    fn first(&self) -> usize {
        self.next[self.head]
    }

    fn next(&self, node: usize) -> usize {
        self.next[node]
    }

    fn is_call(&self, node: usize) -> bool {
        node % 2 == 0
    }

    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        self.prev[n] = x;
    }

    /// Removes operation `op`'s call and return (dancing links: the removed
    /// nodes keep their pointers so [`Self::unlift`] can restore them).
    fn lift(&mut self, op: usize) {
        self.unlink(2 * op);
        if self.has_return[op] {
            self.unlink(2 * op + 1);
        }
    }

    /// Undoes [`Self::lift`], in reverse order.
    fn unlift(&mut self, op: usize) {
        if self.has_return[op] {
            self.relink(2 * op + 1);
        }
        self.relink(2 * op);
    }
}

fn flip(bits: &mut [u64], i: usize) {
    bits[i / 64] ^= 1 << (i % 64);
}

/// A fixed pseudo-random key per operation (splitmix64), so the hash of a
/// set is the XOR of its members' keys and updates in O(1).
fn zobrist_key(i: usize) -> u64 {
    let mut z = (i as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Explored (linearized set, state) pairs, keyed by a 64-bit hash with
/// exact comparison on collision.
///
/// Sets are stored compactly: the linearized set of any configuration is
/// nearly everything before a moving frontier and nearly nothing after it,
/// so the words that are all ones before it and all zeros after it are
/// left out. A configuration then costs about 100 bytes, not n/8.
struct Memo<M> {
    slots: HashMap<u64, Slot<M>, BuildHasherDefault<PassThrough>>,
    len: usize,
    bytes: usize,
}

/// One configuration: the set as words `lo..lo + words.len()` (all
/// others are all ones below, all zeros above) and the state.
struct Stored<M> {
    lo: u32,
    words: Box<[u64]>,
    state: M,
}

/// Almost always one configuration per hash; more on collisions.
enum Slot<M> {
    One(Stored<M>),
    Many(Vec<Stored<M>>),
}

impl<M> Default for Memo<M> {
    fn default() -> Self {
        Memo {
            slots: HashMap::default(),
            len: 0,
            bytes: 0,
        }
    }
}

impl<M: Eq + Hash + Clone> Memo<M> {
    /// Inserts; false if already present.
    fn insert(&mut self, set_hash: u64, set: &[u64], state: &M) -> bool {
        let mut h = Fx::default();
        state.hash(&mut h);
        let key = set_hash ^ h.finish();
        let lo = set.iter().take_while(|&&w| w == u64::MAX).count();
        let hi = set.len() - set[lo..].iter().rev().take_while(|&&w| w == 0).count();
        let words = &set[lo..hi];
        let same = |s: &Stored<M>| s.lo as usize == lo && &*s.words == words && s.state == *state;
        let stored = || Stored {
            lo: lo as u32,
            words: words.into(),
            state: state.clone(),
        };
        match self.slots.get_mut(&key) {
            Some(Slot::One(s)) if same(s) => return false,
            Some(Slot::Many(v)) if v.iter().any(same) => return false,
            Some(slot @ Slot::One(_)) => {
                let Slot::One(first) = std::mem::replace(slot, Slot::Many(Vec::new())) else {
                    unreachable!("matched One above")
                };
                *slot = Slot::Many(vec![first, stored()]);
            }
            Some(Slot::Many(v)) => v.push(stored()),
            None => {
                self.slots.insert(key, Slot::One(stored()));
            }
        }
        self.len += 1;
        // Table slot (at hashbrown's 7/8 load), boxed words and their
        // allocation header.
        self.bytes += std::mem::size_of::<(u64, Slot<M>)>() * 8 / 7 + words.len() * 8 + 16;
        true
    }
}

/// The memo's keys are already well mixed.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A small, fast hasher for model states (FxHash's mixing step).
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        // Final avalanche so small states spread over the whole word.
        let mut z = self.0;
        z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        z ^ (z >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_i64(&mut self, n: i64) {
        self.add(n as u64);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

impl Fx {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::checker::register::{Register, RegisterOp};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    type E = Entry<RegisterOp, Option<i64>>;

    fn ok(input: RegisterOp, out: Option<i64>, start: u64, end: u64) -> E {
        Entry {
            input,
            invoke_ns: start,
            completion: Some((end, out)),
        }
    }

    fn unknown(input: RegisterOp, start: u64) -> E {
        Entry {
            input,
            invoke_ns: start,
            completion: None,
        }
    }

    fn w(v: i64) -> RegisterOp {
        RegisterOp::Write(v)
    }

    const R: RegisterOp = RegisterOp::Read;

    fn verdict(entries: &[E]) -> Verdict<Register> {
        check(&Register(None), entries, &Budget::default()).verdict
    }

    #[test]
    fn empty_and_sequential_histories_are_linearizable() {
        assert_eq!(verdict(&[]), Verdict::Linearizable);
        let h = [
            ok(R, None, 0, 1),
            ok(w(1), None, 2, 3),
            ok(R, Some(1), 4, 5),
            ok(
                RegisterOp::Cas {
                    expect: Some(1),
                    value: 2,
                },
                None,
                6,
                7,
            ),
            ok(R, Some(2), 8, 9),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_is_not_linearizable_and_is_named() {
        let h = [
            ok(w(1), None, 0, 1),
            ok(w(2), None, 2, 3),
            ok(R, Some(1), 4, 5),
        ];
        match verdict(&h) {
            Verdict::NotLinearizable(stuck) => {
                assert_eq!(stuck.entry, 2);
                assert_eq!(stuck.states, vec![Register(Some(2))]);
                assert_eq!(stuck.max_linearized, 2);
            }
            v => panic!("expected not linearizable, got {v:?}"),
        }
    }

    #[test]
    fn concurrent_writes_may_take_effect_in_either_order() {
        // The search first tries w1 then w2, must backtrack to w2 then w1.
        let h = [
            ok(w(1), None, 0, 10),
            ok(w(2), None, 0, 10),
            ok(R, Some(1), 11, 12),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // But once both are over, reads cannot see them flip.
        let h = [
            ok(w(1), None, 0, 10),
            ok(w(2), None, 0, 10),
            ok(R, Some(1), 11, 12),
            ok(R, Some(2), 13, 14),
        ];
        assert!(matches!(verdict(&h), Verdict::NotLinearizable(s) if s.entry == 3));
    }

    #[test]
    fn equal_timestamps_count_as_concurrent() {
        // The write completes at 5 and the read starts at 5: either order.
        let h = [ok(w(1), None, 0, 5), ok(R, None, 5, 6)];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn an_unknown_write_may_apply_late_or_never() {
        // Took effect after the client gave up.
        let late = [
            unknown(w(1), 0),
            ok(R, None, 10, 11),
            ok(R, Some(1), 20, 21),
        ];
        assert_eq!(verdict(&late), Verdict::Linearizable);
        // Never took effect.
        let never = [unknown(w(1), 0), ok(R, None, 10, 11), ok(R, None, 20, 21)];
        assert_eq!(verdict(&never), Verdict::Linearizable);
        // But not before it was invoked.
        let early = [ok(R, Some(1), 0, 1), unknown(w(1), 5)];
        assert!(matches!(verdict(&early), Verdict::NotLinearizable(_)));
        // And not twice.
        let twice = [
            unknown(w(1), 0),
            ok(R, Some(1), 10, 11),
            ok(w(2), None, 12, 13),
            ok(R, Some(1), 14, 15),
        ];
        assert!(matches!(verdict(&twice), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn a_tiny_budget_gives_unknown_not_a_verdict() {
        let h = [
            ok(w(1), None, 0, 10),
            ok(w(2), None, 0, 10),
            ok(R, Some(1), 11, 12),
        ];
        let budget = Budget {
            max_steps: 2,
            ..Budget::default()
        };
        let s = check(&Register(None), &h, &budget);
        assert_eq!(s.verdict, Verdict::Unknown(Exhausted::Steps));
        let budget = Budget {
            max_memo_bytes: 1,
            ..Budget::default()
        };
        let s = check(&Register(None), &h, &budget);
        assert_eq!(s.verdict, Verdict::Unknown(Exhausted::Memory));
    }

    #[test]
    fn many_concurrent_reads_of_one_value_stay_cheap() {
        // 40 overlapping reads could be placed in 2^40 subsets; fitting
        // reads are placed at once, so refuting the stale read at the end
        // takes a few hundred steps.
        let mut h = vec![ok(w(1), None, 0, 1)];
        h.extend((0..40).map(|i| ok(R, Some(1), 2 + i, 100)));
        h.push(ok(w(2), None, 101, 102));
        h.push(ok(R, Some(1), 103, 104));
        let budget = Budget {
            max_steps: 100_000,
            ..Budget::default()
        };
        let s = check(&Register(None), &h, &budget);
        assert!(
            matches!(s.verdict, Verdict::NotLinearizable(ref st) if st.entry == 42),
            "{:?} after {} steps",
            s.verdict,
            s.steps
        );
        h.pop();
        let s = check(&Register(None), &h, &budget);
        assert_eq!(s.verdict, Verdict::Linearizable);
    }

    /// Exhaustive search over every order that respects real time; unknown
    /// operations may be left out.
    fn brute_force(state: Register, entries: &[E], done: &mut Vec<bool>) -> bool {
        let required_left = entries
            .iter()
            .zip(done.iter())
            .any(|(e, d)| !d && e.completion.is_some());
        if !required_left {
            return true;
        }
        for i in 0..entries.len() {
            if done[i] {
                continue;
            }
            // Every operation that returned before i was invoked goes first.
            let blocked = entries.iter().zip(done.iter()).any(|(e, d)| {
                !d && e
                    .completion
                    .as_ref()
                    .is_some_and(|c| c.0 < entries[i].invoke_ns)
            });
            if blocked {
                continue;
            }
            let out = entries[i].completion.as_ref().map(|c| &c.1);
            if let Some(next) = state.step(&entries[i].input, out) {
                done[i] = true;
                let found = brute_force(next, entries, done);
                done[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }

    fn random_small_history(rng: &mut StdRng) -> Vec<E> {
        let n = rng.gen_range(1..=7);
        let value = |rng: &mut StdRng| {
            if rng.gen_bool(0.2) {
                None
            } else {
                Some(rng.gen_range(1..=3))
            }
        };
        (0..n)
            .map(|_| {
                let start = rng.gen_range(0..20u64);
                let input = match rng.gen_range(0..3) {
                    0 => R,
                    1 => w(rng.gen_range(1..=3)),
                    _ => RegisterOp::Cas {
                        expect: value(rng),
                        value: rng.gen_range(1..=3),
                    },
                };
                if rng.gen_bool(0.2) {
                    unknown(input, start)
                } else {
                    let out = if input == R { value(rng) } else { None };
                    ok(input, out, start, start + rng.gen_range(0..10))
                }
            })
            .collect()
    }

    #[test]
    fn agrees_with_exhaustive_search_on_random_small_histories() {
        let mut rng = StdRng::seed_from_u64(7);
        let (mut valid, mut invalid) = (0, 0);
        for case in 0..4000 {
            let h = random_small_history(&mut rng);
            let expected = brute_force(Register(None), &h, &mut vec![false; h.len()]);
            let got = verdict(&h);
            assert_eq!(
                got == Verdict::Linearizable,
                expected,
                "case {case}: {h:?} -> {got:?}"
            );
            if expected {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        // Both answers were exercised plenty.
        assert!(
            valid > 500 && invalid > 500,
            "{valid} valid, {invalid} invalid"
        );
    }
}
