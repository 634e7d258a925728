//! The fleet console (docs/console.md) in a real browser: an operator opens `/console`, is
//! refused without the right secret, sees the APIs, policies and edges by group, the commit →
//! ACK chart, an edge's NACK, looks a key up by its hash and revokes it; the edges then refuse
//! the key.

use std::time::Duration;

use portcullis_proto::key_hash::key_hash;
use portcullis_proto::version::BUILD_VERSION;
use portcullis_tests::idp_stack::{access_rights, api};
use portcullis_tests::traffic::key_for;
use portcullis_tests::{ADMIN_SECRET, Cp, Dp, DpOptions, EchoUpstream, TestDb, browser};
use portcullis_tests::{eventually, keyless_api};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// An API whose name is markup: the console must show it as these characters.
const XSS_NAME: &str = r#"<img src=x onerror="window.__pwned=1">"#;
const FORBIDDEN: &str = "Attempted administrative access with invalid or missing key!";

/// An edge of `group`, watching: its first snapshot applied, so every later commit reaches it
/// as a change whose ACK is timed (a snapshot taken after a commit would hide that commit).
async fn edge(cp: &Cp, group: &str) -> Dp {
    let dp = Dp::start(
        cp,
        DpOptions {
            token: Some(cp.token(group).await),
            ..Default::default()
        },
    )
    .await
    .expect("gateway starts");
    eventually(Duration::from_secs(20), "the edge watching", || async {
        (dp.connected() && dp.snapshots() >= 1).then_some(())
    })
    .await;
    dp
}

