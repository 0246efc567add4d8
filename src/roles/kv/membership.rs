//! Membership and failure detection without a master: SWIM (Das, Gupta and Motivala, 2002)
//! with Lifeguard's suspicion, over the full mesh of a kv cluster.
//!
//! Every `PERIOD_US` a node probes one other node, in a shuffled round-robin order (every node
//! is probed within two periods of its turn coming round): a `Ping`, answered by an `Ack`. No
//! `Ack` within `PROBE_TIMEOUT_US` and the node asks `INDIRECT_PROBES` others to ping the
//! target for it (`PingReq`); they relay the target's `Ack`. No `Ack` by the end of the period
//! and the target becomes *suspect*; a suspect not heard from within the suspicion timeout
//! (`SUSPICION_PERIODS` periods, scaled by log2 of the cluster size) is *dead*.
//!
//! What a node learns travels on the probes themselves: every `Ping`, `Ack` and `PingReq`
//! carries up to `UPDATES_PER_MESSAGE` recent updates `(node, state, incarnation)`, each sent
//! `retransmissions` (≈ 3·log2 n) times, freshest first. A node that hears it is suspected
//! refutes it by raising its incarnation and announcing itself alive (a rumour about an older
//! incarnation, from a node that restarted and forgot, is answered with the current one); an
//! update wins over what
//! a node holds when its incarnation is higher, or equal with a worse state (alive < suspect <
//! dead). A node starts with its incarnation set from its clock, so a restarted node's first
//! announcement overrides the death the others recorded.
//!
//! Bound on convergence: a crash is suspected within about two periods by whoever probes it,
//! declared dead `suspicion_timeout` later, and the update reaches every node in O(log n)
//! periods of piggybacking — measured in `tests::convergence` (`cargo test --release --lib
//! roles::kv::membership -- --ignored --nocapture`).
//!
//! The module is sans-IO: `tick` and `on_message` take the time and return what to send
//! through `Outbox`, so the role, the simulator and the tests drive the same code.

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{Rng, SeedableRng};

use std::cmp::Reverse;

use crate::node::{Micros, NodeId};

/// One probe per period.
pub const PERIOD_US: Micros = 200_000;
/// A direct probe's wait for its `Ack` before indirect probes are asked for.
pub const PROBE_TIMEOUT_US: Micros = 60_000;
/// Nodes asked to probe an unanswered target.
pub const INDIRECT_PROBES: usize = 2;
/// Suspicion lasts this many periods times log2 of the cluster size (at least one).
pub const SUSPICION_PERIODS: u64 = 4;
/// Updates carried per message.
pub const UPDATES_PER_MESSAGE: usize = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Alive,
    Suspect,
    Dead,
}

/// One piece of gossip: what a node says of `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Update {
    pub node: NodeId,
    pub state: State,
    pub incarnation: u64,
}

/// The updates one message carries: at most `UPDATES_PER_MESSAGE`, held in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Updates {
    list: [Update; UPDATES_PER_MESSAGE],
    count: usize,
}

impl Default for Updates {
    fn default() -> Self {
        let none = Update {
            node: 0,
            state: State::Alive,
            incarnation: 0,
        };
        Updates {
            list: [none; UPDATES_PER_MESSAGE],
            count: 0,
        }
    }
}

impl Updates {
    /// Adds one; false (and nothing added) when full.
    pub fn push(&mut self, update: Update) -> bool {
        if self.count == UPDATES_PER_MESSAGE {
            return false;
        }
        self.list[self.count] = update;
        self.count += 1;
        true
    }

