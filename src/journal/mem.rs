//! An in-memory disk under the kv journal, for the simulator and for tests that drive a worker
//! by hand. It tells written bytes (in the page cache) from synced ones (on the platter), and
//! a worker that comes back after a crash finds only the synced bytes plus a seeded part of the
//! rest — a torn tail, sometimes with a flipped byte in it (a corrupt tail). It models machine
//! crashes: unlike `kill -9`, they lose what the kernel had not written.
//!
//! `Disk` outlives the workers that use it (it is shared, `SharedDisk`); `SimJournal` is one
//! worker's `Journal` over it. A disk's losses are a pure function of its seed and of the
//! writes, so a simulated run stays reproducible.

use std::cell::RefCell;
use std::rc::Rc;

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{Rng, SeedableRng};

use super::{EVERYSEC_US, Fsync, HEADER_BYTES, Journal, Record, Replayed, header, replay};
use crate::node::Micros;

/// Mixed into a disk's seed for its generator.
const DISK_SEED_SALT: u64 = 0xD15C;
/// One crash in this many that keeps part of the unsynced tail also flips a byte in it.
const CORRUPT_ONE_IN: u32 = 4;
/// What a corrupted byte is XORed with.
const CORRUPT_MASK: u8 = 0x5A;

pub struct Disk {
    log: Vec<u8>,
    synced: usize,
    opened: bool,
    rng: Xoshiro256PlusPlus,
    /// Bytes lost or torn by crashes, and tails found torn or corrupt at replay.
    pub lost_bytes: u64,
    pub torn_tails: u64,
}

pub type SharedDisk = Rc<RefCell<Disk>>;

impl Disk {
    pub fn new(seed: u64) -> SharedDisk {
        Rc::new(RefCell::new(Disk {
            log: Vec::new(),
            synced: 0,
            opened: false,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ DISK_SEED_SALT),
            lost_bytes: 0,
            torn_tails: 0,
        }))
    }

    /// What survives a crash: the synced bytes and a seeded prefix of the rest, possibly with
    /// one byte of that prefix flipped.
    fn crash(&mut self) {
        let unsynced = self.log.len() - self.synced;
        let kept = uniform(&mut self.rng, 0, unsynced as u64) as usize;
        self.lost_bytes += (unsynced - kept) as u64;
        self.log.truncate(self.synced + kept);
        if kept > 0 && self.rng.next_u32().is_multiple_of(CORRUPT_ONE_IN) {
            let at = self.synced + uniform(&mut self.rng, 0, kept as u64 - 1) as usize;
            self.log[at] ^= CORRUPT_MASK;
        }
    }
}

/// The journal of one simulated worker, over its disk (which outlives the worker).
pub struct SimJournal {
    disk: SharedDisk,
    policy: Fsync,
    buffer: Vec<u8>,
    rewrite: Option<Vec<u8>>,
    last_sync: Option<Micros>,
}

impl SimJournal {
    pub fn new(disk: SharedDisk, policy: Fsync) -> SimJournal {
        SimJournal {
            disk,
            policy,
            buffer: Vec::new(),
            rewrite: None,
            last_sync: None,
        }
    }
}

impl Journal for SimJournal {
    fn fsync(&self) -> Fsync {
        self.policy
    }

