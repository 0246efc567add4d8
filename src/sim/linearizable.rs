//! A linearizability checker for key-value histories: the GETs, SETs and DELs a workload sent
//! to the store, each with when it was called, when (if ever) it returned and what it answered.
//! `check` says whether the operations can be put in one total order that respects real time
//! (an operation that returned before another was called comes first) and in which every read
//! sees the latest write before it; if not, it names the key and the operations that could not
//! be placed, for a human replaying a simulator seed.
//!
//! Registers are local (Herlihy & Wing): a history is linearizable iff each key's sub-history
//! is, so each key is searched on its own. The search is Wing & Gong's with Lowe's memoisation,
//! as Porcupine and Knossos run it: depth-first, it linearizes next one of the operations
//! called before the earliest return among those not yet linearized, and never revisits a
//! (set of linearized operations, register value) it has seen.
//!
//! Three prunings, each of which keeps some linearization whenever one exists (a test checks
//! the search against brute force on thousands of small histories): an unknown write is left
//! out or given a deadline by the reads of its value (`unknown_write_entry`); optional writes
//! of one value are placed in call order only (`chain_interchangeable_writes`); and a read
//! that may come next and sees the register's value is placed at once, with no alternative
//! (`place_a_matching_read`). Measured (the tests' generator, release build): a key of 400
//! operations from 4 clients takes about 0.3 ms; 1000 operations from 8 clients about 1 ms
//! when linearizable and up to 0.2 s to prove they are not; with 16 clients or more some keys
//! exhaust the budget (about 1 s) and the answer is "gave up".
//!
//! # What it guarantees
//! - `Ok` means a linearization exists; an `Err` that says "not linearizable" means none does.
//! - It is bounded: a key's search stops after `SEARCH_STEPS_MAX` steps and returns an `Err`
//!   saying it gave up, which is no verdict either way.
//! - It is deterministic: the same history gives the same answer and the same message.
//!
//! # Conventions
//! - Every key starts absent (`None`); a DEL is a write of `None`.
//! - Times are microseconds from any common origin. Precedence is strict: an operation that
//!   returned at t and one called at t are concurrent.
//! - A write whose outcome is unknown (an error, or no answer) may take effect at any time after
//!   its call, even after an error reply, or never. A read whose outcome is unknown says nothing
//!   and is dropped. An answered operation without a return time has no deadline.
//! - Values are distinct per write, as the workload promises. Correctness does not rest on it:
//!   it only lets an unknown write that is the sole writer of a value some read saw be treated
//!   as one that did take effect, before the first such read returned.

use std::collections::{BTreeMap, HashMap, HashSet};

/// A value written or read: an id chosen by the workload (values are distinct per write);
/// `None` is absent (never set, or deleted).
pub type Value = Option<u64>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Read,
    /// `Write(None)` is a DEL.
    Write(Value),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A read that answered.
    Read(Value),
    /// A write that was acknowledged.
    Written,
    /// An error or no answer: it may have taken effect at any time after its call, or never.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Operation {
    pub client: u32,
    pub key: u64,
    pub action: Action,
    pub call_us: u64,
    /// `None`: never returned.
    pub return_us: Option<u64>,
    pub outcome: Outcome,
}

/// Steps one key's search may take before it gives up. A step is one event visited; a
/// linearizable history from a few clients takes about two per operation (400 operations from
/// 4 clients: about 900). The memo holds at most one state per step, so this also bounds its
/// memory (about 100 bytes a state).
pub const SEARCH_STEPS_MAX: u64 = 10_000_000;

/// Operations an explanation lists in each of its parts, so that it stays short.
const EXPLANATION_OPERATIONS_MAX: usize = 6;

/// `Ok` when every key's sub-history is linearizable; otherwise the first failing key (in key
/// order) with why.
pub fn check(history: &[Operation]) -> Result<(), String> {
    let mut keys: BTreeMap<u64, Vec<&Operation>> = BTreeMap::new();
    for operation in history {
        validate(operation)?;
        keys.entry(operation.key).or_default().push(operation);
    }
    for (key, operations) in &keys {
        check_key(*key, operations, SEARCH_STEPS_MAX)?;
    }
    Ok(())
}

/// An outcome that does not fit its action, or a return before the call, is a bug in the
/// workload's recording, not a linearizability violation: say so rather than search.
fn validate(operation: &Operation) -> Result<(), String> {
    let fits = matches!(
        (operation.action, operation.outcome),
        (Action::Read, Outcome::Read(_) | Outcome::Unknown)
            | (Action::Write(_), Outcome::Written | Outcome::Unknown)
    );
    if !fits {
        return Err(format!(
            "key {}: malformed history: client {}'s {:?} has outcome {:?}",
            operation.key, operation.client, operation.action, operation.outcome
        ));
    }
    if let Some(return_us) = operation.return_us
        && return_us < operation.call_us
    {
        return Err(format!(
            "key {}: malformed history: client {}'s {:?} returned at {} us, before its call \
             at {} us",
            operation.key, operation.client, operation.action, return_us, operation.call_us
        ));
    }
    Ok(())
}

/// Checks one key's operations; `Ok` carries the steps the search took.
fn check_key(key: u64, operations: &[&Operation], steps_max: u64) -> Result<u64, String> {
    check_reads_of_unwritten_values(key, operations)?;
    let entries = entries_of(operations);
    match Search::new(&entries).run(steps_max) {
        Verdict::Linearizable { steps } => Ok(steps),
        Verdict::GaveUp { steps } => Err(format!(
            "key {key}: the search gave up after {steps} steps over {} operations, without a \
             verdict: too many of them are concurrent (or of unknown outcome) to try every order",
            entries.len()
        )),
        Verdict::NotLinearizable(stuck) => Err(explain(key, &entries, &stuck)),
    }
}

