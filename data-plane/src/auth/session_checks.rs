//! Checks on a found session, in Tyk's order: expiry, inactive flag, access rights, then the
//! path and method allow-list of the access right. Empty rights grant nothing unless master
//! keys are allowed.

use crate::error::ProxyError;
use crate::policies::Entitlements;
use crate::router::Route;
use crate::sessions::Session;

pub fn check(
    session: &Session,
    effective: &Entitlements,
    route: &Route,
    parts: &http::request::Parts,
    master_keys: bool,
) -> Result<(), ProxyError> {
    let spec = session.state.spec();
    if spec.expires >= 1 && spec.expires < chrono::Utc::now().timestamp() {
        return Err(ProxyError::KeyExpired);
    }
    if effective.inactive {
        return Err(ProxyError::KeyInactive);
    }
    // Tyk grants every API to a key whose rights end up empty (a key written without rights,
    // or whose policies grant only limits). That turns a forgotten field into a master key, so
    // it is refused unless the operator asked for Tyk's behaviour (`--allow-master-keys`).
    if effective.access_rights.is_empty() {
        return if master_keys {
            Ok(())
        } else {
            Err(ProxyError::Disallowed)
        };
    }
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
    Ok(())
}
