//! How the gateway authenticates itself to an API's upstream (docs/upstream-auth.md):
//! static headers, basic credentials, OAuth 2.0 grants and request signing, applied in that
//! order (Tyk's: the signature is last so it covers the credentials) to the request after it
//! has its upstream path and headers.

mod basic;
mod headers;
mod oauth;
mod signing;

use std::sync::Arc;

use http::request::Parts;
use portcullis_proto::model::{ApiDefinition, ValidationError};

pub use oauth::TokenCache;

use crate::error::ProxyError;
use crate::shared::Shared;

/// An API's upstream authentication, built once when the configuration is applied (sealed
/// secrets opened then).
#[derive(Debug)]
pub struct UpstreamAuth {
    headers: Option<headers::StaticHeaders>,
    basic: Option<basic::Basic>,
    oauth: Option<oauth::OAuthClient>,
    signing: Option<signing::Signer>,
}

impl UpstreamAuth {
    /// `None` when the API authenticates nothing to its upstream. `authority` is the target's
    /// (the first of a balanced list), signed as `host` when the request carries none.
    pub fn of(def: &ApiDefinition, authority: &str) -> Result<Option<Arc<Self>>, ValidationError> {
        let authority = authority.to_owned();
        let auth = Self {
            headers: headers::StaticHeaders::of(def)?,
            basic: basic::Basic::of(def)?,
            oauth: oauth::OAuthClient::of(def)?,
            signing: signing::Signer::of(def, &def.upstream_auth().request_signing, authority)?,
        };
        let none = auth.headers.is_none()
            && auth.basic.is_none()
            && auth.oauth.is_none()
            && auth.signing.is_none();
        Ok((!none).then(|| Arc::new(auth)))
    }

    /// Adds the upstream credentials to `parts` (origin-form URI, upstream headers).
    /// `authority`: the target of this attempt, signed as `host` when the request has none.
    pub async fn apply(
        &self,
        parts: &mut Parts,
        shared: &Shared,
        authority: Option<&str>,
    ) -> Result<(), ProxyError> {
        if let Some(h) = &self.headers {
            h.apply(&mut parts.headers);
        }
        if let Some(b) = &self.basic {
            b.apply(&mut parts.headers);
        }
        if let Some(o) = &self.oauth {
            o.apply(&mut parts.headers, &shared.upstream_tokens, shared.idp())
                .await?;
        }
        if let Some(s) = &self.signing {
            let table = shared.table.load();
            s.apply(parts, &table.certs, authority)?;
        }
        Ok(())
    }
}
