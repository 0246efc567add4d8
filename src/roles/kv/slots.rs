//! Redis Cluster's hash slots, the unit kv places: a key belongs to slot
//! `CRC16(key) mod 16 384`, where CRC16 is the XMODEM variant (polynomial 0x1021, initial value
//! 0, no reflection) and only the `{hash tag}` is hashed when the key has one (the bytes
//! between the first `{` and the first `}` after it, if there is at least one). Keys sharing a
//! tag share a slot, so a multi-key command can stay on one set of replicas.
//!
//! A `SlotMap` gives each slot its replicas, computed once per membership from the
//! consistent-hash ring of `placement.rs` (a partition of `PARTITION_SLOTS` consecutive slots
//! is what is placed: its number is what is hashed), so every node
//! that knows the same members computes the same map and a key's replicas are one table
//! look-up. Using Redis's slots means a later step can tell cluster-aware clients
//! (`CLUSTER SLOTS`, `-MOVED`) where a key lives in the words they already understand.

use super::placement::{HashRing, REPLICAS_MAX};
use crate::node::NodeId;

/// Redis Cluster's slot count.
pub const SLOTS: usize = 16_384;
/// Slots are placed in partitions of consecutive slots: replicas then share whole
/// partitions, which anti-entropy compares (`merkle.rs`), and `CLUSTER SLOTS` can answer in
/// a few hundred ranges rather than thousands.
pub const PARTITIONS: usize = 256;
pub const PARTITION_SLOTS: usize = SLOTS / PARTITIONS;
const _: () = assert!(PARTITIONS * PARTITION_SLOTS == SLOTS);

/// CRC16/XMODEM, one table look-up per byte.
const CRC16_TABLE: [u16; 256] = crc16_table();

const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = (byte as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

/// CRC16/XMODEM of `bytes`, as Redis computes it (`src/crc16.c`).
pub fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &byte| {
        (crc << 8) ^ CRC16_TABLE[((crc >> 8) as u8 ^ byte) as usize]
    })
}

/// The part of `key` that is hashed: its `{hash tag}` if it has a non-empty one, else all of it.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&byte| byte == b'{') else {
        return key;
    };
    match key[open + 1..].iter().position(|&byte| byte == b'}') {
        Some(length) if length > 0 => &key[open + 1..open + 1 + length],
        _ => key,
    }
}

/// The slot of `key`, as Redis Cluster computes it (`CLUSTER KEYSLOT`).
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS as u16
}

/// Every slot's replicas, first (the slot's primary) first.
#[derive(Clone, Debug)]
pub struct SlotMap {
    /// `replicas` entries per slot, slot-major; unused places hold `NodeId::MAX`.
    replicas: Vec<NodeId>,
    per_slot: usize,
}

impl SlotMap {
    /// The placement of every slot on `members` with `replicas` copies each (fewer when
    /// there are fewer members). Costs 256 ring look-ups: once per membership change.
    pub fn new(members: &[NodeId], replicas: usize) -> SlotMap {
        let per_slot = replicas.min(members.len()).min(REPLICAS_MAX);
        let ring = HashRing::new(members);
        let mut map = vec![NodeId::MAX; SLOTS * per_slot];
        let mut found = [0; REPLICAS_MAX];
        for partition in 0..PARTITIONS {
            let count = ring.replicas(&(partition as u16).to_le_bytes(), per_slot, &mut found);
            assert_eq!(count, per_slot);
            let first = partition * PARTITION_SLOTS;
            for slot in first..first + PARTITION_SLOTS {
                map[slot * per_slot..][..per_slot].copy_from_slice(&found[..per_slot]);
            }
        }
        SlotMap {
            replicas: map,
            per_slot,
        }
    }

    /// The partitions `node` holds, in order.
    pub fn partitions_of(&self, node: NodeId) -> impl Iterator<Item = usize> + '_ {
        (0..PARTITIONS)
            .filter(move |&p| self.replicas((p * PARTITION_SLOTS) as u16).contains(&node))
    }

    /// The replicas of `slot`, primary first.
    pub fn replicas(&self, slot: u16) -> &[NodeId] {
        let slot = slot as usize;
        assert!(slot < SLOTS);
        &self.replicas[slot * self.per_slot..][..self.per_slot]
    }

    /// The replicas of `key`'s slot.
    pub fn key_replicas(&self, key: &[u8]) -> &[NodeId] {
        self.replicas(key_slot(key))
    }

    /// The slots `node` holds a copy of, in order.
    pub fn slots_of(&self, node: NodeId) -> impl Iterator<Item = u16> + '_ {
        (0..SLOTS as u16).filter(move |&slot| self.replicas(slot).contains(&node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check value of CRC16/XMODEM, and the slots `CLUSTER KEYSLOT` answers on a
    /// redis-server 7.0 started with `--cluster-enabled yes`.
    #[test]
    fn slots_are_redis_clusters() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
        assert_eq!(key_slot(b"foo"), 12_182);
        assert_eq!(key_slot(b"bar"), 5_061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(key_slot(b"somekey"), 11_058);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"foo{hash_tag}"), 2_515);
        assert_eq!(key_slot(b"{user1000}.following"), 3_443);
        assert_eq!(key_slot(b"foo{{bar}}zap"), 4_015);
    }

    /// The specification's examples of the hash-tag rule.
    #[test]
    fn only_a_non_empty_first_hash_tag_is_hashed() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"{user1000}.followers"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"no tag"), b"no tag");
        assert_eq!(hash_tag(b"open { only"), b"open { only");
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"x{foo}y"), key_slot(b"foo"));
    }

    #[test]
    fn every_slot_has_distinct_replicas_and_members_share_the_load() {
        let members = [0, 1, 2, 3];
        let map = SlotMap::new(&members, 3);
        let mut primaries = [0usize; 4];
        for slot in 0..SLOTS as u16 {
            let replicas = map.replicas(slot);
            assert_eq!(replicas.len(), 3);
            assert!(replicas.iter().all(|node| members.contains(node)));
            assert!(replicas[0] != replicas[1] && replicas[1] != replicas[2]);
            assert!(replicas[0] != replicas[2]);
            primaries[replicas[0]] += 1;
        }
        // 128 points per member spread primaries within ±30 % of a fair share.
        for count in primaries {
            assert!((2_867..=5_325).contains(&count), "{primaries:?}");
        }
        // A partition's slots share their replicas.
        for slot in 0..SLOTS as u16 {
            let first = slot - slot % PARTITION_SLOTS as u16;
            assert_eq!(map.replicas(slot), map.replicas(first));
        }
        let shared: Vec<usize> = map
            .partitions_of(0)
            .filter(|&p| map.replicas((p * PARTITION_SLOTS) as u16).contains(&1))
            .collect();
        assert!(!shared.is_empty() && shared.len() < PARTITIONS);
        let held: usize = members.iter().map(|&node| map.slots_of(node).count()).sum();
        assert_eq!(held, 3 * SLOTS);
    }

    #[test]
    fn fewer_members_than_replicas_hold_every_slot_each() {
        let map = SlotMap::new(&[5, 9], 3);
        assert_eq!(map.key_replicas(b"foo").len(), 2);
        assert_eq!(map.slots_of(5).count(), SLOTS);
        // The same members give the same map, whatever their order.
        let again = SlotMap::new(&[9, 5], 3);
        for slot in 0..SLOTS as u16 {
            assert_eq!(map.replicas(slot), again.replicas(slot));
        }
    }
}
