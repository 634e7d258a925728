//! draft-cavage HTTP Signatures made by an implementation independent of the gateway's: the
//! Python `httpsig` library (pinned in `pyjwt.rs`), for HMAC and RSA alike.

use serde_json::json;

use crate::pyjwt::run_python;

const SIGN: &str = r#"
import sys, json, warnings
warnings.simplefilter("ignore")
import httpsig, httpsig.utils
a = json.load(sys.stdin)
if a['algorithm'] not in httpsig.utils.ALGORITHMS:
    # httpsig has no hmac-sha384: the same draft-cavage string, MAC'd by Python's hmac.
    import base64, hashlib, hmac
    h = {k.lower(): v for k, v in a['headers']}
    lines = ['(request-target): %s %s' % (a['method'].lower(), a['path']) if n == '(request-target)'
             else '%s: %s' % (n, h[n]) for n in a['signed']]
    mac = hmac.new(a['secret'].encode(), '\n'.join(lines).encode(), hashlib.sha384).digest()
    sys.stdout.write('Signature keyId="%s",algorithm="%s",headers="%s",signature="%s"' % (
        a['key_id'], a['algorithm'], ' '.join(a['signed']), base64.b64encode(mac).decode()))
    sys.exit(0)
s = httpsig.HeaderSigner(a['key_id'], a['secret'], algorithm=a['algorithm'], headers=a['signed'])
h = s.sign(dict(a['headers']), method=a['method'], path=a['path'])
sys.stdout.write(h['authorization'])
"#;

/// The `Authorization` value httpsig makes (Python's `hmac` for `hmac-sha384`, which httpsig
/// lacks) for a request: `secret` is the HMAC secret or the
/// PEM private key (`rsa-sha256`), `signed` the header names listed in `headers=`.
pub fn httpsig_authorization(
    key_id: &str,
    secret: &str,
    algorithm: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    signed: &[&str],
) -> String {
    let input = json!({
        "key_id": key_id, "secret": secret, "algorithm": algorithm, "method": method,
        "path": path, "headers": headers, "signed": signed,
    });
    String::from_utf8(run_python(SIGN, input.to_string().as_bytes())).expect("utf-8 header")
}

/// An RFC 1123 date (`Date` header form) `offset_secs` from now.
pub fn http_date(offset_secs: i64) -> String {
    let t = crate::pyjwt::now() + offset_secs;
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A self-signed RSA certificate made by openssl in `dir`: (private key PEM, certificate PEM).
pub fn rsa_self_signed(dir: &std::path::Path, common_name: &str) -> (String, String) {
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        ])
        .arg(format!("/CN={common_name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl on PATH");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read_to_string(key).expect("key written"),
        std::fs::read_to_string(cert).expect("certificate written"),
    )
}
