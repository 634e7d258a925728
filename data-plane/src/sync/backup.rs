//! The configuration backup in the regional Redis (docs/operations.md): after each applied revision the
//! gateway seals its configuration under a key derived from the shared secret and stores it per
//! group, so a gateway that starts while the control plane is unreachable, even a brand-new one,
//! serves the group's last configuration.
//!
//! Stored value: `PCB1` ‖ u32 header length ‖ header JSON ‖ sealed snapshot. The header travels in
//! clear so the reader can name what it found; it is also the associated data of the seal, so a
//! header edited to claim another group, revision or hash fails to open like a tampered body.

use portcullis_proto::envelope::{EnvelopeKey, label};
use portcullis_proto::sync::Snapshot;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::redis_link::RedisLink;

const MAGIC: &[u8; 4] = b"PCB1";
/// Bumped when the snapshot encoding changes incompatibly.
pub const SCHEMA: u32 = 1;
const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub group: String,
    pub revision: u64,
    pub hash: String,
    pub schema: u32,
}

impl Header {
    fn associated_data(&self) -> Vec<u8> {
        format!(
            "{}\0{}\0{}\0{}",
            self.group, self.revision, self.hash, self.schema
        )
        .into_bytes()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackupError {
    #[error("not a Portcullis configuration backup")]
    Malformed,
    #[error("the backup belongs to group {found:?}, this gateway serves group {expected:?}")]
    OtherGroup { found: String, expected: String },
    #[error("the backup has schema version {0}, this gateway reads version {SCHEMA}")]
    Schema(u32),
    #[error("the backup cannot be opened: tampered with, or sealed with another encryption secret")]
    Tampered,
    #[error("the backup's content does not match its header: {0}")]
    Inconsistent(String),
}

/// The Redis key of a group's backup, under the regional prefix.
/// The backup's key; its `:hash` companion is written in the same transaction, so on a Redis
/// Cluster the group is a hash tag that keeps both in one slot.
pub fn redis_key(link: &RedisLink, group: &str) -> String {
    let prefix = link.prefix();
    if link.is_cluster() {
        format!("{prefix}backup:{{{group}}}")
    } else {
        format!("{prefix}backup:{group}")
    }
}

pub fn seal(snapshot: &Snapshot, group: &str, secret: &str) -> Vec<u8> {
    let header = Header {
        group: group.to_owned(),
        revision: snapshot.revision,
        hash: snapshot.config_hash.clone(),
        schema: SCHEMA,
    };
    let head = serde_json::to_vec(&header).unwrap_or_default();
    let key = EnvelopeKey::derive(secret.as_bytes(), label::BACKUP);
    let sealed = key.seal(&snapshot.encode_to_vec(), &header.associated_data());
    let mut out = Vec::with_capacity(8 + head.len() + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&u32::try_from(head.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&sealed);
    out
}

/// Opens a backup for `group`; every refusal says why.
pub fn open(bytes: &[u8], group: &str, secret: &str) -> Result<(Header, Snapshot), BackupError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(BackupError::Malformed)?;
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or(BackupError::Malformed)?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| BackupError::Malformed)?;
    if rest.len() < len {
        return Err(BackupError::Malformed);
    }
    let (head, sealed) = rest.split_at(len);
    let header: Header = serde_json::from_slice(head).map_err(|_| BackupError::Malformed)?;
    if header.group != group {
        return Err(BackupError::OtherGroup {
            found: header.group,
            expected: group.to_owned(),
        });
    }
    if header.schema != SCHEMA {
        return Err(BackupError::Schema(header.schema));
    }
    let key = EnvelopeKey::derive(secret.as_bytes(), label::BACKUP);
    let plain = key
        .open(sealed, &header.associated_data())
        .map_err(|_| BackupError::Tampered)?;
    let snapshot =
        Snapshot::decode(plain.as_slice()).map_err(|e| BackupError::Inconsistent(e.to_string()))?;
    if snapshot.revision != header.revision || snapshot.config_hash != header.hash {
        return Err(BackupError::Inconsistent(format!(
            "header says revision {} hash {}, content is revision {} hash {}",
            header.revision, header.hash, snapshot.revision, snapshot.config_hash
        )));
    }
    Ok((header, snapshot))
}

/// Stores a sealed backup with its config hash beside it; the last writer of the group wins
/// (gateways of a group converge on the same revision within milliseconds, and any revision is a
/// valid base to resume from).
pub async fn store(
    link: &std::sync::Arc<RedisLink>,
    group: &str,
    hash: &str,
    sealed: Vec<u8>,
) -> bool {
    let Some(mut conn) = link.conn() else {
        return false;
    };
    let key = redis_key(link, group);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .set(&key, sealed)
        .ignore()
        .set(format!("{key}:hash"), hash)
        .ignore();
    match tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(&mut conn)).await {
        Ok(Ok(())) => true,
        _ => {
            link.failed();
            false
        }
    }
}

