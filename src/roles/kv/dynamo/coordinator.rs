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
        let mut clients: Vec<ClientId> = self.owed.keys().copied().collect();
        clients.sort_unstable();
        for client in clients {
            self.drain_client(client, reply);
            self.start_unblocked(node, hlc, now, client);
        }
        self.owed.retain(|_, owed| !owed.is_empty());
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
