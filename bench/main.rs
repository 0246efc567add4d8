//! The bench harness: `cargo bench` (or `cargo bench -- gossip` for one part: ceiling, gossip,
//! ring, kv, alloc).
//!
//! Launches real clusters of the release binary on loopback, repeats each configuration
//! `RUNS` times, and prints a markdown table (median, with min–max) on stdout; progress goes to
//! stderr; the raw figures go to `target/bench/results.json`. If a previous results file is
//! there, each row also shows its ratio to the previous median, so a regression is visible.
//!
//! Rows:
//! - ceiling: one connection on loopback, 256 KiB writes from one thread, reads on another:
//!   bytes/s, and the same as 4-byte messages (a gossip value is 4 bytes on the wire; batch
//!   headers are amortised over hundreds of values). Every rate below also shows as a fraction
//!   of that message rate.
//! - gossip, 2/4/8 nodes: agreed messages per second of send time; delivered messages per
//!   second (agreed × (nodes − 1): each message reaches every other node); CPU time (user + sys
//!   of all nodes) per delivered message; peak RSS of the largest node.
//! - ring, 4 workers + master, windows 1, 64 and 1024 (the largest allowed): approved values
//!   per second of send time; hop latency p50 (median over workers) and p99 (worst worker) from
//!   the workers' HDR histograms; the speed-up of the best window over window 1.
//! - kv: redis-benchmark SET and GET (-P 1 and -P 16, 50 clients) against pollen kv (2 workers,
//!   2 replicas) and against a redis-server the harness starts (no persistence), interleaved in
//!   the same run; the ratio of medians. Skipped with a note if either program is missing.
//! - kv-durable: redis-benchmark SET (-P 1 and -P 16, 50 clients) against pollen kv whose
//!   workers log to `--data-dir` with `--fsync everysec` and `always`, and against redis-server
//!   with `appendonly yes` and the same `appendfsync`, both logging to the same file system.
//! - kv-node: the masterless store (`kv node`, 2 data nodes, N = 2, W = 2, R = 1), two
//!   redis-benchmarks (25 clients each, `-r 1000000`) at once, one on each node's port, and the
//!   same two against one redis-server; SET and GET at -P 1 and -P 16, and SET with
//!   `--fsync always` (redis: `appendfsync always`); sums of the two rates, ratio of medians.
//! - alloc: heap allocations per delivered message over a 1 s window mid-send, gossip and ring
//!   in this process under a counting global allocator (`tests/support/alloc_probe.rs`).

#[path = "../tests/support/alloc_probe.rs"]
mod alloc_probe;
#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{POLLEN, free_ports, spawn_pollen, spawn_ring, write_peers};
const RUNS: usize = 3;
const SEND_FOR_S: f64 = 3.0;
const WAIT_FOR_S: f64 = 3.0;
/// Clock ticks per second for /proc/self/stat's cutime and cstime.
const CLOCK_TICKS_PER_S: f64 = 100.0;
/// Bytes of one gossip message on the wire (a u32 value; batch headers amortised).
const GOSSIP_MESSAGE_BYTES: f64 = 4.0;
const CEILING_S: f64 = 2.0;
const RING_WORKERS: usize = 4;
const RING_SEND_US: u64 = 2_000_000;
const RING_GRACE_US: u64 = 1_000_000;
const RING_WINDOWS: [u64; 3] = [1, 64, 1024];

struct Row {
    name: String,
    unit: &'static str,
    samples: Vec<f64>,
}

