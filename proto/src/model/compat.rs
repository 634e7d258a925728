//! What Portcullis does with each field of a Tyk definition: enforced, refused, or stored only.
//!
//! Tyk definitions carry many features Portcullis keeps but does not act on (JavaScript
//! middleware, transforms, caching, analytics). Storing them silently would let an operator
//! believe they run, so every write answers a `warnings` list naming each such field that is
//! set, and `portcullis-cp config diff` prints it (docs/tyk-compatibility.md holds the table;
//! a test keeps it in step with [`STORED_ONLY`]).

use serde::Serialize;
use serde_json::{Map, Value};

use super::{ApiDefinition, Policy};

/// A field that is set but not acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The field, as errors name it (`custom_middleware.pre`,
    /// `version_data.versions.Default.extended_paths.transform_jq`).
    pub field: String,
    pub reason: String,
}

/// When a stored-only field counts as set: most count when they hold anything, a few only
/// when their switch is on (Tyk keeps `cache_options.cache_timeout: 60` with caching off).
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// Anything but Tyk's "not set" values (absent, null, false, 0, "", [], {} of unset).
    Set,
    /// The boolean at this path inside the field is true.
    Switch(&'static str),
    /// A date (Tyk's `2006-01-02 15:04`) before the year 2999, which Tyk's samples use for
    /// "never".
    Date,
}

/// A stored-only field of an API definition with why it matters.
pub struct StoredOnly {
    pub field: &'static str,
    pub trigger: Trigger,
    pub reason: &'static str,
}

const fn stored(field: &'static str, trigger: Trigger, reason: &'static str) -> StoredOnly {
    StoredOnly {
        field,
        trigger,
        reason,
    }
}

/// Top-level fields of an API definition that are kept but not acted on, with the reason each
/// warning gives. A set top-level field in neither this list, [`API_ENFORCED`] nor
/// [`API_INFORMATIONAL`] is warned about as unknown.
pub const STORED_ONLY: &[StoredOnly] = &[
    stored(
        "cache_options",
        Trigger::Switch("enable_cache"),
        "responses are not cached",
    ),
    stored(
        "CORS",
        Trigger::Switch("enable"),
        "CORS headers are not added and preflight requests reach the upstream",
    ),
    stored(
        "event_handlers",
        Trigger::Set,
        "event handlers (webhooks, JavaScript) are not run",
    ),
    stored(
        "response_processors",
        Trigger::Set,
        "response processors are not run",
    ),
    stored(
        "enable_batch_request_support",
        Trigger::Set,
        "the batch endpoint is not served",
    ),
    stored(
        "enable_context_vars",
        Trigger::Set,
        "context variables are not set",
    ),
    stored(
        "global_rate_limit",
        Trigger::Set,
        "the API-wide rate limit is not applied (per-key and policy limits are)",
    ),
    stored(
        "disable_rate_limit",
        Trigger::Set,
        "rate limits of keys are still applied to this API",
    ),
    stored(
        "disable_quota",
        Trigger::Set,
        "quotas of keys are still applied to this API",
    ),
    stored(
        "uptime_tests",
        Trigger::Set,
        "uptime tests are not run; load balancing uses passive health only",
    ),
    stored(
        "expiration",
        Trigger::Date,
        "the API does not stop at this date",
    ),
    stored(
        "enable_detailed_recording",
        Trigger::Set,
        "no analytics are recorded",
    ),
    stored(
        "analytics_plugin",
        Trigger::Switch("enable"),
        "no analytics are recorded",
    ),
    stored("tag_headers", Trigger::Set, "no analytics are recorded"),
    stored(
        "custom_middleware_bundle",
        Trigger::Set,
        "plugin bundles are not loaded; configure the plugin in custom_middleware",
    ),
    stored(
        "graphql",
        Trigger::Switch("enabled"),
        "GraphQL features are not applied; requests are proxied as HTTP",
    ),
    stored("protocol", Trigger::Set, "only HTTP APIs are served"),
    stored(
        "listen_port",
        Trigger::Set,
        "the API is served on the gateway's own listeners",
    ),
    stored(
        "enable_proxy_protocol",
        Trigger::Set,
        "the PROXY protocol is not spoken to the upstream",
    ),
    stored(
        "config_data",
        Trigger::Set,
        "config data is only read by middleware, which does not run",
    ),
    stored(
        "is_oas",
        Trigger::Set,
        "send Tyk OAS definitions to /tyk/apis/oas",
    ),
];

