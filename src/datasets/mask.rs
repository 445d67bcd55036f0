//! The mask step: projects a stored record through a field plan, straight
//! from its stored bytes. A field not in the plan is not copied at all, so
//! it cannot reach the wire — not even empty.

use super::Record;
use crate::datasets::catalog::{DatasetSpec, MaskKind};
use crate::proto::FieldView;
use crate::proto::packed::Encoded;
use crate::proto::wire::{self, Schema};
use anyhow::{Context, bail};
use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

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
    /// Each department's key, derived on its first pull (six SHA-256
    /// blocks a pull otherwise): as many as departments that have pulled,
    /// for only an authenticated principal's department is asked for.
    keys: RwLock<HashMap<Box<str>, DepartmentKey>>,
}

impl Masker {
    pub fn new(secret: [u8; 32]) -> Self {
        Self {
            secret,
            keys: RwLock::default(),
        }
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
        if let Some(key) = self.keys.read().expect("keys lock").get(department) {
            return key.clone();
        }
        let mut k = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        k.update(b"govshare-pseudonym-key\0");
        k.update(department.as_bytes());
        let key = DepartmentKey {
            mac: Hmac::<Sha256>::new_from_slice(&k.finalize().into_bytes())
                .expect("any key length"),
        };
        let mut keys = self.keys.write().expect("keys lock");
        keys.entry(department.into()).or_insert(key).clone()
    }
}

