//! The kv role driven by hand through a recording `Io`: read repair at the master, and a
//! worker's journal (replay, acknowledgement after commit, rewrite).

use std::cell::RefCell;
use std::rc::Rc;

use super::Kv;
use crate::journal::mem::{Disk, SimJournal};
use crate::journal::{Fsync, Journal, Record};
use crate::node::{ClientId, Micros, NodeId, Role, Timer};
use crate::roles::recording::{self, RecordingIo};
use crate::wire::client::Command;
use crate::wire::kv::{
    KvMembership, KvOps, KvResults, OP_GET, OP_PUT, OP_SET, Op, OpResult, REQUEST_HELLO,
    STATUS_NIL, STATUS_OK, STATUS_VALUE,
};
use crate::wire::{Items, Message, NO_NODE};

/// An operation as sent, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SentOp {
    to: NodeId,
    kind: u8,
    request: u64,
    version: u64,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// What the kv tests keep of what a role sends: operations and results, decoded, and the
/// order of events (shared with a journal wrapper that records appends and commits).
#[derive(Default)]
struct Sent {
    ops: Vec<SentOp>,
    /// Results a worker sent: (request, status, version, value).
    results: Vec<(u64, u8, u64, Vec<u8>)>,
    events: Rc<RefCell<Vec<&'static str>>>,
}

impl recording::Record for Sent {
    fn sent(&mut self, to: NodeId, message: &Message<'_>) {
        match message {
            Message::KvOps(ops) => {
                for op in ops.iter() {
                    self.ops.push(SentOp {
                        to,
                        kind: op.kind,
                        request: op.request,
                        version: op.version,
                        key: op.key.to_vec(),
                        value: op.value.to_vec(),
                    });
                }
            }
            Message::KvResults(results) => {
                self.events.borrow_mut().push("results sent");
                for r in results.iter() {
                    let result = (r.request, r.status, r.version, r.value.to_vec());
                    self.results.push(result);
                }
            }
            _ => {}
        }
    }
}

type Recorder = RecordingIo<Sent>;

fn command(io: &mut Recorder, kv: &mut Kv, client: ClientId, words: &[&str]) {
    let data = words.concat();
    let mut spans = Vec::new();
    let mut at = 0u32;
    for word in words {
        spans.push((at, at + word.len() as u32));
        at += word.len() as u32;
    }
    let command = Command {
        data: data.as_bytes(),
        spans: &spans,
    };
    kv.on_client(io, client, command);
    kv.on_flush(io);
}

fn result(io: &mut Recorder, kv: &mut Kv, from: NodeId, result: OpResult<'_>) {
    let mut batch = Vec::new();
    result.append_to(&mut batch);
    let results = KvResults { results: &batch };
    kv.on_message(io, from, Message::KvResults(results));
    kv.on_flush(io);
}

/// A master of two workers (2 replicas), both up and caught up.
fn master() -> (Kv, Recorder) {
    let mut io = Recorder::default();
    let mut kv = Kv::new(2, 2, 2, None);
    kv.on_start(&mut io);
    kv.on_peer_up(&mut io, 0);
    kv.on_peer_up(&mut io, 1);
    for worker in 0..2 {
        let hello = OpResult {
            request: REQUEST_HELLO,
            status: STATUS_OK,
            version: 0,
            value: b"",
        };
        result(&mut io, &mut kv, worker, hello);
    }
    for worker in 0..2 {
        let done = KvMembership {
            epoch: 2,
            replicas: 0,
            members: Items::Host(&[]),
        };
        kv.on_message(&mut io, worker, Message::KvMembership(done));
    }
    (kv, io)
}

/// Sends GET key and answers it from both workers: (status, version, value) each.
fn read(answers: [(u8, u64, &str); 2]) -> (Recorder, u64) {
    let (mut kv, mut io) = master();
    command(&mut io, &mut kv, 7, &["GET", "k"]);
    let gets: Vec<SentOp> = io
        .record
        .ops
        .drain(..)
        .filter(|op| op.kind == OP_GET)
        .collect();
    let mut askeds: Vec<NodeId> = gets.iter().map(|op| op.to).collect();
    askeds.sort();
    assert_eq!(askeds, [0, 1], "a read asks every replica");
    for (worker, (status, version, value)) in answers.into_iter().enumerate() {
        let answer = OpResult {
            request: gets[0].request,
            status,
            version,
            value: value.as_bytes(),
        };
        result(&mut io, &mut kv, worker, answer);
    }
    let Kv::Master(master) = &kv else {
        unreachable!()
    };
    (io, master.read_repairs)
}

