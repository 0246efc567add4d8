//! The ring role's messages. Each is a fixed layout (named ranges) plus, for some, a trailing
//! array; `decode` checks the exact length before reading anything.

use byteorder::{BigEndian, ByteOrder};

use super::{Item, Items};

/// "No node" in a `u16` node field.
pub const NO_NODE: u16 = u16::MAX;

impl Item for u16 {
    const LEN: usize = 2;
    fn read(bytes: &[u8]) -> Self {
        BigEndian::read_u16(bytes)
    }
    fn write(&self, bytes: &mut [u8]) {
        BigEndian::write_u16(bytes, *self)
    }
}

impl Item for u64 {
    const LEN: usize = 8;
    fn read(bytes: &[u8]) -> Self {
        BigEndian::read_u64(bytes)
    }
    fn write(&self, bytes: &mut [u8]) {
        BigEndian::write_u64(bytes, *self)
    }
}

/// An approved value carried in a state transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexValue {
    pub index: u64,
    pub value: u32,
}

impl Item for IndexValue {
    const LEN: usize = 12;
    fn read(bytes: &[u8]) -> Self {
        IndexValue {
            index: BigEndian::read_u64(&bytes[0..8]),
            value: BigEndian::read_u32(&bytes[8..12]),
        }
    }
    fn write(&self, bytes: &mut [u8]) {
        BigEndian::write_u64(&mut bytes[0..8], self.index);
        BigEndian::write_u32(&mut bytes[8..12], self.value);
    }
}

/// Master → workers: the membership, ring order and index sequence of a new epoch, and the
/// time left in each phase. The sequence is `missing` (indices lost in earlier epochs, to be
/// regenerated) followed by `next, next + 1, ...`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RingEpoch<'a> {
    pub epoch: u32,
    pub window: u16,
    /// The member that sends joiners a `RingSync`, or `NO_NODE`.
    pub sync_from: u16,
    pub seed: u64,
    pub send_left_us: u64,
    pub grace_left_us: u64,
    pub next: u64,
    /// Members that must take their state from `sync_from` (bit per node id).
    pub joiners: u64,
    pub members: Items<'a, u16>,
    pub missing: Items<'a, u64>,
}

mod epoch {
    use std::ops::Range;
    pub const EPOCH: Range<usize> = 0..4;
    pub const WINDOW: Range<usize> = EPOCH.end..EPOCH.end + 2;
    pub const SYNC_FROM: Range<usize> = WINDOW.end..WINDOW.end + 2;
    pub const SEED: Range<usize> = SYNC_FROM.end..SYNC_FROM.end + 8;
    pub const SEND_LEFT: Range<usize> = SEED.end..SEED.end + 8;
    pub const GRACE_LEFT: Range<usize> = SEND_LEFT.end..SEND_LEFT.end + 8;
    pub const NEXT: Range<usize> = GRACE_LEFT.end..GRACE_LEFT.end + 8;
    pub const JOINERS: Range<usize> = NEXT.end..NEXT.end + 8;
    pub const MEMBER_COUNT: Range<usize> = JOINERS.end..JOINERS.end + 2;
    pub const MEMBERS: usize = MEMBER_COUNT.end;
}

impl<'a> RingEpoch<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<Self, &'static str> {
        if payload.len() < epoch::MEMBERS {
            return Err("too short");
        }
        let count = BigEndian::read_u16(&payload[epoch::MEMBER_COUNT]) as usize;
        let missing_at = epoch::MEMBERS + 2 * count;
        if count == 0 || payload.len() < missing_at {
            return Err("member count out of range");
        }
        let missing = Items::from_wire(&payload[missing_at..]).ok_or("missing list not whole")?;
        Ok(RingEpoch {
            epoch: BigEndian::read_u32(&payload[epoch::EPOCH]),
            window: BigEndian::read_u16(&payload[epoch::WINDOW]),
            sync_from: BigEndian::read_u16(&payload[epoch::SYNC_FROM]),
            seed: BigEndian::read_u64(&payload[epoch::SEED]),
            send_left_us: BigEndian::read_u64(&payload[epoch::SEND_LEFT]),
            grace_left_us: BigEndian::read_u64(&payload[epoch::GRACE_LEFT]),
            next: BigEndian::read_u64(&payload[epoch::NEXT]),
            joiners: BigEndian::read_u64(&payload[epoch::JOINERS]),
            members: Items::Wire(&payload[epoch::MEMBERS..missing_at]),
            missing,
        })
    }
    pub fn encoded_len(&self) -> usize {
        epoch::MEMBERS + self.members.encoded_len() + self.missing.encoded_len()
    }
    pub fn encode(&self, out: &mut [u8]) {
        BigEndian::write_u32(&mut out[epoch::EPOCH], self.epoch);
        BigEndian::write_u16(&mut out[epoch::WINDOW], self.window);
        BigEndian::write_u16(&mut out[epoch::SYNC_FROM], self.sync_from);
        BigEndian::write_u64(&mut out[epoch::SEED], self.seed);
        BigEndian::write_u64(&mut out[epoch::SEND_LEFT], self.send_left_us);
        BigEndian::write_u64(&mut out[epoch::GRACE_LEFT], self.grace_left_us);
        BigEndian::write_u64(&mut out[epoch::NEXT], self.next);
        BigEndian::write_u64(&mut out[epoch::JOINERS], self.joiners);
        BigEndian::write_u16(&mut out[epoch::MEMBER_COUNT], self.members.len() as u16);
        let missing_at = epoch::MEMBERS + self.members.encoded_len();
        self.members.encode(&mut out[epoch::MEMBERS..missing_at]);
        self.missing.encode(&mut out[missing_at..]);
    }
}

