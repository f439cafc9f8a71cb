//! A linearizability checker for workload histories ([`History`]).
//!
//! A history is linearizable if every operation can be given a single
//! instant between its invocation and its completion at which it took
//! effect, such that the operations, applied one by one in that order to a
//! plain Redis value, return what the clients actually saw. [`check`] looks
//! for such an order the way Porcupine does (Wing & Gong's search, with
//! Lowe's memoization):
//!
//! - **Per key.** Linearizability is compositional: a history is
//!   linearizable iff the sub-history of every key is, so each key is
//!   checked on its own (a few thousand operations at most) instead of one
//!   search over all of them.
//! - **Search.** The invocations and completions of the acknowledged
//!   operations are put in one list sorted by time. The operations that may
//!   take effect next are those invoked before the first completion still
//!   in the list: that operation has returned, so nothing invoked after it
//!   may come first. A depth-first search tries them in turn, applying each
//!   to the model (the key's value: `nil`, an integer or a string, with
//!   GET/SET/INCR/DEL as Redis does them) and taking it out of the list if
//!   its reply matches what the client saw; when nothing fits, it
//!   backtracks. Reaching an empty list means a linearization was found.
//! - **Memoization.** Two paths that have applied the same operations and
//!   reached the same value have the same future, so each such
//!   configuration is explored once. The set of acknowledged operations
//!   applied is kept as a 128-bit Zobrist hash (a random key per operation,
//!   XORed in and out), small and cheap to update; a collision (about
//!   2^-100 per pair) could only make a valid history look invalid.
//!
//! **Outcomes.** A `Failed` operation definitely did nothing and is dropped.
//! An `Unknown` one may have taken effect at any time after its invocation,
//! or never. As in Porcupine its completion is at +infinity: it is a
//! candidate from its invocation on, never forces anything to come before
//! it, and the search succeeds once every acknowledged operation is placed,
//! whatever unknown ones are left over (Porcupine would place those at the
//! very end, where nothing observes them, which is the same as never). An
//! unknown GET constrains nothing and is dropped.
//!
//! Unknown operations are what makes the search blow up (any subset of
//! them may have happened, in many orders), so the search skips an order
//! whenever an equivalent one with fewer unknown operations applied is
//! explored anyway:
//! - an unknown operation is only tried after the acknowledged candidates,
//!   and not at all if it would leave the value as it is;
//! - nothing is applied right after an unknown operation if it would have
//!   had the same result without it (a SET just after an unknown SET): the
//!   order without the unknown one, which keeps it for later, is tried too;
//! - identical unknown operations (the INCRs, the DELs) are interchangeable,
//!   so only the earliest pending one of each class is a candidate. Written
//!   values that no GET returned are all the same to the model, so they are
//!   merged into one "unread" value, which puts the unread unknown SETs in
//!   one class too;
//! - the memo records, per (acknowledged operations, value), the sets of
//!   unknown operations applied, and skips a configuration if a subset was
//!   seen: an unknown operation still pending can do anything an applied
//!   one could have, and more.
//!
//! The search is bounded by a step budget: past it, the key is reported as
//! undecided rather than hanging the test run. The tests compare the
//! verdicts with a brute-force search over every order on thousands of
//! small random histories.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::history::{Call, History, Operation, Outcome};

/// Search steps allowed per key before giving up. A linearizable history
/// of a few thousand ops needs well under a million; proving that one is
/// not takes an exhaustive search, a few million steps for a thousand ops.
/// Ten million is about a second in a release build (ten in debug) and a
/// memo of at most a few hundred MB.
pub const DEFAULT_STEP_BUDGET: u64 = 10_000_000;

/// Checks that `history` is linearizable, key by key.
pub fn check(history: &History) -> Result<(), Violation> {
    check_with_budget(history, DEFAULT_STEP_BUDGET)
}

/// [`check`] with an explicit budget of search steps per key.
///
/// A key found not linearizable is reported first; otherwise a key whose
/// search ran out of budget is reported as undecided.
pub fn check_with_budget(history: &History, step_budget: u64) -> Result<(), Violation> {
    let mut per_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in &history.ops {
        per_key.entry(&op.key).or_default().push(op.clone());
    }
    let mut undecided = None;
    for (key, mut ops) in per_key {
        ops.sort_by_key(|op| (op.invoked_ns, op.completed_ns, op.client));
        let (kind, prefix) = match search(&ops, step_budget) {
            SearchResult::Linearizable => continue,
            SearchResult::NotLinearizable { prefix } => (ViolationKind::NotLinearizable, prefix),
            SearchResult::Undecided { prefix } => {
                (ViolationKind::Undecided { steps: step_budget }, prefix)
            }
        };
        let violation = Violation {
            key: key.to_string(),
            kind,
            ops,
            prefix,
        };
        match violation.kind {
            ViolationKind::NotLinearizable => return Err(violation),
            ViolationKind::Undecided { .. } => {
                undecided.get_or_insert(violation);
            }
        }
    }
    undecided.map_or(Ok(()), Err)
}

/// Why a key's history was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    /// No order of the operations explains what the clients saw.
    NotLinearizable,
    /// The search gave up after this many steps without an answer.
    Undecided { steps: u64 },
}

