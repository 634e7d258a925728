//! Tyk Classic API definition.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::json::{null_as_default, parse_object, typed_view};
use super::{ValidationError, bounds, generate_id};

/// The typed fields of an API definition that Portcullis acts on.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ApiSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub api_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub org_id: String,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub use_keyless: bool,
    /// Host the API answers on; empty means any host.
    #[serde(default, deserialize_with = "null_as_default")]
    pub domain: String,
    /// Node segmentation: empty reaches every group, otherwise the groups named.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    /// Missing means every field empty, so the error names `proxy.listen_path`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub proxy: ProxySpec,
    /// Where the auth token is read from (Tyk Classic `auth`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub auth: AuthTokenSpec,
    /// Remove the credential before proxying.
    #[serde(default, deserialize_with = "null_as_default")]
    pub strip_auth_data: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub use_basic_auth: bool,
    /// Seconds after a write that keys with rights to this API are deleted (0: never).
    #[serde(default, deserialize_with = "null_as_default")]
    pub session_lifetime: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub basic_auth: BasicAuthSpec,
}

/// Tyk Classic `basic_auth` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct BasicAuthSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub disable_caching: bool,
    /// Seconds a verified password stays cached (0: Tyk's default of 60).
    #[serde(default, deserialize_with = "null_as_default")]
    pub cache_ttl: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub extract_from_body: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub body_user_regexp: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub body_password_regexp: String,
}

/// Tyk Classic `auth` section: the auth token's header, query parameter and cookie.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct AuthTokenSpec {
    /// Header carrying the key; Tyk's default is `Authorization` (a `Bearer ` prefix is accepted).
    #[serde(default = "authorization", deserialize_with = "empty_as_authorization")]
    pub auth_header_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub use_param: bool,
    /// Query parameter name; empty means the header name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub param_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub use_cookie: bool,
    /// Cookie name; empty means the header name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub cookie_name: String,
    /// Mashery-style request signature on top of the key.
    #[serde(default, deserialize_with = "null_as_default")]
    pub validate_signature: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub signature: SignatureSpec,
}

/// `auth.signature`: `hex(hash(key + secret + unix seconds))` within a clock skew.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct SignatureSpec {
    /// `MasheryMD5` or `MasherySHA256`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub algorithm: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub header: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub use_param: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub param_name: String,
    /// The shared secret, or `$tyk_meta.<field>` to read it from the key's meta data.
    #[serde(default, deserialize_with = "null_as_default")]
    pub secret: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub allowed_clock_skew: i64,
    /// Status on failure (default 401).
    #[serde(default, deserialize_with = "null_as_default")]
    pub error_code: u16,
    #[serde(default, deserialize_with = "null_as_default")]
    pub error_message: String,
}

impl Default for AuthTokenSpec {
    fn default() -> Self {
        Self {
            auth_header_name: authorization(),
            use_param: false,
            param_name: String::new(),
            use_cookie: false,
            cookie_name: String::new(),
            validate_signature: false,
            signature: SignatureSpec::default(),
        }
    }
}

fn authorization() -> String {
    "Authorization".into()
}

fn empty_as_authorization<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()).unwrap_or_else(authorization))
}

fn yes() -> bool {
    true
}

/// `proxy` section of an API definition.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ProxySpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub listen_path: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub target_url: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub strip_listen_path: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub preserve_host_header: bool,
    /// Upstream timeout in seconds (Portcullis extension; 0 or absent = the gateway's default).
    #[serde(default, deserialize_with = "null_as_default")]
    pub timeout: f64,
}

/// A Tyk Classic API definition: the whole JSON object plus its validated typed view.
#[derive(Debug, Clone)]
pub struct ApiDefinition {
    raw: Map<String, Value>,
    spec: ApiSpec,
}

impl ApiDefinition {
    /// Parses and validates a definition sent by an operator. A missing `api_id` is generated,
    /// as Tyk does.
    pub fn parse(body: &[u8]) -> Result<Self, ValidationError> {
        let (mut raw, mut spec): (Map<String, Value>, ApiSpec) = parse_object(body)?;
        if spec.api_id.is_empty() {
            spec.api_id = generate_id();
            raw.insert("api_id".into(), Value::String(spec.api_id.clone()));
        }
        let def = Self { raw, spec };
        def.validate()?;
        Ok(def)
    }