/// The search would find these too, but it could only say where it got stuck; a value that no
/// operation on the key wrote is worth saying plainly.
fn check_reads_of_unwritten_values(key: u64, operations: &[&Operation]) -> Result<(), String> {
    let written: HashSet<u64> = operations
        .iter()
        .filter_map(|operation| match operation.action {
            Action::Write(value) => value,
            Action::Read => None,
        })
        .collect();
    for operation in operations {
        if let Outcome::Read(Some(value)) = operation.outcome
            && !written.contains(&value)
        {
            return Err(format!(
                "key {key} is not linearizable: {} saw {value}, which no operation on key {key} \
                 wrote",
                describe(operation)
            ));
        }
    }
    Ok(())
}

/// One operation as the search sees it.
struct Entry<'a> {
    operation: &'a Operation,
    /// The latest time it can take effect; `u64::MAX` when there is none.
    deadline_us: u64,
    /// It must be linearized (its outcome is known); otherwise it may also be left out.
    required: bool,
    /// For an optional write, the optional write of the same value called just before it,
    /// which must be placed first (see `chain_interchangeable_writes`).
    placed_after: Option<usize>,
}

/// The reads that saw one value, as `unknown_write_entry` needs them.
#[derive(Clone, Copy)]
struct Readers {
    return_us_min: u64,
    return_us_max: u64,
}

/// The key's operations as entries: unanswered reads dropped, unknown writes bounded or
/// dropped (see `unknown_write_entry`).
fn entries_of<'a>(operations: &[&'a Operation]) -> Vec<Entry<'a>> {
    let mut readers: HashMap<Value, Readers> = HashMap::new();
    let mut writers: HashMap<Value, usize> = HashMap::new();
    for operation in operations {
        let return_us = operation.return_us.unwrap_or(u64::MAX);
        if let Outcome::Read(value) = operation.outcome {
            let seen = readers.entry(value).or_insert(Readers {
                return_us_min: return_us,
                return_us_max: return_us,
            });
            seen.return_us_min = seen.return_us_min.min(return_us);
            seen.return_us_max = seen.return_us_max.max(return_us);
        }
        if let Action::Write(value) = operation.action {
            *writers.entry(value).or_default() += 1;
        }
    }
    let mut entries = Vec::with_capacity(operations.len());
    for &operation in operations {
        match (operation.action, operation.outcome) {
            (Action::Read, Outcome::Unknown) => {}
            (Action::Write(value), Outcome::Unknown) => {
                let readers = readers.get(&value).copied();
                let sole_writer = value.is_some() && writers[&value] == 1;
                entries.extend(unknown_write_entry(operation, readers, sole_writer));
            }
            _ => entries.push(Entry {
                operation,
                deadline_us: operation.return_us.unwrap_or(u64::MAX),
                required: true,
                placed_after: None,
            }),
        }
    }
    chain_interchangeable_writes(&mut entries);
    entries
}

/// An unknown write may take effect at any time after its call, or never; left unbounded, it
/// would stay pending to the end of the history and multiply the states to search. But it
/// matters only through reads that see its value, so without losing any linearization:
/// - if no read saw its value, it is left out (after it, until the next write, no read
///   could come);
/// - if it is the only write of a value some read saw, it did take effect, before the first
///   such read returned;
/// - otherwise (a DEL, or a value written twice) it is optional, and placing it later than the
///   last read of its value would change nothing.
fn unknown_write_entry<'a>(
    operation: &'a Operation,
    readers: Option<Readers>,
    sole_writer: bool,
) -> Option<Entry<'a>> {
    let readers = readers?;
    if sole_writer {
        // A first read returned before the call cannot be explained; the search reports it.
        let deadline_us = readers.return_us_min.max(operation.call_us);
        return Some(Entry {
            operation,
            deadline_us,
            required: true,
            placed_after: None,
        });
    }
    if readers.return_us_max < operation.call_us {
        return None;
    }
    Some(Entry {
        operation,
        deadline_us: readers.return_us_max,
        required: false,
        placed_after: None,
    })
}

/// Optional writes of one value share a deadline (the last read of that value), so once
/// called they differ in nothing: where a linearization places one, the one called earlier
/// would do as well. Placing them in call order only, the search meets k + 1 subsets of k
/// such writes instead of 2^k (unanswered DELs, all of value absent, made it give up).
fn chain_interchangeable_writes(entries: &mut [Entry]) {
    let written = |entry: &Entry| match entry.operation.action {
        Action::Write(value) => value,
        Action::Read => unreachable!("only writes are optional"),
    };
    let mut optional: Vec<usize> = (0..entries.len())
        .filter(|&index| !entries[index].required)
        .collect();
    optional.sort_by_key(|&index| {
        (
            written(&entries[index]),
            entries[index].operation.call_us,
            index,
        )
    });
    for pair in optional.windows(2) {
        let (earlier, later) = (pair[0], pair[1]);
        if written(&entries[earlier]) == written(&entries[later]) {
            assert_eq!(entries[earlier].deadline_us, entries[later].deadline_us);
            entries[later].placed_after = Some(earlier);
        }
    }
}

/// The register after `operation`, or `None` when it cannot come next.
fn apply(value: Value, operation: &Operation) -> Option<Value> {
    match (operation.action, operation.outcome) {
        (Action::Write(written), _) => Some(written),
        (Action::Read, Outcome::Read(seen)) if seen == value => Some(value),
        _ => None,
    }
}

/// The list head; node `1 + 2i` is entry i's call and `2 + 2i` its deadline.
const HEAD: usize = 0;
/// Past the last node.
const END: usize = usize::MAX;

fn call_node(entry: usize) -> usize {
    1 + 2 * entry
}

fn entry_of(node: usize) -> usize {
    (node - 1) / 2
}

