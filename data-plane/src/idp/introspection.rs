//! OAuth 2.0 Token Introspection (RFC 7662), as Tyk's external OAuth uses it: the token and the
//! client credentials are posted as a form, the answer must be a JSON object with
//! `"active": true` and, when it has an `exp`, one in the future.
//!
//! Answers are cached when the API asks for it, in-process and in the regional Redis (sealed,
//! see `record`), for at most the API's cache time, at most an hour, and never past the token's
//! `exp`; every hit checks `exp` again. The cache key hashes the endpoint and client id with the
//! token, so a token active at one provider is not taken as active by an API of another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::record::{self, Refusal};
use super::{Claims, Idp, IdpError, What, Why, lock};

/// Cached introspection answers in one edge.
pub(super) const ENTRIES: usize = 10_000;
/// A Redis call slower than this counts as an outage for this request (as for sessions).
pub(super) const REDIS_TIMEOUT: Duration = crate::redis_link::CALL_TIMEOUT;
/// The longest an answer is cached, whatever the API asks (`0` is Tyk's "no TTL").
pub const MAX_CACHE: Duration = Duration::from_secs(3600);
/// Longer tokens are not sent to a provider.
pub const MAX_TOKEN: usize = 16 * 1024;

/// An introspection endpoint and how long its answers are cached.
#[derive(Clone, PartialEq, Eq)]
pub struct Introspection {
    pub url: String,
    pub client_id: String,
    pub client_secret: String,
    /// `None`: every token is introspected. `Some(0)`: cached until `exp`, at most
    /// [`MAX_CACHE`]. `Some(t)`: at most `t` (and [`MAX_CACHE`], and `exp`).
    pub cache: Option<Duration>,
}

impl std::fmt::Debug for Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspection")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"..")
            .field("cache", &self.cache)
            .finish()
    }
}

impl Introspection {
    /// How long an answer may be cached, before `exp` is considered.
    fn cache_bound(&self) -> Option<Duration> {
        self.cache.map(|t| {
            if t.is_zero() {
                MAX_CACHE
            } else {
                t.min(MAX_CACHE)
            }
        })
    }

    pub(super) fn cache_key(&self, token: &str) -> String {
        let mut h = Sha256::new();
        for part in [&self.url, &self.client_id] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(token.as_bytes());
        hex::encode(h.finalize())
    }
}

pub(super) struct Cached {
    claims: Claims,
    stored: Instant,
    until: Instant,
    exp: Option<i64>,
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(super) fn redis_key(prefix: &str, hash: &str) -> String {
    format!("{prefix}introspection:{hash}")
}

/// The claims of an answer for an active, unexpired token, and its `exp`.
fn check(value: Value, now: i64) -> Result<(Map<String, Value>, Option<i64>), IdpError> {
    let Value::Object(claims) = value else {
        return Err(IdpError::BadResponse(What::NotJson));
    };
    if claims.get("active") != Some(&Value::Bool(true)) {
        return Err(IdpError::Inactive);
    }
    let exp = match claims.get("exp") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(e) => Some(e),
            // A fractional NumericDate; `as` saturates, which errs on the expired side for NaN.
            None => n.as_f64().map(|f| f.floor() as i64),
        },
        Some(_) => return Err(IdpError::BadResponse(What::Field("exp"))),
    };
    if exp.is_some_and(|e| e <= now) {
        return Err(IdpError::Inactive);
    }
    Ok((claims, exp))
}

/// How long an answer may be kept: the API's bound, and never past `exp`; `None` when not at all.
fn ttl(bound: Duration, exp: Option<i64>, now: i64) -> Option<Duration> {
    let ttl = match exp {
        Some(e) => bound.min(Duration::from_secs(
            u64::try_from(e.saturating_sub(now)).ok()?,
        )),
        None => bound,
    };
    (ttl >= Duration::from_secs(1)).then_some(ttl)
}

