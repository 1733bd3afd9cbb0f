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
    /// Approximate bytes held by the memo.
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
    let mut list = EventList::new(entries);
    let n = entries.len();
    let words = n.div_ceil(64).max(1);
    let entry_bytes = words * 8 + std::mem::size_of::<M>() + 48;

    let mut state = init.clone();
    let mut stack: Vec<(usize, M)> = Vec::new();
    let mut linearized = vec![0u64; words];
    let mut zobrist: u64 = 0;
    let mut memo = Memo::<M>::default();
    let mut remaining = entries.iter().filter(|e| e.completion.is_some()).count();
    let mut stuck: Option<Stuck<M>> = None;
    let mut stuck_rank = 0usize;
    let mut max_depth = 0usize;
    let mut steps: u64 = 0;

    let finish = |verdict, steps, memo: &Memo<M>| Search {
        verdict,
        steps,
        elapsed: started.elapsed(),
        memo_entries: memo.len,
    };

    let mut node = list.first();
    loop {
        steps += 1;
        if steps > budget.max_steps {
            return finish(Verdict::Unknown(Exhausted::Steps), steps, &memo);
        }
        if steps & 0xfff == 0 && started.elapsed() > budget.max_time {
            return finish(Verdict::Unknown(Exhausted::Time), steps, &memo);
        }
        if remaining == 0 {
            // Every completed operation is placed; unknown ones left over
            // simply never took effect.
            return finish(Verdict::Linearizable, steps, &memo);
        }
        if node != list.tail && list.is_call(node) {
            let op = node / 2;
            let entry = &entries[op];
            if let Some(next) = state.step(&entry.input, entry.completion.as_ref().map(|c| &c.1)) {
                flip(&mut linearized, op);
                zobrist ^= zobrist_key(op);
                if memo.insert(zobrist, &linearized, &next) {
                    if memo.len.saturating_mul(entry_bytes) > budget.max_memo_bytes {
                        return finish(Verdict::Unknown(Exhausted::Memory), steps, &memo);
                    }
                    stack.push((op, std::mem::replace(&mut state, next)));
                    max_depth = max_depth.max(stack.len());
                    list.lift(op);
                    if entry.completion.is_some() {
                        remaining -= 1;
                    }
                    node = list.first();
                    continue;
                }
                flip(&mut linearized, op);
                zobrist ^= zobrist_key(op);
            }
            node = list.next(node);
            continue;
        }
        // A return whose call is still in the list (or, defensively, the
        // end of the list): this branch is dead.
        if node != list.tail {
            let rank = list.rank[node];
            let better = stuck.is_none() || rank > stuck_rank;
            if better {
                stuck_rank = rank;
                stuck = Some(Stuck {
                    entry: node / 2,
                    max_linearized: 0,
                    states: vec![state.clone()],
                });
            } else if rank == stuck_rank {
                if let Some(s) = stuck.as_mut() {
                    if s.states.len() < 8 && !s.states.contains(&state) {
                        s.states.push(state.clone());
                    }
                }
            }
        }
        let Some((op, previous)) = stack.pop() else {
            let mut stuck = stuck.unwrap_or(Stuck {
                entry: 0,
                max_linearized: 0,
                states: vec![state],
            });
            stuck.max_linearized = max_depth;
            return finish(Verdict::NotLinearizable(stuck), steps, &memo);
        };
        state = previous;
        flip(&mut linearized, op);
        zobrist ^= zobrist_key(op);
        list.unlift(op);
        if entries[op].completion.is_some() {
            remaining += 1;
        }
        node = list.next(2 * op);
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

/// Configurations sharing one 64-bit hash.
type Bucket<M> = Vec<(Box<[u64]>, M)>;

/// Explored (linearized set, state) pairs, keyed by a 64-bit hash with
/// exact comparison on collision.
struct Memo<M> {
    buckets: HashMap<u64, Bucket<M>, BuildHasherDefault<PassThrough>>,
    len: usize,
}

impl<M> Default for Memo<M> {
    fn default() -> Self {
        Memo {
            buckets: HashMap::default(),
            len: 0,
        }
    }
}

impl<M: Eq + Hash + Clone> Memo<M> {
    /// Inserts; false if already present.
    fn insert(&mut self, set_hash: u64, set: &[u64], state: &M) -> bool {
        let mut h = Fx::default();
        state.hash(&mut h);
        let key = set_hash ^ h.finish();
        let bucket = self.buckets.entry(key).or_default();
        if bucket.iter().any(|(s, m)| s.as_ref() == set && m == state) {
            return false;
        }
        bucket.push((set.into(), state.clone()));
        self.len += 1;
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