#[test]
fn a_read_answers_the_newest_version_and_repairs_the_stale_replica() {
    let (io, repairs) = read([(STATUS_VALUE, 7, "old"), (STATUS_VALUE, 9, "new")]);
    assert_eq!(io.replies, [(7, "new".to_string())]);
    assert_eq!(repairs, 1);
    let put = SentOp {
        to: 0,
        kind: OP_PUT,
        request: 0,
        version: 9,
        key: b"k".to_vec(),
        value: b"\x01new".to_vec(),
    };
    assert_eq!(io.record.ops, [put]);
}

#[test]
fn a_replica_missing_the_key_is_repaired_and_a_newer_deletion_wins() {
    // Worker 1 never got the key: it receives it.
    let (io, repairs) = read([(STATUS_VALUE, 5, "v"), (STATUS_NIL, 0, "")]);
    assert_eq!(io.replies, [(7, "v".to_string())]);
    assert_eq!(repairs, 1);
    assert_eq!((io.record.ops[0].to, io.record.ops[0].version), (1, 5));
    // Worker 0 holds a deletion newer than worker 1's value: nil, and worker 1 gets the
    // tombstone (presence byte 0).
    let (io, _) = read([(STATUS_NIL, 12, ""), (STATUS_VALUE, 9, "v")]);
    assert_eq!(io.replies, [(7, "Bulk(None)".to_string())]);
    assert_eq!(
        (
            io.record.ops[0].to,
            io.record.ops[0].kind,
            io.record.ops[0].version,
            &io.record.ops[0].value[..]
        ),
        (1, OP_PUT, 12, &b"\x00"[..])
    );
}

#[test]
fn agreeing_replicas_are_not_repaired() {
    let (io, repairs) = read([(STATUS_VALUE, 9, "v"), (STATUS_VALUE, 9, "v")]);
    assert_eq!(io.replies, [(7, "v".to_string())]);
    assert_eq!(repairs, 0);
    assert!(io.record.ops.is_empty());
}

#[test]
fn versions_stay_above_what_workers_report() {
    let (mut kv, mut io) = master();
    let hello = OpResult {
        request: REQUEST_HELLO,
        status: STATUS_OK,
        version: 1_000_000,
        value: b"",
    };
    result(&mut io, &mut kv, 0, hello);
    command(&mut io, &mut kv, 7, &["SET", "k", "v"]);
    let set = io
        .record
        .ops
        .iter()
        .find(|op| op.kind == OP_SET)
        .expect("a SET");
    assert!(set.version > 1_000_000, "version {}", set.version);
}

/// A journal that records when it commits, in the same event list as the sends.
struct Watched {
    inner: SimJournal,
    events: Rc<RefCell<Vec<&'static str>>>,
}

