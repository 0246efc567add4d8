//! The simulated network: one connection per pair of nodes, as TCP gives them to the real
//! driver.
//!
//! A connection has an epoch, bumped whenever it comes up or goes down; a frame carries the
//! epoch it was sent in and is lost if the connection broke before it arrived (TCP's
//! unacknowledged data). Each direction is FIFO: a frame leaves when the link has transmitted
//! what was queued before it (bandwidth), arrives after the link's latency plus a jitter that
//! never lets it overtake the previous frame, and is held back while the direction is stalled.
//! Bytes in flight count against a window, which is what `send_space` and `on_writable`
//! report, like the real driver's out-buffer high- and low-water marks. A broken connection is
//! re-established after a drawn delay unless a partition blocks the pair.

use rand_xoshiro::Xoshiro256PlusPlus;

use super::uniform;
use super::world::{Action, Observer, World};
use crate::node::{Micros, NodeId};
use crate::wire::FRAME_BYTES_MAX;

/// `on_writable` is due once a direction's bytes in flight fall to this fraction of the
/// window (and `send_space` asks for it above): the real driver's low-water mark.
const WRITABLE_FRACTION_DIVISOR: usize = 4;
/// A stopped node's connection closes this long after its last frame arrives (its FIN).
const CLOSE_AFTER_LAST_FRAME_US: Micros = 1;
const MICROS_PER_SECOND: u64 = 1_000_000;

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
    /// Each node's clock starts ahead by up to this much (0: clocks agree at the start).
    pub clock_offset_max_us: Micros,
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
            clock_offset_max_us: 0,
        }
    }
}

/// One direction of a connection.
#[derive(Clone, Default)]
pub(super) struct Direction {
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
pub(super) struct Connection {
    up: bool,
    epoch: u32,
    /// Partitions currently cutting this pair (they may overlap).
    blocks: u32,
    pub(super) connect_pending: bool,
}

/// Both directions of every pair of `nodes`, each pair's latency drawn in order
/// (0-1, 0-2, ..., 1-2, ...).
pub(super) fn directions(
    nodes: usize,
    config: &NetConfig,
    rng: &mut Xoshiro256PlusPlus,
) -> Vec<Direction> {
    let mut directions = vec![Direction::default(); nodes * nodes];
    for from in 0..nodes {
        for to in from + 1..nodes {
            let latency = uniform(rng, config.latency_min_us, config.latency_max_us);
            directions[from * nodes + to].latency_us = latency;
            directions[to * nodes + from].latency_us = latency;
        }
    }
    directions
}

impl<O: Observer> World<O> {
    pub(super) fn connection(&mut self, a: NodeId, b: NodeId) -> &mut Connection {
        let n = self.nodes.len();
        &mut self.connections[a.min(b) * n + a.max(b)]
    }

    fn direction(&mut self, from: NodeId, to: NodeId) -> &mut Direction {
        let n = self.nodes.len();
        &mut self.directions[from * n + to]
    }

    /// Queues a frame of `bytes` on `from → to`: its arrival time, or `None` when the
    /// connection is down or the window is full (then `on_writable` is due once it drains).
    /// Draws the frame's jitter.
    pub(super) fn transmit(&mut self, from: NodeId, to: NodeId, bytes: usize) -> Option<Micros> {
        if !self.connection(from, to).up {
            return None;
        }
        let (now, window) = (self.now, self.config.window_bytes);
        let bandwidth = self.config.bandwidth_bytes_per_s;
        let direction = self.direction(from, to);
        if direction.in_flight + bytes > window + FRAME_BYTES_MAX {
            direction.want_writable = true;
            return None;
        }
        direction.in_flight += bytes;
        let transmit_us = bytes as u64 * MICROS_PER_SECOND / bandwidth;
        let start = direction.free_at.max(now);
        direction.free_at = start + transmit_us;
        let jitter = uniform(&mut self.rng, 0, self.config.jitter_us);
        let direction = self.direction(from, to);
        let arrival = (direction.free_at + direction.latency_us + jitter)
            .max(direction.last_arrival)
            .max(direction.stall_until);
        direction.last_arrival = arrival;
        Some(arrival)
    }

    /// The epoch frames sent now on the `a`–`b` connection belong to.
    pub(super) fn epoch(&mut self, a: NodeId, b: NodeId) -> u32 {
        self.connection(a, b).epoch
    }

