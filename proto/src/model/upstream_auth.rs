//! How the gateway authenticates itself to an API's upstream: request signing
//! (`request_signing`), basic credentials and OAuth 2.0 grants (`upstream_auth`), and static
//! headers from the definition (docs/upstream-auth.md).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ValidationError;
use super::json::null_as_default;
use crate::sealed_field;

/// Algorithms the gateway signs upstream requests with (Tyk's names).
pub const SIGNING_ALGORITHMS: &[&str] = &[
    "hmac-sha1",
    "hmac-sha256",
    "hmac-sha384",
    "hmac-sha512",
    "rsa-sha256",
];
/// Grant names of `upstream_auth.oauth.allowed_authorize_types`.
pub const CLIENT_CREDENTIALS: &str = "clientCredentials";
pub const PASSWORD: &str = "password";

/// Longest secret (signing secret, password, client secret) before sealing.
const MAX_SECRET_BYTES: usize = 4096;
/// A sealed secret: base64 of the plaintext plus the envelope's nonce and tag.
const MAX_SEALED_BYTES: usize = 4 * MAX_SECRET_BYTES;
/// Key ids, user names, client ids.
const MAX_NAME_BYTES: usize = 1024;
const MAX_URL_BYTES: usize = 2048;
/// Entries of `header_list`, `scopes`, `extra_metadata`.
const MAX_LIST: usize = 64;
/// Entries of `global_headers` and `global_headers_remove`.
const MAX_HEADERS: usize = 128;
const MAX_HEADER_NAME_BYTES: usize = 256;
const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;

/// Header names a definition may not set or copy a token field into: they frame the request
/// or route it, and the proxy owns them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

/// The upstream-authentication settings of an API definition.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct UpstreamAuthSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub request_signing: RequestSigning,
    #[serde(default, deserialize_with = "null_as_default")]
    pub upstream_auth: UpstreamAuth,
    /// The client-signature allow-list; Tyk applies it to `request_signing.algorithm` too.
    #[serde(default, deserialize_with = "null_as_default")]
    hmac_allowed_algorithms: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    version_data: VersionData,
}

/// Tyk's `request_signing`: draft-cavage HTTP Signatures on the upstream request.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct RequestSigning {
    #[serde(default, deserialize_with = "null_as_default")]
    pub is_enabled: bool,
    /// The HMAC key (sealed at rest: `request_signing.secret`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub secret: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub key_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub algorithm: String,
    /// Headers to sign (`(request-target)` included); empty means every header sent.
    #[serde(default, deserialize_with = "null_as_default")]
    pub header_list: Vec<String>,
    /// Store id of the certificate whose private key signs `rsa-sha256`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub certificate_id: String,
    /// Where the signature goes; empty means `Authorization`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub signature_header: String,
}

/// Tyk's `upstream_auth`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct UpstreamAuth {
    #[serde(default, deserialize_with = "null_as_default")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub basic_auth: UpstreamBasic,
    #[serde(default, deserialize_with = "null_as_default")]
    pub oauth: UpstreamOAuth,
}

/// A header the credential goes to instead of `Authorization`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct AuthHeader {
    #[serde(default, deserialize_with = "null_as_default")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
}

