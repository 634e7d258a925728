//! Tyk Classic API definition.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::hmac::HmacSpec;
use super::idp_auth::IdpSpec;
use super::json::{null_as_default, parse_object, typed_view};
use super::oauth::OAuthSpec;
use super::plugins::PluginSpec;
use super::upstream_auth::UpstreamAuthSpec;
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
    /// Runs auth token after the other enabled methods (Tyk's chain).
    #[serde(default, deserialize_with = "null_as_default")]
    pub use_standard_auth: bool,
    /// Static client mTLS: the client's certificate must be in `client_certificates`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub use_mutual_tls_auth: bool,
    /// Store ids of allowed client leaf certificates or of CAs that issue them.
    #[serde(default, deserialize_with = "null_as_default")]
    pub client_certificates: Vec<String>,
    /// Store ids of the server certificates served for this API's domain (chosen by SNI).
    #[serde(default, deserialize_with = "null_as_default")]
    pub certificates: Vec<String>,
    /// Host pattern (`*`, `*.domain`, `host`, `host:port`) to the store id of the client
    /// certificate presented to that upstream.
    #[serde(default, deserialize_with = "null_as_default")]
    pub upstream_certificates: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub upstream_certificates_disabled: bool,
    /// Host pattern to comma-separated store ids of public keys the upstream must present.
    #[serde(default, deserialize_with = "null_as_default")]
    pub pinned_public_keys: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub certificate_pinning_disabled: bool,
    /// Whose session the request runs under when several methods are enabled.
    #[serde(default, deserialize_with = "null_as_default")]
    pub base_identity_provided_by: String,
    /// `all` (Tyk: every enabled method must pass) or `any` (the first method whose
    /// credential is present decides); empty means `all` (docs/architecture.md).
    #[serde(default, deserialize_with = "null_as_default")]
    pub auth_chain_mode: String,
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
    /// Dynamic mTLS: the key is found from the client certificate (docs/certificates.md).
    #[serde(default, deserialize_with = "null_as_default")]
    pub use_certificate: bool,
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
            use_certificate: false,
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
    #[serde(default, deserialize_with = "null_as_default")]
    pub transport: TransportSpec,
    /// Round robin over `target_list` instead of `target_url` (docs/gateway.md, "Load
    /// balancing").
    #[serde(default, deserialize_with = "null_as_default")]
    pub enable_load_balancing: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub target_list: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub service_discovery: ServiceDiscoverySpec,
}

/// `proxy.service_discovery`: stored; turning it on is refused, since upstreams come only
/// from `target_url` or `target_list` here.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ServiceDiscoverySpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub use_discovery_service: bool,
}

/// Most upstreams one API may balance over.
pub const MAX_TARGETS: usize = 256;

/// `proxy.transport`: how the edge speaks TLS to the upstream.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct TransportSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub ssl_insecure_skip_verify: bool,
    /// Tyk's numbers: 769 TLS 1.0, 770 TLS 1.1, 771 TLS 1.2, 772 TLS 1.3; 0 = the default
    /// (TLS 1.2). Versions below 1.2 are refused: this build speaks only 1.2 and 1.3.
    #[serde(default, deserialize_with = "null_as_default")]
    pub ssl_min_version: u16,
    #[serde(default, deserialize_with = "null_as_default")]
    pub ssl_max_version: u16,
    /// Portcullis extension: store ids of CAs trusted for this API's upstream instead of the
    /// public web roots.
    #[serde(default, deserialize_with = "null_as_default")]
    pub ssl_ca_certificates: Vec<String>,
}

