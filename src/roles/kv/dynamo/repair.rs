//! Anti-entropy sessions between two data nodes over the partitions both hold (the exchange
//! of `merkle.rs`, carried by `KvTree` frames), then the repair itself: each side pushes the
//! items the other lacks or holds older, as `OP_PUT`s (applied only if newer).
//!
//! Every `repair_every_us` a node starts a session with the next data node in turn that is up;
//! it answers sessions others start. A session is one `Hashes`/`Differ` round trip per chunk of
//! each level, then, for the differing leaves in chunks of about `ITEMS_BYTES` of items: the
//! initiator's items (`TREE_ITEMS`), the responder's pushes of what it holds newer and the
//! list of keys it wants (`TREE_WANTS`), the initiator's pushes of those. One message of a
//! session is in flight at a time, so a session's pushes are bounded by a chunk. A session
//! silent for `SESSION_TIMEOUT_US` is dropped (the next one starts over).

use std::collections::HashMap;

use byteorder::{BigEndian, ByteOrder};

use super::replica::Replica;
use crate::node::{Micros, NodeId};
use crate::roles::kv::merkle::{Walk, decode_items, encode_items, leaf_of};
use crate::wire::kv::{TREE_END, TREE_HASHES, TREE_ITEMS, TREE_VERDICTS, TREE_WANTS};

/// Items per `TREE_ITEMS` message, roughly (a leaf's items are never split).
const ITEMS_BYTES: usize = 64 * 1024;
pub const SESSION_TIMEOUT_US: Micros = 5_000_000;

/// What a session sends: a tree step to a peer, or a value to push.
pub trait Repairs {
    fn send_step(&mut self, to: NodeId, session: u32, step: u8, body: &[u8]) -> bool;
    fn push(&mut self, to: NodeId, key: &[u8], version: u64, value: Option<&[u8]>);
}

struct Session {
    id: u32,
    walk: Walk,
    /// Positions of this side's items in the differing leaves, by leaf (built once the walk
    /// has finished).
    index: Vec<(usize, usize)>,
    /// Differing leaves and index entries already covered by items messages.
    leaf_at: usize,
    item_at: usize,
    heard_us: Micros,
}

impl Session {
    fn new(id: u32, partitions: &[usize], now: Micros) -> Session {
        Session {
            id,
            walk: Walk::new(partitions),
            index: Vec::new(),
            leaf_at: 0,
            item_at: 0,
            heard_us: now,
        }
    }

    /// Once the walk has finished: where this side's items of the differing leaves are.
    fn build_index(&mut self, replica: &Replica) {
        let leaves = self.walk.nodes();
        self.index = (0..replica.items())
            .filter_map(|at| {
                let leaf = leaf_of(&replica.item(at).key);
                leaves.binary_search(&leaf).is_ok().then_some((leaf, at))
            })
            .collect();
        self.index.sort_unstable();
    }

    /// This side's items for the next `leaf_count` differing leaves (advancing past them).
    fn take_items<'a>(
        &mut self,
        replica: &'a Replica,
        leaf_count: usize,
    ) -> Vec<(&'a [u8], u64, usize)> {
        let leaves = self.walk.nodes();
        let end = (self.leaf_at + leaf_count).min(leaves.len());
        let last_leaf = if end == 0 { 0 } else { leaves[end - 1] };
        let mut items = Vec::new();
        while self.item_at < self.index.len() && end > 0 && self.index[self.item_at].0 <= last_leaf
        {
            let at = self.index[self.item_at].1;
            let item = replica.item(at);
            items.push((&item.key[..], item.version, at));
            self.item_at += 1;
        }
        self.leaf_at = end;
        items
    }

    /// How many of the next differing leaves fit about `ITEMS_BYTES` of this side's items.
    fn next_leaf_count(&self, replica: &Replica) -> usize {
        let leaves = self.walk.nodes();
        let (mut leaf, mut item, mut bytes) = (self.leaf_at, self.item_at, 0);
        while leaf < leaves.len() && (bytes < ITEMS_BYTES || leaf == self.leaf_at) {
            while item < self.index.len() && self.index[item].0 == leaves[leaf] {
                bytes += 10 + replica.item(self.index[item].1).key.len();
                item += 1;
            }
            leaf += 1;
        }
        leaf - self.leaf_at
    }
}

