//! `/portcullis/config`: the whole configuration at once, for `portcullis-cp config dump`,
//! `diff` and `apply` (docs/config.md). `GET` reads it; `POST` plans a folder against it and,
//! unless it is a dry run, applies the plan in one transaction.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use portcullis_proto::model::compat::{self, Warning};
use portcullis_proto::model::{ApiDefinition, Policy, ValidationError, oas};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config_clients::{self, Targets};
use super::{ApiError, ApiState, apis, stored_secrets};
use crate::store::StoreError;
use crate::store::config::{ConfigMode, ConfigTx};

/// Most resources of one kind a folder may hold.
const MAX_ITEMS: usize = 10_000;
/// Longest `source` (a file path) accepted: it is echoed in every change and warning.
const MAX_SOURCE_BYTES: usize = 1024;
/// Most changed fields named per resource (the rest are counted).
const MAX_FIELDS_SHOWN: usize = 32;
/// Most warnings answered (the rest are counted in `warnings_omitted`).
const MAX_WARNINGS: usize = 1000;

/// One file of the folder: where it came from (for errors) and what it holds.
#[derive(Debug, Deserialize)]
pub struct Item {
    source: String,
    body: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    prune: bool,
    /// A kind left out (its folder absent) is not planned at all: not even `--prune` touches
    /// it, so a folder missing after a failed dump cannot empty the store.
    apis: Option<Vec<Item>>,
    policies: Option<Vec<Item>>,
    /// References to certificates already in the store: `{"id": ..., "fingerprint": ...}`.
    certificates: Option<Vec<Item>>,
    oauth_clients: Option<Vec<Item>>,
}

impl ApplyRequest {
    fn apis(&self) -> &[Item] {
        self.apis.as_deref().unwrap_or_default()
    }

    fn policies(&self) -> &[Item] {
        self.policies.as_deref().unwrap_or_default()
    }

    fn certificates(&self) -> &[Item] {
        self.certificates.as_deref().unwrap_or_default()
    }

    fn oauth_clients(&self) -> &[Item] {
        self.oauth_clients.as_deref().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Create,
    Update,
    Delete,
    /// In the store, not in the folder, and no `--prune`.
    Kept,
}

#[derive(Debug, Serialize)]
struct Change {
    kind: &'static str,
    id: String,
    op: Op,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// Dotted paths that differ (never values: some are secrets).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    fields: Vec<String>,
}

#[derive(Debug, Serialize)]
struct SourcedWarning {
    source: String,
    #[serde(flatten)]
    warning: Warning,
}

fn in_source(source: &str, e: ValidationError) -> ApiError {
    ApiError::InFile {
        file: source.to_owned(),
        field: e.field,
        reason: e.reason,
    }
}

/// A deadlock or serialisation failure Postgres broke by aborting this transaction: nothing was
/// written and the same apply can simply run again.
fn retryable(e: &StoreError) -> bool {
    let StoreError::Database(e) = e else {
        return false;
    };
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}

fn concurrent() -> ApiError {
    ApiError::Conflict {
        field: "body",
        reason: "another writer changed the same resources at the same time; nothing was applied, run it again".to_owned(),
    }
}

fn internal(e: StoreError) -> ApiError {
    if retryable(&e) {
        concurrent()
    } else {
        ApiError::Internal(e)
    }
}

fn store_in_source(source: &str) -> impl FnOnce(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::Conflict { field, reason } => {
            in_source(source, ValidationError::new(field, reason))
        }
        StoreError::NotFound => in_source(
            source,
            ValidationError::new(
                "body",
                "changed by another writer during the apply; run it again",
            ),
        ),
        other => internal(other),
    }
}

/// `GET /portcullis/config`: APIs, policies and OAuth clients as stored (secrets sealed), and
/// the certificate store as references.
pub async fn dump(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let mut tx = state
        .store
        .begin_config(ConfigMode::Read)
        .await
        .map_err(internal)?;
    let apis = tx.apis().await.map_err(internal)?;
    let policies = tx.policies().await.map_err(internal)?;
    let oauth_clients = tx.oauth_clients().await.map_err(internal)?;
    let certificates: Vec<Value> = tx
        .certificates()
        .await
        .map_err(internal)?
        .into_iter()
        .map(|m| certificate_ref(&m))
        .collect();
    drop(tx);
    Ok(Json(
        json!({"apis": apis, "policies": policies, "certificates": certificates, "oauth_clients": oauth_clients}),
    ))
}