/// A key whose history is not (or could not be shown to be) linearizable,
/// with everything needed to see why. `Display` prints the key's whole
/// history and the longest linearizable prefix the search found.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The offending key.
    pub key: String,
    /// Whether it is a real violation or the search ran out of budget.
    pub kind: ViolationKind,
    /// Every operation on the key, failed ones included, by invocation.
    pub ops: Vec<Operation>,
    /// The longest linearization found (most acknowledged operations
    /// placed), as indices into `ops`, in the order they took effect.
    pub prefix: Vec<usize>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ViolationKind::NotLinearizable => {
                writeln!(f, "key {:?} is not linearizable", self.key)?
            }
            ViolationKind::Undecided { steps } => writeln!(
                f,
                "could not decide within {steps} search steps whether key {:?} is linearizable",
                self.key
            )?,
        }
        writeln!(
            f,
            "its {} operations, by invocation (times in seconds since the workload began):",
            self.ops.len()
        )?;
        for (i, op) in self.ops.iter().enumerate() {
            let end = match op.outcome {
                Outcome::Unknown => "?".to_string(),
                _ => seconds(op.completed_ns),
            };
            let (inv, comp) = (seconds(op.invoked_ns), end);
            writeln!(
                f,
                "  #{i:<4} [{}] {inv}..{comp:<10} {}",
                op.client,
                describe(op)
            )?;
        }

        let acknowledged = self.ops.iter().filter(|op| is_ok(op)).count();
        let placed = self.prefix.iter().filter(|&&i| is_ok(&self.ops[i])).count();
        writeln!(
            f,
            "longest linearizable prefix ({placed} of {acknowledged} acknowledged operations):"
        )?;
        let mut value: Option<String> = None;
        for &i in &self.prefix {
            let op = &self.ops[i];
            value = replay(value, op);
            writeln!(
                f,
                "  #{i:<4} [{}] {:<36} value now {}",
                op.client,
                describe(op),
                show_value(value.as_deref())
            )?;
        }
        // The acknowledged operation that completed first among those left
        // out is the one the search could not get past: nothing invoked
        // after it completed may take effect before it.
        let stuck = (0..self.ops.len())
            .filter(|i| is_ok(&self.ops[*i]) && !self.prefix.contains(i))
            .min_by_key(|&i| self.ops[i].completed_ns);
        if let Some(i) = stuck {
            let op = &self.ops[i];
            writeln!(
                f,
                "then nothing that may come next fits the value {}; of the acknowledged \
                 operations left, the first to complete is #{i} [{}] {}",
                show_value(value.as_deref()),
                op.client,
                describe(op)
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}

fn is_ok(op: &Operation) -> bool {
    matches!(op.outcome, Outcome::Ok(_))
}

fn seconds(ns: u64) -> String {
    format!("{}.{:06}", ns / 1_000_000_000, ns % 1_000_000_000 / 1_000)
}

fn show_value(value: Option<&str>) -> String {
    value.map_or_else(|| "nil".to_string(), |v| format!("{v:?}"))
}

/// `SET "v17" -> OK`, `GET -> nil`, `INCR -> unknown`...
fn describe(op: &Operation) -> String {
    let call = match &op.call {
        Call::Get => "GET".to_string(),
        Call::Set(v) => format!("SET {v:?}"),
        Call::Incr => "INCR".to_string(),
        Call::Del => "DEL".to_string(),
    };
    let outcome = match (&op.outcome, &op.call) {
        (Outcome::Ok(v), Call::Get) => show_value(v.as_deref()),
        (Outcome::Ok(Some(v)), _) => v.clone(),
        (Outcome::Ok(None), _) => "nil".to_string(),
        (Outcome::Failed, _) => "FAILED (not applied)".to_string(),
        (Outcome::Unknown, _) => format!("unknown (gave up at {})", seconds(op.completed_ns)),
    };
    format!("{call} -> {outcome}")
}

/// The value after `op`, for the prefix shown in a report: Redis semantics
/// on plain strings, independent of the search's encoding.
fn replay(value: Option<String>, op: &Operation) -> Option<String> {
    match (&op.call, &op.outcome) {
        (Call::Set(v), _) => Some(v.clone()),
        (Call::Del, _) => None,
        (Call::Incr, Outcome::Ok(new)) => new.clone(),
        (Call::Incr, _) => match value.as_deref().map(canonical_int) {
            None => Some("1".to_string()),
            Some(Some(n)) => n.checked_add(1).map(|n| n.to_string()).or(value),
            Some(None) => value,
        },
        (Call::Get, _) => value,
    }
}

/// The integer Redis sees in `s`: only the canonical decimal form counts
/// ("12", "-3"; not "+12", "012" or " 12"), as in Redis's `string2ll`.
fn canonical_int(s: &str) -> Option<i64> {
    s.parse::<i64>().ok().filter(|n| n.to_string() == s)
}

/// A key's value as the search sees it. Strings are interned: `Str(0)` is
/// any value no GET ever returned ([`UNREAD`]), others are values that some
/// GET returned. Strings that are canonical integers are `Int`, since
/// INCR works on them and GET shows them the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Value {
    Nil,
    Int(i64),
    Str(u32),
}

/// The id of every written value that no GET returned: the model cannot
/// tell them apart, so they are one value.
const UNREAD: u32 = 0;

/// An operation as the model applies it, with what it must return (`None`:
/// unknown, anything goes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Step {
    Get(Value),
    Set(Value),
    Incr(Option<i64>),
    Del(Option<bool>),
    /// An acknowledged reply no state can produce (a malformed INCR or DEL
    /// reply): never fits.
    Impossible,
}

impl Step {
    /// The value after this step from `value`, or `None` if the step
    /// cannot happen there (its reply does not match).
    fn apply(self, value: Value) -> Option<Value> {
        match self {
            Step::Get(read) => (read == value).then_some(value),
            Step::Set(written) => Some(written),
            Step::Incr(returned) => {
                let new = match value {
                    Value::Nil => Some(1),
                    Value::Int(n) => n.checked_add(1),
                    // "-ERR value is not an integer": nothing changes.
                    Value::Str(_) => None,
                };
                match returned {
                    Some(r) => (new == Some(r)).then_some(Value::Int(r)),
                    None => Some(new.map_or(value, Value::Int)),
                }
            }
            Step::Del(removed) => match removed {
                Some(removed) if removed != (value != Value::Nil) => None,
                _ => Some(Value::Nil),
            },
            Step::Impossible => None,
        }
    }
}

