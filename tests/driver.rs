//! The mio driver on its own, with tiny probe roles in threads: self-sends arrive after the
//! handler that sent them; peers come up, exchange frames in order, and see each other go
//! down; a handshake from the wrong cluster is refused before any frame reaches the role.

use std::net::{SocketAddr, TcpListener};
use std::thread;

use pollen::net::{self, Driver};
use pollen::node::{Io, NodeId, Role, Timer};
use pollen::wire::{GossipState, Items, Message, OriginState};

fn addresses(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn state(have: u64) -> [OriginState; 1] {
    [OriginState {
        have,
        fin: 0,
        flags: 0,
        send_end_us: 0,
    }]
}

/// Records what it sees; sends `count` numbered frames to peer 0 once it is up (if it is not
/// node 0); stops after `stop_after_us` or when it has received `count` frames.
#[derive(Default)]
struct Probe {
    count: u64,
    stop_after_us: u64,
    events: Vec<String>,
    received: Vec<u64>,
    in_handler: bool,
}

impl Probe {
    fn new(count: u64, stop_after_us: u64) -> Probe {
        Probe {
            count,
            stop_after_us,
            ..Probe::default()
        }
    }
}

impl Role for Probe {
    fn on_start(&mut self, io: &mut impl Io) {
        self.in_handler = true;
        io.set_timer(self.stop_after_us, Timer(1));
        let ours = state(u64::MAX);
        let sent = io.send(
            io.node(),
            &Message::GossipState(GossipState {
                origins: Items::Host(&ours),
            }),
        );
        assert!(sent);
        self.events.push("start".into());
        self.in_handler = false;
    }
    fn on_message(&mut self, io: &mut impl Io, from: NodeId, message: Message<'_>) {
        assert!(!self.in_handler, "delivered inside another handler");
        let Message::GossipState(state) = message else {
            panic!("unexpected {message:?}")
        };
        let have = state.origins.get(0).have;
        if from == io.node() {
            self.events.push(format!("self {have}"));
            return;
        }
        self.received.push(have);
        if self.received.len() as u64 == self.count {
            io.stop();
        }
    }
    fn on_timer(&mut self, io: &mut impl Io, _timer: Timer) {
        self.events.push("timer".into());
        io.stop();
    }
    fn on_peer_up(&mut self, io: &mut impl Io, peer: NodeId) {
        self.events.push(format!("up {peer}"));
        if io.node() != 0 {
            for have in 0..self.count {
                let frame = state(have);
                assert!(io.send(
                    peer,
                    &Message::GossipState(GossipState {
                        origins: Items::Host(&frame)
                    })
                ));
            }
        }
    }
    fn on_peer_down(&mut self, _io: &mut impl Io, peer: NodeId) {
        self.events.push(format!("down {peer}"));
    }
}

fn run(
    node: NodeId,
    addresses: Vec<SocketAddr>,
    cluster: &str,
    probe: Probe,
) -> thread::JoinHandle<Probe> {
    let config = net::Config::peers_only(node, addresses, cluster.to_string());
    thread::spawn(move || Driver::new(config, probe).unwrap().run().unwrap().0)
}

#[test]
fn self_send_is_delivered_after_the_handler() {
    let probe = run(0, addresses(1), "solo", Probe::new(0, 20_000))
        .join()
        .unwrap();
    assert_eq!(
        probe.events,
        vec!["start", &format!("self {}", u64::MAX), "timer"]
    );
}

#[test]
fn peers_connect_exchange_in_order_and_see_each_other_leave() {
    let addresses = addresses(2);
    let receiver = run(0, addresses.clone(), "pair", Probe::new(10_000, 10_000_000));
    let sender = run(1, addresses, "pair", Probe::new(10_000, 500_000));
    let receiver = receiver.join().unwrap();
    let sender = sender.join().unwrap();
    assert_eq!(
        receiver.received,
        (0..10_000).collect::<Vec<u64>>(),
        "all frames, in order"
    );
    assert!(
        receiver.events.contains(&"up 1".to_string()),
        "{:?}",
        receiver.events
    );
    assert!(
        sender.events.contains(&"up 0".to_string()),
        "{:?}",
        sender.events
    );
    // The receiver stopped first (after 10 000 frames); the sender saw it go.
    assert!(
        sender.events.contains(&"down 0".to_string()),
        "{:?}",
        sender.events
    );
}

#[test]
fn a_handshake_from_another_cluster_is_refused() {
    let addresses = addresses(2);
    let first = run(0, addresses.clone(), "blue", Probe::new(1, 600_000));
    let second = run(1, addresses, "green", Probe::new(1, 600_000));
    for probe in [first.join().unwrap(), second.join().unwrap()] {
        assert!(probe.received.is_empty());
        assert!(
            probe.events.iter().all(|event| !event.starts_with("up")),
            "{:?}",
            probe.events
        );
    }
}
