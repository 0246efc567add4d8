//! The mesh of peers: one connection to every other node. The node with the higher id dials —
//! a non-blocking connect, retried after a failure or a drop with a backoff that doubles from
//! `DIAL_BACKOFF_MIN_US` to `DIAL_BACKOFF_MAX_US` and resets once the peer is up — and the
//! lower id accepts.
//!
//! Admission keeps the peer port cheap for strangers. At most `ACCEPTS_PER_SECOND_MAX` new
//! connections a second get a slot; the rest are closed at once (a storm costs an accept and a
//! close each, not a handshake) and counted in one log line a second. An accepted connection
//! holds a pair of buffers until it completes its handshake, so at most
//! `UNIDENTIFIED_CONNECTIONS_MAX` of them are kept, in accept order: at the cap the oldest
//! gives way to the newcomer, so idle connections cannot keep out a peer that is dialling. And
//! once a second a sweep closes every connection not up within `HANDSHAKE_TIMEOUT_US`.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;

use mio::net::TcpStream;

use super::connection::{CloseReason, Mode, State};
use super::{Driver, NetIo};
use crate::node::{Micros, NodeId, Role};
use crate::{debug, info};

/// Inbound connections not yet identified may take this many slots beyond one per peer.
pub(super) const UNIDENTIFIED_CONNECTIONS_MAX: usize = 64;
/// New connections accepted on the peer port per second; more are closed at once (a reconnect
/// or connection storm costs an accept and a close each, not a handshake), summarised in one
/// log line per second.
const ACCEPTS_PER_SECOND_MAX: u32 = 256;
const ACCEPT_WINDOW_US: Micros = 1_000_000;
const DIAL_BACKOFF_MIN_US: Micros = 5_000;
/// A peer started late (by hand, seconds after the others) is found within this long; a
/// refused connect on a LAN costs microseconds, so redialling this often is cheap.
const DIAL_BACKOFF_MAX_US: Micros = 100_000;
const HANDSHAKE_TIMEOUT_US: Micros = 5_000_000;
pub(super) const SWEEP_INTERVAL_US: Micros = 1_000_000;

/// The least time an accepted connection keeps its slot: only newer accepts evict it, and at
/// most twice `ACCEPTS_PER_SECOND_MAX` come in within any second (the end of one window and
/// the start of the next).
const EVICTION_AFTER_US_MIN: Micros = UNIDENTIFIED_CONNECTIONS_MAX as Micros * ACCEPT_WINDOW_US
    / (2 * ACCEPTS_PER_SECOND_MAX as Micros);

// A dialling peer completes its handshake in a round trip or two; a tenth of a second is
// plenty on any network it would join, so newer strangers cannot evict it first.
const _: () = assert!(EVICTION_AFTER_US_MIN >= 100_000);
const _: () = assert!(DIAL_BACKOFF_MIN_US <= DIAL_BACKOFF_MAX_US);
// The sweep runs often enough to enforce the timeout within one interval of it.
const _: () = assert!(SWEEP_INTERVAL_US <= HANDSHAKE_TIMEOUT_US);

pub(super) struct Peer {
    address: SocketAddr,
    /// We dial this peer (its id is lower than ours); otherwise it dials us.
    pub(super) dial: bool,
    pub(super) connection: Option<usize>,
    pub(super) up: bool,
    backoff_us: Micros,
    next_dial_us: Micros,
}

/// Every node of the cluster as a peer of `node` (itself included, never dialled).
pub(super) fn peers(node: NodeId, addresses: &[SocketAddr]) -> Vec<Peer> {
    addresses
        .iter()
        .enumerate()
        .map(|(id, &address)| Peer {
            address,
            dial: id < node,
            connection: None,
            up: false,
            backoff_us: DIAL_BACKOFF_MIN_US,
            next_dial_us: 0,
        })
        .collect()
}

/// Admission control on the peer port.
pub(super) struct Admission {
    /// The accept rate limit: the current one-second window, and what it let in and turned away.
    window_us: Micros,
    accepted_in_window: u32,
    refused_in_window: u32,
    /// Accepted connections awaiting their handshake, oldest first: exactly those in the table
    /// with `Mode::Accepted` and `State::Handshaking`, at most `UNIDENTIFIED_CONNECTIONS_MAX`.
    awaiting: VecDeque<usize>,
}

impl Admission {
    pub(super) fn new() -> Admission {
        Admission {
            window_us: 0,
            accepted_in_window: 0,
            refused_in_window: 0,
            awaiting: VecDeque::with_capacity(UNIDENTIFIED_CONNECTIONS_MAX),
        }
    }

    /// Whether the accept rate lets one more connection in now (counted either way).
    fn within_rate(&mut self, node: NodeId, now_us: Micros) -> bool {
        if now_us.saturating_sub(self.window_us) >= ACCEPT_WINDOW_US {
            if self.refused_in_window > 0 {
                info!(
                    "node {node}: refused or evicted {} connections in the last second \
                     (at most {ACCEPTS_PER_SECOND_MAX} new connections per second, \
                     {UNIDENTIFIED_CONNECTIONS_MAX} awaiting their handshake)",
                    self.refused_in_window
                );
            }
            self.window_us = now_us;
            self.accepted_in_window = 0;
            self.refused_in_window = 0;
        }
        if self.accepted_in_window >= ACCEPTS_PER_SECOND_MAX {
            self.refused_in_window += 1;
            return false;
        }
        self.accepted_in_window += 1;
        true
    }