/// One operation in a key's search.
struct SearchOp {
    /// Index in the key's operations (for the report).
    origin: usize,
    step: Step,
    invoked: u64,
    /// `None` if acknowledged (it must be placed); for an unknown op (it may
    /// be), its class of identical unknown ops.
    class: Option<usize>,
}

/// A key's operations, ready to search.
struct Prepared {
    ops: Vec<SearchOp>,
    /// Invocations and completions of the acknowledged ops, by time.
    events: Vec<(u64, usize)>,
    /// Unknown ops with identical steps, each class in invocation order.
    /// Identical ops are interchangeable, so only the first unplaced one of
    /// a class is ever a candidate.
    classes: Vec<Vec<usize>>,
}

enum SearchResult {
    Linearizable,
    NotLinearizable { prefix: Vec<usize> },
    Undecided { prefix: Vec<usize> },
}

/// Turns a key's operations (sorted by invocation) into search operations.
fn prepare(ops: &[Operation]) -> Prepared {
    // Intern every non-integer value that some GET returned; every other
    // written value is UNREAD.
    let mut ids: HashMap<&str, u32> = HashMap::new();
    for op in ops {
        if let (Call::Get, Outcome::Ok(Some(v))) = (&op.call, &op.outcome) {
            if canonical_int(v).is_none() {
                let next = ids.len() as u32 + 1;
                ids.entry(v).or_insert(next);
            }
        }
    }
    let value = |s: &str| match canonical_int(s) {
        Some(n) => Value::Int(n),
        None => Value::Str(ids.get(s).copied().unwrap_or(UNREAD)),
    };

    let mut prepared = Prepared {
        ops: Vec::new(),
        events: Vec::new(),
        classes: Vec::new(),
    };
    let mut class_of: HashMap<Step, usize> = HashMap::new();
    for (origin, op) in ops.iter().enumerate() {
        let reply = match &op.outcome {
            Outcome::Ok(reply) => Some(reply.as_deref()),
            Outcome::Unknown => None,
            Outcome::Failed => continue,
        };
        let step = match (&op.call, reply) {
            (Call::Get, None) => continue,
            (Call::Get, Some(read)) => Step::Get(read.map_or(Value::Nil, value)),
            (Call::Set(v), _) => Step::Set(value(v)),
            (Call::Incr, None) => Step::Incr(None),
            (Call::Incr, Some(r)) => r
                .and_then(canonical_int)
                .map_or(Step::Impossible, |n| Step::Incr(Some(n))),
            (Call::Del, None) => Step::Del(None),
            (Call::Del, Some(Some("1"))) => Step::Del(Some(true)),
            (Call::Del, Some(Some("0"))) => Step::Del(Some(false)),
            (Call::Del, Some(_)) => Step::Impossible,
        };
        let i = prepared.ops.len();
        let class = if reply.is_some() {
            prepared.events.push((op.invoked_ns, Events::invocation(i)));
            prepared
                .events
                .push((op.completed_ns, Events::completion(i)));
            None
        } else {
            let classes = &mut prepared.classes;
            let class = *class_of.entry(step).or_insert_with(|| {
                classes.push(Vec::new());
                classes.len() - 1
            });
            classes[class].push(i);
            Some(class)
        };
        prepared.ops.push(SearchOp {
            origin,
            step,
            invoked: op.invoked_ns,
            class,
        });
    }
    // At equal times invocations sort first, so operations that merely
    // touch count as concurrent: clock granularity never makes a violation.
    prepared
        .events
        .sort_by_key(|&(time, node)| (time, Events::is_completion(node), node));
    prepared
}

/// End of a list.
const NONE: usize = usize::MAX;

/// A doubly linked list in arrays, so that an element can be taken out and
/// put back in O(1) (Knuth's dancing links). Node 0 is the head.
struct Links {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Links {
    const HEAD: usize = 0;

    /// A list of `nodes` (numbered from 1), in that order.
    fn new(len: usize, nodes: impl IntoIterator<Item = usize>) -> Self {
        let mut links = Links {
            next: vec![NONE; len],
            prev: vec![NONE; len],
        };
        let mut last = Self::HEAD;
        for node in nodes {
            links.next[last] = node;
            links.prev[node] = last;
            last = node;
        }
        links
    }

    fn first(&self) -> usize {
        self.next[Self::HEAD]
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NONE {
            self.prev[next] = prev;
        }
    }

    /// Undoes `unlink(node)`; nodes must be put back in the reverse order
    /// of their removal, which the search's stack guarantees.
    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NONE {
            self.prev[next] = node;
        }
    }
}

/// The time-sorted events of the acknowledged ops still to be placed: op i
/// has nodes 1 + 2i (invocation) and 2 + 2i (completion).
struct Events {
    links: Links,
    time: Vec<u64>,
}

impl Events {
    fn invocation(op: usize) -> usize {
        1 + 2 * op
    }

    fn completion(op: usize) -> usize {
        2 + 2 * op
    }

    fn is_completion(node: usize) -> bool {
        node % 2 == 0
    }

    fn op(node: usize) -> usize {
        (node - 1) / 2
    }

    fn new(op_count: usize, sorted: &[(u64, usize)]) -> Self {
        let len = 1 + 2 * op_count;
        let mut time = vec![0; len];
        for &(t, node) in sorted {
            time[node] = t;
        }
        let links = Links::new(len, sorted.iter().map(|&(_, node)| node));
        Events { links, time }
    }

