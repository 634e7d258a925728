//! Custom auth through Tyk's gRPC coprocess protocol, against a plugin server written with
//! Python's grpcio from the same `.proto` files: allow (its session's rate limit applies),
//! deny (its status, body and headers reach the client), request header changes (the upstream
//! sees them), timeouts and the circuit breaker, a server that is down, and the id_extractor
//! cache.

use std::time::Duration;

use portcullis_data_plane::plugins::PluginConfig;
use portcullis_tests::DpOptions;
use portcullis_tests::coprocess::PluginServer;
use portcullis_tests::idp_stack::{Stack, api, assert_error, assert_upstream};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A gRPC plugin-auth API at `/{id}/` whose hook is `hook`, with `fields` merged in.
fn plugin_api(id: &str, target: &str, hook: &str, fields: Value) -> Value {
    let mut a = api(
        id,
        target,
        json!({"custom_plugin_auth_enabled": true,
               "custom_middleware": {"driver": "grpc", "auth_check": {"name": hook}}}),
    );
    if let (Some(a), Some(fields)) = (a.as_object_mut(), fields.as_object()) {
        for (k, v) in fields {
            a.insert(k.clone(), v.clone());
        }
    }
    a
}

/// A regional gateway (rate limits counted in Redis) using `server` as its plugin server.
async fn stack(server: Option<String>, timeout: Duration) -> Stack {
    portcullis_tests::traffic::stack_with(DpOptions {
        redis_url: Some(portcullis_tests::stack::redis_url()),
        redis_prefix: Some(format!("e2e:{}:eu:", uuid::Uuid::new_v4().simple())),
        plugins: PluginConfig {
            coprocess_grpc_server: server,
            coprocess_timeout: timeout,
            middleware_path: None,
        },
        ..Default::default()
    })
    .await
}

fn header<'a>(seen: &'a portcullis_tests::Received, name: &str) -> Option<&'a str> {
    seen.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn the_plugins_session_and_header_changes_apply() {
    let plugin = PluginServer::start().await;
    let mut s = stack(Some(plugin.address()), Duration::from_secs(2)).await;
    let target = s.target();
    s.create(&[plugin_api("ga", &target, "allow", json!({}))], &[])
        .await;

    let got = s
        .get(
            "/ga/x",
            &[("Authorization", "good-1"), ("X-Remove-Me", "secret")],
        )
        .await;
    let seen = assert_upstream(&got);
    assert_eq!(header(&seen, "x-plugin-user"), Some("good-1"));
    assert_eq!(header(&seen, "x-plugin-method"), Some("GET"));
    assert_eq!(header(&seen, "x-remove-me"), None, "the plugin deleted it");

    // The session says 3 requests per minute: Portcullis counts them under the token.
    for _ in 0..2 {
        assert_upstream(&s.get("/ga/x", &[("Authorization", "good-1")]).await);
    }
    assert_error(
        &s.get("/ga/x", &[("Authorization", "good-1")]).await,
        429,
        "Rate Limit Exceeded",
    );
    // Another token is another session with its own limit.
    assert_upstream(&s.get("/ga/x", &[("Authorization", "good-2")]).await);
    // Without `id_extractor`, the plugin is asked every time (5 requests + 1 refused by the limit).
    assert_eq!(plugin.calls("allow"), 5);
}

#[tokio::test]
async fn the_plugins_refusal_reaches_the_client() {
    let plugin = PluginServer::start().await;
    let mut s = stack(Some(plugin.address()), Duration::from_secs(2)).await;
    let target = s.target();
    s.create(&[plugin_api("gd", &target, "allow", json!({}))], &[])
        .await;
    let resp = reqwest::Client::new()
        .get(s.dp.url("/gd/x"))
        .header("Authorization", "forged")
        .send()
        .await
        .expect("gateway reachable");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["x-plugin-reason"], "bad-token");
    let body: Value = resp.json().await.expect("a JSON error");
    assert_eq!(body, json!({"error": "plugin says no"}));
    // No credential at all: the plugin decides that too.
    assert_error(&s.get("/gd/x", &[]).await, 403, "plugin says no");
}

#[tokio::test]
async fn a_slow_plugin_is_a_503_and_the_breaker_then_answers_alone() {
    let plugin = PluginServer::start().await;
    let mut s = stack(Some(plugin.address()), Duration::from_millis(300)).await;
    let target = s.target();
    s.create(&[plugin_api("gs", &target, "slow", json!({}))], &[])
        .await;
    for _ in 0..5 {
        assert_error(
            &s.get("/gs/x", &[("Authorization", "good-1")]).await,
            503,
            "custom auth plugin \"slow\" is unavailable: the plugin server did not answer in time",
        );
    }
    // Five timeouts in a row open the breaker: the plugin is not called any more.
    assert_error(
        &s.get("/gs/x", &[("Authorization", "good-1")]).await,
        503,
        "custom auth plugin \"slow\" is unavailable: the plugin server is failing; calls are paused",
    );
    assert_eq!(plugin.calls("slow"), 5);
}

#[tokio::test]
async fn a_plugin_server_that_is_down_is_a_503() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let mut s = stack(
        Some(format!("tcp://127.0.0.1:{port}")),
        Duration::from_secs(1),
    )
    .await;
    let target = s.target();
    s.create(&[plugin_api("gx", &target, "allow", json!({}))], &[])
        .await;
    assert_error(
        &s.get("/gx/x", &[("Authorization", "good-1")]).await,
        503,
        "custom auth plugin \"allow\" is unavailable: the plugin server cannot be reached",
    );
}

#[tokio::test]
async fn without_a_plugin_server_plugin_apis_are_503() {
    let mut s = stack(None, Duration::from_secs(1)).await;
    let target = s.target();
    s.create(&[plugin_api("gn", &target, "allow", json!({}))], &[])
        .await;
    assert_error(
        &s.get("/gn/x", &[("Authorization", "good-1")]).await,
        503,
        "custom auth plugin \"allow\" is unavailable: no --coprocess-grpc-server is configured",
    );
}

#[tokio::test]
async fn the_id_extractor_caches_the_plugins_session() {
    let plugin = PluginServer::start().await;
    let mut s = stack(Some(plugin.address()), Duration::from_secs(2)).await;
    let target = s.target();
    let extractor = json!({"custom_middleware": {"driver": "grpc", "auth_check": {"name": "cached"},
        "id_extractor": {"extract_from": "header", "extract_with": "value",
                         "extractor_config": {"header_name": "X-User-Id"}}}});
    s.create(&[plugin_api("gc", &target, "cached", extractor)], &[])
        .await;
    for _ in 0..2 {
        assert_upstream(
            &s.get("/gc/x", &[("Authorization", "good-9"), ("X-User-Id", "u1")])
                .await,
        );
    }
    assert_eq!(
        plugin.calls("cached"),
        1,
        "the second request used the cache"
    );
    assert_upstream(
        &s.get("/gc/x", &[("Authorization", "good-9"), ("X-User-Id", "u2")])
            .await,
    );
    assert_eq!(plugin.calls("cached"), 2, "another id asks the plugin");
    // The cached session's rate limit still counts: 3 requests of good-9 so far.
    assert_error(
        &s.get("/gc/x", &[("Authorization", "good-9"), ("X-User-Id", "u1")])
            .await,
        429,
        "Rate Limit Exceeded",
    );
    // No id: Tyk's 400.
    assert_error(
        &s.get("/gc/x", &[("Authorization", "good-9")]).await,
        400,
        "Authorization field missing",
    );
}