impl AuthHeader {
    /// The header name used: the custom one when enabled, else `Authorization`.
    pub fn name(&self) -> &str {
        if self.enabled && !self.name.is_empty() {
            &self.name
        } else {
            "Authorization"
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct UpstreamBasic {
    #[serde(default, deserialize_with = "null_as_default")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub username: String,
    /// Sealed at rest: `upstream_auth.basic_auth.password`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub password: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub header: AuthHeader,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct UpstreamOAuth {
    #[serde(default, deserialize_with = "null_as_default")]
    pub enabled: bool,
    /// `clientCredentials` or `password`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub allowed_authorize_types: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub client_credentials: OAuthGrant,
    #[serde(default, deserialize_with = "null_as_default")]
    pub password: OAuthGrant,
}

/// One grant's settings; `username` and `password` only for the password grant.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct OAuthGrant {
    #[serde(default, deserialize_with = "null_as_default")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub client_id: String,
    /// Sealed at rest: `upstream_auth.oauth.<grant>.client_secret`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub client_secret: String,
    /// `client_secret_basic` (also for empty) or `client_secret_post`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub method: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub token_url: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub scopes: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub header: AuthHeader,
    /// Token-response fields sent to the upstream as headers of the same name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub extra_metadata: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub username: String,
    /// Sealed at rest: `upstream_auth.oauth.password.password`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub password: String,
}

/// Which grant the gateway runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    ClientCredentials,
    Password,
}

impl Grant {
    /// The field the grant's settings sit under (errors and sealing name it).
    pub fn field(self) -> &'static str {
        match self {
            Self::ClientCredentials => "upstream_auth.oauth.client_credentials",
            Self::Password => "upstream_auth.oauth.password",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
struct VersionData {
    #[serde(default, deserialize_with = "null_as_default")]
    not_versioned: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    default_version: String,
    #[serde(default, deserialize_with = "null_as_default")]
    versions: BTreeMap<String, VersionHeaders>,
}

/// The static headers of one version.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct VersionHeaders {
    #[serde(default, deserialize_with = "null_as_default")]
    pub global_headers: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub global_headers_remove: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub global_headers_disabled: bool,
}

impl UpstreamAuthSpec {
    /// The grant OAuth runs, when upstream OAuth is on (validated: exactly one).
    pub fn oauth_grant(&self) -> Option<Grant> {
        let ua = &self.upstream_auth;
        if !ua.enabled || !ua.oauth.enabled {
            return None;
        }
        let (cc, pw) = self.grants_selected();
        match (cc, pw) {
            (true, false) => Some(Grant::ClientCredentials),
            (false, true) => Some(Grant::Password),
            _ => None,
        }
    }

    fn grants_selected(&self) -> (bool, bool) {
        let o = &self.upstream_auth.oauth;
        if o.allowed_authorize_types.is_empty() {
            (o.client_credentials.enabled, o.password.enabled)
        } else {
            let has = |t: &str| o.allowed_authorize_types.iter().any(|a| a == t);
            (has(CLIENT_CREDENTIALS), has(PASSWORD))
        }
    }

    pub fn grant(&self, grant: Grant) -> &OAuthGrant {
        match grant {
            Grant::ClientCredentials => &self.upstream_auth.oauth.client_credentials,
            Grant::Password => &self.upstream_auth.oauth.password,
        }
    }

    /// True when upstream basic credentials are sent.
    pub fn basic_enabled(&self) -> bool {
        self.upstream_auth.enabled && self.upstream_auth.basic_auth.enabled
    }

