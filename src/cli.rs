//! Command line: `pollen SUBCOMMAND [OPTIONS]`. Parses with getopts, builds a role and a driver,
//! runs it. Bad input gets one line on stderr and exit status 2; a runtime failure (cannot
//! listen, ...) gets one line and status 1.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use getopts::{Matches, Options};

use crate::net::{self, Driver};
use crate::node::{Micros, NodeId};
use crate::roles::gossip::{self, Gossip};
use crate::roles::ring::{self, Ring};
use crate::{chaos, info, log, peers};

/// Prints to stdout; a closed stdout (`pollen sim ... | head`) ends the program quietly
/// instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if write!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// `out!` with a newline.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

const USAGE: &str = "\
usage: pollen SUBCOMMAND [OPTIONS]

subcommands:
  gossip    broadcast seeded random numbers to all peers; all print the same (count, checksum)
  ring      a master drives workers passing numbered values around a ring (cloudy)
  kv        a replicated key-value store: a master (REPL on stdin, Redis protocol) and workers
  lamport   the asynchronous scale model: machines at random clock rates log Lamport clocks
  sim ROLE  run ROLE in the deterministic simulator with injected faults, and check it
  ports N   print N free TCP ports on 127.0.0.1 (for scripts)
  chaos-proxy --listen ADDR --to ADDR [...]
            a TCP relay adding latency, jitter, a bandwidth limit and cuts (fault testing)

`pollen SUBCOMMAND --help` describes each.";

enum Exit {
    /// Bad usage: one line on stderr, status 2.
    Usage(String),
    /// `--help`: text on stdout, status 0.
    Help(String),
    /// Could not run: one line on stderr, status 1.
    Failure(String),
}

pub fn main(args: &[String]) -> i32 {
    let command = args.get(1).map(String::as_str);
    let rest = args.get(2..).unwrap_or(&[]);
    let result = match command {
        Some("gossip") => run_gossip(rest),
        Some("ports") => run_ports(rest),
        Some("sim") => run_sim(rest),
        Some("ring") => run_ring(rest),
        Some("kv") => run_kv(rest),
        Some("lamport") => run_lamport(rest),
        Some("chaos-proxy") => run_chaos_proxy(rest),
        Some("help" | "--help" | "-h") => Err(Exit::Help(USAGE.to_string())),
        Some("--version" | "-V" | "version") => {
            Err(Exit::Help(format!("pollen {}", env!("CARGO_PKG_VERSION"))))
        }
        Some(other) => Err(Exit::Usage(format!(
            "unknown subcommand {other:?} (try --help)"
        ))),
        None => Err(Exit::Usage("missing subcommand (try --help)".to_string())),
    };
    match result {
        Ok(()) => 0,
        Err(Exit::Help(text)) => {
            outln!("{text}");
            0
        }
        Err(Exit::Usage(message)) => {
            eprintln!("pollen: error: {message}");
            2
        }
        Err(Exit::Failure(message)) => {
            eprintln!("pollen: {message}");
            1
        }
    }
}

/// `--help` anywhere wins over every other argument (required options included).
fn wants_help(args: &[String]) -> bool {
    args.iter()
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "--help")
}

fn parse(options: &Options, args: &[String], brief: &str) -> Result<Matches, Exit> {
    if wants_help(args) {
        return Err(Exit::Help(options.usage(brief)));
    }
    let matches = options
        .parse(args)
        .map_err(|error| Exit::Usage(error.to_string()))?;
    if let Some(extra) = matches.free.first() {
        return Err(Exit::Usage(format!("unexpected argument {extra:?}")));
    }
    set_log_level(&matches);
    Ok(matches)
}

fn set_log_level(matches: &Matches) {
    log::set_level(if matches.opt_present("v") {
        log::LEVEL_DEBUG
    } else if matches.opt_present("q") {
        log::LEVEL_QUIET
    } else {
        log::LEVEL_INFO
    });
}

/// `--cookie-file` for the roles that talk to peers.
fn cookie_option(options: &mut Options) {
    options.optopt(
        "",
        "cookie-file",
        "the cluster's shared secret; peers must prove they know it (or POLLEN_COOKIE_FILE)",
        "FILE",
    );
}

/// The cookie from `--cookie-file` or `POLLEN_COOKIE_FILE`, trimmed of surrounding whitespace.
fn cookie(matches: &Matches) -> Result<Option<Vec<u8>>, Exit> {
    let Some(path) = matches
        .opt_str("cookie-file")
        .or_else(|| std::env::var("POLLEN_COOKIE_FILE").ok())
        .filter(|path| !path.is_empty())
    else {
        return Ok(None);
    };
    let metadata = std::fs::metadata(&path)
        .map_err(|error| Exit::Usage(format!("--cookie-file {path}: {error}")))?;
    if metadata.len() > net::auth::COOKIE_BYTES_MAX as u64 {
        return Err(Exit::Usage(format!(
            "--cookie-file {path}: longer than {} bytes",
            net::auth::COOKIE_BYTES_MAX
        )));
    }
    let bytes = std::fs::read(&path)
        .map_err(|error| Exit::Usage(format!("--cookie-file {path}: {error}")))?;
    let cookie = bytes.trim_ascii();
    if cookie.is_empty() {
        return Err(Exit::Usage(format!("--cookie-file {path}: empty")));
    }
    Ok(Some(cookie.to_vec()))
}

fn common_options(options: &mut Options) {
    options.optflag("", "help", "print this help");
    options.optflag("v", "verbose", "debug logging on stderr");
    options.optflag("q", "quiet", "no logging on stderr");
}

fn number<T: std::str::FromStr>(matches: &Matches, name: &str, default: T) -> Result<T, Exit> {
    match matches.opt_str(name) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| {
            let dashes = if name.len() == 1 { "-" } else { "--" };
            Exit::Usage(format!("{dashes}{name}: {text:?} is not a valid number"))
        }),
    }
}

