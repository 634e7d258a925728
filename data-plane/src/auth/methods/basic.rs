//! Basic auth: `Authorization: Basic base64(user:password)`. The user name is the key; the
//! password is checked against the session's bcrypt hash. Verified results are cached for
//! `basic_auth.cache_ttl` seconds, keyed by the stored hash *and* a digest of the presented
//! password, so a wrong password never hits a cached success and a password change on the
//! control plane invalidates the cache at once.
//!
//! bcrypt is slow on purpose, so two things keep it off the request path: concurrent
//! verifications of the same user and password share one bcrypt run, and a cached success is
//! re-verified in the background once it is half its TTL old, so a busy user never waits for it.
//!
//! A flood of wrong passwords for a known user would still start one bcrypt run each, so at
//! most one run per core is in flight in the process; a check that waits more than
//! [`BCRYPT_WAIT`] for a slot is answered 503 (docs/security.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use http::HeaderValue;
use http::request::Parts;
use portcullis_proto::model::BasicAuthSpec;
use regex::Regex;
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore};

use super::AuthMethod;
use crate::auth::context::RequestContext;
use crate::auth::identity::{Identity, Provider};
use crate::error::ProxyError;
use crate::sessions::Session;

type CacheKey = [u8; 32];

/// The longest password bcrypt verifies in full.
const MAX_PASSWORD_BYTES: usize = 72;

/// How long a password check waits for a bcrypt slot before the request is answered 503.
const BCRYPT_WAIT: Duration = Duration::from_secs(1);

/// The process-wide bound on concurrent bcrypt runs, with counters for `/metrics`.
pub struct BcryptGate {
    slots: Arc<Semaphore>,
    pub size: usize,
    in_use: AtomicU64,
    /// The most runs ever in flight at once.
    pub peak: AtomicU64,
    pub runs: AtomicU64,
    /// Checks answered 503 because every slot stayed busy.
    pub refused: AtomicU64,
}

pub static BCRYPT: LazyLock<BcryptGate> = LazyLock::new(|| {
    let size = std::thread::available_parallelism().map_or(1, |n| n.get());
    BcryptGate {
        slots: Arc::new(Semaphore::new(size)),
        size,
        in_use: AtomicU64::new(0),
        peak: AtomicU64::new(0),
        runs: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    }
});

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Match,
    NoMatch,
    Busy,
}

impl BcryptGate {
    async fn verify(&'static self, password: String, stored: String) -> Verdict {
        let Ok(Ok(slot)) =
            tokio::time::timeout(BCRYPT_WAIT, self.slots.clone().acquire_owned()).await
        else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Verdict::Busy;
        };
        // The slot travels with the run: a caller that gives up does not free it early.
        let run = move || {
            let _slot = slot;
            let now = self.in_use.fetch_add(1, Ordering::AcqRel) + 1;
            self.peak.fetch_max(now, Ordering::AcqRel);
            self.runs.fetch_add(1, Ordering::Relaxed);
            let ok = bcrypt::verify(password, &stored).unwrap_or(false);
            self.in_use.fetch_sub(1, Ordering::AcqRel);
            ok
        };
        // Tens of milliseconds by design: never on the proxy's threads.
        match tokio::task::spawn_blocking(run).await {
            Ok(true) => Verdict::Match,
            _ => Verdict::NoMatch,
        }
    }

    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# HELP portcullis_gateway_bcrypt_slots bcrypt runs allowed at once (one per core).\n\
             # TYPE portcullis_gateway_bcrypt_slots gauge\nportcullis_gateway_bcrypt_slots {}\n\
             # HELP portcullis_gateway_bcrypt_in_flight_peak The most bcrypt runs ever in flight at once.\n\
             # TYPE portcullis_gateway_bcrypt_in_flight_peak gauge\nportcullis_gateway_bcrypt_in_flight_peak {}\n\
             # HELP portcullis_gateway_bcrypt_runs_total bcrypt verifications run.\n\
             # TYPE portcullis_gateway_bcrypt_runs_total counter\nportcullis_gateway_bcrypt_runs_total {}\n\
             # HELP portcullis_gateway_bcrypt_busy_total Password checks answered 503 because every bcrypt slot stayed busy.\n\
             # TYPE portcullis_gateway_bcrypt_busy_total counter\nportcullis_gateway_bcrypt_busy_total {}\n",
            self.size,
            n(&self.peak),
            n(&self.runs),
            n(&self.refused),
        );
    }
}

