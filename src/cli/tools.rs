//! The subcommands that run no role: `pollen ports N` (free loopback ports for scripts) and
//! `pollen chaos-proxy` (a TCP relay that injects latency, jitter, a bandwidth limit and cuts
//! between real processes).

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use getopts::{Matches, Options};

use super::Exit;
use super::args::{self, number};
use crate::chaos;

const PORTS_HELP: &str = "usage: pollen ports N\n\nPrints N distinct free TCP ports on \
                          127.0.0.1, one per line (for scripts that start clusters).";

/// Ports printed at most by one `pollen ports N`.
const PORTS_MAX: usize = 1000;

pub(super) fn run_ports(args: &[String]) -> Result<(), Exit> {
    if args::wants_help(args) {
        return Err(Exit::Help(PORTS_HELP.to_string()));
    }
    let count: usize = match args {
        [count] => count
            .parse()
            .map_err(|_| Exit::Usage(format!("ports: bad count {count:?}")))?,
        _ => return Err(Exit::Usage("usage: pollen ports N".to_string())),
    };
    if count == 0 || count > PORTS_MAX {
        return Err(Exit::Usage(format!("ports: N must be 1..={PORTS_MAX}")));
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

const CHAOS_BRIEF: &str = "\
Usage: pollen chaos-proxy --listen ADDR --to ADDR [--latency-ms N] [--jitter-ms N]
                 [--bandwidth B] [--cut-after-ms N] [--reset-every-ms N] [--seed N] [-v | -q]

A TCP relay that adds latency, jitter, a bandwidth limit and cuts between real processes.
Prints `listening on ADDR` on stdout once bound; runs until killed.";

/// Any delay or period the proxy takes, in ms: an hour.
const CHAOS_MILLIS_MAX: u64 = 3_600_000;

/// `pollen chaos-proxy`'s options, in the order `--help` lists them.
fn chaos_options() -> Options {
    let mut options = Options::new();
    args::common_options(&mut options);
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
    options
}

pub(super) fn run_chaos_proxy(args: &[String]) -> Result<(), Exit> {
    let matches = args::parse(&chaos_options(), args, CHAOS_BRIEF)?;
    let config = chaos::Config {
        listen: address(&matches, "listen")?,
        to: address(&matches, "to")?,
        latency: millis(&matches, "latency-ms")?.unwrap_or_default(),
        jitter: millis(&matches, "jitter-ms")?.unwrap_or_default(),
        bandwidth: number(&matches, "bandwidth", 0)?,
        cut_after: millis(&matches, "cut-after-ms")?,
        reset_every: millis(&matches, "reset-every-ms")?.filter(|every| !every.is_zero()),
        seed: number(&matches, "seed", 0)?,
    };
    // The proxy's bind error does not name the address; this one does.
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

/// A required `IP:PORT` option (getopts has checked it is present).
fn address(matches: &Matches, name: &str) -> Result<SocketAddr, Exit> {
    let text = matches.opt_str(name).unwrap_or_default();
    text.parse()
        .map_err(|_| Exit::Usage(format!("--{name}: not an IP:PORT address: {text:?}")))
}

/// An optional number of milliseconds, at most `CHAOS_MILLIS_MAX`.
fn millis(matches: &Matches, name: &str) -> Result<Option<Duration>, Exit> {
    if !matches.opt_present(name) {
        return Ok(None);
    }
    let value: u64 = number(matches, name, 0)?;
    if value > CHAOS_MILLIS_MAX {
        return Err(Exit::Usage(format!(
            "--{name} must be at most {CHAOS_MILLIS_MAX}"
        )));
    }
    Ok(Some(Duration::from_millis(value)))
}
