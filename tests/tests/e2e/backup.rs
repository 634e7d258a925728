//! Offline serving from the encrypted configuration backup in the regional Redis: a gateway
//! restarted, or started for the first time, while the control plane is down serves its group's
//! last configuration; tampered and foreign backups are refused.

use std::time::Duration;

use portcullis_tests::own_redis::OwnRedis;
use portcullis_tests::{
    Cp, Dp, DpOptions, EchoUpstream, TestDb, eventually, keyless_api, redis_url,
};
use reqwest::StatusCode;

struct Region {
    prefix: String,
    redis: redis::aio::MultiplexedConnection,
}

impl Region {
    async fn new() -> Self {
        let client = redis::Client::open(redis_url()).unwrap();
        Self {
            prefix: format!("e2e:{}:", uuid::Uuid::new_v4().simple()),
            redis: client.get_multiplexed_async_connection().await.unwrap(),
        }
    }

    fn options(&self, token: Option<String>, group: &str) -> DpOptions {
        DpOptions {
            token,
            group: Some(group.into()),
            redis_url: Some(redis_url()),
            redis_prefix: Some(self.prefix.clone()),
            ..Default::default()
        }
    }

    async fn backup(&self, group: &str) -> Option<Vec<u8>> {
        redis::cmd("GET")
            .arg(format!("{}backup:{group}", self.prefix))
            .query_async(&mut self.redis.clone())
            .await
            .unwrap()
    }

    async fn put_backup(&self, group: &str, bytes: &[u8]) {
        redis::cmd("SET")
            .arg(format!("{}backup:{group}", self.prefix))
            .arg(bytes)
            .query_async::<()>(&mut self.redis.clone())
            .await
            .unwrap();
    }
}

fn cp_url(addr: std::net::SocketAddr) -> url::Url {
    url::Url::parse(&format!("https://127.0.0.1:{}", addr.port())).unwrap()
}