    pub fn as_slice(&self) -> &[Update] {
        &self.list[..self.count]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Swim {
    Ping {
        sequence: u64,
        updates: Updates,
    },
    /// Answers a `Ping`; relayed to the node that asked, if the ping was on its behalf.
    Ack {
        sequence: u64,
        target: NodeId,
        updates: Updates,
    },
    PingReq {
        sequence: u64,
        target: NodeId,
        updates: Updates,
    },
}

/// Where the membership puts what it sends.
pub trait Outbox {
    fn send(&mut self, to: NodeId, message: Swim);
}

impl Outbox for Vec<(NodeId, Swim)> {
    fn send(&mut self, to: NodeId, message: Swim) {
        self.push((to, message));
    }
}

#[derive(Clone, Debug)]
struct Member {
    state: State,
    incarnation: u64,
    /// When it became suspect (meaningful while `Suspect`).
    suspected_us: Micros,
}

/// The probe of the current period.
#[derive(Clone, Debug)]
struct Probe {
    target: NodeId,
    sequence: u64,
    sent_us: Micros,
    acked: bool,
    indirect_sent: bool,
}

/// A ping this node sends on another's behalf: the `Ack` goes back to `requester`.
#[derive(Clone, Debug)]
struct Relay {
    requester: NodeId,
    sequence: u64,
    target: NodeId,
    asked_us: Micros,
}

pub struct Membership {
    me: NodeId,
    members: Vec<Member>,
    /// Updates still to piggyback, with the sends left for each.
    gossip: Vec<(Update, u32)>,
    order: Vec<NodeId>,
    next_in_order: usize,
    probe: Option<Probe>,
    relays: Vec<Relay>,
    sequence: u64,
    next_period_us: Micros,
    rng: Xoshiro256PlusPlus,
}

impl Membership {
    /// `nodes` members, all alive at incarnation 0 but `me`, whose incarnation is `now`
    /// (so a restart outranks what others remember of its previous life).
    pub fn new(me: NodeId, nodes: usize, now: Micros, seed: u64) -> Membership {
        assert!(me < nodes);
        let mut members = vec![
            Member {
                state: State::Alive,
                incarnation: 0,
                suspected_us: 0,
            };
            nodes
        ];
        members[me].incarnation = now;
        let mut membership = Membership {
            me,
            members,
            gossip: Vec::new(),
            order: (0..nodes).filter(|&node| node != me).collect(),
            next_in_order: 0,
            probe: None,
            relays: Vec::new(),
            sequence: 0,
            next_period_us: now,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ me as u64),
        };
        membership.announce(Update {
            node: me,
            state: State::Alive,
            incarnation: now,
        });
        membership
    }

    pub fn state(&self, node: NodeId) -> State {
        self.members[node].state
    }

    /// Up for routing: alive or merely suspect.
    pub fn is_up(&self, node: NodeId) -> bool {
        self.members[node].state != State::Dead
    }

    pub fn incarnation(&self, node: NodeId) -> u64 {
        self.members[node].incarnation
    }

    /// When `tick` next has work.
    pub fn next_deadline(&self) -> Micros {
        let probe = self.probe.as_ref().filter(|p| !p.acked && !p.indirect_sent);
        probe.map_or(self.next_period_us, |p| {
            (p.sent_us + PROBE_TIMEOUT_US).min(self.next_period_us)
        })
    }

    fn suspicion_timeout_us(&self) -> Micros {
        let log2 = (usize::BITS - self.members.len().leading_zeros()).max(1) as u64;
        SUSPICION_PERIODS * log2 * PERIOD_US
    }

    fn retransmissions(&self) -> u32 {
        3 * (usize::BITS - self.members.len().leading_zeros()).max(1)
    }

    /// Time passes: ask for indirect probes, close the period, expire suspicions, start
    /// the next probe.
    pub fn tick(&mut self, now: Micros, out: &mut impl Outbox) {
        self.ask_indirect_probes(now, out);
        self.expire_suspicions(now);
        self.relays
            .retain(|relay| now.saturating_sub(relay.asked_us) < PERIOD_US);
        if now < self.next_period_us {
            return;
        }
        if let Some(probe) = self.probe.take()
            && !probe.acked
        {
            self.suspect(probe.target, now);
        }
        self.next_period_us = now + PERIOD_US;
        if let Some(target) = self.next_target() {
            self.sequence += 1;
            self.probe = Some(Probe {
                target,
                sequence: self.sequence,
                sent_us: now,
                acked: false,
                indirect_sent: false,
            });
            let mut updates = self.updates_to_send();
            // A probed node this one thinks suspect or dead is told so, whatever the gossip
            // holds, so that it refutes.
            let member = &self.members[target];
            if member.state != State::Alive {
                let verdict = Update {
                    node: target,
                    state: member.state,
                    incarnation: member.incarnation,
                };
                if !updates.push(verdict) {
                    updates.list[UPDATES_PER_MESSAGE - 1] = verdict;
                }
            }
            let sequence = self.sequence;
            out.send(target, Swim::Ping { sequence, updates });
        }
    }

    fn ask_indirect_probes(&mut self, now: Micros, out: &mut impl Outbox) {
        let Some(probe) = &self.probe else { return };
        if probe.acked || probe.indirect_sent || now < probe.sent_us + PROBE_TIMEOUT_US {
            return;
        }
        let (target, sequence) = (probe.target, probe.sequence);
        let mut helpers: Vec<NodeId> = (0..self.members.len())
            .filter(|&node| node != self.me && node != target && self.is_up(node))
            .collect();
        for _ in 0..INDIRECT_PROBES.min(helpers.len()) {
            let at = self.rng.next_u64() as usize % helpers.len();
            let helper = helpers.swap_remove(at);
            let updates = self.updates_to_send();
            out.send(
                helper,
                Swim::PingReq {
                    sequence,
                    target,
                    updates,
                },
            );
        }
        if let Some(probe) = &mut self.probe {
            probe.indirect_sent = true;
        }
    }

    fn expire_suspicions(&mut self, now: Micros) {
        let timeout = self.suspicion_timeout_us();
        for node in 0..self.members.len() {
            let member = &self.members[node];
            if member.state == State::Suspect && now >= member.suspected_us + timeout {
                let incarnation = member.incarnation;
                self.members[node].state = State::Dead;
                self.announce(Update {
                    node,
                    state: State::Dead,
                    incarnation,
                });
            }
        }
    }

    /// The next node to probe: round-robin over a list shuffled at each pass. The dead are
    /// probed too: two nodes that each declared the other dead, with no third node left to
    /// carry news between them, would otherwise never learn they were wrong.
    fn next_target(&mut self) -> Option<NodeId> {
        for _ in 0..=self.order.len() {
            if self.next_in_order == 0 {
                for at in (1..self.order.len()).rev() {
                    let other = self.rng.next_u64() as usize % (at + 1);
                    self.order.swap(at, other);
                }
            }
            let candidate = self.order.get(self.next_in_order).copied();
            self.next_in_order = (self.next_in_order + 1) % self.order.len().max(1);
            if candidate.is_some() {
                return candidate;
            }
        }
        None
    }

    fn suspect(&mut self, node: NodeId, now: Micros) {
        let member = &mut self.members[node];
        if member.state != State::Alive {
            return;
        }
        member.state = State::Suspect;
        member.suspected_us = now;
        let incarnation = member.incarnation;
        self.announce(Update {
            node,
            state: State::Suspect,
            incarnation,
        });
    }

    pub fn on_message(&mut self, now: Micros, from: NodeId, message: Swim, out: &mut impl Outbox) {
        if from >= self.members.len() || from == self.me {
            return;
        }
        match &message {
            Swim::Ping { updates, .. }
            | Swim::Ack { updates, .. }
            | Swim::PingReq { updates, .. } => {
                for &update in updates.as_slice() {
                    self.apply(update, now);
                }
            }
        }
        match message {
            Swim::Ping { sequence, .. } => {
                let updates = self.updates_to_send();
                let target = self.me;
                out.send(
                    from,
                    Swim::Ack {
                        sequence,
                        target,
                        updates,
                    },
                );
            }
            Swim::PingReq {
                sequence, target, ..
            } => {
                if target >= self.members.len() || target == self.me {
                    return;
                }
                self.relays.push(Relay {
                    requester: from,
                    sequence,
                    target,
                    asked_us: now,
                });
                let updates = self.updates_to_send();
                out.send(target, Swim::Ping { sequence, updates });
            }
            Swim::Ack {
                sequence, target, ..
            } => self.on_ack(from, sequence, target, out),
        }
    }

    fn on_ack(&mut self, from: NodeId, sequence: u64, target: NodeId, out: &mut impl Outbox) {
        if let Some(probe) = &mut self.probe
            && probe.sequence == sequence
            && probe.target == target
        {
            probe.acked = true;
        }
        // An answer to a ping sent on another's behalf goes back to it.
        let relayed = self
            .relays
            .iter()
            .position(|relay| relay.target == from && relay.sequence == sequence);
        if let Some(at) = relayed {
            let relay = self.relays.swap_remove(at);
            let updates = self.updates_to_send();
            out.send(
                relay.requester,
                Swim::Ack {
                    sequence,
                    target: relay.target,
                    updates,
                },
            );
        }
    }

    /// Applies what another node says, if it is news; refutes a suspicion of this node.
    fn apply(&mut self, update: Update, now: Micros) {
        if update.node >= self.members.len() {
            return;
        }
        if update.node == self.me {
            // Suspected or declared dead: refute it. A rumour about an older incarnation is
            // answered too — whoever spreads it does not know the current one (it restarted,
            // or missed the announcement) and would otherwise declare this node dead.
            let mine = &mut self.members[self.me];
            if update.state != State::Alive {
                mine.incarnation = mine.incarnation.max(update.incarnation + 1);
                let refutation = Update {
                    node: self.me,
                    state: State::Alive,
                    incarnation: mine.incarnation,
                };
                self.announce(refutation);
            }
            return;
        }
        let member = &mut self.members[update.node];
        let newer = update.incarnation > member.incarnation
            || (update.incarnation == member.incarnation && update.state > member.state);
        if !newer {
            return;
        }
        member.incarnation = update.incarnation;
        if update.state == State::Suspect && member.state != State::Suspect {
            member.suspected_us = now;
        }
        member.state = update.state;
        self.announce(update);
    }

    /// Queues an update for piggybacking, replacing older news of the same node.
    fn announce(&mut self, update: Update) {
        self.gossip.retain(|(queued, _)| queued.node != update.node);
        let sends = self.retransmissions();
        self.gossip.push((update, sends));
    }

    /// The freshest updates (the most sends left), each counted as sent once more.
    fn updates_to_send(&mut self) -> Updates {
        self.gossip.sort_by_key(|&(_, sends)| Reverse(sends));
        let count = self.gossip.len().min(UPDATES_PER_MESSAGE);
        let mut updates = Updates::default();
        for (update, _) in &self.gossip[..count] {
            updates.push(*update);
        }
        for entry in &mut self.gossip[..count] {
            entry.1 -= 1;
        }
        self.gossip.retain(|(_, sends)| *sends > 0);
        updates
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use super::*;

    /// A little network for memberships alone: each message takes 100 µs to 2 ms and is lost
    /// with probability `loss_ppm` per million; a crashed node neither sends nor receives.
    /// A message in flight: delivery time, send order, from, to, index in `messages`.
    type InFlight = Reverse<(Micros, u64, NodeId, NodeId, usize)>;

    struct Net {
        nodes: Vec<Option<Membership>>,
        queue: BinaryHeap<InFlight>,
        messages: Vec<Option<Swim>>,
        now: Micros,
        rng: Xoshiro256PlusPlus,
        loss_ppm: u64,
        order: u64,
        sent: u64,
    }

    impl Net {
        fn new(nodes: usize, seed: u64, loss_ppm: u64) -> Net {
            let mut net = Net {
                nodes: Vec::new(),
                queue: BinaryHeap::new(),
                messages: Vec::new(),
                now: 1_000_000,
                rng: Xoshiro256PlusPlus::seed_from_u64(seed),
                loss_ppm,
                order: 0,
                sent: 0,
            };
            for node in 0..nodes {
                // Nodes start up to one period apart, as processes do.
                let start = net.now + net.rng.next_u64() % PERIOD_US;
                net.nodes
                    .push(Some(Membership::new(node, nodes, start, seed)));
            }
            net
        }

        fn deliver_all(&mut self, from: NodeId, out: Vec<(NodeId, Swim)>) {
            for (to, message) in out {
                self.sent += 1;
                if self.rng.next_u64() % 1_000_000 < self.loss_ppm {
                    continue;
                }
                let at = self.now + 100 + self.rng.next_u64() % 1_900;
                self.order += 1;
                self.messages.push(Some(message));
                let index = self.messages.len() - 1;
                self.queue.push(Reverse((at, self.order, from, to, index)));
            }
        }

        /// Runs until `until`: ticks every node each millisecond, delivers messages on time.
        fn run(&mut self, until: Micros) {
            while self.now < until {
                self.now += 1_000;
                while let Some(&Reverse((at, _, from, to, index))) = self.queue.peek() {
                    if at > self.now {
                        break;
                    }
                    self.queue.pop();
                    let message = self.messages[index].take().unwrap();
                    let mut out = Vec::new();
                    if let Some(node) = &mut self.nodes[to] {
                        node.on_message(at, from, message, &mut out);
                    }
                    self.deliver_all(to, out);
                }
                for node in 0..self.nodes.len() {
                    let mut out = Vec::new();
                    if let Some(membership) = &mut self.nodes[node] {
                        membership.tick(self.now, &mut out);
                    }
                    self.deliver_all(node, out);
                }
            }
        }

        /// Whether every running node sees `node` in `state`.
        fn all_see(&self, node: NodeId, state: State) -> bool {
            self.nodes
                .iter()
                .enumerate()
                .filter(|&(other, _)| other != node)
                .all(|(_, membership)| membership.as_ref().is_none_or(|m| m.state(node) == state))
        }

        /// Runs until every running node sees `node` in `state`: how long it took, or `None`
        /// after `limit`.
        fn time_until(&mut self, node: NodeId, state: State, limit: Micros) -> Option<Micros> {
            let started = self.now;
            while !self.all_see(node, state) {
                if self.now - started > limit {
                    return None;
                }
                self.run(self.now + 1_000);
            }
            Some(self.now - started)
        }

        fn deaths_seen(&self) -> usize {
            let count = self.nodes.len();
            self.nodes
                .iter()
                .flatten()
                .map(|m| {
                    (0..count)
                        .filter(|&node| m.state(node) == State::Dead)
                        .count()
                })
                .sum()
        }
    }

    #[test]
    fn a_healthy_cluster_suspects_no_one() {
        for seed in 0..5 {
            let mut net = Net::new(8, seed, 0);
            net.run(net.now + 20_000_000);
            for node in 0..8 {
                assert!(net.all_see(node, State::Alive), "seed {seed}: node {node}");
            }
        }
    }

    #[test]
    fn a_crash_is_seen_everywhere_and_a_restart_undoes_it() {
        for seed in 0..10 {
            let mut net = Net::new(5, seed, 0);
            net.run(net.now + 2_000_000);
            net.nodes[3] = None;
            let dead = net.time_until(3, State::Dead, 10_000_000);
            assert!(
                dead.is_some(),
                "seed {seed}: the crash was not seen everywhere"
            );
            // No one else was declared dead meanwhile.
            assert_eq!(net.deaths_seen(), 4, "seed {seed}");
            net.nodes[3] = Some(Membership::new(3, 5, net.now, seed + 100));
            let alive = net.time_until(3, State::Alive, 10_000_000);
            assert!(
                alive.is_some(),
                "seed {seed}: the restart was not seen everywhere"
            );
            net.run(net.now + 5_000_000);
            for node in 0..5 {
                assert!(net.all_see(node, State::Alive), "seed {seed}: node {node}");
            }
        }
    }

    /// 5 % of messages lost: indirect probes and refutations keep every live node alive.
    #[test]
    fn lost_messages_raise_suspicions_that_are_refuted() {
        for seed in 0..5 {
            let mut net = Net::new(8, seed, 50_000);
            net.run(net.now + 30_000_000);
            assert_eq!(net.deaths_seen(), 0, "seed {seed}");
        }
    }

    #[test]
    fn a_suspected_node_refutes_with_a_higher_incarnation() {
        let mut node = Membership::new(0, 3, 5_000, 1);
        let mut out = Vec::new();
        let rumour = Update {
            node: 0,
            state: State::Suspect,
            incarnation: 5_000,
        };
        let mut rumours = Updates::default();
        rumours.push(rumour);
        node.on_message(
            6_000,
            1,
            Swim::Ping {
                sequence: 9,
                updates: rumours,
            },
            &mut out,
        );
        assert_eq!(node.incarnation(0), 5_001);
        let Some((
            1,
            Swim::Ack {
                sequence: 9,
                target: 0,
                updates,
            },
        )) = out.pop()
        else {
            panic!("no ack: {out:?}");
        };
        assert!(updates.as_slice().contains(&Update {
            node: 0,
            state: State::Alive,
            incarnation: 5_001
        }));
        // An old rumour changes nothing.
        node.on_message(
            7_000,
            2,
            Swim::Ping {
                sequence: 1,
                updates: rumours,
            },
            &mut out,
        );
        assert_eq!(node.incarnation(0), 5_001);
    }

    /// A node that restarted knows the others only at incarnation 0; when it suspects one,
    /// the suspect answers with its current incarnation instead of ignoring an old rumour (it
    /// was declared dead, sim seed 2000083 of the masterless kv).
    #[test]
    fn a_rumour_about_an_older_incarnation_is_answered_with_the_current_one() {
        let mut node = Membership::new(1, 3, 5_000, 1);
        let mut out = Vec::new();
        let mut rumours = Updates::default();
        rumours.push(Update {
            node: 1,
            state: State::Suspect,
            incarnation: 0,
        });
        let ping = Swim::Ping {
            sequence: 3,
            updates: rumours,
        };
        // Its start announcement has been sent often enough to be gone from its gossip.
        for _ in 0..64 {
            let _ = node.updates_to_send();
        }
        node.on_message(6_000, 0, ping, &mut out);
        assert_eq!(node.incarnation(1), 5_000);
        let Some((0, Swim::Ack { updates, .. })) = out.pop() else {
            panic!("no ack: {out:?}");
        };
        assert!(updates.as_slice().contains(&Update {
            node: 1,
            state: State::Alive,
            incarnation: 5_000
        }));
        // And the restarted node, hearing it, takes it alive at that incarnation.
        let mut restarted = Membership::new(0, 3, 9_000, 2);
        restarted.suspect(1, 9_500);
        assert_eq!(restarted.state(1), State::Suspect);
        let mut heard = Updates::default();
        heard.push(Update {
            node: 1,
            state: State::Alive,
            incarnation: 5_000,
        });
        restarted.on_message(
            9_600,
            1,
            Swim::Ping {
                sequence: 1,
                updates: heard,
            },
            &mut out,
        );
        assert_eq!(restarted.state(1), State::Alive);
    }

    /// Nodes 0 and 1 are cut apart long enough to declare each other dead while node 2 is
    /// down for good: once the link heals, probing the dead brings both back (sim seed 105841
    /// of the masterless kv kept them dead forever).
    #[test]
    fn two_nodes_that_declared_each_other_dead_find_each_other_again() {
        let mut net = Net::new(3, 7, 0);
        net.run(net.now + 2_000_000);
        net.nodes[2] = None;
        // The cut: every message between 0 and 1 lost, for 10 s.
        net.loss_ppm = 1_000_000;
        net.run(net.now + 10_000_000);
        let zero = net.nodes[0].as_ref().unwrap();
        assert_eq!(zero.state(1), State::Dead);
        net.loss_ppm = 0;
        net.run(net.now + 5_000_000);
        for (node, other) in [(0, 1), (1, 0)] {
            let view = net.nodes[node].as_ref().unwrap();
            assert_eq!(view.state(other), State::Alive, "{node} sees {other}");
        }
    }

    /// Time from a crash to every node seeing it dead, and from a restart to every node seeing
    /// it alive, by cluster size (20 seeds each). Prints a table for docs/kv.md.
    #[test]
    #[ignore = "a measurement: cargo test --release --lib roles::kv::membership -- --ignored --nocapture"]
    fn convergence() {
        println!("nodes  dead: mean / max ms  alive: mean / max ms  messages/node/s");
        for nodes in [3, 8, 32, 64, 128] {
            let (mut dead, mut alive) = (Vec::new(), Vec::new());
            let mut rate = 0.0;
            for seed in 0..20 {
                let mut net = Net::new(nodes, seed, 0);
                net.run(net.now + 2_000_000);
                let (sent, start) = (net.sent, net.now);
                net.nodes[1] = None;
                dead.push(net.time_until(1, State::Dead, 60_000_000).expect("dead"));
                rate += (net.sent - sent) as f64
                    / (nodes - 1) as f64
                    / ((net.now - start) as f64 / 1e6);
                net.nodes[1] = Some(Membership::new(1, nodes, net.now, seed + 1_000));
                alive.push(net.time_until(1, State::Alive, 60_000_000).expect("alive"));
            }
            let stats = |v: &[Micros]| {
                (
                    v.iter().sum::<Micros>() / v.len() as Micros / 1_000,
                    v.iter().max().unwrap() / 1_000,
                )
            };
            let ((dead_mean, dead_max), (alive_mean, alive_max)) = (stats(&dead), stats(&alive));
            println!(
                "{nodes:5}  {dead_mean:8} / {dead_max:5}      {alive_mean:8} / {alive_max:5}      {:.1}",
                rate / 20.0
            );
        }
    }
}
