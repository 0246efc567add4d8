//! kv under the simulator, and its checker.
//!
//! Workload: `CLIENTS` clients, each owning `KEYS_PER_CLIENT` keys, pipeline SETs (unique
//! values) and GETs of their own keys every few milliseconds for the first `load_us`; meanwhile
//! the seed's faults strike the workers: pauses, one-way stalls, and at most `replicas − 1`
//! crashes (sometimes followed by a restart, which rejoins empty). After the faults heal and a
//! settling time, a fresh client reads every key and asks NODES.
//!
//! The checker demands:
//! 1. read your writes: every GET answered with a value returns the value of the latest SET
//!    that client sent for the key before it (a GET may fail with an error — a read in flight
//!    to a worker that died — but never return something stale or foreign);
//! 2. no acknowledged write lost: at the end every key reads as its last SET answered OK;
//! 3. convergence: NODES reports every key with `replicas` live copies on the live workers.

use super::faults::{self, Fault, Kinds};
use super::{NetConfig, Sim, SimStats};
use crate::node::{ClientId, Micros};
use crate::roles::kv::Kv;

const CLIENTS: usize = 4;
const KEYS_PER_CLIENT: usize = 8;
const STEP_US: Micros = 3_000;
/// The client that reads everything at the end.
const FINAL_CLIENT: ClientId = 1000;

#[derive(Clone, Debug)]
pub struct Options {
    pub workers: usize,
    pub replicas: usize,
    pub seed: u64,
    pub faults: Kinds,
    pub load_us: Micros,
    pub net: NetConfig,
    pub trace: bool,
}

impl Options {
    pub fn new(workers: usize, seed: u64, faults: Kinds) -> Options {
        Options {
            workers,
            replicas: 2,
            seed,
            faults,
            load_us: 300_000,
            net: NetConfig::default(),
            trace: false,
        }
    }

    pub fn command(&self) -> String {
        format!(
            "pollen sim kv --nodes {} --seed {} --faults {}",
            self.workers, self.seed, self.faults
        )
    }
}

pub struct Report {
    pub failure: Option<String>,
    pub stats: SimStats,
    pub faults: Vec<(Micros, Fault)>,
    pub trace: Option<String>,
    /// Writes acknowledged during the run.
    pub writes: usize,
}

/// What a client sent, in order (its replies come in the same order).
#[derive(Clone, Debug)]
enum Sent {
    Set {
        key: usize,
        value: String,
    },
    Get {
        key: usize,
        expected: Option<String>,
    },
}

pub fn run(options: &Options) -> Report {
    super::catch_panic(|| simulate(options), || options.command()).unwrap_or_else(|failure| {
        Report {
            failure: Some(failure),
            stats: SimStats::default(),
            faults: Vec::new(),
            trace: None,
            writes: 0,
        }
    })
}

fn key_name(key: usize) -> String {
    format!("key:{key}")
}

fn simulate(options: &Options) -> Report {
    crate::log::set_level(crate::log::LEVEL_QUIET);
    let workers = options.workers;
    let master = workers;
    let replicas = options.replicas;
    let factory = Box::new(move |node| Kv::new(node, workers, replicas, None));
    let mut sim = Sim::new(
        workers + 1,
        options.seed,
        options.net.clone(),
        (),
        factory,
        options.trace,
    );
    // Faults strike only workers (the master is a single point of failure by design), at most
    // replicas - 1 of them crash, and everything heals by the end of the load.
    let start_us = 50_000;
    let plan = faults::Plan {
        kinds: options.faults,
        nodes: workers,
        start_us,
        heal_by_us: start_us + options.load_us,
        crashes_max: replicas - 1,
        restart: options.seed.is_multiple_of(2),
    };
    let schedule: Vec<(Micros, Fault)> = faults::schedule(options.seed, &plan)
        .into_iter()
        .filter(|(_, fault)| {
            // A broken or blocked master link ends a worker (it exits without its master): that
            // would be a crash the plan did not count, so only worker-to-worker links break.
            !matches!(
                fault,
                Fault::BreakLink { .. } | Fault::Block { .. } | Fault::Unblock { .. }
            )
        })
        .collect();
    sim.schedule(&schedule);
    // The workload: each client pipelines SETs and GETs of its own keys.
    let mut sent: Vec<Vec<Sent>> = vec![Vec::new(); CLIENTS];
    let mut latest: Vec<Option<String>> = vec![None; CLIENTS * KEYS_PER_CLIENT];
    let steps = (options.load_us / STEP_US) as usize;
    for step in 0..steps {
        let at = start_us + step as Micros * STEP_US;
        for (client, log) in sent.iter_mut().enumerate() {
            let key = client * KEYS_PER_CLIENT + step % KEYS_PER_CLIENT;
            if step % 3 == 2 {
                let expected = latest[key].clone();
                sim.client_command(
                    at,
                    master,
                    client,
                    vec![b"GET".to_vec(), key_name(key).into_bytes()],
                );
                log.push(Sent::Get { key, expected });
            } else {
                let value = format!("v{}-{step}-{client}", options.seed);
                let args = vec![
                    b"SET".to_vec(),
                    key_name(key).into_bytes(),
                    value.clone().into_bytes(),
                ];
                sim.client_command(at, master, client, args);
                latest[key] = Some(value.clone());
                log.push(Sent::Set { key, value });
            }
        }
    }
    // After the faults heal and transfers settle: read everything, then NODES.
    let end_us = start_us + options.load_us + 700_000;
    for key in 0..CLIENTS * KEYS_PER_CLIENT {
        sim.client_command(
            end_us,
            master,
            FINAL_CLIENT,
            vec![b"GET".to_vec(), key_name(key).into_bytes()],
        );
    }
    sim.client_command(end_us + 1, master, FINAL_CLIENT, vec![b"NODES".to_vec()]);
    sim.run_until(end_us + 500_000);
    let (failure, writes) = match check(&sim, options, &sent) {
        Ok(writes) => (None, writes),
        Err(error) => (
            Some(format!(
                "{error}\n  faults: {schedule:?}\n  reproduce: {}",
                options.command()
            )),
            0,
        ),
    };
    Report {
        failure,
        stats: sim.world.stats,
        faults: schedule,
        trace: sim.take_trace(),
        writes,
    }
}