    fn replay(&mut self, apply: &mut dyn FnMut(Record<'_>)) -> Result<Replayed, String> {
        let mut disk = self.disk.borrow_mut();
        if disk.opened {
            disk.crash();
        }
        disk.opened = true;
        if disk.log.len() < HEADER_BYTES {
            disk.log.clear();
            disk.log.extend_from_slice(&header());
            disk.synced = disk.log.len();
            return Ok(Replayed::default());
        }
        let replayed =
            replay(&disk.log[HEADER_BYTES..], apply).map_err(|error| error.to_string())?;
        if replayed.dropped_bytes > 0 {
            disk.torn_tails += 1;
            let valid = HEADER_BYTES + replayed.valid_bytes as usize;
            disk.log.truncate(valid);
            disk.synced = disk.synced.min(valid);
        }
        Ok(replayed)
    }

    fn append(&mut self, record: &Record<'_>) {
        record.append_to(&mut self.buffer);
        if let Some(rewrite) = &mut self.rewrite {
            record.append_to(rewrite);
        }
    }

    fn commit(&mut self, now: Micros) -> Result<(), String> {
        let mut disk = self.disk.borrow_mut();
        disk.log.extend_from_slice(&self.buffer);
        self.buffer.clear();
        let due = self
            .last_sync
            .is_none_or(|last| now.saturating_sub(last) >= EVERYSEC_US);
        let sync = match self.policy {
            Fsync::Always => true,
            Fsync::EverySec => due,
            Fsync::No => false,
        };
        if sync && disk.synced < disk.log.len() {
            disk.synced = disk.log.len();
            self.last_sync = Some(now);
        }
        Ok(())
    }

    fn bytes(&self) -> u64 {
        (self.disk.borrow().log.len() + self.buffer.len()) as u64
    }

    fn rewrite_begin(&mut self) -> Result<(), String> {
        self.rewrite = Some(header().to_vec());
        Ok(())
    }

    fn rewrite_append(&mut self, record: &Record<'_>) {
        if let Some(rewrite) = &mut self.rewrite {
            record.append_to(rewrite);
        }
    }

    /// Synced, then renamed over the log: atomic.
    fn rewrite_finish(&mut self) -> Result<(), String> {
        self.commit(0)?;
        if let Some(rewrite) = self.rewrite.take() {
            let mut disk = self.disk.borrow_mut();
            disk.log = rewrite;
            disk.synced = disk.log.len();
        }
        Ok(())
    }
}

/// Uniform in `low..=high`: the same arithmetic as the simulator's `sim::uniform`, so a disk's
/// draws are what they were when it lived there (the journal does not depend on the
/// simulator).
fn uniform(rng: &mut Xoshiro256PlusPlus, low: u64, high: u64) -> u64 {
    if high <= low {
        return low;
    }
    low + rng.next_u64() % (high - low + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `count` records (versions `first..`) and commits them at `now`.
    fn write(journal: &mut SimJournal, first: u64, count: u64, now: Micros) {
        for version in first..first + count {
            let value = version.to_be_bytes();
            journal.append(&Record {
                version,
                key: b"key",
                value: Some(&value),
            });
        }
        journal.commit(now).unwrap();
    }

    /// Reopens the disk as a restarted worker would (the previous one crashed): the versions
    /// replayed, in log order, and whether the replay stopped at a torn or corrupt tail.
    fn reopen(disk: &SharedDisk, policy: Fsync) -> (Vec<u64>, bool) {
        let mut journal = SimJournal::new(disk.clone(), policy);
        let mut versions = Vec::new();
        let replayed = journal
            .replay(&mut |record| {
                assert_eq!(record.value, Some(&record.version.to_be_bytes()[..]));
                versions.push(record.version);
            })
            .unwrap();
        (versions, replayed.dropped_bytes > 0)
    }

    #[test]
    fn synced_records_survive_every_crash() {
        for seed in 0..200 {
            let disk = Disk::new(seed);
            let mut journal = SimJournal::new(disk.clone(), Fsync::Always);
            journal
                .replay(&mut |_| panic!("a new disk is empty"))
                .unwrap();
            write(&mut journal, 1, 1 + seed % 17, 10);
            write(&mut journal, 100, 3, 20);
            let (versions, torn) = reopen(&disk, Fsync::Always);
            let expected: Vec<u64> = (1..=1 + seed % 17).chain(100..103).collect();
            assert_eq!(versions, expected, "seed {seed}");
            assert!(!torn, "seed {seed}");
            assert_eq!(disk.borrow().lost_bytes, 0, "seed {seed}");
        }
    }

    /// Under `everysec`, records written since the last sync are in the page cache only: a
    /// crash keeps the synced ones and a prefix of the rest that the seed chooses (sometimes
    /// none, sometimes all, sometimes with a torn or corrupt record at its end, which replay
    /// drops).
    #[test]
    fn a_crash_keeps_the_synced_log_and_a_seeded_prefix_of_the_rest() {
        let (mut lost_some, mut kept_some, mut torn_some) = (false, false, false);
        let mut dropped_some = false;
        for seed in 0..200 {
            let outcome = |seed| {
                let disk = Disk::new(seed);
                let mut journal = SimJournal::new(disk.clone(), Fsync::EverySec);
                journal
                    .replay(&mut |_| panic!("a new disk is empty"))
                    .unwrap();
                write(&mut journal, 1, 10, 0); // the first commit syncs
                write(&mut journal, 11, 20, 1_000); // within the second: not synced
                let lost = disk.borrow().lost_bytes;
                (
                    reopen(&disk, Fsync::EverySec),
                    disk.borrow().lost_bytes - lost,
                )
            };
            let ((versions, torn), lost_bytes) = outcome(seed);
            assert_eq!(
                outcome(seed),
                ((versions.clone(), torn), lost_bytes),
                "seed {seed}"
            );
            assert!(
                versions.len() >= 10,
                "seed {seed}: synced records lost: {versions:?}"
            );
            let expected: Vec<u64> = (1..=versions.len() as u64).collect();
            assert_eq!(versions, expected, "seed {seed}: not a prefix");
            lost_some |= versions.len() < 30;
            kept_some |= versions.len() > 10;
            torn_some |= torn;
            dropped_some |= lost_bytes > 0;
            if lost_bytes == 0 && !torn {
                assert_eq!(versions.len(), 30, "seed {seed}: records lost uncounted");
            }
        }
        // Some crashes drop unsynced bytes outright (not only by tearing a record).
        assert!(lost_some && kept_some && torn_some && dropped_some);
    }
}
