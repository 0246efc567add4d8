//! The kv role's messages. Operations and results travel in batches: one frame carries every
//! operation the master has for a worker at the end of a loop iteration. A batch is a byte
//! run of records, validated whole at decode time so that iterating it cannot fail.

use byteorder::{BigEndian, ByteOrder};

use super::Items;

pub const OP_GET: u8 = 1;
pub const OP_SET: u8 = 2;
pub const OP_DEL: u8 = 3;
/// Store without replying (a transfer during rebalancing); applied only if newer.
pub const OP_PUT: u8 = 4;
/// Reply with this worker's counts (`KvStats` as the value).
pub const OP_STATS: u8 = 5;
/// Exit.
pub const OP_KILL: u8 = 6;
/// Reply with the version held (and whether it is a value: `STATUS_VALUE` or `STATUS_NIL`),
/// not the value: the first phase of a masterless write.
pub const OP_VERSION: u8 = 7;
const OP_MAX: u8 = 7;

pub const STATUS_OK: u8 = 0;
pub const STATUS_NIL: u8 = 1;
pub const STATUS_VALUE: u8 = 2;
/// The value is an 8-byte integer.
pub const STATUS_INTEGER: u8 = 3;
const STATUS_MAX: u8 = 3;

/// A record header: kind, request, version, key length, value length.
const OP_HEADER: usize = 1 + 8 + 8 + 2 + 4;
/// A result header: request, status, version, value length.
const RESULT_HEADER: usize = 8 + 1 + 8 + 4;

/// The request id of a worker's greeting result: its `version` is the highest version the
/// worker holds (from its log), so that a restarted master never issues older versions; its
/// value is the worker's fsync policy (`always`, `everysec`, `no`), empty without a log.
pub const REQUEST_HELLO: u64 = 0;

/// Largest key.
pub const KEY_BYTES_MAX: usize = 1024;
/// Largest value (documented limit; larger SETs are refused with an error).
pub const VALUE_BYTES_MAX: usize = 128 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op<'a> {
    pub kind: u8,
    pub request: u64,
    /// Write order assigned by the master: a newer version wins.
    pub version: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl Op<'_> {
    /// `OP_KILL`: the node that receives it exits.
    pub fn kill() -> Op<'static> {
        Op {
            kind: OP_KILL,
            request: 0,
            version: 0,
            key: b"",
            value: b"",
        }
    }

    pub fn encoded_len(&self) -> usize {
        OP_HEADER + self.key.len() + self.value.len()
    }

    /// Appends the record to a batch being built.
    pub fn append_to(&self, batch: &mut Vec<u8>) {
        let start = batch.len();
        batch.resize(start + OP_HEADER, 0);
        let header = &mut batch[start..];
        header[0] = self.kind;
        BigEndian::write_u64(&mut header[1..9], self.request);
        BigEndian::write_u64(&mut header[9..17], self.version);
        BigEndian::write_u16(&mut header[17..19], self.key.len() as u16);
        BigEndian::write_u32(&mut header[19..23], self.value.len() as u32);
        batch.extend_from_slice(self.key);
        batch.extend_from_slice(self.value);
    }
}

/// Master → worker (and worker → master → worker for transfers): a batch of operations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KvOps<'a> {
    /// For a worker's transfer: the worker the master should forward it to; else `NO_NODE`.
    pub target: u16,
    /// Validated records.
    pub ops: &'a [u8],
}

