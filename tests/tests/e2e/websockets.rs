//! WebSockets (HTTP/1.1 Upgrade) through the gateway, between two independent implementations
//! (Python's `websockets` as client and as echo upstream, `py/ws_client.py` and
//! `py/ws_server.py`): authentication before the upgrade, echo of text, binary and large
//! messages, reconnects (tyk#1375), many at once (tyk#2708), plain requests to the same path
//! (tyk#1771), refusals passed through unchanged (tyk PR#4918), `--disable-websockets`, and
//! the idle timeout of a tunnel.

use std::time::Duration;

use portcullis_data_plane::proxy::ClientLimits;
use portcullis_tests::DpOptions;
use portcullis_tests::idp_stack::{Stack, api};
use portcullis_tests::peers::{PyPeer, WS_CLIENT, WS_SERVER, py_client};
use portcullis_tests::traffic::{LocalhostCert, key_for, stack_with};
use serde_json::{Value, json};

/// A gateway with `limits`, a WebSocket upstream behind the auth-token API `/ws/`, and a key.
async fn setup(limits: ClientLimits) -> (Stack, PyPeer, String) {
    let upstream = PyPeer::start(WS_SERVER, &[]).await;
    let mut s = stack_with(DpOptions {
        client_limits: Some(limits),
        ..Default::default()
    })
    .await;
    s.create(&[api("ws", &upstream.url("/"), json!({}))], &[])
        .await;
    let key = key_for(&s.cp, &["ws"]).await;
    (s, upstream, key)
}

fn ws_url(s: &Stack, path: &str) -> String {
    format!("ws://{}{path}", s.dp.proxy_addr)
}

/// The requests the upstream saw (asked directly, not through the gateway).
async fn seen(upstream: &PyPeer) -> Vec<Value> {
    reqwest::get(upstream.url("/_seen"))
        .await
        .expect("upstream reachable")
        .json()
        .await
        .expect("JSON list")
}

