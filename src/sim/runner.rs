//! One seed's run, the same for every role: quiet the role's logging, simulate, and turn a
//! panic inside the run (a role's broken invariant) into a failed report carrying the command
//! that reproduces it, so a sweep over seeds goes on to the next seed. Each role's sim
//! (gossip.rs, ring.rs, kv.rs, lamport.rs) supplies only its `simulate` and `command`:
//!
//! ```text
//! pub fn run(options: &Options) -> Report {
//!     runner::run_seed(|| simulate(options), || options.command())
//! }
//! ```

use super::faults::Fault;
use crate::node::Micros;

/// A role's report for one seed.
pub trait SeedReport {
    /// The report of a run that panicked: only its failure is known.
    fn failed(failure: String) -> Self;
}

/// Runs one seed: `simulate` with logging quiet (a sweep's seeds would bury their verdicts),
/// a panic reported as a failure with `command`.
pub fn run_seed<R: SeedReport>(
    simulate: impl FnOnce() -> R,
    command: impl FnOnce() -> String,
) -> R {
    let quiet = || {
        crate::log::set_level(crate::log::LEVEL_QUIET);
        simulate()
    };
    catch_panic(quiet, command).unwrap_or_else(R::failed)
}

/// Runs one simulation, turning a panic in a role (a broken invariant) into a failure text
/// with the command that reproduces it.
pub fn catch_panic<R>(
    simulate: impl FnOnce() -> R,
    command: impl FnOnce() -> String,
) -> Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(simulate)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        format!("panicked: {message}\n  reproduce: {}", command())
    })
}

/// A failed check, as every role reports it: what broke, the seed's faults, and the command
/// that reproduces the run.
pub fn failure(error: &str, faults: &[(Micros, Fault)], command: &str) -> String {
    format!("{error}\n  faults: {faults:?}\n  reproduce: {command}")
}
