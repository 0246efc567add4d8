//! gossip under the simulator, and its checker.
//!
//! The checker stands outside the role. It regenerates every origin's stream from the seed,
//! watches every batch on the wire (checking each value against the regenerated stream and
//! learning each batch's timestamp from the origin's own sends), and after the run checks:
//! 1. every node that did not crash printed exactly one line and stopped;
//! 2. those lines are identical, and so are the prefixes the nodes counted;
//! 3. each line equals a reference the checker computes: the counted prefixes, put in
//!    (timestamp, origin, seq) order, folded with `Checksum` — so nothing is counted twice,
//!    skipped or misordered;
//! 4. the stream of every origin that did not crash is counted whole (nothing a live node
//!    sent is lost), and of a crashed origin at least as much as any survivor received from it
//!    directly (survivors converge on the longest prefix);
//! 5. without crashes, every node held every stream to its announced end when it printed.
//!
//! Partitions, stalls and pauses all heal by `send_for + wait_for / 2`, which is what lets the
//! checker demand agreement from every live node.

use std::collections::BTreeMap;

use super::faults::{self, Fault, Kinds};
use super::{NetConfig, Observer, Sim, SimStats};
use crate::node::{Micros, NodeId};
use crate::roles::checksum::Checksum;
use crate::roles::checksum::{fill_stream_values, stream_rng};
use crate::roles::gossip::{self, Gossip};
use crate::wire::Message;

#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: usize,
    pub seed: u64,
    pub faults: Kinds,
    /// The gossip role's own `--with-seed`.
    pub role_seed: u64,
    pub send_for_us: Micros,
    pub wait_for_us: Micros,
    pub tick_us: Micros,
    pub batch_values: usize,
    pub net: NetConfig,
    /// Faults added to the seed's schedule (for hand-written scenarios).
    pub extra_faults: Vec<(Micros, Fault)>,
    pub trace: bool,
}

/// Batch sizes the seeds cycle through: many small frames, and batches big enough that frames
/// split them (which exercises partial batches, relayed continuations and fold boundaries).
pub const BATCH_SIZES: [usize; 3] = [16, 64, 256];

impl Options {
    pub fn new(nodes: usize, seed: u64, faults: Kinds) -> Options {
        Options {
            nodes,
            seed,
            faults,
            role_seed: seed,
            send_for_us: 500_000,
            wait_for_us: 1_500_000,
            tick_us: 10_000,
            batch_values: BATCH_SIZES[(seed % BATCH_SIZES.len() as u64) as usize],
            net: NetConfig {
                clock_skew: 0.01,
                ..NetConfig::default()
            },
            extra_faults: Vec::new(),
            trace: false,
        }
    }

    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "pollen sim gossip --nodes {} --seed {} --faults {} --send-for {} --wait-for {} \
             --with-seed {} --batch {}",
            self.nodes,
            self.seed,
            self.faults,
            self.send_for_us as f64 / 1e6,
            self.wait_for_us as f64 / 1e6,
            self.role_seed,
            self.batch_values
        )
    }
}

pub struct Report {
    /// What broke, with the command that reproduces it; `None` if every property held.
    pub failure: Option<String>,
    pub stats: SimStats,
    pub lines: Vec<Option<String>>,
    pub faults: Vec<(Micros, Fault)>,
    pub trace: Option<String>,
    pub count: u64,
}

/// What the checker learns from the wire.
struct Checker {
    batch_values: usize,
    /// Per origin: the regenerated stream so far.
    streams: Vec<Vec<u32>>,
    generators: Vec<rand_xoshiro::Xoshiro256PlusPlus>,
    /// Per origin: first seq → (count, timestamp), from the origin's own sends.
    stamps: Vec<BTreeMap<u64, (u64, u64)>>,
    /// `[node][origin]`: contiguous prefix received directly from the origin.
    direct: Vec<Vec<u64>>,
    errors: Vec<String>,
}

