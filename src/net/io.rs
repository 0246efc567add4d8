//! The `Io` a role is handed by the real driver. Nothing here touches a socket: `send` encodes
//! into the peer connection's out buffer (or, to this node itself, into the local buffer
//! delivered after the handler returns), `reply` into the client's, and the loop writes them
//! before it next polls. A full buffer refuses the frame and arms `on_writable`; that refusal
//! is the role's backpressure. Timers go into the wheel, in whole ticks from the driver's epoch.

use std::io::{self, Write};

use super::NetIo;
use super::connection::{OUTPUT_HIGH_WATER, OUTPUT_LOW_WATER};
use super::repl::REPL_CLIENT;
use super::wheel::TICK_US;
use crate::node::{ClientId, Io, Micros, NodeId, Timer, TimerKey};
use crate::wire::Message;
use crate::wire::client::Reply;

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
            return self.reply_repl(reply);
        }
        self.reply_client(client, reply)
    }

    fn close_client(&mut self, client: ClientId) {
        if let Some(connection) = self.client_mut(client) {
            connection.close_after_flush = true;
            self.mark_dirty(client);
        }
    }

    fn hold_client(&mut self, client: ClientId, hold: bool) {
        if let Some(connection) = self.client_mut(client) {
            let released = connection.held && !hold;
            connection.held = hold;
            if released {
                // Commands already buffered, and the socket, are read again.
                self.ready.push(client);
            }
        }
    }
}
