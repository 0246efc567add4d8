//! ring's end of the run: the workers agree on the final prefix, print it, and linger.
//!
//! At the stop time a worker closes: it stops folding and tells every member its approved
//! prefix (its *final*). Once it knows every member's final — or a member tells it the agreed
//! one, or `CLOSE_WAIT_US` passes — it folds to the largest, prints `SlaveResult`, and sends
//! the master its result. The largest final is one every member holds, since an index is
//! approved only once every member confirmed holding it. A worker that finds the ring went on
//! in a later epoch without it prints nothing. After printing, a worker lingers (at most
//! `LINGER_US`) until the master has its result and every member has said it agrees.

use super::worker::{APPROVED, Final, HAVE, Phase, Worker};
use super::{CLOSE_WAIT_US, LINGER_US, TIMER_CLOSE, TIMER_LINGER, WORKERS_MAX};
use crate::info;
use crate::node::{Io, NodeId};
use crate::roles::checksum::Decimal;
use crate::wire::{Items, Message, RingReport, RingResult};

impl Worker {
    /// The end of the run: stop folding, tell every member our final prefix, and print once
    /// every member's is known (or `CLOSE_WAIT_US` has passed).
    pub(super) fn close(&mut self, io: &mut impl Io) {
        self.stop = None;
        if self.members.is_empty() {
            return self.finish(io); // never in the ring: no result
        }
        self.fold(io);
        self.phase = Phase::Closing;
        self.waiting.clear();
        if self.settled && !self.awaiting_sync {
            self.finals[self.node] = Final::Prefix(self.prefix);
        }
        self.send_final(io, None);
        io.set_timer(CLOSE_WAIT_US, TIMER_CLOSE);
        self.try_close(io);
    }

    /// Our final prefix, to every other member (again every tick while we close); or, once we
    /// know it, the `agreed` one, which lets a member that misses some final finish too.
    pub(super) fn send_final(&mut self, io: &mut impl Io, agreed: Option<u64>) {
        for position in 0..self.members.len() {
            let member = self.members[position];
            if member != self.node {
                self.send_final_to(io, member, agreed);
            }
        }
    }

    fn send_final_to(&mut self, io: &mut impl Io, to: NodeId, agreed: Option<u64>) {
        let (settled, prefix) = match (agreed, self.finals[self.node]) {
            (Some(agreed), _) => (true, agreed),
            (None, Final::Prefix(prefix)) => (true, prefix),
            (None, Final::Unknown | Final::Unsettled) => (false, 0),
        };
        let report = Message::RingReport(RingReport {
            epoch: self.epoch,
            frozen: self.frozen,
            settled,
            closing: true,
            agreed: agreed.is_some(),
            prefix,
            approved: Items::Host(&[]),
        });
        io.send(to, &report);
    }

    pub(super) fn receive_final(
        &mut self,
        io: &mut impl Io,
        from: NodeId,
        report: &RingReport<'_>,
    ) {
        if report.epoch > self.epoch {
            // Either its epoch's announcement has not reached us yet, or — if we close too and
            // it holds the ring's state — the ring re-formed without us (cut off or paused past
            // the end). A joiner without state tells us nothing.
            if report.settled {
                self.closing_epoch_max = self.closing_epoch_max.max(report.epoch);
            }
            return self.try_close(io);
        }
        if report.epoch < self.epoch {
            // A worker left behind in an older epoch: tell it (our final is of a later epoch).
            if self.phase == Phase::Closing && from < self.config.workers {
                self.send_final_to(io, from, self.agreed);
            }
            return;
        }
        if self.member_mask & (1 << from) == 0 {
            return;
        }
        if report.agreed {
            self.agreed = Some(report.prefix);
            self.agreed_from |= 1 << from;
        } else if report.settled {
            self.finals[from] = Final::Prefix(report.prefix);
        } else {
            self.finals[from] = Final::Unsettled;
        }
        if report.settled && !self.frozen && self.phase != Phase::Closing {
            self.approve_through(report.prefix);
            self.fold(io);
        }
        self.try_close(io);
    }

    pub(super) fn try_close(&mut self, io: &mut impl Io) {
        let answered = self
            .members
            .iter()
            .all(|&member| self.finals[member] != Final::Unknown);
        let known = answered || self.agreed.is_some() || self.left_behind();
        if self.phase == Phase::Closing && known {
            self.complete_close(io);
        }
    }

    /// Closing, and a member of a later epoch is closing too: we will join no later epoch, so
    /// what we hold is not the ring's result.
    fn left_behind(&self) -> bool {
        self.phase == Phase::Closing && self.closing_epoch_max > self.epoch
    }

