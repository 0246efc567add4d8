//! kv under the simulator, and its checker.
//!
//! Workload: `CLIENTS` clients, each owning `KEYS_PER_CLIENT` keys, pipeline SETs (unique
//! values), DELs and GETs of their own keys every few milliseconds for the first `load_us`;
//! meanwhile the seed's faults strike the workers: pauses, one-way stalls, and at most
//! `replicas − 1` crashes (sometimes followed by a restart, which rejoins empty). After the
//! faults heal and a settling time, a fresh client reads every key.
//!
//! The checker demands:
//! 1. read your writes: every GET answered returns what the latest SET or DEL that client sent
//!    for the key before it left (a GET may fail with an error — a read in flight to a worker
//!    that died — but never return something stale or foreign);
//! 2. no acknowledged write lost: at the end every key reads as its last acknowledged SET or
//!    DEL left it (or as a later, unacknowledged one did — never as an earlier one);
//! 3. convergence, read from the workers' own stores (not from what the master reports): every
//!    key's replicas on the live workers, placed as the master places them, hold its newest
//!    version with the same value (a deleted key: the tombstone, or nothing).
//!
//! With `fsync` set the workers have journals on simulated disks (`journal::mem`: a crash keeps
//! only synced bytes and a torn, sometimes corrupt, part of the rest) and every crash is
//! followed by a restart that replays the log. Under `always` any number of workers may crash
//! — in a third of the seeds all of them at once — and (2) still holds: nothing acknowledged
//! is lost. (1) is then checked only for reads sent while fewer than `replicas` workers were
//! down (and for 500 ms after): when every replica of a key is down, a read may find another
//! worker that never held it, which is unavailability, not loss. Under `everysec`/`no` a crash
//! can lose a worker's recent writes, so crashes are limited to `replicas − 1` as without logs.
//! Logs are rewritten past 4 KiB, so rewrites meet crashes too.
//!
//! `Options::heavy` pads values to 4 KiB, gives each client 64 keys and keeps links at
//! 1 MB/s (the load asks 2.4 MB/s of each master-to-worker link): the master's links to the
//! workers fill up (its outboxes hold what they cannot take) and a transfer outruns its window
//! of credits.

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{Rng, SeedableRng};

use super::faults::{self, Fault, Kinds};
use super::runner::{self, SeedReport};
use super::{NetConfig, Sim, SimStats, uniform};
use crate::journal::Fsync;
use crate::journal::mem::{Disk, SharedDisk, SimJournal};
use crate::node::{ClientId, Micros, NodeId};
use crate::roles::kv::Kv;
use crate::roles::kv::placement::{HashRing, REPLICAS_MAX};

const CLIENTS: usize = 4;
/// Keys per client, unless `Options::keys_per_client` says otherwise.
const KEYS_PER_CLIENT: usize = 8;
const STEP_US: Micros = 3_000;
/// The client that reads everything at the end.
const FINAL_CLIENT: ClientId = 1000;
const REPLICAS_DEFAULT: usize = 2;
const LOAD_US_DEFAULT: Micros = 300_000;
/// Clients start once the master has its workers; faults strike from then on.
const LOAD_START_US: Micros = 50_000;
/// The failure detector at the simulation's scale (see `Options::suspect_us`).
const HEARTBEAT_US: Micros = 10_000;
const SUSPECT_US_DEFAULT: Micros = 40_000;
const EVICT_US_DEFAULT: Micros = 60_000;
/// `Options::heavy`: value size, keys per client, link bandwidth.
const HEAVY_VALUE_BYTES: usize = 4096;
const HEAVY_KEYS_PER_CLIENT: usize = 64;
const HEAVY_BANDWIDTH_BYTES_PER_S: u64 = 1_000_000;
/// From the end of the load to the final reads (faults have healed, transfers settle);
/// heavy runs queue seconds of traffic behind slow links.
const SETTLE_US: Micros = 700_000;
const HEAVY_SETTLE_US: Micros = 5_000_000;
/// The final reads' time to answer; heavy runs read 1 MiB back over 1 MB/s links.
const READ_US: Micros = 500_000;
const HEAVY_READ_US: Micros = 3_000_000;
/// The crash of every worker at once (durable seeds): the workers come back this long after
/// it, each a little apart.
const ALL_DOWN_US_MIN: Micros = 1_000;
const ALL_DOWN_US_MAX: Micros = 100_000;
const RESTART_SPREAD_US: Micros = 2_000;
/// Mixed into the run's seed for the crash of every worker at once.
const ALL_CRASH_SEED_SALT: u64 = 0xA11_C0DE;
/// From a restart until a worker has caught up (read-your-writes is excused meanwhile).
const CATCH_UP_US: Micros = 500_000;

