//! What the subcommands share: parsing (`--help` first, `-v`/`-q`, numbers and seconds named
//! as typed), and one helper per option that several roles take — the peers file and finding
//! this node in it, `--cluster` with its length check, `--tick-duration`, `--cookie-file` —
//! and starting and running the driver. Every role goes through the same helper, so a limit
//! checked for one role is checked for all: no role can hand the driver a cluster name the
//! handshake cannot carry.

use std::net::SocketAddr;

use getopts::{Matches, Options};

use super::Exit;
use crate::net::{self, Driver, Stats};
use crate::node::{Micros, NodeId, Role};
use crate::wire::CLUSTER_NAME_BYTES_MAX;
use crate::{log, peers};

/// `--help` anywhere wins over every other argument (required options included).
pub(super) fn wants_help(args: &[String]) -> bool {
    args.iter()
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "--help")
}

/// `--help`, `-v` and `-q`, which every subcommand takes, first in every help text.
pub(super) fn common_options(options: &mut Options) {
    options.optflag("", "help", "print this help");
    options.optflag("v", "verbose", "debug logging on stderr");
    options.optflag("q", "quiet", "no logging on stderr");
}

/// Options only: a positional word is an error.
pub(super) fn parse(options: &Options, args: &[String], brief: &str) -> Result<Matches, Exit> {
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

/// Like `parse`, but positional words are the caller's to check.
pub(super) fn parse_with_positionals(
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

fn set_log_level(matches: &Matches) {
    log::set_level(if matches.opt_present("v") {
        log::LEVEL_DEBUG
    } else if matches.opt_present("q") {
        log::LEVEL_QUIET
    } else {
        log::LEVEL_INFO
    });
}

/// The option's value, or `default` when it is absent; an error names the option as typed.
pub(super) fn number<T: std::str::FromStr>(
    matches: &Matches,
    name: &str,
    default: T,
) -> Result<T, Exit> {
    match matches.opt_str(name) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| {
            let dashes = if name.len() == 1 { "-" } else { "--" };
            Exit::Usage(format!("{dashes}{name}: {text:?} is not a valid number"))
        }),
    }
}