    /// Rebuilds a definition from a stored or streamed JSON object (already validated once).
    pub fn from_value(value: Value) -> Result<Self, ValidationError> {
        let Value::Object(raw) = value else {
            return Err(ValidationError::new("body", "expected a JSON object"));
        };
        let spec = typed_view(&raw)?;
        let def = Self { raw, spec };
        def.validate()?;
        Ok(def)
    }

    /// Forces the id (PUT /tyk/apis/{id} addresses the API by path).
    pub fn set_api_id(&mut self, id: &str) {
        self.spec.api_id = id.to_owned();
        self.raw
            .insert("api_id".into(), Value::String(id.to_owned()));
    }

    pub fn spec(&self) -> &ApiSpec {
        &self.spec
    }

    pub fn api_id(&self) -> &str {
        &self.spec.api_id
    }

    /// The whole definition as JSON, unknown fields included.
    pub fn to_value(&self) -> Value {
        Value::Object(self.raw.clone())
    }

    /// True when an edge of `group` should receive this API (Tyk node segmentation).
    pub fn visible_to(&self, group: &str) -> bool {
        self.spec.tags.is_empty() || self.spec.tags.iter().any(|t| t == group)
    }

    fn validate(&self) -> Result<(), ValidationError> {
        let s = &self.spec;
        if s.api_id.contains('/') {
            return Err(ValidationError::new("api_id", "Invalid API ID"));
        }
        if s.api_id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
            || s.api_id.len() > 255
        {
            return Err(ValidationError::new(
                "api_id",
                "must be at most 255 characters without white space",
            ));
        }
        let lp = &s.proxy.listen_path;
        if lp.is_empty() {
            return Err(ValidationError::new("proxy.listen_path", "is required"));
        }
        if !lp.starts_with('/') || lp.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ValidationError::new(
                "proxy.listen_path",
                "must start with / and contain no white space",
            ));
        }
        validate_target_url(&s.proxy.target_url)?;
        if s.domain
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(ValidationError::new("domain", "must be a host name"));
        }
        if !(0.0..=bounds::MAX_TIMEOUT_SECS).contains(&s.proxy.timeout) {
            return Err(ValidationError::new(
                "proxy.timeout",
                format!(
                    "must be 0 (the gateway's default) to {} seconds",
                    bounds::MAX_TIMEOUT_SECS
                ),
            ));
        }
        bounds::lifetime("session_lifetime", s.session_lifetime)?;
        if s.basic_auth.cache_ttl > bounds::MAX_BASIC_CACHE_TTL_SECS {
            return Err(ValidationError::new(
                "basic_auth.cache_ttl",
                format!(
                    "must be at most {} seconds",
                    bounds::MAX_BASIC_CACHE_TTL_SECS
                ),
            ));
        }
        if s.basic_auth.extract_from_body {
            for (field, re) in [
                (
                    "basic_auth.body_user_regexp",
                    &s.basic_auth.body_user_regexp,
                ),
                (
                    "basic_auth.body_password_regexp",
                    &s.basic_auth.body_password_regexp,
                ),
            ] {
                match regex::Regex::new(re) {
                    Ok(r) if !re.is_empty() && r.captures_len() >= 2 => {}
                    Ok(_) => {
                        return Err(ValidationError::new(
                            field,
                            "must be a regexp with a capture group for the value",
                        ));
                    }
                    Err(e) => {
                        return Err(ValidationError::new(field, format!("invalid regexp: {e}")));
                    }
                }
            }
        }
        if s.auth.validate_signature {
            let sig = &s.auth.signature;
            if !matches!(sig.algorithm.as_str(), "MasheryMD5" | "MasherySHA256") {
                return Err(ValidationError::new(
                    "auth.signature.algorithm",
                    "must be MasheryMD5 or MasherySHA256",
                ));
            }
            if sig.header.is_empty() && !sig.use_param {
                return Err(ValidationError::new(
                    "auth.signature.header",
                    "is required (or use_param)",
                ));
            }
            if !sig.header.is_empty() && http_token(&sig.header).is_none() {
                return Err(ValidationError::new(
                    "auth.signature.header",
                    "must be a valid HTTP header name",
                ));
            }
            if !(0..=bounds::MAX_CLOCK_SKEW_SECS).contains(&sig.allowed_clock_skew) {
                return Err(ValidationError::new(
                    "auth.signature.allowed_clock_skew",
                    format!("must be 0 to {} seconds", bounds::MAX_CLOCK_SKEW_SECS),
                ));
            }
            if sig.error_code != 0 && !(400..=599).contains(&sig.error_code) {
                return Err(ValidationError::new(
                    "auth.signature.error_code",
                    "must be an HTTP error status (400-599)",
                ));
            }
        }
        if http_token(&s.auth.auth_header_name).is_none() {
            return Err(ValidationError::new(
                "auth.auth_header_name",
                "must be a valid HTTP header name",
            ));
        }
        if let Some(i) = s.tags.iter().position(|t| t.is_empty()) {
            return Err(ValidationError::new(
                format!("tags[{i}]"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

/// An RFC 9110 token (header names), or None.
fn http_token(s: &str) -> Option<&str> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ok.then_some(s)
}

fn validate_target_url(target: &str) -> Result<(), ValidationError> {
    let field = "proxy.target_url";
    if target.is_empty() {
        return Err(ValidationError::new(field, "is required"));
    }
    let url = url::Url::parse(target)
        .map_err(|e| ValidationError::new(field, format!("not an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ValidationError::new(field, "scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ValidationError::new(field, "has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ApiDefinition, ValidationError> {
        ApiDefinition::parse(s.as_bytes())
    }

    #[test]
    fn keeps_unknown_fields_and_generates_missing_id() {
        let d = parse(r#"{"name":"x","proxy":{"listen_path":"/x/","target_url":"http://up:1/","x_custom":1},"version_data":{"not_versioned":true}}"#).unwrap();
        assert_eq!(d.api_id().len(), 32);
        let v = d.to_value();
        assert_eq!(v["version_data"]["not_versioned"], true);
        assert_eq!(v["proxy"]["x_custom"], 1);
        assert_eq!(v["api_id"], d.api_id());
    }

    #[test]
    fn tyk_nulls_are_accepted() {
        let d = parse(r#"{"api_id":"a","tags":null,"domain":null,"proxy":{"listen_path":"/a/","target_url":"http://u/","strip_listen_path":null}}"#).unwrap();
        assert!(d.spec().tags.is_empty());
        assert!(d.visible_to("eu"));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("{", "body"),
            ("[]", "body"),
            (
                r#"{"proxy":{"target_url":"http://u/"}}"#,
                "proxy.listen_path",
            ),
            (
                r#"{"proxy":{"listen_path":"/a","target_url":"not a url"}}"#,
                "proxy.target_url",
            ),
            (
                r#"{"proxy":{"listen_path":"/a","target_url":"/relative"}}"#,
                "proxy.target_url",
            ),
            (
                r#"{"proxy":{"listen_path":"/a","target_url":"ftp://h/"}}"#,
                "proxy.target_url",
            ),
            (
                r#"{"api_id":"a/b","proxy":{"listen_path":"/a","target_url":"http://h/"}}"#,
                "api_id",
            ),
            (
                r#"{"use_keyless":"yes","proxy":{"listen_path":"/a","target_url":"http://h/"}}"#,
                "use_keyless",
            ),
            (
                r#"{"proxy":{"listen_path":5,"target_url":"http://h/"}}"#,
                "proxy.listen_path",
            ),
            (
                r#"{"tags":[1],"proxy":{"listen_path":"/a","target_url":"http://h/"}}"#,
                "tags[0]",
            ),
            (r#"{"name":"no proxy"}"#, "proxy.listen_path"),
        ];
        for (body, field) in cases {
            let e = parse(body).unwrap_err();
            assert_eq!(e.field, field, "{body} -> {e}");
        }
        assert_eq!(
            parse(r#"{"api_id":"a/b","proxy":{"listen_path":"/a","target_url":"http://h/"}}"#)
                .unwrap_err()
                .reason,
            "Invalid API ID"
        );
    }

    #[test]
    fn tags_decide_group_visibility() {
        let d = parse(r#"{"api_id":"a","tags":["eu","apac"],"proxy":{"listen_path":"/a","target_url":"http://h/"}}"#).unwrap();
        assert!(d.visible_to("eu"));
        assert!(!d.visible_to("us"));
    }
}
