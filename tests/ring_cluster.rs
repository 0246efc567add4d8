//! ring end to end: a real master and four real workers on loopback — all agree, on the line a
//! reference computed here from the seed gives (`common::ring_reference`), whatever the phase
//! lengths (2 µs to 2 s, ten runs each); a worker is SIGKILLed during SEND (the survivors
//! agree and the master says so); the master is SIGKILLed during SEND (the workers still
//! finish on their schedule and agree).

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::{finish_child, ring_reference, scratch_dir, serial, signal, spawn_ring};

const SEND_US: u64 = 1_000_000;
const GRACE_US: u64 = 600_000;
const SEED: u64 = 11;

struct Ring {
    workers: Vec<Child>,
    master: Child,
    dir: std::path::PathBuf,
}

impl Ring {
    fn start(name: &str, workers: usize, window: u64) -> Ring {
        Ring::start_with(name, workers, window, SEND_US, GRACE_US)
    }

    fn start_with(name: &str, workers: usize, window: u64, send_us: u64, grace_us: u64) -> Ring {
        let dir = scratch_dir(name);
        let window = window.to_string();
        let timing = [send_us, grace_us, SEED];
        let (workers, master) = spawn_ring(&dir, workers, timing, &["--window", &window]);
        Ring {
            workers,
            master,
            dir,
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        for child in self
            .workers
            .iter_mut()
            .chain(std::iter::once(&mut self.master))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Finished = (Option<i32>, String, String);

impl Ring {
    /// Waits (bounded) for the workers, then the master: (exit code, stdout, stderr) each.
    fn finish(&mut self, started: Instant) -> (Vec<Finished>, Finished) {
        let deadline = started + Duration::from_secs(15);
        let workers = self
            .workers
            .iter_mut()
            .map(|worker| finish_child(worker, deadline))
            .collect();
        (workers, finish_child(&mut self.master, deadline))
    }
}

/// The given workers all exited 0 with one identical `SlaveResult COUNT CHECKSUM` line.
fn assert_workers_agree(outcomes: &[Finished], which: &[usize]) -> u64 {
    let first = &outcomes[which[0]].1;
    for &index in which {
        let (status, stdout, stderr) = &outcomes[index];
        eprintln!("worker {index}: {status:?} {stdout:?}");
        assert_eq!(*status, Some(0), "worker {index}: {stderr}");
        assert_eq!(stdout, first, "worker {index} disagrees");
    }
    let words: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(words.len(), 3, "{first:?}");
    assert_eq!(words[0], "SlaveResult");
    let count: u64 = words[1].parse().unwrap();
    assert!(count > 100, "the ring made progress: {count}");
    count
}

/// Runs a ring without faults and checks that every worker and the master report the
/// reference line; returns the agreed count and the master's stderr.
fn run_and_check(name: &str, window: u64, send_us: u64, grace_us: u64) -> (u64, String) {
    run_and_check_with(name, 4, window, send_us, grace_us)
}

fn run_and_check_with(
    name: &str,
    size: usize,
    window: u64,
    send_us: u64,
    grace_us: u64,
) -> (u64, String) {
    let mut ring = Ring::start_with(name, size, window, send_us, grace_us);
    let started = Instant::now();
    let (workers, master) = ring.finish(started);
    let line = workers[0].1.trim().to_string();
    let count: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("worker 0 printed {line:?}: {}", workers[0].2));
    let reference = ring_reference(SEED, size, window, count);
    for (index, (status, stdout, stderr)) in workers.iter().enumerate() {
        assert_eq!(*status, Some(0), "worker {index}: {stderr}");
        assert_eq!(stdout.trim(), reference, "worker {index}: {stderr}");
    }
    assert_eq!(master.0, Some(0), "{}", master.2);
    assert!(
        master
            .1
            .contains(&format!("AGREE: {size} of {size} workers reported")),
        "{}",
        master.1
    );
    (count, master.2)
}

#[test]
fn master_and_four_workers_agree_on_the_reference() {
    let _serial = serial();
    let (count, _) = run_and_check("ring-agree", 8, SEND_US, GRACE_US);
    assert!(count > 100, "the ring made progress: {count}");
}

/// cloudy's arguments are microseconds; a user typing seconds gets phases of a few µs. Short
/// or long, and with a grace too short for the last values to go round, every worker prints
/// the same line — a shorter prefix, the reference's — in every run.
#[test]
fn every_phase_length_agrees_on_the_reference_ten_runs_each() {
    let _serial = serial();
    for (send_us, grace_us, window) in [(2, 1, 1), (100, 10, 8), (2_000_000, 1_000, 8)] {
        let mut counts = Vec::new();
        for run in 0..10 {
            let (count, log) =
                run_and_check(&format!("ring-phases-{run}"), window, send_us, grace_us);
            counts.push(count);
            let warned = log.contains("are microseconds");
            assert_eq!(warned, send_us < 1000 || grace_us < 1000, "{log}");
        }
        eprintln!("SEND_US {send_us} GRACE_US {grace_us}: counts {counts:?}");
    }
}

#[test]
fn survivors_agree_after_a_worker_is_killed_during_send() {
    let _serial = serial();
    let mut ring = Ring::start("ring-kill-worker", 4, 8);
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    signal(ring.workers[2].id(), "-KILL");
    let (workers, master) = ring.finish(started);
    assert_workers_agree(&workers, &[0, 1, 3]);
    assert!(master.1.contains("worker 2: no result"), "{}", master.1);
    assert!(
        master.1.contains("AGREE: 3 of 4 workers reported"),
        "{}",
        master.1
    );
    assert!(
        master.2.contains("re-forming"),
        "the master noticed: {}",
        master.2
    );
}

#[test]
fn workers_finish_and_agree_after_the_master_is_killed_during_send() {
    let _serial = serial();
    let mut ring = Ring::start("ring-kill-master", 4, 8);
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    signal(ring.master.id(), "-KILL");
    let (workers, _) = ring.finish(started);
    assert_workers_agree(&workers, &[0, 1, 2, 3]);
    // They stopped on the schedule the master gave them, not at the test's time limit.
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A ring of one worker: its values go round through itself, as long as the send phase lasts
/// (it once stopped after its first window).
#[test]
fn a_ring_of_one_worker_keeps_turning() {
    let _serial = serial();
    for window in [1, 64] {
        let (count, _) = run_and_check_with("ring-of-one", 1, window, 500_000, 100_000);
        assert!(count > 10 * window, "window {window}: only {count} values");
    }
}
