//! Tyk OAS API definitions (docs/oas.md): Tyk's documentation examples written through the
//! control plane, read back in both formats, and served by a joined edge with the auth their
//! security schemes select.

use portcullis_tests::idp_stack::get;
use portcullis_tests::peers::{HEADER_ECHO, PyPeer};
use portcullis_tests::traffic::key_for;
use portcullis_tests::{Cp, Dp, TestDb};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PETSTORE: &str = include_str!("../../data/tyk/oas_petstore.json");
const TOKEN_OPENAPI: &str = include_str!("../../data/tyk/oas_auth_token_openapi.yaml");
const TOKEN_EXTENSION: &str = include_str!("../../data/tyk/oas_auth_token_extension.yaml");
const TOKEN_LOCATIONS: &str =
    include_str!("../../data/tyk/oas_auth_token_locations_extension.yaml");

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(e) => merge(e, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// The Petstore example with documentation fragments laid over it, pointed at `upstream`.
fn petstore(fragments: &[&str], upstream: &str) -> Value {
    let mut doc: Value = serde_json::from_str(PETSTORE).unwrap();
    for f in fragments {
        merge(&mut doc, yaml_serde::from_str(f).unwrap());
    }
    doc["x-tyk-api-gateway"]["upstream"]["url"] = json!(upstream);
    doc
}

#[tokio::test]
async fn a_tyk_docs_oas_api_is_written_read_back_served_updated_and_deleted() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let upstream = PyPeer::start(HEADER_ECHO, &[]).await;
    let dp = Dp::regional(&cp, "eu").await;

    // The auth-token example of Tyk's docs, on the Petstore definition.
    let doc = petstore(&[TOKEN_OPENAPI, TOKEN_EXTENSION], &upstream.url("/"));
    let (status, body) = cp.call(Method::POST, "/tyk/apis/oas", Some(&doc)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["action"].as_str()),
        (Some("ok"), Some("added"))
    );
    let id = body["key"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "generated as Tyk does");
    assert_eq!(body["warnings"], json!([]));

    // Classic view.
    let (status, classic) = cp.call(Method::GET, &format!("/tyk/apis/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(classic["api_id"], json!(id));
    assert_eq!(classic["proxy"]["listen_path"], "/petstore/");
    assert_eq!(classic["use_standard_auth"], true);
    assert_eq!(classic["use_keyless"], false);
    // OAS view: the document as written, with the extension regenerated.
    let (status, view) = cp
        .call(Method::GET, &format!("/tyk/apis/oas/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let x = &view["x-tyk-api-gateway"];
    assert_eq!(x["info"]["id"], json!(id));
    assert_eq!(x["server"]["listenPath"]["value"], "/petstore/");
    assert_eq!(x["upstream"]["url"], json!(upstream.url("/")));
    assert_eq!(view["security"], doc["security"]);
    assert_eq!(view["components"], doc["components"]);
    assert_eq!(view["info"], doc["info"]);
    let (status, list) = cp.call(Method::GET, "/tyk/apis/oas", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Served by the edge with the auth the scheme selected.
    dp.wait_for_status("/petstore/pets", 401).await;
    let (status, body) = get(&dp, "/petstore/pets", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("Authorization field missing")
        )
    );
    let key = key_for(&cp, &[id.as_str()]).await;
    let (status, got) = get(&dp, "/petstore/pets?id=1", &[("Authorization", &key)]).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    // strip: true, so the upstream sees the path below the listen path.
    assert_eq!(got["path"], "/pets?id=1");
    assert_eq!(got["headers"]["authorization"], json!(key));

    // PUT the docs' "multiple locations" variant: the key now also works as a query parameter.
    let doc2 = petstore(&[TOKEN_OPENAPI, TOKEN_LOCATIONS], &upstream.url("/"));
    let (status, body) = cp
        .call(Method::PUT, &format!("/tyk/apis/oas/{id}"), Some(&doc2))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["action"], "modified");
    let target = format!("/petstore/q?query-auth={key}");
    eventually_status(&dp, &target, StatusCode::OK).await;
    let (_, view) = cp
        .call(Method::GET, &format!("/tyk/apis/oas/{id}"), None)
        .await;
    assert_eq!(
        view["x-tyk-api-gateway"]["server"]["authentication"]["securitySchemes"]["myAuthScheme"]["query"],
        json!({"enabled": true, "name": "query-auth"})
    );

    // Delete through the OAS route.
    let (status, body) = cp
        .call(Method::DELETE, &format!("/tyk/apis/oas/{id}"), None)
        .await;
    assert_eq!(
        (status, body["action"].as_str()),
        (StatusCode::OK, Some("deleted"))
    );
    dp.wait_for_status("/petstore/pets", 404).await;
    let (status, _) = cp
        .call(Method::GET, &format!("/tyk/apis/oas/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

pub(crate) async fn eventually_status(dp: &Dp, path: &str, want: StatusCode) {
    portcullis_tests::eventually(
        std::time::Duration::from_secs(20),
        &format!("{path} answering {want}"),
        || async {
            let (s, _) = get(dp, path, &[]).await;
            (s == want).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_plain_openapi_document_is_imported_and_a_classic_api_has_an_oas_view() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let upstream = PyPeer::start(HEADER_ECHO, &[]).await;
    let dp = Dp::regional(&cp, "eu").await;

    let mut plain: Value = serde_json::from_str(PETSTORE).unwrap();
    plain.as_object_mut().unwrap().remove("x-tyk-api-gateway");
    let path = format!(
        "/tyk/apis/oas/import?listenPath=/imported/&upstreamURL={}&apiID=imported",
        upstream.url("/")
    );
    let (status, body) = cp.call(Method::POST, &path, Some(&plain)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["key"], "imported");
    let (_, classic) = cp.call(Method::GET, "/tyk/apis/imported", None).await;
    assert_eq!(classic["name"], "Petstore");
    assert_eq!(classic["use_keyless"], true);
    eventually_status(&dp, "/imported/x", StatusCode::OK).await;
    let (_, got) = get(&dp, "/imported/x", &[]).await;
    assert_eq!(got["path"], "/x");

    // With the extension, import is refused in Tyk's words.
    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/apis/oas/import",
            Some(&serde_json::from_str(PETSTORE).unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "the import payload should not contain x-tyk-api-gateway"
    );

    // A Classic API read as OAS.
    let (status, _) = cp
        .call(
            Method::POST,
            "/tyk/apis",
            Some(
                &json!({"api_id": "classic", "name": "classic", "use_basic_auth": true,
                "proxy": {"listen_path": "/classic/", "target_url": upstream.url("/")}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, view) = cp.call(Method::GET, "/tyk/apis/oas/classic", None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["openapi"], "3.0.3");
    assert_eq!(view["x-tyk-api-gateway"]["info"]["id"], "classic");
    assert_eq!(
        view["components"]["securitySchemes"]["basic"]["scheme"],
        "basic"
    );
    assert_eq!(view["security"], json!([{"basic": []}]));
}

#[tokio::test]
async fn bad_oas_inputs_are_400s_naming_the_field() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let post = |body: String| {
        let cp = &cp;
        async move {
            cp.call_raw(
                Method::POST,
                "/tyk/apis/oas",
                Some(body),
                Some(portcullis_tests::ADMIN_SECRET),
            )
            .await
        }
    };
    let with = |extra: Value| {
        let mut d = petstore(&[], "http://127.0.0.1:9/");
        merge(&mut d, extra);
        d.to_string()
    };
    for (body, field) in [
        (
            with(json!({
                "components": {"securitySchemes": {"oidc": {"type": "openIdConnect", "openIdConnectUrl": "https://idp/"}}},
                "security": [{"oidc": []}],
                "x-tyk-api-gateway": {"server": {"authentication": {"enabled": true,
                    "securitySchemes": {"oidc": {"enabled": true}}}}}})),
            "components.securitySchemes.oidc.type",
        ),
        (
            with(json!({"x-tyk-api-gateway": {"server": {"listenPath": {"value": 7}}}})),
            "x-tyk-api-gateway.server.listenPath.value",
        ),
        (
            with(json!({"x-tyk-api-gateway": {"info": {"name": ["not", "a", "string"]}}})),
            "x-tyk-api-gateway.info.name",
        ),
        (
            with(json!({"x-tyk-api-gateway": {"server": {"authentication": {"enabled": true}}}})),
            "x-tyk-api-gateway.server.authentication.enabled",
        ),
        (
            format!("{{\"pad\": \"{}\"}}", "x".repeat(5 * 1024 * 1024)),
            "body",
        ),
        (
            with(json!({"x-tyk-api-gateway": {"info": {"id": "oas"}}})),
            "api_id",
        ),
    ] {
        let (status, answer) = post(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["status"], "error");
        assert_eq!(answer["field"], field, "{answer}");
    }
    // A Classic body at the OAS route: Tyk's wording.
    let (status, answer) = post(
        json!({"api_id": "c", "proxy": {"listen_path": "/c/", "target_url": "http://127.0.0.1:9/"}, "openapi": "3.0.3", "info": {"title": "t", "version": "1"}})
            .to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer["message"],
        "the payload should contain x-tyk-api-gateway"
    );
    // Nothing was stored.
    let (_, list) = cp.call(Method::GET, "/tyk/apis", None).await;
    assert_eq!(list, json!([]));
}

/// `portcullis-cp config ...` against `cp`, as the CLI runs it.
async fn config_cli(cp: &Cp, args: &[&str]) -> Result<String, String> {
    use clap::Parser;
    let url = format!("http://{}", cp.api_addr);
    let mut argv = vec!["portcullis-cp", "config", args[0]];
    argv.extend([
        "--api-url",
        &url,
        "--admin-secret",
        portcullis_tests::ADMIN_SECRET,
    ]);
    argv.extend(&args[1..]);
    let cli =
        portcullis_control_plane::cli::Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    portcullis_control_plane::cli::run_client(cli.command.unwrap())
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn config_apply_takes_tyk_oas_files_in_apis() {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let upstream = PyPeer::start(HEADER_ECHO, &[]).await;
    let dp = Dp::regional(&cp, "eu").await;
    let dir = std::env::temp_dir().join(format!("portcullis-oas-config-{}", uuid_suffix()));
    std::fs::create_dir_all(dir.join("apis")).unwrap();
    let folder = dir.to_str().unwrap();

    // Without an id a folder file would create a new API on every apply.
    let doc = petstore(&[TOKEN_OPENAPI, TOKEN_EXTENSION], &upstream.url("/"));
    std::fs::write(dir.join("apis/petstore.json"), doc.to_string()).unwrap();
    let e = config_cli(&cp, &["apply", folder]).await.unwrap_err();
    assert!(e.contains("x-tyk-api-gateway.info.id"), "{e}");

    let mut doc = doc;
    doc["x-tyk-api-gateway"]["info"]["id"] = json!("petstore");
    std::fs::write(dir.join("apis/petstore.json"), doc.to_string()).unwrap();
    let applied = config_cli(&cp, &["apply", folder]).await.unwrap();
    assert!(applied.contains("1 change"), "{applied}");
    let again = config_cli(&cp, &["apply", folder]).await.unwrap();
    assert!(again.contains("no changes"), "{again}");
    let (status, view) = cp.call(Method::GET, "/tyk/apis/oas/petstore", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["security"], doc["security"]);
    dp.wait_for_status("/petstore/x", 401).await;
    let key = key_for(&cp, &["petstore"]).await;
    let (status, got) = get(&dp, "/petstore/x", &[("Authorization", &key)]).await;
    assert_eq!((status, got["path"].as_str()), (StatusCode::OK, Some("/x")));
    let _ = std::fs::remove_dir_all(&dir);
}

fn uuid_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