#[derive(Debug)]
pub struct BasicAuth {
    challenge: HeaderValue,
    cache_ttl: Option<Duration>,
    state: Arc<Verifications>,
    /// `extract_from_body`: user and password regexps (capture group 1 is the value).
    from_body: Option<(Regex, Regex)>,
}

/// Verified (user, password) pairs kept at most; the least recently used go first.
const VERIFIED_ENTRIES: usize = 100_000;

struct Verifications {
    verified: Mutex<hashlink::LruCache<CacheKey, Instant>>,
    in_flight: Mutex<HashMap<CacheKey, Arc<OnceCell<Verdict>>>>,
}

impl Default for Verifications {
    fn default() -> Self {
        Self {
            verified: Mutex::new(hashlink::LruCache::new(VERIFIED_ENTRIES)),
            in_flight: Mutex::default(),
        }
    }
}

impl std::fmt::Debug for Verifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifications(..)")
    }
}

impl Verifications {
    /// One bcrypt run per (stored hash, password) at a time; concurrent callers share it.
    async fn bcrypt_once(&self, key: CacheKey, password: String, stored: String) -> Verdict {
        let cell = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone();
        let ok = *cell.get_or_init(|| BCRYPT.verify(password, stored)).await;
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            map.remove(&key);
        }
        ok
    }

    fn age(&self, key: &CacheKey) -> Option<Duration> {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(Instant::elapsed)
    }

    fn remember(&self, key: CacheKey) {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, Instant::now());
    }

    fn forget(&self, key: &CacheKey) {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    fn refreshing(&self, key: &CacheKey) -> bool {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }
}

impl BasicAuth {
    /// `realm` is the API name, as in Tyk's `WWW-Authenticate: Basic realm="<api name>"`.
    pub fn new(realm: &str, spec: &BasicAuthSpec) -> Self {
        let (cache_ttl_secs, disable_caching) = (spec.cache_ttl, spec.disable_caching);
        // Validated when the definition was stored; an unusable pair disables body mode.
        let from_body = spec
            .extract_from_body
            .then(|| {
                Some((
                    Regex::new(&spec.body_user_regexp).ok()?,
                    Regex::new(&spec.body_password_regexp).ok()?,
                ))
            })
            .flatten();
        let realm: String = realm
            .chars()
            .filter(|c| *c != '"' && !c.is_control())
            .collect();
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
        let ttl = if cache_ttl_secs > 0 {
            cache_ttl_secs as u64
        } else {
            60
        };
        Self {
            challenge,
            cache_ttl: (!disable_caching).then(|| Duration::from_secs(ttl)),
            state: Arc::default(),
            from_body,
        }
    }

    /// The user name presented (the key looked up), or Tyk's error for a malformed credential.
    pub fn credential(
        &self,
        parts: &Parts,
        body: Option<&[u8]>,
    ) -> Result<std::borrow::Cow<'static, str>, ProxyError> {
        self.credentials(parts, body)
            .map(|(user, _)| std::borrow::Cow::Owned(user))
    }

    /// (user, password) from the body or the header, or Tyk's error for each way it can fail.
    fn credentials(
        &self,
        parts: &Parts,
        body: Option<&[u8]>,
    ) -> Result<(String, String), ProxyError> {
        match &self.from_body {
            Some((user_re, password_re)) => {
                let text = String::from_utf8_lossy(body.unwrap_or_default());
                let capture = |re: &Regex,
                               missing: ProxyError,
                               no_group: ProxyError|
                 -> Result<String, ProxyError> {
                    let caps = re.captures(&text).ok_or(missing)?;
                    caps.get(1).map(|m| m.as_str().to_owned()).ok_or(no_group)
                };
                let user = capture(user_re, ProxyError::BodyNoUser, ProxyError::BodyUserGroup)?;
                let password = capture(
                    password_re,
                    ProxyError::BodyNoPassword,
                    ProxyError::BodyPasswordGroup,
                )?;
                Ok((user, password))
            }
            None => Self::decode(parts),
        }
    }

    /// (user, password) from the header, or Tyk's error for each way it can be malformed.
    fn decode(parts: &Parts) -> Result<(String, String), ProxyError> {
        let header = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .ok_or(ProxyError::BasicMissing)?;
        let text = header.to_str().map_err(|_| ProxyError::BasicNotBasic)?;
        let mut words = text.split_whitespace();
        let (Some(scheme), Some(data), None) = (words.next(), words.next(), words.next()) else {
            return Err(ProxyError::BasicNotBasic);
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(ProxyError::BasicNotBasic);
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| ProxyError::BasicNotEncoded)?;
        let raw = String::from_utf8(raw).map_err(|_| ProxyError::BasicNotEncoded)?;
        // Exactly one ':' (Tyk refuses "a:b:c").
        let mut it = raw.split(':');
        let (Some(user), Some(password), None) = (it.next(), it.next(), it.next()) else {
            return Err(ProxyError::BasicNotPair);
        };
        Ok((user.to_owned(), password.to_owned()))
    }

    fn cache_key(stored_hash: &str, password: &str) -> CacheKey {
        let mut h = Sha256::new();
        h.update(stored_hash.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }
}

