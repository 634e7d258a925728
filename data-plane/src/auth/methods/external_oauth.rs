//! External OAuth (`external_oauth`): access tokens of an outside authorization server,
//! checked as JWTs against each provider's key or JWK set, or by RFC 7662 introspection. The
//! request runs under a virtual session limited to this API, with no policies and no limits,
//! as Tyk's (docs/external-oauth.md).

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use portcullis_proto::model::idp_auth::IdpSpec;
use portcullis_proto::model::{ApiSpec, AuthTokenSpec, SessionState, ValidationError};
use serde_json::{Map, Value, json};

use super::AuthMethod;
use super::jwt::{KeyFrom, key_from};
use super::token::TokenAuth;
use crate::auth::context::RequestContext;
use crate::auth::identity::{Identity, Provider};
use crate::auth::stored_secrets;
use crate::auth::token_session::virtual_key;
use crate::auth::verified::VerifiedCache;
use crate::error::ProxyError;
use crate::idp::{IdpError, Introspection};
use crate::jose::{self, Family, Skews, TimeError, Times};
use crate::sessions::Session;

const SESSIONS_CACHED: usize = 50_000;

#[derive(Debug)]
struct JwtProvider {
    issuer: String,
    family: Family,
    key: KeyFrom,
    skews: Skews,
    identity_field: String,
}

#[derive(Debug)]
struct IntrospectionProvider {
    endpoint: Introspection,
    identity_field: String,
}

#[derive(Debug)]
pub struct ExternalOAuth {
    api_id: Arc<str>,
    api_name: String,
    org_id: String,
    reader: TokenAuth,
    jwt: Vec<JwtProvider>,
    introspection: Option<IntrospectionProvider>,
    /// The virtual session of each identity, by the hash of its key: they differ only by id.
    sessions: VerifiedCache<(Arc<Session>, Arc<str>)>,
}

fn claim_identity<'c>(claims: &'c Map<String, Value>, field: &str) -> Option<&'c str> {
    let from = |name: &str| jose::claim(claims, name).and_then(Value::as_str);
    (!field.is_empty())
        .then(|| from(field))
        .flatten()
        .or_else(|| from("sub"))
        .filter(|s| !s.is_empty())
}

fn time_message(e: TimeError) -> ProxyError {
    ProxyError::ExternalTime(match e {
        TimeError::Expired => "token has expired",
        TimeError::UsedBeforeIssued => "token used before issued",
        TimeError::NotYetValid => "token is not valid yet",
    })
}

impl ExternalOAuth {
    pub fn new(spec: &ApiSpec, idp: &IdpSpec) -> Result<Self, ValidationError> {
        let mut jwt = Vec::new();
        let mut introspection = None;
        for (i, p) in idp.external_oauth.providers.iter().enumerate() {
            let at = format!("external_oauth.providers[{i}]");
            if p.jwt.enabled {
                let method = if p.jwt.signing_method.is_empty() {
                    "hmac"
                } else {
                    &p.jwt.signing_method
                };
                let family = Family::parse(method).ok_or_else(|| {
                    ValidationError::new(
                        format!("{at}.jwt.signing_method"),
                        "must be hmac, rsa or ecdsa",
                    )
                })?;
                let field = format!("{at}.jwt.source");
                let key = key_from(&spec.api_id, &field, &p.jwt.source)?;
                if matches!(key, KeyFrom::PerKey) {
                    return Err(ValidationError::new(field, "is required"));
                }
                jwt.push(JwtProvider {
                    issuer: p.jwt.issuer.clone(),
                    family,
                    key,
                    skews: Skews {
                        issued_at: p.jwt.issued_at_validation_skew,
                        expires_at: p.jwt.expires_at_validation_skew,
                        not_before: p.jwt.not_before_validation_skew,
                    },
                    identity_field: p.jwt.identity_base_field.clone(),
                });
            } else if p.introspection.enabled && introspection.is_none() {
                let i = &p.introspection;
                let secret = stored_secrets::open(
                    &spec.api_id,
                    &format!("{at}.introspection.client_secret"),
                    &i.client_secret,
                )?;
                introspection = Some(IntrospectionProvider {
                    endpoint: Introspection {
                        url: i.url.clone(),
                        client_id: i.client_id.clone(),
                        client_secret: secret,
                        cache: i.cache.enabled.then(|| {
                            Duration::from_secs(u64::try_from(i.cache.timeout).unwrap_or(0))
                        }),
                    },
                    identity_field: i.identity_base_field.clone(),
                });
            }
        }
        let source: &AuthTokenSpec = idp
            .auth_configs
            .external_oauth
            .as_ref()
            .unwrap_or(&spec.auth);
        let reader = TokenAuth::reader(source).ok_or_else(|| {
            ValidationError::new(
                "auth_configs.externalOAuth.auth_header_name",
                "must be a valid HTTP header name",
            )
        })?;
        Ok(Self {
            api_id: spec.api_id.as_str().into(),
            api_name: spec.name.clone(),
            org_id: spec.org_id.clone(),
            reader,
            jwt,
            introspection,
            sessions: VerifiedCache::new(SESSIONS_CACHED),
        })
    }

