//! Validation of published records. Each check names the field and the rule;
//! derived fields (sex, birth date, category, parent codes) are set from the
//! key so they can never disagree with it.

use crate::datasets::codes::{CitizenId, Level, RegionCode, Uscc, parse_date};
use crate::proto::{
    EntityStatus, Grid, GridKind, GridWorker, LegalEntity, Person, PopulationType, RegionNode,
    ResidenceStatus, Sex, WorkerRole,
};

/// A record that passed validation, with any data-quality warnings.
pub struct Checked<R> {
    pub record: R,
    pub warnings: Vec<String>,
}

type Outcome<R> = Result<Checked<R>, String>;

const ORDINARY_TAGS: &[&str] = &[
    "dibao",
    "tekun",
    "disability",
    "elderly-alone",
    "left-behind-child",
];
const RESTRICTED_TAGS: &[&str] = &[
    "community-correction",
    "released-prisoner",
    "severe-mental-disorder",
];

fn required<'a>(field: &str, v: &'a Option<String>) -> Result<&'a str, String> {
    match v.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(format!("{field}: is required")),
    }
}

fn text(field: &str, v: &Option<String>, max_chars: usize) -> Result<(), String> {
    match v {
        Some(s) if s.chars().count() > max_chars => {
            Err(format!("{field}: longer than {max_chars} characters"))
        }
        _ => Ok(()),
    }
}

fn code2(field: &str, v: &Option<String>) -> Result<(), String> {
    match v.as_deref() {
        Some(s) if !(s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit())) => {
            Err(format!("{field}: '{s}' is not a 2-digit code"))
        }
        _ => Ok(()),
    }
}

fn date(field: &str, v: &str) -> Result<(), String> {
    parse_date(v)
        .map(|_| ())
        .map_err(|e| format!("{field}: {e}"))
}

fn opt_date(field: &str, v: &Option<String>) -> Result<(), String> {
    match v.as_deref() {
        Some(s) if !s.is_empty() => date(field, s),
        _ => Ok(()),
    }
}

fn phone(field: &str, v: &Option<String>) -> Result<(), String> {
    match v.as_deref() {
        Some(s)
            if !(5..=20).contains(&s.len())
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'-' || b == b'+') =>
        {
            Err(format!(
                "{field}: '{s}' is not a phone number (5-20 digits, '+' or '-')"
            ))
        }
        _ => Ok(()),
    }
}

fn grid_code(field: &str, v: &Option<String>) -> Result<RegionCode, String> {
    RegionCode::parse_grid(required(field, v)?).map_err(|e| format!("{field}: {e}"))
}

fn known_enum<E: TryFrom<i32>>(field: &str, v: Option<i32>) -> Result<(), String> {
    match v {
        Some(x) if x == 0 || E::try_from(x).is_err() => {
            Err(format!("{field}: {x} is not a defined value"))
        }
        _ => Ok(()),
    }
}

fn check_tags(
    field: &str,
    tags: &Option<crate::proto::PersonTags>,
    allowed: &[&str],
) -> Result<(), String> {
    for t in tags.iter().flat_map(|t| &t.items) {
        if !allowed.contains(&t.code.as_str()) {
            return Err(format!(
                "{field}: tag code '{}' is not one of {}",
                t.code,
                allowed.join(", ")
            ));
        }
        date(&format!("{field}.valid_from"), &t.valid_from)?;
        if !t.valid_to.is_empty() {
            date(&format!("{field}.valid_to"), &t.valid_to)?;
        }
    }
    Ok(())
}

