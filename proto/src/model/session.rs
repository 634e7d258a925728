//! Tyk session (key) object: `SessionState`. The control plane stores it keyed by the key's hash;
//! the edge applies policies to it on every request.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::ValidationError;
use super::bounds::{self, MAX_QUOTA, RateFields};
use super::json::{null_as_default, parse_object, typed_view};

/// `allowed_urls` entry: a path regex and the methods allowed on it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct AllowedUrl {
    #[serde(default, deserialize_with = "null_as_default")]
    pub url: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub methods: Vec<String>,
}

/// Per-API limits inside an access right.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ApiLimit {
    #[serde(default, deserialize_with = "null_as_default")]
    pub rate: f64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub per: f64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub quota_max: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub quota_renewal_rate: i64,
}

/// One entry of a session's `access_rights`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct SessionAccess {
    #[serde(default, deserialize_with = "null_as_default")]
    pub api_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub api_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub versions: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub allowed_urls: Vec<AllowedUrl>,
    #[serde(default)]
    pub limit: Option<ApiLimit>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub allowance_scope: String,
}

/// `basic_auth_data`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct BasicAuthData {
    #[serde(default, deserialize_with = "null_as_default")]
    pub password: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub hash_type: String,
}

/// The typed fields of a session.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct SessionSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub org_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub rate: f64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub per: f64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub quota_max: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub quota_remaining: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub quota_renews: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub quota_renewal_rate: i64,
    /// Unix seconds; 0 never expires.
    #[serde(default, deserialize_with = "null_as_default")]
    pub expires: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub is_inactive: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub access_rights: BTreeMap<String, SessionAccess>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub apply_policies: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub apply_policy_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub meta_data: Map<String, Value>,
    #[serde(default)]
    pub basic_auth_data: Option<BasicAuthData>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub hmac_enabled: bool,
    /// The HMAC secret; sealed at rest (`sealed:v1:...`, docs/hmac.md).
    #[serde(default, deserialize_with = "null_as_default")]
    pub hmac_string: String,
    /// RSA signatures (`rsa-sha256`): allowed when set, with `rsa_certificate_id`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub enable_http_signature_validation: bool,
    /// Store id of the certificate whose public key verifies `rsa-sha256` signatures.
    #[serde(default, deserialize_with = "null_as_default")]
    pub rsa_certificate_id: String,
    /// Seconds; 0 = no per-key lifetime.
    #[serde(default, deserialize_with = "null_as_default")]
    pub session_lifetime: i64,
    /// Dynamic mTLS: the store id of the client certificate this key was created for.
    #[serde(default, deserialize_with = "null_as_default")]
    pub certificate: String,
    /// Static mTLS token binding: store ids (or sha256 fingerprints) of the client
    /// certificates this key may be used with on APIs with `use_mutual_tls_auth`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub mtls_static_certificate_bindings: Vec<String>,
}

/// Set (`"jwt"`) on sessions made at an edge from a verified token, by the control plane only:
/// edges use such a session for token methods alone (docs/keys.md, "Sessions made at the
/// edge"). Operators cannot set it.
pub const TOKEN_ORIGIN_FIELD: &str = "portcullis_origin";
/// Unix seconds: tokens issued at or before it are refused for this session (an operator
/// revoked it then). Kept by the control plane across later sessions of the same identity.
pub const TOKENS_AFTER_FIELD: &str = "portcullis_tokens_after";

/// A session: the whole JSON object plus its validated typed view.
#[derive(Debug, Clone)]
pub struct SessionState {
    raw: Map<String, Value>,
    spec: SessionSpec,
}

impl SessionState {
    /// Parses and validates a session sent by an operator.
    pub fn parse(body: &[u8]) -> Result<Self, ValidationError> {
        let (raw, spec) = parse_object(body)?;
        let s = Self { raw, spec };
        s.validate()?;
        Ok(s)
    }

    /// Rebuilds a session from stored or streamed JSON.
    pub fn from_value(value: Value) -> Result<Self, ValidationError> {
        let Value::Object(raw) = value else {
            return Err(ValidationError::new("body", "expected a JSON object"));
        };
        let spec = typed_view(&raw)?;
        let s = Self { raw, spec };
        s.validate()?;
        Ok(s)
    }

