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
use super::runner::{self, SeedReport};
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

const SEND_US_DEFAULT: Micros = 300_000;
const GRACE_US_DEFAULT: Micros = 400_000;
const TICK_US: Micros = 10_000;
const CLOCK_SKEW: f64 = 0.01;
/// Drawn phases (`with_drawn_phases`) are at most this long.
const DRAWN_SEND_US_MAX: Micros = 2_000_000;
const DRAWN_GRACE_US_MAX: Micros = 1_000_000;
/// The master's START goes out once every worker is connected; faults strike from then on.
const FAULTS_START_US: Micros = 50_000;
/// A planned master crash comes at least this long after the faults start, and before three
/// quarters of the send phase.
const MASTER_CRASH_AFTER_US: Micros = 20_000;
/// The run goes on this long past the grace phase, for anything late to show.
const RUN_PAST_GRACE_US: Micros = 3_000_000;
/// Something must have been approved when the send phase lasted this long.
const PROGRESS_SEND_US_MIN: Micros = 100_000;
/// Approvals must resume after the last fault healed if it healed this long before the send
/// phase ended.
const PROGRESS_AFTER_HEAL_US: Micros = 150_000;
/// Errors the checker records before it stops collecting them.
const ERRORS_MAX: usize = 5;
/// Mixed into the run's seed for drawn phases, and for the master's crash time.
const PHASES_SEED_SALT: u64 = 0x9A5E_5EED;
const MASTER_CRASH_SEED_SALT: u64 = 0xC0FFEE;

