//! `pollen chaos-proxy`: a TCP relay that puts real latency, jitter, a bandwidth limit and cuts
//! between real processes (this kernel has no netem). One mio loop, like the nodes.
//!
//! Every accepted connection gets its own connection to `--to`; bytes read on one side are
//! queued with a release time (arrival + latency + a random jitter, never earlier than the bytes
//! before them, so order is kept) and written to the other side once released, at most
//! `--bandwidth` bytes per second per direction. `--cut-after-ms N` closes every relayed pair N
//! ms after start and refuses new ones from then on (a permanent partition of whatever goes
//! through it); `--reset-every-ms N` closes every pair every N ms (the clients may reconnect).
//! A direction holding more than `QUEUED_BYTES_MAX` stops reading (backpressure), so memory is
//! bounded whatever the peers do.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{Rng, SeedableRng};
use slab::Slab;

use crate::{debug, info};

/// Bytes one direction may hold before the proxy stops reading it.
pub const QUEUED_BYTES_MAX: usize = 4 << 20;
const READ_CHUNK: usize = 64 * 1024;
const LISTENER: Token = Token(usize::MAX);

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub to: SocketAddr,
    pub latency: Duration,
    pub jitter: Duration,
    /// Bytes per second per direction; 0 is unlimited.
    pub bandwidth: u64,
    pub cut_after: Option<Duration>,
    pub reset_every: Option<Duration>,
    pub seed: u64,
}

/// Bytes on their way in one direction.
#[derive(Default)]
struct Lane {
    /// (release time, bytes), in order.
    queue: VecDeque<(Instant, Vec<u8>)>,
    /// Bytes of the front chunk already written.
    written: usize,
    queued: usize,
    last_release: Option<Instant>,
    /// Bytes this second's budget still allows, and when the budget refills.
    budget: u64,
    refill_at: Option<Instant>,
    /// The reading side closed: finish writing, then shut the other side's write half.
    eof: bool,
    /// The last write would block: wait for the writable event, not a deadline.
    blocked: bool,
    shut: bool,
}

struct Pair {
    /// `sides[0]` is the accepted client, `sides[1]` the connection to `--to`.
    sides: [TcpStream; 2],
    /// `lanes[0]` carries client → server, `lanes[1]` server → client.
    lanes: [Lane; 2],
}

pub struct Proxy {
    config: Config,
    poll: Poll,
    listener: TcpListener,
    pairs: Slab<Pair>,
    rng: Xoshiro256PlusPlus,
    started: Instant,
    cut: bool,
    next_reset: Option<Instant>,
    scratch: Vec<u8>,
}

