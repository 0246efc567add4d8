//! ring under the simulator, and its checker.
//!
//! The checker watches every value a generator sends and every approval, and after the run
//! demands:
//! 1. every worker alive at the end printed exactly one `SlaveResult` line, and they are equal
//!    — whatever the phase lengths (`with_drawn_phases` draws them from 1 µs to seconds); a
//!    seed where no worker can be checked fails, naming each worker and why it was skipped;
//! 2. every index up to the agreed count was approved (none skipped), never with two values
//!    in one epoch;
//! 3. the line equals a reference the checker computes from the approved values with its own
//!    arithmetic (a direct `Σ i·(v_i + 1)`, not `Checksum::fold`; an index approved in several
//!    epochs counts with its latest up to the workers' epoch: the master regenerates only what
//!    no survivor saw approved), so nothing is counted twice or with a value that lost;
//! 4. if the master is alive, it printed a line per worker and AGREE;
//! 5. the ring made progress: something was approved (when the send phase lasted 0.1 s or
//!    more), and something after the last fault healed (when that was well before the send
//!    phase ended).
//!
//! Faults: the seed's schedule, with crashed workers restarted (so re-admission and state
//! transfer are exercised). In one seed of four the master is crashed instead, mid-send, with
//! only link breaks around it: the workers must finish on their own schedule and agree. (A
//! master that splits the membership — a partition — and then dies leaves two epochs nobody
//! can reconcile; the ring does not claim to survive that double fault.)

use std::collections::HashMap;

use super::faults::{self, Fault, Kinds};
use super::{NetConfig, Observer, Sim, SimStats, uniform};
use crate::node::{Micros, NodeId};
use crate::roles::checksum::Decimal;
use crate::roles::ring::{self, Ring};
use crate::wire::Message;
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;

#[derive(Clone, Debug)]
pub struct Options {
    pub workers: usize,
    pub seed: u64,
    pub faults: Kinds,
    pub send_us: Micros,
    pub grace_us: Micros,
    pub window: u64,
    pub net: NetConfig,
    pub extra_faults: Vec<(Micros, Fault)>,
    pub trace: bool,
}

/// Windows the seeds cycle through.
pub const WINDOWS: [u64; 3] = [1, 4, 16];

impl Options {
    pub fn new(workers: usize, seed: u64, faults: Kinds) -> Options {
        Options {
            workers,
            seed,
            faults,
            send_us: 300_000,
            grace_us: 400_000,
            window: WINDOWS[(seed % WINDOWS.len() as u64) as usize],
            net: NetConfig {
                clock_skew: 0.01,
                ..NetConfig::default()
            },
            extra_faults: Vec::new(),
            trace: false,
        }
    }

    pub fn command(&self) -> String {
        format!(
            "pollen sim ring --nodes {} --seed {} --faults {} --send-for {} --wait-for {} \
             --window {}",
            self.workers,
            self.seed,
            self.faults,
            self.send_us as f64 / 1e6,
            self.grace_us as f64 / 1e6,
            self.window
        )
    }

    /// Phase lengths drawn from the seed, log-uniformly: send 1 µs to 2 s, grace 1 µs to 1 s
    /// (a user typing seconds where microseconds are expected gets the short end).
    pub fn with_drawn_phases(mut self) -> Options {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.seed ^ 0x9A5E_5EED);
        let mut draw = |max_us: u64| {
            let bits = 64 - max_us.leading_zeros() as u64;
            let scale = 1u64 << uniform(&mut rng, 0, bits - 1);
            uniform(&mut rng, scale, (2 * scale).min(max_us))
        };
        self.send_us = draw(2_000_000);
        self.grace_us = draw(1_000_000);
        self
    }

    /// The master is crashed (instead of workers) in one seed of four.
    fn master_crash(&self) -> bool {
        self.faults != Kinds::None && self.seed % 4 == 3
    }
}

pub struct Report {
    pub failure: Option<String>,
    pub stats: SimStats,
    pub lines: Vec<Vec<String>>,
    pub faults: Vec<(Micros, Fault)>,
    pub trace: Option<String>,
    pub count: u64,
}

