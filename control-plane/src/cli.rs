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
    #[arg(long, env = "PORTCULLIS_API_LISTEN", default_value = "0.0.0.0:7080")]
    pub api_listen: SocketAddr,
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
    /// Log as JSON lines instead of text.
    #[arg(long, env = "PORTCULLIS_LOG_JSON")]
    pub log_json: bool,
}

/// A flag the operator must give; the message names it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("missing {0} (flag or environment variable)")]
    Missing(&'static str),
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("--node-cert-ttl must be at least 60 seconds")]
    CertTtl,
    #[error("management API at {url}: {reason}")]
    Client { url: String, reason: String },
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
        if self.node_cert_ttl < 60 {
            return Err(CliError::CertTtl);
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
        Ok(Config {
            api_listen: self.api_listen,
            sync_listen: self.sync_listen,
            sync_names,
            database_url: self.database_url()?,
            admin_secret,
            encryption_secret,
            replica_name: self.replica_name.clone().unwrap_or_else(host_name),
            node_cert_ttl: Duration::from_secs(self.node_cert_ttl),
            max_db_connections: self.max_db_connections,
            lifetime_rules: crate::lifetime::LifetimeRules {
                global_session_lifetime: self.global_session_lifetime.max(0),
                force_global_session_lifetime: self.force_global_session_lifetime,
                respects_key_expiration: self.session_lifetime_respects_key_expiration,
            },
        })
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
    let mut req = reqwest::Client::new()
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
        Command::Serve(_) | Command::Migrate(_) => String::new(),
    })
}
