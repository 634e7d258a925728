//! Upper and lower bounds of every operator number that reaches a `Duration`, an allocation or
//! arithmetic, on either plane. The control plane refuses a value outside them (400 naming the
//! field); an edge that still receives one refuses the resource (NACK). The figures are listed in
//! `docs/keys.md`; they are far above any sensible setting and far below any overflow.

use super::ValidationError;

/// `proxy.timeout` and `--upstream-timeout`, seconds: one hour.
pub const MAX_TIMEOUT_SECS: f64 = 3_600.0;
/// `session_lifetime` (APIs and keys), `--global-session-lifetime`, `quota_renewal_rate`,
/// seconds: ten years.
pub const MAX_LIFETIME_SECS: i64 = 10 * 365 * 86_400;
/// `--node-cert-ttl`, seconds: one year.
pub const MAX_NODE_CERT_TTL_SECS: u64 = 365 * 86_400;
/// Rate limit `rate`: requests per window.
pub const MAX_RATE: f64 = 1e9;
/// Smallest positive `rate` (one request per thousand windows).
pub const MIN_RATE: f64 = 0.001;
/// Rate limit `per`, seconds: one year.
pub const MAX_PER_SECS: f64 = 365.0 * 86_400.0;
/// Smallest positive `per`: one millisecond, the sliding log's resolution.
pub const MIN_PER_SECS: f64 = 0.001;
/// `quota_max` and `quota_remaining`: exactly representable in Redis's Lua numbers (2^53).
pub const MAX_QUOTA: i64 = 1 << 53;
/// Unix seconds (`expires`, `quota_renews`): the last second of year 9999.
pub const MAX_UNIX_SECS: i64 = 253_402_300_799;
/// `auth.signature.allowed_clock_skew`, seconds. Each request computes `2 * skew + 1` digests.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;
/// Policies one key applies (each is looked up when the key is written and merged per request).
pub const MAX_POLICIES_PER_KEY: usize = 256;
/// `basic_auth.cache_ttl`, seconds: one day.
pub const MAX_BASIC_CACHE_TTL_SECS: i64 = 86_400;
/// A store id is an org id plus 64 hex digits; org ids are short.
pub const MAX_CERTIFICATE_ID_BYTES: usize = 320;
/// Entries in one certificate list or host map of an API definition.
pub const MAX_CERTIFICATES_PER_LIST: usize = 64;
/// Largest PEM bundle accepted by the certificate store.
pub const MAX_CERTIFICATE_BUNDLE_BYTES: usize = 256 * 1024;
/// Certificates in one uploaded chain.
pub const MAX_CERTIFICATES_PER_CHAIN: usize = 16;

/// A rate limit as it appears on a session, a policy or a per-API `limit`.
pub(super) struct RateFields<'a> {
    /// Field path prefix (`""` or `"access_rights.<api>.limit."`).
    pub prefix: &'a str,
    pub rate: f64,
    pub per: f64,
    pub quota_max: i64,
    pub quota_renewal_rate: i64,
}

impl RateFields<'_> {
    pub(super) fn validate(&self) -> Result<(), ValidationError> {
        let p = self.prefix;
        let unlimited_or =
            |v: f64, min: f64, max: f64| v == 0.0 || v == -1.0 || (min..=max).contains(&v);
        if !self.rate.is_finite() || !unlimited_or(self.rate, MIN_RATE, MAX_RATE) {
            return Err(ValidationError::new(
                format!("{p}rate"),
                format!("must be 0, -1 (unlimited) or between {MIN_RATE} and {MAX_RATE:e}"),
            ));
        }
        if !self.per.is_finite() || !unlimited_or(self.per, MIN_PER_SECS, MAX_PER_SECS) {
            return Err(ValidationError::new(
                format!("{p}per"),
                format!(
                    "must be 0, -1 or between {MIN_PER_SECS} (1 ms) and {MAX_PER_SECS} seconds"
                ),
            ));
        }
        if !(-1..=MAX_QUOTA).contains(&self.quota_max) {
            return Err(ValidationError::new(
                format!("{p}quota_max"),
                format!("must be -1 (unlimited) to {MAX_QUOTA}"),
            ));
        }
        if !(-1..=MAX_LIFETIME_SECS).contains(&self.quota_renewal_rate) {
            return Err(ValidationError::new(
                format!("{p}quota_renewal_rate"),
                format!("must be -1 to {MAX_LIFETIME_SECS} seconds"),
            ));
        }
        Ok(())
    }
}

/// `session_lifetime`: 0 (never) up to [`MAX_LIFETIME_SECS`].
pub(super) fn lifetime(field: &str, secs: i64) -> Result<(), ValidationError> {
    if (0..=MAX_LIFETIME_SECS).contains(&secs) {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("must be 0 (never) to {MAX_LIFETIME_SECS} seconds"),
        ))
    }
}

/// A unix time in seconds: -1 or 0 (none) up to [`MAX_UNIX_SECS`].
pub(super) fn unix_time(field: &str, secs: i64) -> Result<(), ValidationError> {
    if (-1..=MAX_UNIX_SECS).contains(&secs) {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            "must be a unix time in seconds (up to year 9999), 0 for never",
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{ApiDefinition, Policy, SessionState};

    fn api(proxy_extra: &str, extra: &str) -> Result<ApiDefinition, crate::model::ValidationError> {
        ApiDefinition::parse(
            format!(
                r#"{{"api_id":"a","proxy":{{"listen_path":"/a/","target_url":"http://h/"{proxy_extra}}}{extra}}}"#
            )
            .as_bytes(),
        )
    }

    #[test]
    fn the_documented_maxima_are_accepted_and_one_more_is_refused() {
        assert!(api(r#","timeout":3600"#, "").is_ok());
        assert_eq!(
            api(r#","timeout":3600.5"#, "").unwrap_err().field,
            "proxy.timeout"
        );
        assert!(api("", r#","session_lifetime":315360000"#).is_ok());
        assert_eq!(
            api("", r#","session_lifetime":315360001"#)
                .unwrap_err()
                .field,
            "session_lifetime"
        );
        assert!(Policy::parse(br#"{"per":0.001,"rate":1e9}"#).is_ok());
        assert_eq!(
            Policy::parse(br#"{"per":0.0009}"#).unwrap_err().field,
            "per"
        );
        assert_eq!(
            Policy::parse(br#"{"rate":1.1e9}"#).unwrap_err().field,
            "rate"
        );
        assert!(SessionState::parse(br#"{"quota_max":9007199254740992}"#).is_ok());
        assert_eq!(
            SessionState::parse(br#"{"quota_max":9007199254740993}"#)
                .unwrap_err()
                .field,
            "quota_max"
        );
        assert_eq!(
            SessionState::parse(br#"{"expires":253402300800}"#)
                .unwrap_err()
                .field,
            "expires"
        );
        let many: Vec<String> = (0..257).map(|i| format!("\"p{i}\"")).collect();
        let body = format!(r#"{{"apply_policies":[{}]}}"#, many.join(","));
        assert_eq!(
            SessionState::parse(body.as_bytes()).unwrap_err().field,
            "apply_policies"
        );
    }
}
