//! What may be granted: the checks shared by `CreateGrant` and
//! `SubmitAccessRequest`, so a grant and a request are judged by one rule
//! set — against the catalog in force, the purpose registry and the region
//! tree. A misspelled purpose or region is refused by name here, so it can
//! never become a grant that silently matches nothing.

use crate::base::clock;
use crate::base::text::cap_for_message;
use crate::control::authz::{ALL_REGIONS, MAX_DISCLOSURE_DELAY_DAYS};
use crate::datasets::Dataset;
use crate::datasets::catalog::Catalog;
use crate::datasets::codes::RegionCode;
use crate::proto::{FieldGrant, FieldView, Operation, Purpose, PurposeStatus, SharingClass};
use std::collections::{BTreeSet, HashMap};

/// What a scope is judged against.
pub struct Rules<'a> {
    pub catalog: &'a Catalog,
    pub purposes: &'a HashMap<String, Purpose>,
    /// Whether a region or grid code exists in the region tree.
    pub region_exists: &'a dyn Fn(&str) -> bool,
}

/// The scope a grant or an access request asks for.
pub struct Scope<'a> {
    pub dataset: &'a str,
    pub operations: &'a [i32],
    pub fields: &'a [FieldGrant],
    pub regions: &'a [String],
    pub purposes: &'a [String],
    pub not_before: Option<&'a prost_types::Timestamp>,
    pub not_after: Option<&'a prost_types::Timestamp>,
    pub disclosure_delay_days: u32,
}

/// A scope that passed every check.
pub struct Checked {
    pub dataset: Dataset,
    /// What needs an approved request and a legal basis: conditional field
    /// views, and a disclosure delay.
    pub conditional: Vec<String>,
}

/// Checks a scope for `department`. Errors are INVALID_ARGUMENT messages
/// naming the part and the rule.
pub fn check(rules: &Rules<'_>, department: &str, s: &Scope<'_>) -> Result<Checked, String> {
    let catalog = rules.catalog;
    let dataset = Dataset::parse(s.dataset).ok_or_else(|| {
        let known: Vec<&str> = Dataset::ALL.iter().map(|d| d.name()).collect();
        format!(
            "dataset: '{}' is not one of {}",
            cap_for_message(s.dataset),
            known.join(", ")
        )
    })?;
    if s.operations.is_empty() {
        return Err("operations: name at least one of GET, BATCH_GET, LIST".into());
    }
    if let Some(op) = s
        .operations
        .iter()
        .find(|o| Operation::try_from(**o).is_err() || **o == 0)
    {
        return Err(format!("operations: {op} is not GET, BATCH_GET or LIST"));
    }
    if s.fields.is_empty() {
        return Err("fields: name at least one field with its view".into());
    }
    let mut seen = BTreeSet::new();
    let mut conditional = Vec::new();
    for f in s.fields {
        let spec = dataset.spec().field(&f.field).ok_or_else(|| {
            format!(
                "fields: {} has no field '{}' (see GetCatalog)",
                dataset.name(),
                cap_for_message(&f.field)
            )
        })?;
        let view = FieldView::try_from(f.view)
            .ok()
            .filter(|v| *v != FieldView::Unspecified)
            .ok_or_else(|| {
                format!(
                    "fields: '{}' needs a view (CLEAR, MASKED or PSEUDONYM)",
                    f.field
                )
            })?;
        if !seen.insert(f.field.as_str()) {
            return Err(format!("fields: '{}' is listed twice", f.field));
        }
        let view_name = view.as_str_name().trim_start_matches("FIELD_VIEW_");
        match catalog.sharing(dataset, &f.field, view) {
            None => {
                let supported: Vec<&str> = spec
                    .views
                    .iter()
                    .map(|(v, _)| v.as_str_name().trim_start_matches("FIELD_VIEW_"))
                    .collect();
                return Err(format!(
                    "fields: '{}' has no {view_name} view; it supports {}",
                    f.field,
                    supported.join(", ")
                ));
            }
            Some(SharingClass::NotShared) => {
                return Err(format!(
                    "fields: '{}' in view {view_name} is not_shared and is never granted",
                    f.field
                ));
            }
            Some(SharingClass::Conditional) => conditional.push(format!("{}={view_name}", f.field)),
            Some(_) => {}
        }
    }
    if s.regions.is_empty() {
        return Err(
            "regions: empty grants nothing; name region codes, or '*' for the whole jurisdiction"
                .into(),
        );
    }
    for r in s.regions {
        if r != ALL_REGIONS {
            RegionCode::parse(r).map_err(|e| format!("regions: {e}"))?;
            if !(rules.region_exists)(r) {
                return Err(format!(
                    "regions: '{r}' is not a region or grid this gateway serves (see GetRegionTree)"
                ));
            }
        }
    }
    if s.purposes.is_empty() {
        return Err(
            "purposes: name at least one registered purpose code, e.g. social-assistance".into(),
        );
    }
    for p in s.purposes {
        check_purpose(rules.purposes, department, p)?;
    }
    match s.disclosure_delay_days {
        0 => {}
        d if d > MAX_DISCLOSURE_DELAY_DAYS => {
            return Err(format!(
                "disclosure_delay_days: at most {MAX_DISCLOSURE_DELAY_DAYS} (got {d})"
            ));
        }
        // Hiding pulls from residents is an investigation's exception: four
        // eyes, like a clear ID.
        d => conditional.push(format!("disclosure_delay_days={d}")),
    }
    if let (Some(from), Some(until)) = (s.not_before, s.not_after) {
        if from.seconds >= until.seconds {
            return Err("not_before/not_after: the validity ends before it starts".into());
        }
    }
    if s.not_after
        .is_some_and(|t| t.seconds <= clock::unix_seconds(clock::now()))
    {
        return Err("not_after: lies in the past".into());
    }
    Ok(Checked {
        dataset,
        conditional,
    })
}