/// The config hash of the group's stored backup: a gateway holding the same configuration need
/// not write it again (every gateway of a group would otherwise rewrite it at every bookmark).
pub async fn stored_hash(link: &std::sync::Arc<RedisLink>, group: &str) -> Option<String> {
    let mut conn = link.conn()?;
    let mut cmd = redis::cmd("GET");
    cmd.arg(format!("{}:hash", redis_key(link, group)));
    match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<Option<String>>(&mut conn)).await {
        Ok(Ok(v)) => v,
        _ => {
            link.failed();
            None
        }
    }
}

/// Reads the group's backup, if Redis answers and holds one.
pub async fn fetch(link: &std::sync::Arc<RedisLink>, group: &str) -> Option<Vec<u8>> {
    // A gateway starting with Redis is given a moment to connect before it gives up on it.
    let deadline = tokio::time::Instant::now() + REDIS_TIMEOUT;
    let mut conn = loop {
        if let Some(c) = link.conn() {
            break c;
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut cmd = redis::cmd("GET");
    cmd.arg(redis_key(link, group));
    match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<Option<Vec<u8>>>(&mut conn)).await {
        Ok(Ok(v)) => v,
        _ => {
            link.failed();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_proto::sync::Resource;

    fn snapshot() -> Snapshot {
        Snapshot {
            revision: 42,
            config_hash: "abc".into(),
            chunk: 0,
            chunks: 1,
            resources: vec![Resource {
                kind: 1,
                id: "api".into(),
                body: bytes::Bytes::from_static(b"{}"),
            }],
            reason: String::new(),
        }
    }

    #[test]
    fn a_backup_opens_only_for_its_group_secret_and_untouched_bytes() {
        let sealed = seal(&snapshot(), "eu", "secret");
        let (header, back) = open(&sealed, "eu", "secret").unwrap();
        assert_eq!((header.revision, back), (42, snapshot()));
        assert_eq!(
            open(&sealed, "us", "secret").unwrap_err(),
            BackupError::OtherGroup {
                found: "eu".into(),
                expected: "us".into()
            }
        );
        assert_eq!(
            open(&sealed, "eu", "other").unwrap_err(),
            BackupError::Tampered
        );
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            open(&flipped, "eu", "secret").unwrap_err(),
            BackupError::Tampered
        );
        // A header rewritten to claim another group still fails: it is the associated data.
        let len = u32::from_be_bytes(sealed[4..8].try_into().unwrap()) as usize;
        let head = String::from_utf8(sealed[8..8 + len].to_vec())
            .unwrap()
            .replace("\"eu\"", "\"us\"");
        let mut relabelled = MAGIC.to_vec();
        relabelled.extend_from_slice(&(head.len() as u32).to_be_bytes());
        relabelled.extend_from_slice(head.as_bytes());
        relabelled.extend_from_slice(&sealed[8 + len..]);
        assert_eq!(
            open(&relabelled, "us", "secret").unwrap_err(),
            BackupError::Tampered
        );
        assert_eq!(
            open(b"junk", "eu", "secret").unwrap_err(),
            BackupError::Malformed
        );
    }
}
