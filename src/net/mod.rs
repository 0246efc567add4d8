//! The real driver: one mio `Poll` loop that runs one `Role` over TCP.
//!
//! Every node listens on its own address and keeps one connection to every other node: the
//! node with the higher id dials (non-blocking connect, retried with exponential backoff, and
//! redialled after a drop); the lower id accepts. Each connection opens with a `Hello` both ways;
//! a mismatch (cluster, protocol, size of the peers list, unexpected id) closes it with a logged
//! reason before any other frame is looked at.
//!
//! The loop (Redis's `aeMain` shape): flush every dirty out buffer with one `write` each, tell
//! roles whose buffers drained, poll, then handle socket events, the ready list, expired timers
//! and due dials. Reads are edge-triggered and drained until `WouldBlock`, but at most
//! `READ_ROUNDS_MAX` buffers per connection per iteration; a connection cut short goes on the
//! ready list and the next poll does not sleep. Roles never write sockets: `Io::send` encodes
//! into the connection's fixed-size out buffer, whose high-water mark is the role's backpressure.
//!
//! Untrusted input: a frame that fails to decode closes that connection only, with its reason
//! logged. No buffer is sized by a peer; all are allocated when a connection is set up and
//! recycled when it closes. Every table and list the loop keeps is sized at start for the most
//! it can hold — the connection table for `connections_max`, the dirty and ready lists for one
//! entry per slot of it, the timer wheel for `TIMERS_CAPACITY` — and asserts that it does not
//! grow.
//!
//! This file holds the configuration, the driver, its loop and its timers. The rest:
//! `connection.rs` a connection from open to close (reads, flushes, close reasons); `mesh.rs`
//! the peers (dialling with backoff, admission of inbound connections, the handshake sweep);
//! `handshake.rs` the hello and cookie exchange (`auth.rs` the cryptography); `clients.rs` the
//! RESP clients; `repl.rs` the REPL on stdin; `io.rs` the `Io` handed to the role; `buffer.rs`
//! and `wheel.rs` the fixed buffers and the timer wheel.

pub mod auth;
mod buffer;
mod clients;
mod connection;
mod handshake;
mod io;
mod mesh;
mod repl;
pub mod wheel;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::info;
use crate::node::{Micros, NodeId, Role, Timer};
use crate::wire::{self, FRAME_BYTES_MAX, Message};
use buffer::Buffer;
use clients::CLIENTS_MAX;
use connection::{Connection, KeyList};
use mesh::{Admission, Peer, UNIDENTIFIED_CONNECTIONS_MAX};
use repl::{REPL_TOKEN, Repl};
use wheel::{TICK_US, TimerWheel};

pub use repl::REPL_CLIENT;

const LISTENER: Token = Token(usize::MAX - 1);
const CLIENT_LISTENER: Token = Token(usize::MAX - 2);
const EVENTS_CAPACITY: usize = 1024;
/// Timers a role may keep armed at once; the wheel asserts it when one is armed. Roles arm a
/// few named timers each and re-arm them as they fire, so this is far above what any needs.
const TIMERS_CAPACITY: usize = 1024;
/// Frames a role may send itself within one handler.
const LOCAL_BYTES: usize = 4 * FRAME_BYTES_MAX;
const DRAIN_ON_STOP_US: Micros = 2_000_000;

/// The connection table's size: a connection per peer (dialled, or accepted and up), the
/// inbound ones still awaiting their handshake, and the RESP clients.
const fn connections_max(nodes: usize) -> usize {
    nodes + UNIDENTIFIED_CONNECTIONS_MAX + CLIENTS_MAX
}

// Connection keys double as poll tokens and client ids: every key must stay below the tokens
// (and the client id) reserved for the listeners and the REPL.
const _: () = assert!(connections_max(wire::NODES_MAX) < REPL_TOKEN.0);
const _: () = assert!(REPL_TOKEN.0 == REPL_CLIENT);
const _: () = assert!(REPL_TOKEN.0 < CLIENT_LISTENER.0 && CLIENT_LISTENER.0 < LISTENER.0);
// A role can always send itself at least one frame of the largest size.
const _: () = assert!(LOCAL_BYTES >= FRAME_BYTES_MAX);

