//! gossip end to end: real `pollen gossip` processes on loopback, started together or by hand
//! at different times, with a node killed, a node paused, and a stranger sending garbage.
//! Every test asserts that the nodes that should agree print the identical `(COUNT, CHECKSUM)`
//! line, that each node exits 0 before `send-for + wait-for` after its own start, and that the
//! line equals a reference the test computes itself: each node writes the runs of messages it
//! folded (`--fold-log`); the test checks their order and regenerates every value from the
//! seed (`common::gossip_reference`), so a node that skips, repeats or misorders a message, or
//! miscounts the sum, fails even when all nodes agree.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{Cluster, Outcome, gossip_reference, parse_result, serial};

const SEED: u64 = 7;
const SEND_FOR: f64 = 1.5;
const WAIT_FOR: f64 = 2.5;

fn args(cluster: &Cluster, node: usize, send_for: f64, wait_for: f64) -> Vec<String> {
    vec![
        "--send-for".into(),
        send_for.to_string(),
        "--wait-for".into(),
        wait_for.to_string(),
        "--with-seed".into(),
        SEED.to_string(),
        "--fold-log".into(),
        fold_log(cluster, node).display().to_string(),
    ]
}

fn fold_log(cluster: &Cluster, node: usize) -> std::path::PathBuf {
    cluster.dir.join(format!("fold-{node}.txt"))
}

/// Starts node `i` at `offsets[i]` seconds (as someone starting them by hand in several
/// shells), runs `during`, and waits for all.
fn run_staggered(
    cluster: &mut Cluster,
    offsets: &[f64],
    send_for: f64,
    wait_for: f64,
    during: impl FnOnce(&Cluster),
) -> Vec<Outcome> {
    let started = std::time::Instant::now();
    let mut order: Vec<usize> = (0..offsets.len()).collect();
    order.sort_by(|&a, &b| offsets[a].total_cmp(&offsets[b]));
    for node in order {
        let due = Duration::from_secs_f64(offsets[node]);
        std::thread::sleep(due.saturating_sub(started.elapsed()));
        let args = args(cluster, node, send_for, wait_for);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster.start_one("gossip", node, &args);
    }
    during(cluster);
    let last = offsets.iter().copied().fold(0.0, f64::max);
    cluster.finish(
        started,
        Duration::from_secs_f64(last + send_for + wait_for + 5.0),
    )
}

fn run(cluster: &mut Cluster, during: impl FnOnce(&Cluster)) -> Vec<Outcome> {
    let offsets = vec![0.0; cluster.ports.len()];
    run_staggered(cluster, &offsets, SEND_FOR, WAIT_FOR, during)
}

/// The survivors (by index) all exited 0 in time and printed one identical line, which is the
/// reference for the messages they folded.
fn assert_agree(cluster: &Cluster, outcomes: &[Outcome], survivors: &[usize]) -> (u64, String) {
    assert_agree_within(cluster, outcomes, survivors, SEND_FOR + WAIT_FOR)
}

fn assert_agree_within(
    cluster: &Cluster,
    outcomes: &[Outcome],
    survivors: &[usize],
    run_seconds: f64,
) -> (u64, String) {
    let mut results = Vec::new();
    for &index in survivors {
        let outcome = &outcomes[index];
        let context = format!(
            "node {index}: stdout {:?}\nstderr:\n{}",
            outcome.stdout, outcome.stderr
        );
        eprintln!("{context}");
        assert!(outcome.status == Some(0), "did not exit 0: {context}");
        assert!(
            outcome.elapsed < Duration::from_secs_f64(run_seconds + 0.5),
            "took {:?}: {context}",
            outcome.elapsed
        );
        assert_eq!(outcome.stdout.lines().count(), 1, "{context}");
        results.push(parse_result(&outcome.stdout).unwrap_or_else(|| panic!("{context}")));
    }
    for (index, result) in survivors.iter().zip(&results) {
        assert_eq!(
            *result, results[0],
            "node {index} disagrees with node {}",
            survivors[0]
        );
    }
    let (count, checksum) = results[0].clone();
    assert!(count > 0, "nothing was agreed");
    let logs: Vec<String> = survivors
        .iter()
        .map(|&node| std::fs::read_to_string(fold_log(cluster, node)).expect("fold log"))
        .collect();
    for (node, log) in survivors.iter().zip(&logs) {
        assert!(
            *log == logs[0],
            "node {node} folded other runs than node {}",
            survivors[0]
        );
    }
    let reference = gossip_reference(SEED, cluster.ports.len(), &logs[0])
        .unwrap_or_else(|error| panic!("fold log of node {}: {error}", survivors[0]));
    assert_eq!(
        outcomes[survivors[0]].stdout.trim(),
        reference,
        "the printed line is not the reference for the folded messages"
    );
    (count, checksum)
}

