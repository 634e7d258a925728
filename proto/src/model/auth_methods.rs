//! Which authentication methods an API definition asks for that this build does not implement.
//!
//! An edge that ignored such a field would fall through to auth token (or serve the API open),
//! so the control plane refuses these definitions and an edge that still receives one answers
//! 503 on that API (docs/security.md). The list follows Tyk Classic's field names; Tyk's own
//! chain order is kept so the first entry is the method Tyk would run first.

use serde_json::Value;

use super::ApiDefinition;
use super::compat::unset;

/// What this build implements, as advertised in `Hello.capabilities` and shown by
/// `GET /portcullis/nodes`.
pub const IMPLEMENTED: &[&str] = &[
    "keyless",
    "auth_token",
    "auth_token.mashery_signature",
    "basic_auth",
    "auth_chain",
    "mutual_tls",
    "dynamic_mutual_tls",
    "jwt",
    "jwt.jwks",
    "external_oauth",
    "openid_connect",
    "oauth2",
    "hmac_signature",
    "auth_chain_any",
    "coprocess_auth.grpc",
    "coprocess_auth.otto",
];

/// A field that enables a method this build does not implement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The definition field, as an operator would write it (`enable_jwt`, `auth_configs.authToken`).
    pub field: String,
    /// The method it enables (`jwt`, `coprocess_auth`, ...).
    pub method: &'static str,
}

/// Flags that turn a method on that this build never serves; `enabled` is the path of the
/// boolean inside the definition. Plugin auth (`enable_coprocess_auth`,
/// `custom_plugin_auth_enabled`) is served for the `grpc` and `otto` drivers only.
const FLAGS: &[(&str, &str)] = &[
    ("use_go_plugin_auth", "go_plugin_auth"),
    // An internal API must not be reachable from outside; served on its listen path it would be.
    ("internal", "internal_api"),
];

/// Access-control switches that take effect only with a non-empty list (as in Tyk); serving
/// the API while ignoring them would let in every address the operator meant to keep out.
const LISTED_FLAGS: &[(&str, &str, &str)] = &[
    ("enable_ip_whitelisting", "allowed_ips", "ip_allow_list"),
    ("enable_ip_blacklisting", "blacklisted_ips", "ip_deny_list"),
];

/// The plugin-auth switches, refused when `custom_middleware.driver` is not one served.
const PLUGIN_FLAGS: &[(&str, &str)] = &[
    ("enable_coprocess_auth", "coprocess_auth"),
    ("custom_plugin_auth_enabled", "custom_plugin_auth"),
];

/// Fields of an `auth_configs.authToken` entry that move where the key is read from; the edge
/// reads the legacy `auth` section, so an entry that disagrees with it would be read elsewhere
/// than Tyk reads it.
const TOKEN_SOURCE_FIELDS: &[&str] = &[
    "auth_header_name",
    "disable_header",
    "use_param",
    "param_name",
    "use_cookie",
    "cookie_name",
    "validate_signature",
    "signature",
    "use_certificate",
];

fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn is_true(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(true)))
}

fn same_setting(field: &str, a: Option<&Value>, b: Option<&Value>) -> bool {
    if field == "auth_header_name" {
        // Empty means `Authorization` on both sides.
        let name = |v: Option<&Value>| match v.and_then(Value::as_str) {
            None | Some("") => "authorization".to_owned(),
            Some(s) => s.to_ascii_lowercase(),
        };
        return name(a) == name(b);
    }
    match (unset(a), unset(b)) {
        (true, true) => true,
        (false, false) => a == b,
        _ => false,
    }
}

