//! JWT (`enable_jwt`): a signed token from an identity provider, checked against a shared
//! secret, a public key, a JWK set (refetched on an unknown `kid`) or, with no `jwt_source`, the
//! secret of the key the token's `kid` names. With a source, the identity gets a session made
//! at the edge from the token's policy claim, scopes or the API's default policies (Tyk's
//! "centralised" mode; docs/jwt.md).

use std::borrow::Cow;
use std::sync::Arc;

use http::request::Parts;
use portcullis_proto::model::idp_auth::{IdpSpec, KeySource, key_source};
use portcullis_proto::model::{ApiSpec, AuthTokenSpec, ValidationError};
use serde_json::{Map, Value};

use super::AuthMethod;
use super::token::TokenAuth;
use crate::auth::context::RequestContext;
use crate::auth::identity::{Identity, Provider};
use crate::auth::split_token;
use crate::auth::stored_secrets;
use crate::auth::token_session::{self, Wanted};
use crate::auth::verified::VerifiedCache;
use crate::error::ProxyError;
use crate::jose::{self, Family, Jws, Key, Skews, TimeError, Times};

/// Verified tokens remembered per API.
const VERIFIED_ENTRIES: usize = 50_000;

/// Where the verification key comes from.
#[derive(Debug)]
pub enum KeyFrom {
    /// A shared secret or a public key in the definition.
    Static(Key),
    /// A JWK set URL.
    Jwks(Arc<str>),
    /// The key named by the token (`kid`, or the identity with `jwt_skip_kid`) holds
    /// `jwt_data.secret`.
    PerKey,
}

/// What the claims of a verified token give, remembered with it.
#[derive(Debug, Clone)]
struct Verified {
    identity: Arc<str>,
    key: Arc<str>,
    key_hash: Arc<str>,
    /// `None` when the policies depend on a client key looked up per request.
    policies: Option<Arc<[String]>>,
    claims: Arc<Map<String, Value>>,
    times: Times,
    /// The JWKS flush generation it was verified in; a flush verifies it again.
    generation: u64,
}

/// The claim and policy rules shared by JWT and OpenID Connect.
#[derive(Debug)]
pub struct ClaimRules {
    pub identity_field: String,
    pub policy_field: String,
    pub client_field: String,
    pub default_policies: Vec<String>,
    pub scope_claim: String,
    pub scope_to_policy: std::collections::BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct JwtAuth {
    api_id: Arc<str>,
    org_id: String,
    family: Family,
    key: KeyFrom,
    reader: TokenAuth,
    skip_kid: bool,
    skews: Skews,
    rules: ClaimRules,
    verified: VerifiedCache<Verified>,
    /// Split tokens: a bare signature stands for the token the gateway kept.
    split: bool,
}

/// Tyk's answer to a failed time claim (401, with its message).
pub fn time_error(e: TimeError) -> ProxyError {
    match e {
        TimeError::Expired => ProxyError::JwtExpired,
        TimeError::UsedBeforeIssued => ProxyError::JwtUsedBeforeIssued,
        TimeError::NotYetValid => ProxyError::JwtNotYetValid,
    }
}

/// Tyk's messages when the identity claim is missing or empty.
pub fn identity_of<'c>(claims: &'c Map<String, Value>, field: &str) -> Result<&'c str, ProxyError> {
    if !field.is_empty() {
        match jose::claim(claims, field) {
            Some(Value::String(s)) if !s.is_empty() => return Ok(s),
            Some(Value::String(_)) => {
                return Err(ProxyError::JwtClaims(
                    "found an empty user ID in predefined base claim",
                ));
            }
            _ => {}
        }
    }
    match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(ProxyError::JwtClaims("found an empty user ID in sub claim")),
        _ => Err(ProxyError::JwtClaims(
            "no suitable claims for user ID were found",
        )),
    }
}

