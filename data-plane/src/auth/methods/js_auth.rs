//! Tyk's JavaScript auth middleware (`custom_middleware.driver: otto`): the script named by
//! `auth_check` sees the request as Tyk's `MiniRequestObject`, and either refuses it (return
//! overrides) or returns the session the request runs under (docs/plugins-js.md).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use http::request::Parts;
use http::{HeaderName, HeaderValue, StatusCode};
use portcullis_proto::model::{
    ApiDefinition, SessionState, TOKEN_ORIGIN_FIELD, TOKENS_AFTER_FIELD, ValidationError,
};
use serde_json::{Map, Value, json};

use super::AuthMethod;
use crate::auth::context::RequestContext;
use crate::auth::identity::{Identity, Provider, Source};
use crate::error::ProxyError;
use crate::plugins::js::{Call, JsError, Reply, script};
use crate::sessions::Session;

/// What Tyk passes as the session to an auth middleware: an empty one (no key is known yet).
const EMPTY_SESSION: &str = r#"{"allowance":0,"rate":0,"per":0,"expires":0,"quota_max":0,
"quota_renews":0,"quota_remaining":0,"quota_renewal_rate":0,"access_rights":{},"org_id":"",
"meta_data":{},"tags":[],"alias":"","apply_policies":[]}"#;

/// Headers a script may not set or delete: they frame the request to the upstream, and the
/// gateway sets them itself.
const FRAMING: &[&str] = &[
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

#[derive(Debug)]
pub struct JsAuth {
    api_id: Arc<str>,
    org_id: String,
    api_name: String,
    name: Arc<str>,
    path: Arc<str>,
    /// `{"OrgID", "APIID", "config_data"}`: Tyk's third argument.
    spec: Arc<str>,
    /// Off with `auth_check.raw_body_only`: the script then sees an empty `Body` and the
    /// request body is streamed, not buffered.
    read_body: bool,
}

/// A JavaScript identifier: what `auth_check.name` must be to name a global object.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && name.len() <= 128
}

impl JsAuth {
    pub fn new(def: &ApiDefinition) -> Result<Self, ValidationError> {
        let check = &def.plugins().custom_middleware.auth_check;
        if !is_identifier(&check.name) {
            return Err(ValidationError::new(
                "custom_middleware.auth_check.name",
                "must name the script's middleware object (a JavaScript identifier)",
            ));
        }
        script::check_relative(&check.path)
            .map_err(|why| ValidationError::new("custom_middleware.auth_check.path", why))?;
        let spec = def.spec();
        let raw = def.to_value();
        let mut tyk_spec = json!({"OrgID": spec.org_id, "APIID": spec.api_id});
        if raw.get("config_data_disabled").and_then(Value::as_bool) != Some(true) {
            tyk_spec["config_data"] = raw
                .get("config_data")
                .filter(|v| !v.is_null())
                .cloned()
                .unwrap_or_else(|| json!({}));
        }
        Ok(Self {
            api_id: spec.api_id.as_str().into(),
            org_id: spec.org_id.clone(),
            api_name: spec.name.clone(),
            name: check.name.as_str().into(),
            path: check.path.as_str().into(),
            spec: tyk_spec.to_string().into(),
            read_body: !check.raw_body_only,
        })
    }

    fn call(&self, ctx: &RequestContext<'_>) -> Call {
        let body = match (self.read_body, ctx.body) {
            (true, Some(body)) => String::from_utf8_lossy(body).into_owned(),
            _ => String::new(),
        };
        Call {
            api_id: self.api_id.clone(),
            path: self.path.clone(),
            name: self.name.clone(),
            request: mini_request(ctx.parts, ctx.conn.tls.is_some(), body).to_string(),
            session: EMPTY_SESSION.into(),
            spec: self.spec.clone(),
        }
    }

