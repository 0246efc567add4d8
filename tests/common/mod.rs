//! Helpers for tests that run real `pollen` processes on loopback.
//!
//! Ports come from the OS (bind port 0, note the port, release it just before the nodes start),
//! so parallel test binaries do not collide. Every child is killed (by its PID, through `Child`)
//! when the `Cluster` is dropped, so a failing test leaves nothing behind.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const POLLEN: &str = env!("CARGO_BIN_EXE_pollen");

/// Cluster tests run one at a time: each runs its nodes flat out, and on a 2-core machine two
/// clusters at once would only measure the scheduler.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Ports nothing listens on now, below the kernel's ephemeral range (32768 and up by
/// default): a port the kernel hands out for `bind(0)` or for an outgoing connection can be
/// taken again by another process's connection before the test's node binds it (a CI run lost
/// a test that way), while these are only ever chosen explicitly. All held while choosing, so
/// they are distinct.
pub fn free_ports(count: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let mut state = std::process::id() as u64 ^ DRAWS.fetch_add(1, Ordering::Relaxed) << 20;
    state ^= std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut listeners = Vec::new();
    while listeners.len() < count {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let port = 20_000 + (state >> 33) as u16 % 12_000;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(listener);
        }
    }
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pollen-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Cluster {
    pub ports: Vec<u16>,
    pub children: Vec<Option<Child>>,
    /// When each child was started (its `Outcome::elapsed` counts from there).
    pub started_at: Vec<Option<Instant>>,
    pub dir: PathBuf,
    pub peers_file: PathBuf,
}

pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    /// The exit code; `None` if killed at the limit (or by a signal).
    pub status: Option<i32>,
    pub elapsed: Duration,
}

impl Cluster {
    /// Writes a peers file for `count` nodes on free ports, in chatterbox's JSON form when
    /// `json` is set, else one `host:port` per line.
    pub fn new(name: &str, count: usize, json: bool) -> Cluster {
        let dir = scratch_dir(name);
        let ports = free_ports(count);
        let (file, text) = if json {
            let entries: Vec<String> = ports
                .iter()
                .map(|port| format!("\"127.0.0.1:{port}:0\""))
                .collect();
            ("peers.json", format!("[{}]\n", entries.join(", ")))
        } else {
            let lines: Vec<String> = ports
                .iter()
                .map(|port| format!("127.0.0.1:{port}"))
                .collect();
            (
                "peers.txt",
                format!("# test cluster\n{}\n", lines.join("\n")),
            )
        };
        let peers_file = dir.join(file);
        std::fs::write(&peers_file, text).unwrap();
        let children = ports.iter().map(|_| None).collect();
        Cluster {
            started_at: vec![None; ports.len()],
            ports,
            children,
            dir,
            peers_file,
        }
    }

    pub fn address(&self, index: usize) -> SocketAddr {
        format!("127.0.0.1:{}", self.ports[index]).parse().unwrap()
    }

    /// Starts node `index` alone: `pollen ROLE -h 127.0.0.1 -p PORT --peer-config-file F ARGS`.
    pub fn start_one(&mut self, role: &str, index: usize, args: &[&str]) {
        assert!(self.children[index].is_none(), "started twice");
        let port = self.ports[index];
        let spawned = Command::new(POLLEN)
            .arg(role)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .arg("--peer-config-file")
            .arg(&self.peers_file)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pollen");
        self.children[index] = Some(spawned);
        self.started_at[index] = Some(Instant::now());
    }

    /// Starts every node with the same arguments.
    pub fn start(&mut self, role: &str, args: &[&str]) -> Instant {
        let started = Instant::now();
        for index in 0..self.ports.len() {
            self.start_one(role, index, args);
        }
        started
    }

    pub fn signal(&self, index: usize, signal: &str) {
        let pid = self.children[index].as_ref().expect("started").id();
        self::signal(pid, signal);
    }

