//! ring's master: it starts the ring, re-forms it when a worker dies or comes back, and
//! collects and compares the results.
//!
//! The master starts the first epoch once every worker is connected (or `START_TIMEOUT_US`
//! has passed). While the ring runs it watches its connections: a member down for
//! `DEATH_GRACE_US`, a worker back or alive outside the ring, or a member stuck in an older
//! epoch makes it freeze the epoch, gather the members' frozen reports, and announce the next
//! epoch, which keeps everything approved anywhere and regenerates the rest. After the stop
//! time it prints one line per worker and whether they agree. It keeps no part of the data:
//! if it dies, the workers finish on their own. `invariants` lists what holds after every
//! handler; it is checked in release builds too.

use super::{
    Config, DEATH_GRACE_US, REFORM_TIMEOUT_US, RESULTS_WAIT_US, START_TIMEOUT_US, TIMER_START,
    TIMER_STOP, TIMER_TICK, WORKERS_MAX,
};
use crate::info;
use crate::node::{Io, Micros, NodeId, Timer};
use crate::roles::checksum::{Checksum, Decimal};
use crate::wire::{Items, Message, NO_NODE, RingEpoch, RingFreeze, RingReport, RingResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MasterPhase {
    Starting,
    Running,
    Reforming,
    Done,
}

/// What a member told the master during a re-formation.
#[derive(Clone, Debug)]
struct FrozenReport {
    /// A frozen report of the current epoch from a member with a settled state; otherwise
    /// (an older epoch: restarted, or cut off) the member knows nothing the ring can use.
    trusted: bool,
    prefix: u64,
    approved: Vec<u64>,
}

pub struct Master {
    config: Config,
    phase: MasterPhase,
    epoch: u32,
    members: Vec<NodeId>,
    up: Vec<bool>,
    down_since_us: Vec<Micros>,
    up_since_us: Vec<Micros>,
    /// Reports in the current re-formation, per worker.
    reports: Vec<Option<FrozenReport>>,
    reform_started_us: Micros,
    send_end_us: Micros,
    stop_us: Micros,
    next: u64,
    missing: Vec<u64>,
    announced_us: Micros,
    /// The newest epoch a settled member has reported being in.
    live_epoch: u32,
    /// The current epoch's sync source and joiners, as announced.
    sync_from: u16,
    joiners: u64,
    /// Per worker: its result and the epoch it ended in.
    results: Vec<Option<(Checksum, u32)>>,
    /// Every epoch's membership, for reports.
    pub epochs: Vec<Vec<NodeId>>,
    pub agreed: Option<bool>,
}

impl Master {
    pub fn new(config: Config) -> Master {
        let workers = config.workers;
        Master {
            phase: MasterPhase::Starting,
            epoch: 0,
            members: Vec::new(),
            up: vec![false; workers],
            down_since_us: vec![0; workers],
            up_since_us: vec![0; workers],
            reports: vec![None; workers],
            reform_started_us: 0,
            send_end_us: 0,
            stop_us: 0,
            next: 1,
            missing: Vec::new(),
            announced_us: 0,
            live_epoch: 0,
            sync_from: NO_NODE,
            joiners: 0,
            results: vec![None; workers],
            epochs: Vec::new(),
            agreed: None,
            config,
        }
    }

    pub(super) fn on_start(&mut self, io: &mut impl Io) {
        io.set_timer(self.config.tick_us, TIMER_TICK);
        io.set_timer(START_TIMEOUT_US, TIMER_START);
        self.invariants();
    }

    pub(super) fn on_message(&mut self, io: &mut impl Io, from: NodeId, message: Message<'_>) {
        if from >= self.config.workers {
            return; // only workers speak to the master (and nothing changed)
        }
        if let Message::RingReport(report) = &message
            && report.settled
        {
            // The newest epoch a settled member has entered: nothing can have been approved
            // in a later one.
            self.live_epoch = self.live_epoch.max(report.epoch);
        }
        match message {
            Message::RingReport(report) if self.phase == MasterPhase::Reforming => {
                self.receive_frozen_report(io, from, &report)
            }
            // A worker that is alive but not a member (left out while it was paused or cut off,
            // with its connection intact) is re-admitted.
            Message::RingReport(_)
                if self.phase == MasterPhase::Running
                    && !self.members.contains(&from)
                    && io.now() < self.stop_us =>
            {
                info!("master: worker {from} is alive outside the ring; re-admitting it");
                self.start_reform(io);
            }
            // A member still in an older epoch — restarted (its state is gone) or its copy of
            // the epoch was lost — cannot be trusted as a member: re-form, and it rejoins as a
            // joiner and syncs. Reports already in flight when the epoch was announced are let be.
            Message::RingReport(report)
                if self.phase == MasterPhase::Running
                    && report.epoch < self.epoch
                    && self.members.contains(&from)
                    && io.now() >= self.announced_us + 3 * self.config.tick_us
                    && io.now() < self.stop_us =>
            {
                info!(
                    "master: worker {from} is in epoch {}, not {}; re-forming",
                    report.epoch, self.epoch
                );
                self.start_reform(io);
            }
            Message::RingResult(result) => self.receive_result(io, from, &result),
            _ => {}
        }
        self.invariants();
    }

    pub(super) fn on_timer(&mut self, io: &mut impl Io, timer: Timer) {
        if self.phase == MasterPhase::Done {
            return; // the run is over (and nothing changed)
        }
        let now_us = io.now();
        match timer {
            TIMER_TICK => {
                match self.phase {
                    MasterPhase::Running if now_us < self.stop_us => {
                        let dead = self.members.iter().any(|&w| {
                            !self.up[w] && now_us - self.down_since_us[w] >= DEATH_GRACE_US
                        });
                        if dead {
                            info!("master: a worker is down; re-forming the ring");
                            self.start_reform(io);
                        }
                    }
                    MasterPhase::Reforming
                        if now_us - self.reform_started_us >= REFORM_TIMEOUT_US =>
                    {
                        self.finish_reform(io);
                    }
                    _ => {}
                }
                io.set_timer(self.config.tick_us, TIMER_TICK);
            }
            TIMER_START if self.phase == MasterPhase::Starting => self.begin(io),
            TIMER_STOP => self.print_results(io),
            _ => {}
        }
        self.invariants();
    }

    pub(super) fn on_peer_up(&mut self, io: &mut impl Io, peer: NodeId) {
        if peer >= self.config.workers {
            return; // not a worker (and nothing changed)
        }
        self.up[peer] = true;
        self.up_since_us[peer] = io.now();
        match self.phase {
            MasterPhase::Starting if self.up.iter().all(|&up| up) => self.begin(io),
            MasterPhase::Running if !self.members.contains(&peer) && io.now() < self.stop_us => {
                info!("master: worker {peer} is back; re-admitting it");
                self.start_reform(io);
            }
            // A member that reconnects while we re-form must freeze and report too, or the
            // re-formation waits for it in vain (and it stays frozen meanwhile).
            MasterPhase::Reforming if self.members.contains(&peer) => {
                let freeze = Message::RingFreeze(RingFreeze { epoch: self.epoch });
                io.send(peer, &freeze);
            }
            _ => {}
        }
        self.invariants();
    }

    pub(super) fn on_peer_down(&mut self, io: &mut impl Io, peer: NodeId) {
        if peer < self.config.workers {
            self.up[peer] = false;
            self.down_since_us[peer] = io.now();
        }
        self.invariants();
    }

    fn begin(&mut self, io: &mut impl Io) {
        let members: Vec<NodeId> = (0..self.config.workers).filter(|&w| self.up[w]).collect();
        if members.is_empty() {
            info!("master: no worker connected; giving up");
            self.print_results(io);
            return;
        }
        let now_us = io.now();
        self.send_end_us = now_us + self.config.send_us;
        self.stop_us = self.send_end_us + self.config.grace_us;
        io.set_timer(
            self.config.send_us + self.config.grace_us + RESULTS_WAIT_US,
            TIMER_STOP,
        );
        info!("master: starting the ring with workers {members:?}");
        self.announce(io, members, NO_NODE, 0);
    }

    /// Sends the next epoch to its members. A re-formation's reports are used up by then:
    /// dropping them keeps the rule that the master holds reports only while it re-forms.
    fn announce(&mut self, io: &mut impl Io, members: Vec<NodeId>, sync_from: u16, joiners: u64) {
        self.epoch += 1;
        self.phase = MasterPhase::Running;
        self.reports.fill(None);
        self.announced_us = io.now();
        self.sync_from = sync_from;
        self.joiners = joiners;
        self.epochs.push(members.clone());
        self.members = members;
        for position in 0..self.members.len() {
            self.send_epoch(io, self.members[position]);
        }
    }

    /// The current epoch's announcement, to one member.
    fn send_epoch(&self, io: &mut impl Io, member: NodeId) {
        let now_us = io.now();
        let member_ids: Vec<u16> = self.members.iter().map(|&m| m as u16).collect();
        let epoch = Message::RingEpoch(RingEpoch {
            epoch: self.epoch,
            window: self.config.window as u16,
            sync_from: self.sync_from,
            seed: self.config.seed,
            send_left_us: self.send_end_us.saturating_sub(now_us),
            grace_left_us: self.stop_us.saturating_sub(now_us.max(self.send_end_us)),
            next: self.next,
            joiners: self.joiners,
            members: Items::Host(&member_ids),
            missing: Items::Host(&self.missing),
        });
        io.send(member, &epoch);
    }

    fn start_reform(&mut self, io: &mut impl Io) {
        self.phase = MasterPhase::Reforming;
        self.reform_started_us = io.now();
        self.reports.fill(None);
        let freeze = Message::RingFreeze(RingFreeze { epoch: self.epoch });
        for &member in &self.members {
            io.send(member, &freeze);
        }
    }

    /// A member's report while we re-form: kept if it can be trusted (or noted as coming from
    /// a member that knows nothing usable); once every member that is up has answered, the
    /// next epoch is formed.
    fn receive_frozen_report(&mut self, io: &mut impl Io, from: NodeId, report: &RingReport<'_>) {
        if !self.members.contains(&from) || self.reports[from].as_ref().is_some_and(|r| r.trusted) {
            // Not asked, or already answered with a usable state.
        } else if report.frozen && report.settled && self.complete_report(from, report) {
            // Frozen with a settled state that is the member's last: everything
            // approved anywhere since the last re-formation is in this report or another.
            let approved = report.approved.iter().collect();
            let prefix = report.prefix;
            self.reports[from] = Some(FrozenReport {
                trusted: true,
                prefix,
                approved,
            });
        } else if !report.settled || report.epoch < self.live_epoch {
            // Restarted, still joining, or left behind before the live epoch: it knows
            // nothing the ring can use; it rejoins the next epoch and syncs.
            let untrusted = FrozenReport {
                trusted: false,
                prefix: 0,
                approved: Vec::new(),
            };
            self.reports[from] = Some(untrusted);
        }
        let all = self
            .members
            .iter()
            .all(|&w| !self.up[w] || self.reports[w].is_some());
        if all {
            self.finish_reform(io);
        }
    }

    /// Whether a member's frozen report holds everything it approved. A report of the epoch
    /// being frozen does. One of an older epoch (not older than the live one) does only if
    /// the member will never enter the current epoch: it reconnected since the announcement
    /// (lost with its old connection, and never sent again). Otherwise it may have been sent
    /// just before the announcement arrived, and the member approve more in the new epoch.
    fn complete_report(&self, member: NodeId, report: &RingReport<'_>) -> bool {
        report.epoch == self.epoch
            || (report.epoch >= self.live_epoch && self.up_since_us[member] > self.announced_us)
    }

    /// The next epoch from the frozen reports: everything approved anywhere stays approved,
    /// everything else below the highest approved index is regenerated.
    fn finish_reform(&mut self, io: &mut impl Io) {
        let trusted: Vec<NodeId> = self
            .members
            .iter()
            .copied()
            .filter(|&w| self.up[w] && self.reports[w].as_ref().is_some_and(|r| r.trusted))
            .collect();
        if trusted.is_empty() {
            // Nobody who holds the ring's state answered: an epoch formed now would know
            // nothing. Keep the ring frozen and ask again.
            info!("master: no member with the ring's state answered; waiting");
            self.start_reform(io);
            return;
        }
        self.finish_reform_sequence(&trusted);
        let (members, joiners) = self.finish_reform_members(&trusted);
        let sync_from = if joiners != 0 {
            trusted[0] as u16
        } else {
            NO_NODE
        };
        info!(
            "master: epoch {} with workers {members:?}: next {}, regenerating {:?}",
            self.epoch + 1,
            self.next,
            self.missing
        );
        self.announce(io, members, sync_from, joiners);
    }

    /// The next epoch's `next` and `missing`. Everything approved anywhere stays approved:
    /// what we knew (the current epoch's `[1, next)` minus `missing`) plus every trusted
    /// survivor's prefix and list; every other index up to the highest approved is missing.
    fn finish_reform_sequence(&mut self, trusted: &[NodeId]) {
        let prefix = trusted
            .iter()
            .map(|&w| self.reports[w].as_ref().unwrap().prefix)
            .max();
        let prefix = prefix.unwrap_or(0);
        let mut listed: Vec<u64> = trusted
            .iter()
            .flat_map(|&w| self.reports[w].as_ref().unwrap().approved.iter().copied())
            .filter(|&index| index > prefix)
            .collect();
        listed.sort_unstable();
        listed.dedup();
        let top = listed
            .last()
            .copied()
            .unwrap_or(0)
            .max(prefix)
            .max(self.next - 1);
        let was_missing = std::mem::take(&mut self.missing);
        let known = |index: u64| index < self.next && was_missing.binary_search(&index).is_err();
        self.missing = (prefix + 1..=top)
            .filter(|&index| !known(index) && listed.binary_search(&index).is_err())
            .collect();
        self.next = top + 1;
    }

    /// The next epoch's members and its joiners (a mask). The trusted survivors come first;
    /// members that answered from an older epoch, and workers back from the dead, join and
    /// take their state from a trusted survivor.
    fn finish_reform_members(&self, trusted: &[NodeId]) -> (Vec<NodeId>, u64) {
        let mut members = trusted.to_vec();
        members.extend(
            self.members
                .iter()
                .copied()
                .filter(|&w| self.up[w] && self.reports[w].as_ref().is_some_and(|r| !r.trusted)),
        );
        members
            .extend((0..self.config.workers).filter(|&w| self.up[w] && !self.members.contains(&w)));
        let joiners = members
            .iter()
            .filter(|w| !trusted.contains(w))
            .fold(0, |m, &w| m | 1 << w);
        (members, joiners)
    }

    /// A worker's result; once every member has sent one, the results are printed.
    fn receive_result(&mut self, io: &mut impl Io, from: NodeId, result: &RingResult) {
        let checksum = Checksum {
            count: result.count,
            sum: result.sum,
        };
        self.results[from] = Some((checksum, result.epoch));
        if self.members.iter().all(|&w| self.results[w].is_some()) {
            self.print_results(io);
        }
    }

    fn print_results(&mut self, io: &mut impl Io) {
        if self.phase == MasterPhase::Done {
            return;
        }
        self.phase = MasterPhase::Done;
        // A worker that ended in an older epoch than the others was left behind by a
        // re-formation (cut off at the end): shown, but not a party to the agreement.
        let last_epoch = self.results.iter().flatten().map(|&(_, epoch)| epoch).max();
        let mut agreed: Option<Checksum> = None;
        let mut agree = true;
        let mut reporting = 0;
        for worker in 0..self.config.workers {
            match self.results[worker] {
                Some((result, epoch)) if Some(epoch) < last_epoch => io.output(format_args!(
                    "worker {worker}: SlaveResult {} {} (left behind in epoch {epoch})",
                    result.count,
                    Decimal(result.sum)
                )),
                Some((result, _)) => {
                    io.output(format_args!(
                        "worker {worker}: SlaveResult {} {}",
                        result.count,
                        Decimal(result.sum)
                    ));
                    agree &= agreed.is_none_or(|first| first == result);
                    agreed.get_or_insert(result);
                    reporting += 1;
                }
                None => io.output(format_args!("worker {worker}: no result")),
            }
        }
        let verdict = if reporting > 0 && agree {
            "AGREE"
        } else {
            "DISAGREE"
        };
        io.output(format_args!(
            "{verdict}: {reporting} of {} workers reported, {} epoch{}",
            self.config.workers,
            self.epoch,
            if self.epoch == 1 { "" } else { "s" }
        ));
        self.agreed = Some(reporting > 0 && agree);
        io.stop();
    }

    /// What holds after every handler. Cheap (a pass over the workers and `missing`), so it
    /// stays on in release, like the worker's.
    fn invariants(&self) {
        let workers = self.config.workers;
        assert!(workers <= WORKERS_MAX, "worker sets are 64-bit masks");
        assert_eq!(self.up.len(), workers);
        assert_eq!(self.down_since_us.len(), workers);
        assert_eq!(self.up_since_us.len(), workers);
        assert_eq!(self.reports.len(), workers);
        // Results are kept per worker: nothing else's is taken.
        assert_eq!(self.results.len(), workers);
        // A worker's link state and its timestamps tell the same story.
        for worker in 0..workers {
            if self.up[worker] {
                assert!(self.up_since_us[worker] >= self.down_since_us[worker]);
            } else {
                assert!(self.down_since_us[worker] >= self.up_since_us[worker]);
            }
        }
        let member_mask = self.invariants_members();
        self.invariants_phase();
        self.invariants_sequence();
        // The announced joiners are members; the sync source is a member and not a joiner,
        // and there is one exactly when there are joiners.
        assert_eq!(self.joiners & !member_mask, 0);
        assert_eq!(self.sync_from == NO_NODE, self.joiners == 0);
        if self.sync_from != NO_NODE {
            let source = self.sync_from as NodeId;
            assert!(source < workers);
            assert!(member_mask & (1 << source) != 0);
            assert!(self.joiners & (1 << source) == 0);
        }
        // Reports come only from members, and are held only while re-forming (or, once done,
        // those of the re-formation the end interrupted). An untrusted report carries nothing.
        for (worker, report) in self.reports.iter().enumerate() {
            let Some(report) = report else { continue };
            assert!(self.phase == MasterPhase::Reforming || self.phase == MasterPhase::Done);
            assert!(member_mask & (1 << worker) != 0);
            assert!(report.trusted || report.prefix == 0);
            assert!(report.trusted || report.approved.is_empty());
        }
    }

    /// Members are distinct workers, the last epoch's membership. Returns them as a mask.
    fn invariants_members(&self) -> u64 {
        let mut member_mask: u64 = 0;
        for &member in &self.members {
            assert!(member < self.config.workers);
            assert!(member_mask & (1 << member) == 0, "a worker listed twice");
            member_mask |= 1 << member;
        }
        assert_eq!(self.epochs.len(), self.epoch as usize);
        match self.epochs.last() {
            Some(last) => assert_eq!(*last, self.members),
            None => assert!(self.members.is_empty()),
        }
        member_mask
    }

    /// The phase agrees with the epoch, the members and the schedule.
    fn invariants_phase(&self) {
        // Once the ring started, the grace phase is where the schedule says (wrapping: an
        // absurd SEND_US wraps the schedule, and this is no place to start panicking on it).
        if self.epoch > 0 {
            let grace_us = self.stop_us.wrapping_sub(self.send_end_us);
            assert_eq!(grace_us, self.config.grace_us);
        }
        // The verdict exists exactly once the run is over.
        assert_eq!(self.agreed.is_some(), self.phase == MasterPhase::Done);
        match self.phase {
            // Nothing scheduled or announced yet.
            MasterPhase::Starting => {
                assert_eq!(self.epoch, 0);
                assert_eq!(self.send_end_us, 0);
                assert_eq!(self.stop_us, 0);
            }
            MasterPhase::Running => {
                assert!(self.epoch > 0);
                assert!(!self.members.is_empty());
            }
            MasterPhase::Reforming => {
                assert!(self.epoch > 0);
                assert!(!self.members.is_empty());
                assert!(self.reform_started_us >= self.announced_us);
            }
            MasterPhase::Done => {}
        }
    }

    /// `missing` is sorted, without repeats, and below `next`; index 0 is never used.
    fn invariants_sequence(&self) {
        assert!(self.next >= 1);
        assert!(self.missing.first().is_none_or(|&first| first >= 1));
        assert!(self.missing.last().is_none_or(|&last| last < self.next));
        assert!(self.missing.windows(2).all(|pair| pair[0] < pair[1]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            workers: 3,
            seed: 7,
            send_us: 2_000_000,
            grace_us: 1_000_000,
            window: 8,
            tick_us: 10_000,
        }
    }

    /// A master re-forming epoch 2 of a ring of workers 0 and 2 (worker 1 down), worker 0
    /// having sent its frozen report: a state every handler may leave behind.
    fn reforming() -> Master {
        let mut master = Master::new(config());
        master.phase = MasterPhase::Reforming;
        master.epoch = 2;
        master.epochs = vec![vec![0, 1, 2], vec![0, 2]];
        master.members = vec![0, 2];
        master.up = vec![true, false, true];
        master.up_since_us = vec![10, 10, 10];
        master.down_since_us = vec![0, 500, 0];
        master.send_end_us = 2_000_000;
        master.stop_us = 3_000_000;
        master.announced_us = 600;
        master.reform_started_us = 700;
        master.next = 40;
        master.missing = vec![3, 17];
        master.reports[0] = Some(FrozenReport {
            trusted: true,
            prefix: 12,
            approved: vec![14],
        });
        master
    }

    fn refused(what: &str, break_it: impl FnOnce(&mut Master)) {
        let mut master = reforming();
        break_it(&mut master);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            master.invariants();
        }));
        assert!(outcome.is_err(), "invariants accepted {what}");
    }

    #[test]
    fn invariants_accept_sound_states_and_refuse_broken_ones() {
        Master::new(config()).invariants();
        reforming().invariants();
        let mut running = reforming();
        running.phase = MasterPhase::Running;
        running.reports.fill(None);
        running.invariants();

        refused("a report held while running", |m| {
            m.phase = MasterPhase::Running
        });
        refused("a report from a non-member", |m| {
            m.reports[1] = Some(FrozenReport {
                trusted: true,
                prefix: 0,
                approved: Vec::new(),
            })
        });
        refused("an untrusted report with a prefix", |m| {
            m.reports[0].as_mut().unwrap().trusted = false
        });
        refused("a member listed twice", |m| {
            m.members = vec![0, 0];
            m.epochs[1] = vec![0, 0];
        });
        refused("members that are not the last epoch's", |m| {
            m.members = vec![0]
        });
        refused("an epoch count unlike the history", |m| m.epoch = 3);
        refused("a down worker whose up time is newer", |m| {
            m.up_since_us[1] = 900
        });
        refused("a grace phase not as configured", |m| m.stop_us += 1);
        refused("a verdict before the end", |m| m.agreed = Some(true));
        refused("missing indexes out of order", |m| m.missing = vec![17, 3]);
        refused("a missing index at or past next", |m| m.missing.push(40));
        refused("joiners without a sync source", |m| m.joiners = 1);
        refused("a sync source that is not a member", |m| {
            m.joiners = 1;
            m.sync_from = 1;
        });
        refused("a re-formation started before its announcement", |m| {
            m.reform_started_us = 500
        });
    }
}
