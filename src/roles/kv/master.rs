//! The kv master: serves clients (RESP and the REPL), places keys on the live workers, and
//! turns each command into operations batched per worker.
//!
//! - Writes (SET, DEL, MSET) go to every live replica of the key and are acknowledged once each
//!   has applied them; each write carries a version (a counter here) so that replicas and
//!   transfers agree on the newest.
//! - Reads (GET, EXISTS, MGET) go to every live replica of the key and answer with the newest
//!   version among the answers (read repair: a replica that answered with an older version is
//!   sent the newest). A read needs an answer from a replica that is not still catching up
//!   after a rejoin (unless every replica is); a replica dying mid-read only drops its answer.
//! - Replies leave in command order per client, whatever order the workers answer in: each
//!   client has a queue of entries and only its head is ever written. A client whose queue
//!   passes `CLIENT_ENTRIES_MAX` entries or `CLIENT_BYTES_MAX` bytes of commands is held (the
//!   driver stops reading it) until half of that is answered: a pipelining client cannot grow
//!   the master's memory while workers are slow.
//! - Nothing is dropped for lack of room: a batch the link to a worker cannot take yet waits,
//!   in order, in that worker's outbox (sent on `on_writable` and at every flush). Transfer
//!   batches relayed from one worker to another are credited back to their sender once passed
//!   on (`KvCredit`); a sender keeps a bounded window of them un-credited, so the outbox of a
//!   slow worker holds at most a window per sender besides client operations.
//! - A worker that says nothing for `suspect_us` (workers send a heartbeat when idle) is
//!   suspected: nothing waits for it any more — a SIGSTOPped worker no longer stalls the
//!   requests routed to it — but its writes are still sent, so that when it speaks again it has
//!   them all, in order. Suspected for `evict_us` (10 s), or with more than
//!   `OUTBOX_EVICT_BYTES` waiting for it, it is evicted: a membership without it, its outbox
//!   dropped; when it speaks again it rejoins like a restarted worker.
//! - A worker is dead when its connection drops: writes in flight stop waiting for it, reads in
//!   flight get an error (the client may retry), and the new membership goes to every live
//!   worker, which sends the keys the new placement needs (relayed here) — see `worker.rs`.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;

use slab::Slab;

use super::placement::{HashRing, REPLICAS_MAX};
use crate::node::{ClientId, Io, Micros, NodeId};
use crate::wire::client::{Command, Reply};
use crate::wire::kv::{
    KEY_BYTES_MAX, KvCredit, KvMembership, KvOps, KvResults, KvStats, OP_DEL, OP_GET, OP_KILL,
    OP_PUT, OP_SET, OP_STATS, Op, REQUEST_HELLO, STATUS_INTEGER, STATUS_VALUE, VALUE_BYTES_MAX,
};
use crate::wire::{FRAME_BYTES_MAX, Items, Message, NO_NODE};
use crate::{debug, info};

const BATCH_BYTES_MAX: usize = FRAME_BYTES_MAX - 16 - KEY_BYTES_MAX - VALUE_BYTES_MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Get,
    Exists,
    Set,
    Del,
    Stats,
}

/// One operation the master waits for.
struct Pending {
    kind: Kind,
    client: ClientId,
    generation: u32,
    /// Workers still to answer (bit per node id).
    waiting: u64,
    /// For reads: found or not, and the value; for DEL: whether a replica had it; for stats:
    /// the worker's counts.
    found: bool,
    value: Vec<u8>,
    stats: KvStats,
    failed: bool,
    /// Reads: the key (for a repair), the newest version answered, who answered, who answered
    /// with an older version, who was caught up when asked, and whether one of those answered.
    key: Vec<u8>,
    version: u64,
    answered: u64,
    stale: u64,
    ready: u64,
    trusted: bool,
}

/// What waits for room on the link to a worker, in order.
enum Queued {
    /// A batch of operations; a relayed transfer batch remembers whom to credit once it is
    /// passed on.
    Ops {
        ops: Vec<u8>,
        credit: Option<NodeId>,
    },
    Membership {
        epoch: u32,
        members: Vec<u16>,
    },
}

/// A client is held past this many unanswered commands...
const CLIENT_ENTRIES_MAX: usize = 4096;
/// ... or this many bytes of them.
const CLIENT_BYTES_MAX: usize = 4 << 20;

/// What a client is owed, in order (with the size of the command each entry answers).
#[derive(Default)]
struct Owed {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
    held: bool,
}

/// What a client is owed for one command.
enum Entry {
    /// A reply decided at once (kept in order behind earlier ones).
    Now(Owned),
    /// GET, EXISTS, SET, single-key DEL.
    One(usize),
    /// MGET: an array of the values.
    Values(Vec<usize>),
    /// DEL/EXISTS over several keys: the number that existed.
    Count(Vec<usize>),
    /// MSET: OK once all are written.
    AllOk(Vec<usize>),
    /// DBSIZE (sum of primary keys) or NODES (a report), over every live worker.
    Stats {
        pendings: Vec<usize>,
        workers: Vec<NodeId>,
        nodes: bool,
    },
    /// QUIT, in its turn: OK, then close the client (the REPL's stops the cluster).
    Quit,
    /// SHUTDOWN, in its turn: the cluster stops (the REPL is told OK; a Redis client gets no
    /// reply, as from Redis, its connection closing as the master exits).
    Shutdown,
    /// Input that could not be parsed: this error, then the client is closed.
    Refused(String),
}

/// Commands a client may send (`COMMAND COUNT`); KILL and NODES are the REPL's own.
const COMMANDS: [&str; 18] = [
    "PING", "ECHO", "GET", "SET", "DEL", "EXISTS", "MGET", "MSET", "DBSIZE", "INFO", "QUIT",
    "SHUTDOWN", "COMMAND", "CONFIG", "CLIENT", "SELECT", "KILL", "NODES",
];

