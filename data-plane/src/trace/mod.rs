//! OpenTelemetry traces over OTLP/gRPC (`--otlp-endpoint`, docs/observability.md): one server
//! span per proxied request, with child spans for routing, each authentication method and the
//! upstream call, and one span per configuration batch the sync client applies. The W3C
//! `traceparent` of the client is continued and the upstream receives the gateway's.
//!
//! Spans of a request are collected in the request and handed to the exporter's queue in one
//! piece when the response head is ready; a full queue drops them (counted), so a slow or dead
//! collector never slows the request path. Without `--otlp-endpoint` nothing here runs.

mod export;
pub mod traceparent;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use tokio::sync::mpsc;

pub use export::ExportConfig;
use traceparent::{SAMPLED, TraceParent};

/// Spans dropped because the export queue was full or the collector refused them.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Spans the collector accepted.
static EXPORTED: AtomicU64 = AtomicU64::new(0);

/// Most requests' (or sync batches') spans waiting for the exporter.
const QUEUE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal,
    Server,
    Client,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// A finished span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub name: &'static str,
    pub kind: Kind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<(&'static str, Attr)>,
    /// An error status, with its message.
    pub error: Option<String>,
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    while id == [0; 8] {
        rand::rng().fill_bytes(&mut id);
    }
    id
}

fn trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    while id == [0; 16] {
        rand::rng().fill_bytes(&mut id);
    }
    id
}

/// The exporter's handle, shared by every request.
#[derive(Debug)]
pub struct Tracer {
    queue: mpsc::Sender<Vec<SpanRecord>>,
    /// A new trace is sampled when a random `u64` is below this (`u64::MAX`: always).
    threshold: u64,
}

impl Tracer {
    /// Starts the exporter task; spans go to `config.endpoint`.
    pub fn start(config: ExportConfig) -> Self {
        let threshold = ratio_threshold(config.sample_ratio);
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(export::run(config, rx));
        Self { queue, threshold }
    }

    /// The trace of a request, when it is sampled: a client's sampled `traceparent` is always
    /// continued and an unsampled one never is (parent-based sampling); otherwise the ratio
    /// decides.
    pub fn begin(&self, headers: &http::HeaderMap) -> Option<RequestTrace> {
        let parent = headers
            .get("traceparent")
            .and_then(|v| TraceParent::parse(v.as_bytes()));
        let sampled = match parent {
            Some(p) => p.flags & SAMPLED != 0,
            None => self.threshold == u64::MAX || rand::rng().next_u64() < self.threshold,
        };
        if !sampled {
            return None;
        }
        Some(RequestTrace {
            trace_id: parent.map_or_else(trace_id, |p| p.trace_id),
            span_id: span_id(),
            parent: parent.map(|p| p.span_id),
            start_ns: now_ns(),
            children: Mutex::default(),
            annotations: Mutex::default(),
        })
    }

