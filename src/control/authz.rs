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
//! When no grant is a candidate, the refusal reports the grant the caller
//! meant (scopes.md, "Denial reasons"): auditors count denials by these
//! codes, and `PURPOSE_NOT_GRANTED` is the signature of a department
//! shopping for a purpose, so a wrong code is a wrong statistic. The grant
//! reported is the one that (i) names the purpose the caller cited, then
//! (ii) fails the fewest rules — revocation, validity window, operation,
//! purpose, catalog, one each — then (iii) whose first failing rule comes
//! latest in that order. Its first failing rule is the reason code, and the
//! message names every rule it fails and what would change it. When no
//! grant names the cited purpose, the reason is `PURPOSE_NOT_GRANTED`.

use crate::base::clock;
use crate::datasets::Dataset;
use crate::datasets::catalog::Catalog;
use crate::datasets::mask::FieldPlan;
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
    /// The message is capped ([`crate::base::text::cap_message`]): it
    /// goes back to the caller and into the log, and may quote their input.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: crate::base::text::cap_message(message.into()),
            grants: Vec::new(),
        }
    }
}

/// The longest a grant may hide its pulls from the resident tracker.
pub const MAX_DISCLOSURE_DELAY_DAYS: u32 = 180;

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
#[derive(Debug, PartialEq)]
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
    /// Days its pulls stay hidden from the resident tracker: honoured only
    /// under an approved request (four eyes), at most 180.
    delay_days: u32,
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
        let delay_days = if approved_request {
            grant.disclosure_delay_days.min(MAX_DISCLOSURE_DELAY_DAYS)
        } else {
            0
        };
        Some(Self {
            grant,
            dataset,
            regions,
            plan: Arc::new(plan),
            withdrawn,
            delay_days,
        })
    }

    pub fn dataset(&self) -> Dataset {
        self.dataset
    }

    /// Days pulls under this grant stay hidden from the resident tracker.
    pub fn delay_days(&self) -> u32 {
        self.delay_days
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

/// A rule a grant can fail against a request, in the order scopes.md
/// lists them: a later rule is closer to succeeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    Revoked,
    NotYetValid,
    Expired,
    Operation,
    Purpose,
    Catalog,
}

impl Rule {
    fn code(self) -> &'static str {
        match self {
            Rule::Revoked => "GRANT_REVOKED",
            Rule::NotYetValid => "GRANT_NOT_YET_VALID",
            Rule::Expired => "GRANT_EXPIRED",
            Rule::Operation => "OPERATION_NOT_GRANTED",
            Rule::Purpose => "PURPOSE_NOT_GRANTED",
            Rule::Catalog => "CATALOG_WITHDRAWN",
        }
    }
}

/// One grant judged against one request: every rule it fails (the
/// validity window counts once), in order.
struct Judged<'a> {
    grant: &'a Arc<CompiledGrant>,
    names_purpose: bool,
    failed: Vec<Rule>,
}

impl Judged<'_> {
    /// How close the grant came, as the refusal ranks grants (larger is
    /// closer): (i) it names the purpose the caller cited — that is the
    /// grant the caller meant; (ii) it fails the fewest rules; (iii) its
    /// first failing rule comes latest.
    fn closeness(&self) -> (bool, std::cmp::Reverse<usize>, Option<Rule>) {
        (
            self.names_purpose,
            std::cmp::Reverse(self.failed.len()),
            self.failed.first().copied(),
        )
    }
}

fn judge<'a>(
    g: &'a Arc<CompiledGrant>,
    op: Operation,
    purpose: &str,
    purpose_ok: bool,
    now: i64,
) -> Judged<'a> {
    let g_ = &g.grant;
    let names_purpose = g_.purposes.iter().any(|p| p == purpose);
    let mut failed = Vec::new();
    if g_.revoked_at.is_some() {
        failed.push(Rule::Revoked);
    }
    if g_.not_before.as_ref().is_some_and(|t| now < t.seconds) {
        failed.push(Rule::NotYetValid);
    } else if g_.not_after.as_ref().is_some_and(|t| now >= t.seconds) {
        failed.push(Rule::Expired);
    }
    if !g_.operations.contains(&(op as i32)) {
        failed.push(Rule::Operation);
    }
    if !purpose_ok || !names_purpose {
        failed.push(Rule::Purpose);
    }
    if g.plan.is_empty() {
        failed.push(Rule::Catalog);
    }
    Judged {
        grant: g,
        names_purpose,
        failed,
    }
}

/// What would change one failed rule of `g`, in words.
fn explain(rule: Rule, g: &Grant, op: Operation, why_purpose: &str) -> String {
    let at = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map_or_else(|| "?".to_string(), |t| clock::rfc3339(t.seconds))
    };
    match rule {
        Rule::Revoked => format!("was revoked at {}", at(&g.revoked_at)),
        Rule::NotYetValid => format!("is not valid until {}", at(&g.not_before)),
        Rule::Expired => format!("has expired (since {})", at(&g.not_after)),
        Rule::Operation => {
            let has: Vec<&str> = g
                .operations
                .iter()
                .filter_map(|o| Operation::try_from(*o).ok())
                .map(op_name)
                .collect();
            format!(
                "does not allow the {} operation (it allows {})",
                op_name(op),
                if has.is_empty() {
                    "none".to_string()
                } else {
                    has.join(", ")
                }
            )
        }
        Rule::Purpose => format!("cannot serve this purpose{why_purpose}"),
        Rule::Catalog => "names no field view the catalog in force still releases".to_string(),
    }
}