    /// When the first acknowledged op still unplaced completed: only ops
    /// invoked by then may be placed next.
    fn frontier(&self) -> u64 {
        let mut node = self.links.first();
        while node != NONE && !Self::is_completion(node) {
            node = self.links.next[node];
        }
        self.time_of(node)
    }

    /// The time of `node`, +infinity for the end of the list.
    fn time_of(&self, node: usize) -> u64 {
        if node == NONE {
            u64::MAX
        } else {
            self.time[node]
        }
    }

    fn take(&mut self, op: usize) {
        self.links.unlink(Self::invocation(op));
        self.links.unlink(Self::completion(op));
    }

    fn put_back(&mut self, op: usize) {
        self.links.relink(Self::completion(op));
        self.links.relink(Self::invocation(op));
    }
}

/// The classes of unknown ops that still have unplaced members, in the
/// order of their first member's invocation (class c is node c + 1), and
/// how far each class is placed.
struct Classes {
    members: Vec<Vec<usize>>,
    placed: Vec<usize>,
    live: Links,
    /// Invocation of each class's first member: once one exceeds the
    /// frontier, so do the heads of this and every later class.
    first_invoked: Vec<u64>,
}

impl Classes {
    fn new(members: Vec<Vec<usize>>, ops: &[SearchOp]) -> Self {
        let count = members.len();
        Classes {
            first_invoked: members.iter().map(|m| ops[m[0]].invoked).collect(),
            members,
            placed: vec![0; count],
            live: Links::new(count + 1, 1..=count),
        }
    }

    /// The first unplaced op of the class at `node`.
    fn head(&self, node: usize) -> usize {
        let class = node - 1;
        self.members[class][self.placed[class]]
    }

    fn place(&mut self, class: usize) {
        self.placed[class] += 1;
        if self.placed[class] == self.members[class].len() {
            self.live.unlink(class + 1);
        }
    }

    fn unplace(&mut self, class: usize) {
        if self.placed[class] == self.members[class].len() {
            self.live.relink(class + 1);
        }
        self.placed[class] -= 1;
    }
}

/// splitmix64: a tiny deterministic generator for the Zobrist keys.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Which operations are placed: acknowledged ones as a 128-bit Zobrist
/// hash, unknown ones as a bitset, since the memo compares those as sets.
struct Placed {
    known_hash: (u64, u64),
    unknown: Vec<u64>,
    /// Per op: its Zobrist key if acknowledged, its bit if unknown.
    zobrist: Vec<(u64, u64)>,
    bit: Vec<usize>,
}

impl Placed {
    fn new(ops: &[SearchOp]) -> Self {
        let mut seed = 0x5eed_u64;
        let mut unknown_count = 0;
        let mut zobrist = Vec::new();
        let mut bit = Vec::new();
        for op in ops {
            zobrist.push((splitmix64(&mut seed), splitmix64(&mut seed)));
            bit.push(unknown_count);
            unknown_count += usize::from(op.class.is_some());
        }
        Placed {
            known_hash: (0, 0),
            unknown: vec![0; unknown_count.div_ceil(64)],
            zobrist,
            bit,
        }
    }

    /// Places op `i` if it is not, takes it back if it is.
    fn toggle(&mut self, i: usize, known: bool) {
        if known {
            self.known_hash.0 ^= self.zobrist[i].0;
            self.known_hash.1 ^= self.zobrist[i].1;
        } else {
            self.unknown[self.bit[i] / 64] ^= 1 << (self.bit[i] % 64);
        }
    }
}

/// The configurations explored so far, for Lowe's memoization extended to
/// unknown operations: a configuration is (placed acknowledged ops, placed
/// unknown ops, value), and it is dominated by an explored one with the same
/// acknowledged ops and value but a subset of its unknown ops, because an
/// unknown op left pending can still be placed later or never. Per
/// (acknowledged ops, value) only the minimal unknown sets are kept.
#[derive(Default)]
struct Memo {
    seen: HashMap<(u64, u64, Value), Vec<Vec<u64>>>,
}

impl Memo {
    /// Records the configuration; false if it is dominated (or was seen).
    fn visit(&mut self, placed: &Placed, value: Value) -> bool {
        let subset = |a: &[u64], b: &[u64]| a.iter().zip(b).all(|(a, b)| a & !b == 0);
        let (h0, h1) = placed.known_hash;
        let sets = self.seen.entry((h0, h1, value)).or_default();
        if sets.iter().any(|seen| subset(seen, &placed.unknown)) {
            return false;
        }
        sets.retain(|seen| !subset(&placed.unknown, seen));
        sets.push(placed.unknown.clone());
        true
    }
}

/// Where the search is in the candidates of the current configuration:
/// first the acknowledged ops invoked before the first completion left (a
/// node of the event list), then the first unplaced op of each live unknown
/// class (a node of the class list), if invoked before that completion
/// (`frontier`).
#[derive(Clone, Copy)]
enum Cursor {
    Event(usize),
    Class { node: usize, frontier: u64 },
}

/// A placed operation, to undo it when backtracking.
struct Frame {
    op: usize,
    value_before: Value,
}