/// Receives each `Io::output` line.
pub type OutputSink = Box<dyn FnMut(&str) + Send>;

pub struct Config {
    pub node: NodeId,
    /// Every node's listening address, indexed by node id.
    pub addresses: Vec<SocketAddr>,
    pub cluster: String,
    /// Serve RESP clients on this address.
    pub clients: Option<SocketAddr>,
    /// Read REPL commands from stdin (replies as text on stdout).
    pub repl: bool,
    /// Where `Io::output` lines go, if not stdout (e.g. an event log file).
    pub output: Option<OutputSink>,
    /// The cluster's shared secret: when set, every peer connection must prove it knows it
    /// (`auth`) before any other frame.
    pub cookie: Option<Vec<u8>>,
}

impl Config {
    pub fn peers_only(node: NodeId, addresses: Vec<SocketAddr>, cluster: String) -> Config {
        Config {
            node,
            addresses,
            cluster,
            clients: None,
            repl: false,
            output: None,
            cookie: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub frames_in: u64,
    pub frames_out: u64,
}

/// Everything a role may touch through `Io`; the driver owns it beside the role.
struct NetIo {
    node: NodeId,
    cluster: Vec<u8>,
    cookie: Option<Vec<u8>>,
    admission: Admission,
    start: Instant,
    epoch_us: Micros,
    now_us: Micros,
    poll: Poll,
    listener: TcpListener,
    client_listener: Option<TcpListener>,
    /// RESP clients connected, at most `CLIENTS_MAX`.
    clients: usize,
    repl: Option<Repl>,
    sink: Option<OutputSink>,
    /// Scratch: argument spans of the command being handed to the role.
    spans: Vec<(u32, u32)>,
    connections: Slab<Connection>,
    peers: Vec<Peer>,
    /// Connections with output to write before the next poll.
    dirty: KeyList,
    /// Connections with input to handle or read that no readiness event will announce.
    ready: KeyList,
    wheel: TimerWheel,
    fired: Vec<Timer>,
    /// Frames a role sent to itself, delivered after its handler returns.
    local: Buffer,
    writable_due: Vec<NodeId>,
    spare_buffers: Vec<(Buffer, Buffer)>,
    next_sweep_us: Micros,
    stopping: bool,
    stats: Stats,
}

pub struct Driver<R: Role> {
    role: R,
    io: NetIo,
    events: Events,
    /// Scratch copy of one poll's events, so handlers may borrow the driver mutably.
    pending: Vec<(Token, bool, bool)>,
    local_spare: Buffer,
}

impl<R: Role> Driver<R> {
    pub fn new(config: Config, role: R) -> std::io::Result<Driver<R>> {
        Ok(Driver {
            role,
            io: NetIo::new(config)?,
            events: Events::with_capacity(EVENTS_CAPACITY),
            pending: Vec::with_capacity(EVENTS_CAPACITY),
            local_spare: Buffer::with_capacity(LOCAL_BYTES),
        })
    }

    pub fn local_address(&self) -> std::io::Result<SocketAddr> {
        self.io.listener.local_addr()
    }

    /// Where Redis clients connect, if this node serves them (port 0 resolved).
    pub fn client_address(&self) -> Option<SocketAddr> {
        let listener = self.io.client_listener.as_ref()?;
        listener.local_addr().ok()
    }

    /// Runs until the role calls `stop`, then flushes what it queued. Returns the role (for its
    /// results and statistics) and the driver's byte counts.
    pub fn run(mut self) -> std::io::Result<(R, Stats)> {
        self.io.update_now();
        self.role.on_start(&mut self.io);
        self.deliver_local();
        self.handle_repl();
        while !self.io.stopping {
            self.role.on_flush(&mut self.io);
            self.deliver_local();
            self.flush_dirty();
            self.notify_writable();
            let timeout = self.poll_timeout();
            if let Err(error) = self.io.poll.poll(&mut self.events, timeout)
                && error.kind() != std::io::ErrorKind::Interrupted
            {
                return Err(error);
            }
            self.io.update_now();
            self.handle_events();
            self.handle_ready_list();
            self.expire_timers();
            self.dial_due_peers();
            self.sweep_stalled_handshakes();
        }
        self.drain_output();
        Ok((self.role, self.io.stats))
    }

    fn poll_timeout(&mut self) -> Option<Duration> {
        if !self.io.dirty.is_empty() || !self.io.ready.is_empty() || !self.io.local.is_empty() {
            return Some(Duration::ZERO);
        }
        let elapsed_us = self.io.now_us - self.io.epoch_us;
        let timer_us = self.io.wheel.next_deadline().map(|tick| tick * TICK_US);
        let dial_us = self.next_dial_us().map(|at| at - self.io.epoch_us);
        let handshaking = self.io.connections.len() > self.io.peers_up();
        let sweep_us = handshaking.then_some(self.io.next_sweep_us - self.io.epoch_us);
        [timer_us, dial_us, sweep_us]
            .into_iter()
            .flatten()
            .min()
            .map(|at_us| Duration::from_micros(at_us.saturating_sub(elapsed_us)))
    }

    fn handle_events(&mut self) {
        self.pending.clear();
        for event in self.events.iter() {
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            let writable = event.is_writable() || event.is_write_closed() || event.is_error();
            self.pending.push((event.token(), readable, writable));
        }
        for index in 0..self.pending.len() {
            let (token, readable, writable) = self.pending[index];
            if token == LISTENER {
                self.accept_all();
            } else if token == CLIENT_LISTENER {
                self.accept_clients();
            } else if token == REPL_TOKEN {
                self.read_repl();
            } else {
                self.connection_event(token.0, readable, writable);
            }
        }
    }

    /// Each connection on the ready list when this step starts is handled once; one that is
    /// cut short again goes back on the list and waits for the next iteration.
    fn handle_ready_list(&mut self) {
        for _ in 0..self.io.ready.len() {
            let key = self.io.ready.pop_front().expect("counted above");
            if self.io.connections.contains(key) {
                if let Err(reason) = self.handle_input(key) {
                    self.close(key, reason);
                    continue;
                }
                self.read(key);
            }
        }
    }

    fn expire_timers(&mut self) {
        let tick = (self.io.now_us - self.io.epoch_us) / TICK_US;
        let mut fired = std::mem::take(&mut self.io.fired);
        // Every armed timer may fire at once; the list holds them all without growing.
        assert!(fired.is_empty());
        assert!(fired.capacity() >= self.io.wheel.len());
        self.io.wheel.expire(tick, &mut fired);
        for &timer in &fired {
            self.role.on_timer(&mut self.io, timer);
            self.deliver_local();
        }
        fired.clear();
        self.io.fired = fired;
    }

    /// One `write` per dirty connection: everything queued since the last poll goes together.
    fn flush_dirty(&mut self) {
        self.io.flush_repl();
        let mut index = 0;
        while index < self.io.dirty.len() {
            let key = self.io.dirty.get(index);
            match self.io.flush(key) {
                Ok(true) => index += 1,
                Ok(false) => {
                    self.io.dirty.swap_remove(index);
                    let done = self.io.connections.get(key).is_some_and(|connection| {
                        connection.close_after_flush && connection.output.is_empty()
                    });
                    if done {
                        self.close(key, connection::CloseReason::LastReplyWritten);
                    }
                }
                Err(error) => {
                    self.io.dirty.swap_remove(index);
                    self.close(key, connection::CloseReason::Io(error));
                }
            }
        }
    }

    fn notify_writable(&mut self) {
        while let Some(peer) = self.io.writable_due.pop() {
            self.role.on_writable(&mut self.io, peer);
            self.deliver_local();
        }
    }

    /// Delivers the frames the role sent to itself, after the handler that sent them
    /// returned: those queued so far. What their handlers send to themselves waits for
    /// the next loop iteration (the poll then does not block), so a node that keeps messaging
    /// itself — a ring of one — still reads its sockets and fires its timers.
    fn deliver_local(&mut self) {
        if !self.io.local.is_empty() {
            std::mem::swap(&mut self.io.local, &mut self.local_spare);
            let mut at = 0;
            let node = self.io.node;
            while let Ok(Some(length)) = wire::frame_len(&self.local_spare.data()[at..]) {
                let frame = &self.local_spare.data()[at..at + length];
                let message = Message::decode(frame).expect("our own frames decode");
                self.role.on_message(&mut self.io, node, message);
                at += length;
            }
            assert_eq!(at, self.local_spare.len(), "local frames are whole");
            self.local_spare.clear();
        }
    }

    /// After `stop`: keep flushing until every out buffer is empty or the time is up.
    fn drain_output(&mut self) {
        let deadline = self.io.now_us + DRAIN_ON_STOP_US;
        loop {
            for (key, connection) in self.io.connections.iter() {
                if !connection.output.is_empty() {
                    self.io.dirty.push(key);
                }
            }
            self.flush_dirty();
            if self.io.dirty.is_empty() || self.io.now_us >= deadline {
                return;
            }
            let _ = self
                .io
                .poll
                .poll(&mut self.events, Some(Duration::from_millis(10)));
            self.io.update_now();
        }
    }
}

impl NetIo {
    fn new(config: Config) -> std::io::Result<NetIo> {
        let nodes = config.addresses.len();
        assert!(config.node < nodes);
        assert!(nodes <= wire::NODES_MAX);
        let poll = Poll::new()?;
        let (listener, client_listener) = listen(&poll, &config)?;
        let repl = if config.repl {
            Some(repl::open(&poll)?)
        } else {
            None
        };
        let peers = mesh::peers(config.node, &config.addresses);
        let epoch_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros()) as Micros;
        let connections = Slab::with_capacity(connections_max(nodes));
        // The slab may round its capacity up; the lists follow it, and so does the bound on keys.
        let slots = connections.capacity();
        assert!(slots < REPL_TOKEN.0);
        Ok(NetIo {
            node: config.node,
            cluster: config.cluster.into_bytes(),
            cookie: config.cookie,
            admission: Admission::new(),
            start: Instant::now(),
            epoch_us,
            now_us: epoch_us,
            poll,
            listener,
            client_listener,
            clients: 0,
            repl,
            sink: config.output,
            spans: Vec::with_capacity(wire::client::ARGS_MAX),
            connections,
            peers,
            dirty: KeyList::with_slots(slots),
            ready: KeyList::with_slots(slots),
            wheel: TimerWheel::new(TIMERS_CAPACITY),
            fired: Vec::with_capacity(TIMERS_CAPACITY),
            local: Buffer::with_capacity(LOCAL_BYTES),
            writable_due: Vec::with_capacity(nodes),
            spare_buffers: Vec::new(),
            next_sweep_us: epoch_us + mesh::SWEEP_INTERVAL_US,
            stopping: false,
            stats: Stats::default(),
        })
    }

    fn update_now(&mut self) {
        self.now_us = self.epoch_us + self.start.elapsed().as_micros() as Micros;
    }
}

/// The peer listener, and the client listener if clients are served, both registered.
fn listen(poll: &Poll, config: &Config) -> std::io::Result<(TcpListener, Option<TcpListener>)> {
    let own = config.addresses[config.node];
    if config.cookie.is_none() && !own.ip().is_loopback() {
        info!(
            "warning: listening on {own} without --cookie-file: anyone who can reach it can \
             join the cluster and send it frames"
        );
    }
    let mut listener = bind(own)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let client_listener = match config.clients {
        Some(address) => {
            let mut listener = bind(address)?;
            poll.registry()
                .register(&mut listener, CLIENT_LISTENER, Interest::READABLE)?;
            Some(listener)
        }
        None => None,
    };
    Ok((listener, client_listener))
}

/// A listener on `address`; a failure names the address (a node listens on two ports, and
/// "address in use" must say which).
fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).map_err(|error| {
        std::io::Error::new(error.kind(), format!("cannot listen on {address}: {error}"))
    })
}
