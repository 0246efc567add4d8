//! Anti-entropy with Merkle trees (Dynamo §4.7, Cassandra's repair): two replicas find the
//! keys on which they differ by comparing hashes top-down, so the bytes they exchange grow
//! with the number of differences, not with the number of keys.
//!
//! The tree. Each key falls in one of `LEAVES` leaves: its hash slot (`slots.rs`) times
//! `BUCKETS_PER_SLOT`, plus a bucket drawn from the key's own hash, so a leaf holds about one
//! key per million keys stored. An item's hash is xxh3 of its key seeded with its version (a
//! version names one write, so the value need not be hashed; a deletion is an item too). A
//! node's hash is the XOR of the hashes of every item below it, so a write updates its leaf
//! and each ancestor in place — `DEPTH` XORs, no rebuild, no scan — and a replica's tree is
//! always current. The tree is 16-ary: level 0 is the root, level `PARTITION_LEVEL` has one
//! node per partition of `PARTITION_SLOTS` consecutive slots (the unit two replicas share),
//! level `DEPTH` the leaves. It costs `8 × (LEAVES + LEAVES / 15)` bytes, 8.5 MiB, per node.
//!
//! The exchange, between an initiator and a responder, over the partitions both hold:
//! 1. the initiator sends the hashes of those partitions (`Summary`);
//! 2. the responder answers one verdict bit per node it was sent (`Differ`: set if the
//!    node's hash differs from its own);
//! 3. the initiator sends the 16 child hashes of each differing node (`Hashes`), and the
//!    responder answers verdicts again, one level down, until the leaves;
//! 4. for each differing leaf both send their `(key, version)` items (`Items`), so each knows
//!    which keys the other lacks or holds older — what then moves is the repair itself.
//!
//! Messages carry no indices: each side walks the same list of differing nodes in the same
//! order, so a hash costs 8 bytes and a node's verdict one bit. A level with more than
//! `CHUNK_NODES` nodes to compare (an empty replica: every node differs) goes in several
//! `Hashes`/`Differ` pairs, each under half a frame. XOR is not a cryptographic digest:
//! a peer could craft colliding contents, but replicas of one cluster are trusted (the cookie
//! keeps strangers out); accidental collisions are 2⁻⁶⁴ per comparison.

use byteorder::{ByteOrder, LittleEndian};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::slots::{PARTITION_SLOTS, PARTITIONS, SLOTS, key_slot};

/// Children per node.
pub const FANOUT: usize = 16;
/// Leaves per slot: with 16 384 slots, about one key a leaf at a million keys.
pub const BUCKETS_PER_SLOT: usize = 64;
pub const LEAVES: usize = SLOTS * BUCKETS_PER_SLOT;
/// Levels below the root: `FANOUT^DEPTH == LEAVES`.
pub const DEPTH: usize = 5;
const _: () = assert!(FANOUT.pow(DEPTH as u32) == LEAVES);
/// The level whose nodes are the placement's partitions.
pub const PARTITION_LEVEL: usize = 2;
const _: () = assert!(FANOUT.pow(PARTITION_LEVEL as u32) == PARTITIONS);
/// Bytes of one item in an `Items` message: key length, key, version.
const ITEM_HEADER_BYTES: usize = 2 + 8;

/// The leaf a key's item lives in.
pub fn leaf_of(key: &[u8]) -> usize {
    let bucket = xxh3_64(key) as usize % BUCKETS_PER_SLOT;
    key_slot(key) as usize * BUCKETS_PER_SLOT + bucket
}

/// The partition a key belongs to.
pub fn partition_of(key: &[u8]) -> usize {
    key_slot(key) as usize / PARTITION_SLOTS
}

fn item_hash(key: &[u8], version: u64) -> u64 {
    xxh3_64_with_seed(key, version)
}

pub struct MerkleTree {
    /// `levels[l]` holds the `FANOUT^l` node hashes of level `l`.
    levels: Vec<Vec<u64>>,
}

impl Default for MerkleTree {
    fn default() -> Self {
        MerkleTree::new()
    }
}

impl MerkleTree {
    pub fn new() -> MerkleTree {
        let levels = (0..=DEPTH).map(|l| vec![0; FANOUT.pow(l as u32)]).collect();
        MerkleTree { levels }
    }

    /// Adds or removes (XOR is its own inverse) the item `(key, version)`: a store calls it
    /// with the old version and the new one when a write replaces an item.
    pub fn toggle(&mut self, key: &[u8], version: u64) {
        let hash = item_hash(key, version);
        let mut index = leaf_of(key);
        for level in (0..=DEPTH).rev() {
            self.levels[level][index] ^= hash;
            index /= FANOUT;
        }
    }

