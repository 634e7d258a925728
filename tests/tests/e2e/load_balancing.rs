//! Load balancing over `proxy.target_list` against three standard-library Python upstreams that
//! each answer their own name (`py/named_server.py`): round robin, a stopped upstream skipped
//! with no failed request, its return after the down period, every upstream down, and the
//! definitions the control plane refuses.

use std::collections::BTreeMap;
use std::time::Duration;

use portcullis_tests::idp_stack::Stack;
use portcullis_tests::peers::{NAMED_SERVER, PyPeer, STREAM_SERVER};
use portcullis_tests::{eventually, keyless_api};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn balanced_api(targets: &[String]) -> Value {
    let mut api = keyless_api("lb", "/lb/", "");
    api["proxy"]["enable_load_balancing"] = json!(true);
    api["proxy"]["target_list"] = json!(targets);
    api
}

async fn named(name: &str, port: u16) -> PyPeer {
    PyPeer::start(NAMED_SERVER, &[name, &port.to_string()]).await
}

/// `n` GETs through the gateway, one after another: how many each upstream answered; any
/// answer that is not a 200 counts under its status and body.
async fn spread(s: &Stack, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let (status, body) = s.dp.get("/lb/x").await;
        let who = if status == StatusCode::OK {
            body
        } else {
            format!("{status} {body}")
        };
        *counts.entry(who).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn requests_go_round_robin_and_skip_an_upstream_that_is_down() {
    let mut upstreams = Vec::new();
    for name in ["a", "b", "c"] {
        upstreams.push(named(name, 0).await);
    }
    let targets: Vec<String> = upstreams.iter().map(|u| u.url("/")).collect();
    let mut s = Stack::start().await;
    s.create(&[balanced_api(&targets)], &[]).await;

    let all = BTreeMap::from([("a".into(), 10), ("b".into(), 10), ("c".into(), 10)]);
    assert_eq!(spread(&s, 30).await, all, "30 requests, 10 each");

    let b_port = upstreams[1].port;
    upstreams[1].stop();
    let counts = spread(&s, 30).await;
    assert!(
        counts.keys().all(|k| k == "a" || k == "c"),
        "every request succeeds on a live upstream, none on the stopped one: {counts:?}"
    );

    // Back on its port: after its down period it is tried, and answers, again.
    upstreams[1] = named("b", b_port).await;
    eventually(
        Duration::from_secs(60),
        "b answering through the gateway again",
        || async {
            let (status, body) = s.dp.get("/lb/x").await;
            assert_eq!(status, StatusCode::OK, "{body}");
            (body == "b").then_some(())
        },
    )
    .await;

    for u in &mut upstreams {
        u.stop();
    }
    let (status, body) = s.dp.get("/lb/x").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "There was a problem proxying the request",
        "every upstream down: Tyk's answer"
    );

    // Every target is marked down now, yet still tried: one back is served at once.
    let a_port = upstreams[0].port;
    upstreams[0] = named("a", a_port).await;
    let (status, body) = s.dp.get("/lb/x").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "a"),
        "with every target down the gateway still tries them"
    );
}

#[tokio::test]
async fn a_target_url_beside_the_list_is_ignored() {
    let a = named("a", 0).await;
    let b = named("b", 0).await;
    // Tyk's exported definitions keep a target_url next to the list; nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut api = balanced_api(&[a.url("/"), b.url("/")]);
    api["proxy"]["target_url"] = json!(format!("http://{closed}/"));
    let mut s = Stack::start().await;
    s.create(&[api], &[]).await;
    let both = BTreeMap::from([("a".into(), 5), ("b".into(), 5)]);
    assert_eq!(spread(&s, 10).await, both, "only the list is used");
}

#[tokio::test]
async fn a_request_with_a_body_is_retried_whole_on_the_next_target() {
    let one = PyPeer::start(STREAM_SERVER, &[]).await;
    let two = PyPeer::start(STREAM_SERVER, &[]).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut api = balanced_api(&[format!("http://{dead}/"), one.url("/"), two.url("/")]);
    api["proxy"]["target_url"] = json!(one.url("/"));
    let mut s = Stack::start().await;
    s.create(&[api], &[]).await;
    let client = reqwest::Client::new();
    for i in 0..6 {
        let body = format!("body number {i}");
        let resp = client
            .post(s.dp.url("/lb/upload"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "request {i}: {text}");
        let got: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (got["bytes"].as_u64(), got["head"].as_str()),
            (Some(body.len() as u64), Some(body.as_str())),
            "request {i}: the upstream got the whole body"
        );
    }
}

#[tokio::test]
async fn the_control_plane_refuses_service_discovery_and_an_empty_target_list() {
    let s = Stack::start().await;
    let refused = |field: &'static str, api: Value| {
        let cp = &s.cp;
        async move {
            let (status, body) = cp.call(Method::POST, "/tyk/apis", Some(&api)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(
                (body["status"].as_str(), body["field"].as_str()),
                (Some("error"), Some(field)),
                "{body}"
            );
            body["message"].as_str().unwrap_or_default().to_owned()
        }
    };

    let mut discovery = keyless_api("sd", "/sd/", &s.target());
    discovery["proxy"]["service_discovery"] = json!({"use_discovery_service": true,
        "query_endpoint": "http://127.0.0.1:1/services", "data_path": "address"});
    let message = refused("proxy.service_discovery.use_discovery_service", discovery).await;
    assert!(
        message.contains("service discovery is not supported"),
        "{message}"
    );

    refused("proxy.target_list", balanced_api(&[])).await;
    let mut with_target_url = balanced_api(&[]);
    with_target_url["proxy"]["target_url"] = json!(s.target());
    refused("proxy.target_list", with_target_url).await;
}
