//! Introspection answers in the regional Redis, sealed so that write access to Redis is not a
//! way to make a token active: `PCI1` ‖ sealed at (unix seconds, i64 big endian) ‖ valid until
//! (unix seconds, i64 big endian) ‖ AES-256-GCM envelope of the answer's JSON under a key derived
//! from the shared encryption secret for this purpose only. The token hash and both times are
//! the associated data, so a record copied to another token's slot, or given a later end, fails
//! to open like a forged one.

use portcullis_proto::envelope::EnvelopeKey;

const MAGIC: &[u8; 4] = b"PCI1";
/// HKDF label of the introspection-record key (one key per purpose, docs/security.md).
pub const LABEL: &str = "portcullis/introspection/v1";
/// Clocks of the gateways of a region may differ this much.
const CLOCK_SKEW_SECS: i64 = 60;

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Unsealed,
    Tampered,
    Expired,
}

pub(super) fn key(shared_secret: &str) -> EnvelopeKey {
    EnvelopeKey::derive(shared_secret.as_bytes(), LABEL)
}

fn associated_data(hash: &str, sealed_at: i64, until: i64) -> Vec<u8> {
    format!("introspection\0{hash}\0{sealed_at}\0{until}").into_bytes()
}

pub(crate) fn seal(
    key: &EnvelopeKey,
    hash: &str,
    sealed_at: i64,
    until: i64,
    json: &[u8],
) -> Vec<u8> {
    let sealed = key.seal(json, &associated_data(hash, sealed_at, until));
    let mut out = Vec::with_capacity(MAGIC.len() + 16 + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&sealed_at.to_be_bytes());
    out.extend_from_slice(&until.to_be_bytes());
    out.extend_from_slice(&sealed);
    out
}

/// The sealing time and answer JSON of a record stored for `hash`, if it is still valid `now`.
pub(crate) fn open(
    key: &EnvelopeKey,
    hash: &str,
    raw: &[u8],
    now: i64,
) -> Result<(i64, i64, Vec<u8>), Refusal> {
    let rest = raw.strip_prefix(MAGIC).ok_or(Refusal::Unsealed)?;
    let (at, rest) = rest.split_first_chunk::<8>().ok_or(Refusal::Unsealed)?;
    let (until, sealed) = rest.split_first_chunk::<8>().ok_or(Refusal::Unsealed)?;
    let (sealed_at, until) = (i64::from_be_bytes(*at), i64::from_be_bytes(*until));
    let json = key
        .open(sealed, &associated_data(hash, sealed_at, until))
        .map_err(|_| Refusal::Tampered)?;
    if until <= now || sealed_at > now.saturating_add(CLOCK_SKEW_SECS) {
        return Err(Refusal::Expired);
    }
    Ok((sealed_at, until, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_record_sealed_for_this_token_and_times_opens() {
        let k = key("a shared secret of at least 32 bytes!!");
        let rec = seal(&k, "h1", 1000, 2000, br#"{"active":true}"#);
        assert_eq!(
            open(&k, "h1", &rec, 1500),
            Ok((1000, 2000, br#"{"active":true}"#.to_vec()))
        );
        assert_eq!(open(&k, "h2", &rec, 1500), Err(Refusal::Tampered));
        assert_eq!(open(&k, "h1", &rec, 2000), Err(Refusal::Expired));
        let mut later = rec.clone();
        later[12..20].copy_from_slice(&9999i64.to_be_bytes());
        assert_eq!(open(&k, "h1", &later, 1500), Err(Refusal::Tampered));
        let other = key("another deployment's shared secret......");
        assert_eq!(open(&other, "h1", &rec, 1500), Err(Refusal::Tampered));
        let session_key = crate::session_record::key("a shared secret of at least 32 bytes!!");
        assert_eq!(open(&session_key, "h1", &rec, 1500), Err(Refusal::Tampered));
        assert_eq!(
            open(&k, "h1", b"{\"active\":true}", 1500),
            Err(Refusal::Unsealed)
        );
        assert_eq!(open(&k, "h1", &rec[..19], 1500), Err(Refusal::Unsealed));
        assert_eq!(open(&k, "h1", &rec[..30], 1500), Err(Refusal::Tampered));
    }
}
