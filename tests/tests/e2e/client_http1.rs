//! How the gateway reads its clients' HTTP/1.1 requests (docs/architecture.md, "Client
//! connections"): the direct server for plain requests, hyper for everything else on the same
//! connection, and `--hyper-http1-server` for all of it. The client is Python's `http.client`
//! parser on a raw socket (`py/pipeline_client.py`) or reqwest, the upstreams the raw-socket
//! Python server of the framing tests and the `http.server` one of the streaming tests, so
//! neither end is code of ours.

use portcullis_data_plane::proxy::ClientLimits;
use portcullis_tests::idp_stack::Stack;
use std::time::Duration;

use portcullis_tests::peers::{FRAMING_SERVER, PIPELINE_CLIENT, PyPeer, STREAM_SERVER, py_client};
use portcullis_tests::traffic::stack_with;
use portcullis_tests::{DpOptions, keyless_api};
use serde_json::{Value, json};

async fn setup(hyper_http1: bool) -> (Stack, PyPeer) {
    let upstream = PyPeer::start(FRAMING_SERVER, &[]).await;
    let mut s = stack_with(DpOptions {
        client_limits: Some(ClientLimits {
            hyper_http1,
            ..ClientLimits::default()
        }),
        ..Default::default()
    })
    .await;
    s.create(&[keyless_api("fr", "/fr/", &upstream.url("/"))], &[])
        .await;
    (s, upstream)
}

