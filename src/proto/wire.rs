//! The protobuf wire format of a stored record, field by field, without
//! decoding it into a message: what the projector walks, and the
//! [`Schema`] it checks a field against before copying its bytes as they
//! are. Strict: a damaged length must never reframe a withheld field's
//! bytes as fields that are released, and a field this build's schema does
//! not know (one a newer version wrote into a shared store, say) must
//! never leave inside one that is — the typed decode dropped both.

use anyhow::{Context, Result, bail};
use prost_reflect::{Kind as Reflected, MessageDescriptor};
use std::collections::HashMap;
use std::sync::LazyLock;

/// The largest field number protobuf allows.
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

/// Length-delimited: strings, bytes, nested messages, packed lists.
pub const LEN: u64 = 2;

/// One field of an encoded message.
pub struct Field<'a> {
    pub number: u64,
    pub wire_type: u64,
    /// The whole field: key, length (if any) and value, as stored.
    pub raw: &'a [u8],
    /// A length-delimited field's value; empty for the other wire types.
    pub value: &'a [u8],
}

/// The fields of `bytes` in the order they are stored.
pub fn fields(bytes: &[u8]) -> Fields<'_> {
    Fields { rest: bytes }
}

pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = next_field(&mut self.rest);
        if field.is_err() {
            // Nothing after a damaged field can be trusted to be framed.
            self.rest = &[];
        }
        Some(field)
    }
}

fn next_field<'a>(rest: &mut &'a [u8]) -> Result<Field<'a>> {
    let start = *rest;
    let key = varint(rest)?;
    let (number, wire_type) = (key >> 3, key & 7);
    if !(1..=MAX_FIELD_NUMBER).contains(&number) {
        bail!("a stored record has a field numbered {number}");
    }
    let mut value: &[u8] = &[];
    match wire_type {
        0 => {
            varint(rest)?;
        }
        1 => skip(rest, 8)?,
        LEN => {
            let len = usize::try_from(varint(rest)?)?;
            value = rest
                .get(..len)
                .context("a stored record ends inside a field")?;
            skip(rest, len)?;
        }
        5 => skip(rest, 4)?,
        w => bail!("a stored record has a field of wire type {w}"),
    }
    Ok(Field {
        number,
        wire_type,
        raw: &start[..start.len() - rest.len()],
        value,
    })
}

fn skip(rest: &mut &[u8], n: usize) -> Result<()> {
    *rest = rest
        .get(n..)
        .context("a stored record ends inside a field")?;
    Ok(())
}

/// A protobuf base-128 varint, consumed from the front of `buf`. A tenth
/// byte above 1 overflows 64 bits and is refused, as prost refuses it.
fn varint(buf: &mut &[u8]) -> Result<u64> {
    let mut value = 0u64;
    for (i, byte) in buf.iter().enumerate().take(10) {
        if i == 9 && *byte > 1 {
            break;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(value);
        }
    }
    bail!("a stored record has a malformed varint")
}

/// The value a decode keeps of the varint field `number` (its last
/// copy), or `None` if it is absent. Every field is walked, so framing
/// damaged anywhere is refused; what is inside the other fields is not
/// looked at. So, unlike a decode, it reads the number out of a record
/// whose other fields are damaged (bad UTF-8, a wrong wire type) — a
/// publish then replaces such a record rather than fail — and, like
/// [`fields`], it refuses groups (wire types 3 and 4), which this build
/// never writes.
pub fn last_varint(bytes: &[u8], number: u64) -> Result<Option<u64>> {
    let mut last = None;
    for f in fields(bytes) {
        let f = f?;
        if f.number == number {
            if f.wire_type != 0 {
                bail!("a stored record's field {number} is not a number");
            }
            let mut raw = f.raw;
            varint(&mut raw)?;
            last = Some(varint(&mut raw)?);
        }
    }
    Ok(last)
}

/// The number of `message`'s field `field` in this build's descriptors.
pub fn number_of(message: &str, field: &str) -> Option<u64> {
    let m = super::json::pool().get_message_by_name(message)?;
    Some(u64::from(m.get_field_by_name(field)?.number()))
}

/// Appends a length-delimited field `number` holding `value`.
pub fn put_len(out: &mut Vec<u8>, number: u64, value: &[u8]) {
    put_varint(out, (number << 3) | LEN);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// What a field holds, as far as its bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Varint,
    Fixed64,
    Fixed32,
    /// One UTF-8 string.
    Text,
    Bytes,
    /// A nested message: its schema's index.
    Message(usize),
}

/// One field's rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub kind: Kind,
    pub repeated: bool,
}

impl Rule {
    /// One string, not a list: what a masked or pseudonymous view is
    /// made from.
    pub fn is_text(&self) -> bool {
        self.kind == Kind::Text && !self.repeated
    }
}

/// Every field a message of this build may hold, by number.
#[derive(Debug)]
pub struct Schema {
    rules: Vec<Option<Rule>>,
}

struct Schemas {
    all: Vec<Schema>,
    by_name: HashMap<String, usize>,
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| {
    let pool = super::json::pool();
    let by_name: HashMap<String, usize> = pool
        .all_messages()
        .enumerate()
        .map(|(i, m)| (m.full_name().to_string(), i))
        .collect();
    let all = pool
        .all_messages()
        .map(|m| schema_of(&m, &by_name))
        .collect();
    Schemas { all, by_name }
});

