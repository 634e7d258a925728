//! Custom authentication plugins (`custom_middleware`): Tyk's gRPC coprocess and its
//! JavaScript (`otto`) auth middleware (docs/plugins.md).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::ValidationError;
use super::json::null_as_default;

/// The plugin settings of an API definition.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct PluginSpec {
    /// Tyk Classic's switch for coprocess (gRPC, JavaScript) auth.
    #[serde(default, deserialize_with = "null_as_default")]
    pub enable_coprocess_auth: bool,
    /// Tyk 5's name for the same switch.
    #[serde(default, deserialize_with = "null_as_default")]
    pub custom_plugin_auth_enabled: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub custom_middleware: CustomMiddleware,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct CustomMiddleware {
    /// `grpc` or `otto` (JavaScript); Tyk's `python`, `lua` and `goplugin` are not served.
    #[serde(default, deserialize_with = "null_as_default")]
    pub driver: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub auth_check: MiddlewareDefinition,
    #[serde(default, deserialize_with = "null_as_default")]
    pub id_extractor: IdExtractor,
    /// Tyk's other hooks; this build runs only `auth_check`, so enabled ones are refused.
    #[serde(default, deserialize_with = "null_as_default")]
    pub pre: Vec<MiddlewareDefinition>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub post: Vec<MiddlewareDefinition>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub post_key_auth: Vec<MiddlewareDefinition>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub response: Vec<MiddlewareDefinition>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct MiddlewareDefinition {
    /// The hook's name: the gRPC hook name, or the JavaScript middleware object's name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// JavaScript: the file, relative to the gateway's `--middleware-path`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub path: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub require_session: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub raw_body_only: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub disabled: bool,
}

/// What identifies a request to the plugin's session cache (Tyk's `id_extractor`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct IdExtractor {
    #[serde(default, deserialize_with = "null_as_default")]
    pub disabled: bool,
    /// `header`, `form` or `body` (Tyk's `extract_from`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub extract_from: String,
    /// `value`, `regex` or `xpath` (Tyk's `extract_with`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub extract_with: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub extractor_config: Map<String, Value>,
}

/// The plugin drivers this build serves.
pub const SERVED_DRIVERS: &[&str] = &["grpc", "otto"];

impl PluginSpec {
    /// True when the definition asks for plugin auth.
    pub fn auth_enabled(&self) -> bool {
        self.enable_coprocess_auth || self.custom_plugin_auth_enabled
    }

    /// The driver of the auth plugin when plugin auth is on and this build serves it.
    pub fn served_driver(&self) -> Option<&str> {
        let d = self.custom_middleware.driver.as_str();
        (self.auth_enabled() && SERVED_DRIVERS.contains(&d)).then_some(d)
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        let Some(driver) = self.served_driver() else {
            return Ok(());
        };
        let mw = &self.custom_middleware;
        for (field, hooks) in [
            ("custom_middleware.pre", &mw.pre),
            ("custom_middleware.post", &mw.post),
            ("custom_middleware.post_key_auth", &mw.post_key_auth),
            ("custom_middleware.response", &mw.response),
        ] {
            if hooks.iter().any(|h| !h.disabled) {
                return Err(ValidationError::new(
                    field,
                    "this gateway runs only the auth_check hook of a plugin",
                ));
            }
        }
        let check = &mw.auth_check;
        if check.disabled {
            return Err(ValidationError::new(
                "custom_middleware.auth_check.disabled",
                "plugin auth is enabled, so its auth_check hook must be too",
            ));
        }
        if check.name.trim().is_empty() {
            return Err(ValidationError::new(
                "custom_middleware.auth_check.name",
                "is required",
            ));
        }
        if check.name.len() > MAX_NAME_BYTES || check.name.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "custom_middleware.auth_check.name",
                format!("must be at most {MAX_NAME_BYTES} bytes without control characters"),
            ));
        }
        if driver == "otto" {
            validate_script_path(&check.path)?;
        }
        mw.id_extractor.settings().map(|_| ())
    }
}

/// Longest hook name, form parameter or header name accepted.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest `extractor_config.regex_expression`.
pub const MAX_REGEX_BYTES: usize = 1024;
/// Highest `extractor_config.regex_match_index`.
pub const MAX_REGEX_MATCH_INDEX: usize = 64;
/// Longest time a plugin's session is reused without asking the plugin again, whatever the
/// plugin's `id_extractor_deadline` says (a session revoked at the plugin stops working
/// within it).
pub const MAX_ID_CACHE_TTL_SECS: u64 = 3_600;

