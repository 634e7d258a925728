//! gRPC through the gateway: a grpcio client speaking HTTP/2 without TLS to the gateway's plain
//! listener, an API with an `h2c://` target (Tyk's name for a gRPC upstream) and auth token,
//! and a grpcio server behind it (`py/grpc_client.py`, `py/grpc_server.py`): the key from
//! metadata, status codes and messages from trailers, custom metadata both ways, and
//! streaming in each direction.

use std::time::Duration;

use portcullis_tests::idp_stack::{Stack, api};
use portcullis_tests::peers::{GRPC_CLIENT, GRPC_SERVER, PyPeer, py_client};
use portcullis_tests::traffic::{LocalhostCert, key_for};
use portcullis_tests::{eventually, keyless_api};
use serde_json::{Value, json};

const SERVICE: &str = "/portcullis.test.Echo/";

/// A gateway with an auth-token API on the gRPC service's path, proxied to a grpcio server
/// over h2c, and a key for it.
async fn setup() -> (Stack, PyPeer, String) {
    let s = Stack::start().await;
    setup_on(s, json!({})).await
}

/// As [`setup`] on `s`, with `fields` merged into the API definition.
async fn setup_on(mut s: Stack, fields: Value) -> (Stack, PyPeer, String) {
    let upstream = PyPeer::start(GRPC_SERVER, &[]).await;
    let mut grpc = api(
        "grpc",
        &format!("h2c://127.0.0.1:{}/", upstream.port),
        fields,
    );
    grpc["proxy"]["listen_path"] = json!(SERVICE);
    grpc["proxy"]["strip_listen_path"] = json!(false);
    s.create(&[grpc], &[]).await;
    let key = key_for(&s.cp, &["grpc"]).await;
    (s, upstream, key)
}

/// Runs `calls` through the gateway with `metadata`; one result per call.
async fn calls(s: &Stack, metadata: Value, calls: Value) -> Vec<Value> {
    let got = py_client(
        GRPC_CLIENT,
        json!({"target": s.dp.proxy_addr.to_string(), "metadata": metadata, "calls": calls}),
    )
    .await;
    got.as_array().expect("a list").clone()
}

fn unary(method: &str, request: &str) -> Value {
    json!({"kind": "unary", "method": format!("{SERVICE}{method}"), "requests": [request]})
}

#[tokio::test]
async fn unary_calls_need_the_key_and_carry_metadata_both_ways() {
    let (s, _upstream, key) = setup().await;

    let got = calls(&s, json!([]), json!([unary("Unary", "hi")])).await;
    assert_eq!(
        got[0]["code"], "UNAUTHENTICATED",
        "no key: the gateway's 401 is what the client sees: {got:?}"
    );
    assert_eq!(got[0]["responses"], json!([]));
    let got = calls(
        &s,
        json!([["authorization", "not-a-key"]]),
        json!([unary("Unary", "hi")]),
    )
    .await;
    assert_eq!(
        got[0]["code"], "PERMISSION_DENIED",
        "unknown key: the gateway's 403: {got:?}"
    );

    let got = calls(
        &s,
        json!([["authorization", key], ["x-client", "e2e"]]),
        json!([unary("Unary", "hi")]),
    )
    .await;
    assert_eq!(got[0]["code"], "OK", "{got:?}");
    let answer: Value = serde_json::from_str(got[0]["responses"][0].as_str().unwrap()).unwrap();
    assert_eq!(answer["body"], "hi");
    assert_eq!(
        answer["metadata"]["x-client"], "e2e",
        "request metadata reaches the upstream: {answer}"
    );
    assert_eq!(
        got[0]["initial"]["x-initial"], "hello",
        "response headers arrive: {got:?}"
    );
    assert_eq!(
        got[0]["trailing"]["x-trailer"], "done",
        "custom trailing metadata arrives: {got:?}"
    );
}

