//! Command-line behaviour: bad input gets one line on stderr and exit status 2; `--help` works.

mod common;

use std::process::Command;

fn pollen(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(common::POLLEN)
        .args(args)
        .output()
        .expect("run pollen");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().unwrap_or(-1), stdout, stderr)
}

fn assert_usage_error(args: &[&str], needle: &str) {
    let (code, stdout, stderr) = pollen(args);
    assert_eq!(code, 2, "{args:?}: {stderr}");
    assert!(
        stdout.is_empty(),
        "{args:?}: results only on success: {stdout}"
    );
    assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: {stderr:?} should mention {needle:?}"
    );
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let dir = common::scratch_dir("cli");
    let peers = dir.join("peers.txt");
    std::fs::write(&peers, "127.0.0.1:3000\n127.0.0.1:3001\n").unwrap();
    let peers = peers.to_str().unwrap();
    assert_usage_error(&[], "missing subcommand");
    assert_usage_error(&["frobnicate"], "unknown subcommand");
    assert_usage_error(
        &["gossip", "--wait-for", "1", "--peer-config-file", peers],
        "--send-for",
    );
    assert_usage_error(
        &["gossip", "--send-for", "x", "--wait-for", "1"],
        "send-for",
    );
    assert_usage_error(
        &["gossip", "--send-for", "-1", "--wait-for", "1"],
        "send-for",
    );
    assert_usage_error(&["gossip", "--bogus"], "bogus");
    let base = [
        "gossip",
        "--send-for",
        "1",
        "--wait-for",
        "1",
        "--peer-config-file",
    ];
    assert_usage_error(
        &[&base[..], &["/nonexistent/peers"]].concat(),
        "/nonexistent/peers",
    );
    assert_usage_error(
        &[&base[..], &[peers, "-p", "4000"]].concat(),
        "not in the peers file",
    );
    assert_usage_error(&[&base[..], &[peers, "-p", "99999"]].concat(), "-p");
    assert_usage_error(
        &[&base[..], &[peers, "--tick-duration", "0"]].concat(),
        "tick",
    );
    assert_usage_error(
        &[&base[..], &[peers, "extra"]].concat(),
        "unexpected argument",
    );
    assert_usage_error(&["ports", "0"], "ports");
    assert_usage_error(
        &["kv", "slave", "3000", "--fsync", "always"],
        "need --data-dir",
    );
    assert_usage_error(
        &[
            "kv",
            "slave",
            "3000",
            "--data-dir",
            "d",
            "--fsync",
            "sometimes",
        ],
        "expected always, everysec or no",
    );
    assert_usage_error(&["kv", "master", "3000", "--data-dir", "d"], "for workers");
    assert_usage_error(&["sim", "kv", "--fsync", "often"], "--fsync");
    assert_usage_error(
        &["kv", "master", "3000", "--suspect-ms", "50"],
        "--suspect-ms",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_goes_to_stdout_and_exits_0() {
    for args in [&["--help"][..], &["gossip", "--help"]] {
        let (code, stdout, _) = pollen(args);
        assert_eq!(code, 0);
        assert!(stdout.contains("usage: pollen"), "{stdout}");
    }
}

#[test]
fn ports_prints_distinct_free_ports() {
    let (code, stdout, _) = pollen(&["ports", "5"]);
    assert_eq!(code, 0);
    let mut ports: Vec<u16> = stdout.lines().map(|line| line.parse().unwrap()).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 5);
}
