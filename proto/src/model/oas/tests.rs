//! The mapping checked with Tyk's documentation examples (tests/data/tyk/README.md).

use serde_json::{Value, json};

use super::*;
use crate::model::compat;

const PETSTORE: &str = include_str!("../../../../tests/data/tyk/oas_petstore.json");
const TOKEN_OPENAPI: &str = include_str!("../../../../tests/data/tyk/oas_auth_token_openapi.yaml");
const TOKEN_EXTENSION: &str =
    include_str!("../../../../tests/data/tyk/oas_auth_token_extension.yaml");
const TOKEN_LOCATIONS: &str =
    include_str!("../../../../tests/data/tyk/oas_auth_token_locations_extension.yaml");
const BASIC_OPENAPI: &str = include_str!("../../../../tests/data/tyk/oas_basic_auth_openapi.yaml");
const BASIC_EXTENSION: &str =
    include_str!("../../../../tests/data/tyk/oas_basic_auth_extension.yaml");
const BASIC_LOCATIONS: &str =
    include_str!("../../../../tests/data/tyk/oas_basic_auth_locations_extension.yaml");

fn yaml(s: &str) -> Value {
    yaml_serde::from_str(s).unwrap()
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(e) => merge(e, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// The Petstore definition with documentation fragments laid over it.
fn petstore_with(fragments: &[&str]) -> Value {
    let mut doc: Value = serde_json::from_str(PETSTORE).unwrap();
    for f in fragments {
        merge(&mut doc, yaml(f));
    }
    doc
}

fn parse_value(v: &Value) -> Result<OasApi, ValidationError> {
    parse(v.to_string().as_bytes())
}

#[test]
fn the_petstore_example_maps_to_a_keyless_classic_api() {
    let api = parse(PETSTORE.as_bytes()).unwrap();
    let c = api.definition.to_value();
    assert_eq!(c["name"], "Petstore");
    assert_eq!(c["proxy"]["listen_path"], "/petstore/");
    assert_eq!(c["proxy"]["target_url"], "https://petstore.swagger.io/v2");
    assert_eq!(c["proxy"]["strip_listen_path"], true);
    assert_eq!(c["use_keyless"], true);
    assert_eq!(c["active"], true);
    // Generated as Tyk does, 32 hex digits.
    assert_eq!(api.definition.api_id().len(), 32);
    assert!(api.warnings.is_empty(), "{:?}", api.warnings);
    assert!(compat::api_warnings(&api.definition).is_empty());
}

#[test]
fn round_trip_keeps_listen_path_upstream_auth_and_ids() {
    let doc = petstore_with(&[TOKEN_OPENAPI, TOKEN_EXTENSION]);
    let api = parse_value(&doc).unwrap();
    let c = api.definition.to_value();
    assert_eq!(c["use_keyless"], false);
    assert_eq!(c["use_standard_auth"], true);
    assert_eq!(c["auth"]["auth_header_name"], "Authorization");
    assert_eq!(c["auth_configs"]["authToken"]["name"], "myAuthScheme");

    let back = to_oas(&api.definition);
    let x = &back[EXTENSION];
    assert_eq!(x["info"]["id"], json!(api.definition.api_id()));
    assert_eq!(
        x["server"]["listenPath"],
        json!({"value": "/petstore/", "strip": true})
    );
    assert_eq!(x["upstream"]["url"], "https://petstore.swagger.io/v2");
    assert_eq!(x["server"]["authentication"]["enabled"], true);
    assert_eq!(
        x["server"]["authentication"]["securitySchemes"]["myAuthScheme"]["enabled"],
        true
    );
    // The operator's OpenAPI parts come back as written.
    assert_eq!(back["info"], doc["info"]);
    assert_eq!(back["security"], doc["security"]);
    assert_eq!(
        back["components"]["securitySchemes"]["myAuthScheme"],
        doc["components"]["securitySchemes"]["myAuthScheme"]
    );

    // And the view parses to the same classic definition.
    let again = parse_value(&back).unwrap();
    let mut a = again.definition.to_value();
    let mut b = c.clone();
    for v in [&mut a, &mut b] {
        v.as_object_mut().unwrap().remove(DOCUMENT_FIELD);
    }
    assert_eq!(a, b);
}

#[test]
fn extra_token_locations_become_query_and_cookie() {
    let api = parse_value(&petstore_with(&[TOKEN_OPENAPI, TOKEN_LOCATIONS])).unwrap();
    let a = &api.definition.spec().auth;
    assert_eq!(a.auth_header_name, "Authorization");
    assert!(a.use_param && a.param_name == "query-auth");
    assert!(a.use_cookie && a.cookie_name == "cookie-auth");
    let back = to_oas(&api.definition);
    let s = &back[EXTENSION]["server"]["authentication"]["securitySchemes"]["myAuthScheme"];
    assert_eq!(s["query"], json!({"enabled": true, "name": "query-auth"}));
    assert_eq!(s["cookie"], json!({"enabled": true, "name": "cookie-auth"}));
}

#[test]
fn the_basic_auth_example_selects_basic_auth() {
    let api = parse_value(&petstore_with(&[BASIC_OPENAPI, BASIC_EXTENSION])).unwrap();
    let s = api.definition.spec();
    assert!(s.use_basic_auth && !s.use_keyless && !s.use_standard_auth);
    let back = to_oas(&api.definition);
    assert_eq!(
        back["components"]["securitySchemes"]["myAuthScheme"],
        json!({"type": "http", "scheme": "basic"})
    );
}

#[test]
fn basic_auth_outside_the_authorization_header_is_refused() {
    let e = parse_value(&petstore_with(&[BASIC_OPENAPI, BASIC_LOCATIONS])).unwrap_err();
    assert_eq!(
        e.field,
        "x-tyk-api-gateway.server.authentication.securitySchemes.myAuthScheme"
    );
}

#[test]
fn a_classic_api_has_an_oas_view_that_maps_back() {
    let def = crate::model::ApiDefinition::parse(
        br#"{"api_id":"c1","name":"classic","proxy":{"listen_path":"/c/","target_url":"http://u:1/","strip_listen_path":true},
            "use_basic_auth":true}"#,
    )
    .unwrap();
    let view = to_oas(&def);
    assert_eq!(view["openapi"], "3.0.3");
    assert_eq!(view["security"], json!([{"basic": []}]));
    let back = parse_value(&view).unwrap();
    assert_eq!(back.definition.api_id(), "c1");
    assert!(back.definition.spec().use_basic_auth);
    assert_eq!(back.definition.spec().proxy.listen_path, "/c/");
}

#[test]
fn jwt_maps_its_settings() {
    let doc = petstore_with(&[]);
    let mut doc = doc;
    merge(
        &mut doc,
        json!({
            "components": {"securitySchemes": {"jwtAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
            "security": [{"jwtAuth": []}],
            "x-tyk-api-gateway": {"server": {"authentication": {"enabled": true, "securitySchemes": {
                "jwtAuth": {"enabled": true, "source": "c2VjcmV0", "signingMethod": "hmac",
                    "identityBaseField": "sub", "policyFieldName": "pol",
                    "header": {"enabled": true, "name": "Authorization"}}}}}},
        }),
    );
    let api = parse_value(&doc).unwrap();
    let idp = api.definition.idp();
    assert!(idp.enable_jwt);
    assert_eq!(idp.jwt_signing_method, "hmac");
    assert_eq!(idp.jwt_policy_field_name, "pol");
    let back = to_oas(&api.definition);
    assert_eq!(
        back[EXTENSION]["server"]["authentication"]["securitySchemes"]["jwtAuth"]["source"],
        "c2VjcmV0"
    );
}

#[test]
fn unsupported_or_ambiguous_schemes_are_refused_by_field() {
    let with = |extra: Value| {
        let mut d = petstore_with(&[]);
        merge(&mut d, extra);
        parse_value(&d).unwrap_err().field
    };
    assert_eq!(
        with(json!({
            "components": {"securitySchemes": {"oidc": {"type": "openIdConnect", "openIdConnectUrl": "https://i/"}}},
            "security": [{"oidc": []}],
            "x-tyk-api-gateway": {"server": {"authentication": {"enabled": true,
                "securitySchemes": {"oidc": {"enabled": true}}}}},
        })),
        "components.securitySchemes.oidc.type"
    );
    assert_eq!(
        with(json!({
            "components": {"securitySchemes": {"d": {"type": "http", "scheme": "digest"}}},
            "security": [{"d": []}],
            "x-tyk-api-gateway": {"server": {"authentication": {"enabled": true,
                "securitySchemes": {"d": {"enabled": true}}}}},
        })),
        "components.securitySchemes.d.scheme"
    );
    // Enabled, but nothing selected: not served open, not guessed.
    assert_eq!(
        with(json!({"x-tyk-api-gateway": {"server": {"authentication": {"enabled": true}}}})),
        "x-tyk-api-gateway.server.authentication.enabled"
    );
    // Two token schemes in one requirement.
    assert!(
        with(json!({
            "components": {"securitySchemes": {
                "a": {"type": "apiKey", "in": "header", "name": "X-A"},
                "b": {"type": "apiKey", "in": "header", "name": "X-B"}}},
            "security": [{"a": [], "b": []}],
            "x-tyk-api-gateway": {"server": {"authentication": {"enabled": true,
                "securitySchemes": {"a": {"enabled": true}, "b": {"enabled": true}}}}},
        }))
        .ends_with(".b")
    );
    // A JWT setting this mapping does not read.
    assert_eq!(
        with(json!({
            "components": {"securitySchemes": {"j": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
            "security": [{"j": []}],
            "x-tyk-api-gateway": {"server": {"authentication": {"enabled": true,
                "securitySchemes": {"j": {"enabled": true, "source": "eA==", "signingMethod": "hmac",
                    "allowedIssuers": ["https://i/"]}}}}},
        })),
        "x-tyk-api-gateway.server.authentication.securitySchemes.j.allowedIssuers"
    );
    assert_eq!(
        with(
            json!({"x-tyk-api-gateway": {"server": {"ipAccessControl": {"enabled": true, "allow": ["10.0.0.1"]}}}})
        ),
        "x-tyk-api-gateway.server.ipAccessControl"
    );
    assert_eq!(
        with(
            json!({"x-tyk-api-gateway": {"middleware": {"operations": {"getPet": {"allow": {"enabled": true}}}}}})
        ),
        "x-tyk-api-gateway.middleware.operations.getPet.allow"
    );
    assert_eq!(
        with(
            json!({"x-tyk-api-gateway": {"server": {"authentication": {"enabled": true,
            "custom": {"enabled": true}}}}})
        ),
        "x-tyk-api-gateway.server.authentication.custom"
    );
}

#[test]
fn wrong_types_and_missing_fields_name_the_oas_field() {
    let with = |extra: Value| {
        let mut d = petstore_with(&[]);
        merge(&mut d, extra);
        parse_value(&d).unwrap_err().field
    };
    assert_eq!(
        with(json!({"x-tyk-api-gateway": {"server": {"listenPath": {"value": 5}}}})),
        "x-tyk-api-gateway.server.listenPath.value"
    );
    assert_eq!(
        with(json!({"x-tyk-api-gateway": {"server": {"listenPath": {"value": "no-slash"}}}})),
        "x-tyk-api-gateway.server.listenPath.value"
    );
    assert_eq!(
        with(json!({"x-tyk-api-gateway": {"upstream": {"url": "ftp://x/"}}})),
        "x-tyk-api-gateway.upstream.url"
    );
    assert_eq!(
        with(json!({"x-tyk-api-gateway": {"info": {"state": {"active": "yes"}}}})),
        "x-tyk-api-gateway.info.state.active"
    );
    assert_eq!(with(json!({"openapi": "2.0"})), "openapi");
    assert_eq!(
        with(json!({"x-tyk-api-gateway": {"info": {"state": {"internal": true}}}})),
        "x-tyk-api-gateway.info.state.internal"
    );
    let mut d: Value = serde_json::from_str(PETSTORE).unwrap();
    d.as_object_mut().unwrap().remove(EXTENSION);
    assert_eq!(parse_value(&d).unwrap_err().field, EXTENSION);
}

#[test]
fn bounds_refuse_oversize_deep_and_wide_documents() {
    let big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
    assert_eq!(parse(&big).unwrap_err().field, "body");
    let mut deep = json!(1);
    for _ in 0..(MAX_DEPTH + 1) {
        deep = json!([deep]);
    }
    let mut d = petstore_with(&[]);
    d["x-deep"] = deep;
    assert_eq!(parse_value(&d).unwrap_err().field, "body");
    let mut d = petstore_with(&[]);
    let paths: serde_json::Map<String, Value> = (0..=MAX_PATHS)
        .map(|i| (format!("/p{i}"), json!({})))
        .collect();
    d["paths"] = Value::Object(paths);
    assert_eq!(parse_value(&d).unwrap_err().field, "paths");
    let mut d = petstore_with(&[]);
    let schemes: serde_json::Map<String, Value> = (0..=MAX_SECURITY_SCHEMES)
        .map(|i| {
            (
                format!("s{i}"),
                json!({"type": "apiKey", "in": "header", "name": "k"}),
            )
        })
        .collect();
    d["components"] = json!({"securitySchemes": schemes});
    assert_eq!(
        parse_value(&d).unwrap_err().field,
        "components.securitySchemes"
    );
}

#[test]
fn stored_only_extension_fields_are_warned_about() {
    let mut d = petstore_with(&[]);
    merge(
        &mut d,
        json!({"x-tyk-api-gateway": {
            "middleware": {"global": {"cors": {"enabled": true}},
                "operations": {"getPet": {"mockResponse": {"enabled": true}}}},
            "upstream": {"rateLimit": {"enabled": true, "rate": 1, "per": "1s"}}}}),
    );
    let api = parse_value(&d).unwrap();
    let fields: Vec<&str> = api.warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "x-tyk-api-gateway.middleware.global.cors",
            "x-tyk-api-gateway.middleware.operations.getPet.mockResponse",
            "x-tyk-api-gateway.upstream.rateLimit",
        ]
    );
    // Kept in the document and returned.
    let back = to_oas(&api.definition);
    assert_eq!(
        back[EXTENSION]["middleware"]["global"]["cors"]["enabled"],
        true
    );
}

#[test]
fn import_builds_the_extension_from_the_parameters() {
    let mut d: Value = serde_json::from_str(PETSTORE).unwrap();
    d.as_object_mut().unwrap().remove(EXTENSION);
    let body = d.to_string();
    let p = ImportParams::from_query([
        ("listenPath", "/pets/"),
        ("upstreamURL", "http://127.0.0.1:9/"),
        ("customDomain", "pets.example"),
    ])
    .unwrap();
    let api = import(body.as_bytes(), &p).unwrap();
    let s = api.definition.spec();
    assert_eq!(s.proxy.listen_path, "/pets/");
    assert_eq!(s.proxy.target_url, "http://127.0.0.1:9/");
    assert_eq!(s.domain, "pets.example");
    assert_eq!(s.name, "Petstore");
    assert!(s.use_keyless && s.active && s.proxy.strip_listen_path);

    // Without upstreamURL and servers, Tyk has no upstream.
    let e = import(body.as_bytes(), &ImportParams::default()).unwrap_err();
    assert_eq!(e.field, "upstreamURL");
    // servers[0] with variables.
    let mut d2 = d.clone();
    d2["servers"] =
        json!([{"url": "https://{env}.example.com/v2", "variables": {"env": {"default": "api"}}}]);
    let api = import(d2.to_string().as_bytes(), &ImportParams::default()).unwrap();
    assert_eq!(
        api.definition.spec().proxy.target_url,
        "https://api.example.com/v2"
    );
    assert_eq!(api.definition.spec().proxy.listen_path, "/");

    let e = import(PETSTORE.as_bytes(), &p).unwrap_err();
    assert_eq!(e.field, EXTENSION);
    let e = ImportParams::from_query([("allowList", "maybe")]).unwrap_err();
    assert_eq!(e.field, "allowList");
}

#[test]
fn import_with_authentication_enables_the_documented_scheme() {
    let mut d: Value = serde_json::from_str(PETSTORE).unwrap();
    d.as_object_mut().unwrap().remove(EXTENSION);
    merge(&mut d, yaml(TOKEN_OPENAPI));
    let p = ImportParams::from_query([
        ("upstreamURL", "http://127.0.0.1:9/"),
        ("authentication", "true"),
    ])
    .unwrap();
    let api = import(d.to_string().as_bytes(), &p).unwrap();
    assert!(api.definition.spec().use_standard_auth);
    assert!(!api.definition.spec().use_keyless);
}

#[test]
fn go_durations() {
    assert_eq!(security::go_duration_secs("1h30m"), Some(5400));
    assert_eq!(security::go_duration_secs("90s"), Some(90));
    assert_eq!(security::go_duration_secs("1.5h"), Some(5400));
    assert_eq!(security::go_duration_secs("soon"), None);
    assert_eq!(security::go_duration_secs(""), None);
}

#[test]
fn a_classic_check_on_a_scheme_setting_names_the_scheme_field() {
    let mut d = petstore_with(&[]);
    merge(
        &mut d,
        json!({
            "components": {"securitySchemes": {"jwtAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
            "security": [{"jwtAuth": []}],
            "x-tyk-api-gateway": {"server": {"authentication": {"enabled": true, "securitySchemes": {
                "jwtAuth": {"enabled": true, "source": "not base64 !", "signingMethod": "rsa"}}}}},
        }),
    );
    let e = parse_value(&d).unwrap_err();
    assert_eq!(
        e.field, "x-tyk-api-gateway.server.authentication.securitySchemes.jwtAuth.source",
        "{e}"
    );
    assert!(e.reason.contains("classic field jwt_source"), "{e}");
}

const EXTERNAL_JWT: &str =
    include_str!("../../../../tests/data/tyk/oas_external_oauth_jwt.fragment");
const EXTERNAL_INTROSPECTION: &str =
    include_str!("../../../../tests/data/tyk/oas_external_oauth_introspection.fragment");

/// Petstore with a documented `"securitySchemes": {...}` member as its extension's schemes.
fn with_external(fragment: &str) -> (Value, String) {
    let member: Value = serde_json::from_str(&format!("{{{fragment}}}")).unwrap();
    let schemes = member["securitySchemes"].clone();
    let name = schemes.as_object().unwrap().keys().next().unwrap().clone();
    let mut d = petstore_with(&[]);
    merge(
        &mut d,
        json!({
            "components": {"securitySchemes": {&name: {"type": "oauth2", "flows": {}}}},
            "security": [{&name: []}],
            "x-tyk-api-gateway": {"server": {"authentication": {"enabled": true, "securitySchemes": schemes}}},
        }),
    );
    (d, name)
}

#[test]
fn the_external_oauth_examples_map_to_the_classic_the_docs_give() {
    let (d, name) = with_external(EXTERNAL_JWT);
    let api = parse_value(&d).unwrap();
    let c = api.definition.to_value();
    // The Classic of the same page: jwt on, introspection off.
    assert_eq!(c["external_oauth"]["enabled"], true);
    let p = &c["external_oauth"]["providers"][0];
    assert_eq!(
        p["jwt"],
        json!({"enabled": true, "signing_method": "hmac", "source": "dHlrLTEyMw==",
            "issued_at_validation_skew": 0, "not_before_validation_skew": 0,
            "expires_at_validation_skew": 0, "identity_base_field": "sub"})
    );
    assert_eq!(p["introspection"]["enabled"], false);
    assert_eq!(c["auth_configs"]["externalOAuth"]["name"], json!(name));
    let back = to_oas(&api.definition);
    let s = &back[EXTENSION]["server"]["authentication"]["securitySchemes"][&name];
    assert_eq!(s["providers"][0]["jwt"]["source"], "dHlrLTEyMw==");

    let (d, _) = with_external(EXTERNAL_INTROSPECTION);
    let api = parse_value(&d).unwrap();
    let i = &api.definition.to_value()["external_oauth"]["providers"][0]["introspection"];
    assert_eq!(
        *i,
        json!({"enabled": true,
            "url": "http://localhost:8080/realms/tyk/protocol/openid-connect/token/introspect",
            "client_id": "introspection-client", "client_secret": "DKyFN0WXu7IXWzR05QZOnnSnK8uAAZ3U",
            "identity_base_field": "sub", "cache": {"enabled": true, "timeout": 3}})
    );
    // The secret is in the classic field only (sealed there by the control plane), not in the
    // stored document.
    let stored = api.definition.to_value()[DOCUMENT_FIELD].to_string();
    assert!(
        !stored.contains("DKyFN0WXu7IXWzR05QZOnnSnK8uAAZ3U"),
        "{stored}"
    );
}

/// Every node of the documented definitions replaced by each JSON kind: a result every time
/// (never a panic), and an error always names a field.
#[test]
fn any_node_of_any_type_is_an_answer_not_a_panic() {
    fn paths(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => m.iter().for_each(|(k, v)| {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                paths(v, p, out);
            }),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                paths(v, p, out);
            }),
            _ => {}
        }
    }
    let replacements = [
        json!(null),
        json!(true),
        json!(0),
        json!(-1),
        json!(1e300),
        json!(""),
        json!("x"),
        json!([]),
        json!({}),
        json!([1]),
        json!({"enabled": true}),
    ];
    for base in [
        petstore_with(&[TOKEN_OPENAPI, TOKEN_LOCATIONS]),
        petstore_with(&[BASIC_OPENAPI, BASIC_EXTENSION]),
        with_external(EXTERNAL_INTROSPECTION).0,
    ] {
        let mut all = Vec::new();
        paths(&base, String::new(), &mut all);
        for p in &all {
            for r in &replacements {
                let mut d = base.clone();
                if let Some(slot) = d.pointer_mut(p) {
                    *slot = r.clone();
                }
                match parse_value(&d) {
                    Ok(api) => {
                        let _ = to_oas(&api.definition);
                    }
                    Err(e) => assert!(!e.field.is_empty(), "{p} = {r}: {e}"),
                }
                let mut plain = d.clone();
                if let Some(m) = plain.as_object_mut() {
                    m.remove(EXTENSION);
                }
                let _ = import(
                    plain.to_string().as_bytes(),
                    &ImportParams {
                        upstream_url: Some("http://127.0.0.1:9/".into()),
                        authentication: true,
                        ..ImportParams::default()
                    },
                );
            }
        }
    }
}
