//! Durability for the kv worker: an append-only log of applied writes (Redis's AOF).
//!
//! The worker appends one record per applied write, and `commit`s before any acknowledgement
//! leaves it: under `--fsync always` the records are on disk by then; under `everysec` they are
//! in the kernel (they survive the process being killed) and synced once a second; under `no`
//! the kernel decides. On start the worker replays the log; every record carries the master's
//! version of the write and the store keeps the newest, so replay does not depend on record
//! order — which is what lets a rewrite (compaction) write the live data and the writes that
//! arrive meanwhile into the new log in any interleaving.
//!
//! File layout (integers big-endian):
//!
//! ```text
//! header   "POLLENKV" | format u32 | 4 reserved bytes                          16 bytes
//! record   body length u32 | crc32 of body u32 | body
//! body     version u64 | key length u16 | present u8 (0: deletion) | key | value
//! ```
//!
//! A record that is cut short, longer than the largest key and value allow, or whose checksum
//! fails ends the log: everything from it on is a torn or corrupt tail, truncated on open with
//! a warning. Nothing read from the file sizes an allocation beyond `RECORD_BYTES_MAX`.
//!
//! `Journal` is the boundary the worker sees; `file::FileJournal` implements it over a real
//! directory and `mem` over a simulated disk that loses what was not synced at a crash (the
//! simulator and the kv role's tests use it).

pub mod file;
pub mod mem;

use std::io::Read;

use byteorder::{BigEndian, ByteOrder};

use crate::node::Micros;
use crate::wire::kv::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

pub const MAGIC: &[u8; 8] = b"POLLENKV";
pub const FORMAT: u32 = 1;
pub const HEADER_BYTES: usize = 16;
/// Record framing: body length, crc32.
const FRAME_BYTES: usize = 4 + 4;
/// Body header: version, key length, present.
const BODY_HEADER: usize = 8 + 2 + 1;
pub const RECORD_BYTES_MAX: usize = FRAME_BYTES + BODY_HEADER + KEY_BYTES_MAX + VALUE_BYTES_MAX;

/// One applied write: `value` is `None` for a deletion (a tombstone, kept so that an older
/// copy arriving later cannot revive the key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub version: u64,
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

impl Record<'_> {
    pub fn encoded_len(&self) -> usize {
        FRAME_BYTES + BODY_HEADER + self.key.len() + self.value.map_or(0, <[u8]>::len)
    }

    /// Appends the framed record to `out`.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + FRAME_BYTES + BODY_HEADER, 0);
        out.extend_from_slice(self.key);
        if let Some(value) = self.value {
            out.extend_from_slice(value);
        }
        let (frame, body) = out[start..].split_at_mut(FRAME_BYTES);
        BigEndian::write_u64(&mut body[0..8], self.version);
        BigEndian::write_u16(&mut body[8..10], self.key.len() as u16);
        body[10] = self.value.is_some() as u8;
        BigEndian::write_u32(&mut frame[0..4], body.len() as u32);
        BigEndian::write_u32(&mut frame[4..8], crc32fast::hash(body));
    }
}

/// The file header of a fresh log.
pub fn header() -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[..8].copy_from_slice(MAGIC);
    BigEndian::write_u32(&mut header[8..12], FORMAT);
    header
}

/// What decoding the front of `bytes` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    Record(Record<'a>, usize),
    /// Not enough bytes for the record (more may follow, or the tail is torn).
    Short,
    Corrupt(&'static str),
}