/// Master → workers: stop generating and approving in `epoch`, and report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingFreeze {
    pub epoch: u32,
}

impl RingFreeze {
    pub const LEN: usize = 4;
    pub fn decode(payload: &[u8]) -> Result<Self, &'static str> {
        if payload.len() != Self::LEN {
            return Err("wrong length");
        }
        Ok(RingFreeze {
            epoch: BigEndian::read_u32(&payload[0..4]),
        })
    }
    pub fn encode(&self, out: &mut [u8]) {
        BigEndian::write_u32(&mut out[0..4], self.epoch);
    }
}

/// lamport: a machine's logical clock (and, with vector clocks, its vector).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LamportMessage<'a> {
    pub clock: u64,
    pub vector: Items<'a, u64>,
}

impl<'a> LamportMessage<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<Self, &'static str> {
        if payload.len() < 8 {
            return Err("too short");
        }
        let vector = Items::from_wire(&payload[8..]).ok_or("vector not whole")?;
        if vector.len() > super::NODES_MAX {
            return Err("vector too long");
        }
        Ok(LamportMessage {
            clock: BigEndian::read_u64(&payload[0..8]),
            vector,
        })
    }
    pub fn encoded_len(&self) -> usize {
        8 + self.vector.encoded_len()
    }
    pub fn encode(&self, out: &mut [u8]) {
        BigEndian::write_u64(&mut out[0..8], self.clock);
        self.vector.encode(&mut out[8..]);
    }
}

/// Joiner → the epoch's sync source: send me the ring's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSyncRequest {
    pub epoch: u32,
}

impl RingSyncRequest {
    pub const LEN: usize = 4;
    pub fn decode(payload: &[u8]) -> Result<Self, &'static str> {
        if payload.len() != Self::LEN {
            return Err("wrong length");
        }
        Ok(RingSyncRequest {
            epoch: BigEndian::read_u32(&payload[0..4]),
        })
    }
    pub fn encode(&self, out: &mut [u8]) {
        BigEndian::write_u32(&mut out[0..4], self.epoch);
    }
}

/// Generator → every member: the value of sequence position `k` (index `index`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingValue {
    pub epoch: u32,
    pub k: u64,
    pub index: u64,
    pub value: u32,
    /// The generator's clock when it sent the value (µs), for hop-latency measurements.
    pub sent_us: u64,
}

impl RingValue {
    pub const LEN: usize = 32;
    pub fn decode(payload: &[u8]) -> Result<Self, &'static str> {
        if payload.len() != Self::LEN {
            return Err("wrong length");
        }
        Ok(RingValue {
            epoch: BigEndian::read_u32(&payload[0..4]),
            k: BigEndian::read_u64(&payload[4..12]),
            index: BigEndian::read_u64(&payload[12..20]),
            value: BigEndian::read_u32(&payload[20..24]),
            sent_us: BigEndian::read_u64(&payload[24..32]),
        })
    }
    pub fn encode(&self, out: &mut [u8]) {
        BigEndian::write_u32(&mut out[0..4], self.epoch);
        BigEndian::write_u64(&mut out[4..12], self.k);
        BigEndian::write_u64(&mut out[12..20], self.index);
        BigEndian::write_u32(&mut out[20..24], self.value);
        BigEndian::write_u64(&mut out[24..32], self.sent_us);
    }
}

/// Member → generator: I hold the value of sequence position `k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfirm {
    pub epoch: u32,
    pub k: u64,
}

impl RingConfirm {
    pub const LEN: usize = 12;
    pub fn decode(payload: &[u8]) -> Result<Self, &'static str> {
        if payload.len() != Self::LEN {
            return Err("wrong length");
        }
        Ok(RingConfirm {
            epoch: BigEndian::read_u32(&payload[0..4]),
            k: BigEndian::read_u64(&payload[4..12]),
        })
    }
    pub fn encode(&self, out: &mut [u8]) {
        BigEndian::write_u32(&mut out[0..4], self.epoch);
        BigEndian::write_u64(&mut out[4..12], self.k);
    }
}

/// Generator → every member: every member holds index `index`; it counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingApprove {
    pub epoch: u32,
    pub index: u64,
}

