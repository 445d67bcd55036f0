//! Validating a published legal entity: the credit code (pilot-era codes
//! that fail the check are accepted with a warning), its category, dates,
//! capital and the grid of its domicile.

use crate::datasets::check::{grid_code, known_enum, opt_date, phone, required, text};
use crate::datasets::codes::Uscc;
use crate::datasets::record::Checked;
use crate::proto::{EntityStatus, LegalEntity};

pub(super) fn legal_entity(mut e: LegalEntity) -> Result<Checked<LegalEntity>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
