//! lamport: the asynchronous "scale model" of a distributed-systems course. Each machine runs
//! at its own clock rate (ticks per real second, drawn from the seed in `rate_min..=rate_max`),
//! keeps a network queue filled as messages arrive (not limited by its rate), and on each tick:
//! - if the queue holds a message: takes exactly one, sets its logical clock to
//!   `max(local, received) + 1`, and logs the receive with the queue length left;
//! - otherwise draws `r` in `1..=internal_max`: 1 sends its clock to "one" machine, 2 to
//!   "another", 3 to all others (one event, one increment, however many copies); anything else
//!   is an internal event. Every event increments the clock and is logged.
//!
//! "One" and "another" with more than three machines: machines are ordered by id in a circle;
//! "one" is the next (`id + 1`), "another" the previous (`id − 1`). With three machines these are
//! exactly the two others, as in the assignment.
//!
//! The log is CSV, one line per event (see `EVENT_HEADER`), emitted through `Io::output`; with
//! `vector` it adds a vector clock (own entry +1 per event, receives merge the sender's).
//! Machines start ticking once connected to all others (or after `START_TIMEOUT_US`), and stop
//! after `duration`. Faults: a send to a machine whose connection is down is lost (the send is
//! still logged); otherwise TCP loses nothing.

use std::collections::VecDeque;
use std::fmt::Write as _;

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::Rng;

use crate::info;
use crate::node::{Io, Micros, NodeId, Role, Timer};
use crate::roles::checksum::stream_rng;
use crate::wire::{Items, LamportMessage, Message};

/// The CSV header; `vector` (entries joined by ';') is present only with vector clocks.
pub const EVENT_HEADER: &str = "machine,event,system_time_us,logical_clock,queue_length,peer,rate";
const START_TIMEOUT_US: Micros = 5_000_000;

const TIMER_TICK: Timer = Timer(1);
const TIMER_START: Timer = Timer(2);
const TIMER_STOP: Timer = Timer(3);

#[derive(Clone, Debug)]
pub struct Config {
    pub nodes: usize,
    pub seed: u64,
    pub duration_us: Micros,
    pub rate_min: u32,
    pub rate_max: u32,
    pub internal_max: u32,
    pub vector: bool,
}

