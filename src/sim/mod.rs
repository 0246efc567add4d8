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

pub mod disk;
pub mod faults;
pub mod gossip;
pub mod kv;
pub mod lamport;
pub mod ring;

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt::Write as _;

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{Rng, SeedableRng};
use slab::Slab;

use crate::node::{ClientId, Io, Micros, NodeId, Role, Timer, TimerKey};
use crate::wire::client::Reply;
use crate::wire::{self, Message};
use faults::Fault;

/// The network's parameters; all latencies in microseconds of virtual time.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Each link's base one-way latency is drawn uniformly from this range.
    pub latency_min_us: Micros,
    pub latency_max_us: Micros,
    /// Extra per-frame delay, uniform in `0..=jitter_us` (never reorders a connection).
    pub jitter_us: Micros,
    pub bandwidth_bytes_per_s: u64,
    /// Bytes in flight per direction before `send_space` reports no room.
    pub window_bytes: usize,
    /// A broken connection is re-established after a delay drawn from this range.
    pub reconnect_min_us: Micros,
    pub reconnect_max_us: Micros,
    /// Each node's clock runs at a rate within 1 ± this (e.g. 0.01).
    pub clock_skew: f64,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            latency_min_us: 50,
            latency_max_us: 2_000,
            jitter_us: 200,
            bandwidth_bytes_per_s: 400_000,
            window_bytes: 16 * 1024,
            reconnect_min_us: 5_000,
            reconnect_max_us: 50_000,
            clock_skew: 0.0,
        }
    }
}