fn certificate_ref(m: &portcullis_proto::model::certificate::CertificateMeta) -> Value {
    json!({
        "id": m.id, "fingerprint": m.fingerprint, "subject_cn": m.subject_cn,
        "not_after": m.not_after, "has_private": m.has_private,
    })
}

/// The parsed folder, checked before any row is read.
struct Desired {
    apis: Vec<(String, ApiDefinition)>,
    policies: Vec<(String, Policy)>,
    certificates: Vec<(String, String, Option<String>)>,
    oauth_clients: Vec<config_clients::Wanted>,
    warnings: Vec<SourcedWarning>,
}

fn required_id<'a>(item: &'a Item, field: &str) -> Result<&'a str, ApiError> {
    // A Tyk OAS file carries its id in the extension (docs/oas.md).
    let (found, field) = if field == "api_id" && oas::is_oas(&item.body) {
        (item.body.pointer("/x-tyk-api-gateway/info/id"), OAS_ID)
    } else {
        (item.body.get(field), field)
    };
    match found.and_then(Value::as_str) {
        Some(id) if !id.is_empty() => Ok(id),
        // A generated id would make every apply create the resource again.
        _ => Err(in_source(
            &item.source,
            ValidationError::new(
                field,
                "is required in a configuration file, so that the next apply finds the same resource",
            ),
        )),
    }
}

/// Where a Tyk OAS file of `apis/` holds its id.
const OAS_ID: &str = "x-tyk-api-gateway.info.id";

/// The definition of an `apis/` file, Classic or Tyk OAS, and the OAS fields it keeps without
/// acting on.
fn api_of(item: &Item) -> Result<(ApiDefinition, Vec<Warning>), ApiError> {
    if oas::is_oas(&item.body) {
        let api = oas::from_value(item.body.clone()).map_err(|e| in_source(&item.source, e))?;
        return Ok((api.definition, api.warnings));
    }
    let body = serde_json::to_vec(&item.body)
        .map_err(|e| in_source(&item.source, ValidationError::new("body", e.to_string())))?;
    let def = ApiDefinition::parse(&body).map_err(|e| in_source(&item.source, e))?;
    Ok((def, Vec::new()))
}

fn once<'a>(
    seen: &mut BTreeMap<String, &'a str>,
    kind: &str,
    id: &str,
    source: &'a str,
) -> Result<(), ApiError> {
    if let Some(first) = seen.insert(id.to_owned(), source) {
        return Err(in_source(
            source,
            ValidationError::new("id", format!("{kind} {id} is also defined in {first}")),
        ));
    }
    Ok(())
}

