//! kv: a replicated key-value store (distro-db, Marlow's distributed key-value exercise, carried
//! towards Dynamo). A master serves clients — the REPL on stdin and Redis clients (RESP2) on a
//! port — and places every key on `replicas` workers chosen by consistent hashing over the
//! live workers (`placement.rs`). Writes go to every live replica and are acknowledged once all
//! have applied them; reads go to every live replica (the newest version wins).
//!
//! Faults: a worker whose connection drops is dead at once — requests route to the remaining
//! replicas, and the new membership makes the workers copy every key whose placement changed
//! to its new replicas (in bounded batches, relayed by the master), so every key again has
//! `replicas` live copies. A worker that comes back rejoins and receives its ranges. Versions
//! assigned by the master keep replicas and transfers from reviving old values. A worker that
//! goes silent without dropping its connection is suspected after `master::SUSPECT_US` of
//! silence (idle workers send heartbeats): nothing waits for it, though its writes are still
//! sent; evicted after `master::EVICT_US`, it rejoins when it speaks again.
//!
//! Durability: a worker started with a journal (`--data-dir`) logs every applied write before
//! acknowledging it and replays the log when it restarts; it then rejoins as above and the
//! transfers bring it what it missed. Reads ask every live replica and answer with the newest
//! version; replicas that answered with an older one are repaired (read repair). Versions
//! start from the master's start time (×16, in microseconds) and never fall below the highest
//! version a worker reports, so a restarted master keeps issuing newer versions.
//!
//! Not handled: the master is a single point of failure (its clients lose it; the workers
//! exit, and keep their data only if they have a data dir); requests wait up to the suspicion
//! time for a silent worker; reads in flight to a worker that dies fail with an error the
//! client may retry unless a ready replica answered.

pub mod dynamo;
pub mod hlc;
pub mod master;
pub mod membership;
pub mod merkle;
pub mod placement;
pub mod slots;
pub mod store;
pub mod worker;

#[cfg(test)]
mod tests;

use crate::node::{ClientId, Io, Micros, NodeId, Role, Timer};
use crate::wire::Message;
use crate::wire::client::Command;

/// The master stops waiting for workers that have not connected.
/// Most workers: the master tracks who must still answer a request in a `u64` mask with one
/// bit per worker (and the master itself is node `workers`).
pub const WORKERS_MAX: usize = 63;
const _: () = assert!(WORKERS_MAX < u64::BITS as usize);
const _: () = assert!(WORKERS_MAX < crate::wire::NODES_MAX);

const TIMER_READY: Timer = Timer(100);
/// The master's failure detector runs.
const TIMER_CHECK: Timer = Timer(101);

/// Either end of the store, so one role type serves every node of a cluster.
pub enum Kv {
    Master(Box<master::Master>),
    Worker(Box<worker::Worker>),
    /// A node of the masterless store (`dynamo/`).
    Node(Box<dynamo::Node>),
}

impl Kv {
    /// Workers are nodes `0..workers`; the master is node `workers`.
    pub fn new(node: NodeId, workers: usize, replicas: usize, repl: Option<ClientId>) -> Kv {
        if node == workers {
            Kv::Master(Box::new(master::Master::new(workers, replicas, repl)))
        } else {
            Kv::Worker(Box::new(worker::Worker::new(node, workers)))
        }
    }

    /// A worker logs its writes to `journal` (see `worker.rs`); no effect on the master.
    pub fn with_journal(self, journal: Box<dyn crate::journal::Journal>, rewrite_min: u64) -> Kv {
        match self {
            Kv::Worker(worker) => Kv::Worker(Box::new(worker.with_journal(journal, rewrite_min))),
            master => master,
        }
    }

    /// The failure detector's timing: an idle worker sends a heartbeat every `heartbeat_us`;
    /// the master stops waiting for a worker silent for `suspect_us` and evicts it from the
    /// membership once it has been suspected for `evict_us`.
    pub fn with_failure_detector(
        mut self,
        heartbeat_us: Micros,
        suspect_us: Micros,
        evict_us: Micros,
    ) -> Kv {
        match &mut self {
            Kv::Master(master) => master.set_failure_timeouts(suspect_us, evict_us),
            Kv::Worker(worker) => worker.set_heartbeat_us(heartbeat_us),
            Kv::Node(_) => {}
        }
        self
    }

