//! The store's write path for resource kinds (APIs, policies, certificates) against a real
//! Postgres: each write commits its row, one change-log entry with the right tags/prev_tags, and
//! stamps the row's revision; refusals (conflicts, unknown ids) commit nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step should stop a test loudly

use portcullis_control_plane::store::{Store, StoreError};
use portcullis_proto::model::certificate::CertificateRecord;
use portcullis_proto::model::{ApiDefinition, Policy};
use serde_json::{Value, json};

struct Db {
    base: String,
    name: String,
    store: Store,
}

impl Db {
    async fn new() -> Self {
        let base = std::env::var("PORTCULLIS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("portcullis_cp_store_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&base)
            .await
            .expect("postgres reachable (PORTCULLIS_TEST_DATABASE_URL)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let mut url = url::Url::parse(&base).unwrap();
        url.set_path(&name);
        let store = Store::connect(url.as_str(), 4).await.unwrap();
        store.migrate().await.unwrap();
        Self { base, name, store }
    }

    async fn drop_db(self) {
        self.store.pool().close().await;
        if let Ok(admin) = sqlx::PgPool::connect(&self.base).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&admin)
            .await;
        }
    }
}

/// A change-log row as operators and the tailer see it.
#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Logged {
    revision: i64,
    kind: String,
    resource_id: String,
    op: String,
    body: Option<Value>,
    tags: Option<Vec<String>>,
    prev_tags: Option<Vec<String>>,
}

