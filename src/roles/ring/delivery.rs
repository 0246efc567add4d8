//! ring's delivery: how a value becomes part of every worker's result.
//!
//! A generator draws a value for its turn and broadcasts it; every member confirms it; once
//! all have, the generator broadcasts the approval; every worker folds its contiguous approved
//! prefix. Turns whose slot is out of range wait until folding frees room. Reports (the
//! approved prefix, every tick) and resends (of unconfirmed values) keep a lost message from
//! stalling anyone.

use super::worker::{APPROVED, HAVE, MINE, Phase, Slot, Worker};
use super::{HOP_US_MAX, REPORT_LIST_MAX, RESEND_US, SLOTS_MAX, WINDOW_MAX, WORKERS_MAX};
use crate::node::{Io, NodeId};
use crate::wire::{Items, Message, RingApprove, RingConfirm, RingReport, RingValue};
use rand_xoshiro::rand_core::Rng;

impl Worker {
    pub(super) fn generate(&mut self, io: &mut impl Io, k: u64) {
        if self.phase != Phase::Send || self.frozen {
            return;
        }
        let index = self.index_of(k);
        let now_us = io.now();
        let (node, epoch) = (self.node, self.epoch);
        if self.slot(index).is_none() {
            if index > self.prefix && self.waiting.len() < WINDOW_MAX as usize {
                self.waiting.push_back(k);
            }
            return;
        }
        // Drawn only once the value has a slot: a generator's n-th value is its n-th turn's,
        // whatever the timing (what lets a test regenerate the sequence from the seed).
        let value = self.rng.next_u32();
        let slot = self.slot(index).expect("checked above");
        *slot = Slot {
            value,
            flags: HAVE | MINE,
            epoch,
            k,
            confirms: 1 << node,
            sent_at_us: now_us,
        };
        self.stats.generated += 1;
        let message = Message::RingValue(RingValue {
            epoch: self.epoch,
            k,
            index,
            value,
            sent_us: now_us,
        });
        for &member in &self.members {
            if member != node {
                io.send(member, &message);
            }
        }
        if self.members.len() == 1 {
            // Alone in the ring: our own value is our parent's. Deliver it to ourselves so the
            // next turn comes from the event loop, not from recursion.
            io.send(node, &message);
            self.approve(io, index);
        }
    }

    pub(super) fn receive_value(&mut self, io: &mut impl Io, from: NodeId, value: RingValue) {
        if self.frozen {
            return; // a frozen member takes no part in approving anything more
        }
        let confirm = Message::RingConfirm(RingConfirm {
            epoch: self.epoch,
            k: value.k,
        });
        let own = from == self.node;
        if own {
            // Alone in the ring: our own value comes back to us as our parent's (it was stored,
            // and approved, when we generated it — and may be folded already): the next turn.
            if self.members.len() == 1 && value.epoch == self.epoch {
                self.generate(io, value.k + self.window);
            }
            return;
        }
        let Some(slot) = self.slot(value.index) else {
            if value.index <= self.prefix {
                io.send(from, &confirm); // a resend of something long approved
            }
            return;
        };
        let first = slot.flags & HAVE == 0;
        if first {
            *slot = Slot {
                value: value.value,
                flags: HAVE,
                k: value.k,
                ..Slot::default()
            };
            self.stats.received += 1;
        }
        io.send(from, &confirm);
        let parent_turn = self.position_of(value.k)
            == (self.position + self.members.len() - 1) % self.members.len()
            && from == self.parent();
        if first && parent_turn {
            // A hop: the parent sent it, we take the next turn now.
            let latency = io.now().saturating_sub(value.sent_us).max(1);
            let _ = self.hops.record(latency.min(HOP_US_MAX));
        }
        if first && parent_turn {
            self.generate(io, value.k + self.window);
        }
    }

    pub(super) fn receive_confirm(&mut self, io: &mut impl Io, from: NodeId, confirm: RingConfirm) {
        if from >= WORKERS_MAX {
            return;
        }
        let index = self.index_of(confirm.k);
        let (frozen, mask) = (self.frozen, self.member_mask);
        let Some(slot) = self.slot(index) else { return };
        if slot.flags & MINE == 0 || slot.epoch != confirm.epoch || slot.k != confirm.k {
            return;
        }
        slot.confirms |= 1 << from;
        if !frozen && slot.flags & APPROVED == 0 && slot.confirms & mask == mask {
            self.approve(io, index);
        }
    }

