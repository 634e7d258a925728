//! A plugin's own answer to a request (Tyk's `return_overrides`): the client receives the
//! plugin's status, headers and body instead of the upstream's.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// Headers a plugin may put on its answer; more are dropped.
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    /// What the error says (logs, `Display`); the body for error answers.
    pub message: String,
    /// Sent as is (`override_error`, or a code below 400) instead of `{"error": message}`.
    pub raw: Option<Bytes>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Answer {
    /// An answer in the gateway's error format.
    pub fn error(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            raw: None,
            headers: Vec::new(),
        }
    }

    /// Adds the plugin's headers, skipping any that are not valid HTTP.
    pub fn with_headers<'a>(mut self, headers: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        for (name, value) in headers.take(MAX_HEADERS) {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                // The body's framing is the gateway's to set.
                (Ok(n), Ok(_))
                    if crate::auth::methods::coprocess::FRAMING.contains(&n.as_str()) =>
                {
                    tracing::debug!(
                        header = name,
                        "a plugin's answer may not set framing headers"
                    );
                }
                (Ok(n), Ok(v)) => self.headers.push((n, v)),
                _ => tracing::debug!(header = name, "a plugin's answer header is not valid HTTP"),
            }
        }
        self
    }

    pub fn response(&self) -> Response<Full<Bytes>> {
        let body = match &self.raw {
            Some(raw) => raw.clone(),
            None => Bytes::from(format!(
                "{{\n    \"error\": {}\n}}",
                serde_json::Value::String(self.message.clone())
            )),
        };
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        if self.raw.is_none() {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        for (name, value) in &self.headers {
            h.insert(name.clone(), value.clone());
        }
        resp
    }
}
