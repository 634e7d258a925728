//! The authentication chain: one module per method behind [`AuthMethod`], then the session
//! checks every method shares, in Tyk's order and with Tyk's messages.

pub mod basic;
mod session_checks;
pub mod token;
mod url_acl;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::request::Parts;
use portcullis_proto::model::ApiDefinition;

use crate::error::ProxyError;
use crate::policies::{Effective, PolicyIndex, effective};
use crate::router::Route;
use crate::sessions::{LookupError, Session, Sessions};

/// How a method finds the key in a request and proves it. Methods never look sessions up
/// themselves, so caching, events and outage handling stay in one place.
#[async_trait::async_trait]
pub trait AuthMethod: Send + Sync + std::fmt::Debug {
    /// True when the method reads the request body (which is then buffered, up to 1 MiB).
    fn needs_body(&self) -> bool {
        false
    }

    /// The key presented (borrowed from the request where possible), or the method's error for
    /// a missing or malformed credential. `body` is set when [`Self::needs_body`].
    fn credential<'a>(
        &self,
        parts: &'a Parts,
        body: Option<&'a [u8]>,
    ) -> Result<std::borrow::Cow<'a, str>, ProxyError>;

    /// The error for a key that does not exist.
    fn unknown_key(&self) -> ProxyError {
        ProxyError::Disallowed
    }

    /// Checks what the method needs beyond the key's existence (a password, a signature).
    async fn verify(
        &self,
        _parts: &Parts,
        _body: Option<&[u8]>,
        _session: &Session,
    ) -> Result<(), ProxyError> {
        Ok(())
    }

    /// Removes the credential before the request goes upstream (`strip_auth_data`).
    fn strip(&self, parts: &mut Parts);

    /// `WWW-Authenticate` value sent with this method's 401 answers.
    fn challenge(&self) -> Option<&http::HeaderValue> {
        None
    }
}

/// An API whose definition enables a method this build does not implement (see
/// `portcullis_proto::model::auth_methods`): refused with 503, never served another way.
#[derive(Debug)]
pub struct Unserved {
    /// The methods, comma-separated, as named in the 503 answer and the metrics.
    pub method: Arc<str>,
    /// Requests refused so far (`portcullis_gateway_unsupported_auth_method_total`).
    pub refused: AtomicU64,
}

impl Unserved {
    pub fn of(def: &ApiDefinition) -> Option<Self> {
        let found = portcullis_proto::model::auth_methods::unsupported(def);
        if found.is_empty() {
            return None;
        }
        let methods: Vec<&str> = found.iter().map(|u| u.method).collect();
        tracing::warn!(
            api_id = %def.api_id(),
            field = %found[0].field,
            "API enables an authentication method this gateway does not implement; answering 503"
        );
        Some(Self {
            method: methods.join(",").into(),
            refused: AtomicU64::new(0),
        })
    }
}

/// Authenticates a request for `route` and applies the key's policies: what the request runs
/// under.
pub async fn authenticate(
    route: &Route,
    parts: &Parts,
    body: Option<&[u8]>,
    sessions: &Sessions,
    policies: &PolicyIndex,
) -> Result<Effective, ProxyError> {
    if let Some(unserved) = &route.unserved {
        unserved.refused.fetch_add(1, Ordering::Relaxed);
        return Err(ProxyError::UnsupportedAuth {
            method: unserved.method.clone(),
        });
    }
    let Some(method) = route.auth.as_deref() else {
        // An API with no usable method is closed, not open.
        return Err(ProxyError::AuthMissing);
    };
    let key = method.credential(parts, body)?;
    let hash = portcullis_proto::key_hash::key_hash(&key);
    let session = match sessions.lookup(&hash).await {
        Ok(Some(s)) => s,
        // Unknown keys and keys that cannot be checked (CP and Redis both away) are refused
        // the same way Tyk refuses an unknown key.
        Ok(None) | Err(LookupError::Unavailable) => return Err(method.unknown_key()),
        Err(LookupError::Busy) => return Err(ProxyError::AuthBusy),
    };
    method.verify(parts, body, &session).await?;
    let ids: Vec<&str> = session.state.policy_ids().collect();
    let effective = effective(session.state.spec(), &hash, &ids, policies).map_err(|e| {
        tracing::debug!(api_id = %route.api_id, error = %e, "policies could not be applied");
        ProxyError::Disallowed
    })?;
    session_checks::check(
        &session,
        &effective,
        route,
        parts,
        sessions.master_keys_allowed(),
    )?;
    Ok(effective)
}
