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

use std::collections::VecDeque;

use rand_xoshiro::Xoshiro256PlusPlus;

use crate::node::{Io, Micros, NodeId, Role, Timer, TimerKey};
use crate::roles::checksum::{Checksum, fill_stream_values, stream_rng};
use crate::wire::{
    FIN_UNKNOWN, GOSSIP_BATCH_VALUES_MAX, GossipBatch, GossipState, HEADER_LEN, Items, Message,
    ORIGIN_COMPLETE, ORIGIN_CONNECTED, OriginState, SEND_END_UNKNOWN,
};
use crate::{debug, info};

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

#[derive(Clone, Copy, Debug)]
struct Batch {
    timestamp_us: u64,
    first_seq: u64,
    count: u64,
}

impl Batch {
    fn end(&self) -> u64 {
        self.first_seq + self.count
    }
}

/// What this node holds of one origin's stream.
#[derive(Default)]
struct Stream {
    /// Values `[base, have)`; `values[0]` is seq `base`.
    values: VecDeque<u32>,
    /// Covers `[base, have)` (its first batch may start before `base`).
    batches: VecDeque<Batch>,
    base: u64,
    have: u64,
    fin: Option<u64>,
    /// Messages `[0, folded)` are in the checksum.
    folded: u64,
    /// Index in `batches` of the batch holding seq `folded` (when `folded < have`): the fold
    /// walks batches in order, so it keeps its place instead of searching.
    fold_batch: usize,
    latest_timestamp_us: Option<u64>,
}

impl Stream {
    fn with_capacity(values: usize) -> Stream {
        Stream {
            values: VecDeque::with_capacity(values),
            batches: VecDeque::with_capacity(values / 64),
            ..Stream::default()
        }
    }

    fn closed(&self) -> bool {
        self.fin == Some(self.have)
    }

    /// The batch holding seq `folded`, which must be below `have`.
    fn fold_batch(&self) -> &Batch {
        let batch = &self.batches[self.fold_batch];
        debug_assert!(batch.first_seq <= self.folded && self.folded < batch.end());
        batch
    }

    fn batch_at(&self, seq: u64) -> &Batch {
        let index = self.batches.partition_point(|batch| batch.end() <= seq);
        &self.batches[index]
    }

    /// Up to `count` values from `seq` on, as one contiguous slice.
    fn slice(&self, seq: u64, count: usize) -> &[u32] {
        let offset = (seq - self.base) as usize;
        let (front, back) = self.values.as_slices();
        if offset < front.len() {
            &front[offset..front.len().min(offset + count)]
        } else {
            let offset = offset - front.len();
            &back[offset..back.len().min(offset + count)]
        }
    }

    /// Appends values sent at `timestamp_us` (extending the last batch if it has that stamp).
    fn push(&mut self, timestamp_us: u64, values: &[u32]) {
        let first_seq = self.have;
        // From a slice, `VecDeque::extend` is a memcpy rather than a push per value.
        self.values.extend(values);
        let count = values.len() as u64;
        match self.batches.back_mut() {
            Some(last) if last.timestamp_us == timestamp_us => {
                last.count += count;
                // The fold may have finished this batch and moved past it: step back into it.
                if self.fold_batch == self.batches.len() {
                    self.fold_batch -= 1;
                }
            }
            _ => self.batches.push_back(Batch {
                timestamp_us,
                first_seq,
                count,
            }),
        }
        self.have += count;
        self.latest_timestamp_us = Some(timestamp_us);
    }

    /// Forgets values before `seq` (folded and acknowledged by everyone who needs them).
    fn trim(&mut self, seq: u64) {
        if seq <= self.base {
            return;
        }
        assert!(seq <= self.folded && seq <= self.have);
        self.values.drain(..(seq - self.base) as usize);
        self.base = seq;
        while self.batches.front().is_some_and(|batch| batch.end() <= seq) {
            self.batches.pop_front();
            self.fold_batch -= 1;
        }
    }
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

    /// Every node's send end is known, so the cut can move no more.
    fn cut_final(&self) -> bool {
        self.cut_final_at_us.is_some()
    }

    /// Learns `node`'s send end; the cut may move earlier. Returns whether it did.
    fn learn_send_end(&mut self, node: NodeId, send_end_us: u64, now_us: Micros) -> bool {
        if send_end_us == SEND_END_UNKNOWN || self.send_end_us[node] != SEND_END_UNKNOWN {
            return false;
        }
        self.send_end_us[node] = send_end_us;
        self.heard_at_us[node] = now_us;
        if self.send_end_us.iter().all(|&end| end != SEND_END_UNKNOWN) {
            self.cut_final_at_us = Some(now_us);
        }
        let earlier = send_end_us < self.cut_us;
        self.cut_us = self.cut_us.min(send_end_us);
        earlier
    }

