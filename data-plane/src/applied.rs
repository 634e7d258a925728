//! The configuration this edge holds: resources by (kind, id) with their digests and parsed
//! routes. Snapshots and changes are applied all or nothing; the caller builds the routing
//! table from the result and swaps it in.
//!
//! Certificates are held only while an API held here references one, or while it is tagged
//! for this edge's group; the control plane computes the same visibility for the group's
//! config hash (docs/certificates.md).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use portcullis_proto::config_hash::{config_hash, resource_digest};
use portcullis_proto::model::oauth::OAuthClient;
use portcullis_proto::model::{ApiDefinition, Policy, PolicySpec};
use portcullis_proto::sync::{Changes, Resource, ResourceKind, Snapshot};

use crate::certs::{CertStore, StoreCert};
use crate::router::{Route, RoutingTable};
use crate::tls::{ApiTls, TlsHosts};

/// Why a message could not be applied; the text goes back to the CP in the NACK. The prefixes
/// "config hash mismatch" and "base revision mismatch" ask the CP for a snapshot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("config hash mismatch: control plane says {expected}, edge computed {computed}")]
    HashMismatch { expected: String, computed: String },
    #[error("base revision mismatch: edge holds {held}, changes start at {from}")]
    BaseMismatch { held: i64, from: i64 },
    #[error("invalid resource {id}: {reason}")]
    Invalid { id: String, reason: String },
    #[error("snapshot chunks out of order: expected chunk {expected} of revision {revision}")]
    Chunks { expected: u32, revision: u64 },
}

impl ApplyError {
    pub fn resource_ids(&self) -> Vec<String> {
        match self {
            Self::Invalid { id, .. } => vec![id.clone()],
            _ => Vec::new(),
        }
    }
}

/// One resource as this edge holds it: the bytes the CP sent (for the hash, the state dir and
/// backups) and what they mean, parsed and validated once when applied. Apply, undo, hashing
/// and snapshots treat every kind alike; only [`Parsed::of`] knows the kinds.
#[derive(Debug, Clone)]
struct HeldResource {
    body: Bytes,
    digest: [u8; 32],
    parsed: Parsed,
}

#[derive(Debug, Clone)]
enum Parsed {
    Api {
        route: Arc<Route>,
        /// Its TLS needs (server certificates, client certificates at the handshake).
        tls: Arc<ApiTls>,
        /// Every store id it references: what keeps a certificate held.
        cert_refs: Vec<String>,
    },
    Policy(Arc<PolicySpec>),
    /// An OAuth client, its (sealed) secret dropped: only the control plane checks it.
    OAuthClient(Arc<OAuthClient>),
    /// A certificate with its private key opened, and the groups it is tagged for.
    Certificate {
        cert: Arc<StoreCert>,
        tags: Vec<String>,
    },
    /// A kind this build does not know yet: held (so the hash matches) but unused.
    Other,
}

#[derive(Debug, Clone, Default)]
pub struct AppliedConfig {
    pub revision: i64,
    pub hash: String,
    /// This edge's group: which tagged certificates it keeps.
    group: String,
    resources: BTreeMap<(i32, String), HeldResource>,
}

const CERTIFICATE: i32 = ResourceKind::Certificate as i32;
const OAUTH_CLIENT: i32 = ResourceKind::OauthClient as i32;

