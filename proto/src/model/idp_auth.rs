//! The fields of a Tyk Classic API definition that accept tokens from identity providers:
//! JWT (`enable_jwt`, `jwt_*`), external OAuth (`external_oauth`) and OpenID Connect
//! (`use_openid`, `openid_options`). Read as a typed view of its own so that errors keep
//! their field paths (docs/jwt.md, docs/external-oauth.md).

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

use super::json::null_as_default;
use super::{AuthTokenSpec, ValidationError};

/// Largest `jwt_*_validation_skew`, seconds (one day).
pub const MAX_JWT_SKEW_SECS: u64 = 86_400;
/// Entries of `jwt_scope_to_policy_mapping`, `jwt_default_policies`, providers, client ids.
pub const MAX_IDP_LIST: usize = 256;
/// Introspection cache time, seconds (one day).
pub const MAX_INTROSPECTION_CACHE_SECS: i64 = 86_400;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct IdpSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub enable_jwt: bool,
    /// `hmac`, `rsa` or `ecdsa`; empty means `hmac`, as Tyk.
    #[serde(default, deserialize_with = "null_as_default")]
    pub jwt_signing_method: String,
    /// base64 of a secret, a PEM public key or certificate, or a JWKS URL; a plain http(s) URL
    /// is accepted too. Empty: the key named by the token's `kid` holds `jwt_data.secret`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub jwt_source: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub jwt_identity_base_field: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub jwt_client_base_field: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub jwt_policy_field_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub jwt_default_policies: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub jwt_issued_at_validation_skew: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub jwt_expires_at_validation_skew: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub jwt_not_before_validation_skew: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub jwt_skip_kid: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub jwt_scope_to_policy_mapping: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub jwt_scope_claim_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub scopes: Scopes,
    #[serde(default, deserialize_with = "null_as_default")]
    pub external_oauth: ExternalOAuth,
    #[serde(default, deserialize_with = "null_as_default")]
    pub use_openid: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub openid_options: OpenIdOptions,
    /// Where each method reads its token; a missing entry falls back to `auth` (Tyk).
    #[serde(default, deserialize_with = "null_as_default")]
    pub auth_configs: AuthConfigs,
    /// Portcullis extension: the split-token flow built in (docs/jwt.md, "Split tokens").
    #[serde(default, deserialize_with = "null_as_default")]
    pub split_token: SplitToken,
}

/// The client keeps only a JWT's signature; the gateway keeps its header and payload.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct SplitToken {
    #[serde(default, deserialize_with = "null_as_default")]
    pub enabled: bool,
    /// The identity provider's token endpoint the login is passed to.
    #[serde(default, deserialize_with = "null_as_default")]
    pub token_url: String,
    /// Path under the listen path that answers logins; default `/token`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub token_path: String,
}

