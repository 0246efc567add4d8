//! ring's worker: its state, its event handlers, and how it enters an epoch.
//!
//! A worker holds the folded prefix (`prefix`, `checksum`) and a window of slots past it, one
//! per index, each with its value and whether it is held, approved and our own. The handlers
//! here route each message to the part that deals with it — delivery (`delivery.rs`), state
//! transfer (`sync.rs`), the end of the run (`closing.rs`) — and check the worker's invariants
//! after each one. Entering an epoch (`begin_epoch`) is here: it decides whether the worker
//! keeps, settles or syncs its state.

use std::collections::VecDeque;

use rand_xoshiro::Xoshiro256PlusPlus;

use super::{
    Config, EARLY_MAX, HOP_US_MAX, REPORT_LIST_MAX, RESEND_US, SLOTS_MAX, TIMER_CLOSE,
    TIMER_LINGER, TIMER_SEND_END, TIMER_STOP, TIMER_TICK, WINDOW_MAX, WORKERS_MAX,
};
use crate::node::{Io, Micros, NodeId, Timer, TimerKey};
use crate::roles::checksum::{Checksum, stream_rng};
use crate::wire::{IndexValue, Message, RingApprove, RingConfirm, RingEpoch, RingValue};
use crate::{debug, info};
use hdrhistogram::Histogram;

pub(super) const HAVE: u8 = 1;
pub(super) const APPROVED: u8 = 2;
pub(super) const MINE: u8 = 4;

#[derive(Clone, Copy, Default)]
pub(super) struct Slot {
    pub(super) value: u32,
    pub(super) flags: u8,
    /// The epoch the value was generated in, and its sequence position there.
    pub(super) epoch: u32,
    pub(super) k: u64,
    /// For our own values: members that hold it (bit per node id).
    pub(super) confirms: u64,
    pub(super) sent_at_us: Micros,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Idle,
    Send,
    Grace,
    /// The run is over; exchanging final prefixes with the other members.
    Closing,
    Done,
}

/// What a closing member said its final approved prefix is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Final {
    Unknown,
    /// It has no state of the ring (restarted, never synced): it counts for nothing.
    Unsettled,
    Prefix(u64),
}

/// A message of the next epoch that came before that epoch's `RingEpoch` (or before the
/// `RingSync` a joiner waits for).
#[derive(Clone, Copy)]
enum Early {
    Value(NodeId, RingValue),
    Confirm(NodeId, RingConfirm),
    Approve(RingApprove),
}

#[derive(Clone, Copy, Debug, Default)]
pub struct WorkerStats {
    pub generated: u64,
    pub received: u64,
    pub resent: u64,
    pub epochs: u32,
}

pub struct Worker {
    pub(super) config: Config,
    pub(super) node: NodeId,
    pub(super) rng: Xoshiro256PlusPlus,
    pub(super) phase: Phase,
    pub(super) epoch: u32,
    pub(super) frozen: bool,
    pub(super) members: Vec<NodeId>,
    pub(super) member_mask: u64,
    pub(super) position: usize,
    pub(super) window: u64,
    missing: Vec<u64>,
    next: u64,
    pub(super) awaiting_sync: bool,
    /// The member that holds the state a joiner of this epoch takes.
    pub(super) sync_from: NodeId,
    /// Whether this worker's state is valid: it joined the ring from the start or synced.
    pub(super) settled: bool,
    /// Indices `1..=prefix` are folded into `checksum`.
    pub(super) prefix: u64,
    pub(super) checksum: Checksum,
    /// Slot `i` holds index `prefix + 1 + i`.
    pub(super) slots: VecDeque<Slot>,
    /// Positions whose turn came while their slot was out of range.
    pub(super) waiting: VecDeque<u64>,
    early: Vec<Early>,
    /// Per worker: its final prefix, once it closes.
    pub(super) finals: Vec<Final>,
    /// The agreed prefix, from a member that heard every final.
    pub(super) agreed: Option<u64>,
    /// The latest epoch a closing member has reported from: later than ours once we close, the
    /// ring went on without us.
    pub(super) closing_epoch_max: u32,
    /// Printed, but the master was not connected to take the result.
    pub(super) result_unsent: bool,
    /// Members that told us the agreed prefix (bit per node id).
    pub(super) agreed_from: u64,
    send_end: Option<TimerKey>,
    pub(super) stop: Option<TimerKey>,
    next_resend_us: Micros,
    /// Scratch for reports and syncs; sized once.
    pub(super) list: Vec<u64>,
    pub(super) entries: Vec<IndexValue>,
    pub stats: WorkerStats,
    /// Hop latencies (parent's send to our turn), µs.
    pub hops: Histogram<u64>,
    pub result: Option<Checksum>,
}

