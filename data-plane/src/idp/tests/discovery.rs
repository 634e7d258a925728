use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use super::quick;
use super::server::{Reply, serve};
use crate::idp::{Idp, IdpError, What};

#[tokio::test]
async fn discovery_returns_the_jwks_uri_of_the_issuer_it_names() {
    let port = Arc::new(AtomicU16::new(0));
    let p = port.clone();
    let srv = serve(move |req| {
        let issuer = format!("http://127.0.0.1:{}", p.load(Ordering::SeqCst));
        match req.path.as_str() {
            "/good/.well-known/openid-configuration" => Reply::Json(
                200,
                format!(r#"{{"issuer":"{issuer}/good","jwks_uri":"{issuer}/keys"}}"#),
            ),
            "/evil/.well-known/openid-configuration" => Reply::Json(
                200,
                format!(r#"{{"issuer":"https://other.example","jwks_uri":"{issuer}/keys"}}"#),
            ),
            "/nouri/.well-known/openid-configuration" => Reply::Json(
                200,
                format!(r#"{{"issuer":"{issuer}/nouri","jwks_uri":"file:///etc/passwd"}}"#),
            ),
            _ => Reply::Json(404, "{}".into()),
        }
    })
    .await;
    port.store(srv.addr.port(), Ordering::SeqCst);
    let idp = Idp::new(quick());
    let uri = idp.discover_jwks_uri(&srv.url("/good/")).await.unwrap();
    assert_eq!(&*uri, srv.url("/keys"));
    idp.discover_jwks_uri(&srv.url("/good/")).await.unwrap();
    assert_eq!(srv.hits(), 1, "cached");
    assert_eq!(
        idp.discover_jwks_uri(&srv.url("/evil")).await.unwrap_err(),
        IdpError::IssuerMismatch
    );
    assert_eq!(
        idp.discover_jwks_uri(&srv.url("/nouri")).await.unwrap_err(),
        IdpError::BadResponse(What::Field("jwks_uri"))
    );
    assert_eq!(idp.stats.discovery_mismatches.load(Ordering::Relaxed), 1);
}