#[test]
fn four_nodes_agree_with_chatterbox_peers_json() {
    let _serial = serial();
    let mut cluster = Cluster::new("agree", 4, true);
    let outcomes = run(&mut cluster, |_| {});
    assert_agree(&cluster, &outcomes, &[0, 1, 2, 3]);
    for outcome in &outcomes {
        assert!(!outcome.stderr.contains("warning"), "{}", outcome.stderr);
    }
}

#[test]
fn survivors_agree_after_a_node_is_killed_mid_send() {
    let _serial = serial();
    let mut cluster = Cluster::new("kill", 4, false);
    let outcomes = run(&mut cluster, |cluster| {
        std::thread::sleep(Duration::from_millis(700));
        cluster.signal(3, "-KILL");
    });
    assert!(outcomes[3].status != Some(0), "node 3 was killed");
    assert_agree(&cluster, &outcomes, &[0, 1, 2]);
    assert!(
        outcomes[0].stderr.contains("deadline"),
        "survivors wait for the dead node's fin"
    );
}

#[test]
fn all_agree_after_a_node_is_paused_for_a_second_mid_send() {
    let _serial = serial();
    let mut cluster = Cluster::new("pause", 4, false);
    let outcomes = run(&mut cluster, |cluster| {
        std::thread::sleep(Duration::from_millis(300));
        cluster.signal(2, "-STOP");
        std::thread::sleep(Duration::from_secs(1));
        cluster.signal(2, "-CONT");
    });
    assert_agree(&cluster, &outcomes, &[0, 1, 2, 3]);
}

#[test]
fn garbage_from_a_stranger_does_not_stop_the_run() {
    let _serial = serial();
    let mut cluster = Cluster::new("garbage", 4, false);
    let target = cluster.address(1);
    let outcomes = run(&mut cluster, |_| {
        std::thread::sleep(Duration::from_millis(200));
        // Random bytes, an oversized length, a valid header of an unknown kind, and a truncated
        // frame that then stalls: each on its own connection.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let random: Vec<u8> = (0..100_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let payloads: [&[u8]; 4] = [
            &random,
            &[0xFF, 0xFF, 0xFF, 0xFF, 1],
            &[0, 0, 0, 9, 200, 0, 0, 0, 0],
            &[0, 0, 1, 0, 1],
        ];
        let mut held = Vec::new();
        for payload in payloads {
            if let Ok(mut stream) = TcpStream::connect(target) {
                let _ = stream.write_all(payload);
                held.push(stream);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    });
    assert_agree(&cluster, &outcomes, &[0, 1, 2, 3]);
    let log = &outcomes[1].stderr;
    assert!(
        log.contains("closing unidentified connection"),
        "reasons are logged: {log}"
    );
    assert!(log.contains("above maximum"), "{log}");
    assert!(
        log.contains("unknown frame kind") || log.contains("Malformed"),
        "{log}"
    );
}

/// chatterbox's way: one shell per node, started a quarter second apart (the last 0.5 s after
/// the first, half of --wait-for): all print the same non-empty line, the reference's.
#[test]
fn three_nodes_started_a_quarter_second_apart_agree() {
    let _serial = serial();
    let mut cluster = Cluster::new("staggered", 3, true);
    let (send_for, wait_for) = (1.5, 1.0);
    let outcomes = run_staggered(&mut cluster, &[0.0, 0.25, 0.5], send_for, wait_for, |_| {});
    let (count, _) = assert_agree_within(&cluster, &outcomes, &[0, 1, 2], send_for + wait_for);
    eprintln!("{count} messages agreed");
}

/// Four nodes started in a shuffled order at offsets up to 0.75 s (three quarters of
/// --wait-for), from fixed seeds so that a failure can be rerun.
#[test]
fn four_nodes_started_at_random_offsets_agree() {
    let _serial = serial();
    let (send_for, wait_for) = (1.0, 1.0);
    for seed in [0x5EED_u64, 0xC0FFEE] {
        let mut state = seed;
        let offsets: Vec<f64> = (0..4)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 751) as f64 / 1000.0
            })
            .collect();
        eprintln!("offsets {offsets:?}");
        let mut cluster = Cluster::new("random-starts", 4, false);
        let outcomes = run_staggered(&mut cluster, &offsets, send_for, wait_for, |_| {});
        assert_agree_within(&cluster, &outcomes, &[0, 1, 2, 3], send_for + wait_for);
    }
}

/// A node started after the others have finished sending cannot add anything: every node
/// prints the same line (the messages sent before the cut), and says why it is small.
#[test]
fn a_node_started_after_the_cut_adds_nothing_and_everyone_says_why() {
    let _serial = serial();
    let (send_for, wait_for) = (0.5, 2.0);
    let mut cluster = Cluster::new("late-start", 3, false);
    let outcomes = run_staggered(&mut cluster, &[0.0, 0.0, 1.0], send_for, wait_for, |_| {});
    assert_agree_within(&cluster, &outcomes, &[0, 1, 2], send_for + wait_for);
    for outcome in &outcomes {
        assert!(
            outcome.stderr.contains("after the cut") && outcome.stderr.contains("[2] add nothing"),
            "{}",
            outcome.stderr
        );
    }
}
