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

/// Longest text attribute or status message kept: a client's 60 KiB path must not become a
/// 60 KiB span (memory in the queue, and batches a collector refuses whole).
pub const MAX_TEXT: usize = 256;

impl Attr {
    /// A text attribute, cut at [`MAX_TEXT`] bytes on a character boundary.
    pub fn text(s: &str) -> Self {
        Self::Str(truncated(s).to_owned())
    }
}

pub fn truncated(s: &str) -> &str {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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
    /// Record every request whose client marked its trace sampled, whatever the ratio
    /// (`--otlp-trust-client-sampling`).
    trust_client: bool,
}

impl Tracer {
    /// Starts the exporter task; spans go to `config.endpoint`.
    pub fn start(config: ExportConfig) -> Self {
        let threshold = ratio_threshold(config.sample_ratio);
        let trust_client = config.trust_client_sampling;
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(export::run(config, rx));
        Self {
            queue,
            threshold,
            trust_client,
        }
    }

    fn ratio_picks(&self) -> bool {
        self.threshold == u64::MAX || rand::rng().next_u64() < self.threshold
    }

    /// The trace of a request, when it is sampled. A client that marked its trace unsampled is
    /// never recorded; otherwise the ratio decides, so that clients cannot make an edge record
    /// (and export) every request they send; `trust_client` lets a sampled client trace always
    /// be recorded, for edges whose clients are the operator's own services.
    pub fn begin(&self, headers: &http::HeaderMap) -> Option<RequestTrace> {
        let mut values = headers.get_all("traceparent").iter();
        // Several values make the header invalid (W3C Trace Context §3.2): a new trace.
        let parent = match (values.next(), values.next()) {
            (Some(v), None) => TraceParent::parse(v.as_bytes()),
            _ => None,
        };
        let sampled = match parent {
            Some(p) if p.flags & SAMPLED == 0 => false,
            Some(_) if self.trust_client => true,
            _ => self.ratio_picks(),
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
            error: error.map(cut),
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
        if !self.ratio_picks() {
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
            error: error.map(cut),
        }]);
    }

    fn queue_spans(&self, spans: Vec<SpanRecord>) {
        let n = spans.len() as u64;
        if self.queue.try_send(spans).is_err() {
            DROPPED.fetch_add(n, Ordering::Relaxed);
        }
    }
}

fn cut(mut message: String) -> String {
    let keep = truncated(&message).len();
    message.truncate(keep);
    message
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
            error: error.map(cut),
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
    fn long_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(300);
        let Attr::Str(cut) = Attr::text(&long) else {
            unreachable!()
        };
        assert!(cut.len() <= MAX_TEXT && cut.len() >= MAX_TEXT - 1);
        assert!(long.starts_with(&cut));
        assert_eq!(truncated("short"), "short");
    }

    #[tokio::test]
    async fn the_ratio_decides_for_client_traces_unless_they_are_trusted() {
        let config = |ratio, trust| ExportConfig {
            endpoint: "http://127.0.0.1:9".parse().unwrap(),
            sample_ratio: ratio,
            service_name: "t".into(),
            instance: "t".into(),
            trust_client_sampling: trust,
        };
        let mut headers = http::HeaderMap::new();
        let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", http::HeaderValue::from_static(sampled));
        assert!(Tracer::start(config(0.0, false)).begin(&headers).is_none());
        let trace = Tracer::start(config(0.0, true)).begin(&headers).unwrap();
        assert_eq!(
            trace.parent,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        // Two traceparent headers: invalid, so a new trace (here: by the ratio, 1).
        headers.append("traceparent", http::HeaderValue::from_static(sampled));
        let fresh = Tracer::start(config(1.0, true)).begin(&headers).unwrap();
        assert_eq!(fresh.parent, None);
        // An unsampled client trace is never recorded.
        let mut unsampled = http::HeaderMap::new();
        unsampled.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            ),
        );
        assert!(Tracer::start(config(1.0, true)).begin(&unsampled).is_none());
    }

    #[test]
    fn ratios_map_onto_thresholds() {
        assert_eq!(ratio_threshold(1.0), u64::MAX);
        assert_eq!(ratio_threshold(0.0), 0);
        assert_eq!(ratio_threshold(f64::NAN), 0);
        let half = ratio_threshold(0.5);
        assert!(half > u64::MAX / 2 - 4096 && half < u64::MAX / 2 + 4096);
    }
}