enum Owned {
    Reply(Reply<'static>),
    Error(String),
    Bulk(Vec<u8>),
    /// Text lines (INFO): a bulk in RESP, plain lines in the REPL.
    Lines(Vec<u8>),
    /// An array of bulk strings.
    Strings(Vec<Vec<u8>>),
}

pub struct Master {
    node: NodeId,
    workers: usize,
    replicas: usize,
    /// Connected.
    up: Vec<bool>,
    /// Told to exit (KILL): no new requests, but what it was sent is still answered.
    killed: Vec<bool>,
    /// Silent for `suspect_us`: nothing waits for it until it speaks again.
    suspected: Vec<bool>,
    suspected_since: Vec<Micros>,
    /// Suspected too long: out of the membership until it speaks again.
    evicted: Vec<bool>,
    /// Bytes of operations in each worker's outbox.
    outbox_bytes: Vec<usize>,
    /// When each worker last sent anything.
    last_heard: Vec<Micros>,
    suspect_us: Micros,
    evict_us: Micros,
    /// The previous failure-detector check (a master that was itself stalled suspects no one).
    last_check: Micros,
    /// The membership epoch in which each worker (re)joined.
    joined: Vec<u32>,
    /// The last epoch for which each worker finished sending the keys others need.
    transferred: Vec<u32>,
    ring: HashRing,
    epoch: u32,
    version: u64,
    batches: Vec<Vec<u8>>,
    /// Per worker: batches its link had no room for yet, in order.
    outbox: Vec<VecDeque<Queued>>,
    /// `credits[source][target]`: transfer batches from `source` passed on to `target` and not
    /// yet credited back.
    credits: Vec<Vec<u32>>,
    /// Emptied batch buffers, reused.
    spare_batches: Vec<Vec<u8>>,
    pending: Slab<Pending>,
    generation: u32,
    clients: HashMap<ClientId, Owed>,
    /// The client whose command is being turned into operations.
    current: ClientId,
    /// Scratch: clients with a completed operation in the batch being read.
    touched: Vec<ClientId>,
    /// Value and key buffers of finished operations, reused.
    spare_values: Vec<Vec<u8>>,
    /// Scratch: reads completed in the batch being read, to repair.
    repairs_due: Vec<usize>,
    /// Scratch: a repair's PUT value.
    scratch: Vec<u8>,
    /// Each worker's fsync policy, from its greeting ("" without a log).
    fsync: Vec<&'static str>,
    /// Each worker's greeting arrived on its current connection.
    greeted: Vec<bool>,
    /// Stale replicas repaired by reads.
    pub read_repairs: u64,
    /// Batches that had to wait in an outbox.
    pub queued_batches: u64,
    /// Workers the failure detector suspected, and evicted.
    pub suspicions: u64,
    pub evictions: u64,
    /// The REPL client, whose QUIT stops the cluster.
    repl: Option<ClientId>,
    stopping: bool,
    /// Commands that came before the cluster was ready (every worker up, or the start timeout):
    /// replayed in order then. Owned copies; only at start-up.
    backlog: Option<Vec<(ClientId, Backlogged)>>,
    /// Names clients gave themselves (CLIENT SETNAME).
    names: HashMap<ClientId, Vec<u8>>,
    pub commands: u64,
}

/// Clients wait at most this long for every worker before being served by those up.
pub const START_TIMEOUT_US: u64 = 3_000_000;
/// A worker silent this long is suspected: nothing waits for it (workers send a heartbeat
/// every `worker::HEARTBEAT_US` when idle).
pub const SUSPECT_US: Micros = 1_000_000;
/// Suspected this long, a worker is evicted from the membership.
pub const EVICT_US: Micros = 10_000_000;
/// A suspected worker with this much waiting for it is evicted at once.
const OUTBOX_EVICT_BYTES: usize = 16 << 20;

impl Master {
    pub fn new(workers: usize, replicas: usize, repl: Option<ClientId>) -> Master {
        Master {
            node: workers,
            workers,
            replicas: replicas.clamp(1, REPLICAS_MAX),
            up: vec![false; workers],
            killed: vec![false; workers],
            suspected: vec![false; workers],
            suspected_since: vec![0; workers],
            evicted: vec![false; workers],
            outbox_bytes: vec![0; workers],
            last_heard: vec![0; workers],
            suspect_us: SUSPECT_US,
            evict_us: EVICT_US,
            last_check: 0,
            joined: vec![0; workers],
            transferred: vec![0; workers],
            ring: HashRing::default(),
            epoch: 0,
            version: 0,
            batches: (0..workers)
                .map(|_| Vec::with_capacity(FRAME_BYTES_MAX))
                .collect(),
            outbox: (0..workers).map(|_| VecDeque::new()).collect(),
            credits: vec![vec![0; workers]; workers],
            spare_batches: Vec::new(),
            pending: Slab::with_capacity(4096),
            generation: 0,
            clients: HashMap::new(),
            current: 0,
            touched: Vec::new(),
            spare_values: Vec::new(),
            repairs_due: Vec::new(),
            scratch: Vec::new(),
            fsync: vec![""; workers],
            greeted: vec![false; workers],
            read_repairs: 0,
            queued_batches: 0,
            suspicions: 0,
            evictions: 0,
            repl,
            stopping: false,
            backlog: Some(Vec::new()),
            names: HashMap::new(),
            commands: 0,
        }
    }

    /// Issues versions above `version` from now on.
    pub fn raise_version(&mut self, version: u64) {
        self.version = self.version.max(version);
    }

    /// Suspects a worker silent for `suspect_us` (default `SUSPECT_US`)
    /// and evicts one suspected for `evict_us` (default `EVICT_US`).
    pub fn set_failure_timeouts(&mut self, suspect_us: Micros, evict_us: Micros) {
        self.suspect_us = suspect_us;
        self.evict_us = evict_us;
    }

    /// Workers requests may go to (the membership).
    fn live(&self) -> Vec<NodeId> {
        (0..self.workers).filter(|&w| self.routed(w)).collect()
    }

    fn routed(&self, worker: NodeId) -> bool {
        self.up[worker] && !self.killed[worker] && !self.evicted[worker]
    }

    /// Whether requests wait for `worker`'s answer.
    fn answering(&self, worker: NodeId) -> bool {
        self.routed(worker) && !self.suspected[worker]
    }

    /// How often the failure detector runs.
    pub fn check_every_us(&self) -> Micros {
        (self.suspect_us / 4).max(1_000)
    }

    /// The failure detector: suspects the workers silent for `suspect_us`.
    pub fn check(&mut self, io: &mut impl Io) {
        let now = io.now();
        if now.saturating_sub(self.last_check) > self.suspect_us {
            // We were stalled ourselves (or just started): nobody had a chance to be heard.
            self.last_heard.fill(now);
        }
        self.last_check = now;
        for worker in 0..self.workers {
            if !self.routed(worker) {
                continue;
            }
            let silent = now.saturating_sub(self.last_heard[worker]);
            if !self.suspected[worker] && silent > self.suspect_us {
                info!(
                    "master: worker {worker} silent for {} ms; nothing waits for it",
                    silent / 1000
                );
                self.suspected[worker] = true;
                self.suspected_since[worker] = now;
                self.suspicions += 1;
                self.forget(worker);
                self.drain_all(io);
            } else if self.suspected[worker] && now - self.suspected_since[worker] > self.evict_us {
                self.evict(io, worker, silent);
            }
        }
    }