fn parse(req: &ApplyRequest, state: &ApiState) -> Result<Desired, ApiError> {
    for (kind, items) in [
        ("apis", req.apis()),
        ("policies", req.policies()),
        ("certificates", req.certificates()),
        ("oauth_clients", req.oauth_clients()),
    ] {
        if items.len() > MAX_ITEMS {
            return Err(ApiError::Invalid(ValidationError::new(
                kind,
                format!("at most {MAX_ITEMS} per folder"),
            )));
        }
    }
    let sources = req
        .apis()
        .iter()
        .chain(req.policies())
        .chain(req.certificates())
        .chain(req.oauth_clients());
    if let Some(item) = sources
        .into_iter()
        .find(|i| i.source.len() > MAX_SOURCE_BYTES)
    {
        return Err(ApiError::Invalid(ValidationError::new(
            "source",
            format!(
                "at most {MAX_SOURCE_BYTES} bytes (a file path), got {}",
                item.source.len()
            ),
        )));
    }
    let mut out = Desired {
        apis: Vec::new(),
        policies: Vec::new(),
        certificates: Vec::new(),
        oauth_clients: Vec::new(),
        warnings: Vec::new(),
    };
    let mut seen = BTreeMap::new();
    for item in req.apis() {
        let id = required_id(item, "api_id")?;
        once(&mut seen, "API", id, &item.source)?;
        let (def, mut warnings) = api_of(item)?;
        apis::servable(&def).map_err(|e| in_source(&item.source, e))?;
        apis::not_reserved(&def).map_err(|e| in_source(&item.source, e))?;
        warnings.extend(compat::api_warnings(&def));
        out.warnings
            .extend(warnings.into_iter().map(|warning| SourcedWarning {
                source: item.source.clone(),
                warning,
            }));
        let def = stored_secrets::seal_api(def, &state.stored_secrets)
            .map_err(|e| in_source(&item.source, e))?;
        out.apis.push((item.source.clone(), def));
    }
    let mut seen = BTreeMap::new();
    for item in req.policies() {
        let id = required_id(item, "id")?;
        once(&mut seen, "policy", id, &item.source)?;
        let body = serde_json::to_vec(&item.body)
            .map_err(|e| in_source(&item.source, ValidationError::new("body", e.to_string())))?;
        let policy = Policy::parse(&body).map_err(|e| in_source(&item.source, e))?;
        out.warnings
            .extend(
                compat::policy_warnings(&policy)
                    .into_iter()
                    .map(|warning| SourcedWarning {
                        source: item.source.clone(),
                        warning,
                    }),
            );
        out.policies.push((item.source.clone(), policy));
    }
    let mut seen = BTreeMap::new();
    for item in req.certificates() {
        let id = required_id(item, "id")?;
        once(&mut seen, "certificate", id, &item.source)?;
        let fingerprint = match item.body.get("fingerprint") {
            None | Some(Value::Null) => None,
            Some(Value::String(f)) => Some(f.clone()),
            // Ignoring it would let a reference check nothing while looking like it does.
            Some(_) => {
                return Err(in_source(
                    &item.source,
                    ValidationError::new("fingerprint", "must be a string"),
                ));
            }
        };
        out.certificates
            .push((item.source.clone(), id.to_owned(), fingerprint));
    }
    let mut seen = BTreeMap::new();
    for item in req.oauth_clients() {
        let id = required_id(item, "client_id")?;
        once(&mut seen, "OAuth client", id, &item.source)?;
        let wanted = config_clients::parse_item(state, &item.source, &item.body)?;
        out.oauth_clients.push(wanted);
    }
    Ok(out)
}

/// The fields in which two versions of a resource differ: at most [`MAX_FIELDS_SHOWN`] dotted
/// paths (never values: some are secrets), and how many differ in all.
#[derive(Debug, Default)]
struct Changed {
    shown: Vec<String>,
    total: usize,
}

impl Changed {
    fn between(a: &Value, b: &Value) -> Self {
        let mut out = Self::default();
        let mut path = String::new();
        out.walk(a, b, &mut path);
        out
    }

    /// Each value is visited once (lists compare whole), and one path buffer grows and shrinks
    /// with the walk, so that only a difference costs an allocation.
    fn walk(&mut self, a: &Value, b: &Value, path: &mut String) {
        let (Value::Object(x), Value::Object(y)) = (a, b) else {
            if a != b {
                self.push(path);
            }
            return;
        };
        let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
        for k in keys {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(k);
            match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => self.walk(p, q, path),
                _ => self.push(path),
            }
            path.truncate(len);
        }
    }

    fn push(&mut self, path: &str) {
        self.total += 1;
        if self.shown.len() < MAX_FIELDS_SHOWN {
            self.shown
                .push(if path.is_empty() { "body" } else { path }.to_owned());
        }
    }

    fn is_empty(&self) -> bool {
        self.total == 0
    }

    fn into_fields(self) -> Vec<String> {
        let mut fields = self.shown;
        if self.total > fields.len() {
            fields.push(format!("... and {} more", self.total - fields.len()));
        }
        fields
    }
}

