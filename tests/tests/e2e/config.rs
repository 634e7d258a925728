//! Declarative configuration (`portcullis-cp config dump|diff|apply`) and the warnings a Tyk
//! definition gets for what it sets but Portcullis only stores (docs/config.md,
//! docs/tyk-compatibility.md). Inputs include Tyk's own example definitions, unchanged.

use std::path::{Path, PathBuf};

use clap::Parser;
use portcullis_control_plane::cli::{Cli, run_client};
use portcullis_tests::peers::{NAMED_SERVER, PyPeer, curl};
use portcullis_tests::{ADMIN_SECRET, Cp, Dp, TestDb};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn tyk_example(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/tyk")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn warned(answer: &Value) -> Vec<String> {
    answer["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings list in {answer}"))
        .iter()
        .map(|w| w["field"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn tyk_examples_are_stored_with_a_warning_for_each_feature_not_enforced() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    for (file, expected) in [
        (
            "app_sample.json",
            vec![
                "custom_middleware.post",
                "custom_middleware.pre",
                "event_handlers",
            ],
        ),
        (
            "jq.json",
            vec![
                "enable_context_vars",
                "response_processors",
                "version_data.versions.Default.extended_paths.transform_jq",
                "version_data.versions.Default.extended_paths.transform_jq_response",
            ],
        ),
        ("quickstart.json", vec![]),
    ] {
        let def = tyk_example(file);
        let (status, added) = cp.call(Method::POST, "/tyk/apis", Some(&def)).await;
        assert_eq!(status, StatusCode::OK, "{file}: {added}");
        assert_eq!(added["action"], "added");
        assert_eq!(warned(&added), expected, "{file}");
        for w in added["warnings"].as_array().unwrap() {
            assert!(!w["reason"].as_str().unwrap().is_empty(), "{w}");
        }
        let id = def["api_id"].as_str().unwrap();
        let (status, modified) = cp
            .call(Method::PUT, &format!("/tyk/apis/{id}"), Some(&def))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(warned(&modified), expected, "{file} on PUT");
        // Stored as sent: the middleware is still there for a later version that runs it.
        let (_, stored) = cp.call(Method::GET, &format!("/tyk/apis/{id}"), None).await;
        assert_eq!(stored["custom_middleware"], def["custom_middleware"]);
    }
    let (_, policy) = cp
        .call(
            Method::POST,
            "/tyk/policies",
            Some(
                &json!({"id": "p", "rate": 10, "per": 1, "throttle_interval": 5,
                "access_rights": {"3": {"api_id": "3", "versions": ["Default"]}}}),
            ),
        )
        .await;
    assert_eq!(warned(&policy), ["throttle_interval"]);
}

#[tokio::test]
async fn ip_lists_and_internal_apis_are_refused_rather_than_served_open() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    for (extra, field) in [
        (json!({"internal": true}), "internal"),
        (json!({"internal": "true"}), "internal"),
        (
            json!({"enable_ip_whitelisting": true, "allowed_ips": ["10.0.0.0/8"]}),
            "enable_ip_whitelisting",
        ),
        (
            json!({"enable_ip_blacklisting": true, "blacklisted_ips": ["192.0.2.1"]}),
            "enable_ip_blacklisting",
        ),
    ] {
        let mut def = tyk_example("quickstart.json");
        def.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, body) = cp.call(Method::POST, "/tyk/apis", Some(&def)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {body}");
        assert_eq!(body["field"], field);
    }
    let (status, _) = cp.call(Method::GET, "/tyk/apis/3", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Runs `portcullis-cp config ...` against `cp`, as an operator would.
async fn config(cp: &Cp, args: &[&str]) -> Result<String, String> {
    let url = format!("http://{}", cp.api_addr);
    let mut argv = vec!["portcullis-cp", "config"];
    argv.push(args[0]);
    argv.extend(["--api-url", &url, "--admin-secret", ADMIN_SECRET]);
    argv.extend(&args[1..]);
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    run_client(cli.command.unwrap())
        .await
        .map_err(|e| e.to_string())
}

struct Folder(PathBuf);

impl Folder {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-config-{name}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(dir.join("apis")).unwrap();
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        Self(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.0.join(file), text).unwrap();
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.0.join(file)).unwrap();
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    u64::from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos(),
    )
}

