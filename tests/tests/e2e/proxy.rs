//! What clients and upstreams see through the gateway.

use std::time::Duration;

use portcullis_tests::{Cp, Dp, DpOptions, EchoUpstream, Received, TestDb, keyless_api};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn stack() -> (TestDb, Cp, Dp, EchoUpstream) {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let token = cp.token("default").await;
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(token),
            upstream_timeout: Some(Duration::from_millis(500)),
            ..Default::default()
        },
    )
    .await
    .expect("gateway starts");
    let echo = EchoUpstream::start().await;
    (db, cp, dp, echo)
}

#[tokio::test]
async fn create_update_delete_an_api_and_check_what_the_upstream_received() {
    let (_db, cp, dp, echo) = stack().await;
    assert_eq!(
        dp.admin("/ready").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready before the first configuration"
    );
    cp.create_api(&keyless_api(
        "echo",
        "/echo/",
        &format!("{}/base/", echo.url()),
    ))
    .await;
    dp.wait_for_status("/echo/hello", 200).await;
    assert_eq!(dp.admin("/ready").await, StatusCode::OK);

    let client = reqwest::Client::new();
    let resp = client
        .post(dp.url("/echo/items/7?colour=blue&n=1"))
        .header("X-Custom", "kept")
        .header("Connection", "keep-alive, X-Hop")
        .header("X-Hop", "must not pass")
        .header("X-Forwarded-For", "10.1.2.3")
        .body("payload-bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-upstream"], "echo");
    assert!(
        resp.headers().get("keep-alive").is_none(),
        "hop-by-hop response header removed"
    );
    let got: Received = resp.json().await.unwrap();
    assert_eq!(got.method, "POST");
    assert_eq!(
        got.path, "/base/items/7",
        "listen path stripped and joined with the target path"
    );
    assert_eq!(got.query.as_deref(), Some("colour=blue&n=1"));
    assert_eq!(got.body, "payload-bytes");
    assert_eq!(got.header("x-custom"), Some("kept"));
    assert_eq!(
        got.header("x-hop"),
        None,
        "header named in Connection removed"
    );
    assert_eq!(got.header("x-forwarded-for"), Some("10.1.2.3, 127.0.0.1"));
    assert_eq!(got.header("x-forwarded-proto"), Some("http"));
    assert_eq!(got.header("host"), Some(echo.addr.to_string().as_str()));

    // Moving the listen path: the old one is gone, the new one answers.
    let mut moved = keyless_api("echo", "/moved/", &format!("{}/base/", echo.url()));
    moved["proxy"]["strip_listen_path"] = json!(false);
    let (status, body) = cp.call(Method::PUT, "/tyk/apis/echo", Some(&moved)).await;
    assert_eq!(
        (status, body["action"].as_str()),
        (StatusCode::OK, Some("modified"))
    );
    let body = dp.wait_for_status("/moved/x", 200).await;
    let got: Received = serde_json::from_str(&body).unwrap();
    assert_eq!(
        got.path, "/base/moved/x",
        "without strip_listen_path the whole path is appended"
    );
    let (status, body) = dp.get("/echo/hello").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "No API found for this path"
    );

    let (status, _) = cp.call(Method::DELETE, "/tyk/apis/echo", None).await;
    assert_eq!(status, StatusCode::OK);
    dp.wait_for_status("/moved/x", 404).await;
}

#[tokio::test]
async fn upstream_errors_timeouts_and_protected_apis_answer_with_json_errors() {
    let (_db, cp, dp, echo) = stack().await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    cp.create_api(&keyless_api("down", "/down/", &format!("http://{closed}/")))
        .await;
    let mut slow = keyless_api("slow", "/slow/", &echo.url());
    slow["proxy"]["strip_listen_path"] = json!(false);
    slow["proxy"]["timeout"] = json!(0.2);
    cp.create_api(&slow).await;
    let mut keyed = keyless_api("keyed", "/keyed/", &echo.url());
    keyed["use_keyless"] = json!(false);
    cp.create_api(&keyed).await;
    dp.wait_for_revision(3).await;

    let error_of = |body: String| {
        serde_json::from_str::<Value>(&body).unwrap()["error"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (status, body) = dp.get("/down/x").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_of(body), "There was a problem proxying the request");
    let (status, body) = dp.get("/slow/x").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(error_of(body), "Upstream service reached hard timeout.");
    let (status, body) = dp.get("/keyed/x").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(body), "Authorization field missing");
    let (status, body) = dp.get("/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(body), "No API found for this path");
}

#[tokio::test]
async fn http2_clients_domains_and_connection_reuse() {
    let (_db, cp, dp, echo) = stack().await;
    let mut bound = keyless_api("eu", "/svc/", &format!("{}/eu/", echo.url()));
    bound["domain"] = json!("eu.example.com");
    cp.create_api(&bound).await;
    cp.create_api(&keyless_api(
        "any",
        "/svc/",
        &format!("{}/any/", echo.url()),
    ))
    .await;
    dp.wait_for_revision(2).await;

    // HTTP/2 routes by :authority, so the client resolves the API's host name to the gateway.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("eu.example.com", dp.proxy_addr)
        .build()
        .unwrap();
    let resp = h2
        .get(format!(
            "http://eu.example.com:{}/svc/a",
            dp.proxy_addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let got: Received = resp.json().await.unwrap();
    assert_eq!(got.path, "/eu/a", "the API bound to the host wins");
    let got: Received = h2
        .get(dp.url("/svc/a"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        got.path, "/any/a",
        "other hosts fall back to the host-less API"
    );
    let h1 = reqwest::Client::new();
    let got: Received = h1
        .get(dp.url("/svc/a"))
        .header("host", "EU.example.com")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        got.path, "/eu/a",
        "HTTP/1.1 routes by the Host header, case-insensitively"
    );

    // Sequential requests reuse the upstream connection.
    let before = echo.connections();
    for _ in 0..20 {
        let (status, _) = dp.get("/svc/b").await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(
        echo.connections() - before <= 2,
        "upstream connections are pooled: {} new",
        echo.connections() - before
    );
}
