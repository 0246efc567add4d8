//! kv end to end with real processes on loopback: a REPL session through a pipe; redis-cli
//! talking to the master; 10 000 keys written, a worker SIGKILLed, every key read back, and
//! NODES showing every key with 2 live copies again; hostile RESP input.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{POLLEN, Resp, free_ports, scratch_dir, serial};

struct Store {
    workers: Vec<Child>,
    master: Option<Child>,
    resp_port: u16,
    dir: std::path::PathBuf,
}

impl Store {
    /// Starts `workers` workers and a master (stdin piped when `repl`).
    fn start(name: &str, workers: usize, repl: bool) -> Store {
        let dir = scratch_dir(name);
        let ports = free_ports(workers + 2);
        let peers = dir.join("workers.txt");
        let text: String = ports[..workers]
            .iter()
            .map(|p| format!("127.0.0.1:{p}\n"))
            .collect();
        std::fs::write(&peers, text).unwrap();
        let spawn = |args: Vec<String>, stdin: Stdio| {
            Command::new(POLLEN)
                .arg("kv")
                .args(args)
                .arg("--peer-config-file")
                .arg(&peers)
                .stdin(stdin)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn pollen")
        };
        let workers_children: Vec<Child> = ports[..workers]
            .iter()
            .map(|port| spawn(vec!["slave".into(), port.to_string()], Stdio::null()))
            .collect();
        let resp_port = ports[workers + 1];
        let mut args = vec![
            "master".to_string(),
            ports[workers].to_string(),
            "--replicas".into(),
            "2".into(),
            "--resp-port".into(),
            resp_port.to_string(),
        ];
        if !repl {
            args.push("--no-repl".into());
        }
        let master = spawn(args, if repl { Stdio::piped() } else { Stdio::null() });
        Store {
            workers: workers_children,
            master: Some(master),
            resp_port,
            dir,
        }
    }

