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
    let bytes = std::fs::read(state_dir.join("node.json")).expect("node.json in the state dir");
    serde_json::from_slice(&bytes).expect("node.json parses")
}