fn stored_by_id(rows: Vec<Value>, field: &str) -> BTreeMap<String, Value> {
    rows.into_iter()
        .filter_map(|v| Some((v.get(field)?.as_str()?.to_owned(), v)))
        .collect()
}

/// The plan for one kind: what to create, update and delete, compared through `view` (which
/// opens sealed secrets, so a secret sent in plain text equals its sealed copy).
fn plan_kind(
    kind: &'static str,
    desired: &[(String, String, Value)],
    stored: &BTreeMap<String, Value>,
    prune: bool,
    view: impl Fn(&Value) -> Value,
) -> (Vec<Change>, usize) {
    let mut changes = Vec::new();
    let mut unchanged = 0;
    for (source, id, body) in desired {
        match stored.get(id) {
            None => changes.push(Change {
                kind,
                id: id.clone(),
                op: Op::Create,
                source: Some(source.clone()),
                fields: Vec::new(),
            }),
            Some(current) => {
                let changed = Changed::between(&view(current), &view(body));
                if changed.is_empty() {
                    unchanged += 1;
                } else {
                    changes.push(Change {
                        kind,
                        id: id.clone(),
                        op: Op::Update,
                        source: Some(source.clone()),
                        fields: changed.into_fields(),
                    });
                }
            }
        }
    }
    let wanted: BTreeSet<&str> = desired.iter().map(|(_, id, _)| id.as_str()).collect();
    for id in stored.keys().filter(|id| !wanted.contains(id.as_str())) {
        changes.push(Change {
            kind,
            id: id.clone(),
            op: if prune { Op::Delete } else { Op::Kept },
            source: None,
            fields: Vec::new(),
        });
    }
    (changes, unchanged)
}

/// `POST /portcullis/config`: plans the folder, and applies it unless `dry_run`.
pub async fn apply(State(state): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: ApplyRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::Invalid(ValidationError::new("body", e.to_string())))?;
    let mut desired = parse(&req, &state)?;
    let mode = if req.dry_run {
        ConfigMode::Read
    } else {
        ConfigMode::Apply
    };
    let mut tx = state.store.begin_config(mode).await.map_err(internal)?;
    // A client depends on the APIs and policies the apply leaves, planned or not.
    let clients_planned = req.oauth_clients.is_some();
    let stored_apis = match req.apis.is_some() || clients_planned {
        true => stored_by_id(tx.apis().await.map_err(internal)?, "api_id"),
        false => BTreeMap::new(),
    };
    let stored_policies = match req.policies.is_some() || clients_planned {
        true => stored_by_id(tx.policies().await.map_err(internal)?, "id"),
        false => BTreeMap::new(),
    };
    let stored_clients = match clients_planned {
        true => stored_by_id(tx.oauth_clients().await.map_err(internal)?, "client_id"),
        false => BTreeMap::new(),
    };
    let held = tx.certificates().await.map_err(internal)?;
    check_certificates(&mut desired, &held)?;

    let key = state.stored_secrets.clone();
    let empty = BTreeMap::new();
    let api_rows: Vec<(String, String, Value)> = desired
        .apis
        .iter()
        .map(|(s, d)| (s.clone(), d.api_id().to_owned(), d.to_value()))
        .collect();
    let (mut changes, api_same) = plan_kind(
        "api",
        &api_rows,
        if req.apis.is_some() {
            &stored_apis
        } else {
            &empty
        },
        req.prune,
        |v| stored_secrets::opened(v, &key),
    );
    let policy_rows: Vec<(String, String, Value)> = desired
        .policies
        .iter()
        .map(|(s, p)| (s.clone(), p.id().to_owned(), p.to_value()))
        .collect();
    let (policy_changes, policy_same) = plan_kind(
        "policy",
        &policy_rows,
        if req.policies.is_some() {
            &stored_policies
        } else {
            &empty
        },
        req.prune,
        Value::clone,
    );
    changes.extend(policy_changes);

    let targets = targets(
        &req,
        &changes,
        &api_rows,
        &policy_rows,
        &stored_apis,
        &stored_policies,
    );
    let wanted = std::mem::take(&mut desired.oauth_clients);
    let (client_rows, clients) =
        config_clients::resolve(&state, wanted, &stored_clients, &targets)?;
    let (client_changes, client_same) = plan_kind(
        "oauth_client",
        &client_rows,
        &stored_clients,
        req.prune,
        |v| config_clients::opened(&state, v),
    );
    changes.extend(client_changes);

    if !req.dry_run {
        write(&mut tx, &changes, &desired, &clients).await?;
        tx.commit().await.map_err(internal)?;
    }
    let applied = !req.dry_run && changes.iter().any(|c| c.op != Op::Kept);
    let mut warnings = desired.warnings;
    let omitted = warnings.len().saturating_sub(MAX_WARNINGS);
    warnings.truncate(MAX_WARNINGS);
    Ok(Json(json!({
        "status": "ok",
        "dry_run": req.dry_run,
        "applied": applied,
        "changes": changes,
        "unchanged": api_same + policy_same + client_same,
        "warnings": warnings,
        "warnings_omitted": omitted,
    })))
}

