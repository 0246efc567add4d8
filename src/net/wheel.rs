//! A hashed timing wheel: 512 slots of 1 ms, an occupied bitmap, entries in a slab linked into
//! per-slot lists (so insert and cancel are O(1) and allocate nothing once the slab is sized).
//!
//! A timer whose deadline lies beyond one rotation stays in its slot and is skipped until its
//! round comes; `next_deadline` may therefore name a slot whose entries are all for later rounds,
//! which costs one early wake-up per rotation and nothing else. Deadlines are whole ticks: a
//! timer fires at the first `expire` whose tick is at or past its deadline, and never in the same
//! tick it was set (so a role that re-arms a zero timer cannot starve the loop).
//!
//! The capacity given to `new` is a bound, not a hint: arming one more timer than that panics
//! rather than let the slab grow on the hot path (the driver's bound is far above what roles
//! arm; a role past it is leaking timers).

use slab::Slab;

use crate::node::{Timer, TimerKey};

pub const SLOTS: usize = 512;
pub const TICK_US: u64 = 1000;

const NIL: u32 = u32::MAX;

struct Entry {
    deadline: u64,
    timer: Timer,
    generation: u32,
    prev: u32,
    next: u32,
}

pub struct TimerWheel {
    /// Last tick fully expired.
    tick: u64,
    heads: Box<[u32; SLOTS]>,
    occupied: [u64; SLOTS / 64],
    entries: Slab<Entry>,
    /// The most timers armed at once.
    capacity: usize,
    generation: u32,
}

impl TimerWheel {
    pub fn new(capacity: usize) -> TimerWheel {
        // Entry indices are `u32`, with `NIL` reserved.
        assert!(capacity < NIL as usize);
        TimerWheel {
            tick: 0,
            heads: Box::new([NIL; SLOTS]),
            occupied: [0; SLOTS / 64],
            entries: Slab::with_capacity(capacity),
            capacity,
            generation: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Arms `timer` to fire at tick `deadline` (or the next tick if that has passed).
    /// Panics if the wheel already holds as many timers as its capacity.
    pub fn insert(&mut self, deadline: u64, timer: Timer) -> TimerKey {
        assert!(
            self.entries.len() < self.capacity,
            "more than {} timers armed at once",
            self.capacity
        );
        let deadline = deadline.max(self.tick + 1);
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let slot = (deadline % SLOTS as u64) as usize;
        let head = self.heads[slot];
        let index = self.entries.insert(Entry {
            deadline,
            timer,
            generation,
            prev: NIL,
            next: head,
        });
        assert!(index < NIL as usize);
        if head != NIL {
            self.entries[head as usize].prev = index as u32;
        }
        self.heads[slot] = index as u32;
        self.occupied[slot / 64] |= 1 << (slot % 64);
        TimerKey {
            index: index as u32,
            generation,
        }
    }

    pub fn cancel(&mut self, key: TimerKey) {
        let live = self.entries.get(key.index as usize);
        if live.is_some_and(|entry| entry.generation == key.generation) {
            self.unlink(key.index);
        }
    }

    /// The earliest tick at which something may fire, if any timer is armed.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.entries.is_empty() {
            return None;
        }
        let start = ((self.tick + 1) % SLOTS as u64) as usize;
        for step in 0..=SLOTS / 64 {
            // Words from the one holding `start`, wrapping; the first word is masked below start.
            let word_index = (start / 64 + step) % (SLOTS / 64);
            let mut word = self.occupied[word_index];
            if step == 0 {
                word &= !0u64 << (start % 64);
            }
            if word != 0 {
                let slot = word_index * 64 + word.trailing_zeros() as usize;
                let distance = (slot + SLOTS - start) % SLOTS;
                return Some(self.tick + 1 + distance as u64);
            }
        }
        unreachable!("entries exist but no slot is occupied")
    }

    /// Fires every timer due at or before tick `now`, appending them to `fired` in deadline order
    /// (timers due in the same tick fire in the order they were armed: a role that arms "send
    /// ends" before "stop" must not see them swapped when both fall in one tick).
    pub fn expire(&mut self, now: u64, fired: &mut Vec<Timer>) {
        if now <= self.tick {
            return;
        }
        let span = (now - self.tick).min(SLOTS as u64);
        for step in 1..=span {
            let slot = ((self.tick + step) % SLOTS as u64) as usize;
            if self.occupied[slot / 64] & (1 << (slot % 64)) == 0 {
                continue;
            }
            let first_fired = fired.len();
            let mut index = self.heads[slot];
            while index != NIL {
                let entry = &self.entries[index as usize];
                let next = entry.next;
                if entry.deadline <= now {
                    fired.push(entry.timer);
                    self.unlink(index);
                }
                index = next;
            }
            // A slot's list runs newest first.
            fired[first_fired..].reverse();
        }
        self.tick = now;
    }