pub struct Repair {
    me: NodeId,
    /// Per peer: the partitions both hold (placement is fixed by the peers file).
    shared: Vec<Vec<usize>>,
    /// Per peer: the session this node started, and the one it answers.
    started: Vec<Option<Session>>,
    answering: Vec<Option<Session>>,
    next_peer: NodeId,
    next_id: u32,
    /// Counts for INFO and tests.
    pub sessions: u64,
    pub pushed: u64,
}

impl Repair {
    pub fn new(me: NodeId, shared: Vec<Vec<usize>>) -> Repair {
        let data_nodes = shared.len();
        Repair {
            me,
            shared,
            started: (0..data_nodes).map(|_| None).collect(),
            answering: (0..data_nodes).map(|_| None).collect(),
            next_peer: me,
            next_id: 1,
            sessions: 0,
            pushed: 0,
        }
    }

    /// Drops silent sessions; starts one with the next peer that is up (`up[peer]`), if none
    /// is running.
    pub fn tick(&mut self, now: Micros, replica: &Replica, up: &[bool], out: &mut impl Repairs) {
        for session in self.started.iter_mut().chain(self.answering.iter_mut()) {
            if session
                .as_ref()
                .is_some_and(|s| now >= s.heard_us + SESSION_TIMEOUT_US)
            {
                *session = None;
            }
        }
        if self.started.iter().any(Option::is_some) {
            return;
        }
        let peers = self.started.len();
        for _ in 0..peers {
            self.next_peer = (self.next_peer + 1) % peers;
            let peer = self.next_peer;
            if peer == self.me || !up[peer] || self.shared[peer].is_empty() {
                continue;
            }
            self.next_id = self.next_id.wrapping_add(1);
            let mut session = Session::new(self.next_id, &self.shared[peer], now);
            let mut body = Vec::new();
            session.walk.hashes(replica.tree(), &mut body);
            if out.send_step(peer, session.id, TREE_HASHES, &body) {
                self.sessions += 1;
                session.heard_us = now;
                self.started[peer] = Some(session);
            }
            return;
        }
    }

    /// No session is under way (their indexes hold store positions, which a reclaim moves).
    pub fn idle(&self) -> bool {
        self.started
            .iter()
            .chain(&self.answering)
            .all(Option::is_none)
    }

    /// A step from `from`. A malformed or unexpected one ends that session.
    #[allow(clippy::too_many_arguments)]
    pub fn on_step(
        &mut self,
        now: Micros,
        replica: &Replica,
        from: NodeId,
        session: u32,
        step: u8,
        body: &[u8],
        out: &mut impl Repairs,
    ) {
        if from >= self.started.len() || from == self.me {
            return;
        }
        let handled = match step {
            TREE_HASHES => self.on_hashes(now, replica, from, session, body, out),
            TREE_ITEMS => self.on_items(now, replica, from, session, body, out),
            TREE_VERDICTS => self.on_verdicts(now, replica, from, session, body, out),
            TREE_WANTS => self.on_wants(now, replica, from, session, body, out),
            _ => {
                self.started[from].take_if(|s| s.id == session);
                self.answering[from].take_if(|s| s.id == session);
                Some(())
            }
        };
        if handled.is_none() {
            self.started[from].take_if(|s| s.id == session);
            self.answering[from].take_if(|s| s.id == session);
            out.send_step(from, session, TREE_END, b"");
        }
    }

    /// Responder: a new session starts with its first hashes.
    fn on_hashes(
        &mut self,
        now: Micros,
        replica: &Replica,
        from: NodeId,
        id: u32,
        body: &[u8],
        out: &mut impl Repairs,
    ) -> Option<()> {
        if self.answering[from].as_ref().is_none_or(|s| s.id != id) {
            self.answering[from] = Some(Session::new(id, &self.shared[from], now));
        }
        let session = self.answering[from].as_mut()?;
        session.heard_us = now;
        let mut verdicts = Vec::new();
        session.walk.differ(replica.tree(), body, &mut verdicts)?;
        if session.walk.finished() {
            session.build_index(replica);
        }
        out.send_step(from, id, TREE_VERDICTS, &verdicts)
            .then_some(())
    }

