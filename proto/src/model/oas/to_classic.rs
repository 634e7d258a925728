//! OAS → Classic: the extension's `info`, `upstream` and `server` become the classic fields
//! the rest of Portcullis acts on (the table is in docs/oas.md).

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::super::ValidationError;
use super::super::compat::Warning;
use super::{DOCUMENT_FIELD, EXTENSION, security, unmapped};

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct Extension {
    pub info: Info,
    pub upstream: Upstream,
    pub server: Server,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct Info {
    pub id: String,
    pub db_id: String,
    pub org_id: String,
    pub name: String,
    pub state: State,
}

/// Absent means inactive, as in Tyk (a Go zero value), so an API is served only when its
/// document says so.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct State {
    pub active: bool,
    pub internal: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Upstream {
    pub url: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct Server {
    pub listen_path: ListenPath,
    pub custom_domain: Option<CustomDomain>,
    pub gateway_tags: Option<GatewayTags>,
    pub client_certificates: Option<ClientCertificates>,
    pub authentication: Option<security::Authentication>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ListenPath {
    pub value: String,
    pub strip: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct CustomDomain {
    pub enabled: bool,
    pub name: String,
    pub certificates: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct GatewayTags {
    pub enabled: bool,
    pub tags: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ClientCertificates {
    pub enabled: bool,
    pub allowlist: Vec<String>,
}

/// Deserializes `value` naming a wrong-typed field by its full OAS path under `prefix`.
pub(super) fn typed<T: DeserializeOwned>(
    value: &Value,
    prefix: &str,
) -> Result<T, ValidationError> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            prefix.to_owned()
        } else {
            format!("{prefix}.{path}")
        };
        ValidationError::new(field, e.into_inner().to_string())
    })
}

fn required(value: &str, field: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        Err(ValidationError::new(
            format!("{EXTENSION}.{field}"),
            "is required",
        ))
    } else {
        Ok(())
    }
}

/// The classic definition of `doc` (whose extension has an id) and the warnings of the
/// extension fields kept without effect.
pub(super) fn classic(
    doc: &Map<String, Value>,
) -> Result<(Map<String, Value>, Vec<Warning>), ValidationError> {
    let raw_ext = doc.get(EXTENSION).cloned().unwrap_or(Value::Null);
    let ext: Extension = typed(&raw_ext, EXTENSION)?;
    required(&ext.info.name, "info.name")?;
    required(&ext.upstream.url, "upstream.url")?;
    required(&ext.server.listen_path.value, "server.listenPath.value")?;
    let warnings = unmapped::check(&raw_ext)?;

    let mut c = Map::new();
    c.insert("api_id".into(), json!(ext.info.id));
    if !ext.info.db_id.is_empty() {
        c.insert("id".into(), json!(ext.info.db_id));
    }
    c.insert("org_id".into(), json!(ext.info.org_id));
    c.insert("name".into(), json!(ext.info.name));
    c.insert("active".into(), json!(ext.info.state.active));
    if ext.info.state.internal {
        // As for Classic `internal` (docs/security.md): served on its listen path, an internal
        // API would be reachable from outside.
        return Err(ValidationError::new(
            format!("{EXTENSION}.info.state.internal"),
            "internal APIs are not implemented; the API would be reachable from outside",
        ));
    }
    c.insert(
        "proxy".into(),
        json!({
            "listen_path": ext.server.listen_path.value,
            "target_url": ext.upstream.url,
            "strip_listen_path": ext.server.listen_path.strip,
        }),
    );
    if let Some(d) = &ext.server.custom_domain {
        if d.enabled {
            c.insert("domain".into(), json!(d.name));
        } else if !d.name.is_empty() {
            c.insert("domain_disabled".into(), json!(true));
        }
        if !d.certificates.is_empty() {
            c.insert("certificates".into(), json!(d.certificates));
        }
    }
    if let Some(t) = &ext.server.gateway_tags
        && t.enabled
    {
        c.insert("tags".into(), json!(t.tags));
    }
    let mtls = ext
        .server
        .client_certificates
        .as_ref()
        .is_some_and(|m| m.enabled);
    if let Some(m) = &ext.server.client_certificates
        && m.enabled
    {
        c.insert("use_mutual_tls_auth".into(), json!(true));
        c.insert("client_certificates".into(), json!(m.allowlist));
    }
    security::extract(doc, ext.server.authentication.as_ref(), mtls, &mut c)?;
    // Tyk serves an OAS API unversioned (docs/oas.md).
    c.insert(
        "version_data".into(),
        json!({"not_versioned": true, "default_version": "", "versions": {"": {"name": ""}}}),
    );
    c.insert(
        DOCUMENT_FIELD.into(),
        Value::Object(unmapped::remainder(doc)),
    );
    Ok((c, warnings))
}

/// Classic fields an OAS document sets, by the OAS path an operator wrote.
const CLASSIC_TO_OAS: &[(&str, &str)] = &[
    ("api_id", "x-tyk-api-gateway.info.id"),
    ("id", "x-tyk-api-gateway.info.dbId"),
    ("org_id", "x-tyk-api-gateway.info.orgId"),
    ("name", "x-tyk-api-gateway.info.name"),
    (
        "proxy.listen_path",
        "x-tyk-api-gateway.server.listenPath.value",
    ),
    ("proxy.target_url", "x-tyk-api-gateway.upstream.url"),
    ("domain", "x-tyk-api-gateway.server.customDomain.name"),
    (
        "certificates",
        "x-tyk-api-gateway.server.customDomain.certificates",
    ),
    ("tags", "x-tyk-api-gateway.server.gatewayTags.tags"),
    (
        "client_certificates",
        "x-tyk-api-gateway.server.clientCertificates.allowlist",
    ),
    (
        "session_lifetime",
        "x-tyk-api-gateway.server.authentication.customKeyLifetime.value",
    ),
    (
        "base_identity_provided_by",
        "x-tyk-api-gateway.server.authentication.baseIdentityProvider",
    ),
    (
        "hmac_allowed_algorithms",
        "x-tyk-api-gateway.server.authentication.hmac.allowedAlgorithms",
    ),
    (
        "hmac_allowed_clock_skew",
        "x-tyk-api-gateway.server.authentication.hmac.allowedClockSkew",
    ),
];

/// Classic fields (or prefixes, ending in `.` or `[`) a security scheme sets: the
/// `auth_configs` key of its method and the field's spelling inside the scheme's extension
/// entry.
const SCHEME_FIELDS: &[(&str, &str, &str)] = &[
    ("jwt_source", "jwt", "source"),
    ("jwt_signing_method", "jwt", "signingMethod"),
    ("jwt_identity_base_field", "jwt", "identityBaseField"),
    ("jwt_policy_field_name", "jwt", "policyFieldName"),
    ("jwt_client_base_field", "jwt", "clientBaseField"),
    ("jwt_default_policies", "jwt", "defaultPolicies"),
    (
        "jwt_issued_at_validation_skew",
        "jwt",
        "issuedAtValidationSkew",
    ),
    (
        "jwt_not_before_validation_skew",
        "jwt",
        "notBeforeValidationSkew",
    ),
    (
        "jwt_expires_at_validation_skew",
        "jwt",
        "expiresAtValidationSkew",
    ),
    ("scopes.jwt.", "jwt", "scopes"),
    ("basic_auth.cache_ttl", "basic", "cacheTTL"),
    (
        "basic_auth.body_user_regexp",
        "basic",
        "extractCredentialsFromBody.userRegexp",
    ),
    (
        "basic_auth.body_password_regexp",
        "basic",
        "extractCredentialsFromBody.passwordRegexp",
    ),
    ("auth.signature.", "authToken", "signatureValidation"),
    ("auth.", "authToken", ""),
    ("external_oauth.providers", "externalOAuth", "providers"),
    (
        "oauth_meta.allowed_authorize_types",
        "oauth",
        "allowedAuthorizeTypes",
    ),
    (
        "oauth_meta.auth_login_redirect",
        "oauth",
        "authLoginRedirect",
    ),
    ("oauth_meta.", "oauth", ""),
    ("notifications.", "oauth", "notifications"),
];

/// Renames a classic validation error to the OAS field it came from, so a 400 names what the
/// operator wrote; a field without an OAS spelling keeps its classic name. `classic` is the
/// definition the error is about (its `auth_configs` hold the scheme names).
pub(super) fn oas_field(e: ValidationError, classic: &Map<String, Value>) -> ValidationError {
    if let Some((_, oas)) = CLASSIC_TO_OAS.iter().find(|(c, _)| *c == e.field) {
        return ValidationError::new(*oas, e.reason);
    }
    if e.field.starts_with(DOCUMENT_FIELD) {
        return ValidationError::new(
            e.field
                .trim_start_matches(DOCUMENT_FIELD)
                .trim_start_matches('.'),
            e.reason,
        );
    }
    let scheme = SCHEME_FIELDS.iter().find(|(c, _, _)| {
        e.field == *c
            || (c.ends_with('.') && e.field.starts_with(c))
            || e.field.starts_with(&format!("{c}["))
    });
    if let Some((prefix, key, oas)) = scheme
        && let Some(name) = classic
            .get("auth_configs")
            .and_then(|a| a.get(*key))
            .and_then(|a| a.get("name"))
            .and_then(Value::as_str)
    {
        let base = format!("{EXTENSION}.server.authentication.securitySchemes.{name}");
        let field = if prefix.ends_with('.') && oas.is_empty() {
            format!("{base}.{}", &e.field[prefix.len()..])
        } else if e.field.len() > prefix.len() && !prefix.ends_with('.') {
            format!("{base}.{oas}{}", &e.field[prefix.len()..])
        } else {
            format!("{base}.{oas}")
        };
        return ValidationError::new(field, format!("{} (classic field {})", e.reason, e.field));
    }
    ValidationError::new(
        e.field.clone(),
        format!("{} (classic field {})", e.reason, e.field),
    )
}
