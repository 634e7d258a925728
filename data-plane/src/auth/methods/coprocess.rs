//! Custom auth through Tyk's gRPC coprocess protocol (docs/plugins.md): the request goes to the
//! plugin server as a `CustomKeyCheck` hook; the session it returns, named by its
//! `metadata["token"]`, is the identity the request runs under (policies, rate limits and
//! quotas are then applied as for any key).

use std::collections::HashMap;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderName, HeaderValue, StatusCode};
use portcullis_proto::coprocess::{HookType, MiniRequestObject, Object, ReturnOverrides};
use portcullis_proto::model::{ApiDefinition, ValidationError};

use super::AuthMethod;
use crate::auth::context::RequestContext;
use crate::auth::identity::{Identity, Provider, Source};
use crate::error::ProxyError;
use crate::plugins::coprocess::cache::{Edits, Extractor, SessionCache};
use crate::plugins::coprocess::session;
use crate::plugins::coprocess::{Answer, DispatchError};
use crate::sessions::Session;

/// Headers a plugin may set or delete upstream per request; more are ignored.
const MAX_HEADER_EDITS: usize = 64;
/// Headers that frame the message or the connection (and `Host`, which routes it): the proxy
/// owns them, and a plugin changing them could make the upstream read the request differently
/// from the gateway. Also kept out of a plugin's own answers.
pub(crate) const FRAMING: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

#[derive(Debug)]
pub struct CoprocessAuth {
    hook: Arc<str>,
    api_id: String,
    api_name: String,
    org_id: String,
    /// Tyk's `id_extractor` and the sessions it found.
    extractor: Option<(Extractor, SessionCache)>,
}

impl CoprocessAuth {
    pub fn new(def: &ApiDefinition) -> Result<Self, ValidationError> {
        let plugins = def.plugins();
        let mw = &plugins.custom_middleware;
        let extractor = match mw.id_extractor.settings()? {
            None => None,
            Some(settings) => {
                let ex = Extractor::new(settings).map_err(|e| {
                    ValidationError::new(
                        "custom_middleware.id_extractor.extractor_config.regex_expression",
                        format!("invalid regexp: {e}"),
                    )
                })?;
                Some((ex, SessionCache::default()))
            }
        };
        let spec = def.spec();
        Ok(Self {
            hook: mw.auth_check.name.as_str().into(),
            api_id: spec.api_id.clone(),
            api_name: spec.name.clone(),
            org_id: spec.org_id.clone(),
            extractor,
        })
    }

    fn unavailable(&self, e: DispatchError) -> ProxyError {
        ProxyError::PluginUnavailable {
            hook: self.hook.clone(),
            reason: e.reason(),
        }
    }