#[derive(Default)]
struct Checker {
    /// (epoch, index) → value, from generators' sends.
    values: HashMap<(u32, u64), u32>,
    /// index → every (epoch, value) it was approved with. An index is approved again in a
    /// later epoch only if the earlier approval reached no survivor (the master regenerates
    /// what no survivor reports approved), so for workers in epoch E the latest approval in an
    /// epoch up to E is the one that counts.
    approved: HashMap<u64, Vec<(u32, u32)>>,
    last_approval_us: Micros,
    errors: Vec<String>,
}

impl Observer for Checker {
    fn sent(&mut self, at: Micros, from: NodeId, _to: NodeId, message: &Message<'_>) {
        match message {
            Message::RingValue(value) => {
                let previous = self.values.insert((value.epoch, value.index), value.value);
                if previous.is_some_and(|v| v != value.value) && self.errors.len() < 5 {
                    self.errors.push(format!(
                        "index {} generated twice in epoch {} (by {from})",
                        value.index, value.epoch
                    ));
                }
            }
            Message::RingApprove(approve) => {
                let Some(&value) = self.values.get(&(approve.epoch, approve.index)) else {
                    self.errors
                        .push(format!("approval of index {} never sent", approve.index));
                    return;
                };
                let approvals = self.approved.entry(approve.index).or_default();
                let clash = approvals
                    .iter()
                    .any(|&(e, v)| e == approve.epoch && v != value);
                if clash && self.errors.len() < 5 {
                    self.errors.push(format!(
                        "index {} approved with two values in epoch {}",
                        approve.index, approve.epoch
                    ));
                }
                approvals.push((approve.epoch, value));
                self.last_approval_us = self.last_approval_us.max(at);
            }
            _ => {}
        }
    }
}

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
    let workers = options.workers;
    let config = ring::Config {
        workers,
        seed: options.seed,
        send_us: options.send_us,
        grace_us: options.grace_us,
        window: options.window,
        tick_us: 10_000,
    };
    let factory = Box::new(move |node| Ring::new(config.clone(), node));
    let mut sim = Sim::new(
        workers + 1,
        options.seed,
        options.net.clone(),
        Checker::default(),
        factory,
        options.trace,
    );
    // Faults start once the ring runs (the master waits for every worker first) and heal by
    // the middle of the grace phase.
    let start_us = 50_000;
    let heal_by_us = start_us + options.send_us + options.grace_us / 2;
    let master_crash = options.master_crash();
    let plan = faults::Plan {
        kinds: if master_crash {
            Kinds::Links
        } else {
            options.faults
        },
        nodes: workers + 1,
        start_us,
        heal_by_us,
        // Two workers and a crash: a partition first can leave the crashed worker the only
        // holder of the ring's state (a double fault the ring does not claim to survive).
        crashes_max: if master_crash || workers < 3 { 0 } else { 1 },
        restart: true,
    };
    let mut schedule: Vec<(Micros, Fault)> = faults::schedule(options.seed, &plan)
        .into_iter()
        .map(|(at, fault)| match fault {
            // Only workers crash (and come back); the master's crash is planned below.
            Fault::Crash { node } | Fault::Restart { node } if node == workers => {
                (at, Fault::Pause { node, for_us: 1 })
            }
            other => (at, other),
        })
        .collect();
    if master_crash {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(options.seed ^ 0xC0FFEE);
        let at = uniform(
            &mut rng,
            start_us + 20_000,
            start_us + options.send_us * 3 / 4,
        );
        schedule.push((at, Fault::Crash { node: workers }));
    }
    schedule.extend(options.extra_faults.iter().cloned());
    schedule.sort_by_key(|(at, _)| *at);
    sim.schedule(&schedule);
    let end_us = start_us + options.send_us + options.grace_us + 3_000_000;
    sim.run_until(end_us);
    let lines: Vec<Vec<String>> = (0..=workers)
        .map(|node| sim.outputs(node).to_vec())
        .collect();
    let last_heal_us = schedule
        .iter()
        .filter(|(_, fault)| !matches!(fault, Fault::Crash { .. }))
        .map(|(at, fault)| match fault {
            Fault::Stall { for_us, .. } | Fault::Pause { for_us, .. } => at + for_us,
            _ => *at,
        })
        .max()
        .unwrap_or(0);
    let failure = check(&mut sim, options, &lines, last_heal_us)
        .err()
        .map(|error| {
            format!(
                "{error}\n  faults: {schedule:?}\n  reproduce: {}",
                options.command()
            )
        });
    let count = lines[0..workers]
        .iter()
        .flatten()
        .next()
        .and_then(|line| line.split(' ').nth(1)?.parse().ok())
        .unwrap_or(0);
    Report {
        failure,
        stats: sim.world.stats,
        lines,
        faults: schedule,
        trace: sim.take_trace(),
        count,
    }
}

