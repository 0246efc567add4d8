//! `pollen gossip`: one gossip node on the real driver — its options, its configuration, and
//! the optional fold log written after the run. `--batch` is checked here for `pollen sim
//! gossip` too.

use getopts::{Matches, Options};

use super::Exit;
use super::args::{self, number, seconds};
use crate::info;
use crate::net;
use crate::roles::gossip::{self, Gossip};

const BRIEF: &str = "usage: pollen gossip [-h HOST] [-p PORT] [--peer-config-file FILE] \
                     --send-for SECS --wait-for SECS [--with-seed N] [--tick-duration MS] \
                     [--cluster NAME] [--cookie-file FILE] [--batch N] [--window N] \
                     [--fold-log FILE] [-v | -q]";

/// `--window`'s bounds, in messages.
const WINDOW_MESSAGES_MIN: u64 = 1024;
const WINDOW_MESSAGES_MAX: u64 = 1 << 26;

/// The options in the order `--help` lists them.
fn options() -> Options {
    let mut options = Options::new();
    args::common_options(&mut options);
    args::cookie_option(&mut options);
    options.optopt("h", "host", "this node's host (default 127.0.0.1)", "HOST");
    options.optopt("p", "port", "this node's port (default 3000)", "PORT");
    args::peers_option(&mut options, "peers file (default peers.json)");
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
    args::tick_option(&mut options, "state exchange period in ms (default 10)");
    args::cluster_option(
        &mut options,
        "cluster name in the handshake (default pollen-gossip)",
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
    options
}

pub(super) fn run(args: &[String]) -> Result<(), Exit> {
    let matches = args::parse(&options(), args, BRIEF)?;
    let (host, port) = args::host_and_port(&matches)?;
    let send_for_us = seconds(&matches, "send-for")?;
    let wait_for_us = seconds(&matches, "wait-for")?;
    let seed: u64 = number(&matches, "with-seed", 0)?;
    let tick_us = args::tick_us(&matches)?;
    let cluster = args::cluster(&matches, "pollen-gossip")?;
    let addresses = args::peers(&matches)?;
    let node = args::find_self(&addresses, &host, port)?;
    let mut config = gossip::Config::new(addresses.len(), seed, send_for_us, wait_for_us);
    config.tick_us = tick_us;
    config.batch_values = batch_values(&matches, gossip::BATCH_VALUES_MAX)?;
    config.window_messages = window_messages(&matches)?;
    // Created before the run, so that a bad path fails at once rather than after it.
    let fold_log = fold_log(&matches)?;
    config.record_folds = fold_log.is_some();
    let address = addresses[node];
    let role = Gossip::new(config, node);
    let mut net_config = net::Config::peers_only(node, addresses, cluster);
    net_config.cookie = args::cookie(&matches)?;
    let driver = args::start_driver(net_config, role)?;
    info!("node {node}: listening on {address}");
    let (role, stats) = args::run_driver(driver)?;
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

/// `--batch`: an even number of messages, at most `BATCH_VALUES_MAX`.
pub(super) fn batch_values(matches: &Matches, default: usize) -> Result<usize, Exit> {
    let batch = number(matches, "batch", default)?;
    if !(2..=gossip::BATCH_VALUES_MAX).contains(&batch) || !batch.is_multiple_of(2) {
        return Err(Exit::Usage(format!(
            "--batch must be even, 2..={}",
            gossip::BATCH_VALUES_MAX
        )));
    }
    Ok(batch)
}

/// `--window` (default `WINDOW_MESSAGES`).
fn window_messages(matches: &Matches) -> Result<u64, Exit> {
    let window = number(matches, "window", gossip::WINDOW_MESSAGES)?;
    if !(WINDOW_MESSAGES_MIN..=WINDOW_MESSAGES_MAX).contains(&window) {
        return Err(Exit::Usage(format!(
            "--window must be {WINDOW_MESSAGES_MIN}..={WINDOW_MESSAGES_MAX} messages"
        )));
    }
    Ok(window)
}

/// `--fold-log`: the file, created now, and its path for errors.
fn fold_log(matches: &Matches) -> Result<Option<(String, std::fs::File)>, Exit> {
    let Some(path) = matches.opt_str("fold-log") else {
        return Ok(None);
    };
    let file = std::fs::File::create(&path)
        .map_err(|error| Exit::Usage(format!("--fold-log {path}: {error}")))?;
    Ok(Some((path, file)))
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