    /// A suspected worker whose outbox passed `OUTBOX_EVICT_BYTES` is evicted at the end of
    /// the loop iteration that filled it (not at the next check: at full speed a client fills
    /// tens of MiB between two checks).
    fn evict_overflowing(&mut self, io: &mut impl Io) {
        let now = io.now();
        for worker in 0..self.workers {
            if self.routed(worker)
                && self.suspected[worker]
                && self.outbox_bytes[worker] > OUTBOX_EVICT_BYTES
            {
                self.evict(io, worker, now.saturating_sub(self.last_heard[worker]));
            }
        }
    }

    fn evict(&mut self, io: &mut impl Io, worker: NodeId, silent_us: Micros) {
        info!(
            "master: worker {worker} silent for {} ms with {} MiB waiting for it; evicting it \
             until it speaks",
            silent_us / 1000,
            self.outbox_bytes[worker] >> 20
        );
        self.evicted[worker] = true;
        self.evictions += 1;
        self.drop_outbox(worker);
        self.new_membership(io);
        self.drain_all(io);
    }

    /// A suspected worker spoke: everything sent to it while it was silent reaches it first.
    /// An evicted one rejoins like a restarted worker.
    fn heard(&mut self, io: &mut impl Io, worker: NodeId) {
        self.last_heard[worker] = io.now();
        if !self.up[worker] || !self.suspected[worker] {
            return;
        }
        self.suspected[worker] = false;
        if self.evicted[worker] {
            info!("master: worker {worker} speaks again; rejoining it");
            self.evicted[worker] = false;
            self.new_membership(io);
            self.joined[worker] = self.epoch;
        } else {
            info!("master: worker {worker} speaks again");
        }
    }

    /// Drops what waits for `worker` (it is gone or evicted).
    fn drop_outbox(&mut self, worker: NodeId) {
        self.batches[worker].clear();
        let outbox = std::mem::take(&mut self.outbox[worker]);
        for queued in outbox {
            if let Queued::Ops { ops, .. } = queued {
                self.recycle(ops);
            }
        }
        self.outbox_bytes[worker] = 0;
        self.credits[worker].fill(0);
    }

    // ----- membership -----

    pub fn on_peer_up(&mut self, io: &mut impl Io, peer: NodeId) {
        if peer < self.workers {
            self.up[peer] = true;
            self.killed[peer] = false;
            self.suspected[peer] = false;
            self.evicted[peer] = false;
            self.last_heard[peer] = io.now();
            info!("master: worker {peer} joined");
            // It enters the membership when its greeting arrives (the next frame it sends):
            // by then the master knows the versions it holds and stamps new writes above them.
        }
    }

    /// Every worker is up and has greeted (so what the master says about the workers — their
    /// logs, their versions — is known): serve what waited.
    fn ready_when_all_greeted(&mut self, io: &mut impl Io) {
        if (0..self.workers).all(|w| self.up[w] && self.greeted[w]) {
            self.ready(io);
        }
    }

    /// Serves the commands that waited for the cluster (at the start timeout at the latest).
    pub fn ready(&mut self, io: &mut impl Io) {
        let Some(backlog) = self.backlog.take() else {
            return;
        };
        let live = self.live();
        if live.is_empty() {
            info!("master: no worker is up; serving clients (their commands fail until one is)");
        } else {
            info!("master: serving clients with workers {live:?} up");
        }
        for (client, backlogged) in backlog {
            let args = match backlogged {
                Backlogged::Command(args) => args,
                Backlogged::Error(error, close) => {
                    self.on_client_error(io, client, &error, close);
                    continue;
                }
            };
            let spans: Vec<(u32, u32)> = args
                .iter()
                .scan(0u32, |at, arg| {
                    let span = (*at, *at + arg.len() as u32);
                    *at = span.1;
                    Some(span)
                })
                .collect();
            let data = args.concat();
            self.on_client(
                io,
                client,
                Command {
                    data: &data,
                    spans: &spans,
                },
            );
            if self.stopping {
                return;
            }
        }
    }

    pub fn on_peer_down(&mut self, io: &mut impl Io, peer: NodeId) {
        if peer >= self.workers || !self.up[peer] {
            return;
        }
        let routed = self.routed(peer);
        self.up[peer] = false;
        self.greeted[peer] = false;
        self.suspected[peer] = false;
        self.evicted[peer] = false;
        info!("master: worker {peer} is down; redistributing its keys");
        self.drop_outbox(peer);
        self.forget(peer);
        if routed {
            self.new_membership(io);
        }
        self.drain_all(io);
    }

    /// Operations stop waiting for `peer`: writes go on without it; reads that needed it fail
    /// (the client may retry).
    fn forget(&mut self, peer: NodeId) {
        let keys: Vec<usize> = self.pending.iter().map(|(key, _)| key).collect();
        for key in keys {
            let pending = &mut self.pending[key];
            if pending.waiting & (1 << peer) != 0 {
                pending.waiting &= !(1 << peer);
                match pending.kind {
                    Kind::Stats => {
                        pending.failed = true;
                        pending.waiting = 0;
                    }
                    Kind::Get | Kind::Exists if pending.waiting == 0 && !pending.trusted => {
                        pending.failed = true;
                    }
                    // A write that no replica applied is not acknowledged.
                    Kind::Set | Kind::Del if pending.waiting == 0 && pending.answered == 0 => {
                        pending.failed = true;
                    }
                    _ => {}
                }
            }
        }
    }

    fn new_membership(&mut self, io: &mut impl Io) {
        self.epoch += 1;
        let live = self.live();
        self.ring = HashRing::new(&live);
        let members: Vec<u16> = live.iter().map(|&w| w as u16).collect();
        let message = Message::KvMembership(KvMembership {
            epoch: self.epoch,
            replicas: self.replicas as u8,
            members: Items::Host(&members),
        });
        for &worker in &live {
            self.flush_batch(io, worker);
            if !self.outbox[worker].is_empty() || !io.send(worker, &message) {
                self.outbox[worker].push_back(Queued::Membership {
                    epoch: self.epoch,
                    members: members.clone(),
                });
            }
        }
    }

    // ----- operations -----

