//! Coordinating a client's request on any node: the key's replicas are asked directly.
//!
//! The register is ABD's, multi-writer (Attiya, Bar-Noy and Dolev; Lynch and Shvartsman):
//! - a **read** asks every replica that is up for the key's version and value and waits for
//!   `R` answers. If at least `W` of them hold the newest version it is the answer; otherwise
//!   the newest version is first written back until `W` replicas hold it (the write-back), so
//!   no later read can return anything older;
//! - a **write** (SET, DEL) first asks the replicas for their versions (`R` answers), then
//!   stamps the write with a version above the newest seen (the hybrid logical clock,
//!   `hlc.rs`) and acknowledges once `W` replicas hold it.
//!
//! With `R + W > N` every read quorum meets every write quorum, so single-key GET/SET/DEL are
//! linearizable while at most `N − W` replicas of the key are down (and `N − R` for reads).
//! Replicas apply a write only if its version is newer, so a late or repeated message changes
//! nothing. A request that cannot gather its quorum within `request_timeout_us` fails:
//! `CLUSTERDOWN` when it can have had no effect (a read, or a write before its second phase),
//! `TRYAGAIN` when it may have (a write in its second phase or a read's write-back) — a client
//! must treat that write as possibly applied.
//!
//! A connection's commands take effect in its order: a command waits to start while an
//! earlier command of the same connection on the same key is unfinished, and answers leave in
//! the order the commands came.

use std::collections::{HashMap, VecDeque};

use slab::Slab;

use crate::node::{ClientId, Micros, NodeId};
use crate::roles::kv::hlc::Hlc;
use crate::roles::kv::placement::REPLICAS_MAX;
use crate::wire::kv::{OP_DEL, OP_GET, OP_SET, OP_VERSION, Op, OpResult, STATUS_VALUE};

/// A request's id on the wire: its slot, and the phase it is in, so that a late answer to an
/// earlier phase (or an earlier request in the same slot) is ignored.
fn request_id(slot: usize, serial: u32) -> u64 {
    (serial as u64) << 32 | slot as u64
}

pub const CLUSTERDOWN: &str = "CLUSTERDOWN too few replicas of the key answered; no effect";
pub const TRYAGAIN: &str = "TRYAGAIN the write reached too few replicas; it may have taken effect";
pub const READ_FAILED: &str = "CLUSTERDOWN too few replicas of the key answered";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Get,
    Exists,
    Set,
    Del,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for an earlier command of its connection on the same key.
    Deferred,
    /// A read: versions and values.
    Read,
    /// A read's write-back of the newest version.
    WriteBack,
    /// A write's first phase: versions.
    Query,
    /// A write's second phase.
    Write,
    Done,
}

