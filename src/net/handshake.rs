//! The handshake every peer connection opens with, before any other frame is looked at. Each
//! side sends a `Hello` (protocol version, size of the peers list, node id, cluster name),
//! checked by `wire::check_hello`; an accepted connection learns from it which peer it is.
//!
//! With a cookie, each side also sends an `AuthChallenge` (a fresh nonce) right after its
//! hello, and answers the other's challenge with an `AuthProof` once it has both the other's
//! hello and challenge (the cryptography is in `auth`). The connection is up only once the
//! peer's proof verifies.
//!
//! A mismatched hello, a wrong proof, a repeated or out-of-order handshake frame, or any other
//! frame before the handshake completes closes the connection with its reason logged. A
//! completed connection is the peer's: it replaces an older one (a restarted peer, or a
//! half-open connection the kernel has not noticed), and the role hears `on_peer_up`.

use super::auth;
use super::connection::{Mode, State};
use super::{Driver, NetIo};
use crate::info;
use crate::node::{NodeId, Role};
use crate::wire::auth::{AuthChallenge, AuthProof, NONCE_LEN};
use crate::wire::{self, Hello, Message, PROTOCOL_VERSION};

/// A peer connection's progress through the cookie exchange (untouched without a cookie).
pub(super) struct Handshake {
    /// The nonce we challenged the peer with.
    nonce: [u8; NONCE_LEN],
    /// The peer's challenge, once it came.
    peer_nonce: Option<[u8; NONCE_LEN]>,
    /// The peer's hello came (without a cookie the hello completes the handshake at once).
    hello_seen: bool,
    /// Our proof is queued.
    proof_sent: bool,
}

impl Handshake {
    pub(super) fn new() -> Handshake {
        Handshake {
            nonce: [0; NONCE_LEN],
            peer_nonce: None,
            hello_seen: false,
            proof_sent: false,
        }
    }
}

impl<R: Role> Driver<R> {
    /// A frame on a connection whose handshake is under way.
    pub(super) fn handle_handshake(
        &mut self,
        key: usize,
        message: Message<'_>,
    ) -> Result<(), String> {
        match message {
            Message::Hello(hello) => self.hello_received(key, &hello),
            Message::AuthChallenge(challenge) => self.challenge_received(key, challenge),
            Message::AuthProof(proof) => self.proof_received(key, proof),
            message if self.io.cookie.is_some() => Err(format!(
                "{:?} frame before authentication (does the peer have the cookie?)",
                message.kind()
            )),
            message => Err(format!("{:?} frame before the handshake", message.kind())),
        }
    }

    fn hello_received(&mut self, key: usize, hello: &Hello<'_>) -> Result<(), String> {
        if self.io.connections[key].handshake.hello_seen {
            return Err("second hello".to_string());
        }
        let peer = self.identify(key, hello)?;
        if self.io.cookie.is_none() {
            return self.complete_handshake(key, peer);
        }
        self.io.connections[key].handshake.hello_seen = true;
        self.send_proof_when_ready(key);
        Ok(())
    }

    fn challenge_received(&mut self, key: usize, challenge: AuthChallenge) -> Result<(), String> {
        if self.io.cookie.is_none() {
            return Err("the peer requires a cookie and this node has none".to_string());
        }
        let handshake = &mut self.io.connections[key].handshake;
        if handshake.peer_nonce.is_some() {
            return Err("second challenge".to_string());
        }
        handshake.peer_nonce = Some(challenge.nonce);
        self.send_proof_when_ready(key);
        Ok(())
    }

    fn proof_received(&mut self, key: usize, proof: AuthProof) -> Result<(), String> {
        let connection = &self.io.connections[key];
        let handshake = &connection.handshake;
        let (Some(cookie), Some(peer), Some(peer_nonce), true) = (
            self.io.cookie.as_deref(),
            connection.peer,
            handshake.peer_nonce,
            handshake.hello_seen,
        ) else {
            return Err("proof before hello and challenge".to_string());
        };
        let me = self.io.node;
        if !auth::verify(cookie, peer, me, &handshake.nonce, &peer_nonce, &proof.mac) {
            return Err("authentication failed: wrong cookie".to_string());
        }
        self.complete_handshake(key, peer)
    }