/// Watches traffic for a checker; the simulator calls it, the role never sees it.
pub trait Observer {
    /// Every `send` a role makes, whether or not it is accepted.
    fn sent(&mut self, _at: Micros, _from: NodeId, _to: NodeId, _message: &Message<'_>) {}
    /// Every message handed to a role.
    fn delivered(&mut self, _at: Micros, _from: NodeId, _to: NodeId, _message: &Message<'_>) {}
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SimStats {
    pub deliveries: u64,
    pub frames_lost: u64,
    pub timers: u64,
    pub faults: u64,
    pub events: u64,
}

enum Action {
    Start,
    /// `arrived`: the frame reached the node's socket before its connection broke (checked at
    /// arrival); it is then readable even if the node is paused and the connection closes.
    Deliver {
        from: NodeId,
        epoch: u32,
        frame: usize,
        bytes: usize,
        arrived: bool,
    },
    Local {
        frame: usize,
    },
    Timer {
        key: usize,
        generation: u32,
        timer: Timer,
    },
    PeerUp {
        peer: NodeId,
    },
    PeerDown {
        peer: NodeId,
    },
    Writable {
        peer: NodeId,
    },
    /// Try to (re-)establish the connection between `node` and `peer`.
    Connect {
        peer: NodeId,
    },
    /// `node` stopped: close its connection to `peer` once the epoch's frames have arrived.
    Close {
        peer: NodeId,
        epoch: u32,
    },
    /// `node`'s pause may be over: handle what waited, in order.
    Resume,
    /// A client's command arriving at `node`.
    Client {
        client: ClientId,
        args: Vec<Vec<u8>>,
    },
    Fault(Fault),
}

struct Event {
    at: Micros,
    seq: u64,
    /// The node the action is for, and its incarnation when queued (a crash invalidates).
    node: NodeId,
    incarnation: u32,
    action: Action,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest event must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct NodeState {
    alive: bool,
    stopped: bool,
    incarnation: u32,
    paused_until: Micros,
    /// Events that came due while the node was paused, in order. Anything due later waits
    /// behind them, so a pause never reorders a connection.
    deferred: std::collections::VecDeque<Event>,
    /// Clock rate in parts per million of virtual time.
    rate_ppm: u64,
    /// When the node's process starts (virtual time); before that it has no listener, so
    /// nothing can connect to it.
    start_us: Micros,
    outputs: Vec<String>,
    /// Replies to clients, as REPL text, in order.
    replies: Vec<(Micros, ClientId, String)>,
}

/// One direction of a connection.
#[derive(Clone, Default)]
struct Direction {
    latency_us: Micros,
    /// When the link finishes transmitting what is queued (bandwidth).
    free_at: Micros,
    /// Latest arrival scheduled (FIFO).
    last_arrival: Micros,
    in_flight: usize,
    want_writable: bool,
    /// Frames sent before this are held until it (one-way stall).
    stall_until: Micros,
}

#[derive(Clone, Default)]
struct Connection {
    up: bool,
    epoch: u32,
    /// Partitions currently cutting this pair (they may overlap).
    blocks: u32,
    connect_pending: bool,
}

/// Everything but the roles: what an `Io` handle works on.
pub struct World<O: Observer> {
    now: Micros,
    seq: u64,
    queue: BinaryHeap<Event>,
    rng: Xoshiro256PlusPlus,
    config: NetConfig,
    nodes: Vec<NodeState>,
    /// `nodes × nodes`, `[from * n + to]`.
    directions: Vec<Direction>,
    /// `nodes × nodes`, used at `[min * n + max]`.
    connections: Vec<Connection>,
    frames: Slab<Vec<u8>>,
    spare_frames: Vec<Vec<u8>>,
    timers: Slab<u32>,
    timer_generation: u32,
    trace: Option<String>,
    pub observer: O,
    pub stats: SimStats,
}

pub struct Sim<R: Role, O: Observer> {
    pub world: World<O>,
    roles: Vec<Option<R>>,
    factory: Box<dyn FnMut(NodeId) -> R>,
}

/// Epoch anchor of node clocks (2026-01-01), so timestamps look like the real driver's.
const CLOCK_EPOCH_US: Micros = 1_767_225_600_000_000;

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
        let nodes = starts_us.len();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x005E_ED0F_5111_u64);
        let skew_ppm = (config.clock_skew * 1e6) as u64;
        let node_states = (0..nodes)
            .map(|node| NodeState {
                start_us: starts_us[node],
                alive: true,
                stopped: false,
                incarnation: 0,
                paused_until: 0,
                deferred: std::collections::VecDeque::new(),
                rate_ppm: 1_000_000 - skew_ppm + uniform(&mut rng, 0, 2 * skew_ppm),
                outputs: Vec::new(),
                replies: Vec::new(),
            })
            .collect();
        let mut directions = vec![Direction::default(); nodes * nodes];
        for from in 0..nodes {
            for to in from + 1..nodes {
                let latency = uniform(&mut rng, config.latency_min_us, config.latency_max_us);
                directions[from * nodes + to].latency_us = latency;
                directions[to * nodes + from].latency_us = latency;
            }
        }
        let roles = (0..nodes).map(|node| Some(factory(node))).collect();
        let mut world = World {
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            config,
            nodes: node_states,
            directions,
            connections: vec![Connection::default(); nodes * nodes],
            frames: Slab::new(),
            spare_frames: Vec::new(),
            timers: Slab::new(),
            timer_generation: 0,
            trace: trace.then(String::new),
            observer,
            stats: SimStats::default(),
        };
        for node in 0..nodes {
            world.push(starts_us[node], node, Action::Start);
            for peer in node + 1..nodes {
                if starts_us[node] == 0 && starts_us[peer] == 0 {
                    world.connections[node * nodes + peer].connect_pending = true;
                    world.push(0, node, Action::Connect { peer });
                }
            }
        }
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
        while let Some(event) = self.world.queue.pop() {
            if event.at > end {
                self.world.queue.push(event);
                break;
            }
            self.world.now = event.at;
            self.world.stats.events += 1;
            self.dispatch(event);
        }
        self.world.now = self.world.now.max(end);
    }

    fn dispatch(&mut self, event: Event) {
        let node = event.node;
        // Actions of the world rather than of a node's role.
        match event.action {
            Action::Fault(fault) => return self.apply_fault(fault),
            Action::Connect { peer } => return self.world.connect(node, peer),
            Action::Close { peer, epoch } => return self.world.close(node, peer, epoch),
            Action::Resume => return self.resume(node),
            _ => {}
        }
        let state = &self.world.nodes[node];
        let current = state.alive && !state.stopped && state.incarnation == event.incarnation;
        if !current {
            return self.world.discard(event);
        }
        let mut event = event;
        if let Action::Deliver {
            from,
            epoch,
            frame,
            arrived: arrived @ false,
            ..
        } = &mut event.action
        {
            let (from, epoch, frame) = (*from, *epoch, *frame);
            let connection = self.world.connection(from, node);
            if connection.epoch != epoch || !connection.up {
                // In flight when the connection broke: lost, like TCP's unacknowledged data.
                let buffer = self.world.frames.remove(frame);
                self.world.spare_frames.push(buffer);
                self.world.stats.frames_lost += 1;
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

    /// Runs one event's handler on its node's role.
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
            } => {
                let buffer = io.world.frames.remove(frame);
                if io.world.connection(from, node).epoch == epoch {
                    io.world.release_window(from, node, bytes);
                }
                let message = Message::decode(&buffer).expect("simulated frames are whole");
                io.world.stats.deliveries += 1;
                io.world
                    .observer
                    .delivered(io.world.now, from, node, &message);
                if io.world.trace.is_some() {
                    let line = summary(&message);
                    io.world
                        .log(node, format_args!("deliver from {from}: {line}"));
                }
                role.on_message(&mut io, from, message);
                io.world.spare_frames.push(buffer);
            }
            Action::Local { frame } => {
                let buffer = io.world.frames.remove(frame);
                let message = Message::decode(&buffer).expect("simulated frames are whole");
                if io.world.trace.is_some() {
                    let line = summary(&message);
                    io.world.log(node, format_args!("deliver local: {line}"));
                }
                role.on_message(&mut io, node, message);
                io.world.spare_frames.push(buffer);
            }
            Action::Timer {
                key,
                generation,
                timer,
            } => {
                if io.world.timers.get(key) == Some(&generation) {
                    io.world.timers.remove(key);
                    io.world.stats.timers += 1;
                    io.world.log(node, format_args!("timer {}", timer.0));
                    role.on_timer(&mut io, timer);
                }
            }
            Action::PeerUp { peer } => {
                io.world.log(node, format_args!("peer {peer} up"));
                role.on_peer_up(&mut io, peer);
            }
            Action::PeerDown { peer } => {
                io.world.log(node, format_args!("peer {peer} down"));
                role.on_peer_down(&mut io, peer);
            }
            Action::Writable { peer } => role.on_writable(&mut io, peer),
            Action::Client { client, args } => {
                let mut spans = Vec::with_capacity(args.len());
                let mut at = 0u32;
                for arg in &args {
                    spans.push((at, at + arg.len() as u32));
                    at += arg.len() as u32;
                }
                let data = args.concat();
                if io.world.trace.is_some() {
                    let words: Vec<String> = args
                        .iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect();
                    io.world
                        .log(node, format_args!("client {client}: {}", words.join(" ")));
                }
                role.on_client(
                    &mut io,
                    client,
                    crate::wire::client::Command {
                        data: &data,
                        spans: &spans,
                    },
                );
            }
            Action::Connect { .. } | Action::Close { .. } | Action::Resume | Action::Fault(_) => {
                unreachable!("world actions are handled in dispatch")
            }
        }
        // Every event is its own loop iteration here.
        role.on_flush(&mut io);
    }

    fn apply_fault(&mut self, fault: Fault) {
        self.world.stats.faults += 1;
        let n = self.world.nodes.len();
        if self.world.trace.is_some() {
            let line = format!("fault {fault:?}");
            self.world.log(n, format_args!("{line}"));
        }
        match fault {
            Fault::BreakLink { a, b } => self.world.break_link(a, b),
            Fault::Block { a, b } => {
                self.world.connection(a, b).blocks += 1;
                self.world.break_link(a, b);
            }
            Fault::Unblock { a, b } => {
                let connection = self.world.connection(a, b);
                connection.blocks -= 1;
                if connection.blocks == 0 {
                    self.world.schedule_connect(a, b);
                }
            }
            Fault::Stall { from, to, for_us } => {
                let until = self.world.now + for_us;
                let direction = &mut self.world.directions[from * n + to];
                direction.stall_until = direction.stall_until.max(until);
            }
            Fault::Pause { node, for_us } => {
                let state = &mut self.world.nodes[node];
                state.paused_until = state.paused_until.max(self.world.now + for_us);
                let until = state.paused_until;
                self.world.push(until, node, Action::Resume);
            }
            Fault::Crash { node } => {
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
                for peer in (0..n).filter(|&peer| peer != node) {
                    self.world.break_link(node, peer);
                }
            }
            Fault::Restart { node } => {
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
                for peer in (0..n).filter(|&peer| peer != node) {
                    self.world.schedule_connect(node, peer);
                }
            }
        }
    }
}

/// The `Io` a role gets inside the simulator.
struct SimIo<'a, O: Observer> {
    world: &'a mut World<O>,
    node: NodeId,
}

