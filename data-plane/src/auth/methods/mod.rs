//! One module per authentication method, each behind [`AuthMethod`]. A method reads its
//! credential from the request context and proves an [`Identity`]; it never looks sessions up
//! by itself (`RequestContext::stored_key` does), so caching, events and outage handling stay
//! in one place. Adding a method: a file here plus one line in `super::chain::build`.

pub mod basic;
pub mod external_oauth;
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

    /// Proves who the request comes from, or answers with the method's error.
    async fn authenticate(&self, ctx: &RequestContext<'_>) -> Result<Identity, ProxyError>;

    /// Removes the credential before the request goes upstream (`strip_auth_data`).
    fn strip(&self, parts: &mut Parts);

    /// `WWW-Authenticate` value sent with this method's 401 answers.
    fn challenge(&self) -> Option<&HeaderValue> {
        None
    }
}
