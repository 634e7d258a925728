//! The authentication chain: one module per method behind [`AuthMethod`], then the session
//! checks every method shares, in Tyk's order and with Tyk's messages.

pub mod basic;
mod session_checks;
pub mod token;
mod url_acl;

use http::request::Parts;

use crate::error::ProxyError;
use crate::policies::{Effective, PolicyIndex, effective};
use crate::router::Route;
use crate::sessions::{Session, Sessions};

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

/// Authenticates a request for `route` and applies the key's policies: what the request runs
/// under.
pub async fn authenticate(
    route: &Route,
    parts: &Parts,
    body: Option<&[u8]>,
    sessions: &Sessions,
    policies: &PolicyIndex,
) -> Result<Effective, ProxyError> {
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
        Ok(None) | Err(_) => return Err(method.unknown_key()),
    };
    method.verify(parts, body, &session).await?;
    let ids: Vec<&str> = session.state.policy_ids().collect();
    let effective = effective(session.state.spec(), &hash, &ids, policies).map_err(|e| {
        tracing::debug!(api_id = %route.api_id, error = %e, "policies could not be applied");
        ProxyError::Disallowed
    })?;
    session_checks::check(&session, &effective, route, parts)?;
    Ok(effective)
}