fn schema_of(m: &MessageDescriptor, by_name: &HashMap<String, usize>) -> Schema {
    let mut rules = Vec::new();
    for f in m.fields() {
        let kind = match f.kind() {
            Reflected::String => Kind::Text,
            Reflected::Bytes => Kind::Bytes,
            Reflected::Message(d) => Kind::Message(by_name[d.full_name()]),
            Reflected::Double | Reflected::Fixed64 | Reflected::Sfixed64 => Kind::Fixed64,
            Reflected::Float | Reflected::Fixed32 | Reflected::Sfixed32 => Kind::Fixed32,
            _ => Kind::Varint,
        };
        let n = f.number() as usize;
        if rules.len() <= n {
            rules.resize(n + 1, None);
        }
        rules[n] = Some(Rule {
            kind,
            repeated: f.is_list() || f.is_map(),
        });
    }
    Schema { rules }
}

/// How deep nested messages may go in a stored record.
const MAX_DEPTH: usize = 16;

impl Schema {
    /// The schema of the message named `name` (`govshare.v1.Person`).
    pub fn of(name: &str) -> &'static Schema {
        let s = &*SCHEMAS;
        &s.all[s.by_name[name]]
    }

    pub fn rule(&self, number: u64) -> Option<Rule> {
        self.rules.get(number as usize).copied().flatten()
    }

    /// Checks one field against its rule: its wire type, a string's UTF-8,
    /// and a nested message's every field, recursively. What passes is
    /// what a decoder of this build reads back, unknown fields none.
    pub fn check(&self, rule: Rule, f: &Field<'_>) -> Result<()> {
        check_field(rule, f, 0)
    }
}

fn check_field(rule: Rule, f: &Field<'_>, depth: usize) -> Result<()> {
    let want = match rule.kind {
        Kind::Varint => 0,
        Kind::Fixed64 => 1,
        Kind::Fixed32 => 5,
        Kind::Text | Kind::Bytes | Kind::Message(_) => LEN,
    };
    // A list of numbers may be packed into one length-delimited field.
    let packed = rule.repeated && f.wire_type == LEN && want != LEN;
    if f.wire_type != want && !packed {
        bail!(
            "a stored record's field {} has wire type {}, not {want}",
            f.number,
            f.wire_type
        );
    }
    match rule.kind {
        Kind::Text => {
            std::str::from_utf8(f.value).context("a stored text field is not UTF-8")?;
        }
        Kind::Message(i) => {
            if depth >= MAX_DEPTH {
                bail!("a stored record nests messages deeper than {MAX_DEPTH}");
            }
            let schema = &SCHEMAS.all[i];
            for inner in fields(f.value) {
                let inner = inner?;
                let Some(rule) = schema.rule(inner.number) else {
                    bail!(
                        "a stored record holds field {} that this build does not know",
                        inner.number
                    );
                };
                check_field(rule, &inner, depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Person;
    use prost::Message;

    #[test]
    fn walks_what_prost_writes_and_refuses_what_prost_refuses() {
        let p = Person {
            id_number: Some("11010519491231002X".into()),
            name: Some("张三".into()),
            sex: Some(1),
            version: Some(3),
            ..Default::default()
        };
        let bytes = p.encode_to_vec();
        let numbers: Vec<u64> = fields(&bytes).map(|f| f.unwrap().number).collect();
        assert_eq!(numbers, [1, 2, 3, 21]);
        let raw: Vec<u8> = fields(&bytes)
            .flat_map(|f| f.unwrap().raw.to_vec())
            .collect();
        assert_eq!(raw, bytes, "the raw fields are the message");
        // Each field passes its rule; a field under another's rule fails.
        let schema = Schema::of("govshare.v1.Person");
        for f in fields(&bytes) {
            let f = f.unwrap();
            schema.check(schema.rule(f.number).unwrap(), &f).unwrap();
        }
        let sex = fields(&bytes).nth(2).unwrap().unwrap();
        assert!(
            schema.check(schema.rule(2).unwrap(), &sex).is_err(),
            "a number is not text"
        );

        let mut out = Vec::new();
        put_len(&mut out, 2, "李四".as_bytes());
        assert_eq!(
            Person::decode(out.as_slice()).unwrap().name.as_deref(),
            Some("李四")
        );

        // Truncated anywhere inside a field: an error, never a panic.
        for cut in 1..bytes.len() {
            let _ = fields(&bytes[..cut]).collect::<Result<Vec<_>>>();
        }
        assert!(fields(&bytes[..bytes.len() - 1]).any(|f| f.is_err()));
        // A length whose tenth byte overflows 64 bits.
        let mut overflow = vec![0x3a];
        overflow.extend([0x80; 9]);
        overflow.push(0x02);
        assert!(fields(&overflow).any(|f| f.is_err()));
        assert!(Person::decode(overflow.as_slice()).is_err(), "prost agrees");
        // Field number 0, a group, an endless varint.
        assert!(fields(&[0x00, 0x01]).any(|f| f.is_err()));
        assert!(fields(&[0x0b]).any(|f| f.is_err()));
        assert!(fields(&[0xff; 11]).any(|f| f.is_err()));
    }
}
