//! The authorize step: a department's active grants against a request.
//!
//! Candidate grants are the department's unrevoked grants for the dataset
//! that are valid now and allow the operation and the purpose. A record is
//! visible when a candidate's regions cover its grid code; its fields are the
//! union of the covering grants' fields, each in the most revealing view any
//! of them allows.

use crate::catalog::Dataset;
use crate::clock;
use crate::mask::{FieldPlan, revealing_rank};
use crate::proto::{FieldView, Grant, GrantLimits, Operation};
use std::time::SystemTime;

/// Why a request was refused. `code` is the audit reason code.
#[derive(Debug, Clone)]
pub struct Denial {
    pub code: &'static str,
    pub message: String,
}

impl Denial {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The grants that serve one request. Only `authorize` builds it.
#[derive(Debug, Clone)]
pub struct Decision {
    grants: Vec<Grant>,
}

/// The wildcard region: the whole jurisdiction, only when written explicitly.
pub const ALL_REGIONS: &str = "*";

pub fn authorize(
    grants: Vec<Grant>,
    dataset: Dataset,
    operation: Operation,
    purpose: &str,
    now: SystemTime,
) -> Result<Decision, Denial> {
    let mut of_dataset: Vec<Grant> = grants
        .into_iter()
        .filter(|g| g.dataset == dataset.name() && g.revoked_at.is_none())
        .collect();
    if of_dataset.is_empty() {
        return Err(Denial::new(
            "NO_GRANT",
            format!(
                "your department holds no grant for dataset '{}'",
                dataset.name()
            ),
        ));
    }
    let now_s = clock::unix_seconds(now);
    of_dataset.retain(|g| {
        g.not_before.as_ref().is_none_or(|t| t.seconds <= now_s)
            && g.not_after.as_ref().is_none_or(|t| now_s < t.seconds)
    });
    if of_dataset.is_empty() {
        return Err(Denial::new(
            "EXPIRED",
            format!(
                "your department's grants for '{}' are not valid at this time",
                dataset.name()
            ),
        ));
    }
    of_dataset.retain(|g| g.operations.contains(&(operation as i32)));
    if of_dataset.is_empty() {
        return Err(Denial::new(
            "OPERATION_NOT_GRANTED",
            format!(
                "no grant for '{}' allows the {} operation",
                dataset.name(),
                operation.as_str_name().trim_start_matches("OPERATION_")
            ),
        ));
    }
    let granted_purposes: Vec<String> = of_dataset
        .iter()
        .flat_map(|g| g.purposes.iter().cloned())
        .collect();
    of_dataset.retain(|g| g.purposes.iter().any(|p| p == purpose));
    if of_dataset.is_empty() {
        let mut listed = granted_purposes;
        listed.sort();
        listed.dedup();
        return Err(Denial::new(
            "PURPOSE_NOT_GRANTED",
            format!(
                "purpose '{purpose}' is not granted for '{}'; granted purposes: {}",
                dataset.name(),
                listed.join(", ")
            ),
        ));
    }
    Ok(Decision { grants: of_dataset })
}

fn covers(region: &str, code: &str) -> bool {
    region == ALL_REGIONS || code.starts_with(region)
}

impl Decision {
    pub fn grant_ids(&self) -> Vec<String> {
        self.grants.iter().map(|g| g.id.clone()).collect()
    }

    /// The field plan for a record with this grid code, or `None` when no
    /// candidate covers it (the record is then treated as absent).
    pub fn plan_for(&self, row_code: &str) -> Option<FieldPlan> {
        let mut plan: Option<FieldPlan> = None;
        for g in self
            .grants
            .iter()
            .filter(|g| g.regions.iter().any(|r| covers(r, row_code)))
        {
            let plan = plan.get_or_insert_with(FieldPlan::new);
            for f in &g.fields {
                let view = FieldView::try_from(f.view).unwrap_or(FieldView::Unspecified);
                let slot = plan.entry(f.field.clone()).or_insert(view);
                if revealing_rank(view) > revealing_rank(*slot) {
                    *slot = view;
                }
            }
        }
        plan
    }