/// Runs the steps on one connection: (status, body) of each answer, and whether the gateway
/// closed the connection afterwards.
async fn exchange(s: &Stack, steps: Value) -> (Vec<(u64, String)>, Vec<Value>, bool) {
    let out = py_client(
        PIPELINE_CLIENT,
        json!({"port": s.dp.proxy_addr.port(), "steps": steps}),
    )
    .await;
    let responses = out["responses"].as_array().cloned().unwrap_or_default();
    let pairs = responses
        .iter()
        .map(|r| {
            (
                r["status"].as_u64().unwrap_or_default(),
                r["body"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let headers = responses.iter().map(|r| r["headers"].clone()).collect();
    (pairs, headers, out["closed"] == true)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n\r\n")
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_with_each_framing() {
    for hyper_http1 in [false, true] {
        let (s, _upstream) = setup(hyper_http1).await;
        // Five requests in one write; the answers come back in order on the one connection.
        let burst = [
            get("/fr/len"),
            get("/fr/chunked"),
            "HEAD /fr/len HTTP/1.1\r\nHost: gw.test\r\n\r\n".to_owned(),
            "POST /fr/post HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 3\r\n\r\nabc".to_owned(),
            get("/fr/empty"),
            get("/nothing-routes-here"),
        ]
        .concat();
        let (answers, headers, closed) = exchange(
            &s,
            json!([{"send": burst, "read": ["GET", "GET", "HEAD", "POST", "GET", "GET"]},
                   {"send": get("/fr/len"), "read": ["GET"]}]),
        )
        .await;
        let want: Vec<(u64, String)> = [
            (200, "hello"),
            (200, "hello"),
            (200, ""),
            (200, "3"),
            (204, ""),
            (404, ""),
            (200, "hello"),
        ]
        .iter()
        .map(|(s, b)| (*s, (*b).to_owned()))
        .collect();
        // The 404 is the gateway's own JSON answer; only its status is compared.
        let mut got = answers.clone();
        got[5].1.clear();
        assert_eq!(got, want, "hyper_http1={hyper_http1}");
        assert!(
            !closed,
            "the connection stays open (hyper_http1={hyper_http1})"
        );
        assert_eq!(headers[0]["content-length"], "5");
        assert_eq!(
            headers[1]["transfer-encoding"], "chunked",
            "a chunked answer stays chunked"
        );
        assert_eq!(
            headers[2]["content-length"], "5",
            "HEAD keeps the GET's length"
        );
        assert!(
            headers[4].get("content-length").is_none(),
            "no length on a 204"
        );
        assert!(
            headers[5]["date"].is_string(),
            "the gateway's answers carry a Date"
        );
        assert!(
            answers[5].1.contains("\"error\""),
            "the gateway's JSON: {}",
            answers[5].1
        );
    }
}

#[tokio::test]
async fn requests_the_direct_server_leaves_to_hyper_are_served_on_the_same_connection() {
    let (s, _upstream) = setup(false).await;
    // Served directly, then an expectation (hyper answers 100 Continue, which `http.client`
    // skips), then a request again.
    let expect = "POST /fr/post HTTP/1.1\r\nHost: gw.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nwxyz";
    let (answers, _, closed) = exchange(
        &s,
        json!([{"send": get("/fr/len"), "read": ["GET"]},
               {"send": expect, "read": ["POST"]},
               {"send": get("/fr/len"), "read": ["GET"]}]),
    )
    .await;
    let statuses: Vec<_> = answers.iter().map(|(s, b)| (*s, b.as_str())).collect();
    assert_eq!(statuses, [(200, "hello"), (200, "4"), (200, "hello")]);
    assert!(!closed);

    // A malformed head after a good request: hyper's 400, and the connection ends.
    let (answers, _, closed) = exchange(
        &s,
        json!([{"send": get("/fr/len"), "read": ["GET"]},
               {"send": "GET /fr/len HTTP/1.1\r\nBad Header\r\n\r\n", "read": ["GET"]}]),
    )
    .await;
    assert_eq!(answers.iter().map(|a| a.0).collect::<Vec<_>>(), [200, 400]);
    assert!(closed, "a refused head ends the connection");

    // `Connection: close` and HTTP/1.0 are answered and the connection then closed.
    for last in [
        "GET /fr/len HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
        "GET /fr/len HTTP/1.0\r\nHost: gw.test\r\n\r\n",
    ] {
        let (answers, _, closed) = exchange(
            &s,
            json!([{"send": get("/fr/len"), "read": ["GET"]},
                   {"send": last, "read": ["GET"]}]),
        )
        .await;
        assert_eq!(answers.len(), 2, "{last:?}");
        assert!(
            answers.iter().all(|a| a == &(200, "hello".to_owned())),
            "{last:?}"
        );
        assert!(closed, "{last:?} ends the connection");
    }

    // A head over the field limit gets hyper's 431 even after a served request.
    let many: String = (0..120).map(|i| format!("X-F{i}: v\r\n")).collect();
    let (answers, _, _) = exchange(
        &s,
        json!([{"send": get("/fr/len"), "read": ["GET"]},
               {"send": format!("GET /fr/len HTTP/1.1\r\nHost: gw.test\r\n{many}\r\n"), "read": ["GET"]}]),
    )
    .await;
    assert_eq!(answers.iter().map(|a| a.0).collect::<Vec<_>>(), [200, 431]);
}

#[tokio::test]
async fn a_client_that_leaves_a_quiet_stream_frees_its_connection_at_once() {
    // One client connection at a time: the second client is served only once the gateway has
    // noticed that the first one left, not when the upstream next writes (it never does here).
    let upstream = PyPeer::start(STREAM_SERVER, &[]).await;
    let mut s = stack_with(DpOptions {
        client_limits: Some(ClientLimits {
            max_connections: 1,
            ..ClientLimits::default()
        }),
        ..Default::default()
    })
    .await;
    s.create(&[keyless_api("st", "/st/", &upstream.url("/"))], &[])
        .await;
    let first = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut resp = first.get(s.dp.url("/st/sse")).send().await.unwrap();
    let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("the first event arrives")
        .unwrap()
        .unwrap_or_default();
    assert!(String::from_utf8_lossy(&chunk).contains("data: one"));
    drop(resp);
    drop(first);
    let second = reqwest::Client::new();
    let answered = tokio::time::timeout(
        Duration::from_secs(10),
        second.get(s.dp.url("/st/big?bytes=3")).send(),
    )
    .await
    .expect("the slot of the client that left is free again")
    .unwrap();
    assert_eq!(answered.status(), 200);
}

#[tokio::test]
async fn an_unfinished_head_is_timed_from_its_first_byte_even_over_the_field_count() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = PyPeer::start(FRAMING_SERVER, &[]).await;
    let mut s = stack_with(DpOptions {
        client_limits: Some(ClientLimits {
            header_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(120),
            ..ClientLimits::default()
        }),
        ..Default::default()
    })
    .await;
    s.create(&[keyless_api("fr", "/fr/", &upstream.url("/"))], &[])
        .await;
    // 80 fields (over what the direct server parses, under --max-headers), never finished,
    // after a request on the same connection and on a new one; and an HTTP/2 preface cut short.
    let many: String = (0..80).map(|i| format!("X-F{i}: v\r\n")).collect();
    let unfinished = format!("GET /fr/len HTTP/1.1\r\nHost: gw.test\r\n{many}");
    for (before, head) in [
        (get("/fr/len"), unfinished.clone()),
        (String::new(), unfinished.clone()),
        (String::new(), "PRI * HTTP/2.0\r\n\r\nSM".to_owned()),
    ] {
        let mut c = tokio::net::TcpStream::connect(s.dp.proxy_addr)
            .await
            .unwrap();
        c.write_all(format!("{before}{head}").as_bytes())
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut seen = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            let mut chunk = [0u8; 4096];
            loop {
                match c.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "closed by the header timeout: {head:?}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "well before the idle timeout"
        );
        let answered = String::from_utf8_lossy(&seen);
        assert_eq!(
            answered.matches("HTTP/1.1 200").count(),
            usize::from(!before.is_empty()),
            "only the finished request is answered: {answered}"
        );
    }
}
