//! Seals the secrets an API definition carries before the definition reaches a table, the
//! change log or an edge (docs/keys.md, "Mashery signature secrets"; docs/jwt.md).

use portcullis_proto::envelope::EnvelopeKey;
use portcullis_proto::model::idp_auth::{self, KeySource};
use portcullis_proto::model::{ApiDefinition, ValidationError};
use portcullis_proto::sealed_field::{self, SIGNATURE_SECRET};
use serde_json::Value;

/// A reference to the key's meta data, not a secret.
const META_REFERENCE: &str = "$tyk_meta.";

/// The field path (and sealing field) of the OAuth notifications' `X-Tyk-Shared-Secret`.
pub const NOTIFICATIONS_SHARED_SECRET: &str = "notifications.shared_secret";

/// The secrets a definition carries: (field path as errors name it, JSON pointer, value).
/// A JWT source is a secret only when it is an HMAC key; URLs and public keys are not.
fn secret_fields(def: &ApiDefinition) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let secret = &def.spec().auth.signature.secret;
    if !secret.is_empty() && !secret.starts_with(META_REFERENCE) {
        out.push((
            SIGNATURE_SECRET.to_owned(),
            "/auth/signature/secret".to_owned(),
            secret.clone(),
        ));
    }
    let is_secret = |field: &str, source: &str| {
        matches!(
            idp_auth::key_source(field, source),
            Ok(KeySource::Secret(_) | KeySource::Sealed(_))
        )
    };
    let idp = def.idp();
    if is_secret("jwt_source", &idp.jwt_source) {
        out.push((
            "jwt_source".into(),
            "/jwt_source".into(),
            idp.jwt_source.clone(),
        ));
    }
    for (i, p) in idp.external_oauth.providers.iter().enumerate() {
        let field = format!("external_oauth.providers[{i}].jwt.source");
        if is_secret(&field, &p.jwt.source) {
            let pointer = format!("/external_oauth/providers/{i}/jwt/source");
            out.push((field, pointer, p.jwt.source.clone()));
        }
        if !p.introspection.client_secret.is_empty() {
            out.push((
                format!("external_oauth.providers[{i}].introspection.client_secret"),
                format!("/external_oauth/providers/{i}/introspection/client_secret"),
                p.introspection.client_secret.clone(),
            ));
        }
    }
    upstream_secrets(def, &mut out);
    // The webhook secret of the OAuth provider's notifications (docs/oauth.md).
    let shared = &def.oauth().notifications.shared_secret;
    if !shared.is_empty() {
        out.push((
            NOTIFICATIONS_SHARED_SECRET.to_owned(),
            "/notifications/shared_secret".to_owned(),
            shared.clone(),
        ));
    }
    out
}

/// The credentials the gateway presents to the upstream (docs/upstream-auth.md): sealed
/// whether or not their section is enabled, since a disabled section is one PUT from use.
fn upstream_secrets(def: &ApiDefinition, out: &mut Vec<(String, String, String)>) {
    let ua = def.upstream_auth();
    let oauth = &ua.upstream_auth.oauth;
    for (field, secret) in [
        ("request_signing.secret", &ua.request_signing.secret),
        (
            "upstream_auth.basic_auth.password",
            &ua.upstream_auth.basic_auth.password,
        ),
        (
            "upstream_auth.oauth.client_credentials.client_secret",
            &oauth.client_credentials.client_secret,
        ),
        (
            "upstream_auth.oauth.password.client_secret",
            &oauth.password.client_secret,
        ),
        (
            "upstream_auth.oauth.password.password",
            &oauth.password.password,
        ),
    ] {
        if !secret.is_empty() {
            let pointer = format!("/{}", field.replace('.', "/"));
            out.push((field.to_owned(), pointer, secret.clone()));
        }
    }
}

