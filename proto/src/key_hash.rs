//! How API keys are addressed once stored: only `sha256(key)` in lowercase hex ever leaves the
//! request path, so Postgres, Redis and the sync stream never hold a usable key.

use sha2::{Digest, Sha256};

/// Lowercase hex sha256 of a key.
pub fn key_hash(key: &str) -> String {
    // Every token request hashes its key: a table lookup per nibble into one allocation of the
    // final size, instead of `hex::encode`'s character-at-a-time String pushes.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(key.as_bytes());
    let mut out = [0u8; 64];
    for (pair, byte) in out.chunks_exact_mut(2).zip(digest) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
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
