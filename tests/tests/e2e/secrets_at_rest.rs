//! Secrets at rest: a full run (control plane, gateway with a state dir and a regional Redis,
//! Postgres) creates every kind of secret the product handles, uses them through the gateway,
//! then reads back everything the run left behind (every Postgres table of its database, its
//! Redis keyspace, the state dir, every log line at trace level) and looks for each secret in
//! plaintext, base64 and hex. A planted canary proves the search reaches each place.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use portcullis_data_plane::sync::identity::StateDir;
use portcullis_proto::envelope::EnvelopeKey;
use portcullis_tests::{
    ADMIN_SECRET, Cp, CpOptions, Dp, DpOptions, ENCRYPTION_SECRET, EchoUpstream, TestDb,
    eventually, keyless_api, redis_url,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Everything logged by every component of this test process.
#[derive(Clone, Default)]
pub(crate) struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    /// Installs the process-wide subscriber (before any component starts, so the harness's own
    /// does not): everything of ours at trace, everything else at debug.
    pub(crate) fn install() -> Self {
        let buf = Self::default();
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,portcullis_control_plane=trace,portcullis_data_plane=trace,portcullis_proto=trace",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("no other tracing subscriber in this test process");
        buf
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

/// One place the run wrote to, and what it holds.
pub(crate) struct Place {
    pub(crate) name: String,
    pub(crate) bytes: Vec<u8>,
}

/// A secret and the forms it could be written in.
pub(crate) struct Secret {
    name: &'static str,
    forms: Vec<(String, Vec<u8>)>,
}

impl Secret {
    /// `value` raw, in hex, and in base64 (standard, URL-safe) at each of the three alignments
    /// it can have inside a longer encoded value.
    pub(crate) fn new(name: &'static str, value: &[u8]) -> Self {
        assert!(value.len() >= 12, "{name} is too short to search for");
        let mut forms = vec![
            ("plaintext".to_owned(), value.to_vec()),
            ("hex".to_owned(), hex::encode(value).into_bytes()),
            ("HEX".to_owned(), hex::encode_upper(value).into_bytes()),
        ];
        for offset in 0..3 {
            for (engine, label) in [(&STANDARD, "base64"), (&URL_SAFE_NO_PAD, "base64url")] {
                // Inside a longer value, one of value[0..], value[1..], value[2..] starts on a
                // 3-byte boundary and encodes as here; the last characters depend on what
                // follows, so they are left out.
                let encoded = engine.encode(&value[offset..]);
                let stable = encoded.trim_end_matches('=');
                let stable = &stable[..stable.len().saturating_sub(4)];
                if stable.len() >= 12 {
                    forms.push((format!("{label} +{offset}"), stable.as_bytes().to_vec()));
                }
            }
        }
        forms.dedup_by(|a, b| a.1 == b.1);
        Self { name, forms }
    }

    /// A private key given as PEM: the PEM text and the DER it encodes.
    fn private_key(name: &'static str, pem: &str) -> Self {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(body).expect("PEM body is base64");
        let mut s = Self::new(name, &der);
        s.forms
            .push(("PEM".to_owned(), pem.trim().as_bytes().to_vec()));
        s
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `bytes` without white space and JSON-escaped line breaks, so base64 wrapped into lines (PEM,
/// MIME), raw or inside a JSON string, reads as one run.
fn squashed(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'\\', Some(b'n' | b'r' | b't')) => i += 2,
            (b' ' | b'\n' | b'\r' | b'\t', _) => i += 1,
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// "<secret> as <form> in <place>" for every form of every secret found anywhere.
pub(crate) fn leaks(places: &[Place], secrets: &[Secret]) -> Vec<String> {
    let mut found = Vec::new();
    for p in places {
        let flat = squashed(&p.bytes);
        for s in secrets {
            for (form, needle) in &s.forms {
                if contains(&p.bytes, needle) || contains(&flat, needle) {
                    found.push(format!("{} as {form} in {}", s.name, p.name));
                }
            }
        }
    }
    found
}

/// Every row of every table of the test database, as Postgres prints it (bytea as hex).
pub(crate) async fn postgres_places(db: &TestDb) -> Vec<Place> {
    let pool = db.pool().await;
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(tables.len() >= 5, "migrations ran: {tables:?}");
    let mut places = Vec::new();
    for (table,) in tables {
        let (rows,): (String,) = sqlx::query_as(&format!(
            "SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM \"{table}\" t"
        ))
        .fetch_one(&pool)
        .await
        .unwrap();
        places.push(Place {
            name: format!("Postgres table {table}"),
            bytes: rows.into_bytes(),
        });
    }
    pool.close().await;
    places
}

/// Every key under `prefix`: its readable value (by type) and its DUMP serialisation.
pub(crate) async fn redis_places(prefix: &str) -> Vec<Place> {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut places = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut read = redis::cmd(match kind.as_str() {
            "string" => "GET",
            "hash" => "HGETALL",
            "list" => "LRANGE",
            "set" => "SMEMBERS",
            "zset" => "ZRANGE",
            _ => "DUMP",
        });
        read.arg(&key);
        match kind.as_str() {
            "list" => {
                read.arg(0).arg(-1);
            }
            "zset" => {
                read.arg(0).arg(-1).arg("WITHSCORES");
            }
            _ => {}
        }
        let value: redis::Value = read
            .query_async(&mut conn)
            .await
            .unwrap_or(redis::Value::Nil);
        let mut bytes = key.clone();
        bytes.push(b'\n');
        flatten(&value, &mut bytes);
        let dump: Option<Vec<u8>> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap_or(None);
        bytes.extend(dump.unwrap_or_default());
        places.push(Place {
            name: format!("Redis key {}", String::from_utf8_lossy(&key)),
            bytes,
        });
    }
    places
}

fn flatten(v: &redis::Value, out: &mut Vec<u8>) {
    match v {
        redis::Value::BulkString(b) => out.extend_from_slice(b),
        redis::Value::SimpleString(s) => out.extend_from_slice(s.as_bytes()),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            for i in items {
                flatten(i, out);
                out.push(b'\n');
            }
        }
        redis::Value::Map(pairs) => {
            for (k, val) in pairs {
                flatten(k, out);
                out.push(b'=');
                flatten(val, out);
                out.push(b'\n');
            }
        }
        other => out.extend_from_slice(format!("{other:?}").as_bytes()),
    }
}

/// Every file under `dir`, whatever its name.
fn state_dir_places(dir: &Path) -> Vec<Place> {
    let mut places = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                places.push(Place {
                    name: format!("state dir file {}", path.display()),
                    bytes: std::fs::read(&path).unwrap(),
                });
            }
        }
    }
    places
}