impl Worker {
    pub fn new(config: Config, node: NodeId) -> Worker {
        assert!(node < config.workers && config.workers <= WORKERS_MAX);
        Worker {
            rng: stream_rng(config.seed, node),
            node,
            phase: Phase::Idle,
            epoch: 0,
            frozen: false,
            members: Vec::with_capacity(config.workers),
            member_mask: 0,
            position: 0,
            window: 1,
            missing: Vec::new(),
            next: 1,
            awaiting_sync: false,
            sync_from: 0,
            settled: false,
            prefix: 0,
            checksum: Checksum::default(),
            slots: VecDeque::with_capacity(SLOTS_MAX),
            waiting: VecDeque::with_capacity(WINDOW_MAX as usize),
            early: Vec::with_capacity(1024),
            finals: vec![Final::Unknown; config.workers],
            agreed: None,
            closing_epoch_max: 0,
            result_unsent: false,
            agreed_from: 0,
            send_end: None,
            stop: None,
            next_resend_us: 0,
            list: Vec::with_capacity(REPORT_LIST_MAX),
            entries: Vec::new(),
            stats: WorkerStats::default(),
            hops: Histogram::new_with_bounds(1, HOP_US_MAX, 2).expect("valid bounds"),
            result: None,
            config,
        }
    }

    /// The folded prefix length and checksum (the result once stopped).
    pub fn folded(&self) -> Checksum {
        self.checksum
    }

    /// The epoch this worker is in.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Holds the ring's state: it was there from the start, or was synced after joining.
    pub fn settled(&self) -> bool {
        self.settled
    }

    pub(super) fn index_of(&self, k: u64) -> u64 {
        match self.missing.get(k as usize) {
            Some(&index) => index,
            None => self.next + (k - self.missing.len() as u64),
        }
    }

    pub(super) fn position_of(&self, k: u64) -> usize {
        ((k / self.window) % self.members.len() as u64) as usize
    }

    pub(super) fn parent(&self) -> NodeId {
        let count = self.members.len();
        self.members[(self.position + count - 1) % count]
    }

    pub(super) fn slot(&mut self, index: u64) -> Option<&mut Slot> {
        if index <= self.prefix || index > self.prefix + SLOTS_MAX as u64 {
            return None;
        }
        let offset = (index - self.prefix - 1) as usize;
        if offset >= self.slots.len() {
            self.slots.resize(offset + 1, Slot::default());
        }
        Some(&mut self.slots[offset])
    }

    pub(super) fn on_start(&mut self, io: &mut impl Io) {
        io.set_timer(self.config.tick_us, TIMER_TICK);
    }

    pub(super) fn on_message(&mut self, io: &mut impl Io, from: NodeId, message: Message<'_>) {
        if self.phase == Phase::Done {
            if let Message::RingReport(report) = message
                && report.closing
            {
                self.receive_final_after_done(io, from, &report);
            }
            return;
        }
        match message {
            Message::RingEpoch(epoch) if from == self.config.master() => {
                self.begin_epoch(io, &epoch)
            }
            // A freeze stops us in any epoch up to its own: a member left behind in an older
            // epoch must stop approving too before its state can be used.
            Message::RingFreeze(freeze) if self.epoch > 0 && freeze.epoch >= self.epoch => {
                self.frozen = true;
                self.report(io);
            }
            Message::RingSync(sync) => self.receive_sync(io, &sync),
            Message::RingSyncRequest(request)
                if request.epoch == self.epoch && !self.awaiting_sync && self.settled =>
            {
                self.send_sync(io, from)
            }
            Message::RingValue(value) => self.dispatch(io, Early::Value(from, value)),
            Message::RingConfirm(confirm) => self.dispatch(io, Early::Confirm(from, confirm)),
            Message::RingApprove(approve) => self.dispatch(io, Early::Approve(approve)),
            Message::RingReport(report) if report.closing => self.receive_final(io, from, &report),
            Message::RingReport(report) if report.epoch == self.epoch && !self.frozen => {
                self.approve_through(report.prefix);
                self.fold(io);
            }
            _ => {}
        }
        self.invariants();
    }

