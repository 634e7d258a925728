//! Upstream OAuth 2.0 (`upstream_auth.oauth`): the client-credentials or password grant
//! against the token endpoint, the token sent as `Bearer` in `Authorization` (or the
//! configured header) and the `extra_metadata` fields of the token response as headers of the
//! same name (docs/upstream-auth.md).
//!
//! Tokens are cached until their `expires_in` less a margin: in process, and sealed in the
//! regional Redis so every edge of the region uses the same one. One fetch at a time per
//! client: callers on one edge queue behind a per-client lock, edges behind a short Redis lock
//! (`SET NX PX`) whose loser polls Redis for the winner's token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hashlink::LruCache;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use portcullis_proto::envelope::EnvelopeKey;
use portcullis_proto::model::upstream_auth::Grant;
use portcullis_proto::model::{ApiDefinition, ValidationError};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::auth::stored_secrets;
use crate::error::ProxyError;
use crate::idp::{Idp, IdpError};
use crate::redis_link::{CALL_TIMEOUT, RedisLink};

/// HKDF label of the key sealing upstream tokens in Redis (one key per purpose).
const LABEL: &str = "portcullis/upstream-token/v1";
/// Tokens held in process (one per client and API).
const LOCAL_ENTRIES: usize = 1024;
/// How long one edge holds the region's fetch lock: above the fetch timeout, so the lock
/// outlives a slow fetch only by a little when the holder dies.
const LOCK_MS: u64 = 6_000;
/// How often a loser of the lock looks for the winner's token.
const POLL: Duration = Duration::from_millis(100);
/// Used when the token response has no `expires_in`.
const DEFAULT_LIFETIME_SECS: i64 = 300;
/// A token is never kept longer than this, whatever it says.
const MAX_LIFETIME_SECS: i64 = 86_400;
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// One API's grant, with its secrets opened.
pub(super) struct OAuthClient {
    grant: Grant,
    token_url: String,
    client_id: String,
    client_secret: String,
    post_credentials: bool,
    scope: String,
    username: String,
    password: String,
    header: HeaderName,
    /// Token-response fields to copy, and the header each goes to.
    extra: Vec<(String, HeaderName)>,
    /// Names this client's token in both caches: a digest of everything that makes the token
    /// (the secrets included, so a rotated secret fetches a new token).
    cache_id: String,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("grant", &self.grant)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl OAuthClient {
    pub(super) fn of(def: &ApiDefinition) -> Result<Option<Self>, ValidationError> {
        let spec = def.upstream_auth();
        let Some(grant) = spec.oauth_grant() else {
            return Ok(None);
        };
        let g = spec.grant(grant);
        let base = grant.field();
        let open = |name: &str, value: &str| {
            stored_secrets::open(def.api_id(), &format!("{base}.{name}"), value)
        };
        let client_secret = open("client_secret", &g.client_secret)?;
        let password = if grant == Grant::Password {
            open("password", &g.password)?
        } else {
            String::new()
        };
        let header_name = |field: String, name: &str| {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ValidationError::new(field, "must be a valid HTTP header name"))
        };
        let header = header_name(format!("{base}.header.name"), g.header.name())?;
        let mut extra = Vec::with_capacity(g.extra_metadata.len());
        for (i, field) in g.extra_metadata.iter().enumerate() {
            extra.push((
                field.clone(),
                header_name(format!("{base}.extra_metadata[{i}]"), field)?,
            ));
        }
        let scope = g.scopes.join(" ");
        let mut h = Sha256::new();
        for part in [
            if grant == Grant::Password { "pw" } else { "cc" },
            def.api_id(),
            &g.client_id,
            &client_secret,
            &g.token_url,
            &scope,
            &g.username,
            &password,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        Ok(Some(Self {
            grant,
            token_url: g.token_url.clone(),
            client_id: g.client_id.clone(),
            client_secret,
            post_credentials: g.method == "client_secret_post",
            scope,
            username: g.username.clone(),
            password,
            header,
            extra,
            cache_id: hex::encode(h.finalize()),
        }))
    }

    /// Sets the token (and its extra fields) on the upstream request.
    pub(super) async fn apply(
        &self,
        headers: &mut HeaderMap,
        cache: &TokenCache,
        idp: &Idp,
    ) -> Result<(), ProxyError> {
        let token = cache.token(self, idp).await?;
        headers.insert(self.header.clone(), token.bearer.clone());
        for (name, value) in &token.extra {
            headers.insert(name.clone(), value.clone());
        }
        Ok(())
    }

    /// The token request: form and `Authorization` header (RFC 6749 §2.3.1: both parts
    /// form-encoded before base64 for `client_secret_basic`).
    fn request(&self) -> (String, Option<String>) {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        match self.grant {
            Grant::ClientCredentials => {
                form.append_pair("grant_type", "client_credentials");
            }
            Grant::Password => {
                form.append_pair("grant_type", "password");
                form.append_pair("username", &self.username);
                form.append_pair("password", &self.password);
            }
        }
        if !self.scope.is_empty() {
            form.append_pair("scope", &self.scope);
        }
        let authorization = if self.post_credentials {
            form.append_pair("client_id", &self.client_id);
            form.append_pair("client_secret", &self.client_secret);
            None
        } else {
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(&self.client_id), enc(&self.client_secret));
            Some(format!("Basic {}", B64.encode(pair)))
        };
        (form.finish(), authorization)
    }
}