fn is_call(node: usize) -> bool {
    node % 2 == 1
}

/// The calls and deadlines of the entries still to place, in time order (a call before a
/// deadline at the same time, as precedence is strict): Porcupine's doubly linked list, over
/// arrays. Entries are lifted out when placed and put back, in reverse order, when the search
/// backtracks (Knuth's dancing links), so both are O(1).
struct Events {
    next: Vec<usize>,
    previous: Vec<usize>,
}

impl Events {
    fn new(entries: &[Entry]) -> Events {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * entries.len());
        for (index, entry) in entries.iter().enumerate() {
            assert!(
                entry.operation.call_us <= entry.deadline_us,
                "a deadline precedes its call"
            );
            order.push((entry.operation.call_us, false, call_node(index)));
            order.push((entry.deadline_us, true, call_node(index) + 1));
        }
        order.sort_unstable();
        let nodes = 1 + order.len();
        let mut events = Events {
            next: vec![END; nodes],
            previous: vec![HEAD; nodes],
        };
        let mut last = HEAD;
        for &(_, _, node) in &order {
            events.next[last] = node;
            events.previous[node] = last;
            last = node;
        }
        events
    }

    fn first(&self) -> usize {
        self.next[HEAD]
    }

    fn remove(&mut self, node: usize) {
        let (previous, next) = (self.previous[node], self.next[node]);
        self.next[previous] = next;
        if next != END {
            self.previous[next] = previous;
        }
    }

    fn restore(&mut self, node: usize) {
        let (previous, next) = (self.previous[node], self.next[node]);
        self.next[previous] = node;
        if next != END {
            self.previous[next] = node;
        }
    }

    fn lift(&mut self, entry: usize) {
        self.remove(call_node(entry));
        self.remove(call_node(entry) + 1);
    }

    fn unlift(&mut self, entry: usize) {
        self.restore(call_node(entry) + 1);
        self.restore(call_node(entry));
    }
}

/// One placed entry, with what backtracking needs to undo it.
struct Frame {
    entry: usize,
    /// A read placed by `place_a_matching_read`: when it fails, so does the state before it.
    forced: bool,
    value_before: Value,
    /// Where this frame's entries in `Search::left_out` begin.
    left_out_from: usize,
}

/// The deepest point the search reached, for the explanation.
struct Stuck {
    /// How many entries were placed.
    placed: usize,
    value: Value,
    /// The required entry with the earliest deadline among those not placed.
    entry: usize,
    /// The other entries that could have come next (called before that deadline).
    candidates: Vec<usize>,
    /// The last few placed entries, oldest first.
    placed_tail: Vec<usize>,
}

enum Verdict {
    Linearizable { steps: u64 },
    NotLinearizable(Stuck),
    GaveUp { steps: u64 },
}

/// One key's search state. Optional entries whose deadline the chosen next entry's call is past
/// can no longer be placed: they are lifted out with it (`left_out`), so which entries are
/// still listed depends only on the placed set, and the memo's (placed set, value) stays exact.
struct Search<'a> {
    entries: &'a [Entry<'a>],
    events: Events,
    /// The placed entries, one bit each.
    placed: Vec<u64>,
    /// (placed, value) states already explored from.
    seen: HashSet<(Box<[u64]>, Value)>,
    frames: Vec<Frame>,
    left_out: Vec<usize>,
    /// Optional entries whose deadline the current scan has passed.
    passed: Vec<usize>,
    value: Value,
    required_left: usize,
    steps: u64,
    deepest: Option<Stuck>,
}

