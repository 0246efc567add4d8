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

use super::{NetConfig, Sim, SimStats};
use crate::node::Micros;
use crate::roles::lamport::{Config, Lamport};
use crate::tools::lamport::{Event, parse_line};

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
            duration_us: 60_000_000,
            rate_min: 1,
            rate_max: 6,
            internal_max: 10,
            vector: true,
            trace: false,
        }
    }
}

pub struct Report {
    pub failure: Option<String>,
    pub stats: SimStats,
    /// Each machine's log lines (header first).
    pub logs: Vec<Vec<String>>,
    pub trace: Option<String>,
}

pub fn run(options: &Options) -> Report {
    crate::log::set_level(crate::log::LEVEL_QUIET);
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
    sim.run_until(options.duration_us + 10_000_000);
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
        let rate = events.first().map_or(0, |e| e.rate) as f64;
        let expected = rate * options.duration_us as f64 / 1e6;
        if (events.len() as f64 - expected).abs() > expected * 0.02 + 2.0 {
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
            if next[machine] != vector[machine] + 1 {
                return Err(format!(
                    "machine {machine}: own vector entry {} → {}",
                    vector[machine], next[machine]
                ));
            }
            if next.iter().zip(&vector).any(|(new, old)| new < old) {
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
            vector.clone_from(next);
        }
    }
    Ok(())
}
