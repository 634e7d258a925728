//! Rate limits and quotas (docs/limits.md). The gateway's `--rate-limiter` picks how the rate
//! limit is counted; quotas are always counted in the regional Redis.
//!
//! * `gcra` (the default): the generic cell rate algorithm in Redis, one key per counter
//!   holding the theoretical arrival time. From an idle key `rate` requests pass at once, then
//!   one every `per / rate` seconds. O(1) in time and memory per key, atomic across every
//!   gateway of the region.
//! * `sliding-log`: Tyk's default limiter. At most `rate` requests are admitted in any
//!   `per`-second window, one sorted-set entry per admitted request.
//! * `local`: the same GCRA in each gateway's memory, without a Redis round trip for the rate;
//!   like Tyk's DRL, every gateway enforces the full rate, so N gateways admit up to N times it.
//!   With `--quota-lease N` its quotas are reserved up to N requests at a time (`lease.rs`),
//!   so a busy key costs no Redis round trip either.
//!
//! Rules that hold whatever the limiter:
//! * A request refused by the rate limit consumes no quota. A request refused by the quota
//!   gives its rate-limit slot back.
//! * The quota is a counter that lives `quota_renewal_rate` seconds from the first request of
//!   the period; with a Redis limiter it is counted in the same script call as the rate, so a
//!   request costs ONE round trip. Leased or not, the region never admits more than an unchanged quota.
//! * Counters are per region (one Redis per region), per key, or per key and API when the key's
//!   access right for the API carries its own `limit`.
//! * Without Redis (none configured, or no answer within 250 ms) what Redis would count is not
//!   enforced and the request passes: a Redis outage must not take the APIs down.
//!   `/metrics` counts these requests (`portcullis_gateway_limits_unenforced_total`).

mod gcra;
mod lease;
mod local;
mod log;
mod script;
mod shards;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::redis_link::RedisLink;
use crate::sessions::Sessions;

pub use gcra::Cell;
pub use lease::MAX_LEASE;

/// Longest rate-limit window: ten years, in ms.
const MAX_WINDOW_MS: u64 = 10 * 365 * 86_400_000;

/// The limits that apply to one request, after policies.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub rate: f64,
    pub per: f64,
    /// `<= 0`: no quota (-1 is Tyk's "unlimited").
    pub quota_max: i64,
    pub quota_renewal_rate: i64,
    /// Counter identity: the key hash, plus the API id for per-API limits.
    pub scope: String,
}

impl Limits {
    fn rate_enabled(&self) -> bool {
        self.rate > 0.0 && self.per > 0.0
    }

    /// (requests, window in ms). A fractional rate such as 0.5 per second becomes 1 per 2
    /// seconds; other rates count whole requests.
    pub fn window(&self) -> (u64, u64) {
        if !self.rate_enabled() {
            return (0, 0);
        }
        // Float-to-int casts saturate; the clamp keeps PEXPIRE within what Redis accepts even for
        // values that slipped past validation.
        let ms = |secs: f64| ((secs * 1000.0) as u64).clamp(1, MAX_WINDOW_MS);
        if self.rate < 1.0 {
            return (1, ms(self.per / self.rate));
        }
        (self.rate.floor() as u64, ms(self.per))
    }

    pub fn is_unlimited(&self) -> bool {
        !self.rate_enabled() && self.quota_max <= 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the limit is back to full (admitted) or until the next request would be
    /// admitted (refused).
    pub reset_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed(Option<RateInfo>),
    RateExceeded(RateInfo),
    QuotaExceeded,
}

/// `--rate-limiter`: how the rate limit is counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RateLimiterKind {
    /// GCRA in the regional Redis: O(1), exact across the region's gateways.
    #[default]
    Gcra,
    /// Tyk's sliding log in the regional Redis: exact over any window, one entry per request.
    SlidingLog,
    /// GCRA in this gateway's memory: no Redis round trip for the rate; each gateway enforces
    /// the full rate on its own.
    Local,
}

enum Algorithm {
    Gcra(gcra::RedisGcra),
    SlidingLog(log::SlidingLog),
    Local(local::LocalGcra),
}

pub struct Limiter {
    algorithm: Algorithm,
}

/// Requests let through because Redis could not count them, by every limiter of the process
/// (`/metrics`: `portcullis_gateway_limits_unenforced_total`).
static UNENFORCED: AtomicU64 = AtomicU64::new(0);

