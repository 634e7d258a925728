//! The node identity (key, certificate, CA, id, group) and the last applied configuration,
//! kept in `--state-dir` so a restarted node neither re-joins nor needs a snapshot.

use std::io::Write;
use std::path::{Path, PathBuf};

use portcullis_proto::envelope::{EnvelopeKey, label};
use portcullis_proto::sync::Snapshot;
use prost::Message;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: String,
    pub group: String,
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.node_id)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// Files under the state dir. Written to a temporary name then renamed, so a crash mid-write
/// leaves the previous version.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

const IDENTITY_FILE: &str = "node.json";
const CONFIG_FILE: &str = "config.bin";

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // The identity holds a private key.
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

impl StateDir {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    pub fn load_identity(&self) -> Result<Option<Identity>, String> {
        match std::fs::read(self.dir.join(IDENTITY_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{IDENTITY_FILE}: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{IDENTITY_FILE}: {e}")),
        }
    }

    pub fn save_identity(&self, identity: &Identity) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(identity).map_err(std::io::Error::other)?;
        write_atomically(&self.dir.join(IDENTITY_FILE), &bytes)
    }

    /// The last applied configuration, sealed with the shared secret and bound to the group.
    pub fn save_config(
        &self,
        snapshot: &Snapshot,
        secret: &str,
        group: &str,
    ) -> std::io::Result<()> {
        let key = EnvelopeKey::derive(secret.as_bytes(), label::BACKUP);
        let sealed = key.seal(&snapshot.encode_to_vec(), group.as_bytes());
        write_atomically(&self.dir.join(CONFIG_FILE), &sealed)
    }

    pub fn load_config(&self, secret: &str, group: &str) -> Result<Option<Snapshot>, String> {
        let sealed = match std::fs::read(self.dir.join(CONFIG_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{CONFIG_FILE}: {e}")),
        };
        let key = EnvelopeKey::derive(secret.as_bytes(), label::BACKUP);
        let plain = key.open(&sealed, group.as_bytes()).map_err(|e| {
            format!("{CONFIG_FILE} cannot be opened (other secret, other group or tampered): {e}")
        })?;
        Snapshot::decode(plain.as_slice())
            .map(Some)
            .map_err(|e| format!("{CONFIG_FILE}: {e}"))
    }
}
