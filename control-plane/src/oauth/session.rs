//! The session an access token gets: the login portal's `key_rules`, or the client's policy
//! (docs/oauth.md). Built once when the grant starts (stored with the code or refresh token)
//! and stamped with its expiry at each issue.

use chrono::{DateTime, Utc};
use portcullis_proto::model::SessionState;
use portcullis_proto::model::oauth::OAuthClient;
use serde_json::{Map, Value, json};

use super::OAuthApi;
use super::errors::OAuthError;

/// The gateway's own marks (`portcullis_*`) are never the portal's to set; neither is a
/// basic-auth password, which would be stored as given (operators' keys get it hashed).
fn strip(session: &mut Map<String, Value>) {
    session.retain(|k, _| !k.starts_with("portcullis_"));
    session.remove("basic_auth_data");
}

/// `key_rules` speak for one API and one client: rights to other APIs, other policies and
/// another organisation are dropped, so the holder of an edge's portal secret (or a node relaying
/// for it) cannot mint access beyond the API it asks for (docs/oauth.md).
fn confine(session: &mut Map<String, Value>, client: &OAuthClient, api: &OAuthApi) {
    if let Some(Value::Object(rights)) = session.get_mut("access_rights") {
        rights.retain(|id, _| id == &api.api_id);
    }
    let own =
        |v: &Value| v.as_str() == Some(client.policy_id.as_str()) && !client.policy_id.is_empty();
    if let Some(Value::Array(ids)) = session.get_mut("apply_policies") {
        ids.retain(own);
    }
    if session.get("apply_policy_id").is_some_and(|v| !own(v)) {
        session.remove("apply_policy_id");
    }
    session.insert("org_id".into(), json!(org_of(client, api)));
}

/// A session with no rights and no policy opens every API at the edge (a master key): the
/// token gets the client's rights instead.
fn grant_rights(session: &mut Map<String, Value>, client: &OAuthClient, api: &OAuthApi) {
    let has_rights = session
        .get("access_rights")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty());
    let has_policy = ["apply_policies", "apply_policy_id"].iter().any(|f| {
        session.get(*f).is_some_and(|v| match v {
            Value::Array(a) => !a.is_empty(),
            Value::String(s) => !s.is_empty(),
            _ => false,
        })
    });
    if has_rights || has_policy {
        return;
    }
    if client.policy_id.is_empty() {
        session.insert(
            "access_rights".into(),
            json!({api.api_id.as_str(): {"api_id": api.api_id, "api_name": api.name, "versions": []}}),
        );
    } else {
        session.insert("apply_policies".into(), json!([client.policy_id]));
    }
}

fn org_of<'a>(client: &'a OAuthClient, api: &'a OAuthApi) -> &'a str {
    if client.org_id.is_empty() {
        &api.org_id
    } else {
        &client.org_id
    }
}

/// The session from the client alone (its policy, or the API's access right).
pub fn from_client(client: &OAuthClient, api: &OAuthApi) -> Value {
    let mut s = Map::new();
    s.insert("org_id".into(), json!(org_of(client, api)));
    s.insert("meta_data".into(), Value::Object(client.meta_data.clone()));
    grant_rights(&mut s, client, api);
    s.insert("oauth_client_id".into(), json!(client.client_id));
    Value::Object(s)
}

/// The session from the portal's `key_rules`, validated like a key an operator writes.
pub fn from_key_rules(
    key_rules: &str,
    client: &OAuthClient,
    api: &OAuthApi,
) -> Result<Value, OAuthError> {
    let parsed = SessionState::parse(key_rules.as_bytes())
        .map_err(|_| OAuthError::InvalidRequest("key_rules is not a valid session object"))?;
    let Value::Object(mut s) = parsed.to_value() else {
        return Err(OAuthError::InvalidRequest(
            "key_rules must be a JSON object",
        ));
    };
    strip(&mut s);
    confine(&mut s, client, api);
    // The client's metadata, the portal's on top.
    let mut meta = client.meta_data.clone();
    if let Some(Value::Object(own)) = s.get("meta_data") {
        meta.extend(own.clone());
    }
    s.insert("meta_data".into(), Value::Object(meta));
    grant_rights(&mut s, client, api);
    s.insert("oauth_client_id".into(), json!(client.client_id));
    Ok(Value::Object(s))
}