    /// Room left in the window of `from → to` (0 when the connection is down); asks for
    /// `on_writable` when the bytes in flight are above the low-water mark.
    pub(super) fn send_space(&mut self, from: NodeId, to: NodeId) -> usize {
        if !self.connection(from, to).up {
            return 0;
        }
        let window = self.config.window_bytes;
        let direction = self.direction(from, to);
        if direction.in_flight > window / WRITABLE_FRACTION_DIVISOR {
            direction.want_writable = true;
        }
        window.saturating_sub(direction.in_flight)
    }

    /// A frame sent in `epoch` reaches `to`'s socket: true if that connection is still up,
    /// else the frame is lost with it.
    pub(super) fn arrive(&mut self, from: NodeId, to: NodeId, epoch: u32, frame: usize) -> bool {
        let connection = self.connection(from, to);
        if connection.epoch != epoch || !connection.up {
            self.lose_frame(frame);
            return false;
        }
        true
    }

    /// A frame of `bytes` sent in `epoch` was read: its bytes leave the window (unless the
    /// connection has been re-established since, which emptied it).
    pub(super) fn frame_read(&mut self, from: NodeId, to: NodeId, epoch: u32, bytes: usize) {
        if self.connection(from, to).epoch == epoch {
            self.release_window(from, to, bytes);
        }
    }

    fn release_window(&mut self, from: NodeId, to: NodeId, bytes: usize) {
        let window = self.config.window_bytes;
        let direction = self.direction(from, to);
        direction.in_flight -= bytes;
        if direction.want_writable && direction.in_flight <= window / WRITABLE_FRACTION_DIVISOR {
            direction.want_writable = false;
            self.push(self.now, from, Action::Writable { peer: to });
        }
    }

    /// A node just started: it dials, and is dialled by, every peer already running.
    pub(super) fn connect_started_peers(&mut self, node: NodeId) {
        for peer in (0..self.nodes.len()).filter(|&peer| peer != node) {
            if self.usable(peer) {
                self.schedule_connect(node, peer);
            }
        }
    }

    /// A (re)connection after a drawn delay, unless one is up, pending or blocked.
    pub(super) fn schedule_connect(&mut self, a: NodeId, b: NodeId) {
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

    pub(super) fn connect(&mut self, node: NodeId, peer: NodeId) {
        let usable = self.usable(node) && self.usable(peer);
        let connection = self.connection(node, peer);
        connection.connect_pending = false;
        if connection.up || connection.blocks > 0 || !usable {
            return;
        }
        connection.up = true;
        connection.epoch += 1;
        let now = self.now;
        for (from, to) in [(node, peer), (peer, node)] {
            let direction = self.direction(from, to);
            direction.in_flight = 0;
            direction.want_writable = false;
            direction.free_at = now;
            direction.last_arrival = now;
        }
        self.log(node, format_args!("connected to {peer}"));
        self.push(self.now, node, Action::PeerUp { peer });
        self.push(self.now, peer, Action::PeerUp { peer: node });
    }

    pub(super) fn break_link(&mut self, a: NodeId, b: NodeId) {
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

    /// A partition starts cutting `a`–`b`: the connection breaks and stays down until every
    /// partition cutting the pair has healed.
    pub(super) fn block(&mut self, a: NodeId, b: NodeId) {
        self.connection(a, b).blocks += 1;
        self.break_link(a, b);
    }

    pub(super) fn unblock(&mut self, a: NodeId, b: NodeId) {
        let connection = self.connection(a, b);
        connection.blocks -= 1;
        if connection.blocks == 0 {
            self.schedule_connect(a, b);
        }
    }

    /// Frames `from → to` sent during the next `for_us` are held until it ends.
    pub(super) fn stall(&mut self, from: NodeId, to: NodeId, for_us: Micros) {
        let until = self.now + for_us;
        let direction = self.direction(from, to);
        direction.stall_until = direction.stall_until.max(until);
    }

    /// `node` stopped: each of its connections closes once the frames it sent have arrived.
    pub(super) fn close_after_last_frames(&mut self, node: NodeId) {
        for peer in (0..self.nodes.len()).filter(|&peer| peer != node) {
            let connection = self.connection(node, peer);
            if connection.up {
                let epoch = connection.epoch;
                let last_arrival = self.direction(node, peer).last_arrival;
                let at = last_arrival.max(self.now) + CLOSE_AFTER_LAST_FRAME_US;
                self.push(at, node, Action::Close { peer, epoch });
            }
        }
    }

    /// The end of a stopped node's connection: like a FIN after its last frames.
    pub(super) fn close(&mut self, node: NodeId, peer: NodeId, epoch: u32) {
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
}
