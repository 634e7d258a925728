//! Control-plane Prometheus metrics: one typed struct, passed in, never global.

pub mod propagation;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SnapshotLabels {
    pub group: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub status: u16,
}

/// Every metric the control plane exports.
pub struct Metrics {
    registry: Registry,
    /// Commit of a revision → ACK of it by a node, per group. Observed through
    /// [`Metrics::observe_propagation`], which keeps [`Metrics::propagation`] in step.
    pub sync_propagation_seconds: Family<GroupLabels, Histogram>,
    /// The same observations as plain counts, for `GET /portcullis/propagation`.
    pub propagation: propagation::PropagationCounts,
    pub sync_connected_streams: Family<GroupLabels, Gauge>,
    pub sync_snapshots_total: Family<SnapshotLabels, Counter>,
    pub sync_nacks_total: Family<GroupLabels, Counter>,
    pub sync_head_revision: Gauge,
    pub joins_total: Family<OutcomeLabels, Counter>,
    /// Sync connections closed at accept because a cap was reached, by cap.
    pub sync_refused_connections_total: Family<ReasonLabels, Counter>,
    /// Snapshots a node forced that were held back by the snapshot limit.
    pub sync_snapshots_throttled_total: Family<GroupLabels, Counter>,
    pub api_requests_total: Family<HttpLabels, Counter>,
    /// Sessions edges reported (`ReportSessions`), by outcome: accepted, skipped (an operator's
    /// key, a newer tombstone, a policy not of the session's org), refused (a call refused as
    /// a whole: out of bounds, or over the node's rate).
    pub sync_reported_sessions_total: Family<OutcomeLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let sync_propagation_seconds =
            Family::<GroupLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(propagation::BOUNDS)
            });
        registry.register(
            "sync_propagation_seconds",
            "Seconds from the commit of a revision to its ACK by a node",
            sync_propagation_seconds.clone(),
        );
        let sync_connected_streams = Family::default();
        registry.register(
            "sync_connected_streams",
            "Watch streams open on this replica",
            sync_connected_streams.clone(),
        );
        let sync_snapshots_total = Family::default();
        registry.register(
            "sync_snapshots",
            "Snapshots sent, by reason",
            sync_snapshots_total.clone(),
        );
        let sync_nacks_total = Family::default();
        registry.register(
            "sync_nacks",
            "NACKs received from nodes",
            sync_nacks_total.clone(),
        );
        let sync_head_revision = Gauge::default();
        registry.register(
            "sync_head_revision",
            "Newest revision this replica has read from the change log",
            sync_head_revision.clone(),
        );
        let joins_total = Family::default();
        registry.register(
            "sync_joins",
            "Join attempts by outcome",
            joins_total.clone(),
        );
        let sync_refused_connections_total = Family::default();
        registry.register(
            "sync_refused_connections",
            "Sync connections closed at accept because a cap was reached",
            sync_refused_connections_total.clone(),
        );
        let sync_snapshots_throttled_total = Family::default();
        registry.register(
            "sync_snapshots_throttled",
            "Snapshots forced by a node that were delayed by the snapshot limit",
            sync_snapshots_throttled_total.clone(),
        );
        let api_requests_total = Family::default();
        registry.register(
            "api_requests",
            "Management API requests",
            api_requests_total.clone(),
        );
        let sync_reported_sessions_total = Family::default();
        registry.register(
            "sync_reported_sessions",
            "Sessions reported by edges, by outcome (accepted, skipped, refused)",
            sync_reported_sessions_total.clone(),
        );
        Self {
            registry,
            sync_propagation_seconds,
            propagation: propagation::PropagationCounts::default(),
            sync_connected_streams,
            sync_snapshots_total,
            sync_nacks_total,
            sync_head_revision,
            joins_total,
            sync_refused_connections_total,
            sync_snapshots_throttled_total,
            api_requests_total,
            sync_reported_sessions_total,
        }
    }

    /// Records commit → ACK times of one node of `group`, in both histograms.
    pub fn observe_propagation(&self, group: &GroupLabels, seconds: impl IntoIterator<Item = f64>) {
        // The family's guard is dropped before this returns, so callers may await after.
        let histogram = self.sync_propagation_seconds.get_or_create(group);
        for s in seconds {
            histogram.observe(s);
            self.propagation.observe(&group.group, s);
        }
    }

    /// Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