/// A token ready to send, and when it stops being used (unix seconds).
struct Token {
    bearer: HeaderValue,
    extra: Vec<(HeaderName, HeaderValue)>,
    until: i64,
}

/// Upstream OAuth tokens, shared by every route of the gateway and cached in the regional
/// Redis.
#[derive(Default)]
pub struct TokenCache {
    redis: OnceLock<Arc<RedisLink>>,
    seal: OnceLock<EnvelopeKey>,
    /// Names the Redis slots: keyed by the encryption secret, so a reader of Redis cannot test
    /// guesses of the client secret or password against a slot's name.
    name_key: OnceLock<ring::hmac::Key>,
    local: Mutex<Option<LruCache<String, Arc<Token>>>>,
    /// One fetch at a time per client on this edge; holds the last failure for a moment so
    /// the callers queued behind a failed fetch do not each repeat it.
    flights: Mutex<HashMap<String, Arc<Flight>>>,
}

type Flight = tokio::sync::Mutex<Option<(Instant, ProxyError)>>;

/// The cross-edge fetch lock, released (in the background) when dropped.
struct LockGuard {
    link: Arc<RedisLink>,
    key: String,
    holder: String,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let (link, key, holder) = (
            self.link.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.holder),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { unlock(&link, &key, &holder).await });
        }
    }
}

