//! Upstream basic credentials (`upstream_auth.basic_auth`): `Basic base64(user:password)` in
//! `Authorization` or the configured header, replacing whatever the client sent there.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use portcullis_proto::model::{ApiDefinition, ValidationError};

use crate::auth::stored_secrets;

pub(super) struct Basic {
    header: HeaderName,
    value: HeaderValue,
}

impl std::fmt::Debug for Basic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Basic")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl Basic {
    pub(super) fn of(def: &ApiDefinition) -> Result<Option<Self>, ValidationError> {
        let spec = def.upstream_auth();
        if !spec.basic_enabled() {
            return Ok(None);
        }
        let b = &spec.upstream_auth.basic_auth;
        let field = "upstream_auth.basic_auth.password";
        let password = stored_secrets::open(def.api_id(), field, &b.password)?;
        let header = HeaderName::from_bytes(b.header.name().as_bytes()).map_err(|_| {
            ValidationError::new(
                "upstream_auth.basic_auth.header.name",
                "must be a valid HTTP header name",
            )
        })?;
        let encoded = B64.encode(format!("{}:{password}", b.username));
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| ValidationError::new(field, "does not make a header value"))?;
        // Kept out of HPACK tables and debug output.
        value.set_sensitive(true);
        Ok(Some(Self { header, value }))
    }

    pub(super) fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(self.header.clone(), self.value.clone());
    }
}