/// `def` with its secrets sealed (the Mashery signature secret, HMAC JWT sources, external
/// OAuth client secrets, the OAuth notifications' shared secret, upstream credentials). A value that is already sealed (a PUT sending back what GET
/// returned) is kept as it is, once it is known to open for this API and field.
pub fn seal_api(def: ApiDefinition, key: &EnvelopeKey) -> Result<ApiDefinition, ValidationError> {
    let fields = secret_fields(&def);
    if fields.is_empty() {
        return Ok(def);
    }
    let api_id = def.api_id().to_owned();
    let mut value = def.to_value();
    for (field, pointer, secret) in fields {
        if sealed_field::is_sealed(&secret) {
            sealed_field::open(key, &api_id, &field, &secret).map_err(|_| {
                ValidationError::new(
                    &field,
                    "is sealed for another API or field, or under another --encryption-secret; send the secret itself",
                )
            })?;
            continue;
        }
        let sealed = sealed_field::seal(key, &api_id, &field, &secret);
        // The typed view read a non-empty string there, so the pointer resolves.
        match value.pointer_mut(&pointer) {
            Some(slot) => *slot = Value::String(sealed),
            None => return Err(ValidationError::new(field, "must be a string")),
        }
    }
    ApiDefinition::from_value(value)
}