    /// The cut moved earlier: our send phase ends there (at once if it has passed).
    fn move_send_end(&mut self, io: &mut impl Io) {
        if self.phase != Phase::Send {
            return;
        }
        if let Some(key) = self.send_end_timer.take() {
            io.cancel_timer(key);
        }
        let now_us = io.now();
        if self.cut_us <= now_us {
            self.end_sending(io);
        } else {
            self.send_end_timer = Some(io.set_timer(self.cut_us - now_us, TIMER_SEND_END));
        }
    }

    fn end_sending(&mut self, io: &mut impl Io) {
        self.phase = Phase::Settle;
        self.send_end_timer = None;
        let own = &mut self.streams[self.node];
        own.fin = Some(own.have);
        self.broadcast_state(io);
        self.try_finish(io);
    }

    fn nodes(&self) -> usize {
        self.config.nodes
    }

    fn others(&self) -> impl Iterator<Item = NodeId> + use<> {
        let node = self.node;
        (0..self.config.nodes).filter(move |&other| other != node)
    }

    // ----- sending -----

    /// Pushes pending data to every peer with room, generating more while a peer can take it.
    fn pump(&mut self, io: &mut impl Io) {
        loop {
            for peer in self.others() {
                if self.peers[peer].up {
                    self.push_peer(io, peer);
                }
            }
            if !self.may_generate(io.now()) {
                return;
            }
            self.generate(io.now());
        }
    }

    /// Whether to generate a batch now: sending, before the cut, and within the window of
    /// every connected peer and of every node not heard from yet (so a node started late
    /// finds at most one window per origin waiting for it, and memory stays bounded).
    fn may_generate(&self, now_us: Micros) -> bool {
        if self.phase != Phase::Send || now_us.max(self.last_timestamp_us + 1) >= self.cut_us {
            return false;
        }
        let retained: usize = self.streams.iter().map(|stream| stream.values.len()).sum();
        if retained > RETAINED_VALUES_MAX {
            return false;
        }
        let have = self.streams[self.node].have;
        let mut caught_up = false;
        for peer in self.others() {
            let view = &self.peers[peer];
            let unheard = self.send_end_us[peer] == SEND_END_UNKNOWN;
            if !view.up && !unheard {
                continue;
            }
            if have.saturating_sub(view.reported[self.node].have) >= self.config.window_messages {
                return false;
            }
            caught_up |= view.up && view.cursor[self.node] >= have;
        }
        caught_up
    }

    fn generate(&mut self, now_us: Micros) {
        let timestamp_us = now_us.max(self.last_timestamp_us + 1);
        self.last_timestamp_us = timestamp_us;
        let mut buffer = [0u32; BATCH_VALUES_MAX];
        let values = &mut buffer[..self.config.batch_values];
        fill_stream_values(&mut self.rng, values);
        self.streams[self.node].push(timestamp_us, values);
        self.stats.generated += values.len() as u64;
    }

    fn push_peer(&mut self, io: &mut impl Io, peer: NodeId) {
        loop {
            let space = io.send_space(peer);
            if space < BATCH_OVERHEAD_BYTES + 4 * PUSH_VALUES_MIN {
                return;
            }
            let Some(origin) = self.next_origin_for(peer) else {
                return;
            };
            let values_max = ((space - BATCH_OVERHEAD_BYTES) / 4).min(GOSSIP_BATCH_VALUES_MAX);
            if !self.push_chunk(io, peer, origin, values_max) {
                return;
            }
        }
    }

    /// Our own stream first, then the streams we relay to this peer, in origin order.
    fn next_origin_for(&self, peer: NodeId) -> Option<NodeId> {
        let view = &self.peers[peer];
        let pending = |origin: NodeId| view.cursor[origin] < self.streams[origin].have;
        if pending(self.node) {
            return Some(self.node);
        }
        (0..self.nodes()).find(|&origin| view.relaying[origin] && pending(origin))
    }

    fn push_chunk(&mut self, io: &mut impl Io, peer: NodeId, origin: NodeId, max: usize) -> bool {
        let stream = &self.streams[origin];
        let seq = self.peers[peer].cursor[origin];
        assert!(seq >= stream.base && seq < stream.have);
        let batch = stream.batch_at(seq);
        let count = ((batch.end() - seq) as usize).min(max);
        let values = stream.slice(seq, count);
        let message = Message::GossipBatch(GossipBatch {
            origin: origin as u16,
            timestamp_us: batch.timestamp_us,
            first_seq: seq,
            values: Items::Host(values),
        });
        if !io.send(peer, &message) {
            return false;
        }
        self.peers[peer].cursor[origin] += values.len() as u64;
        if origin != self.node {
            self.stats.relayed += values.len() as u64;
        }
        true
    }