    fn new_pending(&mut self, kind: Kind, waiting: u64) -> usize {
        // Generation 0 would make request 0, which is a worker's greeting.
        self.generation = self.generation.wrapping_add(1).max(1);
        let mut value = self.spare_values.pop().unwrap_or_default();
        value.clear();
        let mut key = self.spare_values.pop().unwrap_or_default();
        key.clear();
        self.pending.insert(Pending {
            kind,
            client: self.current,
            generation: self.generation,
            waiting,
            found: false,
            value,
            stats: KvStats::default(),
            failed: false,
            key,
            version: 0,
            answered: 0,
            stale: 0,
            ready: 0,
            trusted: false,
        })
    }

    fn request_id(&self, key: usize) -> u64 {
        (self.pending[key].generation as u64) << 32 | key as u64
    }

    fn queue(&mut self, io: &mut impl Io, worker: NodeId, op: Op<'_>) {
        if self.batches[worker].len() + op.encoded_len() > BATCH_BYTES_MAX {
            self.flush_batch(io, worker);
        }
        op.append_to(&mut self.batches[worker]);
    }

    /// Sends the batch being built for `worker` — after what waits in its outbox, and into
    /// the outbox if the link has no room.
    fn flush_batch(&mut self, io: &mut impl Io, worker: NodeId) {
        self.drain_outbox(io, worker);
        if self.batches[worker].is_empty() {
            return;
        }
        if self.outbox[worker].is_empty() && send_ops(io, worker, &self.batches[worker]) {
            self.batches[worker].clear();
            return;
        }
        let spare = self.spare_batch();
        let ops = std::mem::replace(&mut self.batches[worker], spare);
        self.outbox_bytes[worker] += ops.len();
        self.outbox[worker].push_back(Queued::Ops { ops, credit: None });
        self.queued_batches += 1;
    }

    /// Keeps an emptied batch buffer for reuse.
    fn recycle(&mut self, mut ops: Vec<u8>) {
        ops.clear();
        self.spare_batches.push(ops);
    }

    /// A reused (empty) batch buffer.
    fn spare_batch(&mut self) -> Vec<u8> {
        let spare = self.spare_batches.pop().unwrap_or_default();
        debug_assert!(spare.is_empty());
        spare
    }

    /// Sends what waits for `worker`, in order, while its link has room.
    fn drain_outbox(&mut self, io: &mut impl Io, worker: NodeId) {
        while let Some(queued) = self.outbox[worker].front() {
            let sent = match queued {
                Queued::Ops { ops, .. } => send_ops(io, worker, ops),
                Queued::Membership { epoch, members } => {
                    let membership = KvMembership {
                        epoch: *epoch,
                        replicas: self.replicas as u8,
                        members: Items::Host(members),
                    };
                    io.send(worker, &Message::KvMembership(membership))
                }
            };
            if !sent {
                return;
            }
            if let Some(Queued::Ops { ops, credit }) = self.outbox[worker].pop_front() {
                self.outbox_bytes[worker] -= ops.len();
                if let Some(source) = credit {
                    self.credits[source][worker] += 1;
                }
                self.recycle(ops);
            }
        }
    }

    /// Credits each worker for its transfer batches passed on (kept for later if its link is
    /// full: a lost credit would stall its transfer).
    fn send_credits(&mut self, io: &mut impl Io) {
        for source in 0..self.workers {
            for target in 0..self.workers {
                let batches = self.credits[source][target];
                if batches == 0 || !self.up[source] {
                    continue;
                }
                let target_id = target as u16;
                let credit = Message::KvCredit(KvCredit {
                    target: target_id,
                    batches,
                });
                if io.send(source, &credit) {
                    self.credits[source][target] = 0;
                }
            }
        }
    }

    /// A worker that joined empty takes writes but serves no reads until every live worker has
    /// finished sending it the keys of the membership it joined in.
    fn syncing(&self, worker: NodeId) -> bool {
        let joined = self.joined[worker];
        (0..self.workers).any(|w| self.routed(w) && self.transferred[w] < joined)
    }

    /// The key's live replicas.
    fn replicas_of(&self, key: &[u8], out: &mut [NodeId; REPLICAS_MAX]) -> usize {
        self.ring.replicas(key, self.replicas, out)
    }

    fn read(&mut self, io: &mut impl Io, kind: Kind, key: &[u8]) -> usize {
        let mut replicas = [0; REPLICAS_MAX];
        let count = self.replicas_of(key, &mut replicas);
        let (mut waiting, mut ready) = (0u64, 0u64);
        for &worker in replicas[..count].iter().filter(|&&w| self.answering(w)) {
            waiting |= 1 << worker;
            if !self.syncing(worker) {
                ready |= 1 << worker;
            }
        }
        let pending = self.new_pending(kind, waiting);
        if waiting == 0 {
            // No live replica, or every one suspected: nobody to ask.
            self.pending[pending].failed = true;
            return pending;
        }
        let request = self.request_id(pending);
        let state = &mut self.pending[pending];
        state.ready = ready;
        // When every replica is catching up, the newest of their answers is the best there is.
        state.trusted = ready == 0;
        state.key.extend_from_slice(key);
        for &worker in replicas[..count].iter().filter(|&&w| waiting & 1 << w != 0) {
            let op = Op {
                kind: OP_GET,
                request,
                version: 0,
                key,
                value: b"",
            };
            self.queue(io, worker, op);
        }
        pending
    }

    fn write(&mut self, io: &mut impl Io, kind: Kind, key: &[u8], value: &[u8]) -> usize {
        let mut replicas = [0; REPLICAS_MAX];
        let count = self.replicas_of(key, &mut replicas);
        // Suspected replicas get the write too (they apply it when they resume) but nothing
        // waits for them; with none answering there is nobody to acknowledge it.
        let waiting = replicas[..count]
            .iter()
            .filter(|&&w| self.answering(w))
            .fold(0, |mask, &w| mask | 1 << w);
        let pending = self.new_pending(kind, waiting);
        if waiting == 0 {
            self.pending[pending].failed = true;
        }
        self.version += 1;
        let request = self.request_id(pending);
        let op_kind = if kind == Kind::Set { OP_SET } else { OP_DEL };
        for &worker in &replicas[..count] {
            let op = Op {
                kind: op_kind,
                request,
                version: self.version,
                key,
                value,
            };
            self.queue(io, worker, op);
        }
        pending
    }

    fn stats(&mut self, io: &mut impl Io, nodes: bool) -> Entry {
        let workers = self.live();
        let mut pendings = Vec::with_capacity(workers.len());
        for &worker in &workers {
            let pending = self.new_pending(Kind::Stats, 1 << worker);
            let request = self.request_id(pending);
            self.queue(
                io,
                worker,
                Op {
                    kind: OP_STATS,
                    request,
                    version: 0,
                    key: b"",
                    value: b"",
                },
            );
            pendings.push(pending);
        }
        Entry::Stats {
            pendings,
            workers,
            nodes,
        }
    }