/// Sub-fields of enforced sections that are kept but not acted on.
const NESTED_STORED_ONLY: &[StoredOnly] = &[
    stored(
        "proxy.disable_strip_slash",
        Trigger::Set,
        "paths are normalised before routing",
    ),
    stored(
        "proxy.check_host_against_uptime_tests",
        Trigger::Set,
        "uptime tests are not run",
    ),
    stored(
        "proxy.transport.ssl_ciphers",
        Trigger::Set,
        "the TLS library's cipher suites are used",
    ),
    stored(
        "proxy.transport.ssl_force_common_name_check",
        Trigger::Set,
        "host names are checked against the certificate's subject alternative names",
    ),
    stored(
        "proxy.transport.proxy_url",
        Trigger::Set,
        "the upstream is reached directly, not through a forward proxy",
    ),
    stored(
        "custom_middleware.pre",
        Trigger::Set,
        "pre middleware is not run (only the auth_check hook of a plugin is)",
    ),
    stored(
        "custom_middleware.post",
        Trigger::Set,
        "post middleware is not run (only the auth_check hook of a plugin is)",
    ),
    stored(
        "custom_middleware.post_key_auth",
        Trigger::Set,
        "post-key-auth middleware is not run (only the auth_check hook of a plugin is)",
    ),
    stored(
        "custom_middleware.response",
        Trigger::Set,
        "response middleware is not run (only the auth_check hook of a plugin is)",
    ),
    stored(
        "version_data.versions.*.expires",
        Trigger::Date,
        "versions do not expire",
    ),
    stored(
        "version_data.versions.*.paths",
        Trigger::Set,
        "path lists (ignored, white_list, black_list) are not applied; use allowed_urls on keys or policies",
    ),
    stored(
        "version_data.versions.*.extended_paths.*",
        Trigger::Set,
        "endpoint middleware (transforms, rewrites, mocks, caching, validation, path lists) is not applied",
    ),
    stored(
        "version_data.versions.*.override_target",
        Trigger::Set,
        "every version is proxied to proxy.target_url",
    ),
];

/// Top-level fields Portcullis acts on (each typed view of [`ApiDefinition`]).
pub const API_ENFORCED: &[&str] = &[
    "api_id",
    "org_id",
    "active",
    "use_keyless",
    "domain",
    "tags",
    "proxy",
    "auth",
    "auth_configs",
    "strip_auth_data",
    "use_basic_auth",
    "basic_auth",
    "session_lifetime",
    "use_standard_auth",
    "use_mutual_tls_auth",
    "client_certificates",
    "certificates",
    "upstream_certificates",
    "upstream_certificates_disabled",
    "pinned_public_keys",
    "certificate_pinning_disabled",
    "base_identity_provided_by",
    "auth_chain_mode",
    "enable_jwt",
    "jwt_signing_method",
    "jwt_source",
    "jwt_identity_base_field",
    "jwt_client_base_field",
    "jwt_policy_field_name",
    "jwt_default_policies",
    "jwt_issued_at_validation_skew",
    "jwt_expires_at_validation_skew",
    "jwt_not_before_validation_skew",
    "jwt_skip_kid",
    "jwt_scope_to_policy_mapping",
    "jwt_scope_claim_name",
    "scopes",
    "external_oauth",
    "use_openid",
    "openid_options",
    "split_token",
    "use_oauth2",
    "oauth_meta",
    "notifications",
    "enable_signature_checking",
    "hmac_allowed_algorithms",
    "hmac_allowed_clock_skew",
    "enable_coprocess_auth",
    "custom_plugin_auth_enabled",
    "custom_middleware",
    "request_signing",
    "upstream_auth",
    "version_data",
    // Refused when on (auth_methods), so never silently ignored.
    "use_go_plugin_auth",
    "enable_ip_whitelisting",
    "allowed_ips",
    "enable_ip_blacklisting",
    "blacklisted_ips",
    "internal",
];

/// Fields that describe the API without changing what the gateway does (or whose only effect,
/// like `do_not_track`, is what Portcullis always does).
pub const API_INFORMATIONAL: &[&str] = &[
    "id",
    "name",
    "slug",
    "definition",
    "do_not_track",
    "domain_disabled",
    "tags_disabled",
    "use_extended_paths",
    "strip_auth_data_disabled",
    "session_lifetime_respects_key_expiration",
    "jwt_identit_base_field",
    "idp_client_id_mapping_disabled",
    "detailed_tracing",
    "api_definition_version",
    // The OpenAPI document of an API written as Tyk OAS (docs/oas.md); its extension fields
    // are warned about when it is written.
    "oas_document",
];

