//! The OTLP/gRPC exporter task: batches queued spans and sends them with `TraceService/Export`.
//! Failures are logged at most once a minute and the spans dropped (counted): traces are
//! diagnostics, and holding spans for a collector that is down would only grow memory.

use std::sync::atomic::Ordering;
use std::time::Duration;

use portcullis_proto::otlp::{
    self, AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource,
    ResourceSpans, ScopeSpans, any_value, span, status, trace_service_client::TraceServiceClient,
};
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

use super::{Attr, DROPPED, EXPORTED, Kind, SpanRecord};

/// Most spans in one export call.
const MAX_BATCH: usize = 512;
/// A batch is sent once its text reaches this, well under the 4 MiB a collector takes by
/// default.
const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// How long the first span of a batch waits for company.
const LINGER: Duration = Duration::from_millis(500);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `--otlp-endpoint` and its companion flags configure.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// `http://HOST:PORT` of an OTLP/gRPC collector.
    pub endpoint: http::Uri,
    /// Share of new traces recorded (0.0–1.0); a client's sampled flag always wins.
    pub sample_ratio: f64,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// The `service.instance.id` resource attribute: the node's name.
    pub instance: String,
    /// `--otlp-trust-client-sampling`: a client's sampled flag overrides the ratio.
    pub trust_client_sampling: bool,
}

pub(super) async fn run(config: ExportConfig, mut rx: mpsc::Receiver<Vec<SpanRecord>>) {
    let channel = Endpoint::from(config.endpoint.clone())
        .connect_timeout(Duration::from_secs(5))
        .timeout(EXPORT_TIMEOUT)
        .connect_lazy();
    let mut client = TraceServiceClient::new(channel);
    let resource = Resource {
        attributes: vec![
            key_value("service.name", Attr::Str(config.service_name.clone())),
            key_value("service.instance.id", Attr::Str(config.instance.clone())),
            key_value(
                "service.version",
                Attr::Str(env!("CARGO_PKG_VERSION").to_owned()),
            ),
        ],
    };
    let mut last_error: Option<std::time::Instant> = None;
    while let Some(first) = rx.recv().await {
        let mut bytes: usize = first.iter().map(approximate_size).sum();
        let mut batch = first;
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(more)) => {
                    bytes += more.iter().map(approximate_size).sum::<usize>();
                    batch.extend(more);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "portcullis-gateway".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                    }),
                    spans: batch.into_iter().map(to_proto).collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        match client.export(request).await {
            Ok(answer) => {
                let rejected = answer
                    .into_inner()
                    .partial_success
                    .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
                    .min(n);
                EXPORTED.fetch_add(n - rejected, Ordering::Relaxed);
                DROPPED.fetch_add(rejected, Ordering::Relaxed);
            }
            Err(e) => {
                DROPPED.fetch_add(n, Ordering::Relaxed);
                if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    last_error = Some(std::time::Instant::now());
                    // The collector's words, escaped and cut: it could forge log lines otherwise.
                    let message = e.message().escape_debug().to_string();
                    tracing::warn!(endpoint = %config.endpoint, error = %super::truncated(&message), code = ?e.code(), "OTLP export failed; spans dropped");
                }
            }
        }
    }
}

/// Bytes a span adds to a request, roughly: ids, times and names, plus its texts.
fn approximate_size(s: &SpanRecord) -> usize {
    let texts: usize = s
        .attributes
        .iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    Attr::Str(t) => t.len(),
                    Attr::Int(_) | Attr::Bool(_) => 8,
                }
                + 8
        })
        .sum();
    96 + s.name.len() + s.error.as_ref().map_or(0, String::len) + texts
}

fn key_value(key: &str, value: Attr) -> KeyValue {
    let value = match value {
        Attr::Str(s) => any_value::Value::StringValue(s),
        Attr::Int(i) => any_value::Value::IntValue(i),
        Attr::Bool(b) => any_value::Value::BoolValue(b),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn to_proto(s: SpanRecord) -> otlp::Span {
    let kind = match s.kind {
        Kind::Internal => span::SpanKind::Internal,
        Kind::Server => span::SpanKind::Server,
        Kind::Client => span::SpanKind::Client,
    };
    let status = match s.error {
        Some(message) => otlp::Status {
            message,
            code: status::StatusCode::Error as i32,
        },
        None => otlp::Status {
            message: String::new(),
            code: status::StatusCode::Unset as i32,
        },
    };
    otlp::Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: String::new(),
        parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: s.name.to_owned(),
        kind: kind as i32,
        start_time_unix_nano: s.start_ns,
        end_time_unix_nano: s.end_ns.max(s.start_ns),
        attributes: s
            .attributes
            .into_iter()
            .map(|(k, v)| key_value(k, v))
            .collect(),
        status: Some(status),
        // The low byte holds the W3C trace flags: every exported span was sampled.
        flags: u32::from(super::traceparent::SAMPLED),
    }
}