#[derive(Clone, Debug)]
pub struct Options {
    pub workers: usize,
    pub replicas: usize,
    pub seed: u64,
    pub faults: Kinds,
    pub load_us: Micros,
    pub net: NetConfig,
    pub trace: bool,
    /// Workers log to simulated disks with this policy (None: in memory only).
    pub fsync: Option<Fsync>,
    /// Values are padded to this many bytes (0: short values).
    pub value_bytes: usize,
    /// The failure detector at the simulation's scale: heartbeats every 10 ms, a worker
    /// silent for `suspect_us` is suspected and `evict_us` later evicted (so that the seeds'
    /// pauses, 15–150 ms, trip both).
    pub suspect_us: Micros,
    pub evict_us: Micros,
    pub keys_per_client: usize,
}

impl Options {
    pub fn new(workers: usize, seed: u64, faults: Kinds) -> Options {
        Options {
            workers,
            replicas: REPLICAS_DEFAULT,
            seed,
            faults,
            load_us: LOAD_US_DEFAULT,
            net: NetConfig::default(),
            trace: false,
            fsync: None,
            value_bytes: 0,
            suspect_us: SUSPECT_US_DEFAULT,
            evict_us: EVICT_US_DEFAULT,
            keys_per_client: KEYS_PER_CLIENT,
        }
    }

    /// Values of 4 KiB and 64 keys per client over 1 MB/s links: backpressure everywhere.
    pub fn heavy(mut self) -> Options {
        self.value_bytes = HEAVY_VALUE_BYTES;
        self.keys_per_client = HEAVY_KEYS_PER_CLIENT;
        self.net.bandwidth_bytes_per_s = HEAVY_BANDWIDTH_BYTES_PER_S;
        self
    }

    pub fn command(&self) -> String {
        let fsync = match self.fsync {
            None => "",
            Some(Fsync::Always) => " --fsync always",
            Some(Fsync::EverySec) => " --fsync everysec",
            Some(Fsync::No) => " --fsync no",
        };
        let heavy = if self.value_bytes > 0 { " --heavy" } else { "" };
        format!(
            "pollen sim kv --nodes {} --seed {} --faults {}{fsync}{heavy}",
            self.workers, self.seed, self.faults
        )
    }
}

#[derive(Default)]
pub struct Report {
    pub failure: Option<String>,
    pub stats: SimStats,
    pub faults: Vec<(Micros, Fault)>,
    pub trace: Option<String>,
    /// Writes acknowledged during the run.
    pub writes: usize,
    /// Stale replicas the master repaired on reads.
    pub read_repairs: u64,
    /// Logs found with a torn or corrupt tail at a restart.
    pub torn_tails: u64,
    /// Batches the master had to hold for lack of room, and transfer steps that waited for
    /// credits.
    pub queued_batches: u64,
    pub credit_waits: u64,
    /// Workers the master's failure detector suspected, and evicted.
    pub suspicions: u64,
    pub evictions: u64,
}

impl SeedReport for Report {
    fn failed(failure: String) -> Report {
        Report {
            failure: Some(failure),
            ..Report::default()
        }
    }
}

/// What a client sent, in order (its replies come in the same order).
#[derive(Clone, Debug)]
enum Sent {
    Set {
        key: usize,
        value: String,
    },
    Del {
        key: usize,
    },
    Get {
        key: usize,
        expected: Option<String>,
        at: Micros,
    },
}

