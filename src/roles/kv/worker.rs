//! The kv worker: a versioned store. It applies the master's batches in order and answers in
//! one batch per loop iteration. On a membership change it walks its store and sends every key
//! (value, version; deletions as tombstones) to the key's other replicas under the new
//! placement — every holder does, so a replica that lost its data gets it back, and versions
//! make the duplicates harmless — through the master, in bounded batches paced by the
//! connection's room and by credits: at most `TRANSFER_WINDOW` batches
//! per target wait to be passed on by the master — clients are never stalled behind a
//! transfer. Nothing bound for the master is dropped for lack of room: results wait in order.
//!
//! Durability (`--data-dir`): every applied write is appended to a `Journal` and committed
//! before any result leaves in the same loop iteration, so an acknowledged write is in the log
//! (on disk under `--fsync always`). At start the worker replays its log and greets the master
//! with the highest version it holds; the transfers of the new membership then bring it what
//! it missed while down. When the log outgrows `REWRITE_FACTOR` × the live data (and the
//! configured minimum), it is rewritten from the store a bounded step per tick.

use std::collections::VecDeque;

use super::placement::{HashRing, REPLICAS_MAX};
use super::store::Store;
use crate::journal::{Journal, Record};
use crate::node::{Io, Micros, NodeId, Timer};
use crate::wire::kv::{
    KEY_BYTES_MAX, KvCredit, KvMembership, KvOps, KvResults, KvStats, OP_DEL, OP_GET, OP_KILL,
    OP_PUT, OP_SET, OP_STATS, Op, OpResult, REQUEST_HELLO, STATUS_INTEGER, STATUS_NIL, STATUS_OK,
    STATUS_VALUE, VALUE_BYTES_MAX,
};
use crate::wire::{FRAME_BYTES_MAX, Items, Message};
use crate::{debug, info};

/// Batches are sent before they could outgrow a frame.
const BATCH_BYTES_MAX: usize = FRAME_BYTES_MAX - 16 - KEY_BYTES_MAX - VALUE_BYTES_MAX;
/// Transfers go in small batches, so that a transfer takes its turn with client traffic.
const TRANSFER_BATCH_BYTES: usize = 8 * 1024;
/// Keys examined per transfer step.
const TRANSFER_KEYS_PER_STEP: usize = 4096;
/// Transfer batches per target sent and not yet credited by the master (256 KiB).
const TRANSFER_WINDOW: u32 = 32;
const TIMER_TICK: Timer = Timer(1);
const TICK_US: u64 = 10_000;
/// An idle worker tells the master it is alive this often (see `master::SUSPECT_US`).
pub const HEARTBEAT_US: Micros = 100_000;
/// A log is rewritten when it is this many times the size of the live data.
pub const REWRITE_FACTOR: u64 = 2;
/// Bytes of live data a rewrite writes per tick (100 MiB/s at most, in 1 MiB steps).
const REWRITE_BYTES_PER_STEP: usize = 1 << 20;

/// A walk over the store's positions `at..end` (a membership change's transfer, or a log
/// rewrite); items added after it started lie past `end`.
struct Walk {
    at: usize,
    end: usize,
}

/// The worker's log, if it has one.
struct Durable {
    journal: Option<Box<dyn Journal>>,
    /// A write or sync failed: the worker stops and acknowledges nothing more.
    failed: bool,
    /// Logs smaller than this are not rewritten.
    rewrite_min: u64,
    rewrite: Option<Walk>,
}

impl Durable {
    fn append(&mut self, record: &Record<'_>) {
        if let Some(journal) = &mut self.journal {
            journal.append(record);
        }
    }

    /// Whether what was appended may now be acknowledged.
    fn commit(&mut self, io: &mut impl Io) -> bool {
        if self.failed {
            return false;
        }
        let Some(journal) = &mut self.journal else {
            return true;
        };
        match journal.commit(io.now()) {
            Ok(()) => true,
            Err(error) => self.fail(io, &error),
        }
    }

    fn fail(&mut self, io: &mut impl Io, error: &str) -> bool {
        info!("error: {error}; the worker stops (writes can no longer be made durable)");
        self.failed = true;
        io.stop();
        false
    }
}

