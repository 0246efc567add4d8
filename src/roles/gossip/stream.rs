//! What a node holds of one origin's stream: its values in order (a deque trimmed from the
//! front once folded and acknowledged), the batches that stamp them, and how far the fold has
//! gone.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug)]
pub(super) struct Batch {
    pub(super) timestamp_us: u64,
    pub(super) first_seq: u64,
    pub(super) count: u64,
}

impl Batch {
    pub(super) fn end(&self) -> u64 {
        self.first_seq + self.count
    }
}

/// What this node holds of one origin's stream.
#[derive(Default)]
pub(super) struct Stream {
    /// Values `[base, have)`; `values[0]` is seq `base`.
    pub(super) values: VecDeque<u32>,
    /// Covers `[base, have)` (its first batch may start before `base`).
    pub(super) batches: VecDeque<Batch>,
    pub(super) base: u64,
    pub(super) have: u64,
    pub(super) fin: Option<u64>,
    /// Messages `[0, folded)` are in the checksum.
    pub(super) folded: u64,
    /// Index in `batches` of the batch holding seq `folded` (when `folded < have`): the fold
    /// walks batches in order, so it keeps its place instead of searching.
    pub(super) fold_batch: usize,
    pub(super) latest_timestamp_us: Option<u64>,
}

impl Stream {
    pub(super) fn with_capacity(values: usize) -> Stream {
        Stream {
            values: VecDeque::with_capacity(values),
            batches: VecDeque::with_capacity(values / 64),
            ..Stream::default()
        }
    }

    pub(super) fn closed(&self) -> bool {
        self.fin == Some(self.have)
    }

    /// The batch holding seq `folded`, which must be below `have`.
    pub(super) fn fold_batch(&self) -> &Batch {
        let batch = &self.batches[self.fold_batch];
        debug_assert!(batch.first_seq <= self.folded && self.folded < batch.end());
        batch
    }

    pub(super) fn batch_at(&self, seq: u64) -> &Batch {
        let index = self.batches.partition_point(|batch| batch.end() <= seq);
        &self.batches[index]
    }

    /// Up to `count` values from `seq` on, as one contiguous slice.
    pub(super) fn slice(&self, seq: u64, count: usize) -> &[u32] {
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
    pub(super) fn push(&mut self, timestamp_us: u64, values: &[u32]) {
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
    pub(super) fn trim(&mut self, seq: u64) {
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
