//! A recording `Io` for role unit tests: time stands still unless a test moves it; output
//! lines and client replies are kept; every message a role sends goes to a `Record` the test
//! chooses (which keeps what it needs of it, decoded).

use crate::node::{ClientId, Io, Micros, NodeId, Timer, TimerKey};
use crate::wire::Message;
use crate::wire::client::Reply;

/// What a test keeps of the messages a role sends.
pub trait Record: Default {
    fn sent(&mut self, to: NodeId, message: &Message<'_>);
}

#[derive(Default)]
pub struct RecordingIo<R: Record> {
    pub now: Micros,
    pub lines: Vec<String>,
    /// Replies per client: a bulk string as its text, anything else as `Debug`.
    pub replies: Vec<(ClientId, String)>,
    pub stopped: bool,
    pub record: R,
}

impl<R: Record> Io for RecordingIo<R> {
    fn now(&self) -> Micros {
        self.now
    }
    fn node(&self) -> NodeId {
        0
    }
    fn send(&mut self, to: NodeId, message: &Message<'_>) -> bool {
        self.record.sent(to, message);
        true
    }
    fn send_space(&mut self, _to: NodeId) -> usize {
        usize::MAX
    }
    fn set_timer(&mut self, _after: Micros, _timer: Timer) -> TimerKey {
        TimerKey {
            index: 0,
            generation: 0,
        }
    }
    fn cancel_timer(&mut self, _key: TimerKey) {}
    fn output(&mut self, line: std::fmt::Arguments<'_>) {
        self.lines.push(line.to_string());
    }
    fn stop(&mut self) {
        self.stopped = true;
    }
    fn reply(&mut self, client: ClientId, reply: &Reply<'_>) -> bool {
        let text = match reply {
            Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            other => format!("{other:?}"),
        };
        self.replies.push((client, text));
        true
    }
    fn close_client(&mut self, _client: ClientId) {}
}
