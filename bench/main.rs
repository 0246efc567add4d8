//! The bench harness: `cargo bench` (or `cargo bench -- gossip` for one part).
//!
//! Launches real clusters of the release binary on loopback, repeats each configuration
//! `RUNS` times, and prints a markdown table (median, with min–max) on stdout; progress goes to
//! stderr; the raw figures go to `target/bench/results.json`.
//!
//! Rows:
//! - gossip, 2/4/8 nodes: agreed messages per second of send time; delivered messages per
//!   second (agreed × (nodes − 1): each message reaches every other node); CPU time (user + sys
//!   of all nodes) per delivered message; peak RSS of the largest node.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const POLLEN: &str = env!("CARGO_BIN_EXE_pollen");
const RUNS: usize = 3;
const SEND_FOR_S: f64 = 3.0;
const WAIT_FOR_S: f64 = 3.0;
/// Clock ticks per second for /proc/self/stat's cutime and cstime.
const CLOCK_TICKS_PER_S: f64 = 100.0;

struct Row {
    name: String,
    unit: &'static str,
    samples: Vec<f64>,
}

impl Row {
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
    let mut rows = Vec::new();
    if wanted("gossip") {
        for nodes in [2, 4, 8] {
            rows.extend(bench_gossip(nodes, &out_dir));
        }
    }
    print_table(&rows);
    write_json(&rows, &out_dir.join("results.json"));
}

fn bench_gossip(nodes: usize, dir: &Path) -> Vec<Row> {
    let mut agreed = Row {
        name: format!("gossip {nodes} nodes: agreed"),
        unit: "msg/s",
        samples: vec![],
    };
    let mut delivered = Row {
        name: format!("gossip {nodes} nodes: delivered"),
        unit: "msg/s",
        samples: vec![],
    };
    let mut cpu = Row {
        name: format!("gossip {nodes} nodes: CPU per delivered message"),
        unit: "ns",
        samples: vec![],
    };
    let mut rss = Row {
        name: format!("gossip {nodes} nodes: peak RSS per node (max)"),
        unit: "MiB",
        samples: vec![],
    };
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
    let listeners: Vec<TcpListener> = (0..nodes)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    drop(listeners);
    let peers: PathBuf = dir.join("gossip-peers.txt");
    let text: String = ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}\n"))
        .collect();
    std::fs::write(&peers, text).expect("write peers file");
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

fn human(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.1} M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1} k", value / 1e3)
    } else {
        format!("{value:.1}")
    }
}

fn print_table(rows: &[Row]) {
    println!("| what | median | min – max | unit |");
    println!("|---|---:|---:|---|");
    for row in rows {
        println!(
            "| {} | {} | {} – {} | {} |",
            row.name,
            human(row.median()),
            human(row.min()),
            human(row.max()),
            row.unit
        );
    }
}

fn write_json(rows: &[Row], path: &Path) {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "name": row.name, "unit": row.unit, "samples": row.samples,
                "median": row.median(), "min": row.min(), "max": row.max(),
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&serde_json::json!({ "rows": rows })).unwrap();
    std::fs::write(path, text).expect("write results");
    eprintln!("results written to {}", path.display());
}