pub fn person(mut p: Person) -> Outcome<Person> {
    let id = CitizenId::parse(required("id_number", &p.id_number)?)
        .map_err(|e| format!("id_number: {e}"))?;
    required("name", &p.name)?;
    text("name", &p.name, 64)?;
    let sex = id.sex() as i32;
    if p.sex.is_some_and(|s| s != sex) {
        return Err(format!(
            "sex: disagrees with id_number, which says {:?}",
            Sex::try_from(sex).unwrap_or_default()
        ));
    }
    let birth = id.birth_date().to_string();
    if p.birth_date.as_ref().is_some_and(|b| *b != birth) {
        return Err(format!(
            "birth_date: disagrees with id_number, which says {birth}"
        ));
    }
    code2("ethnicity", &p.ethnicity)?;
    code2("marital_status", &p.marital_status)?;
    code2("education", &p.education)?;
    code2("relation_to_head", &p.relation_to_head)?;
    if let Some(h) = p.hukou_division.as_deref() {
        let ok = RegionCode::parse(h).is_ok_and(|c| c.level() == Level::District);
        if !ok {
            return Err(format!(
                "hukou_division: '{h}' is not a 6-digit division code"
            ));
        }
    }
    grid_code("residence_grid", &p.residence_grid)?;
    text("hukou_address", &p.hukou_address, 200)?;
    text("residence_address", &p.residence_address, 200)?;
    text("household_id", &p.household_id, 40)?;
    phone("phone", &p.phone)?;
    known_enum::<ResidenceStatus>("residence_status", p.residence_status)?;
    known_enum::<PopulationType>("population_type", p.population_type)?;
    check_tags("tags", &p.tags, ORDINARY_TAGS)?;
    check_tags("restricted_tags", &p.restricted_tags, RESTRICTED_TAGS)?;
    if let Some(d) = p.deceased.as_ref().filter(|d| d.deceased) {
        date("deceased.date", &d.date)?;
    }
    p.id_number = Some(id.as_str().to_string());
    p.sex = Some(sex);
    p.birth_date = Some(birth);
    p.views.clear();
    Ok(Checked {
        record: p,
        warnings: Vec::new(),
    })
}

pub fn legal_entity(mut e: LegalEntity) -> Outcome<LegalEntity> {
    let uscc = Uscc::parse(required("uscc", &e.uscc)?).map_err(|err| format!("uscc: {err}"))?;
    let mut warnings = Vec::new();
    if !uscc.check_ok() {
        warnings.push(format!(
            "uscc: '{}' fails the GB 32100 check character (accepted as a pilot-era code)",
            uscc.as_str()
        ));
    }
    if e.category.as_deref().is_some_and(|c| c != uscc.category()) {
        return Err(format!(
            "category: disagrees with uscc, which says '{}'",
            uscc.category()
        ));
    }
    required("name", &e.name)?;
    text("name", &e.name, 200)?;
    text("business_scope", &e.business_scope, 4000)?;
    grid_code("domicile_grid", &e.domicile_grid)?;
    opt_date("established_date", &e.established_date)?;
    opt_date("term_end", &e.term_end)?;
    known_enum::<EntityStatus>("status", e.status)?;
    phone("phone", &e.phone)?;
    if let Some(c) = &e.registered_capital {
        if c.amount
            .parse::<f64>()
            .map_or(true, |a| !a.is_finite() || a < 0.0)
        {
            return Err(format!(
                "registered_capital.amount: '{}' is not a non-negative decimal",
                c.amount
            ));
        }
    }
    e.uscc = Some(uscc.as_str().to_string());
    e.category = Some(uscc.category().to_string());
    e.views.clear();
    Ok(Checked {
        record: e,
        warnings,
    })
}

