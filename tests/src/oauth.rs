//! The built-in OAuth 2.0 provider end to end (docs/oauth.md): a control plane, two edges in
//! two regions (each its own Redis prefix), an API with `use_oauth2`, a policy, an OAuth
//! client, and on the other side one Python process (`py/oauth_portal.py`) that is the login
//! portal, the notification webhook and the upstream. The grants are driven by Authlib
//! (`py/oauth_client.py`), an implementation independent of the gateway's, and by a second
//! library, requests-oauthlib (`py/oauth_client_requests_oauthlib.py`).

use std::process::Child;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::idp_server::spawn_python_server;
use crate::pyjwt::run_python;
use crate::{ADMIN_SECRET, Cp, CpOptions, Dp, DpOptions, TestDb, eventually, keyless_api};

const PORTAL: &str = include_str!("py/oauth_portal.py");
const CLIENT: &str = include_str!("py/oauth_client.py");
const REQUESTS_OAUTHLIB: &str = include_str!("py/oauth_client_requests_oauthlib.py");

/// The edges' `--oauth-portal-secret` (never the control plane's admin secret).
pub const PORTAL_SECRET: &str = "test-oauth-portal-secret-0123456789abcdef";
/// The API's `notifications.shared_secret`.
pub const HOOK_SECRET: &str = "test-oauth-hook-shared-secret-0123456789";
/// The OAuth API's id; its listen path is `/oa/`.
pub const API_ID: &str = "oa";
pub const LP: &str = "/oa/";
pub const POLICY_ID: &str = "p-oa";
/// Registered redirect URIs (never contacted: the flow stops at the redirect).
pub const REDIRECT: &str = "http://127.0.0.1:9/callback";
pub const OTHER_REDIRECT: &str = "http://127.0.0.1:9/other";
pub const UNREGISTERED_REDIRECT: &str = "http://127.0.0.1:9/evil";
pub const ALL_GRANTS: &[&str] = &[
    "authorization_code",
    "refresh_token",
    "password",
    "client_credentials",
];
/// A fixed RFC 7636 verifier (43 characters) and its S256 challenge (RFC 7636 appendix B).
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// The login portal, webhook and upstream (one Python `http.server`), killed on drop.
pub struct Side {
    child: Option<Child>,
    pub port: u16,
    http: reqwest::Client,
}

