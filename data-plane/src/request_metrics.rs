//! Traffic metrics: requests by API and status, and upstream latency. Counting is an atomic add
//! on counters the route holds once it has been used, so the hot path takes no lock and does no
//! lookup by name; the registry by API id keeps counts across configuration changes.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// Statuses counted on their own; the others count under their class ("2xx", ...).
const CODES: [u16; 16] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 429, 500, 501, 502, 503, 504,
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const SLOTS: usize = CODES.len() + CLASSES.len();

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default, Debug)]
pub struct ApiCounters {
    by_status: [AtomicU64; SLOTS],
}

fn slot(status: u16) -> usize {
    match CODES.iter().position(|&c| c == status) {
        Some(i) => i,
        None => CODES.len() + usize::from((status / 100).clamp(1, 5) - 1),
    }
}

fn slot_label(i: usize) -> String {
    match CODES.get(i) {
        Some(c) => c.to_string(),
        None => CLASSES[i - CODES.len()].to_owned(),
    }
}

impl ApiCounters {
    pub fn record(&self, status: u16) {
        self.by_status[slot(status)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self, status: u16) -> u64 {
        self.by_status[slot(status)].load(Ordering::Relaxed)
    }
}

/// A Prometheus histogram with fixed buckets and atomic counts.
#[derive(Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, name: &str, out: &mut String) {
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        // Read apart from the buckets: a request counted in between must not make +Inf smaller
        // than the last bucket.
        let count = self.count().max(cumulative);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

#[derive(Default)]
pub struct RequestMetrics {
    apis: RwLock<HashMap<String, Arc<ApiCounters>>>,
    /// Requests no API took (404 no route, 503 not ready).
    pub unrouted: ApiCounters,
    pub upstream_latency: LatencyHistogram,
}

impl RequestMetrics {
    /// The counters of `api_id`, created on first use.
    pub fn for_api(&self, api_id: &str) -> Arc<ApiCounters> {
        if let Some(c) = self.apis.read().ok().and_then(|m| m.get(api_id).cloned()) {
            return c;
        }
        let mut map = self.apis.write().unwrap_or_else(|p| p.into_inner());
        map.entry(api_id.to_owned()).or_default().clone()
    }

    /// Forgets the counters of APIs no longer served (an API that comes back starts at zero,
    /// which Prometheus reads as a counter reset).
    pub fn retain<'a>(&self, live: impl Iterator<Item = &'a str>) {
        let live: std::collections::HashSet<&str> = live.collect();
        if let Ok(mut map) = self.apis.write() {
            map.retain(|id, _| live.contains(id.as_str()));
        }
    }

    /// The counters a route holds: looked up once per route, then a plain load.
    pub fn cached<'a>(
        &self,
        cell: &'a OnceLock<Arc<ApiCounters>>,
        api_id: &str,
    ) -> &'a ApiCounters {
        cell.get_or_init(|| self.for_api(api_id))
    }

    pub fn render(&self, out: &mut String) {
        let name = "portcullis_gateway_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests answered, by API and status.\n# TYPE {name} counter"
        );
        let mut line = |api: &str, c: &ApiCounters| {
            for (i, n) in c.by_status.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "{name}{{api_id=\"{}\",status=\"{}\"}} {n}",
                        escape(api),
                        slot_label(i)
                    );
                }
            }
        };
        line("", &self.unrouted);
        if let Ok(map) = self.apis.read() {
            let mut ids: Vec<_> = map.keys().collect();
            ids.sort();
            for id in ids {
                line(id, &map[id]);
            }
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_gateway_upstream_latency_seconds Time from sending a request upstream to its response headers."
        );
        self.upstream_latency
            .render("portcullis_gateway_upstream_latency_seconds", out);
    }
}

/// `"<api_id>: <method>"` for each API answered 503 for its authentication method, as the
/// node registry shows them (`Ack.unserved_apis`).
pub fn unserved_apis(table: &crate::router::RoutingTable) -> Vec<String> {
    let mut out: Vec<String> = table
        .routes()
        .filter_map(|r| {
            r.unserved
                .as_ref()
                .map(|u| format!("{}: {}", r.api_id, u.method))
        })
        .collect();
    out.sort();
    out
}

/// APIs this edge refuses to serve because their definition enables an authentication method
/// it lacks, and the requests refused for each (docs/security.md).
pub fn render_unserved(table: &crate::router::RoutingTable, out: &mut String) {
    let mut unserved: Vec<_> = table
        .routes()
        .filter_map(|r| r.unserved.as_ref().map(|u| (r.api_id.as_str(), u)))
        .collect();
    unserved.sort_by_key(|(id, _)| *id);
    let name = "portcullis_gateway_unsupported_auth_method";
    let _ = writeln!(
        out,
        "# HELP {name}_apis APIs answered 503 because they enable an authentication method this gateway does not implement.\n# TYPE {name}_apis gauge\n{name}_apis {}",
        unserved.len()
    );
    let _ = writeln!(
        out,
        "# HELP {name}_total Requests refused (503) on such APIs.\n# TYPE {name}_total counter"
    );
    for (id, u) in unserved {
        let _ = writeln!(
            out,
            "{name}_total{{api_id=\"{}\",method=\"{}\"}} {}",
            escape(id),
            escape(&u.method),
            u.refused.load(Ordering::Relaxed)
        );
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_land_in_their_code_or_class_and_render_as_prometheus_text() {
        let m = RequestMetrics::default();
        let a = m.for_api("orders");
        a.record(200);
        a.record(200);
        a.record(418);
        a.record(599);
        assert!(Arc::ptr_eq(&a, &m.for_api("orders")));
        m.for_api("deleted").record(200);
        m.retain(["orders"].into_iter());
        m.unrouted.record(404);
        m.upstream_latency.observe(Duration::from_millis(3));
        m.upstream_latency.observe(Duration::from_secs(60));
        let mut out = String::new();
        m.render(&mut out);
        for line in [
            "portcullis_gateway_requests_total{api_id=\"orders\",status=\"200\"} 2",
            "portcullis_gateway_requests_total{api_id=\"orders\",status=\"4xx\"} 1",
            "portcullis_gateway_requests_total{api_id=\"orders\",status=\"5xx\"} 1",
            "portcullis_gateway_requests_total{api_id=\"\",status=\"404\"} 1",
            "portcullis_gateway_upstream_latency_seconds_bucket{le=\"0.0025\"} 0",
            "portcullis_gateway_upstream_latency_seconds_bucket{le=\"0.005\"} 1",
            "portcullis_gateway_upstream_latency_seconds_bucket{le=\"10\"} 1",
            "portcullis_gateway_upstream_latency_seconds_bucket{le=\"+Inf\"} 2",
            "portcullis_gateway_upstream_latency_seconds_count 2",
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }
        assert!(!out.contains("deleted"), "{out}");
    }
}
