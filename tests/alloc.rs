//! Zero allocation on the message path, measured: three gossip nodes run in this process (one
//! thread each, the real mio driver over loopback TCP) under a counting global allocator. Over a
//! window in the middle of the send phase the test counts heap allocations in the whole process
//! and the messages delivered to the roles. It asserts that millions of messages flowed, and that
//! the allocations do not scale with them: sending, receiving, encoding, decoding and folding
//! allocate nothing; the only allocation allowed is a per-origin store doubling its capacity when
//! its high-water mark rises (amortised growth of state, at most a couple per stream per run).
//!
//! This is its own test binary because the allocator is process-wide; cargo runs test binaries
//! one after another, so nothing else allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pollen::net::{self, Driver};
use pollen::node::{Io, NodeId, Role, Timer};
use pollen::roles::gossip::{self, Gossip};
use pollen::wire::Message;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static DELIVERED: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) }
    }
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(pointer, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Gossip, unchanged, with delivered batch sizes counted on the way in.
struct Counted(Gossip);

impl Role for Counted {
    fn on_start(&mut self, io: &mut impl Io) {
        self.0.on_start(io)
    }
    fn on_message(&mut self, io: &mut impl Io, from: NodeId, message: Message<'_>) {
        if let Message::GossipBatch(batch) = &message {
            DELIVERED.fetch_add(batch.values.len() as u64, Ordering::Relaxed);
        }
        self.0.on_message(io, from, message)
    }
    fn on_timer(&mut self, io: &mut impl Io, timer: Timer) {
        self.0.on_timer(io, timer)
    }
    fn on_peer_up(&mut self, io: &mut impl Io, peer: NodeId) {
        self.0.on_peer_up(io, peer)
    }
    fn on_peer_down(&mut self, io: &mut impl Io, peer: NodeId) {
        self.0.on_peer_down(io, peer)
    }
    fn on_writable(&mut self, io: &mut impl Io, peer: NodeId) {
        self.0.on_writable(io, peer)
    }
}

#[test]
fn gossip_message_path_does_not_allocate() {
    pollen::log::set_level(pollen::log::LEVEL_QUIET);
    let nodes = 3;
    let listeners: Vec<TcpListener> = (0..nodes)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addresses: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    drop(listeners);
    let config = gossip::Config::new(nodes, 1, 2_500_000, 2_000_000);
    let threads: Vec<_> = (0..nodes)
        .map(|node| {
            let net_config = net::Config::peers_only(node, addresses.clone(), "alloc".to_string());
            let role = Counted(Gossip::new(config.clone(), node));
            std::thread::spawn(move || {
                let driver = Driver::new(net_config, role).expect("listen");
                let (role, _stats) = driver.run().expect("run");
                role.0.result.expect("a result")
            })
        })
        .collect();

    // Let connections come up and buffers reach their working size, then measure.
    std::thread::sleep(Duration::from_millis(800));
    let allocations_before = ALLOCATIONS.load(Ordering::SeqCst);
    let delivered_before = DELIVERED.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1000));
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - allocations_before;
    let delivered = DELIVERED.load(Ordering::SeqCst) - delivered_before;

    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        results.iter().all(|result| *result == results[0]),
        "{results:?}"
    );
    eprintln!(
        "window: {delivered} messages delivered, {allocations} allocations ({:.1e} per message)",
        allocations as f64 / delivered as f64
    );
    assert!(
        delivered > 1_000_000,
        "too few messages in the window to mean anything"
    );
    let store_doublings_max = 2 * (nodes * nodes) as u64;
    assert!(
        allocations <= store_doublings_max,
        "{allocations} allocations for {delivered} messages: something allocates per message"
    );
}
