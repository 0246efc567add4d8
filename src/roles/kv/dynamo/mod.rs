//! kv without a master: every node serves clients and coordinates their requests on the key's
//! replicas directly (Dynamo's design, with linearizable quorums).
//!
//! - **Placement** (`slots.rs`): a key's hash slot (Redis Cluster's CRC16) belongs to a
//!   partition of 64 slots, placed on `replicas` of the data nodes by consistent hashing. It
//!   depends on the peers file only, so every node computes the same preference lists without
//!   talking; a node that is down is skipped, not replaced (see "What holds").
//! - **Requests** (`coordinator.rs`): ABD reads and two-phase writes over `R` and `W` of the
//!   key's replicas, versions from a hybrid logical clock (`hlc.rs`).
//! - **Liveness** (`membership.rs`): SWIM probes, indirect probes and suspicion, gossiped on
//!   the probes; a replica is asked only while it is up by SWIM and its connection is up.
//! - **Repair** (`repair.rs`): Merkle-tree anti-entropy between every pair of data nodes that
//!   share partitions, one session at a time per node, so a replica that missed writes (down,
//!   cut off, restarted empty) converges without a full exchange.
//! - **Durability** (`replica.rs`): the journal of the master-based kv, unchanged: a write is
//!   in the log before any answer leaves in the same loop iteration.
//!
//! Nodes `0..data_nodes` hold data; a node past them (distro-db's `kv master`) holds none and
//! coordinates only: a front door whose loss costs nothing but its own clients.
//!
//! What holds: with `R + W > N`, single-key GET/SET/DEL are linearizable while no more than
//! `N − W` replicas of the key are down (reads: `N − R`); an acknowledged write survives any
//! `N − 1` replica losses (`W − 1` under `--fsync always` if every replica crashes at once).
//! When too few replicas are up a request fails (`CLUSTERDOWN`: no effect; `TRYAGAIN`: a write
//! that may have taken effect) rather than answering from fewer.

mod coordinator;
mod repair;
mod replica;

use std::fmt::Write as _;

use coordinator::{Action, Answer, Coordinator, Replicas};
use repair::{Repair, Repairs};
pub use replica::Replica;

use super::hlc::Hlc;
use super::membership::{Membership, State, Swim, Update, Updates};
use super::placement::REPLICAS_MAX;
use super::slots::{PARTITION_SLOTS, SlotMap};
use crate::node::{ClientId, Io, Micros, NodeId, Timer};
use crate::wire::client::{Command, Reply};
use crate::wire::kv::{
    KEY_BYTES_MAX, KvOps, KvResults, KvSwim, KvTree, OP_DEL, OP_GET, OP_KILL, OP_PUT, OP_SET,
    OP_VERSION, Op, OpResult, STATUS_NIL, STATUS_OK, STATUS_VALUE, SWIM_ACK, SWIM_PING,
    SWIM_PING_REQ, SWIM_UPDATE_BYTES, VALUE_BYTES_MAX, write_swim_update,
};
use crate::wire::{FRAME_BYTES_MAX, Message, NO_NODE};
use crate::{debug, info};

/// Batches of ops or results are closed before they could outgrow a frame.
const BATCH_BYTES_MAX: usize = FRAME_BYTES_MAX - 64 - KEY_BYTES_MAX - VALUE_BYTES_MAX;
const TIMER_TICK: Timer = Timer(200);
const TICK_US: Micros = 10_000;
/// Cassandra's default gc_grace: a replica down longer than this may bring a deleted value
/// back (it missed the deletion, and the tombstone that would have told it is gone).
pub const TOMBSTONE_GRACE_US: Micros = 24 * 3600 * 1_000_000;
/// Store items examined per tick by the reclaiming sweep.
const RECLAIM_ITEMS_PER_TICK: usize = 4096;

#[derive(Clone, Debug)]
pub struct Config {
    /// Nodes `0..data_nodes` hold data.
    pub data_nodes: usize,
    /// All nodes: the data nodes and, past them, a front door.
    pub nodes: usize,
    pub replicas: usize,
    pub write_quorum: usize,
    pub read_quorum: usize,
    pub request_timeout_us: Micros,
    pub repair_every_us: Micros,
    /// A deletion's tombstone is reclaimed this long after the deletion was stamped.
    pub tombstone_grace_us: Micros,
    pub seed: u64,
}