impl Checker {
    fn new(nodes: usize, seed: u64, batch_values: usize) -> Checker {
        Checker {
            batch_values,
            streams: vec![Vec::new(); nodes],
            generators: (0..nodes).map(|origin| stream_rng(seed, origin)).collect(),
            stamps: vec![BTreeMap::new(); nodes],
            direct: vec![vec![0; nodes]; nodes],
            errors: Vec::new(),
        }
    }

    fn value(&mut self, origin: NodeId, seq: u64) -> u32 {
        let stream = &mut self.streams[origin];
        while stream.len() as u64 <= seq {
            let start = stream.len();
            stream.resize(start + self.batch_values, 0);
            fill_stream_values(&mut self.generators[origin], &mut stream[start..]);
        }
        stream[seq as usize]
    }

    fn check_values(&mut self, from: NodeId, message: &Message<'_>) {
        let Message::GossipBatch(batch) = message else {
            return;
        };
        let origin = batch.origin as usize;
        for (offset, value) in batch.values.iter().enumerate() {
            let seq = batch.first_seq + offset as u64;
            if self.value(origin, seq) != value && self.errors.len() < 10 {
                self.errors.push(format!(
                    "node {from} sent origin {origin}'s seq {seq} as {value}, not the stream's value"
                ));
            }
        }
    }

    /// The reference line for a node that counted `held[origin]` messages of each origin.
    fn reference(&mut self, held: &[u64]) -> Result<String, String> {
        let mut segments = Vec::new();
        for (origin, &count) in held.iter().enumerate() {
            let mut covered = 0;
            for (&first, &(length, timestamp)) in &self.stamps[origin] {
                if first > covered {
                    break;
                }
                let end = (first + length).min(count);
                if end > covered {
                    segments.push((timestamp, origin, covered, end));
                    covered = end;
                }
            }
            if covered < count {
                return Err(format!(
                    "origin {origin}: seqs {covered}..{count} were counted but never sent"
                ));
            }
        }
        segments.sort();
        let mut checksum = Checksum::default();
        for (_, origin, start, end) in segments {
            let _ = self.value(origin, end.saturating_sub(1));
            checksum.fold(&self.streams[origin][start as usize..end as usize]);
        }
        Ok(checksum.to_string())
    }
}

impl Observer for Checker {
    fn sent(&mut self, _at: Micros, from: NodeId, _to: NodeId, message: &Message<'_>) {
        if let Message::GossipBatch(batch) = message
            && batch.origin as usize == from
        {
            let (count, timestamp) = (batch.values.len() as u64, batch.timestamp_us);
            // A resend may start at the same seq with a shorter frame: keep the longest.
            let entry = self.stamps[from]
                .entry(batch.first_seq)
                .or_insert((count, timestamp));
            if entry.1 != timestamp {
                let seq = batch.first_seq;
                self.errors
                    .push(format!("origin {from} re-sent seq {seq} with a new stamp"));
            }
            entry.0 = entry.0.max(count);
        }
    }

    fn delivered(&mut self, _at: Micros, from: NodeId, to: NodeId, message: &Message<'_>) {
        self.check_values(from, message);
        if let Message::GossipBatch(batch) = message
            && batch.origin as usize == from
        {
            let prefix = &mut self.direct[to][from];
            if batch.first_seq <= *prefix {
                *prefix = (*prefix).max(batch.first_seq + batch.values.len() as u64);
            }
        }
    }
}

/// Runs one simulated gossip cluster and checks it. A panic in a role (an invariant) is a
/// failure like any other, reported with the command that reproduces it.
pub fn run(options: &Options) -> Report {
    super::catch_panic(|| simulate(options), || options.command()).unwrap_or_else(|failure| {
        Report {
            failure: Some(failure),
            stats: SimStats::default(),
            lines: Vec::new(),
            faults: Vec::new(),
            trace: None,
            count: 0,
        }
    })
}

