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

#[test]
fn every_subcommand_has_help_and_there_is_a_version() {
    for args in [
        &["-h"][..],
        &["gossip", "--help"],
        &["ring", "--help"],
        &["ring", "master", "--help"],
        &["kv", "--help"],
        &["kv", "slave", "--help"],
        &["lamport", "--help"],
        &["lamport", "analyze", "--help"],
        &["sim", "--help"],
        &["sim", "gossip", "--help"],
        &["chaos-proxy", "--help"],
        &["ports", "--help"],
    ] {
        let (code, stdout, stderr) = pollen(args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(
            stdout.to_lowercase().contains("usage: pollen"),
            "{args:?}: {stdout}"
        );
    }
    let (code, stdout, _) = pollen(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("pollen {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn option_errors_name_the_option_as_it_is_typed() {
    assert_usage_error(
        &["gossip", "-p", "x", "--send-for", "1", "--wait-for", "1"],
        "-p: ",
    );
    assert_usage_error(
        &["ring", "master", "127.0.0.1", "1", "-1", "2", "3"],
        "never negative",
    );
}

/// Every option `--help` lists is in the synopsis of the role's reference page (the README's
/// docs), so the docs cannot fall behind the binary.
#[test]
fn the_docs_synopses_list_every_option() {
    let root = env!("CARGO_MANIFEST_DIR");
    for (args, doc, command) in [
        (&["gossip", "--help"][..], "docs/gossip.md", "pollen gossip"),
        (&["ring", "--help"], "docs/ring.md", "pollen ring"),
        (&["kv", "--help"], "docs/kv.md", "pollen kv"),
        (&["lamport", "--help"], "docs/lamport.md", "pollen lamport"),
        (&["sim", "--help"], "docs/sim.md", "pollen sim"),
        (
            &["chaos-proxy", "--help"],
            "docs/network.md",
            "pollen chaos-proxy",
        ),
    ] {
        let (_, help, _) = pollen(args);
        let text = std::fs::read_to_string(format!("{root}/{doc}")).unwrap();
        // The code blocks of the page that show the command.
        let synopsis: String = text
            .split("```")
            .skip(1)
            .step_by(2)
            .filter(|block| block.contains(command))
            .collect();
        // An option's help line names it (`-p, --port PORT`): either spelling will do.
        let options = help
            .lines()
            .skip_while(|line| !line.starts_with("Options:"));
        for line in options.filter(|line| line.starts_with("    ")) {
            let spellings: Vec<&str> = line
                .split_whitespace()
                .take(3)
                .map(|word| word.trim_end_matches(','))
                .filter(|word| word.starts_with('-') && word.len() > 1)
                .collect();
            if spellings.is_empty() || spellings.contains(&"--help") {
                continue;
            }
            let listed = synopsis
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .any(|token| spellings.contains(&token));
            assert!(
                listed,
                "{doc}: the synopsis of `{command}` lacks {spellings:?}"
            );
        }
    }
}

/// Runs that cannot do what was asked say so instead of succeeding silently.
#[test]
fn lone_nodes_say_what_they_are_waiting_for() {
    use std::io::BufRead;
    let dir = common::scratch_dir("cli-lone");
    let port = common::free_ports(1)[0].to_string();
    let peers = dir.join("peers.txt");
    std::fs::write(&peers, format!("127.0.0.1:{port}\n")).unwrap();
    let peers = peers.to_str().unwrap();
    let (code, stdout, stderr) = pollen(&[
        "gossip",
        "-p",
        &port,
        "--peer-config-file",
        peers,
        "--send-for",
        "0.2",
        "--wait-for",
        "0.2",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "(0, 0.000000000)");
    assert!(
        stderr.contains("warning: the peers file lists only this node"),
        "{stderr}"
    );
    let mut worker = Command::new(common::POLLEN)
        .args([
            "ring",
            "slave",
            "127.0.0.1",
            &port,
            "--peer-config-file",
            peers,
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(worker.stderr.take().unwrap());
    let waiting = format!("waiting for a master to connect to 127.0.0.1:{port}");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let found = stderr
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains(&waiting));
        let _ = sender.send(found);
    });
    let said = receiver
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or(false);
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(said, "the worker says it waits for a master");
    let _ = std::fs::remove_dir_all(dir);
}
