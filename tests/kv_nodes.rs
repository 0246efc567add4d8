//! The masterless kv (`pollen kv node`) as real processes, driven by the `redis` crate: four
//! clients on different nodes' Redis ports read and write 16 shared keys for 10 s while one
//! node is SIGKILLed (and later restarted on its log) and another SIGSTOPped for 2 s. The
//! recorded history — every operation with its call and return times and its outcome, an error
//! or a timeout counting as "may or may not have taken effect" — must be linearizable, and once
//! the faults heal every node must read every key as the history's last word on it.

mod common;

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Processes, free_ports, scratch_dir, serial, spawn_pollen, write_peers};
use pollen::sim::linearizable::{self, Action, Operation, Outcome};

const NODES: usize = 3;
const CLIENTS: usize = 4;
const KEYS: u64 = 16;
const LOAD: Duration = Duration::from_secs(10);
/// A client waits this long for an answer (longer than the node's 1 s request timeout).
const PATIENCE: Duration = Duration::from_secs(2);

struct Cluster {
    dir: std::path::PathBuf,
    peer_ports: Vec<u16>,
    resp_ports: Vec<u16>,
    processes: Processes,
}

impl Cluster {
    fn start(name: &str) -> Cluster {
        let dir = scratch_dir(name);
        let ports = free_ports(2 * NODES);
        let (peer_ports, resp_ports) = ports.split_at(NODES);
        write_peers(&dir.join("peers.txt"), peer_ports);
        let mut cluster = Cluster {
            dir,
            peer_ports: peer_ports.to_vec(),
            resp_ports: resp_ports.to_vec(),
            processes: Processes::default(),
        };
        for node in 0..NODES {
            let child = cluster.spawn(node);
            cluster.processes.push(child);
        }
        for node in 0..NODES {
            wait_serving(cluster.resp_ports[node]);
        }
        cluster
    }

    fn spawn(&self, node: usize) -> Child {
        let data = self.dir.join(format!("data-{node}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{node}.log")))
            .unwrap();
        let (port, resp) = (
            self.peer_ports[node].to_string(),
            self.resp_ports[node].to_string(),
        );
        let args = [
            "node",
            &port,
            "--resp-port",
            &resp,
            "--data-dir",
            data.to_str().unwrap(),
            "--fsync",
            "always",
        ];
        let streams = [Stdio::null(), Stdio::null(), Stdio::from(log)];
        spawn_pollen("kv", &args, &self.dir.join("peers.txt"), streams)
    }

    /// A front door (`--front-door`, node NODES) on `resp_port`, its stdin piped to the REPL.
    fn spawn_front_door(&self, peer_port: u16, resp_port: u16) -> Child {
        let (port, resp) = (peer_port.to_string(), resp_port.to_string());
        let args = [
            "node",
            &port,
            "--front-door",
            "--repl",
            "--resp-port",
            &resp,
        ];
        let streams = [Stdio::piped(), Stdio::piped(), Stdio::null()];
        spawn_pollen("kv", &args, &self.dir.join("peers.txt"), streams)
    }

    fn pid(&self, node: usize) -> u32 {
        self.processes.0[node].id()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.processes.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn connect(port: u16) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let connection = client.get_connection_with_timeout(PATIENCE).ok()?;
    connection.set_read_timeout(Some(PATIENCE)).ok()?;
    connection.set_write_timeout(Some(PATIENCE)).ok()?;
    Some(connection)
}

