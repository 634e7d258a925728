use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::quick;
use super::server::{Reply, Server, serve};
use crate::idp::introspection::redis_key;
use crate::idp::{Idp, IdpError, Introspection};
use crate::redis_link::RedisLink;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A provider that knows a few tokens and checks the client credentials in the form.
async fn provider() -> Server {
    // The provider's answer for `soon` keeps its exp, as a real token's does.
    let soon = now() + 2;
    serve(move |req| {
        let form: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(req.body.as_bytes())
                .into_owned()
                .collect();
        let typed = req
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/x-www-form-urlencoded");
        if req.method != "POST"
            || !typed
            || form.get("client_id").map(String::as_str) != Some("cid")
            || form.get("client_secret").map(String::as_str) != Some("s&cret")
        {
            return Reply::Json(401, "{}".into());
        }
        let answer = match form.get("token").map(String::as_str) {
            Some("good") => json!({"active": true, "sub": "alice", "exp": now() + 3600}),
            Some("forever") => json!({"active": true, "sub": "bob"}),
            Some("soon") => json!({"active": true, "exp": soon}),
            Some("past") => json!({"active": true, "exp": now() - 10}),
            Some("garbage") => return Reply::Json(200, "not json".into()),
            _ => json!({"active": false}),
        };
        Reply::Json(200, answer.to_string())
    })
    .await
}

fn endpoint(srv: &Server, cache: Option<Duration>) -> Introspection {
    Introspection {
        url: srv.url("/introspect"),
        client_id: "cid".into(),
        client_secret: "s&cret".into(),
        cache,
    }
}

#[tokio::test]
async fn only_active_unexpired_tokens_pass() {
    let srv = provider().await;
    let idp = Idp::new(quick());
    let ep = endpoint(&srv, None);
    let claims = idp.introspect("api", &ep, "good").await.unwrap();
    assert_eq!(claims["sub"], "alice");
    for token in ["off", "past"] {
        assert_eq!(
            idp.introspect("api", &ep, token).await.unwrap_err(),
            IdpError::Inactive
        );
    }
    assert!(matches!(
        idp.introspect("api", &ep, "garbage").await.unwrap_err(),
        IdpError::BadResponse(_)
    ));
    let wrong = Introspection {
        client_secret: "nope".into(),
        ..ep.clone()
    };
    assert_eq!(
        idp.introspect("api", &wrong, "good").await.unwrap_err(),
        IdpError::Refused(401)
    );
    assert_eq!(
        idp.introspect("api", &ep, "").await.unwrap_err(),
        IdpError::Inactive
    );
    let huge = "x".repeat(crate::idp::introspection::MAX_TOKEN + 1);
    assert_eq!(
        idp.introspect("api", &ep, &huge).await.unwrap_err(),
        IdpError::Inactive
    );
    assert_eq!(srv.hits(), 5, "empty and oversized tokens are not sent");
    // Not cached: every call asks.
    idp.introspect("api", &ep, "good").await.unwrap();
    assert_eq!(srv.hits(), 6);
}