impl Row {
    fn new(name: String, unit: &'static str) -> Row {
        Row {
            name,
            unit,
            samples: vec![],
        }
    }
    fn median(&self) -> f64 {
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }
    fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.samples
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }
    /// A rate of messages or requests (shown as a fraction of the ceiling).
    fn is_rate(&self) -> bool {
        self.unit.ends_with("/s") && self.unit != "B/s"
    }
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted =
        |part: &str| filters.is_empty() || filters.iter().any(|f| part.contains(f.as_str()));
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out_dir).expect("create target/bench");
    let results = out_dir.join("results.json");
    let previous = read_previous(&results);
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut ceiling = None;
    if wanted("ceiling") {
        let (bytes, messages) = bench_ceiling();
        ceiling = Some(messages.median());
        rows.push(bytes);
        rows.push(messages);
    }
    if wanted("gossip") {
        for nodes in [2, 4, 8] {
            rows.extend(bench_gossip(nodes, &out_dir));
        }
    }
    if wanted("ring") {
        rows.extend(bench_ring(&out_dir));
    }
    if wanted("kv") {
        match bench_kv(&out_dir, None) {
            Ok(kv) => rows.extend(kv),
            Err(note) => notes.push(note),
        }
    }
    if wanted("kv-durable") {
        for fsync in ["everysec", "always"] {
            match bench_kv(&out_dir, Some(fsync)) {
                Ok(kv) => rows.extend(kv),
                Err(note) => notes.push(note),
            }
        }
    }
    if wanted("kv-node") {
        for fsync in [None, Some("always")] {
            match bench_kv_node(&out_dir, fsync) {
                Ok(kv) => rows.extend(kv),
                Err(note) => notes.push(note),
            }
        }
    }
    if wanted("alloc") {
        rows.extend(bench_alloc());
    }
    eprintln!("bench finished in {:.0} s", started.elapsed().as_secs_f64());
    print_table(&rows, ceiling, &medians(&previous));
    for note in &notes {
        println!();
        println!("{note}");
    }
    write_json(&rows, previous, &results);
}

/// The loopback limit: one connection, 256 KiB writes, a reader on another thread.
fn bench_ceiling() -> (Row, Row) {
    let mut bytes = Row::new("ceiling: loopback TCP, one connection".into(), "B/s");
    let mut messages = Row::new(
        "ceiling: the same as 4-byte gossip messages".into(),
        "msg/s",
    );
    for run in 1..=RUNS {
        eprintln!("ceiling: run {run}/{RUNS} ...");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let reader = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut buffer = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                match stream.read(&mut buffer) {
                    Ok(0) => return total,
                    Ok(n) => total += n as u64,
                    Err(error) => panic!("read: {error}"),
                }
            }
        });
        let mut stream = TcpStream::connect(address).expect("connect");
        let chunk = vec![0x5au8; 256 * 1024];
        let begun = Instant::now();
        while begun.elapsed().as_secs_f64() < CEILING_S {
            stream.write_all(&chunk).expect("write");
        }
        drop(stream);
        let total = reader.join().expect("reader");
        let rate = total as f64 / begun.elapsed().as_secs_f64();
        eprintln!("  {:.2} GB/s", rate / 1e9);
        bytes.samples.push(rate);
        messages.samples.push(rate / GOSSIP_MESSAGE_BYTES);
    }
    (bytes, messages)
}

/// Ring rows: a master and `RING_WORKERS` workers per window.
fn bench_ring(dir: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut best: Option<(u64, f64)> = None;
    let mut window_one = None;
    for window in RING_WINDOWS {
        let mut values = Row::new(format!("ring W={window}: approved values"), "value/s");
        let mut p50 = Row::new(format!("ring W={window}: hop latency p50"), "µs");
        let mut p99 = Row::new(format!("ring W={window}: hop latency p99"), "µs");
        for run in 1..=RUNS {
            eprintln!("ring: window {window}, run {run}/{RUNS} ...");
            let outcome = run_ring(window, run as u64, dir);
            let rate = outcome.count as f64 / (RING_SEND_US as f64 / 1e6);
            eprintln!(
                "  {} values approved, hop p50 {} µs, p99 {} µs",
                outcome.count, outcome.p50_us, outcome.p99_us
            );
            values.samples.push(rate);
            p50.samples.push(outcome.p50_us);
            p99.samples.push(outcome.p99_us);
        }
        let median = values.median();
        if window == 1 {
            window_one = Some(median);
        }
        if best.is_none_or(|(_, rate)| median > rate) {
            best = Some((window, median));
        }
        rows.extend([values, p50, p99]);
    }
    if let (Some(one), Some((window, rate))) = (window_one, best) {
        eprintln!("ring: the best window is W={window}");
        let mut speedup = Row::new("ring: best window over W=1, medians".into(), "×");
        speedup.samples.push(rate / one);
        rows.push(speedup);
    }
    rows
}