/// A purpose must be registered, active, and citable by `department`.
pub fn check_purpose(
    purposes: &HashMap<String, Purpose>,
    department: &str,
    code: &str,
) -> Result<(), String> {
    let shown = crate::base::text::cap_for_message(code);
    match purposes.get(code) {
        None => {
            let mut near: Vec<(usize, &str)> = purposes
                .values()
                .filter(|p| p.status == PurposeStatus::Active as i32)
                .map(|p| (strsim::levenshtein(code, &p.code), p.code.as_str()))
                .collect();
            near.sort();
            let suggest: Vec<&str> = near.iter().take(3).map(|(_, c)| *c).collect();
            Err(format!(
                "purposes: '{shown}' is not a registered purpose; did you mean {}? (GetCatalog lists them)",
                suggest.join(", ")
            ))
        }
        Some(p) if p.status != PurposeStatus::Active as i32 => Err(format!(
            "purposes: '{shown}' is retired and cannot be cited"
        )),
        Some(p) if !p.departments.is_empty() && !p.departments.iter().any(|d| d == department) => {
            Err(format!(
                "purposes: '{shown}' may be cited only by {}",
                p.departments.join(", ")
            ))
        }
        Some(_) => Ok(()),
    }
}

/// Department ids: short slugs, as file names and token claims carry them.
pub fn is_department_id(id: &str) -> bool {
    (2..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope<'a>(
        fields: &'a [FieldGrant],
        regions: &'a [String],
        purposes: &'a [String],
    ) -> Scope<'a> {
        Scope {
            dataset: "population",
            operations: &[1],
            fields,
            regions,
            purposes,
            not_before: None,
            not_after: None,
            disclosure_delay_days: 0,
        }
    }

    fn fg(field: &str, view: FieldView) -> FieldGrant {
        FieldGrant {
            field: field.into(),
            view: view as i32,
        }
    }

    fn registry() -> HashMap<String, Purpose> {
        [
            "social-assistance",
            "housing-security",
            "grid-event-handling",
        ]
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
        .collect()
    }

    /// The demo district's codes exist; nothing else does.
    fn served(code: &str) -> bool {
        code.starts_with("310115")
    }

    fn check_with(c: &Catalog, s: &Scope<'_>) -> Result<Checked, String> {
        let purposes = registry();
        let rules = Rules {
            catalog: c,
            purposes: &purposes,
            region_exists: &served,
        };
        check(&rules, "civil-affairs", s)
    }

    #[test]
    fn classifies_and_refuses_by_the_catalog() {
        let c = Catalog::default();
        let (r, p) = (
            vec!["310115".to_string()],
            vec!["social-assistance".to_string()],
        );
        let ok = check_with(
            &c,
            &scope(
                &[
                    fg("name", FieldView::Clear),
                    fg("id_number", FieldView::Masked),
                ],
                &r,
                &p,
            ),
        )
        .unwrap();
        assert!(ok.conditional.is_empty());
        let cond = check_with(&c, &scope(&[fg("id_number", FieldView::Clear)], &r, &p)).unwrap();
        assert_eq!(cond.conditional, ["id_number=CLEAR"]);
        let err = |f: &[FieldGrant], r: &[String]| check_with(&c, &scope(f, r, &p)).err().unwrap();
        assert!(err(&[fg("salary", FieldView::Clear)], &r).contains("no field 'salary'"));
        assert!(err(&[fg("sex", FieldView::Masked)], &r).contains("no MASKED view"));
        assert!(err(&[fg("name", FieldView::Clear)], &[]).starts_with("regions:"));
        assert!(err(&[fg("name", FieldView::Clear)], &["31011".into()]).starts_with("regions:"));
        let not_shared = Catalog::with_overrides(&[crate::datasets::catalog::Override {
            dataset: "population".into(),
            field: "restricted_tags".into(),
            view: "CLEAR".into(),
            sharing: "not_shared".into(),
        }])
        .unwrap();
        let e = check_with(
            &not_shared,
            &scope(&[fg("restricted_tags", FieldView::Clear)], &r, &p),
        )
        .err()
        .unwrap();
        assert!(e.contains("not_shared"), "{e}");
    }

    #[test]
    fn typos_and_unserved_regions_are_refused_by_name() {
        let c = Catalog::default();
        let f = [fg("name", FieldView::Clear)];
        let typo = ["housing-securty".to_string()];
        let e = check_with(&c, &scope(&f, &["310115".into()], &typo))
            .err()
            .unwrap();
        assert!(
            e.contains("'housing-securty' is not a registered purpose"),
            "{e}"
        );
        assert!(e.contains("did you mean housing-security"), "{e}");
        let p = ["social-assistance".to_string()];
        let e = check_with(&c, &scope(&f, &["110105".into()], &p))
            .err()
            .unwrap();
        assert!(e.contains("'110105' is not a region"), "{e}");
    }

    #[test]
    fn inverted_validity_is_refused() {
        let c = Catalog::default();
        let (r, p) = (vec!["*".to_string()], vec!["social-assistance".to_string()]);
        let f = [fg("name", FieldView::Clear)];
        let mut s = scope(&f, &r, &p);
        let (a, b) = (
            prost_types::Timestamp {
                seconds: 4_000_000_000,
                nanos: 0,
            },
            prost_types::Timestamp {
                seconds: 3_900_000_000,
                nanos: 0,
            },
        );
        s.not_before = Some(&a);
        s.not_after = Some(&b);
        assert!(
            check_with(&c, &s)
                .err()
                .unwrap()
                .contains("ends before it starts")
        );
    }
}