    /// Ends the request's server span and queues it with its children.
    pub fn finish(
        &self,
        trace: RequestTrace,
        attributes: Vec<(&'static str, Attr)>,
        error: Option<String>,
    ) {
        let mut spans = trace.children.into_inner().unwrap_or_default();
        spans.push(SpanRecord {
            trace_id: trace.trace_id,
            span_id: trace.span_id,
            parent: trace.parent,
            name: "portcullis.request",
            kind: Kind::Server,
            start_ns: trace.start_ns,
            end_ns: now_ns(),
            attributes,
            error,
        });
        self.queue_spans(spans);
    }

    /// A span of its own trace (a sync batch), sampled by the ratio.
    pub fn record_root(
        &self,
        name: &'static str,
        start_ns: u64,
        attributes: Vec<(&'static str, Attr)>,
        error: Option<String>,
    ) {
        if self.threshold != u64::MAX && rand::rng().next_u64() >= self.threshold {
            return;
        }
        self.queue_spans(vec![SpanRecord {
            trace_id: trace_id(),
            span_id: span_id(),
            parent: None,
            name,
            kind: Kind::Internal,
            start_ns,
            end_ns: now_ns(),
            attributes,
            error,
        }]);
    }

    fn queue_spans(&self, spans: Vec<SpanRecord>) {
        let n = spans.len() as u64;
        if self.queue.try_send(spans).is_err() {
            DROPPED.fetch_add(n, Ordering::Relaxed);
        }
    }
}

fn ratio_threshold(ratio: f64) -> u64 {
    if ratio.is_nan() || ratio <= 0.0 {
        0
    } else if ratio >= 1.0 {
        u64::MAX
    } else {
        // Truncation is the intent: the ratio of all u64 values below the threshold.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let t = (ratio * u64::MAX as f64) as u64;
        t
    }
}

/// The spans of one sampled request while it runs.
#[derive(Debug)]
pub struct RequestTrace {
    pub trace_id: [u8; 16],
    /// The gateway's server span: the parent of every child span.
    pub span_id: [u8; 8],
    /// The client's span, from its `traceparent`.
    pub parent: Option<[u8; 8]>,
    start_ns: u64,
    children: Mutex<Vec<SpanRecord>>,
    /// Attributes of the server span learnt on the way (the API routed to).
    annotations: Mutex<Vec<(&'static str, Attr)>>,
}

impl RequestTrace {
    pub fn annotate(&self, key: &'static str, value: Attr) {
        if let Ok(mut a) = self.annotations.lock() {
            a.push((key, value));
        }
    }

    pub fn take_annotations(&self) -> Vec<(&'static str, Attr)> {
        self.annotations
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default()
    }

    /// Records a child of the server span that started at `start_ns` and ends now.
    pub fn child(
        &self,
        name: &'static str,
        kind: Kind,
        start_ns: u64,
        attributes: Vec<(&'static str, Attr)>,
        error: Option<String>,
    ) {
        self.child_with_id(span_id(), name, kind, start_ns, attributes, error);
    }

    /// As [`RequestTrace::child`], for a span whose id was handed out before it ended (the
    /// upstream call's, sent in its `traceparent`).
    pub fn child_with_id(
        &self,
        id: [u8; 8],
        name: &'static str,
        kind: Kind,
        start_ns: u64,
        attributes: Vec<(&'static str, Attr)>,
        error: Option<String>,
    ) {
        let span = SpanRecord {
            trace_id: self.trace_id,
            span_id: id,
            parent: Some(self.span_id),
            name,
            kind,
            start_ns,
            end_ns: now_ns(),
            attributes,
            error,
        };
        if let Ok(mut children) = self.children.lock() {
            children.push(span);
        }
    }

    /// A fresh span id and the `traceparent` naming it, for the upstream request.
    pub fn upstream_parent(&self) -> ([u8; 8], http::HeaderValue) {
        let id = span_id();
        let header = TraceParent {
            trace_id: self.trace_id,
            span_id: id,
            flags: SAMPLED,
        }
        .header();
        (id, header)
    }
}

/// The exporter's counters for `/metrics`.
pub fn render(out: &mut String) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "# HELP portcullis_gateway_trace_spans_exported_total Spans the OTLP collector accepted.\n\
         # TYPE portcullis_gateway_trace_spans_exported_total counter\nportcullis_gateway_trace_spans_exported_total {}\n\
         # HELP portcullis_gateway_trace_spans_dropped_total Spans dropped: export queue full, or the collector failed or refused them.\n\
         # TYPE portcullis_gateway_trace_spans_dropped_total counter\nportcullis_gateway_trace_spans_dropped_total {}\n",
        EXPORTED.load(Ordering::Relaxed),
        DROPPED.load(Ordering::Relaxed),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_map_onto_thresholds() {
        assert_eq!(ratio_threshold(1.0), u64::MAX);
        assert_eq!(ratio_threshold(0.0), 0);
        assert_eq!(ratio_threshold(f64::NAN), 0);
        let half = ratio_threshold(0.5);
        assert!(half > u64::MAX / 2 - 4096 && half < u64::MAX / 2 + 4096);
    }
}
