//! The mask step: projects a record through a field plan. A field not in the
//! plan is not copied at all, so it cannot reach the wire — not even empty.

use crate::catalog::{DatasetSpec, MaskKind};
use crate::proto::FieldView;
use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;

/// Field name → the view it is released in. Everything else is omitted.
pub type FieldPlan = BTreeMap<String, FieldView>;

/// Rank of a view: higher reveals more. CLEAR > MASKED (part of the real
/// value) > PSEUDONYM (nothing of the value, only linkability).
pub fn revealing_rank(v: FieldView) -> u8 {
    match v {
        FieldView::Clear => 3,
        FieldView::Masked => 2,
        FieldView::Pseudonym => 1,
        FieldView::Unspecified => 0,
    }
}

/// Holds the gateway secret from which per-department pseudonym keys derive.
pub struct Masker {
    secret: [u8; 32],
}

impl Masker {
    pub fn new(secret: [u8; 32]) -> Self {
        Self { secret }
    }

    /// Keyed HMAC-SHA256 under a per-department key, base32, truncated to 26
    /// characters (130 bits): stable for one department, unlinkable across.
    pub fn pseudonym(&self, department: &str, value: &str) -> String {
        let mut k = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        k.update(b"govshare-pseudonym-key\0");
        k.update(department.as_bytes());
        let dept_key = k.finalize().into_bytes();
        let mut m = Hmac::<Sha256>::new_from_slice(&dept_key).expect("any key length");
        m.update(value.as_bytes());
        let mut s = BASE32_NOPAD.encode(&m.finalize().into_bytes());
        s.truncate(26);
        s
    }
}

/// The masked form of `value`; `None` when the kind has no masked form.
pub fn mask(kind: MaskKind, value: &str, community_name: Option<&str>) -> Option<String> {
    let chars: Vec<char> = value.chars().collect();
    let keep_ends = |head: usize, stars: &str, tail: usize| {
        if chars.len() < head + tail {
            "*".repeat(chars.len())
        } else {
            let h: String = chars[..head].iter().collect();
            let t: String = chars[chars.len() - tail..].iter().collect();
            format!("{h}{stars}{t}")
        }
    };
    match kind {
        MaskKind::CitizenId => Some(keep_ends(6, "********", 4)),
        MaskKind::Phone => Some(keep_ends(3, "****", 4)),
        MaskKind::PersonName => chars.first().map(|c| {
            std::iter::once(*c)
                .chain(std::iter::repeat_n('*', chars.len() - 1))
                .collect()
        }),
        MaskKind::BirthDate => value.get(..4).map(str::to_string),
        MaskKind::Address => community_name.map(str::to_string),
        MaskKind::None => None,
    }
}

/// Builds one output record: each accessor returns the field's released value
/// or `None`, and records the view used.
pub struct Projector<'a> {
    plan: &'a FieldPlan,
    spec: &'static DatasetSpec,
    prefix: &'static str,
    masker: &'a Masker,
    department: &'a str,
    community_name: Option<&'a str>,
    views: BTreeMap<String, i32>,
    released: Vec<(String, i32)>,
}

impl<'a> Projector<'a> {
    pub fn new(
        plan: &'a FieldPlan,
        spec: &'static DatasetSpec,
        prefix: &'static str,
        masker: &'a Masker,
        department: &'a str,
        community_name: Option<&'a str>,
    ) -> Self {
        Self {
            plan,
            spec,
            prefix,
            masker,
            department,
            community_name,
            views: BTreeMap::new(),
            released: Vec::new(),
        }
    }

    /// A text field in whatever view the plan allows.
    pub fn text(&mut self, field: &str, value: &Option<String>) -> Option<String> {
        let value = value.as_ref()?;
        let (name, view, spec) = self.lookup(field)?;
        let out = match view {
            FieldView::Clear => value.clone(),
            FieldView::Masked => mask(spec.mask, value, self.community_name)?,
            FieldView::Pseudonym => self.masker.pseudonym(self.department, value),
            FieldView::Unspecified => return None,
        };
        self.views.insert(name, view as i32);
        Some(out)
    }

    /// A non-text field: released only in the CLEAR view.
    pub fn clear<T: Clone>(&mut self, field: &str, value: &Option<T>) -> Option<T> {
        let value = value.as_ref()?;
        let (name, view, _) = self.lookup(field)?;
        (view == FieldView::Clear).then(|| {
            self.views.insert(name, view as i32);
            value.clone()
        })
    }

    /// The views map for the output record, keyed by the record's own field names.
    pub fn finish_views(&mut self) -> BTreeMap<String, i32> {
        let prefix = self.prefix;
        let views = std::mem::take(&mut self.views);
        self.released
            .extend(views.iter().map(|(k, v)| (k.clone(), *v)));
        views
            .into_iter()
            .map(|(k, v)| (k.strip_prefix(prefix).unwrap_or(&k).to_string(), v))
            .collect()
    }

    /// Every field released so far with its view, by catalog name.
    pub fn released(self) -> Vec<(String, i32)> {
        self.released
    }

    fn lookup(
        &self,
        field: &str,
    ) -> Option<(String, FieldView, &'static crate::catalog::FieldSpec)> {
        let name = format!("{}{field}", self.prefix);
        let view = *self.plan.get(&name)?;
        let spec = self.spec.field(&name)?;
        spec.sharing_for(view)?;
        Some((name, view, spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_as_the_design_table_says() {
        assert_eq!(
            mask(MaskKind::CitizenId, "11010519491231002X", None).unwrap(),
            "110105********002X"
        );
        assert_eq!(
            mask(MaskKind::Phone, "13812345678", None).unwrap(),
            "138****5678"
        );
        assert_eq!(mask(MaskKind::PersonName, "张三丰", None).unwrap(), "张**");
        assert_eq!(
            mask(MaskKind::BirthDate, "1949-12-31", None).unwrap(),
            "1949"
        );
        assert_eq!(
            mask(MaskKind::Address, "幸福路 12 号 3 室", Some("幸福社区")).unwrap(),
            "幸福社区"
        );
        assert_eq!(mask(MaskKind::Address, "幸福路 12 号", None), None);
        assert_eq!(mask(MaskKind::Phone, "12", None).unwrap(), "**");
    }

    #[test]
    fn pseudonyms_are_stable_per_department_and_differ_across() {
        let m = Masker::new([7; 32]);
        let a1 = m.pseudonym("street-office", "11010519491231002X");
        assert_eq!(a1, m.pseudonym("street-office", "11010519491231002X"));
        assert_eq!(a1.len(), 26);
        assert_ne!(a1, m.pseudonym("civil-affairs", "11010519491231002X"));
        assert_ne!(a1, m.pseudonym("street-office", "110105194912310038"));
    }
}
