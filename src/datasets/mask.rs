//! The mask step: projects a record through a field plan. A field not in the
//! plan is not copied at all, so it cannot reach the wire — not even empty.

use crate::datasets::catalog::{DatasetSpec, MaskKind};
use crate::proto::FieldView;
use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;

/// The view each field of a dataset is released in, by catalog position
/// (`DatasetSpec::fields`). `Unspecified` means the field is omitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPlan {
    views: Vec<FieldView>,
}

impl FieldPlan {
    /// A plan releasing nothing, for a dataset with `fields` fields.
    pub fn empty(fields: usize) -> Self {
        Self {
            views: vec![FieldView::Unspecified; fields],
        }
    }

    pub fn view(&self, field: usize) -> FieldView {
        self.views
            .get(field)
            .copied()
            .unwrap_or(FieldView::Unspecified)
    }

    pub fn set(&mut self, field: usize, view: FieldView) {
        self.views[field] = view;
    }

    /// Raises each field to the more revealing of the two plans' views.
    pub fn merge(&mut self, other: &FieldPlan) {
        for (mine, theirs) in self.views.iter_mut().zip(&other.views) {
            if revealing_rank(*theirs) > revealing_rank(*mine) {
                *mine = *theirs;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.views.iter().all(|v| *v == FieldView::Unspecified)
    }

    /// Whether the plan releases any field of the records whose fields are
    /// named `prefix…` in `spec` (`worker.` for grid workers; the empty
    /// prefix is the dataset's main record, whose names have no dot).
    pub fn releases_any_of(&self, spec: &DatasetSpec, prefix: &str) -> bool {
        spec.fields.iter().zip(&self.views).any(|(f, v)| {
            *v != FieldView::Unspecified
                && f.name
                    .strip_prefix(prefix)
                    .is_some_and(|rest| !rest.contains('.'))
        })
    }

    /// Whether any field is released MASKED (its record then needs its
    /// community's name for a masked address).
    pub fn masks_any(&self) -> bool {
        self.views.contains(&FieldView::Masked)
    }

    /// `(field index, view)` of every released field.
    pub fn released(&self) -> impl Iterator<Item = (usize, FieldView)> + '_ {
        self.views
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != FieldView::Unspecified)
            .map(|(i, v)| (i, *v))
    }
}

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

    /// A key for another use of the same gateway secret (`label` keeps the
    /// uses apart): page tokens are sealed with one.
    pub fn subkey(&self, label: &str) -> [u8; 32] {
        let mut k = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        k.update(b"govshare-subkey\0");
        k.update(label.as_bytes());
        k.finalize().into_bytes().into()
    }

    /// The pseudonym key of one department, derived from the gateway secret.
    pub fn department_key(&self, department: &str) -> DepartmentKey {
        let mut k = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        k.update(b"govshare-pseudonym-key\0");
        k.update(department.as_bytes());
        DepartmentKey {
            mac: Hmac::<Sha256>::new_from_slice(&k.finalize().into_bytes())
                .expect("any key length"),
        }
    }
}

/// One department's pseudonym key, derived once per call.
pub struct DepartmentKey {
    mac: Hmac<Sha256>,
}

impl DepartmentKey {
    /// Keyed HMAC-SHA256 under the department's key, base32, truncated to 26
    /// characters (130 bits): stable for one department, unlinkable across.
    pub fn pseudonym(&self, value: &str) -> String {
        let mut m = self.mac.clone();
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

/// Which views of which fields a call released, as bits per catalog
/// position (bit `view` set): what the audit entry lists. Gathered from
/// the records that leave, after any filter, so it names nothing that was
/// masked and then dropped.
#[derive(Debug, Clone, Default)]
pub struct ReleasedViews {
    bits: Vec<u8>,
}

impl ReleasedViews {
    /// The views of `records`, whose fields are `prefix…` in `spec`.
    pub fn of<'a>(
        spec: &DatasetSpec,
        prefix: &str,
        records: impl Iterator<Item = &'a RecordViews>,
    ) -> Self {
        let first = first_field(spec, prefix);
        let mut bits = Vec::new();
        for views in records {
            let views = &views.views[..usize::from(views.len)];
            if bits.len() < first + views.len() {
                bits.resize(first + views.len(), 0);
            }
            for (i, view) in views.iter().enumerate() {
                if *view != FieldView::Unspecified as u8 {
                    bits[first + i] |= 1 << view;
                }
            }
        }
        Self { bits }
    }

    /// `(catalog field name, view)` pairs, in catalog order.
    pub fn list(&self, spec: &DatasetSpec) -> Vec<(&'static str, FieldView)> {
        let mut out = Vec::new();
        for (i, bits) in self.bits.iter().enumerate() {
            for v in [FieldView::Clear, FieldView::Masked, FieldView::Pseudonym] {
                if bits & (1 << (v as u8)) != 0 {
                    out.push((spec.fields[i].name, v));
                }
            }
        }
        out
    }
}

/// The catalog position of the first of a record type's fields (grid
/// workers' fields follow the grid's under the `worker.` prefix).
fn first_field(spec: &DatasetSpec, prefix: &str) -> usize {
    spec.fields
        .iter()
        .position(|f| {
            f.name.starts_with(prefix) && (prefix.is_empty() || f.name.len() > prefix.len())
        })
        .unwrap_or(0)
}

/// Most fields one record type may have: a record's views live inline in
/// [`RecordViews`], with no allocation per record.
pub const MAX_RECORD_FIELDS: usize = 32;

/// The view each field of one released record was released in, by the
/// record's own field position (its protobuf field number minus one, which
/// a test holds equal to its catalog position within the record). v2 sends
/// these packed; v1 spells them out as a map of field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordViews {
    views: [u8; MAX_RECORD_FIELDS],
    len: u8,
}