impl<'a> Search<'a> {
    fn new(entries: &'a [Entry<'a>]) -> Search<'a> {
        Search {
            entries,
            events: Events::new(entries),
            placed: vec![0; entries.len().div_ceil(64)],
            seen: HashSet::new(),
            frames: Vec::new(),
            left_out: Vec::new(),
            passed: Vec::new(),
            value: None,
            required_left: entries.iter().filter(|entry| entry.required).count(),
            steps: 0,
            deepest: None,
        }
    }

    /// From each new state, first a read that may come next and sees the register's value is
    /// placed, with no alternative; otherwise each call listed before the first deadline of a
    /// required entry is a candidate, in turn. A dead end backtracks.
    fn run(mut self, steps_max: u64) -> Verdict {
        // Where the scan of a state returned to by backtracking goes on.
        let mut resume = None;
        while self.required_left > 0 {
            if self.steps >= steps_max {
                return Verdict::GaveUp { steps: self.steps };
            }
            let cursor = match resume.take() {
                Some(cursor) => cursor,
                None => match self.place_a_matching_read() {
                    Some(true) => continue,
                    // The state after that read was seen, and so failed (the current path
                    // only grows): this one fails with it.
                    Some(false) => END,
                    None => self.events.first(),
                },
            };
            if cursor != END && self.place_a_candidate(cursor, steps_max) {
                continue;
            }
            if self.steps >= steps_max {
                return Verdict::GaveUp { steps: self.steps };
            }
            let Some(next) = self.backtrack() else {
                let stuck = self.deepest.take().expect("the first dead end is noted");
                return Verdict::NotLinearizable(stuck);
            };
            resume = Some(next);
        }
        let placed: u32 = self.placed.iter().map(|word| word.count_ones()).sum();
        assert_eq!(
            placed as usize,
            self.frames.len(),
            "one bit per placed entry"
        );
        Verdict::Linearizable { steps: self.steps }
    }

    /// A read that may come next and sees the register's value can be moved to the front of
    /// any linearization from here: it changes nothing, and what it must follow is placed.
    /// `Some(placed)` if there is one, `None` if not.
    fn place_a_matching_read(&mut self) -> Option<bool> {
        self.passed.clear();
        let mut node = self.events.first();
        loop {
            self.steps += 1;
            assert!(
                node != END,
                "a required entry's deadline is listed until it is placed"
            );
            let entry = entry_of(node);
            let operation = self.entries[entry].operation;
            if is_call(node) {
                if operation.action == Action::Read && apply(self.value, operation).is_some() {
                    return Some(self.place(entry, true));
                }
            } else if self.entries[entry].required {
                return None;
            } else {
                self.passed.push(entry);
            }
            node = self.events.next[node];
        }
    }

    /// Scans from `cursor` and places the first candidate it can; `false` at the first
    /// deadline of a required entry (a dead end) or when the budget is spent.
    fn place_a_candidate(&mut self, mut cursor: usize, steps_max: u64) -> bool {
        if cursor == self.events.first() {
            self.passed.clear();
        }
        while self.steps < steps_max {
            self.steps += 1;
            assert!(
                cursor != END,
                "a required entry's deadline is listed until it is placed"
            );
            let entry = entry_of(cursor);
            if is_call(cursor) {
                if self.place(entry, false) {
                    return true;
                }
            } else if self.entries[entry].required {
                self.note_if_deepest(cursor);
                return false;
            } else {
                self.passed.push(entry);
            }
            cursor = self.events.next[cursor];
        }
        false
    }

    /// Places `entry` next if the register allows it and the resulting state is new.
    fn place(&mut self, entry: usize, forced: bool) -> bool {
        if let Some(earlier) = self.entries[entry].placed_after
            && !bit(&self.placed, earlier)
        {
            return false;
        }
        let Some(value_after) = apply(self.value, self.entries[entry].operation) else {
            return false;
        };
        set_bit(&mut self.placed, entry, true);
        if !self
            .seen
            .insert((self.placed.clone().into_boxed_slice(), value_after))
        {
            set_bit(&mut self.placed, entry, false);
            return false;
        }
        // Every optional entry whose deadline the scan passed is before this call: left out.
        let left_out_from = self.left_out.len();
        for &passed in &self.passed {
            assert!(
                !bit(&self.placed, passed),
                "a placed entry is no longer listed"
            );
            self.events.lift(passed);
            self.left_out.push(passed);
        }
        self.passed.clear();
        self.events.lift(entry);
        self.frames.push(Frame {
            entry,
            forced,
            value_before: self.value,
            left_out_from,
        });
        self.value = value_after;
        if self.entries[entry].required {
            self.required_left -= 1;
        }
        true
    }

    /// Undoes placements back to the last state with candidates left, and returns where its
    /// scan resumes (after the call undone), or `None` when nothing is placed.
    fn backtrack(&mut self) -> Option<usize> {
        loop {
            let frame = self.frames.pop()?;
            self.events.unlift(frame.entry);
            let left_out = &self.left_out[frame.left_out_from..];
            for &entry in left_out.iter().rev() {
                self.events.unlift(entry);
            }
            // That scan had passed exactly the deadlines it left out.
            self.passed.clear();
            self.passed.extend_from_slice(left_out);
            self.left_out.truncate(frame.left_out_from);
            set_bit(&mut self.placed, frame.entry, false);
            self.value = frame.value_before;
            if self.entries[frame.entry].required {
                self.required_left += 1;
            }
            if !frame.forced {
                return Some(self.events.next[call_node(frame.entry)]);
            }
        }
    }

    /// Remembers the deepest dead end, whose deadline node is `cursor`.
    fn note_if_deepest(&mut self, cursor: usize) {
        if let Some(deepest) = &self.deepest
            && deepest.placed >= self.frames.len()
        {
            return;
        }
        let entry = entry_of(cursor);
        let mut candidates = Vec::new();
        let mut node = self.events.first();
        while node != cursor {
            if is_call(node) && entry_of(node) != entry {
                candidates.push(entry_of(node));
            }
            node = self.events.next[node];
        }
        let tail_from = self.frames.len().saturating_sub(EXPLANATION_OPERATIONS_MAX);
        self.deepest = Some(Stuck {
            placed: self.frames.len(),
            value: self.value,
            entry,
            candidates,
            placed_tail: self.frames[tail_from..]
                .iter()
                .map(|frame| frame.entry)
                .collect(),
        });
    }
}

fn bit(bits: &[u64], index: usize) -> bool {
    bits[index / 64] & (1 << (index % 64)) != 0
}

fn set_bit(bits: &mut [u64], index: usize, on: bool) {
    if on {
        bits[index / 64] |= 1 << (index % 64);
    } else {
        bits[index / 64] &= !(1 << (index % 64));
    }
}

/// The Err for a key whose search failed: where the deepest attempt got stuck, what was
/// pending with it, and the end of the order that led there.
fn explain(key: u64, entries: &[Entry], stuck: &Stuck) -> String {
    let mut text = format!(
        "key {key} is not linearizable: the search placed at most {} of its {} operations, \
         leaving the register {}; then this operation, the first still due to return, could \
         not come next:\n  {}",
        stuck.placed,
        entries.len(),
        show_register(stuck.value),
        describe(entries[stuck.entry].operation)
    );
    if !stuck.candidates.is_empty() {
        text.push_str("\nand placing any of these before it led to no linearization either:");
        list(&mut text, entries, &stuck.candidates);
    }
    if !stuck.placed_tail.is_empty() {
        text.push_str("\nthe order placed so far ends with:");
        list(&mut text, entries, &stuck.placed_tail);
    }
    text
}

fn list(text: &mut String, entries: &[Entry], indices: &[usize]) {
    for &index in indices.iter().take(EXPLANATION_OPERATIONS_MAX) {
        text.push_str("\n  ");
        text.push_str(&describe(entries[index].operation));
    }
    if indices.len() > EXPLANATION_OPERATIONS_MAX {
        let more = indices.len() - EXPLANATION_OPERATIONS_MAX;
        text.push_str(&format!("\n  and {more} more"));
    }
}