    fn receive_results(&mut self, io: &mut impl Io, from: NodeId, results: &KvResults<'_>) {
        for result in results.iter() {
            if result.request == REQUEST_HELLO {
                let fsync = match result.value {
                    b"always" => "always",
                    b"everysec" => "everysec",
                    b"no" => "no",
                    _ => "",
                };
                let log = if fsync.is_empty() { "no log" } else { fsync };
                info!(
                    "master: worker {from} holds versions up to {} (fsync: {log})",
                    result.version
                );
                self.fsync[from] = fsync;
                self.greeted[from] = true;
                self.raise_version(result.version);
                self.new_membership(io);
                self.joined[from] = self.epoch;
                self.ready_when_all_greeted(io);
                continue;
            }
            let key = (result.request & 0xFFFF_FFFF) as usize;
            let generation = (result.request >> 32) as u32;
            let Some(pending) = self.pending.get_mut(key) else {
                continue;
            };
            if pending.generation != generation || pending.waiting & (1 << from) == 0 {
                continue;
            }
            pending.waiting &= !(1 << from);
            if pending.waiting == 0 && self.touched.last() != Some(&pending.client) {
                self.touched.push(pending.client);
            }
            match pending.kind {
                Kind::Get | Kind::Exists => {
                    let bit = 1 << from;
                    if pending.answered == 0 || result.version > pending.version {
                        // Whoever answered before holds an older version.
                        pending.stale |= pending.answered;
                        pending.version = result.version;
                        pending.found = result.status == STATUS_VALUE;
                        pending.value.clear();
                        pending.value.extend_from_slice(result.value);
                    } else if result.version < pending.version {
                        pending.stale |= bit;
                    }
                    pending.answered |= bit;
                    pending.trusted |= pending.ready & bit != 0;
                    if pending.waiting == 0 {
                        if !pending.trusted {
                            pending.failed = true;
                        } else if pending.stale != 0 {
                            self.repairs_due.push(key);
                        }
                    }
                }
                Kind::Del => {
                    pending.found |=
                        result.status == STATUS_INTEGER && result.value.last() == Some(&1);
                    pending.answered |= 1 << from;
                }
                Kind::Stats => pending.stats = KvStats::read(result.value).unwrap_or_default(),
                Kind::Set => pending.answered |= 1 << from,
            }
        }
        self.repair(io);
        let touched = std::mem::take(&mut self.touched);
        for &client in &touched {
            self.drain(io, client);
        }
        self.touched = touched;
        self.touched.clear();
    }

    /// Sends the newest version of each completed read to the replicas that answered with an
    /// older one (before the read's reply releases it).
    fn repair(&mut self, io: &mut impl Io) {
        let mut due = std::mem::take(&mut self.repairs_due);
        for &key in &due {
            let pending = &self.pending[key];
            // A PUT's value is a presence byte then the value: tombstones travel too.
            let mut value = std::mem::take(&mut self.scratch);
            value.clear();
            value.push(pending.found as u8);
            if pending.found {
                value.extend_from_slice(&pending.value);
            }
            let (stale, version) = (pending.stale, pending.version);
            let key = std::mem::take(&mut self.pending[key].key);
            for worker in (0..self.workers).filter(|&w| stale & (1 << w) != 0) {
                if !self.up[worker] {
                    continue;
                }
                let op = Op {
                    kind: OP_PUT,
                    request: 0,
                    version,
                    key: &key,
                    value: &value,
                };
                self.queue(io, worker, op);
                self.read_repairs += 1;
            }
            self.spare_values.push(key);
            self.scratch = value;
        }
        due.clear();
        self.repairs_due = due;
    }

    /// Relays a worker's transfer batch to its target.
    fn relay(&mut self, io: &mut impl Io, source: NodeId, ops: &KvOps<'_>) {
        let target = ops.target as NodeId;
        if target >= self.workers {
            return;
        }
        if !self.up[target] {
            // Nobody to pass it to: credit it at once, the sender's transfer moves on.
            self.credits[source][target] += 1;
            return;
        }
        self.flush_batch(io, target);
        if self.outbox[target].is_empty() && send_ops(io, target, ops.ops) {
            self.credits[source][target] += 1;
            return;
        }
        let mut copy = self.spare_batch();
        copy.extend_from_slice(ops.ops);
        self.outbox_bytes[target] += copy.len();
        self.outbox[target].push_back(Queued::Ops {
            ops: copy,
            credit: Some(source),
        });
        self.queued_batches += 1;
    }

    // ----- clients -----

    pub fn on_client(&mut self, io: &mut impl Io, client: ClientId, command: Command<'_>) {
        if let Some(backlog) = &mut self.backlog {
            let args = (0..command.len())
                .map(|index| command.arg(index).to_vec())
                .collect();
            backlog.push((client, Backlogged::Command(args)));
            return;
        }
        self.commands += 1;
        self.current = client;
        let entry = self.command(io, &command);
        if let Some(entry) = entry {
            let bytes = command.data.len();
            let owed = self.clients.entry(client).or_default();
            owed.entries.push_back((entry, bytes));
            owed.bytes += bytes;
            self.drain(io, client);
            let owed = self.clients.get_mut(&client).expect("present");
            if !owed.held
                && (owed.entries.len() > CLIENT_ENTRIES_MAX || owed.bytes > CLIENT_BYTES_MAX)
            {
                owed.held = true;
                io.hold_client(client, true);
            }
        }
    }

    /// A client's input failed to parse: the error goes out in its turn, behind the replies
    /// the client is still owed.
    pub fn on_client_error(
        &mut self,
        io: &mut impl Io,
        client: ClientId,
        error: &str,
        close: bool,
    ) {
        if let Some(backlog) = &mut self.backlog {
            backlog.push((client, Backlogged::Error(error.to_string(), close)));
            return;
        }
        let entry = if close {
            Entry::Refused(error.to_string())
        } else {
            Entry::Now(Owned::Error(error.to_string()))
        };
        let owed = self.clients.entry(client).or_default();
        owed.entries.push_back((entry, 0));
        self.drain(io, client);
    }

    pub fn on_client_closed(&mut self, _io: &mut impl Io, client: ClientId) {
        self.names.remove(&client);
        if let Some(owed) = self.clients.remove(&client) {
            for (entry, _) in owed.entries {
                for pending in entry_pendings(&entry) {
                    self.release(pending);
                }
            }
        }
    }

