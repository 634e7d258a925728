//! Single sync calls made by hand, for what a real gateway never sends: another build version,
//! an expired certificate.

use portcullis_data_plane::sync::connect;
use portcullis_data_plane::sync::identity::Identity;
use portcullis_proto::sync::sync_client::SyncClient;
use portcullis_proto::sync::watch_request::Message;
use portcullis_proto::sync::{Hello, JoinRequest, WatchRequest};

/// Joins with a throwaway key claiming `version`: the node id, or the refusal's text.
pub async fn join_as(
    url: &url::Url,
    ca_hash: &str,
    token: &str,
    version: &str,
) -> Result<String, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .map_err(|e| e.to_string())?;
    let tls = connect::join_tls(ca_hash).map_err(|e| e.to_string())?;
    let channel = connect::channel(url, tls)
        .await
        .map_err(|e| e.to_string())?;
    SyncClient::new(channel)
        .join(JoinRequest {
            bootstrap_token: token.to_owned(),
            csr_der: csr.der().to_vec(),
            node_name: "raw".into(),
            expected_group: String::new(),
            version: version.to_owned(),
        })
        .await
        .map(|r| r.into_inner().node_id)
        .map_err(|s| s.message().to_owned())
}

/// Opens a Watch stream with a stored identity and a Hello claiming `version`, and reads the
/// first answer: "accepted", or the refusal's text.
pub async fn watch_as(url: &url::Url, identity: &Identity, version: &str) -> String {
    let hello = WatchRequest {
        message: Some(Message::Hello(Hello {
            node_id: identity.node_id.clone(),
            protocol_version: portcullis_proto::PROTOCOL_VERSION,
            build_version: version.to_owned(),
            ..Default::default()
        })),
    };
    let tls = match connect::node_tls(identity) {
        Ok(t) => t,
        Err(e) => return e.to_string(),
    };
    let channel = match connect::channel(url, tls).await {
        Ok(c) => c,
        Err(e) => return format!("{e:?}"),
    };
    let mut client = SyncClient::new(channel);
    match client.watch(tokio_stream::iter(vec![hello])).await {
        Ok(mut stream) => match stream.get_mut().message().await {
            Ok(_) => "accepted".into(),
            Err(status) => status.message().to_owned(),
        },
        Err(status) => status.message().to_owned(),
    }
}

/// The identity a gateway saved in its state dir.
pub fn stored_identity(state_dir: &std::path::Path) -> Identity {
    portcullis_data_plane::sync::identity::StateDir::open(state_dir, crate::ENCRYPTION_SECRET)
        .expect("state dir")
        .load_identity()
        .expect("node.json opens")
        .expect("node.json in the state dir")
}

/// Opens TCP from a fixed source address, then TLS, for tonic.
#[derive(Clone)]
struct FromSource {
    source: std::net::IpAddr,
    target: std::net::SocketAddr,
    server_name: rustls::pki_types::ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
}

type Connecting = std::pin::Pin<
    Box<
        dyn Future<
                Output = std::io::Result<
                    hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
                >,
            > + Send,
    >,
>;

impl tonic::codegen::Service<http::Uri> for FromSource {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(std::net::SocketAddr::new(this.source, 0))?;
            let tcp = socket.connect(this.target).await?;
            let tls = this.tls.connect(this.server_name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// A TLS channel to the sync port from a chosen source address: Linux routes all of 127/8 to
/// loopback, so 127.0.0.2 is "another host" to a control plane listening on 127.0.0.1.
pub async fn channel_from(
    url: &url::Url,
    tls: rustls::ClientConfig,
    source: std::net::IpAddr,
) -> Result<tonic::transport::Channel, String> {
    let host = url.host_str().ok_or("no host")?.to_owned();
    let port = url.port_or_known_default().unwrap_or(7443);
    let connector = FromSource {
        source,
        target: format!("{host}:{port}")
            .parse()
            .map_err(|e: std::net::AddrParseError| e.to_string())?,
        server_name: rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| e.to_string())?,
        tls: tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls)),
    };
    tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("{e:?}"))
}

/// Joins from `source` with a throwaway key: the full identity, or the refusal as
/// `"<code>: <message>"`.
pub async fn join_from(
    url: &url::Url,
    ca_hash: &str,
    token: &str,
    node_name: &str,
    source: std::net::IpAddr,
) -> Result<Identity, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .map_err(|e| e.to_string())?;
    let tls = connect::join_tls(ca_hash).map_err(|e| e.to_string())?;
    let channel = channel_from(url, tls, source).await?;
    let resp = SyncClient::new(channel)
        .join(JoinRequest {
            bootstrap_token: token.to_owned(),
            csr_der: csr.der().to_vec(),
            node_name: node_name.to_owned(),
            expected_group: String::new(),
            version: portcullis_proto::version::BUILD_VERSION.to_owned(),
        })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    Ok(Identity {
        node_id: resp.node_id,
        group: resp.group,
        key_pem: key.serialize_pem(),
        cert_pem: resp.certificate_pem,
        ca_pem: resp.ca_pem,
    })
}

/// A Watch stream driven by hand: what a misbehaving node sends.
pub struct RawWatch {
    tx: tokio::sync::mpsc::Sender<WatchRequest>,
    rx: tonic::Streaming<portcullis_proto::sync::WatchResponse>,
}

impl RawWatch {
    /// Opens a stream with `hello` (its `node_id` is filled in from `identity`).
    pub async fn open(
        url: &url::Url,
        identity: &Identity,
        mut hello: Hello,
    ) -> Result<Self, tonic::Status> {
        hello.node_id = identity.node_id.clone();
        hello.protocol_version = portcullis_proto::PROTOCOL_VERSION;
        let tls = connect::node_tls(identity).map_err(|e| tonic::Status::unknown(e.to_string()))?;
        let channel = connect::channel(url, tls)
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tx.send(WatchRequest {
            message: Some(Message::Hello(hello)),
        })
        .await
        .map_err(|_| tonic::Status::internal("request stream closed"))?;
        let rx = SyncClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self { tx, rx })
    }

    /// The next message within `timeout`: `None` when nothing came, `Some(Err)` when the
    /// stream ended with a status.
    pub async fn next(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<Result<portcullis_proto::sync::watch_response::Message, tonic::Status>> {
        match tokio::time::timeout(timeout, self.rx.message()).await {
            Err(_) => None,
            Ok(Ok(Some(m))) => m.message.map(Ok),
            Ok(Ok(None)) => Some(Err(tonic::Status::cancelled("stream ended"))),
            Ok(Err(s)) => Some(Err(s)),
        }
    }

    pub async fn send(&self, message: Message) {
        let _ = self
            .tx
            .send(WatchRequest {
                message: Some(message),
            })
            .await;
    }
}
