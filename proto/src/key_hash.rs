//! How API keys are addressed once stored: only `sha256(key)` in lowercase hex ever leaves the
//! request path, so Postgres, Redis and the sync stream never hold a usable key.

use sha2::{Digest, Sha256};

/// Lowercase hex sha256 of a key.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
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
    }
}
