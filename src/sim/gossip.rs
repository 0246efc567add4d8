//! gossip under the simulator, and its checker.
//!
//! The checker stands outside the role. It regenerates every origin's stream from the seed,
//! watches every batch on the wire (checking each value against the regenerated stream and
//! learning each batch's timestamp from the origin's own sends), learns each node's send end
//! from the states it sends, and after the run checks:
//! 1. every node that did not crash printed exactly one line and stopped;
//! 2. those lines are identical, and so are the prefixes the nodes counted and their cuts;
//! 3. each line equals a reference the checker computes with its own arithmetic (a direct
//!    `Σ i·(v_i + 1)`, not `Checksum::fold`): the counted prefixes, put in (timestamp, origin,
//!    seq) order — so nothing is counted twice, skipped or misordered;
//! 4. the cut is the earliest send end of the nodes that were heard from, and the stream of
//!    every origin that did not crash is counted exactly up to it (nothing a live node sent
//!    before the cut is lost, nothing after it counted); of a crashed origin, at least as much
//!    as any survivor received from it directly, up to the cut (survivors converge on the
//!    longest prefix);
//! 5. without crashes, every node held every stream to the cut when it printed;
//! 6. when every node started at least 0.1 s before the cut, the count is not zero.
//!
//! Nodes may start at different times (`start_spread_us`, drawn per seed, as a user starting
//! them by hand): 2.–6. are demanded while the last node starts `AGREEMENT_MARGIN_US` before
//! the first node's deadline; beyond that each node's line must still equal the reference for
//! what it counted. Partitions, stalls and pauses all heal by `send_for + wait_for / 2`, which
//! is what lets the checker demand agreement from every live node.

use std::collections::BTreeMap;

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;

use super::faults::{self, Fault, Kinds};
use super::runner::{self, SeedReport};
use super::{NetConfig, Observer, Sim, SimStats, uniform};
use crate::node::{Micros, NodeId};
use crate::roles::checksum::{Checksum, fill_stream_values, stream_rng};
use crate::roles::gossip::{self, Gossip};
use crate::wire::{Message, SEND_END_UNKNOWN};

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
    /// Nodes start at offsets drawn from `0..=start_spread_us` (the first at 0).
    pub start_spread_us: Micros,
    /// Faults added to the seed's schedule (for hand-written scenarios).
    pub extra_faults: Vec<(Micros, Fault)>,
    pub trace: bool,
}

/// Batch sizes the seeds cycle through: many small frames, and batches big enough that frames
/// split them (which exercises partial batches, relayed continuations and fold boundaries).
pub const BATCH_SIZES: [usize; 3] = [16, 64, 256];

/// Agreement is demanded while the last node starts at least this long before the first
/// node's deadline: time to be dialled, to receive the windows held for it at 400 KB/s links,
/// and to exchange states.
pub const AGREEMENT_MARGIN_US: Micros = 300_000;

/// A count of zero is a failure when every node started at least this long before the cut.
const NONZERO_COUNT_MARGIN_US: Micros = 100_000;
/// Faults strike from this virtual time on (the nodes have connected by then).
const FAULTS_START_US: Micros = 20_000;
/// The run goes on this long past the last node's deadline, for anything late to show.
const RUN_PAST_DEADLINE_US: Micros = 1_000_000;
/// The role's window of unacknowledged messages under the simulator (the real default is
/// `gossip::WINDOW_MESSAGES`, 2^20).
const WINDOW_MESSAGES: u64 = 4096;
/// Wire errors the checker records before it stops collecting them.
const ERRORS_MAX: usize = 10;
const SEND_FOR_US_DEFAULT: Micros = 500_000;
const WAIT_FOR_US_DEFAULT: Micros = 1_500_000;
const TICK_US_DEFAULT: Micros = 10_000;
const CLOCK_SKEW: f64 = 0.01;
/// Mixed into the run's seed for the nodes' start offsets.
const STARTS_SEED_SALT: u64 = 0x57A2_75EE;

