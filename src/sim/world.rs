//! The simulated world apart from the roles: the event queue, the nodes' lifecycles and
//! clocks, frames and timers. `Sim` (mod.rs) pops events from here and hands them to roles;
//! `SimIo` (io.rs) and the network (network.rs) push new ones.
//!
//! Events are ordered by (virtual time, sequence number), and the sequence number is taken at
//! push time, so two events due at the same instant run in the order they were queued. That,
//! and the single generator every random draw comes from, is what makes a run a pure function
//! of its seed: code here must push events and draw numbers in a fixed order.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;
use slab::Slab;

use super::faults::Fault;
use super::network::{Connection, NetConfig, directions};
use super::uniform;
use crate::node::{ClientId, Micros, NodeId, Timer, TimerKey};
use crate::wire::Message;

/// Epoch anchor of node clocks (2026-01-01), so timestamps look like the real driver's.
pub(super) const CLOCK_EPOCH_US: Micros = 1_767_225_600_000_000;
/// Clock rates are in parts per million of virtual time.
pub(super) const PPM: u64 = 1_000_000;
/// Mixed into the run's seed for the world's generator (latencies, clock rates, jitter,
/// reconnect delays).
const WORLD_SEED_SALT: u64 = 0x005E_ED0F_5111;

/// Watches traffic for a checker; the simulator calls it, the role never sees it.
pub trait Observer {
    /// Every `send` a role makes, whether or not it is accepted.
    fn sent(&mut self, _at: Micros, _from: NodeId, _to: NodeId, _message: &Message<'_>) {}
    /// Every message handed to a role.
    fn delivered(&mut self, _at: Micros, _from: NodeId, _to: NodeId, _message: &Message<'_>) {}
}

/// No checking: for simulations whose properties are asserted on the roles afterwards.
impl Observer for () {}

#[derive(Clone, Copy, Debug, Default)]
pub struct SimStats {
    pub deliveries: u64,
    pub frames_lost: u64,
    pub timers: u64,
    pub faults: u64,
    pub events: u64,
}

pub(super) enum Action {
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

pub(super) struct Event {
    pub(super) at: Micros,
    seq: u64,
    /// The node the action is for, and its incarnation when queued (a crash invalidates).
    pub(super) node: NodeId,
    pub(super) incarnation: u32,
    pub(super) action: Action,
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

pub(super) struct NodeState {
    pub(super) alive: bool,
    pub(super) stopped: bool,
    pub(super) incarnation: u32,
    pub(super) paused_until: Micros,
    /// Events that came due while the node was paused, in order. Anything due later waits
    /// behind them, so a pause never reorders a connection.
    pub(super) deferred: VecDeque<Event>,
    /// Clock rate in parts per million of virtual time.
    rate_ppm: u64,
    /// How far ahead of the others this node's clock starts.
    offset_us: Micros,
    /// When the node's process starts (virtual time); before that it has no listener, so
    /// nothing can connect to it.
    start_us: Micros,
    pub(super) outputs: Vec<String>,
    /// Replies to clients, as REPL text, in order.
    pub(super) replies: Vec<(Micros, ClientId, String)>,
}

/// Everything but the roles: what an `Io` handle works on.
pub struct World<O: Observer> {
    pub(super) now: Micros,
    seq: u64,
    queue: BinaryHeap<Event>,
    pub(super) rng: Xoshiro256PlusPlus,
    pub(super) config: NetConfig,
    pub(super) nodes: Vec<NodeState>,
    /// `nodes × nodes`, `[from * n + to]` (network.rs).
    pub(super) directions: Vec<super::network::Direction>,
    /// `nodes × nodes`, used at `[min * n + max]` (network.rs).
    pub(super) connections: Vec<Connection>,
    frames: Slab<Vec<u8>>,
    spare_frames: Vec<Vec<u8>>,
    timers: Slab<u32>,
    timer_generation: u32,
    pub(super) trace: Option<String>,
    pub observer: O,
    pub stats: SimStats,
}

impl<O: Observer> World<O> {
    /// A world of `starts_us.len()` nodes, node `i` starting at `starts_us[i]`. Draws, in
    /// this order: every node's clock rate, then every link's latency.
    pub(super) fn new(
        seed: u64,
        config: NetConfig,
        observer: O,
        trace: bool,
        starts_us: &[Micros],
    ) -> World<O> {
        let nodes = starts_us.len();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ WORLD_SEED_SALT);
        let skew_ppm = (config.clock_skew * PPM as f64) as u64;
        let node_states = starts_us
            .iter()
            .map(|&start_us| NodeState {
                start_us,
                alive: true,
                stopped: false,
                incarnation: 0,
                paused_until: 0,
                deferred: VecDeque::new(),
                rate_ppm: PPM - skew_ppm + uniform(&mut rng, 0, 2 * skew_ppm),
                // Drawn only when asked for, so other runs' draws are unchanged.
                offset_us: uniform(&mut rng, 0, config.clock_offset_max_us),
                outputs: Vec::new(),
                replies: Vec::new(),
            })
            .collect();
        let directions = directions(nodes, &config, &mut rng);
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
        world.queue_starts(starts_us);
        world
    }

    /// Every node's start, and a connection between every two nodes running from time 0
    /// (later ones are dialled when they start).
    fn queue_starts(&mut self, starts_us: &[Micros]) {
        let nodes = starts_us.len();
        for node in 0..nodes {
            self.push(starts_us[node], node, Action::Start);
            for peer in node + 1..nodes {
                if starts_us[node] == 0 && starts_us[peer] == 0 {
                    self.connection(node, peer).connect_pending = true;
                    self.push(0, node, Action::Connect { peer });
                }
            }
        }
    }

    pub(super) fn push(&mut self, at: Micros, node: NodeId, action: Action) {
        let incarnation = self.nodes.get(node).map_or(0, |state| state.incarnation);
        self.push_for(at, node, incarnation, action);
    }

    pub(super) fn push_for(&mut self, at: Micros, node: NodeId, incarnation: u32, action: Action) {
        self.seq += 1;
        self.queue.push(Event {
            at,
            seq: self.seq,
            node,
            incarnation,
            action,
        });
    }

    /// The next event due at or before `end`, with the clock moved to it.
    pub(super) fn pop_until(&mut self, end: Micros) -> Option<Event> {
        if self.queue.peek()?.at > end {
            return None;
        }
        let event = self.queue.pop()?;
        self.now = event.at;
        self.stats.events += 1;
        Some(event)
    }

    /// An event for a crashed or stopped node: free its frame, keep the window honest.
    pub(super) fn discard(&mut self, event: Event) {
        match event.action {
            Action::Deliver { frame, .. } | Action::Local { frame } => self.lose_frame(frame),
            Action::Timer {
                key, generation, ..
            } if self.timers.get(key) == Some(&generation) => {
                self.timers.remove(key);
            }
            _ => {}
        }
    }

    /// Whether an event queued for `node`'s `incarnation` is still for a running process.
    pub(super) fn current(&self, node: NodeId, incarnation: u32) -> bool {
        let state = &self.nodes[node];
        state.alive && !state.stopped && state.incarnation == incarnation
    }

    /// Alive, not stopped, and started: a node that can connect.
    pub(super) fn usable(&self, node: NodeId) -> bool {
        let state = &self.nodes[node];
        state.alive && !state.stopped && state.start_us <= self.now
    }

    /// Like SIGSTOP for `for_us` (an overlapping pause extends it); a `Resume` is queued for
    /// the end.
    pub(super) fn pause(&mut self, node: NodeId, for_us: Micros) {
        let state = &mut self.nodes[node];
        state.paused_until = state.paused_until.max(self.now + for_us);
        let until = state.paused_until;
        self.push(until, node, Action::Resume);
    }

    /// Node `node`'s clock: the epoch anchor and its offset, plus virtual time at its rate.
    pub(super) fn clock_us(&self, node: NodeId) -> Micros {
        let state = &self.nodes[node];
        let rate = state.rate_ppm as u128;
        CLOCK_EPOCH_US + state.offset_us + (self.now as u128 * rate / PPM as u128) as Micros
    }

    // Frames: encoded once when sent, decoded by the receiver, the buffer reused.

    pub(super) fn encode(&mut self, message: &Message<'_>) -> usize {
        let mut buffer = self.spare_frames.pop().unwrap_or_default();
        buffer.resize(message.encoded_len(), 0);
        message.encode(&mut buffer);
        self.frames.insert(buffer)
    }

    pub(super) fn take_frame(&mut self, frame: usize) -> Vec<u8> {
        self.frames.remove(frame)
    }

    pub(super) fn recycle(&mut self, buffer: Vec<u8>) {
        self.spare_frames.push(buffer);
    }

    /// A frame that never reaches its role (lost in flight, or for a dead node).
    pub(super) fn lose_frame(&mut self, frame: usize) {
        let buffer = self.frames.remove(frame);
        self.spare_frames.push(buffer);
        self.stats.frames_lost += 1;
    }

    // Timers: a slab of generations, so a cancelled or stale timer's event is recognised.

    /// A timer `after` µs of `node`'s clock from now (scaled to virtual time by its rate).
    pub(super) fn arm_timer(&mut self, node: NodeId, after: Micros, timer: Timer) -> TimerKey {
        let rate = self.nodes[node].rate_ppm;
        let delay = (after as u128 * PPM as u128 / rate as u128) as Micros;
        self.timer_generation = self.timer_generation.wrapping_add(1);
        let generation = self.timer_generation;
        let key = self.timers.insert(generation);
        let incarnation = self.nodes[node].incarnation;
        self.push_for(
            self.now + delay,
            node,
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

    pub(super) fn cancel_timer(&mut self, key: TimerKey) {
        if self.timers.get(key.index as usize) == Some(&key.generation) {
            self.timers.remove(key.index as usize);
        }
    }

    /// Whether a timer event is still armed (not cancelled); if so it is spent now.
    pub(super) fn fire_timer(&mut self, key: usize, generation: u32) -> bool {
        if self.timers.get(key) != Some(&generation) {
            return false;
        }
        self.timers.remove(key);
        self.stats.timers += 1;
        true
    }
}