async fn log(store: &Store) -> Vec<Logged> {
    sqlx::query_as(
        "SELECT revision, kind, resource_id, op, body, tags, prev_tags FROM change_log ORDER BY revision",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

async fn row_revision(store: &Store, table: &str, id_column: &str, id: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT revision FROM {table} WHERE {id_column} = $1"
    ))
    .bind(id)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

fn api(id: &str, domain: &str, listen_path: &str, tags: &[&str]) -> ApiDefinition {
    ApiDefinition::parse(
        json!({
            "api_id": id, "name": id, "use_keyless": true, "active": true, "domain": domain,
            "tags": tags,
            "proxy": {"listen_path": listen_path, "target_url": "http://127.0.0.1:9/"},
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

fn conflict_field(e: StoreError) -> &'static str {
    match e {
        StoreError::Conflict { field, .. } => field,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn api_writes_log_tags_and_stamp_revisions() {
    let db = Db::new().await;
    let store = &db.store;

    let a = api("a", "", "/a/", &["eu"]);
    let rev = store.create_api(&a).await.unwrap();
    assert_eq!(row_revision(store, "apis", "api_id", "a").await, rev);
    assert_eq!(store.get_api("a").await.unwrap(), a.to_value());
    let mut expected = vec![Logged {
        revision: rev,
        kind: "api".into(),
        resource_id: "a".into(),
        op: "upsert".into(),
        body: Some(a.to_value()),
        tags: Some(strings(&["eu"])),
        prev_tags: None,
    }];
    assert_eq!(log(store).await, expected);

    // Refusals commit nothing: a used id, a used listen path (on create and on update), an
    // unknown id.
    let b = api("b", "", "/b/", &[]);
    store.create_api(&b).await.unwrap();
    let before = log(store).await;
    assert_eq!(
        conflict_field(
            store
                .create_api(&api("a", "", "/x/", &[]))
                .await
                .unwrap_err()
        ),
        "api_id"
    );
    assert_eq!(
        conflict_field(
            store
                .create_api(&api("c", "", "/a/", &[]))
                .await
                .unwrap_err()
        ),
        "proxy.listen_path"
    );
    let err = store
        .update_api(&api("b", "", "/a/", &["us"]))
        .await
        .unwrap_err();
    assert_eq!(conflict_field(err), "proxy.listen_path");
    assert!(matches!(
        store.update_api(&api("missing", "", "/m/", &[])).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_api("missing").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.get_api("missing").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(log(store).await, before, "a refusal commits nothing");
    assert_eq!(store.get_api("b").await.unwrap(), b.to_value());
    // The same listen path on another domain is another route.
    store
        .create_api(&api("c", "c.example", "/a/", &[]))
        .await
        .unwrap();

    let moved = api("a", "", "/a2/", &["us", "eu"]);
    let rev = store.update_api(&moved).await.unwrap();
    assert_eq!(row_revision(store, "apis", "api_id", "a").await, rev);
    let rev_deleted = store.delete_api("a").await.unwrap();
    assert_eq!(rev_deleted, rev + 1);
    let all = log(store).await;
    expected = vec![
        Logged {
            revision: rev,
            kind: "api".into(),
            resource_id: "a".into(),
            op: "upsert".into(),
            body: Some(moved.to_value()),
            tags: Some(strings(&["us", "eu"])),
            prev_tags: Some(strings(&["eu"])),
        },
        Logged {
            revision: rev_deleted,
            kind: "api".into(),
            resource_id: "a".into(),
            op: "delete".into(),
            body: None,
            tags: None,
            prev_tags: Some(strings(&["us", "eu"])),
        },
    ];
    assert_eq!(all[all.len() - 2..], expected[..]);
    let ids: Vec<Value> = store
        .list_apis()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d["api_id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("b"), json!("c")], "ordered by id");
    db.drop_db().await;
}

#[tokio::test]
async fn policy_writes_reach_every_group() {
    let db = Db::new().await;
    let store = &db.store;
    let policy = |id: &str, rate: u32| {
        Policy::parse(
            json!({"id": id, "rate": rate, "per": 60, "access_rights": {"a": {"api_id": "a"}}})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    };
    let p = policy("p", 10);
    let created = store.write_policy(&p, true).await.unwrap();
    assert_eq!(row_revision(store, "policies", "id", "p").await, created);
    let before = log(store).await;
    assert_eq!(
        conflict_field(store.write_policy(&p, true).await.unwrap_err()),
        "id"
    );
    assert!(matches!(
        store.write_policy(&policy("q", 1), false).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_policy("q").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(log(store).await, before, "a refusal commits nothing");
    let changed = policy("p", 20);
    let updated = store.write_policy(&changed, false).await.unwrap();
    assert_eq!(row_revision(store, "policies", "id", "p").await, updated);
    assert_eq!(store.get_policy("p").await.unwrap(), changed.to_value());
    assert_eq!(
        store.list_policies().await.unwrap(),
        vec![changed.to_value()]
    );
    let deleted = store.delete_policy("p").await.unwrap();
    assert!(matches!(
        store.get_policy("p").await,
        Err(StoreError::NotFound)
    ));
    let every: Vec<String> = Vec::new();
    assert_eq!(
        log(store).await,
        vec![
            Logged {
                revision: created,
                kind: "policy".into(),
                resource_id: "p".into(),
                op: "upsert".into(),
                body: Some(p.to_value()),
                tags: Some(every.clone()),
                prev_tags: None,
            },
            Logged {
                revision: updated,
                kind: "policy".into(),
                resource_id: "p".into(),
                op: "upsert".into(),
                body: Some(changed.to_value()),
                tags: Some(every.clone()),
                prev_tags: Some(every.clone()),
            },
            Logged {
                revision: deleted,
                kind: "policy".into(),
                resource_id: "p".into(),
                op: "delete".into(),
                body: None,
                tags: None,
                prev_tags: Some(every),
            },
        ]
    );
    db.drop_db().await;
}

#[tokio::test]
async fn certificate_writes_carry_the_record_tags() {
    let db = Db::new().await;
    let store = &db.store;
    let cert = |id: &str, org: &str, tags: &[&str]| CertificateRecord {
        id: id.into(),
        org_id: org.into(),
        certificate_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
        tags: strings(tags),
        ..Default::default()
    };
    let one = cert("org1aa", "org1", &["eu", "*"]);
    let created = store.create_certificate(&one).await.unwrap();
    assert_eq!(
        row_revision(store, "certificates", "id", "org1aa").await,
        created
    );
    store
        .create_certificate(&cert("org2bb", "org2", &[]))
        .await
        .unwrap();
    let before = log(store).await;
    let err = store.create_certificate(&one).await.unwrap_err();
    match err {
        StoreError::Conflict { field, reason } => {
            assert_eq!(field, "id");
            assert_eq!(reason, "Certificate with org1aa id already exists");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        store.delete_certificate("nope").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.get_certificate("nope").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(log(store).await, before, "a refusal commits nothing");
    assert_eq!(store.get_certificate("org1aa").await.unwrap(), one);
    let ids = |certs: Vec<CertificateRecord>| certs.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_certificates(None).await.unwrap()),
        strings(&["org1aa", "org2bb"])
    );
    assert_eq!(
        ids(store.list_certificates(Some("org2")).await.unwrap()),
        strings(&["org2bb"])
    );
    assert!(
        store
            .list_certificates(Some("org3"))
            .await
            .unwrap()
            .is_empty()
    );
    let deleted = store.delete_certificate("org1aa").await.unwrap();
    let all = log(store).await;
    assert_eq!(
        [&all[0], &all[all.len() - 1]],
        [
            &Logged {
                revision: created,
                kind: "certificate".into(),
                resource_id: "org1aa".into(),
                op: "upsert".into(),
                body: Some(serde_json::to_value(&one).unwrap()),
                tags: Some(strings(&["eu", "*"])),
                prev_tags: None,
            },
            &Logged {
                revision: deleted,
                kind: "certificate".into(),
                resource_id: "org1aa".into(),
                op: "delete".into(),
                body: None,
                tags: None,
                prev_tags: Some(strings(&["eu", "*"])),
            }
        ]
    );
    db.drop_db().await;
}