pub fn decode(bytes: &[u8]) -> Decoded<'_> {
    if bytes.len() < FRAME_BYTES {
        return Decoded::Short;
    }
    let length = BigEndian::read_u32(&bytes[0..4]) as usize;
    if !(BODY_HEADER..=RECORD_BYTES_MAX - FRAME_BYTES).contains(&length) {
        return Decoded::Corrupt("bad record length");
    }
    if bytes.len() < FRAME_BYTES + length {
        return Decoded::Short;
    }
    let body = &bytes[FRAME_BYTES..FRAME_BYTES + length];
    if crc32fast::hash(body) != BigEndian::read_u32(&bytes[4..8]) {
        return Decoded::Corrupt("checksum mismatch");
    }
    let key = BigEndian::read_u16(&body[8..10]) as usize;
    let present = body[10];
    if key > KEY_BYTES_MAX || BODY_HEADER + key > length || present > 1 {
        return Decoded::Corrupt("malformed record");
    }
    let value = &body[BODY_HEADER + key..];
    if present == 0 && !value.is_empty() {
        return Decoded::Corrupt("malformed record");
    }
    let record = Record {
        version: BigEndian::read_u64(&body[0..8]),
        key: &body[BODY_HEADER..BODY_HEADER + key],
        value: (present == 1).then_some(value),
    };
    Decoded::Record(record, FRAME_BYTES + length)
}

/// The outcome of a replay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub records: u64,
    /// Bytes of whole records after the header: where the log continues.
    pub valid_bytes: u64,
    /// Bytes after them that were dropped, and why.
    pub dropped_bytes: u64,
    pub reason: Option<&'static str>,
}

/// Reads records (after the header) from `input` in bounded chunks and hands each to `apply`,
/// stopping at the first torn or corrupt one.
pub fn replay(
    mut input: impl Read,
    apply: &mut dyn FnMut(Record<'_>),
) -> std::io::Result<Replayed> {
    const CHUNK: usize = 1 << 20;
    let mut buffer = vec![0u8; CHUNK + RECORD_BYTES_MAX];
    let (mut start, mut end) = (0, 0);
    let mut replayed = Replayed::default();
    let mut eof = false;
    loop {
        match decode(&buffer[start..end]) {
            Decoded::Record(record, length) => {
                apply(record);
                start += length;
                replayed.records += 1;
                replayed.valid_bytes += length as u64;
            }
            Decoded::Corrupt(reason) => {
                replayed.reason = Some(reason);
                break;
            }
            Decoded::Short if eof => {
                if start < end {
                    replayed.reason = Some("torn record");
                }
                break;
            }
            Decoded::Short => {
                // Keep the partial record and read more behind it.
                buffer.copy_within(start..end, 0);
                end -= start;
                start = 0;
                let read = input.read(&mut buffer[end..])?;
                eof = read == 0;
                end += read;
            }
        }
    }
    // Whatever was not consumed, buffered or still unread, is dropped.
    replayed.dropped_bytes = (end - start) as u64;
    let mut rest = [0u8; 8192];
    loop {
        let read = input.read(&mut rest)?;
        if read == 0 {
            break;
        }
        replayed.dropped_bytes += read as u64;
    }
    Ok(replayed)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Before every acknowledgement (one sync per loop iteration covers all its writes).
    Always,
    /// Once a second, off the event loop.
    EverySec,
    /// Never explicitly.
    No,
}

impl Fsync {
    pub fn name(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::EverySec => "everysec",
            Fsync::No => "no",
        }
    }

    pub fn parse(text: &str) -> Option<Fsync> {
        match text {
            "always" => Some(Fsync::Always),
            "everysec" => Some(Fsync::EverySec),
            "no" => Some(Fsync::No),
            _ => None,
        }
    }
}

/// How often `everysec` syncs.
pub const EVERYSEC_US: Micros = 1_000_000;

