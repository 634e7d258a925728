//! How the gateway reads its upstream's responses (docs/architecture.md, "Upstream
//! connections"), against a hand-written raw-socket Python upstream (`py/framing_server.py`)
//! and curl as the client: every framing RFC 9112 §6.3 allows, interim answers, framing a
//! gateway must refuse, bytes past a response, and upstreams that close kept-alive
//! connections without saying so.

use portcullis_tests::idp_stack::Stack;
use portcullis_tests::peers::{FRAMING_SERVER, PyPeer, curl};
use portcullis_tests::traffic::stack_with;
use portcullis_tests::{DpOptions, keyless_api};

async fn setup() -> (Stack, PyPeer) {
    let upstream = PyPeer::start(FRAMING_SERVER, &[]).await;
    let mut s = stack_with(DpOptions::default()).await;
    s.create(&[keyless_api("fr", "/fr/", &upstream.url("/"))], &[])
        .await;
    (s, upstream)
}

/// `curl` through the gateway: (status, body).
async fn get(s: &Stack, extra: &[&str], path: &str) -> (String, String) {
    let mut args: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
    args.extend(["-w".into(), "\n%{http_code}".into(), s.dp.url(path)]);
    let (code, out, err) = curl(args).await;
    assert_eq!(code, 0, "curl {path}: {err}");
    let (body, status) = out.rsplit_once('\n').expect("status line");
    (status.to_owned(), body.to_owned())
}

#[tokio::test]
async fn every_response_framing_reaches_http1_and_http2_clients_whole() {
    let (s, _upstream) = setup().await;
    for client in [&[][..], &["--http2-prior-knowledge"][..]] {
        for (path, body) in [
            ("/fr/len", "hello"),
            ("/fr/chunked", "hello"),
            ("/fr/http10", "until close"),
            ("/fr/hints", "hinted"),
            ("/fr/empty", ""),
        ] {
            let (status, got) = get(&s, client, path).await;
            let want = if path == "/fr/empty" { "204" } else { "200" };
            assert_eq!(
                (status.as_str(), got.as_str()),
                (want, body),
                "{path} {client:?}"
            );
        }
    }
    // HEAD: the GET's head, no body, and the connection stays usable.
    let (code, out, err) = curl(vec![
        "-I".into(),
        s.dp.url("/fr/len"),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        "--next".into(),
        s.dp.url("/fr/len"),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "200hello", "HEAD then GET on one connection");
    // A POST's in-memory body arrives with its length.
    let (status, got) = get(&s, &["--data-binary", "twelve bytes"], "/fr/post").await;
    assert_eq!((status.as_str(), got.as_str()), ("200", "12"));
    // An upstream that refuses a body without reading it: its answer is the client's.
    let body = "x".repeat(8000);
    let (status, got) = get(&s, &["--data-binary", &body], "/fr/early").await;
    assert_eq!((status.as_str(), got.as_str()), ("413", "too big!"));
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_stray_bytes_never_reach_the_next_request() {
    let (s, _upstream) = setup().await;
    let (status, body) = get(&s, &[], "/fr/conflict").await;
    assert_eq!(status, "502", "conflicting Content-Length: {body}");
    // A response followed by bytes nobody asked for: the next requests get their own answers,
    // not the leftover (which reads like a response of its own).
    let (status, body) = get(&s, &[], "/fr/junk").await;
    assert_eq!((status.as_str(), body.as_str()), ("200", "hello"));
    for _ in 0..5 {
        let (status, body) = get(&s, &[], "/fr/len").await;
        assert_eq!((status.as_str(), body.as_str()), ("200", "hello"));
    }
}

#[tokio::test]
async fn kept_alive_upstream_connections_are_reused_and_silent_closes_are_survived() {
    let (s, _upstream) = setup().await;
    let conns = |body: String| body.parse::<u64>().expect("a count");
    let before = conns(get(&s, &[], "/fr/conns").await.1);
    // curl sends all of these on one client connection; the gateway answers them on one
    // upstream connection.
    let mut args = Vec::new();
    for _ in 0..20 {
        args.extend([
            s.dp.url("/fr/len"),
            "-o".into(),
            "/dev/null".into(),
            "--next".into(),
        ]);
    }
    args.push(s.dp.url("/fr/conns"));
    let (code, out, err) = curl(args).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        conns(out),
        before,
        "20 requests after the first opened no upstream connection"
    );
    // An upstream that closes after each answer without `Connection: close`: every request
    // still gets through, on a new connection when the old one is found closed.
    for i in 0..20 {
        let (status, body) = get(&s, &[], "/fr/drop").await;
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("200", "dropped"),
            "request {i}"
        );
    }
}