fn op_name(op: Operation) -> &'static str {
    op.as_str_name().trim_start_matches("OPERATION_")
}

/// The grants that serve one request. Only [`decide`] builds it.
#[derive(Debug)]
pub struct Decision {
    dataset: Dataset,
    candidates: Vec<Arc<CompiledGrant>>,
    /// Merged plans by the set of covering candidates (bit i: candidate i).
    merged: Mutex<HashMap<u64, Arc<FieldPlan>>>,
}

impl Decision {
    /// Whether `other` releases exactly what this decision does: the same
    /// grants, compiled the same (regions, field plans, what the catalog
    /// withdrew, delays). A call judged again after an unrelated policy
    /// change, under an equal decision, may release what it already masked.
    pub fn releases_as(&self, other: &Decision) -> bool {
        self.dataset == other.dataset
            && self.candidates.len() == other.candidates.len()
            && self
                .candidates
                .iter()
                .zip(&other.candidates)
                .all(|(a, b)| a == b)
    }
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
    let judged: Vec<Judged<'_>> = of_dataset
        .iter()
        .map(|g| judge(g, op, purpose, purpose_ok, now_s))
        .collect();
    if judged.iter().any(|j| j.failed.is_empty()) {
        return Ok(Decision {
            dataset,
            candidates: judged
                .into_iter()
                .filter(|j| j.failed.is_empty())
                .map(|j| j.grant.clone())
                .collect(),
            merged: Mutex::new(HashMap::new()),
        });
    }
    let best = judged
        .iter()
        .map(Judged::closeness)
        .max()
        .expect("non-empty");
    let closest: Vec<&Judged<'_>> = judged.iter().filter(|j| j.closeness() == best).collect();
    let name = dataset.name();
    let why_purpose = match registered {
        None => " (it is not a registered purpose)",
        Some(_) if !purpose_ok => " (it is retired, or not citable by your department)",
        Some(_) => "",
    };
    let (code, message) = if !best.0 {
        // No grant names the purpose cited: the caller has no grant for it.
        let mut listed: Vec<&str> = closest
            .iter()
            .flat_map(|j| j.grant.grant.purposes.iter().map(String::as_str))
            .collect();
        listed.sort_unstable();
        listed.dedup();
        (
            Rule::Purpose.code(),
            format!(
                "purpose '{}' is not granted for '{name}'{why_purpose}; granted purposes: {}",
                crate::base::text::cap_for_message(purpose),
                listed.join(", ")
            ),
        )
    } else {
        // The grant the caller meant: its first failing rule is the
        // reason, and the message names every rule it fails.
        let meant = closest[0];
        let rules: Vec<String> = meant
            .failed
            .iter()
            .map(|r| explain(*r, &meant.grant.grant, op, why_purpose))
            .collect();
        (
            meant.failed[0].code(),
            format!(
                "your department's grant '{}' for '{name}' {}",
                crate::base::text::cap_for_message(&meant.grant.grant.id),
                rules.join("; and it ")
            ),
        )
    };
    let mut denial = Denial::new(code, message);
    denial.grants = closest.iter().map(|j| j.grant.grant.id.clone()).collect();
    Err(denial)
}

fn covers(region: &str, code: &str) -> bool {
    region == ALL_REGIONS || code.starts_with(region)
}

impl Decision {
    pub fn dataset(&self) -> Dataset {
        self.dataset
    }