fn check(
    sim: &mut Sim<Ring, Checker>,
    options: &Options,
    lines: &[Vec<String>],
    last_heal_us: Micros,
) -> Result<(), String> {
    let workers = options.workers;
    if let Some(error) = sim.world.observer.errors.first() {
        return Err(error.clone());
    }
    // Workers alive at the end that hold the ring's state (a restarted worker that was never
    // re-admitted and synced prints nothing, by design).
    // So is a worker left behind in an older epoch (cut off or paused when the ring re-formed,
    // and not re-admitted before the end): it cannot know the later epochs' result.
    let epoch = (0..workers)
        .filter(|&w| sim.alive(w))
        .filter_map(|w| match sim.role(w) {
            Some(Ring::Worker(worker)) if worker.settled() => Some(worker.epoch()),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut alive = Vec::new();
    let mut skipped = Vec::new();
    for worker in 0..workers {
        match sim.role(worker) {
            _ if !sim.alive(worker) => skipped.push(format!("worker {worker} crashed")),
            Some(Ring::Worker(role)) if !role.settled() => skipped.push(format!(
                "worker {worker} holds no state of the ring (restarted, never synced)"
            )),
            Some(Ring::Worker(role)) if role.epoch() < epoch => skipped.push(format!(
                "worker {worker} was left behind in epoch {} (the ring ended in {epoch})",
                role.epoch()
            )),
            Some(Ring::Worker(_)) => alive.push(worker),
            _ => skipped.push(format!("worker {worker} has no role")),
        }
    }
    for &worker in &alive {
        if lines[worker].len() != 1 || !sim.stopped(worker) {
            return Err(format!("worker {worker} printed {:?}", lines[worker]));
        }
    }
    let Some(&first) = alive.first() else {
        return Err(format!("no worker to check: {}", skipped.join("; ")));
    };
    for &worker in &alive {
        if lines[worker] != lines[first] {
            return Err(format!(
                "worker {worker} printed {:?}, worker {first} {:?}",
                lines[worker], lines[first]
            ));
        }
    }
    let count: u64 = lines[first][0]
        .split(' ')
        .nth(1)
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("unreadable line {:?}", lines[first]))?;
    let approved = &sim.world.observer.approved;
    let mut sum = 0u128;
    for index in 1..=count {
        let (_, value) = approved
            .get(&index)
            .and_then(|list| {
                list.iter()
                    .filter(|&&(e, _)| e <= epoch)
                    .max_by_key(|&&(e, _)| e)
            })
            .ok_or_else(|| format!("index {index} counted but never approved"))?;
        sum += index as u128 * (*value as u128 + 1);
    }
    let expected = format!("SlaveResult {count} {}", Decimal(sum));
    if lines[first][0] != expected {
        return Err(format!(
            "workers printed {:?}, the reference is {expected:?}",
            lines[first]
        ));
    }
    let master = workers;
    if sim.alive(master) {
        let printed = &lines[master];
        let verdict = printed.last().map(String::as_str).unwrap_or("");
        if printed.len() != workers + 1 || !verdict.starts_with("AGREE") {
            return Err(format!("master printed {printed:?}"));
        }
    }
    let send_end_us = 50_000 + options.send_us;
    if count == 0 && options.send_us >= 100_000 {
        return Err("nothing was approved".to_string());
    }
    if last_heal_us + 150_000 < send_end_us
        && sim.world.observer.last_approval_us <= last_heal_us
        && sim.alive(master)
    {
        return Err(format!(
            "no approval after the faults healed at {last_heal_us} µs"
        ));
    }
    Ok(())
}
