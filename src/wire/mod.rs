//! The node-to-node frame codec.
//!
//! A frame is a fixed header — total length (`u32`, header included) and kind (`u8`) — and a
//! payload whose layout the kind fixes. All integers are in network order. Field offsets are
//! named ranges; lengths are derived from them, never written twice.
//!
//! Input is untrusted. `frame_len` checks the length field against `HEADER_LEN` and
//! `FRAME_BYTES_MAX` before anything else; `decode` checks the kind and the payload's exact
//! size before any accessor runs, so no accessor can panic afterwards. Errors are values for
//! the caller to act on (the driver closes that one connection); nothing here allocates.
//!
//! Decoded messages borrow from the read buffer; `encode` writes into storage the caller
//! provides (the driver hands it the free tail of a connection's out buffer).

pub mod auth;
pub mod client;
mod items;
pub mod kv;
mod ring;

pub use items::{Item, Items};
pub use ring::{
    IndexValue, LamportMessage, NO_NODE, RingApprove, RingConfirm, RingEpoch, RingFreeze,
    RingReport, RingResult, RingSync, RingSyncRequest, RingValue,
};

use byteorder::{BigEndian, ByteOrder};
use std::fmt;

use crate::node::NodeId;

/// Largest frame accepted or sent, header included.
pub const FRAME_BYTES_MAX: usize = 256 * 1024;
/// Largest cluster supported; node ids travel as `u16`.
pub const NODES_MAX: usize = 1024;
/// Largest cluster name in a handshake.
pub const CLUSTER_NAME_BYTES_MAX: usize = 64;

pub const MAGIC: u32 = u32::from_be_bytes(*b"PLN\x01");
pub const PROTOCOL_VERSION: u16 = 1;

mod header {
    use std::ops::Range;
    pub const LENGTH: Range<usize> = 0..4;
    pub const KIND: usize = LENGTH.end;
    pub const PAYLOAD: usize = KIND + 1;
}

/// Bytes before the payload.
pub const HEADER_LEN: usize = header::PAYLOAD;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    GossipBatch = 2,
    GossipState = 3,
    RingEpoch = 4,
    RingFreeze = 5,
    RingValue = 6,
    RingConfirm = 7,
    RingApprove = 8,
    RingReport = 9,
    RingSync = 10,
    RingResult = 11,
    RingSyncRequest = 12,
    KvOps = 13,
    KvResults = 14,
    KvMembership = 15,
    LamportMessage = 16,
    AuthChallenge = 17,
    AuthProof = 18,
    KvCredit = 19,
    KvSwim = 20,
    KvTree = 21,
}

impl Kind {
    fn from_u8(value: u8) -> Option<Kind> {
        match value {
            1 => Some(Kind::Hello),
            2 => Some(Kind::GossipBatch),
            3 => Some(Kind::GossipState),
            4 => Some(Kind::RingEpoch),
            5 => Some(Kind::RingFreeze),
            6 => Some(Kind::RingValue),
            7 => Some(Kind::RingConfirm),
            8 => Some(Kind::RingApprove),
            9 => Some(Kind::RingReport),
            10 => Some(Kind::RingSync),
            11 => Some(Kind::RingResult),
            12 => Some(Kind::RingSyncRequest),
            13 => Some(Kind::KvOps),
            14 => Some(Kind::KvResults),
            15 => Some(Kind::KvMembership),
            16 => Some(Kind::LamportMessage),
            17 => Some(Kind::AuthChallenge),
            18 => Some(Kind::AuthProof),
            19 => Some(Kind::KvCredit),
            20 => Some(Kind::KvSwim),
            21 => Some(Kind::KvTree),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The length field is smaller than a header.
    LengthTooSmall(u32),
    /// The length field exceeds `FRAME_BYTES_MAX`.
    LengthTooLarge(u32),
    UnknownKind(u8),
    /// The payload does not fit the kind's layout.
    Malformed(Kind, &'static str),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::LengthTooSmall(n) => write!(f, "frame length {n} below header size"),
            WireError::LengthTooLarge(n) => {
                write!(f, "frame length {n} above maximum {FRAME_BYTES_MAX}")
            }
            WireError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            WireError::Malformed(kind, why) => write!(f, "malformed {kind:?} frame: {why}"),
        }
    }
}

/// Length of the first frame in `bytes` once it is complete: `Ok(None)` while more bytes are
/// needed, an error as soon as the header shows the frame can never be valid.
pub fn frame_len(bytes: &[u8]) -> Result<Option<usize>, WireError> {
    if bytes.len() < header::LENGTH.end {
        return Ok(None);
    }
    let length = BigEndian::read_u32(&bytes[header::LENGTH]);
    if (length as usize) < HEADER_LEN {
        return Err(WireError::LengthTooSmall(length));
    }
    if length as usize > FRAME_BYTES_MAX {
        return Err(WireError::LengthTooLarge(length));
    }
    if bytes.len() < length as usize {
        return Ok(None);
    }
    Ok(Some(length as usize))
}

/// The handshake: the first frame each side sends on every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    pub version: u16,
    /// Number of nodes in the sender's peers list: both sides must agree.
    pub nodes: u16,
    pub node: u16,
    pub cluster: &'a [u8],
}

