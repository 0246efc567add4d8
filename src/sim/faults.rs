//! Fault schedules derived from a seed.
//!
//! A schedule is a list of (virtual time, fault). Every fault that ends (partition, stall,
//! pause) ends by `heal_by`, so a checker can demand that nodes agree afterwards; crashes
//! are permanent unless the role supports restarts.

use std::fmt;
use std::str::FromStr;

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{Rng, SeedableRng};

use super::uniform;
use crate::node::{Micros, NodeId};

/// A schedule holds between one and this many faults (a partition counts as one).
const FAULTS_MAX: u64 = 4;
/// The longest partition or stall, and the longest pause or crash before a restart.
const PARTITION_US_MAX: Micros = 400_000;
const PAUSE_US_MAX: Micros = 500_000;
const CRASH_US_MAX: Micros = 500_000;
/// A fault that ends lasts at least this fraction of the time faults may strike in, and at
/// most half of it.
const SPAN_MIN_DIVISOR: u64 = 20;
/// Mixed into the run's seed for the schedule's generator.
const SCHEDULE_SEED_SALT: u64 = 0xFA17_5EED;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The connection breaks; it is re-established after the usual backoff.
    BreakLink {
        a: NodeId,
        b: NodeId,
    },
    /// The connection breaks and stays down until a matching `Unblock` (partitions).
    Block {
        a: NodeId,
        b: NodeId,
    },
    Unblock {
        a: NodeId,
        b: NodeId,
    },
    /// Frames `from → to` sent during the next `for_us` are held until it ends; the
    /// connection stays up (a one-way partition that TCP rides out).
    Stall {
        from: NodeId,
        to: NodeId,
        for_us: Micros,
    },
    /// Like SIGSTOP for `for_us`, then SIGCONT.
    Pause {
        node: NodeId,
        for_us: Micros,
    },
    /// State gone, connections broken.
    Crash {
        node: NodeId,
    },
    Restart {
        node: NodeId,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kinds {
    None,
    Links,
    Partitions,
    Crashes,
    All,
}

impl FromStr for Kinds {
    type Err = String;
    fn from_str(text: &str) -> Result<Kinds, String> {
        match text {
            "none" => Ok(Kinds::None),
            "links" => Ok(Kinds::Links),
            "partitions" => Ok(Kinds::Partitions),
            "crashes" => Ok(Kinds::Crashes),
            "all" => Ok(Kinds::All),
            _ => Err(format!(
                "unknown fault kind {text:?} (none|links|partitions|crashes|all)"
            )),
        }
    }
}

impl fmt::Display for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Kinds::None => "none",
            Kinds::Links => "links",
            Kinds::Partitions => "partitions",
            Kinds::Crashes => "crashes",
            Kinds::All => "all",
        };
        f.write_str(name)
    }
}

/// What a schedule may do.
#[derive(Clone, Debug)]
pub struct Plan {
    pub kinds: Kinds,
    pub nodes: usize,
    /// Faults start at or after this.
    pub start_us: Micros,
    /// Every fault that ends has ended by this.
    pub heal_by_us: Micros,
    /// At most this many crashes.
    pub crashes_max: usize,
    /// Crashed nodes come back (only for roles that support it).
    pub restart: bool,
}

/// The schedule for `seed`: between one and `FAULTS_MAX` faults of the planned kinds.
pub fn schedule(seed: u64, plan: &Plan) -> Vec<(Micros, Fault)> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ SCHEDULE_SEED_SALT);
    let mut faults = Vec::new();
    if plan.kinds == Kinds::None || plan.nodes < 2 {
        return faults;
    }
    let mut crashes = 0;
    let count = uniform(&mut rng, 1, FAULTS_MAX);
    for _ in 0..count {
        let kind = match plan.kinds {
            Kinds::All => {
                [Kinds::Links, Kinds::Partitions, Kinds::Crashes][rng.next_u32() as usize % 3]
            }
            kind => kind,
        };
        match kind {
            Kinds::Links => link_break(&mut rng, plan, &mut faults),
            Kinds::Partitions => partition(&mut rng, plan, &mut faults),
            Kinds::Crashes => {
                if crashes < plan.crashes_max && rng.next_u32().is_multiple_of(2) {
                    crashes += 1;
                    crash(&mut rng, plan, &mut faults);
                } else {
                    pause(&mut rng, plan, &mut faults);
                }
            }
            Kinds::None | Kinds::All => unreachable!(),
        }
    }
    faults.sort_by_key(|(at, _)| *at);
    faults
}

fn pick_node(rng: &mut Xoshiro256PlusPlus, nodes: usize) -> NodeId {
    rng.next_u32() as usize % nodes
}

fn pick_pair(rng: &mut Xoshiro256PlusPlus, nodes: usize) -> (NodeId, NodeId) {
    let a = pick_node(rng, nodes);
    let b = (a + 1 + pick_node(rng, nodes - 1)) % nodes;
    (a, b)
}

/// A window `[at, at + length)` inside `[start, heal_by)`.
fn span(rng: &mut Xoshiro256PlusPlus, plan: &Plan, length_max: Micros) -> (Micros, Micros) {
    let room = plan.heal_by_us.saturating_sub(plan.start_us);
    let length = uniform(rng, room / SPAN_MIN_DIVISOR, length_max.min(room / 2));
    let at = uniform(rng, plan.start_us, plan.heal_by_us - length);
    (at, length)
}