fn validate_script_path(path: &str) -> Result<(), ValidationError> {
    let field = "custom_middleware.auth_check.path";
    if path.is_empty() {
        return Err(ValidationError::new(
            field,
            "is required for the otto driver",
        ));
    }
    if path.len() > MAX_NAME_BYTES {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_NAME_BYTES} bytes"),
        ));
    }
    let absolute = path.starts_with('/') || path.starts_with('\\') || path.contains(':');
    if absolute
        || path.chars().any(char::is_control)
        || path.split(['/', '\\']).any(|seg| seg == "..")
    {
        return Err(ValidationError::new(
            field,
            "must be a path relative to the gateway's --middleware-path, without ..",
        ));
    }
    Ok(())
}

/// Where the id of a request is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSource {
    Header(String),
    Form(String),
}

/// A validated `id_extractor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractorSettings {
    pub source: IdSource,
    /// `extract_with: regex`: the expression and which of its matches is the id (Tyk indexes
    /// matches, not capture groups).
    pub regex: Option<(String, usize)>,
    /// `extractor_config.id_cache_ttl`: how long a session is reused when the plugin sets no
    /// `id_extractor_deadline` (0: only the plugin's deadline caches).
    pub ttl_secs: u64,
}

impl IdExtractor {
    /// The extractor when one is configured, or why it cannot be served.
    pub fn settings(&self) -> Result<Option<ExtractorSettings>, ValidationError> {
        if self.disabled || (self.extract_from.is_empty() && self.extract_with.is_empty()) {
            return Ok(None);
        }
        let cfg = &self.extractor_config;
        let text = |key: &str| -> Result<Option<String>, ValidationError> {
            match cfg.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(Value::String(s)) if s.len() <= MAX_REGEX_BYTES => Ok(Some(s.clone())),
                Some(_) => Err(ValidationError::new(
                    format!("custom_middleware.id_extractor.extractor_config.{key}"),
                    format!("must be a string of at most {MAX_REGEX_BYTES} bytes"),
                )),
            }
        };
        let named = |key: &str, value: Option<String>| -> Result<String, ValidationError> {
            let field = format!("custom_middleware.id_extractor.extractor_config.{key}");
            match value {
                None => Err(ValidationError::new(field, "is required")),
                Some(v) if v.len() > MAX_NAME_BYTES => Err(ValidationError::new(
                    field,
                    format!("must be at most {MAX_NAME_BYTES} bytes"),
                )),
                Some(v) => Ok(v),
            }
        };
        let source = match self.extract_from.as_str() {
            "header" => {
                let name = named("header_name", text("header_name")?)?;
                if http_token(&name).is_none() {
                    return Err(ValidationError::new(
                        "custom_middleware.id_extractor.extractor_config.header_name",
                        "must be a valid HTTP header name",
                    ));
                }
                IdSource::Header(name)
            }
            // Tyk Classic writes `param_name`; Tyk OAS's `formParamName` becomes it too.
            "form" => {
                let name = match text("param_name")? {
                    Some(n) => Some(n),
                    None => text("form_param_name")?,
                };
                IdSource::Form(named("param_name", name)?)
            }
            other => {
                return Err(ValidationError::new(
                    "custom_middleware.id_extractor.extract_from",
                    format!("{other:?} is not served: use header or form"),
                ));
            }
        };
        let regex = match self.extract_with.as_str() {
            "value" => None,
            "regex" => {
                let field = "custom_middleware.id_extractor.extractor_config.regex_expression";
                let Some(expr) = text("regex_expression")? else {
                    return Err(ValidationError::new(
                        field,
                        "is required with extract_with regex",
                    ));
                };
                if let Err(e) = regex::RegexBuilder::new(&expr).size_limit(1 << 20).build() {
                    return Err(ValidationError::new(field, format!("invalid regexp: {e}")));
                }
                let index = match cfg.get("regex_match_index") {
                    None | Some(Value::Null) => 0,
                    Some(v) => v
                        .as_u64()
                        .and_then(|i| usize::try_from(i).ok())
                        .filter(|i| *i <= MAX_REGEX_MATCH_INDEX)
                        .ok_or_else(|| {
                            ValidationError::new(
                                "custom_middleware.id_extractor.extractor_config.regex_match_index",
                                format!("must be an integer from 0 to {MAX_REGEX_MATCH_INDEX}"),
                            )
                        })?,
                };
                Some((expr, index))
            }
            other => {
                return Err(ValidationError::new(
                    "custom_middleware.id_extractor.extract_with",
                    format!("{other:?} is not served: use value or regex"),
                ));
            }
        };
        let ttl_secs = match cfg.get("id_cache_ttl") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_u64()
                .filter(|t| *t <= MAX_ID_CACHE_TTL_SECS)
                .ok_or_else(|| {
                    ValidationError::new(
                        "custom_middleware.id_extractor.extractor_config.id_cache_ttl",
                        format!("must be 0 to {MAX_ID_CACHE_TTL_SECS} seconds"),
                    )
                })?,
        };
        Ok(Some(ExtractorSettings {
            source,
            regex,
            ttl_secs,
        }))
    }
}