fn verdict(v: Verdict) -> Result<(), ProxyError> {
    match v {
        Verdict::Match => Ok(()),
        Verdict::NoMatch => Err(ProxyError::UserNotAuthorised),
        Verdict::Busy => Err(ProxyError::AuthBusy),
    }
}

impl BasicAuth {
    /// Checks `password` against the key's bcrypt hash, with the per-API success cache.
    async fn verify_password(&self, password: String, session: &Session) -> Result<(), ProxyError> {
        // bcrypt reads only the first 72 bytes: without this, any suffix after a right
        // 72-byte prefix would pass. The control plane refuses to store longer passwords.
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(ProxyError::UserNotAuthorised);
        }
        let Some(stored) = session
            .state
            .spec()
            .basic_auth_data
            .as_ref()
            .map(|b| b.password.clone())
            .filter(|p| !p.is_empty())
        else {
            // A key without basic-auth data cannot be used as a basic-auth user.
            return Err(ProxyError::UserNotAuthorised);
        };
        let key = Self::cache_key(&stored, &password);
        let Some(ttl) = self.cache_ttl else {
            return verdict(self.state.bcrypt_once(key, password, stored).await);
        };
        match self.state.age(&key) {
            Some(age) if age < ttl => {
                if age > ttl / 2 && !self.state.refreshing(&key) {
                    let state = self.state.clone();
                    tokio::spawn(async move {
                        match state.bcrypt_once(key, password, stored).await {
                            Verdict::Match => state.remember(key),
                            Verdict::NoMatch => state.forget(&key),
                            // Saturated: keep the cached success until it expires.
                            Verdict::Busy => {}
                        }
                    });
                }
                Ok(())
            }
            _ => {
                let v = self.state.bcrypt_once(key, password, stored).await;
                if v == Verdict::Match {
                    self.state.remember(key);
                }
                verdict(v)
            }
        }
    }
}

#[async_trait::async_trait]
impl AuthMethod for BasicAuth {
    fn provider(&self) -> Provider {
        Provider::BasicAuthUser
    }

    fn needs_body(&self) -> bool {
        self.from_body.is_some()
    }

    fn presented(&self, ctx: &RequestContext<'_>) -> bool {
        match &self.from_body {
            Some((user_re, _)) => ctx
                .body
                .is_some_and(|b| user_re.is_match(&String::from_utf8_lossy(b))),
            None => ctx
                .parts
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().get(..6))
                .is_some_and(|s| s.eq_ignore_ascii_case(b"basic ")),
        }
    }

    async fn authenticate(&self, ctx: &RequestContext<'_>) -> Result<Identity, ProxyError> {
        let (user, password) = self.credentials(ctx.parts, ctx.body)?;
        let identity = ctx
            .stored_key(
                &user,
                Provider::BasicAuthUser,
                ProxyError::UserNotAuthorised,
            )
            .await?;
        self.verify_password(password, &identity.session).await?;
        Ok(identity)
    }

    fn strip(&self, parts: &mut Parts) {
        parts.headers.remove(http::header::AUTHORIZATION);
    }

    fn challenge(&self) -> Option<&HeaderValue> {
        Some(&self.challenge)
    }
}