    /// The static headers of the API's default version: `default_version`, else the version
    /// named `Default`, else the only (or first) one. Tyk reads the version of the request;
    /// Portcullis serves one version per API.
    pub fn static_headers(&self) -> Option<(&str, &VersionHeaders)> {
        let vd = &self.version_data;
        let pick = |name: &str| vd.versions.get_key_value(name);
        let found = (!vd.not_versioned && !vd.default_version.is_empty())
            .then(|| pick(&vd.default_version))
            .flatten()
            .or_else(|| pick("Default"))
            .or_else(|| vd.versions.iter().next());
        found
            .filter(|(_, v)| !v.global_headers_disabled)
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Store ids this view references (the request-signing certificate).
    pub fn certificate_refs(&self) -> impl Iterator<Item = &str> {
        let rs = &self.request_signing;
        (rs.is_enabled && !rs.certificate_id.is_empty())
            .then_some(rs.certificate_id.as_str())
            .into_iter()
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        self.validate_signing()?;
        self.validate_basic()?;
        self.validate_oauth()?;
        if let Some((name, v)) = self.static_headers() {
            validate_static_headers(name, v)?;
        }
        Ok(())
    }

    fn validate_signing(&self) -> Result<(), ValidationError> {
        let rs = &self.request_signing;
        if !rs.is_enabled {
            return Ok(());
        }
        let alg = rs.algorithm.as_str();
        if !SIGNING_ALGORITHMS.contains(&alg) {
            return Err(ValidationError::new(
                "request_signing.algorithm",
                format!("must be one of {}", SIGNING_ALGORITHMS.join(", ")),
            ));
        }
        if !self.hmac_allowed_algorithms.is_empty()
            && !self.hmac_allowed_algorithms.iter().any(|a| a == alg)
        {
            return Err(ValidationError::new(
                "request_signing.algorithm",
                "Request signing algorithm is not supported (not in hmac_allowed_algorithms)",
            ));
        }
        if rs.key_id.is_empty() {
            return Err(ValidationError::new(
                "request_signing.key_id",
                "Fields required for signing the request are missing",
            ));
        }
        // Quoted into the signature header: no quote, backslash or control character.
        if rs.key_id.len() > MAX_NAME_BYTES
            || rs
                .key_id
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(ValidationError::new(
                "request_signing.key_id",
                format!(
                    "must be at most {MAX_NAME_BYTES} bytes without quotes, backslashes or control characters"
                ),
            ));
        }
        if alg == "rsa-sha256" {
            if rs.certificate_id.is_empty() {
                return Err(ValidationError::new(
                    "request_signing.certificate_id",
                    "CertificateID is empty",
                ));
            }
            super::api_definition::certificate_id(
                "request_signing.certificate_id",
                &rs.certificate_id,
            )?;
        } else {
            if rs.secret.is_empty() {
                return Err(ValidationError::new(
                    "request_signing.secret",
                    "Fields required for signing the request are missing",
                ));
            }
            secret("request_signing.secret", &rs.secret)?;
        }
        if rs.header_list.len() > MAX_LIST {
            return Err(ValidationError::new(
                "request_signing.header_list",
                format!("at most {MAX_LIST} headers"),
            ));
        }
        for (i, h) in rs.header_list.iter().enumerate() {
            if h != "(request-target)" && !is_header_name(h) {
                return Err(ValidationError::new(
                    format!("request_signing.header_list[{i}]"),
                    "must be (request-target) or a valid HTTP header name",
                ));
            }
        }
        if !rs.signature_header.is_empty() {
            header_name("request_signing.signature_header", &rs.signature_header)?;
        }
        Ok(())
    }

    fn validate_basic(&self) -> Result<(), ValidationError> {
        if !self.basic_enabled() {
            return Ok(());
        }
        let b = &self.upstream_auth.basic_auth;
        let field = "upstream_auth.basic_auth.username";
        if b.username.is_empty() {
            return Err(ValidationError::new(field, "is required"));
        }
        if b.username.contains(':') || b.username.len() > MAX_NAME_BYTES {
            return Err(ValidationError::new(
                field,
                format!("must be at most {MAX_NAME_BYTES} bytes without a colon"),
            ));
        }
        secret("upstream_auth.basic_auth.password", &b.password)?;
        if b.header.enabled {
            header_name("upstream_auth.basic_auth.header.name", &b.header.name)?;
        }
        Ok(())
    }