pub fn run(options: &Options) -> Report {
    runner::run_seed(|| simulate(options), || options.command())
}

/// Logs are rewritten past this size in the simulator (64 MiB by default for real).
const SIM_REWRITE_MIN: u64 = 4096;

fn key_name(key: usize) -> String {
    format!("key:{key}")
}

fn simulate(options: &Options) -> Report {
    let workers = options.workers;
    let master = workers;
    let disks: Vec<SharedDisk> = (0..workers)
        .map(|worker| Disk::new(options.seed ^ (worker as u64) << 32))
        .collect();
    let mut sim = Sim::new(
        workers + 1,
        options.seed,
        options.net.clone(),
        (),
        factory(options, &disks),
        options.trace,
    );
    let schedule = fault_schedule(options);
    sim.schedule(&schedule);
    let sent = queue_load(&mut sim, options);
    let (settle_us, read_us) = settle_and_read_us(options);
    let read_at_us = LOAD_START_US + options.load_us + settle_us;
    queue_final_reads(&mut sim, options, read_at_us);
    sim.run_until(read_at_us + read_us);
    let exempt = stale_read_windows(&schedule, options.replicas);
    let (failure, writes) = match check(&sim, options, &sent, &exempt) {
        Ok(writes) => (None, writes),
        Err(error) => (
            Some(runner::failure(&error, &schedule, &options.command())),
            0,
        ),
    };
    let (read_repairs, queued_batches, suspicions, evictions) = match sim.role(master) {
        Some(Kv::Master(master)) => (
            master.read_repairs,
            master.queued_batches,
            master.suspicions,
            master.evictions,
        ),
        _ => (0, 0, 0, 0),
    };
    let credit_waits = (0..workers)
        .map(|worker| match sim.role(worker) {
            Some(Kv::Worker(worker)) => worker.credit_waits,
            _ => 0,
        })
        .sum();
    Report {
        failure,
        stats: sim.world.stats,
        faults: schedule,
        trace: sim.take_trace(),
        writes,
        read_repairs,
        torn_tails: disks.iter().map(|disk| disk.borrow().torn_tails).sum(),
        queued_batches,
        credit_waits,
        suspicions,
        evictions,
    }
}

/// Builds node `node` (workers first, then the master) at start and at every restart; with
/// `fsync` set a worker logs to its disk in `disks`, which outlives its crashes.
fn factory(options: &Options, disks: &[SharedDisk]) -> Box<dyn FnMut(NodeId) -> Kv> {
    let (workers, replicas, fsync) = (options.workers, options.replicas, options.fsync);
    let (suspect_us, evict_us) = (options.suspect_us, options.evict_us);
    let disks = disks.to_vec();
    Box::new(move |node| {
        let kv = Kv::new(node, workers, replicas, None).with_failure_detector(
            HEARTBEAT_US,
            suspect_us,
            evict_us,
        );
        match fsync {
            Some(policy) if node < workers => {
                let journal = SimJournal::new(disks[node].clone(), policy);
                kv.with_journal(Box::new(journal), SIM_REWRITE_MIN)
            }
            _ => kv,
        }
    })
}

/// Faults strike only workers (the master is a single point of failure by design) and heal by
/// the end of the load. With logs synced before every acknowledgement any number of workers
/// may crash (and they all come back), in a third of the seeds all at once; otherwise at most
/// `replicas − 1`, some coming back.
fn fault_schedule(options: &Options) -> Vec<(Micros, Fault)> {
    let workers = options.workers;
    let durable = options.fsync == Some(Fsync::Always);
    let plan = faults::Plan {
        kinds: options.faults,
        nodes: workers,
        start_us: LOAD_START_US,
        heal_by_us: LOAD_START_US + options.load_us,
        crashes_max: if durable {
            workers
        } else {
            options.replicas - 1
        },
        restart: options.fsync.is_some() || options.seed.is_multiple_of(2),
    };
    let mut schedule: Vec<(Micros, Fault)> = faults::schedule(options.seed, &plan)
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
    if durable && options.faults != Kinds::None && options.seed.is_multiple_of(3) {
        crash_every_worker(options, &mut schedule);
        schedule.sort_by_key(|(at, _)| *at);
    }
    schedule
}