impl<'a> KvOps<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<Self, &'static str> {
        if payload.len() < 2 {
            return Err("too short");
        }
        let ops = &payload[2..];
        let mut at = 0;
        while at < ops.len() {
            if ops.len() - at < OP_HEADER {
                return Err("truncated operation");
            }
            let header = &ops[at..];
            if header[0] == 0 || header[0] > OP_MAX {
                return Err("unknown operation");
            }
            let key = BigEndian::read_u16(&header[17..19]) as usize;
            let value = BigEndian::read_u32(&header[19..23]) as usize;
            if key > KEY_BYTES_MAX || value > VALUE_BYTES_MAX {
                return Err("operation too large");
            }
            at += OP_HEADER;
            if ops.len() - at < key + value {
                return Err("truncated operation");
            }
            at += key + value;
        }
        Ok(KvOps {
            target: BigEndian::read_u16(&payload[0..2]),
            ops,
        })
    }

    pub fn encoded_len(&self) -> usize {
        2 + self.ops.len()
    }

    pub fn encode(&self, out: &mut [u8]) {
        BigEndian::write_u16(&mut out[0..2], self.target);
        out[2..2 + self.ops.len()].copy_from_slice(self.ops);
    }

    pub fn iter(&self) -> impl Iterator<Item = Op<'a>> + 'a {
        let ops = self.ops;
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= ops.len() {
                return None;
            }
            let header = &ops[at..];
            let key = BigEndian::read_u16(&header[17..19]) as usize;
            let value = BigEndian::read_u32(&header[19..23]) as usize;
            let body = at + OP_HEADER;
            let op = Op {
                kind: header[0],
                request: BigEndian::read_u64(&header[1..9]),
                version: BigEndian::read_u64(&header[9..17]),
                key: &ops[body..body + key],
                value: &ops[body + key..body + key + value],
            };
            at = body + key + value;
            Some(op)
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpResult<'a> {
    pub request: u64,
    pub status: u8,
    /// For reads: the version of what the replica holds (0: never written), so that the master
    /// can pick the newest answer and repair stale replicas.
    pub version: u64,
    pub value: &'a [u8],
}

impl OpResult<'_> {
    pub fn encoded_len(&self) -> usize {
        RESULT_HEADER + self.value.len()
    }

    pub fn append_to(&self, batch: &mut Vec<u8>) {
        let start = batch.len();
        batch.resize(start + RESULT_HEADER, 0);
        let header = &mut batch[start..];
        BigEndian::write_u64(&mut header[0..8], self.request);
        header[8] = self.status;
        BigEndian::write_u64(&mut header[9..17], self.version);
        BigEndian::write_u32(&mut header[17..21], self.value.len() as u32);
        batch.extend_from_slice(self.value);
    }
}

/// Worker → master: a batch of results.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KvResults<'a> {
    pub results: &'a [u8],
}

impl<'a> KvResults<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<Self, &'static str> {
        let mut at = 0;
        while at < payload.len() {
            if payload.len() - at < RESULT_HEADER {
                return Err("truncated result");
            }
            if payload[at + 8] > STATUS_MAX {
                return Err("unknown status");
            }
            let value = BigEndian::read_u32(&payload[at + 17..at + 21]) as usize;
            at += RESULT_HEADER;
            if value > VALUE_BYTES_MAX || payload.len() - at < value {
                return Err("truncated result");
            }
            at += value;
        }
        Ok(KvResults { results: payload })
    }

    pub fn encoded_len(&self) -> usize {
        self.results.len()
    }

    pub fn encode(&self, out: &mut [u8]) {
        out[..self.results.len()].copy_from_slice(self.results);
    }

    pub fn iter(&self) -> impl Iterator<Item = OpResult<'a>> + 'a {
        let results = self.results;
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= results.len() {
                return None;
            }
            let value = BigEndian::read_u32(&results[at + 17..at + 21]) as usize;
            let result = OpResult {
                request: BigEndian::read_u64(&results[at..at + 8]),
                status: results[at + 8],
                version: BigEndian::read_u64(&results[at + 9..at + 17]),
                value: &results[at + RESULT_HEADER..at + RESULT_HEADER + value],
            };
            at += RESULT_HEADER + value;
            Some(result)
        })
    }
}

/// Master → workers: the live membership (placement follows from it) and the replica count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KvMembership<'a> {
    pub epoch: u32,
    pub replicas: u8,
    pub members: Items<'a, u16>,
}