    /// The master's first version (versions then count up from it); no effect on a worker.
    pub fn with_version_base(mut self, base: u64) -> Kv {
        if let Kv::Master(master) = &mut self {
            master.raise_version(base);
        }
        self
    }
}

impl Role for Kv {
    fn on_start(&mut self, io: &mut impl Io) {
        match self {
            Kv::Master(master) => {
                io.set_timer(master::START_TIMEOUT_US, TIMER_READY);
                io.set_timer(master.check_every_us(), TIMER_CHECK);
            }
            Kv::Worker(worker) => worker.on_start(io),
            Kv::Node(node) => node.on_start(io),
        }
    }
    fn on_message(&mut self, io: &mut impl Io, from: NodeId, message: Message<'_>) {
        match self {
            Kv::Master(master) => master.on_message(io, from, message),
            Kv::Worker(worker) => worker.on_message(io, from, message),
            Kv::Node(node) => node.on_message(io, from, message),
        }
    }
    fn on_timer(&mut self, io: &mut impl Io, timer: Timer) {
        match self {
            Kv::Master(master) if timer == TIMER_READY => master.ready(io),
            Kv::Master(master) if timer == TIMER_CHECK => {
                master.check(io);
                io.set_timer(master.check_every_us(), TIMER_CHECK);
            }
            Kv::Master(_) => {}
            Kv::Worker(worker) => worker.on_timer(io, timer),
            Kv::Node(node) => node.on_timer(io, timer),
        }
    }
    fn on_peer_up(&mut self, io: &mut impl Io, peer: NodeId) {
        match self {
            Kv::Master(master) => master.on_peer_up(io, peer),
            Kv::Worker(worker) if peer == worker.master() => worker.on_master_up(),
            Kv::Worker(_) => {}
            Kv::Node(node) => node.on_peer_up(peer),
        }
    }
    fn on_peer_down(&mut self, io: &mut impl Io, peer: NodeId) {
        match self {
            Kv::Master(master) => master.on_peer_down(io, peer),
            // A worker without its master has nobody to serve; it exits.
            Kv::Worker(worker) if peer == worker.master() => io.stop(),
            Kv::Worker(_) => {}
            Kv::Node(node) => node.on_peer_down(peer),
        }
    }
    fn on_writable(&mut self, io: &mut impl Io, peer: NodeId) {
        match self {
            Kv::Master(master) => master.on_writable(io, peer),
            Kv::Worker(worker) => worker.on_writable(io),
            Kv::Node(node) => node.on_writable(io),
        }
    }
    fn on_client(&mut self, io: &mut impl Io, client: ClientId, command: Command<'_>) {
        match self {
            Kv::Master(master) => master.on_client(io, client, command),
            Kv::Node(node) => node.on_client(io, client, command),
            Kv::Worker(_) => {
                let error = crate::wire::client::Reply::Error("ERR a worker serves no clients");
                io.reply(client, &error);
            }
        }
    }
    fn on_client_error(&mut self, io: &mut impl Io, client: ClientId, error: &str, close: bool) {
        match self {
            Kv::Master(master) => master.on_client_error(io, client, error, close),
            Kv::Node(node) => node.on_client_error(client, error, close),
            Kv::Worker(_) => {
                io.reply(client, &crate::wire::client::Reply::Error(error));
                if close {
                    io.close_client(client);
                }
            }
        }
    }
    fn on_client_closed(&mut self, io: &mut impl Io, client: ClientId) {
        match self {
            Kv::Master(master) => master.on_client_closed(io, client),
            Kv::Node(node) => node.on_client_closed(client),
            Kv::Worker(_) => {}
        }
    }
    fn on_flush(&mut self, io: &mut impl Io) {
        match self {
            Kv::Master(master) => master.on_flush(io),
            Kv::Worker(worker) => worker.on_flush(io),
            Kv::Node(node) => node.on_flush(io),
        }
    }
}