/// How long a failed fetch answers the callers that queued behind it.
const FAILURE_MEMO: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl TokenCache {
    pub fn set_redis(&self, link: Arc<RedisLink>) {
        let _ = self.redis.set(link);
    }

    pub fn redis(&self) -> Option<&Arc<RedisLink>> {
        self.redis.get()
    }

    /// Derives the key that seals tokens in Redis; without it Redis is not used for them.
    pub fn set_secret(&self, encryption_secret: &str) {
        let _ = self
            .seal
            .set(EnvelopeKey::derive(encryption_secret.as_bytes(), LABEL));
        let mut h = Sha256::new();
        h.update(b"portcullis/upstream-token-name/v1\0");
        h.update(encryption_secret.as_bytes());
        let _ = self
            .name_key
            .set(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &h.finalize()));
    }

    /// The name of a client's Redis slots (token and lock).
    fn region_id(&self, cache_id: &str) -> String {
        match self.name_key.get() {
            Some(k) => hex::encode(ring::hmac::sign(k, cache_id.as_bytes()).as_ref()),
            None => cache_id.to_owned(),
        }
    }

    fn local_get(&self, id: &str) -> Option<Arc<Token>> {
        let mut local = lock(&self.local);
        let cache = local.get_or_insert_with(|| LruCache::new(LOCAL_ENTRIES));
        let token = cache.get(id)?.clone();
        if token.until > now() {
            Some(token)
        } else {
            cache.remove(id);
            None
        }
    }

    fn local_put(&self, id: &str, token: Arc<Token>) {
        lock(&self.local)
            .get_or_insert_with(|| LruCache::new(LOCAL_ENTRIES))
            .insert(id.to_owned(), token);
    }

    fn flight(&self, id: &str) -> Arc<Flight> {
        let mut flights = lock(&self.flights);
        // Bounded by the clients in use: idle entries go once the map grows.
        if flights.len() >= LOCAL_ENTRIES {
            flights.retain(|_, m| Arc::strong_count(m) > 1);
        }
        flights.entry(id.to_owned()).or_default().clone()
    }

    async fn token(&self, client: &OAuthClient, idp: &Idp) -> Result<Arc<Token>, ProxyError> {
        let id = &client.cache_id;
        if let Some(t) = self.local_get(id) {
            return Ok(t);
        }
        let flight = self.flight(id);
        let mut turn = flight.lock().await;
        if let Some(t) = self.local_get(id) {
            return Ok(t);
        }
        if let Some((at, e)) = turn.as_ref()
            && at.elapsed() < FAILURE_MEMO
        {
            return Err(e.clone());
        }
        let answer = self.token_in_turn(client, idp).await;
        *turn = answer.as_ref().err().map(|e| (Instant::now(), e.clone()));
        answer
    }

    /// [`Self::token`] once this caller is the one fetching on this edge.
    async fn token_in_turn(
        &self,
        client: &OAuthClient,
        idp: &Idp,
    ) -> Result<Arc<Token>, ProxyError> {
        let id = &client.cache_id;
        let region = self.redis.get().zip(self.seal.get());
        let Some((link, key)) = region else {
            return self.fetch(client, idp, None).await;
        };
        if let Some(t) = self.redis_get(link, key, client).await {
            self.local_put(id, t.clone());
            return Ok(t);
        }
        let lock_key = format!(
            "{}upstream-token-lock:{}",
            link.prefix(),
            self.region_id(id)
        );
        let holder = uuid::Uuid::new_v4().to_string();
        match try_lock(link, &lock_key, &holder).await {
            // Another edge is fetching: wait for its token, up to the lock's life.
            Some(false) => {
                let polls = LOCK_MS / u64::try_from(POLL.as_millis()).unwrap_or(100);
                for _ in 0..polls {
                    tokio::time::sleep(POLL).await;
                    if let Some(t) = self.redis_get(link, key, client).await {
                        self.local_put(id, t.clone());
                        return Ok(t);
                    }
                }
                // The holder went away without a token: fetch here.
                self.fetch(client, idp, Some((link, key))).await
            }
            // Held here, or Redis is down (each edge then fetches for itself).
            held => {
                // Released even when the caller goes away mid-fetch (a client disconnect
                // drops this future): the other edges would otherwise wait out the lock.
                let _guard = (held == Some(true)).then(|| LockGuard {
                    link: link.clone(),
                    key: lock_key,
                    holder,
                });
                self.fetch(client, idp, Some((link, key))).await
            }
        }
    }

    fn redis_key(&self, link: &RedisLink, id: &str) -> String {
        format!("{}upstream-token:{}", link.prefix(), self.region_id(id))
    }

    async fn redis_get(
        &self,
        link: &Arc<RedisLink>,
        key: &EnvelopeKey,
        client: &OAuthClient,
    ) -> Option<Arc<Token>> {
        let raw = link
            .get_bytes(&self.redis_key(link, &client.cache_id))
            .await?;
        let json = key.open(&raw, &aad(&client.cache_id)).ok()?;
        let v: Value = serde_json::from_slice(&json).ok()?;
        let until = v.get("until")?.as_i64()?;
        let body = v.get("body")?.as_object()?;
        let token = parse_token(client, body, until).ok()?;
        (token.until > now()).then(|| Arc::new(token))
    }

    /// Asks the token endpoint, then keeps the token locally and (sealed) in Redis.
    async fn fetch(
        &self,
        client: &OAuthClient,
        idp: &Idp,
        region: Option<(&Arc<RedisLink>, &EnvelopeKey)>,
    ) -> Result<Arc<Token>, ProxyError> {
        let (form, authorization) = client.request();
        let body = idp
            .post_form_authorized(&client.token_url, form, authorization.as_deref())
            .await
            .map_err(|e| {
                tracing::warn!(token_url = %client.token_url, client_id = %client.client_id,
                    error = %e, "upstream OAuth token request failed");
                match e {
                    IdpError::Refused(_) => ProxyError::UpstreamTokenRefused,
                    _ => ProxyError::UpstreamTokenUnavailable,
                }
            })?;
        let bad = |why: &str| {
            tracing::warn!(token_url = %client.token_url, why, "unusable upstream OAuth token response");
            ProxyError::UpstreamTokenUnavailable
        };
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
            return Err(bad("not a JSON object"));
        };
        let issued = now();
        let lifetime = match body.get("expires_in") {
            Some(Value::Number(n)) => n.as_f64().map(|f| f as i64),
            Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
            _ => None,
        }
        .unwrap_or(DEFAULT_LIFETIME_SECS)
        .clamp(0, MAX_LIFETIME_SECS);
        // Stop using a token a little before it expires: a tenth of its life, 1 to 60 s.
        let until = issued + lifetime - (lifetime / 10).clamp(1, 60);
        let token = Arc::new(parse_token(client, &body, until).map_err(bad)?);
        if until > issued {
            self.local_put(&client.cache_id, token.clone());
            if let Some((link, key)) = region {
                let record = serde_json::json!({"until": until, "body": Value::Object(body)});
                let sealed = key.seal(record.to_string().as_bytes(), &aad(&client.cache_id));
                let secs = u64::try_from(until - issued).unwrap_or(1);
                link.set_ex(&self.redis_key(link, &client.cache_id), &sealed, secs)
                    .await;
            }
        }
        Ok(token)
    }
}

