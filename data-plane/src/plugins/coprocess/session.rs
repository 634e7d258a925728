//! A plugin's `SessionState` as a Portcullis (Tyk JSON) session.

use portcullis_proto::coprocess::SessionState as Wire;
use portcullis_proto::model::{SessionState, ValidationError};
use serde_json::{Map, Value, json};

/// Meta-data entries kept from a plugin's session; more are dropped.
const MAX_META: usize = 256;

/// The session Tyk would store: the plugin's fields, with `org_id` forced to the API's and
/// `key_id` set to the token. A session granting no API is granted the one the plugin was
/// asked about: Tyk serves such a session everywhere, and Portcullis refuses sessions with
/// empty rights, so this keeps existing plugins working without making a master key.
pub fn from_wire(
    wire: &Wire,
    metadata: &Map<String, Value>,
    org_id: &str,
    api_id: &str,
    api_name: &str,
    token: &str,
) -> Result<SessionState, ValidationError> {
    let mut rights = Map::new();
    for (id, access) in &wire.access_rights {
        let urls: Vec<Value> = access
            .allowed_urls
            .iter()
            .map(|u| json!({"url": u.url, "methods": u.methods}))
            .collect();
        rights.insert(
            id.clone(),
            json!({
                "api_name": access.api_name,
                "api_id": if access.api_id.is_empty() { id } else { &access.api_id },
                "versions": access.versions,
                "allowed_urls": urls,
            }),
        );
    }
    if rights.is_empty() {
        rights.insert(
            api_id.to_owned(),
            json!({"api_name": api_name, "api_id": api_id, "versions": [], "allowed_urls": []}),
        );
    }
    let meta: Map<String, Value> = metadata
        .iter()
        .take(MAX_META)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let value = json!({
        "rate": wire.rate,
        "per": wire.per,
        "expires": wire.expires,
        "quota_max": wire.quota_max,
        "quota_renews": wire.quota_renews,
        "quota_remaining": wire.quota_remaining,
        "quota_renewal_rate": wire.quota_renewal_rate,
        "access_rights": rights,
        "org_id": org_id,
        "oauth_client_id": wire.oauth_client_id,
        "is_inactive": wire.is_inactive,
        "apply_policy_id": wire.apply_policy_id,
        "apply_policies": wire.apply_policies,
        "data_expires": wire.data_expires,
        "enable_detailed_recording": wire.enable_detailed_recording,
        "meta_data": meta,
        "tags": wire.tags,
        "alias": wire.alias,
        "last_updated": wire.last_updated,
        "id_extractor_deadline": wire.id_extractor_deadline,
        "session_lifetime": wire.session_lifetime,
        "certificate": wire.certificate,
        "max_query_depth": wire.max_query_depth,
        "key_id": token,
        "monitor": {"trigger_limits": wire.monitor.as_ref().map(|m| m.trigger_limits.clone()).unwrap_or_default()},
    });
    SessionState::from_value(value)
}

/// The reply's top-level `metadata` merged into `session.metadata` (Tyk's order: the
/// top-level map wins).
pub fn merged_metadata(
    wire: &Wire,
    top: &std::collections::HashMap<String, String>,
) -> Map<String, Value> {
    let mut meta: Map<String, Value> = wire
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    for (k, v) in top {
        meta.insert(k.clone(), Value::String(v.clone()));
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_proto::coprocess::{AccessDefinition, AccessSpec};

    #[test]
    fn a_plugin_session_becomes_a_tyk_session() {
        let mut wire = Wire {
            rate: 5.0,
            per: 60.0,
            quota_max: 100,
            quota_renewal_rate: 3600,
            org_id: "someone-else".into(),
            apply_policies: vec!["p1".into()],
            ..Default::default()
        };
        wire.metadata.insert("token".into(), "abc".into());
        wire.access_rights.insert(
            "api1".into(),
            AccessDefinition {
                api_name: "One".into(),
                api_id: String::new(),
                versions: vec!["Default".into()],
                allowed_urls: vec![AccessSpec {
                    url: "/x".into(),
                    methods: vec!["GET".into()],
                }],
            },
        );
        let mut top = std::collections::HashMap::new();
        top.insert("user".into(), "u1".into());
        let meta = merged_metadata(&wire, &top);
        let s = from_wire(&wire, &meta, "org", "api1", "One", "abc").unwrap();
        let spec = s.spec();
        assert_eq!((spec.rate, spec.per, spec.quota_max), (5.0, 60.0, 100));
        assert_eq!(spec.org_id, "org");
        assert_eq!(spec.apply_policies, ["p1"]);
        assert_eq!(spec.access_rights["api1"].api_id, "api1");
        assert_eq!(spec.access_rights["api1"].allowed_urls[0].methods, ["GET"]);
        assert_eq!(spec.meta_data["user"], "u1");
        assert_eq!(spec.meta_data["token"], "abc");
        assert_eq!(s.field("key_id").unwrap(), "abc");
    }

    #[test]
    fn no_rights_means_this_api_only_and_bad_limits_are_refused() {
        let wire = Wire::default();
        let s = from_wire(&wire, &Map::new(), "org", "api1", "One", "t").unwrap();
        assert_eq!(s.spec().access_rights.keys().collect::<Vec<_>>(), ["api1"]);
        let wire = Wire {
            rate: -5.0,
            ..Default::default()
        };
        assert_eq!(
            from_wire(&wire, &Map::new(), "org", "api1", "One", "t")
                .unwrap_err()
                .field,
            "rate"
        );
    }
}