impl Journal for Watched {
    fn fsync(&self) -> Fsync {
        self.inner.fsync()
    }
    fn replay(
        &mut self,
        apply: &mut dyn FnMut(Record<'_>),
    ) -> Result<crate::journal::Replayed, String> {
        self.inner.replay(apply)
    }
    fn append(&mut self, record: &Record<'_>) {
        self.events.borrow_mut().push("append");
        self.inner.append(record)
    }
    fn commit(&mut self, now: Micros) -> Result<(), String> {
        self.events.borrow_mut().push("commit");
        self.inner.commit(now)
    }
    fn bytes(&self) -> u64 {
        self.inner.bytes()
    }
    fn rewrite_begin(&mut self) -> Result<(), String> {
        self.events.borrow_mut().push("rewrite");
        self.inner.rewrite_begin()
    }
    fn rewrite_append(&mut self, record: &Record<'_>) {
        self.inner.rewrite_append(record)
    }
    fn rewrite_finish(&mut self) -> Result<(), String> {
        self.events.borrow_mut().push("rewritten");
        self.inner.rewrite_finish()
    }
}

fn worker(disk: &Rc<RefCell<Disk>>, io: &Recorder, rewrite_min: u64) -> Kv {
    let journal = Watched {
        inner: SimJournal::new(disk.clone(), Fsync::Always),
        events: io.record.events.clone(),
    };
    Kv::new(0, 1, 1, None).with_journal(Box::new(journal), rewrite_min)
}

/// One operation from the master (node 1) to the worker, and the end of the loop iteration.
fn from_master(io: &mut Recorder, kv: &mut Kv, op: Op<'_>) {
    let mut batch = Vec::new();
    op.append_to(&mut batch);
    let ops = KvOps {
        target: NO_NODE,
        ops: &batch,
    };
    kv.on_message(io, 1, Message::KvOps(ops));
    kv.on_flush(io);
}

fn set(io: &mut Recorder, kv: &mut Kv, request: u64, version: u64, key: &str, value: &str) {
    let op = Op {
        kind: OP_SET,
        request,
        version,
        key: key.as_bytes(),
        value: value.as_bytes(),
    };
    from_master(io, kv, op);
}

fn get(io: &mut Recorder, kv: &mut Kv, key: &str) -> (u8, u64, Vec<u8>) {
    let op = Op {
        kind: OP_GET,
        request: 99,
        version: 0,
        key: key.as_bytes(),
        value: b"",
    };
    from_master(io, kv, op);
    let (request, status, version, value) = io.record.results.pop().expect("a result");
    assert_eq!(request, 99);
    (status, version, value)
}

#[test]
fn a_worker_commits_before_acknowledging_and_replays_after_a_restart() {
    let disk = Disk::new(1);
    let mut io = Recorder::default();
    let mut kv = worker(&disk, &io, u64::MAX);
    kv.on_start(&mut io);
    kv.on_peer_up(&mut io, 1);
    io.record.events.borrow_mut().clear();
    set(&mut io, &mut kv, 5, 100, "a", "1");
    assert_eq!(
        *io.record.events.borrow(),
        ["append", "commit", "results sent"]
    );
    // The greeting went out first, with version 0 (nothing held yet).
    assert_eq!(
        io.record.results[0],
        (REQUEST_HELLO, STATUS_OK, 0, b"always".to_vec())
    );
    set(&mut io, &mut kv, 6, 101, "b", "2");
    set(&mut io, &mut kv, 7, 102, "a", "3");
    drop(kv);
    // Restarted on the same disk (everything was synced: nothing is lost).
    let mut io = Recorder::default();
    let mut kv = worker(&disk, &io, u64::MAX);
    kv.on_start(&mut io);
    kv.on_peer_up(&mut io, 1);
    kv.on_flush(&mut io);
    assert_eq!(
        io.record.results[0],
        (REQUEST_HELLO, STATUS_OK, 102, b"always".to_vec())
    );
    assert_eq!(
        get(&mut io, &mut kv, "a"),
        (STATUS_VALUE, 102, b"3".to_vec())
    );
    assert_eq!(
        get(&mut io, &mut kv, "b"),
        (STATUS_VALUE, 101, b"2".to_vec())
    );
}

#[test]
fn a_worker_rewrites_a_log_that_outgrew_its_live_data() {
    let disk = Disk::new(2);
    let mut io = Recorder::default();
    let mut kv = worker(&disk, &io, 1024);
    kv.on_start(&mut io);
    // One key overwritten 200 times: the log holds 200 records, the live data one.
    for version in 1..=200 {
        set(
            &mut io,
            &mut kv,
            version,
            version,
            "key",
            &format!("value {version}"),
        );
    }
    let Kv::Worker(w) = &kv else { unreachable!() };
    let before = w.log_bytes();
    assert!(before > 200 * 20, "{before}");
    io.now += 10_000;
    kv.on_timer(&mut io, Timer(1)); // starts the rewrite
    kv.on_timer(&mut io, Timer(1)); // copies the key and finishes
    assert!(io.record.events.borrow().contains(&"rewritten"));
    let Kv::Worker(w) = &kv else { unreachable!() };
    let after = w.log_bytes();
    assert!(after < 100, "rewritten log: {after} bytes (was {before})");
    drop(kv);
    let mut io = Recorder::default();
    let mut kv = worker(&disk, &io, 1024);
    kv.on_start(&mut io);
    assert_eq!(
        get(&mut io, &mut kv, "key"),
        (STATUS_VALUE, 200, b"value 200".to_vec())
    );
}

/// A client's parse error is its reply in its turn: after the replies to the commands it sent
/// before, however late those come.
#[test]
fn a_parse_error_is_answered_after_the_earlier_commands() {
    let (mut kv, mut io) = master();
    command(&mut io, &mut kv, 7, &["SET", "k", "v"]);
    kv.on_client_error(
        &mut io,
        7,
        "ERR protocol error: unbalanced quotes in request",
        true,
    );
    kv.on_flush(&mut io);
    assert!(
        io.replies.is_empty(),
        "nothing before the SET is answered: {:?}",
        io.replies
    );
    let sets: Vec<u64> = io.record.ops.iter().map(|op| op.request).collect();
    for (worker, request) in sets.into_iter().enumerate() {
        let ok = OpResult {
            request,
            status: STATUS_OK,
            version: 1,
            value: b"",
        };
        result(&mut io, &mut kv, worker, ok);
    }
    let replies: Vec<&str> = io.replies.iter().map(|(_, text)| text.as_str()).collect();
    assert_eq!(
        replies,
        [
            "Ok",
            "Error(\"ERR protocol error: unbalanced quotes in request\")"
        ]
    );
}
