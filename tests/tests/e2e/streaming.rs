//! Streaming through the gateway against a standard-library Python upstream
//! (`py/stream_server.py`): server-sent events and chunked responses forwarded as they arrive
//! (the upstream holds the next event until the client has the first), `Expect:
//! 100-continue` with curl, a gibibyte each way with flat memory, and a client that goes away
//! mid-response cancelling the upstream request.

use std::time::Duration;

use portcullis_tests::idp_stack::{Stack, api};
use portcullis_tests::peers::{PyPeer, STREAM_SERVER, curl, peak_rss_kib, sh};
use portcullis_tests::traffic::stack_with;
use portcullis_tests::{DpOptions, eventually, keyless_api};
use serde_json::{Value, json};

/// A gateway (with `upstream_timeout`) and the streaming upstream behind keyless `/st/`.
async fn setup(upstream_timeout: Duration) -> (Stack, PyPeer) {
    let upstream = PyPeer::start(STREAM_SERVER, &[]).await;
    let mut s = stack_with(DpOptions {
        upstream_timeout: Some(upstream_timeout),
        ..Default::default()
    })
    .await;
    s.create(&[keyless_api("st", "/st/", &upstream.url("/"))], &[])
        .await;
    (s, upstream)
}

/// Reads `resp` until what arrived so far contains `wanted`; fails if the stream ends first
/// or nothing more comes for a minute (the gateway holding back what the upstream sent).
async fn read_until(resp: &mut reqwest::Response, so_far: &mut String, wanted: &str) {
    while !so_far.contains(wanted) {
        let chunk = tokio::time::timeout(Duration::from_secs(60), resp.chunk())
            .await
            .unwrap_or_else(|_| {
                panic!("{wanted:?} not delivered (got {so_far:?}): the gateway buffers")
            })
            .expect("the stream continues");
        let chunk = chunk.unwrap_or_else(|| panic!("stream ended before {wanted:?}: {so_far:?}"));
        so_far.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Reads what is left of `resp` (an HTTP/2 stream may end with an empty DATA frame).
async fn read_to_end(resp: &mut reqwest::Response, so_far: &mut String) {
    while let Some(chunk) = resp.chunk().await.expect("the stream ends cleanly") {
        so_far.push_str(&String::from_utf8_lossy(&chunk));
    }
}

async fn release(upstream: &PyPeer) {
    let resp = reqwest::get(upstream.url("/_release"))
        .await
        .expect("upstream reachable");
    assert!(resp.status().is_success());
}

#[tokio::test]
async fn events_and_chunks_reach_the_client_before_the_upstream_sends_the_next() {
    let (s, upstream) = setup(Duration::from_secs(10)).await;

    let mut resp = reqwest::get(s.dp.url("/st/sse")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    // The upstream sends "two" only once released, so "one" must arrive on its own.
    read_until(&mut resp, &mut text, "data: one\n\n").await;
    release(&upstream).await;
    read_until(&mut resp, &mut text, "data: two\n\n").await;
    read_to_end(&mut resp, &mut text).await;
    assert_eq!(text, "data: one\n\ndata: two\n\n");

    let mut resp = reqwest::get(s.dp.url("/st/chunks?n=4")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    for i in 0..4 {
        read_until(&mut resp, &mut text, &format!("chunk-{i};")).await;
        release(&upstream).await;
    }
    read_to_end(&mut resp, &mut text).await;
    assert_eq!(text, "chunk-0;chunk-1;chunk-2;chunk-3;");
}

#[tokio::test]
async fn events_reach_an_http2_client_as_they_are_sent() {
    let (s, upstream) = setup(Duration::from_secs(10)).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut resp = h2.get(s.dp.url("/st/sse")).send().await.unwrap();
    assert_eq!(
        (resp.status(), resp.version()),
        (reqwest::StatusCode::OK, reqwest::Version::HTTP_2)
    );
    let mut text = String::new();
    read_until(&mut resp, &mut text, "data: one\n\n").await;
    release(&upstream).await;
    read_until(&mut resp, &mut text, "data: two\n\n").await;
    read_to_end(&mut resp, &mut text).await;
    assert_eq!(text, "data: one\n\ndata: two\n\n");
}

#[tokio::test]
async fn an_expect_100_continue_post_gets_its_100_and_the_body_through() {
    let (s, upstream) = setup(Duration::from_secs(10)).await;
    // curl waits this long for the 100 before sending the body anyway; the 100 must come.
    let (code, out, err) = curl(vec![
        "-v".into(),
        "--expect100-timeout".into(),
        "30".into(),
        "-H".into(),
        "Expect: 100-continue".into(),
        "--data-binary".into(),
        "the body after the 100".into(),
        s.dp.url("/st/upload"),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("< HTTP/1.1 100 Continue"),
        "the gateway answers 100 Continue: {err}"
    );
    let got: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out} {err}"));
    assert_eq!(
        (got["bytes"].as_u64(), got["head"].as_str()),
        (Some(22), Some("the body after the 100")),
        "the upstream received the body: {got}"
    );

    // Refused before the body is wanted: the client gets the refusal, not a wait.
    let mut s = s;
    s.create(&[api("keyed", &upstream.url("/"), json!({}))], &[])
        .await;
    let (code, out, err) = curl(vec![
        "--expect100-timeout".into(),
        "30".into(),
        "-H".into(),
        "Expect: 100-continue".into(),
        "--data-binary".into(),
        "never wanted".into(),
        "-w".into(),
        "\n%{http_code}".into(),
        s.dp.url("/keyed/upload"),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let (body, status) = out.rsplit_once('\n').unwrap();
    assert_eq!(status, "401", "{out}");
    let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!(body["error"], "Authorization field missing");
}

#[tokio::test]
async fn gibibytes_each_way_stream_with_flat_memory() {
    const GIB: u64 = 1 << 30;
    const BUDGET_KIB: u64 = 200 * 1024;
    let (s, _upstream) = setup(Duration::from_secs(600)).await;
    let before = peak_rss_kib();

    // `-T -` streams stdin as a chunked body: curl holds only a buffer of it.
    let (code, out) = sh(format!(
        "head -c {GIB} /dev/zero | curl -s -T - -X POST {}",
        s.dp.url("/st/upload")
    ))
    .await;
    assert_eq!(code, 0, "{out}");
    let got: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!(got["bytes"], GIB, "the upstream counted every byte: {got}");

    // And with a Content-Length: a sparse file reads as zeros without touching the disk.
    let file = std::env::temp_dir().join(format!("portcullis-gib-{}", uuid::Uuid::new_v4()));
    std::fs::File::create(&file).unwrap().set_len(GIB).unwrap();
    let (code, out, err) = curl(vec![
        "-X".into(),
        "POST".into(),
        "-T".into(),
        file.to_string_lossy().into_owned(),
        s.dp.url("/st/upload"),
    ])
    .await;
    let _ = std::fs::remove_file(&file);
    assert_eq!(code, 0, "{err}");
    let got: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!(got["bytes"], GIB, "sized upload: {got}");

    let (code, out, err) = curl(vec![
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code} %{size_download}".into(),
        s.dp.url(&format!("/st/big?bytes={GIB}")),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("200 {GIB}"), "the client received every byte");

    // The same both ways for an HTTP/2 client (h2c): flow control on one side, TCP on the other.
    let (code, out) = sh(format!(
        "head -c {GIB} /dev/zero | curl -s --http2-prior-knowledge -T - -X POST {}",
        s.dp.url("/st/upload")
    ))
    .await;
    assert_eq!(code, 0, "{out}");
    let got: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!(got["bytes"], GIB, "HTTP/2 upload: {got}");
    let (code, out, err) = curl(vec![
        "--http2-prior-knowledge".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_version} %{http_code} %{size_download}".into(),
        s.dp.url(&format!("/st/big?bytes={GIB}")),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("2 200 {GIB}"), "HTTP/2 download");

    let grown = peak_rss_kib().saturating_sub(before);
    assert!(
        grown < BUDGET_KIB,
        "the gateway's peak memory grew by {grown} KiB moving 1 GiB each way"
    );
}

#[tokio::test]
async fn a_client_that_goes_away_mid_response_cancels_the_upstream_request() {
    let (s, upstream) = setup(Duration::from_secs(10)).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut resp = client.get(s.dp.url("/st/forever")).send().await.unwrap();
    let mut text = String::new();
    read_until(&mut resp, &mut text, "tick\n").await;
    drop(resp);
    drop(client);

    let why = eventually(
        Duration::from_secs(30),
        "the upstream's write failing",
        || async {
            let state: Value = reqwest::get(upstream.url("/_state"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            state["aborted"].as_str().map(str::to_owned)
        },
    )
    .await;
    assert!(
        ["BrokenPipeError", "ConnectionResetError"].contains(&why.as_str()),
        "the upstream saw its connection closed: {why}"
    );
}