    fn release(&mut self, pending: usize) {
        if let Some(pending) = self.pending.try_remove(pending) {
            self.spare_values.push(pending.value);
            self.spare_values.push(pending.key);
        }
    }

    fn command(&mut self, io: &mut impl Io, command: &Command<'_>) -> Option<Entry> {
        let arguments = command.len();
        let wrong = |name: &str| {
            Entry::Now(Owned::Error(format!(
                "ERR wrong number of arguments for '{name}' command"
            )))
        };
        let now = |reply: Reply<'static>| Some(Entry::Now(Owned::Reply(reply)));
        if command.is(0, "PING") {
            return match arguments {
                1 => now(Reply::Status("PONG")),
                2 => Some(Entry::Now(Owned::Bulk(command.arg(1).to_vec()))),
                _ => Some(wrong("ping")),
            };
        }
        if command.is(0, "ECHO") {
            return Some(if arguments == 2 {
                Entry::Now(Owned::Bulk(command.arg(1).to_vec()))
            } else {
                wrong("echo")
            });
        }
        if command.is(0, "GET") || command.is(0, "EXISTS") && arguments == 2 {
            if arguments != 2 {
                return Some(wrong("get"));
            }
            let kind = if command.is(0, "GET") {
                Kind::Get
            } else {
                Kind::Exists
            };
            return Some(Entry::One(self.read(io, kind, command.arg(1))));
        }
        if command.is(0, "SET") {
            if arguments < 3 {
                return Some(wrong("set"));
            }
            if arguments > 3 {
                return Some(Entry::Now(Owned::Error(
                    "ERR syntax error (SET key value; options are not supported)".into(),
                )));
            }
            if command.arg(2).len() > VALUE_BYTES_MAX || command.arg(1).len() > KEY_BYTES_MAX {
                return Some(Entry::Now(Owned::Error(format!(
                    "ERR value above {VALUE_BYTES_MAX} bytes or key above {KEY_BYTES_MAX}"
                ))));
            }
            return Some(Entry::One(self.write(
                io,
                Kind::Set,
                command.arg(1),
                command.arg(2),
            )));
        }
        if command.is(0, "DEL") || command.is(0, "EXISTS") {
            if arguments < 2 {
                return Some(wrong(if command.is(0, "DEL") {
                    "del"
                } else {
                    "exists"
                }));
            }
            let delete = command.is(0, "DEL");
            let pendings = (1..arguments)
                .map(|index| {
                    if delete {
                        self.write(io, Kind::Del, command.arg(index), b"")
                    } else {
                        self.read(io, Kind::Exists, command.arg(index))
                    }
                })
                .collect::<Vec<_>>();
            return Some(if delete && arguments == 2 {
                Entry::One(pendings[0])
            } else {
                Entry::Count(pendings)
            });
        }
        if command.is(0, "MGET") {
            if arguments < 2 {
                return Some(wrong("mget"));
            }
            let pendings = (1..arguments).map(|i| self.read(io, Kind::Get, command.arg(i)));
            return Some(Entry::Values(pendings.collect()));
        }
        if command.is(0, "MSET") {
            if arguments < 3 || arguments.is_multiple_of(2) {
                return Some(wrong("mset"));
            }
            if (1..arguments).any(|i| command.arg(i).len() > VALUE_BYTES_MAX) {
                return Some(Entry::Now(Owned::Error("ERR value too large".into())));
            }
            let pendings = (1..arguments)
                .step_by(2)
                .map(|i| self.write(io, Kind::Set, command.arg(i), command.arg(i + 1)))
                .collect();
            return Some(Entry::AllOk(pendings));
        }
        if command.is(0, "DBSIZE") {
            return Some(if arguments == 1 {
                self.stats(io, false)
            } else {
                wrong("dbsize")
            });
        }
        if command.is(0, "NODES") {
            return Some(if arguments == 1 {
                self.stats(io, true)
            } else {
                wrong("nodes")
            });
        }
        if command.is(0, "INFO") {
            return Some(Entry::Now(Owned::Lines(self.info().into_bytes())));
        }
        if command.is(0, "QUIT") {
            return Some(Entry::Quit);
        }
        if command.is(0, "SHUTDOWN") {
            // NOSAVE / SAVE / NOW / FORCE change nothing here: the workers' logs are written
            // as they go.
            return Some(Entry::Shutdown);
        }
        if command.is(0, "KILL") {
            let worker = std::str::from_utf8(command.arg(arguments.min(2) - 1)).ok();
            let worker = worker.and_then(|text| text.parse::<NodeId>().ok());
            return Some(
                match worker.filter(|&w| arguments == 2 && w < self.workers) {
                    Some(worker) if self.routed(worker) => {
                        self.queue(io, worker, Op::kill());
                        self.flush_batch(io, worker);
                        // Route nothing new to it; what it was already sent it answers before
                        // it exits, and its keys move to the others now.
                        self.killed[worker] = true;
                        self.new_membership(io);
                        Entry::Now(Owned::Reply(Reply::Ok))
                    }
                    Some(worker) => {
                        Entry::Now(Owned::Error(format!("ERR worker {worker} is not up")))
                    }
                    None => Entry::Now(Owned::Error(format!(
                        "ERR usage: KILL <worker 0..{}>",
                        self.workers.saturating_sub(1)
                    ))),
                },
            );
        }
        // What redis-cli and redis-benchmark send at start-up.
        if command.is(0, "CONFIG") && command.is(1, "GET") && arguments == 3 {
            // Honest answers for what redis-benchmark asks about: the live workers' logs.
            let live = self.live();
            let logged = !live.is_empty() && live.iter().all(|&w| !self.fsync[w].is_empty());
            let value: Option<&[u8]> = if command.is(2, "save") {
                Some(b"")
            } else if command.is(2, "appendonly") {
                Some(if logged { b"yes" } else { b"no" })
            } else if command.is(2, "appendfsync") && logged {
                Some(self.fsync[live[0]].as_bytes())
            } else {
                None
            };
            let strings = match value {
                Some(value) => vec![command.arg(2).to_ascii_lowercase(), value.to_vec()],
                None => Vec::new(),
            };
            return Some(Entry::Now(Owned::Strings(strings)));
        }
        if command.is(0, "CONFIG") {
            // Anything but GET of the three parameters above: an empty list for GET (what
            // Redis answers for a parameter it does not have), an error for the rest.
            if command.is(1, "GET") && arguments == 3 {
                return now(Reply::Array(0));
            }
            return Some(not_supported(command));
        }
        if command.is(0, "COMMAND") {
            return Some(match arguments {
                // redis-cli asks for the command table (and, from 7.0, DOCS) at start; an empty
                // table is a valid answer that makes it fall back to plain hints.
                1 => Entry::Now(Owned::Reply(Reply::Array(0))),
                2 if command.is(1, "COUNT") => {
                    Entry::Now(Owned::Reply(Reply::Integer(COMMANDS.len() as i64)))
                }
                _ if command.is(1, "DOCS") => Entry::Now(Owned::Reply(Reply::Array(0))),
                _ => not_supported(command),
            });
        }
        if command.is(0, "SELECT") {
            if arguments != 2 {
                return Some(wrong("select"));
            }
            let index = std::str::from_utf8(command.arg(1))
                .ok()
                .and_then(|text| text.parse::<i64>().ok());
            return Some(match index {
                Some(0) => Entry::Now(Owned::Reply(Reply::Ok)),
                Some(_) => Entry::Now(Owned::Error("ERR DB index is out of range".into())),
                None => Entry::Now(Owned::Error(
                    "ERR value is not an integer or out of range".into(),
                )),
            });
        }
        if command.is(0, "CLIENT") {
            return Some(self.client_command(command));
        }
        let name = String::from_utf8_lossy(command.arg(0)).into_owned();
        Some(Entry::Now(Owned::Error(format!(
            "ERR unknown command '{name}'"
        ))))
    }