pub struct Worker {
    node: NodeId,
    master: NodeId,
    store: Store,
    replicas: usize,
    members: Vec<NodeId>,
    ring: HashRing,
    epoch: u32,
    replies: Replies,
    /// Per target worker: PUTs waiting to go (through the master).
    outgoing: Vec<Vec<u8>>,
    /// Per target worker: batches sent and not yet credited.
    in_flight: Vec<u32>,
    transfer: Option<Walk>,
    /// The walk is over; the last batches are still to go before the report.
    finishing: bool,
    /// A transfer report (the epoch) the link had no room for yet.
    done_owed: Option<u32>,
    /// Scratch for a PUT's value.
    scratch: Vec<u8>,
    durable: Durable,
    /// The highest version held (told to the master on connecting).
    max_version: u64,
    pub sent_keys: u64,
    /// Transfer steps that stopped for want of credits.
    pub credit_waits: u64,
    heartbeat_us: Micros,
    last_heartbeat: Micros,
}

impl Worker {
    pub fn new(node: NodeId, workers: usize) -> Worker {
        Worker {
            node,
            master: workers,
            store: Store::default(),
            replicas: 1,
            members: Vec::new(),
            ring: HashRing::default(),
            epoch: 0,
            replies: Replies {
                batch: Vec::with_capacity(FRAME_BYTES_MAX),
                waiting: VecDeque::new(),
                spare: Vec::new(),
            },
            outgoing: (0..workers).map(|_| Vec::new()).collect(),
            in_flight: vec![0; workers],
            transfer: None,
            finishing: false,
            done_owed: None,
            scratch: Vec::new(),
            durable: Durable {
                journal: None,
                failed: false,
                rewrite_min: 0,
                rewrite: None,
            },
            max_version: 0,
            sent_keys: 0,
            credit_waits: 0,
            heartbeat_us: HEARTBEAT_US,
            last_heartbeat: 0,
        }
    }

    /// Logs every applied write to `journal` (replayed at start); logs past `rewrite_min`
    /// bytes are rewritten when they outgrow the live data `REWRITE_FACTOR` times.
    pub fn with_journal(mut self, journal: Box<dyn Journal>, rewrite_min: u64) -> Worker {
        self.durable.journal = Some(journal);
        self.durable.rewrite_min = rewrite_min;
        self
    }

    pub fn master(&self) -> NodeId {
        self.master
    }

    /// What is held of `key`: its version and value (`None`: a deletion's tombstone).
    pub fn entry(&self, key: &[u8]) -> Option<(u64, Option<&[u8]>)> {
        let item = self.store.get(key)?;
        Some((item.version, item.value.as_deref()))
    }

    /// The version of `key` held, if it has a value.
    pub fn holds(&self, key: &[u8]) -> Option<u64> {
        let item = self.store.get(key)?;
        item.value.as_ref().map(|_| item.version)
    }

    /// Bytes in the log (0 without one).
    pub fn log_bytes(&self) -> u64 {
        self.durable
            .journal
            .as_ref()
            .map_or(0, |journal| journal.bytes())
    }

    pub fn keys(&self) -> usize {
        self.store.present()
    }

    pub fn on_start(&mut self, io: &mut impl Io) {
        io.set_timer(TICK_US, TIMER_TICK);
        let Some(mut journal) = self.durable.journal.take() else {
            return;
        };
        let (store, max_version) = (&mut self.store, &mut self.max_version);
        let replayed = journal.replay(&mut |record| {
            store.write(record);
            *max_version = (*max_version).max(record.version);
        });
        self.durable.journal = Some(journal);
        match replayed {
            Ok(replayed) => info!(
                "worker {}: replayed {} records: {} keys, highest version {}",
                self.node,
                replayed.records,
                self.keys(),
                self.max_version
            ),
            Err(error) => {
                self.durable.fail(io, &error);
            }
        }
    }

    /// Greets the master with the highest version held, so that its versions stay newer.
    pub fn on_master_up(&mut self) {
        let journal = self.durable.journal.as_ref();
        let hello = OpResult {
            request: REQUEST_HELLO,
            status: STATUS_OK,
            version: self.max_version,
            value: journal
                .map_or("", |journal| journal.fsync().name())
                .as_bytes(),
        };
        hello.append_to(&mut self.replies.batch);
    }

    pub fn on_message(&mut self, io: &mut impl Io, from: NodeId, message: Message<'_>) {
        match message {
            Message::KvOps(ops) if from == self.master => self.apply(io, &ops),
            Message::KvMembership(membership) if from == self.master => {
                self.membership(&membership)
            }
            Message::KvCredit(credit) if from == self.master => self.credit(io, credit),
            other => debug!(
                "worker {}: ignoring {:?} from {from}",
                self.node,
                other.kind()
            ),
        }
    }

