//! Tyk OAS API definitions: an OpenAPI 3 document with the `x-tyk-api-gateway` extension,
//! mapped onto the same Tyk Classic model every other write uses (docs/oas.md).
//!
//! Only the classic definition is enforced. The document is kept next to it (in
//! [`DOCUMENT_FIELD`], without the parts of the extension that became classic fields) so that
//! reading the API back in OAS form returns the operator's OpenAPI description with the
//! extension regenerated from the classic fields, which is what Tyk does.

mod from_classic;
mod import;
mod read;
mod security;
mod to_classic;
mod unmapped;

use serde_json::{Map, Value};

use super::ValidationError;
use super::compat::Warning;
use super::{ApiDefinition, generate_id};

pub use from_classic::to_oas;
pub use import::{ImportParams, import};
pub use read::{
    MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_PATHS, MAX_SECURITY_REQUIREMENTS, MAX_SECURITY_SCHEMES,
};

/// The vendor extension holding Tyk's settings.
pub const EXTENSION: &str = "x-tyk-api-gateway";

/// Classic field holding the OpenAPI document an API was written with (docs/oas.md).
pub const DOCUMENT_FIELD: &str = "oas_document";

/// API ids a route would shadow: `/tyk/apis/oas` is the OAS collection, so an API with that
/// id could not be read at `/tyk/apis/{id}`; `/tyk/apis/oas/import` likewise.
pub const RESERVED_IDS: &[&str] = &["oas", "import"];

/// An OAS document accepted for writing: the classic definition it maps to, and what of it is
/// stored without being acted on.
#[derive(Debug, Clone)]
pub struct OasApi {
    pub definition: ApiDefinition,
    /// Extension fields kept but not enforced, named by their OAS path.
    pub warnings: Vec<Warning>,
}

/// True when `value` is a Tyk OAS definition rather than a Classic one.
pub fn is_oas(value: &Value) -> bool {
    value.get("openapi").is_some() && value.get(EXTENSION).is_some()
}

/// Whether the body of a write carries the extension (Tyk's routes insist on one or the
/// other).
pub fn has_extension(body: &[u8]) -> Result<bool, ValidationError> {
    Ok(read::document(body)?.contains_key(EXTENSION))
}

/// Parses a Tyk OAS definition (`POST`/`PUT /tyk/apis/oas`). The extension is required; a
/// missing `x-tyk-api-gateway.info.id` is generated and written back into the document, as
/// Tyk does.
pub fn parse(body: &[u8]) -> Result<OasApi, ValidationError> {
    from_document(read::document(body)?)
}

/// [`parse`] on an already decoded document (a file of a configuration folder).
pub fn from_value(value: Value) -> Result<OasApi, ValidationError> {
    let Value::Object(doc) = value else {
        return Err(ValidationError::new("body", "expected a JSON object"));
    };
    read::check(&doc)?;
    from_document(doc)
}

fn from_document(mut doc: Map<String, Value>) -> Result<OasApi, ValidationError> {
    let Some(ext) = doc.get_mut(EXTENSION) else {
        return Err(ValidationError::new(
            EXTENSION,
            "the payload should contain x-tyk-api-gateway",
        ));
    };
    let Value::Object(ext) = ext else {
        return Err(ValidationError::new(EXTENSION, "must be an object"));
    };
    ensure_id(ext)?;
    let (classic, warnings) = to_classic::classic(&doc)?;
    let body = serde_json::to_vec(&Value::Object(classic.clone()))
        .map_err(|e| ValidationError::new("body", e.to_string()))?;
    let definition = ApiDefinition::parse(&body).map_err(|e| to_classic::oas_field(e, &classic))?;
    Ok(OasApi {
        definition,
        warnings,
    })
}

/// Sets `info.id` when absent or empty (Tyk generates the id of a new OAS API).
fn ensure_id(ext: &mut Map<String, Value>) -> Result<(), ValidationError> {
    let info = ext
        .entry("info")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(info) = info else {
        return Err(ValidationError::new(
            format!("{EXTENSION}.info"),
            "must be an object",
        ));
    };
    let missing = match info.get("id") {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    };
    if missing {
        info.insert("id".into(), Value::String(generate_id()));
    }
    Ok(())
}

/// Forces the API id (`PUT /tyk/apis/oas/{id}` addresses the API by path). The stored
/// document holds no id of its own: the extension's `info` is regenerated on read.
pub fn set_id(api: &mut OasApi, id: &str) {
    api.definition.set_api_id(id);
}

#[cfg(test)]
mod tests;