/// The worker's log. Errors are strings for the log line; a worker that cannot persist stops.
pub trait Journal {
    /// The sync policy.
    fn fsync(&self) -> Fsync;
    /// Replays the log into `apply` (once, at start), truncating a torn or corrupt tail.
    fn replay(&mut self, apply: &mut dyn FnMut(Record<'_>)) -> Result<Replayed, String>;
    /// Buffers a record (and, during a rewrite, copies it into the new log too).
    fn append(&mut self, record: &Record<'_>);
    /// Writes what was appended, syncing as the policy says; called before acknowledgements
    /// leave, and on the worker's tick (which is what makes `everysec` run when idle).
    fn commit(&mut self, now: Micros) -> Result<(), String>;
    /// Bytes in the log, including what is buffered.
    fn bytes(&self) -> u64;
    /// Starts a rewrite: a new log that `rewrite_append` fills with the live data.
    fn rewrite_begin(&mut self) -> Result<(), String>;
    fn rewrite_append(&mut self, record: &Record<'_>);
    /// Makes the new log durable and replaces the old one with it.
    fn rewrite_finish(&mut self) -> Result<(), String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<u8> {
        let mut log = Vec::new();
        let value = vec![7u8; 300];
        for (version, key, value) in [
            (1, &b"a"[..], Some(&b"one"[..])),
            (2, b"bb", None),
            (3, b"", Some(&value[..])),
            (4, b"a", Some(b"")),
        ] {
            Record {
                version,
                key,
                value,
            }
            .append_to(&mut log);
        }
        log
    }

    /// (version, key, value) of each record replayed.
    type Entries = Vec<(u64, Vec<u8>, Option<Vec<u8>>)>;

    fn replay_all(bytes: &[u8]) -> (Entries, Replayed) {
        let mut seen = Vec::new();
        let replayed = replay(bytes, &mut |r: Record<'_>| {
            seen.push((r.version, r.key.to_vec(), r.value.map(<[u8]>::to_vec)))
        })
        .expect("in memory");
        (seen, replayed)
    }

    #[test]
    fn records_round_trip() {
        let log = records();
        let (seen, replayed) = replay_all(&log);
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[1], (2, b"bb".to_vec(), None));
        assert_eq!(seen[3], (4, b"a".to_vec(), Some(Vec::new())));
        assert_eq!(replayed.valid_bytes, log.len() as u64);
        assert_eq!((replayed.dropped_bytes, replayed.reason), (0, None));
    }

    #[test]
    fn a_log_cut_anywhere_replays_its_whole_records_and_drops_the_rest() {
        let log = records();
        let mut ends = vec![0];
        let mut at = 0;
        while at < log.len() {
            let Decoded::Record(_, length) = decode(&log[at..]) else {
                panic!("whole log")
            };
            at += length;
            ends.push(at);
        }
        for cut in 0..=log.len() {
            let (seen, replayed) = replay_all(&log[..cut]);
            let whole = ends.iter().filter(|&&end| end <= cut).count() - 1;
            assert_eq!(seen.len(), whole, "cut at {cut}");
            assert_eq!(replayed.valid_bytes as usize, ends[whole]);
            assert_eq!(replayed.dropped_bytes as usize, cut - ends[whole]);
            assert_eq!(replayed.reason.is_some(), cut != ends[whole]);
        }
    }

    #[test]
    fn a_flipped_byte_ends_the_log_at_that_record() {
        let log = records();
        for at in 0..log.len() {
            let mut bad = log.clone();
            bad[at] ^= 0x20;
            let (seen, replayed) = replay_all(&bad);
            assert!(seen.len() < 4, "flip at {at} went unnoticed");
            assert!(replayed.reason.is_some());
            assert_eq!(
                replayed.valid_bytes + replayed.dropped_bytes,
                log.len() as u64
            );
        }
    }

    #[test]
    fn a_huge_length_is_corrupt_not_an_allocation() {
        let mut bad = vec![0xFF, 0xFF, 0xFF, 0xF0, 0, 0, 0, 0];
        bad.extend_from_slice(&[0u8; 64]);
        assert_eq!(decode(&bad), Decoded::Corrupt("bad record length"));
        let (seen, replayed) = replay_all(&bad);
        assert!(seen.is_empty());
        assert_eq!(replayed.dropped_bytes, bad.len() as u64);
    }

    #[test]
    fn long_logs_replay_across_read_chunks() {
        let mut log = Vec::new();
        let value = vec![1u8; VALUE_BYTES_MAX];
        for version in 0..20 {
            let record = Record {
                version,
                key: b"k",
                value: Some(&value),
            };
            record.append_to(&mut log);
        }
        let (seen, replayed) = replay_all(&log);
        assert_eq!(seen.len(), 20);
        assert_eq!(replayed.dropped_bytes, 0);
    }
}
