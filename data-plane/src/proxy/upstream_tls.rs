//! TLS from the edge to `https` upstreams: which client certificate to present, which
//! certificates to trust, which public keys to pin and which TLS versions to speak
//! (docs/certificates.md, "Upstream TLS").
//!
//! What an API asks for is parsed with its route (`ApiTls`). What it gets also depends on the
//! gateway's flags and on the certificate store, so it is resolved once per routing table, on
//! the first TLS request after a swap (`TableTls`). Routes whose settings resolve to the same
//! material share one rustls config and one connection pool (`UpstreamTls`); that pool outlives
//! table swaps that leave the material alone, so unrelated configuration changes do not cost
//! every TLS upstream a new handshake.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis_proto::model::ApiSpec;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, OtherError,
    RootCertStore, SignatureScheme,
};
use sha2::{Digest, Sha256};

use super::UpstreamClient;
use crate::certs::CertStore;
use crate::router::Route;
use crate::shared::Shared;

/// Tyk's numbers for TLS versions (`proxy.transport.ssl_min_version`).
const TLS12: u16 = 771;
const TLS13: u16 = 772;

/// A host pattern of `upstream_certificates` and `pinned_public_keys`: `*`, `*.domain`,
/// `host`, the last two optionally with `:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    name: PatternName,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternName {
    Any,
    /// `*.domain`: exactly one label in front of `domain`.
    OneLabelUnder(String),
    Exact(String),
}

/// Splits `host[:port]` (`[v6][:port]` keeps its brackets, as `Authority::host` does).
fn split_port(s: &str) -> Option<(&str, Option<u16>)> {
    if s.starts_with('[') {
        let end = s.find(']')?;
        let (host, after) = s.split_at(end + 1);
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((host, port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((s, None)),
    }
}

impl HostPattern {
    pub fn parse(pattern: &str) -> Option<Self> {
        if pattern == "*" {
            return Some(Self {
                name: PatternName::Any,
                port: None,
            });
        }
        let (host, port) = split_port(pattern)?;
        let host = host.to_ascii_lowercase();
        let name = match host.strip_prefix("*.") {
            Some(domain) => PatternName::OneLabelUnder(domain.to_owned()),
            None => PatternName::Exact(host),
        };
        let bare = match &name {
            PatternName::OneLabelUnder(h) | PatternName::Exact(h) => h,
            PatternName::Any => return None,
        };
        if bare.is_empty() || bare.contains('*') || bare.bytes().any(|b| b.is_ascii_whitespace()) {
            return None;
        }
        Some(Self { name, port })
    }

    /// How specific a match on `host` (lower case) and `port` is, higher winning:
    /// `*` < `*.domain` < `*.domain:port` < `host` < `host:port`; `None` when it does not match.
    fn rank(&self, host: &str, port: u16) -> Option<u8> {
        if self.port.is_some_and(|p| p != port) {
            return None;
        }
        let with_port = u8::from(self.port.is_some());
        match &self.name {
            PatternName::Any => Some(0),
            PatternName::OneLabelUnder(domain) => host
                .split_once('.')
                .filter(|(label, rest)| !label.is_empty() && rest == domain)
                .map(|_| 1 + with_port),
            PatternName::Exact(h) => (h == host).then_some(3 + with_port),
        }
    }
}

/// The value of the most specific pattern matching `host:port`.
fn best<'a, V: ?Sized>(
    entries: impl IntoIterator<Item = (&'a HostPattern, &'a V)>,
    host: &str,
    port: u16,
) -> Option<&'a V> {
    let mut found: Option<(u8, &V)> = None;
    for (pattern, value) in entries {
        if let Some(rank) = pattern.rank(host, port)
            && found.is_none_or(|(r, _)| rank > r)
        {
            found = Some((rank, value));
        }
    }
    found.map(|(_, v)| v)
}

fn ids(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Gateway-wide upstream TLS settings (`--upstream-certificate`, `--pinned-public-key`), Tyk's
/// `security.certificates.upstream` and `security.pinned_public_keys`.
#[derive(Debug, Clone, Default)]
pub struct GatewayTls {
    upstream_certificates: Vec<(HostPattern, String)>,
    pinned_public_keys: Vec<(HostPattern, Vec<String>)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GatewayTlsError {
    #[error(
        "{flag} {value:?}: expected PATTERN={what}, PATTERN being *, HOST or *.DOMAIN, optionally with :PORT"
    )]
    Malformed {
        flag: &'static str,
        value: String,
        what: &'static str,
    },
}