    /// CLIENT ID, SETNAME, GETNAME, INFO as Redis answers them (for this client alone: the
    /// master does not track every connection's address); the other subcommands are errors.
    fn client_command(&mut self, command: &Command<'_>) -> Entry {
        let client = self.current;
        let answer = |reply: Reply<'static>| Entry::Now(Owned::Reply(reply));
        match command.len() {
            2 if command.is(1, "ID") => answer(Reply::Integer(client as i64 + 1)),
            2 if command.is(1, "GETNAME") => match self.names.get(&client) {
                Some(name) => Entry::Now(Owned::Bulk(name.clone())),
                None => answer(Reply::Bulk(None)),
            },
            3 if command.is(1, "SETNAME") => {
                let name = command.arg(2);
                if name.iter().any(|&b| b <= b' ' || b > b'~') {
                    return Entry::Now(Owned::Error(
                        "ERR Client names cannot contain spaces, newlines or special characters."
                            .into(),
                    ));
                }
                if name.is_empty() {
                    self.names.remove(&client);
                } else {
                    self.names.insert(client, name.to_vec());
                }
                answer(Reply::Ok)
            }
            2 if command.is(1, "INFO") => {
                let name = self.names.get(&client).map(|n| n.as_slice()).unwrap_or(b"");
                let mut line = format!("id={} name=", client + 1).into_bytes();
                line.extend_from_slice(name);
                line.extend_from_slice(b" db=0 cmd=client|info\n");
                Entry::Now(Owned::Bulk(line))
            }
            _ => not_supported(command),
        }
    }

    fn info(&self) -> String {
        let live = self.live();
        let mut text = String::from("# pollen kv\r\nrole:master\r\n");
        let _ = write!(
            text,
            "workers:{}\r\nworkers_up:{}\r\nreplicas:{}\r\nmembership_epoch:{}\r\n\
             commands_processed:{}\r\noperations_pending:{}\r\nread_repairs:{}\r\n",
            self.workers,
            live.len(),
            self.replicas,
            self.epoch,
            self.commands,
            self.pending.len(),
            self.read_repairs
        );
        for worker in live {
            let fsync = self.fsync[worker];
            let log = if fsync.is_empty() { "none" } else { fsync };
            let _ = write!(text, "worker{worker}_log_fsync:{log}\r\n");
        }
        text
    }

    /// QUIT on the REPL: every worker exits, then the master.
    fn shutdown(&mut self, io: &mut impl Io) {
        self.stopping = true;
        for worker in self.live() {
            let op = Op {
                kind: OP_KILL,
                request: 0,
                version: 0,
                key: b"",
                value: b"",
            };
            self.queue(io, worker, op);
            self.flush_batch(io, worker);
        }
        io.stop();
    }

    fn drain_all(&mut self, io: &mut impl Io) {
        // In client order, not the map's (randomly seeded) order: the simulator replays a seed
        // exactly only if the role does the same things in the same order every time.
        let mut clients: Vec<ClientId> = self.clients.keys().copied().collect();
        clients.sort_unstable();
        for client in clients {
            self.drain(io, client);
        }
    }

    /// Writes the client's replies that are complete, from the head of its queue.
    fn drain(&mut self, io: &mut impl Io, client: ClientId) {
        loop {
            let Some(owed) = self.clients.get_mut(&client) else {
                return;
            };
            let release = owed.held
                && owed.entries.len() <= CLIENT_ENTRIES_MAX / 2
                && owed.bytes <= CLIENT_BYTES_MAX / 2;
            if release {
                owed.held = false;
                io.hold_client(client, false);
            }
            let Some((entry, _)) = owed.entries.front() else {
                return;
            };
            let done =
                entry_pendings(entry).all(|p| self.pending.get(p).is_none_or(|p| p.waiting == 0));
            if !done {
                return;
            }
            let (entry, bytes) = owed.entries.pop_front().expect("front");
            owed.bytes -= bytes;
            self.reply(io, client, &entry);
            for pending in entry_pendings(&entry) {
                self.release(pending);
            }
        }
    }

