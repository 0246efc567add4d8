//! The deterministic simulator: a second driver for the very same `Role` values that `net/`
//! runs, over virtual time and a simulated network (in the manner of TigerBeetle's VOPR and
//! FoundationDB's simulation). Everything random derives from one seed, so a run is a pure
//! function of (seed, options): the same command gives a byte-identical trace.
//!
//! # What it models
//! - **Time**: a virtual clock that jumps to the next event; events are ordered by
//!   (time, sequence number). Each node reads its own clock, which may run up to `clock_skew`
//!   fast or slow (timers scale with it).
//! - **Connections** as TCP gives them to the real driver: one per pair of nodes, with an epoch.
//!   Each direction is FIFO with a per-link base latency (drawn from the seed), per-frame jitter
//!   that never reorders, a bandwidth, and a window of bytes in flight: `send_space` and
//!   `on_writable` behave as the real driver's out-buffer high-water mark does. A broken
//!   connection loses what was in flight, both ends see `on_peer_down`, and it is re-established
//!   after a backoff, like the real driver's redial, unless a partition blocks it.
//! - **Faults** (`faults.rs`): link breaks; partitions (a side cut off, healing later), "swizzle"
//!   partitions (nodes cut one at a time, healed in random order), one-way stalls (frames in one
//!   direction held back while the connection stays up); pauses (like SIGSTOP: nothing is
//!   processed, everything waits, the node resumes with its queue); crashes (state gone, links
//!   break) and, for roles that support it, restarts.
//! - A node that calls `stop` closes its connections after its last frames arrive (TCP FIN).
//!
//! # What it does not model
//! The kernel: no socket buffers beyond the window, no Nagle, no partial writes, no RST races,
//! no reordering within a connection, no scheduler; a node's handlers take zero virtual time.
//! Messages are encoded and decoded with the real codec, so frame sizes are real, but
//! corruption is not injected here (the codec's own tests and the real-socket tests cover it).

//!
//! # Where things are
//! - this file: `Sim` — the roles, the run loop, and handing each event to its role;
//! - `world.rs`: the event queue, nodes (lifecycle, pauses, clocks), frames and timers;
//! - `network.rs`: connections and directions — windows, latency, connect, break, close;
//! - `io.rs`: `SimIo`, the `Io` a role is given;
//! - `trace.rs`: the trace lines and message summaries;
//! - `faults.rs`: fault schedules drawn from a seed;
//! - `runner.rs`: one seed's run (quiet logs, a panic turned into a failed report), shared by
//!   the roles' sims and checkers: `gossip.rs`, `ring.rs`, `kv.rs`, `lamport.rs` (kv workers
//!   log to the in-memory disk of `journal::mem`).

pub mod dynamo;
pub mod faults;
pub mod gossip;
pub mod kv;
pub mod lamport;
pub mod linearizable;
pub mod ring;

mod io;
mod network;
mod runner;
mod trace;
mod world;

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::Rng;

use crate::node::{ClientId, Micros, NodeId, Role, Timer};
use crate::wire::Message;
use crate::wire::client::Command;
use faults::Fault;
use io::SimIo;
use world::{Action, Event};

pub use network::NetConfig;
pub use runner::{SeedReport, catch_panic, run_seed};
pub use trace::summary;
pub use world::{Observer, SimStats, World};

pub struct Sim<R: Role, O: Observer> {
    pub world: World<O>,
    roles: Vec<Option<R>>,
    factory: Box<dyn FnMut(NodeId) -> R>,
}

impl<R: Role, O: Observer> Sim<R, O> {
    /// A simulation of `nodes` nodes built by `factory` (called again on restart), all
    /// started at time 0.
    pub fn new(
        nodes: usize,
        seed: u64,
        config: NetConfig,
        observer: O,
        factory: Box<dyn FnMut(NodeId) -> R>,
        trace: bool,
    ) -> Sim<R, O> {
        Sim::with_starts(seed, config, observer, factory, trace, &vec![0; nodes])
    }

    /// As `new`, with node `i` started at virtual time `starts_us[i]` (as a user starting
    /// processes by hand does). Nodes started together connect at once; a node that starts
    /// later is connected to those already running after a redial delay.
    pub fn with_starts(
        seed: u64,
        config: NetConfig,
        observer: O,
        mut factory: Box<dyn FnMut(NodeId) -> R>,
        trace: bool,
        starts_us: &[Micros],
    ) -> Sim<R, O> {
        let world = World::new(seed, config, observer, trace, starts_us);
        let roles = (0..starts_us.len())
            .map(|node| Some(factory(node)))
            .collect();
        Sim {
            world,
            roles,
            factory,
        }
    }