impl Config {
    /// `replicas` copies with majority quorums (`W = N/2 + 1`, `R = N + 1 − W`).
    pub fn new(data_nodes: usize, nodes: usize, replicas: usize) -> Config {
        let replicas = replicas.clamp(1, data_nodes.clamp(1, REPLICAS_MAX));
        let write_quorum = replicas / 2 + 1;
        Config {
            data_nodes,
            nodes,
            replicas,
            write_quorum,
            read_quorum: replicas + 1 - write_quorum,
            request_timeout_us: 1_000_000,
            repair_every_us: 1_000_000,
            tombstone_grace_us: TOMBSTONE_GRACE_US,
            seed: 0,
        }
    }
}

/// Frames waiting for the end of the loop iteration (or for room), per peer.
struct Outbox {
    ops: Vec<Vec<u8>>,
    results: Vec<Vec<u8>>,
    /// Anti-entropy steps: session, step, body.
    steps: Vec<(u32, u8, Vec<u8>)>,
}

/// What the coordinator and the repair sessions see of the node: placement, liveness, and
/// where their messages go.
struct Links {
    me: NodeId,
    slots: SlotMap,
    data_nodes: usize,
    membership: Membership,
    connected: Vec<bool>,
    outboxes: Vec<Outbox>,
    swims: Vec<(NodeId, Swim)>,
}

impl Links {
    fn up(&self, node: NodeId) -> bool {
        node == self.me || (self.connected[node] && self.membership.is_up(node))
    }

    fn queue_op(&mut self, to: NodeId, op: &Op<'_>) {
        let batches = &mut self.outboxes[to].ops;
        if batches
            .last()
            .is_none_or(|b| b.len() + op.encoded_len() > BATCH_BYTES_MAX)
        {
            batches.push(Vec::new());
        }
        op.append_to(batches.last_mut().unwrap());
    }

    fn queue_result(&mut self, to: NodeId, result: &OpResult<'_>) {
        let batches = &mut self.outboxes[to].results;
        if batches
            .last()
            .is_none_or(|b| b.len() + result.encoded_len() > BATCH_BYTES_MAX)
        {
            batches.push(Vec::new());
        }
        result.append_to(batches.last_mut().unwrap());
    }
}

impl Replicas for Links {
    fn replicas_of(&self, key: &[u8], out: &mut [NodeId; REPLICAS_MAX]) -> usize {
        let replicas = self.slots.key_replicas(key);
        out[..replicas.len()].copy_from_slice(replicas);
        replicas.len()
    }
    fn is_up(&self, node: NodeId) -> bool {
        self.up(node)
    }
    fn send_op(&mut self, to: NodeId, op: &Op<'_>) {
        self.queue_op(to, op);
    }
}

impl Repairs for Links {
    fn send_step(&mut self, to: NodeId, session: u32, step: u8, body: &[u8]) -> bool {
        self.outboxes[to].steps.push((session, step, body.to_vec()));
        true
    }
    fn push(&mut self, to: NodeId, key: &[u8], version: u64, value: Option<&[u8]>) {
        let op = Op {
            kind: OP_PUT,
            request: value.is_some() as u64,
            version,
            key,
            value: value.unwrap_or(b""),
        };
        self.queue_op(to, &op);
    }
}

pub struct Node {
    config: Config,
    links: Links,
    hlc: Hlc,
    replica: Option<Replica>,
    coordinator: Coordinator,
    repair: Repair,
    next_repair_us: Micros,
    /// Clients to close once their answers are out (QUIT).
    closing: Vec<ClientId>,
    /// A SHUTDOWN came: later commands are ignored; it takes effect in its turn.
    shutting_down: bool,
    stopping: bool,
}

impl Node {
    /// Node `me` of a cluster; a data node (`me < data_nodes`) holds a replica with `journal`.
    pub fn new(
        config: Config,
        me: NodeId,
        journal: Option<Box<dyn crate::journal::Journal>>,
    ) -> Node {
        assert!(me < config.nodes && config.data_nodes <= config.nodes);
        let data_nodes: Vec<NodeId> = (0..config.data_nodes).collect();
        let slots = SlotMap::new(&data_nodes, config.replicas);
        let shared = shared_partitions(me, &slots, config.data_nodes);
        let holds_data = me < config.data_nodes;
        Node {
            links: Links {
                me,
                slots,
                data_nodes: config.data_nodes,
                membership: Membership::new(me, config.nodes, 0, config.seed),
                connected: vec![false; config.nodes],
                outboxes: (0..config.nodes)
                    .map(|_| Outbox {
                        ops: Vec::new(),
                        results: Vec::new(),
                        steps: Vec::new(),
                    })
                    .collect(),
                swims: Vec::new(),
            },
            hlc: Hlc::new(me),
            replica: holds_data.then(|| Replica::new(journal)),
            coordinator: Coordinator::new(
                config.write_quorum,
                config.read_quorum,
                config.request_timeout_us,
            ),
            repair: Repair::new(me, shared),
            next_repair_us: 0,
            closing: Vec::new(),
            shutting_down: false,
            stopping: false,
            config,
        }
    }