fn show_register(value: Value) -> String {
    match value {
        Some(value) => format!("holding {value}"),
        None => "absent".to_string(),
    }
}

fn show(value: Value) -> String {
    match value {
        Some(value) => value.to_string(),
        None => "absent".to_string(),
    }
}

/// One operation on one line, e.g. "client 2 read 7, called at 100 us, returned at 180 us".
fn describe(operation: &Operation) -> String {
    let what = match (operation.action, operation.outcome) {
        (Action::Read, Outcome::Read(seen)) => format!("read {}", show(seen)),
        (Action::Read, _) => "read (no answer)".to_string(),
        (Action::Write(None), Outcome::Written) => "delete".to_string(),
        (Action::Write(Some(value)), Outcome::Written) => format!("write {value}"),
        (Action::Write(None), _) => "delete (outcome unknown)".to_string(),
        (Action::Write(Some(value)), _) => format!("write {value} (outcome unknown)"),
    };
    let returned = match operation.return_us {
        Some(return_us) => format!("returned at {return_us} us"),
        None => "never returned".to_string(),
    };
    format!(
        "client {} {what}, called at {} us, {returned}",
        operation.client, operation.call_us
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::time::Instant;

    fn read(client: u32, key: u64, call_us: u64, return_us: u64, seen: Value) -> Operation {
        Operation {
            client,
            key,
            action: Action::Read,
            call_us,
            return_us: Some(return_us),
            outcome: Outcome::Read(seen),
        }
    }

    fn write(client: u32, key: u64, value: Value, call_us: u64, return_us: u64) -> Operation {
        Operation {
            client,
            key,
            action: Action::Write(value),
            call_us,
            return_us: Some(return_us),
            outcome: Outcome::Written,
        }
    }

    fn unknown_write(
        client: u32,
        key: u64,
        value: Value,
        call_us: u64,
        return_us: Option<u64>,
    ) -> Operation {
        Operation {
            client,
            key,
            action: Action::Write(value),
            call_us,
            return_us,
            outcome: Outcome::Unknown,
        }
    }

    fn assert_not_linearizable(history: &[Operation], key: u64) -> String {
        let error = check(history).expect_err("not linearizable");
        assert!(
            error.starts_with(&format!("key {key} is not linearizable")),
            "{error}"
        );
        error
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let history = [
            read(0, 1, 0, 5, None),
            write(1, 1, Some(1), 10, 20),
            read(0, 1, 30, 40, Some(1)),
            write(0, 1, Some(2), 50, 60),
            read(1, 1, 70, 80, Some(2)),
        ];
        assert_eq!(check(&history), Ok(()));
        assert_eq!(check(&[]), Ok(()));
    }

    #[test]
    fn a_read_of_a_value_never_written_is_not_linearizable() {
        let history = [write(0, 1, Some(1), 0, 10), read(1, 1, 20, 30, Some(7))];
        let error = assert_not_linearizable(&history, 1);
        assert!(error.contains("client 1 read 7, called at 20 us, returned at 30 us"));
        assert!(
            error.contains("which no operation on key 1 wrote"),
            "{error}"
        );
    }

    /// Both writes returned before the read was called, in order: the read must see 2.
    #[test]
    fn a_stale_read_after_a_later_write_returned_is_not_linearizable() {
        let history = [
            write(0, 1, Some(1), 0, 10),
            write(1, 1, Some(2), 20, 30),
            read(2, 1, 40, 50, Some(1)),
        ];
        let error = assert_not_linearizable(&history, 1);
        assert!(
            error.contains("placed at most 2 of its 3 operations"),
            "{error}"
        );
        assert!(error.contains("leaving the register holding 2"), "{error}");
        assert!(error.contains("client 2 read 1, called at 40 us, returned at 50 us"));
        assert!(error.contains("client 1 write 2, called at 20 us, returned at 30 us"));
    }

    /// The read overlaps the write of 2: it may take effect before it (seeing 1) or after.
    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        for seen in [Some(1), Some(2)] {
            let history = [
                write(0, 1, Some(1), 0, 10),
                write(0, 1, Some(2), 20, 40),
                read(1, 1, 25, 35, seen),
            ];
            assert_eq!(check(&history), Ok(()), "seeing {seen:?}");
        }
        // Nor is it absent: the write of 1 returned before the read was called.
        let history = [
            write(0, 1, Some(1), 0, 10),
            write(0, 1, Some(2), 20, 40),
            read(1, 1, 25, 35, None),
        ];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn an_unknown_write_seen_by_a_later_read_is_linearizable() {
        let history = [
            write(0, 1, Some(1), 0, 10),
            unknown_write(1, 1, Some(2), 20, None),
            read(2, 1, 30, 40, Some(2)),
        ];
        assert_eq!(check(&history), Ok(()));
        // An error reply does not mean it failed: it may still take effect later.
        let history = [
            write(0, 1, Some(1), 0, 10),
            unknown_write(1, 1, Some(2), 20, Some(25)),
            read(2, 1, 30, 40, Some(1)),
            read(2, 1, 100, 110, Some(2)),
        ];
        assert_eq!(check(&history), Ok(()));
    }

    #[test]
    fn an_unknown_write_never_seen_is_linearizable() {
        let history = [
            write(0, 1, Some(1), 0, 10),
            unknown_write(1, 1, Some(2), 20, None),
            read(2, 1, 30, 40, Some(1)),
            read(2, 1, 100, 110, Some(1)),
        ];
        assert_eq!(check(&history), Ok(()));
    }

    /// Once a read saw 2, the unknown write took effect before it; 1 is never written again.
    #[test]
    fn an_unknown_write_seen_then_the_older_value_again_is_not_linearizable() {
        let history = [
            write(0, 1, Some(1), 0, 10),
            unknown_write(1, 1, Some(2), 20, None),
            read(2, 1, 30, 40, Some(2)),
            read(2, 1, 50, 60, Some(1)),
        ];
        let error = assert_not_linearizable(&history, 1);
        assert!(
            error.contains("client 2 read 1, called at 50 us"),
            "{error}"
        );
        assert!(error.contains("leaving the register holding 2"), "{error}");
    }

    /// The write of 2 is still running when both reads are, but once the first read has seen
    /// it, a read called after that one returned cannot see the value it replaced.
    #[test]
    fn a_later_read_seeing_an_older_value_than_an_earlier_read_is_not_linearizable() {
        let history = [
            write(0, 1, Some(1), 0, 10),
            write(0, 1, Some(2), 20, 100),
            read(1, 1, 30, 40, Some(2)),
            read(2, 1, 50, 60, Some(1)),
        ];
        assert_not_linearizable(&history, 1);
        // The other way round is fine: the write took effect between the reads.
        let history = [
            write(0, 1, Some(1), 0, 10),
            write(0, 1, Some(2), 20, 100),
            read(1, 1, 30, 40, Some(1)),
            read(2, 1, 50, 60, Some(2)),
        ];
        assert_eq!(check(&history), Ok(()));
    }

    #[test]
    fn a_delete_then_a_read_of_absent_is_linearizable() {
        let history = [
            write(0, 1, Some(1), 0, 10),
            write(0, 1, None, 20, 30),
            read(1, 1, 40, 50, None),
        ];
        assert_eq!(check(&history), Ok(()));
        let history = [
            write(0, 1, Some(1), 0, 10),
            write(0, 1, None, 20, 30),
            read(1, 1, 40, 50, Some(1)),
        ];
        assert_not_linearizable(&history, 1);
    }

    /// An unknown DEL is not the only way to absent (so it stays optional): it may have taken
    /// effect between two reads, but not before a read of 1 that follows a read of absent.
    #[test]
    fn an_unknown_delete_may_take_effect_or_not() {
        let took_effect_late = [
            write(0, 1, Some(1), 0, 10),
            unknown_write(1, 1, None, 20, None),
            read(2, 1, 30, 40, Some(1)),
            read(2, 1, 50, 60, None),
        ];
        assert_eq!(check(&took_effect_late), Ok(()));
        let flip_flop = [
            write(0, 1, Some(1), 0, 10),
            unknown_write(1, 1, None, 20, None),
            read(2, 1, 30, 40, None),
            read(2, 1, 50, 60, Some(1)),
        ];
        assert_not_linearizable(&flip_flop, 1);
        // Absent before the first write needs no DEL; the DEL then never takes effect.
        let never = [
            read(2, 1, 0, 5, None),
            write(0, 1, Some(1), 10, 20),
            unknown_write(1, 1, None, 30, None),
            read(2, 1, 40, 50, Some(1)),
        ];
        assert_eq!(check(&never), Ok(()));
    }

    /// Merged into one register these would fail (the read of key 1 follows the write of 20);
    /// each key alone is sequential.
    #[test]
    fn keys_are_checked_independently() {
        let mut history = vec![
            write(0, 1, Some(10), 0, 10),
            write(1, 2, Some(20), 5, 15),
            read(0, 1, 20, 30, Some(10)),
            read(1, 2, 25, 35, Some(20)),
            read(2, 3, 25, 35, None),
        ];
        assert_eq!(check(&history), Ok(()));
        history.push(write(2, 2, Some(21), 40, 50));
        history.push(read(0, 2, 60, 70, Some(20)));
        let error = assert_not_linearizable(&history, 2);
        assert!(!error.contains("key 1"), "{error}");
        // A value of another key was never written to this one.
        let history = [write(0, 1, Some(10), 0, 10), read(0, 2, 20, 30, Some(10))];
        assert_not_linearizable(&history, 2);
    }

    #[test]
    fn a_read_without_an_answer_constrains_nothing() {
        let mut unanswered = read(1, 1, 20, 30, Some(99));
        unanswered.outcome = Outcome::Unknown;
        unanswered.return_us = None;
        let history = [write(0, 1, Some(1), 0, 10), unanswered];
        assert_eq!(check(&history), Ok(()));
    }

    #[test]
    fn a_malformed_operation_is_refused_not_searched() {
        let mut read_written = read(1, 1, 20, 30, None);
        read_written.outcome = Outcome::Written;
        let error = check(&[read_written]).expect_err("malformed");
        assert!(error.starts_with("key 1: malformed history"), "{error}");
        let backwards = write(0, 1, Some(1), 30, 20);
        let error = check(&[backwards]).expect_err("malformed");
        assert!(error.contains("before its call"), "{error}");
    }

    /// Twelve concurrent writes, then reads of 1 and of 2: every write precedes both reads, so
    /// the second read cannot see 2 — but only after trying the writes' orders (about
    /// 12 × 2^11 states).
    #[test]
    fn a_search_over_its_budget_gives_up_and_says_so() {
        let mut history: Vec<Operation> = (1..=12)
            .map(|value| write(value as u32, 1, Some(value), 0, 100))
            .collect();
        history.push(read(0, 1, 200, 300, Some(1)));
        history.push(read(0, 1, 400, 500, Some(2)));
        let operations: Vec<&Operation> = history.iter().collect();
        let error = check_key(1, &operations, 1_000).expect_err("over budget");
        assert!(
            error.starts_with("key 1: the search gave up after "),
            "{error}"
        );
        let error = assert_not_linearizable(&history, 1);
        assert!(error.contains("placed at most 13 of its 14"), "{error}");
    }

    /// xorshift64, so that the tests need no crate; seeds are spread by a multiply.
    struct Xorshift(u64);

    impl Xorshift {
        fn new(seed: u64) -> Xorshift {
            let mut random = Xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            for _ in 0..4 {
                random.next();
            }
            random
        }

        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    struct Planned {
        operation: Operation,
        point_us: u64,
        unknown: bool,
        takes_effect: bool,
    }

    /// One client's operations, one after another, each with the point inside its interval
    /// where it will take effect (if it does).
    fn plan_client(
        random: &mut Xorshift,
        client: u32,
        operations: usize,
        keys: u64,
    ) -> Vec<Planned> {
        let mut planned = Vec::with_capacity(operations);
        let mut free_us = 0;
        for _ in 0..operations {
            let call_us = free_us + 1 + random.below(20);
            let point_us = call_us + random.below(30);
            free_us = point_us + random.below(30);
            let action = match random.below(100) {
                0..50 => Action::Read,
                // Distinct values: unique enough across clients, and never 0.
                50..85 => Action::Write(Some((random.next() >> 8) + 1)),
                _ => Action::Write(None),
            };
            let unknown = random.chance(if action == Action::Read { 5 } else { 15 });
            let return_us = match unknown && random.chance(50) {
                true => None,
                false => Some(free_us),
            };
            let operation = Operation {
                client,
                key: random.below(keys),
                action,
                call_us,
                return_us,
                outcome: Outcome::Unknown,
            };
            let takes_effect = !unknown || random.chance(50);
            planned.push(Planned {
                operation,
                point_us,
                unknown,
                takes_effect,
            });
        }
        planned
    }

    /// A history a correct store could give: the planned operations run in the order of their
    /// points on one sequential register per key, which fills in the outcomes.
    fn register_history(seed: u64, clients: u32, operations: usize, keys: u64) -> Vec<Operation> {
        let mut random = Xorshift::new(seed);
        let mut planned: Vec<Planned> = (0..clients)
            .flat_map(|client| plan_client(&mut random, client, operations, keys))
            .collect();
        planned.sort_by_key(|planned| (planned.point_us, planned.operation.client));
        let mut registers: HashMap<u64, Value> = HashMap::new();
        for planned in &mut planned {
            let operation = &mut planned.operation;
            let register = registers.entry(operation.key).or_default();
            operation.outcome = match (operation.action, planned.unknown) {
                (_, true) => Outcome::Unknown,
                (Action::Read, false) => Outcome::Read(*register),
                (Action::Write(_), false) => Outcome::Written,
            };
            if let Action::Write(value) = operation.action
                && planned.takes_effect
            {
                *register = value;
            }
        }
        // Handed over in client order, so that nothing leans on the order of the points.
        planned.sort_by_key(|planned| (planned.operation.client, planned.operation.call_us));
        planned
            .into_iter()
            .map(|planned| planned.operation)
            .collect()
    }

    #[test]
    fn histories_of_a_sequential_register_are_linearizable() {
        let started = Instant::now();
        for seed in 0..200 {
            let history = register_history(seed, 4, 60, 3);
            assert_eq!(check(&history), Ok(()), "seed {seed}");
        }
        eprintln!("200 histories of 240 operations: {:?}", started.elapsed());
    }

    /// Four clients, 400 operations, one key: the memo keeps the search near-linear.
    #[test]
    fn a_few_hundred_operations_on_one_key_take_few_steps() {
        let started = Instant::now();
        let mut steps_max = 0;
        for seed in 0..20 {
            let history = register_history(seed, 4, 100, 1);
            let operations: Vec<&Operation> = history.iter().collect();
            let steps = check_key(0, &operations, SEARCH_STEPS_MAX).expect("linearizable");
            assert!(
                steps <= 20 * history.len() as u64,
                "seed {seed}: {steps} steps"
            );
            steps_max = steps_max.max(steps);
        }
        eprintln!(
            "20 keys of 400 operations: {steps_max} steps at most, {:?}",
            started.elapsed()
        );
    }

    enum Mutation {
        /// A value written only by a write called after the read returned.
        Future,
        /// A value overwritten by an acknowledged write that returned before the read's call.
        Stale,
        /// A value no write wrote.
        Fresh,
    }

    /// A value of `read`'s key written only by a write called after `read` returned.
    fn value_written_after(history: &[Operation], read: &Operation) -> Option<u64> {
        let read_return_us = read.return_us.expect("answered reads returned");
        history.iter().find_map(|other| match other.action {
            Action::Write(Some(value))
                if other.key == read.key && other.call_us > read_return_us =>
            {
                Some(value)
            }
            _ => None,
        })
    }

    /// A value of `read`'s key whose acknowledged write was followed by another acknowledged
    /// write, which returned before `read` was called.
    fn value_overwritten_before(history: &[Operation], read: &Operation) -> Option<u64> {
        let acknowledged = |operation: &&Operation| {
            operation.key == read.key && operation.outcome == Outcome::Written
        };
        history.iter().filter(acknowledged).find_map(|older| {
            let (Action::Write(Some(value)), Some(older_return_us)) =
                (older.action, older.return_us)
            else {
                return None;
            };
            let overwritten = history.iter().filter(acknowledged).any(|newer| {
                older_return_us < newer.call_us
                    && newer
                        .return_us
                        .is_some_and(|return_us| return_us < read.call_us)
            });
            overwritten.then_some(value)
        })
    }

    /// Makes one answered read see a value it cannot have seen, of the kind preferred if it
    /// can.
    fn mutate_one_read(
        history: &mut [Operation],
        random: &mut Xorshift,
        prefer_stale: bool,
    ) -> Mutation {
        let reads: Vec<usize> = (0..history.len())
            .filter(|&index| matches!(history[index].outcome, Outcome::Read(_)))
            .collect();
        let chosen = reads[random.below(reads.len() as u64) as usize];
        let future =
            value_written_after(history, &history[chosen]).map(|value| (value, Mutation::Future));
        let stale = value_overwritten_before(history, &history[chosen])
            .map(|value| (value, Mutation::Stale));
        let (value, mutation) = match prefer_stale {
            true => stale.or(future),
            false => future.or(stale),
        }
        .unwrap_or((0, Mutation::Fresh));
        history[chosen].outcome = Outcome::Read(Some(value));
        mutation
    }

    #[test]
    fn a_register_history_with_one_read_mutated_is_not_linearizable() {
        let (mut future, mut stale) = (0, 0);
        for seed in 0..60 {
            let mut history = register_history(seed, 4, 30, 2);
            let mut random = Xorshift::new(seed + 1_000_000);
            match mutate_one_read(&mut history, &mut random, seed % 2 == 0) {
                Mutation::Future => future += 1,
                Mutation::Stale => stale += 1,
                Mutation::Fresh => {}
            }
            let error = check(&history).expect_err(&format!("seed {seed}"));
            assert!(
                error.contains("is not linearizable"),
                "seed {seed}: {error}"
            );
        }
        assert!(
            future >= 10 && stale >= 10,
            "future {future}, stale {stale}"
        );
    }

    /// Tries every order of every subset of operations that holds all the answered ones, by the
    /// definition and with no pruning: an oracle for histories of a few operations.
    fn linearizable_by_brute_force(history: &[Operation]) -> bool {
        let keys: BTreeSet<u64> = history.iter().map(|operation| operation.key).collect();
        keys.into_iter().all(|key| {
            let operations: Vec<&Operation> = history
                .iter()
                .filter(|operation| operation.key == key)
                .filter(|operation| {
                    operation.action != Action::Read || operation.outcome != Outcome::Unknown
                })
                .collect();
            extend_by_brute_force(&operations, &mut vec![false; operations.len()], None)
        })
    }

    fn extend_by_brute_force(operations: &[&Operation], placed: &mut [bool], value: Value) -> bool {
        let answered = |operation: &Operation| operation.outcome != Outcome::Unknown;
        let unplaced = |index: usize, placed: &[bool]| !placed[index];
        if (0..operations.len()).all(|index| placed[index] || !answered(operations[index])) {
            return true;
        }
        for index in 0..operations.len() {
            if placed[index] {
                continue;
            }
            let candidate = operations[index];
            // An answered operation still to place that returned before this call must come
            // first; an unknown one never has to.
            let must_wait = (0..operations.len()).any(|other| {
                unplaced(other, placed)
                    && answered(operations[other])
                    && operations[other]
                        .return_us
                        .is_some_and(|return_us| return_us < candidate.call_us)
            });
            let value_after = match (candidate.action, candidate.outcome) {
                (Action::Write(written), _) => written,
                (Action::Read, Outcome::Read(seen)) if seen == value => value,
                _ => continue,
            };
            if must_wait {
                continue;
            }
            placed[index] = true;
            let found = extend_by_brute_force(operations, placed, value_after);
            placed[index] = false;
            if found {
                return true;
            }
        }
        false
    }

    /// How `small_random_history` draws.
    struct Profile {
        keys: u64,
        /// Writes draw values from 1 to this, reads from 0 (absent) to this.
        values: u64,
        unknown_percent: u64,
    }

    /// Two keys and four values; one key, two values and many unknown outcomes, so that
    /// optional writes of one value (chained in call order) are common.
    const PROFILES: [Profile; 2] = [
        Profile {
            keys: 2,
            values: 4,
            unknown_percent: 25,
        },
        Profile {
            keys: 1,
            values: 2,
            unknown_percent: 45,
        },
    ];

    /// A few operations with random intervals, values (some written twice, some never) and
    /// outcomes: a good share are not linearizable.
    fn small_random_history(random: &mut Xorshift, profile: &Profile) -> Vec<Operation> {
        let count = 2 + random.below(6);
        let mut history = Vec::new();
        for index in 0..count {
            let call_us = random.below(40);
            let return_us = call_us + random.below(25);
            let action = match random.below(10) {
                0..5 => Action::Read,
                5..8 => Action::Write(Some(1 + random.below(profile.values))),
                _ => Action::Write(None),
            };
            let outcome = match (action, random.chance(profile.unknown_percent)) {
                (_, true) => Outcome::Unknown,
                (Action::Read, false) => {
                    Outcome::Read(random.below(profile.values + 1).checked_sub(1))
                }
                (Action::Write(_), false) => Outcome::Written,
            };
            let return_us = match outcome == Outcome::Unknown && random.chance(50) {
                true => None,
                false => Some(return_us),
            };
            history.push(Operation {
                client: index as u32,
                key: random.below(profile.keys),
                action,
                call_us,
                return_us,
                outcome,
            });
        }
        history
    }

    #[test]
    fn the_search_agrees_with_brute_force_on_small_random_histories() {
        for (number, profile) in PROFILES.iter().enumerate() {
            let (mut linearizable, mut not) = (0, 0);
            for seed in 0..20_000 {
                let mut random = Xorshift::new(seed);
                let history = small_random_history(&mut random, profile);
                let expected = linearizable_by_brute_force(&history);
                let verdict = check(&history);
                let context = format!("profile {number}, seed {seed}: {history:#?}\n{verdict:?}");
                assert_eq!(verdict.is_ok(), expected, "{context}");
                match verdict {
                    Ok(()) => linearizable += 1,
                    Err(error) if error.contains("is not linearizable") => not += 1,
                    Err(_) => panic!("{context}"),
                }
            }
            assert!(
                linearizable >= 4_000 && not >= 4_000,
                "profile {number}: {linearizable} and {not}"
            );
        }
    }
}