struct RingOutcome {
    count: u64,
    p50_us: f64,
    p99_us: f64,
}

fn run_ring(window: u64, seed: u64, dir: &Path) -> RingOutcome {
    let timing = [RING_SEND_US, RING_GRACE_US, seed];
    let window = window.to_string();
    let (workers, master) = spawn_ring(dir, RING_WORKERS, timing, &["--window", &window]);
    let (status, stdout, _) = collect(master);
    assert!(status, "the ring master failed: {stdout}");
    assert!(
        stdout.contains("AGREE: 4 of 4"),
        "the ring did not agree: {stdout}"
    );
    let count = stdout
        .lines()
        .find_map(|line| line.split("SlaveResult ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .expect("a SlaveResult line");
    let mut p50s = Vec::new();
    let mut p99 = 0f64;
    for worker in workers {
        let (status, _, stderr) = collect(worker);
        assert!(status, "a ring worker failed: {stderr}");
        let line = stderr
            .lines()
            .find(|line| line.contains("hop latency"))
            .expect("a hop latency line");
        let after = |word: &str| -> f64 {
            line.split(word)
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse().ok())
                .expect("a latency figure")
        };
        p50s.push(after("p50 "));
        p99 = p99.max(after("p99 "));
    }
    p50s.sort_by(f64::total_cmp);
    RingOutcome {
        count,
        p50_us: p50s[p50s.len() / 2],
        p99_us: p99,
    }
}

/// Waits for a child (at most a minute) and returns (success, stdout, stderr).
fn collect(mut child: Child) -> (bool, String, String) {
    let mut stdout = String::new();
    let mut stderr = String::new();
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(err) = err.as_mut() {
            let _ = err.read_to_string(&mut text);
        }
        text
    });
    let _ = out.read_to_string(&mut stdout);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.success();
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    stderr.push_str(&reader.join().expect("stderr reader"));
    (status, stdout, stderr)
}

