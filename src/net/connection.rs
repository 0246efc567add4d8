//! One connection of the loop, from open to close: a peer we dialled, a connection accepted on
//! the peer port, or a RESP client (its `Mode`). A connection takes a pair of fixed buffers from
//! the spare pool when it opens and returns them when it closes, so a reconnect allocates
//! nothing. Reads are edge-triggered: a connection is read until `WouldBlock`, handling
//! complete frames (or commands) after each read, for at most `READ_ROUNDS_MAX` buffers per
//! iteration; then it waits on the ready list. Output is queued in place and written once per
//! iteration from the dirty list. Why a connection closed is a `CloseReason`, logged as text.
//!
//! The dirty and ready lists are `KeyList`s: each slot of the connection table is on a list at
//! most once, so a list never holds more keys than the table has slots and never reallocates.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::buffer::Buffer;
use super::handshake::Handshake;
use super::{Driver, NetIo};
use crate::node::{Io, Micros, NodeId, Role};
use crate::wire::client::Reply;
use crate::wire::{self, FRAME_BYTES_MAX, Message};
use crate::{debug, info};

const INPUT_BYTES: usize = 2 * FRAME_BYTES_MAX;
pub(super) const OUTPUT_HIGH_WATER: usize = FRAME_BYTES_MAX;
pub(super) const OUTPUT_LOW_WATER: usize = OUTPUT_HIGH_WATER / 4;
/// Room for one more maximal frame above the high-water mark.
const OUTPUT_BYTES: usize = OUTPUT_HIGH_WATER + FRAME_BYTES_MAX;
const READ_ROUNDS_MAX: usize = 4;

// A peer's unfinished frame is shorter than `FRAME_BYTES_MAX`, so a compacted input buffer
// always has room for more of it: only a client can fill one (`read` relies on this).
const _: () = assert!(INPUT_BYTES >= FRAME_BYTES_MAX);
// Backpressure lifts below where it set in, or a connection could flap on every frame.
const _: () = assert!(OUTPUT_LOW_WATER < OUTPUT_HIGH_WATER);
const _: () = assert!(READ_ROUNDS_MAX >= 1);

/// What a connection is for, fixed when it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// We dialled this peer (its id is lower than ours); redialled when it closes.
    Dialled,
    /// Accepted on the peer port: a stranger until its hello (and, with a cookie, its proof)
    /// says which peer it is; until then it counts against `UNIDENTIFIED_CONNECTIONS_MAX`.
    Accepted,
    /// A RESP client: no handshake, commands instead of frames, replies instead of messages.
    Client,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    Connecting,
    Handshaking,
    Up,
}

/// Why a connection was closed. The text of each is what the logs say.
#[derive(Debug)]
pub(super) enum CloseReason {
    /// The other end closed (a read returned 0).
    ClosedByPeer,
    /// Accepted, still awaiting its handshake, and the oldest such when a newer one came in at
    /// `UNIDENTIFIED_CONNECTIONS_MAX`.
    Evicted,
    /// Not up within `HANDSHAKE_TIMEOUT_US`.
    HandshakeTimeout,
    /// The same peer completed a handshake on a newer connection.
    Replaced,
    /// A client marked to close once its output was written (QUIT, an error, a full buffer).
    LastReplyWritten,
    /// The socket failed.
    Io(io::Error),
    /// The peer broke the protocol, or its handshake was refused: why.
    Protocol(String),
}

impl CloseReason {
    /// Port scans and connection storms end this way: not worth a log line each for a
    /// connection that never said who it is (evictions are counted in the once-a-second
    /// summary instead; a storm that ends resets every connection it still holds).
    fn is_routine(&self) -> bool {
        match self {
            CloseReason::ClosedByPeer | CloseReason::Evicted => true,
            CloseReason::Io(error) => error.kind() == io::ErrorKind::ConnectionReset,
            _ => false,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            CloseReason::ClosedByPeer => "closed by peer",
            CloseReason::Evicted => "evicted: too many connections awaiting their handshake",
            CloseReason::HandshakeTimeout => "no handshake within the timeout",
            CloseReason::Replaced => "replaced by a new connection from the same node",
            CloseReason::LastReplyWritten => "closed after its last reply",
            CloseReason::Io(error) => return write!(formatter, "{error}"),
            CloseReason::Protocol(reason) => reason,
        };
        formatter.write_str(text)
    }
}