    pub fn spec(&self) -> &SessionSpec {
        &self.spec
    }

    /// Policy ids, with Tyk's deprecated single `apply_policy_id` folded in.
    pub fn policy_ids(&self) -> impl Iterator<Item = &str> {
        let legacy =
            (!self.spec.apply_policy_id.is_empty()).then_some(self.spec.apply_policy_id.as_str());
        self.spec
            .apply_policies
            .iter()
            .map(String::as_str)
            .chain(legacy)
    }

    /// A top-level field as stored (also the ones without a typed view, like `jwt_data`).
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.raw.get(name)
    }

    /// The whole session as JSON, unknown fields included.
    pub fn to_value(&self) -> Value {
        Value::Object(self.raw.clone())
    }

    /// Replaces a field, keeping raw and typed views in step.
    pub fn set(&mut self, field: &str, value: Value) -> Result<(), ValidationError> {
        self.raw.insert(field.to_owned(), value);
        self.spec = typed_view(&self.raw)?;
        self.validate()
    }

    fn validate(&self) -> Result<(), ValidationError> {
        let s = &self.spec;
        RateFields {
            prefix: "",
            rate: s.rate,
            per: s.per,
            quota_max: s.quota_max,
            quota_renewal_rate: s.quota_renewal_rate,
        }
        .validate()?;
        if !(-MAX_QUOTA..=MAX_QUOTA).contains(&s.quota_remaining) {
            return Err(ValidationError::new(
                "quota_remaining",
                format!("must be between -{MAX_QUOTA} and {MAX_QUOTA}"),
            ));
        }
        bounds::unix_time("quota_renews", s.quota_renews)?;
        bounds::unix_time("expires", s.expires)?;
        bounds::lifetime("session_lifetime", s.session_lifetime)?;
        if s.apply_policies.len() > bounds::MAX_POLICIES_PER_KEY {
            return Err(ValidationError::new(
                "apply_policies",
                format!("at most {} policies", bounds::MAX_POLICIES_PER_KEY),
            ));
        }
        validate_access_limits(&s.access_rights)
    }
}

/// Per-API limits follow the same bounds as the key's own (sessions and policies).
pub(super) fn validate_access_limits(
    rights: &BTreeMap<String, SessionAccess>,
) -> Result<(), ValidationError> {
    for (api, access) in rights {
        if let Some(limit) = &access.limit {
            RateFields {
                prefix: &format!("access_rights.{api}.limit."),
                rate: limit.rate,
                per: limit.per,
                quota_max: limit.quota_max,
                quota_renewal_rate: limit.quota_renewal_rate,
            }
            .validate()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_unknown_fields_and_reads_policies() {
        let s = SessionState::parse(
            br#"{"rate":10,"per":1,"apply_policy_id":"old","apply_policies":["p1"],"access_rights":{"a":{"api_id":"a","versions":["Default"],"allowed_urls":[{"url":"/x.*","methods":["GET"]}]}},"monitor":{"trigger_limits":[80]}}"#,
        )
        .unwrap();
        assert_eq!(s.policy_ids().collect::<Vec<_>>(), ["p1", "old"]);
        assert_eq!(s.to_value()["monitor"]["trigger_limits"][0], 80);
        assert_eq!(s.spec().access_rights["a"].allowed_urls[0].methods, ["GET"]);
    }

    #[test]
    fn bad_fields_are_named() {
        for (body, field) in [
            (r#"{"rate":"x"}"#, "rate"),
            (r#"{"quota_max":-3}"#, "quota_max"),
            (
                r#"{"access_rights":{"a":{"versions":1}}}"#,
                "access_rights.a.versions",
            ),
            (r#"{"expires":"tomorrow"}"#, "expires"),
            (r#"{"session_lifetime":-1}"#, "session_lifetime"),
        ] {
            assert_eq!(
                SessionState::parse(body.as_bytes()).unwrap_err().field,
                field,
                "{body}"
            );
        }
    }
}