    fn validate_oauth(&self) -> Result<(), ValidationError> {
        let ua = &self.upstream_auth;
        if !ua.enabled || !ua.oauth.enabled {
            return Ok(());
        }
        let types = "upstream_auth.oauth.allowed_authorize_types";
        for (i, t) in ua.oauth.allowed_authorize_types.iter().enumerate() {
            if t != CLIENT_CREDENTIALS && t != PASSWORD {
                return Err(ValidationError::new(
                    format!("{types}[{i}]"),
                    "must be clientCredentials or password",
                ));
            }
        }
        let grant = match self.grants_selected() {
            (true, true) => {
                return Err(ValidationError::new(
                    types,
                    "both client credentials and password authentication are provided",
                ));
            }
            (false, false) => {
                return Err(ValidationError::new(
                    types,
                    "must name one grant: clientCredentials or password",
                ));
            }
            (true, false) => Grant::ClientCredentials,
            (false, true) => Grant::Password,
        };
        if self.basic_enabled() {
            return Err(ValidationError::new(
                "upstream_auth.basic_auth.enabled",
                "basic credentials and OAuth cannot both be sent upstream",
            ));
        }
        let g = self.grant(grant);
        let f = |name: &str| format!("{}.{name}", grant.field());
        if g.client_id.is_empty() {
            return Err(ValidationError::new(f("client_id"), "is required"));
        }
        if g.client_id.len() > MAX_NAME_BYTES || g.client_id.chars().any(char::is_control) {
            return Err(ValidationError::new(
                f("client_id"),
                format!("must be at most {MAX_NAME_BYTES} bytes without control characters"),
            ));
        }
        if g.client_secret.is_empty() {
            return Err(ValidationError::new(f("client_secret"), "is required"));
        }
        secret(&f("client_secret"), &g.client_secret)?;
        if !matches!(
            g.method.as_str(),
            "" | "client_secret_basic" | "client_secret_post"
        ) {
            return Err(ValidationError::new(
                f("method"),
                "must be client_secret_basic or client_secret_post",
            ));
        }
        token_url(&f("token_url"), &g.token_url)?;
        if g.scopes.len() > MAX_LIST {
            return Err(ValidationError::new(
                f("scopes"),
                format!("at most {MAX_LIST} scopes"),
            ));
        }
        for (i, s) in g.scopes.iter().enumerate() {
            // RFC 6749 §3.3 scope-token.
            let ok = !s.is_empty()
                && s.len() <= MAX_HEADER_NAME_BYTES
                && s.bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
            if !ok {
                return Err(ValidationError::new(
                    format!("{}[{i}]", f("scopes")),
                    "must be an RFC 6749 scope token (printable ASCII without spaces, quotes or backslashes)",
                ));
            }
        }
        if g.header.enabled {
            header_name(&f("header.name"), &g.header.name)?;
        }
        if g.extra_metadata.len() > MAX_LIST {
            return Err(ValidationError::new(
                f("extra_metadata"),
                format!("at most {MAX_LIST} fields"),
            ));
        }
        for (i, m) in g.extra_metadata.iter().enumerate() {
            header_name(&format!("{}[{i}]", f("extra_metadata")), m)?;
        }
        if grant == Grant::Password {
            let user = f("username");
            if g.username.is_empty() {
                return Err(ValidationError::new(user, "is required"));
            }
            if g.username.len() > MAX_NAME_BYTES {
                return Err(ValidationError::new(
                    user,
                    format!("must be at most {MAX_NAME_BYTES} bytes"),
                ));
            }
            if g.password.is_empty() {
                return Err(ValidationError::new(f("password"), "is required"));
            }
            secret(&f("password"), &g.password)?;
        }
        Ok(())
    }
}

fn validate_static_headers(version: &str, v: &VersionHeaders) -> Result<(), ValidationError> {
    let base = format!("version_data.versions.{version}");
    if v.global_headers.len() > MAX_HEADERS || v.global_headers_remove.len() > MAX_HEADERS {
        return Err(ValidationError::new(
            format!("{base}.global_headers"),
            format!("at most {MAX_HEADERS} headers to set and {MAX_HEADERS} to remove"),
        ));
    }
    for (name, value) in &v.global_headers {
        let field = format!("{base}.global_headers.{name}");
        header_name(&field, name)?;
        // Tyk substitutes these from the request context or a secret store; sent literally
        // they would leak the template upstream, so they are refused.
        if value.contains("$tyk_") || value.contains("$secret_") {
            return Err(ValidationError::new(
                field,
                "context, meta-data and secret variables are not supported; give the literal value",
            ));
        }
        let ok = value.len() <= MAX_HEADER_VALUE_BYTES
            && value
                .bytes()
                .all(|b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80);
        if !ok {
            return Err(ValidationError::new(
                field,
                format!(
                    "must be a header value of at most {MAX_HEADER_VALUE_BYTES} bytes without control characters"
                ),
            ));
        }
    }
    for (i, name) in v.global_headers_remove.iter().enumerate() {
        // Removing Host or a framing header would change how the upstream reads the request.
        header_name(&format!("{base}.global_headers_remove[{i}]"), name)?;
    }
    Ok(())
}

/// An RFC 9110 token of bounded length.
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_HEADER_NAME_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header the gateway writes: a valid name that the proxy does not own.
fn header_name(field: &str, name: &str) -> Result<(), ValidationError> {
    if !is_header_name(name) {
        return Err(ValidationError::new(
            field,
            "must be a valid HTTP header name",
        ));
    }
    if RESERVED_HEADERS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
    {
        return Err(ValidationError::new(
            field,
            "names a header the proxy sets itself (Host, framing or hop-by-hop headers)",
        ));
    }
    Ok(())
}

fn secret(field: &str, value: &str) -> Result<(), ValidationError> {
    let max = if sealed_field::is_sealed(value) {
        MAX_SEALED_BYTES
    } else {
        MAX_SECRET_BYTES
    };
    if value.len() > max {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_SECRET_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn token_url(field: &str, url: &str) -> Result<(), ValidationError> {
    if url.is_empty() {
        return Err(ValidationError::new(field, "is required"));
    }
    if url.len() > MAX_URL_BYTES {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_URL_BYTES} bytes"),
        ));
    }
    let parsed = url::Url::parse(url)
        .map_err(|e| ValidationError::new(field, format!("not an absolute URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ValidationError::new(field, "scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ValidationError::new(field, "has no host"));
    }
    // Credentials in the URL would reach logs; the client id and secret have fields.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ValidationError::new(field, "must not carry credentials"));
    }
    if parsed.fragment().is_some() {
        return Err(ValidationError::new(field, "must not have a fragment"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::model::ApiDefinition;

    fn parse(extra: Value) -> Result<ApiDefinition, crate::model::ValidationError> {
        let mut body = json!({
            "api_id": "ua", "name": "ua", "use_keyless": true,
            "proxy": {"listen_path": "/ua/", "target_url": "http://127.0.0.1:1"},
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        ApiDefinition::parse(body.to_string().as_bytes())
    }

    fn field(extra: Value) -> String {
        parse(extra).unwrap_err().field
    }

    fn oauth(grant: Value) -> Value {
        json!({"upstream_auth": {"enabled": true, "oauth": grant}})
    }

    #[test]
    fn request_signing_is_checked() {
        let ok = json!({"request_signing": {"is_enabled": true, "secret": "s", "key_id": "k",
            "algorithm": "hmac-sha256", "header_list": ["(request-target)", "date"]}});
        parse(ok).unwrap();
        let sign = |rs: Value| json!({"request_signing": rs});
        assert_eq!(
            field(sign(
                json!({"is_enabled": true, "secret": "s", "key_id": "k", "algorithm": "hmac-md5"})
            )),
            "request_signing.algorithm"
        );
        assert_eq!(
            field(sign(
                json!({"is_enabled": true, "key_id": "k", "algorithm": "hmac-sha1"})
            )),
            "request_signing.secret"
        );
        assert_eq!(
            field(sign(
                json!({"is_enabled": true, "key_id": "k", "algorithm": "rsa-sha256"})
            )),
            "request_signing.certificate_id"
        );
        assert_eq!(
            field(sign(
                json!({"is_enabled": true, "secret": "s", "key_id": "a\"b", "algorithm": "hmac-sha1"})
            )),
            "request_signing.key_id"
        );
        assert_eq!(
            field(sign(
                json!({"is_enabled": true, "secret": "s", "key_id": "k", "algorithm": "hmac-sha1",
                "header_list": ["date", "bad header"]})
            )),
            "request_signing.header_list[1]"
        );
        assert_eq!(
            field(sign(
                json!({"is_enabled": true, "secret": "s", "key_id": "k", "algorithm": "hmac-sha1",
                "signature_header": "Host"})
            )),
            "request_signing.signature_header"
        );
        let mut allow = sign(
            json!({"is_enabled": true, "secret": "s", "key_id": "k", "algorithm": "hmac-sha1"}),
        );
        allow["hmac_allowed_algorithms"] = json!(["hmac-sha256"]);
        assert_eq!(field(allow), "request_signing.algorithm");
        // Disabled: nothing is checked.
        parse(sign(json!({"is_enabled": false, "algorithm": "nope"}))).unwrap();
        let rsa = parse(sign(
            json!({"is_enabled": true, "key_id": "k", "algorithm": "rsa-sha256",
            "certificate_id": "org1abc"}),
        ))
        .unwrap();
        assert_eq!(rsa.certificate_refs().collect::<Vec<_>>(), ["org1abc"]);
    }

    #[test]
    fn basic_and_oauth_are_checked() {
        let basic = |b: Value| json!({"upstream_auth": {"enabled": true, "basic_auth": b}});
        parse(basic(
            json!({"enabled": true, "username": "u", "password": "p",
            "header": {"enabled": true, "name": "X-Upstream-Auth"}}),
        ))
        .unwrap();
        assert_eq!(
            field(basic(
                json!({"enabled": true, "username": "a:b", "password": "p"})
            )),
            "upstream_auth.basic_auth.username"
        );
        assert_eq!(
            field(basic(
                json!({"enabled": true, "username": "u", "password": "p",
                "header": {"enabled": true, "name": "Content-Length"}})
            )),
            "upstream_auth.basic_auth.header.name"
        );
        let cc = json!({"enabled": true, "allowed_authorize_types": ["clientCredentials"],
            "client_credentials": {"client_id": "c", "client_secret": "s",
                "token_url": "https://idp.example/token", "scopes": ["read", "write"],
                "extra_metadata": ["instance_url"]}});
        let def = parse(oauth(cc.clone())).unwrap();
        assert_eq!(
            def.upstream_auth().oauth_grant(),
            Some(super::Grant::ClientCredentials)
        );
        let mut bad = cc.clone();
        bad["client_credentials"]["token_url"] = json!("ftp://idp.example/token");
        assert_eq!(
            field(oauth(bad)),
            "upstream_auth.oauth.client_credentials.token_url"
        );
        let mut bad = cc.clone();
        bad["client_credentials"]["token_url"] = json!("https://u:p@idp.example/token");
        assert_eq!(
            field(oauth(bad)),
            "upstream_auth.oauth.client_credentials.token_url"
        );
        let mut bad = cc.clone();
        bad["client_credentials"]["scopes"] = json!(["a b"]);
        assert_eq!(
            field(oauth(bad)),
            "upstream_auth.oauth.client_credentials.scopes[0]"
        );
        let mut bad = cc.clone();
        bad["client_credentials"]["method"] = json!("private_key_jwt");
        assert_eq!(
            field(oauth(bad)),
            "upstream_auth.oauth.client_credentials.method"
        );
        let mut both = cc.clone();
        both["allowed_authorize_types"] = json!(["clientCredentials", "password"]);
        assert_eq!(
            field(oauth(both)),
            "upstream_auth.oauth.allowed_authorize_types"
        );
        let pw = json!({"enabled": true, "allowed_authorize_types": ["password"],
            "password": {"client_id": "c", "client_secret": "s", "username": "u",
                "token_url": "http://127.0.0.1:9/token"}});
        assert_eq!(
            field(oauth(pw.clone())),
            "upstream_auth.oauth.password.password"
        );
        let mut pw = pw;
        pw["password"]["password"] = json!("pw");
        let def = parse(oauth(pw)).unwrap();
        assert_eq!(
            def.upstream_auth().oauth_grant(),
            Some(super::Grant::Password)
        );
    }

    #[test]
    fn static_headers_come_from_the_default_version() {
        let vd = |v: Value| json!({"version_data": v});
        let def = parse(vd(json!({"not_versioned": true, "versions": {"Default": {
            "global_headers": {"X-Static": "1"}, "global_headers_remove": ["X-Drop"]}}})))
        .unwrap();
        let (name, h) = def.upstream_auth().static_headers().unwrap();
        assert_eq!(name, "Default");
        assert_eq!(h.global_headers["X-Static"], "1");
        let def = parse(vd(json!({"default_version": "v2", "versions": {
            "v1": {"global_headers": {"X-V": "1"}}, "v2": {"global_headers": {"X-V": "2"}}}})))
        .unwrap();
        assert_eq!(
            def.upstream_auth()
                .static_headers()
                .unwrap()
                .1
                .global_headers["X-V"],
            "2"
        );
        assert_eq!(
            field(vd(
                json!({"versions": {"Default": {"global_headers": {"X-A": "$tyk_context.x"}}}})
            )),
            "version_data.versions.Default.global_headers.X-A"
        );
        assert_eq!(
            field(vd(
                json!({"versions": {"Default": {"global_headers": {"X-A": "a\r\nb"}}}})
            )),
            "version_data.versions.Default.global_headers.X-A"
        );
        assert_eq!(
            field(vd(
                json!({"versions": {"Default": {"global_headers": {"Host": "x"}}}})
            )),
            "version_data.versions.Default.global_headers.Host"
        );
    }
}
