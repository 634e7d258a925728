//! Classic → OAS: the view `GET /tyk/apis/oas/{id}` returns. The extension is regenerated
//! from the classic fields (the ones enforced), then laid over the document the API was
//! written with, if any; an API written as Classic gets a minimal OpenAPI description
//! (docs/oas.md, "Reading back").

use serde_json::{Map, Value, json};

use super::super::{ApiDefinition, AuthTokenSpec};
use super::{DOCUMENT_FIELD, EXTENSION};

/// Scheme names Tyk's Classic → OAS migration gives each method (its `auth_configs` key).
const TOKEN: &str = "authToken";
const BASIC: &str = "basic";
const JWT: &str = "jwt";
const OAUTH: &str = "oauth";
const EXTERNAL: &str = "externalOAuth";

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or_default()
}

fn bool_at(v: &Value, path: &str) -> bool {
    matches!(get(v, path), Some(Value::Bool(true)))
}

/// The scheme name a method was written under (`auth_configs.<key>.name`), else Tyk's default.
fn scheme_name(raw: &Value, key: &str) -> String {
    match str_at(raw, &format!("auth_configs.{key}.name")) {
        "" => key.to_owned(),
        name => name.to_owned(),
    }
}

/// The OAS view of any stored API.
pub fn to_oas(def: &ApiDefinition) -> Value {
    let raw = def.to_value();
    let s = def.spec();
    let mut doc = match raw.get(DOCUMENT_FIELD) {
        Some(Value::Object(d)) => d.clone(),
        _ => Map::new(),
    };
    doc.entry("openapi").or_insert_with(|| json!("3.0.3"));
    doc.entry("info")
        .or_insert_with(|| json!({"title": s.name, "version": "1.0.0"}));
    doc.entry("paths").or_insert_with(|| json!({}));

    let mut info = json!({
        "id": s.api_id,
        "name": s.name,
        "state": {"active": s.active},
    });
    if !s.org_id.is_empty() {
        info["orgId"] = json!(s.org_id);
    }
    if let Some(Value::String(id)) = raw.get("id")
        && !id.is_empty()
    {
        info["dbId"] = json!(id);
    }
    let mut server = json!({
        "listenPath": {"value": s.proxy.listen_path, "strip": s.proxy.strip_listen_path},
    });
    if !s.domain.is_empty() || !s.certificates.is_empty() {
        let mut d = json!({"enabled": !s.domain.is_empty(), "name": s.domain});
        if !s.certificates.is_empty() {
            d["certificates"] = json!(s.certificates);
        }
        server["customDomain"] = d;
    }
    if !s.tags.is_empty() {
        server["gatewayTags"] = json!({"enabled": true, "tags": s.tags});
    }
    if s.use_mutual_tls_auth {
        server["clientCertificates"] = json!({"enabled": true, "allowlist": s.client_certificates});
    }
    let (authentication, components, requirement) = security(def, &raw);
    server["authentication"] = authentication;
    let generated = json!({
        "info": info,
        "upstream": {"url": s.proxy.target_url},
        "server": server,
    });

    let ext = doc
        .entry(EXTENSION)
        .or_insert_with(|| Value::Object(Map::new()));
    merge(ext, generated);
    if !components.is_empty() {
        let c = doc
            .entry("components")
            .or_insert_with(|| Value::Object(Map::new()));
        if !c.is_object() {
            *c = Value::Object(Map::new());
        }
        let schemes = c.as_object_mut().map(|c| {
            c.entry("securitySchemes")
                .or_insert_with(|| Value::Object(Map::new()))
        });
        if let Some(Value::Object(schemes)) = schemes {
            for (name, generated) in components {
                let keep = schemes
                    .get(&name)
                    .is_some_and(|stored| keep_stored(stored, &generated, &s.auth));
                if !keep {
                    schemes.insert(name, generated);
                }
            }
        }
    }
    set_requirement(&mut doc, requirement);
    Value::Object(doc)
}

