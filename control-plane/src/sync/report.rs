//! `ReportSessions`: sessions an edge made from a verified JWT (docs/keys.md, "Sessions made at
//! the edge"). The control plane keeps them so that operators see them (`GET /tyk/keys`) and can
//! revoke them (`DELETE /tyk/keys/{key}`), and so that a lookup from another edge finds them.
//!
//! A report comes from an authenticated node, but a node can be compromised: what it can make
//! the control plane store is bounded. Every session must name the key it is for (the sha256 of
//! its `meta_data.TykJWTSessionID` is its hash), only a whitelist of fields is kept (no access
//! rights, no rate or quota: the edge applies the session's policies at each request), and no
//! policy it applies may belong to another organisation. A policy that does not exist yet is
//! accepted: an API may name a policy created later (docs/jwt.md), and the edge refuses the
//! session's requests until it exists. So the worst a node can mint is a session that
//! references policies of its org; it can never overwrite an operator's key nor bring back a
//! revoked session.

use chrono::{DateTime, Utc};
use portcullis_proto::key_hash::key_hash;
use portcullis_proto::model::SessionState;
use portcullis_proto::sync::ReportedSession;
use serde_json::{Map, Value};

use super::status::SyncError;
use crate::store::keys::ReportedKey;

/// Sessions per call.
pub const MAX_SESSIONS: usize = 256;
/// Bytes of one session's JSON.
pub const MAX_SESSION_JSON: usize = 64 * 1024;
/// Sessions one node may report per second (sustained), and in a burst.
pub const RATE_PER_SEC: f64 = 1000.0;
pub const BURST: u32 = 2000;
/// The only origin so far.
pub const ORIGIN_JWT: &str = "jwt";
/// Where the key id of an edge-made JWT session is (Tyk's name).
const SESSION_ID_FIELD: &str = "TykJWTSessionID";
/// Longest key id accepted (Tyk's: org id + 32 hex digits).
const MAX_SESSION_ID: usize = 512;

/// The fields of a reported session the control plane keeps; everything else is dropped.
const KEPT: &[&str] = &[
    "org_id",
    "apply_policies",
    "alias",
    "meta_data",
    "expires",
    "date_created",
    "tags",
    "oauth_client_id",
];

/// A reported session, checked and reduced, with the policies it applies (checked against the
/// store by the caller).
#[derive(Debug)]
pub struct Checked {
    pub key: ReportedKey,
    pub org_id: String,
    pub policies: Vec<String>,
}

fn lowercase_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks every session of a call; the first bad one refuses the whole call (it comes from our
/// own gateway, so a bad one is a bug or an attack, and the message names it).
pub fn check_all(sessions: &[ReportedSession]) -> Result<Vec<Checked>, SyncError> {
    if sessions.len() > MAX_SESSIONS {
        return Err(SyncError::BadRequest(format!(
            "at most {MAX_SESSIONS} sessions per report, got {}",
            sessions.len()
        )));
    }
    sessions
        .iter()
        .enumerate()
        .map(|(i, s)| {
            check(s).map_err(|why| SyncError::BadRequest(format!("sessions[{i}]: {why}")))
        })
        .collect()
}

fn check(s: &ReportedSession) -> Result<Checked, String> {
    if !lowercase_sha256_hex(&s.key_hash) {
        return Err("key_hash must be 64 lowercase hex digits".into());
    }
    if s.origin != ORIGIN_JWT {
        return Err(format!("origin must be {ORIGIN_JWT:?}"));
    }
    if s.session_json.len() > MAX_SESSION_JSON {
        return Err(format!(
            "session_json must be at most {MAX_SESSION_JSON} bytes"
        ));
    }
    let session = SessionState::parse(&s.session_json).map_err(|e| format!("session_json: {e}"))?;
    let Value::Object(full) = session.to_value() else {
        return Err("session_json must be a JSON object".into());
    };
    let id = full
        .get("meta_data")
        .and_then(|m| m.get(SESSION_ID_FIELD))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("session_json must carry meta_data.{SESSION_ID_FIELD}"))?;
    if id.is_empty() || id.len() > MAX_SESSION_ID {
        return Err(format!(
            "meta_data.{SESSION_ID_FIELD} must be 1 to {MAX_SESSION_ID} bytes"
        ));
    }
    // A report can only name the key it is for: its hash is the hash of the key id.
    if key_hash(id) != s.key_hash {
        return Err(format!(
            "key_hash is not the sha256 of meta_data.{SESSION_ID_FIELD}"
        ));
    }
    let created = match full.get("date_created") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(
            DateTime::parse_from_rfc3339(t)
                .map_err(|_| "date_created must be an RFC 3339 time".to_owned())?
                .with_timezone(&Utc),
        ),
        Some(_) => return Err("date_created must be an RFC 3339 time".into()),
    };
    let mut kept: Map<String, Value> = KEPT
        .iter()
        .filter_map(|f| full.get(*f).map(|v| ((*f).to_owned(), v.clone())))
        .collect();
    kept.insert("access_rights".into(), Value::Object(Map::new()));
    // The mark that makes edges use it only for tokens, whatever the report says; the
    // revocation floor (`portcullis_tokens_after`) is the store's to carry, never the edge's.
    kept.insert(
        portcullis_proto::model::TOKEN_ORIGIN_FIELD.into(),
        Value::String(ORIGIN_JWT.into()),
    );
    // The reduced session must still be a valid one (it is what lookups serve).
    let reduced =
        SessionState::from_value(Value::Object(kept)).map_err(|e| format!("session_json: {e}"))?;
    let spec = reduced.spec();
    Ok(Checked {
        org_id: spec.org_id.clone(),
        policies: reduced.policy_ids().map(str::to_owned).collect(),
        key: ReportedKey {
            key_hash: s.key_hash.clone(),
            expires: spec.expires,
            created,
            session: reduced.to_value(),
        },
    })
}

