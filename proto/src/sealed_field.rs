//! Secrets inside stored JSON documents (the Mashery signature secret of an API definition):
//! the control plane replaces the operator's value with `sealed:v1:<base64 envelope>` before it
//! reaches a table, and only an edge holding the same `--encryption-secret` opens it.
//!
//! The envelope uses [`label::STORED_SECRET`] and binds the document id and the field path as
//! associated data, so a sealed value moved to another API or another field does not open.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::envelope::{EnvelopeKey, label};

/// What marks a value as sealed; anything else is a plaintext value.
pub const PREFIX: &str = "sealed:v1:";

/// `auth.signature.secret` of an API definition.
pub const SIGNATURE_SECRET: &str = "auth.signature.secret";

/// The key sealing stored secrets, derived from `--encryption-secret`.
pub fn key(encryption_secret: &str) -> EnvelopeKey {
    EnvelopeKey::derive(encryption_secret.as_bytes(), label::STORED_SECRET)
}

/// The key sealing certificate private keys, a purpose of its own so a sealed API secret can
/// never be opened as a private key or the other way round.
pub fn certificate_key(encryption_secret: &str) -> EnvelopeKey {
    EnvelopeKey::derive(encryption_secret.as_bytes(), label::CERT_PRIVATE_KEY)
}

fn aad(doc_id: &str, field: &str) -> Vec<u8> {
    // NUL occurs in neither an id nor a field path, so the encoding is unambiguous.
    format!("{doc_id}\0{field}").into_bytes()
}

pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

pub fn seal(key: &EnvelopeKey, doc_id: &str, field: &str, plaintext: &str) -> String {
    let sealed = key.seal(plaintext.as_bytes(), &aad(doc_id, field));
    format!("{PREFIX}{}", B64.encode(sealed))
}

/// Why a sealed value did not open. Deliberately one case: no detail helps an attacker.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the sealed value cannot be opened (sealed under another --encryption-secret, for another \
     API or field, or altered)"
)]
pub struct OpenError;

/// The plaintext of a value made by [`seal`] for the same document and field.
pub fn open(
    key: &EnvelopeKey,
    doc_id: &str,
    field: &str,
    value: &str,
) -> Result<String, OpenError> {
    let body = value.strip_prefix(PREFIX).ok_or(OpenError)?;
    // A base64 body far longer than any secret is refused before decoding.
    if body.len() > 64 * 1024 {
        return Err(OpenError);
    }
    let sealed = B64.decode(body).map_err(|_| OpenError)?;
    let plain = key
        .open(&sealed, &aad(doc_id, field))
        .map_err(|_| OpenError)?;
    String::from_utf8(plain).map_err(|_| OpenError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_only_for_the_same_secret_document_and_field() {
        let k = key("one-encryption-secret-of-32-bytes-or-more");
        let v = seal(&k, "api-1", SIGNATURE_SECRET, "s3cret");
        assert!(is_sealed(&v));
        assert!(!v.contains("s3cret"));
        assert_eq!(open(&k, "api-1", SIGNATURE_SECRET, &v).unwrap(), "s3cret");
        assert_eq!(open(&k, "api-2", SIGNATURE_SECRET, &v), Err(OpenError));
        assert_eq!(open(&k, "api-1", "other.field", &v), Err(OpenError));
        let other = key("another-encryption-secret-of-32-bytes!!");
        assert_eq!(open(&other, "api-1", SIGNATURE_SECRET, &v), Err(OpenError));
        assert_eq!(
            open(&k, "api-1", SIGNATURE_SECRET, "s3cret"),
            Err(OpenError)
        );
        assert_eq!(
            open(&k, "api-1", SIGNATURE_SECRET, "sealed:v1:!!"),
            Err(OpenError)
        );
    }
}
