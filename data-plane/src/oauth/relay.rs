//! The grant endpoints that need the global store (token, revoke, revoke_all,
//! authorize-client): relayed to the control plane with `Sync.Oauth`, answered with its status
//! (errors mapped to `--oauth-error-status-code`) and body, never cached.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use portcullis_proto::sync::{FormField, OAuthRequest};
use tokio::sync::Semaphore;

use super::ErrorStatus;
use super::body::Params;
use crate::error::OAuthError;
use crate::sessions::Sessions;

/// Longest the control plane may take: a grant is never left hanging.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer passed on (token answers are a few hundred bytes).
const MAX_ANSWER: usize = 64 * 1024;
/// Longest `Authorization` header relayed (HTTP Basic client authentication).
const MAX_AUTHORIZATION: usize = 4096;

/// Relays in flight at once from this edge: a flood of token requests waits here (then is
/// answered 503) instead of piling up on the control plane, which checks secrets with bcrypt.
pub const MAX_IN_FLIGHT: usize = 64;
const SLOT_WAIT: Duration = Duration::from_millis(500);

/// This edge's relays: the in-flight bound and counters for `/metrics`.
pub struct Relays {
    slots: Semaphore,
    answered: AtomicU64,
    unavailable: AtomicU64,
    busy: AtomicU64,
}

impl Default for Relays {
    fn default() -> Self {
        Self {
            slots: Semaphore::new(MAX_IN_FLIGHT),
            answered: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
            busy: AtomicU64::new(0),
        }
    }
}

impl Relays {
    pub fn render(&self, out: &mut String) {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP portcullis_gateway_oauth_relays_total OAuth requests relayed to the control plane, by outcome.\n\
             # TYPE portcullis_gateway_oauth_relays_total counter"
        );
        for (outcome, v) in [
            ("answered", n(&self.answered)),
            ("unavailable", n(&self.unavailable)),
            ("busy", n(&self.busy)),
        ] {
            let _ = writeln!(
                out,
                "portcullis_gateway_oauth_relays_total{{outcome=\"{outcome}\"}} {v}"
            );
        }
    }
}

/// Relays one request and turns the control plane's answer into the client's.
pub async fn relay(
    sessions: &Sessions,
    relays: &Relays,
    mapping: ErrorStatus,
    api_id: &str,
    endpoint: &'static str,
    params: Params,
    authorization: &str,
) -> Response<Full<Bytes>> {
    if authorization.len() > MAX_AUTHORIZATION {
        return OAuthError::InvalidRequest("the Authorization header is too long")
            .into_response(mapping);
    }
    let request = OAuthRequest {
        api_id: api_id.to_owned(),
        endpoint: endpoint.to_owned(),
        form: params
            .into_inner()
            .into_iter()
            .map(|(name, value)| FormField { name, value })
            .collect(),
        authorization: authorization.to_owned(),
    };
    let Some(cp) = sessions.control_plane() else {
        relays.unavailable.fetch_add(1, Ordering::Relaxed);
        return OAuthError::Unavailable.into_response(mapping);
    };
    let Ok(Ok(_slot)) = tokio::time::timeout(SLOT_WAIT, relays.slots.acquire()).await else {
        relays.busy.fetch_add(1, Ordering::Relaxed);
        return OAuthError::Busy.into_response(mapping);
    };
    let mut client = (*cp).clone();
    let result = tokio::time::timeout(TIMEOUT, client.oauth(request)).await;
    let counter = match &result {
        Ok(Ok(_)) => &relays.answered,
        _ => &relays.unavailable,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    match result {
        Ok(Ok(answer)) => {
            let answer = answer.into_inner();
            answered(answer.status, Bytes::from(answer.body), mapping)
        }
        Ok(Err(status)) => {
            // Counted in /metrics; logged at debug so an outage does not flood the log. The
            // status names what failed on the control plane, never a secret of the request.
            tracing::debug!(api_id, endpoint, code = ?status.code(), "OAuth relay to the control plane failed");
            OAuthError::Unavailable.into_response(mapping)
        }
        Err(_) => {
            tracing::debug!(
                api_id,
                endpoint,
                "OAuth relay to the control plane timed out"
            );
            OAuthError::Unavailable.into_response(mapping)
        }
    }
}

/// The client's answer for the control plane's `(status, body)`. A status outside 200..=599 or
/// an oversized body is the control plane misbehaving: answered as an outage.
pub fn answered(status: u32, body: Bytes, mapping: ErrorStatus) -> Response<Full<Bytes>> {
    let status = u16::try_from(status)
        .ok()
        .filter(|s| (200..=599).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok());
    let Some(status) = status.filter(|_| body.len() <= MAX_ANSWER) else {
        return OAuthError::Unavailable.into_response(mapping);
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = mapping.map(status);
    super::no_store(resp.headers_mut());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_mapped_and_headers_added() {
        let body = Bytes::from_static(br#"{"error":"invalid_grant"}"#);
        let tyk = ErrorStatus::default();
        for (cp, rfc_sent, tyk_sent) in [
            (200, 200, 200),
            (400, 400, 403),
            (401, 401, 403),
            (404, 404, 403),
            (503, 503, 503),
        ] {
            let r = answered(cp, body.clone(), ErrorStatus::Rfc);
            assert_eq!(r.status().as_u16(), rfc_sent);
            assert_eq!(r.headers()["cache-control"], "no-store");
            assert_eq!(r.headers()["pragma"], "no-cache");
            assert_eq!(r.headers()["content-type"], "application/json");
            assert_eq!(answered(cp, body.clone(), tyk).status().as_u16(), tyk_sent);
        }
        let teapot = ErrorStatus::Fixed(StatusCode::IM_A_TEAPOT);
        assert_eq!(
            answered(400, body.clone(), teapot).status(),
            StatusCode::IM_A_TEAPOT
        );
    }

    #[test]
    fn a_misbehaving_control_plane_is_an_outage() {
        let ok = Bytes::from_static(b"{}");
        for status in [0, 99, 100, 199, 600, 70_000, u32::MAX] {
            assert_eq!(
                answered(status, ok.clone(), ErrorStatus::Rfc).status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{status}"
            );
        }
        let huge = Bytes::from(vec![b' '; MAX_ANSWER + 1]);
        assert_eq!(
            answered(200, huge, ErrorStatus::Rfc).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn without_a_control_plane_the_answer_is_503_at_once() {
        let sessions = Sessions::default();
        let resp = relay(
            &sessions,
            &Relays::default(),
            ErrorStatus::default(),
            "a",
            "token",
            Params::default(),
            "",
        )
        .await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_silent_control_plane_is_given_up_on_after_the_timeout() {
        use portcullis_proto::sync::sync_client::SyncClient;
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = listener.accept().await {
                conns.push(c);
            }
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let sessions = Sessions::default();
        sessions.set_control_plane(Some(SyncClient::new(channel)));
        let relays = Relays::default();
        let started = std::time::Instant::now();
        let resp = relay(
            &sessions,
            &relays,
            ErrorStatus::default(),
            "a",
            "token",
            Params::default(),
            "",
        )
        .await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let mut metrics = String::new();
        relays.render(&mut metrics);
        assert!(
            metrics.contains("portcullis_gateway_oauth_relays_total{outcome=\"unavailable\"} 1"),
            "{metrics}"
        );
        let took = started.elapsed();
        assert!(
            took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(2),
            "{took:?}"
        );
        held.abort();
    }
}
