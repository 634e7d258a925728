//! `--otlp-endpoint`: traces read back from an OTLP collector built on the OpenTelemetry
//! project's own protobuf code (PyPI opentelemetry-proto, grpcio), with curl as the client and
//! Python's http.server as the upstream, which reports the `traceparent` it received.

use std::time::Duration;

use portcullis_data_plane::trace::ExportConfig;
use portcullis_tests::DpOptions;
use portcullis_tests::eventually;
use portcullis_tests::idp_stack::api;
use portcullis_tests::peers::{HEADER_ECHO, OTLP_COLLECTOR, PyPeer, curl};
use portcullis_tests::traffic::{key_for, stack_with};
use serde_json::{Value, json};

/// The W3C Trace Context specification's example parent.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

async fn spans(collector: &PyPeer) -> Vec<Value> {
    reqwest::get(collector.url("/spans"))
        .await
        .expect("collector reachable")
        .json()
        .await
        .expect("spans as JSON")
}

/// The spans of `trace_id` once its server span has arrived.
async fn trace_of(collector: &PyPeer, trace_id: &str) -> Vec<Value> {
    eventually(
        Duration::from_secs(20),
        &format!("trace {trace_id} at the collector"),
        || async {
            let all: Vec<Value> = spans(collector)
                .await
                .into_iter()
                .filter(|s| s["trace_id"] == trace_id)
                .collect();
            all.iter()
                .any(|s| s["name"] == "portcullis.request")
                .then_some(all)
        },
    )
    .await
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

/// curl through the gateway; the upstream's JSON answer (or the gateway's error body).
async fn call(url: String, headers: &[String]) -> (u16, Value) {
    let mut args = vec![
        "-s".to_owned(),
        "-w".to_owned(),
        "\n%{http_code}".to_owned(),
    ];
    for h in headers {
        args.push("-H".to_owned());
        args.push(h.clone());
    }
    args.push(url);
    let (code, out, err) = curl(args).await;
    assert_eq!(code, 0, "curl: {err}");
    let (body, status) = out.rsplit_once('\n').expect("status line");
    (
        status.parse().expect("status"),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

async fn metric(admin: std::net::SocketAddr, name: &str) -> u64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("admin port")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_request_continues_the_clients_trace_and_the_upstream_continues_the_gateways() {
    let mut collector = PyPeer::start(OTLP_COLLECTOR, &[]).await;
    let grpc: Value = reqwest::get(collector.url("/grpc"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoint: http::Uri = format!("http://127.0.0.1:{}", grpc["port"])
        .parse()
        .unwrap();
    let upstream = PyPeer::start(HEADER_ECHO, &[]).await;
    let mut s = stack_with(DpOptions {
        tracing: Some(ExportConfig {
            endpoint,
            sample_ratio: 1.0,
            service_name: "edge-eu".to_owned(),
            instance: String::new(),
            trust_client_sampling: false,
        }),
        ..Default::default()
    })
    .await;
    s.create(&[api("traced", &upstream.url(""), json!({}))], &[])
        .await;
    s.dp.wait_for_status("/traced/", 401).await;
    let key = key_for(&s.cp, &["traced"]).await;

    // A sampled client trace: continued, and the upstream's parent is the gateway's span.
    let parent = format!("traceparent: 00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let (status, seen) = call(
        s.dp.url("/traced/orders?colour=blue"),
        &[parent.clone(), format!("Authorization: {key}")],
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    let sent = seen["headers"]["traceparent"]
        .as_str()
        .expect("traceparent upstream");
    let fields: Vec<&str> = sent.split('-').collect();
    assert_eq!(fields.len(), 4, "{sent}");
    assert_eq!(
        (fields[0], fields[1], fields[3]),
        ("00", CLIENT_TRACE, "01")
    );
    assert_ne!(
        fields[2], CLIENT_SPAN,
        "the upstream's parent is the gateway's span"
    );

    let trace = trace_of(&collector, CLIENT_TRACE).await;
    let request = named(&trace, "portcullis.request");
    assert_eq!(request.len(), 1, "{trace:#?}");
    let request = request[0];
    assert_eq!(request["parent_span_id"], CLIENT_SPAN);
    assert_eq!(request["kind"], "SERVER");
    assert_eq!(request["status"], "UNSET");
    assert_eq!(request["attributes"]["http.response.status_code"], 200);
    assert_eq!(request["attributes"]["http.request.method"], "GET");
    assert_eq!(request["attributes"]["url.path"], "/traced/orders");
    assert_eq!(request["attributes"]["portcullis.api_id"], "traced");
    assert_eq!(request["attributes"]["http.route"], "/traced/");
    assert_eq!(request["resource"]["service.name"], "edge-eu");
    assert_eq!(request["scope"], "portcullis-gateway");
    let own = request["span_id"].clone();
    for name in ["portcullis.route", "portcullis.auth", "portcullis.upstream"] {
        let child = named(&trace, name);
        assert_eq!(child.len(), 1, "one {name}: {trace:#?}");
        assert_eq!(child[0]["parent_span_id"], own, "{name} is a child");
        assert!(
            child[0]["start"].as_u64() >= request["start"].as_u64(),
            "{name}"
        );
        assert!(
            child[0]["end"].as_u64() <= request["end"].as_u64(),
            "{name}"
        );
    }
    assert_eq!(
        named(&trace, "portcullis.auth")[0]["attributes"]["portcullis.auth.method"],
        "auth_token"
    );
    let upstream_span = named(&trace, "portcullis.upstream")[0];
    assert_eq!(upstream_span["kind"], "CLIENT");
    assert_eq!(
        upstream_span["span_id"], fields[2],
        "the id the upstream was given"
    );
    let text = serde_json::to_string(&trace).unwrap();
    assert!(!text.contains(&key), "no credential in any span");
    assert!(!text.contains("colour"), "no query string in any span");

    // A refused request: the auth span carries the error, the server span its status.
    let refused = "1111111111111111111111111111111a";
    let (status, _) = call(
        s.dp.url("/traced/orders"),
        &[format!("traceparent: 00-{refused}-{CLIENT_SPAN}-01")],
    )
    .await;
    assert_eq!(status, 401);
    let trace = trace_of(&collector, refused).await;
    let auth = named(&trace, "portcullis.auth");
    assert_eq!(auth.len(), 1, "{trace:#?}");
    assert_eq!(auth[0]["status"], "ERROR");
    assert!(
        auth[0]["status_message"]
            .as_str()
            .is_some_and(|m| m.contains("Authorization field missing")),
        "{}",
        auth[0]
    );
    assert!(named(&trace, "portcullis.upstream").is_empty());
    assert_eq!(
        named(&trace, "portcullis.request")[0]["attributes"]["http.response.status_code"],
        401
    );

    // No traceparent: a new trace, with no parent; the upstream is told about it.
    let (status, seen) = call(s.dp.url("/traced/x"), &[format!("Authorization: {key}")]).await;
    assert_eq!(status, 200);
    let sent = seen["headers"]["traceparent"]
        .as_str()
        .expect("a new traceparent");
    let new_trace = sent.split('-').nth(1).unwrap().to_owned();
    assert_ne!(new_trace, CLIENT_TRACE);
    let trace = trace_of(&collector, &new_trace).await;
    assert_eq!(named(&trace, "portcullis.request")[0]["parent_span_id"], "");

    // A client that did not sample: no spans, and its traceparent reaches the upstream as sent.
    let unsampled_trace = "2222222222222222222222222222222b";
    let unsampled = format!("00-{unsampled_trace}-{CLIENT_SPAN}-00");
    let (status, seen) = call(
        s.dp.url("/traced/y"),
        &[
            format!("traceparent: {unsampled}"),
            format!("Authorization: {key}"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(seen["headers"]["traceparent"], unsampled.as_str());

    // The sync path: the API's arrival was applied under a span of its own.
    let all = spans(&collector).await;
    assert!(
        all.iter().any(|sp| sp["name"] == "portcullis.sync.apply"
            && sp["attributes"]["portcullis.sync.accepted"] == true
            && sp["attributes"]["portcullis.revision"].as_i64() > Some(0)),
        "a sync span: {all:#?}"
    );
    assert!(
        !all.iter().any(|sp| sp["trace_id"] == unsampled_trace),
        "nothing recorded for an unsampled trace"
    );
    assert!(
        metric(
            s.dp.admin_addr,
            "portcullis_gateway_trace_spans_exported_total"
        )
        .await
            >= 10
    );

    // A collector that is gone costs requests nothing; the lost spans are counted.
    collector.stop();
    for _ in 0..3 {
        let (status, _) = call(s.dp.url("/traced/z"), &[format!("Authorization: {key}")]).await;
        assert_eq!(status, 200);
    }
    let admin = s.dp.admin_addr;
    eventually(
        Duration::from_secs(30),
        "dropped spans counted",
        || async move {
            (metric(admin, "portcullis_gateway_trace_spans_dropped_total").await > 0).then_some(())
        },
    )
    .await;
}