/// The limiter's counter, in Prometheus text.
pub fn render(out: &mut String) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "# HELP portcullis_gateway_limits_unenforced_total Requests let through unlimited because Redis could not count them.\n\
         # TYPE portcullis_gateway_limits_unenforced_total counter\nportcullis_gateway_limits_unenforced_total {}\n",
        UNENFORCED.load(Ordering::Relaxed)
    );
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(RateLimiterKind::default())
    }
}

/// Why Redis did not decide a request.
enum Unanswered {
    NoLink,
    Down(Arc<RedisLink>),
    Failed(Arc<RedisLink>, redis::RedisError),
    TimedOut(Arc<RedisLink>),
}

impl Limiter {
    pub fn new(kind: RateLimiterKind) -> Self {
        Self::with_quota_lease(kind, 0)
    }

    /// `quota_lease` > 0 (only with [`RateLimiterKind::Local`]; the CLI refuses it with the
    /// others, whose script counts the quota in the rate's round trip anyway): quotas reserved
    /// up to that many requests at a time.
    pub fn with_quota_lease(kind: RateLimiterKind, quota_lease: u32) -> Self {
        let algorithm = match kind {
            RateLimiterKind::Gcra => Algorithm::Gcra(gcra::RedisGcra::default()),
            RateLimiterKind::SlidingLog => Algorithm::SlidingLog(log::SlidingLog::default()),
            RateLimiterKind::Local if quota_lease > 0 => {
                Algorithm::Local(local::LocalGcra::default().with_quota_lease(quota_lease))
            }
            RateLimiterKind::Local => Algorithm::Local(local::LocalGcra::default()),
        };
        Self { algorithm }
    }

    pub fn kind(&self) -> RateLimiterKind {
        match self.algorithm {
            Algorithm::Gcra(_) => RateLimiterKind::Gcra,
            Algorithm::SlidingLog(_) => RateLimiterKind::SlidingLog,
            Algorithm::Local(_) => RateLimiterKind::Local,
        }
    }

    /// Requests let through because Redis could not count them.
    pub fn unenforced(&self) -> u64 {
        UNENFORCED.load(Ordering::Relaxed)
    }

    pub async fn check(&self, sessions: &Sessions, limits: &Limits) -> Decision {
        if limits.is_unlimited() {
            return Decision::Allowed(None);
        }
        let redis = sessions.redis();
        let answer = match &self.algorithm {
            Algorithm::Gcra(g) => g.check(redis, limits).await,
            Algorithm::SlidingLog(l) => l.check(redis, limits).await,
            Algorithm::Local(l) => l.check(redis, limits).await,
        };
        match answer {
            Ok(decision) => decision,
            Err((unanswered, fallback)) => {
                self.not_enforced(unanswered);
                fallback
            }
        }
    }

    fn not_enforced(&self, why: Unanswered) {
        UNENFORCED.fetch_add(1, Ordering::Relaxed);
        match why {
            Unanswered::NoLink => {}
            Unanswered::Down(link) => link.failed(),
            Unanswered::Failed(link, e) => {
                if crate::redis_link::needs_new_connection(&e) {
                    link.failed();
                }
                tracing::warn!(error = %e, "rate limit and quota not enforced: Redis failed");
            }
            Unanswered::TimedOut(link) => {
                link.failed();
                tracing::warn!("rate limit and quota not enforced: Redis did not answer in time");
            }
        }
    }
}

/// What an algorithm answers: a decision, or why Redis could not count the request and what
/// the request gets instead (pass, unless an in-process limit refused it).
type Outcome = Result<Decision, (Unanswered, Decision)>;

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn limits(rate: f64, per: f64) -> Limits {
        Limits {
            rate,
            per,
            quota_max: -1,
            quota_renewal_rate: 0,
            scope: "s".into(),
        }
    }

    #[test]
    fn fractional_rates_become_one_request_per_longer_window() {
        assert_eq!(limits(0.5, 1.0).window(), (1, 2000));
        assert_eq!(limits(10.0, 60.0).window(), (10, 60_000));
        assert_eq!(limits(2.7, 1.0).window(), (2, 1000));
        assert_eq!(limits(0.0, 1.0).window(), (0, 0));
        assert_eq!(limits(-1.0, 1.0).window(), (0, 0), "-1 is unlimited");
        assert!(limits(-1.0, 1.0).is_unlimited());
    }

    #[test]
    fn the_default_limiter_is_gcra() {
        assert_eq!(Limiter::default().kind(), RateLimiterKind::Gcra);
        assert_eq!(
            Limiter::new(RateLimiterKind::Local).kind(),
            RateLimiterKind::Local
        );
    }
}