impl Parsed {
    fn of(r: &Resource) -> Result<Self, ApplyError> {
        let invalid = |reason: String| ApplyError::Invalid {
            id: r.id.clone(),
            reason,
        };
        let json = || -> Result<serde_json::Value, ApplyError> {
            serde_json::from_slice(&r.body).map_err(|e| invalid(format!("malformed JSON: {e}")))
        };
        Ok(if r.kind == ResourceKind::Api as i32 {
            let def = ApiDefinition::from_value(json()?).map_err(|e| invalid(e.to_string()))?;
            Self::Api {
                route: Arc::new(Route::from_definition(&def).map_err(|e| invalid(e.to_string()))?),
                tls: Arc::new(ApiTls::of(&def)),
                cert_refs: def.certificate_refs().map(str::to_owned).collect(),
            }
        } else if r.kind == ResourceKind::Policy as i32 {
            let p = Policy::from_value(json()?).map_err(|e| invalid(e.to_string()))?;
            Self::Policy(Arc::new(p.spec().clone()))
        } else if r.kind == OAUTH_CLIENT {
            let mut client: OAuthClient = serde_json::from_slice(&r.body)
                .map_err(|e| invalid(format!("malformed OAuth client: {e}")))?;
            client.validate().map_err(|e| invalid(e.to_string()))?;
            if client.client_id != r.id {
                return Err(invalid("client_id differs from the resource id".into()));
            }
            client.secret = String::new();
            Self::OAuthClient(Arc::new(client))
        } else if r.kind == CERTIFICATE {
            let (record, cert) =
                crate::certs::parse_resource(&r.id, &r.body).map_err(|e| invalid(e.to_string()))?;
            Self::Certificate {
                cert: Arc::new(cert),
                tags: record.tags,
            }
        } else {
            Self::Other
        })
    }
}

