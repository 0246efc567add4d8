//! Command-line behaviour: bad input gets one line on stderr and exit status 2; `--help` works.

mod common;

use std::process::Command;

/// Runs pollen to its end; one still running after 30 s (a node that should have refused its
/// arguments and is serving instead) is killed and reports status -1, so a test fails rather
/// than hangs.
fn pollen(args: &[&str]) -> (i32, String, String) {
    use std::io::Read as _;
    use std::process::Stdio;
    let mut child = Command::new(common::POLLEN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pollen");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let stderr = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for pollen") {
            break status.code().unwrap_or(-1);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let stdout = String::from_utf8_lossy(&stdout.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
    (status, stdout, stderr)
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

/// A peers file listing one free loopback port, and that port, for a node that must refuse its
/// arguments before it listens.
fn one_node_peers(name: &str) -> (std::path::PathBuf, String) {
    let dir = common::scratch_dir(name);
    let port = common::free_ports(1)[0].to_string();
    std::fs::write(dir.join("peers.txt"), format!("127.0.0.1:{port}\n")).unwrap();
    (dir, port)
}

/// Longer than the handshake carries (`wire::CLUSTER_NAME_BYTES_MAX`); the encoder asserts the
/// limit, so a node that let it through panicked at its first connection.
fn cluster_name_too_long() -> String {
    "x".repeat(300)
}

/// Runs `role` as one node of a one-node cluster with `args` (`{port}`, `{peers}` filled in)
/// and a cluster name too long for the handshake: it must refuse it as a usage error.
fn refuses_a_cluster_name_too_long(role: &str, args: &[&str]) {
    let (dir, port) = one_node_peers(&format!("cli-cluster-{role}"));
    let peers = dir.join("peers.txt");
    let cluster = cluster_name_too_long();
    let mut full = vec![role];
    for arg in args {
        full.push(match *arg {
            "{port}" => &port,
            other => other,
        });
    }
    full.extend([
        "--peer-config-file",
        peers.to_str().unwrap(),
        "--cluster",
        &cluster,
    ]);
    assert_usage_error(&full, "--cluster");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn gossip_refuses_a_cluster_name_too_long_for_the_handshake() {
    let args = ["-p", "{port}", "--send-for", "0.1", "--wait-for", "0.1"];
    refuses_a_cluster_name_too_long("gossip", &args);
}

#[test]
fn ring_refuses_a_cluster_name_too_long_for_the_handshake() {
    refuses_a_cluster_name_too_long("ring", &["slave", "127.0.0.1", "{port}"]);
}

#[test]
fn kv_refuses_a_cluster_name_too_long_for_the_handshake() {
    refuses_a_cluster_name_too_long("kv", &["slave", "{port}"]);
}

#[test]
fn lamport_refuses_a_cluster_name_too_long_for_the_handshake() {
    refuses_a_cluster_name_too_long("lamport", &["-p", "{port}", "--duration", "0.1"]);
}

/// The README's Layout names every source file under `src/` (itself or by its folder) and
/// nothing that does not exist: a newcomer's map of the tree stays true as files move.
#[test]
fn the_readme_layout_names_every_source_file_and_only_files_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("\n## Layout")
        .nth(1)
        .expect("README has a Layout section");
    let block = section
        .split("```")
        .nth(1)
        .expect("Layout has a code block");
    let mut named: Vec<String> = Vec::new();
    for line in block.lines().skip(1) {
        if line.is_empty() || line.starts_with(' ') {
            continue; // a description's continuation
        }
        // The path column: one word, or words joined by commas (`src/log.rs, peers.rs`).
        let mut entries = Vec::new();
        for word in line.split_whitespace() {
            entries.push(word.trim_end_matches(','));
            if !word.ends_with(',') {
                break;
            }
        }
        let mut folder = String::new();
        for (index, entry) in entries.into_iter().enumerate() {
            let path = if index == 0 {
                folder = entry.rfind('/').map_or("", |at| &entry[..=at]).to_string();
                entry.to_string()
            } else {
                format!("{folder}{entry}")
            };
            named.extend(expand_braces(&path));
        }
    }
    assert!(named.len() > 20, "too few entries parsed: {named:?}");
    for path in &named {
        let exists = match path.split_once('*') {
            Some((folder, _)) => root.join(folder).is_dir(),
            None => root.join(path).exists(),
        };
        assert!(
            exists,
            "the README Layout names {path}, which does not exist"
        );
    }
    let mut sources = Vec::new();
    let mut folders = vec![root.join("src")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative = path.strip_prefix(root).unwrap();
                sources.push(relative.to_str().unwrap().to_string());
            }
        }
    }
    for source in &sources {
        let covered = named
            .iter()
            .any(|entry| entry == source || (entry.ends_with('/') && source.starts_with(entry)));
        assert!(covered, "the README Layout does not name {source}");
    }
}

/// `a/{b,c}.rs` → `a/b.rs`, `a/c.rs` (one pair of braces, as the Layout writes them).
fn expand_braces(path: &str) -> Vec<String> {
    let (Some(open), Some(close)) = (path.find('{'), path.find('}')) else {
        return vec![path.to_string()];
    };
    path[open + 1..close]
        .split(',')
        .map(|choice| format!("{}{choice}{}", &path[..open], &path[close + 1..]))
        .collect()
}
