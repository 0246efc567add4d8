//! Consistent hashing: each live worker owns `VNODES` points on a 64-bit ring (xxh3 of its id
//! and the point's number); a key's replicas are the first `n` distinct workers clockwise from
//! the key's xxh3. Master and workers compute the same placement from the same membership.

use xxhash_rust::xxh3::xxh3_64;

use crate::node::NodeId;

/// Points per worker: enough to spread keys within a few percent.
pub const VNODES: usize = 128;
/// Most replicas of a key.
pub const REPLICAS_MAX: usize = 8;

#[derive(Clone, Debug, Default)]
pub struct HashRing {
    points: Vec<(u64, NodeId)>,
    members: usize,
}

impl HashRing {
    pub fn new(members: &[NodeId]) -> HashRing {
        let mut points = Vec::with_capacity(members.len() * VNODES);
        for &member in members {
            for point in 0..VNODES {
                let name = [member as u64, point as u64];
                let bytes: Vec<u8> = name.iter().flat_map(|word| word.to_le_bytes()).collect();
                points.push((xxh3_64(&bytes), member));
            }
        }
        points.sort_unstable();
        HashRing {
            points,
            members: members.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The key's replicas, first (primary) first; at most `n` and at most the members.
    pub fn replicas(&self, key: &[u8], n: usize, out: &mut [NodeId; REPLICAS_MAX]) -> usize {
        let wanted = n.min(self.members).min(REPLICAS_MAX);
        if wanted == 0 {
            return 0;
        }
        let hash = xxh3_64(key);
        let start = self.points.partition_point(|&(point, _)| point < hash);
        let mut found = 0;
        for step in 0..self.points.len() {
            let node = self.points[(start + step) % self.points.len()].1;
            if !out[..found].contains(&node) {
                out[found] = node;
                found += 1;
                if found == wanted {
                    break;
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_distinct_stable_and_balanced() {
        let ring = HashRing::new(&[0, 1, 2]);
        let mut out = [0; REPLICAS_MAX];
        let mut primaries = [0u32; 3];
        for key in 0..30_000u32 {
            let key = key.to_be_bytes();
            assert_eq!(ring.replicas(&key, 2, &mut out), 2);
            assert_ne!(out[0], out[1]);
            primaries[out[0]] += 1;
            let first = out[0];
            ring.replicas(&key, 2, &mut out);
            assert_eq!(out[0], first, "stable");
        }
        for count in primaries {
            assert!((7_000..13_000).contains(&count), "{primaries:?}");
        }
        assert_eq!(
            ring.replicas(b"k", 5, &mut out),
            3,
            "no more replicas than members"
        );
    }

    #[test]
    fn losing_a_worker_moves_only_its_keys() {
        let before = HashRing::new(&[0, 1, 2, 3]);
        let after = HashRing::new(&[0, 1, 3]);
        let (mut a, mut b) = ([0; REPLICAS_MAX], [0; REPLICAS_MAX]);
        for key in 0..10_000u32 {
            let key = key.to_be_bytes();
            before.replicas(&key, 1, &mut a);
            after.replicas(&key, 1, &mut b);
            if a[0] != 2 {
                assert_eq!(a[0], b[0], "a key not on the lost worker stays put");
            }
        }
    }
}
