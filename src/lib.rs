//! pollen: four classic distributed systems on one single-threaded mio event loop.
//!
//! Layers, dependencies pointing down: `cli` parses arguments and picks a role and a driver;
//! `roles` are pure state machines; `node` is the boundary they are written against; `net` is
//! the real driver (mio, TCP, a timer wheel); `wire` is the frame codec.

pub mod log;

pub mod chaos;
pub mod cli;
pub mod journal;
pub mod net;
pub mod node;
pub mod peers;
pub mod roles;
pub mod sim;
pub mod tools;
pub mod wire;