mod hello {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION: Range<usize> = MAGIC.end..MAGIC.end + 2;
    pub const NODES: Range<usize> = VERSION.end..VERSION.end + 2;
    pub const NODE: Range<usize> = NODES.end..NODES.end + 2;
    pub const CLUSTER_LEN: usize = NODE.end;
    pub const CLUSTER: usize = CLUSTER_LEN + 1;
}

/// A run of consecutive messages of one origin's gossip stream, all stamped with one send time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GossipBatch<'a> {
    pub origin: u16,
    pub timestamp_us: u64,
    pub first_seq: u64,
    /// Each value `v` stands for the number `(v + 1) / 2^32` in (0, 1].
    pub values: Items<'a, u32>,
}

mod gossip_batch {
    use std::ops::Range;
    pub const ORIGIN: Range<usize> = 0..2;
    pub const TIMESTAMP: Range<usize> = ORIGIN.end..ORIGIN.end + 8;
    pub const FIRST_SEQ: Range<usize> = TIMESTAMP.end..TIMESTAMP.end + 8;
    pub const VALUES: usize = FIRST_SEQ.end;
}

/// Most values one batch frame can carry.
pub const GOSSIP_BATCH_VALUES_MAX: usize =
    (FRAME_BYTES_MAX - HEADER_LEN - gossip_batch::VALUES) / 4;

/// What the sender knows of one origin's stream; a `GossipState` carries one per node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OriginState {
    /// Messages held: the sender has the stream's prefix `[0, have)`.
    pub have: u64,
    /// The stream's announced final length, or `FIN_UNKNOWN`.
    pub fin: u64,
    /// Bit flags: `ORIGIN_CONNECTED`, `ORIGIN_COMPLETE`.
    pub flags: u8,
    /// When the origin's send phase ends (its start plus its `--send-for`, µs since the Unix
    /// epoch on the origin's clock), or `SEND_END_UNKNOWN` if the sender has not heard it yet.
    /// The earliest of them all is the cut every node folds to.
    pub send_end_us: u64,
}

pub const SEND_END_UNKNOWN: u64 = 0;

pub const FIN_UNKNOWN: u64 = u64::MAX;
/// The sender has a live connection to this origin (or is it).
pub const ORIGIN_CONNECTED: u8 = 1;
/// The sender knows that node (this entry's index) holds every stream complete: it said so
/// itself, or someone relayed that it had. Once true it stays true.
pub const ORIGIN_COMPLETE: u8 = 2;

mod origin_state {
    use std::ops::Range;
    pub const HAVE: Range<usize> = 0..8;
    pub const FIN: Range<usize> = HAVE.end..HAVE.end + 8;
    pub const FLAGS: usize = FIN.end;
    pub const SEND_END: Range<usize> = FLAGS + 1..FLAGS + 9;
    pub const LEN: usize = SEND_END.end;
}

impl Item for OriginState {
    const LEN: usize = origin_state::LEN;
    fn read(bytes: &[u8]) -> Self {
        OriginState {
            have: BigEndian::read_u64(&bytes[origin_state::HAVE]),
            fin: BigEndian::read_u64(&bytes[origin_state::FIN]),
            flags: bytes[origin_state::FLAGS],
            send_end_us: BigEndian::read_u64(&bytes[origin_state::SEND_END]),
        }
    }
    fn write(&self, bytes: &mut [u8]) {
        BigEndian::write_u64(&mut bytes[origin_state::HAVE], self.have);
        BigEndian::write_u64(&mut bytes[origin_state::FIN], self.fin);
        bytes[origin_state::FLAGS] = self.flags;
        BigEndian::write_u64(&mut bytes[origin_state::SEND_END], self.send_end_us);
    }
}

