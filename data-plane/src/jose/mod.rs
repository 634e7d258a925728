//! JSON Web Signatures as identity providers send them (RFC 7515, 7517, 7518): compact JWS
//! parsing, keys from shared secrets, PEM and JWK sets, signature checks with `ring`, and the
//! time claims. Nothing here does I/O; `crate::idp` fetches key sets, the auth methods decide.
//!
//! The defence against alg confusion lives in [`verify`]: a key knows its family (HMAC, RSA,
//! ECDSA) from how it was built, never from the token, and a token whose `alg` names another
//! family is refused before any cryptography runs.

mod alg;
mod claims;
mod jwk;
mod jws;
mod key;
mod pem;

#[cfg(test)]
mod tests;

pub use alg::{Alg, Family};
pub use claims::{Skews, TimeError, Times, check_times, claim};
pub use jwk::KeySet;
pub use jws::{Header, Jws, MAX_TOKEN_LEN, decode, verify};
pub use key::Key;

/// Why a token or a key was refused. The messages are for logs, never for clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    #[error("the token is not a compact JWS")]
    Malformed,
    #[error("the token is too large")]
    TooLarge,
    #[error("unsupported or refused alg")]
    UnsupportedAlg,
    #[error("the key does not fit the alg")]
    KeyMismatch,
    #[error("bad signature")]
    BadSignature,
    #[error("unusable key: {0}")]
    BadKey(String),
}

/// SHA-256 of the token as sent: a cache key that never holds the token itself.
pub fn token_digest(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