    pub fn replica(&self) -> Option<&Replica> {
        self.replica.as_ref()
    }

    /// Whether `node` is up as this node sees it.
    pub fn sees_up(&self, node: NodeId) -> bool {
        self.links.up(node)
    }

    pub fn on_start(&mut self, io: &mut impl Io) {
        let me = self.links.me;
        // The incarnation is the start time, so a restart outranks what others remember.
        self.links.membership = Membership::new(me, self.config.nodes, io.now(), self.config.seed);
        self.hlc.observe(0);
        if let Some(replica) = &mut self.replica {
            match replica.replay() {
                Ok(records) if records > 0 => {
                    info!(
                        "node {me}: replayed {records} records: {} keys",
                        replica.keys()
                    )
                }
                Ok(_) => {}
                Err(error) => {
                    info!("node {me}: cannot replay the log: {error}");
                    io.stop();
                    return;
                }
            }
            self.hlc.observe(replica.max_version());
        }
        self.next_repair_us = io.now() + self.config.repair_every_us;
        io.set_timer(TICK_US, TIMER_TICK);
    }

    pub fn on_timer(&mut self, io: &mut impl Io, timer: Timer) {
        if timer != TIMER_TICK || self.stopping {
            return;
        }
        let now = io.now();
        self.links.membership.tick(now, &mut self.links.swims);
        self.coordinator.expire(now);
        if let Some(replica) = &mut self.replica
            && self.repair.idle()
        {
            let horizon = now.saturating_sub(self.config.tombstone_grace_us);
            replica.reclaim(horizon, RECLAIM_ITEMS_PER_TICK);
        }
        if now >= self.next_repair_us {
            self.next_repair_us = now + self.config.repair_every_us;
            if let Some(replica) = &self.replica {
                let up: Vec<bool> = (0..self.config.data_nodes)
                    .map(|n| self.links.up(n))
                    .collect();
                self.repair.tick(now, replica, &up, &mut self.links);
            }
        }
        io.set_timer(TICK_US, TIMER_TICK);
    }

    pub fn on_peer_up(&mut self, peer: NodeId) {
        self.links.connected[peer] = true;
    }

    pub fn on_peer_down(&mut self, peer: NodeId) {
        self.links.connected[peer] = false;
    }

    pub fn on_message(&mut self, io: &mut impl Io, from: NodeId, message: Message<'_>) {
        if from >= self.config.nodes {
            return;
        }
        match message {
            Message::KvOps(ops) => self.on_ops(io, from, &ops),
            Message::KvResults(results) => {
                for result in results.iter() {
                    let now = io.now();
                    let links = &mut self.links;
                    self.coordinator
                        .on_result(links, &mut self.hlc, now, from, &result);
                }
            }
            Message::KvSwim(swim) => {
                if let Some(message) = swim_of(&swim, self.config.nodes) {
                    let now = io.now();
                    let swims = &mut self.links.swims;
                    self.links.membership.on_message(now, from, message, swims);
                }
            }
            Message::KvTree(tree) => self.on_tree(io, from, &tree),
            other => debug!(
                "node {}: ignoring {:?} from {from}",
                self.links.me,
                other.kind()
            ),
        }
    }

