//! What a pull decodes of a stored record: only the fields its grants may
//! release, plus the key and row code every read needs. A field no grant of
//! the call covers stays in the stored bytes — never an owned value in the
//! gateway's memory, so it cannot reach the wire by any later mistake —
//! and costs no allocation, copy or UTF-8 check (a listing under a
//! seven-field grant decoded all twenty-one of a person's fields before).
//!
//! Narrowing the read can only withhold: the projector still applies each
//! record's own plan to what was decoded, and a test holds the projection
//! of a narrowed read equal to that of a full one, for every field and
//! view.

use super::Record;
use super::catalog::DatasetSpec;
use super::mask::{FieldPlan, MAX_RECORD_FIELDS, record_fields};
use anyhow::{Context, Result, bail};

/// Which fields of one record type a read decodes: bit `n - 1` for field
/// number `n` (a record's field number is its catalog position within the
/// record plus one; `record::tests` holds the two equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSet(u32);

const _: () = assert!(MAX_RECORD_FIELDS <= 32, "a ReadSet holds a bit per field");

impl ReadSet {
    /// Every field: for writes, corrections, and structure records.
    pub const ALL: ReadSet = ReadSet(u32::MAX);

    /// The fields `plan` releases of the record type whose catalog names
    /// are `prefix…` in `spec`, and the fields named in `always`.
    pub fn of(spec: &DatasetSpec, prefix: &str, plan: &FieldPlan, always: &[&str]) -> Self {
        let first = spec
            .fields
            .iter()
            .position(|f| f.name.starts_with(prefix) && f.name.len() > prefix.len())
            .unwrap_or(0);
        let (mut bits, mut every) = (0u32, true);
        for (n, name) in record_fields(spec, prefix).enumerate() {
            let released = plan.view(first + n) != crate::proto::FieldView::Unspecified;
            if released || always.contains(&name) {
                bits |= 1 << n;
            } else {
                every = false;
            }
        }
        // A grant of every field reads the record as stored: no filtering
        // pass (the source department's own pulls, typically).
        if every { Self::ALL } else { Self(bits) }
    }

    fn has(self, number: u64) -> bool {
        (1..=32).contains(&number) && self.0 & (1 << (number - 1)) != 0
    }

    /// Decodes `stored` keeping only this set's fields. `scratch` holds
    /// the kept bytes (reused across a page: no allocation per record).
    pub fn decode<R: Record>(self, stored: &[u8], scratch: &mut Vec<u8>) -> Result<R> {
        if self == Self::ALL {
            return R::decode(stored).context("decoding a stored record");
        }
        scratch.clear();
        let mut rest = stored;
        while !rest.is_empty() {
            let field = rest;
            let key = varint(&mut rest)?;
            let len = match key & 7 {
                0 => varint(&mut rest).map(|_| 0)?,
                1 => 8,
                2 => usize::try_from(varint(&mut rest)?)?,
                5 => 4,
                w => bail!("a stored record has a field of wire type {w}"),
            };
            rest = rest
                .get(len..)
                .context("a stored record ends inside a field")?;
            if self.has(key >> 3) {
                scratch.extend_from_slice(&field[..field.len() - rest.len()]);
            }
        }
        R::decode(scratch.as_slice()).context("decoding a stored record")
    }
}