/// A required option's seconds (fractions allowed) as microseconds.
pub(super) fn seconds(matches: &Matches, name: &str) -> Result<Micros, Exit> {
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

/// `seconds` for an option that may be left out.
pub(super) fn optional_seconds(matches: &Matches, name: &str) -> Result<Option<Micros>, Exit> {
    matches
        .opt_present(name)
        .then(|| seconds(matches, name))
        .transpose()
}

/// `--peer-config-file`; `help` says whose addresses the file holds.
pub(super) fn peers_option(options: &mut Options, help: &str) {
    options.optopt("", "peer-config-file", help, "FILE");
}

/// The addresses in `--peer-config-file` (default `peers.json`).
pub(super) fn peers(matches: &Matches) -> Result<Vec<SocketAddr>, Exit> {
    let path = matches
        .opt_str("peer-config-file")
        .unwrap_or("peers.json".to_string());
    peers::load(&path).map_err(Exit::Usage)
}

/// `-h HOST` (default 127.0.0.1).
pub(super) fn host(matches: &Matches) -> String {
    matches
        .opt_str("h")
        .unwrap_or_else(|| "127.0.0.1".to_string())
}

/// `-h HOST` and `-p PORT` (default 127.0.0.1:3000): where a peer-to-peer node listens.
pub(super) fn host_and_port(matches: &Matches) -> Result<(String, u16), Exit> {
    let port = number(matches, "p", 3000)?;
    Ok((host(matches), port))
}

/// This node's id: its place in the peers file.
pub(super) fn find_self(addresses: &[SocketAddr], host: &str, port: u16) -> Result<NodeId, Exit> {
    peers::find_self(addresses, host, port).map_err(Exit::Usage)
}

/// A port given as a positional word (`ring slave HOST PORT`, `kv slave PORT`).
pub(super) fn positional_port(role: &str, text: &str) -> Result<u16, Exit> {
    text.parse()
        .map_err(|_| Exit::Usage(format!("{role}: bad port {text:?}")))
}

/// A master/worker cluster (ring, kv) as the driver sees it.
pub(super) struct Members {
    pub node: NodeId,
    /// This node's own listening address.
    pub own: SocketAddr,
    pub workers: usize,
    /// The workers from the peers file, then the master.
    pub addresses: Vec<SocketAddr>,
}

/// The master is node `workers` (after every worker in the peers file, and must not be one of
/// them); a worker finds itself in the file.
pub(super) fn master_and_workers(
    role: &str,
    mut addresses: Vec<SocketAddr>,
    workers_max: usize,
    (host, port): (&str, u16),
    is_master: bool,
) -> Result<Members, Exit> {
    if addresses.len() > workers_max {
        return Err(Exit::Usage(format!(
            "{role}: at most {workers_max} workers"
        )));
    }
    let workers = addresses.len();
    let own = peers::resolve(&format!("{host}:{port}")).map_err(Exit::Usage)?;
    let node = if is_master {
        if addresses.contains(&own) {
            return Err(Exit::Usage(format!(
                "{role}: the master's {own} is listed as a worker"
            )));
        }
        workers
    } else {
        find_self(&addresses, host, port)?
    };
    // Workers never dial the master (it has the highest id), so they need not know its address.
    addresses.push(if is_master {
        own
    } else {
        "0.0.0.0:0".parse().expect("valid")
    });
    Ok(Members {
        node,
        own,
        workers,
        addresses,
    })
}

/// `--cluster`; `help` names the role's default.
pub(super) fn cluster_option(options: &mut Options, help: &str) {
    options.optopt("", "cluster", help, "NAME");
}

/// `--cluster`, or the role's `default`. Checked here because the handshake's encoder asserts
/// the limit (a longer name would panic the node at its first connection).
pub(super) fn cluster(matches: &Matches, default: &str) -> Result<String, Exit> {
    let cluster = matches.opt_str("cluster").unwrap_or(default.to_string());
    if cluster.len() > CLUSTER_NAME_BYTES_MAX {
        return Err(Exit::Usage("--cluster: name too long".to_string()));
    }
    Ok(cluster)
}

/// `--tick-duration`; `help` says what the role does each tick.
pub(super) fn tick_option(options: &mut Options, help: &str) {
    options.optopt("", "tick-duration", help, "MS");
}

/// `--tick-duration` (default 10 ms) in microseconds.
pub(super) fn tick_us(matches: &Matches) -> Result<Micros, Exit> {
    let tick_ms: u64 = number(matches, "tick-duration", 10)?;
    if !(1..=10_000).contains(&tick_ms) {
        return Err(Exit::Usage(
            "--tick-duration must be 1..=10000 ms".to_string(),
        ));
    }
    Ok(tick_ms * 1000)
}

/// `--cookie-file` for the roles that talk to peers.
pub(super) fn cookie_option(options: &mut Options) {
    options.optopt(
        "",
        "cookie-file",
        "the cluster's shared secret; peers must prove they know it (or POLLEN_COOKIE_FILE)",
        "FILE",
    );
}

/// The cookie from `--cookie-file` or `POLLEN_COOKIE_FILE`, trimmed of surrounding whitespace.
pub(super) fn cookie(matches: &Matches) -> Result<Option<Vec<u8>>, Exit> {
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

/// Binds the listener; the driver's error names the address it could not listen on.
pub(super) fn start_driver<R: Role>(config: net::Config, role: R) -> Result<Driver<R>, Exit> {
    Driver::new(config, role).map_err(|error| Exit::Failure(error.to_string()))
}

/// Runs the loop until the role stops; returns the role, for its result, and the traffic.
pub(super) fn run_driver<R: Role>(driver: Driver<R>) -> Result<(R, Stats), Exit> {
    driver
        .run()
        .map_err(|error| Exit::Failure(error.to_string()))
}
