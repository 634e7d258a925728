//! Building the upstream request from the client's and relaying the answer.

use crate::conn::ConnInfo;

use http::header::{HOST, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use http_body_util::Either;

use super::balance;
use super::headers::{add_forwarded, lists_token, remove_hop_by_hop};
use super::tunnel::Upgrade;
use super::upstream::{self, Reserved, SendError};
use super::upstream_tls::TlsFailure;
use super::{ProxyBody, RequestBody};
use crate::error::ProxyError;
use crate::router::{Route, Target};
use std::sync::Arc;
use std::time::Instant;

/// The client's request id, echoed in the gateway's log lines about the request.
const REQUEST_ID: &str = "x-request-id";

/// The upstream path: the target's base path joined with what follows the listen path
/// (or the whole path when `strip_listen_path` is off), with one slash between them.
pub fn upstream_path_and_query(base: &str, route: &Route, uri: &Uri) -> Option<PathAndQuery> {
    let path = uri.path();
    let rest = if route.strip_listen_path {
        let lp = route.listen_path.trim_end_matches('/');
        path.strip_prefix(lp).unwrap_or(path)
    } else {
        path
    };
    let query = uri.query();
    let mut out =
        String::with_capacity(base.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1);
    out.push_str(base);
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

/// The client's view of the request that each attempt (one per balanced target) rebuilds the
/// upstream request from.
struct Origin {
    uri: Uri,
    authority: Option<http::uri::Authority>,
}

/// Points the request at `target`: its path, and the Host it expects.
fn aim(
    route: &Route,
    target: &Target,
    origin: &Origin,
    parts: &mut http::request::Parts,
) -> Result<(), ProxyError> {
    // Origin-form (`GET /path?q`): what an upstream that is not a proxy expects (RFC 9112
    // §3.2.1). The pooled client adds scheme and authority back to pick its connection.
    parts.uri = Uri::from(
        upstream_path_and_query(&target.base, route, &origin.uri).ok_or(ProxyError::Upstream)?,
    );
    if route.preserve_host_header {
        // HTTP/2 clients send :authority instead of Host.
        if !parts.headers.contains_key(HOST)
            && let Some(a) = origin
                .authority
                .as_ref()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(HOST, a);
        }
    } else if target.scheme != http::uri::Scheme::HTTP || target.h2c {
        // The pooled client writes the target's authority itself: as Host on HTTP/1.1, as
        // :authority on HTTP/2, where a Host besides it is refused (RFC 9113 §8.3.1).
        parts.headers.remove(HOST);
    } else {
        parts.headers.insert(HOST, target.host.clone());
    }
    Ok(())
}

pub async fn forward(
    proxy: &super::Proxy,
    reserved: &Arc<Reserved>,
    route: &Arc<Route>,
    req: Request<RequestBody>,
    conn: &ConnInfo,
) -> Result<Response<ProxyBody>, ProxyError> {
    let shared = &*proxy.shared;
    let latency = &shared.requests.upstream_latency;
    let (mut parts, body) = req.into_parts();
    let origin = Origin {
        authority: parts.uri.authority().cloned(),
        uri: std::mem::take(&mut parts.uri),
    };
    let client_version = parts.version;
    let upgrade = if proxy.limits.websockets {
        Upgrade::take(&mut parts)
    } else {
        None
    };
    parts.version = Version::HTTP_11;
    // gRPC needs `te: trailers` to reach the upstream, though TE is otherwise hop-by-hop.
    let trailers = lists_token(&parts.headers, &http::header::TE, "trailers");
    remove_hop_by_hop(&mut parts.headers);
    if trailers {
        parts
            .headers
            .insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
    // The gateway answers `100 Continue` itself when it starts reading the body (after auth),
    // so an expectation is not the upstream's to meet again.
    parts.headers.remove(http::header::EXPECT);
    if let Some(u) = &upgrade {
        u.restore(&mut parts.headers);
    }
    add_forwarded(&mut parts.headers, &conn.forwarded_for, conn.scheme());
    // A reference-counted copy; turned into text only when a log line needs it.
    let request_id = parts.headers.get(REQUEST_ID).cloned();
    let timeout = route.timeout.unwrap_or(proxy.default_timeout);
    let started = Instant::now();
    let attempts = async {
        let is_upgrade = upgrade.is_some();
        let attempt =
            |target, req| send_to(proxy, reserved, route, target, &origin, req, is_upgrade);
        let mut req = Request::from_parts(parts, body);
        let Some(balancer) = &route.balancer else {
            return attempt(&route.target, req).await;
        };
        let mut last = None;
        for (index, target) in balancer.plan().take(balance::MAX_ATTEMPTS) {
            match attempt(target, req).await {
                Ok(resp) => {
                    balancer.mark_up(index);
                    return Ok(resp);
                }
                Err(Failed::Send(mut e)) if e.is_connect() => {
                    balancer.mark_down(index);
                    // A request that never left can go to the next target.
                    match e.take_unsent() {
                        Some(unsent) => {
                            req = unsent;
                            last = Some(Failed::Send(e));
                        }
                        None => return Err(Failed::Send(e)),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Failed::Proxy(ProxyError::Upstream)))
    };
    let upstream = tokio::time::timeout(timeout, attempts).await;
    latency.observe(started.elapsed());
    let mut resp = match upstream {
        Ok(Ok(resp)) => resp,
        Ok(Err(Failed::Proxy(e))) => return Err(e),
        Ok(Err(Failed::Tls(failure))) => {
            return Err(tls_refused(
                route,
                request_id.as_ref(),
                failure,
                "the API's upstream TLS settings cannot be used (see the earlier warning)",
            ));
        }
        Ok(Err(Failed::Send(SendError::Tls { failure, detail }))) => {
            return Err(tls_refused(route, request_id.as_ref(), failure, &detail));
        }
        Ok(Err(Failed::Send(e))) => {
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
    match upgrade.map(|u| u.answer(&mut resp, proxy.limits.upgrade_idle_timeout)) {
        Some(Ok(Some(tunnel))) => reserved.hold_tunnel(tunnel),
        Some(Err(refused)) => {
            if log_now() {
                tracing::warn!(api_id = %route.api_id, request_id = text(request_id.as_ref()), reason = refused, "upstream answered an upgrade with an invalid 101: refused");
            }
            return Err(ProxyError::Upstream);
        }
        Some(Ok(None)) | None => {
            remove_hop_by_hop(resp.headers_mut());
            *resp.version_mut() = client_version;
        }
    }
    Ok(resp.map(Either::Left))
}

/// Why one attempt got no response.
enum Failed {
    Send(SendError),
    Tls(TlsFailure),
    Proxy(ProxyError),
}

/// One attempt: the request aimed at `target`, signed if the API signs, and sent.
async fn send_to(
    proxy: &super::Proxy,
    reserved: &Arc<Reserved>,
    route: &Arc<Route>,
    target: &Target,
    origin: &Origin,
    req: Request<RequestBody>,
    upgrade: bool,
) -> Result<Response<upstream::UpstreamBody>, Failed> {
    let (mut parts, body) = req.into_parts();
    aim(route, target, origin, &mut parts).map_err(Failed::Proxy)?;
    // Last: a signature covers the headers and path the upstream will read.
    if let Some(auth) = &route.upstream_auth {
        auth.apply(&mut parts, &proxy.shared, Some(target.authority.as_str()))
            .await
            .map_err(Failed::Proxy)?;
    }
    let req = Request::from_parts(parts, body);
    if target.h2c {
        return upstream::pooled(&proxy.h2c, &target.scheme, &target.authority, req)
            .await
            .map_err(Failed::Send);
    }
    // Plain HTTP pays one comparison here; TLS routes look up their table's resolved client.
    let tls_client;
    let client = if target.scheme == http::uri::Scheme::HTTP {
        &proxy.client
    } else {
        tls_client = proxy.upstream_tls.client_for(route).map_err(Failed::Tls)?;
        if upgrade {
            &tls_client.upgrades
        } else {
            &tls_client.client
        }
    };
    let sent = if upgrade {
        upstream::send_upgrade(client, &target.scheme, &target.authority, req).await
    } else {
        upstream::send(client, reserved, &target.scheme, &target.authority, req).await
    };
    sent.map_err(Failed::Send)
}