    pub fn set_heartbeat_us(&mut self, heartbeat_us: Micros) {
        self.heartbeat_us = heartbeat_us;
    }

    pub fn on_timer(&mut self, io: &mut impl Io, _timer: Timer) {
        // A heartbeat: an empty batch of results (the master counts any frame as a sign of
        // life; under load the results themselves are).
        if io.now().saturating_sub(self.last_heartbeat) >= self.heartbeat_us {
            self.last_heartbeat = io.now();
            io.send(self.master, &Message::KvResults(KvResults { results: &[] }));
        }
        self.step_transfer(io);
        self.step_rewrite(io);
        // Idle or not, `everysec` gets its chance to sync.
        self.durable.commit(io);
        io.set_timer(TICK_US, TIMER_TICK);
    }

    pub fn on_writable(&mut self, io: &mut impl Io) {
        self.replies.drain(io, self.master);
        self.step_transfer(io);
        self.maybe_done(io);
    }

    /// Sends the batch of results built during this loop iteration.
    pub fn on_flush(&mut self, io: &mut impl Io) {
        self.flush_results(io);
        self.flush_outgoing(io);
        self.maybe_done(io);
    }

    /// The master passed on `batches` of this worker's transfer batches for `target`.
    fn credit(&mut self, io: &mut impl Io, credit: KvCredit) {
        if let Some(in_flight) = self.in_flight.get_mut(credit.target as usize) {
            *in_flight = in_flight.saturating_sub(credit.batches);
        }
        self.step_transfer(io);
    }

    fn flush_results(&mut self, io: &mut impl Io) {
        self.replies.flush(io, self.master, &mut self.durable);
    }

    fn result(&mut self, io: &mut impl Io, request: u64, status: u8, value: &[u8]) {
        let result = OpResult {
            request,
            status,
            version: 0,
            value,
        };
        self.replies
            .push(io, self.master, &mut self.durable, result);
    }

    fn apply(&mut self, io: &mut impl Io, ops: &KvOps<'_>) {
        for op in ops.iter() {
            match op.kind {
                OP_GET => {
                    let entry = self.store.get(op.key);
                    let version = entry.map_or(0, |entry| entry.version);
                    let (status, value) = match entry.and_then(|entry| entry.value.as_deref()) {
                        Some(value) => (STATUS_VALUE, value),
                        None => (STATUS_NIL, &b""[..]),
                    };
                    let result = OpResult {
                        request: op.request,
                        status,
                        version,
                        value,
                    };
                    self.replies
                        .push(io, self.master, &mut self.durable, result);
                }
                OP_SET => {
                    self.write(op.key, op.version, Some(op.value));
                    self.result(io, op.request, STATUS_OK, b"");
                }
                OP_DEL => {
                    let existed = self
                        .store
                        .get(op.key)
                        .is_some_and(|entry| entry.value.is_some());
                    self.write(op.key, op.version, None);
                    self.result(
                        io,
                        op.request,
                        STATUS_INTEGER,
                        &(existed as u64).to_be_bytes(),
                    );
                }
                OP_PUT => {
                    let value = (op.value.first() == Some(&1)).then(|| &op.value[1..]);
                    self.write(op.key, op.version, value);
                }
                OP_STATS => {
                    let mut bytes = [0u8; KvStats::LEN];
                    self.stats().write(&mut bytes);
                    self.result(io, op.request, STATUS_VALUE, &bytes);
                }
                OP_KILL => {
                    info!("worker {}: told to exit", self.node);
                    self.flush_results(io);
                    io.stop();
                    return;
                }
                _ => {}
            }
        }
    }

    /// Stores a version if it is newer than what is held, and logs it.
    fn write(&mut self, key: &[u8], version: u64, value: Option<&[u8]>) {
        let record = Record {
            version,
            key,
            value,
        };
        if self.store.write(record) {
            self.durable.append(&record);
            self.max_version = self.max_version.max(version);
        }
    }

