//! Opens the secrets the control plane sealed inside API definitions (the Mashery signature
//! secret, HMAC JWT sources, external OAuth client secrets; docs/keys.md, docs/jwt.md).
//! Process-wide because routes are built wherever a configuration is applied; one gateway runs
//! per process.

use portcullis_proto::envelope::EnvelopeKey;
use portcullis_proto::model::ValidationError;
use portcullis_proto::sealed_field;

static STORED_SECRETS: std::sync::RwLock<Option<EnvelopeKey>> = std::sync::RwLock::new(None);

/// Installs the key for `--encryption-secret`; called once at start.
pub fn set_key(encryption_secret: &str) {
    *STORED_SECRETS.write().unwrap_or_else(|p| p.into_inner()) =
        Some(sealed_field::key(encryption_secret));
}

/// `value` as the operator gave it: opened when sealed, as it is otherwise. A value that does
/// not open refuses the whole definition (the edge NACKs it, naming `field`) rather than
/// serving it with a wrong secret.
pub fn open(api_id: &str, field: &str, value: &str) -> Result<String, ValidationError> {
    if !sealed_field::is_sealed(value) {
        return Ok(value.to_owned());
    }
    let key = STORED_SECRETS.read().unwrap_or_else(|p| p.into_inner());
    key.as_ref()
        .ok_or(sealed_field::OpenError)
        .and_then(|k| sealed_field::open(k, api_id, field, value))
        .map_err(|e| ValidationError::new(field, e.to_string()))
}