    /// A coordinator's ops for this replica: answered at the end of the iteration, after the
    /// log's commit.
    fn on_ops(&mut self, io: &mut impl Io, from: NodeId, ops: &KvOps<'_>) {
        for op in ops.iter() {
            if op.kind == OP_KILL {
                info!("node {}: KILL from node {from}", self.links.me);
                self.stop(io);
                return;
            }
            let Some(replica) = &mut self.replica else {
                continue; // a front door holds nothing
            };
            let (status, version, value) = match op.kind {
                OP_GET | OP_VERSION => match replica.get(op.key) {
                    Some((version, Some(value))) => {
                        let value = if op.kind == OP_GET { value } else { b"" };
                        (STATUS_VALUE, version, value)
                    }
                    Some((version, None)) => (STATUS_NIL, version, &b""[..]),
                    None => (STATUS_NIL, 0, &b""[..]),
                },
                OP_SET | OP_DEL => {
                    let value = (op.kind == OP_SET).then_some(op.value);
                    (
                        STATUS_OK,
                        replica.write(op.key, op.version, value),
                        &b""[..],
                    )
                }
                OP_PUT => {
                    // `request` says whether it is a value (1) or a tombstone (0).
                    let value = (op.request == 1).then_some(op.value);
                    replica.write(op.key, op.version, value);
                    continue;
                }
                _ => continue,
            };
            let result = OpResult {
                request: op.request,
                status,
                version,
                value,
            };
            self.links.queue_result(from, &result);
        }
    }

    fn on_tree(&mut self, io: &mut impl Io, from: NodeId, tree: &KvTree<'_>) {
        let Some(replica) = &self.replica else { return };
        if from >= self.config.data_nodes {
            return;
        }
        let (session, step, body) = (tree.session, tree.step, tree.body);
        let now = io.now();
        self.repair
            .on_step(now, replica, from, session, step, body, &mut self.links);
    }

    pub fn on_client(&mut self, io: &mut impl Io, client: ClientId, command: Command<'_>) {
        if self.stopping || self.shutting_down {
            return;
        }
        let now = io.now();
        // The name upper-cased in place of an allocation: longer names are no command here.
        let mut upper = [0u8; 16];
        let word = command.arg(0);
        let name = &mut upper[..word.len().min(16)];
        name.copy_from_slice(&word[..name.len()]);
        name.make_ascii_uppercase();
        let name: &[u8] = if word.len() > 16 { b"" } else { name };
        let arity = command.len();
        let (action, key, value): (Action, &[u8], &[u8]) = match (name, arity) {
            (b"GET", 2) => (Action::Get, command.arg(1), b""),
            (b"EXISTS", 2) => (Action::Exists, command.arg(1), b""),
            (b"SET", 3) => (Action::Set, command.arg(1), command.arg(2)),
            (b"DEL", 2) => (Action::Del, command.arg(1), b""),
            _ => {
                let answer = self.command(client, &command, name);
                self.coordinator.answer_now(client, answer);
                return;
            }
        };
        if key.len() > KEY_BYTES_MAX || value.len() > VALUE_BYTES_MAX {
            let error = Answer::Error("ERR key or value too large");
            self.coordinator.answer_now(client, error);
            return;
        }
        let links = &mut self.links;
        self.coordinator
            .request(links, &mut self.hlc, now, client, action, key, value);
    }

    /// The commands answered without the replicas.
    fn command(&mut self, client: ClientId, command: &Command<'_>, name: &[u8]) -> Answer {
        match (name, command.len()) {
            (b"PING", 1) => Answer::Status("PONG"),
            (b"PING", 2) | (b"ECHO", 2) => Answer::Value(command.arg(1).to_vec()),
            (b"QUIT", _) => {
                self.closing.push(client);
                Answer::Ok
            }
            (b"SHUTDOWN", _) => {
                self.shutting_down = true;
                Answer::Shutdown
            }
            (b"KILL", 2) => match std::str::from_utf8(command.arg(1)).map(str::parse::<usize>) {
                Ok(Ok(node)) if node < self.config.data_nodes && self.links.up(node) => {
                    Answer::Kill(node)
                }
                _ => Answer::Error("ERR usage: KILL <data node that is up>"),
            },
            (b"NODES", 1) => Answer::Lines(self.nodes_report()),
            (b"INFO", _) => Answer::Lines(self.info()),
            // What redis-cli and redis-benchmark ask as they start.
            (b"COMMAND", _) => Answer::Empty,
            (b"CONFIG", 3) if command.is(1, "GET") => Answer::Empty,
            (b"SELECT", 2) if command.arg(1) == b"0" => Answer::Ok,
            (b"SELECT", 2) => Answer::Error("ERR DB index is out of range"),
            (b"GET" | b"SET" | b"DEL" | b"EXISTS", _) => {
                Answer::Error("ERR wrong number of arguments (this node takes one key)")
            }
            _ => Answer::Error("ERR unknown command"),
        }
    }