impl GatewayTls {
    /// From `PATTERN=CERT_ID` and `PATTERN=ID[,ID…]` values.
    pub fn parse(
        upstream_certificates: &[String],
        pinned_public_keys: &[String],
    ) -> Result<Self, GatewayTlsError> {
        fn entry(
            flag: &'static str,
            what: &'static str,
            value: &str,
            one_id: bool,
        ) -> Result<(HostPattern, Vec<String>), GatewayTlsError> {
            let malformed = || GatewayTlsError::Malformed {
                flag,
                value: value.to_owned(),
                what,
            };
            let (pattern, list) = value.split_once('=').ok_or_else(malformed)?;
            let pattern = HostPattern::parse(pattern.trim()).ok_or_else(malformed)?;
            let list = ids(list);
            if list.is_empty()
                || (one_id && list.len() != 1)
                || list
                    .iter()
                    .any(|id| id.contains(char::is_whitespace) || id.contains('/'))
            {
                return Err(malformed());
            }
            Ok((pattern, list))
        }
        let mut out = Self::default();
        for v in upstream_certificates {
            let (pattern, mut list) = entry("--upstream-certificate", "CERT_ID", v, true)?;
            out.upstream_certificates
                .push((pattern, list.pop().unwrap_or_default()));
        }
        for v in pinned_public_keys {
            out.pinned_public_keys
                .push(entry("--pinned-public-key", "ID[,ID...]", v, false)?);
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.upstream_certificates.is_empty() && self.pinned_public_keys.is_empty()
    }
}

/// What one API's definition asks of the TLS to its upstream, matched against the upstream's
/// host once, when the route is built.
#[derive(Debug)]
pub struct ApiTls {
    /// The upstream's host (lower case, IPv6 in brackets) and port (443 when the URL has none).
    host: String,
    port: u16,
    skip_verify: bool,
    min_version: u16,
    max_version: u16,
    ca_ids: Vec<String>,
    /// `preserve_host_header` needs a Host that differs from the target, which HTTP/2 forbids
    /// (its :authority must name the target): such APIs offer only http/1.1.
    offer_h2: bool,
    /// `None`: `upstream_certificates_disabled`, no client certificate at all.
    client_cert: Option<Choice<String>>,
    /// `None`: `certificate_pinning_disabled`, no pinning at all.
    pins: Option<Choice<Vec<String>>>,
}

/// The API's own choice, if one of its patterns matched; the gateway-wide one otherwise.
#[derive(Debug)]
struct Choice<T>(Option<T>);

impl ApiTls {
    /// `None` for plain-HTTP upstreams, so they carry nothing of this.
    pub fn of(spec: &ApiSpec, scheme: &Scheme, authority: &Authority) -> Option<Arc<Self>> {
        if *scheme != Scheme::HTTPS {
            return None;
        }
        let host = authority.host().to_ascii_lowercase();
        let port = authority.port_u16().unwrap_or(443);
        // Definitions are validated: a pattern that does not parse is skipped, not guessed at.
        let parsed =
            |map: &std::collections::BTreeMap<String, String>| -> Vec<(HostPattern, String)> {
                map.iter()
                    .filter_map(|(p, v)| Some((HostPattern::parse(p)?, v.clone())))
                    .collect()
            };
        let certs = parsed(&spec.upstream_certificates);
        let pins = parsed(&spec.pinned_public_keys);
        let t = &spec.proxy.transport;
        Some(Arc::new(Self {
            client_cert: (!spec.upstream_certificates_disabled).then(|| {
                Choice(
                    best(certs.iter().map(|(p, v)| (p, v.as_str())), &host, port)
                        .map(str::to_owned),
                )
            }),
            pins: (!spec.certificate_pinning_disabled).then(|| {
                Choice(best(pins.iter().map(|(p, v)| (p, v.as_str())), &host, port).map(ids))
            }),
            host,
            port,
            skip_verify: t.ssl_insecure_skip_verify,
            min_version: t.ssl_min_version,
            max_version: t.ssl_max_version,
            ca_ids: t.ssl_ca_certificates.clone(),
            offer_h2: !spec.proxy.preserve_host_header,
        }))
    }
}

/// Why a request to a TLS upstream failed; the text is what the client reads (a fixed
/// sentence: nothing about the upstream's certificate or the gateway's keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TlsFailure {
    #[error("Upstream certificate is not trusted")]
    Untrusted,
    #[error("Upstream certificate does not match the upstream host")]
    NameMismatch,
    #[error("Upstream certificate has expired or is not valid yet")]
    Expired,
    #[error("Upstream public key does not match the pinned public keys")]
    NotPinned,
    #[error("Upstream does not support the allowed TLS versions")]
    Version,
    #[error("Upstream refused the TLS handshake")]
    Refused,
    #[error("TLS to the upstream is misconfigured on the gateway")]
    Misconfigured,
    #[error("TLS handshake with the upstream failed")]
    Handshake,
}

