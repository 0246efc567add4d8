//! `SimIo`: the `Io` handle a role gets inside the simulator, the counterpart of the real
//! driver's. Everything a role does goes through it into the world: a send becomes a frame on
//! the simulated network (or a local delivery), a timer an event scaled by the node's clock
//! rate, output and client replies are recorded for the checkers, and `stop` closes the
//! node's connections once its last frames have arrived. The role cannot tell the difference.

use super::world::{Action, Observer, World};
use crate::node::{ClientId, Io, Micros, NodeId, Timer, TimerKey};
use crate::wire::Message;
use crate::wire::client::Reply;

/// Virtual time between a self-send and its delivery: one loop iteration of the real driver.
const LOCAL_DELIVERY_US: Micros = 10;

pub(super) struct SimIo<'a, O: Observer> {
    pub(super) world: &'a mut World<O>,
    pub(super) node: NodeId,
}

impl<O: Observer> Io for SimIo<'_, O> {
    fn now(&self) -> Micros {
        self.world.clock_us(self.node)
    }

    fn node(&self) -> NodeId {
        self.node
    }

    fn send(&mut self, to: NodeId, message: &Message<'_>) -> bool {
        let world = &mut *self.world;
        let from = self.node;
        world.observer.sent(world.now, from, to, message);
        if to == from {
            // Self-sends never touch the network.
            let frame = world.encode(message);
            let incarnation = world.nodes[to].incarnation;
            // The real driver hands a self-send to the role in its next loop iteration; here
            // that iteration costs 10 µs, so a node that keeps messaging itself (a
            // ring of one) lets virtual time, and its timers, move on.
            let at = world.now + LOCAL_DELIVERY_US;
            world.push_for(at, to, incarnation, Action::Local { frame });
            return true;
        }
        let bytes = message.encoded_len();
        let Some(arrival) = world.transmit(from, to, bytes) else {
            return false;
        };
        let epoch = world.epoch(from, to);
        let frame = world.encode(message);
        let incarnation = world.nodes[to].incarnation;
        let deliver = Action::Deliver {
            from,
            epoch,
            frame,
            bytes,
            arrived: false,
        };
        world.push_for(arrival, to, incarnation, deliver);
        true
    }

    fn send_space(&mut self, to: NodeId) -> usize {
        if to == self.node {
            return usize::MAX;
        }
        self.world.send_space(self.node, to)
    }

    fn set_timer(&mut self, after: Micros, timer: Timer) -> TimerKey {
        self.world.arm_timer(self.node, after, timer)
    }

    fn cancel_timer(&mut self, key: TimerKey) {
        self.world.cancel_timer(key);
    }

    fn output(&mut self, line: std::fmt::Arguments<'_>) {
        let text = line.to_string();
        self.world.log(self.node, format_args!("output {text}"));
        self.world.nodes[self.node].outputs.push(text);
    }

    fn reply(&mut self, client: ClientId, reply: &Reply<'_>) -> bool {
        let mut text = Vec::new();
        reply.encode_text(&mut text);
        let line = String::from_utf8_lossy(&text).trim_end().to_string();
        self.world
            .log(self.node, format_args!("reply to client {client}: {line}"));
        let now = self.world.now;
        self.world.nodes[self.node]
            .replies
            .push((now, client, line));
        true
    }

    fn close_client(&mut self, client: ClientId) {
        self.world
            .log(self.node, format_args!("close client {client}"));
    }

    fn stop(&mut self) {
        let node = self.node;
        self.world.nodes[node].stopped = true;
        self.world.log(node, format_args!("stop"));
        self.world.close_after_last_frames(node);
    }
}
