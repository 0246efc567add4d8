//! The roles: pure state machines behind `node::Role`. None of them touches a socket, a clock
//! or a thread; everything arrives through `node::Io`.

pub mod checksum;
pub mod gossip;
pub mod kv;
pub mod lamport;
pub mod ring;

#[cfg(test)]
pub(crate) mod recording;