/// A protobuf base-128 varint, consumed from the front of `buf`.
fn varint(buf: &mut &[u8]) -> Result<u64> {
    let mut value = 0u64;
    for (i, byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(value);
        }
    }
    bail!("a stored record has a malformed varint")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::mask::{Masker, Projected, Projector};
    use crate::proto::json::{Named, present_fields};
    use crate::proto::{FieldView, Grid, GridWorker, LegalEntity, Person};
    use prost::Message;
    use prost_reflect::{DescriptorPool, DynamicMessage, Kind, Value};

    /// A stored `R` with every field set (but the views), through the
    /// descriptors: so a field added later is covered without a test edit.
    fn full<R: Record + Named>() -> Vec<u8> {
        let pool = DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        filled(&pool.get_message_by_name(R::NAME).unwrap()).encode_to_vec()
    }

    fn filled(desc: &prost_reflect::MessageDescriptor) -> DynamicMessage {
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

    fn projected<R: Record>(record: R, plan: &FieldPlan) -> Projected<R> {
        let key = Masker::new([5; 32]).department_key("street-office");
        let mut p = Projector::new(
            plan,
            R::DATASET.spec(),
            R::FIELD_PREFIX,
            &key,
            Some("幸福社区"),
        );
        let record = record.project(&mut p);
        Projected {
            record,
            views: p.views(),
        }
    }

    /// Every plan releasing one field in one view, and one releasing all.
    fn plans<R: Record>() -> Vec<FieldPlan> {
        let spec = R::DATASET.spec();
        let mut out = Vec::new();
        let mut all = FieldPlan::empty(spec.fields.len());
        for (i, f) in spec.fields.iter().enumerate() {
            let mine = f
                .name
                .strip_prefix(R::FIELD_PREFIX)
                .is_some_and(|rest| !rest.contains('.'));
            if !mine {
                continue;
            }
            for view in [FieldView::Clear, FieldView::Masked, FieldView::Pseudonym] {
                let mut plan = FieldPlan::empty(spec.fields.len());
                plan.set(i, view);
                out.push(plan);
            }
            all.set(i, FieldView::Clear);
        }
        out.push(all);
        out
    }

    fn a_narrowed_read_projects_as_a_full_one<R: Record + Named + PartialEq + std::fmt::Debug>() {
        let stored = full::<R>();
        let whole = R::decode(stored.as_slice()).unwrap();
        let mut scratch = Vec::new();
        for plan in plans::<R>() {
            let narrowed: R = R::read_set(&plan).decode(&stored, &mut scratch).unwrap();
            assert_eq!(
                projected(narrowed, &plan),
                projected(whole.clone(), &plan),
                "{}: {plan:?}",
                R::NAME
            );
        }
    }

    #[test]
    fn a_narrowed_read_releases_exactly_what_a_full_read_would() {
        a_narrowed_read_projects_as_a_full_one::<Person>();
        a_narrowed_read_projects_as_a_full_one::<LegalEntity>();
        a_narrowed_read_projects_as_a_full_one::<Grid>();
        a_narrowed_read_projects_as_a_full_one::<GridWorker>();
    }

    fn nothing_but_key_and_row<R: Record + Named>() {
        let stored = full::<R>();
        let whole = R::decode(stored.as_slice()).unwrap();
        let empty = FieldPlan::empty(R::DATASET.spec().fields.len());
        let narrowed: R = R::read_set(&empty)
            .decode(&stored, &mut Vec::new())
            .unwrap();
        assert_eq!(narrowed.key(), whole.key(), "{}", R::NAME);
        assert_eq!(narrowed.row_code(), whole.row_code(), "{}", R::NAME);
        let mut want = vec![R::KEY_FIELD.to_string(), R::ROW_FIELD.to_string()];
        want.dedup();
        assert_eq!(present_fields(&narrowed), want, "{}", R::NAME);
    }

    /// A field no grant of the call may release is not even decoded.
    #[test]
    fn a_read_under_no_released_field_decodes_only_the_key_and_row_code() {
        nothing_but_key_and_row::<Person>();
        nothing_but_key_and_row::<LegalEntity>();
        nothing_but_key_and_row::<Grid>();
        nothing_but_key_and_row::<GridWorker>();
    }

    /// Damaged stored bytes are an error to report, never a panic or a
    /// record made of what happened to parse.
    #[test]
    fn a_damaged_record_is_an_error_not_a_panic() {
        let stored = full::<Person>();
        let mut plan = FieldPlan::empty(Person::DATASET.spec().fields.len());
        plan.set(1, FieldView::Clear);
        let read = Person::read_set(&plan);
        let mut scratch = Vec::new();
        let mut refused = 0;
        for cut in 0..stored.len() {
            refused += usize::from(read.decode::<Person>(&stored[..cut], &mut scratch).is_err());
        }
        // A cut between two fields is a shorter record; inside one, an error.
        assert!(refused > stored.len() / 2, "{refused} of {}", stored.len());
        let mut bad = stored.clone();
        bad[0] = 0x0b; // field 1, wire type 3 (a group): never written
        assert!(read.decode::<Person>(&bad, &mut scratch).is_err());
        assert!(read.decode::<Person>(&[0xff; 11], &mut scratch).is_err());
    }
}