pub fn grid(mut g: Grid) -> Outcome<Grid> {
    let code = grid_code("grid_code", &g.grid_code)?;
    required("name", &g.name)?;
    let community = code.parent().expect("a grid has a community").to_string();
    if g.community_code.as_ref().is_some_and(|c| *c != community) {
        return Err(format!(
            "community_code: a grid {code} lies in community {community}"
        ));
    }
    known_enum::<GridKind>("kind", g.kind)?;
    let outer = g.boundary.as_ref().and_then(|b| b.rings.first());
    if outer.is_none_or(|r| r.points.len() < 3) {
        return Err("boundary: needs an outer ring of at least 3 points".into());
    }
    for p in g
        .boundary
        .iter()
        .flat_map(|b| &b.rings)
        .flat_map(|r| &r.points)
    {
        if !(p.lon.is_finite()
            && p.lat.is_finite()
            && (-180.0..=180.0).contains(&p.lon)
            && (-90.0..=90.0).contains(&p.lat))
        {
            return Err(format!(
                "boundary: ({}, {}) is not a longitude/latitude in degrees",
                p.lon, p.lat
            ));
        }
    }
    if g.area_m2.is_some_and(|a| !a.is_finite() || a < 0.0) {
        return Err("area_m2: must be a non-negative number".into());
    }
    g.community_code = Some(community);
    // Counts are maintained by the gateway, never taken from the publisher.
    g.household_count = None;
    g.person_count = None;
    g.entity_count = None;
    g.views.clear();
    Ok(Checked {
        record: g,
        warnings: Vec::new(),
    })
}

pub fn region(mut r: RegionNode) -> Outcome<RegionNode> {
    let code = RegionCode::parse(&r.code).map_err(|e| format!("code: {e}"))?;
    if code.level() == Level::Grid {
        return Err("code: grids are published as Grid records, not region nodes".into());
    }
    if r.name.trim().is_empty() {
        return Err("name: is required".into());
    }
    r.level = code.level().to_proto() as i32;
    r.parent_code = code.parent().map(|p| p.to_string()).unwrap_or_default();
    r.children.clear();
    Ok(Checked {
        record: r,
        warnings: Vec::new(),
    })
}

pub fn worker(mut w: GridWorker) -> Outcome<GridWorker> {
    let id = required("worker_id", &w.worker_id)?;
    if id.len() > 40 || id.contains('\0') {
        return Err("worker_id: at most 40 characters".into());
    }
    required("name", &w.name)?;
    grid_code("grid_code", &w.grid_code)?;
    phone("phone", &w.phone)?;
    known_enum::<WorkerRole>("role", w.role)?;
    opt_date("since", &w.since)?;
    w.views.clear();
    Ok(Checked {
        record: w,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person_ok() -> Person {
        Person {
            id_number: Some("11010519491231002X".into()),
            name: Some("张三".into()),
            residence_grid: Some("310115004012003".into()),
            ..Default::default()
        }
    }

    #[test]
    fn derives_sex_and_birth_date_from_the_id() {
        let c = person(person_ok()).unwrap();
        assert_eq!(c.record.sex, Some(Sex::Female as i32));
        assert_eq!(c.record.birth_date.as_deref(), Some("1949-12-31"));
    }

    #[test]
    fn refusals_name_the_field() {
        let cases: Vec<(Person, &str)> = vec![
            (
                Person {
                    id_number: Some("110105194912310021".into()),
                    ..person_ok()
                },
                "id_number: check character",
            ),
            (
                Person {
                    sex: Some(Sex::Male as i32),
                    ..person_ok()
                },
                "sex: disagrees",
            ),
            (
                Person {
                    birth_date: Some("1950-01-01".into()),
                    ..person_ok()
                },
                "birth_date: disagrees",
            ),
            (
                Person {
                    residence_grid: Some("3101150040".into()),
                    ..person_ok()
                },
                "residence_grid:",
            ),
            (
                Person {
                    name: None,
                    ..person_ok()
                },
                "name: is required",
            ),
            (
                Person {
                    phone: Some("call me".into()),
                    ..person_ok()
                },
                "phone:",
            ),
        ];
        for (p, want) in cases {
            let err = person(p).err().unwrap();
            assert!(
                err.starts_with(want.split(' ').next().unwrap())
                    && err.contains(want.split(": ").nth(1).unwrap_or("")),
                "{err} / {want}"
            );
        }
    }

    #[test]
    fn a_pilot_uscc_is_accepted_with_a_warning() {
        let e = LegalEntity {
            uscc: Some("91350100M000100Y44".into()),
            name: Some("x".into()),
            domicile_grid: Some("310115004012003".into()),
            ..Default::default()
        };
        let c = legal_entity(e).unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.record.category.as_deref(), Some("91"));
    }
}