/// Searches a linearization of one key's operations (sorted by invocation).
fn search(ops: &[Operation], step_budget: u64) -> SearchResult {
    let prepared = prepare(ops);
    let sops = prepared.ops;
    let mut events = Events::new(sops.len(), &prepared.events);
    let mut classes = Classes::new(prepared.classes, &sops);
    let mut placed = Placed::new(&sops);
    let mut value = Value::Nil;
    let mut stack: Vec<Frame> = Vec::new();
    let mut memo = Memo::default();
    let mut known_left = sops.iter().filter(|op| op.class.is_none()).count();
    let mut known_placed = 0;
    let (mut best_known, mut best) = (0, Vec::new());
    let mut steps = 0u64;

    let mut cursor = Cursor::Event(events.links.first());
    loop {
        if known_left == 0 {
            return SearchResult::Linearizable;
        }
        steps += 1;
        if steps > step_budget {
            return SearchResult::Undecided { prefix: best };
        }
        // The candidate at the cursor, if any, and where to look next.
        let (candidate_op, next) = match cursor {
            Cursor::Event(node) if node != NONE && !Events::is_completion(node) => {
                let next = Cursor::Event(events.links.next[node]);
                (Some(Events::op(node)), next)
            }
            Cursor::Event(node) => {
                let frontier = events.time_of(node);
                let node = classes.live.first();
                (None, Cursor::Class { node, frontier })
            }
            Cursor::Class { node, frontier }
                if node != NONE && classes.first_invoked[node - 1] <= frontier =>
            {
                let head = classes.head(node);
                let next = Cursor::Class {
                    node: classes.live.next[node],
                    frontier,
                };
                ((sops[head].invoked <= frontier).then_some(head), next)
            }
            Cursor::Class { .. } => {
                // Every candidate was tried: nothing can come next from
                // here. Undo the last placement and try what follows it.
                let Some(frame) = stack.pop() else {
                    return SearchResult::NotLinearizable { prefix: best };
                };
                let i = frame.op;
                value = frame.value_before;
                placed.toggle(i, sops[i].class.is_none());
                cursor = match sops[i].class {
                    None => {
                        events.put_back(i);
                        known_left += 1;
                        known_placed -= 1;
                        Cursor::Event(events.links.next[Events::invocation(i)])
                    }
                    Some(class) => {
                        classes.unplace(class);
                        Cursor::Class {
                            node: classes.live.next[class + 1],
                            frontier: events.frontier(),
                        }
                    }
                };
                continue;
            }
        };
        cursor = next;
        let Some(i) = candidate_op else { continue };
        let op = &sops[i];
        let Some(after) = fits(op, value, stack.last(), &sops) else {
            continue;
        };
        placed.toggle(i, op.class.is_none());
        if !memo.visit(&placed, after) {
            placed.toggle(i, op.class.is_none());
            continue;
        }
        stack.push(Frame {
            op: i,
            value_before: value,
        });
        value = after;
        match op.class {
            None => {
                events.take(i);
                known_left -= 1;
                known_placed += 1;
                if known_placed > best_known {
                    best_known = known_placed;
                    best = stack.iter().map(|frame| sops[frame.op].origin).collect();
                }
            }
            Some(class) => classes.place(class),
        }
        cursor = Cursor::Event(events.links.first());
    }
}