impl Options {
    pub fn new(workers: usize, seed: u64, faults: Kinds) -> Options {
        Options {
            workers,
            seed,
            faults,
            send_us: SEND_US_DEFAULT,
            grace_us: GRACE_US_DEFAULT,
            window: WINDOWS[(seed % WINDOWS.len() as u64) as usize],
            net: NetConfig {
                clock_skew: CLOCK_SKEW,
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
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.seed ^ PHASES_SEED_SALT);
        let mut draw = |max_us: u64| {
            let bits = 64 - max_us.leading_zeros() as u64;
            let scale = 1u64 << uniform(&mut rng, 0, bits - 1);
            uniform(&mut rng, scale, (2 * scale).min(max_us))
        };
        self.send_us = draw(DRAWN_SEND_US_MAX);
        self.grace_us = draw(DRAWN_GRACE_US_MAX);
        self
    }

    /// The master is crashed (instead of workers) in one seed of four.
    fn master_crash(&self) -> bool {
        self.faults != Kinds::None && self.seed % 4 == 3
    }
}

#[derive(Default)]
pub struct Report {
    pub failure: Option<String>,
    pub stats: SimStats,
    pub lines: Vec<Vec<String>>,
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
                if previous.is_some_and(|v| v != value.value) && self.errors.len() < ERRORS_MAX {
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
                if clash && self.errors.len() < ERRORS_MAX {
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
    runner::run_seed(|| simulate(options), || options.command())
}

fn simulate(options: &Options) -> Report {
    let workers = options.workers;
    let config = ring::Config {
        workers,
        seed: options.seed,
        send_us: options.send_us,
        grace_us: options.grace_us,
        window: options.window,
        tick_us: TICK_US,
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
    let schedule = fault_schedule(options);
    sim.schedule(&schedule);
    let end_us = FAULTS_START_US + options.send_us + options.grace_us + RUN_PAST_GRACE_US;
    sim.run_until(end_us);
    let lines: Vec<Vec<String>> = (0..=workers)
        .map(|node| sim.outputs(node).to_vec())
        .collect();
    let failure = check(&mut sim, options, &lines, last_heal_us(&schedule))
        .err()
        .map(|error| runner::failure(&error, &schedule, &options.command()));
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

/// The seed's faults, from once the ring runs until the middle of the grace phase, with
/// crashed workers restarted; or, in one seed of four, link breaks and a master crash
/// mid-send. Then the options' extra faults, all in time order.
fn fault_schedule(options: &Options) -> Vec<(Micros, Fault)> {
    let workers = options.workers;
    let start_us = FAULTS_START_US;
    let master_crash = options.master_crash();
    let plan = faults::Plan {
        kinds: if master_crash {
            Kinds::Links
        } else {
            options.faults
        },
        nodes: workers + 1,
        start_us,
        heal_by_us: start_us + options.send_us + options.grace_us / 2,
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
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(options.seed ^ MASTER_CRASH_SEED_SALT);
        let at = uniform(
            &mut rng,
            start_us + MASTER_CRASH_AFTER_US,
            start_us + options.send_us * 3 / 4,
        );
        schedule.push((at, Fault::Crash { node: workers }));
    }
    schedule.extend(options.extra_faults.iter().cloned());
    schedule.sort_by_key(|(at, _)| *at);
    schedule
}

/// When the last fault that ends (everything but a crash) was over.
fn last_heal_us(schedule: &[(Micros, Fault)]) -> Micros {
    schedule
        .iter()
        .filter(|(_, fault)| !matches!(fault, Fault::Crash { .. }))
        .map(|(at, fault)| match fault {
            Fault::Stall { for_us, .. } | Fault::Pause { for_us, .. } => at + for_us,
            _ => *at,
        })
        .max()
        .unwrap_or(0)
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
    let epoch = last_epoch(sim, workers);
    let checked = checked_workers(sim, workers, epoch)?;
    for &worker in &checked {
        if lines[worker].len() != 1 || !sim.stopped(worker) {
            return Err(format!("worker {worker} printed {:?}", lines[worker]));
        }
    }
    let first = checked[0];
    for &worker in &checked {
        if lines[worker] != lines[first] {
            return Err(format!(
                "worker {worker} printed {:?}, worker {first} {:?}",
                lines[worker], lines[first]
            ));
        }
    }
    let count = check_reference(sim, &lines[first], epoch)?;
    let master = workers;
    if sim.alive(master) {
        let printed = &lines[master];
        let verdict = printed.last().map(String::as_str).unwrap_or("");
        if printed.len() != workers + 1 || !verdict.starts_with("AGREE") {
            return Err(format!("master printed {printed:?}"));
        }
    }
    let send_end_us = FAULTS_START_US + options.send_us;
    if count == 0 && options.send_us >= PROGRESS_SEND_US_MIN {
        return Err("nothing was approved".to_string());
    }
    if last_heal_us + PROGRESS_AFTER_HEAL_US < send_end_us
        && sim.world.observer.last_approval_us <= last_heal_us
        && sim.alive(master)
    {
        return Err(format!(
            "no approval after the faults healed at {last_heal_us} µs"
        ));
    }
    Ok(())
}

/// The latest epoch of a live worker that holds the ring's state: the epoch the ring ended in.
fn last_epoch(sim: &Sim<Ring, Checker>, workers: usize) -> u32 {
    (0..workers)
        .filter(|&w| sim.alive(w))
        .filter_map(|w| match sim.role(w) {
            Some(Ring::Worker(worker)) if worker.settled() => Some(worker.epoch()),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// Workers alive at the end that hold the ring's state (a restarted worker that was never
/// re-admitted and synced prints nothing, by design) and ended in the ring's last `epoch` (one
/// left behind in an older epoch — cut off or paused when the ring re-formed, and not
/// re-admitted before the end — cannot know the later epochs' result). None is a failure
/// naming each worker and why it was skipped.
fn checked_workers(
    sim: &Sim<Ring, Checker>,
    workers: usize,
    epoch: u32,
) -> Result<Vec<usize>, String> {
    let mut checked = Vec::new();
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
            Some(Ring::Worker(_)) => checked.push(worker),
            _ => skipped.push(format!("worker {worker} has no role")),
        }
    }
    if checked.is_empty() {
        return Err(format!("no worker to check: {}", skipped.join("; ")));
    }
    Ok(checked)
}

/// Properties 2 and 3: every index up to the count the workers printed was approved, and the
/// line is the sum over the approvals that count (the latest up to `epoch`). Returns the count.
fn check_reference(
    sim: &Sim<Ring, Checker>,
    printed: &[String],
    epoch: u32,
) -> Result<u64, String> {
    let count: u64 = printed[0]
        .split(' ')
        .nth(1)
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("unreadable line {printed:?}"))?;
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
    if printed[0] != expected {
        return Err(format!(
            "workers printed {printed:?}, the reference is {expected:?}"
        ));
    }
    Ok(count)
}