    /// With a cookie: once the peer's hello and challenge are in, answer the challenge.
    fn send_proof_when_ready(&mut self, key: usize) {
        let io = &mut self.io;
        let connection = &io.connections[key];
        let handshake = &connection.handshake;
        let (Some(cookie), Some(peer), Some(peer_nonce), true, false) = (
            io.cookie.as_deref(),
            connection.peer,
            handshake.peer_nonce,
            handshake.hello_seen,
            handshake.proof_sent,
        ) else {
            return;
        };
        let mac = auth::prove(cookie, io.node, peer, &peer_nonce, &handshake.nonce);
        io.connections[key].handshake.proof_sent = true;
        io.queue_frame(key, &Message::AuthProof(AuthProof { mac }));
    }

    /// Checks a hello and learns who is on the other end (nothing changes for the peer yet:
    /// with a cookie, the connection must still prove itself).
    fn identify(&mut self, key: usize, hello: &Hello<'_>) -> Result<NodeId, String> {
        let io = &mut self.io;
        let peer = wire::check_hello(hello, &io.cluster, io.peers.len(), io.node)?;
        match io.connections[key].peer {
            Some(expected) if expected != peer => {
                Err(format!("dialled node {expected} but node {peer} answered"))
            }
            Some(_) => Ok(peer),
            None if io.peers[peer].dial => Err(format!("node {peer} dialled us, but we dial it")),
            None => {
                io.connections[key].peer = Some(peer);
                Ok(peer)
            }
        }
    }

    /// The connection is the peer's now: it replaces any older one, and the role hears of it.
    fn complete_handshake(&mut self, key: usize, peer: NodeId) -> Result<(), String> {
        if let Some(old) = self.io.peers[peer].connection
            && old != key
        {
            // A restarted peer, or a half-open connection the kernel has not noticed.
            self.close(old, super::connection::CloseReason::Replaced);
        }
        let io = &mut self.io;
        let connection = &mut io.connections[key];
        if connection.mode == Mode::Accepted {
            io.admission.handshake_ended(key);
        }
        connection.state = State::Up;
        io.peers[peer].connection = Some(key);
        io.peers[peer].up = true;
        io.reset_backoff(peer);
        info!("node {}: peer {peer} up", io.node);
        self.role.on_peer_up(&mut self.io, peer);
        self.deliver_local();
        Ok(())
    }
}

impl NetIo {
    /// Opens the handshake: our hello and, with a cookie, our challenge.
    pub(super) fn queue_hello(&mut self, key: usize) {
        let hello = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            nodes: self.peers.len() as u16,
            node: self.node as u16,
            cluster: &self.cluster,
        });
        let connection = &mut self.connections[key];
        let length = hello.encoded_len();
        let tail = connection
            .output
            .reserve(length)
            .expect("a new connection has room");
        hello.encode(tail);
        connection.output.commit(length);
        if self.cookie.is_some() {
            match auth::nonce() {
                Ok(nonce) => {
                    connection.handshake.nonce = nonce;
                    self.queue_frame(key, &Message::AuthChallenge(AuthChallenge { nonce }));
                }
                Err(error) => {
                    // Without a nonce we cannot authenticate; the handshake stalls and the sweep
                    // closes the connection.
                    info!("node {}: no random nonce from the OS: {error}", self.node);
                }
            }
        }
        self.mark_dirty(key);
    }

    /// Queues a handshake frame (small; a new connection's buffer has room).
    fn queue_frame(&mut self, key: usize, message: &Message<'_>) {
        let connection = &mut self.connections[key];
        let length = message.encoded_len();
        let tail = connection
            .output
            .reserve(length)
            .expect("a new connection has room");
        message.encode(tail);
        connection.output.commit(length);
        self.mark_dirty(key);
    }
}
