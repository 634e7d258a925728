//! Checks on a found session, in Tyk's order: expiry, inactive flag, access rights, then the
//! path and method allow-list of the access right.

use crate::error::ProxyError;
use crate::policies::Effective;
use crate::router::Route;
use crate::sessions::Session;

pub fn check(
    session: &Session,
    effective: &Effective,
    route: &Route,
    parts: &http::request::Parts,
) -> Result<(), ProxyError> {
    let spec = session.state.spec();
    if spec.expires >= 1 && spec.expires < chrono::Utc::now().timestamp() {
        return Err(ProxyError::KeyExpired);
    }
    if effective.inactive {
        return Err(ProxyError::KeyInactive);
    }
    // An empty access_rights map grants every API (Tyk's master-key semantics at request time).
    if !effective.access_rights.is_empty() {
        let Some(access) = effective.access_rights.get(&route.api_id) else {
            return Err(ProxyError::Disallowed);
        };
        if !super::url_acl::allows(
            &access.allowed_urls,
            parts.method.as_str(),
            parts.uri.path(),
        ) {
            return Err(ProxyError::Disallowed);
        }
    }
    Ok(())
}