    /// The session the script returned, made safe to run a request under.
    fn identity(&self, session: Map<String, Value>, auth_value: &str) -> Result<Identity, JsError> {
        let mut session = session;
        // Marks only the control plane sets; a script cannot make a token session.
        session.remove(TOKEN_ORIGIN_FIELD);
        session.remove(TOKENS_AFTER_FIELD);
        // As Tyk does for plugin sessions: the API's organisation, whatever the script says.
        session.insert("org_id".into(), Value::String(self.org_id.clone()));
        let key = if auth_value.is_empty() {
            session
                .get("meta_data")
                .and_then(|m| m.get("token"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        } else {
            auth_value.to_owned()
        };
        // A script's `access_rights: {}` (Tyk's samples) would be a master key in Tyk; here it
        // grants this API alone, the one whose script vouched for the request.
        let no_rights = session
            .get("access_rights")
            .is_none_or(|r| r.as_object().is_none_or(Map::is_empty));
        let no_policies = session
            .get("apply_policies")
            .is_none_or(|p| p.as_array().is_none_or(Vec::is_empty))
            && session
                .get("apply_policy_id")
                .is_none_or(|p| p.as_str().is_none_or(str::is_empty));
        if no_rights && no_policies {
            session.insert(
                "access_rights".into(),
                json!({&*self.api_id: {"api_id": &*self.api_id, "api_name": self.api_name, "versions": []}}),
            );
        }
        let state = SessionState::from_value(Value::Object(session))
            .map_err(|e| JsError::Script(format!("the returned session is not valid: {e}")))?;
        Ok(Identity {
            session: Arc::new(Session::new(state)),
            // Counters of a script's sessions never meet those of a stored key of that name.
            key_hash: portcullis_proto::key_hash::key_hash(&format!("{}:js:{key}", self.org_id)),
            provider: Provider::CustomAuth,
            source: Source::Token,
        })
    }
}

/// Tyk's canonical header form (`x-api-key` → `X-Api-Key`), which scripts index by.
fn canonical(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// Tyk's `MiniRequestObject`, as the script's `request`.
fn mini_request(parts: &Parts, tls: bool, body: String) -> Value {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        headers
            .entry(canonical(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    if !headers.contains_key("Host")
        && let Some(authority) = parts.uri.authority()
    {
        headers.insert("Host".into(), vec![authority.to_string()]);
    }
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(query) = parts.uri.query() {
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            params
                .entry(k.into_owned())
                .or_default()
                .push(v.into_owned());
        }
    }
    let url = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    json!({
        "Headers": headers,
        "SetHeaders": {},
        "DeleteHeaders": [],
        "Body": body,
        "URL": url,
        "Params": params,
        "AddParams": {},
        "ExtendedParams": {},
        "DeleteParams": [],
        "ReturnOverrides": {
            "ResponseCode": 0, "ResponseError": "", "ResponseBody": "",
            "ResponseHeaders": {}, "OverrideError": false
        },
        "IgnoreBody": false,
        "Method": parts.method.as_str(),
        "RequestURI": url,
        "Scheme": if tls { "https" } else { "http" },
    })
}

fn headers(list: Vec<(String, String)>) -> Result<Arc<[(HeaderName, HeaderValue)]>, JsError> {
    list.into_iter()
        .map(|(n, v)| {
            let name = HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| JsError::Script(format!("header name {n:?} is not valid")))?;
            let value = HeaderValue::from_str(&v)
                .map_err(|_| JsError::Script(format!("the value of header {n} is not valid")))?;
            Ok((name, value))
        })
        .collect()
}

/// At most one line a second: a script that fails on every request must not flood the log.
fn log_failure(api_id: &str, error: &JsError) {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = chrono::Utc::now().timestamp();
    if LAST.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(api_id, error = %error, "JavaScript auth middleware failed");
    }
}

impl JsAuth {
    async fn decide(&self, ctx: &RequestContext<'_>) -> Result<Identity, JsError> {
        let reply = ctx.plugins().js.run(self.call(ctx)).await?;
        match reply {
            Reply::Deny {
                status,
                message,
                headers: h,
            } => Err(JsError::Answer(ProxyError::JsAnswer {
                status: StatusCode::from_u16(status)
                    .map_err(|_| JsError::Script(format!("status {status}")))?,
                message: message.into(),
                headers: headers(h)?,
                raw: false,
            })),
            Reply::Respond {
                status,
                body,
                headers: h,
            } => Err(JsError::Answer(ProxyError::JsAnswer {
                status: StatusCode::from_u16(status)
                    .map_err(|_| JsError::Script(format!("status {status}")))?,
                message: body.into(),
                headers: headers(h)?,
                raw: true,
            })),
            // `ReturnData` without a session: the script vouched for nobody.
            Reply::Allow { session: None, .. } => Err(JsError::Answer(ProxyError::JsAnswer {
                status: StatusCode::FORBIDDEN,
                message: "Key not authorised".into(),
                headers: Arc::new([]),
                raw: false,
            })),
            Reply::Allow {
                session: Some(session),
                auth_value,
                set_headers,
                delete_headers,
            } => {
                let identity = self.identity(session, &auth_value)?;
                let set = headers(set_headers)?;
                let framing = |n: &HeaderName| FRAMING.contains(&n.as_str());
                for name in delete_headers {
                    if let Ok(name) = HeaderName::from_bytes(name.as_bytes())
                        && !framing(&name)
                    {
                        ctx.remove_header(name);
                    }
                }
                for (name, value) in set.iter() {
                    if !framing(name) {
                        ctx.rewrite_header(name.clone(), value.clone());
                    }
                }
                Ok(identity)
            }
        }
    }
}

#[async_trait::async_trait]
impl AuthMethod for JsAuth {
    fn provider(&self) -> Provider {
        Provider::CustomAuth
    }

    fn needs_body(&self) -> bool {
        self.read_body
    }

    /// The script decides what a credential is: it always has its say.
    fn presented(&self, _ctx: &RequestContext<'_>) -> bool {
        true
    }

    async fn authenticate(&self, ctx: &RequestContext<'_>) -> Result<Identity, ProxyError> {
        self.decide(ctx).await.map_err(|e| match e {
            JsError::Answer(answer) => answer,
            other => {
                log_failure(&self.api_id, &other);
                other.to_proxy()
            }
        })
    }

    /// The script removes what it wants with `DeleteHeaders`.
    fn strip(&self, _parts: &mut Parts) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, path: &str) -> Result<JsAuth, ValidationError> {
        let d = ApiDefinition::from_value(json!({
            "api_id": "js1", "org_id": "o1", "name": "JS",
            "custom_plugin_auth_enabled": true,
            "custom_middleware": {"driver": "otto", "auth_check": {"name": name, "path": path}},
            "config_data": {"secret": "s"},
            "proxy": {"listen_path": "/js/", "target_url": "http://127.0.0.1:1/"}
        }));
        // Field validation of custom_middleware may refuse first; either way it names the field.
        match d {
            Ok(d) => JsAuth::new(&d),
            Err(e) => Err(e),
        }
    }

    #[test]
    fn the_name_must_be_an_identifier_and_the_path_relative() {
        assert!(def("authMw", "auth.js").is_ok());
        let e = def("a.b()", "auth.js").unwrap_err();
        assert_eq!(e.field, "custom_middleware.auth_check.name");
        for path in ["../auth.js", "/etc/auth.js", ""] {
            let e = def("authMw", path).unwrap_err();
            assert_eq!(e.field, "custom_middleware.auth_check.path", "{path}");
        }
    }

    #[test]
    fn the_spec_carries_config_data() {
        let js = def("authMw", "auth.js").unwrap();
        let spec: Value = serde_json::from_str(&js.spec).unwrap();
        assert_eq!(spec["APIID"], "js1");
        assert_eq!(spec["config_data"]["secret"], "s");
    }

    #[test]
    fn headers_are_in_tyks_canonical_form() {
        assert_eq!(canonical("x-api-key"), "X-Api-Key");
        assert_eq!(canonical("AUTHORIZATION"), "Authorization");
        let req = http::Request::get("http://h.example/js/a?x=1&x=2&y=%20")
            .header("x-api-key", "k")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let mini = mini_request(&parts, false, String::new());
        assert_eq!(mini["Headers"]["X-Api-Key"], json!(["k"]));
        assert_eq!(mini["Headers"]["Host"], json!(["h.example"]));
        assert_eq!(mini["Params"]["x"], json!(["1", "2"]));
        assert_eq!(mini["Params"]["y"], json!([" "]));
        assert_eq!(mini["URL"], "/js/a?x=1&x=2&y=%20");
    }

    #[test]
    fn an_empty_session_grants_this_api_only_and_org_is_forced() {
        let js = def("authMw", "auth.js").unwrap();
        let session = json!({"rate": 2, "per": 60, "org_id": "other", "access_rights": {},
            "portcullis_origin": "jwt", "meta_data": {"token": "t1"}});
        let Value::Object(m) = session else { panic!() };
        let id = js.identity(m, "").unwrap();
        let spec = id.session.state.spec();
        assert_eq!(spec.org_id, "o1");
        assert_eq!(spec.access_rights.keys().collect::<Vec<_>>(), ["js1"]);
        assert!(!id.session.token_made);
        assert_eq!(
            id.key_hash,
            portcullis_proto::key_hash::key_hash("o1:js:t1"),
            "meta_data.token names the session when AuthValue is empty"
        );
    }
}
