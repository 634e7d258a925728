//! Counters for `/metrics` and tests.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Idp, IdpError, What, Why, lock};

/// Warnings a provider can cause are logged at most this often (further ones are counted).
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct IdpStats {
    pub fetch_ok: AtomicU64,
    pub fetch_timeout: AtomicU64,
    pub fetch_connect: AtomicU64,
    pub fetch_server_error: AtomicU64,
    pub fetch_refused: AtomicU64,
    pub fetch_too_large: AtomicU64,
    pub fetch_breaker_open: AtomicU64,
    pub fetch_busy: AtomicU64,
    pub fetch_other: AtomicU64,
    pub breaker_opens: AtomicU64,
    /// Refetches of a fresh set because a token named a `kid` it lacks.
    pub jwks_kid_refetches: AtomicU64,
    /// Unknown `kid`s not refetched because the URL was fetched within the interval.
    pub jwks_refetches_refused: AtomicU64,
    /// Fetched sets that did not parse (or held no usable key); the last good set was kept.
    pub jwks_parse_failures: AtomicU64,
    /// Answers from a set past its TTL because its provider is failing.
    pub jwks_stale_served: AtomicU64,
    pub jwks_flushes: AtomicU64,
    pub discovery_mismatches: AtomicU64,
    pub introspection_local_hits: AtomicU64,
    pub introspection_redis_hits: AtomicU64,
    pub introspection_misses: AtomicU64,
    pub introspection_calls: AtomicU64,
    pub introspection_inactive: AtomicU64,
    pub introspection_redis_refused: AtomicU64,
    /// Callers answered by a concurrent caller's call (any of the three kinds).
    pub shared_calls: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl IdpStats {
    pub(super) fn fetched<T>(&self, answer: Result<T, IdpError>) -> Result<T, IdpError> {
        bump(match &answer {
            Ok(_) => &self.fetch_ok,
            Err(IdpError::Unavailable(Why::Timeout)) => &self.fetch_timeout,
            Err(IdpError::Unavailable(Why::Connect | Why::Tls)) => &self.fetch_connect,
            Err(IdpError::Unavailable(Why::ServerError(_))) => &self.fetch_server_error,
            Err(IdpError::Unavailable(Why::BreakerOpen)) => &self.fetch_breaker_open,
            Err(IdpError::Unavailable(Why::Busy)) => &self.fetch_busy,
            Err(IdpError::Refused(_)) => &self.fetch_refused,
            Err(IdpError::BadResponse(What::TooLarge)) => &self.fetch_too_large,
            Err(_) => &self.fetch_other,
        });
        answer
    }

    pub(super) fn bump(&self, c: &AtomicU64) {
        bump(c);
    }

    /// Whether a warning may be logged now.
    pub(super) fn may_log(&self) -> bool {
        let mut last = lock(&self.last_log);
        if last.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            *last = Some(Instant::now());
            return true;
        }
        false
    }

    pub(super) fn note_breaker_open(&self, host: &str) {
        bump(&self.breaker_opens);
        // Once per host and open period at most: not a flood.
        tracing::warn!(
            host,
            "identity provider failing; calls to it fail at once until a trial call succeeds"
        );
    }
}

impl Idp {
    /// Prometheus text for the identity-provider clients.
    pub fn render(&self, out: &mut String) {
        let s = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(&str, u64)]| {
            let _ = writeln!(
                out,
                "# HELP portcullis_gateway_{name} {help}\n# TYPE portcullis_gateway_{name} {kind}"
            );
            for (labels, v) in lines {
                let _ = writeln!(out, "portcullis_gateway_{name}{labels} {v}");
            }
        };
        metric(
            "idp_fetches_total",
            "counter",
            "Calls to identity providers (JWKS, discovery, introspection) by outcome.",
            &[
                ("{outcome=\"ok\"}", n(&s.fetch_ok)),
                ("{outcome=\"timeout\"}", n(&s.fetch_timeout)),
                ("{outcome=\"connect_error\"}", n(&s.fetch_connect)),
                ("{outcome=\"server_error\"}", n(&s.fetch_server_error)),
                ("{outcome=\"refused\"}", n(&s.fetch_refused)),
                ("{outcome=\"too_large\"}", n(&s.fetch_too_large)),
                ("{outcome=\"breaker_open\"}", n(&s.fetch_breaker_open)),
                ("{outcome=\"busy\"}", n(&s.fetch_busy)),
                ("{outcome=\"other\"}", n(&s.fetch_other)),
            ],
        );
        metric(
            "idp_breaker_opens_total",
            "counter",
            "Times a provider host's circuit breaker opened.",
            &[("", n(&s.breaker_opens))],
        );
        metric(
            "idp_shared_calls_total",
            "counter",
            "Callers answered by a concurrent call for the same URL or token.",
            &[("", n(&s.shared_calls))],
        );
        let cached = u64::try_from(self.jwks_cached()).unwrap_or(u64::MAX);
        metric(
            "jwks_cached_sets",
            "gauge",
            "JWK sets held (fresh or stale).",
            &[("", cached)],
        );
        metric(
            "jwks_kid_refetches_total",
            "counter",
            "JWK sets refetched before their TTL because a token named an unknown kid.",
            &[("", n(&s.jwks_kid_refetches))],
        );
        metric(
            "jwks_refetches_refused_total",
            "counter",
            "Unknown kids not refetched because the URL was fetched within the refetch interval.",
            &[("", n(&s.jwks_refetches_refused))],
        );
        metric(
            "jwks_parse_failures_total",
            "counter",
            "Fetched JWK sets that did not parse or held no usable key (the last good set is kept).",
            &[("", n(&s.jwks_parse_failures))],
        );
        metric(
            "jwks_stale_served_total",
            "counter",
            "JWK sets served past their TTL because the provider is failing.",
            &[("", n(&s.jwks_stale_served))],
        );
        metric(
            "jwks_flushes_total",
            "counter",
            "JWKS cache flushes (DELETE /tyk/cache/jwks).",
            &[("", n(&s.jwks_flushes))],
        );
        metric(
            "oidc_discovery_issuer_mismatches_total",
            "counter",
            "Discovery documents refused because they name another issuer.",
            &[("", n(&s.discovery_mismatches))],
        );
        metric(
            "introspection_cache_total",
            "counter",
            "Introspection lookups of cacheable tokens by where they were answered.",
            &[
                ("{result=\"local_hit\"}", n(&s.introspection_local_hits)),
                ("{result=\"redis_hit\"}", n(&s.introspection_redis_hits)),
                ("{result=\"miss\"}", n(&s.introspection_misses)),
            ],
        );
        metric(
            "introspection_calls_total",
            "counter",
            "Introspection requests sent to providers.",
            &[("", n(&s.introspection_calls))],
        );
        metric(
            "introspection_inactive_total",
            "counter",
            "Tokens introspection reported inactive or expired.",
            &[("", n(&s.introspection_inactive))],
        );
        metric(
            "introspection_redis_refused_total",
            "counter",
            "Introspection records in Redis refused (not sealed by this deployment, tampered, expired).",
            &[("", n(&s.introspection_redis_refused))],
        );
    }
}
