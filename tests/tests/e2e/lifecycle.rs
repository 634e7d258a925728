//! Fleet lifecycle: certificate renewal and expiry, node revocation, several control-plane
//! replicas on one Postgres and failover between them.

use std::time::Duration;

use portcullis_proto::version::BUILD_VERSION;

use crate::fleet::tempdir;
use portcullis_tests::raw_sync::{stored_identity, watch_as};
use portcullis_tests::{
    Cp, CpOptions, Dp, DpOptions, EchoUpstream, TestDb, eventually, keyless_api,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn node(cp: &Cp, id: &str) -> Value {
    let (status, node) = cp
        .call(Method::GET, &format!("/portcullis/nodes/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{node}");
    node
}

/// The replica a connected node's stream is on.
async fn replica_of(cp: &Cp, id: &str) -> String {
    eventually(Duration::from_secs(10), "node connected", || async {
        let n = node(cp, id).await;
        (n["connected"] == true).then(|| n["cp_replica"].as_str().unwrap().to_owned())
    })
    .await
}

fn short_lived(replica: &str) -> CpOptions {
    CpOptions {
        replica: Some(replica.into()),
        // The CLI's minimum is a minute; the library takes less so the test runs in seconds.
        node_cert_ttl: Some(Duration::from_secs(6)),
        ..Default::default()
    }
}

#[tokio::test]
async fn certificates_are_renewed_before_expiry_without_dropping_the_stream_or_requests() {
    let db = TestDb::new().await;
    let echo = EchoUpstream::start().await;
    let cp = Cp::start_with(&db.url, short_lived("cp-a")).await.unwrap();
    let dp = Dp::joined(&cp).await;
    cp.create_api(&keyless_api("open", "/open/", &echo.url()))
        .await;
    let mut protected = keyless_api("closed", "/closed/", &echo.url());
    protected["use_keyless"] = json!(false);
    cp.create_api(&protected).await;
    dp.wait_for_status("/open/", 200).await;
    let id = dp.node_id().unwrap();
    let first_expiry = node(&cp, &id).await["cert_expires_at"].clone();

    // Three certificate lifetimes of traffic: every request must be served.
    let until = tokio::time::Instant::now() + Duration::from_secs(18);
    let mut served = 0;
    while tokio::time::Instant::now() < until {
        assert_eq!(dp.get("/open/").await.0, StatusCode::OK, "request {served}");
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dp.renewals() >= 2, "renewed {} times", dp.renewals());
    assert_eq!(dp.connects(), 1, "the watch stream was never dropped");
    assert!(dp.connected());
    let now = node(&cp, &id).await;
    assert_ne!(now["cert_expires_at"], first_expiry, "{now}");
    assert_eq!(now["connected"], true);

    // A key created now is looked up on the control plane over a channel that authenticates
    // with the renewed certificate.
    let (status, key) = cp
        .call(
            Method::POST,
            "/tyk/keys",
            Some(&json!({"access_rights": {"closed": {"api_id": "closed", "versions": ["Default"]}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{key}");
    let resp = reqwest::Client::new()
        .get(dp.url("/closed/"))
        .header("Authorization", key["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_expired_certificate_is_refused_and_a_node_without_a_token_says_so() {
    let db = TestDb::new().await;
    let echo = EchoUpstream::start().await;
    let cp = Cp::start_with(&db.url, short_lived("cp-a")).await.unwrap();
    let state = tempdir();
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("default").await),
            state_dir: Some(state.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    cp.create_api(&keyless_api("open", "/open/", &echo.url()))
        .await;
    dp.wait_for_status("/open/", 200).await;
    dp.stop_once_saved(&state).await;
    let identity = stored_identity(&state);
    // 6 s of life plus 0.6 s of back-dating, and a margin.
    tokio::time::sleep(Duration::from_secs(8)).await;

    // The control plane refuses the expired certificate at the handshake.
    let refused = watch_as(&cp.sync_url(), &identity, BUILD_VERSION).await;
    assert!(
        refused.to_ascii_lowercase().contains("expired"),
        "{refused}"
    );

    // Restarted without a token, the gateway serves its saved config and names the problem.
    let dp = Dp::from_state(&cp, &state).await;
    assert_eq!(dp.get("/open/").await.0, StatusCode::OK);
    let error = eventually(Duration::from_secs(5), "expiry reported", || async {
        dp.last_error().filter(|e| e.contains("expired"))
    })
    .await;
    assert!(error.contains("--bootstrap-token"), "{error}");
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test]
async fn a_write_on_one_replica_reaches_a_gateway_on_another_and_failover_loses_nothing() {
    let db = TestDb::new().await;
    let echo = EchoUpstream::start().await;
    let a = Cp::replica(&db.url, "cp-a").await;
    let b = Cp::replica(&db.url, "cp-b").await;
    assert_eq!(a.ca_hash, b.ca_hash, "replicas share the node CA");
    let dp = Dp::start(
        &a,
        DpOptions {
            token: Some(b.token("default").await),
            control_planes: vec![a.sync_url(), b.sync_url()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    b.create_api(&keyless_api("from-b", "/from-b/", &echo.url()))
        .await;
    dp.wait_for_status("/from-b/", 200).await;
    a.create_api(&keyless_api("from-a", "/from-a/", &echo.url()))
        .await;
    dp.wait_for_status("/from-a/", 200).await;
    let id = dp.node_id().unwrap();
    // Kill the replica the gateway watches, and write on the other one straight away.
    let (survivor, watched, survivor_name) = match replica_of(&a, &id).await.as_str() {
        "cp-a" => (b, a, "cp-b"),
        _ => (a, b, "cp-a"),
    };
    watched.stop();
    for i in 0..20 {
        survivor
            .create_api(&keyless_api(
                &format!("during-{i}"),
                &format!("/during-{i}/"),
                &echo.url(),
            ))
            .await;
    }
    for i in 0..20 {
        dp.wait_for_status(&format!("/during-{i}/"), 200).await;
    }
    eventually(Duration::from_secs(10), "stream moved", || async {
        (replica_of(&survivor, &id).await == survivor_name).then_some(())
    })
    .await;
    assert_eq!(dp.snapshots(), 1, "resumed with changes, not a snapshot");
    eventually(Duration::from_secs(10), "ACK of head recorded", || async {
        let (_, nodes) = survivor.call(Method::GET, "/portcullis/nodes", None).await;
        (nodes["nodes"][0]["lag"] == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_revoked_node_is_cut_off_on_every_replica_and_keeps_serving_what_it_has() {
    let db = TestDb::new().await;
    let echo = EchoUpstream::start().await;
    let a = Cp::replica(&db.url, "cp-a").await;
    let b = Cp::replica(&db.url, "cp-b").await;
    let dp = Dp::start(
        &b,
        DpOptions {
            token: Some(a.token("default").await),
            control_planes: vec![b.sync_url(), a.sync_url()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    a.create_api(&keyless_api("kept", "/kept/", &echo.url()))
        .await;
    dp.wait_for_status("/kept/", 200).await;
    let id = dp.node_id().unwrap();

    // Revoked through replica A while the stream is on replica B.
    let (status, body) = a
        .call(Method::DELETE, &format!("/portcullis/nodes/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually(Duration::from_secs(10), "stream cut", || async {
        (!dp.connected()).then_some(())
    })
    .await;
    // It tries both replicas from then on and is refused by each.
    let error = eventually(Duration::from_secs(10), "refusal reported", || async {
        dp.last_error().filter(|e| e.contains("revoked"))
    })
    .await;
    assert!(error.contains(&id), "{error}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!dp.connected(), "no replica lets it back in");
    let n = node(&a, &id).await;
    assert_eq!(
        (n["revoked"].clone(), n["connected"].clone()),
        (json!(true), json!(false))
    );

    // Changes no longer reach it, but it keeps answering with what it had.
    a.create_api(&keyless_api("later", "/later/", &echo.url()))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(dp.get("/later/").await.0, StatusCode::NOT_FOUND);
    assert_eq!(dp.get("/kept/").await.0, StatusCode::OK);
    assert_eq!(dp.admin("/ready").await, StatusCode::OK);
}

#[tokio::test]
async fn a_fleet_of_simulated_nodes_each_with_its_own_identity_acks_every_change() {
    use portcullis_tests::sim_node::{SimNode, SimNodeOptions};
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let token = cp.token_for("default", 100).await;
    let mut fleet = Vec::new();
    for i in 0..20 {
        let opts = SimNodeOptions::new(cp.sync_url(), &cp.ca_hash, &token, &format!("sim-{i}"));
        fleet.push(SimNode::start(opts).await.unwrap());
    }
    for round in 1..=3 {
        cp.create_api(&keyless_api(
            &format!("r{round}"),
            &format!("/r{round}/"),
            "http://127.0.0.1:9/",
        ))
        .await;
        for node in &fleet {
            assert!(
                node.wait_for_revision(Duration::from_secs(10), |r| r >= round)
                    .await,
                "{:?}",
                node.last_error()
            );
        }
    }
    let (_, nodes) = cp.call(Method::GET, "/portcullis/nodes", None).await;
    let nodes = nodes["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 20);
    let ids: std::collections::HashSet<_> = nodes.iter().map(|n| n["id"].clone()).collect();
    assert_eq!(ids.len(), 20, "one identity each");
    eventually(Duration::from_secs(10), "every ACK recorded", || async {
        let (_, nodes) = cp.call(Method::GET, "/portcullis/nodes", None).await;
        nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["applied_revision"] == 3 && n["connected"] == true)
            .then_some(())
    })
    .await;
    for node in fleet {
        node.stop().await;
    }
}

#[tokio::test]
async fn a_node_whose_renewal_answer_was_lost_renews_again_with_the_certificate_it_holds() {
    let db = TestDb::new().await;
    let echo = EchoUpstream::start().await;
    let cp = Cp::start(&db.url).await;
    let state = tempdir();
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(cp.token("default").await),
            state_dir: Some(state.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    cp.create_api(&keyless_api("a", "/a/", &echo.url())).await;
    dp.wait_for_status("/a/", 200).await;
    dp.stop_once_saved(&state).await;

    // The control plane issues a new certificate whose answer never reaches the node.
    let held = stored_identity(&state);
    portcullis_data_plane::sync::renew::renew_once(&cp.sync_url(), &held)
        .await
        .unwrap();
    assert!(
        watch_as(&cp.sync_url(), &held, BUILD_VERSION)
            .await
            .contains("superseded"),
        "the held certificate no longer opens streams"
    );

    // Restarted without a token, the node renews with the certificate it holds and carries on.
    let dp = Dp::from_state(&cp, &state).await;
    cp.create_api(&keyless_api("b", "/b/", &echo.url())).await;
    dp.wait_for_status("/b/", 200).await;
    assert!(dp.renewals() >= 1);
    let saved = stored_identity(&state);
    assert_ne!(
        saved.cert_pem, held.cert_pem,
        "the new certificate was saved"
    );
    let _ = std::fs::remove_dir_all(state);
}