/// A definition no edge can apply (as a newer control plane might write), for `group` only:
/// committed through the change log, since the management API would refuse it.
async fn commit_unusable_api(db_url: &str, group: &str) {
    use portcullis_control_plane::store::changelog::{ChangeKind, NewChange, commit_change};
    let store = portcullis_control_plane::store::Store::connect(db_url, 2)
        .await
        .unwrap();
    let bad = json!({"api_id": "broken", "proxy": {"listen_path": "/broken/", "target_url": "ftp://nowhere/"}});
    let tags = [group.to_owned()];
    let mut tx = store.pool().begin().await.unwrap();
    commit_change(
        &mut tx,
        NewChange {
            kind: ChangeKind::Api,
            resource_id: "broken",
            body: Some(&bad),
            tags: Some(&tags),
            prev_tags: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn get_with_key(dp: &Dp, key: &str) -> (StatusCode, Value) {
    portcullis_tests::idp_stack::get(dp, "/orders/", &[("Authorization", key)]).await
}

#[tokio::test]
async fn an_operator_sees_the_fleet_and_revokes_a_key_from_the_console() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let eu = edge(&cp, "eu-west").await;
    let us = edge(&cp, "us-east").await;
    // An edge that will be stuck on a change it cannot apply.
    let canary = edge(&cp, "canary").await;
    // Written once both edges follow the change log, so their ACKs are timed.
    cp.create_api(&api("orders", &echo.url(), json!({"name": "Orders API"})))
        .await;
    let mut xss = keyless_api("xss", "/xss/", &echo.url());
    xss["name"] = json!(XSS_NAME);
    cp.create_api(&xss).await;
    let policy = json!({"id": "gold", "name": "Gold plan", "rate": 100, "per": 60,
        "quota_max": -1, "access_rights": access_rights(&["orders"])});
    let (status, body) = cp.call(Method::POST, "/tyk/policies", Some(&policy)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    canary.wait_for_revision(3).await;
    commit_unusable_api(&db.url, "canary").await;
    let key = key_for(&cp, &["orders"]).await;
    let hash = key_hash(&key);
    for dp in [&eu, &us] {
        eventually(Duration::from_secs(20), "the key accepted", || async {
            (get_with_key(dp, &key).await.0 == StatusCode::OK).then_some(())
        })
        .await;
    }
    let canary_id = canary.node_id().unwrap();
    let (_, nodes) = cp.call(Method::GET, "/portcullis/nodes", None).await;
    let nodes: Vec<(String, String)> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_owned(),
                n["group"].as_str().unwrap().to_owned(),
            )
        })
        .filter(|(id, _)| *id != canary_id)
        .collect();
    assert_eq!(nodes.len(), 2);

    // ACKs reach the control plane after the edges applied the changes: the page is read once
    // every group's are counted.
    eventually(
        Duration::from_secs(20),
        "every group's ACKs timed",
        || async {
            let (_, p) = cp.call(Method::GET, "/portcullis/propagation", None).await;
            let counted = p["groups"].as_array().map_or(0, |groups| {
                groups
                    .iter()
                    .filter(|g| g["count"].as_u64() > Some(0))
                    .count()
            });
            (counted >= 3).then_some(())
        },
    )
    .await;
    let seen = browser::console_session(json!({
        "origin": format!("http://{}", cp.api_addr),
        "secret": ADMIN_SECRET,
        "wrong_secret": "not-the-admin-secret",
        "api_name": "Orders API",
        "policy_name": "Gold plan",
        "xss_name": XSS_NAME,
        "nodes": nodes.iter().map(|(id, group)| json!({"id": id, "group": group})).collect::<Vec<_>>(),
        "nacked": [{"id": canary_id}],
        "key_hash": hash,
        "screenshot": std::env::var("PORTCULLIS_CONSOLE_SCREENSHOT").ok(),
    }))
    .await;

    // The shell loads without a secret, under a policy that refuses anything not its own.
    assert_eq!(seen["page"]["status"], 200);
    assert_eq!(seen["page"]["title"], "Portcullis fleet console");
    let csp = seen["page"]["csp"]
        .as_str()
        .expect("a Content-Security-Policy");
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(seen["page"]["frame_options"], "DENY");
    assert_eq!(
        seen["page"]["status_text"],
        "Not connected: enter the admin secret."
    );

    // Without a secret and with a wrong one, the control plane refuses and the page says so.
    for case in ["without_secret", "wrong_secret"] {
        let c = &seen[case];
        assert_eq!(
            c["error"],
            format!("The control plane refused the request (403): {FORBIDDEN}"),
            "{case}"
        );
        assert_eq!(
            c["status"], "Not connected: the admin secret was refused.",
            "{case}"
        );
        assert_eq!(c["apis"], json!([]), "{case}: no data shown");
    }
    assert_eq!(
        seen["wrong_secret"]["stored"],
        Value::Null,
        "a refused secret is not kept"
    );

    // With the right one: every table, from the control plane's own figures.
    let connected = &seen["connected"];
    assert_eq!(connected["error_hidden"], true);
    assert_eq!(connected["stored_matches"], true);
    assert_eq!(connected["secret_field_empty"], true);
    assert!(
        connected["status"]
            .as_str()
            .unwrap()
            .starts_with("Connected: 2 APIs, 1 policies, 3 nodes."),
        "{}",
        connected["status"]
    );
    assert_eq!(
        seen["apis"],
        json!([
            [XSS_NAME, "xss", "/xss/", "yes", ""],
            ["Orders API", "orders", "/orders/", "yes", ""],
        ])
    );
    assert_eq!(
        seen["policies"],
        json!([[
            "Gold plan",
            "gold",
            "orders",
            "100 / 60 s",
            "unlimited",
            "yes"
        ]])
    );

    let groups = seen["node_groups"].as_array().unwrap();
    assert_eq!(
        groups
            .iter()
            .map(|g| g["group"].clone())
            .collect::<Vec<_>>(),
        [json!("canary"), json!("eu-west"), json!("us-east")]
    );
    // The canary: behind by the changes since the one it refused, and why it refused it.
    let (_, node) = cp
        .call(Method::GET, &format!("/portcullis/nodes/{canary_id}"), None)
        .await;
    let row = &groups[0]["rows"][0];
    assert_eq!(row[1], json!(canary_id));
    assert_eq!(row[3], "connected");
    // Revisions 1-3 are the APIs and the policy, 4 the unusable API, 5 the key; the page is read
    // before the revocation commits 6.
    assert_eq!(row[4], json!(node["applied_revision"].to_string()));
    assert_eq!((row[4].as_str(), row[5].as_str()), (Some("3"), Some("2")));
    // The NACK of the unusable API (4), or of the change after it, which the edge also refuses.
    let nack = row[6].as_str().unwrap();
    let revision = nack
        .strip_prefix("revision ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_default();
    assert!(
        ["4", "5"].contains(&revision)
            && nack.contains(" UTC: invalid resource broken: proxy.target_url")
            && nack.ends_with(" [broken]"),
        "{nack}"
    );
    for g in &groups[1..] {
        let group = g["group"].as_str().unwrap();
        assert_eq!(g["heading"], format!("Group {group}: 1 node, 1 connected"));
        assert_eq!(
            g["header"],
            json!([
                "Name",
                "Node id",
                "Version",
                "State",
                "Applied revision",
                "Revision lag",
                "Last NACK",
                "Last seen",
                "Certificate expires"
            ])
        );
        let rows = g["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        let (id, _) = nodes.iter().find(|(_, g)| g == group).unwrap();
        let (_, node) = cp
            .call(Method::GET, &format!("/portcullis/nodes/{id}"), None)
            .await;
        assert_eq!(row[0], node["name"]);
        assert_eq!(row[1], json!(id));
        assert_eq!(row[2], BUILD_VERSION);
        assert_eq!(row[3], "connected");
        assert!(
            row[4].as_str().unwrap().parse::<i64>().unwrap() >= 4,
            "{row}"
        );
        assert_eq!(row[5], "0", "no revision lag");
        assert_eq!(row[6], "—", "no NACK");
        // The certificate's expiry, to the minute, and how far off it is (an hour in tests).
        let expires = node["cert_expires_at"].as_str().unwrap();
        let shown = row[8].as_str().unwrap();
        assert!(
            shown.starts_with(&format!("{} UTC (in ", expires[..16].replace('T', " "))),
            "{shown} for {expires}"
        );
    }

    // The commit → ACK chart: one SVG per group, a bar per bucket, the ACKs of each edge in it.
    let charts = seen["charts"].as_array().unwrap();
    assert_eq!(
        charts
            .iter()
            .map(|c| c["group"].clone())
            .collect::<Vec<_>>(),
        [json!("canary"), json!("eu-west"), json!("us-east")]
    );
    let (_, propagation) = cp.call(Method::GET, "/portcullis/propagation", None).await;
    let bounds = propagation["bounds_seconds"].as_array().unwrap().len();
    for c in charts {
        assert_eq!(c["is_svg"], true);
        let counts: Vec<u64> = serde_json::from_value(c["counts"].clone()).unwrap();
        assert_eq!(counts.len(), bounds + 1);
        let total: u64 = counts.iter().sum();
        assert!(total >= 1, "{c}");
        assert!(
            c["caption"].as_str().unwrap().starts_with(&format!(
                "Group {}: {total} ACKed",
                c["group"].as_str().unwrap()
            )),
            "{c}"
        );
        let heights: Vec<f64> = serde_json::from_value(c["heights"].clone()).unwrap();
        for (n, h) in counts.iter().zip(&heights) {
            assert_eq!(
                *n > 0,
                *h > 0.0,
                "a bar is drawn exactly where there are ACKs: {c}"
            );
        }
        assert_eq!(c["labels"][0], "≤1 ms");
        assert_eq!(c["labels"][bounds], ">10 s");
    }

    // The API named as markup is text: no image element, no handler run.
    assert_eq!(
        seen["xss"],
        json!({"shown_as_text": true, "images": 0, "fired": false})
    );

    // The key, looked up by its hash (typed in capitals), then revoked.
    assert_eq!(
        seen["malformed_hash"],
        "A key hash is the 64 hex digits of its sha256 (the key_hash the key was created with)."
    );
    assert_eq!(seen["key"]["Key hash"], json!(hash));
    assert_eq!(seen["key"]["Access rights"], "orders");
    assert_eq!(seen["key"]["Expires"], "never");
    assert_eq!(
        seen["dialogs"],
        json!([format!(
            "Revoke the key with hash {hash}? Every edge will refuse it."
        )])
    );
    assert_eq!(
        seen["revoked"],
        json!({
            "status": format!("Key {hash} revoked: every edge refuses it once it applies the change."),
            "details_hidden": true,
        })
    );
    assert_eq!(
        seen["lookup_after_revoke"],
        format!("No key has the hash {hash}.")
    );
    assert!(
        seen["reloaded"]["status"]
            .as_str()
            .unwrap()
            .starts_with("Connected: 2 APIs"),
        "a reload in the same tab stays connected: {}",
        seen["reloaded"]
    );
    assert_eq!(
        seen["forgotten"],
        json!({"status": "Not connected: the secret is forgotten.", "stored": null, "apis": 0})
    );

    // Nothing but the control plane was asked for anything, the secret never in a URL, and the
    // page's own policy refused nothing of the page's.
    let origin = format!("http://{}/", cp.api_addr);
    for url in seen["requests"].as_array().unwrap() {
        let url = url.as_str().unwrap();
        assert!(url.starts_with(&origin), "{url}");
        assert!(!url.contains(ADMIN_SECRET), "{url}");
    }
    assert_eq!(seen["final_url"], format!("{origin}console"));
    assert_eq!(seen["page_errors"], json!([]));
    for line in seen["console"].as_array().unwrap() {
        let line = line.as_str().unwrap();
        assert!(!line.contains("Content Security Policy"), "{line}");
        assert!(!line.contains(ADMIN_SECRET), "{line}");
    }

    // The edges refuse the revoked key, and the control plane no longer has it.
    for dp in [&eu, &us] {
        let body = eventually(
            Duration::from_secs(20),
            "the revoked key refused",
            || async {
                let (status, body) = get_with_key(dp, &key).await;
                (status == StatusCode::FORBIDDEN).then_some(body)
            },
        )
        .await;
        assert_eq!(body["error"], "Access to this API has been disallowed");
    }
    let (status, _) = cp
        .call(Method::GET, &format!("/tyk/keys/{hash}?hashed=true"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_console_shell_needs_no_secret_but_its_data_does() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", cp.api_addr);
    for (path, content_type) in [
        ("/console", "text/html; charset=utf-8"),
        ("/console/", "text/html; charset=utf-8"),
        ("/console/console.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let resp = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers();
        assert_eq!(h["content-type"], content_type, "{path}");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .starts_with("default-src 'self';"),
            "{path}"
        );
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
    }
    // Only reading the shell is exempt; its neighbours and every data route still need the secret.
    for (method, path) in [
        (Method::POST, "/console"),
        (Method::GET, "/console/other.js"),
        (Method::GET, "/portcullis/propagation"),
        (Method::GET, "/portcullis/nodes"),
        (Method::GET, "/tyk/keys"),
    ] {
        let (status, body) = cp.call_raw(method.clone(), path, None, None).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (StatusCode::FORBIDDEN, Some(FORBIDDEN)),
            "{method} {path}"
        );
    }
    // With the secret: a control plane no edge has ACKed yet has empty histograms.
    let (status, body) = cp.call(Method::GET, "/portcullis/propagation", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["groups"], json!([]));
    assert_eq!(body["bounds_seconds"][0], 0.001);
}
