//! The simulator's own semantics, with a probe role that records what it sees.

use super::faults::Fault;
use super::world::CLOCK_EPOCH_US;
use super::{NetConfig, Sim};
use crate::node::{Io, Micros, NodeId, Role, Timer};
use crate::wire::{GossipState, Items, Message, OriginState};

#[derive(Default)]
struct Probe {
    events: Vec<(Micros, String)>,
    next: u64,
}

fn state(have: u64) -> [OriginState; 1] {
    [OriginState {
        have,
        fin: 0,
        flags: 0,
        send_end_us: 0,
    }]
}

impl Role for Probe {
    fn on_start(&mut self, io: &mut impl Io) {
        self.events.push((io.now(), "start".into()));
        io.set_timer(1_000, Timer(1));
    }
    fn on_message(&mut self, io: &mut impl Io, from: NodeId, message: Message<'_>) {
        let Message::GossipState(state) = message else {
            panic!()
        };
        self.events.push((
            io.now(),
            format!("from {from}: {}", state.origins.get(0).have),
        ));
    }
    fn on_timer(&mut self, io: &mut impl Io, _timer: Timer) {
        // Node 1 streams numbered frames to node 0 every millisecond, and one to itself.
        if io.node() == 1 {
            let frame = state(self.next);
            if io.send(
                0,
                &Message::GossipState(GossipState {
                    origins: Items::Host(&frame),
                }),
            ) {
                self.next += 1;
            }
            io.send(
                1,
                &Message::GossipState(GossipState {
                    origins: Items::Host(&frame),
                }),
            );
        }
        io.set_timer(1_000, Timer(1));
    }
    fn on_peer_up(&mut self, io: &mut impl Io, peer: NodeId) {
        self.events.push((io.now(), format!("up {peer}")));
    }
    fn on_peer_down(&mut self, io: &mut impl Io, peer: NodeId) {
        self.events.push((io.now(), format!("down {peer}")));
    }
}

fn sim(faults: &[(Micros, Fault)]) -> Sim<Probe, ()> {
    let config = NetConfig {
        clock_skew: 0.0,
        ..NetConfig::default()
    };
    let mut sim = Sim::new(2, 7, config, (), Box::new(|_| Probe::default()), false);
    sim.schedule(faults);
    sim.run_until(200_000);
    sim
}

fn received(probe: &Probe) -> Vec<u64> {
    probe
        .events
        .iter()
        .filter_map(|(_, what)| what.strip_prefix("from 1: ").map(|n| n.parse().unwrap()))
        .collect()
}

#[test]
fn a_pause_delays_but_never_reorders_or_loses() {
    let sim = sim(&[(
        50_000,
        Fault::Pause {
            node: 0,
            for_us: 60_000,
        },
    )]);
    let probe = sim.role(0).unwrap();
    let got = received(probe);
    assert!(got.len() > 150, "{}", got.len());
    assert_eq!(
        got,
        (0..got.len() as u64).collect::<Vec<_>>(),
        "in order, none lost"
    );
    // Nothing was handled during the pause; what waited was handled at its end.
    let during: Vec<_> = probe
        .events
        .iter()
        .filter(|(at, _)| (50_001..110_000).contains(&(at - CLOCK_EPOCH_US)))
        .collect();
    assert!(during.is_empty(), "{during:?}");
}

#[test]
fn a_crash_loses_state_and_a_restart_starts_afresh() {
    let sim = sim(&[
        (50_000, Fault::Crash { node: 1 }),
        (80_000, Fault::Restart { node: 1 }),
    ]);
    let survivor = sim.role(0).unwrap();
    let downs = survivor
        .events
        .iter()
        .filter(|(_, what)| what == "down 1")
        .count();
    let ups = survivor
        .events
        .iter()
        .filter(|(_, what)| what == "up 1")
        .count();
    assert_eq!((downs, ups), (1, 2), "{:?}", survivor.events);
    // The restarted node numbers its frames from 0 again: its state is new.
    let got = received(survivor);
    let restart = got
        .windows(2)
        .position(|pair| pair[1] < pair[0])
        .expect("numbering restarts");
    assert_eq!(got[restart + 1], 0);
    let restarted = sim.role(1).unwrap();
    assert_eq!(
        restarted
            .events
            .iter()
            .filter(|(_, what)| what == "start")
            .count(),
        1
    );
    assert!(
        restarted.events.iter().any(|(_, what)| what == "from 1: 0"),
        "self-sends arrive"
    );
}

#[test]
fn a_blocked_link_stays_down_until_unblocked() {
    let sim = sim(&[
        (30_000, Fault::Block { a: 0, b: 1 }),
        (130_000, Fault::Unblock { a: 0, b: 1 }),
    ]);
    let probe = sim.role(0).unwrap();
    let down = probe
        .events
        .iter()
        .find(|(_, what)| what == "down 1")
        .expect("went down")
        .0;
    let up = probe
        .events
        .iter()
        .filter(|(_, what)| what == "up 1")
        .nth(1)
        .expect("came back")
        .0;
    assert_eq!(down - CLOCK_EPOCH_US, 30_000);
    assert!(
        up - CLOCK_EPOCH_US >= 130_000,
        "reconnected only after the partition healed"
    );
}

#[derive(Debug, PartialEq)]
struct Verdict(Option<String>);

impl super::SeedReport for Verdict {
    fn failed(failure: String) -> Verdict {
        Verdict(Some(failure))
    }
}

#[test]
fn a_seed_that_panics_is_a_failure_with_the_command_that_reproduces_it() {
    let verdict = super::run_seed(
        || -> Verdict { panic!("invariant broken at {}", 7) },
        || "pollen sim probe --seed 7".to_string(),
    );
    assert_eq!(
        verdict,
        Verdict(Some(
            "panicked: invariant broken at 7\n  reproduce: pollen sim probe --seed 7".to_string()
        ))
    );
    let verdict = super::run_seed(|| Verdict(None), || unreachable!("no failure, no command"));
    assert_eq!(verdict, Verdict(None));
}
