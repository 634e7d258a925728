//! Policies applied to a session on every request, with Tyk's merge rules: the most permissive
//! value wins, -1 is unlimited, `per_api` policies give per-API counters, partitions limit what a
//! policy sets, and `per_api` cannot be mixed with partitions.
//!
//! When several policies grant ACLs, each API counts against the policy that granted it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use portcullis_proto::model::{AllowedUrl, PolicySpec, SessionAccess, SessionSpec};

use crate::limits::Limits;

pub type PolicyIndex = HashMap<String, Arc<PolicySpec>>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {0} not found")]
    Missing(String),
    #[error("cannot apply policy {0} which has per_api and any of partitions set")]
    PerApiWithPartitions(String),
    #[error("cannot apply multiple policies when some have per_api set and some are partitioned")]
    Mixed,
    #[error("key has no valid policies to be applied")]
    NoValidPolicies,
    /// Tyk: a policy applies only to keys of its own organisation. Guards multi-tenant
    /// deployments against a token whose policy claim names another org's policy.
    #[error("policy {0} belongs to another organisation")]
    OtherOrg(String),
}

/// What a request is checked against once policies are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Entitlements {
    pub inactive: bool,
    /// Empty: no API (every API only with `--allow-master-keys`).
    pub access_rights: BTreeMap<String, SessionAccess>,
    pub limits: Limits,
    /// APIs with their own counters.
    pub per_api: HashMap<String, Limits>,
}

impl Entitlements {
    /// The limits for one API.
    pub fn limits_for(&self, api_id: &str) -> &Limits {
        self.per_api.get(api_id).unwrap_or(&self.limits)
    }
}

fn interval(rate: f64, per: f64) -> f64 {
    if rate < 0.0 {
        0.0
    } else if rate == 0.0 {
        f64::INFINITY
    } else {
        per / rate
    }
}

/// Most permissive rate: the shorter interval between requests (-1 is unlimited).
fn merge_rate(into: &mut Limits, rate: f64, per: f64) {
    if interval(rate, per) < interval(into.rate, into.per) {
        into.rate = rate;
        into.per = per;
    }
}

/// Most permissive quota: -1 beats everything, then the higher maximum.
fn merge_quota(into: &mut Limits, quota_max: i64, renewal: i64) {
    let better = match (into.quota_max, quota_max) {
        (-1, _) => false,
        (_, -1) => true,
        (a, b) => b > a,
    };
    if better {
        into.quota_max = quota_max;
        into.quota_renewal_rate = renewal;
    }
}

fn merge_urls(into: &mut Vec<AllowedUrl>, from: &[AllowedUrl]) {
    for url in from {
        match into.iter_mut().find(|u| u.url == url.url) {
            Some(existing) => {
                for m in &url.methods {
                    if !existing.methods.contains(m) {
                        existing.methods.push(m.clone());
                    }
                }
            }
            None => into.push(url.clone()),
        }
    }
}

fn merge_access(into: &mut BTreeMap<String, SessionAccess>, api: &str, from: &SessionAccess) {
    let entry = into.entry(api.to_owned()).or_insert_with(|| SessionAccess {
        api_id: api.to_owned(),
        ..from.clone()
    });
    for v in &from.versions {
        if !entry.versions.contains(v) {
            entry.versions.push(v.clone());
        }
    }
    let urls = from.allowed_urls.clone();
    merge_urls(&mut entry.allowed_urls, &urls);
}

fn session_limits(spec: &SessionSpec, scope: &str) -> Limits {
    Limits {
        rate: spec.rate,
        per: spec.per,
        quota_max: spec.quota_max,
        quota_renewal_rate: spec.quota_renewal_rate,
        scope: scope.to_owned(),
    }
}

