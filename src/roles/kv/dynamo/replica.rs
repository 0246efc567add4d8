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
}

impl Replica {
    pub fn new(journal: Option<Box<dyn Journal>>) -> Replica {
        Replica {
            store: Store::default(),
            tree: MerkleTree::new(),
            journal,
            failed: false,
            max_version: 0,
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
