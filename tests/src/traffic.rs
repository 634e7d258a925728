//! What the traffic tests (WebSockets, gRPC, streaming, load balancing) share: a stack whose
//! gateway has chosen options, and auth-token keys for APIs.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::idp_stack::Stack;
use crate::{Cp, Dp, DpOptions, EchoUpstream, TestDb};

/// A stack (no Redis) whose gateway runs with `opts` (joined with a fresh token).
pub async fn stack_with(opts: DpOptions) -> Stack {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let token = Some(cp.token("default").await);
    let dp = Dp::start(&cp, DpOptions { token, ..opts })
        .await
        .expect("gateway starts");
    Stack {
        db,
        cp,
        echo,
        dp,
        revisions: 0,
    }
}

/// A new auth-token key with access to `apis`.
pub async fn key_for(cp: &Cp, apis: &[&str]) -> String {
    let rights = crate::idp_stack::access_rights(apis);
    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/keys",
            Some(&json!({"access_rights": rights})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "create key: {body}");
    body["key"].as_str().expect("key in answer").to_owned()
}

/// A certificate for `localhost` from a fresh CA, in the control plane's store: the edge's
/// TLS listener serves it for APIs that list its id in `certificates`.
pub struct LocalhostCert {
    pub id: String,
    /// The CA's PEM file, for clients to trust; removed on drop.
    pub ca_file: std::path::PathBuf,
}

impl LocalhostCert {
    pub async fn upload(cp: &Cp) -> Self {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "traffic test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let ca_file = std::env::temp_dir().join(format!(
            "portcullis-traffic-ca-{}.pem",
            uuid::Uuid::new_v4()
        ));
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let (status, body) = cp
            .call_raw(
                Method::POST,
                "/tyk/certs",
                Some(format!("{}{}", leaf.pem(), key.serialize_pem())),
                Some(crate::ADMIN_SECRET),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "upload: {body}");
        let id = body["id"].as_str().expect("id in answer").to_owned();
        Self { id, ca_file }
    }

    /// Waits until `dp` completes a handshake for `localhost` with this certificate.
    pub async fn wait_served(&self, dp: &Dp) {
        let url = format!("https://localhost:{}/", dp.tls_addr.port());
        let ca = self.ca_file.to_string_lossy().into_owned();
        crate::eventually(
            std::time::Duration::from_secs(20),
            "the certificate served",
            || {
                let args = vec![
                    "-o".to_owned(),
                    "/dev/null".to_owned(),
                    "--cacert".to_owned(),
                    ca.clone(),
                    "--resolve".to_owned(),
                    format!("localhost:{}:127.0.0.1", dp.tls_addr.port()),
                    url.clone(),
                ];
                async move { (crate::peers::curl(args).await.0 == 0).then_some(()) }
            },
        )
        .await;
    }
}

impl Drop for LocalhostCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
    }
}
