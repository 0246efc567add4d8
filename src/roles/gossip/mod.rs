//! gossip: every node broadcasts a seeded stream of numbers in (0, 1] to all others for
//! `send_for`, then all nodes settle on one set of messages and print `(COUNT, CHECKSUM)`,
//! CHECKSUM = Σ i·m_i over all messages in one total order (chatterbox, the CH/OTP test task).
//!
//! # Algorithm
//! - **Streams.** Node `o` produces stream `o`: values from Xoshiro256++ seeded with the run's
//!   seed and jumped `o` times (disjoint streams), generated in batches (`batch_values`, default 1024) that
//!   share one send timestamp (µs since the Unix epoch, strictly increasing per origin).
//! - **Order.** Messages are ordered by (timestamp, origin, seq): a total order consistent with
//!   every sender's send order, and one every node computes alike.
//! - **Transport.** Every node keeps, per origin, the stream's contiguous prefix `[0, have)` it
//!   has received, and accepts a batch only where it continues that prefix (duplicates and gaps
//!   are dropped). The origin pushes its stream to each peer from a per-peer cursor, as fast as
//!   that peer's out buffer drains; generation pauses when no peer can take more, or when any
//!   connected peer has `window_messages` unacknowledged (bounded memory, real backpressure).
//! - **State.** Every `tick` each node sends each peer its `GossipState`: per origin `have`,
//!   the announced final length `fin`, and whether it is connected to that origin. This is the
//!   acknowledgement (what may be forgotten), the watermark, and how `fin` spreads.
//! - **Relay.** Node `r` forwards origin `o`'s stream to peer `p` when `p` reports no connection
//!   to `o` and `r` is the lowest-numbered node `p` is connected to that has more of `o` than
//!   `p` (so one relayer acts), or when `p` keeps reporting yet its `have` of `o` has not moved
//!   for `RELAY_STALE_TICKS` while `r` has more (anyone helps). Relays start at `p`'s `have`.
//! - **Fold.** A batch is folded into the running `Checksum` once its place in the order is
//!   final: every other origin has either closed (`have == fin`) or sent something later. Folded
//!   messages are dropped once every peer has acknowledged them, so memory holds only what is
//!   in flight, unacknowledged, or not yet ordered.
//! - **Cut.** Nodes need not start together (chatterbox's users start them by hand, seconds
//!   apart). Each node's send phase ends at `send_end = start + send_for` on its own clock, and
//!   every `GossipState` carries the send ends the sender has heard of. The result is every
//!   message stamped before the **cut**, the earliest send end of all nodes: each node stops
//!   generating at the cut as soon as it learns it, and a stream's part in the result is its
//!   prefix stamped before the cut — computed alike everywhere from the stamps in the batches,
//!   so it does not matter when each node learned the cut. The cut is final once every node's
//!   send end is known; nothing is folded before that. Until then a node sends at most
//!   `window_messages` that any unheard node has not acknowledged (its acknowledgement counts as
//!   0), so memory stays bounded while a node is still to be started.
//! - **End.** At the cut (or its own `send_for`, whichever comes first) a node stops generating
//!   and announces `fin = have`. A node prints as soon as it holds every stream up to the cut
//!   and every peer has reported the same; it broadcasts its state first, so peers learn it is
//!   complete. Otherwise it prints at its deadline (`send_for + wait_for - margin` after its own
//!   start) with everything it holds before the cut it knows, and warns, saying why.
//!
//! # Faults
//! - A dropped connection is redialled by the driver; on `on_peer_up` the origin resends from
//!   the peer's last acknowledged `have`, duplicates are dropped.
//! - A broken link A–B while both reach C: C relays A's stream to B and B's to A.
//! - A node that dies never announces `fin`: the survivors relay its stream among themselves
//!   until they hold the same prefix (the longest any of them got), and print at the deadline.
//! - A paused node (SIGSTOP) stops acknowledging; its peers fill its window and wait (as TCP
//!   would), then resume when it wakes. A peer that disconnects no longer holds the others
//!   back, but everything it has not acknowledged is kept for it, up to `RETAINED_VALUES_MAX`.
//! - Not handled: a node restarted mid-run starts its stream again from seq 0 with new
//!   timestamps; peers drop it as duplicates, so it cannot rejoin. Byzantine peers are out of
//!   scope (a peer may lie in its state; input is validated only for shape and bounds).

