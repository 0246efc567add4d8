//! ring end to end: a real master and four real workers on loopback — all agree, on the line a
//! reference computed here from the seed gives (`common::ring_reference`), whatever the phase
//! lengths (2 µs to 2 s, ten runs each); a worker is SIGKILLed during SEND (the survivors
//! agree and the master says so); the master is SIGKILLed during SEND (the workers still
//! finish on their schedule and agree).

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{POLLEN, free_ports, ring_reference, scratch_dir, serial};

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
        let ports = free_ports(workers + 1);
        let peers = dir.join("workers.txt");
        let text: String = ports[..workers]
            .iter()
            .map(|p| format!("127.0.0.1:{p}\n"))
            .collect();
        std::fs::write(&peers, text).unwrap();
        let spawn = |args: Vec<String>| {
            Command::new(POLLEN)
                .arg("ring")
                .args(args)
                .arg("--peer-config-file")
                .arg(&peers)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn pollen")
        };
        let workers: Vec<Child> = ports[..workers]
            .iter()
            .map(|port| spawn(vec!["slave".into(), "127.0.0.1".into(), port.to_string()]))
            .collect();
        let master = spawn(vec![
            "master".into(),
            "127.0.0.1".into(),
            ports[workers.len()].to_string(),
            send_us.to_string(),
            grace_us.to_string(),
            SEED.to_string(),
            "--window".into(),
            window.to_string(),
        ]);
        Ring {
            workers,
            master,
            dir,
        }
    }

    fn kill(child: &Child) {
        let status = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        assert!(status.unwrap().success());
    }
}

/// Waits (bounded) and returns (exit code, stdout, stderr).
fn finish(child: &mut Child, started: Instant) -> (Option<i32>, String, String) {
    let limit = Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stdout, stderr)
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

/// The given workers all exited 0 with one identical `SlaveResult COUNT CHECKSUM` line.
fn assert_workers_agree(outcomes: &[(Option<i32>, String, String)], which: &[usize]) -> u64 {
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
    let mut ring = Ring::start_with(name, 4, window, send_us, grace_us);
    let started = Instant::now();
    let workers: Vec<_> = ring
        .workers
        .iter_mut()
        .map(|w| finish(w, started))
        .collect();
    let master = finish(&mut ring.master, started);
    let line = workers[0].1.trim().to_string();
    let count: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("worker 0 printed {line:?}: {}", workers[0].2));
    let reference = ring_reference(SEED, 4, window, count);
    for (index, (status, stdout, stderr)) in workers.iter().enumerate() {
        assert_eq!(*status, Some(0), "worker {index}: {stderr}");
        assert_eq!(stdout.trim(), reference, "worker {index}: {stderr}");
    }
    assert_eq!(master.0, Some(0), "{}", master.2);
    assert!(
        master.1.contains("AGREE: 4 of 4 workers reported"),
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
    Ring::kill(&ring.workers[2]);
    let workers: Vec<_> = ring
        .workers
        .iter_mut()
        .map(|w| finish(w, started))
        .collect();
    let master = finish(&mut ring.master, started);
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
    Ring::kill(&ring.master);
    let workers: Vec<_> = ring
        .workers
        .iter_mut()
        .map(|w| finish(w, started))
        .collect();
    assert_workers_agree(&workers, &[0, 1, 2, 3]);
    // They stopped on the schedule the master gave them, not at the test's time limit.
    assert!(started.elapsed() < Duration::from_secs(10));
}
