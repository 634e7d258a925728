//! Edge hardening (issue 10, items 3, 6, 7, 10 and Redis over TLS): keys without rights, forged
//! session records in Redis, floods of random keys and passwords, authentication methods the
//! edge does not implement, and `rediss://`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use portcullis_tests::{
    Cp, CpOptions, Dp, DpOptions, EchoUpstream, TestDb, eventually, keyless_api, redis_url,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn protected_api(id: &str, target: &str) -> Value {
    let mut api = keyless_api(id, &format!("/{id}/"), target);
    api["use_keyless"] = json!(false);
    api
}

fn rights(apis: &[&str]) -> Value {
    apis.iter()
        .map(|a| (a.to_string(), json!({"api_id": a, "versions": ["Default"]})))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

async fn create_key(cp: &Cp, session: Value) -> String {
    let (status, body) = cp.call(Method::POST, "/tyk/keys", Some(&session)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

async fn call(dp: &Dp, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().get(dp.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The value of one line of the gateway's `/metrics` (`name` includes any labels).
async fn metric(dp: &Dp, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", dp.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-edge-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Python's `http.server` as the upstream: it logs every request line it gets to a file, so a
/// test can show that a refused request never reached it.
struct PyUpstream {
    port: u16,
    log: PathBuf,
    child: Child,
}

impl PyUpstream {
    async fn start() -> Self {
        let dir = tempdir("py");
        let log = dir.join("requests.log");
        std::fs::write(&log, "").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = r#"
import http.server, sys
log = open(sys.argv[2], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        log.write(self.requestline + "\n")
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;
        let child = Command::new("python3")
            .args(["-c", script, &port.to_string(), log.to_str().unwrap()])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 on PATH");
        let addr = format!("127.0.0.1:{port}");
        eventually(Duration::from_secs(10), "python upstream", || async {
            tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
        })
        .await;
        Self { port, log, child }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for PyUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_cli(url: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
    use std::io::Write;
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-u", url]).args(args);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("redis-cli on PATH");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "redis-cli {args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn hardening_edge_keys_without_rights_are_refused_unless_master_keys_are_allowed() {
    let db = TestDb::new().await;
    // The CP stores such keys only with its own switch on; the edge has one too.
    let cp = Cp::start_with(
        &db.url,
        CpOptions {
            allow_master_keys: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let upstream = PyUpstream::start().await;
    cp.create_api(&protected_api("orders", &upstream.url()))
        .await;
    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/policies",
            Some(
                &json!({"id": "limits-only", "rate": 100, "per": 60, "quota_max": -1,
                "partitions": {"rate_limit": true, "quota": true}, "access_rights": {}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let dp = Dp::joined(&cp).await;
    dp.wait_for_revision(2).await;
    let no_rights = create_key(&cp, json!({"access_rights": {}})).await;
    let limits_only = create_key(&cp, json!({"apply_policies": ["limits-only"]})).await;
    let good = create_key(&cp, json!({"access_rights": rights(&["orders"])})).await;

    for key in [&no_rights, &limits_only] {
        let (status, body) = call(&dp, "/orders/x", &[("Authorization", key)]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (
                StatusCode::FORBIDDEN,
                Some("Access to this API has been disallowed")
            )
        );
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    assert_eq!(
        call(&dp, "/orders/x", &[("Authorization", &good)]).await.0,
        StatusCode::OK
    );

    // Tyk's behaviour, asked for explicitly.
    let tyk = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("default").await),
            allow_master_keys: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tyk.wait_for_revision(2).await;
    for key in [&no_rights, &limits_only] {
        assert_eq!(
            call(&tyk, "/orders/x", &[("Authorization", key)]).await.0,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn hardening_edge_forged_session_records_in_redis_are_refused() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let upstream = PyUpstream::start().await;
    cp.create_api(&protected_api("vault", &upstream.url()))
        .await;
    let prefix = format!("e2e:{}:forge:", uuid::Uuid::new_v4().simple());
    let regional = |token| DpOptions {
        token: Some(token),
        redis_url: Some(redis_url()),
        redis_prefix: Some(prefix.clone()),
        // Every request reads Redis, so a record write lost to a slow Redis under CI load is
        // made again by the next request instead of hiding behind the local cache.
        no_local_session_cache: true,
        ..Default::default()
    };
    let dp = Dp::start(&cp, regional(cp.token("default").await))
        .await
        .unwrap();
    dp.wait_for_revision(1).await;
    let url = redis_url();
    let slot = |key: &str| {
        format!(
            "{prefix}session:{}",
            portcullis_proto::key_hash::key_hash(key)
        )
    };

    // Anyone who can write to Redis writes the old plain format with the highest revision.
    let forged_key = "forged-key-0123456789";
    let forged = format!(
        "{}\n{}",
        u64::MAX,
        json!({"org_id": "", "access_rights": rights(&["vault"]), "expires": 0})
    );
    redis_cli(
        &url,
        &["-x", "SET", &slot(forged_key)],
        Some(forged.as_bytes()),
    );
    let (status, body) = call(&dp, "/vault/x", &[("Authorization", forged_key)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::FORBIDDEN,
            Some("Access to this API has been disallowed")
        ),
        "a forged unsealed record"
    );
    assert_eq!(
        metric(
            &dp,
            "portcullis_gateway_session_redis_refused_total{reason=\"unsealed\"}"
        )
        .await,
        1.0
    );

    // A genuine key: looked up on the CP once, then sealed into Redis by the edge.
    let genuine = create_key(&cp, json!({"access_rights": rights(&["vault"])})).await;
    assert_eq!(
        call(&dp, "/vault/x", &[("Authorization", &genuine)])
            .await
            .0,
        StatusCode::OK
    );
    let sealed = eventually(Duration::from_secs(10), "sealed record", || async {
        call(&dp, "/vault/x", &[("Authorization", &genuine)]).await;
        let out = Command::new("redis-cli")
            .args(["-u", &url, "--no-raw", "GET", &slot(&genuine)])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.starts_with("\"PCS1").then_some(text)
    })
    .await;
    assert!(
        !sealed.contains("vault"),
        "the session JSON is not readable in Redis: {sealed}"
    );
    // The same sealed bytes copied into another key's slot.
    let raw = redis::Client::open(url.as_str()).unwrap();
    let mut conn = raw.get_multiplexed_async_connection().await.unwrap();
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg(slot(&genuine))
        .query_async(&mut conn)
        .await
        .unwrap();
    let copied_key = "copied-key-0123456789";
    let _: () = redis::cmd("SET")
        .arg(slot(copied_key))
        .arg(bytes)
        .query_async(&mut conn)
        .await
        .unwrap();
    let before = upstream.requests().len();
    let (status, _) = call(&dp, "/vault/x", &[("Authorization", copied_key)]).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a record sealed for another key"
    );
    assert_eq!(
        metric(
            &dp,
            "portcullis_gateway_session_redis_refused_total{reason=\"tampered\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        upstream.requests().len(),
        before,
        "refused requests never reach the upstream"
    );

    // A second edge of the region serves the genuine key from the sealed record.
    let peer = Dp::start(&cp, regional(cp.token("default").await))
        .await
        .unwrap();
    peer.wait_for_revision(1).await;
    assert_eq!(
        call(&peer, "/vault/x", &[("Authorization", &genuine)])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        metric(&peer, "portcullis_gateway_session_redis_hits_total").await,
        1.0
    );
    assert_eq!(
        metric(&peer, "portcullis_gateway_session_cp_lookups_total").await,
        0.0
    );
}

#[tokio::test]
async fn hardening_edge_random_key_flood_keeps_the_session_cache_at_its_cap() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    cp.create_api(&protected_api("flood", &echo.url())).await;
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("default").await),
            session_cache_entries: Some(256),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    dp.wait_for_revision(1).await;
    let good = create_key(&cp, json!({"access_rights": rights(&["flood"])})).await;
    assert_eq!(
        call(&dp, "/flood/x", &[("Authorization", &good)]).await.0,
        StatusCode::OK
    );
    let capacity = metric(&dp, "portcullis_gateway_session_cache_capacity").await;
    assert!(capacity <= 256.0, "{capacity}");

    let client = reqwest::Client::new();
    let url = dp.url("/flood/x");
    // Six times the cache's capacity, sent fast enough that the known key's entry (10 s) does
    // not simply age out meanwhile on a slow debug build.
    let statuses: Vec<u16> = futures_util::stream::iter(0..1_500)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                client
                    .get(url)
                    .header("Authorization", uuid::Uuid::new_v4().simple().to_string())
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == 403 || *s == 503),
        "random keys are refused"
    );
    let entries = metric(&dp, "portcullis_gateway_session_cache_entries").await;
    assert!(
        entries <= capacity,
        "cache holds {entries} > capacity {capacity}"
    );
    assert!(entries > 0.0);
    // The known key was not pushed out by the flood: unknown keys have their own part.
    let lookups = metric(&dp, "portcullis_gateway_session_cp_lookups_total").await;
    assert_eq!(
        call(&dp, "/flood/x", &[("Authorization", &good)]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        metric(&dp, "portcullis_gateway_session_cp_lookups_total").await,
        lookups,
        "the known key came from the local cache"
    );
    assert_eq!(
        echo.connections(),
        1,
        "only the known key reached the upstream"
    );
}

#[tokio::test]
async fn hardening_edge_concurrent_lookups_of_one_unknown_key_make_one_cp_call() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    cp.create_api(&protected_api("once", &echo.url())).await;
    let dp = Dp::joined(&cp).await;
    dp.wait_for_revision(1).await;
    let client = reqwest::Client::new();
    let requests = (0..50).map(|_| {
        client
            .get(dp.url("/once/x"))
            .header("Authorization", "the-same-unknown-key")
            .send()
    });
    let answers = futures_util::future::join_all(requests).await;
    for a in answers {
        assert_eq!(a.unwrap().status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(
        metric(&dp, "portcullis_gateway_session_cp_lookups_total").await,
        1.0
    );
    assert_eq!(echo.connections(), 0);
}

#[tokio::test]
async fn hardening_edge_password_flood_stays_within_the_bcrypt_slots() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let mut api = protected_api("basic", &echo.url());
    api["use_basic_auth"] = json!(true);
    cp.create_api(&api).await;
    let dp = Dp::joined(&cp).await;
    dp.wait_for_revision(1).await;
    let user = json!({"access_rights": rights(&["basic"]), "basic_auth_data": {"password": "right-password"}});
    let (status, body) = cp.call(Method::POST, "/tyk/keys/alice", Some(&user)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let client = reqwest::Client::new();
    let url = dp.url("/basic/x");
    let statuses: Vec<u16> = futures_util::future::join_all((0..40).map(|i| {
        client
            .get(&url)
            .basic_auth("alice", Some(format!("wrong-{i}")))
            .send()
    }))
    .await
    .into_iter()
    .map(|r| r.unwrap().status().as_u16())
    .collect();
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 503),
        "{statuses:?}"
    );
    let slots = metric(&dp, "portcullis_gateway_bcrypt_slots").await;
    let peak = metric(&dp, "portcullis_gateway_bcrypt_in_flight_peak").await;
    assert!(peak >= 1.0 && peak <= slots, "peak {peak}, slots {slots}");
    let runs = metric(&dp, "portcullis_gateway_bcrypt_runs_total").await;
    let busy = metric(&dp, "portcullis_gateway_bcrypt_busy_total").await;
    assert_eq!(
        runs + busy,
        40.0,
        "each wrong password ran bcrypt or was refused"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 503).count() as f64, busy);
    eventually(Duration::from_secs(20), "the right password", || async {
        let resp = client
            .get(&url)
            .basic_auth("alice", Some("right-password"))
            .send()
            .await
            .unwrap();
        (resp.status() == StatusCode::OK).then_some(())
    })
    .await;
}

/// Tyk's `apps/coprocess_grpc_app_sample_protected.json` with the Python driver (an embedded
/// Python plugin, which this gateway serves only through the gRPC coprocess).
fn tyk_python_sample(target: &str) -> Value {
    json!({
        "name": "Tyk Test API - gRPC Protected",
        "api_id": "grpc-protected",
        "org_id": "default",
        "definition": {"location": "header", "key": "version"},
        "auth": {"auth_header_name": "authorization"},
        "use_keyless": false,
        "enable_coprocess_auth": true,
        "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default", "expires": "3000-01-02 15:04", "use_extended_paths": true}}},
        "custom_middleware": {
            "pre": [], "post": [], "post_key_auth": [],
            "auth_check": {"name": "MyAuthHook", "path": "", "require_session": false},
            "driver": "python"
        },
        "proxy": {"listen_path": "/grpc-test-api/", "target_url": target, "strip_listen_path": true},
        "active": true
    })
}

#[tokio::test]
async fn hardening_edge_unsupported_auth_methods_are_refused_by_the_cp_and_503_at_the_edge() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let upstream = PyUpstream::start().await;
    let mut hmac = protected_api("hmac-only", &upstream.url());
    hmac["use_go_plugin_auth"] = json!(true);
    let mut chain = protected_api("plugin-and-token", &upstream.url());
    chain["custom_plugin_auth_enabled"] = json!(true);
    chain["custom_middleware"] = json!({"driver": "goplugin", "auth_check": {"name": "Auth"}});
    chain["use_standard_auth"] = json!(true);
    chain["base_identity_provided_by"] = json!("auth_token");
    let grpc = tyk_python_sample(&upstream.url());

    for (api, field) in [
        (&hmac, "use_go_plugin_auth"),
        (&chain, "custom_plugin_auth_enabled"),
        (&grpc, "enable_coprocess_auth"),
    ] {
        let (status, body) = cp.call(Method::POST, "/tyk/apis", Some(api)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["field"], field, "{body}");
    }
    cp.create_api(&protected_api("plain", &upstream.url()))
        .await;
    let mut upgraded = protected_api("plain", &upstream.url());
    upgraded["custom_plugin_auth_enabled"] = json!(true);
    upgraded["custom_middleware"] = json!({"driver": "lua"});
    let (status, body) = cp
        .call(Method::PUT, "/tyk/apis/plain", Some(&upgraded))
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("custom_plugin_auth_enabled")),
        "{body}"
    );

    // An older CP (no check) stored them anyway: write them to the store directly.
    let store = portcullis_control_plane::store::Store::connect(&db.url, 2)
        .await
        .unwrap();
    for api in [&hmac, &chain, &grpc] {
        let def = portcullis_proto::model::ApiDefinition::from_value(api.clone()).unwrap();
        store.create_api(&def).await.unwrap();
    }
    let dp = Dp::joined(&cp).await;
    dp.wait_for_revision(4).await;
    let key = create_key(
        &cp,
        json!({"access_rights": rights(&["hmac-only", "plugin-and-token", "grpc-protected", "plain"])}),
    )
    .await;
    assert_eq!(
        call(&dp, "/plain/x", &[("Authorization", &key)]).await.0,
        StatusCode::OK
    );
    let served = upstream.requests().len();
    for (path, method) in [
        ("/hmac-only/x", "go_plugin_auth"),
        ("/plugin-and-token/x", "custom_plugin_auth"),
        ("/grpc-test-api/x", "coprocess_auth"),
    ] {
        // curl as the client: what a user sees.
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Authorization: {key}"))
            .arg(dp.url(path))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        assert_eq!(code, "503", "{path}: {body}");
        let body: Value = serde_json::from_str(body).unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(method), "{path}: {error}");
        assert!(error.contains("does not implement"), "{path}: {error}");
        // No credential at all: still 503, never open.
        assert_eq!(
            call(&dp, path, &[]).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert_eq!(
        upstream.requests().len(),
        served,
        "the upstream of an unserved API sees nothing"
    );
    assert_eq!(
        metric(&dp, "portcullis_gateway_unsupported_auth_method_apis").await,
        3.0
    );
    assert_eq!(
        metric(
            &dp,
            "portcullis_gateway_unsupported_auth_method_total{api_id=\"grpc-protected\",method=\"coprocess_auth\"}"
        )
        .await,
        2.0
    );
    // The registry shows what the edge implements.
    let (_, nodes) = cp.call(Method::GET, "/portcullis/nodes", None).await;
    let caps = nodes["nodes"][0]["capabilities"].clone();
    for m in ["keyless", "auth_token", "basic_auth"] {
        assert!(
            caps.as_array().unwrap().iter().any(|c| c == m),
            "{m} in {caps}"
        );
    }
    assert!(caps.to_string().contains("\"jwt\""), "{caps}");
    assert!(!caps.to_string().contains("go_plugin"), "{caps}");
    // ... and the APIs it refuses to serve, from its ACKs.
    let unserved = eventually(
        Duration::from_secs(10),
        "unserved APIs in the registry",
        || async {
            let (_, nodes) = cp.call(Method::GET, "/portcullis/nodes", None).await;
            let list = nodes["nodes"][0]["unserved_apis"].clone();
            (list.as_array().is_some_and(|l| l.len() == 3)).then_some(list)
        },
    )
    .await;
    assert_eq!(
        unserved,
        json!([
            "grpc-protected: coprocess_auth",
            "hmac-only: go_plugin_auth",
            "plugin-and-token: custom_plugin_auth"
        ])
    );
}

/// A redis-server speaking TLS only, with a certificate from a CA of the test's own (openssl).
struct TlsRedis {
    port: u16,
    dir: PathBuf,
    child: Child,
}

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl on PATH");
    assert!(st.success(), "openssl {args:?}");
}

impl TlsRedis {
    async fn start() -> Self {
        let dir = tempdir("tls-redis");
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=edge test CA",
            ],
        );
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "redis.key",
                "-out",
                "redis.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "redis.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "redis.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .current_dir(&dir)
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--tls-cert-file",
                "redis.pem",
                "--tls-key-file",
                "redis.key",
                "--tls-ca-cert-file",
                "ca.pem",
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let addr = format!("127.0.0.1:{port}");
        eventually(Duration::from_secs(10), "TLS redis-server", || async {
            tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
        })
        .await;
        Self { port, dir, child }
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .current_dir(&self.dir)
            .args(["--tls", "--cacert", "ca.pem", "-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn hardening_edge_sessions_go_to_a_rediss_redis() {
    let redis = TlsRedis::start().await;
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let upstream = PyUpstream::start().await;
    cp.create_api(&protected_api("tls", &upstream.url())).await;
    let prefix = "tls-e2e:".to_owned();
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("default").await),
            redis_url: Some(format!("rediss://localhost:{}", redis.port)),
            redis_prefix: Some(prefix.clone()),
            redis_ca_pem: Some(std::fs::read(redis.dir.join("ca.pem")).unwrap()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    dp.wait_for_revision(1).await;
    // The TLS handshake to Redis may still be under way on a loaded machine.
    eventually(Duration::from_secs(20), "the Redis link up", || async {
        (metric(&dp, "portcullis_gateway_redis_up").await == 1.0).then_some(())
    })
    .await;
    // A write slower than the gateway's Redis timeout is skipped by design (the session is
    // then read from the control plane again), so a loaded machine may need a second key.
    let mut found = None;
    let mut lookups = 0.0;
    let mut key = String::new();
    for _ in 0..5 {
        key = create_key(&cp, json!({"access_rights": rights(&["tls"])})).await;
        assert_eq!(
            call(&dp, "/tls/x", &[("Authorization", &key)]).await.0,
            StatusCode::OK
        );
        lookups += 1.0;
        let slot = format!(
            "{prefix}session:{}",
            portcullis_proto::key_hash::key_hash(&key)
        );
        // redis-cli over TLS (an independent client) finds the sealed record the edge wrote.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while found.is_none() && tokio::time::Instant::now() < deadline {
            let got = redis.cli(&["--no-raw", "GET", &slot]);
            if got.starts_with("\"PCS1") {
                found = Some(got);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if found.is_some() {
            break;
        }
    }
    let found = found.expect("a sealed session record written over TLS");
    assert!(!found.contains("tls\""), "{found}");
    assert_eq!(
        metric(&dp, "portcullis_gateway_session_cp_lookups_total").await,
        lookups
    );

    // Without the CA the certificate is not trusted: nothing is sent to that Redis, and the
    // sessions come from the control plane.
    let untrusting = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("default").await),
            redis_url: Some(format!("rediss://localhost:{}", redis.port)),
            redis_prefix: Some("untrusted:".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    untrusting.wait_for_revision(1).await;
    assert_eq!(
        call(&untrusting, "/tls/x", &[("Authorization", &key)])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(redis.cli(&["--raw", "KEYS", "untrusted:*"]).trim(), "");
}
