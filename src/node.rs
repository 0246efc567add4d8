//! The boundary between a role and whatever drives it.
//!
//! A role is a pure state machine: it reacts to `on_*` calls and acts only through the `Io`
//! handle it is given — time, sending, timers and results all pass through `Io`. The real
//! driver (`net/`) implements `Io` over mio sockets and a timer wheel; the simulator (`sim/`)
//! implements it over virtual time and a simulated network. The same role value runs under both.
//!
//! Guarantees a driver gives a role:
//! - Messages from one peer arrive in the order that peer sent them (TCP order), each exactly
//!   once while the connection stays up. After `on_peer_down` anything in flight may be lost.
//! - `on_peer_up` precedes any message from that peer on a new connection; `on_peer_down`
//!   follows the last one.
//! - Callbacks never nest: a role is never re-entered while one of its handlers runs.
//!   Self-sends are delivered after the current handler returns.

use crate::wire::Message;
use crate::wire::client::{Command, Reply};

/// Index of a node in the cluster's peers list (0-based).
pub type NodeId = usize;

/// A client of this node — a RESP connection, or the REPL on stdin — as the driver numbers it.
/// Ids are reused after `on_client_closed`.
pub type ClientId = usize;

/// Microseconds. `Io::now` is monotonic and, in the real driver, comparable across processes
/// on one host (it is anchored to the Unix epoch at start-up).
pub type Micros = u64;

/// A role's name for a timer. Roles give their timers names with constants or an enum
/// converted to this; the driver hands the value back unchanged in `on_timer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timer(pub u32);

/// Handle to cancel a timer. Cancelling a timer that has already fired is a no-op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerKey {
    pub index: u32,
    pub generation: u32,
}

pub trait Role {
    fn on_start(&mut self, io: &mut impl Io);
    fn on_message(&mut self, io: &mut impl Io, from: NodeId, message: Message<'_>);
    fn on_timer(&mut self, io: &mut impl Io, timer: Timer);
    fn on_peer_up(&mut self, io: &mut impl Io, peer: NodeId);
    fn on_peer_down(&mut self, io: &mut impl Io, peer: NodeId);
    /// The out buffer to `peer` drained after `send_space` reported it (nearly) full or a
    /// `send` was refused. Roles that stream as fast as the network allows continue here.
    fn on_writable(&mut self, io: &mut impl Io, peer: NodeId) {
        let _ = (io, peer);
    }
    /// A parsed client command. Replies go through `Io::reply`, in command order per client;
    /// they may come later (after a round trip to other nodes).
    fn on_client(&mut self, io: &mut impl Io, client: ClientId, command: Command<'_>) {
        let _ = command;
        io.reply(client, &Reply::Error("ERR this node serves no clients"));
    }
    /// A client's input could not be parsed. `error` is the reply it is owed — after the
    /// replies to its earlier commands, which may still be on their way — and with `close` the
    /// client is then closed (a RESP client's stream cannot be trusted past a protocol error;
    /// the REPL goes on with its next line). Roles that answer later override this to keep
    /// the order.
    fn on_client_error(&mut self, io: &mut impl Io, client: ClientId, error: &str, close: bool) {
        io.reply(client, &Reply::Error(error));
        if close {
            io.close_client(client);
        }
    }
    fn on_client_closed(&mut self, io: &mut impl Io, client: ClientId) {
        let _ = (io, client);
    }
    /// Once per loop iteration, just before the driver writes to sockets (Redis's
    /// `beforesleep`): the moment to emit frames batched during the iteration.
    fn on_flush(&mut self, io: &mut impl Io) {
        let _ = io;
    }
}

pub trait Io {
    /// Monotonic time in microseconds, supplied by the driver.
    fn now(&self) -> Micros;
    /// This node's id.
    fn node(&self) -> NodeId;
    /// Encodes `message` straight into the out buffer of `to` (or delivers it locally when
    /// `to` is this node). Returns false, and queues nothing, when `to` is not connected or its
    /// buffer has no room; in the latter case `on_writable(to)` follows once it drains.
    fn send(&mut self, to: NodeId, message: &Message<'_>) -> bool;
    /// Bytes the role may queue to `to` before the out buffer reaches its high-water mark;
    /// 0 when not connected. A small answer arms `on_writable(to)`.
    fn send_space(&mut self, to: NodeId) -> usize;
    fn set_timer(&mut self, after: Micros, timer: Timer) -> TimerKey;
    fn cancel_timer(&mut self, key: TimerKey);
    /// One line of results (stdout in `net/`, captured in `sim/`).
    fn output(&mut self, line: std::fmt::Arguments<'_>);
    /// The role has finished: flush what is queued and leave the loop.
    fn stop(&mut self);
    /// Queues a reply to a client (RESP or REPL text, as the client speaks). A client whose
    /// output grows past its limit is disconnected; false if the client is gone.
    fn reply(&mut self, client: ClientId, reply: &Reply<'_>) -> bool;
    /// Closes a client once its queued replies are written (QUIT).
    fn close_client(&mut self, client: ClientId);
    /// Stops (`true`) or resumes (`false`) reading a client's commands: backpressure from a
    /// role whose work for the client is backed up. A driver without real clients may ignore it.
    fn hold_client(&mut self, client: ClientId, hold: bool) {
        let _ = (client, hold);
    }
}
