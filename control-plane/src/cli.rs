//! Command line: `serve` (default), `migrate`, and client commands that call the management API.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::Config;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis-cp",
    version,
    about = "Portcullis control plane",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at start; boxing the serve flags would only complicate every use.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the management API and the sync server (the default).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(MigrateArgs),
    /// Bootstrap tokens (via the management API).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The node registry (via the management API).
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// The node CA (via the management API).
    #[command(subcommand)]
    Ca(CaCommand),
    /// Declarative configuration: a folder of APIs, policies, OAuth clients and certificate
    /// references (via the management API; docs/config.md).
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write every API, policy, OAuth client and certificate reference into DIR, one JSON file
    /// each (secrets sealed).
    Dump {
        #[command(flatten)]
        client: ClientArgs,
        dir: std::path::PathBuf,
        /// Replace the JSON and YAML files of DIR's apis/, policies/, certificates/ and
        /// oauth_clients/.
        #[arg(long)]
        force: bool,
    },
    /// Print what `apply` would change, and the fields Portcullis would store without acting on.
    Diff {
        #[command(flatten)]
        client: ClientArgs,
        dir: std::path::PathBuf,
        /// Show what is in the control plane but not in DIR as deletions.
        #[arg(long)]
        prune: bool,
    },
    /// Make the control plane hold what DIR holds, in one transaction.
    Apply {
        #[command(flatten)]
        client: ClientArgs,
        dir: std::path::PathBuf,
        /// Plan only; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete APIs, policies and OAuth clients that DIR does not hold.
        #[arg(long)]
        prune: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it once, with the CA hash and the join command.
    Create {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, default_value = "default")]
        group: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        expires_in: i64,
        /// Nodes the token may join (default one).
        #[arg(long)]
        max_uses: Option<i32>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tokens (no secrets).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a token by id.
    Revoke {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a node: its certificate is refused and its streams closed.
    Revoke {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Print the CA hash (for `--ca-hash`) and certificate.
    Show {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Management API base URL.
    #[arg(
        long,
        env = "PORTCULLIS_API_URL",
        default_value = "http://127.0.0.1:7080"
    )]
    pub api_url: String,
    #[arg(long, env = "PORTCULLIS_ADMIN_SECRET", hide_env_values = true)]
    pub admin_secret: String,
    /// PEM certificate to trust for an https:// --api-url (one made for --api-tls-cert).
    #[arg(long, env = "PORTCULLIS_API_CA_CERT")]
    pub api_ca_cert: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Postgres URL (falls back to DATABASE_URL).
    #[arg(long, env = "PORTCULLIS_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl MigrateArgs {
    pub fn database_url(&self) -> Result<String, CliError> {
        database_url(self.database_url.as_ref())
    }
}

