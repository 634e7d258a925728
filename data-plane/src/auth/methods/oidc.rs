//! OpenID Connect (`use_openid`, deprecated in Tyk but still used): an ID token whose issuer is
//! one of `openid_options.providers`, checked against the JWK set the issuer's discovery
//! document names; its audience (the client id) picks the policy. The identity gets a session
//! made at the edge, as JWT identities do (docs/jwt.md, "OpenID Connect").

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use http::request::Parts;
use portcullis_proto::model::idp_auth::IdpSpec;
use portcullis_proto::model::{ApiSpec, AuthTokenSpec, ValidationError};
use serde_json::Value;

use super::AuthMethod;
use super::token::TokenAuth;
use crate::auth::context::RequestContext;
use crate::auth::identity::{Identity, Provider};
use crate::auth::token_session::{self, Wanted};
use crate::error::ProxyError;
use crate::jose::{self, Family, Skews, Times};

#[derive(Debug)]
struct Issuer {
    issuer: String,
    /// Client id (decoded) → policy id.
    clients: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct OpenIdConnect {
    api_id: Arc<str>,
    org_id: String,
    reader: TokenAuth,
    issuers: Vec<Issuer>,
    segregate_by_client: bool,
}

impl OpenIdConnect {
    pub fn new(spec: &ApiSpec, idp: &IdpSpec) -> Result<Self, ValidationError> {
        let mut issuers = Vec::new();
        for (i, p) in idp.openid_options.providers.iter().enumerate() {
            let mut clients = BTreeMap::new();
            for (encoded, policy) in &p.client_ids {
                let id = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        ValidationError::new(
                            format!("openid_options.providers[{i}].client_ids.{encoded}"),
                            "must be the base64 of a client id",
                        )
                    })?;
                clients.insert(id, policy.clone());
            }
            issuers.push(Issuer {
                issuer: p.issuer.trim_end_matches('/').to_owned(),
                clients,
            });
        }
        let source: &AuthTokenSpec = idp.auth_configs.oidc.as_ref().unwrap_or(&spec.auth);
        let reader = TokenAuth::reader(source).ok_or_else(|| {
            ValidationError::new(
                "auth_configs.oidc.auth_header_name",
                "must be a valid HTTP header name",
            )
        })?;
        Ok(Self {
            api_id: spec.api_id.as_str().into(),
            org_id: spec.org_id.clone(),
            reader,
            issuers,
            segregate_by_client: idp.openid_options.segregate_by_client,
        })
    }
}

/// The client an ID token was issued to: `aud` (a string, or the first of an array).
fn audience(claims: &serde_json::Map<String, Value>) -> Option<&str> {
    match claims.get("aud")? {
        Value::String(s) => Some(s),
        Value::Array(a) => a.first()?.as_str(),
        _ => None,
    }
}

#[async_trait::async_trait]
impl AuthMethod for OpenIdConnect {
    fn provider(&self) -> Provider {
        Provider::OidcUser
    }

    fn presented(&self, ctx: &RequestContext<'_>) -> bool {
        !super::other_scheme(ctx.parts, self.reader.header())
            && self
                .reader
                .find(ctx.parts)
                .is_some_and(|t| super::looks_like_jwt(&t))
    }

    async fn authenticate(&self, ctx: &RequestContext<'_>) -> Result<Identity, ProxyError> {
        let token = self.reader.find(ctx.parts).ok_or(ProxyError::AuthMissing)?;
        let jws = jose::decode(&token).map_err(|_| ProxyError::OidcNotAuthorised)?;
        let iss = jws.claims.get("iss").and_then(Value::as_str).unwrap_or("");
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss.trim_end_matches('/'))
            .ok_or(ProxyError::OidcNotAuthorised)?;
        // ID tokens are signed with the provider's published keys, never a shared secret.
        let family = match jws.alg.map(|a| a.family()) {
            Some(f @ (Family::Rsa | Family::Ecdsa)) => f,
            _ => return Err(ProxyError::OidcNotAuthorised),
        };
        let idp = ctx.idp();
        let jwks = idp.discover_jwks_uri(&issuer.issuer).await.map_err(|e| {
            tracing::debug!(api_id = %self.api_id, error = %e, "OpenID discovery failed");
            ProxyError::OidcNotAuthorised
        })?;
        let set = idp
            .key_set(&self.api_id, &jwks, jws.header.kid.as_deref())
            .await
            .map_err(|_| ProxyError::OidcNotAuthorised)?;
        let key = set
            .find(jws.header.kid.as_deref(), family)
            .ok_or(ProxyError::OidcNotAuthorised)?;
        jose::verify(&jws, key).map_err(|_| ProxyError::OidcNotAuthorised)?;
        let times = Times::of(&jws.claims);
        times
            .check(chrono::Utc::now().timestamp(), Skews::default())
            .map_err(|_| ProxyError::OidcNotAuthorised)?;
        let client = audience(&jws.claims).ok_or(ProxyError::OidcNotAuthorised)?;
        let policy = issuer
            .clients
            .get(client)
            .ok_or(ProxyError::OidcNotAuthorised)?;
        let sub = jws
            .claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(ProxyError::OidcNotAuthorised)?;
        // Length-prefixed, so that no issuer and subject pair spells another's.
        let identity = if self.segregate_by_client {
            format!("{}:{iss}{}:{sub}{client}", iss.len(), sub.len())
        } else {
            format!("{}:{iss}{sub}", iss.len())
        };
        let key = token_session::virtual_key(&self.org_id, &identity);
        let key_hash = portcullis_proto::key_hash::key_hash(&key);
        let policies = [policy.clone()];
        token_session::session_for(
            ctx,
            &Wanted {
                org_id: &self.org_id,
                identity: sub,
                key: &key,
                key_hash: &key_hash,
                policies: &policies,
                expires: times.exp().unwrap_or(0),
                issued_at: times.iat(),
                provider: Provider::OidcUser,
            },
        )
        .await
        .map_err(|e| match e {
            ProxyError::JwtNotAuthorized => ProxyError::OidcNotAuthorised,
            other => other,
        })
    }

    fn strip(&self, parts: &mut Parts) {
        self.reader.strip(parts);
    }
}
