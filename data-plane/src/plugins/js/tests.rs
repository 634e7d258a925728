//! The bounds of one call, on real QuickJS runtimes: deadline, memory, stack, isolation.

use std::path::PathBuf;
use std::sync::Arc;

use super::*;

const PASS: &str = r#"
var mw = new TykJS.TykMiddleware.NewMiddleware({});
mw.NewProcessRequest(function (request, session, config) {
    session.rate = 7;
    session.meta_data = {token: request.Headers["X-Key"][0] + config.config_data.suffix};
    request.SetHeaders["X-Seen"] = b64enc("yes");
    return mw.ReturnAuthData(request, session);
});
"#;

fn dir(files: &[(&str, &str)]) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pc-js-vm-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    for (name, text) in files {
        std::fs::write(d.join(name), text).unwrap();
    }
    d
}

fn engines(root: &std::path::Path) -> Engines {
    Engines::new(&PluginConfig {
        middleware_path: Some(root.to_owned()),
        ..PluginConfig::default()
    })
}

fn call(path: &str, name: &str) -> Call {
    Call {
        api_id: "a".into(),
        path: path.into(),
        name: name.into(),
        request: r#"{"Headers":{"X-Key":["k"]},"SetHeaders":{},"DeleteHeaders":[],
            "ReturnOverrides":{"ResponseCode":0}}"#
            .into(),
        session: Arc::from(r#"{"rate":0,"meta_data":{}}"#),
        spec: Arc::from(r#"{"APIID":"a","OrgID":"o","config_data":{"suffix":"-1"}}"#),
    }
}

fn looping(body: &str) -> String {
    format!(
        "var mw = new TykJS.TykMiddleware.NewMiddleware({{}});\n\
         mw.NewProcessRequest(function (request, session) {{ {body} \
         return mw.ReturnAuthData(request, session); }});"
    )
}

#[tokio::test]
async fn a_tyk_style_script_returns_its_session_and_header_changes() {
    let root = dir(&[("pass.js", PASS)]);
    let reply = engines(&root).run(call("pass.js", "mw")).await.unwrap();
    let Reply::Allow {
        session: Some(session),
        set_headers,
        ..
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert_eq!(session["rate"], 7);
    assert_eq!(session["meta_data"]["token"], "k-1");
    assert_eq!(set_headers, vec![("X-Seen".into(), "eWVz".into())]);
}

#[tokio::test]
async fn a_runaway_loop_is_cut_at_the_deadline_and_the_engine_serves_on() {
    let root = dir(&[
        ("spin.js", &looping("while (true) {}")),
        (
            "catch.js",
            &looping("while (true) { try { while (true) {} } catch (e) {} }"),
        ),
        ("pass.js", PASS),
    ]);
    let js = engines(&root);
    let started = std::time::Instant::now();
    assert_eq!(js.run(call("spin.js", "mw")).await, Err(JsError::Timeout));
    // The interrupt cannot be caught by the script.
    assert_eq!(js.run(call("catch.js", "mw")).await, Err(JsError::Timeout));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(matches!(
        js.run(call("pass.js", "mw")).await,
        Ok(Reply::Allow { .. })
    ));
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_limit() {
    let root = dir(&[
        (
            "grow.js",
            &looping("var a = []; while (true) { a.push(new Array(10000).fill(1)); }"),
        ),
        (
            "big.js",
            &looping("var s = 'x'; while (true) { s = s + s; }"),
        ),
        ("pass.js", PASS),
    ]);
    let js = engines(&root);
    let r = js.run(call("grow.js", "mw")).await;
    assert_eq!(r, Err(JsError::OutOfMemory), "{r:?}");
    let r = js.run(call("big.js", "mw")).await;
    assert!(
        matches!(r, Err(JsError::OutOfMemory | JsError::Script(_))),
        "{r:?}"
    );
    assert!(matches!(
        js.run(call("pass.js", "mw")).await,
        Ok(Reply::Allow { .. })
    ));
}

#[tokio::test]
async fn deep_recursion_ends_in_an_error_not_a_crash() {
    let root = dir(&[(
        "deep.js",
        &looping("function f(n) { return f(n + 1) + 1; } f(0);"),
    )]);
    let r = engines(&root).run(call("deep.js", "mw")).await;
    assert!(
        matches!(r, Err(JsError::Script(ref m)) if m.contains("stack")),
        "{r:?}"
    );
}

#[tokio::test]
async fn globals_set_by_one_call_are_gone_in_the_next() {
    let script = looping(
        "if (globalThis.seen) { request.ReturnOverrides.ResponseCode = 409; } globalThis.seen = true;",
    );
    let root = dir(&[("once.js", &script)]);
    let js = engines(&root);
    for _ in 0..3 {
        assert!(matches!(
            js.run(call("once.js", "mw")).await,
            Ok(Reply::Allow { .. })
        ));
    }
}

#[tokio::test]
async fn broken_scripts_and_missing_objects_are_clear_errors() {
    let root = dir(&[
        (
            "syntax.js",
            "var mw = new TykJS.TykMiddleware.NewMiddleware({}); mw.NewProc(",
        ),
        ("pass.js", PASS),
        (
            "http.js",
            &looping("TykMakeHttpRequest(JSON.stringify({Domain: 'http://x'}));"),
        ),
        (
            "nothing.js",
            "var mw = new TykJS.TykMiddleware.NewMiddleware({}); mw.NewProcessRequest(function () {});",
        ),
    ]);
    let js = engines(&root);
    let r = js.run(call("syntax.js", "mw")).await;
    assert!(
        matches!(r, Err(JsError::Script(ref m)) if m.contains("syntax.js:1")),
        "{r:?}"
    );
    assert!(
        matches!(js.run(call("pass.js", "other")).await, Err(JsError::Script(m)) if m.contains("other"))
    );
    assert!(
        matches!(js.run(call("http.js", "mw")).await, Err(JsError::Script(m)) if m.contains("not available"))
    );
    assert!(
        matches!(js.run(call("nothing.js", "mw")).await, Err(JsError::Script(m)) if m.contains("returned nothing"))
    );
    assert!(matches!(
        js.run(call("missing.js", "mw")).await,
        Err(JsError::Load(_))
    ));
    assert!(matches!(
        js.run(call("../pass.js", "mw")).await,
        Err(JsError::Load(_))
    ));
}

#[tokio::test]
async fn without_a_middleware_path_nothing_runs() {
    let js = Engines::new(&PluginConfig::default());
    assert_eq!(
        js.run(call("pass.js", "mw")).await,
        Err(JsError::NotConfigured)
    );
}