fn check(sim: &Sim<Kv, ()>, options: &Options, sent: &[Vec<Sent>]) -> Result<usize, String> {
    let master = options.workers;
    let replies = sim.replies(master);
    let keys = CLIENTS * KEYS_PER_CLIENT;
    // The last SET of each key that was acknowledged.
    let mut acknowledged: Vec<Option<String>> = vec![None; keys];
    let mut writes = 0;
    for (client, log) in sent.iter().enumerate() {
        let answers: Vec<&str> = replies
            .iter()
            .filter(|(_, c, _)| *c == client)
            .map(|(_, _, line)| line.as_str())
            .collect();
        if answers.len() != log.len() {
            return Err(format!(
                "client {client} sent {} commands, got {} replies",
                log.len(),
                answers.len()
            ));
        }
        for (command, answer) in log.iter().zip(&answers) {
            match command {
                Sent::Set { key, value } => {
                    if *answer == "OK" {
                        acknowledged[*key] = Some(value.clone());
                        writes += 1;
                    } else if !answer.starts_with("ERR") {
                        return Err(format!("SET {key} answered {answer:?}"));
                    }
                }
                Sent::Get { key, expected } => {
                    let wanted = match expected {
                        Some(value) => format!("\"{value}\""),
                        None => "(nil)".to_string(),
                    };
                    if *answer != wanted && !answer.starts_with("ERR") {
                        return Err(format!(
                            "client {client}: GET key:{key} answered {answer} after writing {wanted}"
                        ));
                    }
                }
            }
        }
    }
    let finals: Vec<&str> = replies
        .iter()
        .filter(|(_, c, _)| *c == FINAL_CLIENT)
        .map(|(_, _, line)| line.as_str())
        .collect();
    if finals.len() < keys {
        return Err(format!(
            "the final reads got {} replies for {keys} keys",
            finals.len()
        ));
    }
    for key in 0..keys {
        let wanted = acknowledged[key]
            .as_ref()
            .map(|value| format!("\"{value}\""));
        let answer = finals[key];
        // A key whose last acknowledged write was followed by an unacknowledged one may hold
        // either; what must never happen is losing what was acknowledged.
        let later = sent
            .iter()
            .flatten()
            .any(|s| matches!(s, Sent::Set { key: k, .. } if *k == key))
            && answer.starts_with('"');
        match &wanted {
            Some(value) if answer == value => {}
            Some(_)
                if later
                    && answer_is_a_set_value(sent, key, answer)
                    && !is_older(sent, key, answer, &acknowledged) => {}
            Some(value) => {
                return Err(format!(
                    "key:{key} reads {answer} at the end; {value} was acknowledged"
                ));
            }
            None if answer == "(nil)" || answer_is_a_set_value(sent, key, answer) => {}
            None => return Err(format!("key:{key} reads {answer}, never written")),
        }
    }
    let nodes: Vec<&str> = finals[keys..]
        .iter()
        .copied()
        .filter(|line| !line.is_empty())
        .collect();
    let verdict = nodes.last().copied().unwrap_or("");
    let live = (0..options.workers)
        .filter(|&w| sim.alive(w) && !sim.stopped(w))
        .count();
    if live >= options.replicas && !verdict.contains(": every key has") {
        return Err(format!("membership did not converge: {nodes:?}"));
    }
    Ok(writes)
}

/// Whether `answer` (quoted) is a value some client SET for `key`.
fn answer_is_a_set_value(sent: &[Vec<Sent>], key: usize, answer: &str) -> bool {
    sent.iter().flatten().any(|s| match s {
        Sent::Set { key: k, value } => *k == key && answer == format!("\"{value}\""),
        _ => false,
    })
}

/// Whether `answer` is a value written before the last acknowledged one (a lost write).
fn is_older(sent: &[Vec<Sent>], key: usize, answer: &str, acknowledged: &[Option<String>]) -> bool {
    let Some(acked) = &acknowledged[key] else {
        return false;
    };
    let order: Vec<&String> = sent
        .iter()
        .flatten()
        .filter_map(|s| match s {
            Sent::Set { key: k, value } if *k == key => Some(value),
            _ => None,
        })
        .collect();
    let position = |value: &str| order.iter().position(|v| *v == value);
    match (position(answer.trim_matches('"')), position(acked)) {
        (Some(answer), Some(acked)) => answer < acked,
        _ => true,
    }
}
