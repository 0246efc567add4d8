//! The simulated disk kv workers log to under `--fsync`: it lives with the journal, in
//! `journal::mem` (the kv role's own tests use it too); re-exported here for the simulator.

pub use crate::journal::mem::{Disk, SharedDisk, SimJournal};