pub(super) struct Connection {
    pub(super) stream: TcpStream,
    pub(super) input: Buffer,
    pub(super) output: Buffer,
    pub(super) mode: Mode,
    /// Known from the start when we dialled; learned from the hello when we accepted.
    pub(super) peer: Option<NodeId>,
    pub(super) state: State,
    pub(super) opened_us: Micros,
    /// The role was told the buffer is full; call `on_writable` once it drains.
    pub(super) want_writable: bool,
    /// Client input waits while its replies are past the high-water mark.
    pub(super) input_paused: bool,
    /// Client input waits while the role holds it (`Io::hold_client`).
    pub(super) held: bool,
    /// A client whose input failed to parse: nothing more is read from it (the role closes
    /// it once its replies are written).
    pub(super) refused: bool,
    /// Close once the output is written (QUIT, or an error reply).
    pub(super) close_after_flush: bool,
    pub(super) handshake: Handshake,
}

/// Keys of the connection table waiting for one step of the loop (a flush, more reading), in
/// the order they were queued, each at most once. Whether a key is listed belongs to its slot,
/// not its connection: a key queued by a connection that then closes stays queued, and the
/// step finds the slot empty (and skips it) or serves the slot's next occupant (which is what
/// that one would have queued). So the list holds at most one key per slot and, sized for all
/// of them, never reallocates.
pub(super) struct KeyList {
    keys: VecDeque<usize>,
    listed: Box<[bool]>,
}

