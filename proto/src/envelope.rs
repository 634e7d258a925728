//! Encrypted envelope for values that must be recovered (node CA key, config backups, client
//! secrets): AES-256-GCM under a key derived with HKDF-SHA256 from the shared secret and a label
//! per purpose, a random 96-bit nonce per value, and a version byte for rotation.
//!
//! Layout: `version (1) || nonce (12) || ciphertext+tag`.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// Purpose labels: one key per purpose, so a value cannot be replayed as another kind.
pub mod label {
    /// The node CA private key stored in Postgres.
    pub const CA_KEY: &str = "portcullis/ca-key/v1";
    /// The edge's configuration backup (Redis, state dir).
    pub const BACKUP: &str = "portcullis/backup/v1";
    /// The node's private key in the edge's state dir.
    pub const NODE_KEY: &str = "portcullis/node-key/v1";
    /// Secrets stored by the control plane that must be recovered (client secrets, hmac strings).
    pub const STORED_SECRET: &str = "portcullis/secret/v1";
    /// Private keys of the certificate store (control-plane tables, stream, edge memory).
    pub const CERT_PRIVATE_KEY: &str = "portcullis/cert-key/v1";
}

/// Why a value could not be opened. Deliberately vague: no detail helps an attacker.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("encrypted value is truncated")]
    Truncated,
    #[error("encrypted value has unknown format version {0}")]
    UnknownVersion(u8),
    #[error("encrypted value failed authentication (wrong secret, or tampered)")]
    Authentication,
}

/// An AES-256-GCM key for one purpose.
#[derive(Clone)]
pub struct EnvelopeKey(Aes256Gcm);

impl std::fmt::Debug for EnvelopeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvelopeKey(..)")
    }
}

impl EnvelopeKey {
    /// Derives the key for `label` from the operator's shared secret.
    pub fn derive(shared_secret: &[u8], label: &str) -> Self {
        let hk = Hkdf::<Sha256>::new(None, shared_secret);
        let mut okm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 255*32 limit, so expand cannot fail.
        if hk.expand(label.as_bytes(), &mut okm).is_err() {
            unreachable!("HKDF output length is valid");
        }
        Self(Aes256Gcm::new(&okm.into()))
    }

    /// Encrypts `plaintext`, binding `aad` (not stored; the opener must present the same).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let Ok(ct) = self.0.encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        ) else {
            unreachable!("AES-GCM encryption of an in-memory buffer cannot fail");
        };
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts and authenticates a value made by [`EnvelopeKey::seal`] with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        let (&version, rest) = sealed.split_first().ok_or(EnvelopeError::Truncated)?;
        if version != VERSION {
            return Err(EnvelopeError::UnknownVersion(version));
        }
        if rest.len() < NONCE_LEN + 16 {
            return Err(EnvelopeError::Truncated);
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        self.0
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| EnvelopeError::Authentication)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_binds_aad() {
        let k = EnvelopeKey::derive(b"shared", label::BACKUP);
        let sealed = k.seal(b"config", b"group=eu");
        assert_eq!(k.open(&sealed, b"group=eu").unwrap(), b"config");
        assert_eq!(
            k.open(&sealed, b"group=us"),
            Err(EnvelopeError::Authentication)
        );
    }

    #[test]
    fn wrong_secret_label_or_tampering_is_refused() {
        let k = EnvelopeKey::derive(b"shared", label::BACKUP);
        let sealed = k.seal(b"config", b"");
        let other_secret = EnvelopeKey::derive(b"other", label::BACKUP);
        let other_label = EnvelopeKey::derive(b"shared", label::CA_KEY);
        assert_eq!(
            other_secret.open(&sealed, b""),
            Err(EnvelopeError::Authentication)
        );
        assert_eq!(
            other_label.open(&sealed, b""),
            Err(EnvelopeError::Authentication)
        );
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(k.open(&flipped, b""), Err(EnvelopeError::Authentication));
        assert_eq!(k.open(&sealed[..10], b""), Err(EnvelopeError::Truncated));
        let mut v2 = sealed;
        v2[0] = 2;
        assert_eq!(k.open(&v2, b""), Err(EnvelopeError::UnknownVersion(2)));
    }

    #[test]
    fn hkdf_matches_rfc5869_test_case_1() {
        // RFC 5869 A.1 as an independent oracle for the derivation primitive.
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let hk = Hkdf::<Sha256>::new(Some(&salt), &ikm);
        let mut okm = [0u8; 42];
        hk.expand(&info, &mut okm).unwrap();
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }
}
