//! Allocations per message, measured: a counting global allocator and in-process clusters (one
//! thread per node, the real mio driver over loopback TCP, the real roles). Over a window in
//! the middle of the send phase it counts heap allocations in the whole process and the
//! messages delivered to the roles.
//!
//! Shared by `tests/alloc.rs` (which asserts the count is zero) and the bench (which reports
//! it), via `#[path]`. Whoever includes it gets the counting allocator as its global allocator,
//! so it belongs in a binary of its own: cargo runs test binaries one after another, so nothing
//! else allocates during the window.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pollen::net::{self, Driver};
use pollen::node::{Io, NodeId, Role, Timer};
use pollen::roles::gossip::{self, Gossip};
use pollen::roles::ring::{self, Ring};
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

/// What one measurement window saw.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub delivered: u64,
    pub allocations: u64,
}

impl Window {
    pub fn per_message(&self) -> f64 {
        self.allocations as f64 / self.delivered.max(1) as f64
    }
}

/// A role, unchanged, with the application messages it is handed counted on the way in:
/// gossip values (each batch carries many) and ring values.
struct Counted<R>(R);

impl<R: Role> Role for Counted<R> {
    fn on_start(&mut self, io: &mut impl Io) {
        self.0.on_start(io)
    }
    fn on_message(&mut self, io: &mut impl Io, from: NodeId, message: Message<'_>) {
        let delivered = match &message {
            Message::GossipBatch(batch) => batch.values.len() as u64,
            Message::RingValue(_) => 1,
            _ => 0,
        };
        DELIVERED.fetch_add(delivered, Ordering::Relaxed);
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

fn loopback_addresses(nodes: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..nodes)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("address"))
        .collect()
}

/// Runs `nodes` roles on threads; measures from `warm_up` for `length`; joins them and returns
/// the window with what each node's `finish` made of its role.
fn measure<R, T>(
    roles: Vec<R>,
    cluster: &str,
    warm_up: Duration,
    length: Duration,
    finish: fn(R) -> T,
) -> (Window, Vec<T>)
where
    R: Role + Send + 'static,
    T: Send + 'static,
{
    pollen::log::set_level(pollen::log::LEVEL_QUIET);
    let addresses = loopback_addresses(roles.len());
    let threads: Vec<_> = roles
        .into_iter()
        .enumerate()
        .map(|(node, role)| {
            let mut config = net::Config::peers_only(node, addresses.clone(), cluster.to_string());
            // Results are read from the roles; stdout stays the includer's.
            config.output = Some(Box::new(|_: &str| {}));
            std::thread::spawn(move || {
                let driver = Driver::new(config, Counted(role)).expect("listen");
                let (role, _stats) = driver.run().expect("run");
                finish(role.0)
            })
        })
        .collect();
    // Connections come up and buffers reach their working size; then the window.
    std::thread::sleep(warm_up);
    let allocations_before = ALLOCATIONS.load(Ordering::SeqCst);
    let delivered_before = DELIVERED.load(Ordering::SeqCst);
    std::thread::sleep(length);
    let window = Window {
        allocations: ALLOCATIONS.load(Ordering::SeqCst) - allocations_before,
        delivered: DELIVERED.load(Ordering::SeqCst) - delivered_before,
    };
    let results = threads
        .into_iter()
        .map(|thread| thread.join().expect("node thread"))
        .collect();
    (window, results)
}

/// Three gossip nodes sending for 2.5 s; the window is 0.8 s to 1.8 s. Returns the window and
/// each node's `(count, checksum)` as printed.
pub fn gossip_window() -> (Window, Vec<String>) {
    let nodes = 3;
    let config = gossip::Config::new(nodes, 1, 2_500_000, 2_000_000);
    let roles = (0..nodes)
        .map(|node| Gossip::new(config.clone(), node))
        .collect();
    measure(
        roles,
        "alloc-gossip",
        Duration::from_millis(800),
        Duration::from_millis(1000),
        |gossip: Gossip| format!("{:?}", gossip.result),
    )
}

/// A master and three workers, window 64, sending for 2.5 s; the window is 0.8 s to 1.8 s.
/// Returns the window and each worker's result (the master's entry is `None`).
pub fn ring_window() -> (Window, Vec<Option<String>>) {
    let workers = 3;
    let config = ring::Config {
        workers,
        seed: 7,
        send_us: 2_500_000,
        grace_us: 1_000_000,
        window: 64,
        tick_us: 10_000,
    };
    let roles = (0..=workers)
        .map(|node| Ring::new(config.clone(), node))
        .collect();
    measure(
        roles,
        "alloc-ring",
        Duration::from_millis(800),
        Duration::from_millis(1000),
        |ring: Ring| match ring {
            Ring::Worker(worker) => Some(format!("{:?}", worker.result)),
            Ring::Master(_) => None,
        },
    )
}