impl SplitToken {
    /// The login path under the listen path.
    pub fn path(&self) -> &str {
        if self.token_path.is_empty() {
            "/token"
        } else {
            &self.token_path
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct AuthConfigs {
    #[serde(default)]
    pub jwt: Option<AuthTokenSpec>,
    #[serde(default, rename = "externalOAuth")]
    pub external_oauth: Option<AuthTokenSpec>,
    #[serde(default)]
    pub oidc: Option<AuthTokenSpec>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Scopes {
    #[serde(default, deserialize_with = "null_as_default")]
    pub jwt: ScopeMapping,
    #[serde(default, deserialize_with = "null_as_default")]
    pub oidc: ScopeMapping,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ScopeMapping {
    #[serde(default, deserialize_with = "null_as_default")]
    pub scope_claim_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub scope_to_policy: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ExternalOAuth {
    #[serde(default, deserialize_with = "null_as_default")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub providers: Vec<Provider>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Provider {
    #[serde(default, deserialize_with = "null_as_default")]
    pub jwt: ProviderJwt,
    #[serde(default, deserialize_with = "null_as_default")]
    pub introspection: Introspection,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ProviderJwt {
    #[serde(default, deserialize_with = "null_as_default")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub signing_method: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub source: String,
    /// Portcullis extension: the `iss` this provider signs; with several providers, a token
    /// goes to the provider of its issuer.
    #[serde(default, deserialize_with = "null_as_default")]
    pub issuer: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub identity_base_field: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub issued_at_validation_skew: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub not_before_validation_skew: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub expires_at_validation_skew: u64,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Introspection {
    #[serde(default, deserialize_with = "null_as_default")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub url: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub client_id: String,
    /// Sealed by the control plane before it is stored (docs/external-oauth.md).
    #[serde(default, deserialize_with = "null_as_default")]
    pub client_secret: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub identity_base_field: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub cache: IntrospectionCache,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct IntrospectionCache {
    #[serde(default, deserialize_with = "null_as_default")]
    pub enabled: bool,
    /// Seconds; 0 means until the token's `exp`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub timeout: i64,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct OpenIdOptions {
    #[serde(default, deserialize_with = "null_as_default")]
    pub providers: Vec<OpenIdProvider>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub segregate_by_client: bool,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct OpenIdProvider {
    #[serde(default, deserialize_with = "null_as_default")]
    pub issuer: String,
    /// base64 of the client id → policy id.
    #[serde(default, deserialize_with = "null_as_default")]
    pub client_ids: BTreeMap<String, String>,
}

/// What a `jwt_source` (or a provider's `source`) holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// No source: the key named by the token's `kid` holds the secret (`jwt_data.secret`).
    PerKey,
    /// A JWK set to fetch.
    JwksUrl(String),
    /// A PEM public key or certificate.
    Pem(Vec<u8>),
    /// An HMAC shared secret.
    Secret(Vec<u8>),
    /// Sealed by the control plane; the edge opens it (docs/jwt.md).
    Sealed(String),
}

fn is_url(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://"))
        && url::Url::parse(s).is_ok_and(|u| u.host_str().is_some_and(|h| !h.is_empty()))
}

/// Classifies a source as Tyk reads it: a URL as it is, or base64 of a URL, a PEM or a secret.
pub fn key_source(field: &str, source: &str) -> Result<KeySource, ValidationError> {
    let source = source.trim();
    if source.is_empty() {
        return Ok(KeySource::PerKey);
    }
    if crate::sealed_field::is_sealed(source) {
        return Ok(KeySource::Sealed(source.to_owned()));
    }
    if is_url(source) {
        return Ok(KeySource::JwksUrl(source.to_owned()));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(source)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(source))
        .map_err(|_| {
            ValidationError::new(
                field,
                "must be base64 of a secret, a PEM public key or a JWKS URL, or an http(s) URL",
            )
        })?;
    let text = std::str::from_utf8(&decoded).unwrap_or("");
    if is_url(text.trim()) {
        return Ok(KeySource::JwksUrl(text.trim().to_owned()));
    }
    if text.contains("-----BEGIN") {
        if text.contains("PRIVATE KEY") {
            return Err(ValidationError::new(
                field,
                "holds a private key; give the public key or certificate",
            ));
        }
        return Ok(KeySource::Pem(decoded));
    }
    if decoded.is_empty() {
        return Err(ValidationError::new(field, "decodes to an empty secret"));
    }
    Ok(KeySource::Secret(decoded))
}

/// `hmac`, `rsa`, `ecdsa`; empty is Tyk's default, `hmac`.
fn signing_method(field: &str, method: &str) -> Result<&'static str, ValidationError> {
    match method {
        "" | "hmac" => Ok("hmac"),
        "rsa" => Ok("rsa"),
        "ecdsa" => Ok("ecdsa"),
        _ => Err(ValidationError::new(field, "must be hmac, rsa or ecdsa")),
    }
}

/// A source must suit its signing method: a public key is never an HMAC secret (that is how
/// algorithm-confusion attacks forge tokens), and RSA or ECDSA need a key, not a secret.
fn source_fits(field: &str, method: &str, source: &KeySource) -> Result<(), ValidationError> {
    match (method, source) {
        ("hmac", KeySource::Pem(_)) => Err(ValidationError::new(
            field,
            "holds a public key, but jwt_signing_method is hmac; a public key is never used as an HMAC secret",
        )),
        ("rsa" | "ecdsa", KeySource::Secret(_)) => Err(ValidationError::new(
            field,
            "must be a base64 PEM public key or a JWKS URL for rsa and ecdsa",
        )),
        _ => Ok(()),
    }
}

fn skew(field: &str, v: u64) -> Result<(), ValidationError> {
    if v > MAX_JWT_SKEW_SECS {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_JWT_SKEW_SECS} seconds"),
        ));
    }
    Ok(())
}

fn bounded<T>(field: &str, list: impl ExactSizeIterator<Item = T>) -> Result<(), ValidationError> {
    if list.len() > MAX_IDP_LIST {
        return Err(ValidationError::new(
            field,
            format!("at most {MAX_IDP_LIST} entries"),
        ));
    }
    Ok(())
}

fn http_url(field: &str, url: &str) -> Result<(), ValidationError> {
    if !is_url(url) {
        return Err(ValidationError::new(field, "must be an http(s) URL"));
    }
    Ok(())
}

impl IdpSpec {
    /// The claim holding the scopes (`scopes.jwt.scope_claim_name`, then the deprecated
    /// `jwt_scope_claim_name`, then `scope`).
    pub fn scope_claim(&self) -> &str {
        [
            &self.scopes.jwt.scope_claim_name,
            &self.jwt_scope_claim_name,
        ]
        .into_iter()
        .find(|s| !s.is_empty())
        .map_or("scope", String::as_str)
    }

    /// `scopes.jwt.scope_to_policy`, or the deprecated `jwt_scope_to_policy_mapping`.
    pub fn scope_to_policy(&self) -> &BTreeMap<String, String> {
        if self.scopes.jwt.scope_to_policy.is_empty() {
            &self.jwt_scope_to_policy_mapping
        } else {
            &self.scopes.jwt.scope_to_policy
        }
    }

    /// True when any method of this section is on.
    pub fn any_enabled(&self) -> bool {
        self.enable_jwt || self.external_oauth.enabled || self.use_openid
    }

    pub(super) fn validate(&self) -> Result<(), ValidationError> {
        if self.enable_jwt {
            let method = signing_method("jwt_signing_method", &self.jwt_signing_method)?;
            let source = key_source("jwt_source", &self.jwt_source)?;
            source_fits("jwt_source", method, &source)?;
            skew(
                "jwt_issued_at_validation_skew",
                self.jwt_issued_at_validation_skew,
            )?;
            skew(
                "jwt_expires_at_validation_skew",
                self.jwt_expires_at_validation_skew,
            )?;
            skew(
                "jwt_not_before_validation_skew",
                self.jwt_not_before_validation_skew,
            )?;
            bounded("jwt_default_policies", self.jwt_default_policies.iter())?;
            bounded(
                "jwt_scope_to_policy_mapping",
                self.jwt_scope_to_policy_mapping.iter(),
            )?;
            bounded(
                "scopes.jwt.scope_to_policy",
                self.scopes.jwt.scope_to_policy.iter(),
            )?;
        }
        if self.external_oauth.enabled {
            let providers = &self.external_oauth.providers;
            bounded("external_oauth.providers", providers.iter())?;
            if providers.is_empty() {
                return Err(ValidationError::new(
                    "external_oauth.providers",
                    "there should be at least one provider configured",
                ));
            }
            for (i, p) in providers.iter().enumerate() {
                let at = format!("external_oauth.providers[{i}]");
                if p.jwt.enabled == p.introspection.enabled {
                    return Err(ValidationError::new(
                        at,
                        "must enable exactly one of jwt and introspection",
                    ));
                }
                if p.jwt.enabled {
                    let method =
                        signing_method(&format!("{at}.jwt.signing_method"), &p.jwt.signing_method)?;
                    let field = format!("{at}.jwt.source");
                    let source = key_source(&field, &p.jwt.source)?;
                    if source == KeySource::PerKey {
                        return Err(ValidationError::new(field, "is required"));
                    }
                    source_fits(&field, method, &source)?;
                    for (name, v) in [
                        ("issued_at_validation_skew", p.jwt.issued_at_validation_skew),
                        (
                            "not_before_validation_skew",
                            p.jwt.not_before_validation_skew,
                        ),
                        (
                            "expires_at_validation_skew",
                            p.jwt.expires_at_validation_skew,
                        ),
                    ] {
                        skew(&format!("{at}.jwt.{name}"), v)?;
                    }
                }
                if p.introspection.enabled {
                    let i = &p.introspection;
                    http_url(&format!("{at}.introspection.url"), &i.url)?;
                    if !(0..=MAX_INTROSPECTION_CACHE_SECS).contains(&i.cache.timeout) {
                        return Err(ValidationError::new(
                            format!("{at}.introspection.cache.timeout"),
                            format!("must be 0 to {MAX_INTROSPECTION_CACHE_SECS} seconds"),
                        ));
                    }
                }
            }
        }
        if self.split_token.enabled {
            if !self.enable_jwt {
                return Err(ValidationError::new(
                    "split_token.enabled",
                    "needs enable_jwt: the rebuilt token is checked as a JWT",
                ));
            }
            http_url("split_token.token_url", &self.split_token.token_url)?;
            let p = self.split_token.path();
            if !p.starts_with('/')
                || p.len() > 255
                || p.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
            {
                return Err(ValidationError::new(
                    "split_token.token_path",
                    "must be a path starting with / (at most 255 characters)",
                ));
            }
        }
        if self.use_openid {
            let providers = &self.openid_options.providers;
            bounded("openid_options.providers", providers.iter())?;
            if providers.is_empty() {
                return Err(ValidationError::new(
                    "openid_options.providers",
                    "at least one provider is required",
                ));
            }
            for (i, p) in providers.iter().enumerate() {
                http_url(&format!("openid_options.providers[{i}].issuer"), &p.issuer)?;
                bounded(
                    &format!("openid_options.providers[{i}].client_ids"),
                    p.client_ids.iter(),
                )?;
                for id in p.client_ids.keys() {
                    if base64::engine::general_purpose::STANDARD
                        .decode(id)
                        .is_err()
                    {
                        return Err(ValidationError::new(
                            format!("openid_options.providers[{i}].client_ids.{id}"),
                            "must be the base64 of a client id",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;

    #[test]
    fn sources_are_classified_as_tyk_reads_them() {
        assert_eq!(key_source("f", "").unwrap(), KeySource::PerKey);
        assert_eq!(
            key_source("f", "https://idp.example/jwks.json").unwrap(),
            KeySource::JwksUrl("https://idp.example/jwks.json".into())
        );
        assert_eq!(
            key_source("f", &B64.encode("http://127.0.0.1:9/jwks")).unwrap(),
            KeySource::JwksUrl("http://127.0.0.1:9/jwks".into())
        );
        assert_eq!(
            key_source("f", &B64.encode("9879879878787878")).unwrap(),
            KeySource::Secret(b"9879879878787878".to_vec())
        );
        let pem = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            key_source("f", &B64.encode(pem)).unwrap(),
            KeySource::Pem(_)
        ));
        let private = "-----BEGIN PRIVATE KEY-----\nMFkw\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            key_source("f", &B64.encode(private)).unwrap_err().field,
            "f"
        );
        assert_eq!(key_source("f", "not base64 !").unwrap_err().field, "f");
    }

    #[test]
    fn a_public_key_is_never_an_hmac_secret() {
        let pem = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n";
        let src = key_source("jwt_source", &B64.encode(pem)).unwrap();
        assert!(source_fits("jwt_source", "hmac", &src).is_err());
        assert!(source_fits("jwt_source", "rsa", &src).is_ok());
        let secret = key_source("jwt_source", &B64.encode("s3cret")).unwrap();
        assert!(source_fits("jwt_source", "rsa", &secret).is_err());
    }
}
