//! Cookie authentication between nodes, like Erlang's distribution cookie: every node of a
//! cluster is given the same secret file. When a node has one, each connection to another node
//! runs a mutual challenge-response right after the hellos, before any other frame:
//!
//! 1. each side sends `AuthChallenge` with 16 fresh random bytes from the OS (`/dev/urandom`;
//!    never the seeded generator, which the simulation makes predictable);
//! 2. once it has the other side's hello and challenge, each side sends `AuthProof`:
//!    HMAC-SHA256(cookie, label ‖ prover id ‖ verifier id ‖ verifier's nonce ‖ prover's nonce),
//!    where the label names the direction (dialler → acceptor or back);
//! 3. each side checks the other's proof in constant time; only then is the peer up.
//!
//! A proof is bound to both nonces, so it cannot be replayed on another connection, and to the
//! ids and direction, so it cannot be reflected back. What this does not do: encrypt or
//! authenticate the frames that follow (anyone on the path can read and alter them), or protect
//! a cookie that leaks. It keeps strangers and misconfigured nodes out; it is not TLS.

use std::io::Read;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::node::NodeId;
use crate::wire::auth::{MAC_LEN, NONCE_LEN};

/// The longest cookie accepted (a cookie is a short secret, not a document).
pub const COOKIE_BYTES_MAX: usize = 4096;

/// Fresh random bytes from the OS.
pub fn nonce() -> std::io::Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut nonce)?;
    Ok(nonce)
}

fn mac(
    cookie: &[u8],
    prover: NodeId,
    verifier: NodeId,
    verifier_nonce: &[u8],
    prover_nonce: &[u8],
) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(cookie).expect("HMAC takes a key of any length");
    // The node with the higher id dials.
    let label: &[u8] = if prover > verifier {
        b"pollen-auth-v1 dialler->acceptor"
    } else {
        b"pollen-auth-v1 acceptor->dialler"
    };
    mac.update(label);
    mac.update(&(prover as u16).to_be_bytes());
    mac.update(&(verifier as u16).to_be_bytes());
    mac.update(verifier_nonce);
    mac.update(prover_nonce);
    mac
}

/// Our proof to `verifier`, answering its `verifier_nonce`.
pub fn prove(
    cookie: &[u8],
    prover: NodeId,
    verifier: NodeId,
    verifier_nonce: &[u8; NONCE_LEN],
    prover_nonce: &[u8; NONCE_LEN],
) -> [u8; MAC_LEN] {
    mac(cookie, prover, verifier, verifier_nonce, prover_nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `proof` is `prover`'s answer to our `verifier_nonce` (compared in constant time).
pub fn verify(
    cookie: &[u8],
    prover: NodeId,
    verifier: NodeId,
    verifier_nonce: &[u8; NONCE_LEN],
    prover_nonce: &[u8; NONCE_LEN],
    proof: &[u8; MAC_LEN],
) -> bool {
    mac(cookie, prover, verifier, verifier_nonce, prover_nonce)
        .verify_slice(proof)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_only_with_the_same_cookie_ids_and_nonces() {
        let (a, b) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
        let proof = prove(b"secret", 3, 1, &a, &b);
        assert!(verify(b"secret", 3, 1, &a, &b, &proof));
        assert!(!verify(b"other", 3, 1, &a, &b, &proof));
        assert!(!verify(b"secret", 1, 3, &a, &b, &proof), "reflected");
        assert!(!verify(b"secret", 3, 2, &a, &b, &proof));
        assert!(!verify(b"secret", 3, 1, &b, &a, &proof), "nonces swapped");
        assert!(
            !verify(b"secret", 3, 1, &[9; NONCE_LEN], &b, &proof),
            "replayed"
        );
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce().unwrap(), nonce().unwrap());
    }
}