    fn reply(&mut self, io: &mut impl Io, client: ClientId, entry: &Entry) {
        let failed = entry_pendings(entry).any(|p| self.pending.get(p).is_none_or(|p| p.failed));
        if failed && !matches!(entry, Entry::Stats { .. }) {
            io.reply(client, &Reply::Error("ERR no live replica answered; retry"));
            return;
        }
        match entry {
            Entry::Quit => {
                io.reply(client, &Reply::Ok);
                if Some(client) == self.repl {
                    self.shutdown(io);
                } else {
                    io.close_client(client);
                }
            }
            Entry::Shutdown => {
                if Some(client) == self.repl {
                    io.reply(client, &Reply::Ok);
                }
                info!("master: SHUTDOWN from client {client}; stopping the cluster");
                self.shutdown(io);
            }
            Entry::Refused(text) => {
                io.reply(client, &Reply::Error(text));
                io.close_client(client);
            }
            Entry::Now(owned) => match owned {
                Owned::Reply(reply) => {
                    io.reply(client, reply);
                }
                Owned::Error(text) => {
                    io.reply(client, &Reply::Error(text));
                }
                Owned::Bulk(bytes) => {
                    io.reply(client, &Reply::Bulk(Some(bytes)));
                }
                Owned::Lines(text) => {
                    io.reply(client, &Reply::Lines(text));
                }
                Owned::Strings(strings) => {
                    io.reply(client, &Reply::Array(strings.len()));
                    for string in strings {
                        io.reply(client, &Reply::Bulk(Some(string)));
                    }
                }
            },
            Entry::One(pending) => {
                let pending = &self.pending[*pending];
                let reply = match pending.kind {
                    Kind::Get if pending.found => Reply::Bulk(Some(&pending.value)),
                    Kind::Get => Reply::Bulk(None),
                    Kind::Exists | Kind::Del => Reply::Integer(pending.found as i64),
                    Kind::Set | Kind::Stats => Reply::Ok,
                };
                io.reply(client, &reply);
            }
            Entry::Values(pendings) => {
                io.reply(client, &Reply::Array(pendings.len()));
                for &pending in pendings {
                    let pending = &self.pending[pending];
                    io.reply(
                        client,
                        &Reply::Bulk(pending.found.then_some(&pending.value[..])),
                    );
                }
            }
            Entry::Count(pendings) => {
                let count = pendings.iter().filter(|&&p| self.pending[p].found).count();
                io.reply(client, &Reply::Integer(count as i64));
            }
            Entry::AllOk(_) => {
                io.reply(client, &Reply::Ok);
            }
            Entry::Stats {
                pendings,
                workers,
                nodes,
            } => {
                // A worker that died meanwhile counts as down.
                let answered: Vec<(NodeId, KvStats)> = pendings
                    .iter()
                    .zip(workers)
                    .filter(|&(&p, _)| !self.pending[p].failed)
                    .map(|(&p, &worker)| (worker, self.pending[p].stats))
                    .collect();
                let workers: Vec<NodeId> = answered.iter().map(|&(w, _)| w).collect();
                let stats: Vec<KvStats> = answered.iter().map(|&(_, s)| s).collect();
                let primary: u64 = stats.iter().map(|s| s.primary).sum();
                if !nodes {
                    io.reply(client, &Reply::Integer(primary as i64));
                    return;
                }
                let lines = self.nodes_report(&workers, &stats);
                io.reply(client, &Reply::Array(lines.len()));
                for line in &lines {
                    io.reply(client, &Reply::Status(line));
                }
            }
        }
    }

    /// NODES: each worker's state and counts, then whether every key has its replicas.
    fn nodes_report(&self, workers: &[NodeId], stats: &[KvStats]) -> Vec<String> {
        let mut lines = Vec::new();
        for worker in 0..self.workers {
            match workers.iter().position(|&w| w == worker) {
                Some(index) => {
                    let s = stats[index];
                    lines.push(format!(
                        "worker {worker} up keys {} primary {} misplaced {}",
                        s.keys, s.primary, s.misplaced
                    ));
                }
                None => lines.push(format!("worker {worker} down")),
            }
        }
        if workers.is_empty() {
            lines.push("no worker is up: no key can be read or written".to_string());
            return lines;
        }
        let keys: u64 = stats.iter().map(|s| s.primary).sum();
        let copies: u64 = stats.iter().map(|s| s.keys - s.misplaced).sum();
        let wanted = self.replicas.min(workers.len()) as u64;
        let verdict = if copies == keys * wanted {
            "every key has"
        } else {
            "NOT every key has"
        };
        lines.push(format!(
            "keys {keys} copies {copies}: {verdict} {wanted} live copies (replicas {})",
            self.replicas
        ));
        lines
    }

    pub fn on_message(&mut self, io: &mut impl Io, from: NodeId, message: Message<'_>) {
        if from < self.workers {
            self.heard(io, from);
        }
        match message {
            Message::KvResults(results) if from < self.workers => {
                self.receive_results(io, from, &results)
            }
            Message::KvOps(ops) if from < self.workers => self.relay(io, from, &ops),
            Message::KvMembership(done) if from < self.workers => {
                self.transferred[from] = self.transferred[from].max(done.epoch);
            }
            other => debug!("master: ignoring {:?} from {from}", other.kind()),
        }
    }

    pub fn on_flush(&mut self, io: &mut impl Io) {
        for worker in 0..self.workers {
            if self.up[worker] {
                self.flush_batch(io, worker);
            } else {
                self.batches[worker].clear();
            }
        }
        self.send_credits(io);
        self.evict_overflowing(io);
    }

    /// The link to `worker` has room again.
    pub fn on_writable(&mut self, io: &mut impl Io, worker: NodeId) {
        if worker < self.workers && self.up[worker] {
            self.drain_outbox(io, worker);
        }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    pub fn stopping(&self) -> bool {
        self.stopping
    }
}

/// One batch of operations to a worker; false if its link has no room (nothing was queued).
fn send_ops(io: &mut impl Io, worker: NodeId, ops: &[u8]) -> bool {
    let message = Message::KvOps(KvOps {
        target: NO_NODE,
        ops,
    });
    io.send(worker, &message)
}

fn entry_pendings(entry: &Entry) -> impl Iterator<Item = usize> + '_ {
    let list: &[usize] = match entry {
        Entry::Now(_) | Entry::Quit | Entry::Shutdown | Entry::Refused(_) => &[],
        Entry::One(pending) => std::slice::from_ref(pending),
        Entry::Values(list) | Entry::Count(list) | Entry::AllOk(list) => list,
        Entry::Stats { pendings, .. } => pendings,
    };
    list.iter().copied()
}

/// What input waited for the cluster to be ready.
enum Backlogged {
    Command(Vec<Vec<u8>>),
    /// A parse error, and whether the client is then closed.
    Error(String, bool),
}

/// A subcommand pollen does not have: Redis's wording, and no pretence of success.
fn not_supported(command: &Command<'_>) -> Entry {
    let name = String::from_utf8_lossy(command.arg(0)).to_uppercase();
    let sub = String::from_utf8_lossy(command.arg(1.min(command.len() - 1)));
    Entry::Now(Owned::Error(format!(
        "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try {name} HELP \
         (pollen supports {name} {})",
        match name.as_str() {
            "CLIENT" => "ID, SETNAME, GETNAME, INFO",
            "COMMAND" => "COUNT, DOCS",
            "CONFIG" => "GET save|appendonly|appendfsync",
            _ => "nothing else",
        }
    )))
}
