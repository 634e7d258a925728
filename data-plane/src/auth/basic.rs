//! Basic auth: `Authorization: Basic base64(user:password)`. The user name is the key; the
//! password is checked against the session's bcrypt hash. Verified results are cached for
//! `basic_auth.cache_ttl` seconds, keyed by the stored hash *and* a digest of the presented
//! password, so a wrong password never hits a cached success and a password change on the
//! control plane invalidates the cache at once.
//!
//! bcrypt is slow on purpose, so two things keep it off the request path: concurrent
//! verifications of the same user and password share one bcrypt run, and a cached success is
//! re-verified in the background once it is half its TTL old, so a busy user never waits for it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use http::HeaderValue;
use http::request::Parts;
use portcullis_proto::model::BasicAuthSpec;
use regex::Regex;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::AuthMethod;
use crate::error::ProxyError;
use crate::sessions::Session;

type CacheKey = [u8; 32];

#[derive(Debug)]
pub struct BasicAuth {
    challenge: HeaderValue,
    cache_ttl: Option<Duration>,
    state: Arc<Verifications>,
    /// `extract_from_body`: user and password regexps (capture group 1 is the value).
    from_body: Option<(Regex, Regex)>,
}

#[derive(Debug, Default)]
struct Verifications {
    verified: Mutex<HashMap<CacheKey, Instant>>,
    in_flight: Mutex<HashMap<CacheKey, Arc<OnceCell<bool>>>>,
}

impl Verifications {
    /// One bcrypt run per (stored hash, password) at a time; concurrent callers share it.
    async fn bcrypt_once(&self, key: CacheKey, password: String, stored: String) -> bool {
        let cell = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone();
        let ok = *cell
            .get_or_init(|| async move {
                // Tens of milliseconds by design: never on the proxy's threads.
                tokio::task::spawn_blocking(move || {
                    bcrypt::verify(password, &stored).unwrap_or(false)
                })
                .await
                .unwrap_or(false)
            })
            .await;
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

    fn remember(&self, key: CacheKey, ttl: Duration) {
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 100_000 {
            cache.retain(|_, at| at.elapsed() < ttl);
        }
        cache.insert(key, Instant::now());
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

#[async_trait::async_trait]
impl AuthMethod for BasicAuth {
    fn needs_body(&self) -> bool {
        self.from_body.is_some()
    }

    fn credential<'a>(
        &self,
        parts: &'a Parts,
        body: Option<&'a [u8]>,
    ) -> Result<Cow<'a, str>, ProxyError> {
        self.credentials(parts, body)
            .map(|(user, _)| Cow::Owned(user))
    }

    fn unknown_key(&self) -> ProxyError {
        ProxyError::UserNotAuthorised
    }

    async fn verify(
        &self,
        parts: &Parts,
        body: Option<&[u8]>,
        session: &Session,
    ) -> Result<(), ProxyError> {
        let (_, password) = self.credentials(parts, body)?;
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
            return if self.state.bcrypt_once(key, password, stored).await {
                Ok(())
            } else {
                Err(ProxyError::UserNotAuthorised)
            };
        };
        match self.state.age(&key) {
            Some(age) if age < ttl => {
                if age > ttl / 2 && !self.state.refreshing(&key) {
                    let state = self.state.clone();
                    tokio::spawn(async move {
                        if state.bcrypt_once(key, password, stored).await {
                            state.remember(key, ttl);
                        } else {
                            state.forget(&key);
                        }
                    });
                }
                Ok(())
            }
            _ => {
                if self.state.bcrypt_once(key, password, stored).await {
                    self.state.remember(key, ttl);
                    Ok(())
                } else {
                    Err(ProxyError::UserNotAuthorised)
                }
            }
        }
    }

    fn strip(&self, parts: &mut Parts) {
        parts.headers.remove(http::header::AUTHORIZATION);
    }

    fn challenge(&self) -> Option<&HeaderValue> {
        Some(&self.challenge)
    }
}