/// What a client is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Ok,
    Nil,
    Value(Vec<u8>),
    Integer(i64),
    Status(&'static str),
    Error(&'static str),
    /// An error whose text was made at run time (a request the parser refused).
    ErrorText(String),
    /// INFO's lines.
    Lines(String),
    /// An empty array (`COMMAND DOCS`, `CONFIG GET` of a parameter this store has not).
    Empty,
    /// `OK`, and then data node `n` is told to exit (KILL): in the connection's order.
    Kill(NodeId),
    /// `OK`, and then this node stops (after telling the data nodes to, on a front door).
    Shutdown,
}

struct Request {
    client: ClientId,
    action: Action,
    key: Vec<u8>,
    value: Vec<u8>,
    phase: Phase,
    serial: u32,
    replicas: [NodeId; REPLICAS_MAX],
    replica_count: usize,
    /// Bit `i`: `replicas[i]` was asked in this phase; has answered; holds `best_version`.
    asked: u8,
    answered: u8,
    holders: u8,
    /// The newest answer so far: version, whether a value, the value.
    best_version: u64,
    best_present: bool,
    best_value: Vec<u8>,
    /// Answers that held `best_version` (reads), or acknowledgements (writes, write-backs).
    holding: usize,
    /// Was the key a value (DEL's answer).
    existed: bool,
    deadline: Micros,
    answer: Option<Answer>,
}

/// What the coordinator asks of its node: ops to send and the replicas that are up.
pub trait Replicas {
    /// The key's replicas, primary first.
    fn replicas_of(&self, key: &[u8], out: &mut [NodeId; REPLICAS_MAX]) -> usize;
    fn is_up(&self, node: NodeId) -> bool;
    fn send_op(&mut self, to: NodeId, op: &Op<'_>);
}

pub struct Coordinator {
    requests: Slab<Request>,
    /// Per client, what it is owed, in order: a finished answer or a request.
    owed: HashMap<ClientId, VecDeque<Owed>>,
    serial: u32,
    /// Clients that may have an answer due: only they are looked at when answers are drained.
    due: Vec<ClientId>,
    pub write_quorum: usize,
    pub read_quorum: usize,
    pub request_timeout_us: Micros,
    /// Counts for INFO.
    pub write_backs: u64,
    pub timeouts: u64,
}

enum Owed {
    Ready(Answer),
    Request(usize),
}

impl Coordinator {
    pub fn new(write_quorum: usize, read_quorum: usize, request_timeout_us: Micros) -> Self {
        Coordinator {
            requests: Slab::with_capacity(1024),
            owed: HashMap::new(),
            serial: 0,
            due: Vec::new(),
            write_quorum,
            read_quorum,
            request_timeout_us,
            write_backs: 0,
            timeouts: 0,
        }
    }

    /// An answer owed now, behind whatever the client is already owed.
    pub fn answer_now(&mut self, client: ClientId, answer: Answer) {
        self.owed
            .entry(client)
            .or_default()
            .push_back(Owed::Ready(answer));
        self.due.push(client);
    }

    /// A request from `client`: started now, or deferred behind an earlier one on its key.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        node: &mut impl Replicas,
        hlc: &mut Hlc,
        now: Micros,
        client: ClientId,
        action: Action,
        key: &[u8],
        value: &[u8],
    ) {
        let busy = self.owed.get(&client).is_some_and(|owed| {
            owed.iter().any(|entry| match entry {
                Owed::Request(slot) => self.requests[*slot].key == key,
                Owed::Ready(_) => false,
            })
        });
        let slot = self.requests.insert(Request {
            client,
            action,
            key: key.to_vec(),
            value: value.to_vec(),
            phase: Phase::Deferred,
            serial: 0,
            replicas: [0; REPLICAS_MAX],
            replica_count: 0,
            asked: 0,
            answered: 0,
            holders: 0,
            best_version: 0,
            best_present: false,
            best_value: Vec::new(),
            holding: 0,
            existed: false,
            deadline: now + self.request_timeout_us,
            answer: None,
        });
        self.owed
            .entry(client)
            .or_default()
            .push_back(Owed::Request(slot));
        if !busy {
            self.start(node, hlc, now, slot);
        }
    }

    fn start(&mut self, node: &mut impl Replicas, hlc: &mut Hlc, now: Micros, slot: usize) {
        let request = &mut self.requests[slot];
        request.replica_count = node.replicas_of(&request.key, &mut request.replicas);
        request.deadline = now + self.request_timeout_us;
        let phase = match request.action {
            Action::Get | Action::Exists => Phase::Read,
            Action::Set | Action::Del => Phase::Query,
        };
        self.begin_phase(node, hlc, now, slot, phase);
    }

    /// Sends the phase's op to every replica that is up; fails the request at once if too
    /// few are.
    fn begin_phase(
        &mut self,
        node: &mut impl Replicas,
        hlc: &mut Hlc,
        now: Micros,
        slot: usize,
        phase: Phase,
    ) {
        self.serial = self.serial.wrapping_add(1);
        let needed = self.needed(phase);
        let request = &mut self.requests[slot];
        request.phase = phase;
        request.serial = self.serial;
        request.asked = 0;
        request.answered = 0;
        if phase == Phase::Write {
            hlc.observe(request.best_version);
            request.best_version = hlc.issue(now);
            request.best_present = request.action == Action::Set;
            if request.best_present {
                std::mem::swap(&mut request.best_value, &mut request.value);
            }
            request.holding = 0;
            request.holders = 0;
        }
        let kind = match phase {
            Phase::Read => OP_GET,
            Phase::Query => OP_VERSION,
            Phase::Write | Phase::WriteBack if !request.best_present => OP_DEL,
            Phase::Write | Phase::WriteBack => OP_SET,
            Phase::Deferred | Phase::Done => unreachable!("not a phase that sends"),
        };
        let up = (0..request.replica_count)
            .filter(|&at| node.is_up(request.replicas[at]))
            .count();
        if up < needed {
            let error = if phase == Phase::WriteBack {
                TRYAGAIN
            } else {
                CLUSTERDOWN
            };
            self.finish(slot, Answer::Error(error));
            return;
        }
        let id = request_id(slot, request.serial);
        for at in 0..request.replica_count {
            let replica = request.replicas[at];
            // A write-back goes to the replicas that did not answer with the newest version.
            let holds = phase == Phase::WriteBack && request.holders & (1 << at) != 0;
            if !node.is_up(replica) || holds {
                continue;
            }
            request.asked |= 1 << at;
            node.send_op(
                replica,
                &Op {
                    kind,
                    request: id,
                    version: request.best_version,
                    key: &request.key,
                    value: if kind == OP_SET {
                        &request.best_value
                    } else {
                        b""
                    },
                },
            );
        }
    }

    fn needed(&self, phase: Phase) -> usize {
        match phase {
            Phase::Read | Phase::Query => self.read_quorum,
            _ => self.write_quorum,
        }
    }

    /// A replica's answer.
    pub fn on_result(
        &mut self,
        node: &mut impl Replicas,
        hlc: &mut Hlc,
        now: Micros,
        from: NodeId,
        result: &OpResult<'_>,
    ) {
        let slot = (result.request & u32::MAX as u64) as usize;
        let serial = (result.request >> 32) as u32;
        let Some(request) = self.requests.get_mut(slot) else {
            return;
        };
        let Some(at) = request.replicas[..request.replica_count]
            .iter()
            .position(|&replica| replica == from)
        else {
            return;
        };
        let bit = 1 << at;
        if request.serial != serial || request.asked & bit == 0 || request.answered & bit != 0 {
            return; // late, repeated or foreign
        }
        request.answered |= bit;
        hlc.observe(result.version);
        match request.phase {
            Phase::Read | Phase::Query => {
                let present = result.status == STATUS_VALUE;
                if result.version > request.best_version {
                    request.best_version = result.version;
                    request.best_present = present;
                    request.best_value.clear();
                    request.best_value.extend_from_slice(result.value);
                    request.holding = 0;
                    request.holders = 0;
                }
                if result.version == request.best_version {
                    request.holding += 1;
                    request.holders |= bit;
                }
                request.existed |= present && result.version == request.best_version;
            }
            Phase::Write | Phase::WriteBack => request.holding += 1,
            Phase::Deferred | Phase::Done => return,
        }
        self.advance(node, hlc, now, slot);
    }

    /// Moves a request on once its phase has the answers it needs.
    fn advance(&mut self, node: &mut impl Replicas, hlc: &mut Hlc, now: Micros, slot: usize) {
        let request = &self.requests[slot];
        let phase = request.phase;
        let answers = match phase {
            Phase::Read | Phase::Query => self.answers(slot),
            _ => request.holding,
        };
        if answers < self.needed(phase) {
            return;
        }
        let request = &mut self.requests[slot];
        match phase {
            Phase::Read if request.best_version == 0 || request.holding >= self.write_quorum => {
                let answer = read_answer(request);
                self.finish(slot, answer);
            }
            Phase::Read => {
                self.write_backs += 1;
                self.begin_phase(node, hlc, now, slot, Phase::WriteBack);
                // The replicas that answered with the newest version already hold it.
                self.advance(node, hlc, now, slot);
            }
            Phase::WriteBack => {
                let answer = read_answer(request);
                self.finish(slot, answer);
            }
            Phase::Query => self.begin_phase(node, hlc, now, slot, Phase::Write),
            Phase::Write => {
                let answer = match request.action {
                    Action::Del => Answer::Integer(request.existed as i64),
                    _ => Answer::Ok,
                };
                self.finish(slot, answer);
            }
            Phase::Deferred | Phase::Done => {}
        }
    }

    /// Answers in a read or query phase, whatever they held.
    fn answers(&self, slot: usize) -> usize {
        self.requests[slot].answered.count_ones() as usize
    }

    fn finish(&mut self, slot: usize, answer: Answer) {
        let request = &mut self.requests[slot];
        request.phase = Phase::Done;
        request.answer = Some(answer);
        self.due.push(request.client);
    }

    /// Fails every request past its deadline.
    pub fn expire(&mut self, now: Micros) {
        let expired: Vec<usize> = self
            .requests
            .iter()
            .filter(|(_, r)| r.phase != Phase::Done && r.phase != Phase::Deferred)
            .filter(|(_, r)| now >= r.deadline)
            .map(|(slot, _)| slot)
            .collect();
        for slot in expired {
            self.timeouts += 1;
            let error = match self.requests[slot].phase {
                Phase::Write | Phase::WriteBack => TRYAGAIN,
                Phase::Read => READ_FAILED,
                _ => CLUSTERDOWN,
            };
            self.finish(slot, Answer::Error(error));
        }
    }

    /// Hands every client the answers now due, in order, to `reply`; starts the requests
    /// that were waiting behind finished ones.
    pub fn drain(
        &mut self,
        node: &mut impl Replicas,
        hlc: &mut Hlc,
        now: Micros,
        reply: &mut impl FnMut(ClientId, &Answer),
    ) {
        // Starting a request that was waiting can finish it at once (too few replicas up),
        // which makes its client due again: round until none is.
        let mut clients = Vec::new();
        while !self.due.is_empty() {
            std::mem::swap(&mut clients, &mut self.due);
            clients.sort_unstable();
            clients.dedup();
            for &client in &clients {
                self.drain_client(client, reply);
                self.start_unblocked(node, hlc, now, client);
                if self.owed.get(&client).is_some_and(VecDeque::is_empty) {
                    self.owed.remove(&client);
                }
            }
            clients.clear();
        }
    }

    fn drain_client(&mut self, client: ClientId, reply: &mut impl FnMut(ClientId, &Answer)) {
        let Some(owed) = self.owed.get_mut(&client) else {
            return;
        };
        while let Some(front) = owed.front() {
            match front {
                Owed::Ready(answer) => reply(client, answer),
                Owed::Request(slot) => match &self.requests[*slot].answer {
                    Some(answer) => {
                        reply(client, answer);
                        self.requests.remove(*slot);
                    }
                    None => break,
                },
            }
            owed.pop_front();
        }
    }

    /// Starts a deferred request once no earlier request of its client is on its key.
    fn start_unblocked(
        &mut self,
        node: &mut impl Replicas,
        hlc: &mut Hlc,
        now: Micros,
        client: ClientId,
    ) {
        let Some(owed) = self.owed.get(&client) else {
            return;
        };
        let mut startable = Vec::new();
        let mut busy_keys: Vec<&[u8]> = Vec::new();
        for entry in owed {
            let Owed::Request(slot) = entry else { continue };
            let request = &self.requests[*slot];
            if request.phase == Phase::Done {
                continue;
            }
            if request.phase == Phase::Deferred && !busy_keys.contains(&request.key.as_slice()) {
                startable.push(*slot);
            }
            busy_keys.push(&request.key);
        }
        for slot in startable {
            self.start(node, hlc, now, slot);
        }
    }

    /// A client went away: its requests finish unanswered (their effects stand).
    pub fn forget_client(&mut self, client: ClientId) {
        if let Some(owed) = self.owed.remove(&client) {
            for entry in owed {
                if let Owed::Request(slot) = entry {
                    self.requests.remove(slot);
                }
            }
        }
    }
}

fn read_answer(request: &Request) -> Answer {
    match (request.action, request.best_present) {
        (Action::Exists, present) => Answer::Integer(present as i64),
        (_, true) => Answer::Value(request.best_value.clone()),
        (_, false) => Answer::Nil,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::kv::{STATUS_NIL, STATUS_OK};

    /// Three replicas for every key; what the coordinator sends is kept.
    #[derive(Default)]
    struct Fake {
        down: Vec<NodeId>,
        /// (to, kind, request, version, key)
        sent: Vec<(NodeId, u8, u64, u64, Vec<u8>)>,
    }

    impl Replicas for Fake {
        fn replicas_of(&self, _key: &[u8], out: &mut [NodeId; REPLICAS_MAX]) -> usize {
            out[..3].copy_from_slice(&[0, 1, 2]);
            3
        }
        fn is_up(&self, node: NodeId) -> bool {
            !self.down.contains(&node)
        }
        fn send_op(&mut self, to: NodeId, op: &Op<'_>) {
            let key = op.key.to_vec();
            self.sent.push((to, op.kind, op.request, op.version, key));
        }
    }

    fn answer(
        coordinator: &mut Coordinator,
        fake: &mut Fake,
        clock: &mut Hlc,
        (from, request): (NodeId, u64),
        status: u8,
        version: u64,
        value: &[u8],
    ) {
        let result = OpResult {
            request,
            status,
            version,
            value,
        };
        coordinator.on_result(fake, clock, 1_000, from, &result);
    }

    /// The answers due now, as text.
    fn due(coordinator: &mut Coordinator, fake: &mut Fake, clock: &mut Hlc) -> Vec<String> {
        let mut answers = Vec::new();
        coordinator.drain(fake, clock, 1_000, &mut |client, answer| {
            answers.push(format!("{client}: {answer:?}"));
        });
        answers
    }

    fn setup() -> (Coordinator, Fake, Hlc) {
        (
            Coordinator::new(2, 2, 1_000_000),
            Fake::default(),
            Hlc::new(9),
        )
    }

    #[test]
    fn a_read_writes_the_newest_version_back_to_w_replicas_before_answering() {
        let (mut coordinator, mut fake, mut clock) = setup();
        coordinator.request(&mut fake, &mut clock, 0, 1, Action::Get, b"k", b"");
        assert_eq!(fake.sent.len(), 3);
        assert!(fake.sent.iter().all(|s| s.1 == OP_GET));
        let id = fake.sent[0].2;
        answer(
            &mut coordinator,
            &mut fake,
            &mut clock,
            (0, id),
            STATUS_VALUE,
            5,
            b"x",
        );
        answer(
            &mut coordinator,
            &mut fake,
            &mut clock,
            (1, id),
            STATUS_NIL,
            0,
            b"",
        );
        // R answers, but only one holds the newest version: it goes back to the others first.
        assert!(due(&mut coordinator, &mut fake, &mut clock).is_empty());
        let back: Vec<_> = fake.sent[3..].iter().map(|s| (s.0, s.1, s.3)).collect();
        assert_eq!(back, [(1, OP_SET, 5), (2, OP_SET, 5)]);
        let id = fake.sent[3].2;
        answer(
            &mut coordinator,
            &mut fake,
            &mut clock,
            (2, id),
            STATUS_OK,
            5,
            b"",
        );
        assert_eq!(
            due(&mut coordinator, &mut fake, &mut clock),
            ["1: Value([120])"]
        );
        assert_eq!(coordinator.write_backs, 1);
    }

    #[test]
    fn a_read_whose_quorum_agrees_answers_at_once() {
        let (mut coordinator, mut fake, mut clock) = setup();
        coordinator.request(&mut fake, &mut clock, 0, 1, Action::Get, b"k", b"");
        let id = fake.sent[0].2;
        answer(
            &mut coordinator,
            &mut fake,
            &mut clock,
            (2, id),
            STATUS_VALUE,
            5,
            b"x",
        );
        answer(
            &mut coordinator,
            &mut fake,
            &mut clock,
            (0, id),
            STATUS_VALUE,
            5,
            b"x",
        );
        assert_eq!(
            due(&mut coordinator, &mut fake, &mut clock),
            ["1: Value([120])"]
        );
        assert_eq!(fake.sent.len(), 3);
    }

    #[test]
    fn a_write_asks_versions_first_and_is_acknowledged_once_w_replicas_hold_it() {
        let (mut coordinator, mut fake, mut clock) = setup();
        coordinator.request(&mut fake, &mut clock, 0, 1, Action::Set, b"k", b"v");
        assert!(fake.sent.iter().all(|s| s.1 == OP_VERSION));
        let id = fake.sent[0].2;
        let seen = 7_000_000 << crate::roles::kv::hlc::NODE_BITS;
        answer(
            &mut coordinator,
            &mut fake,
            &mut clock,
            (0, id),
            STATUS_VALUE,
            seen,
            b"",
        );
        answer(
            &mut coordinator,
            &mut fake,
            &mut clock,
            (1, id),
            STATUS_NIL,
            3,
            b"",
        );
        let writes: Vec<_> = fake.sent[3..].to_vec();
        assert_eq!(writes.len(), 3);
        assert!(writes.iter().all(|s| s.1 == OP_SET && s.3 > seen));
        let id = writes[0].2;
        answer(
            &mut coordinator,
            &mut fake,
            &mut clock,
            (1, id),
            STATUS_OK,
            writes[0].3,
            b"",
        );
        assert!(
            due(&mut coordinator, &mut fake, &mut clock).is_empty(),
            "one of W=2"
        );
        answer(
            &mut coordinator,
            &mut fake,
            &mut clock,
            (2, id),
            STATUS_OK,
            writes[0].3,
            b"",
        );
        assert_eq!(due(&mut coordinator, &mut fake, &mut clock), ["1: Ok"]);
    }

    #[test]
    fn a_connections_commands_on_one_key_wait_for_each_other() {
        let (mut coordinator, mut fake, mut clock) = setup();
        coordinator.request(&mut fake, &mut clock, 0, 1, Action::Set, b"k", b"v");
        coordinator.request(&mut fake, &mut clock, 0, 1, Action::Get, b"k", b"");
        coordinator.request(&mut fake, &mut clock, 0, 1, Action::Get, b"other", b"");
        let gets = |fake: &Fake, key: &[u8]| {
            fake.sent
                .iter()
                .filter(|s| s.1 == OP_GET && s.4 == key)
                .count()
        };
        assert_eq!((gets(&fake, b"k"), gets(&fake, b"other")), (0, 3));
        let id = fake.sent[0].2;
        answer(
            &mut coordinator,
            &mut fake,
            &mut clock,
            (0, id),
            STATUS_NIL,
            0,
            b"",
        );
        answer(
            &mut coordinator,
            &mut fake,
            &mut clock,
            (1, id),
            STATUS_NIL,
            0,
            b"",
        );
        let write = fake.sent.iter().find(|s| s.1 == OP_SET).unwrap().clone();
        answer(
            &mut coordinator,
            &mut fake,
            &mut clock,
            (0, write.2),
            STATUS_OK,
            write.3,
            b"",
        );
        answer(
            &mut coordinator,
            &mut fake,
            &mut clock,
            (1, write.2),
            STATUS_OK,
            write.3,
            b"",
        );
        assert_eq!(
            gets(&fake, b"k"),
            0,
            "started before the write was answered"
        );
        assert_eq!(due(&mut coordinator, &mut fake, &mut clock), ["1: Ok"]);
        assert_eq!(gets(&fake, b"k"), 3);
    }

    #[test]
    fn too_few_replicas_up_fail_at_once_and_timeouts_say_what_may_have_happened() {
        let (mut coordinator, mut fake, mut clock) = setup();
        fake.down = vec![0, 1];
        coordinator.request(&mut fake, &mut clock, 0, 1, Action::Set, b"k", b"v");
        assert!(fake.sent.is_empty());
        fake.down.clear();
        coordinator.request(&mut fake, &mut clock, 0, 2, Action::Set, b"k", b"v");
        let id = fake.sent[0].2;
        answer(
            &mut coordinator,
            &mut fake,
            &mut clock,
            (0, id),
            STATUS_NIL,
            0,
            b"",
        );
        answer(
            &mut coordinator,
            &mut fake,
            &mut clock,
            (1, id),
            STATUS_NIL,
            0,
            b"",
        );
        coordinator.expire(2_000_000);
        let answers = due(&mut coordinator, &mut fake, &mut clock);
        assert_eq!(
            answers,
            [
                format!("1: Error({CLUSTERDOWN:?})"),
                format!("2: Error({TRYAGAIN:?})")
            ]
        );
    }
}