#[tokio::test]
async fn error_statuses_and_messages_arrive_as_the_server_sent_them() {
    let (s, _upstream, key) = setup().await;
    let got = calls(
        &s,
        json!([["authorization", key]]),
        json!([
            unary("Fail", "x"),
            {"kind": "server_stream", "method": format!("{SERVICE}FailLate"), "requests": ["x"]},
            unary("NoSuchMethod", "x"),
        ]),
    )
    .await;
    assert_eq!(
        (got[0]["code"].as_str(), got[0]["details"].as_str()),
        (Some("NOT_FOUND"), Some("no such thing")),
        "a trailers-only error: {got:?}"
    );
    assert_eq!(
        (
            got[1]["code"].as_str(),
            got[1]["details"].as_str(),
            &got[1]["responses"]
        ),
        (Some("ABORTED"), Some("gave up midway"), &json!(["first"])),
        "an error in the trailers after a message: {got:?}"
    );
    assert_eq!(
        got[2]["code"], "UNIMPLEMENTED",
        "the server's own answer to an unknown method: {got:?}"
    );
}

#[tokio::test]
async fn streams_in_each_direction_deliver_every_message() {
    let (s, _upstream, key) = setup().await;
    let n = 200;
    let expected: Vec<String> = (0..n).map(|i| format!("msg-{i}")).collect();
    let sent: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    let got = calls(
        &s,
        json!([["authorization", key]]),
        json!([
            {"kind": "server_stream", "method": format!("{SERVICE}ServerStream"),
             "requests": [n.to_string()]},
            {"kind": "client_stream", "method": format!("{SERVICE}ClientStream"),
             "requests": sent},
            {"kind": "bidi", "method": format!("{SERVICE}Bidi"), "requests": sent},
        ]),
    )
    .await;
    assert_eq!(got[0]["code"], "OK", "{:?}", got[0]);
    assert_eq!(got[0]["responses"], json!(expected), "server streaming");
    assert_eq!(
        got[0]["trailing"]["x-count"],
        n.to_string(),
        "the trailer after the stream"
    );
    assert_eq!(
        (got[1]["code"].as_str(), &got[1]["responses"]),
        (Some("OK"), &json!([sent.join("+")])),
        "client streaming: {:?}",
        got[1]
    );
    let echoed: Vec<String> = sent.iter().map(|m| format!("echo:{m}")).collect();
    assert_eq!(
        (got[2]["code"].as_str(), &got[2]["responses"]),
        (Some("OK"), &json!(echoed)),
        "bidi, each request sent only after the previous reply arrived: {:?}",
        got[2]
    );
}

