//! The masterless kv (`roles::kv::dynamo`) under the simulator, and its checker.
//!
//! Workload: `CLIENTS` closed-loop clients, each talking to one node (data nodes and, with
//! `front_door`, the data-less node past them), send GET, SET (a value never written before)
//! and DEL on `KEYS` shared keys, one at a time with a short pause between, for `load_us`.
//! A client whose answer does not come within `CLIENT_PATIENCE_US` (its node crashed or is
//! cut off) gives up on it — the operation's outcome is unknown — and moves to the next node.
//! Meanwhile the seed's faults strike the data nodes: link breaks, partitions, pauses and
//! crashes. Without logs at most `N − W` nodes crash and they stay down (a node that came back
//! empty would be a replica that forgot acknowledged writes); with `--fsync always` any node
//! may crash and every one comes back, replaying its log — in a third of the seeds every data
//! node at once. After the faults heal and the store
//! settles, one client reads every key.
//!
//! The checker demands:
//! 1. the history — every operation with its call time, its return time (if it returned) and
//!    its outcome, the final reads included — is linearizable (`linearizable.rs`), which also
//!    means no acknowledged write is lost;
//! 2. convergence, read from the replicas' own stores: every key's live replicas hold the same
//!    newest version (anti-entropy has repaired the ones that missed writes).

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;

use super::faults::{self, Fault, Kinds};
use super::linearizable::{self, Action, Operation, Outcome};
use super::runner::{self, SeedReport};
use super::{NetConfig, Sim, SimStats, uniform};
use crate::journal::Fsync;
use crate::journal::mem::{Disk, SharedDisk, SimJournal};
use crate::node::{ClientId, Micros, NodeId};
use crate::roles::kv::Kv;
use crate::roles::kv::dynamo::{Config, Node};
use crate::roles::kv::slots::SlotMap;

const CLIENTS: usize = 4;
const KEYS: usize = 4;
/// Pause between a client's answer and its next command.
const THINK_US_MIN: Micros = 200;
const THINK_US_MAX: Micros = 5_000;
/// Longer than a request's timeout at the coordinator (`Config::request_timeout_us`).
const CLIENT_PATIENCE_US: Micros = 2_500_000;
/// Clients start once the nodes are connected; faults strike from then on.
const LOAD_START_US: Micros = 200_000;
const LOAD_US_DEFAULT: Micros = 3_000_000;
/// From the end of the load to the final reads: suspicions refuted, nodes back, repaired.
const SETTLE_US: Micros = 8_000_000;
/// The final reads' client.
const FINAL_CLIENT: ClientId = 1_000_000;
const STEP_US: Micros = 1_000;
/// Deletions are reclaimed 5 s after they were stamped: during the settling time, after
/// anti-entropy has brought every tombstone to every replica.
const TOMBSTONE_GRACE_US: Micros = 5_000_000;
/// Mixed into the run's seed for the clients' generator.
const CLIENT_SEED_SALT: u64 = 0xC11E_4751;

#[derive(Clone, Debug)]
pub struct Options {
    pub data_nodes: usize,
    pub front_door: bool,
    pub replicas: usize,
    pub seed: u64,
    pub faults: Kinds,
    pub load_us: Micros,
    pub net: NetConfig,
    pub trace: bool,
    pub fsync: Option<Fsync>,
}

impl Options {
    /// Clocks run at rates within ±1 % and start up to 20 ms apart (200 ms in a quarter of
    /// the seeds): versions must not depend on them agreeing.
    pub fn new(data_nodes: usize, seed: u64, faults: Kinds) -> Options {
        let net = NetConfig {
            clock_skew: 0.01,
            clock_offset_max_us: if seed % 4 == 1 { 200_000 } else { 20_000 },
            ..NetConfig::default()
        };
        Options {
            data_nodes,
            front_door: seed.is_multiple_of(3),
            replicas: 3.min(data_nodes),
            seed,
            faults,
            load_us: LOAD_US_DEFAULT,
            net,
            trace: false,
            fsync: None,
        }
    }

    fn nodes(&self) -> usize {
        self.data_nodes + self.front_door as usize
    }

    fn config(&self) -> Config {
        let mut config = Config::new(self.data_nodes, self.nodes(), self.replicas);
        config.seed = self.seed;
        config.tombstone_grace_us = TOMBSTONE_GRACE_US;
        config
    }

    pub fn command(&self) -> String {
        let fsync = match self.fsync {
            Some(policy) => format!(" --fsync {}", policy.name()),
            None => String::new(),
        };
        format!(
            "pollen sim kv --masterless --nodes {} --replicas {} --seed {} --faults {}{fsync}",
            self.data_nodes, self.replicas, self.seed, self.faults
        )
    }
}

