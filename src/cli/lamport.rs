//! `pollen lamport`: one machine of the asynchronous scale model on the real driver, its event
//! log (and ShiViz log) written as it goes; and `pollen lamport analyze`, the offline report,
//! plots and merged ShiViz log. `--rate-range` and `--internal-max` are checked here for
//! `pollen sim lamport` too.

use std::collections::BTreeMap;
use std::path::Path;

use getopts::{Matches, Options};

use super::Exit;
use super::args::{self, number};
use crate::info;
use crate::net;
use crate::roles::lamport::{Config, Lamport};
use crate::tools::lamport as tool;

const BRIEF: &str = "\
usage: pollen lamport [-h HOST] [-p PORT] [--peer-config-file FILE] [--duration SECS]
                      [--rate-range MIN-MAX] [--internal-max K] [--with-seed N] [--log FILE]
                      [--vector] [--shiviz FILE] [--cluster NAME] [--cookie-file FILE]
                      [-v | -q]
       pollen lamport analyze [--plots DIR] [--shiviz FILE] LOG...";

/// `--duration` when it is left out: the assignment's minute.
const DURATION_US_DEFAULT: u64 = 60_000_000;
/// `--rate-range`'s bound, in ticks per second.
const RATE_MAX: u32 = 1000;
/// `--internal-max`: a draw of 1, 2 or 3 sends, so at least 3; at most a million.
const INTERNAL_MAX_MIN: u32 = 3;
const INTERNAL_MAX_MAX: u32 = 1_000_000;

/// The options in the order `--help` lists them.
fn options() -> Options {
    let mut options = Options::new();
    args::common_options(&mut options);
    args::cookie_option(&mut options);
    options.optopt(
        "h",
        "host",
        "this machine's host (default 127.0.0.1)",
        "HOST",
    );
    options.optopt("p", "port", "this machine's port (default 3000)", "PORT");
    args::peers_option(&mut options, "peers file (default peers.json)");
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
    // Shorter than the other roles' "cluster name in the handshake (...)": the help text is
    // kept as it is.
    args::cluster_option(&mut options, "cluster name (default pollen-lamport)");
    options
}

pub(super) fn run(args: &[String]) -> Result<(), Exit> {
    if args.first().map(String::as_str) == Some("analyze") {
        return run_analyze(&args[1..]);
    }
    let matches = args::parse(&options(), args, BRIEF)?;
    let (host, port) = args::host_and_port(&matches)?;
    let duration_us = args::optional_seconds(&matches, "duration")?;
    let (rate_min, rate_max) = rate_range(&matches)?;
    let internal_max = internal_max(&matches)?;
    let seed: u64 = number(&matches, "with-seed", 0)?;
    let cluster = args::cluster(&matches, "pollen-lamport")?;
    let addresses = args::peers(&matches)?;
    let node = args::find_self(&addresses, &host, port)?;
    let shiviz = matches.opt_str("shiviz");
    let duration_us = duration_us.unwrap_or(DURATION_US_DEFAULT);
    let mut config = Config::new(addresses.len(), seed, duration_us);
    config.rate_min = rate_min;
    config.rate_max = rate_max;
    config.internal_max = internal_max;
    config.vector = matches.opt_present("vector") || shiviz.is_some();
    let output = sink(matches.opt_str("log"), shiviz)?;
    let mut net_config = net::Config::peers_only(node, addresses, cluster);
    net_config.output = Some(output);
    net_config.cookie = args::cookie(&matches)?;
    let driver = args::start_driver(net_config, Lamport::new(config, node))?;
    args::run_driver(driver)?;
    Ok(())
}

/// `--rate-range MIN-MAX` (default 1-6), `1 <= MIN <= MAX <= RATE_MAX`.
pub(super) fn rate_range(matches: &Matches) -> Result<(u32, u32), Exit> {
    let range = matches.opt_str("rate-range").unwrap_or("1-6".to_string());
    range
        .split_once('-')
        .and_then(|(min, max)| Some((min.parse::<u32>().ok()?, max.parse::<u32>().ok()?)))
        .filter(|&(min, max)| min >= 1 && min <= max && max <= RATE_MAX)
        .ok_or_else(|| {
            Exit::Usage(format!(
                "--rate-range: {range:?} is not MIN-MAX with 1 <= MIN <= MAX <= {RATE_MAX}"
            ))
        })
}

/// `--internal-max K` (default 10).
pub(super) fn internal_max(matches: &Matches) -> Result<u32, Exit> {
    let internal_max: u32 = number(matches, "internal-max", 10)?;
    if !(INTERNAL_MAX_MIN..=INTERNAL_MAX_MAX).contains(&internal_max) {
        return Err(Exit::Usage(format!(
            "--internal-max must be {INTERNAL_MAX_MIN}..={INTERNAL_MAX_MAX}"
        )));
    }
    Ok(internal_max)
}

/// Event lines to the log (stdout or a file), each flushed at once so that a killed machine's
/// log is readable; with `shiviz`, each event also in ShiViz's form.
fn sink(log: Option<String>, shiviz: Option<String>) -> Result<net::OutputSink, Exit> {
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
            writeln!(file, "{}\n", tool::SHIVIZ_REGEX)
                .map_err(|error| Exit::Failure(format!("{path}: {error}")))?;
            Some(file)
        }
        None => None,
    };
    Ok(Box::new(move |line: &str| {
        let _ = writeln!(log, "{line}");
        let _ = log.flush();
        if let Some(file) = &mut shiviz
            && let Some(event) = tool::parse_line(line)
            && let Some(text) = tool::shiviz_event(&event)
        {
            let _ = writeln!(file, "{text}");
            let _ = file.flush();
        }
    }))
}

/// `pollen lamport analyze`'s options, in the order `--help` lists them.
fn analyze_options() -> Options {
    let mut options = Options::new();
    args::common_options(&mut options);
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
    options
}

fn run_analyze(args: &[String]) -> Result<(), Exit> {
    let matches = args::parse_with_positionals(&analyze_options(), args, BRIEF)?;
    if matches.free.is_empty() {
        return Err(Exit::Usage("lamport analyze: no LOG given".to_string()));
    }
    let mut machines = BTreeMap::new();
    for path in &matches.free {
        let events = tool::read_log(Path::new(path)).map_err(Exit::Usage)?;
        if let Some(first) = events.first() {
            machines
                .entry(first.machine)
                .or_insert_with(Vec::new)
                .extend(events);
        }
    }
    let stats = tool::analyze(&machines);
    out!("{}", tool::report(&stats));
    if let Some(dir) = matches.opt_str("plots") {
        tool::plot(&machines, &stats, Path::new(&dir)).map_err(Exit::Failure)?;
        info!("plots written to {dir}");
    }
    if let Some(path) = matches.opt_str("shiviz") {
        write_shiviz(&machines, &path)?;
    }
    Ok(())
}

/// Every machine's events, in one ShiViz log at `path`.
fn write_shiviz(machines: &BTreeMap<usize, Vec<tool::Event>>, path: &str) -> Result<(), Exit> {
    let mut text = format!("{}\n\n", tool::SHIVIZ_REGEX);
    for event in machines.values().flatten() {
        let line = tool::shiviz_event(event).ok_or_else(|| {
            Exit::Usage(
                "lamport analyze --shiviz: the logs have no vector clocks (--vector)".into(),
            )
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|error| Exit::Failure(format!("{path}: {error}")))
}
