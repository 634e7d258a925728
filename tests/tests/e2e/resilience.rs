//! Many writers, large snapshots and a control plane that goes away.

use std::collections::BTreeMap;
use std::time::Duration;

use portcullis_tests::{Cp, Dp, DpOptions, EchoUpstream, TestDb, eventually, keyless_api};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn concurrent_writers_end_in_the_same_state_everywhere_without_gaps() {
    let db = TestDb::new().await;
    let cp = std::sync::Arc::new(Cp::start(&db.url).await);
    let dps = [
        Dp::start(
            &cp,
            DpOptions {
                token: Some(cp.token("a").await),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
        Dp::start(
            &cp,
            DpOptions {
                token: Some(cp.token("b").await),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    ];
    let (writers, writes) = (50, 20);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let cp = cp.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..writes {
                // Each writer rewrites its own API; the last write names the final target path.
                let def = keyless_api(
                    &format!("w{w}"),
                    &format!("/w{w}/"),
                    &format!("http://127.0.0.1:9/v{i}/"),
                );
                let method = if i == 0 { Method::POST } else { Method::PUT };
                let path = if i == 0 {
                    "/tyk/apis".to_owned()
                } else {
                    format!("/tyk/apis/w{w}")
                };
                let (status, body) = cp.call(method, &path, Some(&def)).await;
                assert_eq!(status, StatusCode::OK, "{body}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = i64::from(writers * writes);
    let pool = db.pool().await;
    let revisions: Vec<i64> =
        sqlx::query_scalar("SELECT revision FROM change_log ORDER BY revision")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        revisions,
        (1..=total).collect::<Vec<_>>(),
        "dense revisions, none skipped"
    );
    let (_, apis) = cp.call(Method::GET, "/tyk/apis", None).await;
    let expected: BTreeMap<String, String> = apis
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["api_id"].as_str().unwrap().to_owned(),
                a["proxy"]["target_url"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(expected.len(), writers as usize);
    assert!(
        expected
            .values()
            .all(|t| t.ends_with(&format!("/v{}/", writes - 1)))
    );
    for dp in &dps {
        dp.wait_for_revision(total).await;
        let table = dp.shared.table.load();
        assert_eq!(table.len(), writers as usize);
        for (id, target) in &expected {
            let route = table.lookup(None, &format!("/{id}/x")).unwrap();
            assert_eq!(&route.api_id, id);
            assert_eq!(
                format!("http://{}{}/", route.target.authority, route.target.base),
                *target
            );
        }
        assert!(
            dp.shared
                .stats
                .nacks
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0
        );
    }
}

#[tokio::test]
async fn a_snapshot_over_four_mebibytes_arrives_and_applies() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let pool = db.pool().await;
    let store = portcullis_control_plane::store::Store::connect(&db.url, 4)
        .await
        .unwrap();
    // Written through the store (the same transaction path as the API) to keep the test quick.
    let padding = "x".repeat(1500);
    let n = 3000;
    for i in 0..n {
        let mut def = keyless_api(
            &format!("bulk{i}"),
            &format!("/bulk/{i}/"),
            "http://127.0.0.1:9/",
        );
        def["description"] = json!(padding);
        let def = portcullis_proto::model::ApiDefinition::from_value(def).unwrap();
        store.create_api(&def).await.unwrap();
    }
    let size: i64 =
        sqlx::query_scalar("SELECT sum(octet_length(definition::text))::bigint FROM apis")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(size > 4 * 1024 * 1024, "the configuration is {size} bytes");
    let dp = Dp::joined(&cp).await;
    dp.wait_for_revision(n).await;
    assert_eq!(dp.shared.table.load().len(), n as usize);
    assert_eq!(dp.snapshots(), 1);
    assert_eq!(
        dp.get("/bulk/2999/").await.0,
        StatusCode::BAD_GATEWAY,
        "routed"
    );
}

#[tokio::test]
async fn gateway_keeps_serving_while_the_control_plane_is_down_and_catches_up_after() {
    let db = TestDb::new().await;
    let echo = EchoUpstream::start().await;
    let cp = Cp::start(&db.url).await;
    let (api_addr, sync_addr) = (cp.api_addr, cp.sync_addr);
    let dp = Dp::joined(&cp).await;
    cp.create_api(&keyless_api("kept", "/kept/", &echo.url()))
        .await;
    dp.wait_for_status("/kept/", 200).await;

    cp.stop();
    eventually(Duration::from_secs(10), "gateway notices", || async {
        (!dp.connected()).then_some(())
    })
    .await;
    for _ in 0..5 {
        assert_eq!(
            dp.get("/kept/").await.0,
            StatusCode::OK,
            "serving from the last configuration"
        );
    }
    assert_eq!(
        dp.admin("/ready").await,
        StatusCode::OK,
        "still ready without a control plane"
    );

    // Changes committed while no control plane runs (another replica, a migration script...).
    let store = portcullis_control_plane::store::Store::connect(&db.url, 2)
        .await
        .unwrap();
    let def = portcullis_proto::model::ApiDefinition::from_value(keyless_api(
        "added",
        "/added/",
        &echo.url(),
    ))
    .unwrap();
    store.create_api(&def).await.unwrap();
    store.delete_api("kept").await.unwrap();

    let cp = Cp::start_on(&db.url, api_addr, sync_addr)
        .await
        .expect("control plane restarts on its addresses");
    dp.wait_for_status("/added/", 200).await;
    dp.wait_for_status("/kept/", 404).await;
    assert_eq!(
        dp.snapshots(),
        1,
        "caught up with changes, not a new snapshot"
    );
    drop(cp);
}

#[tokio::test]
async fn a_change_the_gateway_cannot_apply_is_nacked_and_the_old_config_keeps_serving() {
    let db = TestDb::new().await;
    let echo = EchoUpstream::start().await;
    let cp = Cp::start(&db.url).await;
    let dp = Dp::joined(&cp).await;
    cp.create_api(&keyless_api("good", "/good/", &echo.url()))
        .await;
    dp.wait_for_status("/good/", 200).await;

    // A definition this gateway cannot use (as a newer control plane might write): committed
    // through the change log directly, since the management API would refuse it.
    let store = portcullis_control_plane::store::Store::connect(&db.url, 2)
        .await
        .unwrap();
    let bad = json!({"api_id": "broken", "proxy": {"listen_path": "/broken/", "target_url": "ftp://nowhere/"}});
    let mut tx = store.pool().begin().await.unwrap();
    use portcullis_control_plane::store::changelog::{ChangeKind, NewChange, commit_change};
    commit_change(
        &mut tx,
        NewChange {
            kind: ChangeKind::Api,
            resource_id: "broken",
            body: Some(&bad),
            tags: Some(&[]),
            prev_tags: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let nack = eventually(
        Duration::from_secs(10),
        "NACK recorded in the node registry",
        || async {
            let (_, nodes) = cp.call(Method::GET, "/portcullis/nodes", None).await;
            let nack = nodes["nodes"][0]["last_nack"].clone();
            (!nack.is_null()).then_some(nack)
        },
    )
    .await;
    assert_eq!(nack["resource_ids"], json!(["broken"]));
    assert!(
        nack["error"]
            .as_str()
            .unwrap()
            .contains("invalid resource broken: proxy.target_url"),
        "{nack}"
    );
    assert_eq!(dp.revision(), 1, "still on the last good revision");
    assert_eq!(
        dp.get("/good/").await.0,
        StatusCode::OK,
        "old configuration keeps serving"
    );

    // Once the operator removes the bad definition, the gateway moves on with everything else.
    let mut tx = store.pool().begin().await.unwrap();
    commit_change(
        &mut tx,
        NewChange {
            kind: ChangeKind::Api,
            resource_id: "broken",
            body: None,
            tags: None,
            prev_tags: Some(&[]),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    cp.create_api(&keyless_api("later", "/later/", &echo.url()))
        .await;
    dp.wait_for_status("/later/", 200).await;
    assert_eq!(dp.revision(), 4);
}