impl Idp {
    /// The claims of `token` as the endpoint `ep` of `api_id` reports them, when it is active.
    pub async fn introspect(
        &self,
        api_id: &str,
        ep: &Introspection,
        token: &str,
    ) -> Result<Claims, IdpError> {
        if token.is_empty() || token.len() > MAX_TOKEN {
            self.stats.bump(&self.stats.introspection_inactive);
            return Err(IdpError::Inactive);
        }
        let hash = ep.cache_key(token);
        let bound = ep.cache_bound();
        if let Some(bound) = bound
            && let Some(claims) = self.cached_answer(&hash, bound)
        {
            self.stats.bump(&self.stats.introspection_local_hits);
            return Ok(claims);
        }
        let flight = self.introspection_flights.run(&hash, || {
            self.introspect_uncached(api_id, ep, token, &hash, bound)
        });
        match tokio::time::timeout(self.wait_bound(), flight).await {
            Ok((answer, led)) => {
                if !led {
                    self.stats.bump(&self.stats.shared_calls);
                }
                answer
            }
            Err(_) => Err(IdpError::Unavailable(Why::Timeout)),
        }
    }

    fn cached_answer(&self, hash: &str, bound: Duration) -> Option<Claims> {
        let mut cache = lock(&self.introspected);
        let c = cache.get(hash)?;
        let now = now_unix();
        if c.until > Instant::now() && c.stored.elapsed() < bound && c.exp.is_none_or(|e| e > now) {
            return Some(c.claims.clone());
        }
        if c.until <= Instant::now() || c.exp.is_some_and(|e| e <= now) {
            cache.remove(hash);
        }
        None
    }

    fn remember(
        &self,
        hash: &str,
        claims: &Claims,
        stored: Instant,
        ttl: Duration,
        exp: Option<i64>,
    ) {
        lock(&self.introspected).insert(
            hash.to_owned(),
            Cached {
                claims: claims.clone(),
                stored,
                until: stored + ttl,
                exp,
            },
        );
    }

    async fn introspect_uncached(
        &self,
        api_id: &str,
        ep: &Introspection,
        token: &str,
        hash: &str,
        bound: Option<Duration>,
    ) -> Result<Claims, IdpError> {
        if let Some(bound) = bound {
            if let Some(claims) = self.read_redis(api_id, hash, bound).await {
                self.stats.bump(&self.stats.introspection_redis_hits);
                return Ok(claims);
            }
            self.stats.bump(&self.stats.introspection_misses);
        }
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("client_id", &ep.client_id)
            .append_pair("client_secret", &ep.client_secret)
            .finish();
        self.stats.bump(&self.stats.introspection_calls);
        let body = self.post_form(&ep.url, form).await?;
        let value: Value =
            serde_json::from_slice(&body).map_err(|_| IdpError::BadResponse(What::NotJson))?;
        let now = now_unix();
        let (claims, exp) = match check(value, now) {
            Ok(ok) => ok,
            Err(e) => {
                if e == IdpError::Inactive {
                    self.stats.bump(&self.stats.introspection_inactive);
                }
                return Err(e);
            }
        };
        let claims = Arc::new(claims);
        if let Some(ttl) = bound.and_then(|b| ttl(b, exp, now)) {
            self.remember(hash, &claims, Instant::now(), ttl, exp);
            self.write_redis(hash, &claims, now, ttl).await;
        }
        Ok(claims)
    }