    /// Starts or continues a rewrite of the log from the store, a bounded step at a time.
    fn step_rewrite(&mut self, io: &mut impl Io) {
        let durable = &mut self.durable;
        let Some(journal) = &mut durable.journal else {
            return;
        };
        if durable.failed {
            return;
        }
        let Some(mut rewrite) = durable.rewrite.take() else {
            let bytes = journal.bytes();
            let live = self.store.live_bytes();
            if bytes >= durable.rewrite_min && bytes >= REWRITE_FACTOR * live {
                info!(
                    "worker {}: rewriting the log ({bytes} bytes, {live} live)",
                    self.node
                );
                if let Err(error) = journal.rewrite_begin() {
                    durable.fail(io, &error);
                    return;
                }
                let end = self.store.len();
                durable.rewrite = Some(Walk { at: 0, end });
            }
            return;
        };
        // An item's current version: writes since the walk began are in the new log already,
        // and copying the same version twice is harmless.
        let mut written = 0;
        while rewrite.at < rewrite.end && written < REWRITE_BYTES_PER_STEP {
            let record = self.store.item(rewrite.at).record();
            rewrite.at += 1;
            journal.rewrite_append(&record);
            written += record.encoded_len();
        }
        if rewrite.at < rewrite.end {
            durable.rewrite = Some(rewrite);
            return;
        }
        match journal.rewrite_finish() {
            Ok(()) => info!(
                "worker {}: log rewritten: {} bytes",
                self.node,
                journal.bytes()
            ),
            Err(error) => {
                durable.fail(io, &error);
            }
        }
    }

    fn stats(&self) -> KvStats {
        let mut stats = KvStats::default();
        let mut replicas = [0; REPLICAS_MAX];
        for item in self.store.iter() {
            let key = &item.key;
            if item.value.is_none() {
                continue;
            }
            stats.keys += 1;
            let count = self.ring.replicas(key, self.replicas, &mut replicas);
            if count > 0 && replicas[0] == self.node {
                stats.primary += 1;
            }
            if !replicas[..count].contains(&self.node) {
                stats.misplaced += 1;
            }
        }
        stats
    }

    fn membership(&mut self, membership: &KvMembership<'_>) {
        if membership.epoch <= self.epoch {
            return;
        }
        self.epoch = membership.epoch;
        self.replicas = (membership.replicas as usize).clamp(1, REPLICAS_MAX);
        self.members.clear();
        self.members
            .extend(membership.members.iter().map(|member| member as NodeId));
        self.members.retain(|&member| member < self.master);
        self.ring = HashRing::new(&self.members);
        // Batches of the previous walk still in flight are credited later (the count saturates).
        self.in_flight.fill(0);
        self.finishing = false;
        // Every key, against the new placement (a transfer in progress is superseded: its
        // remaining keys are in this walk too). Keys that arrive later need no walk here: the
        // master's writes under an older placement came before this membership (one ordered
        // link), its later ones go to the new replicas, and a key relayed by another worker is
        // held by that worker, whose own walk under this membership sends it on.
        let end = self.store.len();
        debug!(
            "worker {}: epoch {}, {end} keys to examine",
            self.node, self.epoch
        );
        self.transfer = Some(Walk { at: 0, end });
    }

    /// Examines the next keys of a transfer and queues PUTs for the replicas that need them.
    fn step_transfer(&mut self, io: &mut impl Io) {
        let Some(mut transfer) = self.transfer.take() else {
            return;
        };
        let end = (transfer.at + TRANSFER_KEYS_PER_STEP).min(transfer.end);
        while transfer.at < end {
            if io.send_space(self.master) < TRANSFER_BATCH_BYTES {
                break; // resumed on_writable or on the next tick
            }
            let entry = self.store.item(transfer.at);
            let key: &[u8] = &entry.key;
            let mut targets = [0; REPLICAS_MAX];
            let count = self.targets(key, &mut targets);
            // A PUT's value is a presence byte then the value: tombstones travel too.
            self.scratch.clear();
            match &entry.value {
                Some(bytes) => {
                    self.scratch.push(1);
                    self.scratch.extend_from_slice(bytes);
                }
                None => self.scratch.push(0),
            }
            let (version, value) = (entry.version, &self.scratch);
            let put = Op {
                kind: OP_PUT,
                request: 0,
                version,
                key,
                value,
            };
            // A target whose batch is full and whose window is spent holds the walk here until
            // the master credits it (the credit resumes it).
            let blocked = targets[..count].iter().any(|&target| {
                self.outgoing[target].len() + put.encoded_len() > TRANSFER_BATCH_BYTES
                    && self.in_flight[target] >= TRANSFER_WINDOW
            });
            if blocked {
                self.credit_waits += 1;
                break;
            }
            transfer.at += 1;
            for &target in &targets[..count] {
                let batch = &mut self.outgoing[target];
                if batch.len() + put.encoded_len() > TRANSFER_BATCH_BYTES
                    && send_batch(io, self.master, target, batch)
                {
                    self.in_flight[target] += 1;
                }
                put.append_to(batch);
                self.sent_keys += 1;
            }
        }
        if transfer.at < transfer.end {
            self.transfer = Some(transfer);
        } else {
            debug!("worker {}: walk for epoch {} done", self.node, self.epoch);
            self.finishing = true;
            self.maybe_done(io);
        }
    }