fn database_url(flag: Option<&String>) -> Result<String, CliError> {
    flag.cloned()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .ok_or(CliError::Missing(
            "--database-url / PORTCULLIS_DATABASE_URL / DATABASE_URL",
        ))
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Management API listener; loopback unless told otherwise (it holds every key and secret).
    #[arg(long, env = "PORTCULLIS_API_LISTEN", default_value = "127.0.0.1:7080")]
    pub api_listen: SocketAddr,
    /// Serve the management API over HTTPS with this PEM certificate chain (with --api-tls-key).
    #[arg(long, env = "PORTCULLIS_API_TLS_CERT", requires = "api_tls_key")]
    pub api_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --api-tls-cert.
    #[arg(long, env = "PORTCULLIS_API_TLS_KEY", requires = "api_tls_cert")]
    pub api_tls_key: Option<std::path::PathBuf>,
    #[arg(long, env = "PORTCULLIS_SYNC_LISTEN", default_value = "0.0.0.0:7443")]
    pub sync_listen: SocketAddr,
    /// Names in the sync server certificate (comma separated); default: host name, localhost, 127.0.0.1, ::1.
    #[arg(long, env = "PORTCULLIS_SYNC_NAMES", value_delimiter = ',')]
    pub sync_names: Vec<String>,
    /// Postgres URL (falls back to DATABASE_URL).
    #[arg(long, env = "PORTCULLIS_DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(long, env = "PORTCULLIS_ADMIN_SECRET", hide_env_values = true)]
    pub admin_secret: Option<String>,
    #[arg(long, env = "PORTCULLIS_ENCRYPTION_SECRET", hide_env_values = true)]
    pub encryption_secret: Option<String>,
    /// CP-only secret sealing the node CA key (default: derived from the admin secret).
    #[arg(long, env = "PORTCULLIS_CA_SECRET", hide_env_values = true)]
    pub ca_secret: Option<String>,
    /// The CA secret (or admin secret) before a rotation: the CA key is re-sealed at start.
    #[arg(long, env = "PORTCULLIS_PREVIOUS_CA_SECRET", hide_env_values = true)]
    pub previous_ca_secret: Option<String>,
    /// Accept keys without access rights, which open every API (Tyk's allow_master_keys).
    #[arg(long, env = "PORTCULLIS_ALLOW_MASTER_KEYS")]
    pub allow_master_keys: bool,
    /// Name of this replica in the node registry (default: host name).
    #[arg(long, env = "PORTCULLIS_REPLICA_NAME")]
    pub replica_name: Option<String>,
    /// Lifetime of node certificates, in seconds (default one day).
    #[arg(long, env = "PORTCULLIS_NODE_CERT_TTL", default_value_t = 86_400)]
    pub node_cert_ttl: u64,
    #[arg(long, env = "PORTCULLIS_MAX_DB_CONNECTIONS", default_value_t = 16)]
    pub max_db_connections: u32,
    /// Lifetime in seconds given to every key when --force-global-session-lifetime is set (0: never).
    #[arg(long, env = "PORTCULLIS_GLOBAL_SESSION_LIFETIME", default_value_t = 0)]
    pub global_session_lifetime: i64,
    #[arg(long, env = "PORTCULLIS_FORCE_GLOBAL_SESSION_LIFETIME")]
    pub force_global_session_lifetime: bool,
    /// Keys outlive their lifetime until their `expires` (Tyk's session_lifetime_respects_key_expiration).
    #[arg(long, env = "PORTCULLIS_SESSION_LIFETIME_RESPECTS_KEY_EXPIRATION")]
    pub session_lifetime_respects_key_expiration: bool,
    /// Lifetime of an OAuth authorization code, in seconds.
    #[arg(long, env = "PORTCULLIS_OAUTH_CODE_TTL", default_value_t = 250)]
    pub oauth_code_ttl: i64,
    /// Lifetime of an OAuth access token, in seconds.
    #[arg(long, env = "PORTCULLIS_OAUTH_TOKEN_TTL", default_value_t = 3600)]
    pub oauth_token_ttl: i64,
    /// Lifetime of an OAuth refresh token, in seconds (default 14 days).
    #[arg(
        long,
        env = "PORTCULLIS_OAUTH_REFRESH_TTL",
        default_value_t = 1_209_600
    )]
    pub oauth_refresh_ttl: i64,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "PORTCULLIS_LOG_JSON")]
    pub log_json: bool,
    #[command(flatten)]
    pub sync_limits: crate::sync::SyncLimitArgs,
}