    fn unlink(&mut self, index: u32) {
        let entry = self.entries.remove(index as usize);
        let slot = (entry.deadline % SLOTS as u64) as usize;
        if entry.prev == NIL {
            self.heads[slot] = entry.next;
        } else {
            self.entries[entry.prev as usize].next = entry.next;
        }
        if entry.next != NIL {
            self.entries[entry.next as usize].prev = entry.prev;
        }
        if self.heads[slot] == NIL {
            self.occupied[slot / 64] &= !(1 << (slot % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expire(wheel: &mut TimerWheel, now: u64) -> Vec<u32> {
        let mut fired = Vec::new();
        wheel.expire(now, &mut fired);
        fired.iter().map(|timer| timer.0).collect()
    }

    #[test]
    fn fires_in_deadline_order() {
        let mut wheel = TimerWheel::new(16);
        for (deadline, name) in [(30, 3), (10, 1), (20, 2), (40, 4)] {
            wheel.insert(deadline, Timer(name));
        }
        assert_eq!(wheel.next_deadline(), Some(10));
        assert_eq!(expire(&mut wheel, 9), Vec::<u32>::new());
        assert_eq!(expire(&mut wheel, 25), vec![1, 2]);
        assert_eq!(wheel.next_deadline(), Some(30));
        assert_eq!(expire(&mut wheel, 100), vec![3, 4]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn timers_of_one_tick_fire_in_the_order_they_were_armed() {
        let mut wheel = TimerWheel::new(16);
        for name in [1, 2, 3] {
            wheel.insert(5, Timer(name));
        }
        wheel.insert(5 + SLOTS as u64, Timer(9)); // same slot, next round
        assert_eq!(expire(&mut wheel, 5), vec![1, 2, 3]);
        assert_eq!(expire(&mut wheel, 5 + SLOTS as u64), vec![9]);
    }

    #[test]
    fn cancel_removes_and_stale_keys_are_harmless() {
        let mut wheel = TimerWheel::new(4);
        let a = wheel.insert(5, Timer(1));
        let b = wheel.insert(5, Timer(2));
        wheel.cancel(a);
        assert_eq!(wheel.len(), 1);
        assert_eq!(expire(&mut wheel, 5), vec![2]);
        // b has fired; its slab index is reused by c; cancelling b must not touch c.
        let c = wheel.insert(7, Timer(3));
        assert_eq!(c.index, b.index);
        wheel.cancel(b);
        wheel.cancel(a);
        assert_eq!(expire(&mut wheel, 7), vec![3]);
    }

    #[test]
    fn deadlines_beyond_one_rotation_wait_for_their_round() {
        let mut wheel = TimerWheel::new(4);
        let far = 3 * SLOTS as u64 + 17;
        wheel.insert(far, Timer(9));
        wheel.insert(17, Timer(1));
        assert_eq!(expire(&mut wheel, 17), vec![1]);
        // The far timer shares slot 17: each rotation names it, none fires it early.
        for round in 1..3 {
            let at = round * SLOTS as u64 + 17;
            assert_eq!(wheel.next_deadline(), Some(at));
            assert_eq!(expire(&mut wheel, at), Vec::<u32>::new());
        }
        assert_eq!(expire(&mut wheel, far - 1), Vec::<u32>::new());
        assert_eq!(expire(&mut wheel, far), vec![9]);
    }

    #[test]
    fn a_jump_past_a_whole_rotation_fires_everything_due() {
        let mut wheel = TimerWheel::new(4);
        wheel.insert(3, Timer(1));
        wheel.insert(700, Timer(2));
        wheel.insert(5000, Timer(3));
        assert_eq!(expire(&mut wheel, 2000), vec![1, 2]);
        assert_eq!(expire(&mut wheel, 5000), vec![3]);
    }

    #[test]
    fn a_past_deadline_fires_on_the_next_tick() {
        let mut wheel = TimerWheel::new(4);
        assert_eq!(expire(&mut wheel, 50), Vec::<u32>::new());
        wheel.insert(10, Timer(1));
        wheel.insert(50, Timer(2));
        assert_eq!(wheel.next_deadline(), Some(51));
        assert_eq!(expire(&mut wheel, 50), Vec::<u32>::new());
        assert_eq!(expire(&mut wheel, 51), vec![1, 2]); // in the order armed
    }

    #[test]
    fn the_capacity_is_a_bound_and_a_fired_timer_frees_its_place() {
        let mut wheel = TimerWheel::new(2);
        wheel.insert(5, Timer(1));
        let second = wheel.insert(6, Timer(2));
        wheel.cancel(second);
        wheel.insert(7, Timer(3));
        assert_eq!(expire(&mut wheel, 5), vec![1]);
        wheel.insert(8, Timer(4));
        let full = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wheel.insert(9, Timer(5));
        }));
        assert!(full.is_err(), "a third timer was armed in a wheel of two");
    }

    #[test]
    fn many_timers_fire_once_each_in_order() {
        let mut wheel = TimerWheel::new(10_000);
        let mut keys = Vec::new();
        for i in 0..10_000u64 {
            // Spread over several rotations, out of order.
            let deadline = 1 + (i * 7919) % 3000;
            keys.push((wheel.insert(deadline, Timer(i as u32)), deadline));
        }
        for (key, _) in keys.iter().step_by(3) {
            wheel.cancel(*key);
        }
        let mut fired = Vec::new();
        let mut now = 0;
        while let Some(next) = wheel.next_deadline() {
            assert!(next > now);
            now = next;
            let before = fired.len();
            wheel.expire(now, &mut fired);
            for timer in &fired[before..] {
                assert_eq!(keys[timer.0 as usize].1, now, "fired at its deadline");
            }
        }
        let expected = keys.len() - keys.len().div_ceil(3);
        assert_eq!(fired.len(), expected);
        let mut seen = vec![false; keys.len()];
        for timer in fired {
            assert!(timer.0 % 3 != 0, "cancelled timer fired");
            assert!(
                !std::mem::replace(&mut seen[timer.0 as usize], true),
                "fired twice"
            );
        }
    }
}