/// The APIs and policies the store holds once `changes` are applied: the folder's, and the
/// stored ones it leaves (all of a kind the folder does not plan).
fn targets(
    req: &ApplyRequest,
    changes: &[Change],
    api_rows: &[(String, String, Value)],
    policy_rows: &[(String, String, Value)],
    stored_apis: &BTreeMap<String, Value>,
    stored_policies: &BTreeMap<String, Value>,
) -> Targets {
    let deleted: BTreeSet<(&str, &str)> = changes
        .iter()
        .filter(|c| c.op == Op::Delete)
        .map(|c| (c.kind, c.id.as_str()))
        .collect();
    let mut t = Targets::default();
    for (id, body) in stored_apis {
        if !deleted.contains(&("api", id.as_str())) {
            t.apis.insert(id.clone(), Targets::api_of(body));
        }
    }
    for (id, body) in stored_policies {
        if !deleted.contains(&("policy", id.as_str())) {
            t.policies.insert(id.clone(), body.clone());
        }
    }
    if req.apis.is_some() {
        for (_, id, body) in api_rows {
            t.apis.insert(id.clone(), Targets::api_of(body));
        }
    }
    if req.policies.is_some() {
        for (_, id, body) in policy_rows {
            t.policies.insert(id.clone(), body.clone());
        }
    }
    t
}

