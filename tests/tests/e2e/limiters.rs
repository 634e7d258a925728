//! The three rate limiters (`--rate-limiter`, docs/limits.md): gcra and sliding-log count in
//! the regional Redis, local in each gateway's memory. Gateways of one "region" share a Redis
//! key prefix.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use portcullis_data_plane::limits::RateLimiterKind;
use portcullis_tests::{Cp, Dp, DpOptions, EchoUpstream, TestDb, eventually, keyless_api};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Region {
    _db: TestDb,
    cp: Cp,
    _echo: EchoUpstream,
    prefix: String,
}

/// A control plane with one API that needs a key, and a fresh Redis prefix for its gateways.
async fn region() -> Region {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let mut api = keyless_api("svc", "/svc/", &echo.url());
    api["use_keyless"] = json!(false);
    cp.create_api(&api).await;
    Region {
        prefix: format!("e2e:{}:limiters:", uuid::Uuid::new_v4().simple()),
        _db: db,
        cp,
        _echo: echo,
    }
}

impl Region {
    /// A gateway counting with `kind`, on the region's Redis.
    async fn gateway(&self, kind: RateLimiterKind) -> Dp {
        let dp = Dp::start(
            &self.cp,
            DpOptions {
                token: Some(self.cp.token("default").await),
                redis_url: Some(portcullis_tests::redis_url()),
                redis_prefix: Some(self.prefix.clone()),
                rate_limiter: Some(kind),
                ..Default::default()
            },
        )
        .await
        .expect("gateway starts");
        dp.wait_for_revision(1).await;
        dp
    }

    async fn key(&self, session: Value) -> String {
        let (status, body) = self
            .cp
            .call(Method::POST, "/tyk/keys", Some(&session))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["key"].as_str().unwrap().to_owned()
    }
}

fn session(rate: u32, per: u32, quota_max: i64) -> Value {
    json!({"rate": rate, "per": per, "quota_max": quota_max, "quota_renewal_rate": 3600,
           "access_rights": {"svc": {"api_id": "svc"}}})
}

async fn status(dp: &Dp, key: &str) -> StatusCode {
    reqwest::Client::new()
        .get(dp.url("/svc/"))
        .header("Authorization", key)
        .send()
        .await
        .unwrap()
        .status()
}

/// Requests sent at once, half to each gateway: how many were admitted, and every status seen.
async fn concurrent(gateways: &[&Dp], key: &str, n: usize) -> (usize, Vec<StatusCode>) {
    let statuses = join_all((0..n).map(|i| status(gateways[i % gateways.len()], key))).await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    (ok, statuses)
}

struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// One GET with curl, an HTTP client independent of the gateway's and the harness's.
async fn curl(url: String, key: String) -> Answer {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-D", "-", "-H"])
            .arg(format!("Authorization: {key}"))
            .arg(url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    Answer {
        status: status.parse().unwrap(),
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect(),
        body: body.to_owned(),
    }
}

/// From a fresh key exactly `rate` requests pass at once, each counting down
/// X-RateLimit-Remaining; the next gets Tyk's 429; once the window (sliding log) or the
/// emission interval (GCRA) has passed, requests pass again.
async fn burst_then_refused_then_admitted_again(kind: RateLimiterKind) {
    let region = region().await;
    let dp = region.gateway(kind).await;
    // 3 per 6 s: a GCRA slot every 2 s, a sliding-log window of 6 s.
    let key = region.key(session(3, 6, -1)).await;
    for remaining in ["2", "1", "0"] {
        let a = curl(dp.url("/svc/"), key.clone()).await;
        assert_eq!(a.status, 200, "{kind:?}: {}", a.body);
        assert_eq!(a.headers["x-ratelimit-limit"], "3", "{kind:?}");
        assert_eq!(a.headers["x-ratelimit-remaining"], remaining, "{kind:?}");
    }
    let refused = curl(dp.url("/svc/"), key.clone()).await;
    assert_eq!(refused.status, 429, "{kind:?}");
    let body: Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(body, json!({"error": "Rate Limit Exceeded"}), "{kind:?}");
    assert_eq!(refused.headers["x-ratelimit-limit"], "3");
    assert_eq!(refused.headers["x-ratelimit-remaining"], "0");
    let reset: u64 = refused.headers["x-ratelimit-reset"].parse().unwrap();
    assert!(
        (1..=6).contains(&reset),
        "{kind:?}: seconds until the next request passes: {reset}"
    );
    eventually(
        Duration::from_secs(15),
        "a request admitted again",
        || async { (status(&dp, &key).await == StatusCode::OK).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn gcra_admits_the_burst_then_one_per_interval() {
    burst_then_refused_then_admitted_again(RateLimiterKind::Gcra).await;
}

#[tokio::test]
async fn sliding_log_admits_the_burst_then_again_after_the_window() {
    burst_then_refused_then_admitted_again(RateLimiterKind::SlidingLog).await;
}

#[tokio::test]
async fn local_admits_the_burst_then_one_per_interval() {
    burst_then_refused_then_admitted_again(RateLimiterKind::Local).await;
}

/// 40 requests at once, across two gateways on one Redis, against a rate of 10: exactly 10 pass.
async fn exact_across_two_gateways(kind: RateLimiterKind) {
    let region = region().await;
    let (a, b) = (region.gateway(kind).await, region.gateway(kind).await);
    let key = region.key(session(10, 60, -1)).await;
    let (ok, statuses) = concurrent(&[&a, &b], &key, 40).await;
    assert_eq!(ok, 10, "{kind:?}: exactly the rate, {statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn gcra_is_exact_under_concurrency_across_gateways() {
    exact_across_two_gateways(RateLimiterKind::Gcra).await;
}

#[tokio::test]
async fn sliding_log_is_exact_under_concurrency_across_gateways() {
    exact_across_two_gateways(RateLimiterKind::SlidingLog).await;
}

/// Each local gateway enforces the full rate on its own (like Tyk's DRL): two gateways admit
/// up to twice the rate, each exactly the rate.
#[tokio::test]
async fn local_admits_the_rate_on_each_gateway_so_at_most_twice_it_on_two() {
    let region = region().await;
    let kind = RateLimiterKind::Local;
    let (a, b) = (region.gateway(kind).await, region.gateway(kind).await);
    let key = region.key(session(10, 60, -1)).await;
    let (both, statuses) = concurrent(&[&a, &b], &key, 40).await;
    assert_eq!(
        both, 20,
        "the full rate on each gateway, 2 × rate: {statuses:?}"
    );
    let (on_a, _) = concurrent(&[&a], &key, 10).await;
    let (on_b, _) = concurrent(&[&b], &key, 10).await;
    assert_eq!((on_a, on_b), (0, 0), "each gateway has used its full rate");
    let fresh = region.key(session(10, 60, -1)).await;
    let (on_a, _) = concurrent(&[&a], &fresh, 25).await;
    assert_eq!(on_a, 10, "exactly the rate on one gateway");
}

/// Under every limiter the quota refuses with Tyk's 403 once used up, and requests the rate
/// limit refused did not use any of it.
async fn quota_refuses_when_used_up(kind: RateLimiterKind) {
    let region = region().await;
    let dp = region.gateway(kind).await;
    // One request per 2 s, two in all.
    let key = region.key(session(1, 2, 2)).await;
    assert_eq!(status(&dp, &key).await, StatusCode::OK);
    let mut refused_by_rate = 0;
    let next = || async {
        let s = status(&dp, &key).await;
        (s != StatusCode::TOO_MANY_REQUESTS).then_some(s)
    };
    let second = eventually(Duration::from_secs(10), "rate slot", || {
        refused_by_rate += 1;
        next()
    })
    .await;
    assert!(refused_by_rate > 1, "{kind:?}: the rate limit refused some");
    assert_eq!(second, StatusCode::OK, "{kind:?}: 429s consumed no quota");
    let third = eventually(Duration::from_secs(10), "rate slot", next).await;
    assert_eq!(third, StatusCode::FORBIDDEN, "{kind:?}");
    let resp = reqwest::Client::new()
        .get(dp.url("/svc/"))
        .header("Authorization", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "Quota exceeded"})
    );
}

#[tokio::test]
async fn gcra_quota_refuses_with_tyks_403() {
    quota_refuses_when_used_up(RateLimiterKind::Gcra).await;
}

#[tokio::test]
async fn sliding_log_quota_refuses_with_tyks_403() {
    quota_refuses_when_used_up(RateLimiterKind::SlidingLog).await;
}

#[tokio::test]
async fn local_quota_refuses_with_tyks_403_and_is_shared_through_redis() {
    quota_refuses_when_used_up(RateLimiterKind::Local).await;
    // The quota is counted in Redis: a second local gateway sees what the first used.
    let region = region().await;
    let (a, b) = (
        region.gateway(RateLimiterKind::Local).await,
        region.gateway(RateLimiterKind::Local).await,
    );
    let key = region.key(session(100, 60, 3)).await;
    let (ok, statuses) = concurrent(&[&a, &b], &key, 12).await;
    assert_eq!(ok, 3, "exactly the quota across two gateways: {statuses:?}");
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::FORBIDDEN)
            .count(),
        9
    );
}

/// With `local`, a Redis outage lifts only the quota: the rate limit is counted in-process.
#[tokio::test]
async fn local_keeps_enforcing_the_rate_while_redis_is_down() {
    let region = region().await;
    let redis = portcullis_tests::own_redis::OwnRedis::on_free_port().await;
    let dp = Dp::start(
        &region.cp,
        DpOptions {
            token: Some(region.cp.token("default").await),
            redis_url: Some(redis.url()),
            no_local_session_cache: true,
            rate_limiter: Some(RateLimiterKind::Local),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    dp.wait_for_revision(1).await;
    let key = region.key(session(1, 3600, -1)).await;
    assert_eq!(status(&dp, &key).await, StatusCode::OK);
    assert_eq!(status(&dp, &key).await, StatusCode::TOO_MANY_REQUESTS);
    let quota = region.key(session(100, 60, 1)).await;
    assert_eq!(status(&dp, &quota).await, StatusCode::OK);
    assert_eq!(status(&dp, &quota).await, StatusCode::FORBIDDEN);
    drop(redis);
    assert_eq!(
        status(&dp, &key).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the rate limit holds without Redis"
    );
    assert_eq!(
        status(&dp, &quota).await,
        StatusCode::OK,
        "the quota cannot be counted, so it is not enforced"
    );
}

/// `--quota-lease`: gateways reserve quota in batches and spend it in memory. The region never
/// admits more than the quota, may refuse a key early while another gateway holds part of it,
/// and once the leases have expired and each gateway has seen the key again, what they held
/// unused has gone back: the key ends up with exactly its quota admitted.
#[tokio::test]
async fn leased_quotas_never_over_admit_and_end_up_exact() {
    let region = region().await;
    // The second gateway serves from two proxy workers, whose Redis calls run on its main
    // runtime (docs/architecture.md "Proxy workers").
    let region = &region;
    let leased = |proxy_workers| async move {
        let dp = Dp::start(
            &region.cp,
            DpOptions {
                token: Some(region.cp.token("default").await),
                redis_url: Some(portcullis_tests::redis_url()),
                redis_prefix: Some(region.prefix.clone()),
                rate_limiter: Some(RateLimiterKind::Local),
                quota_lease: 16,
                proxy_workers,
                ..Default::default()
            },
        )
        .await
        .expect("gateway starts");
        dp.wait_for_revision(1).await;
        dp
    };
    let (a, b) = (leased(0).await, leased(2).await);
    let gateways = [&a, &b];
    // Requests alternating between the gateways until both refuse: how many were admitted.
    let settle = |key: String| async move {
        tokio::time::sleep(LEASE_LIFE_AND_A_BIT).await;
        let (mut admitted, mut refused) = (0, [false, false]);
        for round in 0..400 {
            if refused == [true, true] {
                return admitted;
            }
            let i = round % 2;
            match status(gateways[i], &key).await {
                StatusCode::OK => admitted += 1,
                StatusCode::FORBIDDEN => refused[i] = true,
                other => panic!("{other}"),
            }
        }
        panic!("still admitting after 400 requests");
    };

    // One client on gateway a: its leases grow (1, 2, 4, 8, 16), the last mostly unused.
    let key = region.key(session(10_000, 60, 50)).await;
    for _ in 0..16 {
        assert_eq!(status(&a, &key).await, StatusCode::OK);
    }
    let mut on_b = 0;
    while status(&b, &key).await == StatusCode::OK {
        on_b += 1;
        assert!(on_b <= 34, "never more than the quota");
    }
    assert!(
        16 + on_b < 50,
        "b is refused early while a holds part of the quota: {on_b}"
    );
    assert_eq!(
        16 + on_b + settle(key.clone()).await,
        50,
        "exactly the quota once a's lease has gone back"
    );

    // Many at once through both gateways.
    let key = region.key(session(10_000, 60, 50)).await;
    let mut admitted = 0;
    for _ in 0..3 {
        let (ok, statuses) = concurrent(&[&a, &b], &key, 40).await;
        assert!(
            statuses
                .iter()
                .all(|s| *s == StatusCode::OK || *s == StatusCode::FORBIDDEN),
            "{statuses:?}"
        );
        admitted += ok;
    }
    assert!(admitted <= 50, "never more than the quota: {admitted}");
    assert_eq!(admitted + settle(key.clone()).await, 50);
    // A gateway counting every request in Redis shares the same counter.
    let exact = region.gateway(RateLimiterKind::Local).await;
    assert_eq!(status(&exact, &key).await, StatusCode::FORBIDDEN);
}

/// A lease's life (one second) and a margin.
const LEASE_LIFE_AND_A_BIT: Duration = Duration::from_millis(1_200);