fn header<'a>(request: &'a Value, name: &str) -> Option<&'a str> {
    request["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

#[tokio::test]
async fn an_authenticated_websocket_echoes_text_binary_and_a_mebibyte() {
    let (s, upstream, key) = setup(ClientLimits::default()).await;
    let url = ws_url(&s, "/ws/echo");

    let got = py_client(WS_CLIENT, json!({"op": "handshake", "url": url})).await;
    assert_eq!(got["status"], 401, "no key, no upgrade: {got}");
    let body: Value = serde_json::from_str(got["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "Authorization field missing", "{got}");
    let got = py_client(
        WS_CLIENT,
        json!({"op": "handshake", "url": url, "headers": {"Authorization": "not-a-key"}}),
    )
    .await;
    assert_eq!(got["status"], 403, "unknown key: {got}");
    let body: Value = serde_json::from_str(got["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "Access to this API has been disallowed");
    assert!(
        seen(&upstream).await.is_empty(),
        "refused requests never reach the upstream"
    );

    let got = py_client(
        WS_CLIENT,
        json!({"op": "echo", "url": url, "headers": {"Authorization": key},
               "messages": [{"text": "hello"}, {"binary": 16}, {"binary": 1 << 20},
                            {"text": "é ✓ after the big one"}]}),
    )
    .await;
    assert_eq!(
        got,
        json!({"status": 101, "echoed": [true, true, true, true]}),
        "every message comes back as sent"
    );
    let requests = seen(&upstream).await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["path"], "/echo", "listen path stripped");
    assert_eq!(
        header(&requests[0], "upgrade").map(str::to_ascii_lowercase),
        Some("websocket".into())
    );
    assert!(
        header(&requests[0], "sec-websocket-key").is_some(),
        "the handshake headers reach the upstream: {:?}",
        requests[0]
    );
}

#[tokio::test]
async fn reconnects_and_plain_requests_to_the_same_path_keep_working() {
    let (s, upstream, key) = setup(ClientLimits::default()).await;
    let got = py_client(
        WS_CLIENT,
        json!({"op": "held_open", "url": ws_url(&s, "/ws/echo"),
               "plain_url": s.dp.url("/ws/echo"), "headers": {"Authorization": key}}),
    )
    .await;
    assert_eq!(
        (got["plain_status"].as_i64(), &got["a"], &got["b"]),
        (Some(200), &json!([true, true]), &json!([true])),
        "a plain GET while a tunnel is open (tyk#1771), then a second connection after the \
         first closed (tyk#1375): {got}"
    );
    let plain: Value = serde_json::from_str(got["plain_body"].as_str().unwrap()).unwrap();
    assert_eq!(plain, json!({"plain": true, "path": "/echo"}));

    // And again, from a fresh client process.
    let got = py_client(
        WS_CLIENT,
        json!({"op": "echo", "url": ws_url(&s, "/ws/echo"), "headers": {"Authorization": key},
               "messages": [{"text": "third"}]}),
    )
    .await;
    assert_eq!(got["echoed"], json!([true]), "{got}");
    let requests = seen(&upstream).await;
    let upgrades = requests
        .iter()
        .filter(|r| header(r, "upgrade").is_some())
        .count();
    assert_eq!(
        (requests.len(), upgrades),
        (4, 3),
        "three upgrades and one plain GET: {requests:?}"
    );
}

#[tokio::test]
async fn fifty_concurrent_upgrades_all_echo() {
    let (s, _upstream, key) = setup(ClientLimits::default()).await;
    let got = py_client(
        WS_CLIENT,
        json!({"op": "concurrent", "n": 50, "url": ws_url(&s, "/ws/echo"),
               "headers": {"Authorization": key}}),
    )
    .await;
    assert_eq!(
        got["ok"], 50,
        "every connection, all open at once, echoes (tyk#2708): {got}"
    );
}

#[tokio::test]
async fn an_upstream_that_refuses_the_upgrade_is_answered_unchanged() {
    let (s, _upstream, key) = setup(ClientLimits::default()).await;
    let got = py_client(
        WS_CLIENT,
        json!({"op": "handshake", "url": ws_url(&s, "/ws/refuse"),
               "headers": {"Authorization": key}}),
    )
    .await;
    assert_eq!(
        (
            got["status"].as_i64(),
            got["body"].as_str(),
            got["headers"]["x-refused-by"].as_str()
        ),
        (
            Some(403),
            Some("upgrade refused by upstream"),
            Some("ws-upstream")
        ),
        "the upstream's refusal reaches the client as it was sent (tyk PR#4918): {got}"
    );

    let got = py_client(
        WS_CLIENT,
        json!({"op": "refused_then_plain", "url": ws_url(&s, "/"),
               "refuse_path": "/ws/refuse", "plain_path": "/ws/plain",
               "headers": {"Authorization": key}}),
    )
    .await;
    assert_eq!(got["refused"]["status"], 403, "{got}");
    assert_eq!(got["refused"]["body"], "upgrade refused by upstream");
    assert_eq!(
        (
            got["plain_status"].as_i64(),
            got["same_connection"].as_bool()
        ),
        (Some(200), Some(true)),
        "after a refused upgrade the client connection carries the next request: {got}"
    );
}

#[tokio::test]
async fn with_websockets_disabled_the_upgrade_is_a_plain_request() {
    let (s, upstream, key) = setup(ClientLimits {
        websockets: false,
        ..Default::default()
    })
    .await;
    let got = py_client(
        WS_CLIENT,
        json!({"op": "handshake", "url": ws_url(&s, "/ws/echo"),
               "headers": {"Authorization": key}}),
    )
    .await;
    assert_eq!(
        got["status"], 200,
        "no tunnel: the upstream's answer: {got}"
    );
    let body: Value = serde_json::from_str(got["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"plain": true, "path": "/echo"}));
    let requests = seen(&upstream).await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        header(&requests[0], "upgrade"),
        None,
        "the Upgrade header is not forwarded: {:?}",
        requests[0]
    );
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_after_the_upgrade_idle_timeout() {
    let (s, _upstream, key) = setup(ClientLimits {
        upgrade_idle_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    // Neither side pings, so after the last echo no byte moves; the client waits far longer
    // than the timeout for the close. Before that, 20 echoes a tenth of the timeout apart
    // keep the tunnel open for twice the timeout.
    let got = py_client(
        WS_CLIENT,
        json!({"op": "idle", "url": ws_url(&s, "/ws/echo"), "active": 20, "interval": 0.1,
               "wait": 60, "headers": {"Authorization": key}}),
    )
    .await;
    assert_eq!(
        got,
        json!({"active": vec![true; 20], "closed": true}),
        "a busy tunnel stays open; the gateway closes it once idle"
    );
}

#[tokio::test]
async fn an_upgrade_to_an_upstream_that_is_down_is_answered_502() {
    let (s, mut upstream, key) = setup(ClientLimits::default()).await;
    upstream.stop();
    let got = py_client(
        WS_CLIENT,
        json!({"op": "handshake", "url": ws_url(&s, "/ws/echo"),
               "headers": {"Authorization": key}}),
    )
    .await;
    assert_eq!(got["status"], 502, "{got}");
    let body: Value = serde_json::from_str(got["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "There was a problem proxying the request");
}

#[tokio::test]
async fn a_close_from_the_upstream_reaches_the_client_with_its_code() {
    let (s, _upstream, key) = setup(ClientLimits::default()).await;
    let got = py_client(
        WS_CLIENT,
        json!({"op": "server_close", "url": ws_url(&s, "/ws/echo"),
               "headers": {"Authorization": key}}),
    )
    .await;
    assert_eq!(got, json!({"code": 4000, "reason": "bye"}));
}

#[tokio::test]
async fn a_websocket_over_the_tls_listener_echoes() {
    let (mut s, upstream, _) = setup(ClientLimits::default()).await;
    let cert = LocalhostCert::upload(&s.cp).await;
    let mut wss = api("wss", &upstream.url("/"), json!({}));
    wss["certificates"] = json!([cert.id]);
    s.create(&[wss], &[]).await;
    let key = key_for(&s.cp, &["wss"]).await;
    cert.wait_served(&s.dp).await;
    let got = py_client(
        WS_CLIENT,
        json!({"op": "echo", "url": format!("wss://localhost:{}/wss/echo", s.dp.tls_addr.port()),
               "ca_file": cert.ca_file, "headers": {"Authorization": key},
               "messages": [{"text": "over tls"}, {"binary": 1 << 16}]}),
    )
    .await;
    assert_eq!(got, json!({"status": 101, "echoed": [true, true]}));
}

/// A raw upgrade request through curl: its status line and body.
async fn raw_upgrade(s: &Stack, path: &str, key: &str, upgrade: &str) -> (String, String) {
    let (_, out, _) = portcullis_tests::peers::curl(vec![
        "-i".into(),
        "--max-time".into(),
        "5".into(),
        "-H".into(),
        format!("Authorization: {key}"),
        "-H".into(),
        "Connection: Upgrade".into(),
        "-H".into(),
        format!("Upgrade: {upgrade}"),
        "-H".into(),
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".into(),
        "-H".into(),
        "Sec-WebSocket-Version: 13".into(),
        format!("http://{}{path}", s.dp.proxy_addr),
    ])
    .await;
    let status = out.lines().next().unwrap_or("").trim().to_owned();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn a_101_that_does_not_answer_the_handshake_opens_no_tunnel() {
    for named in ["websocket", "-", "something-else"] {
        let upstream = PyPeer::start(portcullis_tests::peers::BAD_UPGRADE_SERVER, &[named]).await;
        let mut s = stack_with(DpOptions::default()).await;
        s.create(&[api("bad", &upstream.url("/"), json!({}))], &[])
            .await;
        let key = key_for(&s.cp, &["bad"]).await;
        let (status, body) = raw_upgrade(&s, "/bad/x", &key, "websocket").await;
        assert!(status.contains(" 502"), "{named}: {status} {body}");
        assert!(
            body.contains("There was a problem proxying the request"),
            "{named}: {body}"
        );
        assert!(
            !body.contains("smuggled"),
            "{named}: nothing past the 101 reaches the client"
        );
    }
}

#[tokio::test]
async fn an_upgrade_to_h2c_reaches_the_upstream_as_a_plain_request() {
    let mut s = Stack::start().await;
    let target = s.echo.url();
    s.create(&[api("h2cup", &format!("{target}/"), json!({}))], &[])
        .await;
    let key = key_for(&s.cp, &["h2cup"]).await;
    let (status, body) = raw_upgrade(&s, "/h2cup/x", &key, "h2c").await;
    assert!(status.contains(" 200"), "{status} {body}");
    let seen: Value = serde_json::from_str(&body).expect("the echo's JSON");
    let headers = seen["headers"].to_string().to_ascii_lowercase();
    assert!(
        !headers.contains("\"upgrade\""),
        "no Upgrade reaches the upstream: {headers}"
    );
    assert!(!headers.contains("h2c"), "{headers}");
}