#[derive(Default)]
pub struct Report {
    pub failure: Option<String>,
    pub stats: SimStats,
    pub faults: Vec<(Micros, Fault)>,
    pub trace: Option<String>,
    pub operations: usize,
    pub acknowledged_writes: usize,
    pub unknown: usize,
    /// Tombstones the live replicas reclaimed.
    pub reclaimed: u64,
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

fn key_name(key: usize) -> Vec<u8> {
    format!("key:{key}").into_bytes()
}

/// A client of the workload: the node it talks to, under which id, and its operation in
/// flight (an index into the history).
struct Client {
    node: NodeId,
    id: ClientId,
    pending: Option<usize>,
    next_us: Micros,
}

fn simulate(options: &Options) -> Report {
    let nodes = options.nodes();
    let disks: Vec<SharedDisk> = (0..options.data_nodes)
        .map(|node| Disk::new(options.seed ^ (node as u64) << 32))
        .collect();
    let mut sim = Sim::new(
        nodes,
        options.seed,
        options.net.clone(),
        (),
        factory(options, &disks),
        options.trace,
    );
    let schedule = fault_schedule(options);
    sim.schedule(&schedule);
    let mut history = Vec::new();
    drive(&mut sim, options, &mut history);
    let failure = check(&sim, options, &history)
        .err()
        .map(|error| runner::failure(&error, &schedule, &options.command()));
    let is_write = |o: &&Operation| matches!(o.action, Action::Write(_));
    Report {
        failure,
        stats: sim.world.stats,
        faults: schedule,
        trace: sim.take_trace(),
        operations: history.len(),
        acknowledged_writes: history
            .iter()
            .filter(is_write)
            .filter(|o| o.outcome == Outcome::Written)
            .count(),
        unknown: history
            .iter()
            .filter(|o| o.outcome == Outcome::Unknown)
            .count(),
        reclaimed: (0..options.data_nodes)
            .filter_map(|node| match sim.role(node) {
                Some(Kv::Node(role)) => role.replica().map(|replica| replica.reclaimed),
                _ => None,
            })
            .sum(),
    }
}

fn factory(options: &Options, disks: &[SharedDisk]) -> Box<dyn FnMut(NodeId) -> Kv> {
    let (config, fsync, disks) = (options.config(), options.fsync, disks.to_vec());
    Box::new(move |node| {
        let journal = match fsync {
            Some(policy) if node < config.data_nodes => {
                let journal = SimJournal::new(disks[node].clone(), policy);
                Some(Box::new(journal) as Box<dyn crate::journal::Journal>)
            }
            _ => None,
        };
        Kv::Node(Box::new(Node::new(config.clone(), node, journal)))
    })
}

/// Faults strike the data nodes and heal by the end of the load.
fn fault_schedule(options: &Options) -> Vec<(Micros, Fault)> {
    let config = options.config();
    let durable = options.fsync == Some(Fsync::Always);
    let plan = faults::Plan {
        kinds: options.faults,
        nodes: options.data_nodes,
        start_us: LOAD_START_US,
        heal_by_us: LOAD_START_US + options.load_us,
        crashes_max: if durable {
            options.data_nodes
        } else {
            config.replicas - config.write_quorum
        },
        restart: durable,
    };
    let mut schedule = faults::schedule(options.seed, &plan);
    // With logs synced before every acknowledgement, a third of the seeds also crash every
    // data node at once.
    if durable && options.seed.is_multiple_of(3) {
        let (seed, nodes) = (options.seed, options.data_nodes);
        super::kv::crash_every_node(seed, nodes, LOAD_START_US, options.load_us, &mut schedule);
        schedule.sort_by_key(|&(at, _)| at);
    }
    schedule
}

/// Runs the workload and the final reads, recording every operation in `history`.
fn drive(sim: &mut Sim<Kv, ()>, options: &Options, history: &mut Vec<Operation>) {
    let nodes = options.nodes();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(options.seed ^ CLIENT_SEED_SALT);
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|client| Client {
            node: client % nodes,
            id: client as ClientId,
            pending: None,
            next_us: LOAD_START_US + uniform(&mut rng, 0, THINK_US_MAX),
        })
        .collect();
    let mut consumed = vec![0usize; nodes];
    let mut next_value = 1u64;
    let load_end_us = LOAD_START_US + options.load_us;
    let read_at_us = load_end_us + SETTLE_US;
    let mut now = LOAD_START_US;
    let mut reader = 0;
    while now < read_at_us + CLIENT_PATIENCE_US {
        sim.run_until(now);
        collect_answers(sim, &mut clients, &mut consumed, history, &mut rng);
        for (index, client) in clients.iter_mut().enumerate() {
            if let Some(at) = client.pending
                && now >= history[at].call_us + CLIENT_PATIENCE_US
            {
                // No answer: unknown; the client tries another node under a new id.
                client.pending = None;
                client.node = (client.node + 1) % nodes;
                client.id += CLIENTS as ClientId;
                client.next_us = now;
            }
            if client.pending.is_none() && client.next_us <= now && now < load_end_us {
                let operation = next_operation(&mut rng, index, now, &mut next_value);
                send(sim, client.node, client.id, &operation);
                client.pending = Some(history.len());
                history.push(operation);
            }
        }
        if now == read_at_us {
            reader = final_reads(sim, options, now, history);
        }
        now += STEP_US;
    }
    collect_final(sim, reader, history);
}