    /// Once the walk is over and its last batches have gone, tells the master (after the PUTs,
    /// which it passes on first): a worker that joined in this epoch may serve reads once every
    /// live worker has said so.
    fn maybe_done(&mut self, io: &mut impl Io) {
        if self.finishing {
            self.flush_outgoing(io);
            if self.outgoing.iter().all(Vec::is_empty) {
                self.finishing = false;
                self.done_owed = Some(self.epoch);
            }
        }
        if let Some(epoch) = self.done_owed {
            let done = KvMembership {
                epoch,
                replicas: 0,
                members: Items::Host(&[]),
            };
            if io.send(self.master, &Message::KvMembership(done)) {
                self.done_owed = None;
            }
        }
    }

    /// The workers this one sends `key` to: every replica of it under the new membership but
    /// itself. Every holder sends, so a replica that lost its data (restarted, or cut off while
    /// others moved on) always gets it back; versions make the duplicates harmless.
    fn targets(&self, key: &[u8], out: &mut [NodeId; REPLICAS_MAX]) -> usize {
        let mut new = [0; REPLICAS_MAX];
        let new_count = self.ring.replicas(key, self.replicas, &mut new);
        let mut count = 0;
        for &target in &new[..new_count] {
            if target != self.node {
                out[count] = target;
                count += 1;
            }
        }
        count
    }

    /// Sends the partly filled transfer batches whose target has window left.
    fn flush_outgoing(&mut self, io: &mut impl Io) {
        for (target, batch) in self.outgoing.iter_mut().enumerate() {
            if !batch.is_empty()
                && self.in_flight[target] < TRANSFER_WINDOW
                && send_batch(io, self.master, target, batch)
            {
                self.in_flight[target] += 1;
            }
        }
    }
}

/// Sends a batch of PUTs for `target` through the master (workers know no other worker);
/// whether it went (the batch is then empty).
fn send_batch(io: &mut impl Io, master: NodeId, target: NodeId, batch: &mut Vec<u8>) -> bool {
    let message = Message::KvOps(KvOps {
        target: target as u16,
        ops: batch,
    });
    let sent = io.send(master, &message);
    if sent {
        batch.clear();
    }
    sent
}

/// Results to the master: the batch being built, and batches the link had no room for yet.
struct Replies {
    batch: Vec<u8>,
    waiting: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
}

impl Replies {
    /// Appends a result (sending the batch first if it would outgrow a frame).
    fn push(
        &mut self,
        io: &mut impl Io,
        master: NodeId,
        durable: &mut Durable,
        result: OpResult<'_>,
    ) {
        if self.batch.len() + result.encoded_len() > BATCH_BYTES_MAX {
            self.flush(io, master, durable);
        }
        result.append_to(&mut self.batch);
    }

    /// Sends the batch — once the writes it acknowledges are committed — after any that
    /// waited, or leaves it waiting.
    fn flush(&mut self, io: &mut impl Io, master: NodeId, durable: &mut Durable) {
        self.drain(io, master);
        if self.batch.is_empty() {
            return;
        }
        if !durable.commit(io) {
            self.batch.clear();
            return;
        }
        if self.waiting.is_empty() && send_results(io, master, &self.batch) {
            self.batch.clear();
            return;
        }
        let spare = self.spare.pop().unwrap_or_default();
        let batch = std::mem::replace(&mut self.batch, spare);
        self.waiting.push_back(batch);
    }

    /// Sends the batches that waited for room, in order.
    fn drain(&mut self, io: &mut impl Io, master: NodeId) {
        while let Some(batch) = self.waiting.front() {
            if !send_results(io, master, batch) {
                return;
            }
            let mut batch = self.waiting.pop_front().expect("front");
            batch.clear();
            self.spare.push(batch);
        }
    }
}

/// One batch of results to the master; false if the link has no room.
fn send_results(io: &mut impl Io, master: NodeId, results: &[u8]) -> bool {
    io.send(master, &Message::KvResults(KvResults { results }))
}
