//! Validating a published person: the citizen ID's check character, sex and
//! birth date derived from it, codes, tags and the grid it lives in.

use crate::datasets::check::{code2, date, grid_code, known_enum, phone, required, text};
use crate::datasets::codes::{CitizenId, Level, RegionCode};
use crate::datasets::record::Checked;
use crate::proto::{Person, PopulationType, ResidenceStatus, Sex};

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

pub(super) fn person(mut p: Person) -> Result<Checked<Person>, String> {
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
}
