//! Folding batches into the checksum once their place in the order is final, trimming what
//! everyone has, and finishing: at once when all are complete, or at the deadline.

use super::*;
use crate::{debug, info};

impl Gossip {
    /// Folds every batch before the cut whose place in the total order is final, once the
    /// cut is.
    pub(super) fn fold(&mut self) {
        if self.cut_final() {
            self.fold_before(self.cut_us);
        }
    }

    /// Folds every batch stamped before `cut_us` whose place in the total order is final.
    pub(super) fn fold_before(&mut self, cut_us: u64) {
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
    pub(super) fn trim(&mut self) {
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
    pub(super) fn complete(&self) -> bool {
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
    pub(super) fn try_finish(&mut self, io: &mut impl Io) {
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
    pub(super) fn finish(&mut self, io: &mut impl Io) {
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
    pub(super) fn why_small(&self) -> Option<String> {
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
    pub(super) fn log_streams(&self, now_us: Micros) {
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
}
