//! Basic auth: `Authorization: Basic base64(user:password)`. The user name is the key; the
//! password is checked against the session's bcrypt hash. Verified results are cached for
//! `basic_auth.cache_ttl` seconds, keyed by the stored hash *and* a digest of the presented
//! password, so a wrong password never hits a cached success and a password change on the
//! control plane invalidates the cache at once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use http::HeaderValue;
use http::request::Parts;
use sha2::{Digest, Sha256};

use super::AuthMethod;
use crate::error::ProxyError;
use crate::sessions::Session;

#[derive(Debug)]
pub struct BasicAuth {
    challenge: HeaderValue,
    cache_ttl: Option<Duration>,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

impl BasicAuth {
    /// `realm` is the API name, as in Tyk's `WWW-Authenticate: Basic realm="<api name>"`.
    pub fn new(realm: &str, cache_ttl_secs: i64, disable_caching: bool) -> Self {
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
            verified: Mutex::new(HashMap::new()),
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

    fn cache_key(stored_hash: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(stored_hash.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }
}

#[async_trait::async_trait]
impl AuthMethod for BasicAuth {
    fn credential<'a>(&self, parts: &'a Parts) -> Result<Cow<'a, str>, ProxyError> {
        Self::decode(parts).map(|(user, _)| Cow::Owned(user))
    }

    fn unknown_key(&self) -> ProxyError {
        ProxyError::UserNotAuthorised
    }

    async fn verify(&self, parts: &Parts, session: &Session) -> Result<(), ProxyError> {
        let (_, password) = Self::decode(parts)?;
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
        if let Some(ttl) = self.cache_ttl {
            let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(&key) {
                Some(at) if at.elapsed() < ttl => return Ok(()),
                Some(_) => {
                    cache.remove(&key);
                }
                None => {}
            }
        }
        // bcrypt costs tens of milliseconds by design: keep it off the proxy's threads.
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &stored).unwrap_or(false))
                .await
                .unwrap_or(false);
        if !ok {
            return Err(ProxyError::UserNotAuthorised);
        }
        if let Some(ttl) = self.cache_ttl {
            let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() > 100_000 {
                cache.retain(|_, at| at.elapsed() < ttl);
            }
            cache.insert(key, Instant::now());
        }
        Ok(())
    }

    fn strip(&self, parts: &mut Parts) {
        parts.headers.remove(http::header::AUTHORIZATION);
    }

    fn challenge(&self) -> Option<&HeaderValue> {
        Some(&self.challenge)
    }
}