impl Options {
    pub fn new(nodes: usize, seed: u64, faults: Kinds) -> Options {
        Options {
            nodes,
            seed,
            faults,
            role_seed: seed,
            send_for_us: SEND_FOR_US_DEFAULT,
            wait_for_us: WAIT_FOR_US_DEFAULT,
            tick_us: TICK_US_DEFAULT,
            batch_values: BATCH_SIZES[(seed % BATCH_SIZES.len() as u64) as usize],
            net: NetConfig {
                clock_skew: CLOCK_SKEW,
                ..NetConfig::default()
            },
            start_spread_us: 0,
            extra_faults: Vec::new(),
            trace: false,
        }
    }

    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        format!(
            "pollen sim gossip --nodes {} --seed {} --faults {} --send-for {} --wait-for {} \
             --with-seed {} --batch {} --start-spread {}",
            self.nodes,
            self.seed,
            self.faults,
            self.send_for_us as f64 / 1e6,
            self.wait_for_us as f64 / 1e6,
            self.role_seed,
            self.batch_values,
            self.start_spread_us as f64 / 1e6
        )
    }

    /// Each node's start, from the seed: uniform in `0..=start_spread_us`, shifted so that the
    /// first starts at 0.
    pub fn starts_us(&self) -> Vec<Micros> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.seed ^ STARTS_SEED_SALT);
        let starts: Vec<Micros> = (0..self.nodes)
            .map(|_| uniform(&mut rng, 0, self.start_spread_us))
            .collect();
        let first = starts.iter().copied().min().unwrap_or(0);
        starts.iter().map(|start| start - first).collect()
    }

    /// The first node's deadline less the margin: nodes started by then must agree.
    fn agreement_bound_us(&self) -> Micros {
        let config = gossip::Config::new(
            self.nodes,
            self.role_seed,
            self.send_for_us,
            self.wait_for_us,
        );
        config.deadline_us().saturating_sub(AGREEMENT_MARGIN_US)
    }
}

#[derive(Default)]
pub struct Report {
    /// What broke, with the command that reproduces it; `None` if every property held.
    pub failure: Option<String>,
    pub stats: SimStats,
    pub lines: Vec<Option<String>>,
    pub faults: Vec<(Micros, Fault)>,
    pub trace: Option<String>,
    pub count: u64,
}

