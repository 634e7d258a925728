//! Tests against real HTTP servers on 127.0.0.1 (and the real Redis when one is running).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod server;

mod discovery;
mod fetch;
mod introspection;
mod jwks;
mod tls;

use std::time::Duration;

use super::IdpConfig;

/// The EC P-256 public key of RFC 7517, Appendix A.1, under each of `kids`.
pub(super) fn jwks(kids: &[&str]) -> String {
    let keys: Vec<String> = kids
        .iter()
        .map(|kid| {
            format!(
                r#"{{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","kid":"{kid}"}}"#
            )
        })
        .collect();
    format!(r#"{{"keys":[{}]}}"#, keys.join(","))
}

/// Short timings so the tests run in well under a second each.
pub(super) fn quick() -> IdpConfig {
    IdpConfig {
        fetch_timeout: Duration::from_millis(400),
        jwks_refetch_interval: Duration::from_millis(200),
        ..IdpConfig::default()
    }
}
