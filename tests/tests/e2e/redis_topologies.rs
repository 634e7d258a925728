//! The regional Redis as a Redis Cluster and as a Sentinel-managed primary, both real (Debian's
//! redis-server and redis-sentinel, started by the test), with curl as the client: counters
//! land where one script can reach them, a killed primary costs only the documented outage
//! behaviour (requests pass, limits unenforced meanwhile), and no request is counted twice.

use std::time::{Duration, Instant};

use portcullis_tests::idp_stack::{Stack, access_rights, api};
use portcullis_tests::peers::curl;
use portcullis_tests::redis_topology::{RedisCluster, RedisSentinel, cli};
use portcullis_tests::traffic::stack_with;
use portcullis_tests::{DpOptions, eventually};
use reqwest::{Method, StatusCode};
use serde_json::json;

const PREFIX: &str = "topo:";

/// Requests sent through the gateway by this test (each test runs in a process of its own).
static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A key allowed 100 000 requests an hour, so the quota counter counts every request.
async fn counted_key(s: &Stack) -> String {
    let (status, body) =
        s.cp.call(
            Method::POST,
            "/tyk/keys",
            Some(&json!({
                "access_rights": access_rights(&["counted"]),
                "rate": 100000, "per": 3600,
                "quota_max": 100000, "quota_renewal_rate": 3600,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

async fn status(url: &str, key: &str) -> u16 {
    SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (code, out, err) = curl(vec![
        "-s".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        "-H".into(),
        format!("Authorization: {key}"),
        url.to_owned(),
    ])
    .await;
    assert_eq!(code, 0, "curl: {err}");
    out.trim().parse().unwrap()
}

/// Sends requests one after another for `secs` seconds; every one must pass. Returns how many.
async fn load_for(url: &str, key: &str, secs: u64) -> u64 {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0;
    while Instant::now() < until {
        assert_eq!(
            status(url, key).await,
            200,
            "request {sent} during the failover"
        );
        sent += 1;
    }
    sent
}

/// A gateway on `redis_url` serving the API `counted`, a key with a quota, and ten requests
/// already counted: the stack, the key and the URL to call.
async fn counted_stack(redis_url: String) -> (Stack, String, String) {
    let s = stack_with(DpOptions {
        redis_url: Some(redis_url),
        redis_prefix: Some(PREFIX.into()),
        ..Default::default()
    })
    .await;
    s.cp.create_api(&api("counted", &s.echo.url(), json!({})))
        .await;
    s.dp.wait_for_status("/counted/", 401).await;
    let key = counted_key(&s).await;
    let url = s.dp.url("/counted/x");
    for _ in 0..10 {
        assert_eq!(status(&url, &key).await, 200);
    }
    (s, key, url)
}

/// After a failover: once the gateway counts on the new primary again (`counted` reads the
/// quota counter there), five requests add exactly five, and the counter never exceeds the
/// requests sent. Returns the final count.
async fn counted_once_each(url: &str, key: &str, counted: impl Fn() -> u64, during: u64) -> u64 {
    let before = eventually(
        Duration::from_secs(30),
        "the gateway counting on the new primary",
        || async {
            let a = counted();
            assert_eq!(status(url, key).await, 200);
            let b = counted();
            (b == a + 1).then_some(b)
        },
    )
    .await;
    for _ in 0..5 {
        assert_eq!(status(url, key).await, 200);
    }
    let after = counted();
    assert_eq!(after, before + 5, "one count per request");
    let sent = SENT.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        after <= sent,
        "never more counts than requests: {after} for {sent} ({during} during the failover)"
    );
    after
}

#[tokio::test]
async fn a_cluster_keeps_a_scripts_keys_in_one_slot_and_survives_a_primary_failover() {
    let mut cluster = RedisCluster::start().await;
    let (_s, key, url) = counted_stack(cluster.url()).await;
    // The script touches the rate cell and the quota counter: without one hash tag for both,
    // the cluster would refuse it (CROSSSLOT) and nothing would be counted.
    let quota = cluster.keys(&format!("{PREFIX}quota:*"));
    assert_eq!(quota.len(), 1, "{quota:?}");
    let (holder, quota_key) = quota[0].clone();
    let scope = quota_key
        .strip_prefix(&format!("{PREFIX}quota:{{"))
        .and_then(|k| k.strip_suffix('}'))
        .unwrap_or_else(|| panic!("a hash-tagged key: {quota_key}"));
    assert_eq!(
        cli(holder, &["CLUSTER", "KEYSLOT", &quota_key]),
        cli(
            holder,
            &["CLUSTER", "KEYSLOT", &format!("{PREFIX}gcra:{{{scope}}}")]
        )
    );
    let counted = |port| cli(port, &["GET", &quota_key]).parse::<u64>().unwrap_or(0);
    assert_eq!(counted(holder), 10);
    // Once its replica has every count, kill the primary under load.
    assert_eq!(
        cli(holder, &["WAIT", "1", "5000"]),
        "1",
        "its replica acknowledged every write"
    );
    cluster.kill(holder);
    let during = load_for(&url, &key, 6).await;
    cluster.wait_ok().await;
    // Its replica is primary now; requests are counted there again, each exactly once.
    let promoted = eventually(
        Duration::from_secs(30),
        "the quota key on a new primary",
        || async {
            cluster
                .keys(&format!("{PREFIX}quota:*"))
                .first()
                .map(|(port, _)| *port)
        },
    )
    .await;
    assert_ne!(promoted, holder);
    counted_once_each(&url, &key, || counted(promoted), during).await;
}

#[tokio::test]
async fn a_sentinel_failover_is_followed_to_the_new_primary() {
    let mut topology = RedisSentinel::start().await;
    let (_s, key, url) = counted_stack(topology.url()).await;
    let old = topology.primary.port;
    let keys = cli(old, &["--scan", "--pattern", &format!("{PREFIX}quota:*")]);
    let quota_key = keys
        .lines()
        .next()
        .expect("the quota counter on the primary")
        .to_owned();
    let counted = |port| cli(port, &["GET", &quota_key]).parse::<u64>().unwrap_or(0);
    assert_eq!(counted(old), 10);
    // The replica has every count before its primary goes.
    let replica = topology.replica.port;
    eventually(Duration::from_secs(10), "the counts replicated", || async {
        (counted(replica) == 10).then_some(())
    })
    .await;
    topology.primary.kill();
    let during = load_for(&url, &key, 4).await;
    let new = eventually(
        Duration::from_secs(60),
        "the sentinels promote the replica",
        || async { topology.current_primary().filter(|p| *p != old) },
    )
    .await;
    assert_eq!(new, topology.replica.port);
    let after = counted_once_each(&url, &key, || counted(new), during).await;
    assert!(
        after >= 10,
        "the counts from before the failover survived: {after}"
    );
}
