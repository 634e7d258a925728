//! Expiry of the store's certificates: a gauge per certificate on `/metrics`, and a warning
//! in the log for those expiring within `--certificate-expiry-warning`, checked shortly after
//! each configuration is applied and again every day (docs/certificates.md).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::certs::CertStore;
use crate::shared::Shared;

/// How often the routing table is looked at for a new configuration.
const POLL: Duration = Duration::from_secs(5);
/// How often a certificate still about to expire is mentioned again.
const REPEAT: Duration = Duration::from_secs(24 * 3600);

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `portcullis_gateway_certificate_expiry_seconds{cert_id}`: seconds until the certificate's
/// notAfter, negative once expired (bare public keys have none).
pub fn render(store: &CertStore, out: &mut String) {
    let name = "portcullis_gateway_certificate_expiry_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Seconds until a store certificate expires (negative: expired).\n# TYPE {name} gauge"
    );
    let now = now_unix();
    let mut certs: Vec<_> = store.iter().filter(|c| c.not_after != 0).collect();
    certs.sort_by(|a, b| a.id.cmp(&b.id));
    for c in certs {
        let _ = writeln!(
            out,
            "{name}{{cert_id=\"{}\"}} {}",
            escape(&c.id),
            c.not_after - now
        );
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Certificates of `store` expiring before `now + window`, with their notAfter.
pub fn expiring(store: &CertStore, now: i64, window: Duration) -> Vec<(&str, i64)> {
    let limit = now.saturating_add(i64::try_from(window.as_secs()).unwrap_or(i64::MAX));
    let mut out: Vec<_> = store
        .iter()
        .filter(|c| c.not_after != 0 && c.not_after < limit)
        .map(|c| (c.id.as_str(), c.not_after))
        .collect();
    out.sort();
    out
}

/// Logs a warning per certificate about to expire: when a configuration brings it, then
/// once a day while it stays.
pub async fn watch(shared: Arc<Shared>, window: Duration) {
    let mut warned: HashMap<String, tokio::time::Instant> = HashMap::new();
    let mut seen: Option<i64> = None;
    let mut checked = tokio::time::Instant::now();
    loop {
        // Every install moves the revision; holding the table itself would keep a replaced
        // configuration (and its keys) alive.
        let revision = shared.stats.applied_revision.load(Ordering::Acquire);
        let changed = seen != Some(revision) && shared.is_ready();
        if changed || checked.elapsed() >= REPEAT {
            let table = shared.table.load_full();
            checked = tokio::time::Instant::now();
            let now = now_unix();
            let soon = expiring(&table.certs, now, window);
            warned.retain(|id, _| soon.iter().any(|(s, _)| s == id));
            for (id, not_after) in soon {
                if warned.get(id).is_some_and(|at| at.elapsed() < REPEAT) {
                    continue;
                }
                let at = chrono::DateTime::from_timestamp(not_after, 0)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default();
                if not_after < now {
                    tracing::warn!(cert_id = %id, not_after = %at, "store certificate has expired; it is no longer served");
                } else {
                    tracing::warn!(cert_id = %id, not_after = %at, days_left = (not_after - now) / 86_400, "store certificate expires soon");
                }
                warned.insert(id.to_owned(), tokio::time::Instant::now());
            }
            seen = Some(revision);
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use crate::certs::StoreCert;

    use super::*;

    fn cert(id: &str, not_after: i64) -> Arc<StoreCert> {
        Arc::new(StoreCert {
            id: id.into(),
            chain: Vec::new(),
            fingerprint: [0; 32],
            spki_sha256: [0; 32],
            not_after,
            is_ca: false,
            certified_key: None,
        })
    }

    #[test]
    fn certificates_inside_the_window_are_reported_and_rendered_with_seconds_left() {
        let now = now_unix();
        let store = CertStore::new([
            cert("soon", now + 3_600),
            cert("gone", now - 10),
            cert("later", now + 90 * 86_400),
            cert("public-key", 0),
        ]);
        let ids: Vec<&str> = expiring(&store, now, Duration::from_secs(30 * 86_400))
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, ["gone", "soon"]);
        let mut out = String::new();
        render(&store, &mut out);
        assert!(out.contains("# TYPE portcullis_gateway_certificate_expiry_seconds gauge"));
        let line = out
            .lines()
            .find(|l| {
                l.starts_with("portcullis_gateway_certificate_expiry_seconds{cert_id=\"gone\"}")
            })
            .unwrap();
        assert!(line.ends_with(" -10") || line.ends_with(" -11"), "{line}");
        assert!(
            !out.contains("public-key"),
            "bare public keys have no expiry"
        );
    }
}
