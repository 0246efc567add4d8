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
//! recycled when it closes.

pub mod auth;
mod buffer;
pub mod wheel;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream};
use mio::unix::pipe;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::node::{ClientId, Io, Micros, NodeId, Role, Timer, TimerKey};
use crate::wire::auth::{AuthChallenge, AuthProof};
use crate::wire::client::{self, Command, LINE_BYTES_MAX, Reply};
use crate::wire::{self, FRAME_BYTES_MAX, Hello, Message, PROTOCOL_VERSION};
use crate::{debug, info};
use buffer::Buffer;
use wheel::{TICK_US, TimerWheel};

const LISTENER: Token = Token(usize::MAX - 1);
const CLIENT_LISTENER: Token = Token(usize::MAX - 2);
const REPL_TOKEN: Token = Token(usize::MAX - 3);
/// The client id of the REPL on stdin.
pub const REPL_CLIENT: ClientId = usize::MAX - 3;
/// RESP clients beyond the peers.
const CLIENTS_MAX: usize = 1024;
/// Largest stdin read as a regular file (REPL script).
const REPL_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;
const EVENTS_CAPACITY: usize = 1024;
/// Inbound connections not yet identified may take this many slots beyond one per peer.
const UNIDENTIFIED_CONNECTIONS_MAX: usize = 64;
/// New connections accepted on the peer port per second; more are closed at once (a reconnect
/// or connection storm costs an accept and a close each, not a handshake), summarised in one
/// log line per second.
const ACCEPTS_PER_SECOND_MAX: u32 = 256;
const INPUT_BYTES: usize = 2 * FRAME_BYTES_MAX;
const OUTPUT_HIGH_WATER: usize = FRAME_BYTES_MAX;
const OUTPUT_LOW_WATER: usize = OUTPUT_HIGH_WATER / 4;
/// Room for one more maximal frame above the high-water mark.
const OUTPUT_BYTES: usize = OUTPUT_HIGH_WATER + FRAME_BYTES_MAX;
const LOCAL_BYTES: usize = 4 * FRAME_BYTES_MAX;
const READ_ROUNDS_MAX: usize = 4;
const DIAL_BACKOFF_MIN_US: Micros = 5_000;
/// A peer started late (by hand, seconds after the others) is found within this long; a
/// refused connect on a LAN costs microseconds, so redialling this often is cheap.
const DIAL_BACKOFF_MAX_US: Micros = 100_000;
const HANDSHAKE_TIMEOUT_US: Micros = 5_000_000;
const SWEEP_INTERVAL_US: Micros = 1_000_000;
const TIMERS_CAPACITY: usize = 1024;
const DRAIN_ON_STOP_US: Micros = 2_000_000;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Connecting,
    Handshaking,
    Up,
}

struct Connection {
    stream: TcpStream,
    input: Buffer,
    output: Buffer,
    /// Known from the start when we dialled; learned from the hello when we accepted.
    peer: Option<NodeId>,
    state: State,
    opened_us: Micros,
    /// On the dirty list (has output to flush).
    dirty: bool,
    /// The role was told the buffer is full; call `on_writable` once it drains.
    want_writable: bool,
    /// A RESP client (not a peer): no handshake, commands instead of frames.
    client: bool,
    /// Client input waits while its replies are past the high-water mark.
    input_paused: bool,
    /// Client input waits while the role holds it (`Io::hold_client`).
    held: bool,
    /// A client whose input failed to parse: nothing more is read from it (the role closes
    /// it once its replies are written).
    refused: bool,
    /// Close once the output is written (QUIT, or an error reply).
    close_after_flush: bool,
    /// With a cookie: the nonce we challenged with, the peer's, whether it saw the peer's
    /// hello, and whether our proof is sent.
    nonce: [u8; wire::auth::NONCE_LEN],
    peer_nonce: Option<[u8; wire::auth::NONCE_LEN]>,
    hello_seen: bool,
    proof_sent: bool,
}

struct Peer {
    address: SocketAddr,
    /// We dial this peer (its id is lower than ours); otherwise it dials us.
    dial: bool,
    connection: Option<usize>,
    up: bool,
    backoff_us: Micros,
    next_dial_us: Micros,
}

/// The REPL: commands from stdin, replies as text to stdout.
struct Repl {
    /// None when stdin was a regular file, read whole at start.
    receiver: Option<pipe::Receiver>,
    input: Vec<u8>,
    eof: bool,
    /// Interactive: print a prompt.
    prompt: bool,
    /// Items still due of an array reply (the prompt waits for the last).
    array_items: usize,
    output: Vec<u8>,
}