/// The operator's own component is kept when it still describes what the classic fields
/// enforce (its description, flows and extensions stay); otherwise the generated one replaces it.
fn keep_stored(stored: &Value, generated: &Value, a: &AuthTokenSpec) -> bool {
    let field = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    if field(stored, "type") != field(generated, "type") {
        return false;
    }
    match field(generated, "type").as_str() {
        "apiKey" => {
            let n = field(stored, "name");
            let or_header = |s: &str| {
                if s.is_empty() {
                    a.auth_header_name.clone()
                } else {
                    s.to_owned()
                }
            };
            match field(stored, "in").as_str() {
                "header" => n.eq_ignore_ascii_case(&a.auth_header_name),
                "query" => a.use_param && or_header(&a.param_name) == n,
                "cookie" => a.use_cookie && or_header(&a.cookie_name) == n,
                _ => false,
            }
        }
        "http" => {
            field(stored, "scheme").eq_ignore_ascii_case(&field(generated, "scheme"))
                && field(stored, "bearerFormat") == field(generated, "bearerFormat")
        }
        _ => true,
    }
}

/// Lays `over` onto `base`: objects merge key by key, anything else replaces.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Keeps the document's `security` when its first requirement already names the enabled
/// schemes (further requirements are Tyk's legacy-mode alternatives, stored unenforced);
/// otherwise the first requirement is the generated one.
fn set_requirement(doc: &mut Map<String, Value>, requirement: Map<String, Value>) {
    let first = doc
        .get("security")
        .and_then(Value::as_array)
        .and_then(|r| r.first())
        .and_then(Value::as_object);
    let same = first.is_some_and(|f| {
        f.len() == requirement.len() && requirement.keys().all(|k| f.contains_key(k))
    });
    if same {
        return;
    }
    if requirement.is_empty() {
        if first.is_some_and(|f| !f.is_empty()) {
            doc.remove("security");
        }
        return;
    }
    let mut rest: Vec<Value> = doc
        .get("security")
        .and_then(Value::as_array)
        .map(|r| r.iter().skip(1).cloned().collect())
        .unwrap_or_default();
    rest.insert(0, Value::Object(requirement));
    doc.insert("security".into(), Value::Array(rest));
}