impl SeedReport for Report {
    fn failed(failure: String) -> Report {
        Report {
            failure: Some(failure),
            ..Report::default()
        }
    }
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
    /// Per node: its send end, as its own states announce it, once one was delivered.
    send_end_us: Vec<Option<u64>>,
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
            send_end_us: vec![None; nodes],
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
            if self.value(origin, seq) != value && self.errors.len() < ERRORS_MAX {
                self.errors.push(format!(
                    "node {from} sent origin {origin}'s seq {seq} as {value}, not the stream's value"
                ));
            }
        }
    }

    /// How many of `origin`'s messages it stamped before `cut_us`, by its own sends.
    fn before_cut(&self, origin: NodeId, cut_us: u64) -> u64 {
        let mut covered = 0;
        for (&first, &(length, timestamp)) in &self.stamps[origin] {
            if first > covered || timestamp >= cut_us {
                break;
            }
            covered = covered.max(first + length);
        }
        covered
    }

    /// The reference result for a node that counted `counted[origin]` messages of each origin:
    /// `(count, Σ i·(v_i + 1))` over them in (timestamp, origin, seq) order, summed here
    /// directly rather than with `Checksum::fold`.
    fn reference(&mut self, counted: &[u64]) -> Result<Checksum, String> {
        let mut segments = Vec::new();
        for (origin, &count) in counted.iter().enumerate() {
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
        let (mut count, mut sum) = (0u64, 0u128);
        for (_, origin, start, end) in segments {
            for seq in start..end {
                count += 1;
                sum += count as u128 * (self.value(origin, seq) as u128 + 1);
            }
        }
        Ok(Checksum { count, sum })
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
        if let Message::GossipState(state) = message
            && state.origins.len() == self.send_end_us.len()
        {
            let own = state.origins.get(from).send_end_us;
            if own != SEND_END_UNKNOWN && self.send_end_us[from].is_none_or(|end| end == own) {
                self.send_end_us[from] = Some(own);
            } else if own != SEND_END_UNKNOWN && self.errors.len() < ERRORS_MAX {
                self.errors
                    .push(format!("node {from} announced two send ends"));
            }
        }
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
    runner::run_seed(|| simulate(options), || options.command())
}

fn simulate(options: &Options) -> Report {
    let nodes = options.nodes;
    let mut config = gossip::Config::new(
        nodes,
        options.role_seed,
        options.send_for_us,
        options.wait_for_us,
    );
    config.tick_us = options.tick_us;
    config.batch_values = options.batch_values;
    config.window_messages = WINDOW_MESSAGES;
    let checker = Checker::new(nodes, options.role_seed, options.batch_values);
    let factory = Box::new(move |node| Gossip::new(config.clone(), node));
    let starts_us = options.starts_us();
    let mut sim = Sim::with_starts(
        options.seed,
        options.net.clone(),
        checker,
        factory,
        options.trace,
        &starts_us,
    );
    let schedule = fault_schedule(options);
    sim.schedule(&schedule);
    let last_start_us = starts_us.iter().copied().max().unwrap_or(0);
    sim.run_until(last_start_us + options.send_for_us + options.wait_for_us + RUN_PAST_DEADLINE_US);
    let lines: Vec<Option<String>> = (0..nodes)
        .map(|node| sim.outputs(node).first().cloned())
        .collect();
    let failure = check(&mut sim, options, &starts_us, &lines)
        .err()
        .map(|error| {
            let error = format!("{error}\n  starts: {starts_us:?}");
            runner::failure(&error, &schedule, &options.command())
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

/// The seed's faults (crashes without restarts, at most a minority), healed by the middle of
/// the wait, and the options' extra ones.
fn fault_schedule(options: &Options) -> Vec<(Micros, Fault)> {
    let plan = faults::Plan {
        kinds: options.faults,
        nodes: options.nodes,
        start_us: FAULTS_START_US,
        heal_by_us: options.send_for_us + options.wait_for_us / 2,
        crashes_max: (options.nodes - 1) / 2,
        restart: false,
    };
    let mut schedule = faults::schedule(options.seed, &plan);
    schedule.extend(options.extra_faults.iter().cloned());
    schedule
}

fn check(
    sim: &mut Sim<Gossip, Checker>,
    options: &Options,
    starts_us: &[Micros],
    lines: &[Option<String>],
) -> Result<(), String> {
    let nodes = options.nodes;
    let survivors: Vec<NodeId> = (0..nodes).filter(|&node| sim.alive(node)).collect();
    if let Some(error) = sim.world.observer.errors.first() {
        return Err(error.clone());
    }
    let counted: Vec<Vec<u64>> = (0..nodes)
        .map(|node| sim.role(node).map(Gossip::counted).unwrap_or_default())
        .collect();
    check_each_line(sim, &survivors, &counted, lines)?;
    let last_start_us = starts_us.iter().copied().max().unwrap_or(0);
    if last_start_us > options.agreement_bound_us() {
        return Ok(()); // too late for agreement to be promised
    }
    let cuts: Vec<Option<u64>> = (0..nodes)
        .map(|node| sim.role(node).and_then(Gossip::cut_us))
        .collect();
    check_agreement(&survivors, &counted, &cuts, lines)?;
    let first = survivors[0];
    let cut_us = cuts[first].ok_or("no cut")?;
    check_cut(sim, &survivors, &counted[first], cut_us)?;
    let crashed = (0..nodes).any(|node| !sim.alive(node));
    if !crashed {
        check_complete(sim, &survivors)?;
    }
    let count: u64 = counted[first].iter().sum();
    if !crashed && last_start_us + NONZERO_COUNT_MARGIN_US < options.send_for_us && count == 0 {
        return Err("every node started before the cut, yet nothing was agreed".into());
    }
    Ok(())
}

/// Properties 1 and (whatever the timing) 3: every survivor printed one line, stopped, and its
/// line is the reference for what it counted.
fn check_each_line(
    sim: &mut Sim<Gossip, Checker>,
    survivors: &[NodeId],
    counted: &[Vec<u64>],
    lines: &[Option<String>],
) -> Result<(), String> {
    for &node in survivors {
        let outputs = sim.outputs(node);
        if outputs.len() != 1 || !sim.stopped(node) {
            return Err(format!(
                "node {node} printed {outputs:?} and stopped: {}",
                sim.stopped(node)
            ));
        }
    }
    for &node in survivors {
        let reference = sim.world.observer.reference(&counted[node])?;
        let result = sim.role(node).and_then(|role| role.result).map(|(c, _)| c);
        if result != Some(reference) || lines[node] != Some(reference.to_string()) {
            return Err(format!(
                "node {node} printed {:?} (result {result:?}), the reference is {reference:?} \
                 = {reference}",
                lines[node]
            ));
        }
    }
    Ok(())
}

/// Property 2: the survivors printed the same line, counted the same prefixes and cut at the
/// same time.
fn check_agreement(
    survivors: &[NodeId],
    counted: &[Vec<u64>],
    cuts: &[Option<u64>],
    lines: &[Option<String>],
) -> Result<(), String> {
    let first = survivors[0];
    for &node in survivors {
        if lines[node] != lines[first] {
            return Err(format!(
                "node {node} printed {:?}, node {first} {:?}",
                lines[node], lines[first]
            ));
        }
        if counted[node] != counted[first] || cuts[node] != cuts[first] {
            return Err(format!(
                "node {node} counted {:?} to cut {:?}, node {first} {:?} to {:?}",
                counted[node], cuts[node], counted[first], cuts[first]
            ));
        }
    }
    Ok(())
}

/// Property 4: the cut is the earliest send end heard; every live origin is counted exactly to
/// it, a crashed one at least as far as a survivor received it directly.
fn check_cut(
    sim: &Sim<Gossip, Checker>,
    survivors: &[NodeId],
    agreed: &[u64],
    cut_us: u64,
) -> Result<(), String> {
    let observer = &sim.world.observer;
    let heard_cut = observer.send_end_us.iter().flatten().min().copied();
    if heard_cut != Some(cut_us) {
        return Err(format!(
            "the nodes cut at {cut_us}, but the earliest send end announced is {heard_cut:?}"
        ));
    }
    for (origin, &agreed) in agreed.iter().enumerate() {
        let before = observer.before_cut(origin, cut_us);
        if sim.alive(origin) && agreed != before {
            return Err(format!(
                "origin {origin} stamped {before} messages before the cut but {agreed} were agreed"
            ));
        }
        let longest = survivors
            .iter()
            .map(|&node| observer.direct[node][origin])
            .max()
            .unwrap_or(0)
            .min(before);
        if !sim.alive(origin) && agreed < longest {
            return Err(format!(
                "crashed origin {origin}: {agreed} agreed but a survivor received {longest} \
                 directly"
            ));
        }
    }
    Ok(())
}

/// Property 5: without crashes, every node held every stream to the cut when it printed.
fn check_complete(sim: &Sim<Gossip, Checker>, survivors: &[NodeId]) -> Result<(), String> {
    for &node in survivors {
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
    Ok(())
}

fn parse_count(line: &str) -> Option<u64> {
    line.strip_prefix('(')?.split(',').next()?.parse().ok()
}
