//! Sessions made at the edge from a verified token (JWT, OpenID Connect): Tyk's "virtual
//! key" `org_id + md5hex(identity)`, found through the session directory like any key, made
//! here at first use and reported to the control plane, which lists it and can revoke it in
//! every region (docs/keys.md, "Sessions made at the edge").

use std::sync::Arc;

use md5::{Digest, Md5};
use portcullis_proto::model::{SessionState, TOKEN_ORIGIN_FIELD, TOKENS_AFTER_FIELD};
use serde_json::{Map, Value, json};

use super::context::RequestContext;
use super::identity::{Identity, Provider, Source};
use crate::error::ProxyError;
use crate::sessions::{JWT_SESSION_ID, LookupError, Session};

/// Tyk's key id for a token identity (legacy key format: the org id, then the id).
pub fn virtual_key(org_id: &str, identity: &str) -> String {
    format!("{org_id}{}", hex::encode(Md5::digest(identity.as_bytes())))
}

/// What the token says the session must be.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    pub org_id: &'a str,
    pub identity: &'a str,
    /// The virtual key and its hash, computed once per verified token.
    pub key: &'a str,
    pub key_hash: &'a str,
    pub policies: &'a [String],
    /// The token's `exp` (0: none).
    pub expires: i64,
    /// The token's `iat`, to compare with a revocation.
    pub issued_at: Option<i64>,
    pub provider: Provider,
}

/// Tyk raises a session's expiry to the token's `exp` when that is later; a token without
/// one makes the session never expire.
fn expiry_stands(current: i64, wanted: i64) -> bool {
    current != 0 && (wanted == 0 || wanted > current)
}

fn fits(session: &Session, wanted: &Wanted<'_>) -> bool {
    let spec = session.state.spec();
    spec.apply_policies == wanted.policies && !expiry_stands(spec.expires, wanted.expires)
}

/// A session made again within this many seconds of the last is kept in this edge's memory and
/// reported (reports of one key coalesce) but not written to Redis: a user whose tokens
/// alternate between two policy sets (two scopes, two APIs) would otherwise cost a Redis write
/// on every request.
const REMAKE_EVERY_SECS: i64 = 10;

fn last_made(session: &Session) -> i64 {
    session
        .state
        .field("last_updated")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The session for a verified token identity: the one in the directory when it still fits
/// the token, otherwise a new one made here (and reported).
pub async fn session_for(
    ctx: &RequestContext<'_>,
    wanted: &Wanted<'_>,
) -> Result<Identity, ProxyError> {
    let sessions = ctx.sessions();
    let seen = sessions.seen_revision(wanted.key_hash);
    let identity = |session| Identity {
        session,
        key_hash: wanted.key_hash.to_owned(),
        provider: wanted.provider,
        source: Source::Token,
    };
    let previous = match sessions.lookup(wanted.key_hash).await {
        Ok(found) => found,
        Err(LookupError::Busy) => return Err(ProxyError::AuthBusy),
        // The token proves itself, but whether it was revoked cannot be known: it is served
        // with a session for this request alone, neither written to Redis nor reported (that
        // could bring a revoked session back once the control plane answers again).
        Err(LookupError::Unavailable) => {
            return made(wanted, None, 0, chrono::Utc::now()).map(|(s, _)| identity(s));
        }
    };
    let now = chrono::Utc::now();
    let mut to_redis = true;
    let (date_created, floor) = match &previous {
        // A session an operator stored under the virtual key (Tyk lets one pre-create it) is
        // used as it is.
        Some(s) if !s.token_made => return Ok(identity(s.clone())),
        Some(s) => {
            // Revoked by an operator (now, or before this session was made): only tokens
            // issued after the revocation are accepted, in every region.
            let floor = s.revocation_floor();
            if floor != 0 && wanted.issued_at.is_none_or(|iat| iat <= floor) {
                return Err(ProxyError::JwtNotAuthorized);
            }
            if s.revoked_at != 0 {
                (None, floor)
            } else if fits(s, wanted) {
                return Ok(identity(s.clone()));
            } else {
                to_redis = now.timestamp() - last_made(s) >= REMAKE_EVERY_SECS;
                let created = s
                    .state
                    .field("date_created")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                (created, floor)
            }
        }
        None => (None, 0),
    };
    let (session, json) = made(wanted, date_created, floor, now)?;
    sessions
        .remember_made(wanted.key_hash, session.clone(), json, seen, to_redis)
        .await;
    Ok(identity(session))
}

/// A session for `wanted`, and its JSON.
fn made(
    wanted: &Wanted<'_>,
    date_created: Option<String>,
    floor: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Arc<Session>, Vec<u8>), ProxyError> {
    let mut meta = Map::new();
    meta.insert(JWT_SESSION_ID.into(), Value::String(wanted.key.to_owned()));
    let mut value = json!({
        "org_id": wanted.org_id,
        "alias": wanted.identity,
        "apply_policies": wanted.policies,
        "access_rights": {},
        "expires": wanted.expires,
        "meta_data": meta,
        // Kept across updates, fresh after a revocation: the control plane refuses a report
        // created before a revocation, so a late report never brings a revoked session back.
        "date_created": date_created.unwrap_or_else(|| now.to_rfc3339()),
        "last_updated": now.timestamp().to_string(),
    });
    value[TOKEN_ORIGIN_FIELD] = "jwt".into();
    if floor != 0 {
        value[TOKENS_AFTER_FIELD] = floor.into();
    }
    let state = SessionState::from_value(value.clone()).map_err(|e| {
        tracing::debug!(error = %e, "a token gave a session that does not validate");
        ProxyError::JwtNotAuthorized
    })?;
    let json = serde_json::to_vec(&value).unwrap_or_default();
    Ok((Arc::new(Session::new(state)), json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_virtual_key_is_tyks() {
        // Tyk: JWT identity `user1` in org `default`.
        assert_eq!(
            virtual_key("default", "user1"),
            "default24c9e15e52afc47c225b757e7bee1f9d"
        );
    }

    #[test]
    fn expiry_is_raised_never_lowered() {
        assert!(!expiry_stands(0, 100));
        assert!(expiry_stands(100, 200));
        assert!(!expiry_stands(200, 100));
        assert!(expiry_stands(100, 0));
    }
}