    /// Waits for every node (up to `limit` after `started`), killing stragglers. Each
    /// outcome's `elapsed` counts from that node's own start (when it exited).
    pub fn finish(&mut self, started: Instant, limit: Duration) -> Vec<Outcome> {
        self.children
            .iter_mut()
            .zip(&self.started_at)
            .map(|(child, own_start)| {
                let mut child = child.take().expect("started");
                let (status, stdout, stderr) = finish_child(&mut child, started + limit);
                Outcome {
                    stdout,
                    stderr,
                    status,
                    elapsed: own_start.expect("started").elapsed(),
                }
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Parses `(COUNT, CHECKSUM)`.
pub fn parse_result(line: &str) -> Option<(u64, String)> {
    let inner = line.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (count, checksum) = inner.split_once(", ")?;
    Some((count.parse().ok()?, checksum.to_string()))
}

/// A minimal RESP client: enough to pipeline commands and read replies as text.
pub struct Resp {
    pub stream: TcpStream,
    pub reader: BufReader<TcpStream>,
}

impl Resp {
    /// Connects to a RESP server on loopback, retrying for up to 10 s.
    pub fn connect(port: u16) -> Resp {
        let started = Instant::now();
        loop {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                return Resp {
                    reader: BufReader::new(stream.try_clone().unwrap()),
                    stream,
                };
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nothing listens on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&out).unwrap();
    }

    /// One reply, rendered as a string: `+OK` → "OK", `$3 foo` → "foo", nil → "(nil)",
    /// `:5` → "5", errors → "ERR ...", arrays → items joined by '|'.
    pub fn read(&mut self) -> String {
        let mut line = String::new();
        let read = self.reader.read_line(&mut line).unwrap();
        assert!(
            read > 0,
            "the server closed the connection instead of replying"
        );
        let line = line.trim_end();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" | "-" | ":" => rest.to_string(),
            "$" => {
                let length: i64 = rest.parse().unwrap();
                if length < 0 {
                    return "(nil)".into();
                }
                let mut bytes = vec![0; length as usize + 2];
                self.reader.read_exact(&mut bytes).unwrap();
                String::from_utf8_lossy(&bytes[..length as usize]).into_owned()
            }
            "*" => {
                let count: usize = rest.parse().unwrap();
                (0..count)
                    .map(|_| self.read())
                    .collect::<Vec<_>>()
                    .join("|")
            }
            other => panic!("unexpected reply {other}{rest}"),
        }
    }

    pub fn call(&mut self, args: &[&str]) -> String {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&args);
        self.read()
    }
}

/// Formats `S / 2^32` with 9 decimals, truncated — the README's definition of the printed
/// checksum, written here apart from pollen's own formatting.
pub fn decimal(sum: u128) -> String {
    let whole = sum >> 32;
    let fraction = ((sum & 0xFFFF_FFFF) * 1_000_000_000) >> 32;
    format!("{whole}.{fraction:09}")
}

/// The values of gossip origin `origin`'s stream as the README specifies them, generated here
/// rather than by pollen's code: Xoshiro256++ seeded with `seed` (`seed_from_u64`), jumped
/// `origin` times; each 64-bit output gives two values, its low half first.
pub struct GossipStream {
    rng: rand_xoshiro::Xoshiro256PlusPlus,
    high: Option<u32>,
}

impl GossipStream {
    pub fn new(seed: u64, origin: usize) -> GossipStream {
        use rand_xoshiro::rand_core::SeedableRng;
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
        for _ in 0..origin {
            rng.jump();
        }
        GossipStream { rng, high: None }
    }

    pub fn next_value(&mut self) -> u32 {
        use rand_xoshiro::rand_core::Rng;
        match self.high.take() {
            Some(high) => high,
            None => {
                let bits = self.rng.next_u64();
                self.high = Some((bits >> 32) as u32);
                bits as u32
            }
        }
    }
}

/// The `(COUNT, CHECKSUM)` line a gossip run must print, given the runs of messages a node
/// folded (`--fold-log`: `TIMESTAMP_US ORIGIN FIRST_SEQ COUNT` per line, in result order).
/// Checks that each origin's runs are contiguous from seq 0 and that the runs are in
/// (timestamp, origin) order, regenerates every value from the seed and sums `i·(v_i + 1)`.
pub fn gossip_reference(seed: u64, nodes: usize, fold_log: &str) -> Result<String, String> {
    let mut streams: Vec<GossipStream> = (0..nodes).map(|o| GossipStream::new(seed, o)).collect();
    let mut next_seq = vec![0u64; nodes];
    let mut last: Option<(u64, usize)> = None;
    let (mut count, mut sum) = (0u64, 0u128);
    for (number, line) in fold_log.lines().enumerate() {
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(|field| {
                field
                    .parse()
                    .map_err(|_| format!("line {number}: {line:?}"))
            })
            .collect::<Result<_, _>>()?;
        let [timestamp, origin, first, length] = fields[..] else {
            return Err(format!("line {number}: {line:?}"));
        };
        let origin = origin as usize;
        if origin >= nodes || first != next_seq[origin] {
            return Err(format!(
                "line {number}: origin {origin} resumes at {first}, not {:?}",
                next_seq.get(origin)
            ));
        }
        if last.is_some_and(|previous| previous > (timestamp, origin)) {
            return Err(format!("line {number}: out of (timestamp, origin) order"));
        }
        last = Some((timestamp, origin));
        next_seq[origin] += length;
        for _ in 0..length {
            count += 1;
            sum += count as u128 * (streams[origin].next_value() as u128 + 1);
        }
    }
    Ok(format!("({count}, {})", decimal(sum)))
}

/// The `SlaveResult COUNT CHECKSUM` line of a ring run without faults: index `k + 1` is drawn
/// (`next_u32`) by ring position `(k / window) % workers` — worker `p`'s stream is the gossip
/// stream generator of origin `p` — and each worker draws its turns in increasing `k`.
pub fn ring_reference(seed: u64, workers: usize, window: u64, count: u64) -> String {
    use rand_xoshiro::rand_core::{Rng, SeedableRng};
    let mut rngs: Vec<rand_xoshiro::Xoshiro256PlusPlus> = (0..workers)
        .map(|worker| {
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
            for _ in 0..worker {
                rng.jump();
            }
            rng
        })
        .collect();
    let mut sum = 0u128;
    for k in 0..count {
        let position = ((k / window) % workers as u64) as usize;
        let value = rngs[position].next_u32();
        sum += (k as u128 + 1) * (value as u128 + 1);
    }
    format!("SlaveResult {count} {}", decimal(sum))
}

/// Children killed (by PID, through `Child`) and reaped when dropped: a failing test leaves
/// nothing behind.
#[derive(Default)]
pub struct Processes(pub Vec<Child>);

impl Processes {
    pub fn push(&mut self, child: Child) -> &mut Child {
        self.0.push(child);
        self.0.last_mut().expect("just pushed")
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A peers file at `path` listing `127.0.0.1:PORT` for each port, in order.
pub fn write_peers(path: &std::path::Path, ports: &[u16]) {
    let text: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    std::fs::write(path, text).expect("write peers file");
}

/// `pollen ROLE ARGS --peer-config-file PEERS` with the given standard streams.
pub fn spawn_pollen(
    role: &str,
    args: &[&str],
    peers: &std::path::Path,
    streams: [Stdio; 3],
) -> Child {
    let [stdin, stdout, stderr] = streams;
    Command::new(POLLEN)
        .arg(role)
        .args(args)
        .arg("--peer-config-file")
        .arg(peers)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn pollen")
}

/// Sends `signal` (`-KILL`, `-STOP`, ...) to a process by PID.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// Waits for `child` to exit, at most until `deadline` (then kills it): its exit code (`None`
/// when killed or signalled), stdout and stderr.
pub fn finish_child(child: &mut Child, deadline: Instant) -> (Option<i32>, String, String) {
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        pipe.read_to_string(&mut stdout).unwrap();
    }
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).unwrap();
    }
    (code, stdout, stderr)
}

/// Feeds `script` to a REPL on the child's stdin (then closes it) and reads everything it
/// prints until it exits, at most 60 s (then it is killed and counts as a failure): (stdout,
/// whether it exited 0).
pub fn repl_transcript(child: &mut Child, script: &str) -> (String, bool) {
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(script.as_bytes())
        .unwrap();
    let mut stdout = child.stdout.take().expect("stdout piped");
    let reader = std::thread::spawn(move || {
        let mut output = String::new();
        let _ = stdout.read_to_string(&mut output);
        output
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let success = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.success();
        }
        if Instant::now() > deadline {
            eprintln!("the REPL did not exit within 60 s; killed");
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (reader.join().unwrap(), success)
}

/// Fails with every broken seed's message, or prints how many passed.
pub fn assert_no_failures(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{what}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A RESP connection to a kv store that answers writes: it retries a SET (bounded) until the
/// master has its workers.
pub fn serving_store(port: u16) -> Resp {
    let mut client = Resp::connect(port);
    let started = Instant::now();
    while client.call(&["SET", "probe", "1"]) != "OK" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the store never came up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    client
}

/// A process's (VmPeak, VmHWM) in KiB, from /proc.
pub fn memory_kib(pid: u32) -> (u64, u64) {
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

/// A ring of `workers` workers and a master on free ports (peers file `DIR/ring-peers.txt`),
/// the master given `SEND_US GRACE_US SEED` and `extra` arguments; stdout and stderr piped.
pub fn spawn_ring(
    dir: &std::path::Path,
    workers: usize,
    timing: [u64; 3],
    extra: &[&str],
) -> (Vec<Child>, Child) {
    let ports = free_ports(workers + 1);
    let peers = dir.join("ring-peers.txt");
    write_peers(&peers, &ports[..workers]);
    let spawn = |args: &[&str]| {
        spawn_pollen(
            "ring",
            args,
            &peers,
            [Stdio::null(), Stdio::piped(), Stdio::piped()],
        )
    };
    let slaves = ports[..workers]
        .iter()
        .map(|port| spawn(&["slave", "127.0.0.1", &port.to_string()]))
        .collect();
    let [send_us, grace_us, seed] = timing.map(|number| number.to_string());
    let master_port = ports[workers].to_string();
    let master = [
        &[
            "master",
            "127.0.0.1",
            &master_port,
            &send_us,
            &grace_us,
            &seed,
        ],
        extra,
    ];
    (slaves, spawn(&master.concat()))
}