    fn connect(&self) -> Resp {
        Resp::connect(self.resp_port)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        for child in self.workers.iter_mut().chain(self.master.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn repl_session_through_a_pipe() {
    let _serial = serial();
    let mut store = Store::start("kv-repl", 3, true);
    let mut master = store.master.take().unwrap();
    let script = "SET a 1\nSET greeting \"hello world\"\nGET a\nGET greeting\nGET missing\n\
                  DEL a\nGET a\nBOGUS x\nSET onlykey\nKILL 2\nKILL 9\nGET greeting\nNODES\nQUIT\n";
    master
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let mut output = String::new();
    master
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    let status = master.wait().unwrap();
    let lines: Vec<&str> = output.lines().collect();
    eprintln!("{output}");
    assert!(status.success());
    assert_eq!(
        &lines[..12],
        &[
            "OK",
            "OK",
            "\"1\"",
            "\"hello world\"",
            "(nil)",
            "(integer) 1",
            "(nil)",
            "ERR unknown command 'BOGUS'",
            "ERR syntax error (SET key value; options are not supported)",
            "OK",
            "ERR usage: KILL <worker 0..2>",
            "\"hello world\"",
        ]
    );
    assert!(lines[12].starts_with("worker 0 up keys"), "{}", lines[12]);
    assert_eq!(lines[14], "worker 2 down");
    assert!(lines[15].starts_with("keys 1 copies"), "{}", lines[15]);
    assert_eq!(lines.last(), Some(&"OK"));
    // QUIT stopped every worker.
    for worker in &mut store.workers {
        let started = Instant::now();
        while worker.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "a worker survived QUIT"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn redis_cli_talks_to_it() {
    let Ok(version) = Command::new("redis-cli").arg("--version").output() else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install redis-tools (redis-cli)"
        );
        eprintln!("redis-cli not installed; skipped");
        return;
    };
    assert!(version.status.success());
    let _serial = serial();
    let store = Store::start("kv-cli", 2, false);
    let _ = store.connect();
    let port = store.resp_port.to_string();
    let cli = |args: &[&str]| {
        let output = Command::new("redis-cli")
            .args(["-p", &port])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string()
    };
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["SET", "fruit", "apple pie"]), "OK");
    assert_eq!(cli(&["GET", "fruit"]), "apple pie");
    assert_eq!(cli(&["MSET", "a", "1", "b", "2"]), "OK");
    assert_eq!(cli(&["MGET", "a", "b", "nope"]), "1\n2"); // nil prints as an empty line
    assert_eq!(cli(&["EXISTS", "a", "nope", "b"]), "2");
    assert_eq!(cli(&["DEL", "a"]), "1");
    assert_eq!(cli(&["DBSIZE"]), "2");
    assert_eq!(cli(&["ECHO", "hi"]), "hi");
    assert!(cli(&["INFO"]).contains("role:master"));
    assert!(cli(&["FLUSHALL"]).starts_with("ERR unknown command"));
}

#[test]
fn ten_thousand_keys_survive_a_killed_worker() {
    let _serial = serial();
    let mut store = Store::start("kv-kill", 3, false);
    let mut client = store.connect();
    // Wait until the cluster serves (the master holds commands until every worker is up).
    assert_eq!(client.call(&["PING"]), "PONG");
    const KEYS: usize = 10_000;
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(500) {
        for &key in chunk {
            let (key, value) = (format!("key:{key}"), format!("value-{key}-{}", key * 7));
            client.send(&[b"SET", key.as_bytes(), value.as_bytes()]);
        }
        for _ in chunk {
            assert_eq!(client.read(), "OK");
        }
    }
    assert_eq!(client.call(&["DBSIZE"]), KEYS.to_string());
    store.workers[1].kill().unwrap(); // SIGKILL
    let _ = store.workers[1].wait();
    let started = Instant::now();
    let mut missing = Vec::new();
    for key in 0..KEYS {
        let name = format!("key:{key}");
        let mut value = client.call(&["GET", &name]);
        if value.starts_with("ERR") {
            // A read in flight when the worker died; the next goes to a live replica.
            value = client.call(&["GET", &name]);
        }
        if value != format!("value-{key}-{}", key * 7) {
            missing.push((key, value));
        }
    }
    assert!(
        missing.is_empty(),
        "{} keys wrong, e.g. {:?}",
        missing.len(),
        &missing[..5.min(missing.len())]
    );
    eprintln!(
        "read back {KEYS} keys after the kill in {:?}",
        started.elapsed()
    );
    // Redistribution restores two live copies of every key.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = client.call(&["NODES"]);
        if report.contains("worker 1 down")
            && report.contains("every key has 2 live copies")
            && !report.contains("NOT")
        {
            assert!(
                report.contains(&format!("keys {KEYS} copies {}", 2 * KEYS)),
                "{report}"
            );
            eprintln!("{report}");
            break;
        }
        assert!(Instant::now() < deadline, "copies not restored: {report}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn hostile_resp_input_gets_an_error_and_no_memory() {
    let _serial = serial();
    let store = Store::start("kv-hostile", 2, false);
    let mut client = store.connect();
    assert_eq!(client.call(&["PING"]), "PONG");
    let master = store.master.as_ref().expect("the master").id();
    let before = memory_kib(master);
    for attack in [
        &b"*1000000000\r\n"[..],
        b"*1\r\n$1073741824\r\n",
        b"GARBAGE\r\n",
    ] {
        let mut bad = store.connect();
        bad.stream.write_all(attack).unwrap();
        let reply = bad.read();
        assert!(reply.starts_with("ERR"), "{reply}");
        let mut rest = Vec::new();
        let _ = bad.reader.read_to_end(&mut rest); // the server closed it
    }
    // A value above the documented maximum is refused; the server is fine.
    let big = "x".repeat(200_000);
    assert!(
        client
            .call(&["SET", "big", &big])
            .starts_with("ERR value above")
    );
    assert_eq!(client.call(&["SET", "k", "v"]), "OK");
    assert_eq!(client.call(&["GET", "k"]), "v");
    // Nothing was sized by the attackers' numbers: neither the peak of mapped memory (which a
    // lazily touched 1 GB buffer would raise) nor the peak resident set moved by more than
    // a few buffers.
    let after = memory_kib(master);
    assert!(
        after.0 < before.0 + 16 * 1024 && after.1 < before.1 + 16 * 1024,
        "VmPeak, VmHWM before {before:?} KiB, after {after:?} KiB"
    );
}

/// (VmPeak, VmHWM) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    (field("VmPeak:"), field("VmHWM:"))
}