/// Every worker at once, late in the load (so that most keys' last acknowledged write comes
/// before it), all back a little later.
fn crash_every_worker(options: &Options, schedule: &mut Vec<(Micros, Fault)>) {
    let (seed, nodes) = (options.seed, options.workers);
    crash_every_node(seed, nodes, LOAD_START_US, options.load_us, schedule);
}

/// Every node crashes at one instant in the second half of the load (`start_us` on, for
/// `load_us`) and each comes back a little later: what only logs synced before every
/// acknowledgement survive. Shared with the masterless kv's simulation.
pub(super) fn crash_every_node(
    seed: u64,
    nodes: usize,
    start_us: Micros,
    load: Micros,
    schedule: &mut Vec<(Micros, Fault)>,
) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ ALL_CRASH_SEED_SALT);
    let at = uniform(&mut rng, start_us + load / 2, start_us + load);
    let back = at + uniform(&mut rng, ALL_DOWN_US_MIN, ALL_DOWN_US_MAX);
    for node in 0..nodes {
        schedule.push((at, Fault::Crash { node }));
        schedule.push((
            back + rng.next_u32() as Micros % RESTART_SPREAD_US,
            Fault::Restart { node },
        ));
    }
}

/// The workload: each client pipelines SETs, DELs and GETs of its own keys, one every step.
/// Returns what each client sent, in order, with what each GET must read.
fn queue_load(sim: &mut Sim<Kv, ()>, options: &Options) -> Vec<Vec<Sent>> {
    let master = options.workers;
    let mut sent: Vec<Vec<Sent>> = vec![Vec::new(); CLIENTS];
    let keys_per_client = options.keys_per_client;
    let mut latest: Vec<Option<String>> = vec![None; CLIENTS * keys_per_client];
    let steps = (options.load_us / STEP_US) as usize;
    for step in 0..steps {
        let at = LOAD_START_US + step as Micros * STEP_US;
        for (client, log) in sent.iter_mut().enumerate() {
            let key = client * keys_per_client + step % keys_per_client;
            let name = key_name(key).into_bytes();
            if step % 3 == 2 {
                let expected = latest[key].clone();
                sim.client_command(at, master, client, vec![b"GET".to_vec(), name]);
                log.push(Sent::Get { key, expected, at });
            } else if step % 5 == 4 {
                sim.client_command(at, master, client, vec![b"DEL".to_vec(), name]);
                latest[key] = None;
                log.push(Sent::Del { key });
            } else {
                let mut value = format!("v{}-{step}-{client}", options.seed);
                let padding = options.value_bytes.saturating_sub(value.len());
                value.extend(std::iter::repeat_n('.', padding));
                let args = vec![b"SET".to_vec(), name, value.clone().into_bytes()];
                sim.client_command(at, master, client, args);
                latest[key] = Some(value.clone());
                log.push(Sent::Set { key, value });
            }
        }
    }
    sent
}

/// A fresh client reads every key at `at`.
fn queue_final_reads(sim: &mut Sim<Kv, ()>, options: &Options, at: Micros) {
    for key in 0..CLIENTS * options.keys_per_client {
        let args = vec![b"GET".to_vec(), key_name(key).into_bytes()];
        sim.client_command(at, options.workers, FINAL_CLIENT, args);
    }
}

/// How long the run settles before the final reads, and how long they have to answer.
fn settle_and_read_us(options: &Options) -> (Micros, Micros) {
    if options.value_bytes > 0 {
        (HEAVY_SETTLE_US, HEAVY_READ_US)
    } else {
        (SETTLE_US, READ_US)
    }
}

