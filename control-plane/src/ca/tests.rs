use super::*;

fn test_ca() -> NodeCa {
    let (pem, key) = generate_ca().unwrap();
    NodeCa::from_parts(&pem, &key).unwrap()
}

#[test]
fn signs_a_csr_with_the_ca_chosen_identity() {
    let ca = test_ca();
    let node_key = KeyPair::generate().unwrap();
    let mut req = CertificateParams::default();
    req.distinguished_name
        .push(DnType::CommonName, "attacker-chosen");
    let csr = req.serialize_request(&node_key).unwrap();
    let issued = ca
        .sign_node_csr(csr.der(), "node-123", Duration::from_secs(3600))
        .unwrap();
    let der = pem_to_der(&issued.pem).unwrap();
    let parsed = parse_node_certificate(&der).unwrap();
    assert_eq!(parsed.node_id, "node-123");
    assert_eq!(parsed.serial_hex, issued.serial_hex);
    let ttl = parsed.not_after - OffsetDateTime::now_utc().unix_timestamp();
    assert!((3500..=3600).contains(&ttl), "{ttl}");
    // The issued certificate verifies against the CA with webpki (independent of rcgen).
    let ca_cert = webpki_anchor(ca.certificate_der());
    let ee = webpki::EndEntityCert::try_from(&der).unwrap();
    ee.verify_for_usage(
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .all,
        &[ca_cert],
        &[],
        rustls_pki_types::UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .unwrap();
}

fn webpki_anchor(der: &CertificateDer<'_>) -> rustls_pki_types::TrustAnchor<'static> {
    webpki::anchor_from_trusted_cert(der).unwrap().to_owned()
}

#[test]
fn garbage_csr_is_refused() {
    let ca = test_ca();
    assert!(matches!(
        ca.sign_node_csr(b"not a csr", "n", Duration::from_secs(60)),
        Err(CaError::BadCsr(_))
    ));
}

#[test]
fn server_chain_names_hosts_and_ends_with_the_ca() {
    let ca = test_ca();
    let (chain, _key) = ca
        .issue_server_certificate(&["localhost".into(), "127.0.0.1".into()])
        .unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(&chain[1], ca.certificate_der());
    let ee = webpki::EndEntityCert::try_from(&chain[0]).unwrap();
    ee.verify_is_valid_for_subject_name(
        &rustls_pki_types::ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    ee.verify_is_valid_for_subject_name(
        &rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
}

#[test]
fn ca_hash_matches_openssl() {
    // Independent oracle: openssl's view of the SubjectPublicKeyInfo, when openssl is installed.
    let ca = test_ca();
    let dir = std::env::temp_dir().join(format!("pc-ca-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem_path = dir.join("ca.pem");
    std::fs::write(&pem_path, &ca.info().certificate_pem).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | sha256sum",
            pem_path.display()
        ))
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let Ok(out) = out else { return };
    if !out.status.success() {
        return;
    }
    let hex = String::from_utf8(out.stdout).unwrap();
    let hex = hex.split_whitespace().next().unwrap();
    assert_eq!(ca.info().ca_hash, format!("sha256:{hex}"));
}

#[test]
fn the_serial_read_back_from_a_certificate_is_the_one_recorded() {
    // A serial starting with a zero byte is shortened by DER; one in 128 used to be, and the
    // node was then refused its own fresh certificate.
    let ca = test_ca();
    let node_key = KeyPair::generate().unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&node_key)
        .unwrap();
    for _ in 0..600 {
        let issued = ca
            .sign_node_csr(csr.der(), "node", Duration::from_secs(60))
            .unwrap();
        let parsed = parse_node_certificate(&pem_to_der(&issued.pem).unwrap()).unwrap();
        assert_eq!(parsed.serial_hex, issued.serial_hex);
    }
}
