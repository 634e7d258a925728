//! Decoding an OAS document with bounds on everything an operator controls: the size, the
//! nesting, the number of paths and of security schemes (docs/oas.md, "Limits").

use serde_json::{Map, Value};

use super::super::ValidationError;
use super::super::json::refuse_nul;

/// Largest OAS document accepted (the management API's body limit is larger).
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;
/// Deepest nesting of objects and arrays.
pub const MAX_DEPTH: usize = 64;
/// Entries of `paths`.
pub const MAX_PATHS: usize = 4096;
/// Entries of `components.securitySchemes` and of the extension's `securitySchemes`.
pub const MAX_SECURITY_SCHEMES: usize = 64;
/// Entries of `security` (requirements) and schemes named in one requirement.
pub const MAX_SECURITY_REQUIREMENTS: usize = 64;

/// Parses and bounds a document.
pub(super) fn document(body: &[u8]) -> Result<Map<String, Value>, ValidationError> {
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(ValidationError::new(
            "body",
            format!("an OAS document may be at most {MAX_DOCUMENT_BYTES} bytes"),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ValidationError::new("body", format!("malformed JSON: {e}")))?;
    let Value::Object(doc) = value else {
        return Err(ValidationError::new("body", "expected a JSON object"));
    };
    check(&doc)?;
    Ok(doc)
}

/// The bounds and the shape every OAS document must have, whatever its origin.
pub(super) fn check(doc: &Map<String, Value>) -> Result<(), ValidationError> {
    depth(doc)?;
    refuse_nul(doc, "")?;
    match doc.get("openapi") {
        Some(Value::String(v)) if v.starts_with("3.") => {}
        Some(Value::String(_)) => {
            return Err(ValidationError::new(
                "openapi",
                "only OpenAPI 3.0 and 3.1 documents are accepted",
            ));
        }
        Some(_) => return Err(ValidationError::new("openapi", "must be a string")),
        None => return Err(ValidationError::new("openapi", "is required")),
    }
    let info =
        object(doc, "info", "info")?.ok_or_else(|| ValidationError::new("info", "is required"))?;
    for field in ["title", "version"] {
        if !matches!(info.get(field), Some(Value::String(_))) {
            return Err(ValidationError::new(
                format!("info.{field}"),
                "is required and must be a string",
            ));
        }
    }
    if let Some(paths) = object(doc, "paths", "paths")?
        && paths.len() > MAX_PATHS
    {
        return Err(ValidationError::new(
            "paths",
            format!("at most {MAX_PATHS} paths"),
        ));
    }
    if let Some(components) = object(doc, "components", "components")?
        && let Some(schemes) = object(components, "securitySchemes", "components.securitySchemes")?
        && schemes.len() > MAX_SECURITY_SCHEMES
    {
        return Err(ValidationError::new(
            "components.securitySchemes",
            format!("at most {MAX_SECURITY_SCHEMES} security schemes"),
        ));
    }
    match doc.get("security") {
        None | Some(Value::Null) => {}
        Some(Value::Array(reqs)) => {
            if reqs.len() > MAX_SECURITY_REQUIREMENTS {
                return Err(ValidationError::new(
                    "security",
                    format!("at most {MAX_SECURITY_REQUIREMENTS} requirements"),
                ));
            }
            for (i, r) in reqs.iter().enumerate() {
                let Value::Object(r) = r else {
                    return Err(ValidationError::new(
                        format!("security[{i}]"),
                        "must be an object of scheme names",
                    ));
                };
                if r.len() > MAX_SECURITY_REQUIREMENTS {
                    return Err(ValidationError::new(
                        format!("security[{i}]"),
                        format!("at most {MAX_SECURITY_REQUIREMENTS} schemes"),
                    ));
                }
            }
        }
        Some(_) => return Err(ValidationError::new("security", "must be an array")),
    }
    Ok(())
}

/// `map[key]` as an object, `None` when absent or null.
pub(super) fn object<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<&'a Map<String, Value>>, ValidationError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(ValidationError::new(field, "must be an object")),
    }
}

/// Refuses nesting deeper than [`MAX_DEPTH`] without recursing (a hostile document cannot
/// exhaust the stack; serde_json's own limit is higher).
fn depth(doc: &Map<String, Value>) -> Result<(), ValidationError> {
    let mut stack: Vec<(&Value, usize)> = doc.values().map(|v| (v, 1)).collect();
    while let Some((v, d)) = stack.pop() {
        if d > MAX_DEPTH {
            return Err(ValidationError::new(
                "body",
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        match v {
            Value::Object(m) => stack.extend(m.values().map(|v| (v, d + 1))),
            Value::Array(a) => stack.extend(a.iter().map(|v| (v, d + 1))),
            _ => {}
        }
    }
    Ok(())
}
