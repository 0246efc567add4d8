//! `pollen ring slave|master`: one ring node on the real driver — its positional words, its
//! options and the warning for phases given in seconds by mistake. `--window` is checked here
//! for `pollen sim ring` too.

use getopts::{Matches, Options};

use super::Exit;
use super::args::{self, number};
use crate::info;
use crate::net;
use crate::roles::ring::{self, Ring};

const BRIEF: &str = "\
usage: pollen ring slave HOST PORT [--peer-config-file FILE] [--tick-duration MS]
                         [--cluster NAME] [--cookie-file FILE] [-v | -q]
       pollen ring master HOST PORT SEND_US GRACE_US SEED [--peer-config-file FILE]
                          [--window W] [--tick-duration MS] [--cluster NAME]
                          [--cookie-file FILE] [-v | -q]

The peers file lists the workers (same formats as gossip; default peers.json). A worker finds
itself in it by HOST:PORT; the master listens on its own HOST:PORT and dials every worker.
SEND_US and GRACE_US are the send and grace phases in microseconds.";

/// The options in the order `--help` lists them.
fn options() -> Options {
    let mut options = Options::new();
    args::common_options(&mut options);
    args::cookie_option(&mut options);
    args::peers_option(&mut options, "workers' peers file (default peers.json)");
    options.optopt(
        "",
        "window",
        "values circulating at once, 1..=1024 (default 1)",
        "W",
    );
    args::tick_option(&mut options, "report period in ms (default 10)");
    args::cluster_option(
        &mut options,
        "cluster name in the handshake (default pollen-ring)",
    );
    options
}

/// The positional words: `slave|worker HOST PORT` or `master HOST PORT SEND_US GRACE_US SEED`.
struct Words<'a> {
    is_master: bool,
    host: &'a str,
    port: u16,
    /// The master's phases and seed; zero for a worker, which learns them from the master.
    send_us: u64,
    grace_us: u64,
    seed: u64,
}

fn words(free: &[String]) -> Result<Words<'_>, Exit> {
    let free: Vec<&str> = free.iter().map(String::as_str).collect();
    let (is_master, host, port, timing) = match free.as_slice() {
        ["slave" | "worker", host, port] => (false, *host, *port, None),
        ["master", host, port, send, grace, seed] => {
            (true, *host, *port, Some((*send, *grace, *seed)))
        }
        _ => {
            return Err(Exit::Usage(
                "ring: expected `slave HOST PORT` or `master HOST PORT SEND_US GRACE_US SEED` \
                 (try --help)"
                    .to_string(),
            ));
        }
    };
    let port = args::positional_port("ring", port)?;
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
    Ok(Words {
        is_master,
        host,
        port,
        send_us,
        grace_us,
        seed,
    })
}

pub(super) fn run(args: &[String]) -> Result<(), Exit> {
    let matches = args::parse_with_positionals(&options(), args, BRIEF)?;
    let words = words(&matches.free)?;
    let window = window(&matches)?.unwrap_or(1);
    let tick_us = args::tick_us(&matches)?;
    let cluster = args::cluster(&matches, "pollen-ring")?;
    let members = args::master_and_workers(
        "ring",
        args::peers(&matches)?,
        ring::WORKERS_MAX,
        (words.host, words.port),
        words.is_master,
    )?;
    if words.is_master && (words.send_us < 1000 || words.grace_us < 1000) {
        warn_of_microseconds(words.send_us, words.grace_us);
    }
    let config = ring::Config {
        workers: members.workers,
        seed: words.seed,
        send_us: words.send_us,
        grace_us: words.grace_us,
        window,
        tick_us,
    };
    let node = members.node;
    let mut net_config = net::Config::peers_only(node, members.addresses, cluster);
    net_config.cookie = args::cookie(&matches)?;
    let driver = args::start_driver(net_config, Ring::new(config, node))?;
    if !words.is_master {
        // A worker is dialled by the master; until then it has nothing to say.
        info!(
            "worker {node}: waiting for a master to connect to {}",
            members.own
        );
    }
    let (role, _stats) = args::run_driver(driver)?;
    match role {
        Ring::Master(master) if master.agreed == Some(false) => {
            Err(Exit::Failure("workers disagree".to_string()))
        }
        _ => Ok(()),
    }
}

/// `--window`, if given: values in flight, `1..=WINDOW_MAX`.
pub(super) fn window(matches: &Matches) -> Result<Option<u64>, Exit> {
    if !matches.opt_present("window") {
        return Ok(None);
    }
    let window: u64 = number(matches, "window", 1)?;
    if !(1..=ring::WINDOW_MAX).contains(&window) {
        return Err(Exit::Usage(format!(
            "--window must be 1..={}",
            ring::WINDOW_MAX
        )));
    }
    Ok(Some(window))
}

/// cloudy's users think in seconds; a phase shorter than a hop is almost surely that.
fn warn_of_microseconds(send_us: u64, grace_us: u64) {
    info!(
        "ring: warning: SEND_US {send_us} and GRACE_US {grace_us} are microseconds \
         ({} s of sending, {} s of grace): shorter than a hop around the ring, so few or no \
         values will be agreed; for seconds write e.g. {}000000",
        send_us as f64 / 1e6,
        grace_us as f64 / 1e6,
        send_us.max(1)
    );
}
