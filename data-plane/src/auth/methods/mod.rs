//! One module per authentication method, each behind [`AuthMethod`]. A method reads its
//! credential from the request context and proves an [`Identity`]; it never looks sessions up
//! by itself (`RequestContext::stored_key` does), so caching, events and outage handling stay
//! in one place. Adding a method: a file here plus one line in `super::chain::build`.

pub mod basic;
pub mod coprocess;
pub mod external_oauth;
pub mod hmac;
pub mod js_auth;
pub mod jwt;
pub mod mtls;
pub mod oauth2;
pub mod oidc;
pub mod token;

use http::HeaderValue;
use http::request::Parts;

use super::context::RequestContext;
use super::identity::{Identity, Provider};
use crate::error::ProxyError;

#[async_trait::async_trait]
pub trait AuthMethod: Send + Sync + std::fmt::Debug {
    /// Which `base_identity_provided_by` value names this method.
    fn provider(&self) -> Provider;

    /// True when the method reads the request body (which is then buffered, up to 1 MiB).
    fn needs_body(&self) -> bool {
        false
    }

    /// True when the method reads the client's certificates or the certificate store.
    fn needs_certs(&self) -> bool {
        false
    }

    /// True when the request carries this method's kind of credential (valid or not). The
    /// "any of" chain lets the first method that says so decide (docs/architecture.md).
    fn presented(&self, ctx: &RequestContext<'_>) -> bool;

    /// Proves who the request comes from, or answers with the method's error.
    async fn authenticate(&self, ctx: &RequestContext<'_>) -> Result<Identity, ProxyError>;

    /// Removes the credential before the request goes upstream (`strip_auth_data`).
    fn strip(&self, parts: &mut Parts);

    /// `WWW-Authenticate` value sent with this method's 401 answers.
    fn challenge(&self) -> Option<&HeaderValue> {
        None
    }
}

/// Three dot-separated segments: what a JWT (JWS compact form) looks like. Opaque tokens and
/// API keys do not, so the "any of" chain can tell a JWT method's credential from theirs.
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

/// True when `header` holds a credential of a scheme other than Bearer (`Basic …`,
/// `Signature …`): never a token for the token methods of the "any of" chain, which would
/// otherwise send a password or a key to an identity provider.
pub fn other_scheme(parts: &Parts, header: &http::HeaderName) -> bool {
    parts
        .headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once([' ', '\t']))
        .is_some_and(|(scheme, _)| !scheme.eq_ignore_ascii_case("bearer"))
}
