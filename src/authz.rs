//! The authorize step: a department's grants, compiled against the catalog
//! in force, judged against one request.
//!
//! A grant is a *candidate* when it is unrevoked, valid now, allows the
//! operation and a registered purpose the request names, and still releases
//! at least one field view under the current catalog. A record is visible
//! when a candidate's regions cover its grid code; its fields are the union
//! of the covering candidates' fields, each in the most revealing view any of
//! them allows.
//!
//! When no grant is a candidate, the refusal names the rule that stopped the
//! grant that got furthest (scopes.md, "Denial reasons"): auditors count
//! denials by these codes, so a wrong code is a wrong statistic.

use crate::catalog::{Catalog, Dataset};
use crate::clock;
use crate::mask::FieldPlan;
use crate::proto::{
    FieldView, Grant, GrantLimits, Operation, Purpose, PurposeStatus, SharingClass,
};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Why a request was refused. `code` is the audit reason code.
#[derive(Debug, Clone)]
pub struct Denial {
    pub code: &'static str,
    pub message: String,
    /// The grants the refusal concerns (the closest ones).
    pub grants: Vec<String>,
}

impl Denial {
    /// The message is capped ([`crate::audit::bounded::cap_message`]): it
    /// goes back to the caller and into the log, and may quote their input.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: crate::audit::bounded::cap_message(message.into()),
            grants: Vec::new(),
        }
    }
}

/// The wildcard region: the whole jurisdiction, only when written explicitly.
pub const ALL_REGIONS: &str = "*";

