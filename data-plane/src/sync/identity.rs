//! The node identity (key, certificate, CA, id, group) and the last applied configuration,
//! kept in `--state-dir` so a restarted node neither re-joins nor needs a snapshot.
//!
//! The private key is sealed under `--encryption-secret` and bound to the node id and group,
//! so a copied `node.json` opens neither with another secret nor as another node.

use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
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

/// `node.json` as written: the key sealed. `key_pem` is only read, from files written before
/// the key was sealed, and the file is rewritten sealed at once.
#[derive(Serialize, Deserialize)]
struct StoredIdentity {
    node_id: String,
    group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_sealed: Option<String>,
    #[serde(default, skip_serializing)]
    key_pem: Option<String>,
    cert_pem: String,
    ca_pem: String,
}

fn key_aad(node_id: &str, group: &str) -> Vec<u8> {
    // NUL cannot occur in either, so no two (id, group) pairs share an encoding.
    format!("portcullis node key\0{node_id}\0{group}").into_bytes()
}

/// Files under the state dir. Written to a temporary name then renamed, so a crash mid-write
/// leaves the previous version.
#[derive(Clone)]
pub struct StateDir {
    dir: PathBuf,
    key: EnvelopeKey,
}

impl std::fmt::Debug for StateDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDir")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
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
    /// `secret` is `--encryption-secret`: it seals the node's private key.
    pub fn open(dir: &Path, secret: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            key: EnvelopeKey::derive(secret.as_bytes(), label::NODE_KEY),
        })
    }

    pub fn load_identity(&self) -> Result<Option<Identity>, String> {
        let bytes = match std::fs::read(self.dir.join(IDENTITY_FILE)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{IDENTITY_FILE}: {e}")),
        };
        let stored: StoredIdentity =
            serde_json::from_slice(&bytes).map_err(|e| format!("{IDENTITY_FILE}: {e}"))?;
        let aad = key_aad(&stored.node_id, &stored.group);
        let (key_pem, legacy) = match (stored.key_sealed, stored.key_pem) {
            (Some(sealed), _) => {
                let cannot_open = || {
                    format!(
                        "{IDENTITY_FILE}: the node key cannot be opened: this state dir was \
                         written with another --encryption-secret, or the file was copied from \
                         another node or altered"
                    )
                };
                let sealed = B64.decode(sealed).map_err(|_| cannot_open())?;
                let plain = self.key.open(&sealed, &aad).map_err(|_| cannot_open())?;
                let pem = String::from_utf8(plain).map_err(|_| cannot_open())?;
                (pem, false)
            }
            (None, Some(pem)) => (pem, true),
            (None, None) => return Err(format!("{IDENTITY_FILE}: no node key")),
        };
        let identity = Identity {
            node_id: stored.node_id,
            group: stored.group,
            key_pem,
            cert_pem: stored.cert_pem,
            ca_pem: stored.ca_pem,
        };
        if legacy {
            // Written before keys were sealed: seal it now rather than at the next renewal.
            self.save_identity(&identity)
                .map_err(|e| format!("{IDENTITY_FILE}: cannot rewrite the node key sealed: {e}"))?;
            tracing::info!(file = IDENTITY_FILE, "sealed the node key in the state dir");
        }
        Ok(Some(identity))
    }

    pub fn save_identity(&self, identity: &Identity) -> std::io::Result<()> {
        let aad = key_aad(&identity.node_id, &identity.group);
        let stored = StoredIdentity {
            node_id: identity.node_id.clone(),
            group: identity.group.clone(),
            key_sealed: Some(B64.encode(self.key.seal(identity.key_pem.as_bytes(), &aad))),
            key_pem: None,
            cert_pem: identity.cert_pem.clone(),
            ca_pem: identity.ca_pem.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&stored).map_err(std::io::Error::other)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "state-dir-test-secret-0123456789abcdef";
    const KEY_BODY: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgnodekeybody";

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let dir = std::env::temp_dir().join(format!(
                "portcullis-identity-{name}-{}-{nanos}",
                std::process::id()
            ));
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn identity() -> Identity {
        Identity {
            node_id: "node-1".into(),
            group: "eu".into(),
            key_pem: format!(
                "-----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n-----END PRIVATE KEY-----\n"
            ),
            cert_pem: "-----BEGIN CERTIFICATE-----\ncert\n-----END CERTIFICATE-----\n".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n".into(),
        }
    }

    fn on_disk(dir: &TempDir) -> String {
        std::fs::read_to_string(dir.0.join(IDENTITY_FILE)).unwrap()
    }

    #[test]
    fn the_key_is_sealed_on_disk_and_round_trips() {
        let tmp = TempDir::new("sealed");
        let dir = StateDir::open(&tmp.0, SECRET).unwrap();
        dir.save_identity(&identity()).unwrap();
        let raw = on_disk(&tmp);
        assert!(!raw.contains("PRIVATE KEY"), "{raw}");
        assert!(!raw.contains(KEY_BODY), "{raw}");
        assert!(!raw.contains("key_pem"), "{raw}");
        let back = dir.load_identity().unwrap().unwrap();
        assert_eq!(back.key_pem, identity().key_pem);
        assert_eq!(back.node_id, "node-1");
        assert_eq!(back.cert_pem, identity().cert_pem);
    }

    #[test]
    fn a_plaintext_file_from_an_older_version_loads_and_is_rewritten_sealed() {
        let tmp = TempDir::new("legacy");
        let dir = StateDir::open(&tmp.0, SECRET).unwrap();
        let id = identity();
        let legacy = serde_json::json!({
            "node_id": id.node_id, "group": id.group, "key_pem": id.key_pem,
            "cert_pem": id.cert_pem, "ca_pem": id.ca_pem,
        });
        std::fs::write(tmp.0.join(IDENTITY_FILE), legacy.to_string()).unwrap();
        let back = dir.load_identity().unwrap().unwrap();
        assert_eq!(back.key_pem, id.key_pem);
        let raw = on_disk(&tmp);
        assert!(!raw.contains("PRIVATE KEY"), "rewritten sealed: {raw}");
        assert!(!raw.contains(KEY_BODY), "{raw}");
        assert!(raw.contains("key_sealed"), "{raw}");
        assert_eq!(dir.load_identity().unwrap().unwrap().key_pem, id.key_pem);
    }

    #[test]
    fn another_secret_or_another_node_cannot_open_the_key() {
        let tmp = TempDir::new("wrong");
        StateDir::open(&tmp.0, SECRET)
            .unwrap()
            .save_identity(&identity())
            .unwrap();
        let err = StateDir::open(&tmp.0, "another-secret-of-at-least-32-bytes!!")
            .unwrap()
            .load_identity()
            .unwrap_err();
        assert!(err.starts_with("node.json: "), "{err}");
        assert!(err.contains("--encryption-secret"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");

        // The same file with its node id changed (copied and renamed) is refused too.
        let raw = on_disk(&tmp).replace("\"node-1\"", "\"node-2\"");
        std::fs::write(tmp.0.join(IDENTITY_FILE), raw).unwrap();
        let err = StateDir::open(&tmp.0, SECRET)
            .unwrap()
            .load_identity()
            .unwrap_err();
        assert!(err.contains("cannot be opened"), "{err}");
    }
}