    /// The `Object` Tyk sends for a `CustomKeyCheck` hook.
    fn object(&self, ctx: &RequestContext<'_>) -> Object {
        let parts = ctx.parts;
        let mut headers = HashMap::new();
        for name in parts.headers.keys() {
            // Tyk sends the first value of each header, in Go's canonical form.
            if let Some(v) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
                headers.insert(canonical(name.as_str()), v.to_owned());
            }
        }
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()));
        if let Some(host) = host {
            headers.insert("Host".into(), host);
        }
        let mut params = HashMap::new();
        if let Some(q) = parts.uri.query() {
            for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
                params
                    .entry(k.into_owned())
                    .or_insert_with(|| v.into_owned());
            }
        }
        let url = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
        let raw_body = ctx.body.map(<[u8]>::to_vec).unwrap_or_default();
        let body = String::from_utf8(raw_body.clone()).unwrap_or_default();
        let mut spec = HashMap::new();
        spec.insert("APIID".to_owned(), self.api_id.clone());
        spec.insert("OrgID".to_owned(), self.org_id.clone());
        Object {
            hook_type: HookType::CustomKeyCheck as i32,
            hook_name: self.hook.to_string(),
            request: Some(MiniRequestObject {
                headers,
                body,
                request_uri: url.clone(),
                url,
                params,
                method: parts.method.as_str().to_owned(),
                scheme: if ctx.conn.is_tls() { "https" } else { "http" }.into(),
                raw_body,
                return_overrides: Some(ReturnOverrides {
                    response_code: -1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            spec,
            ..Default::default()
        }
    }

    /// The plugin's reply as an identity, or as its own answer to the client.
    fn interpret(
        &self,
        ctx: &RequestContext<'_>,
        reply: Object,
    ) -> Result<(Identity, Edits), ProxyError> {
        let request = reply.request.unwrap_or_default();
        if let Some(o) = &request.return_overrides
            && let Some(answer) = overridden(o)
        {
            return Err(ProxyError::PluginAnswer(Arc::new(answer)));
        }
        let forbidden = || {
            ProxyError::PluginAnswer(Arc::new(Answer::error(StatusCode::FORBIDDEN, "Forbidden")))
        };
        let Some(wire) = reply.session else {
            return Err(forbidden());
        };
        let meta = session::merged_metadata(&wire, &reply.metadata);
        let token = match meta.get("token").and_then(|v| v.as_str()) {
            Some(t) if !t.is_empty() => t.to_owned(),
            _ => return Err(forbidden()),
        };
        let state = session::from_wire(
            &wire,
            &meta,
            &self.org_id,
            &self.api_id,
            &self.api_name,
            &token,
        )
        .map_err(|e| {
            tracing::warn!(hook = %self.hook, field = %e.field, reason = %e.reason,
                "the gRPC plugin returned a session that does not validate");
            ProxyError::PluginAnswer(Arc::new(Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Middleware error",
            )))
        })?;
        let edits = request
            .delete_headers
            .iter()
            .map(|n| (n.as_str(), None))
            .chain(
                request
                    .set_headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), Some(v.as_str()))),
            );
        let mut applied = Vec::new();
        for (name, value) in edits.take(MAX_HEADER_EDITS) {
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                tracing::debug!(hook = %self.hook, "a plugin header name is not valid HTTP");
                continue;
            };
            if FRAMING.contains(&name.as_str()) {
                tracing::debug!(hook = %self.hook, header = %name, "a plugin may not change message framing");
                continue;
            }
            match value.map(HeaderValue::from_str) {
                None => applied.push((name, None)),
                Some(Ok(v)) => applied.push((name, Some(v))),
                Some(Err(_)) => {
                    tracing::debug!(hook = %self.hook, header = %name, "a plugin header value is not valid HTTP");
                }
            }
        }
        let edits: Edits = applied.into();
        apply(ctx, &edits);
        // Namespaced: a plugin passing the client's header on as its token must not let the
        // client spend a stored key's (or another organisation's) rate limit and quota.
        let counted = format!("{}:grpc:{token}", self.org_id);
        Ok((
            Identity {
                session: Arc::new(Session::new(state)),
                key_hash: portcullis_proto::key_hash::key_hash(&counted),
                provider: Provider::CustomAuth,
                source: Source::Token,
            },
            edits,
        ))
    }
}

/// What Tyk does with `return_overrides`: a code of 400 or more refuses the request through
/// the error format (unless `override_error`), any other positive code answers it as is.
fn overridden(o: &ReturnOverrides) -> Option<Answer> {
    if o.response_code <= 0 {
        return None;
    }
    let headers = o.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    // A 1xx is not a final answer: the client connection would lose its framing.
    let Some(status) = u16::try_from(o.response_code)
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
    else {
        return Some(Answer::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Middleware error",
        ));
    };
    let body = if o.response_error.is_empty() {
        o.response_body.as_str()
    } else {
        o.response_error.as_str()
    };
    if status.as_u16() >= 400 && !o.override_error {
        let message = if body.is_empty() {
            "Key not authorised"
        } else {
            body
        };
        return Some(Answer::error(status, message).with_headers(headers));
    }
    let mut answer = Answer::error(status, body).with_headers(headers);
    answer.raw = Some(bytes::Bytes::copy_from_slice(body.as_bytes()));
    Some(answer)
}