/// `value` (a stored or about-to-be-stored definition) with its sealed secrets opened, for
/// comparing two definitions only: it never leaves the process. A value that does not open is
/// left sealed, so it compares unequal to the plain text.
pub fn opened(value: &Value, key: &EnvelopeKey) -> Value {
    let Ok(def) = ApiDefinition::from_value(value.clone()) else {
        return value.clone();
    };
    let mut out = value.clone();
    for (field, pointer, secret) in secret_fields(&def) {
        if !sealed_field::is_sealed(&secret) {
            continue;
        }
        if let (Ok(plain), Some(slot)) = (
            sealed_field::open(key, def.api_id(), &field, &secret),
            out.pointer_mut(&pointer),
        ) {
            *slot = Value::String(plain);
        }
    }
    out
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
    fn hmac_jwt_sources_and_client_secrets_are_sealed_urls_and_keys_are_not() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let key = sealed_field::key("cp-test-encryption-secret-0123456789ab");
        let body = json!({
            "api_id": "jwt", "proxy": {"listen_path": "/jwt/", "target_url": "http://127.0.0.1:1"},
            "enable_jwt": true, "jwt_signing_method": "hmac", "jwt_source": b64("jwt-hmac-secret"),
            "external_oauth": {"enabled": true, "providers": [
                {"jwt": {"enabled": true, "signing_method": "hmac", "source": b64("provider-secret")}},
                {"introspection": {"enabled": true, "url": "https://idp.example/introspect",
                    "client_id": "gw", "client_secret": "introspection-secret"}},
            ]},
        });
        let def = ApiDefinition::parse(body.to_string().as_bytes()).unwrap();
        let sealed = seal_api(def, &key).unwrap();
        let text = sealed.to_value().to_string();
        for plain in [
            "jwt-hmac-secret",
            "provider-secret",
            "introspection-secret",
            &b64("jwt-hmac-secret"),
        ] {
            assert!(!text.contains(plain), "{plain} left in {text}");
        }
        let idp = sealed.idp();
        assert!(sealed_field::is_sealed(&idp.jwt_source));
        let opened = sealed_field::open(&key, "jwt", "jwt_source", &idp.jwt_source).unwrap();
        assert_eq!(opened, b64("jwt-hmac-secret"));
        assert_eq!(
            seal_api(sealed.clone(), &key).unwrap().to_value(),
            sealed.to_value()
        );

        let jwks = json!({
            "api_id": "jwks", "proxy": {"listen_path": "/jwks/", "target_url": "http://127.0.0.1:1"},
            "enable_jwt": true, "jwt_signing_method": "rsa",
            "jwt_source": "https://idp.example/.well-known/jwks.json",
        });
        let def = ApiDefinition::parse(jwks.to_string().as_bytes()).unwrap();
        let kept = seal_api(def, &key).unwrap();
        assert_eq!(
            kept.idp().jwt_source,
            "https://idp.example/.well-known/jwks.json"
        );
    }

    #[test]
    fn upstream_credentials_are_sealed_for_their_field() {
        let key = sealed_field::key("cp-test-encryption-secret-0123456789ab");
        let body = json!({
            "api_id": "up", "use_keyless": true,
            "proxy": {"listen_path": "/up/", "target_url": "http://127.0.0.1:1"},
            "request_signing": {"is_enabled": true, "secret": "signing-secret-1",
                "key_id": "k", "algorithm": "hmac-sha256"},
            "upstream_auth": {"enabled": true,
                "basic_auth": {"enabled": false, "username": "u", "password": "basic-pass-1"},
                "oauth": {"enabled": true, "allowed_authorize_types": ["password"],
                    "client_credentials": {"client_id": "c", "client_secret": "cc-secret-1",
                        "token_url": "https://idp.example/token"},
                    "password": {"client_id": "c", "client_secret": "pw-client-secret-1",
                        "username": "svc", "password": "pw-grant-pass-1",
                        "token_url": "https://idp.example/token"}}},
        });
        let def = ApiDefinition::parse(body.to_string().as_bytes()).unwrap();
        let sealed = seal_api(def, &key).unwrap();
        let text = sealed.to_value().to_string();
        let ua = sealed.upstream_auth();
        let oauth = &ua.upstream_auth.oauth;
        for (field, stored, plain) in [
            (
                "request_signing.secret",
                &ua.request_signing.secret,
                "signing-secret-1",
            ),
            (
                "upstream_auth.basic_auth.password",
                &ua.upstream_auth.basic_auth.password,
                "basic-pass-1",
            ),
            (
                "upstream_auth.oauth.client_credentials.client_secret",
                &oauth.client_credentials.client_secret,
                "cc-secret-1",
            ),
            (
                "upstream_auth.oauth.password.client_secret",
                &oauth.password.client_secret,
                "pw-client-secret-1",
            ),
            (
                "upstream_auth.oauth.password.password",
                &oauth.password.password,
                "pw-grant-pass-1",
            ),
        ] {
            assert!(!text.contains(plain), "{plain} left in {text}");
            assert!(sealed_field::is_sealed(stored), "{field}: {stored}");
            assert_eq!(
                sealed_field::open(&key, "up", field, stored).unwrap(),
                plain
            );
        }
        assert_eq!(oauth.password.username, "svc");
        assert_eq!(
            seal_api(sealed.clone(), &key).unwrap().to_value(),
            sealed.to_value()
        );
    }

    #[test]
    fn a_value_sealed_elsewhere_is_refused() {
        let key = sealed_field::key("cp-test-encryption-secret-0123456789ab");
        let foreign = sealed_field::seal(&key, "other-api", SIGNATURE_SECRET, "x");
        let err = seal_api(def(&foreign), &key).unwrap_err();
        assert_eq!(err.field, SIGNATURE_SECRET);
    }

    #[test]
    fn the_notifications_shared_secret_is_sealed_for_its_api() {
        let key = sealed_field::key("cp-test-encryption-secret-0123456789ab");
        let body = json!({
            "api_id": "oauth-api", "use_oauth2": true,
            "proxy": {"listen_path": "/oauth-api/", "target_url": "http://127.0.0.1:1"},
            "notifications": {
                "shared_secret": "webhook-shared-secret",
                "oauth_on_keychange_url": "https://hooks.example/oauth",
            },
        });
        let def = ApiDefinition::parse(body.to_string().as_bytes()).unwrap();
        let sealed = seal_api(def, &key).unwrap();
        assert!(
            !sealed
                .to_value()
                .to_string()
                .contains("webhook-shared-secret")
        );
        let stored = sealed.oauth().notifications.shared_secret.clone();
        assert!(sealed_field::is_sealed(&stored), "{stored}");
        assert_eq!(
            sealed_field::open(&key, "oauth-api", NOTIFICATIONS_SHARED_SECRET, &stored).unwrap(),
            "webhook-shared-secret"
        );
        assert_eq!(
            sealed.oauth().notifications.oauth_on_keychange_url,
            "https://hooks.example/oauth"
        );
        // A PUT sending back what GET returned keeps the sealed value.
        let again = seal_api(sealed.clone(), &key).unwrap();
        assert_eq!(again.oauth().notifications.shared_secret, stored);
        // Sealed for another API: refused, naming the field.
        let foreign = sealed_field::seal(&key, "other-api", NOTIFICATIONS_SHARED_SECRET, "x");
        let mut moved = body.clone();
        moved["notifications"]["shared_secret"] = json!(foreign);
        let def = ApiDefinition::parse(moved.to_string().as_bytes()).unwrap();
        assert_eq!(
            seal_api(def, &key).unwrap_err().field,
            NOTIFICATIONS_SHARED_SECRET
        );
        // No shared secret: nothing to seal, the definition is unchanged.
        let mut none = body;
        none["notifications"]["shared_secret"] = json!("");
        let def = ApiDefinition::parse(none.to_string().as_bytes()).unwrap();
        assert_eq!(
            seal_api(def.clone(), &key).unwrap().to_value(),
            def.to_value()
        );
    }
}