fn simulate(options: &Options) -> Report {
    crate::log::set_level(crate::log::LEVEL_QUIET);
    let nodes = options.nodes;
    let mut config = gossip::Config::new(
        nodes,
        options.role_seed,
        options.send_for_us,
        options.wait_for_us,
    );
    config.tick_us = options.tick_us;
    config.batch_values = options.batch_values;
    config.window_messages = 4096;
    let checker = Checker::new(nodes, options.role_seed, options.batch_values);
    let factory = Box::new(move |node| Gossip::new(config.clone(), node));
    let mut sim = Sim::new(
        nodes,
        options.seed,
        options.net.clone(),
        checker,
        factory,
        options.trace,
    );
    let plan = faults::Plan {
        kinds: options.faults,
        nodes,
        start_us: 20_000,
        heal_by_us: options.send_for_us + options.wait_for_us / 2,
        crashes_max: (nodes - 1) / 2,
        restart: false,
    };
    let mut schedule = faults::schedule(options.seed, &plan);
    schedule.extend(options.extra_faults.iter().cloned());
    sim.schedule(&schedule);
    sim.run_until(options.send_for_us + options.wait_for_us + 1_000_000);
    let lines: Vec<Option<String>> = (0..nodes)
        .map(|node| sim.outputs(node).first().cloned())
        .collect();
    let failure = check(&mut sim, options, &lines).err().map(|error| {
        format!(
            "{error}\n  faults: {schedule:?}\n  reproduce: {}",
            options.command()
        )
    });
    Report {
        failure,
        stats: sim.world.stats,
        count: lines
            .iter()
            .flatten()
            .next()
            .and_then(|l| parse_count(l))
            .unwrap_or(0),
        lines,
        faults: schedule,
        trace: sim.take_trace(),
    }
}

fn check(
    sim: &mut Sim<Gossip, Checker>,
    options: &Options,
    lines: &[Option<String>],
) -> Result<(), String> {
    let nodes = options.nodes;
    let survivors: Vec<NodeId> = (0..nodes).filter(|&node| sim.alive(node)).collect();
    let crashed: Vec<NodeId> = (0..nodes).filter(|&node| !sim.alive(node)).collect();
    if let Some(error) = sim.world.observer.errors.first() {
        return Err(error.clone());
    }
    for &node in &survivors {
        let outputs = sim.outputs(node);
        if outputs.len() != 1 || !sim.stopped(node) {
            return Err(format!(
                "node {node} printed {outputs:?} and stopped: {}",
                sim.stopped(node)
            ));
        }
    }
    let first = survivors[0];
    let held: Vec<Vec<u64>> = (0..nodes)
        .map(|node| sim.role(node).map(Gossip::held).unwrap_or_default())
        .collect();
    for &node in &survivors {
        if lines[node] != lines[first] {
            return Err(format!(
                "node {node} printed {:?}, node {first} {:?}",
                lines[node], lines[first]
            ));
        }
        if held[node] != held[first] {
            return Err(format!(
                "node {node} counted {:?}, node {first} {:?}",
                held[node], held[first]
            ));
        }
    }
    let agreed = &held[first];
    let reference = sim.world.observer.reference(agreed)?;
    if lines[first].as_deref() != Some(reference.as_str()) {
        return Err(format!(
            "nodes printed {:?}, the reference is {reference:?}",
            lines[first]
        ));
    }
    for origin in 0..nodes {
        if sim.alive(origin) && agreed[origin] != held[origin][origin] {
            return Err(format!(
                "origin {origin} generated {} but {} were agreed",
                held[origin][origin], agreed[origin]
            ));
        }
        let longest = survivors
            .iter()
            .map(|&node| sim.world.observer.direct[node][origin])
            .max();
        if !sim.alive(origin) && agreed[origin] < longest.unwrap_or(0) {
            return Err(format!(
                "crashed origin {origin}: {} agreed but a survivor received {:?} directly",
                agreed[origin], longest
            ));
        }
    }
    if crashed.is_empty() {
        for &node in &survivors {
            let complete = sim
                .role(node)
                .and_then(|role| role.result)
                .is_some_and(|(_, c)| c);
            if !complete {
                return Err(format!(
                    "node {node} printed without every stream complete, no crash"
                ));
            }
        }
    }
    Ok(())
}

fn parse_count(line: &str) -> Option<u64> {
    line.strip_prefix('(')?.split(',').next()?.parse().ok()
}
