//! Logging to stderr. Results go to stdout through `Io::output`; everything else comes here.
//!
//! Two levels are enough for a lab tool: `info!` (always, unless `--quiet`) and `debug!` (`-v`).
//! The level is a process-wide atomic so that roles can log without holding a logger; the
//! simulator lowers it to keep thousands of runs quiet.

use std::sync::atomic::{AtomicU8, Ordering};

pub const LEVEL_QUIET: u8 = 0;
pub const LEVEL_INFO: u8 = 1;
pub const LEVEL_DEBUG: u8 = 2;

static LEVEL: AtomicU8 = AtomicU8::new(LEVEL_INFO);

pub fn set_level(level: u8) {
    LEVEL.store(level, Ordering::Relaxed);
}

pub fn enabled(level: u8) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::LEVEL_INFO) {
            eprintln!($($arg)*);
        }
    };
}

#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::LEVEL_DEBUG) {
            eprintln!($($arg)*);
        }
    };
}
