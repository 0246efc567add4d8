//! kv end to end with real processes on loopback: a REPL session through a pipe; redis-cli
//! talking to the master; 10 000 keys written, a worker SIGKILLed, every key read back, and
//! NODES showing every key with 2 live copies again; hostile RESP input.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{POLLEN, Resp, free_ports, memory_kib, repl_transcript, scratch_dir, serial};

struct Store {
    workers: Vec<Option<Child>>,
    master: Option<Child>,
    resp_port: u16,
    dir: std::path::PathBuf,
    ports: Vec<u16>,
    /// Extra arguments of every worker; `{dir}` becomes the worker's own data dir.
    worker_args: Vec<String>,
}

impl Store {
    /// Starts `workers` workers and a master (stdin piped when `repl`).
    fn start(name: &str, workers: usize, repl: bool) -> Store {
        Store::start_with(name, workers, repl, &[])
    }

    /// As `start`, with extra worker arguments (`{dir}`: a data dir per worker).
    fn start_with(name: &str, workers: usize, repl: bool, worker_args: &[&str]) -> Store {
        let mut store = Store::new(name, workers, worker_args);
        for worker in 0..workers {
            store.start_worker(worker);
        }
        store.start_master(repl);
        store
    }

    /// Ports, peers file and data dirs (`data-N`), nothing started.
    fn new(name: &str, workers: usize, worker_args: &[&str]) -> Store {
        let dir = scratch_dir(name);
        let ports = free_ports(workers + 2);
        let text: String = ports[..workers]
            .iter()
            .map(|p| format!("127.0.0.1:{p}\n"))
            .collect();
        std::fs::write(dir.join("workers.txt"), text).unwrap();
        let resp_port = ports[workers + 1];
        Store {
            workers: (0..workers).map(|_| None).collect(),
            master: None,
            resp_port,
            dir,
            ports,
            worker_args: worker_args.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn start_master(&mut self, repl: bool) {
        let workers = self.workers.len();
        let mut args = vec![
            "master".to_string(),
            self.ports[workers].to_string(),
            "--replicas".into(),
            "2".into(),
            "--resp-port".into(),
            self.resp_port.to_string(),
        ];
        if !repl {
            args.push("--no-repl".into());
        }
        let stdin = if repl { Stdio::piped() } else { Stdio::null() };
        self.master = Some(self.spawn(&args, stdin, Stdio::null()));
    }

    fn spawn(&self, args: &[String], stdin: Stdio, stderr: Stdio) -> Child {
        Command::new(POLLEN)
            .arg("kv")
            .args(args)
            .arg("--peer-config-file")
            .arg(self.dir.join("workers.txt"))
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn pollen")
    }

    /// (Re)starts a worker; its stderr goes to (the end of) `worker-N.log`.
    fn start_worker(&mut self, worker: usize) {
        let data_dir = self.dir.join(format!("data-{worker}"));
        let mut args = vec!["slave".to_string(), self.ports[worker].to_string()];
        args.extend(
            self.worker_args
                .iter()
                .map(|arg| arg.replace("{dir}", &data_dir.to_string_lossy())),
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.worker_log(worker))
            .unwrap();
        self.workers[worker] = Some(self.spawn(&args, Stdio::null(), Stdio::from(log)));
    }

    fn worker_log(&self, worker: usize) -> std::path::PathBuf {
        self.dir.join(format!("worker-{worker}.log"))
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to a worker.
    fn signal_worker(&self, worker: usize, signal: &str) {
        let pid = self.workers[worker].as_ref().expect("started").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// SIGKILL, and reap.
    fn kill_worker(&mut self, worker: usize) {
        if let Some(mut child) = self.workers[worker].take() {
            child.kill().unwrap();
            let _ = child.wait();
        }
    }

    fn connect(&self) -> Resp {
        Resp::connect(self.resp_port)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        for child in self
            .workers
            .iter_mut()
            .flatten()
            .chain(self.master.iter_mut())
        {
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
    let (output, success) = repl_transcript(&mut master, script);
    let lines: Vec<&str> = output.lines().collect();
    eprintln!("{output}");
    assert!(success);
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
            "ERR wrong number of arguments for 'set' command",
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
    for worker in store.workers.iter_mut().flatten() {
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
    assert_eq!(
        client.call(&["CONFIG", "GET", "appendonly"]),
        "appendonly|no"
    );
    store.kill_worker(1);
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

/// Waits until NODES says every key has its live copies (and `extra` holds for the report).
fn converge(client: &mut Resp, extra: &dyn Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = client.call(&["NODES"]);
        if report.contains(": every key has") && extra(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "copies not restored: {report}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pipelines GETs of `keys` and returns the replies in order (one retry for an ERR: a read in
/// flight when a worker died).
fn read_all(client: &mut Resp, keys: &[String]) -> Vec<String> {
    let mut values = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        for key in chunk {
            client.send(&[b"GET", key.as_bytes()]);
        }
        values.extend(chunk.iter().map(|_| client.read()));
    }
    for (key, value) in keys.iter().zip(values.iter_mut()) {
        if value.starts_with("ERR") {
            *value = client.call(&["GET", key]);
        }
    }
    values
}

/// `--fsync always`: every worker SIGKILLed at once while a client pipelines SETs, then all
/// restarted on their data dirs — every SET that was answered OK reads back.
#[test]
fn every_acknowledged_write_survives_killing_every_worker() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let _serial = serial();
    let mut store = Store::start_with(
        "kv-kill-all",
        3,
        false,
        &["--data-dir", "{dir}", "--fsync", "always"],
    );
    let mut client = store.connect();
    assert_eq!(client.call(&["PING"]), "PONG");
    // What redis-benchmark asks about persistence is answered from the workers' greetings.
    assert_eq!(
        client.call(&["CONFIG", "GET", "appendonly"]),
        "appendonly|yes"
    );
    assert_eq!(
        client.call(&["CONFIG", "GET", "appendfsync"]),
        "appendfsync|always"
    );
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let mut client = store.connect();
        std::thread::spawn(move || {
            // (key index, acknowledged)
            let mut outcome: Vec<bool> = Vec::new();
            let mut errors = 0;
            while !stop.load(Ordering::Relaxed) && outcome.len() < 400_000 {
                let first = outcome.len();
                for key in first..first + 100 {
                    let (key, value) = (format!("key:{key}"), format!("value-{key}"));
                    client.send(&[b"SET", key.as_bytes(), value.as_bytes()]);
                }
                for _ in 0..100 {
                    let reply = client.read();
                    let ok = reply == "OK";
                    assert!(ok || reply.starts_with("ERR"), "{reply}");
                    errors += !ok as usize;
                    outcome.push(ok);
                    acked.fetch_add(ok as usize, Ordering::Relaxed);
                }
                if errors > 0 {
                    // While the cluster is down, do not spin.
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            (outcome, errors)
        })
    };
    let wait_for = |count: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while acked.load(Ordering::Relaxed) < count {
            assert!(Instant::now() < deadline, "writes stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for(5_000);
    for worker in 0..3 {
        store.kill_worker(worker);
    }
    let at_kill = acked.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    for worker in 0..3 {
        store.start_worker(worker);
    }
    // Writes resume once the workers are back.
    wait_for(at_kill + 2_000);
    stop.store(true, Ordering::Relaxed);
    let (outcome, errors) = writer.join().unwrap();
    converge(&mut client, &|report| !report.contains("down"));
    let keys: Vec<String> = (0..outcome.len()).map(|k| format!("key:{k}")).collect();
    let values = read_all(&mut client, &keys);
    let lost: Vec<(usize, &String)> = values
        .iter()
        .enumerate()
        .filter(|&(key, value)| outcome[key] && *value != format!("value-{key}"))
        .collect();
    let acknowledged = outcome.iter().filter(|&&ok| ok).count();
    eprintln!(
        "{} SETs sent, {acknowledged} acknowledged ({at_kill} before the kill), {errors} refused \
         while the workers were down",
        outcome.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..5.min(lost.len())]
    );
    for worker in 0..3 {
        let log = std::fs::read_to_string(store.worker_log(worker)).unwrap();
        assert!(log.contains("replayed"), "worker {worker}: {log}");
    }
}

/// A worker SIGKILLed, its log torn, writes (new keys, overwrites, deletions) made while it
/// is down; restarted, it truncates the torn tail, and catches up from its replica: with the
/// other worker then killed, it alone serves every key at its latest value.
#[test]
fn a_restarted_worker_with_a_torn_log_catches_up_from_its_replica() {
    let _serial = serial();
    let mut store = Store::start_with("kv-catch-up", 2, false, &["--data-dir", "{dir}"]);
    let mut client = store.connect();
    assert_eq!(client.call(&["PING"]), "PONG");
    let set_all = |client: &mut Resp, keys: std::ops::Range<usize>, tag: &str| {
        for key in keys.clone() {
            let (key, value) = (format!("key:{key}"), format!("{tag}-{key}"));
            client.send(&[b"SET", key.as_bytes(), value.as_bytes()]);
        }
        for _ in keys {
            assert_eq!(client.read(), "OK");
        }
    };
    set_all(&mut client, 0..2000, "a");
    store.kill_worker(0);
    set_all(&mut client, 2000..4000, "b");
    set_all(&mut client, 0..1000, "c");
    for key in 1000..1100 {
        assert_eq!(client.call(&["DEL", &format!("key:{key}")]), "1");
    }
    // Tear the log: the last record loses its end, and garbage follows.
    let log = store.dir.join("data-0").join("appendonly.pollen");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.truncate(bytes.len() - 5);
    bytes.extend_from_slice(b"\xde\xad\xbe\xef torn");
    std::fs::write(&log, &bytes).unwrap();
    store.start_worker(0);
    converge(&mut client, &|report| report.contains("worker 0 up"));
    let stderr = std::fs::read_to_string(store.worker_log(0)).unwrap();
    // The record cut short now runs into the garbage: its checksum fails.
    assert!(
        stderr.contains("checksum mismatch after 1999 records"),
        "{stderr}"
    );
    assert!(stderr.contains("replayed 1999 records"), "{stderr}");
    store.kill_worker(1);
    converge(&mut client, &|report| report.contains("worker 1 down"));
    let keys: Vec<String> = (0..4000).map(|k| format!("key:{k}")).collect();
    let values = read_all(&mut client, &keys);
    for (key, value) in values.iter().enumerate() {
        let wanted = match key {
            0..1000 => format!("c-{key}"),
            1000..1100 => "(nil)".to_string(),
            2000.. => format!("b-{key}"),
            _ => format!("a-{key}"),
        };
        assert_eq!(*value, wanted, "key:{key} from the restarted worker alone");
    }
}

/// Two replicas that disagree (logs written by hand: `k` at version 5 on worker 0, version 9 on
/// worker 1): a read answers the newer value and repairs worker 0 (INFO counts it), which then
/// serves the newer value alone.
#[test]
fn a_read_repairs_a_stale_replica() {
    use pollen::journal::{Record, header};
    let _serial = serial();
    let mut store = Store::new("kv-repair", 2, &["--data-dir", "{dir}"]);
    for (worker, version, value) in [(0, 5, "old"), (1, 9, "new")] {
        let mut log = header().to_vec();
        for (version, key, value) in [(version, "k", value), (3, "same", "equal")] {
            let value = Some(value.as_bytes());
            Record {
                version,
                key: key.as_bytes(),
                value,
            }
            .append_to(&mut log);
        }
        let dir = store.dir.join(format!("data-{worker}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("appendonly.pollen"), log).unwrap();
    }
    // The master holds commands until its workers are up: the reads are the first thing the
    // workers see after the membership, before any transfer could reconcile them.
    store.start_master(false);
    let mut client = store.connect();
    client.send(&[b"GET", b"k"]);
    client.send(&[b"GET", b"same"]);
    std::thread::sleep(Duration::from_millis(100));
    store.start_worker(0);
    store.start_worker(1);
    assert_eq!(client.read(), "new");
    assert_eq!(client.read(), "equal");
    let info = client.call(&["INFO"]);
    assert!(info.contains("read_repairs:1\r\n"), "{info}");
    store.kill_worker(1);
    converge(&mut client, &|report| report.contains("worker 1 down"));
    assert_eq!(client.call(&["GET", "k"]), "new");
}

/// A worker that rejoins empty needs 20 MB back (20 000 keys of 1 KiB): more than the master
/// can relay at once, so the transfer must wait for room instead of dropping batches. With the
/// other worker then killed, the rejoined one serves every key alone.
#[test]
fn a_large_transfer_arrives_whole() {
    let _serial = serial();
    let mut store = Store::start("kv-large-transfer", 2, false);
    let mut client = store.connect();
    assert_eq!(client.call(&["PING"]), "PONG");
    const KEYS: usize = 20_000;
    let value = |key: usize| format!("{key:08}-{}", "v".repeat(1015));
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(500) {
        for &key in chunk {
            let name = format!("key:{key}");
            client.send(&[b"SET", name.as_bytes(), value(key).as_bytes()]);
        }
        for _ in chunk {
            assert_eq!(client.read(), "OK");
        }
    }
    store.kill_worker(0);
    converge(&mut client, &|report| report.contains("worker 0 down"));
    store.start_worker(0);
    converge(&mut client, &|report| report.contains("worker 0 up"));
    store.kill_worker(1);
    converge(&mut client, &|report| report.contains("worker 1 down"));
    let keys: Vec<String> = (0..KEYS).map(|k| format!("key:{k}")).collect();
    let values = read_all(&mut client, &keys);
    let wrong = (0..KEYS).filter(|&k| values[k] != value(k)).count();
    assert_eq!(wrong, 0, "keys missing or wrong on the rejoined worker");
}

/// The whole cluster stopped (the master SIGKILLed; the workers exit without it) and started
/// again on the same data dirs: the keys are back, and new writes win over the logged ones —
/// the new master's versions start above the old ones (its start time, and the workers'
/// greetings).
#[test]
fn a_restarted_cluster_keeps_its_data_and_takes_new_writes() {
    let _serial = serial();
    let mut store = Store::start_with("kv-restart-all", 2, false, &["--data-dir", "{dir}"]);
    let mut client = store.connect();
    assert_eq!(client.call(&["PING"]), "PONG");
    for key in 0..100 {
        assert_eq!(client.call(&["SET", &format!("key:{key}"), "first"]), "OK");
    }
    assert_eq!(client.call(&["DEL", "key:99"]), "1");
    drop(client);
    let mut master = store.master.take().unwrap();
    master.kill().unwrap();
    let _ = master.wait();
    for worker in store.workers.iter_mut() {
        let mut child = worker.take().unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "a worker outlived its master"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for worker in 0..2 {
        store.start_worker(worker);
    }
    store.start_master(false);
    let mut client = store.connect();
    assert_eq!(client.call(&["GET", "key:7"]), "first");
    assert_eq!(client.call(&["GET", "key:99"]), "(nil)");
    assert_eq!(client.call(&["DBSIZE"]), "99");
    for key in 0..100 {
        assert_eq!(client.call(&["SET", &format!("key:{key}"), "second"]), "OK");
    }
    let keys: Vec<String> = (0..100).map(|k| format!("key:{k}")).collect();
    assert!(read_all(&mut client, &keys).iter().all(|v| v == "second"));
}

/// A client pipelines 300 MB of SETs while a worker is SIGSTOPped: the master first stops
/// reading the client once 4 MiB of its commands are unanswered, then (after a second of
/// silence) stops waiting for the worker and keeps at most 16 MiB of writes for it before
/// evicting it — so its peak memory stays far below what it was sent — and after SIGCONT every
/// SET is answered OK, in order.
#[test]
fn a_pipelining_client_is_held_while_a_worker_is_stalled() {
    let _serial = serial();
    let store = Store::start("kv-held", 2, false);
    let mut client = store.connect();
    assert_eq!(client.call(&["PING"]), "PONG");
    let master = store.master.as_ref().expect("the master").id();
    let before = memory_kib(master);
    store.signal_worker(1, "-STOP");
    const SETS: usize = 300_000;
    let mut stream = client.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let value = "x".repeat(1000);
        let mut out = Vec::new();
        for key in 0..SETS {
            let key = format!("key:{key}");
            out.extend_from_slice(
                format!(
                    "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
                    key.len(),
                    value.len()
                )
                .as_bytes(),
            );
            if out.len() > 1 << 20 {
                stream.write_all(&out).unwrap();
                out.clear();
            }
        }
        stream.write_all(&out).unwrap();
    });
    std::thread::sleep(Duration::from_millis(2500));
    let stalled = memory_kib(master);
    store.signal_worker(1, "-CONT");
    for index in 0..SETS {
        assert_eq!(client.read(), "OK", "reply {index}");
    }
    writer.join().unwrap();
    eprintln!("master VmPeak, VmHWM before {before:?} KiB, while stalled {stalled:?} KiB");
    assert!(
        stalled.1 < before.1 + 64 * 1024,
        "the master buffered the client: VmHWM {before:?} -> {stalled:?} KiB"
    );
}

/// A worker SIGSTOPped: after about a second of silence the master stops waiting for it
/// (SETs are answered again), but still sends it the writes; SIGCONTed, it applies them, and
/// with the other worker then killed it serves every key at its latest value alone.
#[test]
fn a_stopped_worker_is_suspected_then_catches_up_from_its_queue() {
    let _serial = serial();
    let mut store = Store::start("kv-suspect", 2, false);
    let mut client = store.connect();
    assert_eq!(client.call(&["PING"]), "PONG");
    for key in 0..100 {
        assert_eq!(client.call(&["SET", &format!("key:{key}"), "before"]), "OK");
    }
    store.signal_worker(1, "-STOP");
    let started = Instant::now();
    assert_eq!(client.call(&["SET", "key:0", "during"]), "OK");
    let stalled = started.elapsed();
    for key in 1..100 {
        assert_eq!(client.call(&["SET", &format!("key:{key}"), "during"]), "OK");
    }
    let all = started.elapsed();
    store.signal_worker(1, "-CONT");
    eprintln!("first SET with worker 1 stopped took {stalled:?}, all 100 {all:?}");
    assert!(
        stalled < Duration::from_secs(3) && all < Duration::from_secs(4),
        "writes stalled behind the stopped worker: {stalled:?}, {all:?}"
    );
    // Worker 1 speaks again (the master logs it) and applies what waited for it.
    std::thread::sleep(Duration::from_millis(500));
    store.kill_worker(0);
    converge(&mut client, &|report| report.contains("worker 0 down"));
    let keys: Vec<String> = (0..100).map(|k| format!("key:{k}")).collect();
    let values = read_all(&mut client, &keys);
    assert!(
        values.iter().all(|value| value == "during"),
        "worker 1 missed writes: {:?}",
        &values[..5]
    );
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

/// Waits (bounded) for every process of the store to exit on its own; their exit statuses.
fn wait_all_exit(store: &mut Store, limit: Duration) -> Vec<Option<i32>> {
    let started = Instant::now();
    store
        .workers
        .iter_mut()
        .flatten()
        .chain(store.master.iter_mut())
        .map(|child| {
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status.code();
                }
                assert!(started.elapsed() < limit, "a process did not exit");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .collect()
}

/// What telnet, nc and redis-benchmark's PING_INLINE send: commands as plain lines, split with
/// Redis's quoting rules; a bad line is answered in its turn and closes the connection.
#[test]
fn inline_commands_are_answered_in_order() {
    let _serial = serial();
    let store = Store::start("kv-inline", 2, false);
    let mut client = store.connect();
    assert_eq!(client.call(&["PING"]), "PONG");
    client
        .stream
        .write_all(b"PING\r\nSET a b\r\nGET a\r\nSET q \"x \\\"y\\\"\\x41\" \r\nGET q\nGET 'q'\r\n")
        .unwrap();
    let replies: Vec<String> = (0..6).map(|_| client.read()).collect();
    assert_eq!(replies, ["PONG", "OK", "b", "OK", "x \"y\"A", "x \"y\"A"]);
    // Pipelined SETs, then a line with unbalanced quotes: the SETs are answered first.
    client
        .stream
        .write_all(b"SET c 1\r\nSET d 2\r\nGET \"c\r\nGET c\r\n")
        .unwrap();
    assert_eq!(client.read(), "OK");
    assert_eq!(client.read(), "OK");
    assert_eq!(
        client.read(),
        "ERR protocol error: unbalanced quotes in request"
    );
    let mut rest = Vec::new();
    let _ = client.reader.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "the connection closed after the error: {rest:?}"
    );
}

/// redis-benchmark's default tests start with PING_INLINE; the listed ones all complete.
#[test]
fn redis_benchmark_runs_its_inline_and_bulk_tests() {
    let Ok(version) = Command::new("redis-benchmark").arg("--version").output() else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install redis-tools (redis-benchmark)"
        );
        eprintln!("redis-benchmark not installed; skipped");
        return;
    };
    assert!(version.status.success());
    let _serial = serial();
    let store = Store::start("kv-bench", 2, false);
    assert_eq!(store.connect().call(&["PING"]), "PONG");
    let output = Command::new("redis-benchmark")
        .args(["-p", &store.resp_port.to_string(), "-q", "-n", "20000"])
        .args(["-t", "ping_inline,ping_mbulk,set,get,mset"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for test in ["PING_INLINE", "PING_MBULK", "SET", "GET", "MSET (10 keys)"] {
        let done = stdout.split('\r').any(|part| {
            part.trim_start().starts_with(&format!("{test}: "))
                && part.contains("requests per second")
        });
        assert!(done, "{test} did not complete:\n{stdout}\n{stderr}");
    }
    assert!(
        !stdout.contains("Error") && !stderr.contains("Error"),
        "{stdout}\n{stderr}"
    );
}

/// Commands pollen does not have are errors, never a pretended success; what it has answers
/// as Redis does.
#[test]
fn unsupported_commands_are_errors_and_client_commands_answer_as_redis() {
    let _serial = serial();
    let store = Store::start("kv-commands", 2, false);
    let mut client = store.connect();
    assert_eq!(client.call(&["SELECT", "0"]), "OK");
    assert_eq!(
        client.call(&["SELECT", "1"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        client.call(&["SELECT", "abc"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(client.call(&["CLIENT", "GETNAME"]), "(nil)");
    assert_eq!(client.call(&["CLIENT", "SETNAME", "tester"]), "OK");
    assert_eq!(client.call(&["CLIENT", "GETNAME"]), "tester");
    let id = client.call(&["CLIENT", "ID"]);
    assert!(id.parse::<u64>().is_ok_and(|id| id > 0), "{id}");
    assert!(client.call(&["CLIENT", "INFO"]).contains("name=tester"));
    for args in [
        &["CLIENT", "LIST"][..],
        &["CLIENT", "KILL", "x"],
        &["CONFIG", "SET", "save", ""],
        &["COMMAND", "INFO", "get"],
    ] {
        let answer = client.call(args);
        assert!(
            answer.starts_with("ERR unknown subcommand"),
            "{args:?}: {answer}"
        );
    }
    assert_eq!(client.call(&["COMMAND", "COUNT"]), "18");
    assert_eq!(client.call(&["CONFIG", "GET", "maxmemory"]), "");
    assert!(
        client
            .call(&["FLUSHALL"])
            .starts_with("ERR unknown command")
    );
}

/// A scripted REPL session gets its answers in the order of its lines, errors included; INFO
/// prints lines; SHUTDOWN stops the cluster.
#[test]
fn repl_answers_in_input_order_and_shutdown_stops_the_cluster() {
    let _serial = serial();
    let mut store = Store::start("kv-repl-order", 2, true);
    let mut master = store.master.take().unwrap();
    let script = "GET a\nSET \"x\nGET b\nSET a \"1 2\"\nGET a\nSELECT 3\nSHUTDOWN\n";
    let (output, success) = repl_transcript(&mut master, script);
    assert!(success);
    assert_eq!(
        output.lines().collect::<Vec<_>>(),
        [
            "(nil)",
            "ERR protocol error: unbalanced quotes in request",
            "(nil)",
            "OK",
            "\"1 2\"",
            "ERR DB index is out of range",
            "OK"
        ]
    );
    let statuses = wait_all_exit(&mut store, Duration::from_secs(5));
    assert!(statuses.iter().all(|s| *s == Some(0)), "{statuses:?}");
}

#[test]
fn repl_info_prints_lines() {
    let _serial = serial();
    let mut store = Store::start("kv-repl-info", 2, true);
    let mut master = store.master.take().unwrap();
    let (output, success) = repl_transcript(&mut master, "INFO\nQUIT\n");
    assert!(success);
    assert!(output.lines().any(|line| line == "role:master"), "{output}");
    assert!(!output.contains("\\r\\n"), "{output}");
}

/// SHUTDOWN from a Redis client stops every process; a master without workers says so; a port
/// in use is named in the error.
#[test]
fn shutdown_over_resp_and_honest_errors() {
    let _serial = serial();
    let mut store = Store::start("kv-shutdown", 2, false);
    let mut client = store.connect();
    assert_eq!(client.call(&["SET", "k", "v"]), "OK");
    client.send(&[b"SHUTDOWN"]);
    let statuses = wait_all_exit(&mut store, Duration::from_secs(5));
    assert!(statuses.iter().all(|s| *s == Some(0)), "{statuses:?}");

    // The RESP port taken: the error names it, not the peer port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let output = Command::new(POLLEN)
        .args(["kv", "master", &store.ports[2].to_string(), "--no-repl"])
        .args(["--resp-port", &taken_port.to_string(), "--peer-config-file"])
        .arg(store.dir.join("workers.txt"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{taken_port}")),
        "{stderr}"
    );

    // No worker at all: NODES says nothing can be served.
    let mut lonely = Command::new(POLLEN)
        .args([
            "kv",
            "master",
            &store.ports[2].to_string(),
            "--resp-port",
            "0",
        ])
        .arg("--peer-config-file")
        .arg(store.dir.join("workers.txt"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (output, _) = repl_transcript(&mut lonely, "NODES\nQUIT\n");
    assert!(output.contains("no worker is up"), "{output}");
}

/// A master serves at most 1 024 RESP clients at once: all of them are answered, the one past
/// the cap is closed as it is accepted (and the log says why), and once a client leaves a new
/// one takes its place. Without the cap the clients would take the connection slots the
/// master's workers need.
#[test]
fn a_client_past_the_cap_is_closed_and_the_rest_are_served() {
    let _serial = serial();
    let mut store = Store::new("kv-client-cap", 2, &[]);
    for worker in 0..2 {
        store.start_worker(worker);
    }
    let log = store.dir.join("master.log");
    let workers = store.workers.len();
    let args: Vec<String> = [
        "master",
        &store.ports[workers].to_string(),
        "--replicas",
        "2",
        "--resp-port",
        &store.resp_port.to_string(),
        "--no-repl",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let stderr = Stdio::from(std::fs::File::create(&log).unwrap());
    store.master = Some(store.spawn(&args, Stdio::null(), stderr));
    let mut clients: Vec<Resp> = vec![common::serving_store(store.resp_port)];
    while clients.len() < 1024 {
        clients.push(store.connect());
    }
    for (index, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.call(&["PING"]), "PONG", "client {index}");
    }
    // The 1 025th: accepted by the kernel, closed by the master before it reads a byte.
    let mut crowded = store.connect();
    let _ = crowded.stream.write_all(b"PING\r\n");
    let mut byte = [0u8; 1];
    let outcome = crowded.stream.read(&mut byte);
    assert!(
        matches!(outcome, Ok(0) | Err(_)),
        "the client past the cap was served: {outcome:?}"
    );
    // Every one of the 1 024 still has its store.
    for (index, client) in clients.iter_mut().enumerate().step_by(97) {
        let key = format!("key-{index}");
        assert_eq!(client.call(&["SET", &key, "v"]), "OK", "client {index}");
        assert_eq!(client.call(&["GET", &key]), "v", "client {index}");
    }
    // One leaves; a newcomer is served in its place (the master notices the close first).
    drop(clients.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut newcomer = loop {
        let mut newcomer = store.connect();
        newcomer.send(&[b"PING"]);
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut newcomer.reader, &mut line).is_ok_and(|n| n > 0) {
            assert_eq!(line, "+PONG\r\n");
            break newcomer;
        }
        assert!(Instant::now() < deadline, "no place freed for a newcomer");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(newcomer.call(&["GET", "key-0"]), "v");
    let log = std::fs::read_to_string(log).unwrap();
    drop(store);
    assert!(log.contains("1024 clients connected"), "{log}");
}