    pub(super) fn on_timer(&mut self, io: &mut impl Io, timer: Timer) {
        if self.phase == Phase::Done {
            match timer {
                TIMER_LINGER => io.stop(),
                TIMER_TICK => {
                    self.linger(io);
                    io.set_timer(self.config.tick_us, TIMER_TICK);
                }
                _ => {}
            }
            return;
        }
        match timer {
            TIMER_TICK if self.phase == Phase::Closing => {
                if self.awaiting_sync {
                    self.request_sync(io);
                }
                self.send_final(io, None);
                io.set_timer(self.config.tick_us, TIMER_TICK);
            }
            TIMER_TICK => {
                if self.awaiting_sync {
                    self.request_sync(io);
                }
                // The report is also the heartbeat that tells the master our epoch (a fresh
                // worker's 0 included), so it is sent whatever our state.
                self.report(io);
                if self.epoch > 0 && io.now() >= self.next_resend_us {
                    self.next_resend_us = io.now() + RESEND_US;
                    self.resend(io, None);
                }
                io.set_timer(self.config.tick_us, TIMER_TICK);
            }
            TIMER_SEND_END if self.phase == Phase::Send => {
                self.send_end = None;
                self.phase = Phase::Grace;
                self.waiting.clear();
            }
            TIMER_STOP => self.close(io),
            TIMER_CLOSE if self.phase == Phase::Closing => self.complete_close(io),
            _ => {}
        }
        self.invariants();
    }

    pub(super) fn on_peer_up(&mut self, io: &mut impl Io, peer: NodeId) {
        if self.phase == Phase::Done {
            self.linger(io);
        } else if self.epoch > 0 && peer < self.config.workers && self.phase != Phase::Done {
            self.resend(io, Some(peer));
        }
    }

    /// Handles a value, confirm or approval of the current epoch; buffers the next epoch's.
    fn dispatch(&mut self, io: &mut impl Io, message: Early) {
        let epoch = match message {
            Early::Value(_, value) => value.epoch,
            Early::Confirm(_, confirm) => confirm.epoch,
            Early::Approve(approve) => approve.epoch,
        };
        if epoch > self.epoch || (epoch == self.epoch && self.awaiting_sync) {
            if self.early.len() < EARLY_MAX {
                self.early.push(message);
            }
            return;
        }
        if epoch < self.epoch {
            return;
        }
        match message {
            Early::Value(from, value) => self.receive_value(io, from, value),
            Early::Confirm(from, confirm) => self.receive_confirm(io, from, confirm),
            Early::Approve(approve) if !self.frozen => {
                if let Some(slot) = self.slot(approve.index)
                    && slot.flags & HAVE != 0
                {
                    slot.flags |= APPROVED;
                }
                self.fold(io);
            }
            Early::Approve(_) => {}
        }
    }

    /// Enters an epoch the master announced: its members and sequence, its schedule, and the
    /// state to start from. An epoch that is not newer than ours, or that comes once we close,
    /// is ignored.
    fn begin_epoch(&mut self, io: &mut impl Io, epoch: &RingEpoch<'_>) {
        if epoch.epoch <= self.epoch || self.phase == Phase::Closing {
            return;
        }
        // A member of its last epoch with a settled state; anyone else (new, restarted, cut
        // off, or still waiting for a sync) takes its state from a survivor. A member that
        // missed an epoch (its announcement lost with a connection) settles too unless the
        // master names it a joiner: the master trusted its report, so `next` and `missing`
        // account for what it holds.
        let was_member =
            self.member_mask & (1 << self.node) != 0 && !self.awaiting_sync && self.settled;
        self.epoch = epoch.epoch;
        if self.stats.epochs == 0 {
            // The run's seed is the master's (cloudy's SEED argument): a worker's stream is
            // that seed's, jumped once per worker id, continued across epochs.
            self.rng = stream_rng(epoch.seed, self.node);
        }
        self.stats.epochs += 1;
        self.frozen = false;
        let Some(position) = self.begin_epoch_members(epoch) else {
            return;
        };
        self.position = position;
        self.window = (epoch.window as u64).clamp(1, WINDOW_MAX);
        self.missing.clear();
        self.missing.extend(epoch.missing.iter());
        self.next = epoch.next;
        self.schedule(io, epoch.send_left_us, epoch.grace_left_us);
        // A worker that missed the previous epoch (new, restarted, or cut off) takes its
        // state from the survivor the master names; everyone else settles what is approved.
        self.sync_from = epoch.sync_from as NodeId;
        self.begin_epoch_state(io, epoch, was_member);
        info!(
            "worker {}: epoch {}, position {} of {}, window {}, next {}, {} missing",
            self.node,
            self.epoch,
            self.position,
            self.members.len(),
            self.window,
            self.next,
            self.missing.len()
        );
        self.start_generating(io);
    }

