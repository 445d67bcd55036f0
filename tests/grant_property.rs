//! Property: for random grants and random requests, the authorize and mask
//! steps the pipeline runs never release a row no valid grant covers, a
//! field no covering grant names, or a view more revealing than granted.
//!
//! The oracle below is written from scopes.md, independently of `authz`.

use govshare::authz;
use govshare::catalog::Dataset;
use govshare::mask::{Masker, Projector, revealing_rank};
use govshare::proto::{FieldGrant, FieldView, Grant, Operation, Person};
use govshare::records::Record;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

static PERSONS: LazyLock<Vec<Person>> = LazyLock::new(|| govshare::demo::generate(7, 400).persons);

/// Region prefixes drawn from the district itself (district, streets,
/// communities, grids), plus the wildcard and a region with nobody in it.
static REGIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut r: Vec<String> = PERSONS
        .iter()
        .map(|p| p.residence_grid.clone().unwrap())
        .flat_map(|g| {
            [
                g[..6].to_string(),
                g[..9].to_string(),
                g[..12].to_string(),
                g,
            ]
        })
        .collect();
    r.sort();
    r.dedup();
    r.push("*".into());
    r.push("320000".into());
    r
});

const PURPOSES: [&str; 3] = ["social-assistance", "elderly-care", "census"];
const OPS: [Operation; 3] = [Operation::Get, Operation::BatchGet, Operation::List];

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn ts(offset: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: 1_800_000_000 + offset,
        nanos: 0,
    }
}

fn field_grant() -> impl Strategy<Value = FieldGrant> {
    let spec = Dataset::Population.spec();
    (0..spec.fields.len(), 0..3usize).prop_map(move |(i, v)| {
        let f = &spec.fields[i];
        let view = f.views[v % f.views.len()].0;
        FieldGrant {
            field: f.name.into(),
            view: view.into(),
        }
    })
}

fn grant() -> impl Strategy<Value = Grant> {
    (
        prop::collection::vec(field_grant(), 1..8),
        prop::collection::vec(0..REGIONS.len(), 1..3),
        prop::collection::vec(0..PURPOSES.len(), 1..3),
        prop::collection::vec(0..OPS.len(), 1..3),
        0..6u8,
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(fields, regions, purposes, ops, validity, revoked)| Grant {
                id: "g".into(),
                department: "civil-affairs".into(),
                dataset: "population".into(),
                operations: ops.into_iter().map(|o| OPS[o] as i32).collect(),
                fields,
                regions: regions.into_iter().map(|r| REGIONS[r].clone()).collect(),
                purposes: purposes.into_iter().map(|p| PURPOSES[p].into()).collect(),
                // 0: expired, 1: not yet valid, otherwise valid now.
                not_before: (validity == 1).then(|| ts(60)),
                not_after: match validity {
                    0 => Some(ts(-1)),
                    2 => Some(ts(3600)),
                    _ => None,
                },
                revoked_at: revoked.then(|| ts(-10)),
                ..Default::default()
            },
        )
}

/// scopes.md: a grant serves a request when it is for the dataset, not
/// revoked, valid now, allows the operation and lists the purpose.
fn serves(g: &Grant, op: Operation, purpose: &str) -> bool {
    let now = 1_800_000_000;
    g.revoked_at.is_none()
        && g.not_before.is_none_or(|t| t.seconds <= now)
        && g.not_after.is_none_or(|t| now < t.seconds)
        && g.operations.contains(&(op as i32))
        && g.purposes.iter().any(|p| p == purpose)
}

/// The fields (and the most revealing view) the grants allow for one row.
fn allowed(
    grants: &[Grant],
    op: Operation,
    purpose: &str,
    grid: &str,
) -> Option<BTreeMap<String, FieldView>> {
    let covering: Vec<&Grant> = grants
        .iter()
        .filter(|g| serves(g, op, purpose))
        .filter(|g| {
            g.regions
                .iter()
                .any(|r| r == "*" || grid.starts_with(r.as_str()))
        })
        .collect();
    if covering.is_empty() {
        return None;
    }
    let mut out = BTreeMap::new();
    for f in covering.iter().flat_map(|g| &g.fields) {
        let v = FieldView::try_from(f.view).unwrap();
        let slot = out.entry(f.field.clone()).or_insert(v);
        if revealing_rank(v) > revealing_rank(*slot) {
            *slot = v;
        }
    }
    Some(out)
}

/// The set top-level fields of a released person, by proto field name.
fn present_fields(p: &Person) -> Vec<String> {
    let json = govshare::json::to_value(p);
    json.as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "views")
        .map(|k| {
            k.chars()
                .flat_map(|c| {
                    if c.is_ascii_uppercase() {
                        vec!['_', c.to_ascii_lowercase()]
                    } else {
                        vec![c]
                    }
                })
                .collect()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn nothing_beyond_the_grants_is_released(
        grants in prop::collection::vec(grant(), 0..4),
        op in 0..OPS.len(),
        purpose in 0..PURPOSES.len(),
    ) {
        let (op, purpose) = (OPS[op], PURPOSES[purpose]);
        let masker = Masker::new([7; 32]);
        let decision = authz::authorize(grants.clone(), Dataset::Population, op, purpose, now());
        let any_serves = grants.iter().any(|g| serves(g, op, purpose));
        prop_assert_eq!(decision.is_ok(), any_serves, "denied exactly when no grant serves");
        let Ok(decision) = decision else { return Ok(()) };
        for person in PERSONS.iter() {
            let expected = allowed(&grants, op, purpose, person.row_code());
            let plan = decision.plan_for(person.row_code());
            prop_assert_eq!(plan.is_some(), expected.is_some(), "row visibility");
            let (Some(plan), Some(expected)) = (plan, expected) else { continue };
            let mut p = Projector::new(&plan, Dataset::Population.spec(), Person::FIELD_PREFIX, &masker, "civil-affairs", Some("社区"));
            let out = person.project(&mut p);
            for field in present_fields(&out) {
                let granted = expected.get(&field);
                prop_assert!(granted.is_some(), "field {} released without a grant", field);
                let view = out.views.get(&field).and_then(|v| FieldView::try_from(*v).ok());
                prop_assert_eq!(view, granted.copied(), "field {} released in another view than granted", field);
            }
            for (field, view) in &out.views {
                let granted = expected.get(field).copied().unwrap_or(FieldView::Unspecified);
                prop_assert!(revealing_rank(FieldView::try_from(*view).unwrap()) <= revealing_rank(granted), "{} more revealing than granted", field);
            }
            if out.views.get("id_number") == Some(&(FieldView::Pseudonym as i32)) {
                prop_assert_ne!(&out.id_number, &person.id_number);
            }
            if out.views.get("id_number") == Some(&(FieldView::Masked as i32)) {
                let id = person.id_number.as_deref().unwrap();
                let masked = format!("{}********{}", &id[..6], &id[14..]);
                prop_assert_eq!(out.id_number.as_deref(), Some(masked.as_str()));
            }
        }
    }
}
