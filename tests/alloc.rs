//! Zero allocation on the message path, asserted: gossip and ring clusters run in this process
//! under a counting global allocator (`tests/support/alloc_probe.rs`); over a window in the
//! middle of the send phase, millions of gossip messages and hundreds of thousands of ring
//! values flow and the whole process allocates nothing. Sending, receiving, encoding, decoding,
//! folding, timers and hop-latency recording all work in buffers sized at start.
//!
//! The two tests run one after the other (one lock), since the allocator counts the process.

#[path = "support/alloc_probe.rs"]
mod alloc_probe;

use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn gossip_allocates_nothing_per_message() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (window, results) = alloc_probe::gossip_window();
    eprintln!(
        "gossip: {window:?}, {:.1e} per message",
        window.per_message()
    );
    assert!(results.iter().all(|r| *r == results[0]), "{results:?}");
    assert!(window.delivered > 1_000_000, "too few messages: {window:?}");
    assert_eq!(window.allocations, 0, "{window:?}");
}

#[test]
fn ring_allocates_nothing_per_message() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (window, results) = alloc_probe::ring_window();
    eprintln!("ring: {window:?}, {:.1e} per message", window.per_message());
    let workers: Vec<&String> = results.iter().flatten().collect();
    assert_eq!(workers.len(), 3);
    assert!(workers.iter().all(|r| *r == workers[0]), "{results:?}");
    assert!(window.delivered > 10_000, "too few values: {window:?}");
    assert_eq!(window.allocations, 0, "{window:?}");
}
