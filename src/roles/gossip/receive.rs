//! Receiving batches and states, and deciding what to relay to peers cut off from an origin.

use super::*;
use crate::wire::{GossipBatch, GossipState, ORIGIN_COMPLETE, ORIGIN_CONNECTED};
use crate::{debug, info};

impl Gossip {
    pub(super) fn receive_batch(&mut self, from: NodeId, batch: &GossipBatch<'_>) {
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

    pub(super) fn receive_state(
        &mut self,
        io: &mut impl Io,
        from: NodeId,
        state: &GossipState<'_>,
    ) {
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

    pub(super) fn update_relays(&mut self, now_us: Micros) {
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
    pub(super) fn designated_relayer(&self, peer: NodeId, origin: NodeId) -> bool {
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
}
