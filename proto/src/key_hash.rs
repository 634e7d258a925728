//! How API keys are addressed once stored: only `sha256(key)` in lowercase hex ever leaves the
//! request path, so Postgres, Redis and the sync stream never hold a usable key.

use sha2::{Digest, Sha256};

/// Lowercase hex sha256 of a key.
pub fn key_hash(key: &str) -> String {
    // Every token request hashes its key: encoded into a buffer of the final size, one
    // allocation, instead of `hex::encode`'s character-at-a-time String pushes.
    let digest = Sha256::digest(key.as_bytes());
    let mut out = [0u8; 64];
    if hex::encode_to_slice(digest, &mut out).is_err() {
        return String::new();
    }
    // Only ASCII hex digits were written.
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_sha256sum() {
        // `printf abc | sha256sum`
        assert_eq!(
            super::key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            super::key_hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