impl RingApprove {
    pub const LEN: usize = 12;
    pub fn decode(payload: &[u8]) -> Result<Self, &'static str> {
        if payload.len() != Self::LEN {
            return Err("wrong length");
        }
        Ok(RingApprove {
            epoch: BigEndian::read_u32(&payload[0..4]),
            index: BigEndian::read_u64(&payload[4..12]),
        })
    }
    pub fn encode(&self, out: &mut [u8]) {
        BigEndian::write_u32(&mut out[0..4], self.epoch);
        BigEndian::write_u64(&mut out[4..12], self.index);
    }
}

/// Worker → master at the end: its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingResult {
    pub count: u64,
    pub sum: u128,
    /// The epoch the worker ended in: a result from an older epoch than the master's last is
    /// a worker left behind by a re-formation, not a disagreement.
    pub epoch: u32,
}

impl RingResult {
    pub const LEN: usize = 28;
    pub fn decode(payload: &[u8]) -> Result<Self, &'static str> {
        if payload.len() != Self::LEN {
            return Err("wrong length");
        }
        Ok(RingResult {
            count: BigEndian::read_u64(&payload[0..8]),
            sum: BigEndian::read_u128(&payload[8..24]),
            epoch: BigEndian::read_u32(&payload[24..28]),
        })
    }
    pub fn encode(&self, out: &mut [u8]) {
        BigEndian::write_u64(&mut out[0..8], self.count);
        BigEndian::write_u128(&mut out[8..24], self.sum);
        BigEndian::write_u32(&mut out[24..28], self.epoch);
    }
}

/// Worker → master every tick (heartbeat) and after a freeze: the approved indices it knows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RingReport<'a> {
    pub epoch: u32,
    pub frozen: bool,
    /// The sender holds the ring's state (it has been a member from the start, or synced).
    pub settled: bool,
    /// The sender's run is over: `prefix` is its final approved prefix, which the members
    /// exchange to agree on the result (the largest of them).
    pub closing: bool,
    /// With `closing`: the sender heard every member's final prefix and `prefix` is the
    /// largest, the agreed result; a member still waiting for some final may take it.
    pub agreed: bool,
    /// Every index up to `prefix` is approved (and folded).
    pub prefix: u64,
    /// Approved indices above `prefix`.
    pub approved: Items<'a, u64>,
}

impl<'a> RingReport<'a> {
    const FIXED: usize = 13;
    pub fn decode(payload: &'a [u8]) -> Result<Self, &'static str> {
        if payload.len() < Self::FIXED || payload[4] > 15 {
            return Err("bad header");
        }
        Ok(RingReport {
            epoch: BigEndian::read_u32(&payload[0..4]),
            frozen: payload[4] & 1 != 0,
            settled: payload[4] & 2 != 0,
            closing: payload[4] & 4 != 0,
            agreed: payload[4] & 8 != 0,
            prefix: BigEndian::read_u64(&payload[5..13]),
            approved: Items::from_wire(&payload[Self::FIXED..]).ok_or("approved list not whole")?,
        })
    }
    pub fn encoded_len(&self) -> usize {
        Self::FIXED + self.approved.encoded_len()
    }
    pub fn encode(&self, out: &mut [u8]) {
        BigEndian::write_u32(&mut out[0..4], self.epoch);
        out[4] = self.frozen as u8
            | (self.settled as u8) << 1
            | (self.closing as u8) << 2
            | (self.agreed as u8) << 3;
        BigEndian::write_u64(&mut out[5..13], self.prefix);
        self.approved.encode(&mut out[Self::FIXED..]);
    }
}

/// A survivor → a re-admitted worker: the folded state up to `prefix`, and the approved values
/// above it that are not folded yet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RingSync<'a> {
    pub epoch: u32,
    pub prefix: u64,
    pub count: u64,
    pub sum: u128,
    pub entries: Items<'a, IndexValue>,
}

impl<'a> RingSync<'a> {
    const FIXED: usize = 36;
    pub fn decode(payload: &'a [u8]) -> Result<Self, &'static str> {
        if payload.len() < Self::FIXED {
            return Err("too short");
        }
        Ok(RingSync {
            epoch: BigEndian::read_u32(&payload[0..4]),
            prefix: BigEndian::read_u64(&payload[4..12]),
            count: BigEndian::read_u64(&payload[12..20]),
            sum: BigEndian::read_u128(&payload[20..36]),
            entries: Items::from_wire(&payload[Self::FIXED..]).ok_or("entries not whole")?,
        })
    }
    pub fn encoded_len(&self) -> usize {
        Self::FIXED + self.entries.encoded_len()
    }
    pub fn encode(&self, out: &mut [u8]) {
        BigEndian::write_u32(&mut out[0..4], self.epoch);
        BigEndian::write_u64(&mut out[4..12], self.prefix);
        BigEndian::write_u64(&mut out[12..20], self.count);
        BigEndian::write_u128(&mut out[20..36], self.sum);
        self.entries.encode(&mut out[Self::FIXED..]);
    }
}