/// One department's pseudonym key.
#[derive(Clone)]
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
    // Byte offsets, not a `Vec<char>` and a `format!`: this runs for every
    // masked field of every record released (~2 % of a pull's CPU before).
    let keep_ends = |head: usize, stars: &str, tail: usize| {
        let chars = value.chars().count();
        if chars < head + tail {
            return "*".repeat(chars);
        }
        let at = |n: usize| value.char_indices().nth(n).map_or(value.len(), |(i, _)| i);
        let (head, tail) = (&value[..at(head)], &value[at(chars - tail)..]);
        let mut out = String::with_capacity(head.len() + stars.len() + tail.len());
        out.push_str(head);
        out.push_str(stars);
        out.push_str(tail);
        out
    };
    match kind {
        MaskKind::CitizenId => Some(keep_ends(6, "********", 4)),
        MaskKind::Phone => Some(keep_ends(3, "****", 4)),
        MaskKind::PersonName => value.chars().next().map(|first| {
            let stars = value.chars().count() - 1;
            let mut out = String::with_capacity(first.len_utf8() + stars);
            out.push(first);
            out.extend(std::iter::repeat_n('*', stars));
            out
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
pub(crate) fn first_field(spec: &DatasetSpec, prefix: &str) -> usize {
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

/// A record after the mask step: its released fields' encoding, with the
/// views they were released in (kept beside it: each API version puts
/// them on the wire its own way).
#[derive(Debug, Clone, PartialEq)]
pub struct Projected<R> {
    pub record: Encoded<R>,
    pub views: RecordViews,
}

impl<R: prost::Message + Default> Projected<R> {
    /// A record with no field views (a region node: structure, not data).
    pub fn bare(record: &R) -> Self {
        Self {
            record: Encoded::of(record),
            views: RecordViews::default(),
        }
    }
}

/// Where one record type's fields are: found once per type
/// ([`Record::layout`]), used for every record it projects.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// The catalog position of the record's field number 1.
    first: usize,
    /// The record's fields in the catalog: numbers `1..=fields`.
    fields: usize,
    /// What each field may hold, from the descriptors.
    schema: &'static Schema,
    key: u64,
    row: u64,
}

impl Layout {
    /// The layout of a record type whose fields are its catalog entry's,
    /// in order (`record::tests` holds every such type to it; a region
    /// node is not one, and is never projected).
    pub fn of<R: Record>() -> Self {
        let spec = R::DATASET.spec();
        let number = |name: &str| {
            record_fields(spec, R::FIELD_PREFIX)
                .position(|f| f == name)
                .map_or(0, |n| n as u64 + 1)
        };
        let (key, row) = (number(R::KEY_FIELD), number(R::ROW_FIELD));
        debug_assert!(key > 0 && row > 0, "{} is laid out by its catalog", R::NAME);
        Self {
            first: first_field(spec, R::FIELD_PREFIX),
            fields: record_fields(spec, R::FIELD_PREFIX).count(),
            schema: Schema::of(R::NAME),
            key,
            row,
        }
    }

    /// A stored record's key and row code ([`Record::key`],
    /// [`Record::row_code`]), read without decoding the record: the last
    /// copy of each, as a decode reads it, so a record is judged by the
    /// code a decode of it would carry. The whole record is walked; a walk
    /// stopping at the first copies (tried on 2026-12-07) judged a grid
    /// holding its code twice by one code and, decoded to fill its counts,
    /// released it as the other.
    pub fn key_and_row<'s>(&self, stored: &'s [u8]) -> anyhow::Result<(&'s str, &'s str)> {
        let (mut key, mut row) = ("", "");
        for f in wire::fields(stored) {
            let f = f?;
            for (number, into) in [(self.key, &mut key), (self.row, &mut row)] {
                if f.number == number {
                    if f.wire_type != wire::LEN {
                        bail!("a stored record's key or row code is not text");
                    }
                    *into = std::str::from_utf8(f.value).context("a stored key or row code")?;
                }
            }
        }
        Ok((key, row))
    }
}

/// Projects stored records through one field plan, straight from their
/// stored bytes: a field the plan releases CLEAR is checked against this
/// build's schema and copied as it is stored, a MASKED or PSEUDONYM one
/// (text only) is written anew, and any other is not copied or parsed at
/// all — not even empty. Over v2, a listing without a filter decodes
/// nothing of a record but what it masks (a grid is decoded to fill its
/// counts; a filter, and v1, decode the masked record). A record that is
/// not as this build writes it (a field of the
/// wrong type or unknown inside a released one, a field stored twice,
/// damage) is refused as the store's failure, as the typed decode refused
/// it.
pub struct Projector<'a> {
    plan: &'a FieldPlan,
    spec: &'static DatasetSpec,
    layout: &'a Layout,
    pseudonyms: &'a DepartmentKey,
    community_name: Option<&'a str>,
}

impl<'a> Projector<'a> {
    pub fn new(
        plan: &'a FieldPlan,
        spec: &'static DatasetSpec,
        layout: &'a Layout,
        pseudonyms: &'a DepartmentKey,
        community_name: Option<&'a str>,
    ) -> Self {
        Self {
            plan,
            spec,
            layout,
            pseudonyms,
            community_name,
        }
    }

    /// One stored record's released fields, in field-number order as
    /// stored, and their views. A damaged record is an error (the store's),
    /// never a record made of what happened to parse.
    pub fn project<R: Record>(&self, stored: &[u8]) -> anyhow::Result<Projected<R>> {
        let mut out = Vec::with_capacity(stored.len());
        let mut views = RecordViews::default();
        let mut seen = 0u64;
        for f in wire::fields(stored) {
            let f = f?;
            // Numbers start at 1; past the catalog's are the views (never
            // stored), and one this build does not know is not released,
            // as a decode would have dropped it.
            let position = (f.number - 1) as usize;
            let Some(rule) = self.layout.schema.rule(f.number) else {
                continue;
            };
            if position >= self.layout.fields {
                continue;
            }
            // Written once by this build: a second copy would leave
            // beside the first, where a decode kept only the last.
            if !rule.repeated {
                if seen & (1 << position) != 0 {
                    bail!("a stored record holds field {} twice", f.number);
                }
                seen |= 1 << position;
            }
            let i = self.layout.first + position;
            let view = self.plan.view(i);
            match view {
                FieldView::Unspecified => continue,
                FieldView::Clear => {
                    self.layout.schema.check(rule, &f)?;
                    out.extend_from_slice(f.raw);
                }
                // Only text has a masked or pseudonymous form.
                FieldView::Masked | FieldView::Pseudonym if !rule.is_text() => continue,
                FieldView::Masked | FieldView::Pseudonym => {
                    self.layout.schema.check(rule, &f)?;
                    let value = std::str::from_utf8(f.value).context("a stored text field")?;
                    let released = if view == FieldView::Masked {
                        match mask(self.spec.fields[i].mask, value, self.community_name) {
                            Some(m) => m,
                            None => continue,
                        }
                    } else {
                        self.pseudonyms.pseudonym(value)
                    };
                    wire::put_len(&mut out, f.number, released.as_bytes());
                }
            }
            views.set(position, view);
        }
        Ok(Projected {
            record: Encoded::from_bytes(out),
            views,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::json::Named;
    use crate::proto::{Grid, GridWorker, LegalEntity, Person};
    use prost::Message;
    use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, Value};

    fn descriptor<R: Named>() -> MessageDescriptor {
        DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .unwrap()
            .get_message_by_name(R::NAME)
            .unwrap()
    }

    /// A stored `R` with every field set (but the views), through the
    /// descriptors: a field added later is covered without a test edit.
    fn full<R: Record>() -> Vec<u8> {
        filled(&descriptor::<R>()).encode_to_vec()
    }

    fn filled(desc: &MessageDescriptor) -> DynamicMessage {
        let mut m = DynamicMessage::new(desc.clone());
        for f in desc.fields().filter(|f| !f.is_map()) {
            let n = f.number();
            let one = match f.kind() {
                Kind::String => Value::String(format!("值{n}-1101051949123100{n:02}")),
                Kind::Bool => Value::Bool(true),
                Kind::Enum(_) => Value::EnumNumber(1),
                Kind::Int32 => Value::I32(n as i32),
                Kind::Uint32 => Value::U32(n),
                Kind::Int64 => Value::I64(i64::from(n)),
                Kind::Uint64 => Value::U64(u64::from(n)),
                Kind::Double => Value::F64(f64::from(n) + 0.5),
                Kind::Message(d) => Value::Message(filled(&d)),
                k => panic!("{}: add a sample value for {k:?}", f.full_name()),
            };
            let value = if f.is_list() {
                Value::List(vec![one.clone(), one])
            } else {
                one
            };
            m.set_field(&f, value);
        }
        m
    }

    /// Every plan releasing one field of `R` in one view, one releasing
    /// every other field, and one releasing all.
    fn plans<R: Record>() -> Vec<FieldPlan> {
        let spec = R::DATASET.spec();
        let first = first_field(spec, R::FIELD_PREFIX);
        let count = record_fields(spec, R::FIELD_PREFIX).count();
        let mut out = Vec::new();
        let (mut all, mut alternate) = (
            FieldPlan::empty(spec.fields.len()),
            FieldPlan::empty(spec.fields.len()),
        );
        for i in first..first + count {
            for view in [FieldView::Clear, FieldView::Masked, FieldView::Pseudonym] {
                let mut plan = FieldPlan::empty(spec.fields.len());
                plan.set(i, view);
                out.push(plan);
            }
            all.set(i, FieldView::Clear);
            let view = [FieldView::Clear, FieldView::Masked, FieldView::Pseudonym][i % 3];
            if i % 2 == 0 {
                alternate.set(i, view);
            }
        }
        out.push(alternate);
        out.push(all);
        out
    }

    /// What a projection of `stored` under `plan` must hold, written from
    /// the catalog's rules and the descriptors, not from the projector's
    /// walk: a CLEAR field as stored; a MASKED text field masked (absent
    /// when it has no masked form); a PSEUDONYM text field as the
    /// department's pseudonym; anything else not at all. With the views.
    fn expected<R: Record>(
        stored: &[u8],
        plan: &FieldPlan,
        key: &DepartmentKey,
    ) -> (DynamicMessage, Vec<i32>) {
        let desc = descriptor::<R>();
        let spec = R::DATASET.spec();
        let first = first_field(spec, R::FIELD_PREFIX);
        let source = DynamicMessage::decode(desc.clone(), stored).unwrap();
        let mut want = DynamicMessage::new(desc.clone());
        let mut views = Vec::new();
        for f in desc.fields().filter(|f| !f.is_map()) {
            let i = first + f.number() as usize - 1;
            let view = plan.view(i);
            let text = f.kind() == Kind::String && !f.is_list();
            let value = source.get_field(&f).into_owned();
            let released = match (view, value.as_str()) {
                (FieldView::Clear, _) => Some(value.clone()),
                (FieldView::Masked, Some(s)) if text => {
                    mask(spec.fields[i].mask, s, Some("幸福社区")).map(Value::String)
                }
                (FieldView::Pseudonym, Some(s)) if text => Some(Value::String(key.pseudonym(s))),
                _ => None,
            };
            if let Some(v) = released {
                want.set_field(&f, v);
                let n = f.number() as usize;
                views.resize(views.len().max(n), 0);
                views[n - 1] = view as i32;
            }
        }
        (want, views)
    }

    fn projects_as_the_catalog_says<R: Record + PartialEq + std::fmt::Debug>() {
        let stored = full::<R>();
        let layout = Layout::of::<R>();
        let key = Masker::new([5; 32]).department_key("street-office");
        for plan in plans::<R>() {
            let p = Projector::new(&plan, R::DATASET.spec(), &layout, &key, Some("幸福社区"))
                .project::<R>(&stored)
                .unwrap();
            let got = DynamicMessage::decode(descriptor::<R>(), p.record.as_bytes()).unwrap();
            let (want, views) = expected::<R>(&stored, &plan, &key);
            let show = |m: &DynamicMessage| {
                m.fields()
                    .map(|(f, v)| format!("{}={v:?}", f.name()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(show(&got), show(&want), "{}: {plan:?}", R::NAME);
            assert_eq!(p.views.packed(), views, "{}: {plan:?}", R::NAME);
            // What a client decodes is the same message.
            assert_eq!(
                p.record.decode().unwrap(),
                R::decode(want.encode_to_vec().as_slice()).unwrap()
            );
        }
    }

    #[test]
    fn a_projection_holds_each_field_in_its_planned_view_and_nothing_else() {
        projects_as_the_catalog_says::<Person>();
        projects_as_the_catalog_says::<LegalEntity>();
        projects_as_the_catalog_says::<Grid>();
        projects_as_the_catalog_says::<GridWorker>();
    }

    fn key_and_row_as_decoded<R: Record>() {
        let stored = full::<R>();
        let record = R::decode(stored.as_slice()).unwrap();
        let (key, row) = Layout::of::<R>().key_and_row(&stored).unwrap();
        assert_eq!((key, row), (record.key(), record.row_code()), "{}", R::NAME);
        assert!(!key.is_empty() && !row.is_empty(), "{}", R::NAME);
    }

    #[test]
    fn the_key_and_row_code_are_read_as_the_record_reads_them() {
        key_and_row_as_decoded::<Person>();
        key_and_row_as_decoded::<LegalEntity>();
        key_and_row_as_decoded::<Grid>();
        key_and_row_as_decoded::<GridWorker>();
    }

    /// Damaged stored bytes are an error to report, never a panic or a
    /// record made of what happened to parse.
    #[test]
    fn a_damaged_record_is_an_error_not_a_panic() {
        let stored = full::<Person>();
        let spec = Person::DATASET.spec();
        let mut plan = FieldPlan::empty(spec.fields.len());
        plan.set(1, FieldView::Clear);
        let layout = Layout::of::<Person>();
        let key = Masker::new([5; 32]).department_key("d");
        let p = Projector::new(&plan, spec, &layout, &key, None);
        let mut refused = 0;
        for cut in 0..stored.len() {
            refused += usize::from(p.project::<Person>(&stored[..cut]).is_err());
        }
        // A cut between two fields is a shorter record; inside one, an error.
        assert!(refused > stored.len() / 2, "{refused} of {}", stored.len());
        let mut bad = stored.clone();
        bad[0] = 0x0b; // field 1, wire type 3 (a group): never written
        assert!(p.project::<Person>(&bad).is_err());
        // A released text field that is not UTF-8.
        let mut latin = Vec::new();
        wire::put_len(&mut latin, 2, &[0xe9, 0x74, 0xe9]);
        assert!(p.project::<Person>(&latin).is_err());
        // The released field stored twice: the first copy would leave too.
        let mut twice = Vec::new();
        wire::put_len(&mut twice, 2, "张三".as_bytes());
        wire::put_len(&mut twice, 2, "李四".as_bytes());
        assert!(p.project::<Person>(&twice).is_err());
        // The released field as a number.
        assert!(p.project::<Person>(&[0x10, 0x01]).is_err());
    }

    /// A record holding its row code twice is judged by the last copy, as
    /// a decode reads it, and refused by the projection even where the row
    /// code is not released: no copy but the judged one decides anything.
    #[test]
    fn a_record_holding_its_row_code_twice_is_refused() {
        let spec = Person::DATASET.spec();
        let layout = Layout::of::<Person>();
        let at = |name: &str| spec.fields.iter().position(|f| f.name == name).unwrap();
        let mut stored = Vec::new();
        wire::put_len(&mut stored, 1, b"11010519491231002X");
        wire::put_len(&mut stored, 2, "张三".as_bytes());
        wire::put_len(&mut stored, 10, b"110105001001001");
        wire::put_len(&mut stored, 10, b"310115001001001");
        assert_eq!(
            layout.key_and_row(&stored).unwrap(),
            ("11010519491231002X", "310115001001001")
        );
        let mut plan = FieldPlan::empty(spec.fields.len());
        plan.set(at("name"), FieldView::Clear);
        let key = Masker::new([5; 32]).department_key("d");
        let p = Projector::new(&plan, spec, &layout, &key, None);
        let refused = p.project::<Person>(&stored).unwrap_err();
        assert!(
            format!("{refused:#}").contains("field 10 twice"),
            "{refused:#}"
        );
        stored.truncate(stored.len() - 17);
        assert!(p.project::<Person>(&stored).is_ok());
    }

    /// A field this build does not know, inside a field that is released
    /// CLEAR (a newer version's, in a shared store), never leaves: the
    /// record is refused, as it is not one this build wrote. A top-level
    /// one is simply not released, as a decode dropped it.
    #[test]
    fn a_field_this_build_does_not_know_never_leaves() {
        let spec = Person::DATASET.spec();
        let at = |name: &str| spec.fields.iter().position(|f| f.name == name).unwrap();
        let mut plan = FieldPlan::empty(spec.fields.len());
        plan.set(at("tags"), FieldView::Clear);
        plan.set(at("name"), FieldView::Clear);
        let layout = Layout::of::<Person>();
        let key = Masker::new([5; 32]).department_key("d");
        let p = Projector::new(&plan, spec, &layout, &key, None);
        let tags = record_fields(spec, "").position(|f| f == "tags").unwrap() as u64 + 1;
        // PersonTags { items: [PersonTag { code: "x", <field 15: "secret"> }] }
        let mut tag = Vec::new();
        wire::put_len(&mut tag, 1, b"x");
        wire::put_len(&mut tag, 15, b"secret");
        let mut list = Vec::new();
        wire::put_len(&mut list, 1, &tag);
        let mut stored = Vec::new();
        wire::put_len(&mut stored, 2, "张三".as_bytes());
        wire::put_len(&mut stored, tags, &list);
        assert!(p.project::<Person>(&stored).is_err());
        // At the top level: not released, the rest is.
        let mut top = Vec::new();
        wire::put_len(&mut top, 2, "张三".as_bytes());
        wire::put_len(&mut top, 29, b"secret");
        let projected = p.project::<Person>(&top).unwrap();
        assert_eq!(
            projected.record.decode().unwrap().name.as_deref(),
            Some("张三")
        );
        assert!(
            !projected
                .record
                .as_bytes()
                .windows(6)
                .any(|w| w == b"secret")
        );
    }

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

    proptest::proptest! {
        /// Any text, any script: a mask keeps the characters the design
        /// table keeps (counted in characters, never bytes) and stars the
        /// rest, one star per character.
        #[test]
        fn a_mask_keeps_its_ends_in_characters_whatever_the_script(value in "\\PC{0,24}") {
            let chars: Vec<char> = value.chars().collect();
            let ends = |head: usize, stars: &str, tail: usize| -> String {
                if chars.len() < head + tail {
                    "*".repeat(chars.len())
                } else {
                    let h: String = chars[..head].iter().collect();
                    let t: String = chars[chars.len() - tail..].iter().collect();
                    h + stars + &t
                }
            };
            proptest::prop_assert_eq!(
                mask(MaskKind::CitizenId, &value, None),
                Some(ends(6, "********", 4))
            );
            proptest::prop_assert_eq!(
                mask(MaskKind::Phone, &value, None),
                Some(ends(3, "****", 4))
            );
            let name = chars.first().map(|c| {
                std::iter::once(*c)
                    .chain(std::iter::repeat_n('*', chars.len() - 1))
                    .collect::<String>()
            });
            proptest::prop_assert_eq!(mask(MaskKind::PersonName, &value, None), name);
        }
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
        // A key kept since a department's first pull is the key derived.
        let fresh = Masker::new([7; 32]).department_key("street-office");
        assert_eq!(a1, fresh.pseudonym("11010519491231002X"));
        assert_ne!(
            a1,
            m.department_key("civil-affairs")
                .pseudonym("11010519491231002X")
        );
        assert_ne!(a1, street.pseudonym("110105194912310038"));
    }
}