/// Everything a role may touch through `Io`; the driver owns it beside the role.
struct NetIo {
    node: NodeId,
    cluster: Vec<u8>,
    cookie: Option<Vec<u8>>,
    /// The accept rate limit: the current one-second window, and what it let in and turned away.
    accept_window_us: Micros,
    accepted_in_window: u32,
    refused_in_window: u32,
    start: Instant,
    epoch_us: Micros,
    now_us: Micros,
    poll: Poll,
    listener: TcpListener,
    client_listener: Option<TcpListener>,
    repl: Option<Repl>,
    sink: Option<OutputSink>,
    /// Scratch: argument spans of the command being handed to the role.
    spans: Vec<(u32, u32)>,
    connections: Slab<Connection>,
    peers: Vec<Peer>,
    dirty: Vec<usize>,
    ready: Vec<usize>,
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
    pub fn new(config: Config, role: R) -> io::Result<Driver<R>> {
        let nodes = config.addresses.len();
        assert!(config.node < nodes && nodes <= wire::NODES_MAX);
        let poll = Poll::new()?;
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
        let repl = if config.repl {
            Some(open_repl(&poll)?)
        } else {
            None
        };
        let peers = config
            .addresses
            .iter()
            .enumerate()
            .map(|(id, &address)| Peer {
                address,
                dial: id < config.node,
                connection: None,
                up: false,
                backoff_us: DIAL_BACKOFF_MIN_US,
                next_dial_us: 0,
            })
            .collect();
        let epoch_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let io = NetIo {
            node: config.node,
            cluster: config.cluster.into_bytes(),
            cookie: config.cookie,
            accept_window_us: 0,
            accepted_in_window: 0,
            refused_in_window: 0,
            start: Instant::now(),
            epoch_us: epoch_us as Micros,
            now_us: epoch_us as Micros,
            poll,
            listener,
            client_listener,
            repl,
            sink: config.output,
            spans: Vec::with_capacity(client::ARGS_MAX),
            connections: Slab::with_capacity(nodes + UNIDENTIFIED_CONNECTIONS_MAX + CLIENTS_MAX),
            peers,
            dirty: Vec::with_capacity(nodes + UNIDENTIFIED_CONNECTIONS_MAX),
            ready: Vec::with_capacity(nodes + UNIDENTIFIED_CONNECTIONS_MAX),
            wheel: TimerWheel::new(TIMERS_CAPACITY),
            fired: Vec::with_capacity(TIMERS_CAPACITY),
            local: Buffer::with_capacity(LOCAL_BYTES),
            writable_due: Vec::with_capacity(nodes),
            spare_buffers: Vec::new(),
            next_sweep_us: epoch_us as Micros + SWEEP_INTERVAL_US,
            stopping: false,
            stats: Stats::default(),
        };
        Ok(Driver {
            role,
            io,
            events: Events::with_capacity(EVENTS_CAPACITY),
            pending: Vec::with_capacity(EVENTS_CAPACITY),
            local_spare: Buffer::with_capacity(LOCAL_BYTES),
        })
    }

    pub fn local_address(&self) -> io::Result<SocketAddr> {
        self.io.listener.local_addr()
    }

