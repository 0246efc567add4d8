//! The worker's log on a real file system: reopen and replay, torn and corrupt tails, a
//! foreign file, the directory lock, rewrite.

mod common;

use std::path::Path;

use pollen::journal::file::FileJournal;
use pollen::journal::{Fsync, HEADER_BYTES, Journal, Record};

type Entries = Vec<(u64, Vec<u8>, Option<Vec<u8>>)>;

fn open_and_replay(dir: &Path) -> (FileJournal, Entries, u64) {
    let mut journal = FileJournal::open(dir, Fsync::Always).expect("open");
    let mut seen = Vec::new();
    let replayed = journal
        .replay(&mut |r: Record<'_>| {
            seen.push((r.version, r.key.to_vec(), r.value.map(<[u8]>::to_vec)))
        })
        .expect("replay");
    (journal, seen, replayed.dropped_bytes)
}

fn write(journal: &mut FileJournal, version: u64, key: &str, value: Option<&str>) {
    journal.append(&Record {
        version,
        key: key.as_bytes(),
        value: value.map(str::as_bytes),
    });
}

fn log_file(dir: &Path) -> std::path::PathBuf {
    dir.join("appendonly.pollen")
}

#[test]
fn a_log_survives_reopening() {
    let dir = common::scratch_dir("journal-reopen");
    let (mut journal, seen, _) = open_and_replay(&dir);
    assert!(seen.is_empty());
    write(&mut journal, 1, "a", Some("1"));
    write(&mut journal, 2, "b", None);
    journal.commit(0).unwrap();
    drop(journal);
    let (mut journal, seen, dropped) = open_and_replay(&dir);
    assert_eq!(dropped, 0);
    assert_eq!(
        seen,
        [
            (1, b"a".to_vec(), Some(b"1".to_vec())),
            (2, b"b".to_vec(), None)
        ]
    );
    write(&mut journal, 3, "c", Some("3"));
    journal.commit(0).unwrap();
    drop(journal);
    let (_, seen, _) = open_and_replay(&dir);
    assert_eq!(seen.len(), 3);
}

#[test]
fn a_torn_tail_is_truncated_and_the_log_continues_after_it() {
    let dir = common::scratch_dir("journal-torn");
    let (mut journal, _, _) = open_and_replay(&dir);
    for version in 1..=10 {
        write(
            &mut journal,
            version,
            &format!("key{version}"),
            Some("value"),
        );
    }
    journal.commit(0).unwrap();
    drop(journal);
    // Cut the last record in half, as a crash in the middle of a write would.
    let path = log_file(&dir);
    let length = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(length - 9).unwrap();
    drop(file);
    let (mut journal, seen, dropped) = open_and_replay(&dir);
    assert_eq!(seen.len(), 9, "the nine whole records");
    assert!(dropped > 0);
    let truncated = std::fs::metadata(&path).unwrap().len();
    assert!(truncated < length - 9, "the torn bytes are gone");
    write(&mut journal, 11, "key11", Some("value"));
    journal.commit(0).unwrap();
    drop(journal);
    let (_, seen, dropped) = open_and_replay(&dir);
    assert_eq!(dropped, 0);
    assert_eq!(seen.len(), 10);
    assert_eq!(seen[9].0, 11);
}

#[test]
fn garbage_after_the_records_is_dropped() {
    let dir = common::scratch_dir("journal-garbage");
    let (mut journal, _, _) = open_and_replay(&dir);
    write(&mut journal, 1, "a", Some("1"));
    journal.commit(0).unwrap();
    drop(journal);
    let path = log_file(&dir);
    let mut bytes = std::fs::read(&path).unwrap();
    let garbage = b"\x00\x00\x00\x20garbage that is not a record.....";
    bytes.extend_from_slice(garbage);
    std::fs::write(&path, &bytes).unwrap();
    let (_, seen, dropped) = open_and_replay(&dir);
    assert_eq!(seen.len(), 1);
    assert_eq!(dropped, garbage.len() as u64);
}

#[test]
fn a_foreign_file_is_refused_not_truncated() {
    let dir = common::scratch_dir("journal-foreign");
    let path = log_file(&dir);
    std::fs::write(&path, b"this is somebody's precious file").unwrap();
    let mut journal = FileJournal::open(&dir, Fsync::No).expect("open");
    let error = journal.replay(&mut |_| {}).unwrap_err();
    assert!(error.contains("not a pollen kv log"), "{error}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"this is somebody's precious file"
    );
}

#[test]
fn a_data_dir_serves_one_worker_at_a_time() {
    let dir = common::scratch_dir("journal-lock");
    let first = FileJournal::open(&dir, Fsync::EverySec).expect("open");
    let error = FileJournal::open(&dir, Fsync::EverySec)
        .err()
        .expect("locked");
    assert!(error.contains("in use"), "{error}");
    drop(first);
    FileJournal::open(&dir, Fsync::EverySec).expect("free again");
}

#[test]
fn a_rewrite_replaces_the_log_with_the_live_data_and_what_came_meanwhile() {
    let dir = common::scratch_dir("journal-rewrite");
    let (mut journal, _, _) = open_and_replay(&dir);
    for version in 1..=1000 {
        write(&mut journal, version, "k", Some("an overwritten value"));
    }
    journal.commit(0).unwrap();
    let before = journal.bytes();
    journal.rewrite_begin().unwrap();
    journal.rewrite_append(&Record {
        version: 1000,
        key: b"k",
        value: Some(b"an overwritten value"),
    });
    // A write during the rewrite lands in both logs.
    write(&mut journal, 1001, "other", Some("x"));
    journal.commit(0).unwrap();
    journal.rewrite_finish().unwrap();
    let after = journal.bytes();
    assert!(after < before / 100, "{before} -> {after}");
    assert_eq!(std::fs::metadata(log_file(&dir)).unwrap().len(), after);
    assert!(!dir.join("appendonly.pollen.rewrite").exists());
    write(&mut journal, 1002, "k", None);
    journal.commit(0).unwrap();
    drop(journal);
    let (_, seen, dropped) = open_and_replay(&dir);
    assert_eq!(dropped, 0);
    let versions: Vec<u64> = seen.iter().map(|entry| entry.0).collect();
    assert_eq!(versions, [1000, 1001, 1002]);
    assert!(after > HEADER_BYTES as u64);
}