impl Default for RecordViews {
    fn default() -> Self {
        Self {
            views: [FieldView::Unspecified as u8; MAX_RECORD_FIELDS],
            len: 0,
        }
    }
}

impl RecordViews {
    fn set(&mut self, position: usize, view: FieldView) {
        self.views[position] = view as u8;
        self.len = self.len.max(position as u8 + 1);
    }

    /// Packed: entry `n - 1` is the view of field number `n`, up to the
    /// last released field.
    pub fn packed(&self) -> Vec<i32> {
        self.views[..usize::from(self.len)]
            .iter()
            .map(|v| i32::from(*v))
            .collect()
    }

    /// Spelled out, keyed by the record's own field names (`spec`'s names
    /// without `prefix`), as v1 sends them.
    pub fn named(&self, spec: &DatasetSpec, prefix: &str) -> BTreeMap<String, i32> {
        record_fields(spec, prefix)
            .zip(&self.views[..usize::from(self.len)])
            .filter(|(_, v)| **v != FieldView::Unspecified as u8)
            .map(|(name, v)| (name.to_string(), i32::from(*v)))
            .collect()
    }
}

/// The names of one record type's fields in catalog order, without
/// `prefix`: the main record's (no dot) for `""`, a grid worker's for
/// `"worker."`.
pub fn record_fields<'a>(
    spec: &'a DatasetSpec,
    prefix: &'a str,
) -> impl Iterator<Item = &'static str> + 'a {
    spec.fields.iter().filter_map(move |f| {
        f.name
            .strip_prefix(prefix)
            .filter(|rest| !rest.is_empty() && !rest.contains('.'))
    })
}

/// A record after the mask step, with the views its fields were released
/// in (kept beside it: each API version puts them on the wire its own way).
#[derive(Debug, Clone, PartialEq)]
pub struct Projected<R> {
    pub record: R,
    pub views: RecordViews,
}

impl<R> Projected<R> {
    /// A record with no field views (a region node: structure, not data).
    pub fn bare(record: R) -> Self {
        Self {
            record,
            views: RecordViews::default(),
        }
    }
}

/// Builds one output record. `Record::project` calls it once per field, in
/// catalog order (checked in debug builds), so a field's plan entry is found
/// by position with no lookup; each accessor returns the released value or
/// `None`.
pub struct Projector<'a> {
    plan: &'a FieldPlan,
    spec: &'static DatasetSpec,
    prefix: &'static str,
    first: usize,
    cursor: usize,
    pseudonyms: &'a DepartmentKey,
    community_name: Option<&'a str>,
    views: RecordViews,
}

impl<'a> Projector<'a> {
    /// `prefix` picks the record type's fields (grid workers' fields follow
    /// the grid's under the `worker.` prefix).
    pub fn new(
        plan: &'a FieldPlan,
        spec: &'static DatasetSpec,
        prefix: &'static str,
        pseudonyms: &'a DepartmentKey,
        community_name: Option<&'a str>,
    ) -> Self {
        let first = first_field(spec, prefix);
        Self {
            plan,
            spec,
            prefix,
            first,
            cursor: first,
            pseudonyms,
            community_name,
            views: RecordViews::default(),
        }
    }

    /// The next field's position and planned view.
    fn next(&mut self, field: &'static str) -> (usize, FieldView) {
        let i = self.cursor;
        self.cursor += 1;
        debug_assert_eq!(
            self.spec
                .fields
                .get(i)
                .map(|f| f.name.strip_prefix(self.prefix).unwrap_or(f.name)),
            Some(field),
            "Record::project must list fields in catalog order"
        );
        (i, self.plan.view(i))
    }

    fn record(&mut self, i: usize, view: FieldView) {
        self.views.set(i - self.first, view);
    }

    /// A text field in whatever view the plan allows. Takes the stored
    /// value by move: a CLEAR field is passed on without a copy.
    pub fn text(&mut self, field: &'static str, value: Option<String>) -> Option<String> {
        let (i, view) = self.next(field);
        let value = value?;
        let out = match view {
            FieldView::Clear => value,
            FieldView::Masked => mask(self.spec.fields[i].mask, &value, self.community_name)?,
            FieldView::Pseudonym => self.pseudonyms.pseudonym(&value),
            FieldView::Unspecified => return None,
        };
        self.record(i, view);
        Some(out)
    }

    /// A non-text field: released only in the CLEAR view.
    pub fn clear<T>(&mut self, field: &'static str, value: Option<T>) -> Option<T> {
        let (i, view) = self.next(field);
        let value = value?;
        (view == FieldView::Clear).then(|| {
            self.record(i, view);
            value
        })
    }

    /// The views of the record just projected.
    pub fn views(&self) -> RecordViews {
        self.views
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
        let street = m.department_key("street-office");
        let a1 = street.pseudonym("11010519491231002X");
        assert_eq!(
            a1,
            m.department_key("street-office")
                .pseudonym("11010519491231002X")
        );
        assert_eq!(a1.len(), 26);
        assert_ne!(
            a1,
            m.department_key("civil-affairs")
                .pseudonym("11010519491231002X")
        );
        assert_ne!(a1, street.pseudonym("110105194912310038"));
    }
}