fn link_break(rng: &mut Xoshiro256PlusPlus, plan: &Plan, faults: &mut Vec<(Micros, Fault)>) {
    let (a, b) = pick_pair(rng, plan.nodes);
    let at = uniform(rng, plan.start_us, plan.heal_by_us);
    faults.push((at, Fault::BreakLink { a, b }));
}

fn partition(rng: &mut Xoshiro256PlusPlus, plan: &Plan, faults: &mut Vec<(Micros, Fault)>) {
    let n = plan.nodes;
    let (at, length) = span(rng, plan, PARTITION_US_MAX);
    match rng.next_u32() % 4 {
        // One side cut off from the rest, both directions.
        0 | 1 => {
            let side: Vec<bool> = loop {
                let side: Vec<bool> = (0..n).map(|_| rng.next_u32().is_multiple_of(2)).collect();
                if side.iter().any(|&s| s) && side.iter().any(|&s| !s) {
                    break side;
                }
            };
            for a in 0..n {
                for b in a + 1..n {
                    if side[a] != side[b] {
                        faults.push((at, Fault::Block { a, b }));
                        faults.push((at + length, Fault::Unblock { a, b }));
                    }
                }
            }
        }
        // Swizzle: cut nodes off one at a time, heal them in another random order.
        2 => {
            let mut order: Vec<NodeId> = (0..n).collect();
            shuffle(rng, &mut order);
            let cut = uniform(rng, 1, (n as u64 - 1).max(1)) as usize;
            let step = length / (2 * cut as u64 + 1);
            let mut heal: Vec<NodeId> = order[..cut].to_vec();
            shuffle(rng, &mut heal);
            for (index, &node) in order[..cut].iter().enumerate() {
                let cut_at = at + step * index as u64;
                let heal_at = at + length - step * (cut - 1 - heal_position(&heal, node)) as u64;
                for peer in (0..n).filter(|&peer| peer != node) {
                    faults.push((cut_at, Fault::Block { a: node, b: peer }));
                    faults.push((heal_at, Fault::Unblock { a: node, b: peer }));
                }
            }
        }
        // One direction stalls while the connection stays up.
        _ => {
            let (from, to) = pick_pair(rng, n);
            faults.push((
                at,
                Fault::Stall {
                    from,
                    to,
                    for_us: length,
                },
            ));
        }
    }
}

fn heal_position(order: &[NodeId], node: NodeId) -> usize {
    order
        .iter()
        .position(|&n| n == node)
        .expect("node is in the heal order")
}

fn pause(rng: &mut Xoshiro256PlusPlus, plan: &Plan, faults: &mut Vec<(Micros, Fault)>) {
    let node = pick_node(rng, plan.nodes);
    let (at, length) = span(rng, plan, PAUSE_US_MAX);
    faults.push((
        at,
        Fault::Pause {
            node,
            for_us: length,
        },
    ));
}

fn crash(rng: &mut Xoshiro256PlusPlus, plan: &Plan, faults: &mut Vec<(Micros, Fault)>) {
    let node = pick_node(rng, plan.nodes);
    let (at, length) = span(rng, plan, CRASH_US_MAX);
    faults.push((at, Fault::Crash { node }));
    if plan.restart {
        faults.push((at + length, Fault::Restart { node }));
    }
}

fn shuffle(rng: &mut Xoshiro256PlusPlus, items: &mut [NodeId]) {
    for index in (1..items.len()).rev() {
        let other = rng.next_u32() as usize % (index + 1);
        items.swap(index, other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(kinds: Kinds) -> Plan {
        Plan {
            kinds,
            nodes: 4,
            start_us: 100_000,
            heal_by_us: 900_000,
            crashes_max: 1,
            restart: false,
        }
    }

    #[test]
    fn schedules_are_deterministic_bounded_and_balanced() {
        for kinds in [Kinds::Links, Kinds::Partitions, Kinds::Crashes, Kinds::All] {
            for seed in 0..500 {
                let faults = schedule(seed, &plan(kinds));
                assert_eq!(faults, schedule(seed, &plan(kinds)));
                assert!(!faults.is_empty());
                let mut blocks = 0i64;
                let mut crashes = 0;
                for (at, fault) in &faults {
                    assert!((100_000..=900_000).contains(at), "{fault:?} at {at}");
                    match fault {
                        Fault::Block { a, b } | Fault::Unblock { a, b } => assert_ne!(a, b),
                        Fault::Stall { for_us, .. } | Fault::Pause { for_us, .. } => {
                            assert!(at + for_us <= 900_000)
                        }
                        Fault::Crash { .. } => crashes += 1,
                        _ => {}
                    }
                    match fault {
                        Fault::Block { .. } => blocks += 1,
                        Fault::Unblock { .. } => blocks -= 1,
                        _ => {}
                    }
                }
                assert_eq!(blocks, 0, "every block is healed");
                assert!(crashes <= 1);
            }
        }
        assert!(schedule(3, &plan(Kinds::None)).is_empty());
    }
}
