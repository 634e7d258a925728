//! Rate limits and quotas, counted in the regional Redis with one script call per request.
//!
//! * Rate limit: a sliding log (Tyk's default limiter). At most `rate` requests are admitted in
//!   any `per`-second window; the script counts and admits atomically, so concurrent requests on
//!   every gateway of the region never over-admit.
//! * Quota: a counter that lives `quota_renewal_rate` seconds from the first request of the
//!   period. A request refused by the quota gives its rate-limit slot back; a request refused by
//!   the rate limit does not consume quota.
//! * Counters are per region (one Redis per region), per key, or per key and API when the key's
//!   access right for the API carries its own `limit`.
//! * Without Redis (none configured, or unreachable within 250 ms) limits are not enforced and
//!   the request passes: a Redis outage must not take the APIs down. `/metrics` counts these.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Script;

use crate::sessions::Sessions;

const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest sliding-log window: ten years, in ms.
const MAX_WINDOW_MS: u64 = 10 * 365 * 86_400_000;

/// (rate admitted, rate remaining, ms until a slot frees, quota admitted, quota remaining).
type ScriptAnswer = (i64, i64, i64, i64, i64);

const SCRIPT: &str = r"
local allowed_rate, remaining, reset_ms = 1, -1, 0
local rate = tonumber(ARGV[3])
local now = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
if rate > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - per)
  local n = redis.call('ZCARD', KEYS[1])
  if n >= rate then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, 0, math.max(0, tonumber(oldest[2]) + per - now), 1, -1}
  end
  redis.call('ZADD', KEYS[1], now, ARGV[6])
  redis.call('PEXPIRE', KEYS[1], per)
  remaining = rate - n - 1
  reset_ms = per
end
local qmax = tonumber(ARGV[4])
if qmax > 0 then
  local used = redis.call('INCR', KEYS[2])
  if used == 1 and tonumber(ARGV[5]) > 0 then
    redis.call('EXPIRE', KEYS[2], ARGV[5])
  end
  if used > qmax then
    redis.call('DECR', KEYS[2])
    if rate > 0 then redis.call('ZREM', KEYS[1], ARGV[6]) end
    return {1, remaining, reset_ms, 0, 0}
  end
  return {1, remaining, reset_ms, 1, qmax - used}
end
return {1, remaining, reset_ms, 1, -1}
";

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

    /// (requests, window in ms) for the sliding log. A fractional rate such as 0.5 per second
    /// becomes 1 per 2 seconds; other rates count whole requests.
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
    /// Seconds until a slot frees up.
    pub reset_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed(Option<RateInfo>),
    RateExceeded(RateInfo),
    QuotaExceeded,
}

pub struct Limiter {
    script: Script,
    unenforced: AtomicU64,
}

impl Default for Limiter {
    fn default() -> Self {
        Self {
            script: Script::new(SCRIPT),
            unenforced: AtomicU64::new(0),
        }
    }
}

impl Limiter {
    /// Requests let through because Redis could not count them.
    pub fn unenforced(&self) -> u64 {
        self.unenforced.load(Ordering::Relaxed)
    }

    pub async fn check(&self, sessions: &Sessions, limits: &Limits) -> Decision {
        if limits.is_unlimited() {
            return Decision::Allowed(None);
        }
        let Some(link) = sessions.redis() else {
            self.unenforced.fetch_add(1, Ordering::Relaxed);
            return Decision::Allowed(None);
        };
        let Some(mut conn) = link.conn() else {
            self.unenforced.fetch_add(1, Ordering::Relaxed);
            link.failed();
            return Decision::Allowed(None);
        };
        let prefix = link.prefix();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let (rate, per_ms) = limits.window();
        let member = format!("{now_ms}-{}", rand::random::<u64>());
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("{prefix}rl:{}", limits.scope))
            .key(format!("{prefix}quota:{}", limits.scope))
            .arg(now_ms)
            .arg(per_ms)
            .arg(rate)
            .arg(limits.quota_max)
            .arg(limits.quota_renewal_rate)
            .arg(member);
        let answer: Result<redis::RedisResult<ScriptAnswer>, _> =
            tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async(&mut conn)).await;
        let (rate_ok, remaining, reset_ms, quota_ok, _quota_left) = match answer {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                self.unenforced.fetch_add(1, Ordering::Relaxed);
                link.failed();
                tracing::warn!(error = %e, "rate limit and quota not enforced: Redis failed");
                return Decision::Allowed(None);
            }
            Err(_) => {
                self.unenforced.fetch_add(1, Ordering::Relaxed);
                link.failed();
                tracing::warn!("rate limit and quota not enforced: Redis did not answer in time");
                return Decision::Allowed(None);
            }
        };
        // Counters are plain numbers in Redis (a script must update them atomically, so they are
        // not sealed): whoever can write there can lift or exhaust a limit, but the headers
        // never claim more than the window allows.
        let info = RateInfo {
            limit: rate,
            remaining: u64::try_from(remaining).unwrap_or(0).min(rate),
            reset_secs: u64::try_from(reset_ms)
                .unwrap_or(0)
                .min(per_ms)
                .div_ceil(1000),
        };
        if rate_ok == 0 {
            return Decision::RateExceeded(info);
        }
        if quota_ok == 0 {
            return Decision::QuotaExceeded;
        }
        Decision::Allowed((rate > 0).then_some(info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: f64, per: f64) -> Limits {
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
}