    pub fn root(&self) -> u64 {
        self.levels[0][0]
    }

    pub fn partition(&self, partition: usize) -> u64 {
        self.levels[PARTITION_LEVEL][partition]
    }

    fn node(&self, level: usize, index: usize) -> u64 {
        self.levels[level][index]
    }
}

/// The initiator's messages: hashes, 8 bytes each, little-endian.
fn encode_hashes(hashes: impl Iterator<Item = u64>, out: &mut Vec<u8>) {
    for hash in hashes {
        out.extend_from_slice(&hash.to_le_bytes());
    }
}

/// Nodes compared per message: 128 KiB of hashes, half a frame.
pub const CHUNK_NODES: usize = 16_384;

/// What one side of an exchange knows: the nodes of the current level it compares, in the
/// order both sides walk them, and how far into them the messages have gone (a level with
/// more than `CHUNK_NODES` nodes takes several messages).
pub struct Walk {
    level: usize,
    nodes: Vec<usize>,
    /// Nodes of `nodes` already compared.
    at: usize,
    /// The differing ones' children (the next level), or, at the leaves, the differing leaves.
    next: Vec<usize>,
    /// The leaves' verdicts are in: `nodes` are the differing leaves.
    finished: bool,
}

impl Walk {
    /// The partitions both replicas hold, in increasing order.
    pub fn new(partitions: &[usize]) -> Walk {
        assert!(partitions.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(partitions.iter().all(|&partition| partition < PARTITIONS));
        Walk {
            level: PARTITION_LEVEL,
            nodes: partitions.to_vec(),
            at: 0,
            next: Vec::new(),
            finished: partitions.is_empty(),
        }
    }

    /// Whether the comparison is over: `nodes` are then the differing leaves (none if the
    /// replicas agree).
    pub fn finished(&self) -> bool {
        self.finished
    }

    pub fn nodes(&self) -> &[usize] {
        &self.nodes
    }

    /// The nodes the next message compares.
    fn chunk(&self) -> &[usize] {
        let end = self.nodes.len().min(self.at + CHUNK_NODES);
        &self.nodes[self.at..end]
    }

    /// Initiator: the hashes of the next chunk of nodes (`Hashes`).
    pub fn hashes(&self, tree: &MerkleTree, out: &mut Vec<u8>) {
        assert!(!self.finished);
        encode_hashes(self.chunk().iter().map(|&n| tree.node(self.level, n)), out);
    }

    /// Responder: compares the initiator's hashes with its own and writes one verdict bit
    /// per node (`Differ`: set if it differs; node `i` is bit `i % 8` of byte `i / 8`), then
    /// steps on as `descend` does. `None` when the message is not one hash per node of the
    /// chunk (a broken peer: end the exchange).
    pub fn differ(&mut self, tree: &MerkleTree, hashes: &[u8], out: &mut Vec<u8>) -> Option<()> {
        let chunk = self.chunk();
        if self.finished || hashes.len() != chunk.len() * 8 {
            return None;
        }
        let start = out.len();
        out.resize(start + chunk.len().div_ceil(8), 0);
        for (at, &node) in chunk.iter().enumerate() {
            let theirs = LittleEndian::read_u64(&hashes[at * 8..]);
            if theirs != tree.node(self.level, node) {
                out[start + at / 8] |= 1 << (at % 8);
            }
        }
        self.descend(&out[start..])
    }

    /// Both sides, after a `Differ`: keep the chunk's nodes that differed (their children, or
    /// at the leaves themselves) and, once the level is done, step down to them. `None` when
    /// the verdicts do not fit the chunk.
    pub fn descend(&mut self, verdicts: &[u8]) -> Option<()> {
        let end = self.nodes.len().min(self.at + CHUNK_NODES);
        let chunk = &self.nodes[self.at..end];
        let count = chunk.len();
        let unused_bits = count.div_ceil(8) * 8 - count;
        if self.finished
            || verdicts.len() != count.div_ceil(8)
            || (unused_bits > 0 && verdicts[count / 8] >> (8 - unused_bits) != 0)
        {
            return None;
        }
        let differs = |at: usize| verdicts[at / 8] & (1 << (at % 8)) != 0;
        let differing = chunk.iter().enumerate().filter(|&(at, _)| differs(at));
        if self.level == DEPTH {
            self.next.extend(differing.map(|(_, &node)| node));
        } else {
            self.next.extend(
                differing.flat_map(|(_, &node)| (0..FANOUT).map(move |c| node * FANOUT + c)),
            );
        }
        self.at += count;
        if self.at == self.nodes.len() {
            self.finished = self.level == DEPTH;
            self.nodes = std::mem::take(&mut self.next);
            self.at = 0;
            self.level = (self.level + 1).min(DEPTH);
            self.finished |= self.nodes.is_empty();
        }
        Some(())
    }
}

/// Both sides, at the leaves: the items of the differing leaves (`Items`).
pub fn encode_items<'a>(items: impl Iterator<Item = (&'a [u8], u64)>, out: &mut Vec<u8>) {
    for (key, version) in items {
        assert!(key.len() <= u16::MAX as usize);
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&version.to_le_bytes());
    }
}

