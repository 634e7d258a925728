//! The authentication chain: one module per method behind [`AuthMethod`], then the session
//! checks every method shares, in Tyk's order and with Tyk's messages.

mod session_checks;
pub mod token;

use std::sync::Arc;

use http::request::Parts;

use crate::error::ProxyError;
use crate::router::Route;
use crate::sessions::{Session, Sessions};

/// How a method finds the credential in a request. Methods never look sessions up themselves,
/// so caching, events and outage handling stay in one place.
pub trait AuthMethod: Send + Sync + std::fmt::Debug {
    /// The key presented, if any (borrowed from the request where possible).
    fn credential<'a>(&self, parts: &'a Parts) -> Option<std::borrow::Cow<'a, str>>;

    /// Removes the credential before the request goes upstream (`strip_auth_data`).
    fn strip(&self, parts: &mut Parts);
}

/// Authenticates a request for `route`, returning the session it runs under.
pub async fn authenticate(
    route: &Route,
    parts: &Parts,
    sessions: &Sessions,
) -> Result<Arc<Session>, ProxyError> {
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
    session_checks::check(&session, route)?;
    Ok(session)
}
