//! Auth token (Tyk "standard auth"): a key in a header (`Bearer ` prefix accepted), a query
//! parameter or a cookie, optionally with a Mashery-style request signature.
//!
//! As in Tyk, a non-empty later source overrides an earlier one (header, then query parameter,
//! then cookie), and keys shorter than three characters are treated as unknown.

use std::borrow::Cow;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderName, StatusCode};
use md5::Md5;
use portcullis_proto::model::{AuthTokenSpec, SignatureSpec, ValidationError};
use portcullis_proto::sealed_field;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AuthMethod;
use crate::auth::context::RequestContext;
use crate::auth::identity::{Identity, Provider};
use crate::error::ProxyError;
use crate::sessions::Session;

const MIN_TOKEN_LENGTH: usize = 3;

/// Installs the key for `--encryption-secret`; called once at start.
pub fn set_stored_secret_key(encryption_secret: &str) {
    crate::auth::stored_secrets::set_key(encryption_secret);
}

/// `spec` with a sealed signature secret opened for `api_id`. A value that does not open
/// refuses the whole definition (the edge NACKs it) rather than serving it with a wrong secret.
pub fn open_signature_secret<'a>(
    api_id: &str,
    spec: &'a AuthTokenSpec,
) -> Result<Cow<'a, AuthTokenSpec>, ValidationError> {
    let secret = &spec.signature.secret;
    if !sealed_field::is_sealed(secret) {
        return Ok(Cow::Borrowed(spec));
    }
    let opened = crate::auth::stored_secrets::open(api_id, sealed_field::SIGNATURE_SECRET, secret)?;
    let mut spec = spec.clone();
    spec.signature.secret = opened;
    Ok(Cow::Owned(spec))
}

#[derive(Debug)]
pub struct TokenAuth {
    header: HeaderName,
    param: Option<String>,
    cookie: Option<String>,
    signature: Option<Signature>,
}

struct Signature {
    sha256: bool,
    header: Option<HeaderName>,
    param: Option<String>,
    secret: String,
    skew: i64,
    error: ProxyError,
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret: routes are debug-printed.
        f.debug_struct("Signature")
            .field("sha256", &self.sha256)
            .field("header", &self.header)
            .field("skew", &self.skew)
            .finish_non_exhaustive()
    }
}

impl Signature {
    fn new(spec: &SignatureSpec) -> Self {
        let status = StatusCode::from_u16(spec.error_code)
            .ok()
            .filter(|s| s.as_u16() >= 400)
            .unwrap_or(StatusCode::UNAUTHORIZED);
        let message = if spec.error_message.is_empty() {
            "Request signature verification failed"
        } else {
            &spec.error_message
        };
        Self {
            sha256: spec.algorithm == "MasherySHA256",
            header: HeaderName::from_bytes(spec.header.as_bytes()).ok(),
            param: spec.use_param.then(|| {
                if spec.param_name.is_empty() {
                    spec.header.clone()
                } else {
                    spec.param_name.clone()
                }
            }),
            secret: spec.secret.clone(),
            // Bounded at validation too: each request computes 2 * skew + 1 digests.
            skew: spec
                .allowed_clock_skew
                .clamp(0, portcullis_proto::model::bounds::MAX_CLOCK_SKEW_SECS),
            error: ProxyError::Signature {
                status,
                message: Arc::from(message),
            },
        }
    }