impl Config {
    pub fn new(nodes: usize, seed: u64, duration_us: Micros) -> Config {
        Config {
            nodes,
            seed,
            duration_us,
            rate_min: 1,
            rate_max: 6,
            internal_max: 10,
            vector: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub ticks: u64,
    pub receives: u64,
    pub sends: u64,
    pub internals: u64,
}

pub struct Lamport {
    config: Config,
    node: NodeId,
    rng: Xoshiro256PlusPlus,
    /// Ticks per second.
    pub rate: u32,
    pub clock: u64,
    vector: Vec<u64>,
    /// Received messages waiting for a tick: (sender, its clock).
    queue: VecDeque<(NodeId, u64)>,
    /// Their vector clocks, `nodes` entries per message, when vectors are on.
    queue_vectors: VecDeque<u64>,
    up: usize,
    started: bool,
    stopped: bool,
    line: String,
    pub stats: Stats,
}

impl Lamport {
    pub fn new(config: Config, node: NodeId) -> Lamport {
        assert!(node < config.nodes && config.rate_min >= 1 && config.rate_min <= config.rate_max);
        let mut rng = stream_rng(config.seed, node);
        let span = (config.rate_max - config.rate_min + 1) as u64;
        let rate = config.rate_min + (rng.next_u64() % span) as u32;
        Lamport {
            vector: vec![0; config.nodes],
            queue: VecDeque::with_capacity(1024),
            queue_vectors: VecDeque::new(),
            node,
            rng,
            rate,
            clock: 0,
            up: 0,
            started: false,
            stopped: false,
            line: String::with_capacity(256),
            stats: Stats::default(),
            config,
        }
    }

    pub fn queue_length(&self) -> usize {
        self.queue.len()
    }

    fn tick_us(&self) -> Micros {
        1_000_000 / self.rate as Micros
    }

    fn begin(&mut self, io: &mut impl Io) {
        if self.started {
            return;
        }
        self.started = true;
        let mut header = String::from(EVENT_HEADER);
        if self.config.vector {
            header.push_str(",vector");
        }
        io.output(format_args!("{header}"));
        info!("machine {}: {} ticks per second", self.node, self.rate);
        io.set_timer(self.tick_us(), TIMER_TICK);
        io.set_timer(self.config.duration_us, TIMER_STOP);
    }

    /// One tick: a receive if the queue holds a message, else a send or an internal event.
    pub fn tick(&mut self, io: &mut impl Io) {
        self.stats.ticks += 1;
        if let Some((from, received)) = self.queue.pop_front() {
            self.clock = self.clock.max(received) + 1;
            if self.config.vector {
                for entry in 0..self.config.nodes {
                    let theirs = self.queue_vectors.pop_front().unwrap_or(0);
                    self.vector[entry] = self.vector[entry].max(theirs);
                }
                self.vector[self.node] += 1;
            }
            self.stats.receives += 1;
            self.log(io, "receive", Some(from));
            return;
        }
        let draw = 1 + (self.rng.next_u64() % self.config.internal_max as u64) as u32;
        let nodes = self.config.nodes;
        let one = (self.node + 1) % nodes;
        let another = (self.node + nodes - 1) % nodes;
        match draw {
            1 if nodes > 1 => self.send(io, &[one], Some(one)),
            2 if nodes > 1 => self.send(io, &[another], Some(another)),
            3 if nodes > 1 => {
                let all: Vec<NodeId> = (0..nodes).filter(|&n| n != self.node).collect();
                self.send(io, &all, None);
            }
            _ => {
                self.clock += 1;
                if self.config.vector {
                    self.vector[self.node] += 1;
                }
                self.stats.internals += 1;
                self.log(io, "internal", Some(self.node));
            }
        }
    }

    fn send(&mut self, io: &mut impl Io, to: &[NodeId], peer: Option<NodeId>) {
        self.clock += 1;
        self.stats.sends += 1;
        // The vector clock counts this event before it travels.
        if self.config.vector {
            self.vector[self.node] += 1;
        }
        let vector: &[u64] = if self.config.vector {
            &self.vector
        } else {
            &[]
        };
        let message = Message::LamportMessage(LamportMessage {
            clock: self.clock,
            vector: Items::Host(vector),
        });
        for &target in to {
            io.send(target, &message);
        }
        match peer {
            Some(peer) => self.log(io, "send", Some(peer)),
            None => self.log(io, "send_all", None),
        }
    }

    /// Logs the event (every path has already counted it in the clocks).
    fn log(&mut self, io: &mut impl Io, event: &str, peer: Option<NodeId>) {
        self.line.clear();
        let peer = match peer {
            Some(peer) => peer.to_string(),
            None => "all".to_string(),
        };
        let _ = write!(
            self.line,
            "{},{event},{},{},{},{peer},{}",
            self.node,
            io.now(),
            self.clock,
            self.queue.len(),
            self.rate
        );
        if self.config.vector {
            self.line.push(',');
            for (index, entry) in self.vector.iter().enumerate() {
                if index > 0 {
                    self.line.push(';');
                }
                let _ = write!(self.line, "{entry}");
            }
        }
        io.output(format_args!("{}", self.line));
    }

    fn invariants(&self) {
        assert_eq!(
            self.queue_vectors.len(),
            if self.config.vector {
                self.queue.len() * self.config.nodes
            } else {
                0
            }
        );
        assert_eq!(
            self.stats.receives + self.stats.sends + self.stats.internals,
            self.stats.ticks
        );
    }
}

impl Role for Lamport {
    fn on_start(&mut self, io: &mut impl Io) {
        io.set_timer(START_TIMEOUT_US, TIMER_START);
        if self.config.nodes == 1 {
            self.begin(io);
        }
    }

    fn on_message(&mut self, _io: &mut impl Io, from: NodeId, message: Message<'_>) {
        let Message::LamportMessage(message) = message else {
            return;
        };
        if self.stopped {
            return;
        }
        self.queue.push_back((from, message.clock));
        if self.config.vector {
            for entry in 0..self.config.nodes {
                let value = if entry < message.vector.len() {
                    message.vector.get(entry)
                } else {
                    0
                };
                self.queue_vectors.push_back(value);
            }
        }
        self.invariants();
    }

    fn on_timer(&mut self, io: &mut impl Io, timer: Timer) {
        if self.stopped {
            return;
        }
        match timer {
            TIMER_START => self.begin(io),
            TIMER_TICK => {
                self.tick(io);
                io.set_timer(self.tick_us(), TIMER_TICK);
            }
            TIMER_STOP => {
                self.stopped = true;
                let stats = self.stats;
                info!(
                    "machine {}: {} ticks at {}/s: {} receives, {} sends, {} internal; \
                     clock {}, queue {}",
                    self.node,
                    stats.ticks,
                    self.rate,
                    stats.receives,
                    stats.sends,
                    stats.internals,
                    self.clock,
                    self.queue.len()
                );
                io.stop();
            }
            _ => {}
        }
        self.invariants();
    }

    fn on_peer_up(&mut self, io: &mut impl Io, _peer: NodeId) {
        self.up += 1;
        if self.up + 1 >= self.config.nodes {
            self.begin(io);
        }
    }

    fn on_peer_down(&mut self, _io: &mut impl Io, _peer: NodeId) {
        self.up = self.up.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::recording::{self, RecordingIo};

    /// What the tests keep of what a machine sends: (to, clock, vector).
    #[derive(Default)]
    struct Sent(Vec<(NodeId, u64, Vec<u64>)>);

    impl recording::Record for Sent {
        fn sent(&mut self, to: NodeId, message: &Message<'_>) {
            if let Message::LamportMessage(m) = message {
                self.0.push((to, m.clock, m.vector.iter().collect()));
            }
        }
    }

    type FakeIo = RecordingIo<Sent>;

    fn machine(internal_max: u32) -> (Lamport, FakeIo) {
        let mut config = Config::new(3, 1, 60_000_000);
        config.internal_max = internal_max;
        config.vector = true;
        (Lamport::new(config, 0), FakeIo::default())
    }

    fn deliver(machine: &mut Lamport, io: &mut FakeIo, from: NodeId, clock: u64, vector: &[u64]) {
        let message = LamportMessage {
            clock,
            vector: Items::Host(vector),
        };
        machine.on_message(io, from, Message::LamportMessage(message));
    }

    fn event(io: &FakeIo) -> Vec<String> {
        io.lines
            .last()
            .unwrap()
            .split(',')
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_queued_message_is_received_before_anything_is_sent() {
        let (mut machine, mut io) = machine(3); // every idle tick would send
        deliver(&mut machine, &mut io, 2, 7, &[0, 0, 4]);
        machine.tick(&mut io);
        let fields = event(&io);
        assert_eq!(fields[1], "receive");
        assert_eq!(fields[3], "8", "max(0, 7) + 1");
        assert_eq!(fields[5], "2");
        assert_eq!(
            fields[7], "1;0;4",
            "the sender's vector merged, own entry counted"
        );
        assert!(io.record.0.is_empty(), "no send on a receiving tick");
    }

    #[test]
    fn exactly_one_message_per_tick_and_the_queue_length_after() {
        let (mut machine, mut io) = machine(3);
        deliver(&mut machine, &mut io, 1, 2, &[0, 2, 0]);
        deliver(&mut machine, &mut io, 2, 30, &[0, 0, 9]);
        machine.tick(&mut io);
        assert_eq!(event(&io)[4], "1", "one left after taking one");
        assert_eq!(event(&io)[3], "3");
        machine.tick(&mut io);
        assert_eq!(event(&io)[3], "31", "max(3, 30) + 1");
        assert_eq!(event(&io)[4], "0");
        assert_eq!(machine.queue_length(), 0);
    }

    #[test]
    fn idle_ticks_send_or_act_internally_and_every_event_counts() {
        let (mut machine, mut io) = machine(3);
        for tick in 1..=30 {
            machine.tick(&mut io);
            let fields = event(&io);
            assert!(
                fields[1].starts_with("send"),
                "with K = 3 every idle tick sends"
            );
            assert_eq!(
                fields[3],
                tick.to_string(),
                "each event increments the clock once"
            );
        }
        // "One" is machine 1, "another" machine 2, "all" both; messages carry the clock.
        assert!(io.record.0.iter().all(|(to, _, _)| *to == 1 || *to == 2));
        assert!(
            io.record
                .0
                .iter()
                .all(|(_, clock, vector)| vector[0] == *clock)
        );
        let (mut quiet, mut io) = self::machine(1_000_000);
        for _ in 0..20 {
            quiet.tick(&mut io);
        }
        let internal = io
            .lines
            .iter()
            .filter(|line| line.contains(",internal,"))
            .count();
        assert!(
            internal >= 19,
            "with a huge K almost every tick is internal"
        );
    }

    #[test]
    fn rates_come_from_the_range_and_the_seed() {
        for node in 0..3 {
            let config = Config::new(3, 9, 1);
            let rate = Lamport::new(config.clone(), node).rate;
            assert!((1..=6).contains(&rate));
            assert_eq!(Lamport::new(config, node).rate, rate, "deterministic");
        }
    }
}
