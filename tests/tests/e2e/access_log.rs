//! `--access-log`: one JSON line per proxied request, read back as a user would (curl as the
//! client, Python's json module as the reader), never holding the key or the query string.

use portcullis_data_plane::access_log::Target;
use portcullis_proto::key_hash::key_hash;
use portcullis_tests::DpOptions;
use portcullis_tests::idp_stack::api;
use portcullis_tests::peers::{curl, sh};
use portcullis_tests::traffic::{key_for, stack_with};
use serde_json::{Value, json};

#[tokio::test]
async fn each_request_is_one_json_line_without_the_key_or_the_query() {
    let path = std::env::temp_dir().join(format!("portcullis-access-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut s = stack_with(DpOptions {
        access_log: Some(Target::File(path.clone())),
        ..Default::default()
    })
    .await;
    s.create(
        &[api(
            "orders",
            &s.echo.url(),
            json!({"auth": {"auth_header_name": "Authorization", "use_param": true, "param_name": "key"}}),
        )],
        &[],
    )
    .await;
    s.dp.wait_for_status("/orders/", 401).await;
    let key = key_for(&s.cp, &["orders"]).await;
    let tag = &key_hash(&key)[..8];
    for args in [
        vec!["-s".to_owned(), s.dp.url("/orders/a")],
        vec![
            "-s".to_owned(),
            "-H".to_owned(),
            format!("Authorization: {key}"),
            s.dp.url("/orders/b?colour=blue"),
        ],
        vec!["-s".to_owned(), s.dp.url(&format!("/orders/c?key={key}"))],
    ] {
        let (code, _, err) = curl(args).await;
        assert_eq!(code, 0, "{err}");
    }
    let mut lines: Vec<Value> = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("\"/orders/c\"") {
            assert!(!text.contains(&key), "the key is never logged: {text}");
            assert!(!text.contains("colour"), "nor the query: {text}");
            // An independent reader: each line is a JSON document on its own.
            let (code, out) = sh(format!(
                "python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]; print(\"ok\")' '{}'",
                path.display()
            ))
            .await;
            assert_eq!((code, out.trim()), (0, "ok"));
            lines = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .filter(|v: &Value| v["api_id"] == "orders")
                .collect();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let seen: Vec<(String, u64, Value)> = lines
        .iter()
        .filter(|l| l["path"] != "/orders/")
        .map(|l| {
            (
                l["path"].as_str().unwrap().to_owned(),
                l["status"].as_u64().unwrap(),
                l["key"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("/orders/a".to_owned(), 401, Value::Null),
            ("/orders/b".to_owned(), 200, json!(tag)),
            ("/orders/c".to_owned(), 200, json!(tag)),
        ]
    );
    for l in &lines {
        assert_eq!(l["method"], "GET");
        assert_eq!(l["client"], "127.0.0.1");
        assert!(l["latency_ms"].as_f64().unwrap() >= 0.0);
        assert!(l["ts_ms"].as_u64().unwrap() > 1_700_000_000_000);
    }
    let _ = std::fs::remove_file(&path);
}
