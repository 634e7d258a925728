//! The extension fields that do not become classic fields: refused when ignoring them would
//! weaken what the document asks for (an allow list, an IP filter, an auth method), otherwise
//! kept in the stored document and named in the write's `warnings`, as Classic fields
//! Portcullis stores without acting on are (docs/tyk-compatibility.md, docs/oas.md).

use serde_json::{Map, Value};

use super::super::ValidationError;
use super::super::compat::{Warning, unset};
use super::EXTENSION;

/// What happens to an extension field.
#[derive(Clone, Copy)]
enum Rule {
    /// Becomes a classic field (docs/oas.md, "Field mapping").
    Mapped,
    /// Refused when its `enabled` is true (or, for a field without one, when it is set).
    Refused(&'static str),
    /// Kept, not acted on.
    Stored(&'static str),
}

/// Rules by path below the extension; `*` matches one key. The first match wins; a field no
/// rule names is stored and warned about as unknown.
const RULES: &[(&str, Rule)] = &[
    ("info.id", Rule::Mapped),
    ("info.dbId", Rule::Mapped),
    ("info.orgId", Rule::Mapped),
    ("info.name", Rule::Mapped),
    ("info.state", Rule::Mapped),
    (
        "info.expiration",
        Rule::Stored("the API does not stop at this date"),
    ),
    (
        "info.versioning",
        Rule::Stored("API versions are not told apart: every request is served by this definition"),
    ),
    ("upstream.url", Rule::Mapped),
    (
        "upstream.authentication",
        Rule::Refused(
            "upstream authentication is not mapped from OAS yet; write it as Classic upstream_auth (docs/upstream-auth.md)",
        ),
    ),
    (
        "upstream.mutualTLS",
        Rule::Refused(
            "upstream client certificates are not mapped from OAS yet; use Classic upstream_certificates",
        ),
    ),
    (
        "upstream.certificatePinning",
        Rule::Refused(
            "certificate pinning is not mapped from OAS yet; use Classic pinned_public_keys",
        ),
    ),
    (
        "upstream.loadBalancing",
        Rule::Refused("load balancing is not mapped from OAS yet; use Classic proxy.target_list"),
    ),
    ("server.listenPath", Rule::Mapped),
    ("server.customDomain", Rule::Mapped),
    ("server.gatewayTags", Rule::Mapped),
    ("server.clientCertificates", Rule::Mapped),
    ("server.authentication", Rule::Mapped),
    (
        "server.ipAccessControl",
        Rule::Refused("IP allow and block lists are not implemented"),
    ),
    (
        "middleware.operations.*.allow",
        Rule::Refused(
            "endpoint allow lists are not implemented; the other endpoints would be reachable",
        ),
    ),
    (
        "middleware.operations.*.block",
        Rule::Refused("endpoint block lists are not implemented; the endpoint would be reachable"),
    ),
    (
        "middleware.global.pluginConfig",
        Rule::Stored(
            "plugins declared in OAS are not run; configure a plugin in Classic custom_middleware",
        ),
    ),
    (
        "middleware.operations.*.*",
        Rule::Stored(
            "endpoint middleware (transforms, rewrites, mocks, caching, validation) is not applied",
        ),
    ),
    (
        "middleware.global.*",
        Rule::Stored(
            "API-wide middleware (CORS, caching, headers, plugins, traffic logs) is not applied",
        ),
    ),
];

/// Keys of `server.authentication` the security mapping reads; any other set key is refused.
const AUTHENTICATION_KEYS: &[&str] = &[
    "enabled",
    "stripAuthorizationData",
    "baseIdentityProvider",
    "securityProcessingMode",
    "hmac",
    "customKeyLifetime",
    "securitySchemes",
];
const HMAC_KEYS: &[&str] = &["enabled", "allowedAlgorithms", "allowedClockSkew"];

fn glob(pattern: &str, path: &[&str]) -> bool {
    let parts: Vec<&str> = pattern.split('.').collect();
    parts.len() <= path.len() && parts.iter().zip(path).all(|(p, k)| *p == "*" || p == k)
}

/// True when `pattern` names a field below `path` (so `path` must be descended).
fn below(pattern: &str, path: &[&str]) -> bool {
    let parts: Vec<&str> = pattern.split('.').collect();
    parts.len() > path.len() && parts.iter().zip(path).all(|(p, k)| *p == "*" || p == k)
}

fn rule(path: &[&str]) -> Option<Rule> {
    RULES
        .iter()
        .find(|(p, _)| glob(p, path) && p.split('.').count() == path.len())
        .map(|(_, r)| *r)
}

fn switched_on(v: &Value) -> bool {
    match v.get("enabled") {
        Some(e) => matches!(e, Value::Bool(true)),
        None => !unset(Some(v)),
    }
}

/// The warnings of the extension's stored-only fields; an error for a refused one.
pub(super) fn check(ext: &Value) -> Result<Vec<Warning>, ValidationError> {
    let mut out = Vec::new();
    let Value::Object(ext) = ext else {
        return Ok(out);
    };
    // (path below the extension, value); objects are descended until a rule matches.
    let mut stack: Vec<(Vec<String>, &Value)> =
        ext.iter().map(|(k, v)| (vec![k.clone()], v)).collect();
    while let Some((path, v)) = stack.pop() {
        let keys: Vec<&str> = path.iter().map(String::as_str).collect();
        let field = format!("{EXTENSION}.{}", path.join("."));
        match rule(&keys) {
            Some(Rule::Mapped) => {}
            Some(Rule::Refused(reason)) => {
                if switched_on(v) {
                    return Err(ValidationError::new(field, reason));
                }
            }
            Some(Rule::Stored(reason)) => {
                if !unset(Some(v)) {
                    out.push(Warning {
                        field,
                        reason: reason.to_owned(),
                    });
                }
            }
            None => {
                let deeper = RULES.iter().any(|(p, _)| below(p, &keys));
                match v {
                    Value::Object(m) if deeper => {
                        stack.extend(m.iter().map(|(k, v)| {
                            let mut p = path.clone();
                            p.push(k.clone());
                            (p, v)
                        }));
                    }
                    _ if !unset(Some(v)) => out.push(Warning {
                        field,
                        reason: "not a field Portcullis acts on; stored as sent".to_owned(),
                    }),
                    _ => {}
                }
            }
        }
    }
    if let Some(Value::Object(auth)) = ext.get("server").and_then(|s| s.get("authentication")) {
        refuse_unread(
            auth,
            AUTHENTICATION_KEYS,
            &format!("{EXTENSION}.server.authentication"),
        )?;
        if let Some(Value::Object(h)) = auth.get("hmac")
            && switched_on(&Value::Object(h.clone()))
        {
            refuse_unread(
                h,
                HMAC_KEYS,
                &format!("{EXTENSION}.server.authentication.hmac"),
            )?;
        }
    }
    out.sort_by(|a, b| a.field.cmp(&b.field));
    Ok(out)
}

/// A set key of an auth section that the mapping does not read (`oidc`, `custom`,
/// `certificateAuth`, compliant-mode `security`, ...) would be an auth setting silently
/// dropped.
fn refuse_unread(
    section: &Map<String, Value>,
    known: &[&str],
    prefix: &str,
) -> Result<(), ValidationError> {
    match section
        .iter()
        .find(|(k, v)| !known.contains(&k.as_str()) && switched_on(v))
    {
        Some((k, _)) => Err(ValidationError::new(
            format!("{prefix}.{k}"),
            "is an authentication setting Portcullis does not map from OAS; refused rather than served without it",
        )),
        None => Ok(()),
    }
}

/// Extension paths regenerated from the classic fields on every read (docs/oas.md,
/// "Reading back"), so the stored document does not keep a second, stale copy.
const REGENERATED: &[(&str, &str)] = &[
    ("info", "id"),
    ("info", "dbId"),
    ("info", "orgId"),
    ("info", "name"),
    ("info", "state"),
    ("upstream", "url"),
    ("server", "listenPath"),
    ("server", "customDomain"),
    ("server", "gatewayTags"),
    ("server", "clientCertificates"),
    ("server", "authentication"),
];

/// The document as stored: the operator's OpenAPI description plus the extension fields that
/// are not regenerated. Secrets of mapped fields (an introspection client secret) therefore
/// live only in the classic fields, where they are sealed.
pub(super) fn remainder(doc: &Map<String, Value>) -> Map<String, Value> {
    let mut doc = doc.clone();
    if let Some(Value::Object(ext)) = doc.get_mut(EXTENSION) {
        for (section, key) in REGENERATED {
            if let Some(Value::Object(s)) = ext.get_mut(*section) {
                s.remove(*key);
                if s.is_empty() {
                    ext.remove(*section);
                }
            }
        }
    }
    doc
}
