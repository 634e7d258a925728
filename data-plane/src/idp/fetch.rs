//! HTTP calls to identity providers: `GET` of a JSON document and `POST` of a form, over
//! HTTP/1.1 (or h2 when a TLS provider offers it). A call is bounded as a whole by the fetch
//! timeout and its body by `max_body`; a status other than 2xx is an error (redirects are not
//! followed: a provider moving its keys elsewhere is a configuration change, not something a
//! response may decide). Each host has a circuit breaker and a cap on calls in flight.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::{ClientConfig, RootCertStore};

use super::{Idp, IdpConfig, IdpError, What, Why};

/// How long a call waits for one of its host's slots (`breaker::IN_FLIGHT_PER_HOST`).
pub(super) const BUSY_WAIT: Duration = Duration::from_millis(500);
/// Longer URLs are refused before parsing.
const MAX_URL: usize = 8 * 1024;
const USER_AGENT: &str = concat!("portcullis-gateway/", env!("CARGO_PKG_VERSION"));

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub(super) struct Fetcher {
    /// `None` when no TLS configuration could be built: every call then fails as unavailable.
    client: Option<HttpsClient>,
}

fn tls_config(cfg: &IdpConfig) -> Result<ClientConfig, rustls::Error> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for der in &cfg.extra_roots {
        if let Err(e) = roots.add(der.clone()) {
            tracing::warn!(error = %e, "ignored an extra CA for identity providers");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Fetcher {
    pub(super) fn new(cfg: &IdpConfig) -> Self {
        let client = match tls_config(cfg) {
            Ok(tls) => {
                let mut http = HttpConnector::new();
                http.set_nodelay(true);
                http.enforce_http(false);
                http.set_connect_timeout(Some(cfg.fetch_timeout));
                http.set_keepalive(Some(Duration::from_secs(60)));
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http()
                    .enable_all_versions()
                    .wrap_connector(http);
                Some(
                    Client::builder(TokioExecutor::new())
                        .pool_idle_timeout(Duration::from_secs(60))
                        .pool_max_idle_per_host(8)
                        .build(https),
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "no TLS client for identity providers");
                None
            }
        };
        Self { client }
    }
}

/// The URL parsed, and the breaker key of its host (`scheme://authority`, lower case).
pub(super) fn check_url(url: &str) -> Result<(Uri, String), IdpError> {
    if url.len() > MAX_URL {
        return Err(IdpError::BadUrl);
    }
    let uri: Uri = url.parse().map_err(|_| IdpError::BadUrl)?;
    let scheme = uri.scheme_str().ok_or(IdpError::BadUrl)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(IdpError::BadUrl);
    }
    let authority = uri.authority().ok_or(IdpError::BadUrl)?;
    // Credentials in a URL would end up in logs and Host headers; providers take them as a form.
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(IdpError::BadUrl);
    }
    let host = format!("{scheme}://{authority}").to_ascii_lowercase();
    Ok((uri, host))
}

impl Idp {
    /// `GET url`, expecting JSON.
    pub(super) async fn get(&self, url: &str) -> Result<Bytes, IdpError> {
        self.call(url, None).await
    }

    /// `POST url` with an `application/x-www-form-urlencoded` body.
    pub(super) async fn post_form(&self, url: &str, form: String) -> Result<Bytes, IdpError> {
        self.call(url, Some(form)).await
    }

    /// `POST url` with a form, for a client's own request (the split-token login): a 4xx
    /// answer is the provider's word to that client and comes back with its status.
    pub(crate) async fn post_form_for_client(
        &self,
        url: &str,
        form: String,
    ) -> Result<(u16, Bytes), IdpError> {
        self.call_status(url, Some(form), true, None).await
    }

    /// `POST url` with a form and, when given, an `Authorization` header: the token request
    /// of upstream OAuth (docs/upstream-auth.md), `client_secret_basic` or not.
    pub(crate) async fn post_form_authorized(
        &self,
        url: &str,
        form: String,
        authorization: Option<&str>,
    ) -> Result<Bytes, IdpError> {
        self.call_status(url, Some(form), false, authorization)
            .await
            .map(|(_, body)| body)
    }

    async fn call(&self, url: &str, form: Option<String>) -> Result<Bytes, IdpError> {
        self.call_status(url, form, false, None)
            .await
            .map(|(_, body)| body)
    }

    async fn call_status(
        &self,
        url: &str,
        form: Option<String>,
        client_errors: bool,
        authorization: Option<&str>,
    ) -> Result<(u16, Bytes), IdpError> {
        let (uri, host) = check_url(url)?;
        let Some(client) = &self.fetcher.client else {
            return self.stats.fetched(Err(IdpError::Unavailable(Why::Tls)));
        };
        let Some(permit) = self.breakers.admit(&host) else {
            return self
                .stats
                .fetched(Err(IdpError::Unavailable(Why::BreakerOpen)));
        };
        let slots = permit.slots.clone();
        let Ok(Ok(_slot)) = tokio::time::timeout(BUSY_WAIT, slots.acquire_owned()).await else {
            // Not an outage of the host: the breaker stays as it is.
            drop(permit);
            return self.stats.fetched(Err(IdpError::Unavailable(Why::Busy)));
        };
        let mut builder = Request::builder()
            .uri(uri)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, USER_AGENT);
        if let Some(a) = authorization {
            builder = builder.header(header::AUTHORIZATION, a);
        }
        let request = match form {
            Some(form) => builder
                .method(Method::POST)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(form))),
            None => builder.method(Method::GET).body(Full::new(Bytes::new())),
        };
        let Ok(request) = request else {
            drop(permit);
            return Err(IdpError::BadUrl);
        };
        let max_body = self.cfg.max_body;
        let answer = match tokio::time::timeout(self.cfg.fetch_timeout, async {
            let response = client
                .request(request)
                .await
                .map_err(|_| IdpError::Unavailable(Why::Connect))?;
            let status = response.status();
            if status.is_server_error() {
                return Err(IdpError::Unavailable(Why::ServerError(status.as_u16())));
            }
            if !(status.is_success() || client_errors && status.is_client_error()) {
                return Err(IdpError::Refused(status.as_u16()));
            }
            read_capped(response.into_body(), max_body)
                .await
                .map(|body| (status.as_u16(), body))
        })
        .await
        {
            Ok(answer) => answer,
            Err(_) => Err(IdpError::Unavailable(Why::Timeout)),
        };
        let outage = answer.as_ref().is_err_and(IdpError::is_outage);
        if self.breakers.report(permit, outage) {
            self.stats.note_breaker_open(&host);
        }
        self.stats.fetched(answer)
    }
}

/// The body, refusing one longer than `max` without reading past it.
async fn read_capped(mut body: hyper::body::Incoming, max: usize) -> Result<Bytes, IdpError> {
    use http_body::Body;
    let too_large = IdpError::BadResponse(What::TooLarge);
    // A declared length over the limit is refused before reading anything.
    if body.size_hint().lower() > u64::try_from(max).unwrap_or(u64::MAX) {
        return Err(too_large);
    }
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| IdpError::Unavailable(Why::Connect))?;
        if let Ok(data) = frame.into_data() {
            if out.len().saturating_add(data.len()) > max {
                return Err(too_large);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(out))
}