fn next_operation(
    rng: &mut Xoshiro256PlusPlus,
    client: usize,
    now: Micros,
    next: &mut u64,
) -> Operation {
    let key = uniform(rng, 0, KEYS as u64 - 1);
    let action = match uniform(rng, 0, 9) {
        0..=4 => Action::Read,
        5 => Action::Write(None),
        _ => {
            *next += 1;
            Action::Write(Some(*next))
        }
    };
    Operation {
        client: client as u32,
        key,
        action,
        call_us: now,
        return_us: None,
        outcome: Outcome::Unknown,
    }
}

fn send(sim: &mut Sim<Kv, ()>, node: NodeId, client: ClientId, operation: &Operation) {
    let key = key_name(operation.key as usize);
    let args = match operation.action {
        Action::Read => vec![b"GET".to_vec(), key],
        Action::Write(None) => vec![b"DEL".to_vec(), key],
        Action::Write(Some(value)) => vec![b"SET".to_vec(), key, format!("v{value}").into_bytes()],
    };
    sim.client_command(operation.call_us, node, client, args);
}

/// The answers that came since the last look, matched to the clients waiting for them.
fn collect_answers(
    sim: &Sim<Kv, ()>,
    clients: &mut [Client],
    consumed: &mut [usize],
    history: &mut [Operation],
    rng: &mut Xoshiro256PlusPlus,
) {
    for (node, seen) in consumed.iter_mut().enumerate() {
        let replies = sim.replies(node);
        for (at, client_id, line) in &replies[*seen..] {
            let Some(client) = clients
                .iter_mut()
                .find(|c| c.node == node && c.id == *client_id && c.pending.is_some())
            else {
                continue;
            };
            let index = client.pending.take().unwrap();
            settle(&mut history[index], *at, line);
            client.next_us = at + uniform(rng, THINK_US_MIN, THINK_US_MAX);
        }
        *seen = replies.len();
    }
}

/// Records an answer: its time and what it says.
fn settle(operation: &mut Operation, at: Micros, line: &str) {
    operation.return_us = Some(at);
    operation.outcome = match (operation.action, line) {
        (Action::Read, "(nil)") => Outcome::Read(None),
        (Action::Read, text) => match text.strip_prefix("\"v").and_then(|t| t.strip_suffix('"')) {
            Some(number) => number
                .parse()
                .map_or(Outcome::Unknown, |n| Outcome::Read(Some(n))),
            None => Outcome::Unknown,
        },
        (Action::Write(Some(_)), "OK") => Outcome::Written,
        (Action::Write(None), text) if text.starts_with("(integer)") => Outcome::Written,
        _ => Outcome::Unknown,
    };
}

/// One client reads every key through a live node; returns that node.
fn final_reads(
    sim: &mut Sim<Kv, ()>,
    options: &Options,
    now: Micros,
    history: &mut Vec<Operation>,
) -> NodeId {
    let node = (0..options.nodes())
        .find(|&node| sim.alive(node))
        .unwrap_or(0);
    for key in 0..KEYS {
        let operation = Operation {
            client: CLIENTS as u32,
            key: key as u64,
            action: Action::Read,
            call_us: now,
            return_us: None,
            outcome: Outcome::Unknown,
        };
        let args = vec![b"GET".to_vec(), key_name(key)];
        sim.client_command(now, node, FINAL_CLIENT, args);
        history.push(operation);
    }
    node
}

/// The final reads' answers, in the order they were sent.
fn collect_final(sim: &Sim<Kv, ()>, reader: NodeId, history: &mut [Operation]) {
    let finals = history.len() - KEYS;
    let mut answers = sim
        .replies(reader)
        .iter()
        .filter(|(_, client, _)| *client == FINAL_CLIENT);
    for operation in &mut history[finals..] {
        if let Some((at, _, line)) = answers.next() {
            settle(operation, *at, line);
        }
    }
}

fn check(sim: &Sim<Kv, ()>, options: &Options, history: &[Operation]) -> Result<(), String> {
    let finals = &history[history.len() - KEYS..];
    if let Some(unanswered) = finals.iter().find(|o| o.outcome == Outcome::Unknown) {
        return Err(format!(
            "the final read of key:{} got no answer",
            unanswered.key
        ));
    }
    linearizable::check(history)?;
    converged(sim, options)
}

/// Every key's live replicas hold the same newest version.
fn converged(sim: &Sim<Kv, ()>, options: &Options) -> Result<(), String> {
    let data_nodes: Vec<NodeId> = (0..options.data_nodes).collect();
    let slots = SlotMap::new(&data_nodes, options.replicas);
    for key in 0..KEYS {
        let name = key_name(key);
        let held: Vec<(NodeId, u64)> = slots
            .key_replicas(&name)
            .iter()
            .filter_map(|&node| match sim.role(node) {
                Some(Kv::Node(role)) if sim.alive(node) => {
                    let replica = role.replica()?;
                    Some((node, replica.get(&name).map_or(0, |(version, _)| version)))
                }
                _ => None,
            })
            .collect();
        if held.windows(2).any(|pair| pair[0].1 != pair[1].1) {
            return Err(format!(
                "key:{key}: replicas hold different versions: {held:?}"
            ));
        }
    }
    Ok(())
}