impl<'a> KvMembership<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<Self, &'static str> {
        if payload.len() < 5 {
            return Err("too short");
        }
        Ok(KvMembership {
            epoch: BigEndian::read_u32(&payload[0..4]),
            replicas: payload[4],
            members: Items::from_wire(&payload[5..]).ok_or("members not whole")?,
        })
    }

    pub fn encoded_len(&self) -> usize {
        5 + self.members.encoded_len()
    }

    pub fn encode(&self, out: &mut [u8]) {
        BigEndian::write_u32(&mut out[0..4], self.epoch);
        out[4] = self.replicas;
        self.members.encode(&mut out[5..]);
    }
}

/// Master → worker: `batches` of the worker's transfer batches for `target` were passed on.
/// A worker keeps at most a window of batches per target un-credited, which bounds what the
/// master holds for a slow target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCredit {
    pub target: u16,
    pub batches: u32,
}

impl KvCredit {
    pub const LEN: usize = 6;

    pub fn decode(payload: &[u8]) -> Result<Self, &'static str> {
        if payload.len() != Self::LEN {
            return Err("wrong length");
        }
        Ok(KvCredit {
            target: BigEndian::read_u16(&payload[0..2]),
            batches: BigEndian::read_u32(&payload[2..6]),
        })
    }

    pub fn encode(&self, out: &mut [u8]) {
        BigEndian::write_u16(&mut out[0..2], self.target);
        BigEndian::write_u32(&mut out[2..6], self.batches);
    }
}

/// A worker's counts, the value of an `OP_STATS` result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvStats {
    /// Live keys held.
    pub keys: u64,
    /// Keys for which this worker is the first replica.
    pub primary: u64,
    /// Keys held that this worker is not a replica of any more.
    pub misplaced: u64,
}

impl KvStats {
    pub const LEN: usize = 24;

    pub fn write(&self, out: &mut [u8; 24]) {
        BigEndian::write_u64(&mut out[0..8], self.keys);
        BigEndian::write_u64(&mut out[8..16], self.primary);
        BigEndian::write_u64(&mut out[16..24], self.misplaced);
    }

    pub fn read(bytes: &[u8]) -> Option<KvStats> {
        (bytes.len() == Self::LEN).then(|| KvStats {
            keys: BigEndian::read_u64(&bytes[0..8]),
            primary: BigEndian::read_u64(&bytes[8..16]),
            misplaced: BigEndian::read_u64(&bytes[16..24]),
        })
    }
}

pub const SWIM_PING: u8 = 1;
pub const SWIM_ACK: u8 = 2;
pub const SWIM_PING_REQ: u8 = 3;
/// One membership update on the wire: node, state, incarnation.
pub const SWIM_UPDATE_BYTES: usize = 2 + 1 + 8;
/// Most updates one message carries.
pub const SWIM_UPDATES_MAX: usize = 6;
/// Largest state code (alive 0, suspect 1, dead 2).
pub const SWIM_STATE_MAX: u8 = 2;
const SWIM_HEADER: usize = 1 + 8 + 2;

/// Node ↔ node: a SWIM probe, its answer or a request to probe, with piggybacked updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvSwim<'a> {
    pub kind: u8,
    pub sequence: u64,
    /// The probed node (`Ack`, `PingReq`); unused in a `Ping`.
    pub target: u16,
    /// Validated: whole updates, at most `SWIM_UPDATES_MAX`, known states.
    updates: &'a [u8],
}