/// `Some(name)` when `name` is an RFC 9110 token (what a header name must be).
fn http_token(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(mw: Value) -> PluginSpec {
        serde_json::from_value(json!({"custom_plugin_auth_enabled": true, "custom_middleware": mw}))
            .unwrap()
    }

    fn refused(mw: Value) -> String {
        spec(mw).validate().unwrap_err().field
    }

    #[test]
    fn the_hook_name_is_required() {
        assert_eq!(
            refused(json!({"driver": "grpc", "auth_check": {"name": ""}})),
            "custom_middleware.auth_check.name"
        );
        spec(json!({"driver": "grpc", "auth_check": {"name": "MyAuth"}}))
            .validate()
            .unwrap();
        // Plugin auth off: nothing is checked (Tyk keeps such definitions).
        let off: PluginSpec =
            serde_json::from_value(json!({"custom_middleware": {"driver": "grpc"}})).unwrap();
        off.validate().unwrap();
    }

    #[test]
    fn javascript_paths_stay_under_the_middleware_folder() {
        for path in [
            "",
            "/etc/passwd",
            "../x.js",
            "a/../../x.js",
            "c:x.js",
            "a\\..\\x.js",
        ] {
            assert_eq!(
                refused(json!({"driver": "otto", "auth_check": {"name": "a", "path": path}})),
                "custom_middleware.auth_check.path",
                "{path}"
            );
        }
        let long = "a".repeat(256);
        assert_eq!(
            refused(json!({"driver": "otto", "auth_check": {"name": "a", "path": long}})),
            "custom_middleware.auth_check.path"
        );
        spec(json!({"driver": "otto", "auth_check": {"name": "a", "path": "auth/check.js"}}))
            .validate()
            .unwrap();
    }

    #[test]
    fn other_hooks_are_refused_unless_disabled() {
        assert_eq!(
            refused(json!({"driver": "grpc", "auth_check": {"name": "a"}, "pre": [{"name": "p"}]})),
            "custom_middleware.pre"
        );
        spec(json!({"driver": "grpc", "auth_check": {"name": "a"},
            "pre": [{"name": "p", "disabled": true}], "post": [], "response": null}))
        .validate()
        .unwrap();
    }

    #[test]
    fn id_extractors_are_checked() {
        let with =
            |ex: Value| json!({"driver": "grpc", "auth_check": {"name": "a"}, "id_extractor": ex});
        for (ex, field) in [
            (
                json!({"extract_from": "body", "extract_with": "value"}),
                "custom_middleware.id_extractor.extract_from",
            ),
            (
                json!({"extract_from": "header", "extract_with": "xpath", "extractor_config": {"header_name": "X"}}),
                "custom_middleware.id_extractor.extract_with",
            ),
            (
                json!({"extract_from": "header", "extract_with": "value"}),
                "custom_middleware.id_extractor.extractor_config.header_name",
            ),
            (
                json!({"extract_from": "header", "extract_with": "value", "extractor_config": {"header_name": "a b"}}),
                "custom_middleware.id_extractor.extractor_config.header_name",
            ),
            (
                json!({"extract_from": "header", "extract_with": "regex", "extractor_config": {"header_name": "X"}}),
                "custom_middleware.id_extractor.extractor_config.regex_expression",
            ),
            (
                json!({"extract_from": "header", "extract_with": "regex", "extractor_config": {"header_name": "X", "regex_expression": "("}}),
                "custom_middleware.id_extractor.extractor_config.regex_expression",
            ),
            (
                json!({"extract_from": "header", "extract_with": "regex", "extractor_config": {"header_name": "X", "regex_expression": "a", "regex_match_index": 65}}),
                "custom_middleware.id_extractor.extractor_config.regex_match_index",
            ),
            (
                json!({"extract_from": "header", "extract_with": "value", "extractor_config": {"header_name": "X", "id_cache_ttl": 3601}}),
                "custom_middleware.id_extractor.extractor_config.id_cache_ttl",
            ),
            (
                json!({"extract_from": "form", "extract_with": "value"}),
                "custom_middleware.id_extractor.extractor_config.param_name",
            ),
        ] {
            assert_eq!(refused(with(ex.clone())), field, "{ex}");
        }
        let ok = spec(with(
            json!({"extract_from": "form", "extract_with": "regex",
            "extractor_config": {"form_param_name": "user", "regex_expression": "[a-z]+", "regex_match_index": 1, "id_cache_ttl": 60}}),
        ));
        ok.validate().unwrap();
        assert_eq!(
            ok.custom_middleware.id_extractor.settings().unwrap(),
            Some(ExtractorSettings {
                source: IdSource::Form("user".into()),
                regex: Some(("[a-z]+".into(), 1)),
                ttl_secs: 60,
            })
        );
        let disabled = spec(with(json!({"disabled": true, "extract_from": "body"})));
        disabled.validate().unwrap();
    }
}
