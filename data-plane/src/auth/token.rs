//! Auth token (Tyk "standard auth"): a key in a header (`Bearer ` prefix accepted), a query
//! parameter or a cookie.

use std::borrow::Cow;

use http::HeaderName;
use http::request::Parts;
use portcullis_proto::model::AuthTokenSpec;

use super::AuthMethod;
use crate::error::ProxyError;

#[derive(Debug)]
pub struct TokenAuth {
    header: HeaderName,
    param: Option<String>,
    cookie: Option<String>,
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
        })
    }
}

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

#[async_trait::async_trait]
impl AuthMethod for TokenAuth {
    fn credential<'a>(&self, parts: &'a Parts) -> Result<Cow<'a, str>, ProxyError> {
        self.find(parts).ok_or(ProxyError::AuthMissing)
    }

    fn strip(&self, parts: &mut Parts) {
        parts.headers.remove(&self.header);
        // Query parameters and cookies are left as sent: rewriting them is a later change.
    }
}

impl TokenAuth {
    fn find<'a>(&self, parts: &'a Parts) -> Option<Cow<'a, str>> {
        if let Some(v) = parts
            .headers
            .get(&self.header)
            .and_then(|v| v.to_str().ok())
        {
            let key = strip_bearer(v);
            if !key.is_empty() {
                return Some(Cow::Borrowed(key));
            }
        }
        if let (Some(name), Some(query)) = (&self.param, parts.uri.query())
            && let Some(v) = from_query(query, name).filter(|v| !v.is_empty())
        {
            return Some(v);
        }
        if let Some(name) = &self.cookie {
            for header in parts.headers.get_all(http::header::COOKIE) {
                let Ok(text) = header.to_str() else { continue };
                for pair in text.split(';') {
                    if let Some((k, v)) = pair.trim().split_once('=')
                        && k == name
                        && !v.is_empty()
                    {
                        return Some(Cow::Borrowed(v));
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn header_bearer_param_and_cookie() {
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
        assert_eq!(t.find(&parts("/", &[("authorization", "Bearer ")])), None);
        let plain = TokenAuth::new(&AuthTokenSpec::default()).unwrap();
        assert_eq!(
            plain.find(&parts("/?Authorization=abc", &[])),
            None,
            "query only when use_param"
        );
    }
}
