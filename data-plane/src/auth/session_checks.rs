//! Checks on a found session, in Tyk's order: expiry, inactive flag, access rights.

use crate::error::ProxyError;
use crate::policies::Effective;
use crate::router::Route;
use crate::sessions::Session;

pub fn check(session: &Session, effective: &Effective, route: &Route) -> Result<(), ProxyError> {
    let spec = session.state.spec();
    if spec.expires >= 1 && spec.expires < chrono::Utc::now().timestamp() {
        return Err(ProxyError::KeyExpired);
    }
    if effective.inactive {
        return Err(ProxyError::KeyInactive);
    }
    // An empty access_rights map grants every API (Tyk's master-key semantics at request time).
    if !effective.access_rights.is_empty() && !effective.access_rights.contains_key(&route.api_id) {
        return Err(ProxyError::Disallowed);
    }
    Ok(())
}