impl<O: Observer> Io for SimIo<'_, O> {
    fn now(&self) -> Micros {
        let rate = self.world.nodes[self.node].rate_ppm as u128;
        CLOCK_EPOCH_US + (self.world.now as u128 * rate / 1_000_000) as Micros
    }

    fn node(&self) -> NodeId {
        self.node
    }

    fn send(&mut self, to: NodeId, message: &Message<'_>) -> bool {
        let world = &mut *self.world;
        world.observer.sent(world.now, self.node, to, message);
        if to == self.node {
            let frame = world.encode(message);
            let incarnation = world.nodes[to].incarnation;
            world.push_for(world.now, to, incarnation, Action::Local { frame });
            return true;
        }
        let n = world.nodes.len();
        if !world.connection(self.node, to).up {
            return false;
        }
        let bytes = message.encoded_len();
        let direction = &mut world.directions[self.node * n + to];
        if direction.in_flight + bytes > world.config.window_bytes + wire::FRAME_BYTES_MAX {
            direction.want_writable = true;
            return false;
        }
        direction.in_flight += bytes;
        let transmit_us = bytes as u64 * 1_000_000 / world.config.bandwidth_bytes_per_s;
        let start = direction.free_at.max(world.now);
        direction.free_at = start + transmit_us;
        let jitter = uniform(&mut world.rng, 0, world.config.jitter_us);
        let direction = &mut world.directions[self.node * n + to];
        let arrival = (direction.free_at + direction.latency_us + jitter)
            .max(direction.last_arrival)
            .max(direction.stall_until);
        direction.last_arrival = arrival;
        let epoch = world.connection(self.node, to).epoch;
        let frame = world.encode(message);
        let incarnation = world.nodes[to].incarnation;
        let from = self.node;
        let deliver = Action::Deliver {
            from,
            epoch,
            frame,
            bytes,
            arrived: false,
        };
        world.push_for(arrival, to, incarnation, deliver);
        true
    }

    fn send_space(&mut self, to: NodeId) -> usize {
        if to == self.node {
            return usize::MAX;
        }
        let world = &mut *self.world;
        let n = world.nodes.len();
        if !world.connection(self.node, to).up {
            return 0;
        }
        let window = world.config.window_bytes;
        let direction = &mut world.directions[self.node * n + to];
        if direction.in_flight > window / 4 {
            direction.want_writable = true;
        }
        window.saturating_sub(direction.in_flight)
    }

    fn set_timer(&mut self, after: Micros, timer: Timer) -> TimerKey {
        let world = &mut *self.world;
        let rate = world.nodes[self.node].rate_ppm;
        let delay = (after as u128 * 1_000_000 / rate as u128) as Micros;
        world.timer_generation = world.timer_generation.wrapping_add(1);
        let generation = world.timer_generation;
        let key = world.timers.insert(generation);
        let incarnation = world.nodes[self.node].incarnation;
        world.push_for(
            world.now + delay,
            self.node,
            incarnation,
            Action::Timer {
                key,
                generation,
                timer,
            },
        );
        TimerKey {
            index: key as u32,
            generation,
        }
    }

    fn cancel_timer(&mut self, key: TimerKey) {
        let timers = &mut self.world.timers;
        if timers.get(key.index as usize) == Some(&key.generation) {
            timers.remove(key.index as usize);
        }
    }

    fn output(&mut self, line: std::fmt::Arguments<'_>) {
        let text = line.to_string();
        self.world.log(self.node, format_args!("output {text}"));
        self.world.nodes[self.node].outputs.push(text);
    }

    fn reply(&mut self, client: ClientId, reply: &Reply<'_>) -> bool {
        let mut text = Vec::new();
        reply.encode_text(&mut text);
        let line = String::from_utf8_lossy(&text).trim_end().to_string();
        self.world
            .log(self.node, format_args!("reply to client {client}: {line}"));
        let now = self.world.now;
        self.world.nodes[self.node]
            .replies
            .push((now, client, line));
        true
    }

    fn close_client(&mut self, client: ClientId) {
        self.world
            .log(self.node, format_args!("close client {client}"));
    }

    fn stop(&mut self) {
        let world = &mut *self.world;
        let node = self.node;
        world.nodes[node].stopped = true;
        world.log(node, format_args!("stop"));
        let n = world.nodes.len();
        for peer in (0..n).filter(|&peer| peer != node) {
            let connection = world.connection(node, peer);
            if connection.up {
                let epoch = connection.epoch;
                let at = world.directions[node * n + peer]
                    .last_arrival
                    .max(world.now)
                    + 1;
                world.push(at, node, Action::Close { peer, epoch });
            }
        }
    }
}

