//! Versions without a master: a hybrid logical clock (Kulkarni et al., 2014) in one `u64`.
//!
//! A version is `time << NODE_BITS | node`. `time` is microseconds since the Unix epoch as
//! this node's clock reads them (`Io::now`), raised when needed past every version this node
//! issued or saw: `time = max(physical, last + 1, seen + 1)`. The logical counter of the
//! paper lives in the low end of `time` — when the physical clock lags, each event advances
//! `time` by one microsecond — so a version stays one integer that the journal, the store
//! and the wire already order.
//!
//! What holds: versions one node issues strictly increase; a version issued after a node saw
//! version `v` (a reply, a replica's answer) is greater than `v`, so a write that causally
//! follows another wins over it whatever the clocks say; two nodes never issue the same
//! version (the node id is in the low bits). `time` stays within the largest clock offset in
//! the cluster (plus one microsecond per event issued faster than one per microsecond) of the
//! local clock: a node whose clock runs ahead makes everyone's versions run ahead with it,
//! never backwards. Between writes with no causal link, the faster clock wins — skew decides
//! which of two concurrent writes is newest, never whether a later one is.

use crate::node::{Micros, NodeId};

/// Bits for the node id: `wire::NODES_MAX` ids.
pub const NODE_BITS: u32 = 10;
const _: () = assert!(1 << NODE_BITS == crate::wire::NODES_MAX);
/// Versions are `u64`; `time` has the rest, enough for µs since 1970 until year 2541.
pub const TIME_MAX: u64 = u64::MAX >> NODE_BITS;

/// The microsecond part of a version.
pub fn time_of(version: u64) -> u64 {
    version >> NODE_BITS
}

/// The node that issued a version.
pub fn node_of(version: u64) -> NodeId {
    (version & ((1 << NODE_BITS) - 1)) as NodeId
}

#[derive(Clone, Debug)]
pub struct Hlc {
    node: NodeId,
    /// The time part of the newest version issued or seen.
    last: u64,
}

impl Hlc {
    pub fn new(node: NodeId) -> Hlc {
        assert!(node < 1 << NODE_BITS);
        Hlc { node, last: 0 }
    }

    /// A new version, greater than every version issued or seen so far.
    pub fn issue(&mut self, now: Micros) -> u64 {
        let time = now.max(self.last + 1);
        assert!(time <= TIME_MAX, "the clock ran past year 2541");
        self.last = time;
        time << NODE_BITS | self.node as u64
    }

    /// Takes note of a version seen elsewhere (a replica's answer, a peer's greeting, the
    /// log at replay): versions issued from now on are greater.
    pub fn observe(&mut self, version: u64) {
        self.last = self.last.max(time_of(version));
    }

    /// The time part of the newest version issued or seen.
    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_are_unique_and_carry_their_node() {
        let mut clock = Hlc::new(7);
        let first = clock.issue(1_000);
        assert_eq!(time_of(first), 1_000);
        assert_eq!(node_of(first), 7);
        // Many in one microsecond, and a clock that steps back: still increasing.
        let mut previous = first;
        for now in [1_000, 1_000, 999, 500, 1_003, 1_003] {
            let version = clock.issue(now);
            assert!(version > previous);
            assert_eq!(node_of(version), 7);
            previous = version;
        }
        assert_eq!(time_of(previous), 1_006);
        // Two nodes at the same instant issue different versions.
        assert_ne!(Hlc::new(1).issue(5_000), Hlc::new(2).issue(5_000));
    }

    /// A node whose clock is behind still issues versions above what it saw: a write that
    /// follows another (its coordinator read the first) wins.
    #[test]
    fn versions_pass_what_was_seen_whatever_the_clocks() {
        let mut ahead = Hlc::new(1);
        let mut behind = Hlc::new(2);
        let seen = ahead.issue(10_000_000); // 10 s ahead
        behind.observe(seen);
        let next = behind.issue(1_000);
        assert!(next > seen);
        assert_eq!(time_of(next), 10_000_001);
        // Once its clock passes, it follows the physical clock again.
        assert_eq!(time_of(behind.issue(20_000_000)), 20_000_000);
        // Observing an older version changes nothing.
        behind.observe(seen);
        assert_eq!(time_of(behind.issue(20_000_000)), 20_000_001);
    }
}
