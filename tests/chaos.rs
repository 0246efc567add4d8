//! Real sockets through `pollen chaos-proxy`: three gossip nodes whose every link runs through a
//! proxy adding latency and jitter agree; with one link cut for good mid-send they still agree
//! (the third node relays); the proxy itself delays by what it is told.
//!
//! The node with the higher id dials, so each node gets its own peers file: its own entry is
//! its real address, the entries of the nodes it dials are proxies in front of them.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{POLLEN, free_ports, parse_result, scratch_dir, serial};

/// Children killed (by PID, through `Child`) when dropped.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

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
    processes.0.push(child);
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
    let mut processes = Processes(vec![]);
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
    let mut processes = Processes(vec![]);
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
