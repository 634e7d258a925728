//! A route's authentication chain, built once when the configuration is applied: every
//! enabled method in Tyk's order. In Tyk's mode all of them must pass and
//! `base_identity_provided_by` picks whose session the request then runs under; in the "any
//! of" mode (`auth_chain_mode: any`) the first method whose credential is present decides
//! alone (docs/architecture.md, "The authentication chain").

use http::HeaderValue;
use http::request::Parts;
use portcullis_proto::model::{ApiDefinition, ValidationError};

use super::context::RequestContext;
use super::identity::{Identity, Provider};
use super::methods::AuthMethod;
use super::methods::basic::BasicAuth;
use super::methods::coprocess::CoprocessAuth;
use super::methods::external_oauth::ExternalOAuth;
use super::methods::hmac::HmacAuth;
use super::methods::js_auth::JsAuth;
use super::methods::jwt::JwtAuth;
use super::methods::mtls::{CertificateCheck, CertificateToken};
use super::methods::oauth2::OAuth2Bearer;
use super::methods::oidc::OpenIdConnect;
use super::methods::token::{TokenAuth, open_signature_secret};
use crate::error::ProxyError;

/// Why a chain refused a request: the failing method's error and its challenge.
#[derive(Debug)]
pub struct Failure {
    pub error: ProxyError,
    pub challenge: Option<HeaderValue>,
}

impl From<ProxyError> for Failure {
    fn from(error: ProxyError) -> Self {
        Self {
            error,
            challenge: None,
        }
    }
}

/// What a chain proved: the identity the request runs under, and the other methods'
/// identities, which must pass their own expiry and rights checks too.
#[derive(Debug)]
pub struct Proven {
    pub base: Identity,
    /// Empty (no allocation) for single-method chains.
    pub others: Vec<Identity>,
}

#[derive(Debug, Default)]
pub struct AuthChain {
    /// In Tyk's order: OAuth 2.0, external OAuth, basic, HMAC, JWT, OIDC, custom plugins,
    /// auth token.
    methods: Vec<Box<dyn AuthMethod>>,
    /// Index into `methods` of the method whose identity the request runs under.
    base: usize,
    /// The first method whose credential is present decides alone.
    any_of: bool,
    /// Static mTLS, checked before any method (and on keyless APIs).
    certificate_check: Option<CertificateCheck>,
    needs_body: bool,
    needs_certs: bool,
}

/// The methods of an API definition, in chain order. A new method adds its line here.
fn enabled_methods(def: &ApiDefinition) -> Result<Vec<Box<dyn AuthMethod>>, ValidationError> {
    let (spec, idp) = (def.spec(), def.idp());
    let mut methods: Vec<Box<dyn AuthMethod>> = Vec::new();
    if def.oauth().use_oauth2 {
        methods.push(Box::new(OAuth2Bearer));
    }
    if idp.external_oauth.enabled {
        methods.push(Box::new(ExternalOAuth::new(spec, idp)?));
    }
    if spec.use_basic_auth {
        let name = if spec.name.is_empty() {
            &spec.api_id
        } else {
            &spec.name
        };
        methods.push(Box::new(BasicAuth::new(name, &spec.basic_auth)));
    }
    if def.hmac().enable_signature_checking {
        methods.push(Box::new(HmacAuth::new(def)?));
    }
    if idp.enable_jwt {
        methods.push(Box::new(JwtAuth::new(spec, idp)?));
    }
    if idp.use_openid {
        methods.push(Box::new(OpenIdConnect::new(spec, idp)?));
    }
    match def.plugins().served_driver() {
        Some("grpc") => methods.push(Box::new(CoprocessAuth::new(def)?)),
        Some("otto") => methods.push(Box::new(JsAuth::new(def)?)),
        _ => {}
    }
    // Tyk adds auth token when asked to, or when no other method is enabled.
    if spec.use_standard_auth || methods.is_empty() {
        if spec.auth.use_certificate {
            methods.push(Box::new(CertificateToken::new(&spec.org_id)));
        } else {
            let auth = open_signature_secret(&spec.api_id, &spec.auth)?;
            let token = TokenAuth::new(&auth).ok_or_else(|| {
                ValidationError::new("auth.auth_header_name", "must be a valid HTTP header name")
            })?;
            methods.push(Box::new(token));
        }
    }
    Ok(methods)
}

fn certificate_bound(ctx: &RequestContext<'_>, identity: &Identity) -> Result<(), ProxyError> {
    let bound = &identity.session.state.spec().certificate;
    if bound.is_empty() {
        return Ok(());
    }
    let presented = ctx
        .conn
        .peer_leaf()
        .map(|leaf| super::methods::mtls::sha256_hex(leaf.as_ref()));
    match presented {
        Some(hex) if bound.ends_with(&hex) => Ok(()),
        _ => Err(ProxyError::CertMismatch),
    }
}

impl AuthChain {
    pub fn build(def: &ApiDefinition) -> Result<Self, ValidationError> {
        let spec = def.spec();
        let certificate_check = spec
            .use_mutual_tls_auth
            .then(|| CertificateCheck::new(&spec.client_certificates));
        let methods = if spec.use_keyless {
            Vec::new()
        } else {
            enabled_methods(def)?
        };
        // Unset: every method writes the session in turn in Tyk, so the last one's stands.
        let base = match Provider::parse(&spec.base_identity_provided_by) {
            None => methods.len().saturating_sub(1),
            Some(p) => methods
                .iter()
                .position(|m| m.provider() == p)
                .ok_or_else(|| {
                    ValidationError::new(
                        "base_identity_provided_by",
                        "names a method this API does not enable",
                    )
                })?,
        };
        Ok(Self {
            needs_body: methods.iter().any(|m| m.needs_body()),
            needs_certs: certificate_check.is_some() || methods.iter().any(|m| m.needs_certs()),
            methods,
            base,
            any_of: spec.auth_chain_mode == "any",
            certificate_check,
        })
    }