/// Gossip's `--batch`: an even number of messages, at most `BATCH_VALUES_MAX`.
fn batch_values(matches: &Matches, default: usize) -> Result<usize, Exit> {
    let batch = number(matches, "batch", default)?;
    if !(2..=gossip::BATCH_VALUES_MAX).contains(&batch) || !batch.is_multiple_of(2) {
        return Err(Exit::Usage("--batch must be even, 2..=1024".to_string()));
    }
    Ok(batch)
}

/// Seconds (fractions allowed) as microseconds.
fn seconds(matches: &Matches, name: &str) -> Result<Micros, Exit> {
    let text = matches
        .opt_str(name)
        .ok_or_else(|| Exit::Usage(format!("--{name} is required")))?;
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && (0.0..=1e6).contains(&value) => {
            Ok((value * 1e6).round() as Micros)
        }
        _ => Err(Exit::Usage(format!(
            "--{name}: {text:?} is not a number of seconds"
        ))),
    }
}

fn run_gossip(args: &[String]) -> Result<(), Exit> {
    let mut options = Options::new();
    common_options(&mut options);
    cookie_option(&mut options);
    options.optopt("h", "host", "this node's host (default 127.0.0.1)", "HOST");
    options.optopt("p", "port", "this node's port (default 3000)", "PORT");
    options.optopt(
        "",
        "peer-config-file",
        "peers file (default peers.json)",
        "FILE",
    );
    options.optopt("", "send-for", "seconds to send (required)", "SECS");
    options.optopt(
        "",
        "wait-for",
        "seconds to settle after sending (required)",
        "SECS",
    );
    options.optopt(
        "",
        "with-seed",
        "seed of the random streams (default 0)",
        "N",
    );
    options.optopt(
        "",
        "tick-duration",
        "state exchange period in ms (default 10)",
        "MS",
    );
    options.optopt(
        "",
        "cluster",
        "cluster name in the handshake (default pollen-gossip)",
        "NAME",
    );
    options.optopt(
        "",
        "batch",
        "messages per generated batch, even (default 1024)",
        "N",
    );
    options.optopt(
        "",
        "window",
        "unacknowledged messages per peer (default 1048576)",
        "N",
    );
    options.optopt(
        "",
        "fold-log",
        "write every folded run of messages to FILE, one `TIMESTAMP_US ORIGIN FIRST_SEQ \
         COUNT` line each, in result order (for checking a result; small runs)",
        "FILE",
    );
    let brief = "usage: pollen gossip [-h HOST] [-p PORT] [--peer-config-file FILE] \
                 --send-for SECS --wait-for SECS [--with-seed N] [--tick-duration MS] \
                 [--cluster NAME] [--cookie-file FILE] [--batch N] [--window N] \
                 [--fold-log FILE] [-v | -q]";
    let matches = parse(&options, args, brief)?;
    let host = matches
        .opt_str("h")
        .unwrap_or_else(|| "127.0.0.1".to_string());
    let port: u16 = number(&matches, "p", 3000)?;
    let peers_path = matches
        .opt_str("peer-config-file")
        .unwrap_or("peers.json".to_string());
    let send_for_us = seconds(&matches, "send-for")?;
    let wait_for_us = seconds(&matches, "wait-for")?;
    let seed: u64 = number(&matches, "with-seed", 0)?;
    let tick_ms: u64 = number(&matches, "tick-duration", 10)?;
    if !(1..=10_000).contains(&tick_ms) {
        return Err(Exit::Usage(
            "--tick-duration must be 1..=10000 ms".to_string(),
        ));
    }
    let cluster = matches
        .opt_str("cluster")
        .unwrap_or("pollen-gossip".to_string());
    if cluster.len() > crate::wire::CLUSTER_NAME_BYTES_MAX {
        return Err(Exit::Usage("--cluster: name too long".to_string()));
    }
    let addresses = peers::load(&peers_path).map_err(Exit::Usage)?;
    let node = peers::find_self(&addresses, &host, port).map_err(Exit::Usage)?;
    let mut config = gossip::Config::new(addresses.len(), seed, send_for_us, wait_for_us);
    config.tick_us = tick_ms * 1000;
    config.batch_values = batch_values(&matches, gossip::BATCH_VALUES_MAX)?;
    config.window_messages = number(&matches, "window", gossip::WINDOW_MESSAGES)?;
    if !(1024..=1 << 26).contains(&config.window_messages) {
        return Err(Exit::Usage(
            "--window must be 1024..=67108864 messages".to_string(),
        ));
    }
    // Created before the run, so that a bad path fails at once rather than after it.
    let fold_log = match matches.opt_str("fold-log") {
        None => None,
        Some(path) => Some(
            std::fs::File::create(&path)
                .map(|file| (path.clone(), file))
                .map_err(|error| Exit::Usage(format!("--fold-log {path}: {error}")))?,
        ),
    };
    config.record_folds = fold_log.is_some();
    let address = addresses[node];
    let role = Gossip::new(config, node);
    let mut net_config = net::Config::peers_only(node, addresses, cluster);
    net_config.cookie = cookie(&matches)?;
    let driver = Driver::new(net_config, role).map_err(|error| Exit::Failure(error.to_string()))?;
    info!("node {node}: listening on {address}");
    let (role, stats) = driver
        .run()
        .map_err(|error| Exit::Failure(error.to_string()))?;
    info!(
        "node {node}: {} bytes in, {} bytes out, {} frames in, {} frames out",
        stats.bytes_in, stats.bytes_out, stats.frames_in, stats.frames_out
    );
    if let Some((path, file)) = fold_log {
        write_fold_log(file, &role.folds)
            .map_err(|error| Exit::Failure(format!("--fold-log {path}: {error}")))?;
    }
    match role.result {
        Some(_) => Ok(()),
        None => Err(Exit::Failure("stopped without a result".to_string())),
    }
}