/// `regions` with `*` read as `jurisdiction`, the grantee's whole
/// jurisdiction (scopes.md) — `*` again only when the jurisdiction is `*`,
/// nothing when there is none. Grants are stored resolved (so changing a
/// department's jurisdiction never widens what was approved); the decision
/// resolves once more for grants stored with `*`.
pub fn whole_jurisdiction(regions: &[String], jurisdiction: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in regions {
        let resolved = if r == ALL_REGIONS {
            jurisdiction
        } else {
            std::slice::from_ref(r)
        };
        for r in resolved {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
    }
    out
}

/// A grant with its field views judged by the catalog in force and its
/// regions resolved against the grantee's jurisdiction.
#[derive(Debug)]
pub struct CompiledGrant {
    pub grant: Grant,
    pub dataset: Dataset,
    /// The rows it covers: its regions, with `*` read as the department's
    /// whole jurisdiction (scopes.md) — never more. A street office's `*`
    /// is its street; `*` stays everything only for a department whose
    /// jurisdiction is `*`, and is nothing for one without a jurisdiction.
    regions: Vec<String>,
    /// Views the grant names that the catalog still releases under it.
    plan: Arc<FieldPlan>,
    /// Views the grant names that the catalog no longer releases under it:
    /// `not_shared` now, gone, or conditional without an approved request.
    withdrawn: Vec<(usize, FieldView)>,
}

impl CompiledGrant {
    /// `approved` holds the ids of approved access requests: a conditional
    /// view is released only under a grant whose provenance is one of them.
    /// `jurisdiction` is the grantee department's, what `*` stands for.
    pub fn compile(
        grant: Grant,
        catalog: &Catalog,
        approved: &HashSet<String>,
        jurisdiction: &[String],
    ) -> Option<Self> {
        let dataset = Dataset::parse(&grant.dataset)?;
        let spec = dataset.spec();
        let mut plan = FieldPlan::empty(spec.fields.len());
        let mut withdrawn = Vec::new();
        let approved_request = approved.contains(&grant.access_request_id);
        for f in &grant.fields {
            let Some(i) = spec.fields.iter().position(|s| s.name == f.field) else {
                continue;
            };
            let view = FieldView::try_from(f.view).unwrap_or(FieldView::Unspecified);
            if view == FieldView::Unspecified {
                continue;
            }
            match catalog.sharing(dataset, &f.field, view) {
                Some(SharingClass::Unconditional) => plan.set(i, view),
                Some(SharingClass::Conditional) if approved_request => plan.set(i, view),
                _ => withdrawn.push((i, view)),
            }
        }
        let regions = whole_jurisdiction(&grant.regions, jurisdiction);
        Some(Self {
            grant,
            dataset,
            regions,
            plan: Arc::new(plan),
            withdrawn,
        })
    }

    /// `(field, view)` pairs the catalog withdrew from this grant.
    pub fn withdrawn(&self) -> impl Iterator<Item = (&'static str, FieldView)> + '_ {
        let spec = self.dataset.spec();
        self.withdrawn
            .iter()
            .map(|(i, v)| (spec.fields[*i].name, *v))
    }

    fn covers(&self, row_code: &str) -> bool {
        self.regions.iter().any(|r| covers(r, row_code))
    }
}

/// How far a grant got against a request; later stages are closer to
/// succeeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Revoked,
    NotYetValid,
    Expired,
    Operation,
    Purpose,
    Catalog,
    Candidate,
}

fn stage_of(g: &CompiledGrant, op: Operation, purpose: &str, purpose_ok: bool, now: i64) -> Stage {
    let g_ = &g.grant;
    if g_.revoked_at.is_some() {
        Stage::Revoked
    } else if g_.not_before.as_ref().is_some_and(|t| now < t.seconds) {
        Stage::NotYetValid
    } else if g_.not_after.as_ref().is_some_and(|t| now >= t.seconds) {
        Stage::Expired
    } else if !g_.operations.contains(&(op as i32)) {
        Stage::Operation
    } else if !purpose_ok || !g_.purposes.iter().any(|p| p == purpose) {
        Stage::Purpose
    } else if g.plan.is_empty() {
        Stage::Catalog
    } else {
        Stage::Candidate
    }
}

/// The grants that serve one request. Only [`decide`] builds it.
#[derive(Debug)]
pub struct Decision {
    dataset: Dataset,
    candidates: Vec<Arc<CompiledGrant>>,
    /// Merged plans by the set of covering candidates (bit i: candidate i).
    merged: Mutex<HashMap<u64, Arc<FieldPlan>>>,
}

/// Judges a department's grants for `dataset` against one request.
/// `purposes` is the registry: a purpose must be registered, active and
/// citable by `department` to authorize anything.
pub fn decide(
    grants: &[Arc<CompiledGrant>],
    department: &str,
    dataset: Dataset,
    op: Operation,
    purpose: &str,
    purposes: &HashMap<String, Purpose>,
    now: SystemTime,
) -> Result<Decision, Denial> {
    let of_dataset: Vec<&Arc<CompiledGrant>> =
        grants.iter().filter(|g| g.dataset == dataset).collect();
    if of_dataset.is_empty() {
        return Err(Denial::new(
            "NO_GRANT",
            format!(
                "your department holds no grant for dataset '{}'",
                dataset.name()
            ),
        ));
    }
    let registered = purposes.get(purpose);
    let purpose_ok = registered.is_some_and(|p| {
        p.status == PurposeStatus::Active as i32
            && (p.departments.is_empty() || p.departments.iter().any(|d| d == department))
    });
    let now_s = clock::unix_seconds(now);
    let staged: Vec<(Stage, &Arc<CompiledGrant>)> = of_dataset
        .iter()
        .map(|g| (stage_of(g, op, purpose, purpose_ok, now_s), *g))
        .collect();
    let best = staged.iter().map(|(s, _)| *s).max().expect("non-empty");
    if best == Stage::Candidate {
        return Ok(Decision {
            dataset,
            candidates: staged
                .into_iter()
                .filter(|(s, _)| *s == Stage::Candidate)
                .map(|(_, g)| g.clone())
                .collect(),
            merged: Mutex::new(HashMap::new()),
        });
    }
    let closest: Vec<&Arc<CompiledGrant>> = staged
        .iter()
        .filter(|(s, _)| *s == best)
        .map(|(_, g)| *g)
        .collect();
    let name = dataset.name();
    let (code, message) = match best {
        Stage::Revoked => (
            "GRANT_REVOKED",
            format!("your department's grant for '{name}' has been revoked"),
        ),
        Stage::NotYetValid => (
            "GRANT_NOT_YET_VALID",
            format!("your department's grant for '{name}' is not valid yet"),
        ),
        Stage::Expired => (
            "GRANT_EXPIRED",
            format!("your department's grant for '{name}' has expired"),
        ),
        Stage::Operation => (
            "OPERATION_NOT_GRANTED",
            format!(
                "no grant for '{name}' allows the {} operation",
                op.as_str_name().trim_start_matches("OPERATION_")
            ),
        ),
        Stage::Purpose => {
            let mut listed: Vec<&str> = closest
                .iter()
                .flat_map(|g| g.grant.purposes.iter().map(String::as_str))
                .collect();
            listed.sort_unstable();
            listed.dedup();
            let why = match registered {
                None => " (it is not a registered purpose)",
                Some(_) if !purpose_ok => " (it is retired, or not citable by your department)",
                Some(_) => "",
            };
            (
                "PURPOSE_NOT_GRANTED",
                format!(
                    "purpose '{}' is not granted for '{name}'{why}; granted purposes: {}",
                    crate::audit::bounded::cap_for_message(purpose),
                    listed.join(", ")
                ),
            )
        }
        Stage::Catalog => (
            "CATALOG_WITHDRAWN",
            format!(
                "the catalog in force no longer releases any field view your grant for '{name}' names"
            ),
        ),
        Stage::Candidate => unreachable!("handled above"),
    };
    let mut denial = Denial::new(code, message);
    denial.grants = closest.iter().map(|g| g.grant.id.clone()).collect();
    Err(denial)
}

fn covers(region: &str, code: &str) -> bool {
    region == ALL_REGIONS || code.starts_with(region)
}

impl Decision {
    pub fn dataset(&self) -> Dataset {
        self.dataset
    }

    pub fn grant_ids(&self) -> Vec<String> {
        self.candidates.iter().map(|g| g.grant.id.clone()).collect()
    }

    /// Views the candidates name that the catalog withdrew, for the audit entry.
    pub fn withdrawn(&self) -> Vec<(&'static str, FieldView)> {
        let mut out: Vec<_> = self.candidates.iter().flat_map(|g| g.withdrawn()).collect();
        out.sort_unstable_by_key(|(f, v)| (*f, *v as i32));
        out.dedup();
        out
    }

    /// The field plan for a record with this grid code, or `None` when no
    /// candidate covers it (the record is then treated as absent). One
    /// covering grant's plan is shared as is; the union of several is
    /// computed once per set of grants.
    pub fn plan_for(&self, row_code: &str) -> Option<Arc<FieldPlan>> {
        let mut covering = self
            .candidates
            .iter()
            .enumerate()
            .filter(|(_, g)| g.covers(row_code));
        let (first, only) = covering.next()?;
        if covering.next().is_none() {
            return Some(only.plan.clone());
        }
        let merge = || {
            let mut plan = FieldPlan::clone(&only.plan);
            for g in self.candidates[first + 1..]
                .iter()
                .filter(|g| g.covers(row_code))
            {
                plan.merge(&g.plan);
            }
            Arc::new(plan)
        };
        if self.candidates.len() > 64 {
            return Some(merge());
        }
        let set = self
            .candidates
            .iter()
            .enumerate()
            .filter(|(_, g)| g.covers(row_code))
            .fold(0u64, |m, (i, _)| m | 1 << i);
        let mut cache = self.merged.lock().expect("plan cache lock");
        Some(cache.entry(set).or_insert_with(merge).clone())
    }

    /// Whether some candidate covers the whole region `prefix`.
    pub fn covers_region(&self, prefix: &str) -> bool {
        self.candidates
            .iter()
            .any(|g| g.regions.iter().any(|r| covers(r, prefix)))
    }

    /// Whether `code` is an ancestor of a granted region (for the region tree).
    pub fn is_ancestor_of_scope(&self, code: &str) -> bool {
        self.candidates.iter().any(|g| {
            g.regions
                .iter()
                .any(|r| r != ALL_REGIONS && r.starts_with(code))
        })
    }

    /// The prefixes to scan for a listing: the requested region when a grant
    /// covers it, or every granted region (minimal set, sorted) when none was
    /// asked for. `None` when the requested region is outside the grants.
    pub fn scan_prefixes(&self, requested: &str) -> Option<Vec<String>> {
        if !requested.is_empty() {
            return self
                .covers_region(requested)
                .then(|| vec![requested.to_string()]);
        }
        let mut all: Vec<String> = self
            .candidates
            .iter()
            .flat_map(|g| g.regions.iter())
            .map(|r| {
                if r == ALL_REGIONS {
                    String::new()
                } else {
                    r.clone()
                }
            })
            .collect();
        all.sort();
        all.dedup();
        let mut minimal: Vec<String> = Vec::new();
        for r in all {
            if !minimal.iter().any(|m| r.starts_with(m.as_str())) {
                minimal.push(r);
            }
        }
        Some(minimal)
    }

    /// The most records one call may return.
    pub fn max_records_per_call(&self) -> Option<u64> {
        self.most_permissive(|l| u64::from(l.max_records_per_call))
    }

    pub fn max_records_per_day(&self) -> Option<u64> {
        self.most_permissive(|l| l.max_records_per_day)
    }

    pub fn max_calls_per_minute(&self) -> Option<u64> {
        self.most_permissive(|l| u64::from(l.max_calls_per_minute))
    }

    /// The largest limit among the candidates — each grant allows up to its
    /// own — or `None` when any candidate sets none (0).
    fn most_permissive(&self, limit: impl Fn(&GrantLimits) -> u64) -> Option<u64> {
        let limits: Vec<u64> = self
            .candidates
            .iter()
            .map(|g| g.grant.limits.as_ref().map_or(0, &limit))
            .collect();
        if limits.contains(&0) {
            None
        } else {
            limits.into_iter().max()
        }
    }
}
