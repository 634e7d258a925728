//! The authentication chain: one module per method behind [`AuthMethod`], then the session
//! checks every method shares, in Tyk's order and with Tyk's messages.

mod session_checks;
pub mod token;

use http::request::Parts;

use crate::error::ProxyError;
use crate::policies::{Effective, PolicyIndex, effective};
use crate::router::Route;
use crate::sessions::Sessions;

/// How a method finds the credential in a request. Methods never look sessions up themselves,
/// so caching, events and outage handling stay in one place.
pub trait AuthMethod: Send + Sync + std::fmt::Debug {
    /// The key presented, if any (borrowed from the request where possible).
    fn credential<'a>(&self, parts: &'a Parts) -> Option<std::borrow::Cow<'a, str>>;

    /// Removes the credential before the request goes upstream (`strip_auth_data`).
    fn strip(&self, parts: &mut Parts);
}

/// Authenticates a request for `route` and applies the key's policies: what the request runs
/// under.
pub async fn authenticate(
    route: &Route,
    parts: &Parts,
    sessions: &Sessions,
    policies: &PolicyIndex,
) -> Result<Effective, ProxyError> {
    let Some(method) = route.auth.as_deref() else {
        // An API with no usable method is closed, not open.
        return Err(ProxyError::AuthMissing);
    };
    let key = method.credential(parts).ok_or(ProxyError::AuthMissing)?;
    let hash = portcullis_proto::key_hash::key_hash(&key);
    let session = match sessions.lookup(&hash).await {
        Ok(Some(s)) => s,
        // Unknown keys and keys that cannot be checked (CP and Redis both away) are refused
        // the same way Tyk refuses an unknown key.
        Ok(None) | Err(_) => return Err(ProxyError::Disallowed),
    };
    let ids: Vec<&str> = session.state.policy_ids().collect();
    let effective = effective(session.state.spec(), &hash, &ids, policies).map_err(|e| {
        tracing::debug!(api_id = %route.api_id, error = %e, "policies could not be applied");
        ProxyError::Disallowed
    })?;
    session_checks::check(&session, &effective, route)?;
    Ok(effective)
}