/// kv rows: pollen kv and redis-server under the same redis-benchmark, interleaved per run;
/// with `fsync`, both log every write (pollen `--data-dir`, redis `appendonly yes`) with that
/// policy and only SET is measured.
fn bench_kv(dir: &Path, fsync: Option<&str>) -> Result<Vec<Row>, String> {
    for program in ["redis-benchmark", "redis-server"] {
        let found = Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!("kv: skipped, {program} not found");
            return Err(format!(
                "kv rows skipped: `{program}` not found (apt-get install redis-tools redis-server)."
            ));
        }
    }
    let ports = free_ports(5);
    let peers = dir.join("kv-workers.txt");
    std::fs::write(
        &peers,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]),
    )
    .expect("write peers file");
    let data = dir.join("kv-data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("create the data dir");
    let mut children: Vec<Child> = Vec::new();
    for (index, port) in ports[..2].iter().enumerate() {
        let data_dir = data.join(format!("worker-{index}"));
        let mut args = vec!["slave".to_string(), port.to_string()];
        if let Some(fsync) = fsync {
            let data_dir = data_dir.to_string_lossy().into_owned();
            args.extend([
                "--data-dir".into(),
                data_dir,
                "--fsync".into(),
                fsync.into(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        children.push(kv_spawn(&args, &peers));
    }
    children.push(kv_spawn(
        &[
            "master",
            &ports[2].to_string(),
            "--replicas",
            "2",
            "--resp-port",
            &ports[3].to_string(),
            "--no-repl",
        ],
        &peers,
    ));
    let persistence: Vec<String> = match fsync {
        None => vec!["--appendonly".into(), "no".into()],
        Some(fsync) => vec![
            "--appendonly".into(),
            "yes".into(),
            "--appendfsync".into(),
            fsync.into(),
            "--dir".into(),
            data.to_string_lossy().into_owned(),
        ],
    };
    children.push(
        Command::new("redis-server")
            .args(["--port", &ports[4].to_string(), "--save", ""])
            .args(&persistence)
            .args(["--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn redis-server"),
    );
    let (part, tests) = match fsync {
        None => ("kv".to_string(), "set,get"),
        Some(fsync) => (format!("kv fsync {fsync}"), "set"),
    };
    let commands: &[&str] = if tests == "set" {
        &["SET"]
    } else {
        &["SET", "GET"]
    };
    let outcome = (|| {
        wait_until_set_works(ports[3])?;
        wait_until_set_works(ports[4])?;
        let mut rows = Vec::new();
        for pipeline in [1, 16] {
            let mut table: HashMap<(&str, &str), Row> = HashMap::new();
            for run in 1..=RUNS {
                for (server, port) in [("pollen", ports[3]), ("redis", ports[4])] {
                    eprintln!("{part}: {server} -P {pipeline}, run {run}/{RUNS} ...");
                    let (set, get) = redis_benchmark(port, pipeline, tests)?;
                    eprintln!("  SET {set:.0}/s, GET {get:.0}/s");
                    for (command, rate) in [("SET", set), ("GET", get)] {
                        if !commands.contains(&command) {
                            continue;
                        }
                        table
                            .entry((server, command))
                            .or_insert_with(|| {
                                let name = format!("{part} {server} {command} -P {pipeline}");
                                Row::new(name, "req/s")
                            })
                            .samples
                            .push(rate);
                    }
                }
            }
            for &command in commands {
                let pollen = table.remove(&("pollen", command)).expect("row");
                let redis = table.remove(&("redis", command)).expect("row");
                rows.extend(with_ratio(
                    &format!("{part} {command} -P {pipeline}"),
                    pollen,
                    redis,
                ));
            }
        }
        Ok(rows)
    })();
    stop_and_clean(&mut children, &data);
    outcome
}

/// kv-node rows: two `kv node`s and one redis-server, each under two redis-benchmarks at once
/// (one per node: every node coordinates), interleaved per run.
fn bench_kv_node(dir: &Path, fsync: Option<&str>) -> Result<Vec<Row>, String> {
    let ports = free_ports(5);
    let peers = dir.join("kv-nodes.txt");
    let text = format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]);
    std::fs::write(&peers, text).expect("write peers file");
    let data = dir.join("kv-node-data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("create the data dir");
    let mut children: Vec<Child> = Vec::new();
    for node in 0..2 {
        let (port, resp) = (ports[node].to_string(), ports[2 + node].to_string());
        let mut args = vec!["node", &port, "--replicas", "2", "--resp-port", &resp];
        let data_dir = data
            .join(format!("node-{node}"))
            .to_string_lossy()
            .into_owned();
        if let Some(fsync) = fsync {
            args.extend(["--data-dir", &data_dir, "--fsync", fsync]);
        }
        children.push(kv_spawn(&args, &peers));
    }
    let mut redis = Command::new("redis-server");
    redis.args([
        "--port",
        &ports[4].to_string(),
        "--save",
        "",
        "--bind",
        "127.0.0.1",
    ]);
    match fsync {
        None => redis.args(["--appendonly", "no"]),
        Some(fsync) => redis
            .args(["--appendonly", "yes", "--appendfsync", fsync, "--dir"])
            .arg(&data),
    };
    children.push(
        redis
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("kv-node rows skipped: redis-server: {e}"))?,
    );
    let (part, tests) = match fsync {
        None => ("kv-node".to_string(), "set,get"),
        Some(fsync) => (format!("kv-node fsync {fsync}"), "set"),
    };
    let outcome = (|| {
        for port in [ports[2], ports[3], ports[4]] {
            wait_until_set_works(port)?;
        }
        let servers = [
            ("pollen", [ports[2], ports[3]]),
            ("redis", [ports[4], ports[4]]),
        ];
        let mut rows = Vec::new();
        for pipeline in [1, 16] {
            let mut table: HashMap<(&str, &str), Row> = HashMap::new();
            for run in 1..=RUNS {
                for (server, pair) in servers {
                    eprintln!("{part}: {server} -P {pipeline}, run {run}/{RUNS} ...");
                    let both: Vec<_> = pair
                        .map(|port| {
                            std::thread::spawn(move || redis_benchmark_half(port, pipeline, tests))
                        })
                        .into_iter()
                        .map(|thread| thread.join().expect("benchmark thread"))
                        .collect::<Result<_, _>>()?;
                    let (set, get) = (both[0].0 + both[1].0, both[0].1 + both[1].1);
                    eprintln!("  SET {set:.0}/s, GET {get:.0}/s");
                    for (command, rate) in [("SET", set), ("GET", get)] {
                        if rate == 0.0 {
                            continue;
                        }
                        let name =
                            format!("{part} {server} {command} -P {pipeline} (2 benchmarks)");
                        table
                            .entry((server, command))
                            .or_insert_with(|| Row::new(name, "req/s"))
                            .samples
                            .push(rate);
                    }
                }
            }
            for command in ["SET", "GET"] {
                let (Some(pollen), Some(redis)) = (
                    table.remove(&("pollen", command)),
                    table.remove(&("redis", command)),
                ) else {
                    continue;
                };
                rows.extend(with_ratio(
                    &format!("{part} {command} -P {pipeline}"),
                    pollen,
                    redis,
                ));
            }
        }
        Ok(rows)
    })();
    stop_and_clean(&mut children, &data);
    outcome
}

/// pollen's row, redis's row, and the ratio of their medians.
fn with_ratio(what: &str, pollen: Row, redis: Row) -> [Row; 3] {
    let mut ratio = Row::new(format!("{what}: pollen ÷ redis, medians"), "×");
    ratio.samples.push(pollen.median() / redis.median());
    [pollen, redis, ratio]
}

/// The end of a kv part: its processes killed and reaped, its data dir removed.
fn stop_and_clean(children: &mut [Child], data: &Path) {
    for child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(data);
}

fn kv_spawn(args: &[&str], peers: &Path) -> Child {
    let args = [args, &["-q"]].concat();
    spawn_pollen(
        "kv",
        &args,
        peers,
        [Stdio::null(), Stdio::null(), Stdio::inherit()],
    )
}

/// Polls `SET` over RESP until it answers `+OK` (the master has its workers), for up to 10 s.
fn wait_until_set_works(port: u16) -> Result<(), String> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = stream.write_all(b"*3\r\n$3\r\nSET\r\n$5\r\nbench\r\n$1\r\n1\r\n");
            let mut line = String::new();
            let _ = BufReader::new(stream).read_line(&mut line);
            if line.starts_with("+OK") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "kv rows skipped: port {port} did not answer SET within 10 s"
    ))
}