    fn broadcast_state(&mut self, io: &mut impl Io) {
        for origin in 0..self.nodes() {
            let stream = &self.streams[origin];
            let connected = origin == self.node || self.peers[origin].up;
            let mut flags = if connected { ORIGIN_CONNECTED } else { 0 };
            if self.known_complete[origin] {
                flags |= ORIGIN_COMPLETE;
            }
            self.state[origin] = OriginState {
                have: stream.have,
                fin: stream.fin.unwrap_or(FIN_UNKNOWN),
                flags,
                send_end_us: self.send_end_us[origin],
            };
        }
        let message = Message::GossipState(GossipState {
            origins: Items::Host(&self.state),
        });
        for peer in self.others() {
            if self.peers[peer].up {
                // Refused only when the buffer is past its high-water mark; the next tick retries.
                io.send(peer, &message);
            }
        }
    }

    // ----- receiving -----

    fn receive_batch(&mut self, from: NodeId, batch: &GossipBatch<'_>) {
        let origin = batch.origin as usize;
        if origin >= self.nodes() || origin == self.node {
            debug!(
                "node {}: batch for origin {origin} from {from} ignored",
                self.node
            );
            return;
        }
        let stream = &mut self.streams[origin];
        let count = batch.values.len() as u64;
        let Some(end) = batch.first_seq.checked_add(count) else {
            return;
        };
        let end = end.min(stream.fin.unwrap_or(u64::MAX));
        if batch.first_seq > stream.have {
            self.stats.gaps += 1;
            return;
        }
        if end <= stream.have {
            self.stats.duplicates += count;
            return;
        }
        if stream
            .latest_timestamp_us
            .is_some_and(|latest| batch.timestamp_us < latest)
        {
            info!(
                "node {}: origin {origin}'s timestamps went back (from {from})",
                self.node
            );
            return;
        }
        let skip = (stream.have - batch.first_seq) as usize;
        let take = (end - stream.have) as usize;
        let mut scratch = [0u32; BATCH_VALUES_MAX];
        let mut at = skip;
        while at < skip + take {
            let chunk = &mut scratch[..(skip + take - at).min(BATCH_VALUES_MAX)];
            batch.values.copy_to(at, chunk);
            stream.push(batch.timestamp_us, chunk);
            at += chunk.len();
        }
        self.stats.received += take as u64;
        self.stats.duplicates += count - take as u64;
    }

    fn receive_state(&mut self, io: &mut impl Io, from: NodeId, state: &GossipState<'_>) {
        if state.origins.len() != self.nodes() {
            info!(
                "node {}: state from {from} has {} origins",
                self.node,
                state.origins.len()
            );
            return;
        }
        let now_us = io.now();
        let mut cut_moved = false;
        for origin in 0..self.nodes() {
            let reported = state.origins.get(origin);
            cut_moved |= self.learn_send_end(origin, reported.send_end_us, now_us);
            let view = &mut self.peers[from];
            if reported.have > view.reported[origin].have {
                view.progress_at_us[origin] = now_us;
            }
            view.reported[origin] = reported;
            view.cursor[origin] = view.cursor[origin].max(reported.have);
            if reported.flags & ORIGIN_COMPLETE != 0 {
                self.known_complete[origin] = true;
            }
            let stream = &mut self.streams[origin];
            if reported.fin != FIN_UNKNOWN && stream.fin.is_none() && origin != self.node {
                if reported.fin < stream.have {
                    info!(
                        "node {}: fin {} of origin {origin} is below our {}",
                        self.node, reported.fin, stream.have
                    );
                } else {
                    stream.fin = Some(reported.fin);
                }
            }
        }
        self.peers[from].reported_at_us = now_us;
        if cut_moved {
            self.move_send_end(io);
        }
    }

    // ----- relaying, folding, finishing -----

    fn update_relays(&mut self, now_us: Micros) {
        let stale_us = RELAY_STALE_TICKS * self.config.tick_us;
        for peer in self.others() {
            if !self.peers[peer].up {
                continue;
            }
            for origin in self.others().filter(|&origin| origin != peer) {
                let view = &self.peers[peer];
                let theirs = view.reported[origin].have;
                let relay = self.streams[origin].have > theirs
                    && (self.designated_relayer(peer, origin)
                        || (now_us - view.progress_at_us[origin] >= stale_us
                            && now_us - view.reported_at_us <= 2 * self.config.tick_us));
                let view = &mut self.peers[peer];
                if relay && !view.relaying[origin] {
                    debug!(
                        "node {}: relaying origin {origin} to {peer} from {theirs}",
                        self.node
                    );
                    view.cursor[origin] = theirs;
                }
                view.relaying[origin] = relay;
            }
        }
    }