    fn presented<'a>(&self, parts: &'a Parts) -> Option<Cow<'a, str>> {
        if let (Some(name), Some(query)) = (&self.param, parts.uri.query())
            && let Some(v) = from_query(query, name).filter(|v| !v.is_empty())
        {
            return Some(v);
        }
        let header = self.header.as_ref()?;
        parts
            .headers
            .get(header)
            .and_then(|v| v.to_str().ok())
            .map(|v| Cow::Borrowed(v.trim()))
    }

    fn digest(&self, key: &str, secret: &str, t: i64) -> String {
        let input = format!("{key}{secret}{t}");
        if self.sha256 {
            hex::encode(Sha256::digest(input.as_bytes()))
        } else {
            hex::encode(Md5::digest(input.as_bytes()))
        }
    }

    /// `hex(hash(key + secret + t))` for any second `t` within the allowed skew of now.
    fn verify(&self, parts: &Parts, key: &str, session: &Session) -> Result<(), ProxyError> {
        let presented = self
            .presented(parts)
            .ok_or_else(|| self.error.clone())?
            .to_ascii_lowercase();
        let secret = match self.secret.strip_prefix("$tyk_meta.") {
            Some(field) => session
                .state
                .spec()
                .meta_data
                .get(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned(),
            None => self.secret.clone(),
        };
        if secret.is_empty() {
            return Err(self.error.clone());
        }
        // Tyk also tries the key without its org prefix.
        let org = &session.state.spec().org_id;
        let mut keys = vec![key];
        if let Some(stripped) = key
            .strip_prefix(org.as_str())
            .filter(|s| !org.is_empty() && !s.is_empty())
        {
            keys.push(stripped);
        }
        let now = chrono::Utc::now().timestamp();
        let mut ok = false;
        for k in keys {
            for t in now - self.skew..=now + self.skew {
                ok |= bool::from(
                    self.digest(k, &secret, t)
                        .as_bytes()
                        .ct_eq(presented.as_bytes()),
                );
            }
        }
        if ok { Ok(()) } else { Err(self.error.clone()) }
    }
}

impl TokenAuth {
    pub fn new(spec: &AuthTokenSpec) -> Option<Self> {
        let header = HeaderName::from_bytes(spec.auth_header_name.as_bytes()).ok()?;
        let or_header = |name: &str| {
            if name.is_empty() {
                spec.auth_header_name.clone()
            } else {
                name.to_owned()
            }
        };
        Some(Self {
            header,
            param: spec.use_param.then(|| or_header(&spec.param_name)),
            cookie: spec.use_cookie.then(|| or_header(&spec.cookie_name)),
            signature: spec
                .validate_signature
                .then(|| Signature::new(&spec.signature)),
        })
    }

    /// The key presented, or the answer for a missing or too short one. (`body` is unused:
    /// the same shape as basic auth's, for the fuzz targets.)
    pub fn credential<'a>(
        &self,
        parts: &'a Parts,
        _body: Option<&'a [u8]>,
    ) -> Result<Cow<'a, str>, ProxyError> {
        match self.find(parts) {
            Some(k) if k.len() < MIN_TOKEN_LENGTH => Err(ProxyError::Disallowed),
            Some(k) => Ok(k),
            None => Err(ProxyError::AuthMissing),
        }
    }

    /// The Mashery signature check, when the API asks for one, for the key this request presents.
    pub fn verify_signature(&self, parts: &Parts, session: &Session) -> Result<(), ProxyError> {
        match &self.signature {
            Some(sig) => {
                let key = self.find(parts).ok_or(ProxyError::AuthMissing)?;
                sig.verify(parts, &key, session)
            }
            None => Ok(()),
        }
    }

    /// Reads a token from the places `spec` names (header with `Bearer ` stripped, query
    /// parameter, cookie) without any check of its own: the JWT and OpenID methods use it.
    pub fn reader(spec: &AuthTokenSpec) -> Option<Self> {
        let mut plain = spec.clone();
        plain.validate_signature = false;
        Self::new(&plain)
    }

    /// The header the token is read from.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The token presented, as Tyk finds it: a non-empty later source overrides an earlier one.
    pub fn find<'a>(&self, parts: &'a Parts) -> Option<Cow<'a, str>> {
        let mut found = None;
        if let Some(v) = parts
            .headers
            .get(&self.header)
            .and_then(|v| v.to_str().ok())
        {
            let key = strip_bearer(v);
            if !key.is_empty() {
                found = Some(Cow::Borrowed(key));
            }
        }
        if let (Some(name), Some(query)) = (&self.param, parts.uri.query())
            && let Some(v) = from_query(query, name).filter(|v| !v.is_empty())
        {
            found = Some(v);
        }
        if let Some(name) = &self.cookie {
            for header in parts.headers.get_all(http::header::COOKIE) {
                let Ok(text) = header.to_str() else { continue };
                for pair in text.split(';') {
                    if let Some((k, v)) = pair.trim().split_once('=')
                        && k == name
                        && !v.is_empty()
                    {
                        found = Some(Cow::Borrowed(v));
                    }
                }
            }
        }
        found
    }
}