/// `server.authentication`, the `components.securitySchemes` entries, and the requirement.
fn security(def: &ApiDefinition, raw: &Value) -> (Value, Map<String, Value>, Map<String, Value>) {
    let s = def.spec();
    let mut auth = json!({"enabled": !s.use_keyless});
    let mut schemes = Map::new();
    let mut components = Map::new();
    let mut requirement = Map::new();
    if s.use_keyless {
        return (auth, components, requirement);
    }
    if s.strip_auth_data {
        auth["stripAuthorizationData"] = json!(true);
    }
    if !s.base_identity_provided_by.is_empty() {
        auth["baseIdentityProvider"] = json!(s.base_identity_provided_by);
    }
    if s.session_lifetime > 0 {
        auth["customKeyLifetime"] = json!({
            "enabled": true,
            "value": format!("{}s", s.session_lifetime),
            "respectValidity": bool_at(raw, "session_lifetime_respects_key_expiration"),
        });
    }
    let idp = def.idp();
    let oauth = def.oauth();
    let hmac = def.hmac();
    let others = s.use_basic_auth
        || idp.enable_jwt
        || idp.external_oauth.enabled
        || idp.use_openid
        || oauth.use_oauth2
        || hmac.enable_signature_checking
        || def.plugins().auth_enabled()
        || s.use_mutual_tls_auth;
    // Tyk runs auth token when asked to, or when no other method is on.
    if s.use_standard_auth || !others {
        let name = scheme_name(raw, TOKEN);
        let a = &s.auth;
        components.insert(
            name.clone(),
            json!({"type": "apiKey", "in": "header", "name": a.auth_header_name}),
        );
        // The edge always reads the header, so the view says so whatever the component's `in`.
        let mut x =
            json!({"enabled": true, "header": {"enabled": true, "name": a.auth_header_name}});
        if a.use_param {
            let p = if a.param_name.is_empty() {
                &a.auth_header_name
            } else {
                &a.param_name
            };
            x["query"] = json!({"enabled": true, "name": p});
        }
        if a.use_cookie {
            let c = if a.cookie_name.is_empty() {
                &a.auth_header_name
            } else {
                &a.cookie_name
            };
            x["cookie"] = json!({"enabled": true, "name": c});
        }
        if a.use_certificate {
            x["enableClientCertificate"] = json!(true);
        }
        if a.validate_signature {
            let g = &a.signature;
            let query = if g.use_param {
                g.param_name.as_str()
            } else {
                ""
            };
            x["signatureValidation"] = json!({
                "enabled": true,
                "algorithm": g.algorithm,
                "header": g.header,
                "query": query,
                "secret": g.secret,
                "allowedClockSkew": g.allowed_clock_skew,
                "errorCode": g.error_code,
                "errorMessage": g.error_message,
            });
        }
        schemes.insert(name.clone(), x);
        requirement.insert(name, json!([]));
    }
    if s.use_basic_auth {
        let name = scheme_name(raw, BASIC);
        components.insert(name.clone(), json!({"type": "http", "scheme": "basic"}));
        let b = &s.basic_auth;
        let mut x = json!({"enabled": true});
        if b.disable_caching {
            x["disableCaching"] = json!(true);
        }
        if b.cache_ttl != 0 {
            x["cacheTTL"] = json!(b.cache_ttl);
        }
        if b.extract_from_body {
            x["extractCredentialsFromBody"] = json!({
                "enabled": true,
                "userRegexp": b.body_user_regexp,
                "passwordRegexp": b.body_password_regexp,
            });
        }
        schemes.insert(name.clone(), x);
        requirement.insert(name, json!([]));
    }
    if idp.enable_jwt {
        let name = scheme_name(raw, JWT);
        components.insert(
            name.clone(),
            json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}),
        );
        let mut x = json!({
            "enabled": true,
            "source": idp.jwt_source,
            "signingMethod": idp.jwt_signing_method,
            "identityBaseField": idp.jwt_identity_base_field,
            "policyFieldName": idp.jwt_policy_field_name,
            "defaultPolicies": idp.jwt_default_policies,
        });
        if !idp.jwt_client_base_field.is_empty() {
            x["clientBaseField"] = json!(idp.jwt_client_base_field);
        }
        if idp.jwt_skip_kid {
            x["skipKid"] = json!(true);
        }
        for (k, v) in [
            ("issuedAtValidationSkew", idp.jwt_issued_at_validation_skew),
            (
                "notBeforeValidationSkew",
                idp.jwt_not_before_validation_skew,
            ),
            (
                "expiresAtValidationSkew",
                idp.jwt_expires_at_validation_skew,
            ),
        ] {
            if v != 0 {
                x[k] = json!(v);
            }
        }
        let scopes = &idp.scopes.jwt;
        if !scopes.scope_to_policy.is_empty() || !scopes.scope_claim_name.is_empty() {
            let mapping: Vec<Value> = scopes
                .scope_to_policy
                .iter()
                .map(|(scope, policy)| json!({"scope": scope, "policyId": policy}))
                .collect();
            x["scopes"] =
                json!({"claimName": scopes.scope_claim_name, "scopeToPolicyMapping": mapping});
        }
        sources(&mut x, raw, "auth_configs.jwt");
        schemes.insert(name.clone(), x);
        requirement.insert(name, json!([]));
    }
    if oauth.use_oauth2 {
        let name = scheme_name(raw, OAUTH);
        let lp = &s.proxy.listen_path;
        let mut flows = Map::new();
        let m = &oauth.oauth_meta;
        let token_url = format!("{lp}oauth/token");
        let authorize_url = format!("{lp}oauth/authorize");
        for t in &m.allowed_access_types {
            match t.as_str() {
                "authorization_code" => {
                    flows.insert(
                        "authorizationCode".into(),
                        json!({"authorizationUrl": authorize_url, "tokenUrl": token_url, "scopes": {}}),
                    );
                }
                "client_credentials" => {
                    flows.insert(
                        "clientCredentials".into(),
                        json!({"tokenUrl": token_url, "scopes": {}}),
                    );
                }
                "password" => {
                    flows.insert(
                        "password".into(),
                        json!({"tokenUrl": token_url, "scopes": {}}),
                    );
                }
                _ => {}
            }
        }
        components.insert(name.clone(), json!({"type": "oauth2", "flows": flows}));
        let mut x = json!({
            "enabled": true,
            "allowedAuthorizeTypes": m.allowed_authorize_types,
            "authLoginRedirect": m.auth_login_redirect,
        });
        if m.allowed_access_types.iter().any(|t| t == "refresh_token") {
            x["refreshToken"] = json!(true);
        }
        let n = &oauth.notifications;
        if !n.shared_secret.is_empty() || !n.oauth_on_keychange_url.is_empty() {
            x["notifications"] = json!({
                "sharedSecret": n.shared_secret,
                "onKeyChangeUrl": n.oauth_on_keychange_url,
            });
        }
        schemes.insert(name.clone(), x);
        requirement.insert(name, json!([]));
    }
    if idp.external_oauth.enabled {
        let name = scheme_name(raw, EXTERNAL);
        components.insert(name.clone(), json!({"type": "oauth2", "flows": {}}));
        let providers: Vec<Value> = idp
            .external_oauth
            .providers
            .iter()
            .map(|p| {
                let j = &p.jwt;
                let i = &p.introspection;
                json!({
                    "jwt": {
                        "enabled": j.enabled,
                        "signingMethod": j.signing_method,
                        "source": j.source,
                        "identityBaseField": j.identity_base_field,
                        "issuedAtValidationSkew": j.issued_at_validation_skew,
                        "notBeforeValidationSkew": j.not_before_validation_skew,
                        "expiresAtValidationSkew": j.expires_at_validation_skew,
                    },
                    "introspection": {
                        "enabled": i.enabled,
                        "url": i.url,
                        "clientId": i.client_id,
                        "clientSecret": i.client_secret,
                        "identityBaseField": i.identity_base_field,
                        "cache": {"enabled": i.cache.enabled, "timeout": i.cache.timeout},
                    },
                })
            })
            .collect();
        let mut x = json!({"enabled": true, "providers": providers});
        sources(&mut x, raw, "auth_configs.externalOAuth");
        schemes.insert(name.clone(), x);
        requirement.insert(name, json!([]));
    }
    if hmac.enable_signature_checking {
        auth["hmac"] = json!({
            "enabled": true,
            "allowedAlgorithms": hmac.hmac_allowed_algorithms,
            "allowedClockSkew": hmac.hmac_allowed_clock_skew,
        });
    }
    // Classic-only methods appear as switched on, so the view does not look weaker than the
    // API is; writing such a view back is refused (docs/oas.md).
    if idp.use_openid {
        auth["oidc"] = json!({"enabled": true});
    }
    if def.plugins().auth_enabled() {
        auth["custom"] = json!({"enabled": true});
    }
    if !schemes.is_empty() {
        auth["securitySchemes"] = Value::Object(schemes);
    }
    (auth, components, requirement)
}

/// Extra credential locations of a method from its `auth_configs` entry.
fn sources(x: &mut Value, raw: &Value, entry: &str) {
    let header = str_at(raw, &format!("{entry}.auth_header_name"));
    if !header.is_empty() && !header.eq_ignore_ascii_case("authorization") {
        x["header"] = json!({"enabled": true, "name": header});
    }
    if bool_at(raw, &format!("{entry}.use_param")) {
        x["query"] = json!({"enabled": true, "name": str_at(raw, &format!("{entry}.param_name"))});
    }
    if bool_at(raw, &format!("{entry}.use_cookie")) {
        x["cookie"] =
            json!({"enabled": true, "name": str_at(raw, &format!("{entry}.cookie_name"))});
    }
}
