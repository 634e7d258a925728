//! Tyk security policy. Policies are applied at the edge; the control plane stores and streams them.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::bounds::RateFields;
use super::json::{null_as_default, parse_object, typed_view};
use super::session::{SessionAccess, validate_access_limits};
use super::{ValidationError, generate_id};

/// One entry of `access_rights` (also used by sessions).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct AccessDefinition {
    #[serde(default, deserialize_with = "null_as_default")]
    pub api_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub api_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub versions: Vec<String>,
}

/// The typed fields of a policy.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PolicySpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub org_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub rate: f64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub per: f64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub quota_max: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub quota_renewal_rate: i64,
    /// Same shape as a session's access rights (Tyk's `AccessDefinition`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub access_rights: BTreeMap<String, SessionAccess>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub partitions: Partitions,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub is_inactive: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
}

/// Which parts of a session a policy sets; none set means all of them.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct Partitions {
    #[serde(default, deserialize_with = "null_as_default")]
    pub quota: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub rate_limit: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub acl: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub complexity: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub per_api: bool,
}

impl Partitions {
    /// True when the policy sets only some parts (any flag but `per_api`).
    pub fn any(&self) -> bool {
        self.quota || self.rate_limit || self.acl || self.complexity
    }
}

impl PolicySpec {
    /// True when applying this policy sets the key's access rights: it grants at least one API and
    /// either sets every part of the session or has the `acl` partition (as the edge merges it).
    pub fn grants_acl(&self) -> bool {
        (!self.partitions.any() || self.partitions.acl) && !self.access_rights.is_empty()
    }
}

fn yes() -> bool {
    true
}

/// A policy: the whole JSON object plus its validated typed view.
#[derive(Debug, Clone)]
pub struct Policy {
    raw: Map<String, Value>,
    spec: PolicySpec,
}

impl Policy {
    /// Parses and validates a policy sent by an operator; a missing `id` is generated.
    pub fn parse(body: &[u8]) -> Result<Self, ValidationError> {
        let (mut raw, mut spec): (Map<String, Value>, PolicySpec) = parse_object(body)?;
        if spec.id.is_empty() {
            // Tyk's Mongo-era exports carry the id in `_id`.
            spec.id = match raw.get("_id") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => generate_id(),
            };
            raw.insert("id".into(), Value::String(spec.id.clone()));
        }
        let p = Self { raw, spec };
        p.validate()?;
        Ok(p)
    }

    /// Rebuilds a policy from a stored or streamed JSON object.
    pub fn from_value(value: Value) -> Result<Self, ValidationError> {
        let Value::Object(raw) = value else {
            return Err(ValidationError::new("body", "expected a JSON object"));
        };
        let spec = typed_view(&raw)?;
        let p = Self { raw, spec };
        p.validate()?;
        Ok(p)
    }

    /// Forces the id (PUT /tyk/policies/{id} addresses the policy by path).
    pub fn set_id(&mut self, id: &str) {
        self.spec.id = id.to_owned();
        self.raw.insert("id".into(), Value::String(id.to_owned()));
    }

    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The whole policy as JSON, unknown fields included.
    pub fn to_value(&self) -> Value {
        Value::Object(self.raw.clone())
    }

    /// A policy id: what a URL path segment and a database key can hold.
    pub fn check_id(id: &str) -> Result<(), ValidationError> {
        if id.contains('/')
            || id.chars().any(|c| c.is_whitespace() || c.is_control())
            || id.len() > 255
        {
            return Err(ValidationError::new(
                "id",
                "must be at most 255 characters without /, white space or control characters",
            ));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ValidationError> {
        let s = &self.spec;
        Self::check_id(&s.id)?;
        RateFields {
            prefix: "",
            rate: s.rate,
            per: s.per,
            quota_max: s.quota_max,
            quota_renewal_rate: s.quota_renewal_rate,
        }
        .validate()?;
        validate_access_limits(&s.access_rights)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_id_and_keeps_fields() {
        let p = Policy::parse(br#"{"name":"gold","rate":10,"per":1,"partitions":{"quota":true}}"#)
            .unwrap();
        assert_eq!(p.id().len(), 32);
        assert_eq!(p.to_value()["partitions"]["quota"], true);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = Policy::parse(br#"{"rate":"fast"}"#).unwrap_err();
        assert_eq!(e.field, "rate");
        let e = Policy::parse(br#"{"access_rights":{"api1":{"versions":"v1"}}}"#).unwrap_err();
        assert_eq!(e.field, "access_rights.api1.versions");
        let e = Policy::parse(br#"{"quota_max":-5}"#).unwrap_err();
        assert_eq!(e.field, "quota_max");
    }
}