mod cut;
mod fold;
mod receive;
mod send;
mod stream;

use rand_xoshiro::Xoshiro256PlusPlus;

use crate::node::{Io, Micros, NodeId, Role, Timer, TimerKey};
use crate::roles::checksum::{Checksum, stream_rng};
use crate::wire::{FIN_UNKNOWN, HEADER_LEN, Message, OriginState, SEND_END_UNKNOWN};
use crate::{debug, info};
use stream::Stream;

/// Most values generated per batch (one timestamp); the default batch size.
pub const BATCH_VALUES_MAX: usize = 1024;
/// Flow control default: at most this many of our messages may be unacknowledged by a connected
/// peer. It bounds memory (what is kept for resend) and queueing delay; the ack round trip is
/// about one tick, so the window must cover a tick of sending at full speed with room to spare.
pub const WINDOW_MESSAGES: u64 = 1 << 20;
/// Generation stops while this node holds more messages than this (all origins together):
/// 2^27 values are 512 MiB. Reached only when folding or acknowledgement stalls for long —
/// a dead or cut-off node — since everything after that point must be kept for resend.
const RETAINED_VALUES_MAX: usize = 1 << 27;
/// Ticks without progress after which any node relays to a lagging peer.
const RELAY_STALE_TICKS: u64 = 5;
/// Do not start a batch frame with less room than this many values.
const PUSH_VALUES_MIN: usize = 64;
const BATCH_OVERHEAD_BYTES: usize = HEADER_LEN + 18;

const TIMER_TICK: Timer = Timer(1);
const TIMER_SEND_END: Timer = Timer(2);
const TIMER_DEADLINE: Timer = Timer(3);

#[derive(Clone, Debug)]
pub struct Config {
    pub nodes: usize,
    pub seed: u64,
    pub send_for_us: Micros,
    pub wait_for_us: Micros,
    pub tick_us: Micros,
    /// Values per generated batch: even, 2..=`BATCH_VALUES_MAX`.
    pub batch_values: usize,
    /// Unacknowledged messages allowed per connected peer.
    pub window_messages: u64,
    /// Keep every folded run of messages in `Gossip::folds` (tests check the result against
    /// a reference of their own with it; it grows with the run, so small runs only).
    pub record_folds: bool,
}

impl Config {
    /// The defaults for everything but what a run must say.
    pub fn new(nodes: usize, seed: u64, send_for_us: Micros, wait_for_us: Micros) -> Config {
        Config {
            nodes,
            seed,
            send_for_us,
            wait_for_us,
            tick_us: 10_000,
            batch_values: BATCH_VALUES_MAX,
            window_messages: WINDOW_MESSAGES,
            record_folds: false,
        }
    }

    /// When a node gives up waiting and prints what it has: before `send_for + wait_for`, with a
    /// margin for flushing and exiting.
    pub fn deadline_us(&self) -> Micros {
        let margin = (self.wait_for_us / 8).min(250_000);
        self.send_for_us + self.wait_for_us - margin
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Send,
    Settle,
    Done,
}

/// What this node knows of one peer.
struct PeerView {
    up: bool,
    /// The peer's last `GossipState`, per origin.
    reported: Vec<OriginState>,
    reported_at_us: Micros,
    /// Per origin: when the peer's `have` last advanced.
    progress_at_us: Vec<Micros>,
    /// Per origin: next seq to push to this peer.
    cursor: Vec<u64>,
    /// Per origin (other than ours and the peer's): we are relaying it to this peer.
    relaying: Vec<bool>,
}

/// A run of one origin's messages folded in order, all stamped `timestamp_us`: the folds of a
/// run, in order, are exactly the result's message sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoldSegment {
    pub timestamp_us: u64,
    pub origin: NodeId,
    pub first_seq: u64,
    pub count: u64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub generated: u64,
    pub received: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub relayed: u64,
    /// Most messages held at once (all origins), sampled every tick.
    pub retained_max: u64,
}

