//! Issue 10, items 1, 2 and 5: what upstreams receive as request targets, how paths are
//! normalised before routing, and how slow or greedy clients are bounded.

mod peers;
mod raw;

use std::time::Duration;

use portcullis_data_plane::proxy::ClientLimits;
use portcullis_tests::{Cp, Dp, DpOptions, EchoUpstream, TestDb, keyless_api};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn stack(limits: Option<ClientLimits>) -> (TestDb, Cp, Dp) {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("default").await),
            client_limits: limits,
            ..Default::default()
        },
    )
    .await
    .expect("gateway starts");
    (db, cp, dp)
}

fn target_of(v: &Value) -> String {
    v["target"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn upstreams_we_did_not_write_receive_origin_form_targets() {
    let (_db, cp, dp) = stack(None).await;
    let peers = [
        ("py", peers::python().await),
        ("node", peers::node().await),
        ("nginx", peers::nginx().await),
    ];
    for (name, peer) in &peers {
        cp.create_api(&keyless_api(
            name,
            &format!("/{name}/"),
            &peer.url("/base/"),
        ))
        .await;
    }
    dp.wait_for_revision(peers.len() as i64).await;
    let target = "/base/hello?q=1&x=%20y";

    for (name, _) in &peers {
        let url = dp.url(&format!("/{name}/hello?q=1&x=%20y"));
        // One keep-alive client connection: its first request opens (or takes an idle)
        // upstream connection, the second reuses the one reserved for it.
        let client = reqwest::Client::new();
        let first: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        let second: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(target_of(&first), target, "{name}, first request: {first}");
        assert_eq!(
            target_of(&second),
            target,
            "{name}, keep-alive reuse: {second}"
        );
        assert_eq!(
            first["peer_port"], second["peer_port"],
            "{name}: the second request reused the upstream connection"
        );
        if let Some(line) = first["requestline"].as_str() {
            assert_eq!(line, format!("GET {target} HTTP/1.1"));
        }
        drop(client);

        // A new client connection draws from the idle list.
        let later: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        assert_eq!(target_of(&later), target, "{name}, new client: {later}");

        // HTTP/2 streams run concurrently, so some take the pooled client.
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let answers = futures_util::future::join_all((0..6).map(|_| async {
            let resp = h2.post(&url).body("x").send().await.unwrap();
            assert_eq!(resp.version(), reqwest::Version::HTTP_2);
            resp.json::<Value>().await.unwrap()
        }))
        .await;
        for a in answers {
            assert_eq!(target_of(&a), target, "{name}, HTTP/2 client: {a}");
        }
    }
}

/// A keyless `/public/` API and a protected `/private/` one in front of the same nginx, which
/// serves `/private/x` for `/public/../private/x` like most upstreams that normalise.
async fn public_and_private(cp: &Cp, dp: &Dp, upstream: &peers::Peer) {
    let mut public = keyless_api("public", "/public/", &upstream.url(""));
    public["proxy"]["strip_listen_path"] = json!(false);
    cp.create_api(&public).await;
    let mut private = keyless_api("private", "/private/", &upstream.url(""));
    private["proxy"]["strip_listen_path"] = json!(false);
    private["use_keyless"] = json!(false);
    cp.create_api(&private).await;
    dp.wait_for_revision(2).await;
}

#[tokio::test]
async fn dot_segments_and_encoded_slashes_cannot_reach_a_protected_api() {
    let (_db, cp, dp) = stack(None).await;
    let nginx = peers::nginx().await;
    public_and_private(&cp, &dp, &nginx).await;
    let missing = "Authorization field missing";

    // Each path reaches the API its normal form names: the protected one asks for a key.
    for path in [
        "/public/../private/x",
        "/public/%2e%2e/private/x",
        "/public/%2E%2E/private/x",
        "/public/.%2e/private/x",
        "//private/x",
        "/public/./../private/x",
        "/%70rivate/x",
    ] {
        let (status, body) = raw::curl(dp.url(path)).await;
        assert_eq!(status, 401, "curl {path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], missing, "curl {path}");
        let answer = raw::get(dp.proxy_addr, path).await;
        assert_eq!(answer.status, 401, "raw {path}: {answer:?}");
        assert_eq!(answer.json()["error"], missing, "raw {path}");
        let (status, _) = raw::curl_with(dp.url(path), &["--http2-prior-knowledge"]).await;
        assert_eq!(status, 401, "curl over HTTP/2 {path}");
    }

    // Ambiguous paths are refused before routing, with a JSON error.
    for (path, error) in [
        ("/public/..%2Fprivate/x", "Path contains an encoded slash"),
        ("/public/..%2fprivate/x", "Path contains an encoded slash"),
        ("/public/..%5Cprivate/x", "Path contains a backslash"),
        ("/public/x%00y", "Path contains a control character"),
        (
            "/public/..;/private/x",
            "Path contains a dot segment with parameters",
        ),
        ("/public/../../private/x", "Path goes above the root"),
    ] {
        let (status, body) = raw::curl(dp.url(path)).await;
        assert_eq!(status, 400, "curl {path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], error, "curl {path}");
        let answer = raw::get(dp.proxy_addr, path).await;
        assert_eq!(answer.status, 400, "raw {path}: {answer:?}");
        assert_eq!(answer.json()["error"], error, "raw {path}");
    }
    // A raw backslash is refused too (by hyper's parser or by the normaliser).
    let answer = raw::get(dp.proxy_addr, "/public/..\\private/x").await;
    assert_eq!(answer.status, 400, "{answer:?}");

    // What the keyless API's upstream receives is the normal form; the query is untouched.
    for (path, received) in [
        ("/public/a/./b/../c", "/public/a/c"),
        ("/public//a///b", "/public/a/b"),
        (
            "/public/%7Euser/%2e/x%20y?q=%2F..&r=./",
            "/public/~user/x%20y?q=%2F..&r=./",
        ),
    ] {
        let (status, body) = raw::curl(dp.url(path)).await;
        assert_eq!(status, 200, "curl {path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(target_of(&v), received, "curl {path}");
        let answer = raw::get(dp.proxy_addr, path).await;
        assert_eq!(answer.status, 200, "raw {path}: {answer:?}");
        assert_eq!(target_of(&answer.json()), received, "raw {path}");
        let (status, body) = raw::curl_with(dp.url(path), &["--http2-prior-knowledge"]).await;
        assert_eq!(status, 200, "curl over HTTP/2 {path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(target_of(&v), received, "curl over HTTP/2 {path}");
    }
}

#[tokio::test]
async fn allow_encoded_slashes_forwards_them_encoded() {
    let (_db, cp, dp) = stack(limits(|l| l.path_rules.allow_encoded_slashes = true)).await;
    let nginx = peers::nginx().await;
    public_and_private(&cp, &dp, &nginx).await;
    for (path, received) in [
        ("/public/group%2fname/x", "/public/group%2Fname/x"),
        ("/public/a/../group%2Fname", "/public/group%2Fname"),
    ] {
        let answer = raw::get(dp.proxy_addr, path).await;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert_eq!(target_of(&answer.json()), received, "{path}");
    }
    // Still refused: backslashes, and dot segments reach the API their normal form names.
    assert_eq!(
        raw::get(dp.proxy_addr, "/public/..%5Cprivate").await.status,
        400
    );
    assert_eq!(
        raw::get(dp.proxy_addr, "/public/../private/x").await.status,
        401
    );
}

fn limits(f: impl FnOnce(&mut ClientLimits)) -> Option<ClientLimits> {
    let mut l = ClientLimits::default();
    f(&mut l);
    Some(l)
}

async fn echo_api(cp: &Cp, dp: &Dp, echo: &EchoUpstream) {
    cp.create_api(&keyless_api("echo", "/echo/", &echo.url()))
        .await;
    dp.wait_for_status("/echo/ready", 200).await;
}

/// Sends `bytes` one a second until the gateway closes the connection.
async fn trickle(addr: std::net::SocketAddr, prefix: &[u8], bytes: &'static [u8]) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    if !prefix.is_empty() {
        s.write_all(prefix).await.unwrap();
        let answer = raw::read_answer(&mut s).await.unwrap();
        assert_eq!(
            answer.status, 200,
            "the request before the trickle is served"
        );
    }
    let (mut read, mut write) = s.into_split();
    let writer = tokio::spawn(async move {
        for b in bytes {
            if write.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    // The head is never completed within this bound, so only the gateway can end the read.
    let mut chunk = [0u8; 512];
    let closed = tokio::time::timeout(Duration::from_secs(25), async {
        use tokio::io::AsyncReadExt;
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok();
    writer.abort();
    closed
}

const SLOW_HEAD: &[u8] = b"GET /echo/slow-loris HTTP/1.1\r\nHost: gw.test\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
const SLOW_H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

#[tokio::test]
async fn slowloris_clients_are_cut_off_while_normal_clients_are_served() {
    let (_db, cp, dp) = stack(limits(|l| {
        l.header_timeout = Duration::from_secs(2);
        l.idle_timeout = Duration::from_secs(60);
    }))
    .await;
    let echo = EchoUpstream::start().await;
    echo_api(&cp, &dp, &echo).await;

    let addr = dp.proxy_addr;
    let normal = tokio::spawn({
        let url = dp.url("/echo/normal");
        async move {
            let client = reqwest::Client::new();
            let mut served = 0;
            for _ in 0..40 {
                let resp = client.get(&url).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                served += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            served
        }
    });
    let keep_alive_first = b"GET /echo/first HTTP/1.1\r\nHost: gw.test\r\n\r\n".as_slice();
    let (fresh, after_request, h2) = tokio::join!(
        trickle(addr, b"", SLOW_HEAD),
        trickle(addr, keep_alive_first, SLOW_HEAD),
        trickle(addr, b"", SLOW_H2_PREFACE),
    );
    assert!(fresh, "a head trickled on a new connection is cut off");
    assert!(
        after_request,
        "a head trickled on a keep-alive connection is cut off"
    );
    assert!(h2, "a trickled HTTP/2 preface is cut off");
    assert_eq!(normal.await.unwrap(), 40, "every normal request was served");
}

#[tokio::test]
async fn the_admin_port_cuts_off_slow_clients_too() {
    let (_db, _cp, dp) = stack(None).await;
    assert!(
        trickle(dp.admin_addr, b"", SLOW_HEAD).await,
        "a head trickled to the admin port is cut off"
    );
    assert_eq!(
        dp.admin("/hello").await,
        200,
        "the admin port still answers"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let (_db, cp, dp) = stack(limits(|l| {
        l.header_timeout = Duration::from_secs(60);
        l.idle_timeout = Duration::from_secs(2);
    }))
    .await;
    let echo = EchoUpstream::start().await;
    echo_api(&cp, &dp, &echo).await;

    let mut s = TcpStream::connect(dp.proxy_addr).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /echo/x HTTP/1.1\r\nHost: gw.test\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(raw::read_answer(&mut s).await.unwrap().status, 200);
    }
    // Well below the 60 s header timeout: only the idle timeout can close it.
    assert!(
        raw::closed_within(&mut s, Duration::from_secs(30)).await,
        "an idle keep-alive connection is closed"
    );
}

#[tokio::test]
async fn idle_http2_connections_are_closed_after_the_idle_timeout() {
    let (_db, cp, dp) = stack(limits(|l| {
        l.header_timeout = Duration::from_secs(60);
        l.idle_timeout = Duration::from_secs(2);
    }))
    .await;
    let echo = EchoUpstream::start().await;
    echo_api(&cp, &dp, &echo).await;

    let stream = TcpStream::connect(dp.proxy_addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let mut conn = tokio::spawn(conn);
    for _ in 0..2 {
        let req = http::Request::get(dp.url("/echo/x"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
    }
    // Well below the 60 s header timeout: only the idle timeout can end it.
    let ended = tokio::time::timeout(Duration::from_secs(30), &mut conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection is closed");
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_a_slot_frees() {
    let (_db, cp, dp) = stack(limits(|l| {
        l.max_connections = 2;
        l.header_timeout = Duration::from_secs(60);
        l.idle_timeout = Duration::from_secs(60);
    }))
    .await;
    let echo = EchoUpstream::start().await;
    echo_api(&cp, &dp, &echo).await;

    let request = b"GET /echo/x HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(dp.proxy_addr).await.unwrap();
        s.write_all(request).await.unwrap();
        assert_eq!(raw::read_answer(&mut s).await.unwrap().status, 200);
        held.push(s);
    }
    // Both slots are taken by idle keep-alive connections: a third is not served.
    let mut third = TcpStream::connect(dp.proxy_addr).await.unwrap();
    third.write_all(request).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_secs(2), raw::read_answer(&mut third)).await;
    assert!(waiting.is_err(), "served over the cap: {waiting:?}");

    // Closing one frees a slot, and the waiting connection is served.
    drop(held.pop());
    let answer = tokio::time::timeout(Duration::from_secs(20), raw::read_answer(&mut third))
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let (_db, cp, dp) = stack(limits(|l| {
        l.max_header_bytes = 8192;
        l.max_headers = 20;
    }))
    .await;
    let echo = EchoUpstream::start().await;
    echo_api(&cp, &dp, &echo).await;

    let big = format!(
        "GET /echo/x HTTP/1.1\r\nHost: gw.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /echo/x HTTP/1.1\r\nHost: gw.test\r\n{many}\r\n");
    for req in [big, many] {
        let mut s = TcpStream::connect(dp.proxy_addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let answer = raw::read_answer(&mut s).await.unwrap();
        assert_eq!(answer.status, 431);
    }

    // HTTP/2, from curl (nghttp2): an oversized header list.
    let big = format!("X-Big: {}", "a".repeat(10_000));
    let url = dp.url("/echo/x");
    let status = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["-s", "--http2-prior-knowledge", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", "-H", &big, &url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    })
    .await
    .unwrap();
    assert_eq!(status, "431", "an oversized HTTP/2 header list");
}