    /// The identity of a JWT access token, checked against the provider of its issuer (or,
    /// for providers that name none, each in turn).
    async fn jwt_identity(
        &self,
        ctx: &RequestContext<'_>,
        token: &str,
    ) -> Result<String, ProxyError> {
        let jws = jose::decode(token).map_err(|_| ProxyError::ExternalInvalid)?;
        // `none` or an algorithm nobody verifies is a bad token, not a provider failure.
        if jws.alg.is_none() {
            return Err(ProxyError::ExternalInvalid);
        }
        let iss = jws.claims.get("iss").and_then(Value::as_str).unwrap_or("");
        let by_issuer = self
            .jwt
            .iter()
            .any(|p| !p.issuer.is_empty() && p.issuer == iss);
        let candidates = self.jwt.iter().filter(|p| {
            if by_issuer {
                p.issuer == iss
            } else {
                p.issuer.is_empty()
            }
        });
        let mut family_fits = false;
        for p in candidates {
            if jws.alg.is_none_or(|a| a.family() != p.family) {
                continue;
            }
            family_fits = true;
            let ok = match &p.key {
                KeyFrom::Static(key) => jose::verify(&jws, key).is_ok(),
                KeyFrom::Jwks(url) => match ctx
                    .idp()
                    .key_set(&self.api_id, url, jws.header.kid.as_deref())
                    .await
                {
                    Ok(set) => set
                        .find(jws.header.kid.as_deref(), p.family)
                        .is_some_and(|key| jose::verify(&jws, key).is_ok()),
                    Err(e) if e.is_outage() => return Err(ProxyError::ExternalError),
                    Err(_) => false,
                },
                KeyFrom::PerKey => false,
            };
            if !ok {
                continue;
            }
            let now = chrono::Utc::now().timestamp();
            Times::of(&jws.claims)
                .check(now, p.skews)
                .map_err(time_message)?;
            return claim_identity(&jws.claims, &p.identity_field)
                .map(str::to_owned)
                .ok_or(ProxyError::ExternalInvalid);
        }
        // Tyk answers a token of another algorithm family than the provider's with 500.
        Err(if family_fits {
            ProxyError::ExternalInvalid
        } else {
            ProxyError::ExternalError
        })
    }

    async fn introspected_identity(
        &self,
        ctx: &RequestContext<'_>,
        provider: &IntrospectionProvider,
        token: &str,
    ) -> Result<String, ProxyError> {
        match ctx
            .idp()
            .introspect(&self.api_id, &provider.endpoint, token)
            .await
        {
            Ok(claims) => claim_identity(&claims, &provider.identity_field)
                .or_else(|| claims.get("username").and_then(Value::as_str))
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or(ProxyError::ExternalInvalid),
            Err(IdpError::Inactive) => Err(ProxyError::ExternalInvalid),
            Err(e) => {
                tracing::debug!(api_id = %self.api_id, error = %e, "introspection failed");
                Err(ProxyError::ExternalError)
            }
        }
    }

    fn session(&self, identity: &str) -> Result<(Arc<Session>, Arc<str>), ProxyError> {
        let key = virtual_key(&self.org_id, identity);
        let digest = jose::token_digest(&key);
        let now = chrono::Utc::now().timestamp();
        if let Some(found) = self.sessions.get(&digest, now) {
            return Ok(found);
        }
        let mut rights = Map::new();
        rights.insert(
            self.api_id.to_string(),
            json!({"api_id": &*self.api_id, "api_name": self.api_name, "versions": []}),
        );
        let state = SessionState::from_value(json!({
            "org_id": self.org_id,
            "alias": identity,
            "access_rights": rights,
            "quota_max": -1,
        }))
        .map_err(|_| ProxyError::ExternalError)?;
        let made = (
            Arc::new(Session::new(state)),
            Arc::from(portcullis_proto::key_hash::key_hash(&key)),
        );
        self.sessions.insert(digest, made.clone(), now, None);
        Ok(made)
    }
}

#[async_trait::async_trait]
impl AuthMethod for ExternalOAuth {
    fn provider(&self) -> Provider {
        Provider::OauthKey
    }

    fn presented(&self, ctx: &RequestContext<'_>) -> bool {
        !super::other_scheme(ctx.parts, self.reader.header())
            && self
                .reader
                .find(ctx.parts)
                .is_some_and(|t| self.introspection.is_some() || super::looks_like_jwt(&t))
    }

    async fn authenticate(&self, ctx: &RequestContext<'_>) -> Result<Identity, ProxyError> {
        let token = self
            .reader
            .find(ctx.parts)
            .ok_or(ProxyError::ExternalMissing)?;
        let looks_like_jwt = token.bytes().filter(|b| *b == b'.').count() == 2;
        let identity = match (&self.introspection, looks_like_jwt && !self.jwt.is_empty()) {
            (_, true) => self.jwt_identity(ctx, &token).await?,
            (Some(p), false) => self.introspected_identity(ctx, p, &token).await?,
            (None, false) => return Err(ProxyError::ExternalInvalid),
        };
        let (session, key_hash) = self.session(&identity)?;
        Ok(Identity {
            session,
            key_hash: key_hash.to_string(),
            provider: Provider::OauthKey,
            source: crate::auth::identity::Source::Token,
        })
    }

    fn strip(&self, parts: &mut Parts) {
        self.reader.strip(parts);
    }
}
