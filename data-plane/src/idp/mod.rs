//! Clients for identity providers: JWK sets (cached, refetched on an unknown `kid`), OpenID
//! discovery and RFC 7662 introspection, each with timeouts, size limits and a circuit breaker.
//! A provider that is down or answers garbage never hangs a request and never replaces the last
//! good key set (docs/security.md).
//!
//! Every store here is bounded: the JWK sets and discovery documents by URL (LRU), the
//! introspection answers by token (LRU, and a TTL never past the token's `exp`), the breakers by
//! host, and concurrent callers of one URL or token share a single call.

mod breaker;
mod discovery;
mod error;
mod fetch;
mod flight;
mod introspection;
mod jwks;
pub(crate) mod record;
mod stats;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hashlink::LruCache;
use portcullis_proto::envelope::EnvelopeKey;
use serde_json::{Map, Value};

pub use error::{IdpError, What, Why};
pub use introspection::Introspection;
pub use record::LABEL as INTROSPECTION_LABEL;
pub use stats::IdpStats;

use crate::jose::KeySet;
use crate::redis_link::RedisLink;

/// Limits and timings of every call to an identity provider.
#[derive(Debug, Clone)]
pub struct IdpConfig {
    /// The whole call: connect, TLS, request, status and body.
    pub fetch_timeout: Duration,
    /// A body longer than this is refused (reading stops there).
    pub max_body: usize,
    /// How long a fetched JWK set is used before it is fetched again (Tyk's JWKS cache time).
    pub jwks_ttl: Duration,
    /// A token with an unknown `kid` refetches its URL at most once per this interval.
    pub jwks_refetch_interval: Duration,
    /// A set older than this is no longer served while its provider is failing.
    pub jwks_max_stale: Duration,
    /// Consecutive outages of one host that open its circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker fails calls at once before one trial call.
    pub breaker_open: Duration,
    /// CAs trusted for provider HTTPS besides the web PKI roots.
    pub extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
}

impl Default for IdpConfig {
    fn default() -> Self {
        Self {
            fetch_timeout: Duration::from_secs(5),
            max_body: 1024 * 1024,
            jwks_ttl: Duration::from_secs(240),
            jwks_refetch_interval: Duration::from_secs(10),
            jwks_max_stale: Duration::from_secs(24 * 3600),
            breaker_failures: 5,
            breaker_open: Duration::from_secs(30),
            extra_roots: Vec::new(),
        }
    }
}

type Claims = Arc<Map<String, Value>>;

/// Gateway-wide identity-provider state; one per gateway, shared by every route.
pub struct Idp {
    cfg: IdpConfig,
    fetcher: fetch::Fetcher,
    breakers: breaker::Breakers,
    jwks: Mutex<LruCache<String, jwks::Entry>>,
    jwks_flights: flight::Flights<Result<Arc<KeySet>, IdpError>>,
    discovery: Mutex<LruCache<String, discovery::Entry>>,
    discovery_flights: flight::Flights<Result<Arc<str>, IdpError>>,
    introspected: Mutex<LruCache<String, introspection::Cached>>,
    introspection_flights: flight::Flights<Result<Claims, IdpError>>,
    redis: OnceLock<Arc<RedisLink>>,
    /// Seals introspection answers in Redis; without it Redis is not used for them.
    seal: OnceLock<EnvelopeKey>,
    pub stats: IdpStats,
}

impl std::fmt::Debug for Idp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idp")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Default for Idp {
    fn default() -> Self {
        Self::build(IdpConfig::default())
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Idp {
    pub fn new(cfg: IdpConfig) -> Arc<Self> {
        Arc::new(Self::build(cfg))
    }

    /// Changes at every JWKS flush: tokens verified before it are verified again.
    pub fn jwks_generation(&self) -> u64 {
        self.stats
            .jwks_flushes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn build(cfg: IdpConfig) -> Self {
        Self {
            fetcher: fetch::Fetcher::new(&cfg),
            breakers: breaker::Breakers::new(cfg.breaker_failures, cfg.breaker_open),
            jwks: Mutex::new(LruCache::new(jwks::URLS)),
            jwks_flights: flight::Flights::default(),
            discovery: Mutex::new(LruCache::new(discovery::ISSUERS)),
            discovery_flights: flight::Flights::default(),
            introspected: Mutex::new(LruCache::new(introspection::ENTRIES)),
            introspection_flights: flight::Flights::default(),
            redis: OnceLock::new(),
            seal: OnceLock::new(),
            stats: IdpStats::default(),
            cfg,
        }
    }

    pub fn config(&self) -> &IdpConfig {
        &self.cfg
    }

    /// Uses `link` as the regional store of introspection answers from now on.
    pub fn set_redis(&self, link: Arc<RedisLink>) {
        let _ = self.redis.set(link);
    }

    /// Derives the key that seals introspection answers in Redis from the shared secret.
    pub fn set_secret(&self, shared_secret: &str) {
        let _ = self.seal.set(record::key(shared_secret));
    }

    /// How long a caller may wait on a call another caller makes: the call is bounded by the
    /// fetch timeout, this only covers a leader that went away and a waiter that took over.
    fn wait_bound(&self) -> Duration {
        self.cfg.fetch_timeout + fetch::BUSY_WAIT + 2 * introspection::REDIS_TIMEOUT
    }
}
