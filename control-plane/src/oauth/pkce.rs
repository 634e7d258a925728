//! PKCE (RFC 7636), S256 only: `plain` would give an intercepted code's thief the verifier.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The only method accepted.
pub const S256: &str = "S256";

/// RFC 7636 4.1: 43 to 128 characters of `[A-Za-z0-9-._~]`. A challenge has the same syntax
/// (an S256 one is always 43 characters).
pub fn well_formed(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// BASE64URL(SHA256(verifier)).
pub fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` is well formed and hashes to `challenge`.
pub fn verify(verifier: &str, challenge: &str) -> bool {
    well_formed(verifier)
        && bool::from(
            challenge_of(verifier)
                .as_bytes()
                .ct_eq(challenge.as_bytes()),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn the_rfc_7636_appendix_b_vector() {
        assert_eq!(challenge_of(VERIFIER), CHALLENGE);
        assert!(verify(VERIFIER, CHALLENGE));
        assert!(!verify(
            VERIFIER,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        // `plain`: the verifier itself as the challenge is refused.
        assert!(!verify(VERIFIER, VERIFIER));
    }

    #[test]
    fn verifier_syntax() {
        assert!(well_formed(&"a".repeat(43)));
        assert!(well_formed(&"~._-".repeat(32)));
        assert!(!well_formed(&"a".repeat(42)), "too short");
        assert!(!well_formed(&"a".repeat(129)), "too long");
        assert!(
            !well_formed(&format!("{}+", "a".repeat(43))),
            "outside the alphabet"
        );
        assert!(!well_formed(&format!("{}é", "a".repeat(43))));
        // A short verifier that happens to hash right is still refused.
        assert!(!verify("abc", &challenge_of("abc")));
    }
}