/// A flag the operator must give; the message names it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("missing {0} (flag or environment variable)")]
    Missing(&'static str),
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("--node-cert-ttl must be between 60 and {max} seconds", max = portcullis_proto::model::bounds::MAX_NODE_CERT_TTL_SECS)]
    CertTtl,
    #[error("--global-session-lifetime must be between 0 and {max} seconds", max = portcullis_proto::model::bounds::MAX_LIFETIME_SECS)]
    GlobalLifetime,
    #[error("--max-db-connections must be between 1 and 1000")]
    DbConnections,
    #[error("{0} must be between 1 and {max} seconds (10 years)", max = crate::oauth::MAX_LIFETIME_SECS)]
    OAuthTtl(&'static str),
    #[error(transparent)]
    WeakSecret(#[from] crate::config::WeakSecret),
    #[error(transparent)]
    SyncLimit(#[from] crate::sync::LimitError),
    #[error("management API at {url}: {reason}")]
    Client { url: String, reason: String },
    #[error("configuration folder: {0}")]
    Folder(String),
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl ServeArgs {
    pub fn database_url(&self) -> Result<String, CliError> {
        self.database_url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .ok_or(CliError::Missing(
                "--database-url / PORTCULLIS_DATABASE_URL / DATABASE_URL",
            ))
    }

    pub fn to_config(&self) -> Result<Config, CliError> {
        let admin_secret = self.admin_secret.clone().ok_or(CliError::Missing(
            "--admin-secret / PORTCULLIS_ADMIN_SECRET",
        ))?;
        let encryption_secret = self.encryption_secret.clone().ok_or(CliError::Missing(
            "--encryption-secret / PORTCULLIS_ENCRYPTION_SECRET",
        ))?;
        if admin_secret.is_empty() {
            return Err(CliError::Empty("--admin-secret"));
        }
        if encryption_secret.is_empty() {
            return Err(CliError::Empty("--encryption-secret"));
        }
        if !(60..=portcullis_proto::model::bounds::MAX_NODE_CERT_TTL_SECS)
            .contains(&self.node_cert_ttl)
        {
            return Err(CliError::CertTtl);
        }
        if !(0..=portcullis_proto::model::bounds::MAX_LIFETIME_SECS)
            .contains(&self.global_session_lifetime)
        {
            return Err(CliError::GlobalLifetime);
        }
        if !(1..=1000).contains(&self.max_db_connections) {
            return Err(CliError::DbConnections);
        }
        for (flag, secs) in [
            ("--oauth-code-ttl", self.oauth_code_ttl),
            ("--oauth-token-ttl", self.oauth_token_ttl),
            ("--oauth-refresh-ttl", self.oauth_refresh_ttl),
        ] {
            if !(1..=crate::oauth::MAX_LIFETIME_SECS).contains(&secs) {
                return Err(CliError::OAuthTtl(flag));
            }
        }
        let sync_names = if self.sync_names.is_empty() {
            vec![
                host_name(),
                "localhost".into(),
                "127.0.0.1".into(),
                "::1".into(),
            ]
        } else {
            self.sync_names.clone()
        };
        let api_tls = match (&self.api_tls_cert, &self.api_tls_key) {
            (Some(cert), Some(key)) => Some(crate::config::ApiTls {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let config = Config {
            api_listen: self.api_listen,
            sync_listen: self.sync_listen,
            sync_names,
            database_url: self.database_url()?,
            admin_secret,
            encryption_secret,
            ca_secret: self.ca_secret.clone(),
            previous_ca_secret: self.previous_ca_secret.clone(),
            allow_master_keys: self.allow_master_keys,
            api_tls,
            replica_name: self.replica_name.clone().unwrap_or_else(host_name),
            node_cert_ttl: Duration::from_secs(self.node_cert_ttl),
            max_db_connections: self.max_db_connections,
            lifetime_rules: crate::lifetime::LifetimeRules {
                global_session_lifetime: self.global_session_lifetime,
                force_global_session_lifetime: self.force_global_session_lifetime,
                respects_key_expiration: self.session_lifetime_respects_key_expiration,
                oauth: crate::oauth::OAuthLifetimes {
                    code_secs: self.oauth_code_ttl,
                    token_secs: self.oauth_token_ttl,
                    refresh_secs: self.oauth_refresh_ttl,
                },
            },
            sync_limits: self.sync_limits.to_limits()?,
        };
        config.check_secrets()?;
        Ok(config)
    }
}

/// Calls the management API and returns its JSON, or the error message it sent.
pub async fn call(
    client: &ClientArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, CliError> {
    let url = format!("{}{path}", client.api_url.trim_end_matches('/'));
    let err = |reason: String| CliError::Client {
        url: url.clone(),
        reason,
    };
    let mut http = reqwest::Client::builder();
    if let Some(path) = &client.api_ca_cert {
        let pem = std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        http = http.add_root_certificate(cert);
    }
    let http = http.build().map_err(|e| err(e.to_string()))?;
    let mut req = http
        .request(method, &url)
        .header("X-Tyk-Authorization", &client.admin_secret);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.map_err(|e| err(e.to_string()))?;
    let status = resp.status();
    let value: Value = resp
        .json()
        .await
        .map_err(|e| err(format!("unreadable answer ({status}): {e}")))?;
    if !status.is_success() {
        let message = value["message"]
            .as_str()
            .unwrap_or("request failed")
            .to_owned();
        return Err(err(format!("{status}: {message}")));
    }
    Ok(value)
}

/// Runs a client subcommand and returns what to print.
pub async fn run_client(command: Command) -> Result<String, CliError> {
    use reqwest::Method;
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    Ok(match command {
        Command::Token(TokenCommand::Create {
            client,
            group,
            expires_in,
            max_uses,
            description,
        }) => {
            let body = json!({"group": group, "expires_in": expires_in, "max_uses": max_uses, "description": description});
            let v = call(
                &client,
                Method::POST,
                "/portcullis/bootstrap-tokens",
                Some(body),
            )
            .await?;
            let token = v["token"].as_str().unwrap_or_default();
            let ca_hash = v["ca_hash"].as_str().unwrap_or_default();
            format!(
                "{}\n\njoin an edge with:\n  portcullis-gw run --control-plane https://<cp-host>:7443 --bootstrap-token {token} --ca-hash {ca_hash} --group {}",
                pretty(&v),
                v["group"].as_str().unwrap_or_default()
            )
        }
        Command::Token(TokenCommand::List { client }) => {
            pretty(&call(&client, Method::GET, "/portcullis/bootstrap-tokens", None).await?)
        }
        Command::Token(TokenCommand::Revoke { client, id }) => pretty(
            &call(
                &client,
                Method::DELETE,
                &format!("/portcullis/bootstrap-tokens/{id}"),
                None,
            )
            .await?,
        ),
        Command::Nodes(NodesCommand::List { client }) => {
            pretty(&call(&client, Method::GET, "/portcullis/nodes", None).await?)
        }
        Command::Nodes(NodesCommand::Revoke { client, id }) => pretty(
            &call(
                &client,
                Method::DELETE,
                &format!("/portcullis/nodes/{id}"),
                None,
            )
            .await?,
        ),
        Command::Ca(CaCommand::Show { client }) => {
            let v = call(&client, Method::GET, "/portcullis/ca", None).await?;
            format!(
                "{}\n{}",
                v["ca_hash"].as_str().unwrap_or_default(),
                v["certificate"].as_str().unwrap_or_default()
            )
        }
        Command::Config(command) => run_config(command).await?,
        Command::Serve(_) | Command::Migrate(_) => String::new(),
    })
}

async fn run_config(command: ConfigCommand) -> Result<String, CliError> {
    use reqwest::Method;
    let folder = |e: crate::config_folder::FolderError| CliError::Folder(e.to_string());
    match command {
        ConfigCommand::Dump { client, dir, force } => {
            let dump = call(&client, Method::GET, "/portcullis/config", None).await?;
            let n = crate::config_folder::write(&dir, &dump, force).map_err(folder)?;
            Ok(format!("wrote {n} files to {}", dir.display()))
        }
        ConfigCommand::Diff { client, dir, prune } => {
            let mut body = crate::config_folder::read(&dir).map_err(folder)?;
            body["dry_run"] = json!(true);
            body["prune"] = json!(prune);
            let plan = call(&client, Method::POST, "/portcullis/config", Some(body)).await?;
            Ok(render_plan(&plan))
        }
        ConfigCommand::Apply {
            client,
            dir,
            dry_run,
            prune,
        } => {
            let mut body = crate::config_folder::read(&dir).map_err(folder)?;
            body["dry_run"] = json!(dry_run);
            body["prune"] = json!(prune);
            let plan = call(&client, Method::POST, "/portcullis/config", Some(body)).await?;
            Ok(render_plan(&plan))
        }
    }
}

/// The answer of `POST /portcullis/config` as `diff` and `apply` print it: one line per
/// change (`+` create, `~` update with the fields, `-` delete, `?` kept), the warnings, and a
/// summary that says when nothing changed.
pub fn render_plan(plan: &Value) -> String {
    let mut out = String::new();
    let mut changed = 0;
    for c in plan["changes"].as_array().into_iter().flatten() {
        let (mark, note) = match c["op"].as_str().unwrap_or_default() {
            "create" => ("+", String::new()),
            "update" => {
                let fields: Vec<&str> = c["fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                ("~", format!(": {}", fields.join(", ")))
            }
            "delete" => ("-", String::new()),
            _ => (
                "?",
                " (not in the folder; kept, --prune deletes it)".to_owned(),
            ),
        };
        if mark != "?" {
            changed += 1;
        }
        let source = c["source"]
            .as_str()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{mark} {} {}{source}{note}\n",
            c["kind"].as_str().unwrap_or_default(),
            c["id"].as_str().unwrap_or_default()
        ));
    }
    for w in plan["warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "warning: {}: {}: stored, not enforced: {}\n",
            w["source"].as_str().unwrap_or_default(),
            w["field"].as_str().unwrap_or_default(),
            w["reason"].as_str().unwrap_or_default()
        ));
    }
    let unchanged = plan["unchanged"].as_u64().unwrap_or(0);
    let summary = match (changed, plan["dry_run"].as_bool().unwrap_or(true)) {
        (0, _) => format!("no changes ({unchanged} unchanged)"),
        (n, true) => {
            format!("{n} changes would be applied ({unchanged} unchanged); nothing was written")
        }
        (n, false) => format!("{n} changes applied in one transaction ({unchanged} unchanged)"),
    };
    out.push_str(&summary);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    fn serve(extra: &[&str]) -> Result<Config, CliError> {
        let mut args = vec![
            "portcullis-cp",
            "--database-url",
            "postgres://x/y",
            "--admin-secret",
            "admin-secret-of-at-least-thirty-two-bytes",
            "--encryption-secret",
            "encryption-secret-of-at-least-thirty-two-bytes",
        ];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).unwrap().serve.to_config()
    }

    #[test]
    fn oauth_lifetimes_default_to_tyk_and_are_bounded() {
        let c = serve(&[]).unwrap();
        assert_eq!(
            c.lifetime_rules.oauth,
            crate::oauth::OAuthLifetimes {
                code_secs: 250,
                token_secs: 3600,
                refresh_secs: 1_209_600
            }
        );
        let c = serve(&["--oauth-code-ttl", "1", "--oauth-token-ttl", "60"]).unwrap();
        assert_eq!(c.lifetime_rules.oauth.code_secs, 1);
        assert_eq!(c.lifetime_rules.oauth.token_secs, 60);
        for flag in [
            "--oauth-code-ttl",
            "--oauth-token-ttl",
            "--oauth-refresh-ttl",
        ] {
            for bad in ["0", "-5", "315360001"] {
                let e = serve(&[&format!("{flag}={bad}")]).unwrap_err().to_string();
                assert!(e.contains(flag), "{e}");
            }
        }
    }
}