#[tokio::test]
async fn cached_answers_never_outlive_the_cache_time_or_exp() {
    let srv = provider().await;
    let idp = Idp::new(quick());
    let no_ttl = endpoint(&srv, Some(Duration::ZERO));
    let short = endpoint(&srv, Some(Duration::from_secs(1)));
    idp.introspect("api", &no_ttl, "soon").await.unwrap();
    idp.introspect("api", &no_ttl, "soon").await.unwrap();
    idp.introspect("api", &short, "good").await.unwrap();
    idp.introspect("api", &short, "good").await.unwrap();
    assert_eq!(srv.hits(), 2);
    assert_eq!(
        idp.stats.introspection_local_hits.load(Ordering::Relaxed),
        2
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // `soon` has expired: the cache does not answer for it, and the provider says expired.
    assert_eq!(
        idp.introspect("api", &no_ttl, "soon").await.unwrap_err(),
        IdpError::Inactive
    );
    idp.introspect("api", &short, "good").await.unwrap();
    assert_eq!(srv.hits(), 4);
    // Inactive answers are not cached.
    for _ in 0..2 {
        assert_eq!(
            idp.introspect("api", &no_ttl, "off").await.unwrap_err(),
            IdpError::Inactive
        );
    }
    assert_eq!(srv.hits(), 6);
}

#[tokio::test]
async fn concurrent_introspections_of_one_token_share_one_call() {
    let srv = serve(|_| {
        Reply::Slow(
            Duration::from_millis(100),
            json!({"active": true}).to_string(),
        )
    })
    .await;
    let idp = Idp::new(quick());
    let ep = Introspection {
        url: srv.url("/i"),
        client_id: "c".into(),
        client_secret: "s".into(),
        cache: None,
    };
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (idp, ep) = (idp.clone(), ep.clone());
        tasks.push(tokio::spawn(async move {
            idp.introspect("api", &ep, "t").await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().is_ok());
    }
    assert_eq!(srv.hits(), 1);
}

async fn redis() -> Option<Arc<RedisLink>> {
    let prefix = format!("pc-idp-test-{}:", uuid::Uuid::new_v4());
    let link = RedisLink::open("redis://127.0.0.1:6379", &prefix, None)
        .await
        .ok()?;
    if link.conn().is_none() {
        eprintln!("no Redis at 127.0.0.1:6379; skipping");
        return None;
    }
    Some(link)
}

const SECRET: &str = "a shared secret of at least 32 bytes!!";

fn edge(link: &Arc<RedisLink>, secret: &str) -> Arc<Idp> {
    let idp = Idp::new(quick());
    idp.set_redis(link.clone());
    idp.set_secret(secret);
    idp
}

async fn redis_get(link: &RedisLink, key: &str) -> Option<Vec<u8>> {
    let mut conn = link.conn()?;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .ok()?
}

async fn redis_set(link: &RedisLink, key: &str, value: &[u8]) {
    let mut conn = link.conn().unwrap();
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_region_shares_sealed_answers_and_refuses_altered_ones() {
    let Some(link) = redis().await else { return };
    let srv = provider().await;
    let ep = endpoint(&srv, Some(Duration::from_secs(60)));
    let key = redis_key(link.prefix(), &ep.cache_key("good"));

    edge(&link, SECRET)
        .introspect("api", &ep, "good")
        .await
        .unwrap();
    assert_eq!(srv.hits(), 1);
    let raw = redis_get(&link, &key).await.expect("stored in Redis");
    assert!(!String::from_utf8_lossy(&raw).contains("alice"), "sealed");
    let mut conn = link.conn().unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=60).contains(&ttl), "{ttl}");

    // Another edge of the region: answered from Redis.
    let other = edge(&link, SECRET);
    let claims = other.introspect("api", &ep, "good").await.unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(srv.hits(), 1);
    assert_eq!(
        other.stats.introspection_redis_hits.load(Ordering::Relaxed),
        1
    );

    // An altered record is ignored: the provider is asked again.
    let mut altered = raw.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    redis_set(&link, &key, &altered).await;
    let third = edge(&link, SECRET);
    third.introspect("api", &ep, "good").await.unwrap();
    assert_eq!(srv.hits(), 2);
    assert_eq!(
        third
            .stats
            .introspection_redis_refused
            .load(Ordering::Relaxed),
        1
    );

    // Write access to Redis does not make a token active.
    let forged_key = redis_key(link.prefix(), &ep.cache_key("off"));
    redis_set(&link, &forged_key, br#"{"active":true,"sub":"mallory"}"#).await;
    redis_set(&link, &key, &raw).await;
    let copied_key = forged_key.clone();
    let fourth = edge(&link, SECRET);
    assert_eq!(
        fourth.introspect("api", &ep, "off").await.unwrap_err(),
        IdpError::Inactive
    );
    redis_set(&link, &copied_key, &raw).await;
    let fifth = edge(&link, SECRET);
    assert_eq!(
        fifth.introspect("api", &ep, "off").await.unwrap_err(),
        IdpError::Inactive,
        "a record moved to another token's slot"
    );
    // A gateway of another deployment cannot read this one's records.
    let foreign = edge(&link, "another deployment's shared secret......");
    foreign.introspect("api", &ep, "good").await.unwrap();
    assert_eq!(
        foreign
            .stats
            .introspection_redis_refused
            .load(Ordering::Relaxed),
        1
    );

    let mut conn = link.conn().unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .arg(&forged_key)
        .query_async(&mut conn)
        .await
        .unwrap();
}