/// Asks the proxy to make the plugin's header changes upstream.
fn apply(ctx: &RequestContext<'_>, edits: &Edits) {
    for (name, value) in edits.iter() {
        match value {
            None => ctx.remove_header(name.clone()),
            Some(v) => ctx.rewrite_header(name.clone(), v.clone()),
        }
    }
}

/// Go's `CanonicalMIMEHeaderKey`: what Tyk plugins find in `request.headers`.
fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

#[async_trait::async_trait]
impl AuthMethod for CoprocessAuth {
    fn provider(&self) -> Provider {
        Provider::CustomAuth
    }

    /// The body goes to the plugin only when the id extractor reads a form: buffering every
    /// request body would cap uploads on plugin-protected APIs (docs/plugins.md).
    fn needs_body(&self) -> bool {
        self.extractor
            .as_ref()
            .is_some_and(|(ex, _)| ex.reads_body())
    }

    /// A plugin decides what its credential is, so it claims every request that reaches it.
    fn presented(&self, _ctx: &RequestContext<'_>) -> bool {
        true
    }

    async fn authenticate(&self, ctx: &RequestContext<'_>) -> Result<Identity, ProxyError> {
        let dispatcher = &ctx.plugins().coprocess;
        if !dispatcher.configured() {
            return Err(self.unavailable(DispatchError::NotConfigured));
        }
        let id = match &self.extractor {
            None => None,
            Some((ex, cache)) => {
                let Some(id) = ex.extract(ctx.parts, ctx.body) else {
                    return Err(ProxyError::PluginAnswer(Arc::new(Answer::error(
                        StatusCode::BAD_REQUEST,
                        "Authorization field missing",
                    ))));
                };
                if let Some((identity, edits)) = cache.get(&id) {
                    apply(ctx, &edits);
                    return Ok(identity);
                }
                Some((id, ex, cache))
            }
        };
        let reply = dispatcher
            .dispatch(self.object(ctx))
            .await
            .map_err(|e| match e {
                // Tyk refuses the request when the plugin fails; outages are 503s here.
                DispatchError::Failed => ProxyError::PluginAnswer(Arc::new(Answer::error(
                    StatusCode::FORBIDDEN,
                    "Key not authorised",
                ))),
                e => self.unavailable(e),
            })?;
        let (identity, edits) = self.interpret(ctx, reply)?;
        if let Some((id, ex, cache)) = id {
            let deadline = identity
                .session
                .state
                .field("id_extractor_deadline")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0);
            if let Some(ttl) = ex.keep_for(deadline) {
                cache.put(&id, identity.clone(), edits, ttl);
            }
        }
        Ok(identity)
    }

    fn strip(&self, _parts: &mut Parts) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_gos() {
        assert_eq!(canonical("x-api-key"), "X-Api-Key");
        assert_eq!(canonical("AUTHORIZATION"), "Authorization");
    }

    #[test]
    fn overrides_follow_tyk() {
        let mut o = ReturnOverrides {
            response_code: -1,
            ..Default::default()
        };
        assert_eq!(overridden(&o), None);
        o.response_code = 403;
        let a = overridden(&o).unwrap();
        assert_eq!(
            (a.status.as_u16(), a.message.as_str()),
            (403, "Key not authorised")
        );
        assert!(a.raw.is_none());
        o.response_body = "go away".into();
        o.headers.insert("x-why".into(), "because".into());
        let a = overridden(&o).unwrap();
        assert_eq!(a.message, "go away");
        assert_eq!(a.headers[0].0, "x-why");
        o.override_error = true;
        assert_eq!(
            overridden(&o).unwrap().raw.as_deref(),
            Some(&b"go away"[..])
        );
        o.response_code = 200;
        o.override_error = false;
        assert_eq!(overridden(&o).unwrap().status, StatusCode::OK);
        o.response_code = 10_000;
        assert_eq!(
            overridden(&o).unwrap().status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
