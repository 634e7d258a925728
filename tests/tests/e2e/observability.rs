//! What operators scrape: the gateway's traffic and sync metrics, and the control plane's
//! per-node figures.

use portcullis_tests::{Cp, Dp, EchoUpstream, TestDb, keyless_api};
use reqwest::{Method, StatusCode};

async fn gateway_metrics(dp: &Dp) -> String {
    reqwest::get(format!("http://{}/metrics", dp.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn requests_by_api_and_status_upstream_latency_and_per_node_sync_figures_are_exported() {
    let db = TestDb::new().await;
    let echo = EchoUpstream::start().await;
    let cp = Cp::start(&db.url).await;
    let dp = Dp::joined(&cp).await;
    cp.create_api(&keyless_api("up", "/up/", &echo.url())).await;
    cp.create_api(&keyless_api("down", "/down/", "http://127.0.0.1:9/"))
        .await;
    dp.wait_for_status("/down/", 502).await;
    let before = gateway_metrics(&dp).await;
    for _ in 0..3 {
        assert_eq!(dp.get("/up/").await.0, StatusCode::OK);
    }
    assert_eq!(dp.get("/nowhere/").await.0, StatusCode::NOT_FOUND);

    let after = gateway_metrics(&dp).await;
    let count = |text: &str, series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let up = "portcullis_gateway_requests_total{api_id=\"up\",status=\"200\"}";
    assert_eq!(count(&after, up) - count(&before, up), 3, "{after}");
    let unrouted = "portcullis_gateway_requests_total{api_id=\"\",status=\"404\"}";
    assert_eq!(count(&after, unrouted) - count(&before, unrouted), 1);
    assert!(
        count(
            &after,
            "portcullis_gateway_requests_total{api_id=\"down\",status=\"502\"}"
        ) >= 1
    );
    assert!(
        count(&after, "portcullis_gateway_upstream_latency_seconds_count")
            >= count(&before, "portcullis_gateway_upstream_latency_seconds_count") + 3
    );
    assert_eq!(count(&after, "portcullis_gateway_applied_revision"), 2);
    assert_eq!(count(&after, "portcullis_gateway_cp_connected"), 1);
    assert!(
        count(&after, "portcullis_gateway_config_age_seconds") < 5,
        "{after}"
    );
    assert!(
        count(
            &after,
            "portcullis_gateway_certificate_expiry_timestamp_seconds"
        ) > 1_700_000_000
    );

    let id = dp.node_id().unwrap();
    let series = format!(
        "portcullis_node_revision_lag{{node=\"{id}\",name=\"edge-e2e\",group=\"default\"}} 0"
    );
    // ACKs reach the registry in batches.
    let metrics = portcullis_tests::eventually(
        std::time::Duration::from_secs(10),
        "lag 0 reported",
        || async {
            let (status, metrics) = cp.call(Method::GET, "/metrics", None).await;
            assert_eq!(status, StatusCode::OK);
            let metrics = metrics.as_str().unwrap().to_owned();
            metrics.contains(&series).then_some(metrics)
        },
    )
    .await;
    assert!(metrics.contains(&format!(
        "portcullis_node_cert_expiry_timestamp_seconds{{node=\"{id}\""
    )));
    assert!(metrics.contains("portcullis_sync_connected_streams{group=\"default\"} 1"));
    assert!(metrics.trim_end().ends_with("# EOF"), "valid OpenMetrics");
}