    /// Takes the epoch's members in ring order and returns our position among them; `None`,
    /// with no members kept, if the epoch names a worker we do not know or leaves us out.
    fn begin_epoch_members(&mut self, epoch: &RingEpoch<'_>) -> Option<usize> {
        self.members.clear();
        self.members
            .extend(epoch.members.iter().map(|member| member as NodeId));
        if self
            .members
            .iter()
            .any(|&member| member >= self.config.workers)
        {
            info!(
                "worker {}: epoch {} names an unknown worker; ignored",
                self.node, epoch.epoch
            );
            self.members.clear();
            return None;
        }
        self.member_mask = self
            .members
            .iter()
            .fold(0, |mask, &member| mask | 1 << member);
        let Some(position) = self.members.iter().position(|&member| member == self.node) else {
            debug!(
                "worker {}: not a member of epoch {}",
                self.node, epoch.epoch
            );
            self.members.clear();
            return None;
        };
        Some(position)
    }

    /// The state this worker starts the epoch from. Three cases. Nothing approved anywhere
    /// yet: everyone starts afresh. A settled member of the previous epoch that the master
    /// does not name as a joiner: settle what the master says is approved (unless we lack some
    /// of it). Anyone else — new, restarted, cut off, or named by the master — takes the state
    /// from a settled member.
    fn begin_epoch_state(&mut self, io: &mut impl Io, epoch: &RingEpoch<'_>, was_member: bool) {
        let named = epoch.joiners & (1 << self.node) != 0;
        if epoch.next == 1 && self.missing.is_empty() {
            self.slots.clear();
            self.prefix = 0;
            self.checksum = Checksum::default();
            self.awaiting_sync = false;
            self.settled = true;
        } else if was_member && !named {
            self.awaiting_sync = !self.settle_epoch();
            if self.awaiting_sync {
                info!(
                    "worker {}: missing approved values; asking for a sync",
                    self.node
                );
            }
        } else {
            self.awaiting_sync = true;
        }
        if self.awaiting_sync {
            self.settled = false;
            self.slots.clear();
            info!(
                "worker {}: joining epoch {}; asking for a sync",
                self.node, epoch.epoch
            );
            self.request_sync(io);
        }
    }

    /// The new epoch's view: every index below `next` that is not missing is approved;
    /// everything else not approved is dropped (it will be generated again). Returns false if
    /// this worker lacks a value the ring has approved: its state is then not to be trusted.
    pub(super) fn settle_epoch(&mut self) -> bool {
        self.waiting.clear();
        let (prefix, next) = (self.prefix, self.next);
        let missing = std::mem::take(&mut self.missing);
        let approved = |index: u64| index < next && missing.binary_search(&index).is_err();
        let mut complete = true;
        for (offset, slot) in self.slots.iter_mut().enumerate() {
            let index = prefix + 1 + offset as u64;
            if approved(index) {
                complete &= slot.flags & HAVE != 0;
                slot.flags |= APPROVED;
                slot.flags &= !MINE;
            } else if slot.flags & APPROVED == 0 {
                *slot = Slot::default();
            }
        }
        let beyond = prefix + 1 + self.slots.len() as u64;
        complete &= (beyond..next).all(|index| !approved(index));
        self.missing = missing;
        complete
    }

    fn schedule(&mut self, io: &mut impl Io, send_left_us: Micros, grace_left_us: Micros) {
        if self.phase == Phase::Done {
            return;
        }
        for key in [self.send_end.take(), self.stop.take()]
            .into_iter()
            .flatten()
        {
            io.cancel_timer(key);
        }
        if send_left_us > 0 {
            self.phase = Phase::Send;
            self.send_end = Some(io.set_timer(send_left_us, TIMER_SEND_END));
        } else {
            self.phase = Phase::Grace;
        }
        self.stop = Some(io.set_timer(send_left_us + grace_left_us, TIMER_STOP));
    }

    pub(super) fn start_generating(&mut self, io: &mut impl Io) {
        self.replay_early(io);
        if self.position == 0 && !self.awaiting_sync {
            for k in 0..self.window {
                self.generate(io, k);
            }
        }
        self.fold(io);
    }

    fn replay_early(&mut self, io: &mut impl Io) {
        if self.awaiting_sync {
            return;
        }
        let early = std::mem::take(&mut self.early);
        for message in &early {
            self.dispatch(io, *message);
        }
        self.early = early;
        self.early.retain(|message| match message {
            Early::Value(_, value) => value.epoch > self.epoch,
            Early::Confirm(_, confirm) => confirm.epoch > self.epoch,
            Early::Approve(approve) => approve.epoch > self.epoch,
        });
    }

    /// What holds after every message and timer (checked in release builds too).
    fn invariants(&self) {
        assert_eq!(self.checksum.count, self.prefix);
        assert!(self.slots.len() <= SLOTS_MAX);
        assert!(
            self.phase == Phase::Closing
                || self.phase == Phase::Done
                || self
                    .slots
                    .front()
                    .is_none_or(|slot| slot.flags & APPROVED == 0)
        );
        assert!(
            self.epoch == 0 || self.members.is_empty() || self.members[self.position] == self.node
        );
    }
}
