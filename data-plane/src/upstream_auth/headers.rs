//! Static headers of the API's default version (`global_headers`, `global_headers_remove`):
//! removed, then set, as Tyk's header transform does, before the credentials are added.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use portcullis_proto::model::{ApiDefinition, ValidationError};

#[derive(Debug)]
pub(super) struct StaticHeaders {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
}

impl StaticHeaders {
    pub(super) fn of(def: &ApiDefinition) -> Result<Option<Self>, ValidationError> {
        let Some((version, v)) = def.upstream_auth().static_headers() else {
            return Ok(None);
        };
        if v.global_headers.is_empty() && v.global_headers_remove.is_empty() {
            return Ok(None);
        }
        let base = format!("version_data.versions.{version}");
        let name = |field: String, n: &str| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| ValidationError::new(field, "must be a valid HTTP header name"))
        };
        let mut remove = Vec::with_capacity(v.global_headers_remove.len());
        for (i, n) in v.global_headers_remove.iter().enumerate() {
            remove.push(name(format!("{base}.global_headers_remove[{i}]"), n)?);
        }
        let mut set = Vec::with_capacity(v.global_headers.len());
        for (n, value) in &v.global_headers {
            let field = format!("{base}.global_headers.{n}");
            let value = HeaderValue::from_bytes(value.as_bytes())
                .map_err(|_| ValidationError::new(&field, "must be a valid header value"))?;
            set.push((name(field, n)?, value));
        }
        Ok(Some(Self { remove, set }))
    }

    pub(super) fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
    }
}
