//! Seals the secrets an API definition carries before the definition reaches a table, the
//! change log or an edge (docs/keys.md, "Mashery signature secrets").

use portcullis_proto::envelope::EnvelopeKey;
use portcullis_proto::model::{ApiDefinition, ValidationError};
use portcullis_proto::sealed_field::{self, SIGNATURE_SECRET};
use serde_json::Value;

/// A reference to the key's meta data, not a secret.
const META_REFERENCE: &str = "$tyk_meta.";

/// `def` with its signature secret sealed. A value that is already sealed (a PUT sending back
/// what GET returned) is kept as it is, once it is known to open for this API.
pub fn seal_api(def: ApiDefinition, key: &EnvelopeKey) -> Result<ApiDefinition, ValidationError> {
    let secret = &def.spec().auth.signature.secret;
    if secret.is_empty() || secret.starts_with(META_REFERENCE) {
        return Ok(def);
    }
    let api_id = def.api_id().to_owned();
    if sealed_field::is_sealed(secret) {
        sealed_field::open(key, &api_id, SIGNATURE_SECRET, secret).map_err(|_| {
            ValidationError::new(
                SIGNATURE_SECRET,
                "is sealed for another API or under another --encryption-secret; send the secret itself",
            )
        })?;
        return Ok(def);
    }
    let sealed = sealed_field::seal(key, &api_id, SIGNATURE_SECRET, secret);
    let mut value = def.to_value();
    // The typed view read a non-empty string there, so the pointer resolves.
    match value.pointer_mut("/auth/signature/secret") {
        Some(slot) => *slot = Value::String(sealed),
        None => {
            return Err(ValidationError::new(
                SIGNATURE_SECRET,
                "must be a string inside auth.signature",
            ));
        }
    }
    ApiDefinition::from_value(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(secret: &str) -> ApiDefinition {
        let body = json!({
            "api_id": "signed", "name": "signed",
            "proxy": {"listen_path": "/signed/", "target_url": "http://127.0.0.1:1"},
            "auth": {"validate_signature": true, "signature": {
                "algorithm": "MasherySHA256", "header": "X-Signature", "secret": secret,
            }},
        });
        ApiDefinition::parse(body.to_string().as_bytes()).unwrap()
    }

    fn stored_secret(def: &ApiDefinition) -> String {
        def.spec().auth.signature.secret.clone()
    }

    #[test]
    fn a_plaintext_secret_is_sealed_and_a_sealed_one_kept() {
        let key = sealed_field::key("cp-test-encryption-secret-0123456789ab");
        let sealed = seal_api(def("mashery-secret"), &key).unwrap();
        let stored = stored_secret(&sealed);
        assert!(sealed_field::is_sealed(&stored), "{stored}");
        assert!(!sealed.to_value().to_string().contains("mashery-secret"));
        assert_eq!(
            sealed_field::open(&key, "signed", SIGNATURE_SECRET, &stored).unwrap(),
            "mashery-secret"
        );
        let again = seal_api(def(&stored), &key).unwrap();
        assert_eq!(stored_secret(&again), stored, "unchanged");
        let meta = seal_api(def("$tyk_meta.sig"), &key).unwrap();
        assert_eq!(stored_secret(&meta), "$tyk_meta.sig");
    }

    #[test]
    fn a_value_sealed_elsewhere_is_refused() {
        let key = sealed_field::key("cp-test-encryption-secret-0123456789ab");
        let foreign = sealed_field::seal(&key, "other-api", SIGNATURE_SECRET, "x");
        let err = seal_api(def(&foreign), &key).unwrap_err();
        assert_eq!(err.field, SIGNATURE_SECRET);
    }
}
