//! Split tokens: the client keeps only a JWT's signature, an opaque string that reveals no
//! claim; the gateway keeps the header and payload and rebuilds the whole token for the JWT
//! check and the upstream (docs/jwt.md, "Split tokens"). Tyk needs a JavaScript virtual
//! endpoint for this; here it is a setting of the API.
//!
//! The halves live in the edge's memory and in the region's Redis, sealed (write access to
//! Redis could otherwise pair a signature with a payload of its choosing; the signature check
//! would refuse it, but the record must not even open) and never past the token's `exp`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use portcullis_proto::envelope::EnvelopeKey;
use serde_json::Value;

use super::verified::VerifiedCache;
use crate::idp::{Idp, record};
use crate::redis_link::RedisLink;

/// HKDF label of the split-token record key (one key per purpose, docs/security.md).
pub const LABEL: &str = "portcullis/split-token/v1";
/// Tokens without `exp` are kept this long; none longer than a day.
const DEFAULT_LIFETIME_SECS: i64 = 3600;
const MAX_LIFETIME_SECS: i64 = 86_400;
/// A login form larger than this is not a login.
pub const MAX_LOGIN_BODY: usize = 64 * 1024;
const LOCAL_ENTRIES: usize = 100_000;
/// Logins in flight per edge; one that waits [`LOGIN_WAIT`] for a slot is answered 503.
const MAX_LOGINS: usize = 16;
const LOGIN_WAIT: Duration = Duration::from_millis(500);

pub struct SplitTokens {
    /// Logins in flight on this edge: the login is public, so it must not become a way to
    /// hold every connection to the identity provider.
    logins: tokio::sync::Semaphore,
    local: VerifiedCache<Arc<str>>,
    redis: OnceLock<Arc<RedisLink>>,
    seal: OnceLock<EnvelopeKey>,
}

impl std::fmt::Debug for SplitTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SplitTokens(..)")
    }
}

impl Default for SplitTokens {
    fn default() -> Self {
        Self {
            logins: tokio::sync::Semaphore::new(MAX_LOGINS),
            local: VerifiedCache::new(LOCAL_ENTRIES),
            redis: OnceLock::new(),
            seal: OnceLock::new(),
        }
    }
}

fn digest_hex(signature: &str) -> String {
    portcullis_proto::key_hash::key_hash(signature)
}

impl SplitTokens {
    pub fn set_redis(&self, link: Arc<RedisLink>) {
        let _ = self.redis.set(link);
    }

    pub fn set_secret(&self, shared_secret: &str) {
        let _ = self
            .seal
            .set(EnvelopeKey::derive(shared_secret.as_bytes(), LABEL));
    }

    fn redis_key(link: &RedisLink, hash: &str) -> String {
        format!("{}split-token:{hash}", link.prefix())
    }

    /// Keeps `header.payload` of a token whose signature the client now holds.
    async fn put(&self, signature: &str, head: &str, exp: Option<i64>) {
        let now = chrono::Utc::now().timestamp();
        let until = exp
            .unwrap_or(now + DEFAULT_LIFETIME_SECS)
            .min(now + MAX_LIFETIME_SECS);
        if until <= now {
            return;
        }
        let hash = digest_hex(signature);
        self.local.insert(
            crate::jose::token_digest(signature),
            head.into(),
            now,
            Some(until),
        );
        if let Some(link) = self.redis.get()
            && let Some(key) = self.seal.get()
        {
            let rec = record::seal(key, &hash, now, until, head.as_bytes());
            let secs = u64::try_from(until - now).unwrap_or(1);
            link.set_ex(&Self::redis_key(link, &hash), &rec, secs).await;
        }
    }

