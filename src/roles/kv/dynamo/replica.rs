//! A data node's replica: the versioned store, its Merkle tree (kept current write by write,
//! for anti-entropy) and its log.
//!
//! A write is applied only if its version is newer than what is held (equal: the same write
//! again, nothing to do), so replays, repairs and retries are idempotent and arrive in any
//! order. Every applied write is appended to the journal; the node commits the journal before
//! any answer leaves in the same loop iteration, so an acknowledged write is in the log (on
//! disk under `--fsync always`).

use crate::info;
use crate::journal::{Journal, Record};
use crate::node::Micros;
use crate::roles::kv::hlc;
use crate::roles::kv::merkle::MerkleTree;
use crate::roles::kv::store::{Item, Store};

pub struct Replica {
    store: Store,
    tree: MerkleTree,
    journal: Option<Box<dyn Journal>>,
    /// A write or sync failed: nothing more may be acknowledged.
    failed: bool,
    /// The highest version held.
    max_version: u64,
    /// Tombstones of versions stamped before this time (µs) are reclaimed, and refused.
    horizon_us: u64,
    /// Where the reclaiming sweep goes on from.
    sweep_at: usize,
    /// Tombstones reclaimed (INFO).
    pub reclaimed: u64,
}

impl Replica {
    pub fn new(journal: Option<Box<dyn Journal>>) -> Replica {
        Replica {
            store: Store::default(),
            tree: MerkleTree::new(),
            journal,
            failed: false,
            max_version: 0,
            horizon_us: 0,
            sweep_at: 0,
            reclaimed: 0,
        }
    }

    /// Replays the log (if any) into the store: the records replayed, or why it cannot be.
    pub fn replay(&mut self) -> Result<u64, String> {
        let Some(mut journal) = self.journal.take() else {
            return Ok(0);
        };
        let outcome = journal.replay(&mut |record| {
            self.apply(record.key, record.version, record.value);
        });
        self.journal = Some(journal);
        let replayed = outcome?;
        if let Some(reason) = replayed.reason {
            info!(
                "log: {reason} after {} records; {} bytes dropped",
                replayed.records, replayed.dropped_bytes
            );
        }
        Ok(replayed.records)
    }

    /// What is held of `key`: its version and value (`None`: a tombstone).
    pub fn get(&self, key: &[u8]) -> Option<(u64, Option<&[u8]>)> {
        self.store
            .get(key)
            .map(|item| (item.version, item.value.as_deref()))
    }

    /// Stores the write if it is newer than what is held, and logs it. Returns the version
    /// held afterwards (at least `version`, or newer if a newer write got there first).
    pub fn write(&mut self, key: &[u8], version: u64, value: Option<&[u8]>) -> u64 {
        let held = self.apply(key, version, value);
        if held == version
            && let Some(journal) = &mut self.journal
        {
            journal.append(&Record {
                version,
                key,
                value,
            });
        }
        held
    }

    fn apply(&mut self, key: &[u8], version: u64, value: Option<&[u8]>) -> u64 {
        if let Some(item) = self.store.get(key) {
            if version <= item.version {
                return item.version;
            }
            let old = item.version;
            self.tree.toggle(key, old);
        }
        if value.is_none() && hlc::time_of(version) < self.horizon_us {
            // A deletion older than the grace period: what it deletes goes, and so does it.
            if self.store.remove(key).is_some() {
                self.reclaimed += 1;
            }
            self.max_version = self.max_version.max(version);
            return version;
        }
        self.tree.toggle(key, version);
        let stored = self.store.write(Record {
            version,
            key,
            value,
        });
        assert!(stored);
        self.max_version = self.max_version.max(version);
        version
    }

    /// Reclaims, a bounded step at a time, the tombstones of deletions stamped before
    /// `horizon_us` — the same deadline on every replica, since it comes from the version.
    /// Positions move as items are removed, so no walk over the store may be under way.
    pub fn reclaim(&mut self, horizon_us: u64, budget: usize) {
        self.horizon_us = self.horizon_us.max(horizon_us);
        for _ in 0..budget {
            if self.sweep_at >= self.store.len() {
                self.sweep_at = 0;
                return;
            }
            let item = self.store.item(self.sweep_at);
            if item.value.is_some() || hlc::time_of(item.version) >= self.horizon_us {
                self.sweep_at += 1;
                continue;
            }
            let (key, version) = (item.key.clone(), item.version);
            self.tree.toggle(&key, version);
            self.store.remove(&key);
            self.reclaimed += 1;
        }
    }

    /// Whether what was written since the last commit may be acknowledged now.
    pub fn commit(&mut self, now: Micros) -> bool {
        if self.failed {
            return false;
        }
        let Some(journal) = &mut self.journal else {
            return true;
        };
        if let Err(error) = journal.commit(now) {
            info!("error: {error}; this node acknowledges no more writes");
            self.failed = true;
        }
        !self.failed
    }

    pub fn failed(&self) -> bool {
        self.failed
    }

    pub fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    pub fn max_version(&self) -> u64 {
        self.max_version
    }

    /// Keys with a value.
    pub fn keys(&self) -> usize {
        self.store.present()
    }

    /// Items held, tombstones included, at stable positions (see `Store`).
    pub fn items(&self) -> usize {
        self.store.len()
    }

    pub fn item(&self, at: usize) -> &Item {
        self.store.item(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version stamped at `time_us` by node 1.
    fn at(time_us: u64) -> u64 {
        time_us << hlc::NODE_BITS | 1
    }

    #[test]
    fn tombstones_past_the_grace_are_reclaimed_and_late_ones_refused() {
        let mut replica = Replica::new(None);
        replica.write(b"kept", at(10), Some(b"v"));
        replica.write(b"gone", at(10), Some(b"v"));
        replica.write(b"gone", at(20), None);
        replica.write(b"young", at(10), Some(b"v"));
        replica.write(b"young", at(500), None);
        let mut expected = MerkleTree::new();
        expected.toggle(b"kept", at(10));
        expected.toggle(b"young", at(500));
        replica.reclaim(100, 1_000);
        assert!(replica.get(b"gone").is_none());
        assert_eq!(replica.get(b"young"), Some((at(500), None)));
        assert_eq!(replica.get(b"kept"), Some((at(10), Some(&b"v"[..]))));
        assert_eq!(replica.tree().root(), expected.root());
        assert_eq!(replica.reclaimed, 1);
        // A deletion past the grace arriving late removes what it deletes, and is not kept.
        replica.write(b"kept", at(50), None);
        assert!(replica.get(b"kept").is_none());
        assert_eq!(replica.reclaimed, 2);
        // An older value arriving after the reclaim is taken: the documented risk of a replica
        // down longer than the grace.
        replica.write(b"gone", at(15), Some(b"old"));
        assert_eq!(replica.get(b"gone"), Some((at(15), Some(&b"old"[..]))));
    }
}
