//! Real sockets through `pollen chaos-proxy`: three gossip nodes whose every link runs through a
//! proxy adding latency and jitter agree; with one link cut for good mid-send they still agree
//! (the third node relays); kv with its master's links to the workers slowed, then one cut for
//! good, loses no key; the proxy itself delays by what it is told.
//!
//! The node with the higher id dials, so each node gets its own peers file: its own entry is
//! its real address, the entries of the nodes it dials are proxies in front of them.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    POLLEN, Processes, Resp, free_ports, parse_result, scratch_dir, serial, serving_store,
    spawn_pollen, write_peers,
};

/// Starts a proxy in front of `to_port` on a port the OS picks; returns its port.
fn proxy(processes: &mut Processes, to_port: u16, args: &[&str]) -> u16 {
    let mut child = Command::new(POLLEN)
        .args(["chaos-proxy", "--listen", "127.0.0.1:0"])
        .args(["--to", &format!("127.0.0.1:{to_port}")])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chaos-proxy");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the proxy's address");
    processes.push(child);
    line.trim()
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("unexpected proxy line {line:?}"))
}

/// Three gossip nodes; `links[(i, j)]` (i > j) are the proxy arguments for i's link to j.
/// Returns each node's stdout.
fn gossip_through_proxies(name: &str, links: [&[&str]; 3]) -> Vec<String> {
    let _serial = serial();
    let dir = scratch_dir(name);
    let ports = free_ports(3);
    let mut processes = Processes::default();
    // (dialler, target) in the order of `links`: 1→0, 2→0, 2→1.
    let pairs = [(1, 0), (2, 0), (2, 1)];
    let mut via = [[0u16; 3]; 3];
    for (&(from, to), args) in pairs.iter().zip(links) {
        via[from][to] = proxy(&mut processes, ports[to], args);
    }
    let mut nodes = Vec::new();
    for node in 0..3 {
        let text: String = (0..3)
            .map(|peer| {
                let port = if peer < node {
                    via[node][peer]
                } else {
                    ports[peer]
                };
                format!("127.0.0.1:{port}\n")
            })
            .collect();
        let peers = dir.join(format!("peers-{node}.txt"));
        std::fs::write(&peers, text).unwrap();
        nodes.push(
            Command::new(POLLEN)
                .args(["gossip", "-h", "127.0.0.1", "-p", &ports[node].to_string()])
                .arg("--peer-config-file")
                .arg(&peers)
                .args(["--send-for", "2", "--wait-for", "3"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn gossip"),
        );
    }
    let started = Instant::now();
    let mut outputs = Vec::new();
    for mut node in nodes {
        while node.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < Duration::from_secs(30), "a node hangs");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut stdout = String::new();
        node.stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        outputs.push(stdout);
    }
    let _ = std::fs::remove_dir_all(&dir);
    outputs
}

fn assert_agree(outputs: &[String]) -> u64 {
    let results: Vec<_> = outputs.iter().map(|out| parse_result(out)).collect();
    assert!(
        results
            .iter()
            .all(|result| result.is_some() && *result == results[0]),
        "{outputs:?}"
    );
    let (count, _) = results[0].clone().unwrap();
    assert!(count > 1000, "too little got through: {outputs:?}");
    count
}

#[test]
fn gossip_agrees_with_latency_and_jitter_on_every_link() {
    let slow: &[&str] = &["--latency-ms", "5", "--jitter-ms", "5", "--seed", "1"];
    let outputs = gossip_through_proxies("chaos-latency", [slow, slow, slow]);
    let count = assert_agree(&outputs);
    eprintln!("latency: {count} messages agreed");
}

#[test]
fn gossip_agrees_when_a_link_is_cut_for_good_mid_send() {
    let cut: &[&str] = &["--cut-after-ms", "700"];
    let outputs = gossip_through_proxies("chaos-cut", [&[], cut, &[]]);
    let count = assert_agree(&outputs);
    eprintln!("cut: {count} messages agreed");
}

#[test]
fn the_proxy_delays_each_direction_by_its_latency() {
    let _serial = serial();
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = echo.accept().unwrap();
        let mut buffer = [0u8; 64];
        while let Ok(count) = stream.read(&mut buffer) {
            if count == 0 || stream.write_all(&buffer[..count]).is_err() {
                return;
            }
        }
    });
    let mut processes = Processes::default();
    let port = proxy(&mut processes, echo_port, &["--latency-ms", "100"]);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let started = Instant::now();
    stream.write_all(b"ping").unwrap();
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).unwrap();
    let round_trip = started.elapsed();
    assert_eq!(&reply, b"ping");
    // 100 ms each way; the upper bound only guards against a lost message, not speed.
    assert!(round_trip >= Duration::from_millis(200), "{round_trip:?}");
    assert!(round_trip < Duration::from_secs(10), "{round_trip:?}");
}

/// kv: two workers, two replicas; the master reaches the workers only through proxies (5 ms
/// latency, 3 ms jitter), and its link to worker 1 is cut for good after 3 s. Keys written
/// before the cut are all read back after it, from worker 0's copies.
#[test]
fn kv_loses_nothing_through_a_slow_link_that_is_then_cut() {
    let _serial = serial();
    const KEYS: usize = 500;
    let dir = scratch_dir("chaos-kv");
    let ports = free_ports(4);
    let (workers, master_port, resp_port) = (&ports[..2], ports[2], ports[3]);
    let mut processes = Processes::default();
    let slow = ["--latency-ms", "5", "--jitter-ms", "3"];
    let cut = [&slow[..], &["--cut-after-ms", "3000"]].concat();
    let via = [
        proxy(&mut processes, workers[0], &slow),
        proxy(&mut processes, workers[1], &cut),
    ];
    let cut_at = Instant::now() + Duration::from_millis(3000);
    let real = dir.join("workers.txt");
    let proxied = dir.join("workers-via-proxies.txt");
    write_peers(&real, workers);
    write_peers(&proxied, &via);
    let spawn = |args: &[&str], peers: &std::path::Path| {
        spawn_pollen(
            "kv",
            args,
            peers,
            [Stdio::null(), Stdio::null(), Stdio::null()],
        )
    };
    for port in workers {
        processes.push(spawn(&["slave", &port.to_string()], &real));
    }
    processes.push(spawn(
        &[
            "master",
            &master_port.to_string(),
            "--replicas",
            "2",
            "--resp-port",
            &resp_port.to_string(),
            "--no-repl",
        ],
        &proxied,
    ));
    let mut client = serving_store(resp_port);
    for key in 0..KEYS {
        let (key, value) = (format!("key-{key}"), format!("value-{key}"));
        client.send(&[b"SET", key.as_bytes(), value.as_bytes()]);
    }
    for key in 0..KEYS {
        assert_eq!(client.read(), "OK", "SET key-{key}");
    }
    assert!(
        Instant::now() < cut_at,
        "writing took past the cut; the test would prove nothing"
    );
    // Past the cut, with time for the master to notice and re-place the keys.
    std::thread::sleep(cut_at + Duration::from_millis(1500) - Instant::now());
    let mut client = Resp::connect(resp_port);
    let nodes = client.call(&["NODES"]);
    assert!(
        nodes.contains("worker 1 down"),
        "the cut went unnoticed: {nodes}"
    );
    for key in 0..KEYS {
        client.send(&[b"GET", format!("key-{key}").as_bytes()]);
    }
    for key in 0..KEYS {
        assert_eq!(
            client.read(),
            format!("value-{key}"),
            "GET key-{key} after the cut"
        );
    }
}
