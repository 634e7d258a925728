//! Which authentication methods an OAS document selects: the OpenAPI `security` requirement
//! names schemes of `components.securitySchemes`, whose type decides the method, and the
//! extension's `server.authentication.securitySchemes` entry of the same name configures it
//! (docs/oas.md, "Security schemes"). Anything this mapping does not understand is a 400
//! naming the field, never an API served with less authentication than the document asks for.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::super::ValidationError;
use super::read::object;
use super::to_classic::typed;

const AUTH: &str = "x-tyk-api-gateway.server.authentication";

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct Authentication {
    pub enabled: bool,
    pub strip_authorization_data: bool,
    pub base_identity_provider: String,
    pub security_processing_mode: String,
    pub hmac: Option<Hmac>,
    pub custom_key_lifetime: Option<KeyLifetime>,
    pub security_schemes: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct Hmac {
    pub enabled: bool,
    pub allowed_algorithms: Vec<String>,
    pub allowed_clock_skew: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct KeyLifetime {
    pub enabled: bool,
    /// A Go duration (`"1h30m"`, `"90s"`).
    pub value: String,
    pub respect_validity: bool,
}

/// `header`/`query`/`cookie` of an extension scheme: where else the credential may be.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub(super) struct Source {
    pub enabled: bool,
    pub name: String,
}

/// What a scheme's OpenAPI component selects.
enum Kind {
    Token { location: String, name: String },
    Basic,
    Jwt,
    TykOAuth { flows: Vec<String> },
    ExternalOAuth,
}

/// Writes the classic auth fields of `doc` into `c`. `mtls` counts static client certificates
/// as an enabled method.
pub(super) fn extract(
    doc: &Map<String, Value>,
    auth: Option<&Authentication>,
    mtls: bool,
    c: &mut Map<String, Value>,
) -> Result<(), ValidationError> {
    let Some(auth) = auth.filter(|a| a.enabled) else {
        c.insert("use_keyless".into(), json!(true));
        return Ok(());
    };
    c.insert("use_keyless".into(), json!(false));
    c.insert(
        "strip_auth_data".into(),
        json!(auth.strip_authorization_data),
    );
    if !auth.base_identity_provider.is_empty() {
        c.insert(
            "base_identity_provided_by".into(),
            json!(auth.base_identity_provider),
        );
    }
    let requirements = doc
        .get("security")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    match auth.security_processing_mode.as_str() {
        "" | "legacy" => {}
        "compliant" if requirements.len() <= 1 => {}
        "compliant" => {
            return Err(ValidationError::new(
                format!("{AUTH}.securityProcessingMode"),
                "compliant mode with more than one security requirement (alternatives) is not implemented; use one requirement",
            ));
        }
        _ => {
            return Err(ValidationError::new(
                format!("{AUTH}.securityProcessingMode"),
                "must be legacy or compliant",
            ));
        }
    }
    let components = object(doc, "components", "components")?
        .map(|c| object(c, "securitySchemes", "components.securitySchemes"))
        .transpose()?
        .flatten();
    for name in auth.security_schemes.keys() {
        if !valid_name(name) {
            return Err(ValidationError::new(
                format!("{AUTH}.securitySchemes.{name}"),
                "scheme names may hold only letters, digits, '.', '-' and '_'",
            ));
        }
        if components.is_none_or(|c| !c.contains_key(name)) {
            return Err(ValidationError::new(
                format!("{AUTH}.securitySchemes.{name}"),
                "names no entry of components.securitySchemes",
            ));
        }
    }
    // Tyk's legacy mode enforces the first requirement only (docs/oas.md).
    let selected: Vec<&String> = requirements
        .first()
        .and_then(Value::as_object)
        .map(|r| r.keys().collect())
        .unwrap_or_default();
    let mut methods = 0usize;
    let mut seen: Vec<&'static str> = Vec::new();
    for name in selected {
        let component = components.and_then(|c| c.get(name)).ok_or_else(|| {
            ValidationError::new(
                format!("security[0].{name}"),
                "names no entry of components.securitySchemes",
            )
        })?;
        let Some(ext) = auth.security_schemes.get(name) else {
            return Err(ValidationError::new(
                format!("{AUTH}.securitySchemes.{name}"),
                "is required for a scheme that security[0] selects",
            ));
        };
        let field = format!("{AUTH}.securitySchemes.{name}");
        let Value::Object(ext) = ext else {
            return Err(ValidationError::new(field, "must be an object"));
        };
        if !matches!(ext.get("enabled"), Some(Value::Bool(true))) {
            if !matches!(ext.get("enabled"), None | Some(Value::Bool(false))) {
                return Err(ValidationError::new(
                    format!("{field}.enabled"),
                    "must be a boolean",
                ));
            }
            continue;
        }
        let kind = kind(name, component, ext)?;
        let tag = match &kind {
            Kind::Token { .. } => "an apiKey",
            Kind::Basic => "a basic",
            Kind::Jwt => "a JWT",
            Kind::TykOAuth { .. } | Kind::ExternalOAuth => "an oauth2",
        };
        if seen.contains(&tag) {
            return Err(ValidationError::new(
                field,
                format!("security[0] selects more than one {tag} scheme; only one can be active"),
            ));
        }
        seen.push(tag);
        apply(name, &kind, ext, &field, c)?;
        methods += 1;
    }
    if let Some(h) = &auth.hmac
        && h.enabled
    {
        c.insert("enable_signature_checking".into(), json!(true));
        c.insert(
            "hmac_allowed_algorithms".into(),
            json!(h.allowed_algorithms),
        );
        c.insert(
            "hmac_allowed_clock_skew".into(),
            json!(h.allowed_clock_skew),
        );
        methods += 1;
    }
    if let Some(l) = &auth.custom_key_lifetime
        && l.enabled
    {
        let secs = go_duration_secs(&l.value).ok_or_else(|| {
            ValidationError::new(
                format!("{AUTH}.customKeyLifetime.value"),
                "must be a duration such as 1h30m or 90s",
            )
        })?;
        c.insert("session_lifetime".into(), json!(secs));
        c.insert(
            "session_lifetime_respects_key_expiration".into(),
            json!(l.respect_validity),
        );
    }
    if mtls {
        methods += 1;
    }
    if methods == 0 {
        return Err(ValidationError::new(
            format!("{AUTH}.enabled"),
            "is true, but security[0] selects no enabled scheme (and neither hmac nor clientCertificates is enabled); the API would have no authentication method",
        ));
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The method a component selects, by its OpenAPI `type` (Tyk's rule).
fn kind(name: &str, component: &Value, ext: &Map<String, Value>) -> Result<Kind, ValidationError> {
    let field = format!("components.securitySchemes.{name}");
    let Value::Object(comp) = component else {
        return Err(ValidationError::new(field, "must be an object"));
    };
    let s = |k: &str| comp.get(k).and_then(Value::as_str).unwrap_or_default();
    match s("type") {
        "apiKey" => {
            let location = s("in");
            if !matches!(location, "header" | "query" | "cookie") {
                return Err(ValidationError::new(
                    format!("{field}.in"),
                    "must be header, query or cookie",
                ));
            }
            if s("name").is_empty() {
                return Err(ValidationError::new(
                    format!("{field}.name"),
                    "is required for an apiKey scheme",
                ));
            }
            Ok(Kind::Token {
                location: location.to_owned(),
                name: s("name").to_owned(),
            })
        }
        "http" if s("scheme").eq_ignore_ascii_case("basic") => Ok(Kind::Basic),
        "http" if s("scheme").eq_ignore_ascii_case("bearer") && s("bearerFormat") == "JWT" => {
            Ok(Kind::Jwt)
        }
        "http" => Err(ValidationError::new(
            format!("{field}.scheme"),
            "unsupported security scheme: an http scheme must be basic, or bearer with bearerFormat JWT",
        )),
        "oauth2" if ext.contains_key("providers") => Ok(Kind::ExternalOAuth),
        "oauth2" => {
            let flows = comp
                .get("flows")
                .and_then(Value::as_object)
                .map(|f| f.keys().cloned().collect())
                .unwrap_or_default();
            Ok(Kind::TykOAuth { flows })
        }
        "" => Err(ValidationError::new(format!("{field}.type"), "is required")),
        other => Err(ValidationError::new(
            format!("{field}.type"),
            format!(
                "unsupported security scheme type {other:?} (apiKey, http and oauth2 are mapped)"
            ),
        )),
    }
}

/// Extension keys each method maps; any other key of an enabled scheme is refused, since
/// ignoring it could weaken what the scheme checks.
const COMMON: &[&str] = &["enabled", "header", "query", "cookie"];
const TOKEN_KEYS: &[&str] = &["enableClientCertificate", "signatureValidation"];
const BASIC_KEYS: &[&str] = &["disableCaching", "cacheTTL", "extractCredentialsFromBody"];
const JWT_KEYS: &[&str] = &[
    "source",
    "signingMethod",
    "identityBaseField",
    "policyFieldName",
    "clientBaseField",
    "defaultPolicies",
    "skipKid",
    "issuedAtValidationSkew",
    "notBeforeValidationSkew",
    "expiresAtValidationSkew",
    "scopes",
];
const OAUTH_KEYS: &[&str] = &[
    "allowedAuthorizeTypes",
    "refreshToken",
    "authLoginRedirect",
    "notifications",
];
const EXTERNAL_KEYS: &[&str] = &["providers"];

fn known_keys(kind: &Kind) -> &'static [&'static str] {
    match kind {
        Kind::Token { .. } => TOKEN_KEYS,
        Kind::Basic => BASIC_KEYS,
        Kind::Jwt => JWT_KEYS,
        Kind::TykOAuth { .. } => OAUTH_KEYS,
        Kind::ExternalOAuth => EXTERNAL_KEYS,
    }
}

fn source(
    ext: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<Source>, ValidationError> {
    match ext.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let s: Source = typed(v, &format!("{field}.{key}"))?;
            if s.enabled && s.name.is_empty() {
                return Err(ValidationError::new(
                    format!("{field}.{key}.name"),
                    "is required when enabled",
                ));
            }
            Ok(Some(s).filter(|s| s.enabled))
        }
    }
}

/// Classic `auth`-shaped locations (`auth_header_name`, `use_param`, `use_cookie`) of a scheme.
fn locations(
    ext: &Map<String, Value>,
    field: &str,
    primary: Option<(&str, &str)>,
) -> Result<Map<String, Value>, ValidationError> {
    let mut a = Map::new();
    let mut set = |location: &str, name: &str| match location {
        "header" => {
            a.insert("auth_header_name".into(), json!(name));
        }
        "query" => {
            a.insert("use_param".into(), json!(true));
            a.insert("param_name".into(), json!(name));
        }
        _ => {
            a.insert("use_cookie".into(), json!(true));
            a.insert("cookie_name".into(), json!(name));
        }
    };
    if let Some((location, name)) = primary {
        set(location, name);
    }
    for key in ["header", "query", "cookie"] {
        if let Some(s) = source(ext, key, field)? {
            set(key, &s.name);
        }
    }
    Ok(a)
}

fn apply(
    name: &str,
    kind: &Kind,
    ext: &Map<String, Value>,
    field: &str,
    c: &mut Map<String, Value>,
) -> Result<(), ValidationError> {
    let known = known_keys(kind);
    if let Some(k) = ext
        .keys()
        .find(|k| !COMMON.contains(&k.as_str()) && !known.contains(&k.as_str()))
    {
        return Err(ValidationError::new(
            format!("{field}.{k}"),
            "is not a setting Portcullis maps for this kind of scheme; refused rather than served without it",
        ));
    }
    let mut entry = Map::new();
    entry.insert("name".into(), json!(name));
    match kind {
        Kind::Token {
            location,
            name: key,
        } => {
            let mut a = locations(ext, field, Some((location.as_str(), key.as_str())))?;
            if matches!(ext.get("enableClientCertificate"), Some(Value::Bool(true))) {
                a.insert("use_certificate".into(), json!(true));
            }
            if let Some(sig) = ext.get("signatureValidation") {
                signature(sig, &format!("{field}.signatureValidation"), &mut a)?;
            }
            entry.extend(a.clone());
            c.insert("use_standard_auth".into(), json!(true));
            c.insert("auth".into(), Value::Object(a));
            insert(c, "authToken", entry);
        }
        Kind::Basic => {
            let a = locations(ext, field, None)?;
            let header = a.get("auth_header_name").and_then(Value::as_str);
            if a.contains_key("use_param")
                || a.contains_key("use_cookie")
                || header.is_some_and(|h| !h.eq_ignore_ascii_case("authorization"))
            {
                return Err(ValidationError::new(
                    field,
                    "basic auth is read from the Authorization header only; other header, query or cookie locations are not implemented",
                ));
            }
            let b: BasicExt = typed(&Value::Object(ext.clone()), field)?;
            let body = b.extract_credentials_from_body.unwrap_or_default();
            c.insert("use_basic_auth".into(), json!(true));
            c.insert(
                "basic_auth".into(),
                json!({
                    "disable_caching": b.disable_caching,
                    "cache_ttl": b.cache_ttl,
                    "extract_from_body": body.enabled,
                    "body_user_regexp": body.user_regexp,
                    "body_password_regexp": body.password_regexp,
                }),
            );
            insert(c, "basic", entry);
        }
        Kind::Jwt => {
            let a = locations(ext, field, Some(("header", "Authorization")))?;
            entry.extend(a);
            let j: JwtExt = typed(&Value::Object(ext.clone()), field)?;
            c.insert("enable_jwt".into(), json!(true));
            c.insert("jwt_source".into(), json!(j.source));
            c.insert("jwt_signing_method".into(), json!(j.signing_method));
            c.insert(
                "jwt_identity_base_field".into(),
                json!(j.identity_base_field),
            );
            c.insert("jwt_policy_field_name".into(), json!(j.policy_field_name));
            c.insert("jwt_client_base_field".into(), json!(j.client_base_field));
            c.insert("jwt_default_policies".into(), json!(j.default_policies));
            c.insert("jwt_skip_kid".into(), json!(j.skip_kid));
            c.insert(
                "jwt_issued_at_validation_skew".into(),
                json!(j.issued_at_validation_skew),
            );
            c.insert(
                "jwt_not_before_validation_skew".into(),
                json!(j.not_before_validation_skew),
            );
            c.insert(
                "jwt_expires_at_validation_skew".into(),
                json!(j.expires_at_validation_skew),
            );
            if let Some(s) = j.scopes {
                let mapping: Map<String, Value> = s
                    .scope_to_policy_mapping
                    .into_iter()
                    .map(|m| (m.scope, json!(m.policy_id)))
                    .collect();
                c.insert(
                    "scopes".into(),
                    json!({"jwt": {"scope_claim_name": s.claim_name, "scope_to_policy": mapping}}),
                );
            }
            insert(c, "jwt", entry);
        }
        Kind::TykOAuth { flows } => {
            let a = locations(ext, field, Some(("header", "Authorization")))?;
            entry.extend(a);
            let o: OAuthExt = typed(&Value::Object(ext.clone()), field)?;
            let mut access: Vec<&str> = flows
                .iter()
                .filter_map(|f| match f.as_str() {
                    "authorizationCode" => Some("authorization_code"),
                    "clientCredentials" => Some("client_credentials"),
                    "password" => Some("password"),
                    _ => None,
                })
                .collect();
            if o.refresh_token {
                access.push("refresh_token");
            }
            let n = o.notifications.unwrap_or_default();
            c.insert("use_oauth2".into(), json!(true));
            c.insert(
                "oauth_meta".into(),
                json!({
                    "allowed_access_types": access,
                    "allowed_authorize_types": o.allowed_authorize_types,
                    "auth_login_redirect": o.auth_login_redirect,
                }),
            );
            c.insert(
                "notifications".into(),
                json!({"shared_secret": n.shared_secret, "oauth_on_keychange_url": n.on_key_change_url}),
            );
            insert(c, "oauth", entry);
        }
        Kind::ExternalOAuth => {
            let a = locations(ext, field, Some(("header", "Authorization")))?;
            entry.extend(a);
            let e: ExternalExt = typed(&Value::Object(ext.clone()), field)?;
            let providers: Vec<Value> = e.providers.into_iter().map(Provider::classic).collect();
            c.insert(
                "external_oauth".into(),
                json!({"enabled": true, "providers": providers}),
            );
            insert(c, "externalOAuth", entry);
        }
    }
    Ok(())
}

fn insert(c: &mut Map<String, Value>, key: &str, entry: Map<String, Value>) {
    let configs = c
        .entry("auth_configs")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(configs) = configs {
        configs.insert(key.into(), Value::Object(entry));
    }
}

fn signature(sig: &Value, field: &str, a: &mut Map<String, Value>) -> Result<(), ValidationError> {
    let s: SignatureExt = typed(sig, field)?;
    if !s.enabled {
        return Ok(());
    }
    a.insert("validate_signature".into(), json!(true));
    a.insert(
        "signature".into(),
        json!({
            "algorithm": s.algorithm,
            "header": s.header,
            "use_param": !s.query.is_empty(),
            "param_name": s.query,
            "secret": s.secret,
            "allowed_clock_skew": s.allowed_clock_skew,
            "error_code": s.error_code,
            "error_message": s.error_message,
        }),
    );
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SignatureExt {
    enabled: bool,
    algorithm: String,
    header: String,
    query: String,
    secret: String,
    allowed_clock_skew: i64,
    error_code: u16,
    error_message: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct BasicExt {
    disable_caching: bool,
    #[serde(rename = "cacheTTL")]
    cache_ttl: i64,
    extract_credentials_from_body: Option<BodyCredentials>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct BodyCredentials {
    enabled: bool,
    user_regexp: String,
    password_regexp: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct JwtExt {
    source: String,
    signing_method: String,
    identity_base_field: String,
    policy_field_name: String,
    client_base_field: String,
    default_policies: Vec<String>,
    skip_kid: bool,
    issued_at_validation_skew: u64,
    not_before_validation_skew: u64,
    expires_at_validation_skew: u64,
    scopes: Option<JwtScopes>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct JwtScopes {
    claim_name: String,
    scope_to_policy_mapping: Vec<ScopeToPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ScopeToPolicy {
    scope: String,
    policy_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct OAuthExt {
    allowed_authorize_types: Vec<String>,
    refresh_token: bool,
    auth_login_redirect: String,
    notifications: Option<OAuthNotifications>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct OAuthNotifications {
    shared_secret: String,
    on_key_change_url: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ExternalExt {
    providers: Vec<Provider>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Provider {
    jwt: Option<ProviderJwt>,
    introspection: Option<Introspection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ProviderJwt {
    enabled: bool,
    signing_method: String,
    source: String,
    identity_base_field: String,
    issued_at_validation_skew: u64,
    not_before_validation_skew: u64,
    expires_at_validation_skew: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Introspection {
    enabled: bool,
    url: String,
    client_id: String,
    client_secret: String,
    identity_base_field: String,
    cache: IntrospectionCache,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct IntrospectionCache {
    enabled: bool,
    timeout: i64,
}

impl Provider {
    fn classic(self) -> Value {
        let j = self.jwt.unwrap_or_default();
        let i = self.introspection.unwrap_or_default();
        json!({
            "jwt": {
                "enabled": j.enabled,
                "signing_method": j.signing_method,
                "source": j.source,
                "identity_base_field": j.identity_base_field,
                "issued_at_validation_skew": j.issued_at_validation_skew,
                "not_before_validation_skew": j.not_before_validation_skew,
                "expires_at_validation_skew": j.expires_at_validation_skew,
            },
            "introspection": {
                "enabled": i.enabled,
                "url": i.url,
                "client_id": i.client_id,
                "client_secret": i.client_secret,
                "identity_base_field": i.identity_base_field,
                "cache": {"enabled": i.cache.enabled, "timeout": i.cache.timeout},
            },
        })
    }
}

/// Seconds of a Go duration string (`1h30m`, `45s`, `2h`); fractions and `ms`/`us`/`ns` are
/// rounded down to whole seconds. `None` when it does not parse.
pub(super) fn go_duration_secs(s: &str) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(end);
        let n: f64 = num.parse().ok()?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let factor = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += n * factor;
        rest = tail;
    }
    (total.is_finite() && total < 1e12).then_some(total as i64)
}