    fn approve(&mut self, io: &mut impl Io, index: u64) {
        if let Some(slot) = self.slot(index) {
            slot.flags |= APPROVED;
        }
        let message = Message::RingApprove(RingApprove {
            epoch: self.epoch,
            index,
        });
        for &member in &self.members {
            // A lone member tells itself, so that every approval is a message on the wire
            // (what the simulator's checker sees); receiving it changes nothing.
            if member != self.node || self.members.len() == 1 {
                io.send(member, &message);
            }
        }
        self.fold(io);
    }

    pub(super) fn approve_through(&mut self, index: u64) {
        let covered = index
            .saturating_sub(self.prefix)
            .min(self.slots.len() as u64);
        for slot in self.slots.iter_mut().take(covered as usize) {
            if slot.flags & HAVE != 0 {
                slot.flags |= APPROVED;
            }
        }
    }

    /// Folds the contiguous approved prefix, then lets waiting turns into the freed room. A
    /// closing worker folds nothing more until the members agree on where to stop.
    pub(super) fn fold(&mut self, io: &mut impl Io) {
        if self.phase == Phase::Closing {
            return;
        }
        while self
            .slots
            .front()
            .is_some_and(|slot| slot.flags & APPROVED != 0)
        {
            let slot = self.slots.pop_front().expect("front exists");
            assert!(slot.flags & HAVE != 0, "an approved index without a value");
            self.checksum.fold(&[slot.value]);
            self.prefix += 1;
        }
        while let Some(&k) = self.waiting.front() {
            if self.index_of(k) > self.prefix + SLOTS_MAX as u64 {
                break;
            }
            self.waiting.pop_front();
            self.generate(io, k);
        }
    }

    /// Tells the master (and the other members) what we know is approved. A worker without a
    /// settled state knows nothing trustworthy, and says so: prefix 0, nothing listed.
    pub(super) fn report(&mut self, io: &mut impl Io) {
        self.list.clear();
        let trusted = self.settled && !self.awaiting_sync;
        for (offset, slot) in self.slots.iter().enumerate() {
            if trusted && slot.flags & APPROVED != 0 && self.list.len() < REPORT_LIST_MAX {
                self.list.push(self.prefix + 1 + offset as u64);
            }
        }
        let report = Message::RingReport(RingReport {
            epoch: self.epoch,
            frozen: self.frozen,
            settled: trusted,
            closing: false,
            agreed: false,
            prefix: if trusted { self.prefix } else { 0 },
            approved: Items::Host(&self.list),
        });
        io.send(self.config.master(), &report);
        if self.epoch > 0 && !self.frozen && !self.awaiting_sync {
            for &member in &self.members {
                if member != self.node {
                    io.send(member, &report);
                }
            }
        }
    }

    /// Resends our unconfirmed values to the members that have not confirmed them.
    pub(super) fn resend(&mut self, io: &mut impl Io, only: Option<NodeId>) {
        if self.awaiting_sync {
            return;
        }
        let now_us = io.now();
        let (epoch, prefix, mask) = (self.epoch, self.prefix, self.member_mask);
        for (offset, slot) in self.slots.iter_mut().enumerate() {
            let unconfirmed = mask & !slot.confirms;
            let current = slot.flags & MINE != 0 && slot.epoch == epoch;
            if !current || slot.flags & APPROVED != 0 || unconfirmed == 0 {
                continue;
            }
            if only.is_none() && now_us < slot.sent_at_us + RESEND_US {
                continue;
            }
            slot.sent_at_us = now_us;
            let index = prefix + 1 + offset as u64;
            let message = Message::RingValue(RingValue {
                epoch,
                k: slot.k,
                index,
                value: slot.value,
                sent_us: now_us,
            });
            for &member in &self.members {
                let wanted = only.is_none_or(|peer| peer == member);
                if wanted && unconfirmed & (1 << member) != 0 && io.send(member, &message) {
                    self.stats.resent += 1;
                }
            }
        }
    }
}