/// Each certificate reference must name a stored certificate (with its fingerprint, when
/// given); a certificate an API of the folder names but the store lacks is a warning, since
/// the edge refuses that API's TLS until it is uploaded (docs/certificates.md).
fn check_certificates(
    desired: &mut Desired,
    held: &[portcullis_proto::model::certificate::CertificateMeta],
) -> Result<(), ApiError> {
    let by_id: BTreeMap<&str, &str> = held
        .iter()
        .map(|m| (m.id.as_str(), m.fingerprint.as_str()))
        .collect();
    for (source, id, fingerprint) in &desired.certificates {
        match by_id.get(id.as_str()) {
            None => {
                return Err(in_source(
                    source,
                    ValidationError::new(
                        "id",
                        format!(
                            "certificate {id} is not in the certificate store; upload it with POST /tyk/certs (private keys never travel in a configuration folder)"
                        ),
                    ),
                ));
            }
            Some(held) if fingerprint.as_deref().is_some_and(|f| f != *held) => {
                return Err(in_source(
                    source,
                    ValidationError::new(
                        "fingerprint",
                        format!("certificate {id} in the store has another fingerprint"),
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let mut missing = Vec::new();
    for (source, def) in &desired.apis {
        // An API may name one certificate in several places: one warning each.
        let mut named = BTreeSet::new();
        for id in def.certificate_refs() {
            if !by_id.contains_key(id) && named.insert(id) {
                missing.push(SourcedWarning {
                    source: source.clone(),
                    warning: Warning {
                        field: "certificates".to_owned(),
                        reason: format!(
                            "references certificate {id}, which the store does not hold"
                        ),
                    },
                });
            }
        }
    }
    desired.warnings.extend(missing);
    Ok(())
}

/// Deletes first, then updates, then creates, so that a listen path moved from a deleted API
/// to a new one is free when the new one is written.
async fn write(
    tx: &mut ConfigTx<'_>,
    changes: &[Change],
    desired: &Desired,
    clients: &BTreeMap<String, portcullis_proto::model::oauth::OAuthClient>,
) -> Result<(), ApiError> {
    let apis: BTreeMap<&str, &ApiDefinition> =
        desired.apis.iter().map(|(_, d)| (d.api_id(), d)).collect();
    let policies: BTreeMap<&str, &Policy> =
        desired.policies.iter().map(|(_, p)| (p.id(), p)).collect();
    for pass in [Op::Delete, Op::Update, Op::Create] {
        for c in changes.iter().filter(|c| c.op == pass) {
            let source = c.source.as_deref().unwrap_or(c.id.as_str());
            let done = match (c.kind, pass) {
                ("api", Op::Delete) => tx.delete_api(&c.id).await,
                ("policy", Op::Delete) => tx.delete_policy(&c.id).await,
                ("api", _) => tx.put_api(apis[c.id.as_str()], pass == Op::Create).await,
                ("policy", _) => {
                    tx.put_policy(policies[c.id.as_str()], pass == Op::Create)
                        .await
                }
                ("oauth_client", Op::Delete) => tx.delete_oauth_client(&c.id).await,
                ("oauth_client", _) => {
                    tx.put_oauth_client(&clients[c.id.as_str()], pass == Op::Create)
                        .await
                }
                _ => continue,
            };
            done.map_err(store_in_source(source))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_fields_name_paths_not_values() {
        let a = json!({"name": "a", "proxy": {"listen_path": "/a/", "target_url": "http://x/"}, "tags": ["eu"]});
        let b = json!({"name": "a", "proxy": {"listen_path": "/a/", "target_url": "http://y/"}, "tags": ["eu", "us"], "new": 1});
        assert_eq!(
            Changed::between(&a, &b).into_fields(),
            ["new", "proxy.target_url", "tags"]
        );
        assert!(Changed::between(&a, &a).is_empty());
        assert_eq!(
            Changed::between(&json!(1), &json!(2)).into_fields(),
            ["body"]
        );
    }

    #[test]
    fn changed_fields_stop_naming_after_the_limit_and_count_the_rest() {
        let a = json!({});
        let b: serde_json::Map<String, Value> =
            (0..100).map(|i| (format!("f{i:03}"), json!(i))).collect();
        let fields = Changed::between(&a, &Value::Object(b)).into_fields();
        assert_eq!(fields.len(), MAX_FIELDS_SHOWN + 1);
        assert_eq!(fields[0], "f000");
        assert_eq!(fields[MAX_FIELDS_SHOWN], "... and 68 more");
    }

    #[test]
    fn a_plan_creates_updates_keeps_or_prunes() {
        let stored = stored_by_id(
            vec![
                json!({"id": "same", "rate": 1}),
                json!({"id": "old"}),
                json!({"id": "moved", "rate": 1}),
            ],
            "id",
        );
        let desired = vec![
            (
                "p/same.json".to_owned(),
                "same".to_owned(),
                json!({"id": "same", "rate": 1}),
            ),
            (
                "p/moved.json".to_owned(),
                "moved".to_owned(),
                json!({"id": "moved", "rate": 2}),
            ),
            (
                "p/new.json".to_owned(),
                "new".to_owned(),
                json!({"id": "new"}),
            ),
        ];
        let ops = |prune| {
            let (changes, same) = plan_kind("policy", &desired, &stored, prune, Value::clone);
            let ops: Vec<(String, Op)> = changes.into_iter().map(|c| (c.id, c.op)).collect();
            (ops, same)
        };
        let (kept, same) = ops(false);
        assert_eq!(same, 1);
        assert_eq!(
            kept,
            [
                ("moved".into(), Op::Update),
                ("new".into(), Op::Create),
                ("old".into(), Op::Kept)
            ]
        );
        assert_eq!(ops(true).0[2], ("old".into(), Op::Delete));
    }
}
