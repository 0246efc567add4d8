//! ring's state transfer: a worker that joins an epoch without the ring's state (new,
//! restarted, cut off, or missing an approved value) takes it from a settled member.
//!
//! The joiner asks the source the master named (every tick until it answers); the source
//! answers with a snapshot — its folded prefix and checksum and the approved values above it.
//! Any moment's snapshot will do: as a member of the epoch, the joiner receives everything
//! approved after it. Until the snapshot comes, the joiner buffers the epoch's messages.

use super::REPORT_LIST_MAX;
use super::worker::{APPROVED, Final, HAVE, Phase, Slot, Worker};
use crate::info;
use crate::node::{Io, NodeId};
use crate::roles::checksum::Checksum;
use crate::wire::{IndexValue, Items, Message, NO_NODE, RingSync, RingSyncRequest};

impl Worker {
    /// A joiner asks the epoch's sync source for the ring's state (again every tick until it
    /// comes: the source may not be reachable yet).
    pub(super) fn request_sync(&mut self, io: &mut impl Io) {
        let request = Message::RingSyncRequest(RingSyncRequest { epoch: self.epoch });
        let source = if self.sync_from == NO_NODE as NodeId || self.sync_from == self.node {
            self.members
                .iter()
                .copied()
                .find(|&member| member != self.node)
        } else {
            Some(self.sync_from)
        };
        if let Some(source) = source {
            io.send(source, &request);
        }
    }

    /// Answers a joiner with a snapshot: the folded state and the approved values above it.
    /// Any moment's snapshot will do; the joiner's membership in this epoch brings it the rest.
    pub(super) fn send_sync(&mut self, io: &mut impl Io, to: NodeId) {
        self.entries.clear();
        for (offset, slot) in self.slots.iter().enumerate() {
            if slot.flags & APPROVED != 0 && self.entries.len() < REPORT_LIST_MAX {
                let index = self.prefix + 1 + offset as u64;
                self.entries.push(IndexValue {
                    index,
                    value: slot.value,
                });
            }
        }
        let sync = Message::RingSync(RingSync {
            epoch: self.epoch,
            prefix: self.prefix,
            count: self.checksum.count,
            sum: self.checksum.sum,
            entries: Items::Host(&self.entries),
        });
        if io.send(to, &sync) {
            info!(
                "worker {}: synced worker {to} at prefix {}",
                self.node, self.prefix
            );
        }
    }

    pub(super) fn receive_sync(&mut self, io: &mut impl Io, sync: &RingSync<'_>) {
        if !self.awaiting_sync || sync.epoch != self.epoch {
            return;
        }
        self.prefix = sync.prefix;
        self.checksum = Checksum {
            count: sync.count,
            sum: sync.sum,
        };
        self.slots.clear();
        for entry in sync.entries.iter() {
            if let Some(slot) = self.slot(entry.index) {
                *slot = Slot {
                    value: entry.value,
                    flags: HAVE | APPROVED,
                    ..Slot::default()
                };
            }
        }
        self.awaiting_sync = false;
        self.settled = true;
        info!("worker {}: synced at prefix {}", self.node, self.prefix);
        self.settle_epoch();
        self.start_generating(io);
        if self.phase == Phase::Closing {
            self.finals[self.node] = Final::Prefix(self.prefix);
            self.send_final(io, None);
            self.try_close(io);
        }
    }
}