/// Every field of `def` that enables a method this build does not implement; empty when the
/// edge can serve the API exactly as Tyk would.
pub fn unsupported(def: &ApiDefinition) -> Vec<Unsupported> {
    let raw = def.to_value();
    let mut out: Vec<Unsupported> = FLAGS
        .iter()
        // Not typed fields: `"true"`, `1` or `"yes"` count as on, so a refusal cannot be slipped
        // past with a value Tyk's loose readers would still take.
        .filter(|(path, _)| !unset(at(&raw, path)))
        .map(|(path, method)| Unsupported {
            field: (*path).to_owned(),
            method,
        })
        .collect();
    out.extend(
        LISTED_FLAGS
            .iter()
            .filter(|(flag, list, _)| !unset(at(&raw, flag)) && !unset(at(&raw, list)))
            .map(|(flag, _, method)| Unsupported {
                field: (*flag).to_owned(),
                method,
            }),
    );
    let plugins = def.plugins();
    if plugins.auth_enabled() && plugins.served_driver().is_none() {
        out.extend(
            PLUGIN_FLAGS
                .iter()
                .filter(|(path, _)| is_true(at(&raw, path)))
                .map(|(path, method)| Unsupported {
                    field: (*path).to_owned(),
                    method,
                }),
        );
    }
    let spec = def.spec();
    let configs = raw.get("auth_configs");
    let token_runs = spec.use_standard_auth || !spec.use_basic_auth;
    if !spec.use_keyless
        && token_runs
        && let Some(entry) = configs.and_then(|c| c.get("authToken"))
        && !unset(Some(entry))
    {
        let auth = raw.get("auth");
        if let Some(field) = TOKEN_SOURCE_FIELDS
            .iter()
            .find(|f| !same_setting(f, entry.get(**f), auth.and_then(|a| a.get(**f))))
        {
            out.push(Unsupported {
                field: format!("auth_configs.authToken.{field}"),
                method: "auth_token_from_auth_configs",
            });
        }
    }
    if spec.use_basic_auth
        && let Some(entry) = configs.and_then(|c| c.get("basic"))
        && let Some(field) = TOKEN_SOURCE_FIELDS
            .iter()
            .find(|f| !same_setting(f, entry.get(**f), None))
    {
        // Basic auth is read from `Authorization` only.
        out.push(Unsupported {
            field: format!("auth_configs.basic.{field}"),
            method: "basic_auth_from_auth_configs",
        });
    }
    out.dedup_by(|a, b| a.method == b.method);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn def(extra: Value) -> ApiDefinition {
        let mut v = json!({
            "api_id": "a", "proxy": {"listen_path": "/a/", "target_url": "http://127.0.0.1:1"}
        });
        if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
            m.extend(e);
        }
        ApiDefinition::from_value(v).unwrap()
    }

    fn methods(extra: Value) -> Vec<&'static str> {
        unsupported(&def(extra)).iter().map(|u| u.method).collect()
    }

    #[test]
    fn each_flag_names_its_method_and_field() {
        for (field, method, extra) in [
            (
                "enable_coprocess_auth",
                "coprocess_auth",
                json!({"enable_coprocess_auth": true, "custom_middleware": {"driver": "python"}}),
            ),
            (
                "custom_plugin_auth_enabled",
                "custom_plugin_auth",
                json!({"custom_plugin_auth_enabled": true, "custom_middleware": {"driver": "goplugin"}}),
            ),
            (
                "use_go_plugin_auth",
                "go_plugin_auth",
                json!({"use_go_plugin_auth": true}),
            ),
            ("internal", "internal_api", json!({"internal": true})),
            ("internal", "internal_api", json!({"internal": "true"})),
            (
                "enable_ip_blacklisting",
                "ip_deny_list",
                json!({"enable_ip_blacklisting": 1, "blacklisted_ips": ["10.1.2.3"]}),
            ),
            (
                "enable_ip_whitelisting",
                "ip_allow_list",
                json!({"enable_ip_whitelisting": true, "allowed_ips": ["10.0.0.0/8"]}),
            ),
            (
                "enable_ip_blacklisting",
                "ip_deny_list",
                json!({"enable_ip_blacklisting": true, "blacklisted_ips": ["10.1.2.3"]}),
            ),
        ] {
            let found = unsupported(&def(extra));
            assert_eq!(found.len(), 1, "{field}: {found:?}");
            assert_eq!(found[0].field, field);
            assert_eq!(found[0].method, method);
        }
    }

    #[test]
    fn what_this_build_implements_passes() {
        assert!(methods(json!({"use_keyless": true})).is_empty());
        // Tyk applies an IP list only when it holds an address.
        assert!(methods(json!({"enable_ip_whitelisting": true, "allowed_ips": []})).is_empty());
        assert!(methods(json!({"internal": false, "blacklisted_ips": ["10.1.2.3"]})).is_empty());
        assert!(methods(json!({})).is_empty());
        assert!(methods(json!({"use_basic_auth": true})).is_empty());
        assert!(methods(json!({"enable_jwt": false, "use_oauth2": null})).is_empty());
        assert!(methods(json!({"use_oauth2": true})).is_empty());
        assert!(methods(json!({"enable_signature_checking": true})).is_empty());
        assert!(
            methods(json!({"enable_jwt": true, "jwt_source": "https://idp.example/jwks"}))
                .is_empty()
        );
        assert!(
            methods(json!({"use_openid": true, "openid_options": {"providers": [
            {"issuer": "https://idp.example", "client_ids": {}}]}}))
            .is_empty()
        );
        assert!(
            methods(json!({"auth": {"validate_signature": true, "signature": {
                "algorithm": "MasheryMD5", "header": "X-Sig", "secret": "s"}}}))
            .is_empty()
        );
    }

    #[test]
    fn auth_configs_entries_must_match_what_the_edge_reads() {
        // A typical Tyk export: every method has an entry, only the flags say which run.
        let export = json!({
            "auth": {"auth_header_name": "Authorization"},
            "auth_configs": {
                "authToken": {"auth_header_name": "Authorization", "use_param": false, "name": ""},
                "jwt": {"auth_header_name": "Authorization"},
                "hmac": {"auth_header_name": "Authorization"},
                "basic": {"auth_header_name": ""},
            }
        });
        assert!(methods(export).is_empty());
        let moved = unsupported(&def(json!({
            "auth": {"auth_header_name": "Authorization"},
            "auth_configs": {"authToken": {"auth_header_name": "X-Key"}}
        })));
        assert_eq!(moved[0].field, "auth_configs.authToken.auth_header_name");
        assert_eq!(
            methods(json!({"use_basic_auth": true,
                "auth_configs": {"basic": {"use_param": true}}})),
            ["basic_auth_from_auth_configs"]
        );
        assert!(methods(json!({"use_basic_auth": true, "use_standard_auth": true})).is_empty());
        assert_eq!(
            methods(json!({"use_basic_auth": true, "use_standard_auth": true,
                "auth_configs": {"authToken": {"auth_header_name": "X-Key"}}})),
            ["auth_token_from_auth_configs"]
        );
        assert!(
            methods(json!({"use_mutual_tls_auth": true, "auth": {"use_certificate": true}}))
                .is_empty()
        );
        assert_eq!(
            methods(json!({"auth_configs": {"authToken": {"use_certificate": true}}})),
            ["auth_token_from_auth_configs"]
        );
    }

    #[test]
    fn tyk_grpc_auth_plugin_sample_is_served_and_other_drivers_refused() {
        // Shape of Tyk's apps/coprocess_grpc_app_sample_protected.json.
        let sample = json!({
            "name": "Tyk Test API - gRPC Protected",
            "api_id": "1",
            "org_id": "default",
            "auth": {"auth_header_name": "authorization"},
            "use_keyless": false,
            "enable_coprocess_auth": true,
            "custom_middleware": {
                "pre": [], "post": [], "post_key_auth": [],
                "auth_check": {"name": "MyAuthHook", "path": "", "require_session": false},
                "driver": "grpc"
            },
            "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}},
            "proxy": {"listen_path": "/grpc-test-api/", "target_url": "http://httpbin.org/",
                "strip_listen_path": true}
        });
        assert!(unsupported(&ApiDefinition::from_value(sample.clone()).unwrap()).is_empty());
        let mut python = sample;
        python["custom_middleware"]["driver"] = json!("python");
        let found = unsupported(&ApiDefinition::from_value(python).unwrap());
        assert_eq!(
            found,
            [Unsupported {
                field: "enable_coprocess_auth".into(),
                method: "coprocess_auth"
            }]
        );
    }
}