fn rights(api: &str) -> Value {
    json!({ api: {"api_id": api, "api_name": api, "versions": ["Default"]} })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_stored_or_logged_in_plaintext() {
    let logs = LogBuffer::install();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let ca_secret = format!("ca-secret-{run}-only-the-control-plane-holds");
    let db = TestDb::new().await;
    let cp = Cp::start_with(
        &db.url,
        CpOptions {
            ca_secret: Some(ca_secret.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("control plane starts");
    let echo = EchoUpstream::start().await;
    // A server certificate with its key, served by the gateway: its key reaches the edge's
    // memory, and must reach no table, change log, Redis record or state file in the clear.
    let cert_key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["secrets.example".to_owned()])
        .unwrap()
        .self_signed(&cert_key)
        .unwrap();
    let cert_key_pem = cert_key.serialize_pem();
    let upload = reqwest::Client::new()
        .post(format!("http://{}/tyk/certs", cp.api_addr))
        .header("X-Tyk-Authorization", ADMIN_SECRET)
        .body(format!("{}{}", cert.pem(), cert_key_pem))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), StatusCode::OK);
    let cert_id = upload.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut token_api = keyless_api("tok", "/tok/", &echo.url());
    token_api["use_keyless"] = json!(false);
    token_api["certificates"] = json!([cert_id]);
    cp.create_api(&token_api).await;
    let mut basic_api = keyless_api("basic", "/basic/", &echo.url());
    basic_api["use_keyless"] = json!(false);
    basic_api["use_basic_auth"] = json!(true);
    cp.create_api(&basic_api).await;

    // Keys: one the CP generates, one the operator names, one basic-auth user with a password.
    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/keys",
            Some(&json!({"access_rights": rights("tok")})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let generated_key = body["key"].as_str().unwrap().to_owned();
    let custom_key = format!("custom-key-{run}");
    let (status, body) = cp
        .call(
            Method::POST,
            &format!("/tyk/keys/{custom_key}"),
            Some(&json!({"access_rights": rights("tok")})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let user = format!("user-{run}");
    let password = format!("password-{run}");
    let (status, body) = cp
        .call(
            Method::POST,
            &format!("/tyk/keys/{user}"),
            Some(&json!({"access_rights": rights("basic"), "basic_auth_data": {"password": password}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A gateway joined with a bootstrap token, with a state dir and a regional Redis.
    let bootstrap_token = cp.token("default").await;
    let state_dir = std::env::temp_dir().join(format!("portcullis-secrets-{run}"));
    let prefix = format!("e2e:{run}:secrets:");
    let dp = Dp::start(
        &cp,
        DpOptions {
            token: Some(bootstrap_token.clone()),
            state_dir: Some(state_dir.clone()),
            redis_url: Some(redis_url()),
            redis_prefix: Some(prefix.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("gateway starts");
    dp.wait_for_revision(3).await;

    // Use every credential through the gateway, so sessions are looked up and cached.
    let http = reqwest::Client::new();
    for key in [&generated_key, &custom_key] {
        let resp = http
            .get(dp.url("/tok/x"))
            .header("Authorization", key.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "key works through the gateway"
        );
    }
    let resp = http
        .get(dp.url("/basic/x"))
        .basic_auth(&user, Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "basic-auth user works");
    let hashes: Vec<String> = [&generated_key, &custom_key, &user]
        .iter()
        .map(|k| portcullis_proto::key_hash::key_hash(k))
        .collect();
    eventually(
        Duration::from_secs(10),
        "sessions and the backup written to Redis, the configuration to the state dir",
        || async {
            let places = redis_places(&prefix).await;
            let sessions = hashes
                .iter()
                .all(|h| places.iter().any(|p| p.name.contains(h.as_str())));
            let backup = places.iter().any(|p| p.name.contains("backup"));
            (sessions && backup && state_dir.join("config.bin").exists()).then_some(())
        },
    )
    .await;

    // What the run holds in memory only: the node's private key and the CA's.
    let identity = StateDir::open(&state_dir, ENCRYPTION_SECRET)
        .unwrap()
        .load_identity()
        .expect("identity readable")
        .expect("the node saved its identity");
    let pool = db.pool().await;
    let (sealed_ca_key,): (Vec<u8>,) = sqlx::query_as("SELECT key_sealed FROM node_ca")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    let ca_key_der = EnvelopeKey::derive(ca_secret.as_bytes(), "portcullis/ca-seal/v2")
        .open(&sealed_ca_key, b"portcullis node ca key")
        .expect("the CA key is sealed under --ca-secret");

    let secrets = vec![
        Secret::new("generated auth key", generated_key.as_bytes()),
        Secret::new("custom auth key", custom_key.as_bytes()),
        Secret::new("basic-auth password", password.as_bytes()),
        Secret::new("bootstrap token", bootstrap_token.as_bytes()),
        Secret::private_key("node private key", &identity.key_pem),
        Secret::new("admin secret", ADMIN_SECRET.as_bytes()),
        Secret::new("encryption secret", ENCRYPTION_SECRET.as_bytes()),
        Secret::new("CA secret", ca_secret.as_bytes()),
        Secret::new("CA private key", &ca_key_der),
        Secret::private_key("certificate private key", &cert_key_pem),
    ];

    // Self-check: a canary planted in each kind of place is found there, in each form.
    let canary = format!("canary-{run}-planted-by-the-test");
    let canary_secret = [Secret::new("canary", canary.as_bytes())];
    let pool = db.pool().await;
    sqlx::query("CREATE TABLE adversarial_canary (v bytea)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO adversarial_canary VALUES ($1)")
        .bind(canary.as_bytes())
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}canary"))
        .arg("f")
        .arg(STANDARD.encode(&canary))
        .query_async(&mut conn)
        .await
        .unwrap();
    // Wrapped into lines inside a JSON string, as a PEM in a JSON file is.
    let wrapped: Vec<String> = URL_SAFE_NO_PAD
        .encode(&canary)
        .as_bytes()
        .chunks(16)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    std::fs::write(
        state_dir.join("canary.json"),
        json!({ "pem": format!("x{}", wrapped.join("\n")) }).to_string(),
    )
    .unwrap();
    // Through a component's own logging: the CP logs the group of a bootstrap token it creates.
    let (status, body) = cp
        .call(
            Method::POST,
            "/portcullis/bootstrap-tokens",
            Some(&json!({"group": canary})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    dp.stop();
    let mut places = postgres_places(&db).await;
    places.extend(redis_places(&prefix).await);
    places.extend(state_dir_places(&state_dir));
    places.push(Place {
        name: "the logs".to_owned(),
        bytes: logs.bytes(),
    });
    let planted = leaks(&places, &canary_secret);
    for place in [
        "Postgres table adversarial_canary",
        "Redis key",
        "state dir file",
        "the logs",
    ] {
        assert!(
            planted.iter().any(|l| l.contains(place)),
            "the search does not reach {place}: canary found only as {planted:?}"
        );
    }

    let found = leaks(&places, &secrets);
    let _: () = redis::cmd("DEL")
        .arg(
            places
                .iter()
                .filter_map(|p| p.name.strip_prefix("Redis key "))
                .collect::<Vec<_>>(),
        )
        .query_async(&mut conn)
        .await
        .unwrap_or(());
    let _ = std::fs::remove_dir_all(&state_dir);
    assert!(
        found.is_empty(),
        "secrets in plaintext after a full run:\n  {}",
        found.join("\n  ")
    );
}