fn write_fold_log(file: std::fs::File, folds: &[gossip::FoldSegment]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(file);
    for fold in folds {
        writeln!(
            out,
            "{} {} {} {}",
            fold.timestamp_us, fold.origin, fold.first_seq, fold.count
        )?;
    }
    out.flush()
}

fn run_ports(args: &[String]) -> Result<(), Exit> {
    if wants_help(args) {
        return Err(Exit::Help(
            "usage: pollen ports N\n\nPrints N distinct free TCP ports on 127.0.0.1, one per line \
             (for scripts that start clusters)."
                .to_string(),
        ));
    }
    let count: usize = match args {
        [count] => count
            .parse()
            .map_err(|_| Exit::Usage(format!("ports: bad count {count:?}")))?,
        _ => return Err(Exit::Usage("usage: pollen ports N".to_string())),
    };
    if count == 0 || count > 1000 {
        return Err(Exit::Usage("ports: N must be 1..=1000".to_string()));
    }
    // Hold all listeners until every port is known, so the N ports are distinct.
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Exit::Failure(format!("cannot bind: {error}")))?;
    for listener in &listeners {
        let port = listener
            .local_addr()
            .map_err(|e| Exit::Failure(e.to_string()))?
            .port();
        outln!("{port}");
    }
    Ok(())
}

/// One simulated run's outcome, whatever the role.
struct SimOutcome {
    failure: Option<String>,
    deliveries: u64,
    line: Option<String>,
    faults: usize,
    trace: Option<String>,
}