    /// True when no method runs (keyless APIs; the static mTLS check may still apply).
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty()
    }

    pub fn needs_body(&self) -> bool {
        self.needs_body
    }

    /// True when the chain reads the client's certificates or the certificate store.
    pub fn needs_certs(&self) -> bool {
        self.needs_certs
    }

    /// The static mTLS check alone (keyless APIs run only this).
    pub fn check_certificate(&self, ctx: &RequestContext<'_>) -> Result<(), ProxyError> {
        match (&self.certificate_check, ctx.certs) {
            (None, _) => Ok(()),
            (Some(check), Some(certs)) => check.check(ctx.conn, certs),
            // A route that needs certificates is always given the store; refuse if not.
            (Some(_), None) => Err(ProxyError::ClientCertMissing),
        }
    }

    /// Runs every method; the base identity (and the others, for their own checks) on
    /// success, the first failure otherwise.
    pub async fn run(&self, ctx: &RequestContext<'_>) -> Result<Proven, Failure> {
        self.check_certificate(ctx)?;
        if self.any_of {
            return self.run_any_of(ctx).await;
        }
        let mut base = None;
        let mut others = Vec::new();
        for (i, method) in self.methods.iter().enumerate() {
            let identity = self.prove(method.as_ref(), ctx).await?;
            if i == self.base {
                base = Some(identity);
            } else {
                others.push(identity);
            }
        }
        // An API with no usable method is closed, not open.
        let base = base.ok_or_else(|| Failure::from(ProxyError::AuthMissing))?;
        Ok(Proven { base, others })
    }

    /// One method's identity, bound to the connection's certificate where the API or the key
    /// asks for it; the method's error and challenge otherwise.
    async fn prove(
        &self,
        method: &dyn AuthMethod,
        ctx: &RequestContext<'_>,
    ) -> Result<Identity, Failure> {
        let started = ctx.trace().map(|_| crate::trace::now_ns());
        let proven = method.authenticate(ctx).await;
        if let (Some(trace), Some(started)) = (ctx.trace(), started) {
            trace.child(
                "portcullis.auth",
                crate::trace::Kind::Internal,
                started,
                vec![(
                    "portcullis.auth.method",
                    crate::trace::Attr::Str(method.provider().as_str().to_owned()),
                )],
                proven.as_ref().err().map(ToString::to_string),
            );
        }
        let identity = proven.map_err(|error| Failure {
            challenge: (error.status() == http::StatusCode::UNAUTHORIZED)
                .then(|| method.challenge().cloned())
                .flatten(),
            error,
        })?;
        if let Some(check) = &self.certificate_check {
            check.check_binding(ctx.conn, &identity)?;
        }
        // A key made for a certificate is named after its public fingerprint, so anyone
        // holding the certificate could compute it: whatever method found it, it only
        // stands with that certificate presented on this connection.
        certificate_bound(ctx, &identity)?;
        Ok(identity)
    }

    /// The "any of" mode: the first method (in Tyk's order) whose credential is present runs
    /// alone, and its answer is final; a present but invalid credential never falls through to
    /// a later method. Without any credential, the first method answers as it would alone.
    async fn run_any_of(&self, ctx: &RequestContext<'_>) -> Result<Proven, Failure> {
        let method = self
            .methods
            .iter()
            .find(|m| m.presented(ctx))
            .or_else(|| self.methods.first())
            .ok_or_else(|| Failure::from(ProxyError::AuthMissing))?;
        let identity = self.prove(method.as_ref(), ctx).await?;
        Ok(Proven {
            base: identity,
            others: Vec::new(),
        })
    }

    /// The base method's challenge, sent with 401s from the checks after the chain.
    pub fn base_challenge(&self) -> Option<HeaderValue> {
        self.methods
            .get(self.base)
            .and_then(|m| m.challenge().cloned())
    }

    /// Removes every method's credential (`strip_auth_data`).
    pub fn strip(&self, parts: &mut Parts) {
        for m in &self.methods {
            m.strip(parts);
        }
    }
}

#[cfg(test)]
mod tests {
    use portcullis_proto::model::ApiDefinition;

    use super::*;

    #[test]
    fn oauth2_comes_first_in_tyks_order_and_stands_alone_without_auth_token() {
        let def = |extra: serde_json::Value| {
            let mut v = serde_json::json!({
                "api_id": "a", "use_oauth2": true,
                "proxy": {"listen_path": "/a/", "target_url": "http://127.0.0.1:1/"}
            });
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            ApiDefinition::from_value(v).unwrap()
        };
        let providers = |d: &ApiDefinition| -> Vec<Provider> {
            AuthChain::build(d)
                .unwrap()
                .methods
                .iter()
                .map(|m| m.provider())
                .collect()
        };
        assert_eq!(providers(&def(serde_json::json!({}))), [Provider::OauthKey]);
        assert_eq!(
            providers(&def(
                serde_json::json!({"use_basic_auth": true, "use_standard_auth": true})
            )),
            [
                Provider::OauthKey,
                Provider::BasicAuthUser,
                Provider::AuthToken
            ]
        );
        assert!(providers(&def(serde_json::json!({"use_keyless": true}))).is_empty());
    }
}