fn orders_yaml(target: &str) -> String {
    format!(
        "# the orders API, kept in git\n\
         api_id: orders\n\
         name: Orders\n\
         use_keyless: true\n\
         proxy:\n  listen_path: /orders/\n  target_url: {target}\n  strip_listen_path: true\n\
         upstream_auth:\n  enabled: true\n  basic_auth:\n    enabled: true\n    username: gateway\n    password: orders-upstream-password\n"
    )
}

const GOLD: &str = "id: gold\nname: Gold\nrate: 100\nper: 60\nquota_max: -1\naccess_rights:\n  orders:\n    api_id: orders\n    versions: [Default]\n";

async fn change_count(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM change_log")
        .fetch_one(&db.pool().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_folder_applies_in_one_go_and_a_second_apply_changes_nothing() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let dp = Dp::joined(&cp).await;
    let upstream = PyPeer::start(NAMED_SERVER, &["orders-v1", "0"]).await;
    let other = PyPeer::start(NAMED_SERVER, &["orders-v2", "0"]).await;

    let folder = Folder::new("apply");
    folder.write(
        "README.md",
        "not read: only apis/, policies/ and certificates/ are",
    );
    folder.write("apis/orders.yaml", &orders_yaml(&upstream.url("/")));
    folder.write(
        "apis/app_sample.json",
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("data/tyk/app_sample.json"),
        )
        .unwrap(),
    );
    folder.write("policies/gold.yaml", GOLD);

    let before = change_count(&db).await;
    let diff = config(&cp, &["diff", folder.path()]).await.unwrap();
    assert!(diff.contains("+ api orders (apis/orders.yaml)"), "{diff}");
    assert!(diff.contains("+ api 1 (apis/app_sample.json)"), "{diff}");
    assert!(
        diff.contains("+ policy gold (policies/gold.yaml)"),
        "{diff}"
    );
    assert!(
        diff.contains("warning: apis/app_sample.json: custom_middleware.pre"),
        "{diff}"
    );
    assert!(diff.contains("nothing was written"), "{diff}");
    assert!(!diff.contains("orders-upstream-password"), "{diff}");
    assert_eq!(change_count(&db).await, before, "diff writes nothing");
    let (status, _) = cp.call(Method::GET, "/tyk/apis/orders", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let applied = config(&cp, &["apply", folder.path()]).await.unwrap();
    assert!(
        applied.contains("3 changes applied in one transaction"),
        "{applied}"
    );
    assert_eq!(change_count(&db).await, before + 3);
    // The edge serves what the folder says: curl through the gateway to a Python upstream.
    dp.wait_for_status("/orders/x", 200).await;
    let (_, out, _) = curl(vec!["-s".into(), dp.url("/orders/x")]).await;
    assert_eq!(out, "orders-v1");
    // The upstream password is sealed before it reaches a table or the change log.
    let text: String = sqlx::query_scalar(
        "SELECT (SELECT string_agg(definition::text, '') FROM apis) || (SELECT string_agg(coalesce(body::text, ''), '') FROM change_log)",
    )
    .fetch_one(&db.pool().await)
    .await
    .unwrap();
    assert!(!text.contains("orders-upstream-password"));

    let again = config(&cp, &["apply", folder.path()]).await.unwrap();
    assert_eq!(
        again.lines().last().unwrap(),
        "no changes (3 unchanged)",
        "{again}"
    );
    assert_eq!(
        change_count(&db).await,
        before + 3,
        "an unchanged folder writes nothing"
    );

    // One field changed in git: diff names it (not its value), apply moves the edge.
    folder.write("apis/orders.yaml", &orders_yaml(&other.url("/")));
    let diff = config(&cp, &["diff", folder.path()]).await.unwrap();
    assert!(
        diff.contains("~ api orders (apis/orders.yaml): proxy.target_url"),
        "{diff}"
    );
    assert!(
        !diff.contains(&other.url("/")),
        "values are not printed: {diff}"
    );
    config(&cp, &["apply", folder.path()]).await.unwrap();
    let mut served = String::new();
    for _ in 0..100 {
        served = curl(vec!["-s".into(), dp.url("/orders/x")]).await.1;
        if served == "orders-v2" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(served, "orders-v2");

    // A bad file fails the whole folder, naming the file and the field.
    let revisions = change_count(&db).await;
    folder.write("apis/orders.yaml", &orders_yaml(&upstream.url("/")));
    folder.write(
        "apis/broken.json",
        r#"{"api_id": "broken", "proxy": {"target_url": "http://127.0.0.1:1/"}}"#,
    );
    let e = config(&cp, &["apply", folder.path()]).await.unwrap_err();
    assert!(e.contains("apis/broken.json: proxy.listen_path"), "{e}");
    assert_eq!(
        change_count(&db).await,
        revisions,
        "nothing of the folder was applied"
    );
    let (_, stored) = cp.call(Method::GET, "/tyk/apis/orders", None).await;
    assert_eq!(stored["proxy"]["target_url"], other.url("/"));
    folder.write("apis/broken.json", "{\"api_id\": [1]");
    let e = config(&cp, &["apply", folder.path()]).await.unwrap_err();
    assert!(e.contains("broken.json") && e.contains("JSON"), "{e}");
    folder.remove("apis/broken.json");

    // A resource gone from the folder stays unless --prune.
    folder.remove("policies/gold.yaml");
    let kept = config(&cp, &["apply", folder.path()]).await.unwrap();
    assert!(kept.contains("? policy gold"), "{kept}");
    let (status, _) = cp.call(Method::GET, "/tyk/policies/gold", None).await;
    assert_eq!(status, StatusCode::OK);
    let pruned = config(&cp, &["apply", folder.path(), "--prune"])
        .await
        .unwrap();
    assert!(pruned.contains("- policy gold"), "{pruned}");
    let (status, _) = cp.call(Method::GET, "/tyk/policies/gold", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_dump_applies_back_unchanged_and_names_its_certificate_references() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let folder = Folder::new("source");
    folder.write("apis/orders.yaml", &orders_yaml("http://127.0.0.1:9/"));
    folder.write("policies/gold.yaml", GOLD);
    config(&cp, &["apply", folder.path()]).await.unwrap();

    let out = std::env::temp_dir().join(format!(
        "portcullis-dump-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let dump_dir = out.to_str().unwrap().to_owned();
    let wrote = config(&cp, &["dump", &dump_dir]).await.unwrap();
    assert_eq!(wrote, format!("wrote 2 files to {dump_dir}"));
    let dumped: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("apis/orders.json")).unwrap())
            .unwrap();
    assert_eq!(dumped["proxy"]["listen_path"], "/orders/");
    let password = dumped["upstream_auth"]["basic_auth"]["password"]
        .as_str()
        .unwrap();
    assert_ne!(
        password, "orders-upstream-password",
        "a dump holds secrets sealed"
    );
    assert!(out.join("policies/gold.json").exists());
    let e = config(&cp, &["dump", &dump_dir]).await.unwrap_err();
    assert!(e.contains("not empty"), "{e}");

    let back = config(&cp, &["apply", &dump_dir]).await.unwrap();
    assert_eq!(
        back.lines().last().unwrap(),
        "no changes (2 unchanged)",
        "{back}"
    );

    // A certificate reference must name a stored certificate.
    std::fs::create_dir_all(out.join("certificates")).unwrap();
    std::fs::write(
        out.join("certificates/missing.json"),
        r#"{"id": "no-such-certificate"}"#,
    )
    .unwrap();
    let e = config(&cp, &["apply", &dump_dir]).await.unwrap_err();
    assert!(e.contains("certificates/missing.json: id"), "{e}");
    std::fs::remove_dir_all(&out).unwrap();

    // A source is a file path: a huge one is refused before it is echoed anywhere.
    let (status, body) = cp
        .call(
            Method::POST,
            "/portcullis/config",
            Some(&json!({"dry_run": true, "policies": [
                {"source": "x".repeat(2000), "body": {"id": "p"}}]})),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("source"))
    );

    // A configuration file must carry its id, or every apply would create it again.
    folder.write("policies/anonymous.yaml", "rate: 1\nper: 1\n");
    let e = config(&cp, &["apply", folder.path()]).await.unwrap_err();
    assert!(e.contains("policies/anonymous.yaml: id"), "{e}");
}

const BILLING: &str = "api_id: billing\nname: Billing\nuse_keyless: false\nuse_oauth2: true\noauth_meta:\n  allowed_access_types: [client_credentials]\n  allowed_authorize_types: [code]\n  auth_login_redirect: http://127.0.0.1:9/login\nproxy:\n  listen_path: /billing/\n  target_url: TARGET\n  strip_listen_path: true\n";

const BILLING_POLICY: &str = "id: billing-gold\nname: Billing gold\nrate: 100\nper: 60\nquota_max: -1\naccess_rights:\n  billing:\n    api_id: billing\n    versions: [Default]\n";

fn web_client(secret: &str) -> String {
    format!(
        "client_id: web\napi_id: billing\npolicy_id: billing-gold\nredirect_uri: http://127.0.0.1:9/cb\ndescription: the web shop\nsecret: {secret}\n"
    )
}

/// `client_credentials` at the edge's token endpoint with curl: (status, body).
async fn edge_token(dp: &Dp, id: &str, secret: &str) -> (u16, Value) {
    let (_, out, _) = curl(vec![
        "-s".into(),
        "-w".into(),
        "\n%{http_code}".into(),
        "-u".into(),
        format!("{id}:{secret}"),
        "-d".into(),
        "grant_type=client_credentials".into(),
        dp.url("/billing/oauth/token"),
    ])
    .await;
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

async fn bearer(dp: &Dp, token: &str) -> (u16, String) {
    let (_, out, _) = curl(vec![
        "-s".into(),
        "-w".into(),
        "\n%{http_code}".into(),
        "-H".into(),
        format!("Authorization: Bearer {token}"),
        dp.url("/billing/x"),
    ])
    .await;
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

async fn secrets_text(db: &TestDb) -> String {
    sqlx::query_scalar(
        "SELECT coalesce((SELECT string_agg(body::text, '') FROM oauth_clients), '') || coalesce((SELECT string_agg(coalesce(body::text, ''), '') FROM change_log), '')",
    )
    .fetch_one(&db.pool().await)
    .await
    .unwrap()
}

#[tokio::test]
async fn oauth_clients_live_in_the_folder_with_their_secrets_sealed() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let dp = Dp::joined(&cp).await;
    let upstream = PyPeer::start(NAMED_SERVER, &["billing", "0"]).await;

    let folder = Folder::new("clients");
    std::fs::create_dir_all(folder.0.join("oauth_clients")).unwrap();
    folder.write(
        "apis/billing.yaml",
        &BILLING.replace("TARGET", &upstream.url("/")),
    );
    folder.write("policies/billing-gold.yaml", BILLING_POLICY);
    folder.write("oauth_clients/web.yaml", &web_client("web-secret-one-0123"));
    // The client names an API and a policy of the same folder: all three land in one go.
    let applied = config(&cp, &["apply", folder.path()]).await.unwrap();
    assert!(
        applied.contains("+ oauth_client web (oauth_clients/web.yaml)"),
        "{applied}"
    );
    assert!(
        applied.contains("3 changes applied in one transaction"),
        "{applied}"
    );
    let (_, client) = cp
        .call(Method::GET, "/tyk/oauth/clients/billing/web", None)
        .await;
    assert_eq!(client["secret"], "web-secret-one-0123");
    assert!(!secrets_text(&db).await.contains("web-secret-one-0123"));

    // The edge issues a token to the folder's client (curl as the client), and it opens the API.
    let mut got = (0, Value::Null);
    for _ in 0..100 {
        got = edge_token(&dp, "web", "web-secret-one-0123").await;
        if got.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(got.0, 200, "{:?}", got.1);
    let token = got.1["access_token"].as_str().unwrap().to_owned();
    assert_eq!(bearer(&dp, &token).await, (200, "billing".to_owned()));

    let again = config(&cp, &["apply", folder.path()]).await.unwrap();
    assert_eq!(again.lines().last().unwrap(), "no changes (3 unchanged)");

    // A dump holds the client with its secret sealed, and applies back unchanged.
    let out = std::env::temp_dir().join(format!(
        "portcullis-dump-clients-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let dump_dir = out.to_str().unwrap().to_owned();
    config(&cp, &["dump", &dump_dir]).await.unwrap();
    let dumped = std::fs::read_to_string(out.join("oauth_clients/web.json")).unwrap();
    assert!(!dumped.contains("web-secret-one-0123"), "{dumped}");
    let back = config(&cp, &["apply", &dump_dir]).await.unwrap();
    assert_eq!(back.lines().last().unwrap(), "no changes (3 unchanged)");
    // A sealed secret is bound to its client: copied into another client, it does not open.
    let mut copy: Value = serde_json::from_str(&dumped).unwrap();
    copy["client_id"] = json!("copy");
    std::fs::write(
        out.join("oauth_clients/copy.json"),
        serde_json::to_string(&copy).unwrap(),
    )
    .unwrap();
    let e = config(&cp, &["apply", &dump_dir]).await.unwrap_err();
    assert!(e.contains("oauth_clients/copy.json: secret"), "{e}");
    std::fs::remove_dir_all(&out).unwrap();

    // A client of an API nobody has, or of one that is not OAuth, changes nothing; nor does
    // a secret YAML reads as a number, which is never echoed back.
    let revisions = change_count(&db).await;
    folder.write(
        "oauth_clients/lost.yaml",
        "client_id: lost\napi_id: billing\nsecret: 20240617123456\n",
    );
    let e = config(&cp, &["apply", folder.path()]).await.unwrap_err();
    assert!(
        e.contains("oauth_clients/lost.yaml: secret: must be a string"),
        "{e}"
    );
    assert!(!e.contains("20240617123456"), "{e}");
    folder.write(
        "oauth_clients/lost.yaml",
        "client_id: lost\napi_id: nowhere\n",
    );
    let e = config(&cp, &["apply", folder.path()]).await.unwrap_err();
    assert!(
        e.contains("oauth_clients/lost.yaml: api_id: API doesn't exist"),
        "{e}"
    );
    folder.write("apis/orders.yaml", &orders_yaml("http://127.0.0.1:9/"));
    folder.write(
        "oauth_clients/lost.yaml",
        "client_id: lost\napi_id: orders\n",
    );
    let e = config(&cp, &["apply", folder.path()]).await.unwrap_err();
    assert!(
        e.contains("oauth_clients/lost.yaml: api_id: API is not OAuth2"),
        "{e}"
    );
    assert_eq!(change_count(&db).await, revisions);
    folder.remove("oauth_clients/lost.yaml");
    folder.remove("apis/orders.yaml");

    // A new secret in git: diff names the field, never the value; the old secret stops working.
    folder.write("oauth_clients/web.yaml", &web_client("web-secret-two-4567"));
    let diff = config(&cp, &["diff", folder.path()]).await.unwrap();
    assert!(
        diff.contains("~ oauth_client web (oauth_clients/web.yaml): secret"),
        "{diff}"
    );
    assert!(!diff.contains("web-secret-two-4567"), "{diff}");
    config(&cp, &["apply", folder.path()]).await.unwrap();
    assert_eq!(edge_token(&dp, "web", "web-secret-two-4567").await.0, 200);
    let (status, body) = edge_token(&dp, "web", "web-secret-one-0123").await;
    // Tyk answers OAuth errors with 403 unless --oauth-error-status-code says otherwise.
    assert_eq!((status, &body["error"]), (403, &json!("invalid_client")));
    assert!(!secrets_text(&db).await.contains("web-secret-two-4567"));

    // Pruned from the folder: the client goes and its tokens are refused at the edge.
    folder.remove("oauth_clients/web.yaml");
    let kept = config(&cp, &["apply", folder.path()]).await.unwrap();
    assert!(kept.contains("? oauth_client web"), "{kept}");
    let pruned = config(&cp, &["apply", folder.path(), "--prune"])
        .await
        .unwrap();
    assert!(pruned.contains("- oauth_client web"), "{pruned}");
    let mut refused = (0, String::new());
    for _ in 0..100 {
        refused = bearer(&dp, &token).await;
        if refused.0 == 403 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(refused.0, 403, "{}", refused.1);
    assert!(
        refused.1.contains("OAuth client access was revoked"),
        "{}",
        refused.1
    );
}

/// A writer that holds rows the way a plain management API write does (row first, then the
/// revision counter) meets an apply: neither waits on the other in the opposite order, so there
/// is no deadlock (a 500 before), and reads (dump, diff, dry run) never wait on it at all.
#[tokio::test]
async fn apply_and_a_concurrent_write_never_deadlock_and_reads_take_no_lock() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let folder = Folder::new("race");
    folder.write(
        "apis/a.yaml",
        "api_id: a\nuse_keyless: true\nproxy:\n  listen_path: /a/\n  target_url: http://127.0.0.1:9/\n",
    );
    folder.write(
        "apis/race.yaml",
        "api_id: race\nuse_keyless: true\nproxy:\n  listen_path: /race/\n  target_url: http://127.0.0.1:9/\n",
    );
    config(&cp, &["apply", folder.path()]).await.unwrap();
    folder.write(
        "apis/new.yaml",
        "api_id: new\nuse_keyless: true\nproxy:\n  listen_path: /new/\n  target_url: http://127.0.0.1:9/\n",
    );
    folder.write(
        "apis/a.yaml",
        "api_id: a\nname: changed\nuse_keyless: true\nproxy:\n  listen_path: /a/\n  target_url: http://127.0.0.1:9/\n",
    );

    // Another writer holds row `race` locked: reads answer at once all the same.
    let pool = db.pool().await;
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM apis WHERE api_id = 'race' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let (status, dump) = cp.call(Method::GET, "/portcullis/config", None).await;
        assert_eq!(status, StatusCode::OK, "{dump}");
        config(&cp, &["diff", folder.path()]).await.unwrap()
    })
    .await
    .expect("dump and diff do not wait on a writer's row locks");
    assert!(read.contains("+ api new"), "{read}");
    holder.rollback().await.unwrap();

    // A plain create of `new`, its row written but not yet at the counter ...
    let mut writer = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO apis (api_id, listen_path, definition, revision) VALUES ('new', '/elsewhere/', '{}', 0)",
    )
    .execute(&mut *writer)
    .await
    .unwrap();
    // ... and an apply that updates `a`, then waits to insert `new` ...
    let apply = tokio::spawn({
        let (url, path) = (format!("http://{}", cp.api_addr), folder.path().to_owned());
        async move {
            let argv = [
                "portcullis-cp",
                "config",
                "apply",
                "--api-url",
                &url,
                "--admin-secret",
                ADMIN_SECRET,
                &path,
            ];
            let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
            run_client(cli.command.unwrap())
                .await
                .map_err(|e| e.to_string())
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // ... has not taken the counter, so the writer takes it and commits, as a plain write does
    // (before, the apply held it from its first change: a deadlock, and one side got a 500).
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sqlx::query("UPDATE revision_counter SET revision = revision + 1").execute(&mut *writer),
    )
    .await
    .expect("the counter is free while the apply waits on a row")
    .unwrap();
    writer.commit().await.unwrap();
    let refused = apply.await.unwrap().expect_err("`new` exists now");
    assert!(
        refused.contains("apis/new.yaml") && !refused.contains("Internal error"),
        "{refused}"
    );
    // Nothing of the folder was applied.
    let (_, a) = cp.call(Method::GET, "/tyk/apis/a", None).await;
    assert_ne!(a["name"], "changed");
}
