//! Admin port: `/hello` (liveness), `/ready` (503 until the first configuration, then 200 for
//! good, whatever the control plane does), `/metrics` (Prometheus text).

use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::shared::Shared;

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn metrics(shared: &Shared) -> String {
    let s = &shared.stats;
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: i64| {
        let _ = write!(
            out,
            "# HELP portcullis_gateway_{name} {help}\n# TYPE portcullis_gateway_{name} {kind}\nportcullis_gateway_{name} {value}\n"
        );
    };
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    gauge(
        "applied_revision",
        "Revision of the configuration being served.",
        "gauge",
        s.applied_revision.load(Ordering::Relaxed),
    );
    gauge(
        "cp_connected",
        "1 while a watch stream to a control plane is open.",
        "gauge",
        i64::from(s.connected.load(Ordering::Relaxed)),
    );
    gauge(
        "ready",
        "1 once a configuration has been applied.",
        "gauge",
        i64::from(shared.is_ready()),
    );
    gauge(
        "apis",
        "APIs in the routing table.",
        "gauge",
        i64::try_from(shared.table.load().len()).unwrap_or(i64::MAX),
    );
    gauge(
        "sync_snapshots_total",
        "Snapshots applied.",
        "counter",
        n(s.snapshots.load(Ordering::Relaxed)),
    );
    gauge(
        "sync_changes_total",
        "Deltas applied.",
        "counter",
        n(s.changes.load(Ordering::Relaxed)),
    );
    gauge(
        "sync_nacks_total",
        "Messages rejected.",
        "counter",
        n(s.nacks.load(Ordering::Relaxed)),
    );
    gauge(
        "certificate_expiry_timestamp_seconds",
        "When the node certificate in use expires (unix seconds).",
        "gauge",
        s.cert_not_after.load(Ordering::Relaxed),
    );
    gauge(
        "certificate_renewals_total",
        "Node certificates renewed.",
        "counter",
        n(s.renewals.load(Ordering::Relaxed)),
    );
    let fresh = s.fresh_at_ms.load(Ordering::Relaxed);
    gauge(
        "config_age_seconds",
        "Seconds since the control plane last confirmed the configuration is current (-1: never).",
        "gauge",
        if fresh == 0 {
            -1
        } else {
            (chrono::Utc::now().timestamp_millis() - fresh) / 1000
        },
    );
    gauge(
        "backup_revision",
        "Revision of the last configuration backup written to Redis.",
        "gauge",
        s.backup_revision.load(Ordering::Relaxed),
    );
    gauge(
        "state_dir_revision",
        "Revision of the configuration last written to the state dir.",
        "gauge",
        s.state_dir_revision.load(Ordering::Relaxed),
    );
    gauge(
        "backup_loads_total",
        "Configurations served from the Redis backup at start.",
        "counter",
        n(s.backup_loads.load(Ordering::Relaxed)),
    );
    gauge(
        "backup_refusals_total",
        "Redis backups refused (other group, tampered, other secret).",
        "counter",
        n(s.backup_refusals.load(Ordering::Relaxed)),
    );
    gauge(
        "sync_connects_total",
        "Watch streams opened.",
        "counter",
        n(s.connects.load(Ordering::Relaxed)),
    );
    shared.requests.render(&mut out);
    crate::tls::expiry::render(&shared.table.load().certs, &mut out);
    crate::request_metrics::render_unserved(&shared.table.load(), &mut out);
    shared.sessions.render(&mut out);
    shared.idp().render(&mut out);
    crate::auth::basic::BCRYPT.render(&mut out);
    shared.oauth_relays.render(&mut out);
    crate::limits::render(&mut out);
    crate::access_log::render(&mut out);
    crate::trace::render(&mut out);
    out
}

fn route(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/hello" => respond(
            StatusCode::OK,
            "application/json",
            format!(
                r#"{{"status":"pass","version":"{}","description":"Portcullis gateway"}}"#,
                portcullis_proto::version::BUILD_VERSION
            ),
        ),
        "/ready" if shared.is_ready() => respond(
            StatusCode::OK,
            "application/json",
            r#"{"status":"ready"}"#.into(),
        ),
        "/ready" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            r#"{"status":"waiting for the first configuration"}"#.into(),
        ),
        "/metrics" => respond(StatusCode::OK, "text/plain; version=0.0.4", metrics(shared)),
        _ => respond(
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"error":"Not found"}"#.into(),
        ),
    }
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Probes and scrapers send small requests at once: a slow or idle client is cut off.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10));
    let builder = Arc::new(builder);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors (a flood on the proxy port shares the limit): back
                // off; returning would stop the whole gateway.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, &req)) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
