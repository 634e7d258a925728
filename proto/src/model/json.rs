//! Parsing a resource body into (whole JSON object, typed view) with errors that name the field.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::ValidationError;

/// Parses `body` as a JSON object and deserializes the typed view from it.
pub(super) fn parse_object<T: DeserializeOwned>(
    body: &[u8],
) -> Result<(Map<String, Value>, T), ValidationError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ValidationError::new("body", format!("malformed JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ValidationError::new("body", "expected a JSON object"));
    };
    refuse_nul(&map, "")?;
    let typed = typed_view(&map)?;
    Ok((map, typed))
}

/// Postgres stores neither text nor JSON strings with U+0000, and no header, path or id can
/// carry one; numbers must read back as doubles. Refused with the field's path instead of failing
/// at the database.
pub(super) fn refuse_nul(map: &Map<String, Value>, prefix: &str) -> Result<(), ValidationError> {
    for (k, v) in map {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if k.contains('\0') {
            return Err(ValidationError::new(
                path,
                "field names must not contain U+0000",
            ));
        }
        check_value(v, &path)?;
    }
    Ok(())
}

/// Largest magnitude of a stored number. Postgres keeps JSON numbers as exact decimals and
/// prints one near f64::MAX back as a 309-digit integer that no longer parses as a double, so a
/// stored resource would become unreadable (and stall the change log for every edge).
const MAX_NUMBER_MAGNITUDE: f64 = 1e300;

fn check_value(v: &Value, path: &str) -> Result<(), ValidationError> {
    match v {
        Value::String(s) if s.contains('\0') => {
            Err(ValidationError::new(path, "must not contain U+0000"))
        }
        Value::Number(n) if n.as_f64().is_none_or(|f| f.abs() > MAX_NUMBER_MAGNITUDE) => Err(
            ValidationError::new(path, "number out of range (at most 1e300 in magnitude)"),
        ),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_value(item, &format!("{path}[{i}]"))),
        Value::Object(map) => refuse_nul(map, path),
        _ => Ok(()),
    }
}

/// Deserializes the typed view of an object, naming the path of a field of the wrong type.
pub(super) fn typed_view<T: DeserializeOwned>(
    map: &Map<String, Value>,
) -> Result<T, ValidationError> {
    let de = serde_json::Value::Object(map.clone());
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ValidationError::new(field, e.into_inner().to_string())
    })
}

/// Tyk emits `null` for empty lists and objects; treat it as the default.
pub(super) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