    pub fn schedule(&mut self, faults: &[(Micros, Fault)]) {
        for (at, fault) in faults {
            self.world.push(*at, 0, Action::Fault(fault.clone()));
        }
    }

    pub fn role(&self, node: NodeId) -> Option<&R> {
        self.roles[node].as_ref()
    }

    pub fn outputs(&self, node: NodeId) -> &[String] {
        &self.world.nodes[node].outputs
    }

    /// Schedules a client command to arrive at `node` at virtual time `at`.
    pub fn client_command(
        &mut self,
        at: Micros,
        node: NodeId,
        client: ClientId,
        args: Vec<Vec<u8>>,
    ) {
        self.world.push(at, node, Action::Client { client, args });
    }

    /// Replies `node` gave its clients, in order, with the virtual time of each.
    pub fn replies(&self, node: NodeId) -> &[(Micros, ClientId, String)] {
        &self.world.nodes[node].replies
    }

    pub fn alive(&self, node: NodeId) -> bool {
        self.world.nodes[node].alive
    }

    pub fn stopped(&self, node: NodeId) -> bool {
        self.world.nodes[node].stopped
    }

    pub fn now(&self) -> Micros {
        self.world.now
    }

    pub fn take_trace(&mut self) -> Option<String> {
        self.world.trace.take()
    }

    /// Runs every event up to virtual time `end` (or until nothing is left).
    pub fn run_until(&mut self, end: Micros) {
        while let Some(event) = self.world.pop_until(end) {
            self.dispatch(event);
        }
        self.world.now = self.world.now.max(end);
    }

    /// Actions of the world run at once; a role's event runs if its node is still the
    /// incarnation it was queued for, and waits in order while the node is paused.
    fn dispatch(&mut self, mut event: Event) {
        let node = event.node;
        match event.action {
            Action::Fault(fault) => return self.apply_fault(fault),
            Action::Connect { peer } => return self.world.connect(node, peer),
            Action::Close { peer, epoch } => return self.world.close(node, peer, epoch),
            Action::Resume => return self.resume(node),
            _ => {}
        }
        if !self.world.current(node, event.incarnation) {
            return self.world.discard(event);
        }
        if let Action::Deliver {
            from,
            epoch,
            frame,
            arrived: arrived @ false,
            ..
        } = &mut event.action
        {
            // In flight when the connection broke: lost, like TCP's unacknowledged data.
            if !self.world.arrive(*from, node, *epoch, *frame) {
                return;
            }
            *arrived = true;
        }
        let state = &mut self.world.nodes[node];
        if state.paused_until > event.at || !state.deferred.is_empty() {
            state.deferred.push_back(event);
            return;
        }
        self.handle(event);
    }

    fn resume(&mut self, node: NodeId) {
        if self.world.nodes[node].paused_until > self.world.now {
            return; // the pause was extended; a later `Resume` comes
        }
        while let Some(event) = self.world.nodes[node].deferred.pop_front() {
            self.handle(event);
        }
    }

    /// Runs one event's handler on its node's role; every event is its own loop iteration,
    /// so the role flushes after each.
    fn handle(&mut self, event: Event) {
        let node = event.node;
        let Some(role) = self.roles[node].as_mut() else {
            return;
        };
        let mut io = SimIo {
            world: &mut self.world,
            node,
        };
        match event.action {
            Action::Start => {
                io.world.log(node, format_args!("start"));
                io.world.connect_started_peers(node);
                role.on_start(&mut io);
            }
            Action::Deliver {
                from,
                epoch,
                frame,
                bytes,
                ..
            } => deliver(role, &mut io, from, epoch, frame, bytes),
            Action::Local { frame } => deliver_local(role, &mut io, frame),
            Action::Timer {
                key,
                generation,
                timer,
            } => fire_timer(role, &mut io, key, generation, timer),
            Action::PeerUp { peer } => {
                io.world.log(node, format_args!("peer {peer} up"));
                role.on_peer_up(&mut io, peer);
            }
            Action::PeerDown { peer } => {
                io.world.log(node, format_args!("peer {peer} down"));
                role.on_peer_down(&mut io, peer);
            }
            Action::Writable { peer } => role.on_writable(&mut io, peer),
            Action::Client { client, args } => client_command(role, &mut io, client, &args),
            Action::Connect { .. } | Action::Close { .. } | Action::Resume | Action::Fault(_) => {
                unreachable!("world actions are handled in dispatch")
            }
        }
        role.on_flush(&mut io);
    }

