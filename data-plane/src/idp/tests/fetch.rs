use std::time::{Duration, Instant};

use super::server::{Reply, serve};
use super::{jwks, quick};
use crate::idp::{Idp, IdpConfig, IdpError, What, Why};

#[tokio::test]
async fn a_provider_that_never_answers_is_unavailable_within_the_timeout() {
    let srv = serve(|_| Reply::Silent).await;
    let idp = Idp::new(quick());
    let t = Instant::now();
    let got = idp.key_set("api", &srv.url("/jwks"), None).await;
    assert_eq!(got.unwrap_err(), IdpError::Unavailable(Why::Timeout));
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    // Within the refetch interval the failure is answered without another call.
    let t = Instant::now();
    let again = idp.key_set("api", &srv.url("/jwks"), None).await;
    assert_eq!(again.unwrap_err(), IdpError::Unavailable(Why::Timeout));
    assert!(t.elapsed() < Duration::from_millis(50));
    assert_eq!(srv.hits(), 1);
}

#[tokio::test]
async fn oversized_bodies_are_refused_declared_or_streamed() {
    let cfg = IdpConfig {
        max_body: 1000,
        ..quick()
    };
    let big = serve(|_| {
        Reply::Json(
            200,
            format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(2000)),
        )
    })
    .await;
    let idp = Idp::new(cfg.clone());
    assert_eq!(
        idp.key_set("api", &big.url("/jwks"), None)
            .await
            .unwrap_err(),
        IdpError::BadResponse(What::TooLarge)
    );
    let endless = serve(|_| Reply::Endless).await;
    let t = Instant::now();
    assert_eq!(
        idp.key_set("api", &endless.url("/jwks"), None)
            .await
            .unwrap_err(),
        IdpError::BadResponse(What::TooLarge)
    );
    assert!(t.elapsed() < Duration::from_millis(400));
    assert_eq!(
        idp.stats
            .fetch_too_large
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test]
async fn redirects_are_not_followed_and_urls_are_checked() {
    let srv = serve(|_| {
        Reply::Raw(
            302,
            "location: http://127.0.0.1:1/elsewhere\r\ncontent-length: 0\r\n\r\n".into(),
        )
    })
    .await;
    let idp = Idp::new(quick());
    assert_eq!(
        idp.key_set("api", &srv.url("/jwks"), None)
            .await
            .unwrap_err(),
        IdpError::Refused(302)
    );
    assert_eq!(srv.hits(), 1);
    for bad in [
        "ftp://x/jwks",
        "/jwks",
        "http://user:pw@127.0.0.1/jwks",
        "not a url",
        "",
    ] {
        assert_eq!(
            idp.key_set("api", bad, None).await.unwrap_err(),
            IdpError::BadUrl,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn the_breaker_opens_after_consecutive_outages_and_recovers() {
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = healthy.clone();
    let srv = serve(move |_| {
        if h.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::Json(200, jwks(&["k"]))
        } else {
            Reply::Json(503, "{}".into())
        }
    })
    .await;
    let idp = Idp::new(IdpConfig {
        breaker_failures: 3,
        breaker_open: Duration::from_millis(300),
        ..quick()
    });
    for path in ["/a", "/b", "/c"] {
        assert_eq!(
            idp.key_set("api", &srv.url(path), None).await.unwrap_err(),
            IdpError::Unavailable(Why::ServerError(503))
        );
    }
    let t = Instant::now();
    assert_eq!(
        idp.key_set("api", &srv.url("/d"), None).await.unwrap_err(),
        IdpError::Unavailable(Why::BreakerOpen)
    );
    assert!(t.elapsed() < Duration::from_millis(50));
    assert_eq!(srv.hits(), 3, "an open breaker makes no call");
    assert_eq!(
        idp.stats
            .breaker_opens
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(idp.key_set("api", &srv.url("/e"), None).await.is_ok());
    assert!(idp.key_set("api", &srv.url("/f"), None).await.is_ok());
    assert_eq!(srv.hits(), 5);
    let mut out = String::new();
    idp.render(&mut out);
    assert!(
        out.contains("portcullis_gateway_idp_breaker_opens_total 1"),
        "{out}"
    );
    assert!(out.contains("portcullis_gateway_idp_fetches_total{outcome=\"breaker_open\"} 1"));
}

#[tokio::test]
async fn a_refusing_provider_does_not_open_the_breaker() {
    let srv = serve(|_| Reply::Json(404, "{}".into())).await;
    let idp = Idp::new(IdpConfig {
        breaker_failures: 2,
        ..quick()
    });
    for i in 0..4 {
        assert_eq!(
            idp.key_set("api", &srv.url(&format!("/{i}")), None)
                .await
                .unwrap_err(),
            IdpError::Refused(404)
        );
    }
    assert_eq!(srv.hits(), 4);
}

#[tokio::test]
async fn callers_that_go_away_leave_nothing_behind() {
    let srv = serve(|_| Reply::Silent).await;
    let idp = Idp::new(IdpConfig {
        breaker_failures: 1,
        breaker_open: Duration::from_millis(50),
        ..quick()
    });
    for i in 0..20 {
        let url = srv.url(&format!("/{i}"));
        let _ =
            tokio::time::timeout(Duration::from_millis(5), idp.key_set("api", &url, None)).await;
    }
    assert_eq!(idp.jwks_flights.len(), 0);
    // None of those calls ended, so none counted as an outage: the breaker is closed.
    assert_eq!(
        idp.stats
            .breaker_opens
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        idp.key_set("api", &srv.url("/last"), None)
            .await
            .unwrap_err(),
        IdpError::Unavailable(Why::Timeout)
    );
    assert_eq!(
        idp.stats
            .breaker_opens
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