    /// Whether some candidate covers the whole region `prefix`.
    pub fn covers_region(&self, prefix: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.regions.iter().any(|r| covers(r, prefix)))
    }

    /// Whether `code` is an ancestor of a granted region (for the region tree).
    pub fn is_ancestor_of_scope(&self, code: &str) -> bool {
        self.grants.iter().any(|g| {
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
            .grants
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
            .grants
            .iter()
            .map(|g| g.limits.as_ref().map_or(0, &limit))
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

    fn grant(id: &str, regions: &[&str], fields: &[(&str, FieldView)], limit: u32) -> Grant {
        Grant {
            id: id.into(),
            department: "d".into(),
            dataset: "population".into(),
            operations: vec![Operation::Get as i32],
            fields: fields
                .iter()
                .map(|(f, v)| FieldGrant {
                    field: (*f).into(),
                    view: *v as i32,
                })
                .collect(),
            regions: regions.iter().map(|r| r.to_string()).collect(),
            purposes: vec!["p".into()],
            limits: Some(GrantLimits {
                max_records_per_call: limit,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn union_of_covering_grants_in_the_most_revealing_view() {
        let d = authorize(
            vec![
                grant(
                    "a",
                    &["310115004"],
                    &[
                        ("id_number", FieldView::Pseudonym),
                        ("name", FieldView::Clear),
                    ],
                    10,
                ),
                grant(
                    "b",
                    &["310115004012"],
                    &[
                        ("id_number", FieldView::Masked),
                        ("phone", FieldView::Masked),
                    ],
                    50,
                ),
            ],
            Dataset::Population,
            Operation::Get,
            "p",
            SystemTime::now(),
        )
        .unwrap();
        let inner = d.plan_for("310115004012003").unwrap();
        assert_eq!(inner["id_number"], FieldView::Masked);
        assert_eq!(inner["phone"], FieldView::Masked);
        let outer = d.plan_for("310115004001001").unwrap();
        assert_eq!(outer["id_number"], FieldView::Pseudonym);
        assert!(!outer.contains_key("phone"));
        assert!(d.plan_for("310115005001001").is_none());
        assert_eq!(d.max_records_per_call(), Some(50));
        assert_eq!(d.scan_prefixes("").unwrap(), vec!["310115004".to_string()]);
        assert!(d.scan_prefixes("310115").is_none());
    }

    #[test]
    fn denials_name_the_rule() {
        let now = SystemTime::now();
        let g = grant("a", &["*"], &[("name", FieldView::Clear)], 0);
        assert_eq!(
            authorize(vec![], Dataset::Population, Operation::Get, "p", now)
                .unwrap_err()
                .code,
            "NO_GRANT"
        );
        let e = authorize(
            vec![g.clone()],
            Dataset::Population,
            Operation::Get,
            "q",
            now,
        )
        .unwrap_err();
        assert_eq!(e.code, "PURPOSE_NOT_GRANTED");
        assert!(e.message.contains("granted purposes: p"));
        assert_eq!(
            authorize(
                vec![g.clone()],
                Dataset::Population,
                Operation::List,
                "p",
                now
            )
            .unwrap_err()
            .code,
            "OPERATION_NOT_GRANTED"
        );
        let mut expired = g.clone();
        expired.not_after = Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        });
        assert_eq!(
            authorize(vec![expired], Dataset::Population, Operation::Get, "p", now)
                .unwrap_err()
                .code,
            "EXPIRED"
        );
        let mut revoked = g;
        revoked.revoked_at = Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        });
        assert_eq!(
            authorize(vec![revoked], Dataset::Population, Operation::Get, "p", now)
                .unwrap_err()
                .code,
            "NO_GRANT"
        );
    }
}