    fn apply_fault(&mut self, fault: Fault) {
        self.world.stats.faults += 1;
        self.world.log_fault(&fault);
        match fault {
            Fault::BreakLink { a, b } => self.world.break_link(a, b),
            Fault::Block { a, b } => self.world.block(a, b),
            Fault::Unblock { a, b } => self.world.unblock(a, b),
            Fault::Stall { from, to, for_us } => self.world.stall(from, to, for_us),
            Fault::Pause { node, for_us } => self.world.pause(node, for_us),
            Fault::Crash { node } => self.crash(node),
            Fault::Restart { node } => self.restart(node),
        }
    }

    /// State gone: the role is dropped, what it had queued or deferred is discarded, and its
    /// connections break.
    fn crash(&mut self, node: NodeId) {
        let state = &mut self.world.nodes[node];
        if !state.alive {
            return;
        }
        state.alive = false;
        state.incarnation += 1;
        let deferred = std::mem::take(&mut state.deferred);
        for event in deferred {
            self.world.discard(event);
        }
        self.roles[node] = None;
        for peer in (0..self.world.nodes.len()).filter(|&peer| peer != node) {
            self.world.break_link(node, peer);
        }
    }

    /// A crashed node comes back as a new role from the factory, and redials its peers.
    fn restart(&mut self, node: NodeId) {
        let state = &mut self.world.nodes[node];
        if state.alive {
            return;
        }
        state.alive = true;
        state.stopped = false;
        state.paused_until = 0;
        let incarnation = state.incarnation;
        self.roles[node] = Some((self.factory)(node));
        self.world
            .push_for(self.world.now, node, incarnation, Action::Start);
        for peer in (0..self.world.nodes.len()).filter(|&peer| peer != node) {
            self.world.schedule_connect(node, peer);
        }
    }
}

/// A frame read from a peer: its bytes leave the window, then the role gets the message.
fn deliver<R: Role, O: Observer>(
    role: &mut R,
    io: &mut SimIo<'_, O>,
    from: NodeId,
    epoch: u32,
    frame: usize,
    bytes: usize,
) {
    let node = io.node;
    let buffer = io.world.take_frame(frame);
    io.world.frame_read(from, node, epoch, bytes);
    let message = Message::decode(&buffer).expect("simulated frames are whole");
    io.world.stats.deliveries += 1;
    io.world
        .observer
        .delivered(io.world.now, from, node, &message);
    io.world.log_delivery(node, Some(from), &message);
    role.on_message(io, from, message);
    io.world.recycle(buffer);
}

/// A node's message to itself.
fn deliver_local<R: Role, O: Observer>(role: &mut R, io: &mut SimIo<'_, O>, frame: usize) {
    let node = io.node;
    let buffer = io.world.take_frame(frame);
    let message = Message::decode(&buffer).expect("simulated frames are whole");
    io.world.log_delivery(node, None, &message);
    role.on_message(io, node, message);
    io.world.recycle(buffer);
}

/// A timer's event: the role hears it unless it was cancelled.
fn fire_timer<R: Role, O: Observer>(
    role: &mut R,
    io: &mut SimIo<'_, O>,
    key: usize,
    generation: u32,
    timer: Timer,
) {
    if io.world.fire_timer(key, generation) {
        io.world.log(io.node, format_args!("timer {}", timer.0));
        role.on_timer(io, timer);
    }
}

/// A client's command, handed over as the real driver parses it: the arguments back to back,
/// with the span of each.
fn client_command<R: Role, O: Observer>(
    role: &mut R,
    io: &mut SimIo<'_, O>,
    client: ClientId,
    args: &[Vec<u8>],
) {
    let mut spans = Vec::with_capacity(args.len());
    let mut at = 0u32;
    for arg in args {
        spans.push((at, at + arg.len() as u32));
        at += arg.len() as u32;
    }
    let data = args.concat();
    io.world.log_client(io.node, client, args);
    let command = Command {
        data: &data,
        spans: &spans,
    };
    role.on_client(io, client, command);
}

/// Uniform in `low..=high` from the simulator's generator.
pub fn uniform(rng: &mut Xoshiro256PlusPlus, low: u64, high: u64) -> u64 {
    if high <= low {
        return low;
    }
    low + rng.next_u64() % (high - low + 1)
}

#[cfg(test)]
mod tests;