fn backup_revision(dp: &Dp) -> i64 {
    dp.shared
        .stats
        .backup_revision
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn a_new_gateway_cold_starts_from_the_backup_while_the_control_plane_is_down_then_joins() {
    let db = TestDb::new().await;
    let echo = EchoUpstream::start().await;
    let region = Region::new().await;
    let cp = Cp::start(&db.url).await;
    let (api_addr, sync_addr, ca) = (cp.api_addr, cp.sync_addr, cp.ca_hash.clone());
    let token = cp.token_for("default", 2).await;
    let first = Dp::start(&cp, region.options(Some(token.clone()), "default"))
        .await
        .unwrap();
    cp.create_api(&keyless_api("a", "/a/", &echo.url())).await;
    cp.create_api(&keyless_api("b", "/b/", &echo.url())).await;
    first.wait_for_revision(2).await;
    eventually(Duration::from_secs(5), "backup written", || async {
        (backup_revision(&first) == 2).then_some(())
    })
    .await;
    first.stop();
    cp.stop();

    // A brand-new gateway (no state dir, never joined) while no control plane runs.
    let url = cp_url(sync_addr);
    let fresh = Dp::start_at(url, ca, region.options(Some(token), "default"))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "ready from the backup", || async {
        (fresh.admin("/ready").await == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(fresh.get("/a/").await.0, StatusCode::OK);
    assert_eq!(fresh.get("/b/").await.0, StatusCode::OK);
    assert_eq!(fresh.revision(), 2);
    assert!(!fresh.connected());

    // The control plane comes back: the gateway joins and resumes from the backup's revision.
    let cp = Cp::start_on(&db.url, api_addr, sync_addr).await.unwrap();
    cp.create_api(&keyless_api("c", "/c/", &echo.url())).await;
    fresh.wait_for_status("/c/", 200).await;
    assert_eq!(
        fresh.snapshots(),
        0,
        "resumed with changes, no snapshot needed"
    );
    assert_eq!(fresh.admin("/ready").await, StatusCode::OK);
}

#[tokio::test]
async fn tampered_and_foreign_backups_are_refused_with_a_clear_reason() {
    let db = TestDb::new().await;
    let echo = EchoUpstream::start().await;
    let region = Region::new().await;
    let cp = Cp::start(&db.url).await;
    let (url, ca) = (cp.sync_url(), cp.ca_hash.clone());
    let first = Dp::start(&cp, region.options(Some(cp.token("eu").await), "eu"))
        .await
        .unwrap();
    cp.create_api(&keyless_api("a", "/a/", &echo.url())).await;
    first.wait_for_revision(1).await;
    eventually(Duration::from_secs(5), "backup written", || async {
        (backup_revision(&first) == 1).then_some(())
    })
    .await;
    first.stop();
    let good = region.backup("eu").await.unwrap();
    cp.stop();

    let start = |group: &'static str| {
        let options = region.options(Some("unused.token".into()), group);
        let (url, ca) = (url.clone(), ca.clone());
        async move {
            let dp = Dp::start_at(url, ca, options).await.unwrap();
            let error = eventually(Duration::from_secs(5), "refusal", || async {
                dp.shared.stats.backup_refused.lock().unwrap().clone()
            })
            .await;
            assert_eq!(dp.admin("/ready").await, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(dp.get("/a/").await.0, StatusCode::SERVICE_UNAVAILABLE);
            error
        }
    };

    // The eu backup copied under the us key.
    region.put_backup("us", &good).await;
    let error = start("us").await;
    assert!(error.contains("belongs to group \"eu\""), "{error}");

    // One byte of the sealed body flipped.
    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    region.put_backup("eu", &tampered).await;
    let error = start("eu").await;
    assert!(error.contains("tampered"), "{error}");

    // The untouched backup still opens.
    region.put_backup("eu", &good).await;
    let dp = Dp::start_at(url, ca, region.options(Some("unused.token".into()), "eu"))
        .await
        .unwrap();
    dp.wait_for_status("/a/", 200).await;
}

#[tokio::test]
async fn redis_killed_and_restarted_empty_gets_the_backup_again_and_the_edge_never_stops_serving() {
    let db = TestDb::new().await;
    let echo = EchoUpstream::start().await;
    let redis = OwnRedis::on_free_port().await;
    let port = redis.port;
    let cp = Cp::start(&db.url).await;
    let options = DpOptions {
        token: Some(cp.token("default").await),
        group: Some("default".into()),
        redis_url: Some(redis.url()),
        ..Default::default()
    };
    let dp = Dp::start(&cp, options.clone()).await.unwrap();
    cp.create_api(&keyless_api("a", "/a/", &echo.url())).await;
    eventually(Duration::from_secs(5), "backup written", || async {
        (backup_revision(&dp) == 1).then_some(())
    })
    .await;

    drop(redis);
    cp.create_api(&keyless_api("b", "/b/", &echo.url())).await;
    dp.wait_for_status("/b/", 200).await;
    assert_eq!(dp.get("/a/").await.0, StatusCode::OK);
    assert_eq!(backup_revision(&dp), 1, "nowhere to write revision 2");

    // Back, with nothing in it: the pending revision is written without a new commit.
    let redis = OwnRedis::start(port).await;
    eventually(Duration::from_secs(10), "backup rewritten", || async {
        (backup_revision(&dp) == 2).then_some(())
    })
    .await;
    let (url, ca) = (cp.sync_url(), cp.ca_hash.clone());
    cp.stop();
    let fresh = Dp::start_at(url, ca, options).await.unwrap();
    fresh.wait_for_status("/b/", 200).await;
    drop(redis);
}

#[tokio::test]
async fn a_gateway_holding_the_stored_configuration_does_not_write_it_again() {
    let db = TestDb::new().await;
    let echo = EchoUpstream::start().await;
    let region = Region::new().await;
    let cp = Cp::start(&db.url).await;
    let first = Dp::start(&cp, region.options(Some(cp.token("eu").await), "eu"))
        .await
        .unwrap();
    cp.create_api(&keyless_api("a", "/a/", &echo.url())).await;
    eventually(Duration::from_secs(5), "backup written", || async {
        (backup_revision(&first) == 1).then_some(())
    })
    .await;
    let stored = region.backup("eu").await.unwrap();

    let second = Dp::start(&cp, region.options(Some(cp.token("eu").await), "eu"))
        .await
        .unwrap();
    second.wait_for_status("/a/", 200).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        backup_revision(&second),
        0,
        "same configuration: not rewritten"
    );
    assert_eq!(region.backup("eu").await.unwrap(), stored, "byte for byte");

    // A new revision is written again, by whichever gateway gets there first.
    cp.create_api(&keyless_api("b", "/b/", &echo.url())).await;
    eventually(Duration::from_secs(5), "new backup", || async {
        (backup_revision(&first) == 2 || backup_revision(&second) == 2).then_some(())
    })
    .await;
}