    /// A connection just accepted: the newest awaiting its handshake.
    pub(super) fn awaiting_handshake(&mut self, key: usize) {
        assert!(
            self.awaiting.len() < UNIDENTIFIED_CONNECTIONS_MAX,
            "the oldest awaiting a handshake gives way before another is accepted"
        );
        self.awaiting.push_back(key);
    }

    /// An accepted connection is up, or closed before it was. A linear search, over at most
    /// `UNIDENTIFIED_CONNECTIONS_MAX` keys.
    pub(super) fn handshake_ended(&mut self, key: usize) {
        let index = self.awaiting.iter().position(|&awaiting| awaiting == key);
        let index = index.expect("an accepted connection awaiting its handshake is queued");
        self.awaiting.remove(index);
    }
}

impl<R: Role> Driver<R> {
    /// Accepts every connection waiting on the peer port, as admission allows.
    pub(super) fn accept_all(&mut self) {
        loop {
            match self.io.listener.accept() {
                Ok((stream, address)) => self.admit(stream, address),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // EMFILE and friends: log and try again on the next readiness event.
                    info!("accept failed: {error}");
                    return;
                }
            }
        }
    }

    /// A connection just accepted on the peer port: opened if the accept rate allows (at the
    /// cap of those awaiting a handshake, the oldest is closed to make room), closed if not.
    fn admit(&mut self, stream: TcpStream, address: SocketAddr) {
        let io = &mut self.io;
        if !io.admission.within_rate(io.node, io.now_us) {
            drop(stream);
            return;
        }
        // Each accepted connection holds a pair of buffers until it is identified or times
        // out, so their number is capped, not just their rate. At the cap the oldest gives
        // way: idle connections cannot starve a peer that is dialling (it finishes its
        // handshake in a round trip or two, long before the accept rate lets 64 newer ones in
        // behind it).
        if io.admission.awaiting.len() >= UNIDENTIFIED_CONNECTIONS_MAX
            && let Some(&oldest) = io.admission.awaiting.front()
        {
            io.admission.refused_in_window += 1;
            self.close(oldest, CloseReason::Evicted);
        }
        let io = &mut self.io;
        if io.connections.len() == io.connections.capacity() {
            info!("refusing connection from {address}: connection table full");
            return;
        }
        debug!("accepted connection from {address}");
        if let Err(error) = self.open(stream, Mode::Accepted, None) {
            info!("cannot register connection from {address}: {error}");
        }
    }

    pub(super) fn dial_due_peers(&mut self) {
        for peer in 0..self.io.peers.len() {
            let due = &self.io.peers[peer];
            if !due.dial || due.connection.is_some() || due.next_dial_us > self.io.now_us {
                continue;
            }
            let address = due.address;
            match TcpStream::connect(address) {
                Ok(stream) => match self.open(stream, Mode::Dialled, Some(peer)) {
                    Ok(key) => self.io.peers[peer].connection = Some(key),
                    Err(error) => self.io.dial_failed(peer, &error),
                },
                Err(error) => self.io.dial_failed(peer, &error),
            }
        }
    }

    /// When the next dial is due, if any peer we dial has no connection.
    pub(super) fn next_dial_us(&self) -> Option<Micros> {
        let waiting = self
            .io
            .peers
            .iter()
            .filter(|peer| peer.dial && peer.connection.is_none());
        waiting
            .map(|peer| peer.next_dial_us.max(self.io.now_us))
            .min()
    }

    /// Once a second: a connection that has not completed its handshake in time is closed, so
    /// a silent or stalled stranger cannot hold a slot. This scans the whole table, once a
    /// second; nothing else does.
    pub(super) fn sweep_stalled_handshakes(&mut self) {
        let now_us = self.io.now_us;
        if now_us < self.io.next_sweep_us {
            return;
        }
        self.io.next_sweep_us = now_us + SWEEP_INTERVAL_US;
        for key in 0..self.io.connections.capacity() {
            let stalled = self.io.connections.get(key).is_some_and(|connection| {
                connection.state != State::Up
                    && now_us - connection.opened_us > HANDSHAKE_TIMEOUT_US
            });
            if stalled {
                self.close(key, CloseReason::HandshakeTimeout);
            }
        }
    }
}

impl NetIo {
    pub(super) fn peers_up(&self) -> usize {
        self.peers.iter().filter(|peer| peer.up).count()
    }

    /// The peer is up: after a drop it is redialled after the shortest backoff.
    pub(super) fn reset_backoff(&mut self, peer: NodeId) {
        self.peers[peer].backoff_us = DIAL_BACKOFF_MIN_US;
    }

    pub(super) fn dial_failed(&mut self, peer: NodeId, reason: &dyn fmt::Display) {
        let state = &mut self.peers[peer];
        debug!("node {}: dial to peer {peer} failed: {reason}", self.node);
        state.next_dial_us = self.now_us + state.backoff_us;
        state.backoff_us = (state.backoff_us * 2).min(DIAL_BACKOFF_MAX_US);
    }
}