/// Strips a `Bearer ` prefix (case-insensitive, as Tyk).
fn strip_bearer(v: &str) -> &str {
    let v = v.trim();
    match (v.get(..6), v.as_bytes().get(6)) {
        (Some(p), None) if p.eq_ignore_ascii_case("bearer") => "",
        (Some(p), Some(b' ' | b'\t')) if p.eq_ignore_ascii_case("bearer") => v[7..].trim_start(),
        _ => v,
    }
}

fn from_query<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The URI without the query parameter `name` (`None` when it is not there).
fn without_query_param(uri: &http::Uri, query: &str, name: &str) -> Option<http::Uri> {
    let pairs: Vec<&str> = query.split('&').collect();
    let kept: Vec<&str> = pairs
        .iter()
        .copied()
        .filter(|p| {
            let k = p.split_once('=').map_or(*p, |(k, _)| k);
            url::form_urlencoded::parse(k.as_bytes())
                .next()
                .is_none_or(|(k, _)| k != name)
        })
        .collect();
    if kept.len() == pairs.len() {
        return None;
    }
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    http::Uri::from_parts(parts).ok()
}

/// Removes the cookie `name` from every `Cookie` header, dropping headers left empty.
fn strip_cookie(headers: &mut http::HeaderMap, name: &str) {
    let values: Vec<String> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    if values.is_empty() {
        return;
    }
    headers.remove(http::header::COOKIE);
    for v in values {
        let kept: Vec<&str> = v
            .split(';')
            .map(str::trim)
            .filter(|c| c.split_once('=').is_none_or(|(k, _)| k != name))
            .collect();
        if !kept.is_empty()
            && let Ok(value) = http::HeaderValue::from_str(&kept.join("; "))
        {
            headers.append(http::header::COOKIE, value);
        }
    }
}

#[async_trait::async_trait]
impl AuthMethod for TokenAuth {
    fn provider(&self) -> Provider {
        Provider::AuthToken
    }

    fn presented(&self, ctx: &RequestContext<'_>) -> bool {
        self.credential(ctx.parts, None).is_ok()
    }

    async fn authenticate(&self, ctx: &RequestContext<'_>) -> Result<Identity, ProxyError> {
        let key = self.credential(ctx.parts, None)?;
        let identity = ctx
            .stored_key(&key, Provider::AuthToken, ProxyError::Disallowed)
            .await?;
        self.verify_signature(ctx.parts, &identity.session)?;
        Ok(identity)
    }