/// Whether no policy of a session (among `known`: id and org of those that exist) belongs to
/// another org. A policy without an org id belongs to every org, as at Tyk; one that does not
/// exist yet grants nothing until it is created.
pub fn policies_of_its_org(c: &Checked, known: &[(String, String)]) -> bool {
    known
        .iter()
        .filter(|(id, _)| c.policies.contains(id))
        .all(|(_, org)| org.is_empty() || *org == c.org_id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reported(session: Value) -> ReportedSession {
        let id = session["meta_data"]["TykJWTSessionID"]
            .as_str()
            .unwrap_or("x")
            .to_owned();
        ReportedSession {
            key_hash: key_hash(&id),
            session_json: session.to_string().into_bytes(),
            origin: "jwt".into(),
        }
    }

    fn session() -> Value {
        json!({
            "org_id": "o1",
            "alias": "user@example.com",
            "apply_policies": ["p1"],
            "meta_data": {"TykJWTSessionID": "o1abc"},
            "expires": 2_000_000_000,
            "date_created": "2026-01-01T00:00:00Z",
            "access_rights": {"api": {"api_id": "api", "versions": ["Default"]}},
            "rate": 1e6,
            "per": 1,
            "quota_max": -1,
            "jwt_data": {"secret": "s"},
            "basic_auth_data": {"password": "x"},
        })
    }

    #[test]
    fn keeps_only_the_whitelist_and_no_rights() {
        let c = check(&reported(session())).unwrap();
        let v = &c.key.session;
        assert_eq!(v["access_rights"], json!({}));
        for dropped in ["rate", "per", "quota_max", "jwt_data", "basic_auth_data"] {
            assert!(v.get(dropped).is_none(), "{dropped} kept");
        }
        assert_eq!(v["alias"], "user@example.com");
        assert_eq!(c.key.expires, 2_000_000_000);
        assert_eq!(c.policies, ["p1"]);
        assert!(c.key.created.is_some());
    }

    #[test]
    fn refuses_what_does_not_name_its_key() {
        let mut r = reported(session());
        r.key_hash = key_hash("another");
        assert!(check(&r).unwrap_err().contains("sha256"));
        let mut no_id = session();
        no_id["meta_data"] = json!({});
        assert!(
            check(&reported(no_id))
                .unwrap_err()
                .contains("TykJWTSessionID")
        );
        let mut upper = reported(session());
        upper.key_hash = upper.key_hash.to_ascii_uppercase();
        assert!(check(&upper).unwrap_err().contains("lowercase"));
        let mut origin = reported(session());
        origin.origin = "operator".into();
        assert!(check(&origin).unwrap_err().contains("origin"));
        let mut date = session();
        date["date_created"] = json!("yesterday");
        assert!(check(&reported(date)).unwrap_err().contains("date_created"));
        let mut big = session();
        big["meta_data"]["pad"] = json!("x".repeat(MAX_SESSION_JSON));
        assert!(check(&reported(big)).unwrap_err().contains("at most"));
        assert!(check_all(&vec![reported(session()); MAX_SESSIONS + 1]).is_err());
        assert_eq!(
            check_all(&vec![reported(session()); MAX_SESSIONS])
                .unwrap()
                .len(),
            MAX_SESSIONS
        );
    }

    #[test]
    fn policies_must_belong_to_the_sessions_org() {
        let c = check(&reported(session())).unwrap();
        assert!(policies_of_its_org(&c, &[("p1".into(), "o1".into())]));
        assert!(policies_of_its_org(&c, &[("p1".into(), String::new())]));
        assert!(!policies_of_its_org(&c, &[("p1".into(), "o2".into())]));
        // Not created yet: accepted, it grants nothing until it exists.
        assert!(policies_of_its_org(&c, &[]));
    }
}
