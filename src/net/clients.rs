//! RESP clients on `--resp-port` (`redis-cli`, `redis-benchmark`): at most `CLIENTS_MAX` at
//! once (more are closed as they are accepted, so clients can never take the slots the
//! connection table keeps for peers), no handshake. Their input is RESP2 arrays or inline commands, parsed
//! in place (`wire::client`) and handed to the role as commands; replies are encoded into the
//! client's out buffer in command order.
//!
//! Bounds: a pipelining client's input waits while its unwritten replies are past the
//! high-water mark, and is read again once they drain below the low-water mark; a client that
//! does not read its replies at all, so that one no longer fits, is disconnected. A request
//! that does not parse gets its error reply after the replies it is owed, and the client is
//! closed: nothing more is read from a stream that cannot be trusted.

use std::io;

use super::Driver;
use super::NetIo;
use super::buffer::Buffer;
use super::connection::{Connection, Mode, OUTPUT_HIGH_WATER};
use crate::node::{ClientId, Role};
use crate::wire::client::{self, Command, Reply};
use crate::{debug, info};

/// RESP clients connected at once, beyond the peers.
pub(super) const CLIENTS_MAX: usize = 1024;

impl<R: Role> Driver<R> {
    /// Accepts every client waiting on the client port.
    pub(super) fn accept_clients(&mut self) {
        loop {
            let Some(listener) = &self.io.client_listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, address)) => {
                    if self.io.clients >= CLIENTS_MAX {
                        info!("refusing client {address}: {CLIENTS_MAX} clients connected");
                        continue;
                    }
                    if self.io.connections.len() == self.io.connections.capacity() {
                        info!("refusing client {address}: connection table full");
                        continue;
                    }
                    debug!("client {address} connected");
                    if let Err(error) = self.open(stream, Mode::Client, None) {
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

    /// Hands every complete RESP command to the role, unless the client's replies are piling up
    /// (then the rest waits: pipelining clients get backpressure, not unbounded buffers).
    pub(super) fn handle_client_input(&mut self, key: usize) {
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
    }
}

impl NetIo {
    /// The connection of `client`, if it is a client still connected.
    pub(super) fn client_mut(&mut self, client: ClientId) -> Option<&mut Connection> {
        let connection = self.connections.get_mut(client)?;
        (connection.mode == Mode::Client).then_some(connection)
    }

    /// Queues a reply to a RESP client; false if it is gone or closing.
    pub(super) fn reply_client(&mut self, client: ClientId, reply: &Reply<'_>) -> bool {
        let Some(connection) = self.client_mut(client) else {
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
}