/// Marks the pinning refusal among rustls's certificate errors.
#[derive(Debug)]
struct NotPinned;

impl fmt::Display for NotPinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the public key is not among the pinned public keys")
    }
}

impl std::error::Error for NotPinned {}

fn failure_of(e: &rustls::Error) -> TlsFailure {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::NameMismatch
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsFailure::Expired,
            CertificateError::Other(OtherError(inner)) if inner.is::<NotPinned>() => {
                TlsFailure::NotPinned
            }
            _ => TlsFailure::Untrusted,
        },
        E::PeerIncompatible(_) | E::AlertReceived(AlertDescription::ProtocolVersion) => {
            TlsFailure::Version
        }
        E::AlertReceived(_) => TlsFailure::Refused,
        _ => TlsFailure::Handshake,
    }
}

fn find_tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(t) = e.downcast_ref::<rustls::Error>() {
        return Some(t);
    }
    // `io::Error::source` skips its own payload, which is where tokio-rustls puts the cause.
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        && let Some(t) = find_tls_error(inner)
    {
        return Some(t);
    }
    e.source().and_then(find_tls_error)
}

/// The TLS failure behind an upstream request error, with rustls's own words for the log.
pub fn classify(e: &(dyn std::error::Error + 'static)) -> Option<(TlsFailure, String)> {
    find_tls_error(e).map(|t| (failure_of(t), t.to_string()))
}

/// sha256 of a certificate's SubjectPublicKeyInfo DER, what `StoreCert::spki_sha256` holds.
fn spki_sha256(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(Sha256::digest(parsed.public_key().raw).into())
}

/// webpki chain and name verification (unless skip-verify), then the pin check. The handshake
/// signature is always checked, so a pin also proves the upstream holds the pinned key.
#[derive(Debug)]
struct UpstreamVerifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    pins: Option<Vec<[u8; 32]>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        if let Some(pins) = &self.pins {
            let spki = spki_sha256(end_entity).ok_or(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            ))?;
            if !pins.contains(&spki) {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(NotPinned)),
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client certificate chosen for this upstream; the key never leaves the store's
/// `CertifiedKey`.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Trust {
    WebRoots,
    /// The fingerprints of the API's CAs, sorted.
    Cas(Vec<[u8; 32]>),
    /// `ssl_insecure_skip_verify`.
    Anything,
}

/// Everything that makes two upstream TLS configs differ: equal keys share a config and pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TlsKey {
    trust: Trust,
    pins: Option<Vec<[u8; 32]>>,
    /// Fingerprint of the client certificate's leaf.
    client: Option<[u8; 32]>,
    min_version: u16,
    max_version: u16,
    offer_h2: bool,
}

/// A resolved route: the key plus the material to build its config from.
struct Wanted {
    key: TlsKey,
    cas: Vec<CertificateDer<'static>>,
    client: Option<Arc<CertifiedKey>>,
}

/// One rustls config and the pooled client using it.
pub struct TlsClient {
    pub(super) client: UpstreamClient,
    /// HTTP/1.1 only, for `Upgrade` requests: over h2 the upgrade headers would be dropped.
    pub(super) upgrades: UpstreamClient,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsClient")
    }
}

type Resolved = Result<Arc<TlsClient>, TlsFailure>;

