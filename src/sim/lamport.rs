//! lamport under the simulator: the same machines in virtual time, so a 60-second experiment
//! takes a fraction of a second and yields the same logs for the same analysis.
//!
//! The checker verifies each machine's log against the model's rules:
//! 1. one event per tick, at the machine's rate (events ≈ duration × rate);
//! 2. the logical clock rises by exactly 1 on sends and internal events, and on a receive
//!    becomes `max(local, received) + 1` for the clock of a send the sender actually made;
//! 3. with vectors (ShiViz's rules): a machine's own entry rises by exactly 1 per event, other
//!    entries never fall, and a receive's vector dominates the vector of a send of that peer.

use std::collections::BTreeMap;
use std::path::Path;

use super::runner::{self, SeedReport};
use super::{NetConfig, Sim, SimStats};
use crate::node::Micros;
use crate::roles::lamport::{Config, Lamport};
use crate::tools::lamport::{Event, parse_line};

const DURATION_US_DEFAULT: Micros = 60_000_000;
const RATE_MIN_DEFAULT: u32 = 1;
const RATE_MAX_DEFAULT: u32 = 6;
const INTERNAL_MAX_DEFAULT: u32 = 10;
/// The run goes on this long past the experiment, for messages still in flight.
const RUN_PAST_DURATION_US: Micros = 10_000_000;
/// A machine's event count may miss `duration × rate` by this fraction, plus a few events
/// (the first tick and the last one cut by the end).
const EVENTS_TOLERANCE_FRACTION: f64 = 0.02;
const EVENTS_TOLERANCE_EXTRA: f64 = 2.0;

#[derive(Clone, Debug)]
pub struct Options {
    pub machines: usize,
    pub seed: u64,
    pub duration_us: Micros,
    pub rate_min: u32,
    pub rate_max: u32,
    pub internal_max: u32,
    pub vector: bool,
    pub trace: bool,
}

impl Options {
    pub fn new(machines: usize, seed: u64) -> Options {
        Options {
            machines,
            seed,
            duration_us: DURATION_US_DEFAULT,
            rate_min: RATE_MIN_DEFAULT,
            rate_max: RATE_MAX_DEFAULT,
            internal_max: INTERNAL_MAX_DEFAULT,
            vector: true,
            trace: false,
        }
    }

    /// The command line that reproduces this run (vector clocks are always on there).
    pub fn command(&self) -> String {
        format!(
            "pollen sim lamport --nodes {} --seed {} --send-for {} --rate-range {}-{} \
             --internal-max {}",
            self.machines,
            self.seed,
            self.duration_us as f64 / 1e6,
            self.rate_min,
            self.rate_max,
            self.internal_max
        )
    }
}

#[derive(Default)]
pub struct Report {
    pub failure: Option<String>,
    pub stats: SimStats,
    /// Each machine's log lines (header first).
    pub logs: Vec<Vec<String>>,
    pub trace: Option<String>,
}

impl SeedReport for Report {
    fn failed(failure: String) -> Report {
        Report {
            failure: Some(failure),
            ..Report::default()
        }
    }
}

pub fn run(options: &Options) -> Report {
    runner::run_seed(|| simulate(options), || options.command())
}

fn simulate(options: &Options) -> Report {
    let mut config = Config::new(options.machines, options.seed, options.duration_us);
    config.rate_min = options.rate_min;
    config.rate_max = options.rate_max;
    config.internal_max = options.internal_max;
    config.vector = options.vector;
    let factory = Box::new(move |node| Lamport::new(config.clone(), node));
    let mut sim = Sim::new(
        options.machines,
        options.seed,
        NetConfig::default(),
        (),
        factory,
        options.trace,
    );
    sim.run_until(options.duration_us + RUN_PAST_DURATION_US);
    let logs: Vec<Vec<String>> = (0..options.machines)
        .map(|m| sim.outputs(m).to_vec())
        .collect();
    let failure = check(&logs, options).err();
    Report {
        failure,
        stats: sim.world.stats,
        logs,
        trace: sim.take_trace(),
    }
}

/// Writes `machine-N.csv` files into `dir`.
pub fn write_logs(logs: &[Vec<String>], dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (machine, lines) in logs.iter().enumerate() {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(dir.join(format!("machine-{machine}.csv")), text)?;
    }
    Ok(())
}

fn check(logs: &[Vec<String>], options: &Options) -> Result<(), String> {
    let machines: BTreeMap<usize, Vec<Event>> = logs
        .iter()
        .enumerate()
        .map(|(machine, lines)| {
            (
                machine,
                lines.iter().filter_map(|l| parse_line(l)).collect(),
            )
        })
        .collect();
    for (&machine, events) in &machines {
        check_machine(&machines, machine, events, options)?;
    }
    Ok(())
}

/// Properties 1–3 for one machine's `events`, against the sends in every machine's log.
fn check_machine(
    machines: &BTreeMap<usize, Vec<Event>>,
    machine: usize,
    events: &[Event],
    options: &Options,
) -> Result<(), String> {
    let rate = events.first().map_or(0, |e| e.rate) as f64;
    let expected = rate * options.duration_us as f64 / 1e6;
    let tolerance = expected * EVENTS_TOLERANCE_FRACTION + EVENTS_TOLERANCE_EXTRA;
    if (events.len() as f64 - expected).abs() > tolerance {
        return Err(format!(
            "machine {machine}: {} events, expected about {expected}",
            events.len()
        ));
    }
    let mut clock = 0;
    let mut vector = vec![0u64; options.machines];
    for event in events {
        if event.kind == "receive" {
            let peer: usize = event
                .peer
                .parse()
                .map_err(|_| format!("bad peer {:?}", event.peer))?;
            let sent = machines[&peer].iter().any(|send| {
                send.kind.starts_with("send")
                    && (send.peer == machine.to_string() || send.kind == "send_all")
                    && event.clock == clock.max(send.clock) + 1
            });
            if !sent {
                return Err(format!(
                    "machine {machine}: receive at clock {} fits no send of {peer}",
                    event.clock
                ));
            }
        } else if event.clock != clock + 1 {
            return Err(format!(
                "machine {machine}: {} moved the clock {clock} → {}",
                event.kind, event.clock
            ));
        }
        clock = event.clock;
        let Some(next) = &event.vector else { continue };
        check_vector(machines, machine, event, &vector, next)?;
        vector.clone_from(next);
    }
    Ok(())
}

/// Property 3: the machine's own entry rises by one, no entry falls, and a receive's vector
/// dominates the vector of a send of that peer.
fn check_vector(
    machines: &BTreeMap<usize, Vec<Event>>,
    machine: usize,
    event: &Event,
    vector: &[u64],
    next: &[u64],
) -> Result<(), String> {
    if next[machine] != vector[machine] + 1 {
        return Err(format!(
            "machine {machine}: own vector entry {} → {}",
            vector[machine], next[machine]
        ));
    }
    if next.iter().zip(vector).any(|(new, old)| new < old) {
        return Err(format!("machine {machine}: a vector entry fell"));
    }
    if event.kind == "receive" {
        let peer: usize = event.peer.parse().unwrap_or(0);
        let dominated = machines[&peer].iter().any(|send| {
            send.kind.starts_with("send")
                && send
                    .vector
                    .as_ref()
                    .is_some_and(|s| s.iter().zip(next).all(|(a, b)| a <= b))
        });
        if !dominated {
            return Err(format!(
                "machine {machine}: a receive from {peer} did not merge its vector"
            ));
        }
    }
    Ok(())
}
