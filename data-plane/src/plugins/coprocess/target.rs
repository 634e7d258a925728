//! Where the plugin server listens (`--coprocess-grpc-server`), as Tyk writes it.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint, Uri};

/// A parsed `--coprocess-grpc-server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `tcp://host:port` (Tyk's form), `host:port` or `http://host:port`: plaintext HTTP/2,
    /// as Tyk's client speaks.
    Tcp(String),
    /// `unix:///path/to/socket`.
    Unix(std::path::PathBuf),
}

impl Target {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err("a unix socket must be given as unix:///absolute/path".into());
            }
            return Ok(Self::Unix(path.into()));
        }
        if s.starts_with("https://") {
            return Err(
                "TLS to the plugin server is not supported (Tyk's client speaks plaintext h2c)"
                    .into(),
            );
        }
        let authority = s
            .strip_prefix("tcp://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s)
            .trim_end_matches('/');
        let uri = format!("http://{authority}");
        match uri.parse::<Uri>() {
            Ok(u) if u.port_u16().is_some() && u.path() == "/" && !authority.contains('/') => {
                Ok(Self::Tcp(uri))
            }
            _ => Err(format!(
                "{s:?} is not tcp://host:port, http://host:port or unix:///path"
            )),
        }
    }

    /// A channel that connects at its first call and reconnects after a failure.
    pub fn channel(&self, connect_timeout: Duration) -> Result<Channel, String> {
        match self {
            Self::Tcp(uri) => Endpoint::from_shared(uri.clone())
                .map(|e| e.connect_timeout(connect_timeout).connect_lazy())
                .map_err(|e| e.to_string()),
            Self::Unix(path) => {
                let path = path.clone();
                // The URI is required by the builder and unused by the connector.
                let endpoint =
                    Endpoint::from_static("http://plugin.sock").connect_timeout(connect_timeout);
                Ok(
                    endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                        }
                    })),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_tyks_forms() {
        assert_eq!(
            Target::parse("tcp://127.0.0.1:5555"),
            Ok(Target::Tcp("http://127.0.0.1:5555".into()))
        );
        assert_eq!(
            Target::parse("http://plugins:5555/"),
            Ok(Target::Tcp("http://plugins:5555".into()))
        );
        assert_eq!(
            Target::parse("localhost:5555"),
            Ok(Target::Tcp("http://localhost:5555".into()))
        );
        assert_eq!(
            Target::parse("unix:///run/plugin.sock"),
            Ok(Target::Unix("/run/plugin.sock".into()))
        );
        for bad in [
            "tcp://host",
            "https://h:1",
            "unix://rel.sock",
            "tcp://h:1/x",
            "",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