/// The stored session of one access token: `base` with its expiry and dates.
pub fn stamped(base: &Value, now: DateTime<Utc>, expires: DateTime<Utc>) -> Value {
    let mut s = base.as_object().cloned().unwrap_or_default();
    s.insert("expires".into(), json!(expires.timestamp()));
    s.insert("date_created".into(), json!(now.to_rfc3339()));
    s.insert("last_updated".into(), json!(now.timestamp().to_string()));
    Value::Object(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn api() -> OAuthApi {
        OAuthApi {
            api_id: "api1".into(),
            name: "One".into(),
            org_id: "org".into(),
            spec: Default::default(),
        }
    }

    fn client(policy: &str) -> OAuthClient {
        let mut meta = Map::new();
        meta.insert("tier".into(), json!("gold"));
        meta.insert("who".into(), json!("client"));
        OAuthClient {
            client_id: "c1".into(),
            policy_id: policy.into(),
            meta_data: meta,
            ..Default::default()
        }
    }

    #[test]
    fn the_client_policy_or_the_api_right() {
        let s = from_client(&client("pol"), &api());
        assert_eq!(s["apply_policies"], json!(["pol"]));
        assert!(s.get("access_rights").is_none());
        assert_eq!(s["org_id"], "org");
        assert_eq!(s["oauth_client_id"], "c1");
        let s = from_client(&client(""), &api());
        assert_eq!(
            s["access_rights"]["api1"],
            json!({"api_id": "api1", "api_name": "One", "versions": []})
        );
    }

    #[test]
    fn key_rules_are_validated_and_stripped() {
        let rules = json!({
            "access_rights": {"api1": {"api_id": "api1", "versions": []},
                              "api2": {"api_id": "api2", "versions": []}},
            "apply_policies": ["admin-policy"],
            "org_id": "other-org",
            "meta_data": {"who": "portal"},
            "portcullis_origin": "jwt",
            "portcullis_tokens_after": 5,
            "basic_auth_data": {"password": "plain"},
            "oauth_client_id": "someone-else",
        })
        .to_string();
        let s = from_key_rules(&rules, &client("pol"), &api()).unwrap();
        assert!(s.get("portcullis_origin").is_none());
        assert!(s.get("portcullis_tokens_after").is_none());
        assert!(s.get("basic_auth_data").is_none());
        assert_eq!(s["oauth_client_id"], "c1");
        assert_eq!(s["meta_data"], json!({"tier": "gold", "who": "portal"}));
        // Rights for this API only, the client's policy only, the client's organisation.
        assert_eq!(
            s["access_rights"],
            json!({"api1": {"api_id": "api1", "versions": []}})
        );
        assert_eq!(s["apply_policies"], json!([]));
        assert_eq!(s["org_id"], "org");
        // Rules without rights get the client's.
        let s = from_key_rules("{}", &client("pol"), &api()).unwrap();
        assert_eq!(s["apply_policies"], json!(["pol"]));
        for bad in ["[]", "not json", r#"{"expires": "soon"}"#] {
            assert!(
                matches!(
                    from_key_rules(bad, &client(""), &api()),
                    Err(OAuthError::InvalidRequest(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn stamping_sets_expiry() {
        let now = DateTime::from_timestamp(1_000, 0).unwrap();
        let exp = DateTime::from_timestamp(4_600, 0).unwrap();
        let s = stamped(&from_client(&client(""), &api()), now, exp);
        assert_eq!(s["expires"], 4_600);
        assert!(s["date_created"].is_string());
    }
}