    /// Initiator: the next chunk of hashes, or the first items.
    fn on_verdicts(
        &mut self,
        now: Micros,
        replica: &Replica,
        from: NodeId,
        id: u32,
        body: &[u8],
        out: &mut impl Repairs,
    ) -> Option<()> {
        let session = self.started[from].as_mut().filter(|s| s.id == id)?;
        session.heard_us = now;
        session.walk.descend(body)?;
        if !session.walk.finished() {
            let mut hashes = Vec::new();
            session.walk.hashes(replica.tree(), &mut hashes);
            return out.send_step(from, id, TREE_HASHES, &hashes).then_some(());
        }
        session.build_index(replica);
        self.send_items(replica, from, out)
    }

    /// Initiator: the items of the next differing leaves, or the end.
    fn send_items(&mut self, replica: &Replica, to: NodeId, out: &mut impl Repairs) -> Option<()> {
        let session = self.started[to].as_mut()?;
        let id = session.id;
        if session.leaf_at == session.walk.nodes().len() {
            self.started[to] = None;
            out.send_step(to, id, TREE_END, b"");
            return Some(());
        }
        let leaf_count = session.next_leaf_count(replica);
        let items = session.take_items(replica, leaf_count);
        let mut body = vec![0; 4];
        BigEndian::write_u32(&mut body, leaf_count as u32);
        encode_items(
            items.iter().map(|&(key, version, _)| (key, version)),
            &mut body,
        );
        out.send_step(to, id, TREE_ITEMS, &body).then_some(())
    }

    /// Responder: pushes what it holds newer, and asks for what the initiator holds newer.
    fn on_items(
        &mut self,
        now: Micros,
        replica: &Replica,
        from: NodeId,
        id: u32,
        body: &[u8],
        out: &mut impl Repairs,
    ) -> Option<()> {
        let session = self.answering[from].as_mut().filter(|s| s.id == id)?;
        session.heard_us = now;
        if body.len() < 4 || !session.walk.finished() {
            return None;
        }
        let leaf_count = BigEndian::read_u32(body) as usize;
        if leaf_count == 0 || session.leaf_at + leaf_count > session.walk.nodes().len() {
            return None;
        }
        let theirs: HashMap<&[u8], u64> = decode_items(&body[4..])?.into_iter().collect();
        let mine = session.take_items(replica, leaf_count);
        let mut pushed = 0;
        for &(key, version, at) in &mine {
            if theirs.get(key).is_none_or(|&their| their < version) {
                out.push(from, key, version, replica.item(at).value.as_deref());
                pushed += 1;
            }
        }
        let held: HashMap<&[u8], u64> = mine.iter().map(|&(k, v, _)| (k, v)).collect();
        let wants = theirs
            .iter()
            .filter(|&(key, &version)| held.get(key).is_none_or(|&mine| mine < version))
            .map(|(&key, &version)| (key, version));
        let mut body = Vec::new();
        encode_items(wants, &mut body);
        self.pushed += pushed;
        out.send_step(from, id, TREE_WANTS, &body).then_some(())
    }

    /// Initiator: pushes what was asked for, then the next items.
    fn on_wants(
        &mut self,
        now: Micros,
        replica: &Replica,
        from: NodeId,
        id: u32,
        body: &[u8],
        out: &mut impl Repairs,
    ) -> Option<()> {
        let session = self.started[from].as_mut().filter(|s| s.id == id)?;
        session.heard_us = now;
        for (key, _) in decode_items(body)? {
            if let Some((version, value)) = replica.get(key) {
                out.push(from, key, version, value);
                self.pushed += 1;
            }
        }
        self.send_items(replica, from, out)
    }
}