/// Applies `session`'s policies. `key_hash` names the counters.
pub fn entitlements(
    spec: &SessionSpec,
    key_hash: &str,
    policy_ids: &[&str],
    index: &PolicyIndex,
) -> Result<Entitlements, PolicyError> {
    if policy_ids.is_empty() {
        let mut per_api = HashMap::new();
        for (api, access) in &spec.access_rights {
            if let Some(l) = &access.limit
                && (l.rate != 0.0 || l.quota_max != 0)
            {
                let limits = Limits {
                    rate: l.rate,
                    per: l.per,
                    quota_max: l.quota_max,
                    quota_renewal_rate: l.quota_renewal_rate,
                    scope: format!("{key_hash}:{api}"),
                };
                per_api.insert(api.clone(), limits);
            }
        }
        return Ok(Entitlements {
            inactive: spec.is_inactive,
            access_rights: spec.access_rights.clone(),
            limits: session_limits(spec, key_hash),
            per_api,
        });
    }

    let mut found = Vec::new();
    for id in policy_ids {
        match index.get(*id) {
            Some(p) => found.push(p.clone()),
            // With several policies a missing one is skipped; a lone missing policy fails.
            None if policy_ids.len() == 1 => return Err(PolicyError::Missing((*id).to_owned())),
            None => {}
        }
    }
    if found.is_empty() {
        return Err(PolicyError::NoValidPolicies);
    }
    for p in &found {
        if !p.org_id.is_empty() && !spec.org_id.is_empty() && p.org_id != spec.org_id {
            return Err(PolicyError::OtherOrg(p.id.clone()));
        }
        if p.partitions.per_api && p.partitions.any() {
            return Err(PolicyError::PerApiWithPartitions(p.id.clone()));
        }
    }
    if found.iter().any(|p| p.partitions.per_api) && found.iter().any(|p| p.partitions.any()) {
        return Err(PolicyError::Mixed);
    }

    // Parts a policy owns start from nothing, so the policies' values replace the key's own.
    let owns = |p: &PolicySpec, part: bool| !p.partitions.any() || part;
    let owns_rate = found
        .iter()
        .any(|p| !p.partitions.per_api && owns(p, p.partitions.rate_limit));
    let owns_quota = found
        .iter()
        .any(|p| !p.partitions.per_api && owns(p, p.partitions.quota));
    let mut limits = session_limits(spec, key_hash);
    if owns_rate {
        limits.rate = 0.0;
        limits.per = 0.0;
    }
    if owns_quota {
        limits.quota_max = 0;
        limits.quota_renewal_rate = 0;
    }
    let mut rights = BTreeMap::new();
    let mut acl_set = false;
    let mut per_api: HashMap<String, Limits> = HashMap::new();
    let mut inactive = false;
    for p in &found {
        inactive |= p.is_inactive || !p.active;
        if p.partitions.per_api {
            for (api, access) in &p.access_rights {
                merge_access(&mut rights, api, access);
                let own = access
                    .limit
                    .as_ref()
                    .filter(|l| l.rate != 0.0 || l.quota_max != 0);
                let mut l = match own {
                    Some(l) => Limits {
                        rate: l.rate,
                        per: l.per,
                        quota_max: l.quota_max,
                        quota_renewal_rate: l.quota_renewal_rate,
                        scope: format!("{key_hash}:{api}"),
                    },
                    None => Limits {
                        rate: p.rate,
                        per: p.per,
                        quota_max: p.quota_max,
                        quota_renewal_rate: p.quota_renewal_rate,
                        scope: format!("{key_hash}:{}", p.id),
                    },
                };
                if let Some(existing) = per_api.get(api) {
                    let mut merged = existing.clone();
                    merge_rate(&mut merged, l.rate, l.per);
                    merge_quota(&mut merged, l.quota_max, l.quota_renewal_rate);
                    l = merged;
                }
                per_api.insert(api.clone(), l);
            }
            acl_set |= !p.access_rights.is_empty();
            continue;
        }
        if owns(p, p.partitions.acl) && !p.access_rights.is_empty() {
            for (api, access) in &p.access_rights {
                merge_access(&mut rights, api, access);
            }
            acl_set = true;
        }
        if owns(p, p.partitions.rate_limit) {
            merge_rate(&mut limits, p.rate, p.per);
        }
        if owns(p, p.partitions.quota) {
            merge_quota(&mut limits, p.quota_max, p.quota_renewal_rate);
        }
    }
    // Several policies granting ACLs: each API counts against the policy that granted it (Tyk's
    // allowance_scope), with that policy's limits where it owns them, else the merged ones.
    let granting: Vec<&Arc<PolicySpec>> = found
        .iter()
        .filter(|p| {
            !p.partitions.per_api && owns(p, p.partitions.acl) && !p.access_rights.is_empty()
        })
        .collect();
    if granting.len() > 1 {
        for api in rights.keys() {
            if per_api.contains_key(api) {
                continue;
            }
            if let Some(p) = granting.iter().find(|p| p.access_rights.contains_key(api)) {
                let mut l = limits.clone();
                if owns(p, p.partitions.rate_limit) {
                    (l.rate, l.per) = (p.rate, p.per);
                }
                if owns(p, p.partitions.quota) {
                    (l.quota_max, l.quota_renewal_rate) = (p.quota_max, p.quota_renewal_rate);
                }
                l.scope = format!("{key_hash}:{}", p.id);
                per_api.insert(api.clone(), l);
            }
        }
    }
    let access_rights = if acl_set {
        rights
    } else {
        spec.access_rights.clone()
    };
    Ok(Entitlements {
        inactive,
        access_rights,
        limits,
        per_api,
    })
}

#[cfg(test)]
mod tests;