#[tokio::test]
async fn a_client_that_cancels_a_stream_cancels_the_upstream_call() {
    let (s, _upstream, key) = setup().await;
    let metadata = json!([["authorization", key]]);
    let got = calls(
        &s,
        metadata.clone(),
        json!([{"kind": "server_stream", "method": format!("{SERVICE}Endless"),
                "requests": ["x"], "cancel_after": 3}]),
    )
    .await;
    assert_eq!(
        (got[0]["code"].as_str(), &got[0]["responses"]),
        (Some("CANCELLED"), &json!(["tick", "tick", "tick"])),
        "{got:?}"
    );
    eventually(
        Duration::from_secs(30),
        "the upstream call ending",
        || async {
            let got = calls(&s, metadata.clone(), json!([unary("Cancelled", "x")])).await;
            (got[0]["responses"] == json!(["1"])).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn calls_on_one_client_connection_are_balanced_over_h2c_targets() {
    let one = PyPeer::start(GRPC_SERVER, &["one"]).await;
    let two = PyPeer::start(GRPC_SERVER, &["two"]).await;
    let mut s = Stack::start().await;
    // A target_url beside the list (as Tyk exports have) is ignored: nothing listens there.
    let mut grpc = keyless_api("grpc-lb", SERVICE, "h2c://127.0.0.1:9/");
    grpc["proxy"]["strip_listen_path"] = json!(false);
    grpc["proxy"]["enable_load_balancing"] = json!(true);
    grpc["proxy"]["target_list"] = json!([
        format!("h2c://127.0.0.1:{}/", one.port),
        format!("h2c://127.0.0.1:{}/", two.port)
    ]);
    s.create(&[grpc], &[]).await;
    // One channel: every call is a stream on the same HTTP/2 connection to the gateway.
    let got = calls(&s, json!([]), json!(vec![unary("Unary", "x"); 6])).await;
    let mut servers: Vec<String> = got
        .iter()
        .map(|r| {
            assert_eq!(r["code"], "OK", "{r}");
            let answer: Value = serde_json::from_str(r["responses"][0].as_str().unwrap()).unwrap();
            answer["server"].as_str().unwrap().to_owned()
        })
        .collect();
    servers.sort();
    assert_eq!(servers, ["one", "one", "one", "two", "two", "two"]);
}

#[tokio::test]
async fn grpc_reaches_an_https_upstream_speaking_h2_by_alpn() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("pc-grpc-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let upstream = PyPeer::start(
        GRPC_SERVER,
        &[
            "tls",
            &cert_file.to_string_lossy(),
            &key_file.to_string_lossy(),
        ],
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);

    let mut s = Stack::start().await;
    let mut grpc = keyless_api(
        "grpc-tls",
        SERVICE,
        &format!("https://localhost:{}/", upstream.port),
    );
    grpc["proxy"]["strip_listen_path"] = json!(false);
    // Certificate checks have their own tests (upstream_tls.rs); this one is about ALPN.
    grpc["proxy"]["transport"] = json!({"ssl_insecure_skip_verify": true});
    s.create(&[grpc], &[]).await;
    let got = calls(
        &s,
        json!([]),
        json!([
            unary("Unary", "over tls"),
            unary("Fail", "x"),
            {"kind": "bidi", "method": format!("{SERVICE}Bidi"), "requests": ["a", "b"]},
        ]),
    )
    .await;
    assert_eq!(got[0]["code"], "OK", "{got:?}");
    let answer: Value = serde_json::from_str(got[0]["responses"][0].as_str().unwrap()).unwrap();
    assert_eq!(
        (answer["server"].as_str(), answer["body"].as_str()),
        (Some("tls"), Some("over tls"))
    );
    assert_eq!(got[0]["trailing"]["x-trailer"], "done", "{got:?}");
    assert_eq!(
        (got[1]["code"].as_str(), got[1]["details"].as_str()),
        (Some("NOT_FOUND"), Some("no such thing")),
        "{got:?}"
    );
    assert_eq!(got[2]["responses"], json!(["echo:a", "echo:b"]), "{got:?}");
}

#[tokio::test]
async fn grpc_over_tls_to_the_gateway_works_by_alpn_h2() {
    let s = Stack::start().await;
    let cert = LocalhostCert::upload(&s.cp).await;
    let (s, _upstream, key) = setup_on(s, json!({"certificates": [cert.id]})).await;
    cert.wait_served(&s.dp).await;
    let got = py_client(
        GRPC_CLIENT,
        json!({"target": format!("localhost:{}", s.dp.tls_addr.port()),
               "ca_file": cert.ca_file, "metadata": [["authorization", key]],
               "calls": [unary("Unary", "hi"), unary("Fail", "x"),
                         {"kind": "bidi", "method": format!("{SERVICE}Bidi"),
                          "requests": ["a", "b"]}]}),
    )
    .await;
    assert_eq!(
        (
            got[0]["code"].as_str(),
            got[0]["trailing"]["x-trailer"].as_str()
        ),
        (Some("OK"), Some("done")),
        "{got}"
    );
    assert_eq!(
        (got[1]["code"].as_str(), got[1]["details"].as_str()),
        (Some("NOT_FOUND"), Some("no such thing")),
        "{got}"
    );
    assert_eq!(got[2]["responses"], json!(["echo:a", "echo:b"]), "{got}");
}