/// Times during which `replicas` or more workers were down or catching up (from a crash to
/// 500 ms after the restart): a key may then have no live replica that holds its latest write,
/// and a read in flight then may miss it — unavailability, not loss (the final reads, after
/// everything is back, must find every acknowledged write).
fn stale_read_windows(schedule: &[(Micros, Fault)], replicas: usize) -> Vec<(Micros, Micros)> {
    let mut down: Vec<bool> = Vec::new();
    // (time, +1 at a crash / -1 once caught up)
    let mut edges: Vec<(Micros, i32)> = Vec::new();
    for &(at, ref fault) in schedule {
        match *fault {
            Fault::Crash { node } => {
                down.resize(down.len().max(node + 1), false);
                if !down[node] {
                    down[node] = true;
                    edges.push((at, 1));
                }
            }
            Fault::Restart { node } if down.get(node) == Some(&true) => {
                down[node] = false;
                edges.push((at + CATCH_UP_US, -1));
            }
            // A paused worker is routed around once the failure detector suspects it, and
            // catches up when it speaks again.
            Fault::Pause { for_us, .. } => {
                edges.push((at, 1));
                edges.push((at + for_us + CATCH_UP_US, -1));
            }
            _ => {}
        }
    }
    // A node never restarted stays down: its window never closes.
    edges.sort();
    let mut windows = Vec::new();
    let (mut level, mut open) = (0, None);
    for (at, step) in edges {
        level += step;
        match open {
            None if level >= replicas as i32 => open = Some(at),
            Some(start) if level < replicas as i32 => {
                windows.push((start, at));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(start) = open {
        windows.push((start, Micros::MAX));
    }
    windows
}

/// What a key holds after a SET (`Some(value)`) or a DEL (`None`), as the REPL shows it.
fn shown(effect: &Option<String>) -> String {
    match effect {
        Some(value) => format!("\"{value}\""),
        None => "(nil)".to_string(),
    }
}

fn check(
    sim: &Sim<Kv, ()>,
    options: &Options,
    sent: &[Vec<Sent>],
    exempt: &[(Micros, Micros)],
) -> Result<usize, String> {
    let replies = sim.replies(options.workers);
    let keys = CLIENTS * options.keys_per_client;
    // Per key, every SET or DEL in the order its one client sent them: (effect, acknowledged).
    let mut writes_of: Vec<Vec<(Option<String>, bool)>> = vec![Vec::new(); keys];
    let mut writes = 0;
    for (client, log) in sent.iter().enumerate() {
        writes += check_client(client, log, replies, exempt, &mut writes_of)?;
    }
    check_final_reads(replies, &writes_of)?;
    let live = (0..options.workers)
        .filter(|&w| sim.alive(w) && !sim.stopped(w))
        .count();
    if live >= options.replicas {
        let misplaced = misplaced_copies(sim, options);
        if !misplaced.is_empty() {
            return Err(format!("the replicas did not converge:\n  {misplaced}"));
        }
    }
    Ok(writes)
}

/// Property 1: `client` got a reply per command, and every GET read its own latest write (or
/// failed, or was in flight in an `exempt` window). Records its writes in `writes_of` and
/// returns how many were acknowledged.
fn check_client(
    client: ClientId,
    log: &[Sent],
    replies: &[(Micros, ClientId, String)],
    exempt: &[(Micros, Micros)],
    writes_of: &mut [Vec<(Option<String>, bool)>],
) -> Result<usize, String> {
    let answers: Vec<(Micros, &str)> = replies
        .iter()
        .filter(|(_, c, _)| *c == client)
        .map(|(at, _, line)| (*at, line.as_str()))
        .collect();
    if answers.len() != log.len() {
        return Err(format!(
            "client {client} sent {} commands, got {} replies",
            log.len(),
            answers.len()
        ));
    }
    let mut writes = 0;
    for (command, &(answered, answer)) in log.iter().zip(&answers) {
        match command {
            Sent::Set { key, value } => {
                if answer != "OK" && !answer.starts_with("ERR") {
                    return Err(format!("SET {key} answered {answer:?}"));
                }
                writes += (answer == "OK") as usize;
                writes_of[*key].push((Some(value.clone()), answer == "OK"));
            }
            Sent::Del { key } => {
                let acknowledged = answer.starts_with("(integer) ");
                if !acknowledged && !answer.starts_with("ERR") {
                    return Err(format!("DEL {key} answered {answer:?}"));
                }
                writes += acknowledged as usize;
                writes_of[*key].push((None, acknowledged));
            }
            Sent::Get { key, expected, at } => {
                let wanted = shown(expected);
                // In flight while every replica of the key may have been down.
                let excused = exempt
                    .iter()
                    .any(|&(start, end)| *at < end && answered >= start);
                if answer != wanted && !answer.starts_with("ERR") && !excused {
                    return Err(format!(
                        "client {client}: GET key:{key} answered {answer} after writing {wanted}"
                    ));
                }
            }
        }
    }
    Ok(writes)
}

/// Property 2: at the end every key reads as its last acknowledged write left it, or as a
/// later one.
fn check_final_reads(
    replies: &[(Micros, ClientId, String)],
    writes_of: &[Vec<(Option<String>, bool)>],
) -> Result<(), String> {
    let finals: Vec<&str> = replies
        .iter()
        .filter(|(_, c, _)| *c == FINAL_CLIENT)
        .map(|(_, _, line)| line.as_str())
        .collect();
    let keys = writes_of.len();
    if finals.len() != keys {
        return Err(format!(
            "the final reads got {} replies for {keys} keys",
            finals.len()
        ));
    }
    for (key, ops) in writes_of.iter().enumerate() {
        // The last acknowledged write or any later one may be what the key holds (a write that
        // got an error may still have reached a replica); an earlier one, never.
        let last_acknowledged = ops.iter().rposition(|&(_, acknowledged)| acknowledged);
        let from = last_acknowledged.unwrap_or(0);
        let mut allowed: Vec<String> = ops[from..].iter().map(|(e, _)| shown(e)).collect();
        if last_acknowledged.is_none() {
            allowed.push(shown(&None));
        }
        if !allowed.iter().any(|effect| effect == finals[key]) {
            return Err(format!(
                "key:{key} reads {} at the end; the last acknowledged write left {:?}",
                finals[key],
                last_acknowledged.map(|at| shown(&ops[at].0))
            ));
        }
    }
    Ok(())
}

/// Every key whose replicas among the live workers (placed as the master places them) do
/// not all hold its newest version — read from the workers' stores — one line each.
fn misplaced_copies(sim: &Sim<Kv, ()>, options: &Options) -> String {
    let live: Vec<usize> = (0..options.workers)
        .filter(|&w| sim.alive(w) && !sim.stopped(w))
        .collect();
    let ring = HashRing::new(&live);
    let mut lines = Vec::new();
    for key in 0..CLIENTS * options.keys_per_client {
        let name = key_name(key);
        let mut replicas = [0; REPLICAS_MAX];
        let count = ring.replicas(name.as_bytes(), options.replicas, &mut replicas);
        let held: Vec<(usize, u64, Option<Vec<u8>>)> = live
            .iter()
            .filter_map(|&w| match sim.role(w) {
                Some(Kv::Worker(worker)) => worker
                    .entry(name.as_bytes())
                    .map(|(version, value)| (w, version, value.map(<[u8]>::to_vec))),
                _ => None,
            })
            .collect();
        let Some(newest) = held.iter().max_by_key(|(_, version, _)| *version) else {
            continue;
        };
        let stale: Vec<usize> = replicas[..count]
            .iter()
            .copied()
            .filter(|&replica| {
                let entry = held.iter().find(|(w, _, _)| *w == replica);
                match entry {
                    Some((_, version, value)) => (*version, value) != (newest.1, &newest.2),
                    None => newest.2.is_some(),
                }
            })
            .collect();
        if !stale.is_empty() {
            let versions: Vec<(usize, u64, bool)> = held
                .iter()
                .map(|(w, version, value)| (*w, *version, value.is_some()))
                .collect();
            lines.push(format!(
                "{name}: replicas {:?}, stale {stale:?}; held (worker, version, present) \
                 {versions:?}",
                &replicas[..count]
            ));
        }
    }
    lines.join("\n  ")
}
