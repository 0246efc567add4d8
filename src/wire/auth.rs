//! The cookie handshake's two frames (see `net::auth`): a fresh random challenge each way, then
//! each side's proof that it knows the cookie.

pub const NONCE_LEN: usize = 16;
pub const MAC_LEN: usize = 32;

/// A fresh random nonce from the OS, sent right after the hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthChallenge {
    pub nonce: [u8; NONCE_LEN],
}

impl AuthChallenge {
    pub const LEN: usize = NONCE_LEN;
    pub fn decode(payload: &[u8]) -> Result<Self, &'static str> {
        let nonce = payload.try_into().map_err(|_| "wrong length")?;
        Ok(AuthChallenge { nonce })
    }
    pub fn encode(&self, out: &mut [u8]) {
        out[..NONCE_LEN].copy_from_slice(&self.nonce);
    }
}

/// HMAC-SHA256 under the cookie over a label, both ids and both nonces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthProof {
    pub mac: [u8; MAC_LEN],
}

impl AuthProof {
    pub const LEN: usize = MAC_LEN;
    pub fn decode(payload: &[u8]) -> Result<Self, &'static str> {
        let mac = payload.try_into().map_err(|_| "wrong length")?;
        Ok(AuthProof { mac })
    }
    pub fn encode(&self, out: &mut [u8]) {
        out[..MAC_LEN].copy_from_slice(&self.mac);
    }
}