    /// Tells data node `node` to exit (distro-db's KILL).
    fn kill(&mut self, node: NodeId) {
        self.links.queue_op(node, &Op::kill());
    }

    /// One line per data node: up or down, as this node sees it.
    fn nodes_report(&self) -> String {
        let mut text = String::new();
        for node in 0..self.config.data_nodes {
            let state = if self.links.up(node) { "up" } else { "down" };
            let _ = write!(text, "node {node} {state}\r\n");
        }
        text
    }

    fn info(&self) -> String {
        let links = &self.links;
        let up = (0..links.data_nodes).filter(|&node| links.up(node)).count();
        let mut text = String::from("# Cluster\r\n");
        let _ = write!(
            text,
            "node:{}\r\nholds_data:{}\r\ndata_nodes:{}\r\ndata_nodes_up:{up}\r\n\
             replicas:{}\r\nwrite_quorum:{}\r\nread_quorum:{}\r\nkeys:{}\r\n\
             read_write_backs:{}\r\nrequest_timeouts:{}\r\nrepair_sessions:{}\r\n\
             repair_pushes:{}\r\ntombstones_reclaimed:{}\r\n",
            links.me,
            if self.replica.is_some() { "yes" } else { "no" },
            links.data_nodes,
            self.config.replicas,
            self.config.write_quorum,
            self.config.read_quorum,
            self.replica.as_ref().map_or(0, Replica::keys),
            self.coordinator.write_backs,
            self.coordinator.timeouts,
            self.repair.sessions,
            self.repair.pushed,
            self.replica.as_ref().map_or(0, |replica| replica.reclaimed),
        );
        text
    }

    pub fn on_client_error(&mut self, client: ClientId, error: &str, close: bool) {
        let error = Answer::ErrorText(error.to_string());
        self.coordinator.answer_now(client, error);
        if close {
            self.closing.push(client);
        }
    }

    pub fn on_client_closed(&mut self, client: ClientId) {
        self.coordinator.forget_client(client);
    }

    fn stop(&mut self, io: &mut impl Io) {
        self.stopping = true;
        io.stop();
    }

    /// The end of a loop iteration: answers due go out (after the log's commit), then every
    /// queued frame.
    pub fn on_flush(&mut self, io: &mut impl Io) {
        let now = io.now();
        if let Some(replica) = &mut self.replica
            && !replica.commit(now)
        {
            self.stop(io);
            return;
        }
        let closing = &mut self.closing;
        let links = &mut self.links;
        let mut actions = Vec::new();
        self.coordinator
            .drain(links, &mut self.hlc, now, &mut |client, answer| {
                reply(io, client, answer);
                if matches!(answer, Answer::Kill(_) | Answer::Shutdown) {
                    actions.push(answer.clone());
                }
                if let Some(at) = closing.iter().position(|&c| c == client) {
                    closing.swap_remove(at);
                    io.close_client(client);
                }
            });
        for action in actions {
            self.act(io, &action);
        }
        self.flush_frames(io);
    }

    /// KILL and SHUTDOWN, once their turn has come.
    fn act(&mut self, io: &mut impl Io, action: &Answer) {
        match *action {
            Answer::Kill(node) => {
                info!("node {}: KILL {node} from a client", self.links.me);
                self.kill(node);
            }
            Answer::Shutdown => {
                // A front door stops the whole cluster, as distro-db's master does; a data
                // node stops itself.
                info!("node {}: SHUTDOWN from a client", self.links.me);
                if self.replica.is_none() {
                    for node in 0..self.config.data_nodes {
                        self.kill(node);
                    }
                }
                self.flush_frames(io);
                self.stop(io);
            }
            _ => {}
        }
    }