    /// Runs until the role calls `stop`, then flushes what it queued. Returns the role (for its
    /// results and statistics) and the driver's byte counts.
    pub fn run(mut self) -> io::Result<(R, Stats)> {
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
                && error.kind() != io::ErrorKind::Interrupted
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

    fn handle_ready_list(&mut self) {
        let count = self.io.ready.len();
        for index in 0..count {
            let key = self.io.ready[index];
            if self.io.connections.contains(key) {
                if let Err(reason) = self.handle_input(key) {
                    self.close(key, &reason);
                    continue;
                }
                self.read(key);
            }
        }
        self.io.ready.drain(..count);
    }

    fn expire_timers(&mut self) {
        let tick = (self.io.now_us - self.io.epoch_us) / TICK_US;
        let mut fired = std::mem::take(&mut self.io.fired);
        self.io.wheel.expire(tick, &mut fired);
        for &timer in &fired {
            self.role.on_timer(&mut self.io, timer);
            self.deliver_local();
        }
        fired.clear();
        self.io.fired = fired;
    }

    fn accept_all(&mut self) {
        loop {
            match self.io.listener.accept() {
                Ok((stream, address)) => {
                    let io = &mut self.io;
                    if io.now_us.saturating_sub(io.accept_window_us) >= 1_000_000 {
                        if io.refused_in_window > 0 {
                            info!(
                                "node {}: refused or evicted {} connections in the last second \
                                 (at most {ACCEPTS_PER_SECOND_MAX} new connections per second, \
                                 {UNIDENTIFIED_CONNECTIONS_MAX} awaiting their handshake)",
                                io.node, io.refused_in_window
                            );
                        }
                        io.accept_window_us = io.now_us;
                        io.accepted_in_window = 0;
                        io.refused_in_window = 0;
                    }
                    if io.accepted_in_window >= ACCEPTS_PER_SECOND_MAX {
                        io.refused_in_window += 1;
                        drop(stream);
                        continue;
                    }
                    // Each accepted connection holds a pair of buffers until it is identified or
                    // times out, so their number is capped, not just their rate. At the cap the
                    // oldest gives way: idle connections cannot starve a peer that is dialling
                    // (it finishes its handshake in a round trip or two, long before the
                    // accept rate lets 64 newer ones in behind it).
                    let mut awaiting = 0;
                    let mut oldest: Option<(Micros, usize)> = None;
                    for (key, c) in &io.connections {
                        let inbound = c.peer.is_none_or(|peer| !io.peers[peer].dial);
                        if !c.client && c.state == State::Handshaking && inbound {
                            awaiting += 1;
                            if oldest.is_none_or(|(opened, _)| c.opened_us < opened) {
                                oldest = Some((c.opened_us, key));
                            }
                        }
                    }
                    io.accepted_in_window += 1;
                    if awaiting >= UNIDENTIFIED_CONNECTIONS_MAX
                        && let Some((_, key)) = oldest
                    {
                        io.refused_in_window += 1;
                        self.close(
                            key,
                            "evicted: too many connections awaiting their handshake",
                        );
                    }
                    let io = &mut self.io;
                    if io.connections.len() == io.connections.capacity() {
                        info!("refusing connection from {address}: connection table full");
                        continue;
                    }
                    debug!("accepted connection from {address}");
                    if let Err(error) = self.open(stream, None, State::Handshaking) {
                        info!("cannot register connection from {address}: {error}");
                    }
                }
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

    fn open(&mut self, stream: TcpStream, peer: Option<NodeId>, state: State) -> io::Result<usize> {
        self.open_connection(stream, peer, state, false)
    }

    fn open_connection(
        &mut self,
        stream: TcpStream,
        peer: Option<NodeId>,
        state: State,
        client: bool,
    ) -> io::Result<usize> {
        let io = &mut self.io;
        assert!(
            io.connections.len() < io.connections.capacity(),
            "slab would reallocate"
        );
        let (input, output) = io.spare_buffers.pop().unwrap_or_else(|| {
            (
                Buffer::with_capacity(INPUT_BYTES),
                Buffer::with_capacity(OUTPUT_BYTES),
            )
        });
        let entry = io.connections.vacant_entry();
        let key = entry.key();
        let connection = entry.insert(Connection {
            stream,
            input,
            output,
            peer,
            state,
            opened_us: io.now_us,
            dirty: false,
            want_writable: false,
            client,
            input_paused: false,
            held: false,
            refused: false,
            close_after_flush: false,
            nonce: [0; wire::auth::NONCE_LEN],
            peer_nonce: None,
            hello_seen: false,
            proof_sent: false,
        });
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(error) =
            io.poll
                .registry()
                .register(&mut connection.stream, Token(key), interest)
        {
            let connection = io.connections.remove(key);
            io.spare_buffers.push((connection.input, connection.output));
            return Err(error);
        }
        if state == State::Handshaking {
            connection.stream.set_nodelay(true)?;
            io.queue_hello(key);
        } else if client {
            connection.stream.set_nodelay(true)?;
        }
        Ok(key)
    }

    fn accept_clients(&mut self) {
        loop {
            let Some(listener) = &self.io.client_listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, address)) => {
                    if self.io.connections.len() == self.io.connections.capacity() {
                        info!("refusing client {address}: connection table full");
                        continue;
                    }
                    debug!("client {address} connected");
                    if let Err(error) = self.open_connection(stream, None, State::Up, true) {
                        info!("cannot register client {address}: {error}");
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    info!("accept failed: {error}");
                    return;
                }
            }
        }
    }

    /// Reads what stdin has (until `WouldBlock`), then handles complete lines.
    fn read_repl(&mut self) {
        let Some(repl) = &mut self.io.repl else {
            return;
        };
        let Some(receiver) = &mut repl.receiver else {
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match receiver.read(&mut chunk) {
                Ok(0) => {
                    repl.eof = true;
                    break;
                }
                Ok(count) => repl.input.extend_from_slice(&chunk[..count]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    info!("stdin: {error}");
                    repl.eof = true;
                    break;
                }
            }
            if repl.input.len() > LINE_BYTES_MAX * 16 {
                break; // handle what we have first; the rest waits in the pipe
            }
        }
        self.handle_repl();
    }

    /// Hands every complete REPL line to the role (the last one too, at end of input).
    fn handle_repl(&mut self) {
        let Some(repl) = &mut self.io.repl else {
            return;
        };
        let mut input = std::mem::take(&mut repl.input);
        let eof = repl.eof;
        let mut spans = std::mem::take(&mut self.io.spans);
        let mut at = 0;
        while at < input.len() && !self.io.stopping {
            let end = match input[at..].iter().position(|&b| b == b'\n') {
                Some(length) => at + length,
                None if eof => input.len(),
                None => break,
            };
            let next = (end + 1).min(input.len());
            let line = &mut input[at..end];
            at = next;
            if line.len() > LINE_BYTES_MAX {
                let error = "ERR line too long";
                self.role
                    .on_client_error(&mut self.io, REPL_CLIENT, error, false);
                continue;
            }
            match client::split_args(line, &mut spans) {
                Ok(()) if spans.is_empty() => {}
                Ok(()) => {
                    let command = Command {
                        data: line,
                        spans: &spans,
                    };
                    self.role.on_client(&mut self.io, REPL_CLIENT, command);
                    self.deliver_local();
                }
                Err(error) => {
                    let text = format!("ERR {error}");
                    self.role
                        .on_client_error(&mut self.io, REPL_CLIENT, &text, false);
                }
            }
        }
        if at < input.len() && input.len() - at > LINE_BYTES_MAX {
            let error = "ERR line too long";
            self.role
                .on_client_error(&mut self.io, REPL_CLIENT, error, false);
            at = input.len();
        }
        input.drain(..at);
        self.io.spans = spans;
        if let Some(repl) = &mut self.io.repl {
            repl.input = input;
            if repl.eof && repl.input.is_empty() && repl.receiver.is_some() {
                // End of commands; the node keeps serving its other clients.
                if let Some(mut receiver) = repl.receiver.take() {
                    let _ = self.io.poll.registry().deregister(&mut receiver);
                }
            }
        }
    }

    fn dial_due_peers(&mut self) {
        for peer in 0..self.io.peers.len() {
            let due = &self.io.peers[peer];
            if !due.dial || due.connection.is_some() || due.next_dial_us > self.io.now_us {
                continue;
            }
            let address = due.address;
            match TcpStream::connect(address) {
                Ok(stream) => match self.open(stream, Some(peer), State::Connecting) {
                    Ok(key) => self.io.peers[peer].connection = Some(key),
                    Err(error) => self.io.dial_failed(peer, &error.to_string()),
                },
                Err(error) => self.io.dial_failed(peer, &error.to_string()),
            }
        }
    }

    fn next_dial_us(&self) -> Option<Micros> {
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
    /// a silent or stalled stranger cannot hold a slot.
    fn sweep_stalled_handshakes(&mut self) {
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
                self.close(key, "no handshake within the timeout");
            }
        }
    }

    fn connection_event(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(connection) = self.io.connections.get_mut(key) else {
            return; // closed earlier in this batch of events
        };
        if connection.state == State::Connecting {
            if !writable && !readable {
                return;
            }
            match connection.stream.take_error() {
                Ok(None) => {}
                Ok(Some(error)) | Err(error) => return self.close(key, &error.to_string()),
            }
            match connection.stream.peer_addr() {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::NotConnected => return,
                Err(error) => return self.close(key, &error.to_string()),
            }
            connection.state = State::Handshaking;
            if let Err(error) = connection.stream.set_nodelay(true) {
                return self.close(key, &error.to_string());
            }
            self.io.queue_hello(key);
        }
        if writable {
            self.io.mark_dirty(key);
        }
        if readable {
            self.read(key);
        }
    }

    /// Reads until `WouldBlock`, handling complete frames after each read, for at most
    /// `READ_ROUNDS_MAX` rounds; then the connection waits on the ready list.
    fn read(&mut self, key: usize) {
        for _ in 0..READ_ROUNDS_MAX {
            let Some(connection) = self.io.connections.get_mut(key) else {
                return;
            };
            if connection.input_paused || connection.held || connection.close_after_flush {
                return; // resumed from the ready list once its replies drain or it is released
            }
            connection.input.compact();
            if connection.input.tail().is_empty() {
                // Only a client can fill its buffer without completing a command.
                self.io.reply(key, &Reply::Error("ERR command too large"));
                self.io.close_client(key);
                return;
            }
            let connection = &mut self.io.connections[key];
            let tail = connection.input.tail();
            match connection.stream.read(tail) {
                Ok(0) => return self.close(key, "closed by peer"),
                Ok(count) => {
                    connection.input.commit(count);
                    self.io.stats.bytes_in += count as u64;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return self.close(key, &error.to_string()),
            }
            if let Err(reason) = self.handle_input(key) {
                return self.close(key, &reason);
            }
            if self.io.stopping {
                return;
            }
        }
        self.io.ready.push(key);
    }

    /// Handles every complete frame (or client command) in the connection's input buffer.
    fn handle_input(&mut self, key: usize) -> Result<(), String> {
        if self.io.connections[key].client {
            return self.handle_client_input(key);
        }
        let mut input = std::mem::replace(&mut self.io.connections[key].input, Buffer::empty());
        let mut result = Ok(());
        while !self.io.stopping {
            let length = match wire::frame_len(input.data()) {
                Ok(Some(length)) => length,
                Ok(None) => break,
                Err(error) => {
                    result = Err(error.to_string());
                    break;
                }
            };
            let handled = match Message::decode(&input.data()[..length]) {
                Ok(message) => self.handle_message(key, message),
                Err(error) => Err(error.to_string()),
            };
            if let Err(reason) = handled {
                result = Err(reason);
                break;
            }
            input.consume(length);
            self.io.stats.frames_in += 1;
        }
        self.io.connections[key].input = input;
        result
    }

    /// Hands every complete RESP command to the role, unless the client's replies are piling up
    /// (then the rest waits: pipelining clients get backpressure, not unbounded buffers).
    fn handle_client_input(&mut self, key: usize) -> Result<(), String> {
        let mut input = std::mem::replace(&mut self.io.connections[key].input, Buffer::empty());
        let mut spans = std::mem::take(&mut self.io.spans);
        let mut result = Ok(());
        while !self.io.stopping {
            let Some(connection) = self.io.connections.get_mut(key) else {
                break;
            };
            if connection.close_after_flush || connection.held || connection.refused {
                break;
            }
            if connection.output.len() > OUTPUT_HIGH_WATER {
                connection.input_paused = true;
                break;
            }
            match client::parse_request(input.data_mut(), &mut spans) {
                Ok(None) => break,
                Ok(Some(length)) => {
                    if !spans.is_empty() {
                        let command = Command {
                            data: &input.data()[..length],
                            spans: &spans,
                        };
                        self.role.on_client(&mut self.io, key, command);
                        self.deliver_local();
                    }
                    input.consume(length);
                }
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        self.io.spans = spans;
        if let Some(connection) = self.io.connections.get_mut(key) {
            connection.input = input;
        }
        if let Err(error) = result {
            // Nothing more is read from it; the role replies after what it owes the client
            // and closes it then.
            debug!("client {key}: {error}");
            self.io.connections[key].refused = true;
            let text = format!("ERR {error}");
            self.role.on_client_error(&mut self.io, key, &text, true);
            self.deliver_local();
        }
        Ok(())
    }

    fn handle_message(&mut self, key: usize, message: Message<'_>) -> Result<(), String> {
        let connection = &self.io.connections[key];
        match (connection.state, message) {
            (State::Up, Message::Hello(_)) => Err("second hello".to_string()),
            (State::Up, message) => {
                let peer = connection.peer.expect("an up connection knows its peer");
                self.role.on_message(&mut self.io, peer, message);
                self.deliver_local();
                Ok(())
            }
            (State::Handshaking, Message::Hello(hello)) => {
                if connection.hello_seen {
                    return Err("second hello".to_string());
                }
                let peer = self.identify(key, &hello)?;
                if self.io.cookie.is_none() {
                    return self.complete_handshake(key, peer);
                }
                self.io.connections[key].hello_seen = true;
                self.send_proof_when_ready(key);
                Ok(())
            }
            (State::Handshaking, Message::AuthChallenge(challenge)) => {
                if self.io.cookie.is_none() {
                    return Err("the peer requires a cookie and this node has none".to_string());
                }
                if connection.peer_nonce.is_some() {
                    return Err("second challenge".to_string());
                }
                self.io.connections[key].peer_nonce = Some(challenge.nonce);
                self.send_proof_when_ready(key);
                Ok(())
            }
            (State::Handshaking, Message::AuthProof(proof)) => {
                let (Some(cookie), Some(peer), Some(peer_nonce), true) = (
                    self.io.cookie.as_deref(),
                    connection.peer,
                    connection.peer_nonce,
                    connection.hello_seen,
                ) else {
                    return Err("proof before hello and challenge".to_string());
                };
                let me = self.io.node;
                if !auth::verify(cookie, peer, me, &connection.nonce, &peer_nonce, &proof.mac) {
                    return Err("authentication failed: wrong cookie".to_string());
                }
                self.complete_handshake(key, peer)
            }
            (State::Handshaking, message) if self.io.cookie.is_some() => Err(format!(
                "{:?} frame before authentication (does the peer have the cookie?)",
                message.kind()
            )),
            (_, message) => Err(format!("{:?} frame before the handshake", message.kind())),
        }
    }

    /// With a cookie: once the peer's hello and challenge are in, answer the challenge.
    fn send_proof_when_ready(&mut self, key: usize) {
        let io = &mut self.io;
        let connection = &io.connections[key];
        let (Some(cookie), Some(peer), Some(peer_nonce), true, false) = (
            io.cookie.as_deref(),
            connection.peer,
            connection.peer_nonce,
            connection.hello_seen,
            connection.proof_sent,
        ) else {
            return;
        };
        let mac = auth::prove(cookie, io.node, peer, &peer_nonce, &connection.nonce);
        io.connections[key].proof_sent = true;
        io.queue_frame(key, &Message::AuthProof(AuthProof { mac }));
    }

    /// Checks a hello and learns who is on the other end (nothing changes for the peer yet:
    /// with a cookie, the connection must still prove itself).
    fn identify(&mut self, key: usize, hello: &Hello<'_>) -> Result<NodeId, String> {
        let io = &mut self.io;
        let peer = wire::check_hello(hello, &io.cluster, io.peers.len(), io.node)?;
        match io.connections[key].peer {
            Some(expected) if expected != peer => {
                Err(format!("dialled node {expected} but node {peer} answered"))
            }
            Some(_) => Ok(peer),
            None if io.peers[peer].dial => Err(format!("node {peer} dialled us, but we dial it")),
            None => {
                io.connections[key].peer = Some(peer);
                Ok(peer)
            }
        }
    }

    /// The connection is the peer's now: it replaces any older one, and the role hears of it.
    fn complete_handshake(&mut self, key: usize, peer: NodeId) -> Result<(), String> {
        if let Some(old) = self.io.peers[peer].connection
            && old != key
        {
            // A restarted peer, or a half-open connection the kernel has not noticed.
            self.close(old, "replaced by a new connection from the same node");
        }
        let io = &mut self.io;
        io.connections[key].state = State::Up;
        io.peers[peer].connection = Some(key);
        io.peers[peer].up = true;
        io.peers[peer].backoff_us = DIAL_BACKOFF_MIN_US;
        info!("node {}: peer {peer} up", io.node);
        self.role.on_peer_up(&mut self.io, peer);
        self.deliver_local();
        Ok(())
    }

    fn close(&mut self, key: usize, reason: &str) {
        let io = &mut self.io;
        let mut connection = io.connections.remove(key);
        let _ = io.poll.registry().deregister(&mut connection.stream);
        connection.input.clear();
        connection.output.clear();
        io.spare_buffers.push((connection.input, connection.output));
        if connection.client {
            debug!("client {key} closed: {reason}");
            self.role.on_client_closed(&mut self.io, key);
            self.deliver_local();
            return;
        }
        let Some(peer) = connection.peer else {
            let address = connection.stream.peer_addr().map(|a| a.to_string());
            if reason == "closed by peer" || reason.starts_with("evicted") {
                // Port scans and connection storms: not worth a line each (evictions are
                // counted in the once-a-second summary).
                debug!(
                    "node {}: unidentified connection ({address:?}) closed",
                    io.node
                );
            } else {
                info!(
                    "node {}: closing unidentified connection ({address:?}): {reason}",
                    io.node
                );
            }
            return;
        };
        if io.peers[peer].connection != Some(key) {
            // Accepted, claimed to be `peer`, and failed before the handshake completed.
            let address = connection.stream.peer_addr().map(|a| a.to_string());
            info!(
                "node {}: closing a connection claiming to be node {peer} ({address:?}): {reason}",
                io.node
            );
            return;
        }
        io.peers[peer].connection = None;
        if io.peers[peer].dial {
            io.dial_failed(peer, reason);
        }
        if connection.state == State::Up {
            io.peers[peer].up = false;
            info!("node {}: peer {peer} down: {reason}", io.node);
            self.role.on_peer_down(&mut self.io, peer);
            self.deliver_local();
        } else if connection.state == State::Handshaking {
            info!(
                "node {}: handshake with peer {peer} failed: {reason}",
                io.node
            );
        } else {
            debug!(
                "node {}: connection to peer {peer} failed: {reason}",
                io.node
            );
        }
    }

    /// One `write` per dirty connection: everything queued since the last poll goes together.
    fn flush_dirty(&mut self) {
        self.io.flush_repl();
        let mut index = 0;
        while index < self.io.dirty.len() {
            let key = self.io.dirty[index];
            match self.io.flush(key) {
                Ok(true) => index += 1,
                Ok(false) => {
                    self.io.dirty.swap_remove(index);
                    let done = self.io.connections.get(key).is_some_and(|connection| {
                        connection.close_after_flush && connection.output.is_empty()
                    });
                    if done {
                        self.close(key, "closed after its last reply");
                    }
                }
                Err(error) => {
                    self.io.dirty.swap_remove(index);
                    self.close(key, &error.to_string());
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

    /// Delivers frames the role sent to itself, after the handler that sent them returned.
    fn deliver_local(&mut self) {
        while !self.io.local.is_empty() {
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
            for (key, connection) in self.io.connections.iter_mut() {
                if !connection.output.is_empty() && !connection.dirty {
                    connection.dirty = true;
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

/// Stdin as a non-blocking pipe registered with the poll, or, for a regular file (which epoll
/// cannot watch), its whole content read now.
/// A listener on `address`; a failure names the address (a node listens on two ports, and
/// "address in use" must say which).
fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(address).map_err(|error| {
        io::Error::new(error.kind(), format!("cannot listen on {address}: {error}"))
    })
}

fn open_repl(poll: &Poll) -> io::Result<Repl> {
    use std::io::IsTerminal;
    use std::os::fd::AsFd;
    let stdin = io::stdin();
    let prompt = stdin.is_terminal();
    let owned = stdin.as_fd().try_clone_to_owned()?;
    let file = std::fs::File::from(owned);
    if file.metadata()?.is_file() {
        let mut input = Vec::new();
        file.take(REPL_FILE_BYTES_MAX).read_to_end(&mut input)?;
        return Ok(Repl {
            receiver: None,
            input,
            eof: true,
            prompt,
            array_items: 0,
            output: Vec::new(),
        });
    }
    let mut receiver = pipe::Receiver::from(std::os::fd::OwnedFd::from(file));
    receiver.set_nonblocking(true)?;
    let registered = poll
        .registry()
        .register(&mut receiver, REPL_TOKEN, Interest::READABLE);
    let (receiver, eof) = match registered {
        Ok(()) => (Some(receiver), false),
        Err(error) => {
            info!("stdin cannot be watched ({error}); the REPL is off");
            (None, true)
        }
    };
    let mut output = Vec::new();
    if prompt {
        output.extend_from_slice(b"pollen> ");
    }
    Ok(Repl {
        receiver,
        input: Vec::new(),
        eof,
        prompt,
        array_items: 0,
        output,
    })
}

impl NetIo {
    /// REPL replies go to stdout in one write per iteration.
    fn flush_repl(&mut self) {
        let Some(repl) = &mut self.repl else { return };
        if repl.output.is_empty() {
            return;
        }
        let mut stdout = io::stdout().lock();
        let _ = stdout.write_all(&repl.output);
        let _ = stdout.flush();
        repl.output.clear();
    }

    fn update_now(&mut self) {
        self.now_us = self.epoch_us + self.start.elapsed().as_micros() as Micros;
    }

    fn peers_up(&self) -> usize {
        self.peers.iter().filter(|peer| peer.up).count()
    }

    fn dial_failed(&mut self, peer: NodeId, reason: &str) {
        let state = &mut self.peers[peer];
        debug!("node {}: dial to peer {peer} failed: {reason}", self.node);
        state.next_dial_us = self.now_us + state.backoff_us;
        state.backoff_us = (state.backoff_us * 2).min(DIAL_BACKOFF_MAX_US);
    }

    fn queue_hello(&mut self, key: usize) {
        let hello = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            nodes: self.peers.len() as u16,
            node: self.node as u16,
            cluster: &self.cluster,
        });
        let connection = &mut self.connections[key];
        let length = hello.encoded_len();
        let tail = connection
            .output
            .reserve(length)
            .expect("a new connection has room");
        hello.encode(tail);
        connection.output.commit(length);
        if self.cookie.is_some() {
            match auth::nonce() {
                Ok(nonce) => {
                    connection.nonce = nonce;
                    self.queue_frame(key, &Message::AuthChallenge(AuthChallenge { nonce }));
                }
                Err(error) => {
                    // Without a nonce we cannot authenticate; the handshake stalls and the sweep
                    // closes the connection.
                    info!("node {}: no random nonce from the OS: {error}", self.node);
                }
            }
        }
        self.mark_dirty(key);
    }

    /// Queues a handshake frame (small; a new connection's buffer has room).
    fn queue_frame(&mut self, key: usize, message: &Message<'_>) {
        let connection = &mut self.connections[key];
        let length = message.encoded_len();
        let tail = connection
            .output
            .reserve(length)
            .expect("a new connection has room");
        message.encode(tail);
        connection.output.commit(length);
        self.mark_dirty(key);
    }

    fn mark_dirty(&mut self, key: usize) {
        let connection = &mut self.connections[key];
        if !connection.dirty {
            connection.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Writes what the connection has queued. `Ok(true)`: more remains and the socket may take
    /// it now; `Ok(false)`: done for now (empty, or `WouldBlock` — a writable event will follow).
    fn flush(&mut self, key: usize) -> io::Result<bool> {
        let Some(connection) = self.connections.get_mut(key) else {
            return Ok(false);
        };
        if connection.state == State::Connecting {
            connection.dirty = false;
            return Ok(false);
        }
        let mut more = false;
        while !connection.output.is_empty() {
            match connection.stream.write(connection.output.data()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(count) => {
                    connection.output.consume(count);
                    self.stats.bytes_out += count as u64;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {
                    more = true;
                    break;
                }
                Err(error) => return Err(error),
            }
        }
        if connection.input_paused && connection.output.len() <= OUTPUT_LOW_WATER {
            connection.input_paused = false;
            self.ready.push(key);
        }
        if connection.want_writable && connection.output.len() <= OUTPUT_LOW_WATER {
            connection.want_writable = false;
            if let Some(peer) = connection.peer {
                self.writable_due.push(peer);
            }
        }
        connection.dirty = more;
        Ok(more)
    }

    fn up_connection(&mut self, peer: NodeId) -> Option<&mut Connection> {
        let state = &self.peers[peer];
        if !state.up {
            return None;
        }
        state.connection.map(|key| &mut self.connections[key])
    }
}

impl Io for NetIo {
    fn now(&self) -> Micros {
        self.now_us
    }

    fn node(&self) -> NodeId {
        self.node
    }

    fn send(&mut self, to: NodeId, message: &Message<'_>) -> bool {
        let length = message.encoded_len();
        if to == self.node {
            let Some(tail) = self.local.reserve(length) else {
                return false;
            };
            message.encode(tail);
            self.local.commit(length);
            return true;
        }
        let Some(key) = self.peers[to].connection.filter(|_| self.peers[to].up) else {
            return false;
        };
        let connection = &mut self.connections[key];
        let Some(tail) = connection.output.reserve(length) else {
            connection.want_writable = true;
            return false;
        };
        message.encode(tail);
        connection.output.commit(length);
        self.stats.frames_out += 1;
        self.mark_dirty(key);
        true
    }

    fn send_space(&mut self, to: NodeId) -> usize {
        if to == self.node {
            return self.local.capacity() - self.local.len();
        }
        let Some(connection) = self.up_connection(to) else {
            return 0;
        };
        let queued = connection.output.len();
        if queued > OUTPUT_LOW_WATER {
            connection.want_writable = true;
        }
        OUTPUT_HIGH_WATER.saturating_sub(queued)
    }

    fn set_timer(&mut self, after: Micros, timer: Timer) -> TimerKey {
        let at_us = self.now_us - self.epoch_us + after;
        self.wheel.insert(at_us.div_ceil(TICK_US), timer)
    }

    fn cancel_timer(&mut self, key: TimerKey) {
        self.wheel.cancel(key);
    }

    fn output(&mut self, line: std::fmt::Arguments<'_>) {
        if let Some(sink) = &mut self.sink {
            sink(&line.to_string());
            return;
        }
        let mut stdout = io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    fn stop(&mut self) {
        self.stopping = true;
    }

    fn reply(&mut self, client: ClientId, reply: &Reply<'_>) -> bool {
        if client == REPL_CLIENT {
            let Some(repl) = &mut self.repl else {
                return false;
            };
            reply.encode_text(&mut repl.output);
            match reply {
                Reply::Array(count) => repl.array_items = *count,
                _ => repl.array_items = repl.array_items.saturating_sub(1),
            }
            if repl.prompt && repl.array_items == 0 {
                repl.output.extend_from_slice(b"pollen> ");
            }
            return true;
        }
        let Some(connection) = self.connections.get_mut(client).filter(|c| c.client) else {
            return false;
        };
        if connection.close_after_flush {
            return false;
        }
        let Some(tail) = connection.output.reserve(reply.resp_len()) else {
            // A client that does not read its replies is not allowed to grow our memory.
            info!("client {client}: output buffer full; disconnecting it");
            connection.close_after_flush = true;
            connection.output.clear();
            self.mark_dirty(client);
            return false;
        };
        let length = reply.encode_resp(tail);
        connection.output.commit(length);
        self.mark_dirty(client);
        true
    }

    fn close_client(&mut self, client: ClientId) {
        if let Some(connection) = self.connections.get_mut(client).filter(|c| c.client) {
            connection.close_after_flush = true;
            self.mark_dirty(client);
        }
    }

    fn hold_client(&mut self, client: ClientId, hold: bool) {
        if let Some(connection) = self.connections.get_mut(client).filter(|c| c.client) {
            let released = connection.held && !hold;
            connection.held = hold;
            if released {
                // Commands already buffered, and the socket, are read again.
                self.ready.push(client);
            }
        }
    }
}