    /// `peer` is cut off from `origin`; are we the lowest-numbered node connected to `peer`
    /// that holds more of `origin` than `peer` does?
    fn designated_relayer(&self, peer: NodeId, origin: NodeId) -> bool {
        let view = &self.peers[peer];
        if view.reported[origin].flags & ORIGIN_CONNECTED != 0 {
            return false;
        }
        let theirs = view.reported[origin].have;
        let candidate = (0..self.nodes()).find(|&relayer| {
            relayer != peer
                && relayer != origin
                && view.reported[relayer].flags & ORIGIN_CONNECTED != 0
                && if relayer == self.node {
                    self.streams[origin].have > theirs
                } else {
                    self.peers[relayer].reported[origin].have > theirs
                }
        });
        candidate == Some(self.node)
    }

    /// Folds every batch before the cut whose place in the total order is final, once the
    /// cut is.
    fn fold(&mut self) {
        if self.cut_final() {
            self.fold_before(self.cut_us);
        }
    }

    /// Folds every batch stamped before `cut_us` whose place in the total order is final.
    fn fold_before(&mut self, cut_us: u64) {
        loop {
            let mut next: Option<(u64, NodeId)> = None;
            for (origin, stream) in self.streams.iter().enumerate() {
                if stream.folded < stream.have && stream.fold_batch().timestamp_us < cut_us {
                    let key = (stream.fold_batch().timestamp_us, origin);
                    next = Some(next.map_or(key, |best| best.min(key)));
                }
            }
            let Some((timestamp_us, origin)) = next else {
                return;
            };
            let settled = self.streams.iter().enumerate().all(|(other, stream)| {
                other == origin
                    || stream.closed()
                    || stream.latest_timestamp_us.is_some_and(|latest| {
                        latest > timestamp_us || (latest == timestamp_us && other > origin)
                    })
            });
            if !settled {
                return;
            }
            let stream = &mut self.streams[origin];
            let batch_end = stream.fold_batch().end();
            let end = batch_end.min(stream.have);
            if self.config.record_folds {
                // A batch folded in pieces (it arrived in pieces) is one run: nothing else can
                // be folded between its pieces.
                match self.folds.last_mut() {
                    Some(last)
                        if (last.timestamp_us, last.origin) == (timestamp_us, origin)
                            && last.first_seq + last.count == stream.folded =>
                    {
                        last.count += end - stream.folded
                    }
                    _ => self.folds.push(FoldSegment {
                        timestamp_us,
                        origin,
                        first_seq: stream.folded,
                        count: end - stream.folded,
                    }),
                }
            }
            while stream.folded < end {
                let values = stream.slice(stream.folded, (end - stream.folded) as usize);
                self.checksum.fold(values);
                stream.folded += values.len() as u64;
            }
            if stream.folded == batch_end {
                stream.fold_batch += 1;
            }
        }
    }

    /// Drops what is folded and acknowledged by every peer that may need it from us.
    fn trim(&mut self) {
        for origin in 0..self.nodes() {
            let acknowledged = self
                .others()
                .filter(|&peer| peer != origin)
                .map(|peer| self.peers[peer].reported[origin].have)
                .min()
                .unwrap_or(u64::MAX);
            let stream = &mut self.streams[origin];
            stream.trim(acknowledged.min(stream.folded));
        }
    }

    /// Every stream is held up to the final cut: closed, or holding a batch at or after it
    /// (stamps rise along a stream, so nothing before the cut can follow).
    fn complete(&self) -> bool {
        self.cut_final()
            && self.streams.iter().all(|stream| {
                stream.closed()
                    || stream
                        .latest_timestamp_us
                        .is_some_and(|latest| latest >= self.cut_us)
            })
    }

    /// Prints once this node and every other is known to hold every stream complete. Knowledge
    /// of completeness spreads through everyone's state, so a node cut off from one peer at the
    /// end still learns from the others that the peer is done.
    fn try_finish(&mut self, io: &mut impl Io) {
        if self.phase != Phase::Settle || !self.complete() {
            return;
        }
        if !self.known_complete[self.node] {
            self.known_complete[self.node] = true;
            self.broadcast_state(io);
        }
        if self.known_complete.iter().all(|&complete| complete) {
            self.finish(io);
        }
    }

