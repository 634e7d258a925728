//! `portcullis-bench-propagation`: measures how fast a committed change is served by a gateway.
//!
//! Each round moves one keyless API to a new listen path with `PUT /tyk/apis/{id}` and then polls
//! the gateway (every 0.2 ms) until the new path is routed. The time from the PUT's answer (the
//! commit) to the first routed request bounds commit→apply from above; the control plane's own
//! commit→ACK histogram is printed next to it.

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Management API base URL.
    #[arg(long, default_value = "http://127.0.0.1:7080")]
    api: String,
    #[arg(long, env = "PORTCULLIS_ADMIN_SECRET")]
    admin_secret: String,
    /// Gateway proxy base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// Where the measured API points (any HTTP server; only routing is observed).
    #[arg(long, default_value = "http://127.0.0.1:18000/")]
    target: String,
    #[arg(long, default_value_t = 200)]
    updates: usize,
    /// Keys to revoke after the updates (0: skip). Needs a protected API `--key-api` on the gateway.
    #[arg(long, default_value_t = 0)]
    revocations: usize,
    #[arg(long, default_value = "tok")]
    key_api: String,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let http = reqwest::Client::new();
    let id = format!("propagation-{}", std::process::id());
    let def = |i: usize| {
        json!({"api_id": id, "name": id, "use_keyless": true,
        "proxy": {"listen_path": format!("/prop-{id}/{i}/"), "target_url": args.target, "strip_listen_path": true}})
    };
    let send = |method: reqwest::Method, path: String, body: Option<serde_json::Value>| {
        let mut req = http
            .request(method, format!("{}{path}", args.api))
            .header("X-Tyk-Authorization", &args.admin_secret);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
    };
    let resp = send(reqwest::Method::POST, "/tyk/apis".into(), Some(def(0)))
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!(
            "creating the API failed: {}",
            resp.text().await.unwrap_or_default()
        ));
    }
    let mut samples = Vec::with_capacity(args.updates);
    for i in 1..=args.updates {
        let resp = send(
            reqwest::Method::PUT,
            format!("/tyk/apis/{id}"),
            Some(def(i)),
        )
        .await
        .map_err(|e| e.to_string())?;
        let committed = Instant::now();
        if !resp.status().is_success() {
            return Err(format!("update {i} failed: {}", resp.status()));
        }
        let url = format!("{}/prop-{id}/{i}/", args.gateway);
        loop {
            let status = http
                .get(&url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if status != 404 && status != 0 {
                break;
            }
            if committed.elapsed() > Duration::from_secs(10) {
                return Err(format!("update {i} not served after 10 s"));
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(committed.elapsed());
    }
    let _ = send(reqwest::Method::DELETE, format!("/tyk/apis/{id}"), None).await;
    samples.sort();
    println!(
        "commit→served over {} updates: p50 {}  p90 {}  p99 {}  max {}",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.9)),
        ms(percentile(&samples, 0.99)),
        ms(percentile(&samples, 1.0))
    );
    if args.revocations > 0 {
        let mut revoked = Vec::with_capacity(args.revocations);
        let api = &args.key_api;
        for i in 0..args.revocations {
            let key = format!("revoke-{}-{i}", std::process::id());
            let session = json!({"access_rights": {api.as_str(): {"api_id": api}}});
            send(
                reqwest::Method::POST,
                format!("/tyk/keys/{key}"),
                Some(session),
            )
            .await
            .map_err(|e| e.to_string())?;
            let url = format!("{}/{api}/", args.gateway);
            let status = |http: &reqwest::Client, key: &str| {
                let req = http.get(&url).header("Authorization", key);
                async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
            };
            // The gateway has the key cached before it is revoked.
            let start = Instant::now();
            while status(&http, &key).await != 200 {
                if start.elapsed() > Duration::from_secs(10) {
                    return Err(format!("key {i} never accepted"));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let resp = send(reqwest::Method::DELETE, format!("/tyk/keys/{key}"), None)
                .await
                .map_err(|e| e.to_string())?;
            let deleted = Instant::now();
            if !resp.status().is_success() {
                return Err(format!("revoking key {i} failed: {}", resp.status()));
            }
            while status(&http, &key).await != 403 {
                if deleted.elapsed() > Duration::from_secs(10) {
                    return Err(format!("key {i} still accepted 10 s after revocation"));
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            revoked.push(deleted.elapsed());
        }
        revoked.sort();
        println!(
            "revoke→refused over {} keys: p50 {}  p90 {}  p99 {}  max {}",
            revoked.len(),
            ms(percentile(&revoked, 0.5)),
            ms(percentile(&revoked, 0.9)),
            ms(percentile(&revoked, 0.99)),
            ms(percentile(&revoked, 1.0))
        );
    }
    if let Ok(resp) = send(reqwest::Method::GET, "/metrics".into(), None).await
        && let Ok(text) = resp.text().await
    {
        let value = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let (sum, count) = (
            value("portcullis_sync_propagation_seconds_sum"),
            value("portcullis_sync_propagation_seconds_count"),
        );
        if count > 0.0 {
            println!(
                "control plane commit→ACK: {count} ACKed revisions, mean {:.2} ms",
                sum / count * 1e3
            );
        }
    }
    Ok(())
}