impl<O: Observer> World<O> {
    fn push(&mut self, at: Micros, node: NodeId, action: Action) {
        let incarnation = self.nodes.get(node).map_or(0, |state| state.incarnation);
        self.push_for(at, node, incarnation, action);
    }

    fn push_for(&mut self, at: Micros, node: NodeId, incarnation: u32, action: Action) {
        self.seq += 1;
        self.queue.push(Event {
            at,
            seq: self.seq,
            node,
            incarnation,
            action,
        });
    }

    /// An event for a crashed or stopped node: free its frame, keep the window honest.
    fn discard(&mut self, event: Event) {
        match event.action {
            Action::Deliver { frame, .. } | Action::Local { frame } => {
                let buffer = self.frames.remove(frame);
                self.spare_frames.push(buffer);
                self.stats.frames_lost += 1;
            }
            Action::Timer {
                key, generation, ..
            } if self.timers.get(key) == Some(&generation) => {
                self.timers.remove(key);
            }
            _ => {}
        }
    }

    fn connection(&mut self, a: NodeId, b: NodeId) -> &mut Connection {
        let n = self.nodes.len();
        &mut self.connections[a.min(b) * n + a.max(b)]
    }

    fn encode(&mut self, message: &Message<'_>) -> usize {
        let mut buffer = self.spare_frames.pop().unwrap_or_default();
        buffer.resize(message.encoded_len(), 0);
        message.encode(&mut buffer);
        self.frames.insert(buffer)
    }