fn run_sim(args: &[String]) -> Result<(), Exit> {
    use crate::sim::{faults::Kinds, gossip as sim_gossip, ring as sim_ring};
    let mut options = Options::new();
    common_options(&mut options);
    options.optopt("", "nodes", "gossip nodes / ring workers (default 4)", "N");
    options.optopt("", "seed", "first simulation seed (default 0)", "S");
    options.optopt(
        "",
        "seeds",
        "number of seeds to run, S, S+1, ... (default 1)",
        "K",
    );
    options.optopt(
        "",
        "faults",
        "none|links|partitions|crashes|all (default all)",
        "KIND",
    );
    options.optopt("", "send-for", "virtual seconds of sending", "SECS");
    options.optopt(
        "",
        "wait-for",
        "virtual seconds of settling (ring: grace)",
        "SECS",
    );
    options.optopt(
        "",
        "with-seed",
        "gossip: the role's own seed (default: the seed)",
        "N",
    );
    options.optopt(
        "",
        "batch",
        "gossip: messages per batch (default 16/64/256 by seed)",
        "N",
    );
    options.optopt(
        "",
        "start-spread",
        "gossip: nodes start at offsets drawn from 0..=SECS (default 0)",
        "SECS",
    );
    options.optopt(
        "",
        "window",
        "ring: values in flight (default 1/4/16 by seed)",
        "W",
    );
    options.optflag(
        "",
        "draw-phases",
        "ring: each seed draws its send and grace phases (1 µs to seconds)",
    );
    options.optflag("", "trace", "print every delivery, timer and fault");
    options.optopt(
        "",
        "log-dir",
        "lamport: write each seed's logs to DIR/seed-S/",
        "DIR",
    );
    options.optopt(
        "",
        "rate-range",
        "lamport: ticks per second range (default 1-6)",
        "MIN-MAX",
    );
    options.optopt("", "internal-max", "lamport: draw 1..=K (default 10)", "K");
    options.optopt(
        "",
        "fsync",
        "kv: workers log to simulated disks with this policy (always|everysec|no)",
        "POLICY",
    );
    options.optflag(
        "",
        "heavy",
        "kv: 4 KiB values, 64 keys per client, slow links (backpressure)",
    );
    let brief = "usage: pollen sim gossip|ring|kv|lamport [--nodes N] [--seed S] [--seeds K]
                      [--faults none|links|partitions|crashes|all]
                      [--send-for SECS] [--wait-for SECS] [--trace] [-v | -q]
                      [gossip: --with-seed N --batch N --start-spread SECS]
                      [ring: --window W --draw-phases] [kv: --fsync POLICY --heavy]
                      [lamport: --log-dir DIR --rate-range MIN-MAX --internal-max K]";
    let (role, rest) = match args.split_first() {
        Some((role, rest)) if !role.starts_with('-') => (role.as_str(), rest),
        _ => {
            parse(&options, args, brief)?;
            return Err(Exit::Usage(
                "sim: missing ROLE (gossip|ring|kv|lamport)".to_string(),
            ));
        }
    };
    let matches = parse(&options, rest, brief)?;
    let nodes: usize = number(&matches, "nodes", 4)?;
    if !(2..=64).contains(&nodes) {
        return Err(Exit::Usage("--nodes must be 2..=64".to_string()));
    }
    let first: u64 = number(&matches, "seed", 0)?;
    let seeds: u64 = number(&matches, "seeds", 1)?;
    let kinds: Kinds = matches
        .opt_str("faults")
        .unwrap_or("all".to_string())
        .parse()
        .map_err(Exit::Usage)?;
    let trace = matches.opt_present("trace");
    let send_for = matches
        .opt_present("send-for")
        .then(|| seconds(&matches, "send-for"));
    let send_for = send_for.transpose()?;
    let wait_for = matches
        .opt_present("wait-for")
        .then(|| seconds(&matches, "wait-for"));
    let wait_for = wait_for.transpose()?;
    let run_one: Box<dyn Fn(u64) -> SimOutcome> = match role {
        "gossip" => {
            let batch = matches
                .opt_present("batch")
                .then(|| batch_values(&matches, 0));
            let batch = batch.transpose()?;
            let role_seed = matches
                .opt_present("with-seed")
                .then(|| number(&matches, "with-seed", 0));
            let role_seed: Option<u64> = role_seed.transpose()?;
            let spread = matches
                .opt_present("start-spread")
                .then(|| seconds(&matches, "start-spread"));
            let spread = spread.transpose()?.unwrap_or(0);
            Box::new(move |seed| {
                let mut options = sim_gossip::Options::new(nodes, seed, kinds);
                options.send_for_us = send_for.unwrap_or(options.send_for_us);
                options.wait_for_us = wait_for.unwrap_or(options.wait_for_us);
                options.role_seed = role_seed.unwrap_or(seed);
                options.batch_values = batch.unwrap_or(options.batch_values);
                options.start_spread_us = spread;
                options.trace = trace;
                let report = sim_gossip::run(&options);
                SimOutcome {
                    failure: report.failure,
                    deliveries: report.stats.deliveries,
                    line: report.lines.into_iter().flatten().next(),
                    faults: report.faults.len(),
                    trace: report.trace,
                }
            })
        }
        "ring" => {
            let window = matches
                .opt_present("window")
                .then(|| number(&matches, "window", 1));
            let window: Option<u64> = window.transpose()?;
            if window.is_some_and(|w| !(1..=ring::WINDOW_MAX).contains(&w)) {
                return Err(Exit::Usage("--window must be 1..=1024".to_string()));
            }
            let draw_phases = matches.opt_present("draw-phases");
            Box::new(move |seed| {
                let mut options = sim_ring::Options::new(nodes, seed, kinds);
                if draw_phases {
                    options = options.with_drawn_phases();
                }
                options.send_us = send_for.unwrap_or(options.send_us);
                options.grace_us = wait_for.unwrap_or(options.grace_us);
                options.window = window.unwrap_or(options.window);
                options.trace = trace;
                let report = sim_ring::run(&options);
                SimOutcome {
                    failure: report.failure,
                    deliveries: report.stats.deliveries,
                    line: report.lines.into_iter().flatten().next(),
                    faults: report.faults.len(),
                    trace: report.trace,
                }
            })
        }
        "lamport" => {
            let log_dir = matches.opt_str("log-dir");
            let duration = send_for.unwrap_or(60_000_000);
            let range = matches.opt_str("rate-range").unwrap_or("1-6".to_string());
            let (rate_min, rate_max) = range
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
                .filter(|&(a, b)| a >= 1 && a <= b && b <= 1000)
                .ok_or_else(|| Exit::Usage(format!("--rate-range: bad {range:?}")))?;
            let internal_max: u32 = number(&matches, "internal-max", 10)?;
            if internal_max < 3 {
                return Err(Exit::Usage("--internal-max must be at least 3".to_string()));
            }
            Box::new(move |seed| {
                let mut options = crate::sim::lamport::Options::new(nodes, seed);
                options.duration_us = duration;
                options.rate_min = rate_min;
                options.rate_max = rate_max;
                options.internal_max = internal_max;
                options.trace = trace;
                let report = crate::sim::lamport::run(&options);
                if let Some(dir) = &log_dir {
                    let dir = std::path::Path::new(dir).join(format!("seed-{seed}"));
                    if let Err(error) = crate::sim::lamport::write_logs(&report.logs, &dir) {
                        eprintln!("pollen: {}: {error}", dir.display());
                    }
                }
                let events: usize = report.logs.iter().map(|l| l.len().saturating_sub(1)).sum();
                SimOutcome {
                    failure: report.failure,
                    deliveries: report.stats.deliveries,
                    line: Some(format!("{events} events")),
                    faults: 0,
                    trace: report.trace,
                }
            })
        }
        "kv" => {
            let fsync = match matches.opt_str("fsync") {
                None => None,
                Some(text) => Some(crate::journal::Fsync::parse(&text).ok_or_else(|| {
                    Exit::Usage(format!("--fsync {text:?}: expected always, everysec or no"))
                })?),
            };
            let heavy = matches.opt_present("heavy");
            Box::new(move |seed| {
                let mut options = crate::sim::kv::Options::new(nodes, seed, kinds);
                if heavy {
                    options = options.heavy();
                }
                options.load_us = send_for.unwrap_or(options.load_us);
                options.trace = trace;
                options.fsync = fsync;
                let report = crate::sim::kv::run(&options);
                SimOutcome {
                    failure: report.failure,
                    deliveries: report.stats.deliveries,
                    line: Some(format!(
                        "{} acknowledged writes, {} read repairs, {} torn log tails, {} batches \
                         queued, {} credit waits, {} suspicions, {} evictions",
                        report.writes,
                        report.read_repairs,
                        report.torn_tails,
                        report.queued_batches,
                        report.credit_waits,
                        report.suspicions,
                        report.evictions
                    )),
                    faults: report.faults.len(),
                    trace: report.trace,
                }
            })
        }
        other => {
            return Err(Exit::Usage(format!(
                "sim: unknown role {other:?} (gossip|ring|kv|lamport)"
            )));
        }
    };
    let started = std::time::Instant::now();
    let mut deliveries = 0;
    let mut failures = 0;
    for seed in first..first.saturating_add(seeds) {
        let outcome = run_one(seed);
        deliveries += outcome.deliveries;
        if let Some(trace) = &outcome.trace {
            out!("{trace}");
        }
        match &outcome.failure {
            None => outln!(
                "seed {seed}: ok {} ({} deliveries, {} faults)",
                outcome.line.as_deref().unwrap_or("-"),
                outcome.deliveries,
                outcome.faults
            ),
            Some(failure) => {
                failures += 1;
                outln!("seed {seed}: FAILED {failure}");
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    outln!(
        "{seeds} seeds, {failures} failed; {deliveries} deliveries in {elapsed:.2} s \
         ({:.2} M deliveries/s)",
        deliveries as f64 / elapsed / 1e6
    );
    if failures > 0 {
        return Err(Exit::Failure(format!("{failures} of {seeds} seeds failed")));
    }
    Ok(())
}

const RING_BRIEF: &str = "\
usage: pollen ring slave HOST PORT [--peer-config-file FILE] [--tick-duration MS]
                         [--cluster NAME] [--cookie-file FILE] [-v | -q]
       pollen ring master HOST PORT SEND_US GRACE_US SEED [--peer-config-file FILE]
                          [--window W] [--tick-duration MS] [--cluster NAME]
                          [--cookie-file FILE] [-v | -q]

The peers file lists the workers (same formats as gossip; default peers.json). A worker finds
itself in it by HOST:PORT; the master listens on its own HOST:PORT and dials every worker.
SEND_US and GRACE_US are the send and grace phases in microseconds.";

fn run_ring(args: &[String]) -> Result<(), Exit> {
    let mut options = Options::new();
    common_options(&mut options);
    cookie_option(&mut options);
    options.optopt(
        "",
        "peer-config-file",
        "workers' peers file (default peers.json)",
        "FILE",
    );
    options.optopt(
        "",
        "window",
        "values circulating at once, 1..=1024 (default 1)",
        "W",
    );
    options.optopt(
        "",
        "tick-duration",
        "report period in ms (default 10)",
        "MS",
    );
    options.optopt(
        "",
        "cluster",
        "cluster name in the handshake (default pollen-ring)",
        "NAME",
    );
    let matches = parse_with_positionals(&options, args, RING_BRIEF)?;
    let words: Vec<&str> = matches.free.iter().map(String::as_str).collect();
    let (is_master, host, port, timing) = match words.as_slice() {
        ["slave" | "worker", host, port] => (false, *host, *port, None),
        ["master", host, port, send, grace, seed] => {
            (true, *host, *port, Some((*send, *grace, *seed)))
        }
        _ => return Err(Exit::Usage("ring: bad arguments (try --help)".to_string())),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| Exit::Usage(format!("ring: bad port {port:?}")))?;
    let parse_u64 = |name: &str, text: &str| -> Result<u64, Exit> {
        text.parse()
            .map_err(|_| Exit::Usage(format!("ring: bad {name} {text:?}")))
    };
    let (send_us, grace_us, seed) = match timing {
        Some((send, grace, seed)) => (
            parse_u64("SEND_US", send)?,
            parse_u64("GRACE_US", grace)?,
            parse_u64("SEED", seed)?,
        ),
        None => (0, 0, 0),
    };
    let window: u64 = number(&matches, "window", 1)?;
    if !(1..=ring::WINDOW_MAX).contains(&window) {
        return Err(Exit::Usage("--window must be 1..=1024".to_string()));
    }
    let tick_ms: u64 = number(&matches, "tick-duration", 10)?;
    if !(1..=10_000).contains(&tick_ms) {
        return Err(Exit::Usage(
            "--tick-duration must be 1..=10000 ms".to_string(),
        ));
    }
    let peers_path = matches
        .opt_str("peer-config-file")
        .unwrap_or("peers.json".to_string());
    let mut addresses = peers::load(&peers_path).map_err(Exit::Usage)?;
    if addresses.len() > ring::WORKERS_MAX {
        return Err(Exit::Usage(format!(
            "ring: at most {} workers",
            ring::WORKERS_MAX
        )));
    }
    let workers = addresses.len();
    let (node, own) = master_or_worker("ring", &addresses, host, port, is_master)?;
    if is_master && (send_us < 1000 || grace_us < 1000) {
        // cloudy's users think in seconds; a phase shorter than a hop is almost surely that.
        info!(
            "ring: warning: SEND_US {send_us} and GRACE_US {grace_us} are microseconds \
             ({} s of sending, {} s of grace): shorter than a hop around the ring, so few or no \
             values will be agreed; for seconds write e.g. {}000000",
            send_us as f64 / 1e6,
            grace_us as f64 / 1e6,
            send_us.max(1)
        );
    }
    // Workers never dial the master (it has the highest id), so they need not know its address.
    addresses.push(if is_master {
        own
    } else {
        "0.0.0.0:0".parse().expect("valid")
    });
    let config = ring::Config {
        workers,
        seed,
        send_us,
        grace_us,
        window,
        tick_us: tick_ms * 1000,
    };
    let cluster = matches
        .opt_str("cluster")
        .unwrap_or("pollen-ring".to_string());
    let mut net_config = net::Config::peers_only(node, addresses, cluster);
    net_config.cookie = cookie(&matches)?;
    let driver = Driver::new(net_config, Ring::new(config, node))
        .map_err(|error| Exit::Failure(error.to_string()))?;
    if !is_master {
        // A worker is dialled by the master; until then it has nothing to say.
        info!("worker {node}: waiting for a master to connect to {own}");
    }
    let (role, _stats) = driver
        .run()
        .map_err(|error| Exit::Failure(error.to_string()))?;
    match role {
        Ring::Master(master) if master.agreed == Some(false) => {
            Err(Exit::Failure("workers disagree".to_string()))
        }
        _ => Ok(()),
    }
}

/// Like `parse`, but positional words are the caller's to check.
fn parse_with_positionals(
    options: &Options,
    args: &[String],
    brief: &str,
) -> Result<Matches, Exit> {
    if wants_help(args) {
        return Err(Exit::Help(options.usage(brief)));
    }
    // getopts would read a negative number as an option ("Unrecognized option: '1'").
    if let Some(negative) = args
        .iter()
        .find(|arg| arg.len() > 1 && arg.starts_with('-') && arg[1..].parse::<f64>().is_ok())
    {
        return Err(Exit::Usage(format!(
            "{negative}: numbers here are never negative"
        )));
    }
    let matches = options
        .parse(args)
        .map_err(|error| Exit::Usage(error.to_string()))?;
    set_log_level(&matches);
    Ok(matches)
}

const KV_BRIEF: &str = "\
usage: pollen kv slave PORT [-h HOST] [--peer-config-file FILE] [--cluster NAME]  (alias: worker)
                       [--cookie-file FILE]
                       [--data-dir DIR [--fsync always|everysec|no] [--rewrite-min BYTES]]
                       [-v | -q]
       pollen kv master PORT [-h HOST] [--peer-config-file FILE] [--cluster NAME]
                        [--cookie-file FILE] [--replicas N] [--resp-port P] [--no-repl]
                        [--suspect-ms MS] [--evict-ms MS] [-v | -q]

The peers file lists the workers (default peers.json). The master reads commands on stdin
(GET, SET, DEL, KILL, NODES, SHUTDOWN, QUIT, ...) and serves the Redis protocol on --resp-port
(default 7379). A worker with --data-dir logs every write there before acknowledging it and
replays the log when it starts again.";

/// A master/worker role's node id and address: the master is node `workers` (after every
/// worker in the peers file, and must not be one of them); a worker finds itself in the file.
fn master_or_worker(
    role: &str,
    addresses: &[SocketAddr],
    host: &str,
    port: u16,
    is_master: bool,
) -> Result<(NodeId, SocketAddr), Exit> {
    let own = peers::resolve(&format!("{host}:{port}")).map_err(Exit::Usage)?;
    if !is_master {
        let node = peers::find_self(addresses, host, port).map_err(Exit::Usage)?;
        return Ok((node, own));
    }
    if addresses.contains(&own) {
        return Err(Exit::Usage(format!(
            "{role}: the master's {own} is listed as a worker"
        )));
    }
    Ok((addresses.len(), own))
}

fn run_kv(args: &[String]) -> Result<(), Exit> {
    let mut options = Options::new();
    common_options(&mut options);
    cookie_option(&mut options);
    options.optopt("h", "host", "this node's host (default 127.0.0.1)", "HOST");
    options.optopt(
        "",
        "peer-config-file",
        "workers' peers file (default peers.json)",
        "FILE",
    );
    options.optopt("", "replicas", "copies of each key (default 2)", "N");
    options.optopt(
        "",
        "resp-port",
        "port for Redis clients (default 7379)",
        "P",
    );
    options.optflag("", "no-repl", "do not read commands from stdin");
    options.optopt(
        "",
        "data-dir",
        "worker: keep an append-only log of writes here",
        "DIR",
    );
    options.optopt(
        "",
        "fsync",
        "worker: sync the log before every acknowledgement (always), once a second \
         (everysec, the default) or never (no)",
        "POLICY",
    );
    options.optopt(
        "",
        "suspect-ms",
        "master: stop waiting for a worker silent this long (default 1000; workers beat every \
         100 ms)",
        "MS",
    );
    options.optopt(
        "",
        "evict-ms",
        "master: take a worker suspected this long out of the membership (default 10000)",
        "MS",
    );
    options.optopt(
        "",
        "rewrite-min",
        "worker: rewrite the log once it is past this size and twice the live data \
         (default 67108864)",
        "BYTES",
    );
    options.optopt(
        "",
        "cluster",
        "cluster name in the handshake (default pollen-kv)",
        "NAME",
    );
    let matches = parse_with_positionals(&options, args, KV_BRIEF)?;
    let words: Vec<&str> = matches.free.iter().map(String::as_str).collect();
    let (is_master, port) = match words.as_slice() {
        ["slave" | "worker", port] => (false, *port),
        ["master", port] => (true, *port),
        _ => return Err(Exit::Usage("kv: bad arguments (try --help)".to_string())),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| Exit::Usage(format!("kv: bad port {port:?}")))?;
    let host = matches
        .opt_str("h")
        .unwrap_or_else(|| "127.0.0.1".to_string());
    let replicas: usize = number(&matches, "replicas", 2)?;
    if !(1..=crate::roles::kv::placement::REPLICAS_MAX).contains(&replicas) {
        return Err(Exit::Usage("--replicas must be 1..=8".to_string()));
    }
    let resp_port: u16 = number(&matches, "resp-port", 7379)?;
    let fsync = matches.opt_str("fsync").unwrap_or("everysec".to_string());
    let fsync = crate::journal::Fsync::parse(&fsync).ok_or_else(|| {
        Exit::Usage(format!(
            "kv: --fsync {fsync:?}: expected always, everysec or no"
        ))
    })?;
    let rewrite_min: u64 = number(&matches, "rewrite-min", 64 << 20)?;
    let suspect_ms: u64 = number(&matches, "suspect-ms", 1000)?;
    let evict_ms: u64 = number(&matches, "evict-ms", 10_000)?;
    if suspect_ms < 300 || evict_ms < suspect_ms {
        return Err(Exit::Usage(
            "kv: --suspect-ms must be at least 300 (three heartbeats) and --evict-ms at least \
             --suspect-ms"
                .to_string(),
        ));
    }
    let data_dir = matches.opt_str("data-dir");
    if data_dir.is_none() && (matches.opt_present("fsync") || matches.opt_present("rewrite-min")) {
        return Err(Exit::Usage(
            "kv: --fsync and --rewrite-min need --data-dir".to_string(),
        ));
    }
    if is_master && data_dir.is_some() {
        return Err(Exit::Usage(
            "kv: --data-dir is for workers (the master keeps no data)".to_string(),
        ));
    }
    let peers_path = matches
        .opt_str("peer-config-file")
        .unwrap_or("peers.json".to_string());
    let mut addresses = peers::load(&peers_path).map_err(Exit::Usage)?;
    if addresses.len() > 63 {
        return Err(Exit::Usage("kv: at most 63 workers".to_string()));
    }
    let workers = addresses.len();
    let (node, own) = master_or_worker("kv", &addresses, &host, port, is_master)?;
    addresses.push(if is_master {
        own
    } else {
        "0.0.0.0:0".parse().expect("valid")
    });
    let cluster = matches
        .opt_str("cluster")
        .unwrap_or("pollen-kv".to_string());
    let repl = is_master && !matches.opt_present("no-repl");
    let clients = if is_master {
        Some(peers::resolve(&format!("{host}:{resp_port}")).map_err(Exit::Usage)?)
    } else {
        None
    };
    let heartbeat_us = crate::roles::kv::worker::HEARTBEAT_US;
    let mut role =
        crate::roles::kv::Kv::new(node, workers, replicas, repl.then_some(net::REPL_CLIENT))
            .with_failure_detector(heartbeat_us, suspect_ms * 1000, evict_ms * 1000);
    if let Some(dir) = data_dir {
        let journal = crate::journal::file::FileJournal::open(std::path::Path::new(&dir), fsync)
            .map_err(Exit::Failure)?;
        role = role.with_journal(Box::new(journal), rewrite_min);
    }
    // Versions start at the master's start time (µs × 16): a restarted master issues newer
    // versions than the previous one did, unless that one wrote faster than 16 per µs.
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let role = role.with_version_base((since_epoch.as_micros() as u64).saturating_mul(16));
    let config = net::Config {
        node,
        addresses,
        cluster,
        clients,
        repl,
        output: None,
        cookie: cookie(&matches)?,
    };
    let driver = Driver::new(config, role).map_err(|error| Exit::Failure(error.to_string()))?;
    if is_master {
        info!(
            "kv master: {workers} workers, {replicas} replicas, Redis clients on port {resp_port}"
        );
    }
    driver
        .run()
        .map_err(|error| Exit::Failure(error.to_string()))?;
    Ok(())
}

const LAMPORT_BRIEF: &str = "\
usage: pollen lamport [-h HOST] [-p PORT] [--peer-config-file FILE] [--duration SECS]
                      [--rate-range MIN-MAX] [--internal-max K] [--with-seed N] [--log FILE]
                      [--vector] [--shiviz FILE] [--cluster NAME] [--cookie-file FILE]
                      [-v | -q]
       pollen lamport analyze [--plots DIR] [--shiviz FILE] LOG...";

fn run_chaos_proxy(args: &[String]) -> Result<(), Exit> {
    let mut options = Options::new();
    common_options(&mut options);
    options.reqopt(
        "",
        "listen",
        "address to accept on (port 0: any free port)",
        "ADDR",
    );
    options.reqopt("", "to", "address to relay to", "ADDR");
    options.optopt("", "latency-ms", "added one-way delay (default 0)", "N");
    options.optopt(
        "",
        "jitter-ms",
        "random extra delay up to N ms, order kept",
        "N",
    );
    options.optopt(
        "",
        "bandwidth",
        "bytes per second per direction (0: unlimited)",
        "B",
    );
    options.optopt(
        "",
        "cut-after-ms",
        "close every pair after N ms and refuse new ones",
        "N",
    );
    options.optopt("", "reset-every-ms", "close every pair every N ms", "N");
    options.optopt("", "seed", "jitter seed (default 0)", "N");
    let brief = "Usage: pollen chaos-proxy --listen ADDR --to ADDR [--latency-ms N] [--jitter-ms N]
                 [--bandwidth B] [--cut-after-ms N] [--reset-every-ms N] [--seed N] [-v | -q]

A TCP relay that adds latency, jitter, a bandwidth limit and cuts between real processes.
Prints `listening on ADDR` on stdout once bound; runs until killed.";
    let matches = parse(&options, args, brief)?;
    set_log_level(&matches);
    let address = |name: &str| -> Result<SocketAddr, Exit> {
        let text = matches.opt_str(name).unwrap_or_default();
        text.parse()
            .map_err(|_| Exit::Usage(format!("--{name}: not an IP:PORT address: {text:?}")))
    };
    let millis = |name: &str| -> Result<Option<Duration>, Exit> {
        match matches.opt_str(name) {
            None => Ok(None),
            Some(_) => {
                let value: u64 = number(&matches, name, 0)?;
                if value > 3_600_000 {
                    return Err(Exit::Usage(format!("--{name} must be at most 3600000")));
                }
                Ok(Some(Duration::from_millis(value)))
            }
        }
    };
    let config = chaos::Config {
        listen: address("listen")?,
        to: address("to")?,
        latency: millis("latency-ms")?.unwrap_or_default(),
        jitter: millis("jitter-ms")?.unwrap_or_default(),
        bandwidth: number(&matches, "bandwidth", 0)?,
        cut_after: millis("cut-after-ms")?,
        reset_every: millis("reset-every-ms")?.filter(|every| !every.is_zero()),
        seed: number(&matches, "seed", 0)?,
    };
    let proxy = chaos::Proxy::bind(config.clone())
        .map_err(|error| Exit::Failure(format!("cannot listen on {}: {error}", config.listen)))?;
    let bound = proxy
        .local_addr()
        .map_err(|error| Exit::Failure(error.to_string()))?;
    outln!("listening on {bound}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    proxy
        .run()
        .map_err(|error| Exit::Failure(error.to_string()))
}

fn run_lamport(args: &[String]) -> Result<(), Exit> {
    if args.first().map(String::as_str) == Some("analyze") {
        return run_lamport_analyze(&args[1..]);
    }
    let mut options = Options::new();
    common_options(&mut options);
    cookie_option(&mut options);
    options.optopt(
        "h",
        "host",
        "this machine's host (default 127.0.0.1)",
        "HOST",
    );
    options.optopt("p", "port", "this machine's port (default 3000)", "PORT");
    options.optopt(
        "",
        "peer-config-file",
        "peers file (default peers.json)",
        "FILE",
    );
    options.optopt("", "duration", "seconds of ticking (default 60)", "SECS");
    options.optopt(
        "",
        "rate-range",
        "ticks per second, drawn per machine (default 1-6)",
        "MIN-MAX",
    );
    options.optopt(
        "",
        "internal-max",
        "draw 1..=K each idle tick; 4..=K are internal (default 10)",
        "K",
    );
    options.optopt("", "with-seed", "seed of rates and draws (default 0)", "N");
    options.optopt("", "log", "event log (CSV) file (default stdout)", "FILE");
    options.optflag("", "vector", "add vector clocks to the log");
    options.optopt(
        "",
        "shiviz",
        "also write a ShiViz log (implies --vector)",
        "FILE",
    );
    options.optopt(
        "",
        "cluster",
        "cluster name (default pollen-lamport)",
        "NAME",
    );
    let matches = parse(&options, args, LAMPORT_BRIEF)?;
    let host = matches
        .opt_str("h")
        .unwrap_or_else(|| "127.0.0.1".to_string());
    let port: u16 = number(&matches, "p", 3000)?;
    let peers_path = matches
        .opt_str("peer-config-file")
        .unwrap_or("peers.json".to_string());
    let duration_us = if matches.opt_present("duration") {
        seconds(&matches, "duration")?
    } else {
        60_000_000
    };
    let range = matches.opt_str("rate-range").unwrap_or("1-6".to_string());
    let (rate_min, rate_max) = range
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .filter(|&(a, b)| a >= 1 && a <= b && b <= 1000)
        .ok_or_else(|| {
            Exit::Usage(format!(
                "--rate-range: {range:?} is not MIN-MAX with 1 <= MIN <= MAX <= 1000"
            ))
        })?;
    let internal_max: u32 = number(&matches, "internal-max", 10)?;
    if !(3..=1_000_000).contains(&internal_max) {
        return Err(Exit::Usage("--internal-max must be at least 3".to_string()));
    }
    let seed: u64 = number(&matches, "with-seed", 0)?;
    let shiviz = matches.opt_str("shiviz");
    let addresses = peers::load(&peers_path).map_err(Exit::Usage)?;
    let node = peers::find_self(&addresses, &host, port).map_err(Exit::Usage)?;
    let mut config = crate::roles::lamport::Config::new(addresses.len(), seed, duration_us);
    config.rate_min = rate_min;
    config.rate_max = rate_max;
    config.internal_max = internal_max;
    config.vector = matches.opt_present("vector") || shiviz.is_some();
    let output = lamport_sink(matches.opt_str("log"), shiviz)?;
    let cluster = matches
        .opt_str("cluster")
        .unwrap_or("pollen-lamport".to_string());
    let mut net_config = net::Config::peers_only(node, addresses, cluster);
    net_config.output = Some(output);
    net_config.cookie = cookie(&matches)?;
    let role = crate::roles::lamport::Lamport::new(config, node);
    let driver = Driver::new(net_config, role).map_err(|error| Exit::Failure(error.to_string()))?;
    driver
        .run()
        .map_err(|error| Exit::Failure(error.to_string()))?;
    Ok(())
}

/// Event lines to the log (stdout or a file), each flushed at once so that a killed machine's
/// log is readable; with `shiviz`, each event also in ShiViz's form.
fn lamport_sink(log: Option<String>, shiviz: Option<String>) -> Result<net::OutputSink, Exit> {
    use std::io::Write as _;
    let open = |path: &str| {
        std::fs::File::create(path).map_err(|error| Exit::Failure(format!("{path}: {error}")))
    };
    let mut log: Box<dyn std::io::Write + Send> = match log {
        Some(path) => Box::new(open(&path)?),
        None => Box::new(std::io::stdout()),
    };
    let mut shiviz = match shiviz {
        Some(path) => {
            let mut file = open(&path)?;
            writeln!(file, "{}\n", crate::tools::lamport::SHIVIZ_REGEX)
                .map_err(|error| Exit::Failure(format!("{path}: {error}")))?;
            Some(file)
        }
        None => None,
    };
    Ok(Box::new(move |line: &str| {
        let _ = writeln!(log, "{line}");
        let _ = log.flush();
        if let Some(file) = &mut shiviz
            && let Some(event) = crate::tools::lamport::parse_line(line)
            && let Some(text) = crate::tools::lamport::shiviz_event(&event)
        {
            let _ = writeln!(file, "{text}");
            let _ = file.flush();
        }
    }))
}

fn run_lamport_analyze(args: &[String]) -> Result<(), Exit> {
    use crate::tools::lamport;
    let mut options = Options::new();
    common_options(&mut options);
    options.optopt(
        "",
        "plots",
        "write clock.svg, queue.svg, jumps.svg here",
        "DIR",
    );
    options.optopt(
        "",
        "shiviz",
        "merge logs with vector clocks into one ShiViz log",
        "FILE",
    );
    let matches = parse_with_positionals(&options, args, LAMPORT_BRIEF)?;
    if matches.free.is_empty() {
        return Err(Exit::Usage("lamport analyze: no LOG given".to_string()));
    }
    let mut machines = std::collections::BTreeMap::new();
    for path in &matches.free {
        let events = lamport::read_log(std::path::Path::new(path)).map_err(Exit::Usage)?;
        if let Some(first) = events.first() {
            machines
                .entry(first.machine)
                .or_insert_with(Vec::new)
                .extend(events);
        }
    }
    let stats = lamport::analyze(&machines);
    out!("{}", lamport::report(&stats));
    if let Some(dir) = matches.opt_str("plots") {
        lamport::plot(&machines, &stats, std::path::Path::new(&dir)).map_err(Exit::Failure)?;
        info!("plots written to {dir}");
    }
    if let Some(path) = matches.opt_str("shiviz") {
        let mut text = format!("{}\n\n", lamport::SHIVIZ_REGEX);
        for event in machines.values().flatten() {
            let line = lamport::shiviz_event(event).ok_or_else(|| {
                Exit::Usage(
                    "lamport analyze --shiviz: the logs have no vector clocks (--vector)".into(),
                )
            })?;
            text.push_str(&line);
            text.push('\n');
        }
        std::fs::write(&path, text).map_err(|error| Exit::Failure(format!("{path}: {error}")))?;
    }
    Ok(())
}