impl Side {
    pub async fn start() -> Self {
        crate::init();
        let (child, port) = tokio::task::spawn_blocking(|| spawn_python_server(PORTAL, &[]))
            .await
            .expect("portal start");
        Self {
            child: Some(child),
            port,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `oauth_meta.auth_login_redirect`.
    pub fn login_url(&self) -> String {
        self.url("/login")
    }

    /// `notifications.oauth_on_keychange_url`.
    pub fn hook_url(&self) -> String {
        self.url("/hook")
    }

    /// The APIs' `target_url`.
    pub fn upstream_url(&self) -> String {
        self.url("/")
    }

    /// Where the portal sends the logged-in user's authorization, and how the webhook answers
    /// (`"hook": {"fail", "fail_status", "hold"}`); the keys given replace those keys (see
    /// `py/oauth_portal.py`).
    pub async fn configure(&self, config: Value) {
        let resp = self
            .http
            .post(self.url("/_config"))
            .json(&config)
            .send()
            .await
            .expect("portal reachable");
        assert!(resp.status().is_success());
    }

    /// Answers every held webhook attempt, and those to come (`"hook": {"hold": true}`).
    pub async fn release_hooks(&self) {
        let resp = self
            .http
            .post(self.url("/_release"))
            .send()
            .await
            .expect("portal reachable");
        assert!(resp.status().is_success());
    }

    /// `{"logins": [...], "hooks": [...], "hook_attempts": [...], "upstream": [...]}`.
    pub async fn seen(&self) -> Value {
        self.http
            .get(self.url("/_seen"))
            .send()
            .await
            .expect("portal reachable")
            .json()
            .await
            .expect("seen is JSON")
    }

    pub async fn hooks(&self) -> Vec<Value> {
        self.seen().await["hooks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The first delivery (a 2xx answer of the webhook) whose body `field` is `value`, once
    /// there is one.
    pub async fn delivery(&self, field: &str, value: &str, what: &str) -> Value {
        eventually(Duration::from_secs(20), what, || async {
            self.hooks()
                .await
                .into_iter()
                .find(|h| h["body"][field] == value)
        })
        .await
    }

    /// Every POST the webhook received, in order: `{"attempt", "secret", "body", "answer"}`
    /// (`answer`: the status sent, or `"held"`; `abandoned` when the sender hung up).
    pub async fn hook_attempts(&self) -> Vec<Value> {
        self.seen().await["hook_attempts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn upstream(&self) -> Vec<Value> {
        self.seen().await["upstream"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs one job of `py/oauth_client.py` (Authlib); returns its JSON result.
pub async fn authlib(job: Value) -> Value {
    let input = serde_json::to_vec(&job).expect("job serialises");
    let out = tokio::task::spawn_blocking(move || run_python(CLIENT, &input))
        .await
        .expect("python task");
    serde_json::from_slice(&out).expect("the client prints JSON")
}

/// Runs one job of `py/oauth_client_requests_oauthlib.py` (requests-oauthlib); returns its
/// JSON result.
pub async fn requests_oauthlib(job: Value) -> Value {
    let input = serde_json::to_vec(&job).expect("job serialises");
    let out = tokio::task::spawn_blocking(move || run_python(REQUESTS_OAUTHLIB, &input))
        .await
        .expect("python task");
    serde_json::from_slice(&out).expect("the client prints JSON")
}

/// An API at [`LP`] using the built-in provider.
pub fn oauth_api(target: &str, grants: &[&str], authorize_types: &[&str], login: &str) -> Value {
    let mut api = keyless_api(API_ID, LP, target);
    api["use_keyless"] = json!(false);
    api["use_oauth2"] = json!(true);
    api["oauth_meta"] = json!({
        "allowed_access_types": grants,
        "allowed_authorize_types": authorize_types,
        "auth_login_redirect": login,
    });
    api
}

/// An OAuth client as the tests use it: its id, its plaintext secret (`None`: public).
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub secret: Option<String>,
    /// `client_secret_basic`, `client_secret_post` or `none`.
    pub auth_method: String,
}

impl Client {
    /// The same client authenticating another way (or with another secret).
    pub fn with(&self, auth_method: &str, secret: Option<&str>) -> Self {
        Self {
            id: self.id.clone(),
            secret: secret.map(str::to_owned),
            auth_method: auth_method.to_owned(),
        }
    }

    /// The client fields of a job.
    pub fn job(&self, op: &str, fields: Value) -> Value {
        let mut job = json!({
            "op": op,
            "client_id": self.id,
            "client_secret": self.secret,
            "auth_method": self.auth_method,
            "redirect_uri": REDIRECT,
        });
        if let (Some(j), Some(f)) = (job.as_object_mut(), fields.as_object()) {
            for (k, v) in f {
                j.insert(k.clone(), v.clone());
            }
        }
        job
    }
}

/// `POST /tyk/oauth/clients/create`; status and body.
pub async fn create_client(cp: &Cp, body: &Value) -> (StatusCode, Value) {
    cp.call(Method::POST, "/tyk/oauth/clients/create", Some(body))
        .await
}

/// How a [`World`] is set up.
#[derive(Clone)]
pub struct Setup {
    pub cp: CpOptions,
    /// Options of both edges (their token, Redis and prefix are set by the world).
    pub dp: DpOptions,
    pub grants: Vec<&'static str>,
    pub authorize_types: Vec<&'static str>,
    /// `notifications` to the side's webhook with [`HOOK_SECRET`].
    pub notifications: bool,
    /// The client is public (`token_endpoint_auth_method: none`).
    pub public_client: bool,
    /// The portal authorizes at the edge (`{lp}tyk/oauth/authorize-client/`, portal secret)
    /// instead of the control plane (`/tyk/oauth/authorize-client/`, admin secret, `api_id`).
    pub portal_at_edge: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            cp: CpOptions::default(),
            dp: DpOptions {
                oauth_portal_secret: Some(PORTAL_SECRET.into()),
                ..Default::default()
            },
            grants: ALL_GRANTS.to_vec(),
            authorize_types: vec!["code", "token"],
            notifications: false,
            public_client: false,
            portal_at_edge: false,
        }
    }
}

/// A control plane, edges in regions `eu` and `us`, the OAuth API and one client.
pub struct World {
    pub side: Side,
    pub eu: Dp,
    pub us: Dp,
    pub cp: Cp,
    pub db: TestDb,
    /// The edges' Redis prefixes (`eu`, `us`).
    pub prefixes: [String; 2],
    pub client: Client,
    pub setup: Setup,
}

impl World {
    pub async fn start() -> Self {
        Self::with(Setup::default()).await
    }

    pub async fn with(setup: Setup) -> Self {
        let db = TestDb::new().await;
        let cp = Cp::start_with(&db.url, setup.cp.clone())
            .await
            .expect("control plane starts");
        let side = Side::start().await;
        let mut api = oauth_api(
            &side.upstream_url(),
            &setup.grants,
            &setup.authorize_types,
            &side.login_url(),
        );
        if setup.notifications {
            api["notifications"] = json!({
                "shared_secret": HOOK_SECRET,
                "oauth_on_keychange_url": side.hook_url(),
            });
        }
        cp.create_api(&api).await;
        let (status, body) = cp
            .call(
                Method::POST,
                "/tyk/policies",
                Some(&crate::idp_stack::policy(POLICY_ID, &[API_ID], 0, 0)),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "create policy: {body}");
        let mut body = json!({
            "api_id": API_ID,
            "redirect_uri": format!("{REDIRECT};{OTHER_REDIRECT}"),
            "policy_id": POLICY_ID,
            "meta_data": {"tenant": "t1"},
            "description": "e2e client",
        });
        if setup.public_client {
            body["token_endpoint_auth_method"] = json!("none");
        }
        let (status, created) = create_client(&cp, &body).await;
        assert_eq!(status, StatusCode::OK, "create OAuth client: {created}");
        let id = created["client_id"]
            .as_str()
            .unwrap_or_else(|| panic!("client_id in {created}"))
            .to_owned();
        let client = if setup.public_client {
            Client {
                id,
                secret: None,
                auth_method: "none".into(),
            }
        } else {
            let secret = created["secret"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| panic!("the plaintext secret in {created}"))
                .to_owned();
            Client {
                id,
                secret: Some(secret),
                auth_method: "client_secret_basic".into(),
            }
        };
        let run = uuid::Uuid::new_v4().simple().to_string();
        let prefixes = [format!("e2e:{run}:eu:"), format!("e2e:{run}:us:")];
        let mut edges = Vec::new();
        for prefix in &prefixes {
            let opts = DpOptions {
                token: Some(cp.token("default").await),
                redis_url: Some(crate::redis_url()),
                redis_prefix: Some(prefix.clone()),
                ..setup.dp.clone()
            };
            edges.push(Dp::start(&cp, opts).await.expect("gateway starts"));
        }
        let us = edges.pop().expect("two edges");
        let eu = edges.pop().expect("two edges");
        if setup.portal_at_edge {
            side.configure(json!({
                "authorize_client_url": eu.url(&format!("{LP}tyk/oauth/authorize-client/")),
                "secret": PORTAL_SECRET,
            }))
            .await;
        } else {
            side.configure(json!({
                "authorize_client_url": format!("http://{}/tyk/oauth/authorize-client/", cp.api_addr),
                "secret": ADMIN_SECRET,
                "api_id": API_ID,
            }))
            .await;
        }
        let world = Self {
            side,
            eu,
            us,
            cp,
            db,
            prefixes,
            client,
            setup,
        };
        for dp in world.edges() {
            world.wait_for_client(dp).await;
        }
        world
    }

    pub fn edges(&self) -> [&Dp; 2] {
        [&self.eu, &self.us]
    }

    /// Waits until `dp` holds the API and the client: its `/oauth/authorize` redirects.
    pub async fn wait_for_client(&self, dp: &Dp) {
        let http = no_redirects();
        let url = format!(
            "{}?response_type=code&client_id={}&redirect_uri={}&code_challenge={CHALLENGE}&code_challenge_method=S256&state=ready",
            dp.url(&format!("{LP}oauth/authorize")),
            enc(&self.client.id),
            enc(REDIRECT),
        );
        eventually(
            Duration::from_secs(20),
            "the edge serving the OAuth API and its client",
            || async {
                let resp = http.get(&url).send().await.ok()?;
                (resp.status() == StatusCode::TEMPORARY_REDIRECT).then_some(())
            },
        )
        .await;
    }

    pub fn authorize_url(dp: &Dp) -> String {
        dp.url(&format!("{LP}oauth/authorize"))
    }

    pub fn token_url(dp: &Dp) -> String {
        dp.url(&format!("{LP}oauth/token"))
    }

    pub fn revoke_url(dp: &Dp) -> String {
        dp.url(&format!("{LP}oauth/revoke"))
    }

    /// The login step through Authlib and the portal; the client's own settings, PKCE when
    /// `verifier` is given. Returns the whole result (see `py/oauth_client.py`).
    pub async fn authorize_as(&self, client: &Client, dp: &Dp, fields: Value) -> Value {
        authlib(client.job(
            "authorize",
            merged(json!({"authorize_url": Self::authorize_url(dp)}), fields),
        ))
        .await
    }

    /// A code for the world's client through edge `dp` (PKCE with [`VERIFIER`] when `pkce`).
    /// Returns the redirect (with `code` and `state`) and the state.
    pub async fn code(&self, dp: &Dp, pkce: bool) -> (String, String) {
        let fields = if pkce {
            json!({"code_verifier": VERIFIER})
        } else {
            json!({})
        };
        let got = self.authorize_as(&self.client, dp, fields).await;
        assert_eq!(got["ok"], true, "the login step: {got:#}");
        (
            got["redirect"].as_str().expect("redirect").to_owned(),
            got["state"].as_str().expect("state").to_owned(),
        )
    }

    /// `grant_type` at `dp`'s token endpoint through Authlib, as `client`.
    pub async fn token_as(&self, client: &Client, dp: &Dp, grant: &str, fields: Value) -> Value {
        authlib(client.job(
            "token",
            merged(
                json!({"token_url": Self::token_url(dp), "grant_type": grant}),
                fields,
            ),
        ))
        .await
    }

    pub async fn token(&self, dp: &Dp, grant: &str, fields: Value) -> Value {
        self.token_as(&self.client, dp, grant, fields).await
    }

    /// Redeems the code in `redirect` at `dp` (PKCE verifier when `pkce`).
    pub async fn redeem(&self, dp: &Dp, redirect: &str, state: &str, pkce: bool) -> Value {
        self.token(
            dp,
            "authorization_code",
            json!({
                "authorization_response": redirect,
                "state": state,
                "code_verifier": pkce.then_some(VERIFIER),
            }),
        )
        .await
    }

    /// A code, redeemed at `eu`: the token response (asserted 200).
    pub async fn tokens(&self) -> Value {
        let (redirect, state) = self.code(&self.eu, true).await;
        let got = self.redeem(&self.eu, &redirect, &state, true).await;
        assert_token(&got);
        got["token"].clone()
    }

    pub async fn refresh(&self, dp: &Dp, refresh_token: &str) -> Value {
        self.token(dp, "refresh_token", json!({"refresh_token": refresh_token}))
            .await
    }

    /// RFC 7009 through Authlib's `revoke_token`.
    pub async fn revoke(&self, dp: &Dp, token: &str, hint: Option<&str>) -> Value {
        authlib(self.client.job(
            "revoke",
            json!({"revoke_url": Self::revoke_url(dp), "token": token, "token_type_hint": hint}),
        ))
        .await
    }

    /// A whole flow `op` of `py/oauth_client_requests_oauthlib.py` as the world's client.
    pub async fn requests_oauthlib(&self, op: &str, fields: Value) -> Value {
        requests_oauthlib(merged(
            json!({
                "op": op,
                "client_id": self.client.id,
                "client_secret": self.client.secret,
                "redirect_uri": REDIRECT,
            }),
            fields,
        ))
        .await
    }

    /// `{lp}resource?n=1` at `dp` (the resource [`World::bearer`] calls).
    pub fn resource_url(dp: &Dp) -> String {
        dp.url(&format!("{LP}resource?n=1"))
    }

    /// A bearer call to `{lp}resource` at `dp`: status and JSON body.
    pub async fn bearer(&self, dp: &Dp, token: &str) -> (StatusCode, Value) {
        crate::idp_stack::get(
            dp,
            &format!("{LP}resource?n=1"),
            &[("Authorization", &format!("Bearer {token}"))],
        )
        .await
    }

    /// Waits until `token` is refused at every edge with 403 `message`.
    pub async fn wait_refused(&self, token: &str, message: &str) {
        for (dp, region) in [(&self.eu, "eu"), (&self.us, "us")] {
            let got = eventually(
                Duration::from_secs(15),
                &format!("the token refused at the {region} edge"),
                || async {
                    let got = self.bearer(dp, token).await;
                    (got.0 != StatusCode::OK).then_some(got)
                },
            )
            .await;
            crate::idp_stack::assert_error(&got, 403, message);
        }
    }

    /// A basic-auth user (the resource owner of the password grant) with rights to the API.
    pub async fn basic_user(&self, user: &str, password: &str) {
        let (status, body) = self
            .cp
            .call(
                Method::POST,
                &format!("/tyk/keys/{user}"),
                Some(&json!({
                    "access_rights": {API_ID: {"api_id": API_ID, "api_name": API_ID, "versions": ["Default"]}},
                    "basic_auth_data": {"password": password},
                })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "create basic-auth user: {body}");
    }
}

/// A reqwest client that does not follow redirects (to see `/oauth/authorize`'s own answer).
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn merged(mut a: Value, b: Value) -> Value {
    if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
    a
}

/// A token endpoint success: 200, an RFC 6749 5.1 body, `Cache-Control: no-store`.
#[track_caller]
pub fn assert_token(got: &Value) {
    assert_eq!(
        (got["ok"].as_bool(), got["status"].as_u64()),
        (Some(true), Some(200)),
        "a token response: {got:#}"
    );
    let body = &got["body"];
    let token = body["access_token"].as_str().unwrap_or_default();
    assert_eq!(token.len(), 43, "32 random bytes, base64url: {body}");
    assert!(
        body["token_type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer")),
        "{body}"
    );
    assert!(body["expires_in"].as_i64().is_some_and(|e| e > 0), "{body}");
    assert_no_store(got);
}

/// `Cache-Control: no-store` and `Pragma: no-cache` on a token endpoint answer.
#[track_caller]
pub fn assert_no_store(got: &Value) {
    let h = &got["headers"];
    assert!(
        h["cache-control"]
            .as_str()
            .is_some_and(|v| v.contains("no-store")),
        "Cache-Control: no-store: {got:#}"
    );
    assert_eq!(h["pragma"], "no-cache", "{got:#}");
}

/// An OAuth error answer: `status`, body `{"error": error, "error_description": description}`
/// (any description when `None`), no-store headers.
#[track_caller]
pub fn assert_oauth_error(got: &Value, status: u16, error: &str, description: Option<&str>) {
    assert_eq!(
        (got["status"].as_u64(), got["body"]["error"].as_str()),
        (Some(u64::from(status)), Some(error)),
        "whole answer: {got:#}"
    );
    let d = got["body"]["error_description"].as_str();
    assert!(
        d.is_some_and(|d| !d.is_empty()),
        "error_description: {got:#}"
    );
    if let Some(want) = description {
        assert_eq!(d, Some(want), "whole answer: {got:#}");
    }
    if let Some(ok) = got.get("ok") {
        assert_eq!(ok, false, "Authlib saw an error: {got:#}");
    }
}