/// The sender's view of every origin, indexed by node id: acknowledgement, watermark and
/// end-of-stream announcement in one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GossipState<'a> {
    pub origins: Items<'a, OriginState>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Message<'a> {
    Hello(Hello<'a>),
    GossipBatch(GossipBatch<'a>),
    GossipState(GossipState<'a>),
    RingEpoch(RingEpoch<'a>),
    RingFreeze(RingFreeze),
    RingValue(RingValue),
    RingConfirm(RingConfirm),
    RingApprove(RingApprove),
    RingReport(RingReport<'a>),
    RingSync(RingSync<'a>),
    RingResult(RingResult),
    RingSyncRequest(RingSyncRequest),
    AuthChallenge(auth::AuthChallenge),
    AuthProof(auth::AuthProof),
    KvOps(kv::KvOps<'a>),
    KvResults(kv::KvResults<'a>),
    KvMembership(kv::KvMembership<'a>),
    KvCredit(kv::KvCredit),
    KvSwim(kv::KvSwim<'a>),
    KvTree(kv::KvTree<'a>),
    LamportMessage(LamportMessage<'a>),
}

impl<'a> Message<'a> {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::GossipBatch(_) => Kind::GossipBatch,
            Message::GossipState(_) => Kind::GossipState,
            Message::RingEpoch(_) => Kind::RingEpoch,
            Message::RingFreeze(_) => Kind::RingFreeze,
            Message::RingValue(_) => Kind::RingValue,
            Message::RingConfirm(_) => Kind::RingConfirm,
            Message::RingApprove(_) => Kind::RingApprove,
            Message::RingReport(_) => Kind::RingReport,
            Message::RingSync(_) => Kind::RingSync,
            Message::RingResult(_) => Kind::RingResult,
            Message::RingSyncRequest(_) => Kind::RingSyncRequest,
            Message::AuthChallenge(_) => Kind::AuthChallenge,
            Message::AuthProof(_) => Kind::AuthProof,
            Message::KvOps(_) => Kind::KvOps,
            Message::KvResults(_) => Kind::KvResults,
            Message::KvMembership(_) => Kind::KvMembership,
            Message::KvCredit(_) => Kind::KvCredit,
            Message::KvSwim(_) => Kind::KvSwim,
            Message::KvTree(_) => Kind::KvTree,
            Message::LamportMessage(_) => Kind::LamportMessage,
        }
    }

    /// Decodes one complete frame (as delimited by `frame_len`).
    ///
    /// Longer than the house's 70 lines on purpose: one arm per kind, each a checked view
    /// over the payload, in the order of `Kind`. Split by role it would scatter the one table
    /// a reader checks against the wire docs; every arm is a leaf that cannot panic once the
    /// header is checked.
    pub fn decode(frame: &'a [u8]) -> Result<Message<'a>, WireError> {
        debug_assert_eq!(frame_len(frame), Ok(Some(frame.len())));
        let kind = Kind::from_u8(frame[header::KIND]).ok_or(WireError::UnknownKind(frame[4]))?;
        let payload = &frame[HEADER_LEN..];
        let malformed = |why| WireError::Malformed(kind, why);
        match kind {
            Kind::Hello => {
                if payload.len() < hello::CLUSTER {
                    return Err(malformed("too short"));
                }
                if BigEndian::read_u32(&payload[hello::MAGIC]) != MAGIC {
                    return Err(malformed("bad magic"));
                }
                let cluster_len = payload[hello::CLUSTER_LEN] as usize;
                if cluster_len > CLUSTER_NAME_BYTES_MAX {
                    return Err(malformed("cluster name too long"));
                }
                if payload.len() != hello::CLUSTER + cluster_len {
                    return Err(malformed("length does not match cluster name"));
                }
                Ok(Message::Hello(Hello {
                    version: BigEndian::read_u16(&payload[hello::VERSION]),
                    nodes: BigEndian::read_u16(&payload[hello::NODES]),
                    node: BigEndian::read_u16(&payload[hello::NODE]),
                    cluster: &payload[hello::CLUSTER..],
                }))
            }
            Kind::GossipBatch => {
                if payload.len() < gossip_batch::VALUES {
                    return Err(malformed("too short"));
                }
                let values = Items::from_wire(&payload[gossip_batch::VALUES..])
                    .ok_or(malformed("values not a whole number of u32"))?;
                if values.is_empty() {
                    return Err(malformed("no values"));
                }
                Ok(Message::GossipBatch(GossipBatch {
                    origin: BigEndian::read_u16(&payload[gossip_batch::ORIGIN]),
                    timestamp_us: BigEndian::read_u64(&payload[gossip_batch::TIMESTAMP]),
                    first_seq: BigEndian::read_u64(&payload[gossip_batch::FIRST_SEQ]),
                    values,
                }))
            }
            Kind::GossipState => {
                let origins =
                    Items::from_wire(payload).ok_or(malformed("not a whole number of entries"))?;
                if origins.is_empty() || origins.len() > NODES_MAX {
                    return Err(malformed("entry count out of range"));
                }
                Ok(Message::GossipState(GossipState { origins }))
            }
            Kind::RingEpoch => RingEpoch::decode(payload)
                .map(Message::RingEpoch)
                .map_err(malformed),
            Kind::RingFreeze => RingFreeze::decode(payload)
                .map(Message::RingFreeze)
                .map_err(malformed),
            Kind::RingValue => RingValue::decode(payload)
                .map(Message::RingValue)
                .map_err(malformed),
            Kind::RingConfirm => RingConfirm::decode(payload)
                .map(Message::RingConfirm)
                .map_err(malformed),
            Kind::RingApprove => RingApprove::decode(payload)
                .map(Message::RingApprove)
                .map_err(malformed),
            Kind::RingReport => RingReport::decode(payload)
                .map(Message::RingReport)
                .map_err(malformed),
            Kind::RingSync => RingSync::decode(payload)
                .map(Message::RingSync)
                .map_err(malformed),
            Kind::RingResult => RingResult::decode(payload)
                .map(Message::RingResult)
                .map_err(malformed),
            Kind::RingSyncRequest => RingSyncRequest::decode(payload)
                .map(Message::RingSyncRequest)
                .map_err(malformed),
            Kind::AuthChallenge => auth::AuthChallenge::decode(payload)
                .map(Message::AuthChallenge)
                .map_err(malformed),
            Kind::AuthProof => auth::AuthProof::decode(payload)
                .map(Message::AuthProof)
                .map_err(malformed),
            Kind::KvOps => kv::KvOps::decode(payload)
                .map(Message::KvOps)
                .map_err(malformed),
            Kind::KvResults => kv::KvResults::decode(payload)
                .map(Message::KvResults)
                .map_err(malformed),
            Kind::KvMembership => kv::KvMembership::decode(payload)
                .map(Message::KvMembership)
                .map_err(malformed),
            Kind::KvCredit => kv::KvCredit::decode(payload)
                .map(Message::KvCredit)
                .map_err(malformed),
            Kind::KvSwim => kv::KvSwim::decode(payload)
                .map(Message::KvSwim)
                .map_err(malformed),
            Kind::KvTree => kv::KvTree::decode(payload)
                .map(Message::KvTree)
                .map_err(malformed),
            Kind::LamportMessage => LamportMessage::decode(payload)
                .map(Message::LamportMessage)
                .map_err(malformed),
        }
    }

    /// Bytes `encode` writes, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Message::Hello(hello) => hello::CLUSTER + hello.cluster.len(),
                Message::GossipBatch(batch) => gossip_batch::VALUES + batch.values.encoded_len(),
                Message::GossipState(state) => state.origins.encoded_len(),
                Message::RingEpoch(epoch) => epoch.encoded_len(),
                Message::RingFreeze(_) => RingFreeze::LEN,
                Message::RingValue(_) => RingValue::LEN,
                Message::RingConfirm(_) => RingConfirm::LEN,
                Message::RingApprove(_) => RingApprove::LEN,
                Message::RingReport(report) => report.encoded_len(),
                Message::RingSync(sync) => sync.encoded_len(),
                Message::RingResult(_) => RingResult::LEN,
                Message::RingSyncRequest(_) => RingSyncRequest::LEN,
                Message::AuthChallenge(_) => auth::AuthChallenge::LEN,
                Message::AuthProof(_) => auth::AuthProof::LEN,
                Message::KvOps(ops) => ops.encoded_len(),
                Message::KvResults(results) => results.encoded_len(),
                Message::KvMembership(membership) => membership.encoded_len(),
                Message::KvCredit(_) => kv::KvCredit::LEN,
                Message::KvSwim(swim) => swim.encoded_len(),
                Message::KvTree(tree) => tree.encoded_len(),
                Message::LamportMessage(message) => message.encoded_len(),
            }
    }

    /// Writes the frame at the start of `out` and returns its length. The caller guarantees
    /// room (`out.len() >= encoded_len()`) and that the message respects the limits above.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let length = self.encoded_len();
        assert!(length <= FRAME_BYTES_MAX);
        let frame = &mut out[..length];
        BigEndian::write_u32(&mut frame[header::LENGTH], length as u32);
        frame[header::KIND] = self.kind() as u8;
        let payload = &mut frame[HEADER_LEN..];
        match self {
            Message::Hello(hello) => {
                assert!(hello.cluster.len() <= CLUSTER_NAME_BYTES_MAX);
                BigEndian::write_u32(&mut payload[hello::MAGIC], MAGIC);
                BigEndian::write_u16(&mut payload[hello::VERSION], hello.version);
                BigEndian::write_u16(&mut payload[hello::NODES], hello.nodes);
                BigEndian::write_u16(&mut payload[hello::NODE], hello.node);
                payload[hello::CLUSTER_LEN] = hello.cluster.len() as u8;
                payload[hello::CLUSTER..].copy_from_slice(hello.cluster);
            }
            Message::GossipBatch(batch) => {
                assert!(!batch.values.is_empty());
                BigEndian::write_u16(&mut payload[gossip_batch::ORIGIN], batch.origin);
                BigEndian::write_u64(&mut payload[gossip_batch::TIMESTAMP], batch.timestamp_us);
                BigEndian::write_u64(&mut payload[gossip_batch::FIRST_SEQ], batch.first_seq);
                batch.values.encode(&mut payload[gossip_batch::VALUES..]);
            }
            Message::GossipState(state) => state.origins.encode(payload),
            Message::RingEpoch(epoch) => epoch.encode(payload),
            Message::RingFreeze(freeze) => freeze.encode(payload),
            Message::RingValue(value) => value.encode(payload),
            Message::RingConfirm(confirm) => confirm.encode(payload),
            Message::RingApprove(approve) => approve.encode(payload),
            Message::RingReport(report) => report.encode(payload),
            Message::RingSync(sync) => sync.encode(payload),
            Message::RingResult(result) => result.encode(payload),
            Message::RingSyncRequest(request) => request.encode(payload),
            Message::AuthChallenge(challenge) => challenge.encode(payload),
            Message::AuthProof(proof) => proof.encode(payload),
            Message::KvOps(ops) => ops.encode(payload),
            Message::KvResults(results) => results.encode(payload),
            Message::KvMembership(membership) => membership.encode(payload),
            Message::KvCredit(credit) => credit.encode(payload),
            Message::KvSwim(swim) => swim.encode(payload),
            Message::KvTree(tree) => tree.encode(payload),
            Message::LamportMessage(message) => message.encode(payload),
        }
        length
    }
}

/// Checks a peer's handshake against ours; the error is the reason to log before closing.
pub fn check_hello(
    hello: &Hello<'_>,
    cluster: &[u8],
    nodes: usize,
    node: NodeId,
) -> Result<NodeId, String> {
    if hello.version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} (ours is {PROTOCOL_VERSION})",
            hello.version
        ));
    }
    if hello.cluster != cluster {
        return Err(format!(
            "cluster {:?} (ours is {:?})",
            String::from_utf8_lossy(hello.cluster),
            String::from_utf8_lossy(cluster)
        ));
    }
    if hello.nodes as usize != nodes {
        return Err(format!(
            "{} nodes in its peers list (ours has {nodes})",
            hello.nodes
        ));
    }
    let peer = hello.node as NodeId;
    if peer >= nodes || peer == node {
        return Err(format!("node id {peer} out of range or ours"));
    }
    Ok(peer)
}

#[cfg(test)]
mod tests;