impl<'a> KvSwim<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<Self, &'static str> {
        if payload.len() < SWIM_HEADER {
            return Err("too short");
        }
        let kind = payload[0];
        if !(SWIM_PING..=SWIM_PING_REQ).contains(&kind) {
            return Err("unknown probe kind");
        }
        let updates = &payload[SWIM_HEADER..];
        if !updates.len().is_multiple_of(SWIM_UPDATE_BYTES) {
            return Err("updates not whole");
        }
        if updates.len() / SWIM_UPDATE_BYTES > SWIM_UPDATES_MAX {
            return Err("too many updates");
        }
        if updates
            .chunks(SWIM_UPDATE_BYTES)
            .any(|update| update[2] > SWIM_STATE_MAX)
        {
            return Err("unknown state");
        }
        Ok(KvSwim {
            kind,
            sequence: BigEndian::read_u64(&payload[1..9]),
            target: BigEndian::read_u16(&payload[9..11]),
            updates,
        })
    }

    /// A message to encode, its updates written by `write_update` into `buffer` first.
    pub fn new(kind: u8, sequence: u64, target: u16, updates: &'a [u8]) -> KvSwim<'a> {
        assert!(updates.len().is_multiple_of(SWIM_UPDATE_BYTES));
        assert!(updates.len() / SWIM_UPDATE_BYTES <= SWIM_UPDATES_MAX);
        KvSwim {
            kind,
            sequence,
            target,
            updates,
        }
    }

    /// `(node, state, incarnation)` of each update.
    pub fn updates(&self) -> impl Iterator<Item = (u16, u8, u64)> + '_ {
        self.updates.chunks(SWIM_UPDATE_BYTES).map(|update| {
            (
                BigEndian::read_u16(&update[0..2]),
                update[2],
                BigEndian::read_u64(&update[3..11]),
            )
        })
    }

    pub fn encoded_len(&self) -> usize {
        SWIM_HEADER + self.updates.len()
    }

    pub fn encode(&self, out: &mut [u8]) {
        out[0] = self.kind;
        BigEndian::write_u64(&mut out[1..9], self.sequence);
        BigEndian::write_u16(&mut out[9..11], self.target);
        out[SWIM_HEADER..SWIM_HEADER + self.updates.len()].copy_from_slice(self.updates);
    }
}

/// Writes one update, as `KvSwim::updates` reads it, into `out` (`SWIM_UPDATE_BYTES` long).
pub fn write_swim_update(out: &mut [u8], node: u16, state: u8, incarnation: u64) {
    BigEndian::write_u16(&mut out[0..2], node);
    out[2] = state;
    BigEndian::write_u64(&mut out[3..11], incarnation);
}

/// Anti-entropy steps (see `roles::kv::merkle`): the initiator's hashes, the responder's
/// verdicts, the initiator's items of the differing leaves, the keys the responder wants
/// from them, and the end of a session.
pub const TREE_HASHES: u8 = 1;
pub const TREE_VERDICTS: u8 = 2;
pub const TREE_ITEMS: u8 = 3;
pub const TREE_WANTS: u8 = 4;
pub const TREE_END: u8 = 5;
const TREE_HEADER: usize = 4 + 1;

/// Node ↔ node: one step of an anti-entropy session. The body's layout is the step's, checked
/// by the session that reads it (a malformed body ends the session, not the connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvTree<'a> {
    pub session: u32,
    pub step: u8,
    pub body: &'a [u8],
}

impl<'a> KvTree<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<Self, &'static str> {
        if payload.len() < TREE_HEADER {
            return Err("too short");
        }
        let step = payload[4];
        if !(TREE_HASHES..=TREE_END).contains(&step) {
            return Err("unknown step");
        }
        Ok(KvTree {
            session: BigEndian::read_u32(&payload[0..4]),
            step,
            body: &payload[TREE_HEADER..],
        })
    }

    pub fn encoded_len(&self) -> usize {
        TREE_HEADER + self.body.len()
    }

    pub fn encode(&self, out: &mut [u8]) {
        BigEndian::write_u32(&mut out[0..4], self.session);
        out[4] = self.step;
        out[TREE_HEADER..TREE_HEADER + self.body.len()].copy_from_slice(self.body);
    }
}