/// Waits (at most 20 s) until the node at `port` acknowledges a write.
fn wait_serving(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(mut connection) = connect(port) {
            let set: redis::RedisResult<String> = redis::cmd("SET")
                .arg("probe")
                .arg("1")
                .query(&mut connection);
            if set.is_ok() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the node on {port} does not serve"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs one operation through `connection` and records it (times in µs since `origin`).
fn perform(
    connection: &mut redis::Connection,
    client: u32,
    key: u64,
    action: Action,
    origin: Instant,
) -> Operation {
    let name = format!("key:{key}");
    let call_us = origin.elapsed().as_micros() as u64;
    let outcome = match action {
        Action::Read => {
            let answer: redis::RedisResult<Option<String>> =
                redis::cmd("GET").arg(&name).query(connection);
            match answer {
                Ok(None) => Some(Outcome::Read(None)),
                Ok(Some(value)) => value.parse().ok().map(|v| Outcome::Read(Some(v))),
                Err(_) => None,
            }
        }
        Action::Write(Some(value)) => {
            let answer: redis::RedisResult<String> =
                redis::cmd("SET").arg(&name).arg(value).query(connection);
            answer.ok().map(|_| Outcome::Written)
        }
        Action::Write(None) => {
            let answer: redis::RedisResult<i64> = redis::cmd("DEL").arg(&name).query(connection);
            answer.ok().map(|_| Outcome::Written)
        }
    };
    let return_us = origin.elapsed().as_micros() as u64;
    Operation {
        client,
        key,
        action,
        call_us,
        return_us: outcome.map(|_| return_us),
        outcome: outcome.unwrap_or(Outcome::Unknown),
    }
}

/// One client: operations on random keys through its node until `stop`; after an error it
/// reconnects, to the next node if its own does not answer.
fn client_loop(
    client: u32,
    resp_ports: Vec<u16>,
    origin: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<Operation> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ client as u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut node = client as usize % NODES;
    let mut connection = connect(resp_ports[node]);
    let mut history = Vec::new();
    let mut written = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(open) = connection.as_mut() else {
            node = (node + 1) % NODES;
            connection = connect(resp_ports[node]);
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let key = next() % KEYS;
        let action = match next() % 10 {
            0..=4 => Action::Read,
            5 => Action::Write(None),
            _ => {
                written += 1;
                Action::Write(Some(client as u64 * 1_000_000 + written))
            }
        };
        let operation = perform(open, client, key, action, origin);
        if operation.outcome == Outcome::Unknown {
            connection = None;
        }
        history.push(operation);
    }
    history
}

#[test]
fn histories_through_every_node_are_linearizable_under_kill_and_stop() {
    let _serial = serial();
    let mut cluster = Cluster::start("kv-nodes");
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS as u32)
        .map(|client| {
            let (ports, stop) = (cluster.resp_ports.clone(), stop.clone());
            std::thread::spawn(move || client_loop(client, ports, origin, stop))
        })
        .collect();
    // The faults: node 2 killed at 2 s and restarted on its log at 6 s; node 1 stopped from
    // 4 s to 6 s.
    std::thread::sleep(Duration::from_secs(2));
    common::signal(cluster.pid(2), "-KILL");
    std::thread::sleep(Duration::from_secs(2));
    common::signal(cluster.pid(1), "-STOP");
    std::thread::sleep(Duration::from_secs(2));
    common::signal(cluster.pid(1), "-CONT");
    let _ = cluster.processes.0[2].wait();
    cluster.processes.0[2] = cluster.spawn(2);
    std::thread::sleep(LOAD.saturating_sub(origin.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let mut history: Vec<Operation> = clients
        .into_iter()
        .flat_map(|client| client.join().unwrap())
        .collect();
    // Healed: every node reads every key (as more operations of the history).
    for node in 0..NODES {
        wait_serving(cluster.resp_ports[node]);
    }
    for node in 0..NODES {
        let mut connection = connect(cluster.resp_ports[node]).expect("connect after healing");
        for key in 0..KEYS {
            let client = CLIENTS as u32 + node as u32;
            let read = perform(&mut connection, client, key, Action::Read, origin);
            assert!(
                read.outcome != Outcome::Unknown,
                "node {node} did not answer key:{key} after healing"
            );
            history.push(read);
        }
    }
    let writes = history
        .iter()
        .filter(|o| matches!(o.action, Action::Write(_)) && o.outcome == Outcome::Written)
        .count();
    let unknown = history
        .iter()
        .filter(|o| o.outcome == Outcome::Unknown)
        .count();
    println!(
        "{} operations, {writes} acknowledged writes, {unknown} unknown outcomes",
        history.len()
    );
    assert!(
        writes > 1_000,
        "too little load: {writes} writes acknowledged"
    );
    assert!(unknown > 0, "the faults touched no operation");
    if let Err(error) = linearizable::check(&history) {
        panic!("not linearizable: {error}");
    }
}

/// distro-db's command line: a front door holding no data serves the REPL and Redis clients;
/// killing it mid-load costs the clients of the data nodes nothing.
#[test]
fn killing_the_front_door_mid_load_is_invisible_to_clients_of_the_data_nodes() {
    let _serial = serial();
    let mut cluster = Cluster::start("kv-nodes-door");
    let door_ports = free_ports(2);
    let door = cluster.spawn_front_door(door_ports[0], door_ports[1]);
    let door = cluster.processes.push(door).id();
    wait_serving(door_ports[1]);
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2u32)
        .map(|client| {
            let (ports, stop) = (cluster.resp_ports.clone(), stop.clone());
            std::thread::spawn(move || client_loop(client, ports, origin, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    common::signal(door, "-KILL");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let history: Vec<Operation> = clients
        .into_iter()
        .flat_map(|client| client.join().unwrap())
        .collect();
    let failed = history
        .iter()
        .filter(|o| o.outcome == Outcome::Unknown)
        .count();
    assert!(history.len() > 500, "too little load: {}", history.len());
    assert_eq!(failed, 0, "clients of the data nodes saw errors");
    linearizable::check(&history).unwrap();
}

/// The front door's REPL through a pipe: answers in order (a line the parser refuses gets its
/// error in its turn), NODES, KILL of a data node (its keys still read from the other
/// replicas), SHUTDOWN stopping every node.
#[test]
fn a_front_door_repl_session_kills_a_node_and_shuts_the_cluster_down() {
    let _serial = serial();
    let mut cluster = Cluster::start("kv-nodes-repl");
    let door_ports = free_ports(2);
    let door = cluster.spawn_front_door(door_ports[0], door_ports[1]);
    cluster.processes.push(door);
    wait_serving(door_ports[1]);
    let script = "SET a 1\nSET \"b\nGET a\nNODES\nKILL 2\nKILL 9\nGET a\nDEL a\nGET a\nSHUTDOWN\n";
    let door = cluster.processes.0.last_mut().unwrap();
    let (output, success) = common::repl_transcript(door, script);
    assert!(success, "the front door did not exit 0: {output}");
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(
        lines,
        [
            "OK",
            "ERR protocol error: unbalanced quotes in request",
            "\"1\"",
            "node 0 up",
            "node 1 up",
            "node 2 up",
            "OK",
            "ERR usage: KILL <data node that is up>",
            "\"1\"",
            "(integer) 1",
            "(nil)",
            "OK"
        ],
        "{output}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in 0..NODES {
        let child = &mut cluster.processes.0[node];
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "data node {node} still runs");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "data node {node}: {status:?}");
    }
}