    async fn read_redis(&self, api_id: &str, hash: &str, bound: Duration) -> Option<Claims> {
        let link = self.redis.get()?;
        let key = self.seal.get()?;
        let raw = link.get_bytes(&redis_key(link.prefix(), hash)).await?;
        let now = now_unix();
        let opened = record::open(key, hash, &raw, now).and_then(|(sealed_at, until, json)| {
            let value = serde_json::from_slice(&json).map_err(|_| Refusal::Tampered)?;
            let (claims, exp) = check(value, now).map_err(|_| Refusal::Expired)?;
            Ok((sealed_at, until, claims, exp))
        });
        let (sealed_at, until, claims, exp) = match opened {
            Ok(ok) => ok,
            Err(refusal) => {
                self.stats.bump(&self.stats.introspection_redis_refused);
                if refusal != Refusal::Expired && self.stats.may_log() {
                    tracing::warn!(
                        api_id,
                        "refused an introspection record from Redis (not sealed by a gateway of this deployment); asking the provider"
                    );
                }
                return None;
            }
        };
        // This API may cache for less time than the one that stored the answer.
        let age = Duration::from_secs(u64::try_from(now.saturating_sub(sealed_at)).unwrap_or(0));
        if age >= bound {
            return None;
        }
        let left = Duration::from_secs(u64::try_from(until.saturating_sub(now)).unwrap_or(0))
            .min(bound.saturating_sub(age));
        let claims = Arc::new(claims);
        if !left.is_zero() {
            self.remember(hash, &claims, Instant::now(), left, exp);
        }
        Some(claims)
    }

    async fn write_redis(&self, hash: &str, claims: &Map<String, Value>, now: i64, ttl: Duration) {
        let (Some(link), Some(key)) = (self.redis.get(), self.seal.get()) else {
            return;
        };
        let Ok(json) = serde_json::to_vec(claims) else {
            return;
        };
        let secs = ttl.as_secs().max(1);
        let until = now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX));
        let record = record::seal(key, hash, now, until, &json);
        link.set_ex(&redis_key(link.prefix(), hash), &record, secs)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_never_passes_exp_nor_the_bound() {
        let h = Duration::from_secs(3600);
        assert_eq!(ttl(h, None, 100), Some(h));
        assert_eq!(ttl(h, Some(160), 100), Some(Duration::from_secs(60)));
        assert_eq!(
            ttl(Duration::from_secs(10), Some(160), 100),
            Some(Duration::from_secs(10))
        );
        assert_eq!(ttl(h, Some(100), 100), None);
        assert_eq!(ttl(h, Some(50), 100), None);
        let ep = |cache| Introspection {
            url: "http://idp/introspect".into(),
            client_id: "c".into(),
            client_secret: "s".into(),
            cache,
        };
        assert_eq!(ep(None).cache_bound(), None);
        assert_eq!(ep(Some(Duration::ZERO)).cache_bound(), Some(MAX_CACHE));
        assert_eq!(
            ep(Some(Duration::from_secs(99_999))).cache_bound(),
            Some(MAX_CACHE)
        );
        assert_eq!(
            ep(Some(Duration::from_secs(5))).cache_bound(),
            Some(Duration::from_secs(5))
        );
        assert!(!format!("{:?}", ep(None)).contains("\"s\""));
        let mut other = ep(None);
        other.url = "http://other/introspect".into();
        assert_ne!(ep(None).cache_key("t"), other.cache_key("t"));
    }

    #[test]
    fn only_active_unexpired_answers_pass() {
        let now = 1000;
        let ok = |v: Value| check(v, now);
        assert!(ok(serde_json::json!({"active": true})).is_ok());
        assert_eq!(
            ok(serde_json::json!({"active": true, "exp": 1001}))
                .unwrap()
                .1,
            Some(1001)
        );
        assert_eq!(
            ok(serde_json::json!({"active": true, "exp": 1000.5})).unwrap_err(),
            IdpError::Inactive
        );
        assert_eq!(
            ok(serde_json::json!({"active": true, "exp": 999})).unwrap_err(),
            IdpError::Inactive
        );
        assert_eq!(
            ok(serde_json::json!({"active": "true"})).unwrap_err(),
            IdpError::Inactive
        );
        assert_eq!(
            ok(serde_json::json!({"active": false})).unwrap_err(),
            IdpError::Inactive
        );
        assert_eq!(ok(serde_json::json!({})).unwrap_err(), IdpError::Inactive);
        assert_eq!(
            ok(serde_json::json!({"active": true, "exp": "soon"})).unwrap_err(),
            IdpError::BadResponse(What::Field("exp"))
        );
        assert_eq!(
            ok(serde_json::json!([true])).unwrap_err(),
            IdpError::BadResponse(What::NotJson)
        );
    }
}