fn held(r: &Resource) -> Result<HeldResource, ApplyError> {
    Ok(HeldResource {
        body: r.body.clone(),
        digest: resource_digest(r.kind, &r.id, &r.body),
        parsed: Parsed::of(r)?,
    })
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl AppliedConfig {
    /// Builds a configuration from every chunk of one snapshot, for an edge of `group`.
    pub fn from_snapshot(chunks: &[Snapshot], group: &str) -> Result<Self, ApplyError> {
        let Some(first) = chunks.first() else {
            return Err(ApplyError::Chunks {
                expected: 0,
                revision: 0,
            });
        };
        let mut resources = BTreeMap::new();
        for (i, chunk) in chunks.iter().enumerate() {
            if chunk.chunk as usize != i
                || chunk.revision != first.revision
                || chunk.chunks != first.chunks
            {
                return Err(ApplyError::Chunks {
                    expected: i as u32,
                    revision: first.revision,
                });
            }
            for r in &chunk.resources {
                resources.insert((r.kind, r.id.clone()), held(r)?);
            }
        }
        let mut config = Self {
            revision: to_i64(first.revision),
            hash: first.config_hash.clone(),
            group: group.to_owned(),
            resources,
        };
        config.collect_certificates(&mut Vec::new());
        config.check_hash(&first.config_hash)?;
        Ok(config)
    }

    /// Applies a delta in place, or leaves `self` untouched and says why not.
    pub fn apply_changes(&mut self, c: &Changes) -> Result<(), ApplyError> {
        if to_i64(c.from_revision) != self.revision {
            return Err(ApplyError::BaseMismatch {
                held: self.revision,
                from: to_i64(c.from_revision),
            });
        }
        // Applied in place with an undo log: a delta touches a few resources, and copying a
        // configuration of thousands of APIs for each one would cost more than the delta.
        let mut undo: Vec<((i32, String), Option<HeldResource>)> = Vec::new();
        let result = self.apply_in_place(c, &mut undo);
        if let Err(e) = result {
            for (key, old) in undo.into_iter().rev() {
                match old {
                    Some(h) => self.resources.insert(key, h),
                    None => self.resources.remove(&key),
                };
            }
            return Err(e);
        }
        self.revision = to_i64(c.to_revision);
        self.hash = c.config_hash.clone();
        Ok(())
    }

    fn apply_in_place(
        &mut self,
        c: &Changes,
        undo: &mut Vec<((i32, String), Option<HeldResource>)>,
    ) -> Result<(), ApplyError> {
        for r in &c.upserts {
            let key = (r.kind, r.id.clone());
            let old = self.resources.insert(key.clone(), held(r)?);
            undo.push((key, old));
        }
        for d in &c.deletes {
            let key = (d.kind, d.id.clone());
            if let Some(old) = self.resources.remove(&key) {
                undo.push((key, Some(old)));
            }
        }
        self.collect_certificates(undo);
        self.check_hash(&c.config_hash)
    }

    /// Drops the certificates no held API references and that are not tagged for this
    /// edge's group (recorded in `undo`).
    fn collect_certificates(&mut self, undo: &mut Vec<((i32, String), Option<HeldResource>)>) {
        let has_certs = self.resources.keys().any(|(k, _)| *k == CERTIFICATE);
        if !has_certs {
            return;
        }
        let referenced: HashSet<&str> = self
            .resources
            .values()
            .flat_map(|h| match &h.parsed {
                Parsed::Api { cert_refs, .. } => cert_refs.as_slice(),
                _ => &[],
            })
            .map(String::as_str)
            .collect();
        let unused: Vec<(i32, String)> = self
            .resources
            .iter()
            .filter(|((_, id), h)| match &h.parsed {
                Parsed::Certificate { tags, .. } => {
                    !referenced.contains(id.as_str())
                        && !tags.iter().any(|t| t == "*" || *t == self.group)
                }
                _ => false,
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in unused {
            if let Some(old) = self.resources.remove(&key) {
                undo.push((key, Some(old)));
            }
        }
    }

    /// A bookmark moves the revision when the content is what the CP says it is.
    pub fn apply_bookmark(&mut self, revision: u64, hash: &str) -> Result<(), ApplyError> {
        self.check_hash(hash)?;
        self.revision = to_i64(revision);
        Ok(())
    }

    fn check_hash(&self, expected: &str) -> Result<(), ApplyError> {
        let computed = self.computed_hash();
        if computed != expected {
            return Err(ApplyError::HashMismatch {
                expected: expected.to_owned(),
                computed,
            });
        }
        Ok(())
    }

    pub fn computed_hash(&self) -> String {
        config_hash(self.resources.values().map(|h| &h.digest))
    }

    pub fn routing_table(&self) -> RoutingTable {
        let parsed = || self.resources.values().map(|h| &h.parsed);
        let policies = parsed()
            .filter_map(|p| match p {
                Parsed::Policy(p) => Some((p.id.clone(), p.clone())),
                _ => None,
            })
            .collect();
        let certs = CertStore::new(parsed().filter_map(|p| match p {
            Parsed::Certificate { cert, .. } => Some(cert.clone()),
            _ => None,
        }));
        let tls = TlsHosts::build(
            parsed().filter_map(|p| match p {
                Parsed::Api { tls, .. } => Some(tls.as_ref()),
                _ => None,
            }),
            &certs,
        );
        RoutingTable::new(parsed().filter_map(|p| match p {
            Parsed::Api { route, .. } => Some(route),
            _ => None,
        }))
        .with_policies(policies)
        .with_oauth_clients(
            parsed()
                .filter_map(|p| match p {
                    Parsed::OAuthClient(c) => Some((c.client_id.clone(), c.clone())),
                    _ => None,
                })
                .collect(),
        )
        .with_certs(certs)
        .with_tls(tls)
    }

    /// The group this configuration is held for.
    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// The configuration as one snapshot message, for the state dir and backups.
    pub fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            revision: u64::try_from(self.revision).unwrap_or(0),
            config_hash: self.hash.clone(),
            chunk: 0,
            chunks: 1,
            resources: self
                .resources
                .iter()
                .map(|((kind, id), h)| Resource {
                    kind: *kind,
                    id: id.clone(),
                    body: h.body.clone(),
                })
                .collect(),
            reason: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use portcullis_proto::sync::ResourceRef;

    use super::*;

    fn api(id: &str, path: &str) -> Resource {
        let body = format!(
            r#"{{"api_id":"{id}","proxy":{{"listen_path":"{path}","target_url":"http://127.0.0.1:9/"}}}}"#
        );
        Resource {
            kind: ResourceKind::Api as i32,
            id: id.into(),
            body: Bytes::from(body),
        }
    }

    fn hash_of(resources: &[Resource]) -> String {
        let mut digests: Vec<_> = resources
            .iter()
            .map(|r| {
                (
                    (r.kind, r.id.clone()),
                    resource_digest(r.kind, &r.id, &r.body),
                )
            })
            .collect();
        digests.sort();
        config_hash(digests.iter().map(|(_, d)| d))
    }

    const SECRET: &str = "unit-test-encryption-secret-0123456789";

    /// A CERTIFICATE resource: a self-signed leaf for `names`, its key sealed with `secret`.
    fn cert_resource(id: &str, names: &[&str], tags: &[&str], secret: &str) -> Resource {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let sealed = portcullis_proto::sealed_field::seal(
            &portcullis_proto::sealed_field::certificate_key(secret),
            id,
            portcullis_proto::model::certificate::PRIVATE_KEY_FIELD,
            &key.serialize_pem(),
        );
        let record = portcullis_proto::model::certificate::CertificateRecord {
            id: id.into(),
            certificate_pem: cert.pem(),
            private_key: sealed,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            ..Default::default()
        };
        Resource {
            kind: ResourceKind::Certificate as i32,
            id: id.into(),
            body: Bytes::from(serde_json::to_vec(&record).unwrap()),
        }
    }

    fn tls_api(id: &str, domain: &str, certs: &[&str]) -> Resource {
        let body = serde_json::json!({
            "api_id": id, "domain": domain, "use_keyless": true, "active": true,
            "certificates": certs,
            "proxy": {"listen_path": format!("/{id}/"), "target_url": "http://127.0.0.1:9/"}
        });
        Resource {
            kind: ResourceKind::Api as i32,
            id: id.into(),
            body: Bytes::from(body.to_string()),
        }
    }

    fn snapshot(resources: Vec<Resource>, hashed: &[&Resource]) -> Snapshot {
        let hashed: Vec<Resource> = hashed.iter().map(|r| (*r).clone()).collect();
        Snapshot {
            revision: 1,
            config_hash: hash_of(&hashed),
            chunk: 0,
            chunks: 1,
            resources,
            reason: String::new(),
        }
    }

    #[test]
    fn certificates_are_held_while_referenced_or_tagged_for_the_group() {
        crate::certs::set_encryption_secret(SECRET);
        let api = tls_api("a", "a.example.com", &["served"]);
        let served = cert_resource("served", &["a.example.com"], &[], SECRET);
        let tagged = cert_resource("tagged", &["t.example.com"], &["eu"], SECRET);
        let everywhere = cert_resource("everywhere", &["s.example.com"], &["*"], SECRET);
        let other_group = cert_resource("other-group", &["o.example.com"], &["us"], SECRET);
        let unused = cert_resource("unused", &["u.example.com"], &[], SECRET);
        let all = vec![
            api.clone(),
            served.clone(),
            tagged.clone(),
            everywhere.clone(),
            other_group.clone(),
            unused.clone(),
        ];
        // The control plane hashes only what the group sees; the edge drops the rest first.
        let snap = snapshot(all, &[&api, &served, &tagged, &everywhere]);
        let mut c = AppliedConfig::from_snapshot(&[snap], "eu").unwrap();
        let table = c.routing_table();
        let mut ids: Vec<&str> = table.certs.iter().map(|c| c.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["everywhere", "served", "tagged"]);
        assert!(table.certs.get("served").unwrap().certified_key.is_some());
        assert!(table.tls.config_for(Some("a.example.com")).is_some());
        assert!(
            table.tls.config_for(Some("b.example.com")).is_none(),
            "no domain-less API has a certificate"
        );
        // The saved configuration holds exactly what was kept, and loads again.
        let saved = c.to_snapshot();
        assert_eq!(saved.resources.len(), 4);
        AppliedConfig::from_snapshot(&[saved], "eu").unwrap();

        // The API stops referencing its certificate: the edge drops it with the same delta.
        let bare = tls_api("a", "a.example.com", &[]);
        let changes = Changes {
            from_revision: 1,
            to_revision: 2,
            config_hash: hash_of(&[bare.clone(), tagged.clone(), everywhere.clone()]),
            upserts: vec![bare],
            deletes: vec![],
            session_events: vec![],
            cache_flushes: vec![],
        };
        c.apply_changes(&changes).unwrap();
        assert!(c.routing_table().certs.get("served").is_none());
        assert!(c.routing_table().tls.is_empty());

        // Referencing it again without the CP resending it: the hash tells the edge it lacks
        // it (NACK, snapshot), and what it had is kept meanwhile.
        let again = tls_api("a", "a.example.com", &["served"]);
        let missing = Changes {
            from_revision: 2,
            to_revision: 3,
            config_hash: hash_of(&[again.clone(), served.clone(), tagged, everywhere]),
            upserts: vec![again],
            deletes: vec![],
            session_events: vec![],
            cache_flushes: vec![],
        };
        let before = c.computed_hash();
        assert!(
            c.apply_changes(&missing)
                .unwrap_err()
                .to_string()
                .starts_with("config hash mismatch")
        );
        assert_eq!((c.revision, c.computed_hash()), (2, before));
    }

    #[test]
    fn a_certificate_that_does_not_parse_or_whose_key_does_not_open_is_refused() {
        crate::certs::set_encryption_secret(SECRET);
        let api = tls_api("a", "", &["c"]);
        let wrong_secret = cert_resource(
            "c",
            &["a.example.com"],
            &[],
            "another-secret-0123456789abcdef012",
        );
        let snap = snapshot(
            vec![api.clone(), wrong_secret.clone()],
            &[&api, &wrong_secret],
        );
        let err = AppliedConfig::from_snapshot(&[snap], "default").unwrap_err();
        assert_eq!(err.resource_ids(), ["c"]);
        assert!(err.to_string().contains("does not open"), "{err}");

        let mut garbage = cert_resource("c", &["a.example.com"], &[], SECRET);
        garbage.body = Bytes::from_static(br#"{"id":"c","certificate_pem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n","meta":{"id":"c","fingerprint":"","has_private":false,"issuer":"","subject":"","not_before":"","not_after":"","is_ca":false}}"#);
        let snap = snapshot(vec![api.clone(), garbage.clone()], &[&api, &garbage]);
        let err = AppliedConfig::from_snapshot(&[snap], "default").unwrap_err();
        assert_eq!(err.resource_ids(), ["c"], "{err}");

        let mut renamed = cert_resource("c", &["a.example.com"], &[], SECRET);
        renamed.id = "d".into();
        let api_d = tls_api("a", "", &["d"]);
        let snap = snapshot(vec![api_d.clone(), renamed.clone()], &[&api_d, &renamed]);
        let err = AppliedConfig::from_snapshot(&[snap], "default").unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");

        // A bad certificate in a delta leaves the configuration as it was.
        let snap = snapshot(vec![api.clone()], &[&api]);
        let mut c = AppliedConfig::from_snapshot(&[snap], "default").unwrap();
        let bad = Changes {
            from_revision: 1,
            to_revision: 2,
            config_hash: hash_of(&[api.clone(), wrong_secret.clone()]),
            upserts: vec![wrong_secret],
            deletes: vec![],
            session_events: vec![],
            cache_flushes: vec![],
        };
        assert!(c.apply_changes(&bad).is_err());
        assert_eq!(c.revision, 1);
        assert!(c.routing_table().certs.is_empty());
    }

    fn oauth_client(id: &str, body: serde_json::Value) -> Resource {
        Resource {
            kind: ResourceKind::OauthClient as i32,
            id: id.into(),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn oauth_clients_are_held_by_id_without_their_secret_and_go_with_their_deletion() {
        let a = api("a", "/a/");
        let c = oauth_client(
            "c1",
            serde_json::json!({"client_id": "c1", "secret": "sealed-value", "api_id": "a",
                "redirect_uri": "http://app.example/cb"}),
        );
        let snap = snapshot(vec![a.clone(), c.clone()], &[&a, &c]);
        let mut config = AppliedConfig::from_snapshot(&[snap], "default").unwrap();
        let table = config.routing_table();
        let held = table.oauth_clients.get("c1").unwrap();
        assert!(
            held.secret.is_empty(),
            "the edge never holds a client secret"
        );
        assert!(held.allows_redirect("http://app.example/cb"));
        // The bytes the CP sent are kept as they came, for the hash and the state dir.
        assert_eq!(config.to_snapshot().resources.len(), 2);

        let gone = Changes {
            from_revision: 1,
            to_revision: 2,
            config_hash: hash_of(std::slice::from_ref(&a)),
            upserts: vec![],
            deletes: vec![ResourceRef {
                kind: ResourceKind::OauthClient as i32,
                id: "c1".into(),
            }],
            session_events: vec![],
            cache_flushes: vec![],
        };
        config.apply_changes(&gone).unwrap();
        assert!(config.routing_table().oauth_clients.is_empty());

        for bad in [
            oauth_client("c2", serde_json::json!({"client_id": "other"})),
            oauth_client(
                "c3",
                serde_json::json!({"client_id": "c3", "redirect_uri": "x#y"}),
            ),
            oauth_client("c4", serde_json::json!(["not", "an", "object"])),
        ] {
            let snap = snapshot(vec![bad.clone()], &[&bad]);
            let err = AppliedConfig::from_snapshot(&[snap], "default").unwrap_err();
            assert_eq!(err.resource_ids(), std::slice::from_ref(&bad.id), "{err}");
        }
    }

    #[test]
    fn snapshot_then_changes_then_a_bad_change_leaves_the_config_untouched() {
        let a = api("a", "/a/");
        let snap = Snapshot {
            revision: 3,
            config_hash: hash_of(std::slice::from_ref(&a)),
            chunk: 0,
            chunks: 1,
            resources: vec![a.clone()],
            reason: String::new(),
        };
        let mut c = AppliedConfig::from_snapshot(&[snap], "default").unwrap();
        assert_eq!(c.routing_table().len(), 1);

        let b = api("b", "/b/");
        let ok = Changes {
            from_revision: 3,
            to_revision: 5,
            config_hash: hash_of(std::slice::from_ref(&b)),
            upserts: vec![b],
            deletes: vec![ResourceRef {
                kind: 1,
                id: "a".into(),
            }],
            session_events: vec![],
            cache_flushes: vec![],
        };
        c.apply_changes(&ok).unwrap();
        assert_eq!(c.revision, 5);
        assert!(c.routing_table().lookup(None, "/b/x").is_some());
        assert!(c.routing_table().lookup(None, "/a/x").is_none());

        let broken = Resource {
            kind: 1,
            id: "c".into(),
            body: Bytes::from_static(b"{\"api_id\":\"c\"}"),
        };
        let bad = Changes {
            from_revision: 5,
            to_revision: 6,
            config_hash: "sha256:x".into(),
            upserts: vec![broken],
            deletes: vec![],
            session_events: vec![],
            cache_flushes: vec![],
        };
        let err = c.apply_changes(&bad).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid resource c: proxy.listen_path"),
            "{err}"
        );
        assert_eq!(c.revision, 5);

        // Valid resources but a hash that does not match: every step is undone.
        let before = c.computed_hash();
        let drift = Changes {
            from_revision: 5,
            to_revision: 6,
            config_hash: "sha256:x".into(),
            upserts: vec![api("d", "/d/"), api("b", "/moved/")],
            deletes: vec![ResourceRef {
                kind: 1,
                id: "b".into(),
            }],
            session_events: vec![],
            cache_flushes: vec![],
        };
        assert!(
            c.apply_changes(&drift)
                .unwrap_err()
                .to_string()
                .starts_with("config hash mismatch")
        );
        assert_eq!((c.revision, c.computed_hash()), (5, before));
        assert!(c.routing_table().lookup(None, "/b/x").is_some());
        assert!(c.routing_table().lookup(None, "/d/x").is_none());

        let stale = Changes {
            from_revision: 4,
            ..ok
        };
        assert!(
            c.apply_changes(&stale)
                .unwrap_err()
                .to_string()
                .starts_with("base revision mismatch")
        );
        assert!(
            c.apply_bookmark(9, "sha256:wrong")
                .unwrap_err()
                .to_string()
                .starts_with("config hash mismatch")
        );
    }
}
