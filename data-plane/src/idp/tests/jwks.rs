use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::server::{Reply, serve};
use super::{jwks, quick};
use crate::idp::{Idp, IdpConfig, IdpError, What};
use crate::jose::Family;

/// A provider serving whatever `doc` holds now.
async fn provider(doc: &Arc<Mutex<String>>) -> super::server::Server {
    let doc = doc.clone();
    serve(move |_| Reply::Json(200, doc.lock().unwrap().clone())).await
}

#[tokio::test]
async fn a_set_is_fetched_once_and_then_served_from_the_cache() {
    let doc = Arc::new(Mutex::new(jwks(&["a"])));
    let srv = provider(&doc).await;
    let idp = Idp::new(quick());
    let url = srv.url("/jwks");
    let set = idp.key_set("api", &url, Some("a")).await.unwrap();
    assert!(set.find(Some("a"), Family::Ecdsa).is_some());
    for _ in 0..5 {
        idp.key_set("api", &url, Some("a")).await.unwrap();
        idp.key_set("api", &url, None).await.unwrap();
    }
    assert_eq!(srv.hits(), 1);
    assert_eq!(idp.jwks_cached(), 1);
}

#[tokio::test]
async fn concurrent_callers_share_one_fetch() {
    let srv = serve(|_| Reply::Slow(Duration::from_millis(100), jwks(&["a"]))).await;
    let idp = Idp::new(quick());
    let url = srv.url("/jwks");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (idp, url) = (idp.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            idp.key_set("api", &url, Some("a")).await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().is_ok());
    }
    assert_eq!(srv.hits(), 1);
    assert_eq!(idp.stats.shared_calls.load(Ordering::Relaxed), 19);
    assert_eq!(idp.jwks_flights.len(), 0);
}

#[tokio::test]
async fn a_rotated_key_is_fetched_at_once_and_unknown_kids_at_most_once_per_interval() {
    let doc = Arc::new(Mutex::new(jwks(&["old"])));
    let srv = provider(&doc).await;
    let idp = Idp::new(quick());
    let url = srv.url("/jwks");
    idp.key_set("api", &url, Some("old")).await.unwrap();
    // The provider rotates; a token signed with the new key arrives after the interval.
    *doc.lock().unwrap() = jwks(&["old", "new"]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let set = idp.key_set("api", &url, Some("new")).await.unwrap();
    assert!(set.has_kid("new"));
    assert_eq!(srv.hits(), 2);
    // Random kids right after: one refetch per interval at most, the set served meanwhile.
    for kid in ["x1", "x2", "x3"] {
        let set = idp.key_set("api", &url, Some(kid)).await.unwrap();
        assert!(!set.has_kid(kid) && set.has_kid("new"));
    }
    assert_eq!(srv.hits(), 2);
    tokio::time::sleep(Duration::from_millis(250)).await;
    idp.key_set("api", &url, Some("x4")).await.unwrap();
    idp.key_set("api", &url, Some("x5")).await.unwrap();
    assert_eq!(srv.hits(), 3);
    assert_eq!(idp.stats.jwks_kid_refetches.load(Ordering::Relaxed), 2);
    assert_eq!(idp.stats.jwks_refetches_refused.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn a_document_that_does_not_parse_never_replaces_the_last_good_set() {
    let doc = Arc::new(Mutex::new(jwks(&["a"])));
    let srv = provider(&doc).await;
    let idp = Idp::new(IdpConfig {
        jwks_ttl: Duration::from_millis(100),
        ..quick()
    });
    let url = srv.url("/jwks");
    idp.key_set("api", &url, Some("a")).await.unwrap();
    for garbage in [
        "<html>oops</html>",
        r#"{"keys":[]}"#,
        r#"{"keys":[{"kty":"EC","use":"enc"}]}"#,
    ] {
        *doc.lock().unwrap() = garbage.to_owned();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let set = idp.key_set("api", &url, Some("a")).await.unwrap();
        assert!(set.has_kid("a"), "the last good set is served");
    }
    assert_eq!(srv.hits(), 4);
    assert_eq!(idp.stats.jwks_parse_failures.load(Ordering::Relaxed), 3);
    assert!(idp.stats.jwks_stale_served.load(Ordering::Relaxed) >= 3);
    // Without a good set, the parse failure is the answer.
    let fresh = Idp::new(quick());
    assert_eq!(
        fresh.key_set("api", &url, None).await.unwrap_err(),
        IdpError::BadResponse(What::KeySet)
    );
}

#[tokio::test]
async fn a_failing_provider_is_served_stale_until_max_stale() {
    let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let u = up.clone();
    let srv = serve(move |_| {
        if u.load(Ordering::SeqCst) {
            Reply::Json(200, jwks(&["a"]))
        } else {
            Reply::Json(500, "{}".into())
        }
    })
    .await;
    let idp = Idp::new(IdpConfig {
        jwks_ttl: Duration::from_millis(100),
        jwks_max_stale: Duration::from_millis(600),
        ..quick()
    });
    let url = srv.url("/jwks");
    idp.key_set("api", &url, None).await.unwrap();
    up.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(idp.key_set("api", &url, None).await.is_ok());
    // Within the interval after the failure: no new call, still the stale set.
    assert!(idp.key_set("api", &url, None).await.is_ok());
    assert_eq!(srv.hits(), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(idp.key_set("api", &url, None).await.is_err());
}

#[tokio::test]
async fn flushing_an_api_refetches_only_its_sets() {
    let doc = Arc::new(Mutex::new(jwks(&["a"])));
    let srv = provider(&doc).await;
    let idp = Idp::new(quick());
    let (one, two) = (srv.url("/one"), srv.url("/two"));
    idp.key_set("api-1", &one, None).await.unwrap();
    idp.key_set("api-2", &two, None).await.unwrap();
    assert_eq!(srv.hits(), 2);
    idp.flush_jwks(Some("api-1"));
    idp.key_set("api-1", &one, None).await.unwrap();
    idp.key_set("api-2", &two, None).await.unwrap();
    assert_eq!(srv.hits(), 3);
    // Flushing every API refetches both, within the refetch interval too.
    idp.flush_jwks(None);
    idp.key_set("api-1", &one, None).await.unwrap();
    idp.key_set("api-2", &two, None).await.unwrap();
    assert_eq!(srv.hits(), 5);
    let mut out = String::new();
    idp.render(&mut out);
    assert!(
        out.contains("portcullis_gateway_jwks_flushes_total 2"),
        "{out}"
    );
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let idp = Idp::new(quick());
    for i in 0..super::super::jwks::URLS + 50 {
        let _ = idp.plan("api", &format!("http://127.0.0.1:1/{i}"), None);
    }
    assert!(crate::idp::lock(&idp.jwks).len() <= super::super::jwks::URLS);
}