/// The value after placing `op` now, if it fits and neither rule of the
/// module doc says an order with fewer unknown ops is tried instead.
fn fits(op: &SearchOp, value: Value, last: Option<&Frame>, sops: &[SearchOp]) -> Option<Value> {
    let after = op.step.apply(value)?;
    // An unknown op that changes nothing: leaving it pending is better.
    if op.class.is_some() && after == value {
        return None;
    }
    // Just after an unknown op, and as if it had not happened: the order
    // without it is tried from the previous configuration.
    if let Some(last) = last {
        if sops[last.op].class.is_some() && op.step.apply(last.value_before) == Some(after) {
            return None;
        }
    }
    Some(after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    // ---- Building histories by hand: one key, times in nanoseconds. ----

    fn set(v: &str) -> Call {
        Call::Set(v.to_string())
    }

    fn ok(reply: &str) -> Outcome {
        Outcome::Ok(Some(reply.to_string()))
    }

    const NIL: Outcome = Outcome::Ok(None);
    const OK: &str = "OK";

    /// Ops on key "k": (client, invoked, completed, call, outcome).
    fn history(ops: &[(usize, u64, u64, Call, Outcome)]) -> History {
        History {
            ops: ops
                .iter()
                .map(|(client, invoked, completed, call, outcome)| Operation {
                    client: *client,
                    key: "k".to_string(),
                    call: call.clone(),
                    invoked_ns: *invoked,
                    completed_ns: *completed,
                    outcome: outcome.clone(),
                })
                .collect(),
        }
    }

    #[track_caller]
    fn assert_linearizable(history: &History) {
        if let Err(violation) = check(history) {
            panic!("expected linearizable, got:\n{violation}");
        }
    }

    #[track_caller]
    fn assert_violation(history: &History) -> Violation {
        match check(history) {
            Ok(()) => panic!("expected a violation in {history:#?}"),
            Err(violation) => {
                assert_eq!(
                    violation.kind,
                    ViolationKind::NotLinearizable,
                    "{violation}"
                );
                violation
            }
        }
    }

    // ---- Good histories. ----

    #[test]
    fn checker_accepts_concurrent_writes_in_either_order() {
        for last in ["a", "b"] {
            assert_linearizable(&history(&[
                (0, 0, 10, set("a"), ok(OK)),
                (1, 0, 10, set("b"), ok(OK)),
                (2, 20, 30, Call::Get, ok(last)),
                (0, 40, 50, Call::Get, ok(last)),
            ]));
        }
    }

    #[test]
    fn checker_accepts_reads_during_a_write_switching_once() {
        // A read concurrent with a write may see either value, and once a
        // read saw the new one, later reads must too: here they do.
        assert_linearizable(&history(&[
            (0, 0, 10, set("a"), ok(OK)),
            (1, 20, 100, set("b"), ok(OK)),
            (2, 30, 40, Call::Get, ok("a")),
            (2, 50, 60, Call::Get, ok("b")),
            (3, 55, 65, Call::Get, ok("b")),
        ]));
    }

    #[test]
    fn checker_accepts_an_unknown_write_observed_later() {
        // The write timed out, then showed up long after the client gave up.
        assert_linearizable(&history(&[
            (0, 0, 10, set("a"), ok(OK)),
            (0, 20, 30, set("b"), Outcome::Unknown),
            (1, 40, 50, Call::Get, ok("a")),
            (1, 1_000, 1_010, Call::Get, ok("b")),
            (2, 1_020, 1_030, Call::Get, ok("b")),
        ]));
    }

    #[test]
    fn checker_accepts_an_unknown_write_never_observed() {
        assert_linearizable(&history(&[
            (0, 0, 10, set("a"), ok(OK)),
            (0, 20, 30, set("b"), Outcome::Unknown),
            (0, 21, 31, Call::Del, Outcome::Unknown),
            (0, 22, 32, Call::Incr, Outcome::Unknown),
            (1, 40, 50, Call::Get, ok("a")),
            (1, 60, 70, Call::Get, ok("a")),
            (2, 80, 90, set("c"), ok(OK)),
            (1, 100, 110, Call::Get, ok("c")),
        ]));
    }

    #[test]
    fn checker_accepts_a_failed_write_never_observed() {
        assert_linearizable(&history(&[
            (0, 0, 10, set("a"), ok(OK)),
            (1, 20, 30, set("b"), Outcome::Failed),
            (2, 40, 50, Call::Get, ok("a")),
        ]));
    }

    #[test]
    fn checker_accepts_interleaved_incrs() {
        // Three concurrent INCRs may take effect in any order, whatever
        // their invocation order; an unknown one may show up as a jump.
        assert_linearizable(&history(&[
            (0, 0, 100, Call::Incr, ok("3")),
            (1, 10, 60, Call::Incr, ok("1")),
            (2, 20, 80, Call::Incr, ok("2")),
            (3, 110, 120, Call::Get, ok("3")),
            (3, 130, 140, Call::Incr, Outcome::Unknown),
            (1, 150, 160, Call::Incr, ok("5")),
            (2, 170, 180, Call::Del, ok("1")),
            (2, 190, 200, Call::Del, ok("0")),
            (0, 210, 220, Call::Get, NIL),
            (0, 230, 240, Call::Incr, ok("1")),
        ]));
    }

    #[test]
    fn checker_accepts_a_set_integer_then_incr() {
        // SET "41" stores an integer as far as INCR is concerned.
        assert_linearizable(&history(&[
            (0, 0, 10, set("41"), ok(OK)),
            (0, 20, 30, Call::Incr, ok("42")),
            (1, 40, 50, Call::Get, ok("42")),
        ]));
    }

    #[test]
    fn checker_accepts_a_delete_justified_by_an_unknown_write() {
        // Only the unknown SET explains DEL returning 1.
        assert_linearizable(&history(&[
            (0, 0, 10, set("a"), Outcome::Unknown),
            (1, 100, 110, Call::Del, ok("1")),
            (1, 120, 130, Call::Get, NIL),
        ]));
    }

    #[test]
    fn checker_checks_keys_independently() {
        let mut h = history(&[
            (0, 0, 10, set("a"), ok(OK)),
            (1, 20, 30, Call::Get, ok("a")),
        ]);
        let mut other = history(&[(0, 12, 14, set("a"), ok(OK)), (1, 15, 18, Call::Get, NIL)]);
        for op in &mut other.ops {
            op.key = "other".to_string();
        }
        h.ops.extend(other.ops);
        // Only "other" is wrong: its GET follows the SET of the same value.
        let violation = assert_violation(&h);
        assert_eq!(violation.key, "other");
    }

    // ---- Bad histories: each must be rejected. ----

    #[test]
    fn checker_rejects_a_stale_read() {
        // b was acknowledged before the read began; the read saw a.
        assert_violation(&history(&[
            (0, 0, 10, set("a"), ok(OK)),
            (0, 20, 30, set("b"), ok(OK)),
            (1, 15, 25, Call::Get, ok("b")),
            (2, 40, 50, Call::Get, ok("a")),
        ]));
    }

    #[test]
    fn checker_rejects_a_lost_write() {
        // SET b acknowledged, then every later read sees the previous value.
        assert_violation(&history(&[
            (0, 0, 10, set("a"), ok(OK)),
            (1, 20, 30, Call::Get, ok("a")),
            (0, 40, 50, set("b"), ok(OK)),
            (1, 1_000, 1_010, Call::Get, ok("a")),
            (2, 2_000, 2_010, Call::Get, ok("a")),
        ]));
    }

    #[test]
    fn checker_rejects_a_read_of_a_value_never_written() {
        assert_violation(&history(&[
            (0, 0, 10, set("a"), ok(OK)),
            (1, 5, 15, set("b"), Outcome::Unknown),
            (2, 20, 30, Call::Get, ok("ghost")),
        ]));
    }

    #[test]
    fn checker_rejects_a_write_seen_then_unseen() {
        // Both reads overlap SET b, but the second starts after the first
        // ended: once b was seen, a cannot come back.
        assert_violation(&history(&[
            (0, 0, 10, set("a"), ok(OK)),
            (1, 20, 100, set("b"), ok(OK)),
            (2, 30, 40, Call::Get, ok("b")),
            (3, 50, 60, Call::Get, ok("a")),
        ]));
    }

    #[test]
    fn checker_rejects_an_incr_returning_the_same_number_twice() {
        assert_violation(&history(&[
            (0, 0, 10, Call::Incr, ok("1")),
            (1, 5, 15, Call::Incr, ok("1")),
        ]));
    }

    #[test]
    fn checker_rejects_an_observed_failed_write() {
        // -CLUSTERDOWN means not applied, yet b was read.
        assert_violation(&history(&[
            (0, 0, 10, set("a"), ok(OK)),
            (1, 20, 30, set("b"), Outcome::Failed),
            (2, 40, 50, Call::Get, ok("b")),
        ]));
    }

    #[test]
    fn checker_rejects_impossible_incr_and_del_replies() {
        // INCR on a non-integer value is an error, never an Ok reply.
        assert_violation(&history(&[
            (0, 0, 10, set("a"), ok(OK)),
            (0, 20, 30, Call::Incr, ok("1")),
        ]));
        // DEL of a key nobody wrote removes nothing.
        assert_violation(&history(&[(0, 0, 10, Call::Del, ok("1"))]));
        // An unknown INCR cannot explain a GET of "1" on a string value.
        assert_violation(&history(&[
            (0, 0, 10, set("a"), ok(OK)),
            (0, 20, 30, Call::Incr, Outcome::Unknown),
            (1, 40, 50, Call::Get, ok("1")),
        ]));
    }

    #[test]
    fn checker_report_shows_the_history_and_the_longest_prefix() {
        let violation = assert_violation(&history(&[
            (0, 0, 10_000, set("a"), ok(OK)),
            (0, 20_000, 30_000, set("b"), ok(OK)),
            (1, 40_000, 50_000, Call::Get, ok("a")),
            (2, 45_000, 47_000, set("c"), Outcome::Unknown),
        ]));
        let report = violation.to_string();
        for expected in [
            "key \"k\" is not linearizable",
            "#0    [0] 0.000000..0.000010   SET \"a\" -> OK",
            "#3    [2] 0.000045..?          SET \"c\" -> unknown (gave up at 0.000047)",
            "longest linearizable prefix (2 of 3 acknowledged operations):",
            "value now \"b\"",
            "first to complete is #2 [1] GET -> \"a\"",
        ] {
            assert!(report.contains(expected), "{expected:?} not in:\n{report}");
        }
    }

    #[test]
    fn checker_reports_undecided_when_out_of_budget() {
        let h = history(&[
            (0, 0, 10, set("a"), ok(OK)),
            (1, 20, 30, Call::Get, ok("a")),
        ]);
        let violation = check_with_budget(&h, 1).unwrap_err();
        assert_eq!(violation.kind, ViolationKind::Undecided { steps: 1 });
        assert!(violation.to_string().contains("could not decide"));
    }

    // ---- Random histories. ----

    /// A small deterministic generator for test histories.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            splitmix64(&mut self.0) % n
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// A linearizable history: `clients` sequential clients doing `count`
    /// operations in all on `keys` keys (the first half registers with
    /// GET/SET/DEL, the others counters with GET/INCR/DEL), each taking
    /// effect at a random instant inside its interval on a real store.
    /// Some operations fail (not applied) or end unknown (applied or not).
    fn simulated(
        rng: &mut Rng,
        clients: usize,
        keys: usize,
        count: usize,
        unknown_percent: u64,
    ) -> History {
        struct Planned {
            op: Operation,
            at: u64,
            applied: bool,
        }
        let mut planned = Vec::new();
        for client in 0..clients {
            let mut now = rng.below(10_000);
            for n in 0..count / clients {
                let key = rng.below(keys as u64) as usize;
                let counter = key >= keys / 2;
                let call = match (rng.below(10), counter) {
                    (0..=4, _) => Call::Get,
                    (5..=8, false) => Call::Set(format!("v{client}.{n}")),
                    (5..=8, true) => Call::Incr,
                    _ => Call::Del,
                };
                let invoked = now + rng.below(20_000);
                let completed = invoked + 1_000 + rng.below(100_000);
                let (outcome, applied) = match rng.below(100) {
                    0..=1 => (Outcome::Failed, false),
                    p if p < 2 + unknown_percent => (Outcome::Unknown, rng.chance(50)),
                    _ => (Outcome::Ok(None), true),
                };
                planned.push(Planned {
                    op: Operation {
                        client,
                        key: format!("key{key}"),
                        call,
                        invoked_ns: invoked,
                        completed_ns: completed,
                        outcome,
                    },
                    at: invoked + rng.below(completed - invoked + 1),
                    applied,
                });
                now = completed;
            }
        }
        planned.sort_by_key(|p| p.at);
        let mut store: HashMap<String, String> = HashMap::new();
        for p in &mut planned {
            if !p.applied {
                continue;
            }
            let key = p.op.key.clone();
            let reply = match &p.op.call {
                Call::Get => store.get(&key).cloned(),
                Call::Set(v) => {
                    store.insert(key, v.clone());
                    Some("OK".to_string())
                }
                Call::Incr => {
                    let n = store.get(&key).map_or(0, |v| v.parse::<i64>().unwrap()) + 1;
                    store.insert(key, n.to_string());
                    Some(n.to_string())
                }
                Call::Del => Some(u8::from(store.remove(&key).is_some()).to_string()),
            };
            if let Outcome::Ok(r) = &mut p.op.outcome {
                *r = reply;
            }
        }
        History {
            ops: planned.into_iter().map(|p| p.op).collect(),
        }
    }

    #[test]
    fn checker_is_fast_on_a_long_linearizable_history() {
        let mut rng = Rng(7);
        let h = simulated(&mut rng, 8, 5, 2_000, 3);
        assert_eq!(h.ops.len(), 2_000);
        let start = Instant::now();
        assert_linearizable(&h);
        let elapsed = start.elapsed();
        println!("checked {} ops in {elapsed:?}", h.ops.len());
        assert!(elapsed.as_millis() < 1_000, "took {elapsed:?}");
    }

    #[test]
    fn checker_rejects_a_corrupted_long_history() {
        // The same kind of history with one acknowledged write dropped from
        // the store: reads after it must expose the loss. Take a value that
        // was read well after its write completed and make its read return
        // a value never written.
        let mut rng = Rng(11);
        let mut h = simulated(&mut rng, 8, 5, 2_000, 3);
        let read = h
            .ops
            .iter()
            .position(|op| op.call == Call::Get && op.outcome != NIL && is_ok(op))
            .unwrap();
        h.ops[read].outcome = ok("never written");
        let start = Instant::now();
        assert_violation(&h);
        println!("rejected {} ops in {:?}", h.ops.len(), start.elapsed());
    }

    #[test]
    fn checker_copes_with_many_unknown_ops() {
        // A run full of timeouts: one op in ten unknown, half of those
        // applied. Unknown ops are what makes the search blow up.
        let mut rng = Rng(5);
        let h = simulated(&mut rng, 8, 5, 2_000, 10);
        let start = Instant::now();
        assert_linearizable(&h);
        println!("checked {} ops in {:?}", h.ops.len(), start.elapsed());
    }

    /// The definition, by brute force: some order of the acknowledged ops
    /// and a subset of the unknown ones, respecting real time, that a plain
    /// string store explains. Only for a handful of ops.
    fn brute_force(ops: &[Operation]) -> bool {
        fn apply(value: &Option<String>, op: &Operation) -> Option<Option<String>> {
            let int = match value {
                None => Some(0),
                Some(v) => canonical_int(v),
            };
            let (after, reply) = match &op.call {
                Call::Get => (value.clone(), value.clone()),
                Call::Set(v) => (Some(v.clone()), Some("OK".to_string())),
                Call::Del => (None, Some(u8::from(value.is_some()).to_string())),
                Call::Incr => match int.and_then(|n| n.checked_add(1)) {
                    Some(n) => (Some(n.to_string()), Some(n.to_string())),
                    // An error reply: nothing applied, never an Ok reply.
                    None if op.outcome == Outcome::Unknown => return Some(value.clone()),
                    None => return None,
                },
            };
            match &op.outcome {
                Outcome::Ok(r) if matches!(op.call, Call::Set(_)) || *r == reply => Some(after),
                Outcome::Unknown => Some(after),
                _ => None,
            }
        }
        fn go(ops: &[Operation], left: &mut Vec<usize>, value: &Option<String>) -> bool {
            if left.iter().all(|&i| ops[i].outcome == Outcome::Unknown) {
                return true;
            }
            for k in 0..left.len() {
                let i = left[k];
                // Everything acknowledged before i began must come first.
                let blocked = left.iter().any(|&j| {
                    ops[j].outcome != Outcome::Unknown && ops[j].completed_ns < ops[i].invoked_ns
                });
                if blocked {
                    continue;
                }
                left.remove(k);
                let fits = apply(value, &ops[i]).is_some_and(|after| go(ops, left, &after));
                // An unknown op may also never happen.
                let skipped = ops[i].outcome == Outcome::Unknown && go(ops, left, value);
                left.insert(k, i);
                if fits || skipped {
                    return true;
                }
            }
            false
        }
        let mut left: Vec<usize> = (0..ops.len())
            .filter(|&i| ops[i].outcome != Outcome::Failed)
            .collect();
        go(ops, &mut left, &None)
    }

    #[test]
    fn checker_agrees_with_brute_force_on_small_random_histories() {
        // Random small histories, linearizable or not, with every kind of
        // op and outcome: the search with its pruning rules must give the
        // same verdict as trying every order.
        let mut rng = Rng(3);
        let (mut good, mut bad) = (0, 0);
        for round in 0..20_000 {
            let count = 1 + rng.below(7) as usize;
            let mut ops = Vec::new();
            let mut clock = [0u64; 3];
            for n in 0..count {
                let client = rng.below(3) as usize;
                let call = match rng.below(4) {
                    0 => Call::Get,
                    1 if rng.chance(20) => set(&rng.below(3).to_string()),
                    1 => set(&format!("v{n}")),
                    2 => Call::Incr,
                    _ => Call::Del,
                };
                let outcome = match rng.below(10) {
                    0 => Outcome::Failed,
                    1 | 2 => Outcome::Unknown,
                    _ => match &call {
                        Call::Set(_) => ok(OK),
                        Call::Del => ok(&rng.below(2).to_string()),
                        Call::Incr => ok(&(1 + rng.below(3)).to_string()),
                        Call::Get => match rng.below(4) {
                            0 => NIL,
                            1 => ok(&(1 + rng.below(3)).to_string()),
                            _ => ok(&format!("v{}", rng.below(count as u64))),
                        },
                    },
                };
                let invoked = clock[client] + rng.below(4);
                let completed = invoked + rng.below(6);
                clock[client] = completed + 1;
                ops.push((client, invoked, completed, call, outcome));
            }
            let h = history(&ops);
            let expected = brute_force(&h.ops);
            let got = check(&h);
            assert_eq!(
                got.is_ok(),
                expected,
                "round {round}: brute force says {expected}, checker says {got:?} on {h:#?}"
            );
            if expected {
                good += 1;
            } else {
                bad += 1;
            }
        }
        // Both verdicts must be well represented for this to mean anything.
        assert!(good > 2_000 && bad > 2_000, "{good} good, {bad} bad");
    }
}
