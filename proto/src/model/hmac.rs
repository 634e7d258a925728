//! HMAC and RSA request signatures (`enable_signature_checking`, draft-cavage HTTP
//! Signatures): an API definition's settings (docs/hmac.md).

use serde::Deserialize;

use super::ValidationError;
use super::json::null_as_default;

/// The algorithms a client may sign with. Anything else is refused (Tyk falls back to SHA-1).
pub const SIGNATURE_ALGORITHMS: &[&str] = &[
    "hmac-sha1",
    "hmac-sha256",
    "hmac-sha384",
    "hmac-sha512",
    "rsa-sha256",
];

/// The window applied when `hmac_allowed_clock_skew` is 0 or absent: five minutes, where Tyk
/// checks no window at all (docs/hmac.md, "Defaults").
pub const DEFAULT_CLOCK_SKEW_MS: f64 = 300_000.0;

/// The settings' bound: a day. A larger window is no replay protection.
const MAX_CLOCK_SKEW_MS: f64 = 86_400_000.0;

/// The signature settings of an API definition.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct HmacSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub enable_signature_checking: bool,
    /// Algorithms a client may sign with (`hmac-sha256`, ...); empty means every supported one.
    #[serde(default, deserialize_with = "null_as_default")]
    pub hmac_allowed_algorithms: Vec<String>,
    /// Milliseconds a signed `Date` may differ from the gateway's clock; 0 = the default
    /// window, negative = no window (Tyk's behaviour for 0).
    #[serde(default, deserialize_with = "null_as_default")]
    pub hmac_allowed_clock_skew: f64,
}

impl HmacSpec {
    pub fn validate(&self) -> Result<(), ValidationError> {
        for alg in &self.hmac_allowed_algorithms {
            if !SIGNATURE_ALGORITHMS.contains(&alg.as_str()) {
                return Err(ValidationError::new(
                    "hmac_allowed_algorithms",
                    format!("must be among {}", SIGNATURE_ALGORITHMS.join(", ")),
                ));
            }
        }
        if !self.hmac_allowed_clock_skew.is_finite()
            || self.hmac_allowed_clock_skew > MAX_CLOCK_SKEW_MS
        {
            return Err(ValidationError::new(
                "hmac_allowed_clock_skew",
                "must be a number of milliseconds of at most 86400000 (negative: no window)",
            ));
        }
        Ok(())
    }

    /// The allowed skew in milliseconds, or None when the window is off.
    pub fn clock_skew_ms(&self) -> Option<f64> {
        let s = self.hmac_allowed_clock_skew;
        if s < 0.0 {
            None
        } else if s > 0.0 {
            Some(s)
        } else {
            Some(DEFAULT_CLOCK_SKEW_MS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_algorithms_and_unbounded_skews_are_refused() {
        let spec = |algs: &[&str], skew: f64| HmacSpec {
            enable_signature_checking: true,
            hmac_allowed_algorithms: algs.iter().map(|a| a.to_string()).collect(),
            hmac_allowed_clock_skew: skew,
        };
        assert!(
            spec(&["hmac-sha256", "rsa-sha256"], 5000.0)
                .validate()
                .is_ok()
        );
        assert!(spec(&["hmac-md5"], 0.0).validate().is_err());
        assert!(spec(&[], f64::INFINITY).validate().is_err());
        assert!(spec(&[], 1e12).validate().is_err());
        assert_eq!(spec(&[], 0.0).clock_skew_ms(), Some(DEFAULT_CLOCK_SKEW_MS));
        assert_eq!(spec(&[], -1.0).clock_skew_ms(), None);
        assert_eq!(spec(&[], 5000.0).clock_skew_ms(), Some(5000.0));
    }
}