    /// Folds to the largest final prefix heard and prints.
    pub(super) fn complete_close(&mut self, io: &mut impl Io) {
        if self.left_behind() {
            info!(
                "worker {}: the ring went on in a later epoch without this worker; no result",
                self.node
            );
            self.phase = Phase::Done;
            io.stop();
            return;
        }
        let silent: Vec<NodeId> = self
            .members
            .iter()
            .copied()
            .filter(|&member| self.finals[member] == Final::Unknown)
            .collect();
        if !silent.is_empty() && self.agreed.is_none() {
            info!(
                "worker {}: warning: no final prefix from members {silent:?}; printing the \
                 largest of the others'",
                self.node
            );
        }
        let largest = self
            .members
            .iter()
            .filter_map(|&member| match self.finals[member] {
                Final::Prefix(prefix) => Some(prefix),
                Final::Unknown | Final::Unsettled => None,
            })
            .max();
        if silent.is_empty() && self.agreed.is_none() {
            self.agreed = largest;
        }
        // With every member's final known (to us or to whoever told us), tell the others: some
        // may still miss a final that can no longer come. They hear it again every tick until
        // they say they agree too (see `linger`).
        self.send_final(io, self.agreed);
        let agreed = self.agreed.or(largest);
        if let (Some(agreed), Final::Prefix(_)) = (agreed, self.finals[self.node]) {
            self.approve_through(agreed);
            self.fold_through(agreed);
            if self.prefix < agreed {
                info!(
                    "worker {}: warning: the members agreed on {agreed} values but this worker \
                     holds only {}",
                    self.node, self.prefix
                );
            }
        }
        self.finish(io);
    }

    /// Folds the approved prefix up to `index` and no further.
    fn fold_through(&mut self, index: u64) {
        while self.prefix < index
            && self
                .slots
                .front()
                .is_some_and(|slot| slot.flags & APPROVED != 0)
        {
            let slot = self.slots.pop_front().expect("front exists");
            assert!(slot.flags & HAVE != 0, "an approved index without a value");
            self.checksum.fold(&[slot.value]);
            self.prefix += 1;
        }
    }

    fn finish(&mut self, io: &mut impl Io) {
        self.phase = Phase::Done;
        if !self.settled {
            // Restarted (or cut off) and never given the ring's state: any number printed
            // would be wrong, so print none.
            info!(
                "worker {}: never joined the ring's state; no result",
                self.node
            );
            io.stop();
            return;
        }
        self.result = Some(self.checksum);
        io.output(format_args!(
            "SlaveResult {} {}",
            self.checksum.count,
            Decimal(self.checksum.sum)
        ));
        let result = RingResult {
            count: self.checksum.count,
            sum: self.checksum.sum,
            epoch: self.epoch,
        };
        info!(
            "worker {}: {} approved after {} epochs; generated {}, received {}, resent {}",
            self.node,
            self.checksum.count,
            self.stats.epochs,
            self.stats.generated,
            self.stats.received,
            self.stats.resent
        );
        if !self.hops.is_empty() {
            info!(
                "worker {}: hop latency p50 {} us p99 {} us ({} hops)",
                self.node,
                self.hops.value_at_quantile(0.5),
                self.hops.value_at_quantile(0.99),
                self.hops.len()
            );
        }
        self.result_unsent = !io.send(self.config.master(), &Message::RingResult(result));
        io.set_timer(LINGER_US, TIMER_LINGER);
        self.linger(io);
    }

    /// After printing, a worker stays (up to `LINGER_US`) until the master has its result and
    /// every member has said it agrees: a member cut off at the very end may still be waiting
    /// for the agreed prefix, and the master for our result.
    pub(super) fn linger(&mut self, io: &mut impl Io) {
        if self.result_unsent
            && let Some(result) = self.result
        {
            let result = RingResult {
                count: result.count,
                sum: result.sum,
                epoch: self.epoch,
            };
            self.result_unsent = !io.send(self.config.master(), &Message::RingResult(result));
        }
        let mut waiting = false;
        if let Some(agreed) = self.agreed {
            for position in 0..self.members.len() {
                let member = self.members[position];
                if member != self.node && self.agreed_from & (1 << member) == 0 {
                    self.send_final_to(io, member, Some(agreed));
                    waiting = true;
                }
            }
        }
        if !waiting && !self.result_unsent {
            io.stop();
        }
    }

    /// A closing report while we linger: note who agrees; answer who does not yet.
    pub(super) fn receive_final_after_done(
        &mut self,
        io: &mut impl Io,
        from: NodeId,
        report: &RingReport<'_>,
    ) {
        if from < WORKERS_MAX && report.agreed && report.epoch == self.epoch {
            self.agreed_from |= 1 << from;
        }
        if report.epoch < self.epoch && from < self.config.workers {
            // Left behind in an older epoch: our final tells it so.
            self.send_final_to(io, from, self.agreed);
        }
        self.linger(io);
    }
}