/// Top-level policy fields Portcullis acts on.
const POLICY_ENFORCED: &[&str] = &[
    "id",
    "org_id",
    "rate",
    "per",
    "quota_max",
    "quota_renewal_rate",
    "access_rights",
    "partitions",
    "active",
    "is_inactive",
    "tags",
];

const POLICY_INFORMATIONAL: &[&str] = &["_id", "name", "last_updated", "state"];

/// Per-API fields of a policy's `access_rights` entries that are kept but not acted on.
const POLICY_ACCESS_STORED_ONLY: &[&str] = &[
    "endpoints",
    "restricted_types",
    "allowed_types",
    "field_access_rights",
    "disable_introspection",
    "json_rpc_methods",
    "json_rpc_methods_access_control",
    "mcp_primitives",
    "mcp_access_control",
];

/// Tyk writes absent, `null`, `""`, `false`, `0` and `{}` interchangeably for "not set".
pub fn unset(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => !b,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::Object(m)) => m.values().all(|v| unset(Some(v))),
        Some(Value::Array(a)) => a.is_empty(),
    }
}

fn triggered(trigger: Trigger, v: &Value) -> bool {
    match trigger {
        Trigger::Set => !unset(Some(v)),
        Trigger::Switch(path) => matches!(
            path.split('.').try_fold(v, |v, k| v.get(k)),
            Some(Value::Bool(true))
        ),
        Trigger::Date => match v {
            Value::String(s) if !s.is_empty() && s != "-1" => s
                .get(..4)
                .and_then(|y| y.parse::<u32>().ok())
                .is_none_or(|year| year < 2999),
            _ => false,
        },
    }
}

/// Every `(path, value)` a pattern with `*` segments names in `root`.
fn matches<'a>(root: &'a Value, pattern: &str) -> Vec<(String, &'a Value)> {
    let mut found = vec![(String::new(), root)];
    for segment in pattern.split('.') {
        let mut next = Vec::new();
        for (path, v) in found {
            let Value::Object(map) = v else { continue };
            let join = |k: &str| {
                if path.is_empty() {
                    k.to_owned()
                } else {
                    format!("{path}.{k}")
                }
            };
            if segment == "*" {
                next.extend(map.iter().map(|(k, v)| (join(k), v)));
            } else if let Some(v) = map.get(segment) {
                next.push((join(segment), v));
            }
        }
        found = next;
    }
    found
}

fn unknown(field: &str) -> Warning {
    Warning {
        field: field.to_owned(),
        reason: "not a field Portcullis acts on; stored as sent".to_owned(),
    }
}

