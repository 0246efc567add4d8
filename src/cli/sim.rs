//! `pollen sim gossip|ring|kv|lamport`: runs a role in the deterministic simulator for a range
//! of seeds and prints one line per seed (and, with `--trace`, everything that happened), then a
//! summary; exit status 1 if any seed failed its checker. The options common to every role are
//! read once; each role's own options build that role's one-seed runner.

use getopts::{Matches, Options};

use super::args::{self, number};
use super::{Exit, gossip, kv, lamport, ring};
use crate::node::Micros;
use crate::sim::faults::Kinds;
use crate::sim::{
    dynamo as sim_dynamo, gossip as sim_gossip, kv as sim_kv, lamport as sim_lamport,
    ring as sim_ring,
};

const BRIEF: &str = "usage: pollen sim gossip|ring|kv|lamport [--nodes N] [--seed S] [--seeds K]
                      [--faults none|links|partitions|crashes|all]
                      [--send-for SECS] [--wait-for SECS] [--trace] [-v | -q]
                      [gossip: --with-seed N --batch N --start-spread SECS]
                      [ring: --window W --draw-phases]
                      [kv: --fsync POLICY --heavy | --masterless --replicas N]
                      [lamport: --log-dir DIR --rate-range MIN-MAX --internal-max K]";

/// The roles the simulator runs, as the error messages list them.
const ROLES: &str = "gossip|ring|kv|lamport";

/// `--send-for` when lamport's is left out: the assignment's minute.
const LAMPORT_DURATION_US_DEFAULT: Micros = 60_000_000;

/// The options in the order `--help` lists them. Longer than the ~70 lines a function should
/// keep to, but a flat list of registrations reads better whole than cut at an arbitrary role.
fn options() -> Options {
    let mut options = Options::new();
    args::common_options(&mut options);
    options.optopt(
        "",
        "nodes",
        "gossip nodes, ring and kv workers, lamport machines (default 4)",
        "N",
    );
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
    options.optopt(
        "",
        "send-for",
        "virtual seconds of sending (kv: of client load; lamport: of the experiment)",
        "SECS",
    );
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
    options.optflag(
        "",
        "masterless",
        "kv: the masterless store (every node coordinates), checked for linearizability",
    );
    options.optopt(
        "",
        "replicas",
        "kv --masterless: copies of each key (default 3, at most the nodes)",
        "N",
    );
    options
}

/// One simulated run's outcome, whatever the role.
struct Outcome {
    failure: Option<String>,
    deliveries: u64,
    line: Option<String>,
    faults: usize,
    trace: Option<String>,
}

/// Runs one seed of the chosen role.
type Runner = Box<dyn Fn(u64) -> Outcome>;

/// What every role's runs take from the command line.
#[derive(Clone, Copy)]
struct Common {
    nodes: usize,
    kinds: Kinds,
    trace: bool,
    send_for: Option<Micros>,
    wait_for: Option<Micros>,
}

pub(super) fn run(args: &[String]) -> Result<(), Exit> {
    let options = options();
    let (role, rest) = match args.split_first() {
        Some((role, rest)) if !role.starts_with('-') => (role.as_str(), rest),
        _ => {
            args::parse(&options, args, BRIEF)?;
            return Err(Exit::Usage(format!("sim: missing ROLE ({ROLES})")));
        }
    };
    let matches = args::parse(&options, rest, BRIEF)?;
    let nodes: usize = number(&matches, "nodes", 4)?;
    // A ring of one worker is a ring (its values go round through itself); the other roles
    // need two nodes to have anything to exchange.
    let nodes_min = if role == "ring" { 1 } else { 2 };
    if !(nodes_min..=64).contains(&nodes) {
        return Err(Exit::Usage(format!("--nodes must be {nodes_min}..=64")));
    }
    role_options_fit(&matches, role)?;
    let first: u64 = number(&matches, "seed", 0)?;
    let seeds: u64 = number(&matches, "seeds", 1)?;
    let kinds: Kinds = matches
        .opt_str("faults")
        .unwrap_or("all".to_string())
        .parse()
        .map_err(Exit::Usage)?;
    let common = Common {
        nodes,
        kinds,
        trace: matches.opt_present("trace"),
        send_for: args::optional_seconds(&matches, "send-for")?,
        wait_for: args::optional_seconds(&matches, "wait-for")?,
    };
    let run_one = match role {
        "gossip" => gossip_runner(&matches, common)?,
        "ring" => ring_runner(&matches, common)?,
        "lamport" => lamport_runner(&matches, common)?,
        "kv" if matches.opt_present("masterless") => masterless_runner(&matches, common)?,
        "kv" => kv_runner(&matches, common)?,
        other => {
            return Err(Exit::Usage(format!(
                "sim: unknown role {other:?} ({ROLES})"
            )));
        }
    };
    run_seeds(first, seeds, &run_one)
}

fn gossip_runner(matches: &Matches, common: Common) -> Result<Runner, Exit> {
    let batch = matches
        .opt_present("batch")
        .then(|| gossip::batch_values(matches, 0))
        .transpose()?;
    let role_seed: Option<u64> = matches
        .opt_present("with-seed")
        .then(|| number(matches, "with-seed", 0))
        .transpose()?;
    let spread = args::optional_seconds(matches, "start-spread")?.unwrap_or(0);
    Ok(Box::new(move |seed| {
        let mut options = sim_gossip::Options::new(common.nodes, seed, common.kinds);
        options.send_for_us = common.send_for.unwrap_or(options.send_for_us);
        options.wait_for_us = common.wait_for.unwrap_or(options.wait_for_us);
        options.role_seed = role_seed.unwrap_or(seed);
        options.batch_values = batch.unwrap_or(options.batch_values);
        options.start_spread_us = spread;
        options.trace = common.trace;
        let report = sim_gossip::run(&options);
        Outcome {
            failure: report.failure,
            deliveries: report.stats.deliveries,
            line: report.lines.into_iter().flatten().next(),
            faults: report.faults.len(),
            trace: report.trace,
        }
    }))
}