    /// The longest disclosure delay among the grants that serve the call.
    pub fn disclosure_delay_days(&self) -> u32 {
        self.candidates
            .iter()
            .map(|g| g.delay_days)
            .max()
            .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::FieldGrant;

    const NOW: i64 = 1_800_000_000;

    /// How a grant in a table case fails (or not) on its own.
    #[derive(Clone, Copy, Debug)]
    enum Fails {
        Revoked,
        NotYetValid,
        Expired,
        Operation,
        /// Names another purpose than the one cited.
        Purpose,
        Catalog,
    }

    fn grant(id: &str, fails: &[Fails]) -> Arc<CompiledGrant> {
        let ts = |s: i64| {
            Some(prost_types::Timestamp {
                seconds: NOW + s,
                nanos: 0,
            })
        };
        let mut g = Grant {
            id: id.into(),
            department: "d".into(),
            dataset: "population".into(),
            operations: vec![Operation::Get.into(), Operation::List.into()],
            fields: vec![FieldGrant {
                field: "name".into(),
                view: FieldView::Clear.into(),
            }],
            regions: vec!["310115".into()],
            purposes: vec!["cited".into()],
            ..Default::default()
        };
        for f in fails {
            match f {
                Fails::Revoked => g.revoked_at = ts(-60),
                Fails::NotYetValid => g.not_before = ts(3600),
                Fails::Expired => g.not_after = ts(-3600),
                Fails::Operation => g.operations = vec![Operation::List.into()],
                Fails::Purpose => g.purposes = vec!["other".into()],
                // Only a not_shared field: the catalog releases nothing.
                Fails::Catalog => g.fields[0].field = "restricted_tags".into(),
            }
        }
        let catalog = Catalog::with_overrides(&[]).unwrap();
        let c = CompiledGrant::compile(g, &catalog, &HashSet::new(), &[]).unwrap();
        assert_eq!(
            c.plan.is_empty(),
            fails.iter().any(|f| matches!(f, Fails::Catalog)),
            "only the catalog case releases nothing"
        );
        Arc::new(c)
    }

    fn refuse(grants: &[Arc<CompiledGrant>]) -> Denial {
        let purposes: HashMap<String, Purpose> = ["cited", "other"]
            .into_iter()
            .map(|c| {
                (
                    c.to_string(),
                    Purpose {
                        code: c.into(),
                        status: PurposeStatus::Active.into(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        decide(
            grants,
            "d",
            Dataset::Population,
            Operation::Get,
            "cited",
            &purposes,
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(NOW as u64),
        )
        .expect_err("no grant serves the request")
    }

    /// Each pair of single-rule failures, in both orders of the grants:
    /// the reason is the same whichever grant comes first.
    #[test]
    fn the_grant_the_caller_meant_decides_the_reason() {
        let cases = [
            // validity × purpose: the grant naming the cited purpose wins.
            (
                Fails::NotYetValid,
                Fails::Purpose,
                "GRANT_NOT_YET_VALID",
                "a",
            ),
            // operation × purpose
            (
                Fails::Operation,
                Fails::Purpose,
                "OPERATION_NOT_GRANTED",
                "a",
            ),
            // revoked × purpose
            (Fails::Revoked, Fails::Purpose, "GRANT_REVOKED", "a"),
            // expired × operation: both name it; operation comes later.
            (
                Fails::Expired,
                Fails::Operation,
                "OPERATION_NOT_GRANTED",
                "b",
            ),
            // catalog × purpose
            (Fails::Catalog, Fails::Purpose, "CATALOG_WITHDRAWN", "a"),
        ];
        for (fa, fb, code, reported) in cases {
            let (a, b) = (grant("a", &[fa]), grant("b", &[fb]));
            for grants in [vec![a.clone(), b.clone()], vec![b, a]] {
                let d = refuse(&grants);
                assert_eq!(d.code, code, "{fa:?} × {fb:?}: {}", d.message);
                assert_eq!(d.grants, vec![reported.to_string()], "{fa:?} × {fb:?}");
            }
        }
    }

    #[test]
    fn naming_the_purpose_outranks_failing_fewer_rules() {
        // `a` names the cited purpose but is revoked and not yet valid;
        // `b` fails only on purpose.
        let a = grant("a", &[Fails::Revoked, Fails::NotYetValid]);
        let b = grant("b", &[Fails::Purpose]);
        for grants in [vec![a.clone(), b.clone()], vec![b, a]] {
            let d = refuse(&grants);
            assert_eq!(d.code, "GRANT_REVOKED");
            assert_eq!(d.grants, vec!["a".to_string()]);
            assert!(d.message.contains("was revoked at"), "{}", d.message);
            assert!(d.message.contains("not valid until"), "{}", d.message);
        }
    }

    #[test]
    fn fewer_failures_then_the_later_first_rule() {
        // Both name the purpose: one failing rule beats two, even when the
        // two-rule grant's first rule comes later.
        let a = grant("a", &[Fails::Expired]);
        let b = grant("b", &[Fails::Operation, Fails::Catalog]);
        assert_eq!(refuse(&[b.clone(), a.clone()]).code, "GRANT_EXPIRED");
        // Ties at the top are all named in the entry.
        let c = grant("c", &[Fails::Expired]);
        let d = refuse(&[a, b, c]);
        assert_eq!(d.grants, vec!["a".to_string(), "c".to_string()]);
    }

    #[test]
    fn without_a_grant_naming_the_purpose_the_reason_stays_the_purpose() {
        let a = grant("a", &[Fails::Purpose, Fails::Revoked]);
        let b = grant("b", &[Fails::Purpose]);
        let d = refuse(&[a, b]);
        assert_eq!(d.code, "PURPOSE_NOT_GRANTED");
        assert_eq!(d.grants, vec!["b".to_string()]);
        assert!(
            d.message.contains("granted purposes: other"),
            "{}",
            d.message
        );
    }

    #[test]
    fn the_message_says_what_would_change_each_rule() {
        let d = refuse(&[grant("a", &[Fails::Operation, Fails::Expired])]);
        assert_eq!(d.code, "GRANT_EXPIRED");
        assert!(d.message.contains("has expired (since "), "{}", d.message);
        assert!(
            d.message
                .contains("does not allow the GET operation (it allows LIST)"),
            "{}",
            d.message
        );
    }
}
