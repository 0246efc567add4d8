//! Sending: generating our stream within the windows, pushing streams to each peer as its
//! buffer drains, and the per-tick state that acknowledges, watermarks and announces ends.

use super::*;
use crate::roles::checksum::fill_stream_values;
use crate::wire::{
    GOSSIP_BATCH_VALUES_MAX, GossipBatch, GossipState, Items, ORIGIN_COMPLETE, ORIGIN_CONNECTED,
};

impl Gossip {
    /// Pushes pending data to every peer with room, generating more while a peer can take it.
    pub(super) fn pump(&mut self, io: &mut impl Io) {
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
    pub(super) fn may_generate(&self, now_us: Micros) -> bool {
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

    pub(super) fn generate(&mut self, now_us: Micros) {
        let timestamp_us = now_us.max(self.last_timestamp_us + 1);
        self.last_timestamp_us = timestamp_us;
        let mut buffer = [0u32; BATCH_VALUES_MAX];
        let values = &mut buffer[..self.config.batch_values];
        fill_stream_values(&mut self.rng, values);
        self.streams[self.node].push(timestamp_us, values);
        self.stats.generated += values.len() as u64;
    }

    pub(super) fn push_peer(&mut self, io: &mut impl Io, peer: NodeId) {
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
    pub(super) fn next_origin_for(&self, peer: NodeId) -> Option<NodeId> {
        let view = &self.peers[peer];
        let pending = |origin: NodeId| view.cursor[origin] < self.streams[origin].have;
        if pending(self.node) {
            return Some(self.node);
        }
        (0..self.nodes()).find(|&origin| view.relaying[origin] && pending(origin))
    }

    pub(super) fn push_chunk(
        &mut self,
        io: &mut impl Io,
        peer: NodeId,
        origin: NodeId,
        max: usize,
    ) -> bool {
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

    pub(super) fn broadcast_state(&mut self, io: &mut impl Io) {
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
}