fn ring_runner(matches: &Matches, common: Common) -> Result<Runner, Exit> {
    let window = ring::window(matches)?;
    let draw_phases = matches.opt_present("draw-phases");
    Ok(Box::new(move |seed| {
        let mut options = sim_ring::Options::new(common.nodes, seed, common.kinds);
        if draw_phases {
            options = options.with_drawn_phases();
        }
        options.send_us = common.send_for.unwrap_or(options.send_us);
        options.grace_us = common.wait_for.unwrap_or(options.grace_us);
        options.window = window.unwrap_or(options.window);
        options.trace = common.trace;
        let report = sim_ring::run(&options);
        Outcome {
            failure: report.failure,
            deliveries: report.stats.deliveries,
            line: report.lines.into_iter().flatten().next(),
            faults: report.faults.len(),
            trace: report.trace,
        }
    }))
}

/// Lamport's simulation has no faults to inject: `--faults` is ignored, and `--send-for` is
/// the duration.
fn lamport_runner(matches: &Matches, common: Common) -> Result<Runner, Exit> {
    let log_dir = matches.opt_str("log-dir");
    let duration = common.send_for.unwrap_or(LAMPORT_DURATION_US_DEFAULT);
    let (rate_min, rate_max) = lamport::rate_range(matches)?;
    let internal_max = lamport::internal_max(matches)?;
    Ok(Box::new(move |seed| {
        let mut options = sim_lamport::Options::new(common.nodes, seed);
        options.duration_us = duration;
        options.rate_min = rate_min;
        options.rate_max = rate_max;
        options.internal_max = internal_max;
        options.trace = common.trace;
        let report = sim_lamport::run(&options);
        if let Some(dir) = &log_dir {
            let dir = std::path::Path::new(dir).join(format!("seed-{seed}"));
            if let Err(error) = sim_lamport::write_logs(&report.logs, &dir) {
                eprintln!("pollen: {}: {error}", dir.display());
            }
        }
        let events: usize = report.logs.iter().map(|l| l.len().saturating_sub(1)).sum();
        Outcome {
            failure: report.failure,
            deliveries: report.stats.deliveries,
            line: Some(format!("{events} events")),
            faults: 0,
            trace: report.trace,
        }
    }))
}

fn kv_runner(matches: &Matches, common: Common) -> Result<Runner, Exit> {
    let fsync = kv::fsync(matches)?;
    let heavy = matches.opt_present("heavy");
    Ok(Box::new(move |seed| {
        let mut options = sim_kv::Options::new(common.nodes, seed, common.kinds);
        if heavy {
            options = options.heavy();
        }
        options.load_us = common.send_for.unwrap_or(options.load_us);
        options.trace = common.trace;
        options.fsync = fsync;
        let report = sim_kv::run(&options);
        Outcome {
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
    }))
}

fn masterless_runner(matches: &Matches, common: Common) -> Result<Runner, Exit> {
    let fsync = kv::fsync(matches)?;
    if matches.opt_present("heavy") {
        return Err(Exit::Usage(
            "--heavy is for the master-based kv".to_string(),
        ));
    }
    let replicas: usize = number(matches, "replicas", 3.min(common.nodes))?;
    if !(1..=common.nodes.min(8)).contains(&replicas) {
        return Err(Exit::Usage(
            "--replicas must be 1..=min(nodes, 8)".to_string(),
        ));
    }
    Ok(Box::new(move |seed| {
        let mut options = sim_dynamo::Options::new(common.nodes, seed, common.kinds);
        options.replicas = replicas;
        options.load_us = common.send_for.unwrap_or(options.load_us);
        options.trace = common.trace;
        options.fsync = fsync;
        let report = sim_dynamo::run(&options);
        Outcome {
            failure: report.failure,
            deliveries: report.stats.deliveries,
            line: Some(format!(
                "linearizable: {} operations, {} acknowledged writes, {} unknown outcomes, \
                 {} tombstones reclaimed",
                report.operations, report.acknowledged_writes, report.unknown, report.reclaimed
            )),
            faults: report.faults.len(),
            trace: report.trace,
        }
    }))
}

/// Seeds `first..first + seeds`, one line each (after its trace, if any), then the summary.
fn run_seeds(first: u64, seeds: u64, run_one: &Runner) -> Result<(), Exit> {
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

/// The options that only some roles read, and which: given to another role, they would be
/// ignored without a word.
const ROLE_OPTIONS: [(&str, &[&str]); 13] = [
    ("with-seed", &["gossip"]),
    ("batch", &["gossip"]),
    ("start-spread", &["gossip"]),
    ("window", &["ring"]),
    ("draw-phases", &["ring"]),
    ("fsync", &["kv"]),
    ("heavy", &["kv"]),
    ("masterless", &["kv"]),
    ("replicas", &["kv"]),
    ("log-dir", &["lamport"]),
    ("rate-range", &["lamport"]),
    ("internal-max", &["lamport"]),
    ("wait-for", &["gossip", "ring"]),
];

fn role_options_fit(matches: &Matches, role: &str) -> Result<(), Exit> {
    for (option, roles) in ROLE_OPTIONS {
        if matches.opt_present(option) && !roles.contains(&role) {
            return Err(Exit::Usage(format!(
                "--{option} is for sim {} only",
                roles.join("|")
            )));
        }
    }
    if role == "lamport" && matches.opt_present("faults") {
        return Err(Exit::Usage("sim lamport injects no faults".to_string()));
    }
    Ok(())
}
