//! A worker's versioned store: items in a vector that only grows (deletions are tombstones,
//! kept so that an older copy cannot revive a key), found through a hash table of positions.
//!
//! Positions are stable, so a long walk over the store — a membership transfer, a log rewrite —
//! is a cursor `0..len` taken a bounded step at a time: nothing is copied up front, and items
//! added meanwhile lie past the walk's end (they reached their replicas, and the new log,
//! when they were written).

use hashbrown::HashTable;

use crate::journal::Record;

pub struct Item {
    pub key: Box<[u8]>,
    pub version: u64,
    /// `None`: deleted.
    pub value: Option<Box<[u8]>>,
}

impl Item {
    pub fn record(&self) -> Record<'_> {
        Record {
            version: self.version,
            key: &self.key,
            value: self.value.as_deref(),
        }
    }
}

#[derive(Default)]
pub struct Store {
    items: Vec<Item>,
    index: HashTable<u32>,
    /// Bytes the items take as log records (what a rewritten log holds).
    live_bytes: u64,
    /// Items that are not tombstones.
    present: usize,
}

fn hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

impl Store {
    pub fn get(&self, key: &[u8]) -> Option<&Item> {
        let items = &self.items;
        let at = self
            .index
            .find(hash(key), |&at| *items[at as usize].key == *key)?;
        Some(&items[*at as usize])
    }

    /// Stores `record` if it is at least as new as what is held; whether it did.
    pub fn write(&mut self, record: Record<'_>) -> bool {
        let size = record.encoded_len() as u64;
        let items = &self.items;
        let found = self
            .index
            .find(hash(record.key), |&at| {
                *items[at as usize].key == *record.key
            })
            .copied();
        if let Some(at) = found {
            let item = &mut self.items[at as usize];
            if record.version < item.version {
                return false;
            }
            self.live_bytes = self.live_bytes - item.record().encoded_len() as u64 + size;
            self.present =
                self.present - item.value.is_some() as usize + record.value.is_some() as usize;
            item.version = record.version;
            item.value = record.value.map(Box::from);
            return true;
        }
        let at = u32::try_from(self.items.len()).expect("fewer than 2^32 keys");
        self.items.push(Item {
            key: Box::from(record.key),
            version: record.version,
            value: record.value.map(Box::from),
        });
        let items = &self.items;
        self.index
            .insert_unique(hash(record.key), at, |&at| hash(&items[at as usize].key));
        self.live_bytes += size;
        self.present += record.value.is_some() as usize;
        true
    }

    /// Removes `key`'s item (a reclaimed tombstone). The last item takes its position, so
    /// positions are stable only between removals: no walk may be under way.
    pub fn remove(&mut self, key: &[u8]) -> Option<Item> {
        let items = &self.items;
        let entry = self
            .index
            .find_entry(hash(key), |&at| *items[at as usize].key == *key)
            .ok()?;
        let (at, _) = entry.remove();
        let at = at as usize;
        let last = self.items.len() - 1;
        if at != last {
            let moved = hash(&self.items[last].key);
            let slot = self
                .index
                .find_mut(moved, |&position| position as usize == last)
                .expect("every item is indexed");
            *slot = at as u32;
        }
        let item = self.items.swap_remove(at);
        self.live_bytes -= item.record().encoded_len() as u64;
        self.present -= item.value.is_some() as usize;
        Some(item)
    }

    /// Items held, tombstones included: the end of a walk started now.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn item(&self, at: usize) -> &Item {
        &self.items[at]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Item> {
        self.items.iter()
    }

    /// Keys with a value.
    pub fn present(&self) -> usize {
        self.present
    }

    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(version: u64, key: &'a str, value: Option<&'a str>) -> Record<'a> {
        Record {
            version,
            key: key.as_bytes(),
            value: value.map(str::as_bytes),
        }
    }

    #[test]
    fn the_newest_version_wins_and_counts_follow() {
        let mut store = Store::default();
        assert!(store.write(record(5, "a", Some("five"))));
        assert!(!store.write(record(4, "a", Some("four"))));
        assert!(store.write(record(6, "b", None)));
        assert_eq!(
            store.get(b"a").unwrap().value.as_deref(),
            Some(&b"five"[..])
        );
        assert_eq!((store.len(), store.present()), (2, 1));
        assert!(store.write(record(7, "a", None)));
        assert_eq!(store.present(), 0);
        let expected: u64 = store.iter().map(|i| i.record().encoded_len() as u64).sum();
        assert_eq!(store.live_bytes(), expected);
        assert!(store.get(b"c").is_none());
    }

    #[test]
    fn a_removed_item_is_gone_and_the_others_still_found() {
        let mut store = Store::default();
        for key in 0..100 {
            store.write(record(1, &format!("k{key}"), Some("v")));
        }
        store.write(record(2, "k7", None));
        assert!(store.remove(b"k7").is_some_and(|item| item.value.is_none()));
        assert!(store.remove(b"k7").is_none());
        assert!(store.remove(b"k0").is_some());
        assert!(store.get(b"k7").is_none() && store.get(b"k0").is_none());
        for key in (1..100).filter(|&key| key != 7) {
            let item = store.get(format!("k{key}").as_bytes()).expect("still held");
            assert_eq!(*item.key, *format!("k{key}").as_bytes());
        }
        assert_eq!((store.len(), store.present()), (98, 98));
        let expected: u64 = store.iter().map(|i| i.record().encoded_len() as u64).sum();
        assert_eq!(store.live_bytes(), expected);
    }

    #[test]
    fn many_keys_keep_their_positions() {
        let mut store = Store::default();
        for key in 0..10_000 {
            store.write(record(1, &format!("k{key}"), Some("v")));
        }
        for key in (0..10_000).step_by(7) {
            store.write(record(2, &format!("k{key}"), Some("w")));
        }
        assert_eq!(store.len(), 10_000);
        for at in [0, 4_999, 9_999] {
            let item = store.item(at);
            assert_eq!(*item.key, *format!("k{at}").as_bytes());
            assert_eq!(item.version, if at % 7 == 0 { 2 } else { 1 });
        }
    }
}