/// Reads an `Items` message; `None` if it is malformed (truncated).
pub fn decode_items(mut bytes: &[u8]) -> Option<Vec<(&[u8], u64)>> {
    let mut items = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < ITEM_HEADER_BYTES {
            return None;
        }
        let length = LittleEndian::read_u16(bytes) as usize;
        if bytes.len() < ITEM_HEADER_BYTES + length {
            return None;
        }
        let key = &bytes[2..2 + length];
        let version = LittleEndian::read_u64(&bytes[2 + length..]);
        items.push((key, version));
        bytes = &bytes[ITEM_HEADER_BYTES + length..];
    }
    Some(items)
}

/// The bytes of a full exchange (every key and version, as `Items`): what anti-entropy is
/// measured against.
pub fn full_exchange_bytes<'a>(keys: impl Iterator<Item = &'a [u8]>) -> usize {
    keys.map(|key| ITEM_HEADER_BYTES + key.len()).sum()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::wire::HEADER_LEN;

    /// A replica's items: key → version.
    type Items = BTreeMap<Vec<u8>, u64>;

    fn tree_of(items: &Items) -> MerkleTree {
        let mut tree = MerkleTree::new();
        for (key, &version) in items {
            tree.toggle(key, version);
        }
        tree
    }

    /// The keys on which two replicas differ, found by looking at both (what the exchange
    /// must find without doing so).
    fn differences(a: &Items, b: &Items) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = a.keys().chain(b.keys()).cloned().collect();
        keys.sort();
        keys.dedup();
        keys.retain(|key| a.get(key) != b.get(key));
        keys
    }

    /// Runs the exchange between replicas `a` (initiator) and `b` over `partitions`, each
    /// message framed as on the wire: (the keys found to differ, bytes exchanged).
    fn exchange(a: &Items, b: &Items, partitions: &[usize]) -> (Vec<Vec<u8>>, usize) {
        let (tree_a, tree_b) = (tree_of(a), tree_of(b));
        let (mut walk_a, mut walk_b) = (Walk::new(partitions), Walk::new(partitions));
        let (mut hashes, mut verdicts) = (Vec::new(), Vec::new());
        let mut bytes = 0;
        while !walk_a.finished() {
            hashes.clear();
            verdicts.clear();
            walk_a.hashes(&tree_a, &mut hashes);
            walk_b.differ(&tree_b, &hashes, &mut verdicts).unwrap();
            walk_a.descend(&verdicts).unwrap();
            bytes += 2 * HEADER_LEN + hashes.len() + verdicts.len();
        }
        assert!(walk_b.finished());
        assert_eq!(walk_a.nodes(), walk_b.nodes());
        let leaves = walk_a.nodes();
        let in_leaves = |items: &Items| -> Vec<u8> {
            let mut out = Vec::new();
            let chosen = items
                .iter()
                .filter(|(key, _)| leaves.binary_search(&leaf_of(key)).is_ok());
            encode_items(
                chosen.map(|(key, &version)| (key.as_slice(), version)),
                &mut out,
            );
            out
        };
        let (sent_a, sent_b) = (in_leaves(a), in_leaves(b));
        bytes += 2 * HEADER_LEN + sent_a.len() + sent_b.len();
        // What each side learns from the other's items: the keys whose versions differ.
        let theirs: Items = decode_items(&sent_b)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v))
            .collect();
        let mine: Items = decode_items(&sent_a)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v))
            .collect();
        (differences(&mine, &theirs), bytes)
    }

    fn key(index: u64) -> Vec<u8> {
        format!("key:{index:08}").into_bytes()
    }

    /// `count` keys at version 1, then `changed` of them (spread by a stride) given version 2
    /// on `b`, a tenth of those deleted from `b` instead, and a tenth new keys on `b` only.
    fn replicas(count: u64, changed: u64) -> (Items, Items) {
        let a: Items = (0..count).map(|i| (key(i), 1)).collect();
        let mut b = a.clone();
        let stride = count / changed.max(1);
        for n in 0..changed {
            let k = key(n * stride + stride / 2);
            match n % 10 {
                0 => drop(b.remove(&k)),
                1 => drop(b.insert(key(count + n), 3)),
                _ => drop(b.insert(k, 2)),
            }
        }
        (a, b)
    }

    const EVERY_PARTITION: [usize; PARTITIONS] = {
        let mut all = [0; PARTITIONS];
        let mut at = 0;
        while at < PARTITIONS {
            all[at] = at;
            at += 1;
        }
        all
    };

    #[test]
    fn writes_update_the_tree_in_place_in_any_order() {
        let (a, _) = replicas(1_000, 0);
        let mut tree = MerkleTree::new();
        for (key, &version) in a.iter().rev() {
            tree.toggle(key, version);
        }
        assert_eq!(tree.root(), tree_of(&a).root());
        assert_ne!(tree.root(), 0);
        // Replacing a version: out with the old, in with the new.
        tree.toggle(&key(5), 1);
        tree.toggle(&key(5), 2);
        let mut b = a.clone();
        b.insert(key(5), 2);
        assert_eq!(tree.root(), tree_of(&b).root());
        assert_ne!(
            tree.partition(partition_of(&key(5))),
            tree_of(&a).partition(partition_of(&key(5)))
        );
        for (key, &version) in &b {
            tree.toggle(key, version);
        }
        assert_eq!(tree.root(), 0);
    }

    #[test]
    fn the_exchange_finds_exactly_the_differing_keys() {
        for (count, changed) in [
            (0, 0),
            (1, 1),
            (50, 0),
            (5_000, 1),
            (5_000, 40),
            (20_000, 2_000),
        ] {
            let (a, b) = replicas(count, changed);
            let (found, _) = exchange(&a, &b, &EVERY_PARTITION);
            assert_eq!(
                found,
                differences(&a, &b),
                "{count} keys, {changed} changed"
            );
        }
    }

    /// Replicas that share only some partitions compare those: differences elsewhere are
    /// not theirs to find.
    /// An empty replica differs everywhere: the walk goes level by level in chunks down to
    /// every leaf that holds a key.
    #[test]
    fn an_empty_replica_is_walked_in_chunks() {
        let (a, _) = replicas(300_000, 0);
        let (found, _) = exchange(&a, &Items::new(), &EVERY_PARTITION);
        assert_eq!(found.len(), 300_000);
        let (found, _) = exchange(&Items::new(), &a, &EVERY_PARTITION);
        assert_eq!(found.len(), 300_000);
    }

    #[test]
    fn only_shared_partitions_are_compared() {
        let (a, b) = replicas(5_000, 100);
        let shared: Vec<usize> = (0..PARTITIONS).filter(|p| p.is_multiple_of(3)).collect();
        let (found, _) = exchange(&a, &b, &shared);
        let mut expected = differences(&a, &b);
        expected.retain(|key| partition_of(key).is_multiple_of(3));
        assert!(!expected.is_empty());
        assert_eq!(found, expected);
    }

    #[test]
    fn malformed_messages_end_the_exchange() {
        let tree = MerkleTree::new();
        let mut walk = Walk::new(&[0, 1]);
        assert!(walk.differ(&tree, &[0; 15], &mut Vec::new()).is_none());
        assert!(walk.descend(&[1, 0]).is_none()); // two nodes, one byte
        assert!(walk.descend(&[0b100]).is_none()); // a verdict for a third node
        assert!(decode_items(&[5, 0, b'a']).is_none());
        assert!(decode_items(&[1]).is_none());
        assert_eq!(decode_items(&[]), Some(Vec::new()));
    }

    /// The yardstick: a million keys, a thousand differing. The figure goes in
    /// docs/kv.md: `cargo test --release --lib roles::kv::merkle -- --nocapture`.
    #[test]
    fn a_thousand_differences_in_a_million_keys_cost_under_two_percent_of_a_full_exchange() {
        let (a, b) = replicas(1_000_000, 1_000);
        let (found, bytes) = exchange(&a, &b, &EVERY_PARTITION);
        assert_eq!(found.len(), 1_000);
        assert_eq!(found, differences(&a, &b));
        let full = full_exchange_bytes(a.keys().map(Vec::as_slice));
        let percent = 100.0 * bytes as f64 / full as f64;
        println!(
            "merkle: 1 000 000 keys, {} differing: {bytes} bytes exchanged, a full exchange \
             {full} bytes: {percent:.2} %",
            found.len()
        );
        assert!(percent <= 2.0, "{percent:.2} %");
    }
}
