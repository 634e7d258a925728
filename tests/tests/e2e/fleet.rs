//! Joining, groups, and restarts with and without a state dir.

use std::time::Duration;

use portcullis_tests::{Cp, Dp, DpOptions, TestDb, eventually, keyless_api};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn tagged(id: &str, tags: &[&str]) -> serde_json::Value {
    let mut api = keyless_api(id, &format!("/{id}/"), "http://127.0.0.1:9/");
    api["tags"] = json!(tags);
    api
}

#[tokio::test]
async fn groups_get_only_their_apis_and_restarts_resume_or_resnapshot() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let state = tempdir();
    let eu = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("eu").await),
            group: Some("eu".into()),
            state_dir: Some(state.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let us = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("us").await),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    cp.create_api(&tagged("only-eu", &["eu"])).await;
    cp.create_api(&tagged("only-us", &["us"])).await;
    cp.create_api(&tagged("everyone", &[])).await;
    eu.wait_for_revision(3).await;
    us.wait_for_revision(3).await;
    // 502: routed (the target is closed); 404: not in this group's configuration.
    assert_eq!(eu.get("/only-eu/").await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(eu.get("/only-us/").await.0, StatusCode::NOT_FOUND);
    assert_eq!(eu.get("/everyone/").await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(us.get("/only-eu/").await.0, StatusCode::NOT_FOUND);
    assert_eq!(us.get("/only-us/").await.0, StatusCode::BAD_GATEWAY);

    // Retagging moves an API between groups.
    let (status, _) = cp
        .call(
            Method::PUT,
            "/tyk/apis/only-eu",
            Some(&tagged("only-eu", &["us"])),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    eu.wait_for_status("/only-eu/", 404).await;
    us.wait_for_status("/only-eu/", 502).await;

    // Restart with the state dir: serves at once, resumes with changes, no snapshot, no re-join.
    let node_id = eu.shared.node_id.lock().unwrap().clone();
    eu.stop();
    cp.create_api(&tagged("while-away", &["eu"])).await;
    let eu = Dp::start(
        &cp,
        DpOptions {
            group: Some("eu".into()),
            state_dir: Some(state.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        eu.revision() >= 4,
        "configuration loaded from the state dir before any sync"
    );
    assert_eq!(eu.admin("/ready").await, StatusCode::OK);
    eu.wait_for_status("/while-away/", 502).await;
    assert_eq!(eu.snapshots(), 0, "resumed without a snapshot");
    assert_eq!(*eu.shared.node_id.lock().unwrap(), node_id, "same identity");

    // Without a state dir a restart joins again and gets a snapshot.
    us.stop();
    let us = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("us").await),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    us.wait_for_status("/only-eu/", 502).await;
    assert_eq!(us.snapshots(), 1);
    let (_, nodes) = cp.call(Method::GET, "/portcullis/nodes", None).await;
    assert_eq!(
        nodes["nodes"].as_array().unwrap().len(),
        3,
        "two us identities and one eu"
    );
    std::fs::remove_dir_all(state).ok();
}

#[tokio::test]
async fn join_is_refused_for_bad_tokens_and_a_wrong_ca_hash() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let failure = |dp: Dp| async move {
        eventually(Duration::from_secs(10), "join failure", || async {
            dp.last_error()
        })
        .await
    };

    let good = cp.token("default").await;
    let (id, _) = good.split_once('.').unwrap();
    let wrong_secret = format!("{id}.0000000000000000");
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(wrong_secret),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        failure(dp)
            .await
            .contains("bootstrap token is unknown or its secret is wrong")
    );

    let (_, expired) = cp
        .call(
            Method::POST,
            "/portcullis/bootstrap-tokens",
            Some(&json!({"expires_in": 1})),
        )
        .await;
    let expired = expired["token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(expired),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(failure(dp).await.contains("expired"));

    let revoked = cp.token("default").await;
    let (rid, _) = revoked.split_once('.').unwrap();
    cp.call(
        Method::DELETE,
        &format!("/portcullis/bootstrap-tokens/{rid}"),
        None,
    )
    .await;
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(revoked),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(failure(dp).await.contains("revoked"));

    let wrong_pin = format!("sha256:{}", "ab".repeat(32));
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(good.clone()),
            ca_hash: Some(wrong_pin),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let error = failure(dp).await;
    assert!(
        error.contains("control plane CA does not match --ca-hash"),
        "{error}"
    );
    let (_, tokens) = cp
        .call(Method::GET, "/portcullis/bootstrap-tokens", None)
        .await;
    assert_eq!(
        tokens["tokens"][0]["uses"], 0,
        "the token was never sent to the impostor check's peer"
    );

    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(good),
            ca_hash: Some("nonsense".into()),
            ..Default::default()
        },
    )
    .await;
    assert!(
        dp.err()
            .unwrap()
            .contains("--ca-hash must look like sha256:")
    );
}

pub fn tempdir() -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("portcullis-e2e-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