    /// Prints the result and stops: at once when everyone is known complete, or at the deadline
    /// with whatever this node holds (a warning says what was missing or unconfirmed).
    fn finish(&mut self, io: &mut impl Io) {
        let cut_us = self.cut_us;
        let incomplete: Vec<NodeId> = (0..self.nodes())
            .filter(|&origin| {
                let stream = &self.streams[origin];
                !stream.closed() && stream.latest_timestamp_us.is_none_or(|l| l < cut_us)
            })
            .collect();
        let unconfirmed: Vec<NodeId> = (0..self.nodes())
            .filter(|&node| !self.known_complete[node])
            .collect();
        for stream in &mut self.streams {
            stream.fin = Some(stream.have);
        }
        self.fold_before(cut_us);
        assert!(self.streams.iter().all(|stream| {
            stream.folded == stream.have || stream.fold_batch().timestamp_us >= cut_us
        }));
        self.phase = Phase::Done;
        self.result = Some((self.checksum, incomplete.is_empty()));
        io.output(format_args!("{}", self.checksum));
        self.broadcast_state(io);
        let elapsed_us = io.now() - self.started_us;
        if let Some(why) = self.why_small() {
            info!("node {}: warning: {why}", self.node);
        }
        if !incomplete.is_empty() {
            info!(
                "node {}: warning: deadline reached with the streams of {incomplete:?} unfinished \
                 (no end-of-stream seen, or not all of it held); printed what this node holds",
                self.node
            );
        } else if !unconfirmed.is_empty() {
            info!(
                "node {}: warning: deadline reached holding every stream, but nodes \
                 {unconfirmed:?} were never confirmed complete",
                self.node
            );
        }
        let stats = &self.stats;
        info!(
            "node {}: {} messages agreed after {:.3} s; generated {}, received {}, relayed {}, \
             duplicates {}, gaps {}, most held at once {}",
            self.node,
            self.checksum.count,
            elapsed_us as f64 / 1e6,
            stats.generated,
            stats.received,
            stats.relayed,
            stats.duplicates,
            stats.gaps,
            stats.retained_max
        );
        io.stop();
    }

    /// Why the result leaves nodes out or is small, when the start times are to blame: nodes
    /// never heard from, or heard from only after the cut (their streams count for nothing,
    /// and every stream held to one window until then).
    fn why_small(&self) -> Option<String> {
        let seconds = |at_us: u64| (at_us as f64 - self.started_us as f64) / 1e6;
        let unheard: Vec<NodeId> = (0..self.nodes())
            .filter(|&node| self.send_end_us[node] == SEND_END_UNKNOWN)
            .collect();
        if !unheard.is_empty() {
            return Some(format!(
                "never heard from nodes {unheard:?} (not started, or unreachable) by the \
                 deadline; the result covers the other nodes' messages before the cut at \
                 {:+.3} s",
                seconds(self.cut_us)
            ));
        }
        // Start times from send ends, assuming every node was given the same `--send-for`.
        let start_us = |node: NodeId| self.send_end_us[node] - self.config.send_for_us;
        let late: Vec<NodeId> = (0..self.nodes())
            .filter(|&node| start_us(node) >= self.cut_us)
            .collect();
        let last = *late.iter().max_by_key(|&&node| start_us(node))?;
        let first = (0..self.nodes()).min_by_key(|&node| start_us(node))?;
        let empty = if self.checksum.count == 0 {
            "the agreed cut is empty"
        } else {
            "every node sent at most one window before it started"
        };
        let (who, after) = if last == self.node {
            (String::from("this node"), format!("node {first}"))
        } else {
            (format!("node {last}"), String::from("this node"))
        };
        let gap_us = start_us(last) as f64
            - start_us(if last == self.node { first } else { self.node }) as f64;
        Some(format!(
            "{who} started {:.3} s after {after}, after the cut (the earliest end of sending, \
             {:+.3} s): nodes {late:?} add nothing and {empty}",
            gap_us / 1e6,
            seconds(self.cut_us)
        ))
    }

    /// One debug line per origin: what is held, folded and acknowledged by each peer.
    fn log_streams(&self, now_us: Micros) {
        let elapsed_ms = (now_us - self.started_us) / 1000;
        for (origin, stream) in self.streams.iter().enumerate() {
            let acked: Vec<u64> = self
                .peers
                .iter()
                .map(|peer| peer.reported[origin].have)
                .collect();
            debug!(
                "node {} at {elapsed_ms} ms, origin {origin}: base {} folded {} have {} \
                 acknowledged {acked:?}",
                self.node, stream.base, stream.folded, stream.have
            );
        }
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