/// A Tyk Classic API definition: the whole JSON object plus its validated typed view.
#[derive(Debug, Clone)]
pub struct ApiDefinition {
    raw: Map<String, Value>,
    spec: ApiSpec,
    /// JWT, external OAuth and OpenID Connect: a view of its own (docs/jwt.md).
    idp: IdpSpec,
    /// The built-in OAuth 2.0 provider (docs/oauth.md).
    oauth: OAuthSpec,
    /// Request signatures (docs/hmac.md).
    hmac: HmacSpec,
    /// Custom auth plugins (docs/plugins.md).
    plugins: PluginSpec,
    /// How the gateway authenticates to the upstream (docs/upstream-auth.md).
    upstream_auth: UpstreamAuthSpec,
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
        let def = Self {
            idp: typed_view(&raw)?,
            oauth: typed_view(&raw)?,
            hmac: typed_view(&raw)?,
            plugins: typed_view(&raw)?,
            upstream_auth: typed_view(&raw)?,
            raw,
            spec,
        };
        def.validate()?;
        Ok(def)
    }

    /// Rebuilds a definition from a stored or streamed JSON object (already validated once).
    pub fn from_value(value: Value) -> Result<Self, ValidationError> {
        let Value::Object(raw) = value else {
            return Err(ValidationError::new("body", "expected a JSON object"));
        };
        let spec = typed_view(&raw)?;
        let def = Self {
            idp: typed_view(&raw)?,
            oauth: typed_view(&raw)?,
            hmac: typed_view(&raw)?,
            plugins: typed_view(&raw)?,
            upstream_auth: typed_view(&raw)?,
            raw,
            spec,
        };
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

    /// JWT, external OAuth and OpenID Connect settings.
    pub fn idp(&self) -> &IdpSpec {
        &self.idp
    }

    /// The built-in OAuth 2.0 provider's settings.
    pub fn oauth(&self) -> &OAuthSpec {
        &self.oauth
    }

    /// Request-signature settings.
    pub fn hmac(&self) -> &HmacSpec {
        &self.hmac
    }

    /// Custom auth plugin settings.
    pub fn plugins(&self) -> &PluginSpec {
        &self.plugins
    }

    /// Upstream-authentication settings.
    pub fn upstream_auth(&self) -> &UpstreamAuthSpec {
        &self.upstream_auth
    }

    pub fn api_id(&self) -> &str {
        &self.spec.api_id
    }

    /// The whole definition as JSON, unknown fields included.
    pub fn to_value(&self) -> Value {
        Value::Object(self.raw.clone())
    }

    /// Every certificate-store id this definition references (server, client, upstream, pinned
    /// and CA certificates). A certificate reaches the groups whose APIs reference it
    /// (docs/certificates.md); both planes use this one list so they agree on what a group holds.
    pub fn certificate_refs(&self) -> impl Iterator<Item = &str> {
        let s = &self.spec;
        s.certificates
            .iter()
            .chain(&s.client_certificates)
            .chain(&s.proxy.transport.ssl_ca_certificates)
            .map(String::as_str)
            .chain(s.upstream_certificates.values().map(String::as_str))
            .chain(
                s.pinned_public_keys
                    .values()
                    .flat_map(|v| v.split(','))
                    .map(str::trim),
            )
            .chain(self.upstream_auth.certificate_refs())
            .filter(|id| !id.is_empty())
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
        // A balanced API may leave target_url empty: Tyk ignores it then.
        if !(s.proxy.enable_load_balancing && s.proxy.target_url.is_empty()) {
            validate_target_url("proxy.target_url", &s.proxy.target_url)?;
        }
        if s.proxy.enable_load_balancing {
            if s.proxy.target_list.is_empty() {
                return Err(ValidationError::new(
                    "proxy.target_list",
                    "must name at least one upstream when proxy.enable_load_balancing is true",
                ));
            }
            if s.proxy.target_list.len() > MAX_TARGETS {
                return Err(ValidationError::new(
                    "proxy.target_list",
                    format!("must name at most {MAX_TARGETS} upstreams"),
                ));
            }
            for t in &s.proxy.target_list {
                validate_target_url("proxy.target_list", t)?;
            }
            // Client certificates and pins are chosen by host, once per API: with several
            // https hosts in the list the other hosts would go unpinned (docs/gateway.md).
            let https_hosts: std::collections::BTreeSet<String> = s
                .proxy
                .target_list
                .iter()
                .filter_map(|t| url::Url::parse(t).ok())
                .filter(|u| u.scheme() == "https")
                .map(|u| format!("{}:{}", u.host_str().unwrap_or(""), u.port().unwrap_or(443)))
                .collect();
            let per_host = !s.upstream_certificates.is_empty() || !s.pinned_public_keys.is_empty();
            if https_hosts.len() > 1 && per_host {
                return Err(ValidationError::new(
                    "proxy.target_list",
                    "balanced https targets on different hosts cannot use upstream_certificates or pinned_public_keys; list one host (several ports of it are different hosts too) or drop them",
                ));
            }
        }
        if s.proxy.service_discovery.use_discovery_service {
            return Err(ValidationError::new(
                "proxy.service_discovery.use_discovery_service",
                "service discovery is not supported; list the upstreams in proxy.target_list",
            ));
        }
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
        validate_certificate_fields(s)?;
        self.idp.validate()?;
        self.oauth.validate()?;
        self.hmac.validate()?;
        self.plugins.validate()?;
        self.upstream_auth.validate()?;
        if !matches!(s.auth_chain_mode.as_str(), "" | "all" | "any") {
            return Err(ValidationError::new(
                "auth_chain_mode",
                "must be all or any",
            ));
        }
        let enabled = match s.base_identity_provided_by.as_str() {
            "jwt_claim" => Some(self.idp.enable_jwt),
            "oidc_user" => Some(self.idp.use_openid),
            _ => None,
        };
        if enabled == Some(false) {
            return Err(ValidationError::new(
                "base_identity_provided_by",
                "names a method this API does not enable",
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

/// Values of `base_identity_provided_by` (Tyk's names); empty lets the first method decide.
pub const IDENTITY_PROVIDERS: &[&str] = &[
    "",
    "auth_token",
    "basic_auth_user",
    "hmac_key",
    "jwt_claim",
    "oidc_user",
    "oauth_key",
    "custom_auth",
];

pub(super) fn certificate_id(field: &str, id: &str) -> Result<(), ValidationError> {
    if id.is_empty()
        || id.len() > bounds::MAX_CERTIFICATE_ID_BYTES
        || id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '/')
    {
        return Err(ValidationError::new(
            field,
            format!(
                "must be a certificate id (at most {} characters, no white space, commas or slashes)",
                bounds::MAX_CERTIFICATE_ID_BYTES
            ),
        ));
    }
    Ok(())
}

/// `*`, `*.domain`, `host` or any of them with `:port`.
fn host_pattern(field: &str, pattern: &str) -> Result<(), ValidationError> {
    let host = match pattern.rsplit_once(':') {
        Some((h, port)) if !h.contains(']') || h.ends_with(']') => {
            if port.parse::<u16>().is_err() && !h.is_empty() {
                return Err(ValidationError::new(field, "the port must be a number"));
            }
            h
        }
        _ => pattern,
    };
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = pattern == "*"
        || (!name.is_empty()
            && name.len() <= 253
            && !name.contains('*')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.[]:_".contains(&b)));
    if !ok {
        return Err(ValidationError::new(
            field,
            "must be *, a host, *.domain, optionally with :port",
        ));
    }
    Ok(())
}

fn validate_certificate_fields(s: &ApiSpec) -> Result<(), ValidationError> {
    for (field, list) in [
        ("certificates", &s.certificates),
        ("client_certificates", &s.client_certificates),
        (
            "proxy.transport.ssl_ca_certificates",
            &s.proxy.transport.ssl_ca_certificates,
        ),
    ] {
        if list.len() > bounds::MAX_CERTIFICATES_PER_LIST {
            return Err(ValidationError::new(
                field,
                format!("at most {} certificates", bounds::MAX_CERTIFICATES_PER_LIST),
            ));
        }
        for (i, id) in list.iter().enumerate() {
            certificate_id(&format!("{field}[{i}]"), id)?;
        }
    }
    for (field, map) in [
        ("upstream_certificates", &s.upstream_certificates),
        ("pinned_public_keys", &s.pinned_public_keys),
    ] {
        if map.len() > bounds::MAX_CERTIFICATES_PER_LIST {
            return Err(ValidationError::new(
                field,
                format!("at most {} hosts", bounds::MAX_CERTIFICATES_PER_LIST),
            ));
        }
        for (host, ids) in map {
            let field = format!("{field}.{host}");
            host_pattern(&field, host)?;
            let mut n = 0;
            for id in ids.split(',').map(str::trim) {
                certificate_id(&field, id)?;
                n += 1;
            }
            if n > bounds::MAX_CERTIFICATES_PER_LIST {
                return Err(ValidationError::new(field, "too many certificates"));
            }
        }
    }
    if s.upstream_certificates.values().any(|v| v.contains(',')) {
        return Err(ValidationError::new(
            "upstream_certificates",
            "each host takes one certificate id",
        ));
    }
    if !IDENTITY_PROVIDERS.contains(&s.base_identity_provided_by.as_str()) {
        return Err(ValidationError::new(
            "base_identity_provided_by",
            format!("must be one of {}", IDENTITY_PROVIDERS[1..].join(", ")),
        ));
    }
    // Methods this model knows how to tell are on; the others are refused elsewhere until
    // they are implemented (`auth_methods`).
    let enabled = match s.base_identity_provided_by.as_str() {
        "basic_auth_user" => Some(s.use_basic_auth),
        "auth_token" => Some(s.use_standard_auth || !s.use_basic_auth),
        _ => None,
    };
    if s.use_keyless && !s.base_identity_provided_by.is_empty() || enabled == Some(false) {
        return Err(ValidationError::new(
            "base_identity_provided_by",
            "names a method this API does not enable",
        ));
    }
    let t = &s.proxy.transport;
    for (field, v) in [
        ("proxy.transport.ssl_min_version", t.ssl_min_version),
        ("proxy.transport.ssl_max_version", t.ssl_max_version),
    ] {
        if !matches!(v, 0 | 771 | 772) {
            return Err(ValidationError::new(
                field,
                "must be 0 (default), 771 (TLS 1.2) or 772 (TLS 1.3); older versions are not spoken",
            ));
        }
    }
    if t.ssl_max_version != 0 && t.ssl_min_version > t.ssl_max_version {
        return Err(ValidationError::new(
            "proxy.transport.ssl_min_version",
            "must not be above ssl_max_version",
        ));
    }
    Ok(())
}

/// An RFC 9110 token (header names), or None.
fn http_token(s: &str) -> Option<&str> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ok.then_some(s)
}

fn validate_target_url(field: &'static str, target: &str) -> Result<(), ValidationError> {
    if target.is_empty() {
        return Err(ValidationError::new(field, "is required"));
    }
    let url = url::Url::parse(target)
        .map_err(|e| ValidationError::new(field, format!("not an absolute URL: {e}")))?;
    // h2c: HTTP/2 without TLS (prior knowledge), as Tyk writes it for gRPC upstreams.
    if !matches!(url.scheme(), "http" | "https" | "h2c") {
        return Err(ValidationError::new(
            field,
            "scheme must be http, https or h2c",
        ));
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
    fn balanced_definitions_are_checked_target_by_target() {
        let lb = |extra: &str| {
            parse(&format!(
                r#"{{"api_id":"b","proxy":{{"listen_path":"/b/","target_url":"","enable_load_balancing":true{extra}}}}}"#
            ))
        };
        assert!(lb(r#","target_list":["http://a:1/","h2c://b:2/"]"#).is_ok());
        assert_eq!(lb("").unwrap_err().field, "proxy.target_list");
        assert_eq!(
            lb(r#","target_list":["http://a:1/","ftp://b/"]"#)
                .unwrap_err()
                .field,
            "proxy.target_list"
        );
        assert_eq!(
            lb(
                r#","target_list":["http://a/"],"service_discovery":{"use_discovery_service":true}"#
            )
            .unwrap_err()
            .field,
            "proxy.service_discovery.use_discovery_service"
        );
        let pinned = |list: &str| {
            parse(&format!(
                r#"{{"api_id":"b","pinned_public_keys":{{"*":"pin"}},"proxy":{{"listen_path":"/b/","target_url":"","enable_load_balancing":true,"target_list":{list}}}}}"#
            ))
        };
        assert!(pinned(r#"["https://a/","https://a:443/x"]"#).is_ok());
        assert_eq!(
            pinned(r#"["https://a/","https://b/"]"#).unwrap_err().field,
            "proxy.target_list"
        );
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