    fn release_window(&mut self, from: NodeId, to: NodeId, bytes: usize) {
        let n = self.nodes.len();
        let window = self.config.window_bytes;
        let direction = &mut self.directions[from * n + to];
        direction.in_flight -= bytes;
        if direction.want_writable && direction.in_flight <= window / 4 {
            direction.want_writable = false;
            self.push(self.now, from, Action::Writable { peer: to });
        }
    }

    fn usable(&self, node: NodeId) -> bool {
        let state = &self.nodes[node];
        state.alive && !state.stopped && state.start_us <= self.now
    }

    /// A node just started: it dials, and is dialled by, every peer already running.
    fn connect_started_peers(&mut self, node: NodeId) {
        for peer in (0..self.nodes.len()).filter(|&peer| peer != node) {
            if self.usable(peer) {
                self.schedule_connect(node, peer);
            }
        }
    }

    fn schedule_connect(&mut self, a: NodeId, b: NodeId) {
        let (low, high) = (a.min(b), a.max(b));
        let connection = self.connection(low, high);
        if connection.up || connection.connect_pending || connection.blocks > 0 {
            return;
        }
        connection.connect_pending = true;
        let delay = uniform(
            &mut self.rng,
            self.config.reconnect_min_us,
            self.config.reconnect_max_us,
        );
        self.push(self.now + delay, low, Action::Connect { peer: high });
    }

    fn connect(&mut self, node: NodeId, peer: NodeId) {
        let n = self.nodes.len();
        let usable = self.usable(node) && self.usable(peer);
        let connection = self.connection(node, peer);
        connection.connect_pending = false;
        if connection.up || connection.blocks > 0 || !usable {
            return;
        }
        connection.up = true;
        connection.epoch += 1;
        for (from, to) in [(node, peer), (peer, node)] {
            let direction = &mut self.directions[from * n + to];
            direction.in_flight = 0;
            direction.want_writable = false;
            direction.free_at = self.now;
            direction.last_arrival = self.now;
        }
        self.log(node, format_args!("connected to {peer}"));
        self.push(self.now, node, Action::PeerUp { peer });
        self.push(self.now, peer, Action::PeerUp { peer: node });
    }

    fn break_link(&mut self, a: NodeId, b: NodeId) {
        let connection = self.connection(a, b);
        if !connection.up {
            return;
        }
        connection.up = false;
        connection.epoch += 1;
        for (node, peer) in [(a, b), (b, a)] {
            if self.nodes[node].alive {
                self.push(self.now, node, Action::PeerDown { peer });
            }
        }
        if self.usable(a) && self.usable(b) {
            self.schedule_connect(a, b);
        }
    }

