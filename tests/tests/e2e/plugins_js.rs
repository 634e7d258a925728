//! Tyk's JavaScript auth middleware (`driver: otto`) on a real gateway: real .js files in a
//! `--middleware-path`, the echo upstream reporting what it received, and Node running the
//! same file under a small TykJS shim as an independent check that the script is plain JS
//! that decides the same way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_tests::{Cp, Dp, DpOptions, EchoUpstream, Received, TestDb};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Tyk's sample shape: check a header, refuse without it, return a session with a rate limit.
const SAMPLE_AUTH: &str = r#"
var sampleAuth = new TykJS.TykMiddleware.NewMiddleware({});

sampleAuth.NewProcessRequest(function (request, session, config) {
    var key = request.Headers["X-Js-Key"];
    if (key === undefined || key[0] !== config.config_data.expected) {
        request.ReturnOverrides.ResponseCode = 401;
        request.ReturnOverrides.ResponseError = "Header missing or wrong (JS middleware)";
        request.ReturnOverrides.ResponseHeaders = {"X-Auth-Hint": "send X-Js-Key"};
        return sampleAuth.ReturnData(request, {});
    }
    request.SetHeaders["X-Js-User"] = "user-" + key[0];
    request.DeleteHeaders.push("X-Js-Key");
    request.DeleteHeaders.push("X-Drop-Me");
    var thisSession = {
        "rate": 3, "per": 60, "quota_max": -1, "expires": 0,
        "access_rights": {},
        "meta_data": {"token": key[0]}
    };
    log("authenticated " + key[0]);
    return sampleAuth.ReturnAuthData(request, thisSession);
});
"#;

const DENY: &str = r#"
var denyAll = new TykJS.TykMiddleware.NewMiddleware({});
denyAll.NewProcessRequest(function (request, session) {
    request.ReturnOverrides.ResponseCode = 418;
    request.ReturnOverrides.ResponseError = "teapots only, method " + request.Method;
    return denyAll.ReturnData(request, {});
});
"#;

const SPIN: &str = r#"
var spin = new TykJS.TykMiddleware.NewMiddleware({});
spin.NewProcessRequest(function (request, session) {
    while (true) {}
});
"#;

const GROW: &str = r#"
var grow = new TykJS.TykMiddleware.NewMiddleware({});
grow.NewProcessRequest(function (request, session) {
    var all = [];
    while (true) { all.push(new Array(100000).fill(request.URL)); }
});
"#;

fn middleware_dir(files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pc-js-e2e-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("mw")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join("mw").join(name), text).unwrap();
    }
    // A file beside the middleware path that a traversal would reach.
    std::fs::write(dir.join("outside.js"), SAMPLE_AUTH).unwrap();
    dir
}

fn js_api(id: &str, target: &str, name: &str, path: &str) -> Value {
    json!({
        "api_id": id, "name": id, "org_id": "org1",
        "custom_plugin_auth_enabled": true,
        "custom_middleware": {"driver": "otto", "auth_check": {"name": name, "path": path}},
        "config_data": {"expected": "k1"},
        "proxy": {"listen_path": format!("/{id}/"), "target_url": target, "strip_listen_path": true},
    })
}

async fn gateway(cp: &Cp, middleware: Option<&Path>) -> Dp {
    let prefix = format!("e2e:{}:js:", uuid::Uuid::new_v4().simple());
    let plugins = portcullis_data_plane::plugins::PluginConfig {
        middleware_path: middleware.map(|p| p.join("mw")),
        ..Default::default()
    };
    Dp::start(
        cp,
        DpOptions {
            token: Some(cp.token("default").await),
            redis_url: Some(portcullis_tests::redis_url()),
            redis_prefix: Some(prefix),
            plugins,
            ..Default::default()
        },
    )
    .await
    .expect("gateway starts")
}