    fn strip(&self, parts: &mut Parts) {
        parts.headers.remove(&self.header);
        if let (Some(name), Some(query)) = (&self.param, parts.uri.query())
            && let Some(uri) = without_query_param(&parts.uri, query, name)
        {
            parts.uri = uri;
        }
        if let Some(name) = &self.cookie {
            strip_cookie(&mut parts.headers, name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_signature_secret_opens_only_for_its_api_and_otherwise_refuses_the_route() {
        use crate::router::Route;
        use portcullis_proto::model::ApiDefinition;
        const SECRET: &str = "edge-test-encryption-secret-0123456789";
        set_stored_secret_key(SECRET);
        let key = sealed_field::key(SECRET);
        let def = |api_id: &str, secret: &str| {
            let body = serde_json::json!({
                "api_id": api_id, "name": api_id,
                "proxy": {"listen_path": format!("/{api_id}/"), "target_url": "http://127.0.0.1:1"},
                "auth": {"validate_signature": true, "signature": {
                    "algorithm": "MasherySHA256", "header": "X-Signature", "secret": secret,
                }},
            });
            ApiDefinition::parse(body.to_string().as_bytes()).unwrap()
        };
        let sealed = sealed_field::seal(&key, "a", sealed_field::SIGNATURE_SECRET, "plain");
        let def_a = def("a", &sealed);
        let opened = open_signature_secret("a", &def_a.spec().auth).unwrap();
        assert_eq!(opened.signature.secret, "plain");
        assert!(Route::from_definition(&def("a", &sealed)).is_ok());
        let err = Route::from_definition(&def("b", &sealed)).unwrap_err();
        assert_eq!(err.field, sealed_field::SIGNATURE_SECRET);
        assert!(err.to_string().contains("--encryption-secret"), "{err}");
        let other = sealed_field::seal(
            &sealed_field::key("another-encryption-secret-of-32-bytes"),
            "a",
            sealed_field::SIGNATURE_SECRET,
            "plain",
        );
        assert!(Route::from_definition(&def("a", &other)).is_err());
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn header_bearer_param_and_cookie_later_sources_win() {
        let spec = AuthTokenSpec {
            use_param: true,
            use_cookie: true,
            cookie_name: "session".into(),
            ..AuthTokenSpec::default()
        };
        let t = TokenAuth::new(&spec).unwrap();
        assert_eq!(
            t.find(&parts("/", &[("authorization", "abc")])).as_deref(),
            Some("abc")
        );
        assert_eq!(
            t.find(&parts("/", &[("Authorization", "Bearer  xyz")]))
                .as_deref(),
            Some("xyz")
        );
        assert_eq!(
            t.find(&parts("/?a=1&Authorization=k%2B1", &[])).as_deref(),
            Some("k+1")
        );
        assert_eq!(
            t.find(&parts("/", &[("cookie", "a=1; session=ck")]))
                .as_deref(),
            Some("ck")
        );
        assert_eq!(
            t.find(&parts("/?Authorization=q", &[("authorization", "h")]))
                .as_deref(),
            Some("q"),
            "param overrides header"
        );
        assert_eq!(
            t.find(&parts("/?Authorization=q", &[("cookie", "session=c")]))
                .as_deref(),
            Some("c"),
            "cookie overrides param"
        );
        assert_eq!(t.find(&parts("/", &[("authorization", "Bearer ")])), None);
        let plain = TokenAuth::new(&AuthTokenSpec::default()).unwrap();
        assert_eq!(
            plain.find(&parts("/?Authorization=abc", &[])),
            None,
            "query only when use_param"
        );
        assert_eq!(
            plain.credential(&parts("/", &[("authorization", "ab")]), None),
            Err(ProxyError::Disallowed),
            "too short"
        );
    }

    #[test]
    fn strip_removes_header_param_and_cookie_only() {
        let spec = AuthTokenSpec {
            use_param: true,
            param_name: "key".into(),
            use_cookie: true,
            cookie_name: "k".into(),
            ..AuthTokenSpec::default()
        };
        let t = TokenAuth::new(&spec).unwrap();
        let mut p = parts(
            "/a?x=1&key=secret&y=2",
            &[("authorization", "secret"), ("cookie", "k=secret; other=1")],
        );
        t.strip(&mut p);
        assert_eq!(p.uri.to_string(), "/a?x=1&y=2");
        assert!(p.headers.get("authorization").is_none());
        assert_eq!(p.headers["cookie"], "other=1");
        let mut only = parts("/a?key=s", &[("cookie", "k=s")]);
        t.strip(&mut only);
        assert_eq!(only.uri.to_string(), "/a");
        assert!(only.headers.get("cookie").is_none());
    }

    #[test]
    fn mashery_digests_match_coreutils() {
        let sig = Signature::new(&SignatureSpec {
            algorithm: "MasherySHA256".into(),
            header: "x-sig".into(),
            secret: "s".into(),
            ..Default::default()
        });
        // printf 'keys1700000000' | sha256sum
        assert_eq!(
            sig.digest("key", "s", 1_700_000_000),
            "e8f06f0c037874432502cd0d4dd9e7f3013a6650593d79d91bcd90b6dd59372c"
        );
        let md5 = Signature::new(&SignatureSpec {
            algorithm: "MasheryMD5".into(),
            header: "x-sig".into(),
            secret: "s".into(),
            ..Default::default()
        });
        // printf 'keys1700000000' | md5sum
        assert_eq!(
            md5.digest("key", "s", 1_700_000_000),
            "31ca4a8d3a4972104739114a2b4d66cb"
        );
    }
}