    /// The end of a stopped node's connection: like a FIN after its last frames.
    fn close(&mut self, node: NodeId, peer: NodeId, epoch: u32) {
        let connection = self.connection(node, peer);
        if !connection.up || connection.epoch != epoch {
            return;
        }
        connection.up = false;
        connection.epoch += 1;
        if self.nodes[peer].alive {
            self.push(self.now, peer, Action::PeerDown { peer: node });
        }
    }

    /// One trace line: virtual time, node (or `-` for the simulator), what happened.
    fn log(&mut self, node: NodeId, what: std::fmt::Arguments<'_>) {
        if let Some(trace) = &mut self.trace {
            if node < self.nodes.len() {
                let _ = writeln!(trace, "{:>10} n{node} {what}", self.now);
            } else {
                let _ = writeln!(trace, "{:>10} -- {what}", self.now);
            }
        }
    }
}

/// Uniform in `low..=high` from the simulator's generator.
/// Runs one simulation, turning a panic in a role (a broken invariant) into a failure text
/// with the command that reproduces it, so a sweep over seeds goes on to the next seed.
pub fn catch_panic<R>(
    simulate: impl FnOnce() -> R,
    command: impl FnOnce() -> String,
) -> Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(simulate)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        format!("panicked: {message}\n  reproduce: {}", command())
    })
}

pub fn uniform(rng: &mut Xoshiro256PlusPlus, low: u64, high: u64) -> u64 {
    if high <= low {
        return low;
    }
    low + rng.next_u64() % (high - low + 1)
}

/// A compact one-line description of a message, for traces.
pub fn summary(message: &Message<'_>) -> String {
    match message {
        Message::Hello(hello) => format!("Hello node {}", hello.node),
        Message::AuthChallenge(_) => "AuthChallenge".to_string(),
        Message::AuthProof(_) => "AuthProof".to_string(),
        Message::GossipBatch(batch) => format!(
            "GossipBatch origin {} seq {}..{} ts {}",
            batch.origin,
            batch.first_seq,
            batch.first_seq + batch.values.len() as u64,
            batch.timestamp_us
        ),
        Message::GossipState(state) => {
            let mut text = String::from("GossipState");
            for entry in state.origins.iter() {
                let fin = if entry.fin == wire::FIN_UNKNOWN {
                    -1
                } else {
                    entry.fin as i64
                };
                let _ = write!(text, " {}/{fin}/{}", entry.have, entry.flags);
            }
            text
        }
        Message::RingEpoch(epoch) => format!(
            "RingEpoch {} members {:?} next {} missing {:?}",
            epoch.epoch,
            epoch.members.iter().collect::<Vec<_>>(),
            epoch.next,
            epoch.missing.iter().collect::<Vec<_>>()
        ),
        Message::RingReport(report) => format!(
            "RingReport {} frozen {} settled {} closing {} agreed {} prefix {} approved {:?}",
            report.epoch,
            report.frozen,
            report.settled,
            report.closing,
            report.agreed,
            report.prefix,
            report.approved.iter().collect::<Vec<_>>()
        ),
        Message::RingSync(sync) => format!(
            "RingSync {} prefix {} count {} entries {}",
            sync.epoch,
            sync.prefix,
            sync.count,
            sync.entries.len()
        ),
        Message::RingFreeze(freeze) => format!("{freeze:?}"),
        Message::RingValue(value) => format!("{value:?}"),
        Message::RingConfirm(confirm) => format!("{confirm:?}"),
        Message::RingApprove(approve) => format!("{approve:?}"),
        Message::RingResult(result) => format!("{result:?}"),
        Message::RingSyncRequest(request) => format!("{request:?}"),
        Message::KvOps(ops) => format!("KvOps to {} ({} ops)", ops.target, ops.iter().count()),
        Message::KvResults(results) => format!("KvResults ({})", results.iter().count()),
        Message::KvCredit(credit) => format!("{credit:?}"),
        Message::LamportMessage(message) => format!("LamportMessage clock {}", message.clock),
        Message::KvMembership(membership) => format!(
            "KvMembership {} {:?}",
            membership.epoch,
            membership.members.iter().collect::<Vec<_>>()
        ),
    }
}

/// No checking: for simulations whose properties are asserted on the roles afterwards.
impl Observer for () {}

#[cfg(test)]
mod tests;