impl Proxy {
    pub fn bind(config: Config) -> io::Result<Proxy> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let started = Instant::now();
        Ok(Proxy {
            rng: Xoshiro256PlusPlus::seed_from_u64(config.seed),
            next_reset: config.reset_every.map(|every| started + every),
            config,
            poll,
            listener,
            pairs: Slab::new(),
            started,
            cut: false,
            scratch: vec![0; READ_CHUNK],
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs until an I/O error of the poll itself.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.next_deadline().map(|at| {
                at.saturating_duration_since(Instant::now()) + Duration::from_micros(100)
            });
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
            for event in &events {
                if event.token() == LISTENER {
                    self.accept();
                }
            }
            self.on_time();
            // Level-style: try every pair; the proxy is a test tool with a handful of pairs.
            let keys: Vec<usize> = self.pairs.iter().map(|(key, _)| key).collect();
            for key in keys {
                if let Err(reason) = self.pump(key) {
                    self.close(key, &reason);
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let (client, from) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    info!("chaos-proxy: accept: {error}");
                    return;
                }
            };
            if self.cut {
                debug!("chaos-proxy: refusing {from} (cut)");
                continue;
            }
            let server = match TcpStream::connect(self.config.to) {
                Ok(server) => server,
                Err(error) => {
                    info!("chaos-proxy: connect {}: {error}", self.config.to);
                    continue;
                }
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let entry = self.pairs.vacant_entry();
            let key = entry.key();
            let mut pair = Pair {
                sides: [client, server],
                lanes: [Lane::default(), Lane::default()],
            };
            let interest = Interest::READABLE | Interest::WRITABLE;
            let registry = self.poll.registry();
            let registered = registry
                .register(&mut pair.sides[0], Token(2 * key), interest)
                .and_then(|()| registry.register(&mut pair.sides[1], Token(2 * key + 1), interest));
            if let Err(error) = registered {
                info!("chaos-proxy: register: {error}");
                continue;
            }
            entry.insert(pair);
            info!(
                "chaos-proxy: {from} → {} relayed (pair {key})",
                self.config.to
            );
        }
    }

    fn on_time(&mut self) {
        let now = Instant::now();
        if let Some(after) = self.config.cut_after
            && !self.cut
            && now >= self.started + after
        {
            self.cut = true;
            info!("chaos-proxy: cut: closing every pair and refusing new ones");
            self.close_all("cut");
        }
        if let (Some(at), Some(every)) = (self.next_reset, self.config.reset_every)
            && now >= at
        {
            self.next_reset = Some(now + every);
            self.close_all("reset");
        }
    }

    fn close_all(&mut self, reason: &str) {
        let keys: Vec<usize> = self.pairs.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, reason);
        }
    }

    fn close(&mut self, key: usize, reason: &str) {
        let mut pair = self.pairs.remove(key);
        for side in &mut pair.sides {
            let _ = self.poll.registry().deregister(side);
            let _ = side.shutdown(std::net::Shutdown::Both);
        }
        info!("chaos-proxy: pair {key} closed: {reason}");
    }

    /// Reads what is readable, writes what is released; `Err` closes the pair.
    fn pump(&mut self, key: usize) -> Result<(), String> {
        let now = Instant::now();
        for from in 0..2 {
            self.read_side(key, from, now)?;
        }
        for lane in 0..2 {
            self.write_lane(key, lane, now)?;
        }
        let pair = &self.pairs[key];
        if pair.lanes.iter().all(|lane| lane.shut) {
            return Err("both sides finished".to_string());
        }
        Ok(())
    }

    fn read_side(&mut self, key: usize, from: usize, now: Instant) -> Result<(), String> {
        let jitter_us = self.config.jitter.as_micros() as u64;
        loop {
            let pair = &mut self.pairs[key];
            let lane = &mut pair.lanes[from];
            if lane.eof || lane.queued >= QUEUED_BYTES_MAX {
                return Ok(());
            }
            let count = match pair.sides[from].read(&mut self.scratch) {
                Ok(0) => {
                    lane.eof = true;
                    return Ok(());
                }
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(format!("read: {error}")),
            };
            let jitter = if jitter_us > 0 {
                Duration::from_micros(self.rng.next_u64() % (jitter_us + 1))
            } else {
                Duration::ZERO
            };
            let release =
                (now + self.config.latency + jitter).max(lane.last_release.unwrap_or(now));
            lane.last_release = Some(release);
            lane.queue
                .push_back((release, self.scratch[..count].to_vec()));
            lane.queued += count;
        }
    }

    fn write_lane(&mut self, key: usize, index: usize, now: Instant) -> Result<(), String> {
        let bandwidth = self.config.bandwidth;
        let pair = &mut self.pairs[key];
        let (lanes, sides) = (&mut pair.lanes, &mut pair.sides);
        let lane = &mut lanes[index];
        let to = &mut sides[1 - index];
        lane.blocked = false;
        while let Some((release, bytes)) = lane.queue.front() {
            if *release > now {
                break;
            }
            let mut end = bytes.len();
            if bandwidth > 0 {
                if lane.refill_at.is_none_or(|at| now >= at) {
                    lane.budget = bandwidth;
                    lane.refill_at = Some(now + Duration::from_secs(1));
                }
                if lane.budget == 0 {
                    break;
                }
                end = end.min(lane.written + lane.budget as usize);
            }
            match to.write(&bytes[lane.written..end]) {
                Ok(count) => {
                    lane.written += count;
                    lane.queued -= count;
                    if bandwidth > 0 {
                        lane.budget -= count as u64;
                    }
                    if lane.written == bytes.len() {
                        lane.queue.pop_front();
                        lane.written = 0;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    lane.blocked = true;
                    return Ok(());
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(format!("write: {error}")),
            }
        }
        if lane.eof && lane.queue.is_empty() && !lane.shut {
            lane.shut = true;
            let _ = to.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }

    /// The earliest moment something is due: a release, a budget refill, a cut or a reset.
    fn next_deadline(&self) -> Option<Instant> {
        let mut deadline: Option<Instant> = None;
        let mut consider = |at: Instant| deadline = Some(deadline.map_or(at, |d| d.min(at)));
        for (_, pair) in &self.pairs {
            for lane in &pair.lanes {
                let Some(&(release, _)) = lane.queue.front() else {
                    continue;
                };
                if lane.blocked {
                    continue;
                }
                match lane.refill_at {
                    Some(refill) if self.config.bandwidth > 0 && lane.budget == 0 => {
                        consider(release.max(refill))
                    }
                    _ => consider(release),
                }
            }
        }
        if let Some(after) = self.config.cut_after
            && !self.cut
        {
            consider(self.started + after);
        }
        if let Some(at) = self.next_reset {
            consider(at);
        }
        deadline
    }
}
