//! Building the upstream request from the client's and relaying the answer.

use crate::conn::ConnInfo;
use std::time::Duration;

use http::header::{HOST, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use http_body_util::Either;

use super::headers::{add_forwarded, remove_hop_by_hop};
use super::upstream::{self, Reserved, SendError};
use super::upstream_tls::{TlsFailure, UpstreamTls};
use super::{ProxyBody, RequestBody, UpstreamClient};
use crate::error::ProxyError;
use crate::router::Route;
use std::sync::Arc;
use std::time::Instant;

/// The client's request id, echoed in the gateway's log lines about the request.
const REQUEST_ID: &str = "x-request-id";

/// The upstream path: the target's base path joined with what follows the listen path
/// (or the whole path when `strip_listen_path` is off), with one slash between them.
pub fn upstream_path_and_query(route: &Route, uri: &Uri) -> Option<PathAndQuery> {
    let path = uri.path();
    let rest = if route.strip_listen_path {
        let lp = route.listen_path.trim_end_matches('/');
        path.strip_prefix(lp).unwrap_or(path)
    } else {
        path
    };
    let query = uri.query();
    let mut out = String::with_capacity(
        route.target_base.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1,
    );
    out.push_str(&route.target_base);
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    PathAndQuery::try_from(out).ok()
}

/// At most one upstream-failure line per second: a dead upstream under load would otherwise
/// write one per request. The counters in `/metrics` have every one.
fn log_now() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST.swap(now, Ordering::Relaxed) != now
}

/// As `log_now`, for TLS failures: a broken upstream certificate then still gets its line when
/// other upstreams fail too.
fn log_tls_now() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST.swap(now, Ordering::Relaxed) != now
}

fn tls_refused(
    route: &Route,
    request_id: Option<&HeaderValue>,
    failure: TlsFailure,
    detail: &str,
) -> ProxyError {
    if log_tls_now() {
        tracing::warn!(api_id = %route.api_id, request_id = text(request_id), reason = %failure, error = detail, "upstream TLS failed");
    }
    ProxyError::UpstreamTls(failure)
}

fn text(v: Option<&HeaderValue>) -> &str {
    v.and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[allow(clippy::too_many_arguments)]
pub async fn forward(
    client: &UpstreamClient,
    tls: &UpstreamTls,
    reserved: &Arc<Reserved>,
    route: &Arc<Route>,
    req: Request<RequestBody>,
    conn: &ConnInfo,
    default_timeout: Duration,
    shared: &crate::shared::Shared,
) -> Result<Response<ProxyBody>, ProxyError> {
    let latency = &shared.requests.upstream_latency;
    let (mut parts, body) = req.into_parts();
    let path_and_query = upstream_path_and_query(route, &parts.uri).ok_or(ProxyError::Upstream)?;
    let client_authority = parts.uri.authority().cloned();
    // Origin-form (`GET /path?q`): what an upstream that is not a proxy expects (RFC 9112
    // §3.2.1). The pooled client adds scheme and authority back to pick its connection.
    parts.uri = Uri::from(path_and_query);
    let client_version = parts.version;
    parts.version = Version::HTTP_11;
    remove_hop_by_hop(&mut parts.headers);
    if route.preserve_host_header {
        // HTTP/2 clients send :authority instead of Host.
        if !parts.headers.contains_key(HOST)
            && let Some(a) = client_authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(HOST, a);
        }
    } else if route.scheme != http::uri::Scheme::HTTP {
        // The pooled client writes the target's authority itself: as Host on HTTP/1.1, as
        // :authority on HTTP/2, where a Host besides it is refused (RFC 9113 §8.3.1).
        parts.headers.remove(HOST);
    } else if let Ok(h) = HeaderValue::from_str(route.authority.as_str()) {
        parts.headers.insert(HOST, h);
    }
    add_forwarded(&mut parts.headers, conn.remote.ip(), conn.scheme());
    // Last: a signature covers the headers and path the upstream will read.
    if let Some(auth) = &route.upstream_auth {
        auth.apply(&mut parts, shared).await?;
    }
    // A reference-counted copy; turned into text only when a log line needs it.
    let request_id = parts.headers.get(REQUEST_ID).cloned();

    // Plain HTTP pays one comparison here; TLS routes look up their table's resolved client.
    let tls_client;
    let client = if route.scheme == http::uri::Scheme::HTTP {
        client
    } else {
        match tls.client_for(route) {
            Ok(c) => {
                tls_client = c;
                &tls_client.client
            }
            Err(failure) => {
                return Err(tls_refused(
                    route,
                    request_id.as_ref(),
                    failure,
                    "the API's upstream TLS settings cannot be used (see the earlier warning)",
                ));
            }
        }
    };
    let timeout = route.timeout.unwrap_or(default_timeout);
    let started = Instant::now();
    let sent = upstream::send(
        client,
        reserved,
        &route.scheme,
        &route.authority,
        Request::from_parts(parts, body),
    );
    let upstream = tokio::time::timeout(timeout, sent).await;
    latency.observe(started.elapsed());
    let mut resp = match upstream {
        Ok(Ok(resp)) => resp,
        Ok(Err(SendError::Tls { failure, detail })) => {
            return Err(tls_refused(route, request_id.as_ref(), failure, &detail));
        }
        Ok(Err(e)) => {
            if log_now() {
                tracing::warn!(api_id = %route.api_id, request_id = text(request_id.as_ref()), error = %e, "upstream request failed");
            }
            return Err(ProxyError::Upstream);
        }
        Err(_) => {
            if log_now() {
                tracing::warn!(api_id = %route.api_id, request_id = text(request_id.as_ref()), timeout_ms = timeout.as_millis() as u64, "upstream timed out");
            }
            return Err(ProxyError::Timeout);
        }
    };
    remove_hop_by_hop(resp.headers_mut());
    *resp.version_mut() = client_version;
    Ok(resp.map(Either::Left))
}
