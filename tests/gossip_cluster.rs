//! gossip end to end: real `pollen gossip` processes on loopback, with a node killed, a node
//! paused, and a stranger sending garbage. Every test asserts that the nodes that should agree
//! print the identical `(COUNT, CHECKSUM)` line, that the count is plausible, and that each
//! node exits 0 before `send-for + wait-for`.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{Cluster, Outcome, parse_result, serial};

const SEND_FOR: f64 = 1.5;
const WAIT_FOR: f64 = 2.5;

fn args() -> Vec<String> {
    vec![
        "--send-for".into(),
        SEND_FOR.to_string(),
        "--wait-for".into(),
        WAIT_FOR.to_string(),
        "--with-seed".into(),
        "7".into(),
    ]
}

fn run(cluster: &mut Cluster, during: impl FnOnce(&Cluster)) -> Vec<Outcome> {
    let args = args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = cluster.start("gossip", &args);
    during(cluster);
    cluster.finish(started, Duration::from_secs_f64(SEND_FOR + WAIT_FOR + 5.0))
}

/// The survivors (by index) all exited 0 in time and printed one identical, plausible line.
fn assert_agree(outcomes: &[Outcome], survivors: &[usize]) -> (u64, String) {
    let mut results = Vec::new();
    for &index in survivors {
        let outcome = &outcomes[index];
        let context = format!(
            "node {index}: stdout {:?}\nstderr:\n{}",
            outcome.stdout, outcome.stderr
        );
        eprintln!("{context}");
        assert!(
            outcome.status.is_some_and(|s| s.success()),
            "did not exit 0: {context}"
        );
        assert!(
            outcome.elapsed < Duration::from_secs_f64(SEND_FOR + WAIT_FOR + 0.5),
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
    // Thousands of messages per second even on a loaded machine; the checksum is roughly
    // count^2/4 (mean of i·m_i), which catches a fold that skips or repeats messages.
    assert!(count > 10_000, "only {count} messages");
    let value: f64 = checksum.parse().unwrap();
    let expected = (count as f64) * (count as f64) / 4.0;
    assert!(
        (value / expected - 1.0).abs() < 0.05,
        "checksum {value} vs about {expected}"
    );
    (count, checksum)
}

#[test]
fn four_nodes_agree_with_chatterbox_peers_json() {
    let _serial = serial();
    let mut cluster = Cluster::new("agree", 4, true);
    let outcomes = run(&mut cluster, |_| {});
    assert_agree(&outcomes, &[0, 1, 2, 3]);
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
    assert!(
        outcomes[3].status.is_some_and(|s| !s.success()),
        "node 3 was killed"
    );
    assert_agree(&outcomes, &[0, 1, 2]);
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
    assert_agree(&outcomes, &[0, 1, 2, 3]);
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
    assert_agree(&outcomes, &[0, 1, 2, 3]);
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
