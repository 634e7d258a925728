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
    let typed = typed_view(&map)?;
    Ok((map, typed))
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
