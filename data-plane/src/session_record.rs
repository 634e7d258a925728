//! Session records in the regional Redis, sealed so that write access to Redis is not a way to
//! mint keys: `PCS1` ‖ revision (u64, big endian) ‖ sealed at (unix seconds, i64 big endian) ‖
//! AES-256-GCM envelope of the session JSON under a key derived from the shared encryption
//! secret for this purpose only. The key hash, the revision and the sealing time are the
//! associated data, so a record copied to another key's slot, or given a higher revision to
//! outlive a revocation, fails to open like a forged one, and a genuine record put back after it
//! was deleted is refused once it is older than [`MAX_AGE_SECS`].

use portcullis_proto::envelope::EnvelopeKey;

const MAGIC: &[u8; 4] = b"PCS1";
/// The Redis TTL of a record: an older one was put back by someone else than a gateway.
pub const MAX_AGE_SECS: i64 = 3600;
/// Clocks of the gateways of a region may differ this much.
const CLOCK_SKEW_SECS: i64 = 60;
/// HKDF label of the session-record key (one key per purpose, docs/security.md).
pub const LABEL: &str = "portcullis/session/v1";

/// Why a record was refused; each is counted apart in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a sealed record (an older gateway's plain record, or a forgery).
    Unsealed,
    /// Sealed, but not for this key hash and revision under this deployment's secret.
    Tampered,
    /// Genuine, but sealed longer ago than a record lives (a replay).
    Expired,
    /// Opened, but the content is not a session.
    Malformed,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsealed => "unsealed",
            Self::Tampered => "tampered",
            Self::Expired => "expired",
            Self::Malformed => "malformed",
        }
    }
}

pub fn key(shared_secret: &str) -> EnvelopeKey {
    EnvelopeKey::derive(shared_secret.as_bytes(), LABEL)
}

fn associated_data(key_hash: &str, revision: u64, sealed_at: i64) -> Vec<u8> {
    format!("session\0{key_hash}\0{revision}\0{sealed_at}").into_bytes()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn seal(key: &EnvelopeKey, key_hash: &str, revision: u64, json: &[u8]) -> Vec<u8> {
    seal_at(key, key_hash, revision, now(), json)
}

fn seal_at(key: &EnvelopeKey, key_hash: &str, revision: u64, at: i64, json: &[u8]) -> Vec<u8> {
    let sealed = key.seal(json, &associated_data(key_hash, revision, at));
    let mut out = Vec::with_capacity(MAGIC.len() + 16 + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&revision.to_be_bytes());
    out.extend_from_slice(&at.to_be_bytes());
    out.extend_from_slice(&sealed);
    out
}

/// The revision and session JSON of a record stored for `key_hash`.
pub fn open(key: &EnvelopeKey, key_hash: &str, raw: &[u8]) -> Result<(u64, Vec<u8>), Refusal> {
    let rest = raw.strip_prefix(MAGIC).ok_or(Refusal::Unsealed)?;
    let (rev, rest) = rest.split_first_chunk::<8>().ok_or(Refusal::Unsealed)?;
    let (at, sealed) = rest.split_first_chunk::<8>().ok_or(Refusal::Unsealed)?;
    let (revision, sealed_at) = (u64::from_be_bytes(*rev), i64::from_be_bytes(*at));
    let json = key
        .open(sealed, &associated_data(key_hash, revision, sealed_at))
        .map_err(|_| Refusal::Tampered)?;
    let age = now().saturating_sub(sealed_at);
    if !(-CLOCK_SKEW_SECS..=MAX_AGE_SECS + CLOCK_SKEW_SECS).contains(&age) {
        return Err(Refusal::Expired);
    }
    Ok((revision, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_record_sealed_for_this_key_and_revision_opens() {
        let k = key("a shared secret of at least 32 bytes!!");
        let rec = seal(&k, "hash-a", 7, br#"{"org_id":"o"}"#);
        assert_eq!(
            open(&k, "hash-a", &rec),
            Ok((7, br#"{"org_id":"o"}"#.to_vec()))
        );
        assert_eq!(open(&k, "hash-b", &rec), Err(Refusal::Tampered));
        let mut bumped = rec.clone();
        bumped[4..12].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(open(&k, "hash-a", &bumped), Err(Refusal::Tampered));
        let mut younger = rec.clone();
        younger[19] ^= 1;
        assert_eq!(open(&k, "hash-a", &younger), Err(Refusal::Tampered));
        let replayed = seal_at(&k, "hash-a", 7, now() - MAX_AGE_SECS - 3600, b"{}");
        assert_eq!(open(&k, "hash-a", &replayed), Err(Refusal::Expired));
        let other = key("another deployment's shared secret......");
        assert_eq!(open(&other, "hash-a", &rec), Err(Refusal::Tampered));
        let plain = format!("{}\n{{}}", u64::MAX);
        assert_eq!(open(&k, "hash-a", plain.as_bytes()), Err(Refusal::Unsealed));
        assert_eq!(open(&k, "hash-a", b"PCS1"), Err(Refusal::Unsealed));
        assert_eq!(open(&k, "hash-a", &rec[..28]), Err(Refusal::Tampered));
        assert_eq!(open(&k, "hash-a", &rec[..15]), Err(Refusal::Unsealed));
    }
}