fn aad(id: &str) -> Vec<u8> {
    format!("upstream-token\0{id}").into_bytes()
}

/// The headers a token response gives: `access_token` and the `extra_metadata` fields that
/// are present as strings, numbers or booleans.
fn parse_token(
    client: &OAuthClient,
    body: &Map<String, Value>,
    until: i64,
) -> Result<Token, &'static str> {
    let access = body
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_BYTES)
        .ok_or("no access_token")?;
    let mut bearer =
        HeaderValue::from_str(&format!("Bearer {access}")).map_err(|_| "bad access_token")?;
    bearer.set_sensitive(true);
    let mut extra = Vec::new();
    for (field, header) in &client.extra {
        let text = match body.get(field) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            _ => continue,
        };
        if text.len() > MAX_TOKEN_BYTES {
            continue;
        }
        if let Ok(v) = HeaderValue::from_str(&text) {
            extra.push((header.clone(), v));
        }
    }
    Ok(Token {
        bearer,
        extra,
        until,
    })
}

/// `SET key holder NX PX`: `Some(true)` when taken, `Some(false)` when another edge holds
/// it, `None` when Redis did not answer.
async fn try_lock(link: &Arc<RedisLink>, key: &str, holder: &str) -> Option<bool> {
    let mut conn = link.conn()?;
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(holder).arg("NX").arg("PX").arg(LOCK_MS);
    match tokio::time::timeout(CALL_TIMEOUT, cmd.query_async::<Option<String>>(&mut conn)).await {
        Ok(Ok(answer)) => Some(answer.is_some()),
        _ => {
            link.failed();
            None
        }
    }
}

/// Deletes the lock only while this edge still holds it.
async fn unlock(link: &Arc<RedisLink>, key: &str, holder: &str) {
    const SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
    let Some(mut conn) = link.conn() else {
        return;
    };
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(SCRIPT).arg(1).arg(key).arg(holder);
    let _ = tokio::time::timeout(CALL_TIMEOUT, cmd.query_async::<i64>(&mut conn)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn client(grant: Value, method: &str) -> OAuthClient {
        let mut grant = grant;
        grant["method"] = json!(method);
        let body = json!({"api_id": "o", "use_keyless": true,
            "proxy": {"listen_path": "/o/", "target_url": "http://127.0.0.1:1"},
            "upstream_auth": {"enabled": true, "oauth": {"enabled": true,
                "allowed_authorize_types": ["password"], "password": grant}}});
        let def = ApiDefinition::parse(body.to_string().as_bytes()).unwrap();
        OAuthClient::of(&def).unwrap().unwrap()
    }

    #[test]
    fn token_requests_carry_the_credentials_where_the_method_says() {
        let g = json!({"client_id": "c:1", "client_secret": "s/2", "username": "u",
            "password": "p&w", "token_url": "http://idp/token", "scopes": ["a", "b"]});
        let (form, auth) = client(g.clone(), "").request();
        assert_eq!(
            form,
            "grant_type=password&username=u&password=p%26w&scope=a+b"
        );
        assert_eq!(
            auth.unwrap(),
            format!("Basic {}", B64.encode("c%3A1:s%2F2"))
        );
        let (form, auth) = client(g, "client_secret_post").request();
        assert!(
            form.ends_with("&client_id=c%3A1&client_secret=s%2F2"),
            "{form}"
        );
        assert!(auth.is_none());
    }

    #[test]
    fn extra_metadata_fields_become_headers() {
        let g = json!({"client_id": "c", "client_secret": "s", "username": "u", "password": "p",
            "token_url": "http://idp/token", "extra_metadata": ["instance_url", "n", "absent"],
            "header": {"enabled": true, "name": "X-Upstream-Token"}});
        let c = client(g, "");
        assert_eq!(c.header, "x-upstream-token");
        let body = json!({"access_token": "t", "instance_url": "https://i", "n": 5});
        let t = parse_token(&c, body.as_object().unwrap(), 0).unwrap();
        assert_eq!(t.bearer, "Bearer t");
        let extra: Vec<(String, String)> = t
            .extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            extra,
            [
                ("instance_url".to_owned(), "https://i".to_owned()),
                ("n".to_owned(), "5".to_owned())
            ]
        );
        assert!(parse_token(&c, json!({"access_token": "a\nb"}).as_object().unwrap(), 0).is_err());
    }
}