    /// The whole token a signature stands for, while it is kept.
    pub async fn rebuild(&self, signature: &str) -> Option<String> {
        let now = chrono::Utc::now().timestamp();
        let digest = crate::jose::token_digest(signature);
        if let Some(head) = self.local.get(&digest, now) {
            return Some(format!("{head}.{signature}"));
        }
        let link = self.redis.get()?;
        let key = self.seal.get()?;
        let hash = digest_hex(signature);
        let raw = link.get_bytes(&Self::redis_key(link, &hash)).await?;
        let (_, until, head) = record::open(key, &hash, &raw, now).ok()?;
        let head = String::from_utf8(head).ok()?;
        self.local
            .insert(digest, head.as_str().into(), now, Some(until));
        Some(format!("{head}.{signature}"))
    }
}

/// A signature as a client presents it: one base64url segment, no dots.
pub fn is_signature(token: &str) -> bool {
    !token.is_empty()
        // An 8192-bit RSA signature is 1366 characters.
        && token.len() <= 2048
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn json(status: u16, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // A token endpoint's answers are never cached (RFC 6749 §5.1).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

fn error(status: u16, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        Bytes::from(serde_json::json!({ "error": message }).to_string()),
    )
}

/// The `exp` of a JWT's payload segment, when it has one.
fn payload_exp(payload: &str) -> Option<i64> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("exp")?.as_i64()
}

/// `POST {listen_path}{token_path}`: passes the client's form to the provider's token
/// endpoint, keeps the access token's header and payload, and answers with the signature
/// alone as `access_token` (and without the refresh token, which would let the client mint
/// whole tokens again behind the gateway's back).
pub async fn login(
    idp: &Idp,
    store: &SplitTokens,
    token_url: &str,
    form: Bytes,
) -> Response<Full<Bytes>> {
    let Ok(Ok(_slot)) = tokio::time::timeout(LOGIN_WAIT, store.logins.acquire()).await else {
        return error(503, "Too many logins in flight, retry later");
    };
    let Ok(form) = String::from_utf8(form.to_vec()) else {
        return error(
            400,
            "the login must be an application/x-www-form-urlencoded form",
        );
    };
    let (status, body) = match idp.post_form_for_client(token_url, form).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::debug!(error = %e, "the split-token login could not reach the provider");
            return error(502, "the identity provider could not be reached");
        }
    };
    if status != 200 {
        return json(status, body);
    }
    let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(&body) else {
        return error(
            502,
            "the identity provider answered something else than JSON",
        );
    };
    let token = answer
        .get("access_token")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(token) = token else {
        return error(
            502,
            "the identity provider answered without an access token",
        );
    };
    let mut parts = token.rsplitn(2, '.');
    let (Some(signature), Some(head)) = (parts.next(), parts.next()) else {
        return error(502, "the identity provider's access token is not a JWT");
    };
    if !is_signature(signature) || head.bytes().filter(|b| *b == b'.').count() != 1 {
        return error(502, "the identity provider's access token is not a JWT");
    }
    let exp = head.split('.').nth(1).and_then(payload_exp);
    store.put(signature, head, exp).await;
    answer.insert("access_token".into(), Value::String(signature.to_owned()));
    answer.remove("refresh_token");
    answer.remove("refresh_expires_in");
    answer.remove("id_token");
    json(200, Bytes::from(Value::Object(answer).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_base64url_segment_is_a_signature() {
        assert!(is_signature("EwIaRgq4go4R2M2z7AADywZ2ToxG4gDMoG4SQ1X3GJ0"));
        assert!(!is_signature("a.b"));
        assert!(!is_signature(""));
        assert!(!is_signature("a b"));
        assert!(is_signature(&"a".repeat(1366)));
        assert!(!is_signature(&"a".repeat(2049)));
    }

    #[tokio::test]
    async fn a_kept_head_rebuilds_the_token_until_exp() {
        let store = SplitTokens::default();
        let now = chrono::Utc::now().timestamp();
        store.put("sig", "h.p", Some(now + 60)).await;
        assert_eq!(store.rebuild("sig").await.as_deref(), Some("h.p.sig"));
        assert_eq!(store.rebuild("other").await, None);
        store.put("old", "h.p", Some(now - 1)).await;
        assert_eq!(store.rebuild("old").await, None);
    }
}