impl KeyList {
    pub(super) fn with_slots(slots: usize) -> KeyList {
        KeyList {
            keys: VecDeque::with_capacity(slots),
            listed: vec![false; slots].into_boxed_slice(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(super) fn get(&self, index: usize) -> usize {
        self.keys[index]
    }

    /// Queues `key` unless it is queued already.
    pub(super) fn push(&mut self, key: usize) {
        if self.listed[key] {
            return;
        }
        assert!(
            self.keys.len() < self.listed.len(),
            "more keys listed than slots"
        );
        assert!(
            self.keys.len() < self.keys.capacity(),
            "the list would reallocate"
        );
        self.listed[key] = true;
        self.keys.push_back(key);
    }

    pub(super) fn pop_front(&mut self) -> Option<usize> {
        let key = self.keys.pop_front()?;
        self.listed[key] = false;
        Some(key)
    }

    /// Removes the key at `index`; the last one takes its place.
    pub(super) fn swap_remove(&mut self, index: usize) {
        let key = self.keys.swap_remove_back(index).expect("index in range");
        self.listed[key] = false;
    }
}

impl<R: Role> Driver<R> {
    /// Puts a socket in the connection table, registered for reading and writing, with buffers
    /// from the spare pool. An accepted connection starts its handshake at once (and joins
    /// those awaiting one); a dialled one once its connect completes; a client has none.
    pub(super) fn open(
        &mut self,
        stream: TcpStream,
        mode: Mode,
        peer: Option<NodeId>,
    ) -> io::Result<usize> {
        let io = &mut self.io;
        assert!(
            io.connections.len() < io.connections.capacity(),
            "slab would reallocate"
        );
        let state = match mode {
            Mode::Dialled => State::Connecting,
            Mode::Accepted => State::Handshaking,
            Mode::Client => State::Up,
        };
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
            mode,
            peer,
            state,
            opened_us: io.now_us,
            want_writable: false,
            input_paused: false,
            held: false,
            refused: false,
            close_after_flush: false,
            handshake: Handshake::new(),
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
        match mode {
            Mode::Dialled => {}
            Mode::Accepted => {
                io.admission.awaiting_handshake(key);
                connection.stream.set_nodelay(true)?;
                io.queue_hello(key);
            }
            Mode::Client => {
                assert!(io.clients < super::clients::CLIENTS_MAX);
                io.clients += 1;
                connection.stream.set_nodelay(true)?;
            }
        }
        Ok(key)
    }

    /// Takes a connection out of the table and returns its buffers to the pool. The role hears
    /// of a client, or of an up peer, going away; a dialled peer is redialled after its backoff.
    pub(super) fn close(&mut self, key: usize, reason: CloseReason) {
        let io = &mut self.io;
        let mut connection = io.connections.remove(key);
        let _ = io.poll.registry().deregister(&mut connection.stream);
        let mut input = std::mem::replace(&mut connection.input, Buffer::empty());
        let mut output = std::mem::replace(&mut connection.output, Buffer::empty());
        input.clear();
        output.clear();
        io.spare_buffers.push((input, output));
        match connection.mode {
            Mode::Client => {
                io.clients -= 1;
                debug!("client {key} closed: {reason}");
                self.role.on_client_closed(&mut self.io, key);
                self.deliver_local();
            }
            Mode::Accepted | Mode::Dialled => {
                if connection.mode == Mode::Accepted && connection.state == State::Handshaking {
                    io.admission.handshake_ended(key);
                }
                self.peer_connection_closed(key, &connection, &reason);
            }
        }
    }

    /// Logs why a peer connection closed; if it was the peer's, the peer is down (or is
    /// redialled, if it never came up).
    fn peer_connection_closed(
        &mut self,
        key: usize,
        connection: &Connection,
        reason: &CloseReason,
    ) {
        let io = &mut self.io;
        let Some(peer) = connection.peer else {
            let address = connection.stream.peer_addr().map(|a| a.to_string());
            if reason.is_routine() {
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
        match connection.state {
            State::Up => {
                io.peers[peer].up = false;
                info!("node {}: peer {peer} down: {reason}", io.node);
                self.role.on_peer_down(&mut self.io, peer);
                self.deliver_local();
            }
            State::Handshaking => info!(
                "node {}: handshake with peer {peer} failed: {reason}",
                io.node
            ),
            State::Connecting => debug!(
                "node {}: connection to peer {peer} failed: {reason}",
                io.node
            ),
        }
    }

    pub(super) fn connection_event(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(connection) = self.io.connections.get_mut(key) else {
            return; // closed earlier in this batch of events
        };
        if connection.state == State::Connecting {
            if !writable && !readable {
                return;
            }
            match connection.stream.take_error() {
                Ok(None) => {}
                Ok(Some(error)) | Err(error) => return self.close(key, CloseReason::Io(error)),
            }
            match connection.stream.peer_addr() {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::NotConnected => return,
                Err(error) => return self.close(key, CloseReason::Io(error)),
            }
            connection.state = State::Handshaking;
            if let Err(error) = connection.stream.set_nodelay(true) {
                return self.close(key, CloseReason::Io(error));
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
    pub(super) fn read(&mut self, key: usize) {
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
                Ok(0) => return self.close(key, CloseReason::ClosedByPeer),
                Ok(count) => {
                    connection.input.commit(count);
                    self.io.stats.bytes_in += count as u64;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return self.close(key, CloseReason::Io(error)),
            }
            if let Err(reason) = self.handle_input(key) {
                return self.close(key, reason);
            }
            if self.io.stopping {
                return;
            }
        }
        self.io.ready.push(key);
    }

    /// Handles every complete frame (or client command) in the connection's input buffer.
    pub(super) fn handle_input(&mut self, key: usize) -> Result<(), CloseReason> {
        if self.io.connections[key].mode == Mode::Client {
            // A client's bad request is answered, not a reason to drop it mid-reply.
            self.handle_client_input(key);
            return Ok(());
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
        result.map_err(CloseReason::Protocol)
    }

    /// A frame on a peer connection: the role's once the connection is up, the handshake's
    /// before.
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
            (State::Handshaking, message) => self.handle_handshake(key, message),
            (State::Connecting, message) => {
                Err(format!("{:?} frame before the handshake", message.kind()))
            }
        }
    }
}

impl NetIo {
    pub(super) fn mark_dirty(&mut self, key: usize) {
        self.dirty.push(key);
    }

    /// Writes what the connection has queued. `Ok(true)`: more remains and the socket may take
    /// it now; `Ok(false)`: done for now (empty, or `WouldBlock` — a writable event will follow).
    pub(super) fn flush(&mut self, key: usize) -> io::Result<bool> {
        let Some(connection) = self.connections.get_mut(key) else {
            return Ok(false);
        };
        if connection.state == State::Connecting {
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
        Ok(more)
    }

    /// The connection to `peer`, if the peer is up.
    pub(super) fn up_connection(&mut self, peer: NodeId) -> Option<&mut Connection> {
        let state = &self.peers[peer];
        if !state.up {
            return None;
        }
        state.connection.map(|key| &mut self.connections[key])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_list_holds_each_key_once_in_the_order_queued() {
        let mut list = KeyList::with_slots(4);
        for key in [2, 0, 2, 3, 0] {
            list.push(key);
        }
        assert_eq!(list.len(), 3);
        assert_eq!(list.pop_front(), Some(2));
        list.push(2); // no longer listed: queued again, at the back
        list.swap_remove(0); // 0 goes, the last (2) takes its place
        assert_eq!([list.get(0), list.get(1)], [2, 3]);
        for key in 0..4 {
            list.push(key);
        }
        assert_eq!(list.len(), 4);
        let drained: Vec<usize> = std::iter::from_fn(|| list.pop_front()).collect();
        assert_eq!(drained, [2, 3, 0, 1]);
        assert!(list.is_empty());
    }
}