pub struct Gossip {
    config: Config,
    node: NodeId,
    rng: Xoshiro256PlusPlus,
    phase: Phase,
    started_us: Micros,
    last_timestamp_us: u64,
    streams: Vec<Stream>,
    peers: Vec<PeerView>,
    checksum: Checksum,
    /// Scratch for encoding our state; sized once.
    state: Vec<OriginState>,
    /// Per node: known to hold every stream complete (from its own state or relayed).
    known_complete: Vec<bool>,
    /// Per node: when its send phase ends (µs on its clock), or `SEND_END_UNKNOWN`.
    send_end_us: Vec<u64>,
    /// Per node: when we learned its send end (our clock).
    heard_at_us: Vec<Micros>,
    /// The earliest send end known: the cut, final once every node's is known.
    cut_us: u64,
    /// When the last send end became known (the cut final).
    cut_final_at_us: Option<Micros>,
    /// Ends our send phase: at our own send end, or earlier at the cut.
    send_end_timer: Option<TimerKey>,
    /// Every folded run, when `Config::record_folds`.
    pub folds: Vec<FoldSegment>,
    pub stats: Stats,
    /// The printed result, and whether this node held every stream to its announced end.
    pub result: Option<(Checksum, bool)>,
}

impl Gossip {
    pub fn new(config: Config, node: NodeId) -> Gossip {
        assert!(node < config.nodes);
        assert!((2..=BATCH_VALUES_MAX).contains(&config.batch_values));
        assert!(config.batch_values.is_multiple_of(2));
        let nodes = config.nodes;
        // Reserved up front so that the steady state does not allocate: a stream holds about a
        // window of unacknowledged messages plus those waiting to be ordered. Four windows is
        // the high-water mark seen under load (two were exceeded about twice a second, each a
        // reallocation); `tests/alloc.rs` holds it to zero. The cost is memory: 16 MiB per
        // origin, ~75 MiB RSS per node with 4 nodes.
        let reserved = 4 * config.window_messages as usize;
        let rng = stream_rng(config.seed, node);
        let peers = (0..nodes)
            .map(|_| PeerView {
                up: false,
                reported: vec![
                    OriginState {
                        have: 0,
                        fin: FIN_UNKNOWN,
                        flags: 0,
                        send_end_us: SEND_END_UNKNOWN,
                    };
                    nodes
                ],
                reported_at_us: 0,
                progress_at_us: vec![0; nodes],
                cursor: vec![0; nodes],
                relaying: vec![false; nodes],
            })
            .collect();
        Gossip {
            node,
            rng,
            phase: Phase::Send,
            started_us: 0,
            last_timestamp_us: 0,
            streams: (0..nodes)
                .map(|_| Stream::with_capacity(reserved))
                .collect(),
            peers,
            checksum: Checksum::default(),
            state: vec![OriginState::default(); nodes],
            known_complete: vec![false; nodes],
            send_end_us: vec![SEND_END_UNKNOWN; nodes],
            heard_at_us: vec![0; nodes],
            cut_us: u64::MAX,
            cut_final_at_us: None,
            send_end_timer: None,
            folds: Vec::new(),
            stats: Stats::default(),
            result: None,
            config,
        }
    }

    /// Per origin, how many messages are folded (after the run: how many the result counts).
    pub fn counted(&self) -> Vec<u64> {
        self.streams.iter().map(|stream| stream.folded).collect()
    }