/// `redis-benchmark -t TESTS` (set or set,get): (SET, GET) requests per second (GET 0 when
/// not measured).
fn redis_benchmark(port: u16, pipeline: u32, tests: &str) -> Result<(f64, f64), String> {
    let requests = if pipeline == 1 { 100_000 } else { 1_000_000 };
    redis_benchmark_with(port, pipeline, tests, 50, requests, &[])
}

/// Half of a two-benchmark run: 25 clients, half the requests, keys drawn from a million
/// (`-r`), so the two benchmarks' keys fall on every node's partitions.
fn redis_benchmark_half(port: u16, pipeline: u32, tests: &str) -> Result<(f64, f64), String> {
    let requests = if pipeline == 1 { 50_000 } else { 500_000 };
    redis_benchmark_with(port, pipeline, tests, 25, requests, &["-r", "1000000"])
}

fn redis_benchmark_with(
    port: u16,
    pipeline: u32,
    tests: &str,
    clients: u32,
    requests: u32,
    extra: &[&str],
) -> Result<(f64, f64), String> {
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", tests])
        .args(["-c", &clients.to_string()])
        .args(extra)
        .args([
            "-n",
            &requests.to_string(),
            "-P",
            &pipeline.to_string(),
            "-q",
        ])
        .stderr(Stdio::null())
        .output()
        .map_err(|error| format!("redis-benchmark: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout).replace('\r', "\n");
    let rate = |command: &str| -> Option<f64> {
        text.lines()
            .filter(|line| line.starts_with(command) && line.contains("requests per second"))
            .filter_map(|line| line.split_whitespace().nth(1)?.parse().ok())
            .next_back()
    };
    match (rate("SET:"), rate("GET:")) {
        (Some(set), Some(get)) => Ok((set, get)),
        (Some(set), None) if tests == "set" => Ok((set, 0.0)),
        _ => Err(format!("redis-benchmark gave no rates: {text}")),
    }
}

/// Allocation rows: the in-process probe, gossip and ring.
fn bench_alloc() -> Vec<Row> {
    let mut gossip = Row::new(
        "alloc: gossip, allocations per delivered message".into(),
        "/msg",
    );
    let mut ring = Row::new(
        "alloc: ring, allocations per delivered value".into(),
        "/msg",
    );
    let mut gossip_window = Row::new("alloc: gossip, messages in the 1 s window".into(), "msg");
    let mut ring_window = Row::new("alloc: ring, values in the 1 s window".into(), "value");
    for run in 1..=RUNS {
        eprintln!("alloc: run {run}/{RUNS} ...");
        let (window, _) = alloc_probe::gossip_window();
        eprintln!("  gossip {window:?}");
        gossip.samples.push(window.per_message());
        gossip_window.samples.push(window.delivered as f64);
        let (window, _) = alloc_probe::ring_window();
        eprintln!("  ring {window:?}");
        ring.samples.push(window.per_message());
        ring_window.samples.push(window.delivered as f64);
    }
    vec![gossip, gossip_window, ring, ring_window]
}

fn bench_gossip(nodes: usize, dir: &Path) -> Vec<Row> {
    let mut agreed = Row::new(format!("gossip {nodes} nodes: agreed"), "msg/s");
    let mut delivered = Row::new(format!("gossip {nodes} nodes: delivered"), "msg/s");
    let mut cpu = Row::new(
        format!("gossip {nodes} nodes: CPU per delivered message"),
        "ns",
    );
    let mut rss = Row::new(
        format!("gossip {nodes} nodes: peak RSS per node (max)"),
        "MiB",
    );
    for run in 1..=RUNS {
        eprintln!("gossip: {nodes} nodes, run {run}/{RUNS} ...");
        let outcome = run_gossip(nodes, dir);
        let count = outcome.count as f64;
        agreed.samples.push(count / SEND_FOR_S);
        delivered
            .samples
            .push(count * (nodes - 1) as f64 / SEND_FOR_S);
        cpu.samples
            .push(outcome.cpu_s * 1e9 / (count * (nodes - 1) as f64));
        rss.samples.push(outcome.peak_rss_kib as f64 / 1024.0);
        eprintln!(
            "  {} agreed messages, {:.1} s CPU, peak RSS {} KiB",
            outcome.count, outcome.cpu_s, outcome.peak_rss_kib
        );
    }
    vec![agreed, delivered, cpu, rss]
}

struct GossipOutcome {
    count: u64,
    cpu_s: f64,
    peak_rss_kib: u64,
}

fn run_gossip(nodes: usize, dir: &Path) -> GossipOutcome {
    let ports = free_ports(nodes);
    let peers: PathBuf = dir.join("gossip-peers.txt");
    write_peers(&peers, &ports);
    let cpu_before = children_cpu_s();
    let mut children: Vec<Child> = ports
        .iter()
        .map(|port| {
            Command::new(POLLEN)
                .args(["gossip", "-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .arg("--peer-config-file")
                .arg(&peers)
                .args([
                    "--send-for",
                    &SEND_FOR_S.to_string(),
                    "--wait-for",
                    &WAIT_FOR_S.to_string(),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn pollen")
        })
        .collect();
    let mut peak_rss_kib = 0;
    let started = Instant::now();
    while children
        .iter_mut()
        .any(|child| child.try_wait().unwrap().is_none())
    {
        for child in &children {
            peak_rss_kib = peak_rss_kib.max(peak_rss_of(child.id()));
        }
        assert!(started.elapsed() < Duration::from_secs_f64(SEND_FOR_S + WAIT_FOR_S + 10.0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut lines = Vec::new();
    for child in &mut children {
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        assert!(child.wait().unwrap().success(), "a node failed");
        lines.push(stdout);
    }
    assert!(
        lines.iter().all(|line| *line == lines[0]),
        "nodes disagree: {lines:?}"
    );
    let count = lines[0]
        .trim_start_matches('(')
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    GossipOutcome {
        count,
        cpu_s: children_cpu_s() - cpu_before,
        peak_rss_kib,
    }
}

/// User + system time of all reaped children, from /proc/self/stat (cutime, cstime).
fn children_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let cutime: f64 = fields[13].parse().unwrap();
    let cstime: f64 = fields[14].parse().unwrap();
    (cutime + cstime) / CLOCK_TICKS_PER_S
}

/// VmHWM of a running process, in KiB (0 once it has exited).
fn peak_rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "×" => format!("{value:.2}"),
        "/msg" if value == 0.0 => "0".to_string(),
        "/msg" => format!("{value:.1e}"),
        _ => human(value),
    }
}

fn human(value: f64) -> String {
    if value >= 1e9 {
        format!("{:.2} G", value / 1e9)
    } else if value >= 1e6 {
        format!("{:.1} M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1} k", value / 1e3)
    } else {
        format!("{value:.1}")
    }
}

fn print_table(rows: &[Row], ceiling: Option<f64>, previous: &HashMap<String, f64>) {
    println!("| what | median | min – max | unit | of ceiling | vs previous |");
    println!("|---|---:|---:|---|---:|---:|");
    for row in rows {
        let fraction = match ceiling {
            Some(ceiling) if row.is_rate() && !row.name.starts_with("ceiling") => {
                let percent = 100.0 * row.median() / ceiling;
                if percent >= 1.0 {
                    format!("{percent:.0}%")
                } else {
                    format!("{percent:.2}%")
                }
            }
            _ => String::new(),
        };
        let versus = match previous.get(&row.name) {
            Some(&before) if before > 0.0 => format!("{:.2}×", row.median() / before),
            _ => String::new(),
        };
        println!(
            "| {} | {} | {} – {} | {} | {} | {} |",
            row.name,
            format_value(row.median(), row.unit),
            format_value(row.min(), row.unit),
            format_value(row.max(), row.unit),
            row.unit,
            fraction,
            versus
        );
    }
}

/// The rows of an earlier results file (empty if there is none).
fn read_previous(path: &Path) -> Vec<serde_json::Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return vec![];
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(json) => json["rows"].as_array().cloned().unwrap_or_default(),
        Err(_) => {
            eprintln!("ignoring unreadable {}", path.display());
            vec![]
        }
    }
}

fn medians(rows: &[serde_json::Value]) -> HashMap<String, f64> {
    rows.iter()
        .filter_map(|row| Some((row["name"].as_str()?.to_string(), row["median"].as_f64()?)))
        .collect()
}

/// Writes this run's rows, keeping earlier rows this run did not measure (a filtered run).
fn write_json(rows: &[Row], previous: Vec<serde_json::Value>, path: &Path) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "name": row.name, "unit": row.unit, "samples": row.samples,
                "median": row.median(), "min": row.min(), "max": row.max(),
                "measured_unix_s": now,
            })
        })
        .collect();
    let fresh: Vec<String> = rows.iter().map(|r| r["name"].to_string()).collect();
    rows.extend(
        previous
            .into_iter()
            .filter(|row| !fresh.contains(&row["name"].to_string())),
    );
    let text = serde_json::to_string_pretty(&serde_json::json!({ "rows": rows })).unwrap();
    std::fs::write(path, text).expect("write results");
    eprintln!("results written to {}", path.display());
}