/// The fields of `def` that are set but not acted on, in a stable order.
pub fn api_warnings(def: &ApiDefinition) -> Vec<Warning> {
    let raw = def.to_value();
    let mut out = Vec::new();
    let Value::Object(map) = &raw else {
        return out;
    };
    for (key, value) in map {
        if API_ENFORCED.contains(&key.as_str()) || API_INFORMATIONAL.contains(&key.as_str()) {
            continue;
        }
        match STORED_ONLY.iter().find(|s| s.field == key) {
            Some(s) if triggered(s.trigger, value) => out.push(Warning {
                field: key.clone(),
                reason: s.reason.to_owned(),
            }),
            Some(_) => {}
            None if !unset(Some(value)) => out.push(unknown(key)),
            None => {}
        }
    }
    for s in NESTED_STORED_ONLY {
        for (field, value) in matches(&raw, s.field) {
            if triggered(s.trigger, value) {
                out.push(Warning {
                    field,
                    reason: s.reason.to_owned(),
                });
            }
        }
    }
    if let Some(w) = versioning(map) {
        out.push(w);
    }
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

/// Versioned APIs are served as one version: say so when the definition asks for versions.
fn versioning(map: &Map<String, Value>) -> Option<Warning> {
    let vd = map.get("version_data")?;
    if vd.get("not_versioned") == Some(&Value::Bool(true)) {
        return None;
    }
    let several = vd
        .get("versions")
        .and_then(Value::as_object)
        .is_some_and(|v| v.len() > 1);
    let located = map
        .get("definition")
        .and_then(|d| d.get("location"))
        .is_some_and(|l| !unset(Some(l)));
    (several || located).then(|| Warning {
        field: "version_data.not_versioned".to_owned(),
        reason: "API versions are not told apart: every request is served by this definition"
            .to_owned(),
    })
}

/// The fields of `policy` that are set but not acted on.
pub fn policy_warnings(policy: &Policy) -> Vec<Warning> {
    let raw = policy.to_value();
    let mut out = Vec::new();
    let Value::Object(map) = &raw else {
        return out;
    };
    for (key, value) in map {
        if POLICY_ENFORCED.contains(&key.as_str()) || POLICY_INFORMATIONAL.contains(&key.as_str()) {
            continue;
        }
        if !unset(Some(value)) {
            out.push(unknown(key));
        }
    }
    for field in POLICY_ACCESS_STORED_ONLY {
        for (path, value) in matches(&raw, &format!("access_rights.*.{field}")) {
            if !unset(Some(value)) {
                out.push(Warning {
                    field: path,
                    reason: "per-endpoint and GraphQL/JSON-RPC/MCP rights are not applied"
                        .to_owned(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

/// Every stored-only field as the compatibility table lists it.
pub fn stored_only_fields() -> impl Iterator<Item = &'static str> {
    STORED_ONLY
        .iter()
        .chain(NESTED_STORED_ONLY)
        .map(|s| s.field)
        .chain(POLICY_ACCESS_STORED_ONLY.iter().copied())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn api(v: Value) -> ApiDefinition {
        ApiDefinition::parse(v.to_string().as_bytes()).unwrap()
    }

    fn fields(ws: &[Warning]) -> Vec<&str> {
        ws.iter().map(|w| w.field.as_str()).collect()
    }

    #[test]
    fn a_plain_definition_has_no_warnings() {
        let d = api(json!({
            "api_id": "a", "name": "a", "slug": "a", "org_id": "o", "active": true,
            "definition": {"location": "header", "key": "x-api-version"},
            "version_data": {"not_versioned": true, "versions": {"Default": {
                "name": "Default", "expires": "3000-01-02 15:04", "use_extended_paths": true,
                "extended_paths": {"ignored": [], "white_list": [], "black_list": []},
                "global_headers": {"X-A": "b"}}}},
            "cache_options": {"enable_cache": false, "cache_timeout": 60},
            "CORS": {"enable": false, "allowed_origins": ["*"]},
            "do_not_track": true, "enable_batch_request_support": false,
            "proxy": {"listen_path": "/a/", "target_url": "http://u/", "strip_listen_path": true},
        }));
        assert_eq!(api_warnings(&d), vec![]);
    }

    #[test]
    fn each_set_stored_only_field_is_named() {
        let d = api(json!({
            "api_id": "a",
            "version_data": {"not_versioned": false, "versions": {
                "v1": {"expires": "2020-01-01 00:00", "extended_paths": {
                    "transform_jq": [{"path": "/p", "method": "POST", "filter": "."}],
                    "white_list": []}},
                "v2": {"override_target": "http://v2/"}}},
            "custom_middleware": {"pre": [{"name": "p", "path": "p.js"}], "post": []},
            "cache_options": {"enable_cache": true},
            "enable_context_vars": true,
            "x_made_up": 1,
            "proxy": {"listen_path": "/a/", "target_url": "http://u/",
                "transport": {"proxy_url": "http://fwd:3128"}},
        }));
        assert_eq!(
            fields(&api_warnings(&d)),
            [
                "cache_options",
                "custom_middleware.pre",
                "enable_context_vars",
                "proxy.transport.proxy_url",
                "version_data.not_versioned",
                "version_data.versions.v1.expires",
                "version_data.versions.v1.extended_paths.transform_jq",
                "version_data.versions.v2.override_target",
                "x_made_up",
            ]
        );
    }

    #[test]
    fn policy_fields_outside_the_typed_view_are_named() {
        let p = Policy::parse(
            json!({"id": "p", "name": "p", "rate": 1, "per": 1, "throttle_interval": 10,
                "access_rights": {"a": {"api_id": "a", "versions": ["Default"],
                    "endpoints": [{"path": "/x", "methods": []}]}}})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            fields(&policy_warnings(&p)),
            ["access_rights.a.endpoints", "throttle_interval"]
        );
    }

    #[test]
    fn the_compatibility_table_lists_every_field() {
        let doc = include_str!("../../../docs/tyk-compatibility.md");
        for field in stored_only_fields().chain(API_ENFORCED.iter().copied()) {
            assert!(
                doc.contains(&format!("`{field}`")),
                "docs/tyk-compatibility.md does not list `{field}`"
            );
        }
    }
}