    /// The cut this node folded to (µs since the epoch), once it has printed.
    pub fn cut_us(&self) -> Option<u64> {
        (self.phase == Phase::Done).then_some(self.cut_us)
    }

    fn nodes(&self) -> usize {
        self.config.nodes
    }

    fn others(&self) -> impl Iterator<Item = NodeId> + use<> {
        let node = self.node;
        (0..self.config.nodes).filter(move |&other| other != node)
    }

    /// Cross-checks that hold after every handler (cheap enough to keep on in release).
    fn invariants(&self) {
        for stream in &self.streams {
            assert!(stream.base <= stream.folded && stream.folded <= stream.have);
            assert!(stream.folded == stream.have || stream.fold_batch < stream.batches.len());
            assert_eq!(stream.base + stream.values.len() as u64, stream.have);
            assert!(stream.fin.is_none_or(|fin| stream.have <= fin));
        }
        assert!(self.phase != Phase::Send || self.streams[self.node].fin.is_none());
    }
}

impl Role for Gossip {
    fn on_start(&mut self, io: &mut impl Io) {
        self.started_us = io.now();
        let own_send_end_us = self.started_us + self.config.send_for_us;
        self.learn_send_end(self.node, own_send_end_us, self.started_us);
        io.set_timer(self.config.tick_us, TIMER_TICK);
        self.send_end_timer = Some(io.set_timer(self.config.send_for_us, TIMER_SEND_END));
        io.set_timer(self.config.deadline_us(), TIMER_DEADLINE);
        if self.nodes() == 1 {
            info!(
                "node {}: warning: the peers file lists only this node: nothing to gossip, the \
                 result is empty",
                self.node
            );
        }
    }

    fn on_message(&mut self, io: &mut impl Io, from: NodeId, message: Message<'_>) {
        if self.phase == Phase::Done {
            return;
        }
        match message {
            Message::GossipBatch(batch) => {
                self.receive_batch(from, &batch);
                self.try_finish(io);
            }
            Message::GossipState(state) => {
                self.receive_state(io, from, &state);
                self.pump(io);
                self.try_finish(io);
            }
            other => debug!(
                "node {}: ignoring {:?} from {from}",
                self.node,
                other.kind()
            ),
        }
        self.invariants();
    }

    fn on_timer(&mut self, io: &mut impl Io, timer: Timer) {
        if self.phase == Phase::Done {
            return;
        }
        match timer {
            TIMER_TICK => {
                self.fold();
                self.trim();
                let retained: usize = self.streams.iter().map(|stream| stream.values.len()).sum();
                self.stats.retained_max = self.stats.retained_max.max(retained as u64);
                if crate::log::enabled(crate::log::LEVEL_DEBUG) {
                    self.log_streams(io.now());
                }
                self.update_relays(io.now());
                self.broadcast_state(io);
                self.pump(io);
                self.try_finish(io);
                if self.phase != Phase::Done {
                    io.set_timer(self.config.tick_us, TIMER_TICK);
                }
            }
            TIMER_SEND_END if self.phase == Phase::Send => self.end_sending(io),
            TIMER_DEADLINE => self.finish(io),
            other => debug!("node {}: unknown timer {other:?}", self.node),
        }
        self.invariants();
    }

    fn on_peer_up(&mut self, io: &mut impl Io, peer: NodeId) {
        let view = &mut self.peers[peer];
        view.up = true;
        for origin in 0..self.config.nodes {
            view.cursor[origin] = view.reported[origin].have;
            view.relaying[origin] = false;
        }
        if self.phase != Phase::Done {
            self.broadcast_state(io);
            self.pump(io);
        }
    }

    fn on_peer_down(&mut self, _io: &mut impl Io, peer: NodeId) {
        let view = &mut self.peers[peer];
        view.up = false;
        view.relaying.fill(false);
    }

    fn on_writable(&mut self, io: &mut impl Io, _peer: NodeId) {
        if self.phase != Phase::Done {
            self.pump(io);
        }
    }
}
