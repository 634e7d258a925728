//! Failures of what the control plane stands on, and of the protocol's edges: Postgres killed
//! and restarted, a gateway below the change log's retention, an idle group, version skew.

use std::time::Duration;

use portcullis_proto::version::BUILD_VERSION;

use crate::fleet::tempdir;
use portcullis_tests::blackhole::Blackhole;
use portcullis_tests::private_pg::PrivatePostgres;
use portcullis_tests::raw_sync::{join_as, stored_identity, watch_as};
use portcullis_tests::{Cp, Dp, DpOptions, EchoUpstream, TestDb, eventually, keyless_api};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn postgres_killed_and_restarted_loses_no_committed_change_and_the_edge_keeps_serving() {
    let mut pg = PrivatePostgres::start().await;
    let echo = EchoUpstream::start().await;
    let cp = Cp::start(&pg.url()).await;
    let dp = Dp::joined(&cp).await;
    cp.create_api(&keyless_api("a", "/a/", &echo.url())).await;
    dp.wait_for_status("/a/", 200).await;

    // Committed, then Postgres dies at once: the change must still reach the edge.
    cp.create_api(&keyless_api("b", "/b/", &echo.url())).await;
    pg.kill9();

    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/apis",
            Some(&keyless_api("lost", "/lost/", &echo.url())),
        )
        .await;
    assert!(status.is_server_error(), "{status} {body}");
    assert!(body["message"].as_str().is_some(), "a message: {body}");
    assert_eq!(dp.get("/a/").await.0, StatusCode::OK);
    assert_eq!(dp.admin("/ready").await, StatusCode::OK);

    pg.run().await;
    let created = eventually(Duration::from_secs(20), "writes accepted again", || async {
        let (status, _) = cp
            .call(
                Method::POST,
                "/tyk/apis",
                Some(&keyless_api("after", "/after/", &echo.url())),
            )
            .await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    let () = created;
    dp.wait_for_status("/b/", 200).await;
    dp.wait_for_status("/after/", 200).await;
    assert_eq!(dp.get("/lost/").await.0, StatusCode::NOT_FOUND);
    let (status, nodes) = cp.call(Method::GET, "/portcullis/nodes", None).await;
    assert_eq!(status, StatusCode::OK);
    eventually(Duration::from_secs(10), "registry up to date", || async {
        let (_, nodes) = cp.call(Method::GET, "/portcullis/nodes", None).await;
        (nodes["nodes"][0]["lag"] == 0).then_some(())
    })
    .await;
    drop(nodes);
}

#[tokio::test]
async fn a_gateway_below_retention_gets_a_snapshot_and_an_idle_group_stays_inside_it() {
    let db = TestDb::new().await;
    let echo = EchoUpstream::start().await;
    let cp = Cp::start(&db.url).await;
    let (api_addr, sync_addr) = (cp.api_addr, cp.sync_addr);
    let state = tempdir();
    let options = DpOptions {
        token: Some(cp.token("default").await),
        state_dir: Some(state.clone()),
        ..Default::default()
    };
    let dp = Dp::start(&cp, options.clone()).await.unwrap();
    // An idle gateway of another group: nothing below reaches it but bookmarks.
    let idle = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("idle").await),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    cp.create_api(&keyless_api("a", "/a/", &echo.url())).await;
    dp.wait_for_status("/a/", 200).await;
    dp.stop_once_saved(&state).await;
    for i in 0..5 {
        let mut api = keyless_api(&format!("n{i}"), &format!("/n{i}/"), &echo.url());
        api["tags"] = json!(["default"]);
        cp.create_api(&api).await;
    }
    let idle_id = idle.node_id().unwrap();
    eventually(Duration::from_secs(10), "idle group acked head", || async {
        let (_, n) = cp
            .call(Method::GET, &format!("/portcullis/nodes/{idle_id}"), None)
            .await;
        (n["applied_revision"] == 6 && n["lag"] == 0).then_some(())
    })
    .await;
    assert_eq!(idle.snapshots(), 1, "bookmarks, not snapshots");

    // Compact down to the head while the stopped gateway still holds revision 1.
    let store = portcullis_control_plane::store::Store::connect(&db.url, 2)
        .await
        .unwrap();
    let removed = store
        .compact_change_log(portcullis_control_plane::store::changelog::Retention {
            min_revisions: 0,
            min_age_secs: 0,
            node_seen_within_secs: 0,
            node_hold_max_secs: 0,
        })
        .await
        .unwrap();
    assert!(removed >= 5, "compacted {removed} rows");
    cp.stop();
    let cp = Cp::start_on(&db.url, api_addr, sync_addr).await.unwrap();

    let dp = Dp::start(&cp, options).await.unwrap();
    dp.wait_for_status("/n4/", 200).await;
    assert_eq!(dp.get("/a/").await.0, StatusCode::OK);
    assert_eq!(dp.snapshots(), 1, "resynced by a snapshot");
    let (_, metrics) = cp.call(Method::GET, "/metrics", None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("group=\"default\",reason=\"below_retention\"} 1"),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test]
async fn version_skew_is_refused_at_join_and_watch_with_both_versions_named() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let url = cp.sync_url();
    let ours = BUILD_VERSION;
    let (major, minor) = {
        let mut p = ours.split('.').map(|n| n.parse::<u64>().unwrap());
        (p.next().unwrap(), p.next().unwrap())
    };
    let token = cp.token_for("default", 10).await;
    let newer_minor = format!("{major}.{}.0", minor + 1);
    let other_major = format!("{}.0.0", major + 1);
    for version in [&newer_minor, &other_major] {
        let refused = join_as(&url, &cp.ca_hash, &token, version)
            .await
            .unwrap_err();
        assert!(
            refused.contains(version.as_str()) && refused.contains(ours),
            "{refused}"
        );
    }
    assert!(
        join_as(&url, &cp.ca_hash, &token, &newer_minor)
            .await
            .unwrap_err()
            .contains("upgrade the control plane first")
    );
    // An older minor of the same major joins.
    if minor > 0 {
        join_as(
            &url,
            &cp.ca_hash,
            &token,
            &format!("{major}.{}.9", minor - 1),
        )
        .await
        .unwrap();
    }

    // A node that joined, then was upgraded past its control plane, is refused at Watch.
    let state = tempdir();
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(token),
            state_dir: Some(state.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "connected", || async {
        dp.connected().then_some(())
    })
    .await;
    dp.stop();
    let identity = stored_identity(&state);
    let refused = watch_as(&url, &identity, &newer_minor).await;
    assert!(
        refused.contains(&newer_minor) && refused.contains(ours),
        "{refused}"
    );
    assert_eq!(watch_as(&url, &identity, ours).await, "accepted");
    let (_, node) = cp
        .call(
            Method::GET,
            &format!("/portcullis/nodes/{}", identity.node_id),
            None,
        )
        .await;
    assert_eq!(
        node["version"], ours,
        "the registry shows the version last accepted"
    );
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test]
async fn a_gateway_killed_while_changes_stream_in_resumes_from_its_state_dir_and_converges() {
    let db = TestDb::new().await;
    let echo = EchoUpstream::start().await;
    let cp = Cp::start(&db.url).await;
    let state = tempdir();
    let options = DpOptions {
        token: Some(cp.token("default").await),
        state_dir: Some(state.clone()),
        ..Default::default()
    };
    let dp = Dp::start(&cp, options.clone()).await.unwrap();
    cp.create_api(&keyless_api("first", "/first/", &echo.url()))
        .await;
    dp.wait_for_revision(1).await;

    // Writes keep committing while the gateway dies halfway through them.
    let writer = {
        let (api, target) = (cp.api_addr, echo.url());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..60 {
                let resp = http
                    .post(format!("http://{api}/tyk/apis"))
                    .header("X-Tyk-Authorization", portcullis_tests::ADMIN_SECRET)
                    .json(&keyless_api(&format!("w{i}"), &format!("/w{i}/"), &target))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
            }
        })
    };
    // The state dir is written just after a revision is applied: stop once it holds one of them.
    eventually(Duration::from_secs(10), "some changes saved", || async {
        (dp.saved_revision() >= 10).then_some(())
    })
    .await;
    dp.stop();
    writer.await.unwrap();

    let dp = Dp::start(&cp, options).await.unwrap();
    assert!(dp.revision() >= 10, "served from the state dir at once");
    dp.wait_for_revision(61).await;
    for i in [0, 30, 59] {
        assert_eq!(dp.get(&format!("/w{i}/")).await.0, StatusCode::OK);
    }
    let id = dp.node_id().unwrap();
    let node = eventually(Duration::from_secs(10), "ACK of head", || async {
        let (_, n) = cp
            .call(Method::GET, &format!("/portcullis/nodes/{id}"), None)
            .await;
        (n["applied_revision"] == 61).then_some(n)
    })
    .await;
    assert_eq!(node["lag"], 0);
    assert_eq!(
        dp.snapshots(),
        0,
        "resumed with changes from its saved revision"
    );
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test]
async fn a_silent_partition_is_noticed_by_keepalives_and_healing_it_resumes_with_changes() {
    let db = TestDb::new().await;
    let echo = EchoUpstream::start().await;
    let cp = Cp::start(&db.url).await;
    let link = Blackhole::start(cp.sync_addr).await;
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("default").await),
            control_planes: vec![link.url()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    cp.create_api(&keyless_api("a", "/a/", &echo.url())).await;
    dp.wait_for_status("/a/", 200).await;

    link.partition(true);
    cp.create_api(&keyless_api("b", "/b/", &echo.url())).await;
    // HTTP/2 keepalive: a ping every 10 s, 20 s to answer.
    eventually(Duration::from_secs(45), "the edge notices", || async {
        (!dp.connected()).then_some(())
    })
    .await;
    assert_eq!(dp.get("/a/").await.0, StatusCode::OK);
    assert_eq!(dp.get("/b/").await.0, StatusCode::NOT_FOUND);
    assert_eq!(dp.admin("/ready").await, StatusCode::OK);

    link.partition(false);
    dp.wait_for_status("/b/", 200).await;
    assert_eq!(dp.snapshots(), 1, "resumed with changes");
    assert!(dp.connects() >= 2);
}