/// The TLS clients of one routing table's routes, by route address (the table keeps its routes
/// alive, so an address names one route for the table's lifetime).
#[derive(Default)]
pub struct TableTls {
    by_route: OnceLock<HashMap<usize, Resolved>>,
}

impl fmt::Debug for TableTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableTls")
            .field("resolved", &self.by_route.get().map(HashMap::len))
            .finish()
    }
}

/// The pooled clients for TLS upstreams, shared by every client connection.
pub struct UpstreamTls {
    gateway: GatewayTls,
    provider: Arc<CryptoProvider>,
    web_roots: Arc<WebPkiServerVerifier>,
    clients: Mutex<HashMap<TlsKey, Arc<TlsClient>>>,
    shared: Arc<Shared>,
}

/// Upstream TCP connections, plain and under TLS: nodelay, keepalive and the connect timeout.
pub(super) fn http_connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_keepalive(Some(Duration::from_secs(60)));
    http.set_connect_timeout(Some(super::upstream::CONNECT_TIMEOUT));
    http
}

/// Pool settings, as the plain client's (`Proxy::new`).
fn client_builder() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024);
    builder
}

impl UpstreamTls {
    pub fn new(shared: Arc<Shared>, gateway: GatewayTls) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let web_roots =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(Self {
            gateway,
            provider,
            web_roots,
            clients: Mutex::default(),
            shared,
        })
    }

    pub fn set_gateway(&mut self, gateway: GatewayTls) {
        self.gateway = gateway;
    }

    /// The client for an `https` route of the current table.
    pub fn client_for(&self, route: &Arc<Route>) -> Resolved {
        let Some(api) = &route.upstream_tls else {
            return Err(TlsFailure::Misconfigured);
        };
        let table = self.shared.table.load();
        let by_route = table.upstream_tls.by_route.get_or_init(|| {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            let mut kept = HashMap::new();
            let resolved = table
                .routes()
                .filter_map(|r| {
                    let api = r.upstream_tls.as_ref()?;
                    let res = self.resolve(&r.api_id, api, &table.certs, &clients, &mut kept);
                    Some((Arc::as_ptr(r).addr(), res))
                })
                .collect();
            // Configs no route of the new table uses go, with their idle connections.
            *clients = kept;
            resolved
        });
        if let Some(res) = by_route.get(&Arc::as_ptr(route).addr()) {
            return res.clone();
        }
        // The table was swapped between routing and forwarding: this route is not in it.
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let mut new = HashMap::new();
        let res = self.resolve(&route.api_id, api, &table.certs, &clients, &mut new);
        clients.extend(new);
        res
    }

    /// Resolves one route's settings against the store, reusing a client from `old` or `new`
    /// with the same key and adding the one used to `new`.
    fn resolve(
        &self,
        api_id: &str,
        api: &ApiTls,
        store: &CertStore,
        old: &HashMap<TlsKey, Arc<TlsClient>>,
        new: &mut HashMap<TlsKey, Arc<TlsClient>>,
    ) -> Resolved {
        let wanted = self.wanted(api_id, api, store).map_err(|reason| {
            tracing::warn!(api_id, %reason, "upstream TLS settings cannot be used: requests to this API are refused with 502");
            TlsFailure::Misconfigured
        })?;
        if let Some(c) = new.get(&wanted.key).or_else(|| old.get(&wanted.key)) {
            let c = c.clone();
            new.insert(wanted.key, c.clone());
            return Ok(c);
        }
        let client = Arc::new(self.build(&wanted).map_err(|e| {
            tracing::warn!(api_id, error = %e, "upstream TLS config cannot be built: requests to this API are refused with 502");
            TlsFailure::Misconfigured
        })?);
        new.insert(wanted.key, client.clone());
        Ok(client)
    }

    fn wanted(&self, api_id: &str, api: &ApiTls, store: &CertStore) -> Result<Wanted, String> {
        let g = &self.gateway;
        let cert_id = api.client_cert.as_ref().and_then(|Choice(own)| {
            own.clone().or_else(|| {
                best(
                    g.upstream_certificates.iter().map(|(p, v)| (p, v)),
                    &api.host,
                    api.port,
                )
                .cloned()
            })
        });
        let mut client = None;
        if let Some(id) = &cert_id {
            // As Tyk: a certificate that is not here (yet) is not presented; the upstream
            // decides whether it serves without one.
            match store.get(id) {
                Some(c) if c.certified_key.is_some() => {
                    client = c.certified_key.clone().map(|k| (c.fingerprint, k));
                }
                Some(_) => tracing::warn!(
                    api_id,
                    cert_id = %id,
                    "upstream certificate has no private key in the store: connecting without a client certificate"
                ),
                None => tracing::warn!(
                    api_id,
                    cert_id = %id,
                    "upstream certificate is not in the certificate store: connecting without a client certificate"
                ),
            }
        }
        let pin_ids = api.pins.as_ref().and_then(|Choice(own)| {
            own.clone().or_else(|| {
                best(
                    g.pinned_public_keys.iter().map(|(p, v)| (p, v)),
                    &api.host,
                    api.port,
                )
                .cloned()
            })
        });
        let pins = match pin_ids {
            None => None,
            Some(ids) => {
                // Unlike Tyk, pins that are all missing refuse the upstream rather than
                // turning pinning off.
                let mut spkis: Vec<[u8; 32]> = ids
                    .iter()
                    .filter_map(|id| store.get(id).map(|c| c.spki_sha256))
                    .collect();
                if spkis.is_empty() {
                    return Err(format!(
                        "none of the pinned public keys {} is in the certificate store",
                        ids.join(",")
                    ));
                }
                spkis.sort_unstable();
                spkis.dedup();
                Some(spkis)
            }
        };
        let (trust, cas) = if api.skip_verify {
            (Trust::Anything, Vec::new())
        } else if api.ca_ids.is_empty() {
            (Trust::WebRoots, Vec::new())
        } else {
            let mut found: Vec<_> = api
                .ca_ids
                .iter()
                .filter_map(|id| store.get(id))
                .filter_map(|c| Some((c.fingerprint, c.chain.first()?.clone())))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "none of proxy.transport.ssl_ca_certificates {} is a certificate in the certificate store",
                    api.ca_ids.join(",")
                ));
            }
            found.sort_unstable_by_key(|a| a.0);
            found.dedup_by(|a, b| a.0 == b.0);
            let (prints, ders) = found.into_iter().unzip();
            (Trust::Cas(prints), ders)
        };
        let key = TlsKey {
            trust,
            pins,
            client: client.as_ref().map(|(f, _)| *f),
            min_version: if api.min_version == 0 {
                TLS12
            } else {
                api.min_version
            },
            max_version: if api.max_version == 0 {
                TLS13
            } else {
                api.max_version
            },
            offer_h2: api.offer_h2,
        };
        Ok(Wanted {
            key,
            cas,
            client: client.map(|(_, k)| k),
        })
    }

    fn build(&self, w: &Wanted) -> Result<TlsClient, rustls::Error> {
        let chain = match &w.key.trust {
            Trust::Anything => None,
            Trust::WebRoots => Some(self.web_roots.clone()),
            Trust::Cas(_) => {
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(w.cas.iter().cloned());
                if added == 0 {
                    return Err(rustls::Error::General(
                        "no usable CA certificate in proxy.transport.ssl_ca_certificates".into(),
                    ));
                }
                Some(
                    WebPkiServerVerifier::builder_with_provider(
                        Arc::new(roots),
                        self.provider.clone(),
                    )
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?,
                )
            }
        };
        let verifier = Arc::new(UpstreamVerifier {
            chain,
            pins: w.key.pins.clone(),
            provider: self.provider.clone(),
        });
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
            (TLS12, &rustls::version::TLS12),
            (TLS13, &rustls::version::TLS13),
        ]
        .into_iter()
        .filter(|(v, _)| (w.key.min_version..=w.key.max_version).contains(v))
        .map(|(_, p)| p)
        .collect();
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&versions)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &w.client {
            Some(key) => builder.with_client_cert_resolver(Arc::new(ClientCert(key.clone()))),
            None => builder.with_no_client_auth(),
        };
        let upgrades = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config.clone())
            .https_only()
            .enable_http1()
            .wrap_connector(http_connector());
        // ALPN offers h2 and http/1.1; the pool speaks whichever the upstream picks.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only();
        let https = if w.key.offer_h2 {
            https.enable_all_versions().wrap_connector(http_connector())
        } else {
            https.enable_http1().wrap_connector(http_connector())
        };
        Ok(TlsClient {
            client: client_builder().build(https),
            upgrades: client_builder().build(upgrades),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    fn pick<'a>(map: &'a [(&str, &'a str)], host: &str, port: u16) -> Option<&'a str> {
        let parsed: Vec<_> = map.iter().map(|(k, v)| (p(k), *v)).collect();
        best(parsed.iter().map(|(k, v)| (k, v)), host, port).copied()
    }

    #[test]
    fn more_specific_patterns_win() {
        let all = [
            ("*", "any"),
            ("*.example.com", "wild"),
            ("*.example.com:8443", "wild-port"),
            ("api.example.com", "host"),
            ("api.example.com:8443", "host-port"),
        ];
        assert_eq!(pick(&all, "api.example.com", 8443), Some("host-port"));
        assert_eq!(pick(&all, "api.example.com", 443), Some("host"));
        assert_eq!(pick(&all[..3], "api.example.com", 8443), Some("wild-port"));
        assert_eq!(pick(&all[..3], "api.example.com", 443), Some("wild"));
        assert_eq!(pick(&all[..2], "other.test", 443), Some("any"));
        assert_eq!(pick(&all[1..], "other.test", 443), None);
        // The patterns' order does not matter.
        let reversed: Vec<_> = all.iter().rev().copied().collect();
        assert_eq!(pick(&reversed, "api.example.com", 8443), Some("host-port"));
    }

    #[test]
    fn a_wildcard_matches_exactly_one_label() {
        let m = [("*.example.com", "wild")];
        assert_eq!(pick(&m, "a.example.com", 443), Some("wild"));
        assert_eq!(pick(&m, "a.b.example.com", 443), None);
        assert_eq!(pick(&m, "example.com", 443), None);
        assert_eq!(pick(&m, "aexample.com", 443), None);
    }

    #[test]
    fn ports_must_match_and_hosts_ignore_case() {
        let m = [("API.example.com:8443", "x")];
        assert_eq!(pick(&m, "api.example.com", 8443), Some("x"));
        assert_eq!(pick(&m, "api.example.com", 443), None);
        let v6 = [("[::1]:8443", "v6")];
        assert_eq!(pick(&v6, "[::1]", 8443), Some("v6"));
        assert!(HostPattern::parse("*:443").is_none());
        assert!(HostPattern::parse("a.*.com").is_none());
        assert!(HostPattern::parse("host:port").is_none());
    }

    #[test]
    fn gateway_flags_parse_and_refuse_garbage() {
        let g = GatewayTls::parse(
            &["*.example.com=org1abc".into(), "*=org1def".into()],
            &["api.example.com:443=k1, k2".into()],
        )
        .unwrap();
        assert_eq!(g.upstream_certificates.len(), 2);
        assert_eq!(g.pinned_public_keys[0].1, vec!["k1", "k2"]);
        for bad in ["nohost", "=id", "*.x.com=", "*.x.com=a,b", "a.*.b=id"] {
            assert!(
                GatewayTls::parse(&[bad.into()], &[]).is_err(),
                "{bad} must be refused"
            );
        }
    }

    fn spec(v: serde_json::Value) -> ApiSpec {
        portcullis_proto::model::ApiDefinition::from_value(v)
            .unwrap()
            .spec()
            .clone()
    }

    fn api_tls(v: serde_json::Value, authority: &str) -> Arc<ApiTls> {
        ApiTls::of(&spec(v), &Scheme::HTTPS, &authority.parse().unwrap()).unwrap()
    }

    #[test]
    fn the_api_map_wins_over_the_gateway_map_and_can_be_disabled() {
        let base = serde_json::json!({
            "api_id": "a", "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "https://up.example.com/"},
            "upstream_certificates": {"*": "api-any"},
        });
        let own = api_tls(base.clone(), "up.example.com");
        // An API `*` beats a gateway exact host: API wins whatever the specificity.
        assert_eq!(
            own.client_cert.as_ref().unwrap().0.as_deref(),
            Some("api-any")
        );
        let mut off = base.clone();
        off["upstream_certificates_disabled"] = true.into();
        assert!(api_tls(off, "up.example.com").client_cert.is_none());
        let mut none = base;
        none["upstream_certificates"] = serde_json::json!({"other.test": "x"});
        let none = api_tls(none, "up.example.com");
        assert_eq!(none.client_cert.as_ref().unwrap().0, None);
        assert!(
            ApiTls::of(
                &spec(serde_json::json!({"api_id": "b", "use_keyless": true,
                    "proxy": {"listen_path": "/b/", "target_url": "http://up/"}})),
                &Scheme::HTTP,
                &"up".parse().unwrap()
            )
            .is_none(),
            "plain HTTP routes carry nothing"
        );
    }

    fn route(v: serde_json::Value) -> Arc<Route> {
        let def = portcullis_proto::model::ApiDefinition::from_value(v).unwrap();
        Arc::new(Route::from_definition(&def).unwrap())
    }

    #[test]
    fn pools_survive_table_swaps_that_leave_the_material_alone() {
        let def = |id: &str, skip: bool| {
            serde_json::json!({
                "api_id": id, "use_keyless": true,
                "proxy": {"listen_path": format!("/{id}/"), "target_url": "https://up.example.com/",
                          "transport": {"ssl_insecure_skip_verify": skip}},
            })
        };
        let shared = Shared::new();
        let tls = UpstreamTls::new(shared.clone(), GatewayTls::default()).unwrap();
        let (a, b) = (route(def("a", false)), route(def("b", false)));
        shared.install(crate::router::RoutingTable::new([&a, &b]), 1);
        let first = tls.client_for(&a).unwrap();
        assert!(
            Arc::ptr_eq(&first, &tls.client_for(&b).unwrap()),
            "same settings, one pool"
        );

        // A new table (the API redefined alike, another one changed): the pool is kept.
        let (a2, b2) = (route(def("a", false)), route(def("b", true)));
        shared.install(crate::router::RoutingTable::new([&a2, &b2]), 2);
        assert!(Arc::ptr_eq(&first, &tls.client_for(&a2).unwrap()));
        assert!(!Arc::ptr_eq(&first, &tls.client_for(&b2).unwrap()));
        // A route of an older table still gets a client, resolved against the current store.
        assert!(tls.client_for(&a).is_ok());
    }

    #[test]
    fn missing_pins_or_cas_refuse_the_api_instead_of_weakening_it() {
        let shared = Shared::new();
        let tls = UpstreamTls::new(shared.clone(), GatewayTls::default()).unwrap();
        let pinned = route(serde_json::json!({
            "api_id": "p", "use_keyless": true,
            "proxy": {"listen_path": "/p/", "target_url": "https://up.example.com/"},
            "pinned_public_keys": {"*": "not-in-the-store"},
        }));
        let ca = route(serde_json::json!({
            "api_id": "c", "use_keyless": true,
            "proxy": {"listen_path": "/c/", "target_url": "https://up.example.com/",
                      "transport": {"ssl_ca_certificates": ["not-in-the-store"]}},
        }));
        let cert = route(serde_json::json!({
            "api_id": "u", "use_keyless": true,
            "proxy": {"listen_path": "/u/", "target_url": "https://up.example.com/"},
            "upstream_certificates": {"*": "not-in-the-store"},
        }));
        shared.install(crate::router::RoutingTable::new([&pinned, &ca, &cert]), 1);
        assert_eq!(
            tls.client_for(&pinned).unwrap_err(),
            TlsFailure::Misconfigured
        );
        assert_eq!(tls.client_for(&ca).unwrap_err(), TlsFailure::Misconfigured);
        // As Tyk: a missing client certificate is not presented; the upstream decides.
        assert!(tls.client_for(&cert).is_ok());
    }

    #[test]
    fn rustls_errors_map_to_what_the_client_reads() {
        let pin = rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            NotPinned,
        ))));
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, pin);
        assert_eq!(classify(&wrapped).unwrap().0, TlsFailure::NotPinned);
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(failure_of(&unknown), TlsFailure::Untrusted);
        assert_eq!(
            failure_of(&rustls::Error::AlertReceived(
                AlertDescription::ProtocolVersion
            )),
            TlsFailure::Version
        );
        let plain = std::io::Error::other("connection refused");
        assert!(classify(&plain).is_none());
    }
}