/// A scope claim: a space-separated string or an array of strings.
fn scopes(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => s.split_ascii_whitespace().collect(),
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

impl ClaimRules {
    /// The policies a token's claims give, `client_base` being the first policy of the key its
    /// client claim names (looked up by the caller when `client_field` is set).
    pub fn policies(
        &self,
        claims: &Map<String, Value>,
        client_base: Option<&str>,
    ) -> Result<Vec<String>, ProxyError> {
        let mut base: Option<String> = None;
        if !self.policy_field.is_empty()
            && let Some(v) = jose::claim(claims, &self.policy_field)
        {
            match v.as_str() {
                Some(p) if !p.is_empty() => base = Some(p.to_owned()),
                _ => {
                    return Err(ProxyError::JwtClaims(
                        "key not authorized: no matching policy",
                    ));
                }
            }
        }
        if base.is_none() {
            base = client_base.map(str::to_owned);
        }
        let mut mapped: Vec<String> = Vec::new();
        if !self.scope_to_policy.is_empty()
            && let Some(v) = jose::claim(claims, &self.scope_claim)
        {
            for scope in scopes(v) {
                if let Some(p) = self.scope_to_policy.get(scope)
                    && !mapped.contains(p)
                {
                    mapped.push(p.clone());
                }
            }
            if mapped.is_empty() && base.is_none() {
                return Err(ProxyError::JwtClaims(
                    "key not authorized: no matching policy found in scope claim",
                ));
            }
        }
        if !mapped.is_empty() {
            // Scopes replace the default policies; a base policy stays first.
            let mut out: Vec<String> = base.into_iter().collect();
            for p in mapped {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
            return Ok(out);
        }
        if let Some(b) = base {
            return Ok(vec![b]);
        }
        if !self.default_policies.is_empty() {
            return Ok(self.default_policies.clone());
        }
        Err(ProxyError::JwtClaims(
            "key not authorized: no matching policy found",
        ))
    }
}

/// The verification key a source gives; `field` names it in errors.
pub fn key_from(api_id: &str, field: &str, source: &str) -> Result<KeyFrom, ValidationError> {
    let bad = |e: jose::JoseError| ValidationError::new(field, e.to_string());
    Ok(match key_source(field, source)? {
        KeySource::PerKey => KeyFrom::PerKey,
        KeySource::JwksUrl(url) => KeyFrom::Jwks(url.into()),
        KeySource::Pem(pem) => KeyFrom::Static(Key::from_pem(&pem).map_err(bad)?),
        KeySource::Secret(secret) => KeyFrom::Static(Key::hmac(&secret)),
        KeySource::Sealed(sealed) => {
            let opened = stored_secrets::open(api_id, field, &sealed)?;
            match key_source(field, &opened)? {
                KeySource::Secret(secret) => KeyFrom::Static(Key::hmac(&secret)),
                _ => {
                    return Err(ValidationError::new(
                        field,
                        "a sealed source must be a secret",
                    ));
                }
            }
        }
    })
}

impl JwtAuth {
    pub fn new(spec: &ApiSpec, idp: &IdpSpec) -> Result<Self, ValidationError> {
        let family = Family::parse(if idp.jwt_signing_method.is_empty() {
            "hmac"
        } else {
            &idp.jwt_signing_method
        })
        .ok_or_else(|| ValidationError::new("jwt_signing_method", "must be hmac, rsa or ecdsa"))?;
        let key = key_from(&spec.api_id, "jwt_source", &idp.jwt_source)?;
        if let KeyFrom::Static(k) = &key
            && k.family() != family
        {
            return Err(ValidationError::new(
                "jwt_source",
                "does not hold a key for jwt_signing_method",
            ));
        }
        let source: &AuthTokenSpec = idp.auth_configs.jwt.as_ref().unwrap_or(&spec.auth);
        let reader = TokenAuth::reader(source).ok_or_else(|| {
            ValidationError::new(
                "auth_configs.jwt.auth_header_name",
                "must be a valid HTTP header name",
            )
        })?;
        Ok(Self {
            api_id: spec.api_id.as_str().into(),
            org_id: spec.org_id.clone(),
            family,
            key,
            reader,
            skip_kid: idp.jwt_skip_kid,
            skews: Skews {
                issued_at: idp.jwt_issued_at_validation_skew,
                expires_at: idp.jwt_expires_at_validation_skew,
                not_before: idp.jwt_not_before_validation_skew,
            },
            rules: ClaimRules {
                identity_field: idp.jwt_identity_base_field.clone(),
                policy_field: idp.jwt_policy_field_name.clone(),
                client_field: idp.jwt_client_base_field.clone(),
                default_policies: idp.jwt_default_policies.clone(),
                scope_claim: idp.scope_claim().to_owned(),
                scope_to_policy: idp.scope_to_policy().clone(),
            },
            verified: VerifiedCache::new(VERIFIED_ENTRIES),
            split: idp.split_token.enabled,
        })
    }

    fn decode<'t>(&self, token: &'t str) -> Result<Jws<'t>, ProxyError> {
        let jws = jose::decode(token).map_err(|_| ProxyError::JwtNotAuthorized)?;
        match jws.alg {
            Some(alg) if alg.family() == self.family => Ok(jws),
            _ => Err(ProxyError::JwtUnexpectedMethod),
        }
    }

    async fn verify_with_source(
        &self,
        ctx: &RequestContext<'_>,
        jws: &Jws<'_>,
    ) -> Result<(), ProxyError> {
        let ok = match &self.key {
            KeyFrom::Static(key) => jose::verify(jws, key).is_ok(),
            KeyFrom::Jwks(url) => {
                let set = ctx
                    .idp()
                    .key_set(&self.api_id, url, jws.header.kid.as_deref())
                    .await
                    .map_err(|e| {
                        tracing::debug!(api_id = %self.api_id, error = %e, "no JWK set for a token");
                        ProxyError::JwtNotAuthorized
                    })?;
                set.find(jws.header.kid.as_deref(), self.family)
                    .is_some_and(|key| jose::verify(jws, key).is_ok())
            }
            KeyFrom::PerKey => false,
        };
        if ok {
            Ok(())
        } else {
            Err(ProxyError::JwtNotAuthorized)
        }
    }

    /// One-to-one mode: the token names a stored key whose `jwt_data.secret` verifies it, and
    /// the request runs under that key.
    async fn per_key(
        &self,
        ctx: &RequestContext<'_>,
        jws: &Jws<'_>,
    ) -> Result<Identity, ProxyError> {
        let name: Cow<'_, str> = match (&jws.header.kid, self.skip_kid) {
            (Some(kid), false) if !kid.is_empty() => Cow::Borrowed(kid.as_str()),
            _ => Cow::Borrowed(identity_of(&jws.claims, &self.rules.identity_field)?),
        };
        let identity = ctx
            .stored_key(&name, Provider::JwtClaim, ProxyError::JwtNotAuthorized)
            .await?;
        let secret = identity
            .session
            .state
            .field("jwt_data")
            .and_then(|d| d.get("secret"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(ProxyError::JwtNotAuthorized)?;
        let key = match self.family {
            // A public key is never an HMAC secret (algorithm confusion, docs/jwt.md).
            Family::Hmac if secret.contains("-----BEGIN") => {
                return Err(ProxyError::JwtNotAuthorized);
            }
            Family::Hmac => Key::hmac(secret.as_bytes()),
            _ => Key::from_pem(secret.as_bytes()).map_err(|_| ProxyError::JwtNotAuthorized)?,
        };
        jose::verify(jws, &key).map_err(|_| ProxyError::JwtNotAuthorized)?;
        Ok(identity)
    }

    /// What a verified token's claims give (the claims move into the entry, no copy).
    fn remember(&self, jws: Jws<'_>, generation: u64) -> Result<Verified, ProxyError> {
        let identity: Arc<str> = identity_of(&jws.claims, &self.rules.identity_field)?.into();
        let key = token_session::virtual_key(&self.org_id, &identity);
        let key_hash = portcullis_proto::key_hash::key_hash(&key);
        let policies = if self.rules.client_field.is_empty() {
            Some(self.rules.policies(&jws.claims, None)?.into())
        } else {
            None
        };
        Ok(Verified {
            identity,
            key: key.into(),
            key_hash: key_hash.into(),
            policies,
            times: Times::of(&jws.claims),
            claims: Arc::new(jws.claims),
            generation,
        })
    }

    /// The first policy of the key a client claim names (Tyk's `jwt_client_base_field`).
    async fn client_policy(
        &self,
        ctx: &RequestContext<'_>,
        claims: &Map<String, Value>,
    ) -> Option<String> {
        let client = jose::claim(claims, &self.rules.client_field)?.as_str()?;
        let identity = ctx
            .stored_key(client, Provider::JwtClaim, ProxyError::JwtNotAuthorized)
            .await
            .ok()?;
        identity
            .session
            .state
            .policy_ids()
            .next()
            .map(str::to_owned)
    }
}

#[async_trait::async_trait]
impl AuthMethod for JwtAuth {
    fn provider(&self) -> Provider {
        Provider::JwtClaim
    }

    fn presented(&self, ctx: &RequestContext<'_>) -> bool {
        !super::other_scheme(ctx.parts, self.reader.header())
            && self.reader.find(ctx.parts).is_some_and(|t| {
                super::looks_like_jwt(&t) || (self.split && split_token::is_signature(&t))
            })
    }

    async fn authenticate(&self, ctx: &RequestContext<'_>) -> Result<Identity, ProxyError> {
        let mut token = self.reader.find(ctx.parts).ok_or(ProxyError::JwtMissing)?;
        if self.split && split_token::is_signature(&token) {
            let whole = ctx
                .split_tokens()
                .rebuild(&token)
                .await
                .ok_or(ProxyError::JwtNotAuthorized)?;
            // The upstream gets the whole token, as if the client had sent it.
            if let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {whole}")) {
                ctx.rewrite_header(self.reader.header().clone(), value);
            }
            token = Cow::Owned(whole);
        }
        let now = chrono::Utc::now().timestamp();
        if matches!(self.key, KeyFrom::PerKey) {
            let jws = self.decode(&token)?;
            let identity = self.per_key(ctx, &jws).await?;
            Times::of(&jws.claims)
                .check(now, self.skews)
                .map_err(time_error)?;
            return Ok(identity);
        }
        let digest = jose::token_digest(&token);
        let generation = ctx.idp().jwks_generation();
        let verified = match self.verified.get(&digest, now) {
            Some(v) if v.generation == generation => v,
            _ => {
                let jws = self.decode(&token)?;
                self.verify_with_source(ctx, &jws).await?;
                let v = self.remember(jws, generation)?;
                v.times.check(now, self.skews).map_err(time_error)?;
                self.verified.insert(digest, v.clone(), now, v.times.exp());
                v
            }
        };
        verified.times.check(now, self.skews).map_err(time_error)?;
        let looked_up;
        let policies: &[String] = match &verified.policies {
            Some(p) => p,
            None => {
                let client = self.client_policy(ctx, &verified.claims).await;
                looked_up = self.rules.policies(&verified.claims, client.as_deref())?;
                &looked_up
            }
        };
        token_session::session_for(
            ctx,
            &Wanted {
                org_id: &self.org_id,
                identity: &verified.identity,
                key: &verified.key,
                key_hash: &verified.key_hash,
                policies,
                // The session lasts as long as the token is accepted, skew included.
                expires: verified.times.exp().map_or(0, |e| {
                    e.saturating_add(i64::try_from(self.skews.expires_at).unwrap_or(0))
                }),
                issued_at: verified.times.iat(),
                provider: Provider::JwtClaim,
            },
        )
        .await
    }

    fn strip(&self, parts: &mut Parts) {
        self.reader.strip(parts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(defaults: &[&str], scopes: &[(&str, &str)]) -> ClaimRules {
        ClaimRules {
            identity_field: String::new(),
            policy_field: "pol".into(),
            client_field: String::new(),
            default_policies: defaults.iter().map(|s| (*s).to_owned()).collect(),
            scope_claim: "scope".into(),
            scope_to_policy: scopes
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn policies_follow_tyks_precedence() {
        let r = rules(&["default"], &[("user:read", "p1"), ("user:write", "p2")]);
        // Scopes replace the defaults; a base policy claim stays first.
        assert_eq!(
            r.policies(&claims(json!({"scope": "user:read user:write"})), None)
                .unwrap(),
            ["p1", "p2"]
        );
        assert_eq!(
            r.policies(
                &claims(json!({"pol": "base", "scope": ["user:write"]})),
                None
            )
            .unwrap(),
            ["base", "p2"]
        );
        assert_eq!(r.policies(&claims(json!({})), None).unwrap(), ["default"]);
        assert_eq!(
            r.policies(&claims(json!({"scope": "nope"})), None)
                .unwrap_err(),
            ProxyError::JwtClaims("key not authorized: no matching policy found in scope claim")
        );
        assert_eq!(
            rules(&[], &[])
                .policies(&claims(json!({})), None)
                .unwrap_err(),
            ProxyError::JwtClaims("key not authorized: no matching policy found")
        );
        assert_eq!(
            r.policies(&claims(json!({"pol": ""})), None).unwrap_err(),
            ProxyError::JwtClaims("key not authorized: no matching policy")
        );
        assert_eq!(
            rules(&[], &[])
                .policies(&claims(json!({})), Some("from-client"))
                .unwrap(),
            ["from-client"]
        );
    }

    #[test]
    fn time_claims_follow_tyks_skews() {
        let now = 1_000_000;
        let skews = |e, i, n| Skews {
            expires_at: e,
            issued_at: i,
            not_before: n,
        };
        let t = |exp: Option<i64>, iat: Option<i64>, nbf: Option<i64>| {
            let mut c = Map::new();
            for (name, v) in [("exp", exp), ("iat", iat), ("nbf", nbf)] {
                if let Some(v) = v {
                    c.insert(name.into(), v.into());
                }
            }
            Times::of(&c)
        };
        let check = |times: Times, s| times.check(now, s).map_err(time_error);
        assert_eq!(
            check(t(Some(now - 1), None, None), skews(1, 0, 0)),
            Err(ProxyError::JwtExpired)
        );
        assert!(check(t(Some(now - 1), None, None), skews(2, 0, 0)).is_ok());
        assert_eq!(
            check(t(None, Some(now + 10), None), skews(0, 5, 0)),
            Err(ProxyError::JwtUsedBeforeIssued)
        );
        assert!(check(t(None, Some(now + 10), None), skews(0, 10, 0)).is_ok());
        assert_eq!(
            check(t(None, None, Some(now + 10)), skews(0, 0, 9)),
            Err(ProxyError::JwtNotYetValid)
        );
        assert!(check(t(None, None, None), skews(0, 0, 0)).is_ok());
        // A time claim that is not a number fails its own check, as in Tyk's library.
        let bad = claims(json!({"exp": "soon"}));
        assert_eq!(
            check(Times::of(&bad), skews(0, 0, 0)),
            Err(ProxyError::JwtExpired)
        );
    }

    #[test]
    fn identity_claims_have_tyks_messages() {
        assert_eq!(
            identity_of(&claims(json!({"sub": "u1"})), "").unwrap(),
            "u1"
        );
        assert_eq!(
            identity_of(
                &claims(json!({"user": {"id": "nested"}, "sub": "u1"})),
                "user.id"
            )
            .unwrap(),
            "nested"
        );
        assert_eq!(
            identity_of(&claims(json!({"sub": "u1"})), "email").unwrap(),
            "u1"
        );
        assert_eq!(
            identity_of(&claims(json!({"email": "", "sub": "u1"})), "email").unwrap_err(),
            ProxyError::JwtClaims("found an empty user ID in predefined base claim")
        );
        assert_eq!(
            identity_of(&claims(json!({"sub": ""})), "").unwrap_err(),
            ProxyError::JwtClaims("found an empty user ID in sub claim")
        );
        assert_eq!(
            identity_of(&claims(json!({})), "").unwrap_err(),
            ProxyError::JwtClaims("no suitable claims for user ID were found")
        );
    }
}