    fn flush_frames(&mut self, io: &mut impl Io) {
        let links = &mut self.links;
        for (to, swim) in links.swims.drain(..) {
            send_swim(io, to, &swim); // lost if there is no room: probes are retried
        }
        for to in 0..links.outboxes.len() {
            let outbox = &mut links.outboxes[to];
            let mut sent = 0;
            for results in &outbox.results {
                if !io.send(to, &Message::KvResults(KvResults { results })) {
                    break;
                }
                sent += 1;
            }
            outbox.results.drain(..sent);
            let mut sent = 0;
            for ops in &outbox.ops {
                let target = NO_NODE;
                if !io.send(to, &Message::KvOps(KvOps { target, ops })) {
                    break;
                }
                sent += 1;
            }
            outbox.ops.drain(..sent);
            let mut sent = 0;
            for (session, step, body) in &outbox.steps {
                let (session, step) = (*session, *step);
                if !io.send(
                    to,
                    &Message::KvTree(KvTree {
                        session,
                        step,
                        body,
                    }),
                ) {
                    break;
                }
                sent += 1;
            }
            outbox.steps.drain(..sent);
            if !links.connected[to] && to != links.me {
                // Nothing reaches a peer that is not connected: what waited for it is dropped
                // (its coordinators time out; anti-entropy repairs the rest).
                outbox.ops.clear();
                outbox.results.clear();
                outbox.steps.clear();
            }
        }
    }

    pub fn on_writable(&mut self, io: &mut impl Io) {
        self.flush_frames(io);
    }
}

/// Per data node: the partitions both it and `me` hold.
fn shared_partitions(me: NodeId, slots: &SlotMap, data_nodes: usize) -> Vec<Vec<usize>> {
    let mine: Vec<usize> = slots.partitions_of(me).collect();
    (0..data_nodes)
        .map(|peer| {
            let held = |&p: &usize| slots.replicas((p * PARTITION_SLOTS) as u16).contains(&peer);
            mine.iter().copied().filter(held).collect()
        })
        .collect()
}

fn reply(io: &mut impl Io, client: ClientId, answer: &Answer) {
    let reply = match answer {
        Answer::Ok => Reply::Ok,
        Answer::Nil => Reply::Bulk(None),
        Answer::Value(value) => Reply::Bulk(Some(value)),
        Answer::Integer(value) => Reply::Integer(*value),
        Answer::Status(text) => Reply::Status(text),
        Answer::Error(text) => Reply::Error(text),
        Answer::ErrorText(text) => Reply::Error(text),
        Answer::Lines(text) => Reply::Lines(text.as_bytes()),
        Answer::Empty => Reply::Array(0),
        Answer::Kill(_) | Answer::Shutdown => Reply::Ok,
    };
    io.reply(client, &reply);
}

fn state_code(state: State) -> u8 {
    match state {
        State::Alive => 0,
        State::Suspect => 1,
        State::Dead => 2,
    }
}

fn send_swim(io: &mut impl Io, to: NodeId, swim: &Swim) {
    let (kind, sequence, target, updates) = match swim {
        Swim::Ping { sequence, updates } => (SWIM_PING, *sequence, NO_NODE, updates),
        Swim::Ack {
            sequence,
            target,
            updates,
        } => (SWIM_ACK, *sequence, *target as u16, updates),
        Swim::PingReq {
            sequence,
            target,
            updates,
        } => (SWIM_PING_REQ, *sequence, *target as u16, updates),
    };
    let mut bytes = [0u8; SWIM_UPDATE_BYTES * super::membership::UPDATES_PER_MESSAGE];
    let list = updates.as_slice();
    for (at, update) in list.iter().enumerate() {
        let out = &mut bytes[at * SWIM_UPDATE_BYTES..][..SWIM_UPDATE_BYTES];
        write_swim_update(
            out,
            update.node as u16,
            state_code(update.state),
            update.incarnation,
        );
    }
    let used = &bytes[..list.len() * SWIM_UPDATE_BYTES];
    io.send(
        to,
        &Message::KvSwim(KvSwim::new(kind, sequence, target, used)),
    );
}

/// The membership's message in a frame, if it names only nodes of this cluster.
fn swim_of(swim: &KvSwim<'_>, nodes: usize) -> Option<Swim> {
    let mut updates = Updates::default();
    for (node, state, incarnation) in swim.updates() {
        let state = match state {
            0 => State::Alive,
            1 => State::Suspect,
            _ => State::Dead,
        };
        if node as usize >= nodes {
            return None;
        }
        updates.push(Update {
            node: node as NodeId,
            state,
            incarnation,
        });
    }
    let target = swim.target as NodeId;
    let sequence = swim.sequence;
    match swim.kind {
        SWIM_PING => Some(Swim::Ping { sequence, updates }),
        SWIM_ACK if target < nodes => Some(Swim::Ack {
            sequence,
            target,
            updates,
        }),
        SWIM_PING_REQ if target < nodes => Some(Swim::PingReq {
            sequence,
            target,
            updates,
        }),
        _ => None,
    }
}
