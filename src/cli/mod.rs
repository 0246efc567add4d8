//! Command line: `pollen SUBCOMMAND [OPTIONS]`. Parses with getopts, builds a role and a driver,
//! runs it. Bad input gets one line on stderr and exit status 2; a runtime failure (cannot
//! listen, ...) gets one line and status 1.
//!
//! This file holds the dispatch, the top-level usage and the exit codes. `args` has the
//! helpers every subcommand shares (one per shared option: peers file, `--cluster`,
//! `--tick-duration`, `--cookie-file`, and the driver's start and run); each subcommand has its
//! own file: `gossip`, `ring`, `kv`, `lamport` (with `lamport analyze`), `sim`, and `tools`
//! (`ports`, `chaos-proxy`).

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

// After the macros: a `macro_rules!` is visible only below its definition.
mod args;
mod gossip;
mod kv;
mod lamport;
mod ring;
mod sim;
mod tools;

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

/// How a subcommand ends when it does not simply succeed; `main` turns it into an exit status.
enum Exit {
    /// Bad usage: one line on stderr, status 2.
    Usage(String),
    /// `--help`: text on stdout, status 0.
    Help(String),
    /// Could not run: one line on stderr, status 1.
    Failure(String),
}

pub fn main(args: &[String]) -> i32 {
    if args.get(1).is_some_and(|word| word == "help") && args.len() > 2 {
        // `pollen help gossip` is `pollen gossip --help`.
        let asked = [args[0].clone(), args[2].clone(), "--help".to_string()];
        return main(&asked);
    }
    let command = args.get(1).map(String::as_str);
    let rest = args.get(2..).unwrap_or(&[]);
    let result = match command {
        Some("gossip") => gossip::run(rest),
        Some("ports") => tools::run_ports(rest),
        Some("sim") => sim::run(rest),
        Some("ring") => ring::run(rest),
        Some("kv") => kv::run(rest),
        Some("lamport") => lamport::run(rest),
        Some("chaos-proxy") => tools::run_chaos_proxy(rest),
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
