//! Review of issue 10's hardening: requests whose parts name different sites.

use std::time::Duration;

use portcullis_tests::{Cp, Dp, DpOptions, TestDb, keyless_api};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Python's `http.server` answering with the Host header it received.
const PYTHON: &str = r#"
import json, sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        body = json.dumps({"host": self.headers.get("Host"), "target": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// An absolute-form target routes by its authority; the upstream of a `preserve_host_header`
/// API must then get that authority as Host, not a Host header naming another (protected) site.
#[tokio::test]
async fn absolute_form_authority_is_the_host_the_upstream_gets() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("default").await),
            ..Default::default()
        },
    )
    .await
    .expect("gateway starts");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _py = Child(
        std::process::Command::new("python3")
            .args(["-c", PYTHON, &port.to_string()])
            .spawn()
            .unwrap(),
    );
    let upstream = format!("http://127.0.0.1:{port}/");
    portcullis_tests::eventually(Duration::from_secs(15), "python listening", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let mut open = keyless_api("open", "/h/", &upstream);
    open["domain"] = json!("open.test");
    open["proxy"]["preserve_host_header"] = json!(true);
    cp.create_api(&open).await;
    let mut private = keyless_api("private", "/h/", &upstream);
    private["domain"] = json!("private.test");
    private["proxy"]["preserve_host_header"] = json!(true);
    private["use_keyless"] = json!(false);
    cp.create_api(&private).await;
    dp.wait_for_revision(2).await;

    let answer = raw(
        dp.proxy_addr,
        "GET /h/x HTTP/1.1\r\nHost: private.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");

    let answer = raw(
        dp.proxy_addr,
        "GET http://open.test/h/x HTTP/1.1\r\nHost: private.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["host"], "open.test", "{body}");
    assert_eq!(body["target"], "/x", "{body}");
}