async fn get(
    dp: &Dp,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new()
        .get(dp.url(path))
        .timeout(Duration::from_secs(10));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

fn error_of(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_tyk_sample_auth_script_authenticates_edits_headers_and_its_rate_limit_applies() {
    let dir = middleware_dir(&[("auth.js", SAMPLE_AUTH), ("deny.js", DENY)]);
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let upstream = EchoUpstream::start().await;
    cp.create_api(&js_api("jsauth", &upstream.url(), "sampleAuth", "auth.js"))
        .await;
    cp.create_api(&js_api("jsdeny", &upstream.url(), "denyAll", "deny.js"))
        .await;
    let dp = gateway(&cp, Some(&dir)).await;
    dp.wait_for_revision(2).await;

    // No header: the script's own status, message and header.
    let (status, headers, body) = get(&dp, "/jsauth/x", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_of(&body), "Header missing or wrong (JS middleware)");
    assert_eq!(headers["x-auth-hint"], "send X-Js-Key");
    let (status, _, _) = get(&dp, "/jsauth/x", &[("X-Js-Key", "wrong")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The right key: the upstream sees the script's header changes.
    let (status, _, body) = get(
        &dp,
        "/jsauth/x",
        &[("X-Js-Key", "k1"), ("X-Drop-Me", "1"), ("X-Keep", "2")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen: Received = serde_json::from_str(&body).unwrap();
    assert_eq!(seen.header("x-js-user"), Some("user-k1"));
    assert_eq!(seen.header("x-js-key"), None);
    assert_eq!(seen.header("x-drop-me"), None);
    assert_eq!(seen.header("x-keep"), Some("2"));

    // rate 3 per 60 s: the fourth call of the minute is refused by the gateway.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get(&dp, "/jsauth/x", &[("X-Js-Key", "k1")]).await.0);
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let (_, _, body) = get(&dp, "/jsauth/x", &[("X-Js-Key", "k1")]).await;
    assert_eq!(error_of(&body), "Rate Limit Exceeded");

    // A script that denies with a code and text of its own.
    let (status, _, body) = get(&dp, "/jsdeny/x", &[]).await;
    assert_eq!(status.as_u16(), 418, "{body}");
    assert_eq!(error_of(&body), "teapots only, method GET");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn runaway_and_greedy_scripts_are_cut_and_the_gateway_keeps_serving() {
    let dir = middleware_dir(&[
        ("auth.js", SAMPLE_AUTH),
        ("spin.js", SPIN),
        ("grow.js", GROW),
    ]);
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let upstream = EchoUpstream::start().await;
    cp.create_api(&js_api("jsok", &upstream.url(), "sampleAuth", "auth.js"))
        .await;
    cp.create_api(&js_api("jsspin", &upstream.url(), "spin", "spin.js"))
        .await;
    cp.create_api(&js_api("jsgrow", &upstream.url(), "grow", "grow.js"))
        .await;
    cp.create_api(&js_api(
        "jsmissing",
        &upstream.url(),
        "sampleAuth",
        "nope.js",
    ))
    .await;
    cp.create_api(&js_api("jslink", &upstream.url(), "sampleAuth", "link.js"))
        .await;
    std::os::unix::fs::symlink(dir.join("outside.js"), dir.join("mw").join("link.js")).unwrap();
    let dp = gateway(&cp, Some(&dir)).await;
    dp.wait_for_revision(5).await;

    let (status, _, body) = get(&dp, "/jsspin/x", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(error_of(&body), "JavaScript middleware timed out");
    let (status, _, body) = get(&dp, "/jsgrow/x", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(
        error_of(&body),
        "JavaScript middleware exceeded its memory limit"
    );
    // A missing file and a link out of the middleware path are load errors.
    for api in ["/jsmissing/x", "/jslink/x"] {
        let (status, _, body) = get(&dp, api, &[("X-Js-Key", "k1")]).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{api}: {body}");
        assert_eq!(error_of(&body), "JavaScript middleware could not be loaded");
    }
    let (status, _, body) = get(&dp, "/jsok/x", &[("X-Js-Key", "k1")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn traversal_is_refused_and_a_gateway_without_a_middleware_path_answers_503() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let upstream = EchoUpstream::start().await;
    let (status, body) = cp
        .call(
            reqwest::Method::POST,
            "/tyk/apis",
            Some(&js_api(
                "jsbad",
                &upstream.url(),
                "sampleAuth",
                "../outside.js",
            )),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.to_string()
            .contains("custom_middleware.auth_check.path"),
        "{body}"
    );

    cp.create_api(&js_api(
        "jsnopath",
        &upstream.url(),
        "sampleAuth",
        "auth.js",
    ))
    .await;
    let dp = gateway(&cp, None).await;
    dp.wait_for_revision(1).await;
    let (status, _, body) = get(&dp, "/jsnopath/x", &[("X-Js-Key", "k1")]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(error_of(&body).contains("--middleware-path"), "{body}");
}

/// The same file under Node with a minimal TykJS of the test's own: the script is ordinary
/// JavaScript and decides as it does in the gateway.
#[tokio::test]
async fn node_runs_the_same_script_to_the_same_decisions() {
    let dir = middleware_dir(&[("auth.js", SAMPLE_AUTH)]);
    let shim = r#"
const fs = require('fs');
globalThis.log = () => {};
globalThis.TykJS = {TykMiddleware: {NewMiddleware: function () {}}};
TykJS.TykMiddleware.NewMiddleware.prototype.NewProcessRequest = function (f) { this.f = f; };
TykJS.TykMiddleware.NewMiddleware.prototype.ReturnData = (r, m) => ({Request: r, SessionMeta: m});
TykJS.TykMiddleware.NewMiddleware.prototype.ReturnAuthData = (r, s) => ({Request: r, Session: s});
(0, eval)(fs.readFileSync(process.argv[1], 'utf8'));
const req = (h) => ({Headers: h, SetHeaders: {}, DeleteHeaders: [], ReturnOverrides: {ResponseCode: 0}});
const cfg = {config_data: {expected: 'k1'}};
const out = [sampleAuth.f(req({}), {}, cfg), sampleAuth.f(req({'X-Js-Key': ['k1']}), {}, cfg)];
console.log(JSON.stringify(out));
"#;
    let out = std::process::Command::new("node")
        .args(["-e", shim, dir.join("mw/auth.js").to_str().unwrap()])
        .output()
        .expect("node on PATH");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out[0]["Request"]["ReturnOverrides"]["ResponseCode"], 401);
    assert_eq!(out[1]["Session"]["rate"], 3);
    assert_eq!(out[1]["Request"]["SetHeaders"]["X-Js-User"], "user-k1");
    let _ = std::fs::remove_dir_all(&dir);
}
