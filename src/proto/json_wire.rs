//! proto3 JSON straight to protobuf wire bytes, for the plain shapes an
//! import's lines have: strings, whole numbers, floating ones, booleans,
//! enums by name, nested messages and lists of these, each field named
//! once. `govshare import` reads millions of lines; building each as a
//! `DynamicMessage` before encoding it cost ~5.8 of the ~7 µs of CPU the
//! command spent per person, on the cores the gateway needs.
//!
//! This path judges nothing. Anything else — a `null`, a field named
//! twice, two fields of one oneof, a map, a well-known type, bytes, an
//! enum by number, an unknown field, any error — makes it answer `None`,
//! and the caller parses the line again the full way
//! ([`super::json::encoded_from_str`]), which decides and words the error.
//! So a line is accepted here only where the full parse accepts it, as the
//! same message (its fields in the order the line names them: decoders
//! do not mind); the tests compare the two.

use prost::encoding::{WireType, encode_key, encode_varint};
use prost_reflect::{Kind, MessageDescriptor};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::HashMap;
use std::fmt;

/// A JSON value this path does not write: the full parse is asked.
fn unplain<E: de::Error>() -> E {
    E::custom("not a plain shape")
}

/// How one field's JSON value becomes wire bytes.
#[derive(Debug, Clone)]
enum Shape {
    Str,
    Bool,
    /// A whole number in `min..=max`, written as a varint (int32, int64,
    /// uint32, uint64), zigzagged for sint32 and sint64.
    Whole {
        min: i128,
        max: i128,
        zigzag: bool,
    },
    Float,
    Double,
    /// An enum by value name, names sorted.
    Enum(Vec<(Box<str>, i32)>),
    /// A nested message, by its index in [`JsonToWire::messages`].
    Message(usize),
    /// Bytes, maps, fixed-width integers, well-known types, groups, and
    /// every field of a message with more than [`MAX_FIELDS`].
    Other,
}

fn whole(min: i128, max: i128, zigzag: bool) -> Shape {
    Shape::Whole { min, max, zigzag }
}

#[derive(Debug)]
struct Field {
    number: u32,
    shape: Shape,
    list: bool,
    /// Which of its message's oneofs holds it.
    oneof: Option<usize>,
}

#[derive(Debug, Default)]
struct Message {
    /// JSON names, then proto names not already taken, sorted: each with
    /// its field's index in `fields`.
    names: Vec<(Box<str>, usize)>,
    fields: Vec<Field>,
}

/// One message type's plan: its fields and those of every message it
/// nests, read once from the descriptors.
#[derive(Debug)]
pub struct JsonToWire {
    /// The message itself first.
    messages: Vec<Message>,
}

/// Fields a message may have for this path to track which it has seen.
const MAX_FIELDS: usize = 64;

impl JsonToWire {
    pub fn new(root: &MessageDescriptor) -> Self {
        let mut plan = Self {
            messages: Vec::new(),
        };
        let mut index = HashMap::new();
        plan.add(root, &mut index);
        plan
    }

    fn add(&mut self, desc: &MessageDescriptor, index: &mut HashMap<String, usize>) -> usize {
        if let Some(&at) = index.get(desc.full_name()) {
            return at;
        }
        let at = self.messages.len();
        index.insert(desc.full_name().to_string(), at);
        self.messages.push(Message::default());
        let mut message = Message::default();
        for (n, f) in desc.fields().enumerate() {
            let shape = match f.kind() {
                _ if f.is_map() || desc.fields().len() > MAX_FIELDS => Shape::Other,
                Kind::String => Shape::Str,
                Kind::Bool => Shape::Bool,
                Kind::Int32 => whole(i32::MIN.into(), i32::MAX.into(), false),
                Kind::Int64 => whole(i64::MIN.into(), i64::MAX.into(), false),
                Kind::Uint32 => whole(0, u32::MAX.into(), false),
                Kind::Uint64 => whole(0, u64::MAX.into(), false),
                Kind::Sint32 => whole(i32::MIN.into(), i32::MAX.into(), true),
                Kind::Sint64 => whole(i64::MIN.into(), i64::MAX.into(), true),
                Kind::Float => Shape::Float,
                Kind::Double => Shape::Double,
                Kind::Enum(e) => {
                    let mut names: Vec<(Box<str>, i32)> =
                        e.values().map(|v| (v.name().into(), v.number())).collect();
                    names.sort();
                    Shape::Enum(names)
                }
                Kind::Message(m)
                    if !m.full_name().starts_with("google.protobuf.") && !f.is_group() =>
                {
                    Shape::Message(self.add(&m, index))
                }
                _ => Shape::Other,
            };
            message.fields.push(Field {
                number: f.number(),
                shape,
                list: f.is_list(),
                oneof: f
                    .containing_oneof()
                    .and_then(|o| desc.oneofs().position(|x| x.full_name() == o.full_name())),
            });
            message.names.push((f.json_name().into(), n));
        }
        for (n, f) in desc.fields().enumerate() {
            if !message.names.iter().any(|(name, _)| **name == *f.name()) {
                message.names.push((f.name().into(), n));
            }
        }
        message.names.sort();
        self.messages[at] = message;
        at
    }

    /// The wire bytes of the message `text` holds, if it is plain; `None`
    /// for anything else, which the full parse must judge.
    pub fn encode(&self, text: &str) -> Option<Vec<u8>> {
        let mut de = serde_json::Deserializer::from_str(text);
        let mut out = Vec::with_capacity(text.len());
        let seed = MessageSeed {
            plan: self,
            at: 0,
            out: &mut out,
        };
        seed.deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(out)
    }
}

/// Writes the JSON object it meets as message `at`'s fields, into `out`.
struct MessageSeed<'p, 'o> {
    plan: &'p JsonToWire,
    at: usize,
    out: &'o mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let message = &self.plan.messages[self.at];
        let (mut seen, mut oneofs) = (0u64, 0u64);
        let mut next = 0;
        while let Some((at, n)) = map.next_key_seed(NameSeed {
            names: &message.names,
            next,
        })? {
            next = at + 1;
            let field = &message.fields[n];
            // A field named twice; and no shift past 64 bits (a message
            // with more fields is all `Other`, refused just below).
            if n >= MAX_FIELDS || seen & (1 << n) != 0 {
                return Err(unplain());
            }
            seen |= 1 << n;
            if let Some(o) = field.oneof {
                if o >= MAX_FIELDS || oneofs & (1 << o) != 0 {
                    return Err(unplain());
                }
                oneofs |= 1 << o;
            }
            map.next_value_seed(ValueSeed {
                plan: self.plan,
                field,
                out: &mut *self.out,
            })?;
        }
        Ok(())
    }
}

/// Finds a key among a message's names: its place there and its field's
/// index. Lines written by a program name their fields in one order, most
/// often sorted as the names are: the few names after the last one found
/// are tried before a search.
struct NameSeed<'p> {
    names: &'p [(Box<str>, usize)],
    next: usize,
}

/// Names tried after the last one found, before a search.
const NAMES_AHEAD: usize = 3;

impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
    type Value = (usize, usize);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed<'_> {
    type Value = (usize, usize);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        let ahead = self.names.iter().enumerate().skip(self.next);
        let at = match ahead.take(NAMES_AHEAD).find(|(_, (n, _))| **n == *name) {
            Some((at, _)) => at,
            None => self
                .names
                .binary_search_by(|(n, _)| (**n).cmp(name))
                .map_err(|_| unplain())?,
        };
        Ok((at, self.names[at].1))
    }
}

/// Writes one field's value: a list's every element, or the one value.
struct ValueSeed<'p, 'o> {
    plan: &'p JsonToWire,
    field: &'p Field,
    out: &'o mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if matches!(self.field.shape, Shape::Other) {
            return Err(unplain());
        }
        if self.field.list {
            d.deserialize_seq(self)
        } else {
            d.deserialize_any(ElementSeed {
                plan: self.plan,
                field: self.field,
                out: self.out,
            })
        }
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(ElementSeed {
                plan: self.plan,
                field: self.field,
                out: &mut *self.out,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// Writes one value of a field, with its key.
struct ElementSeed<'p, 'o> {
    plan: &'p JsonToWire,
    field: &'p Field,
    out: &'o mut Vec<u8>,
}

impl ElementSeed<'_, '_> {
    /// A whole JSON number (or a quoted one): for a whole-number field in
    /// its range; for a float or double rounded once, as the full parse
    /// rounds it.
    fn whole_number<E: de::Error>(self, v: i128) -> Result<(), E> {
        let (min, max, zigzag) = match self.field.shape {
            Shape::Whole { min, max, zigzag } => (min, max, zigzag),
            Shape::Float => return self.fixed32((v as f32).to_le_bytes()),
            Shape::Double => return self.fixed64((v as f64).to_le_bytes()),
            _ => return Err(unplain()),
        };
        if !(min..=max).contains(&v) {
            return Err(unplain());
        }
        // Negative int32 and int64 values are written as 64-bit two's
        // complement, as protobuf says; zigzag maps sign into the low bit.
        let wire = if zigzag {
            let v = v as i64;
            ((v << 1) ^ (v >> 63)) as u64
        } else {
            v as i64 as u64
        };
        encode_key(self.field.number, WireType::Varint, self.out);
        encode_varint(wire, self.out);
        Ok(())
    }

    fn fixed32<E: de::Error>(self, bytes: [u8; 4]) -> Result<(), E> {
        encode_key(self.field.number, WireType::ThirtyTwoBit, self.out);
        self.out.extend_from_slice(&bytes);
        Ok(())
    }

    fn fixed64<E: de::Error>(self, bytes: [u8; 8]) -> Result<(), E> {
        encode_key(self.field.number, WireType::SixtyFourBit, self.out);
        self.out.extend_from_slice(&bytes);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for ElementSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ElementSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a plain value")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        match &self.field.shape {
            Shape::Str => {
                encode_key(self.field.number, WireType::LengthDelimited, self.out);
                encode_varint(s.len() as u64, self.out);
                self.out.extend_from_slice(s.as_bytes());
                Ok(())
            }
            Shape::Enum(names) => {
                let at = names
                    .binary_search_by(|(n, _)| (**n).cmp(s))
                    .map_err(|_| unplain())?;
                let number = names[at].1;
                encode_key(self.field.number, WireType::Varint, self.out);
                encode_varint(i64::from(number) as u64, self.out);
                Ok(())
            }
            // Whole numbers may come quoted (how proto3 JSON writes 64-bit
            // ones), read as the full parse reads them: Rust's own parse of
            // a signed or an unsigned type, then the field's range.
            Shape::Whole { min, .. } => {
                let v = if *min < 0 {
                    s.parse::<i64>().map(i128::from)
                } else {
                    s.parse::<u64>().map(i128::from)
                };
                self.whole_number(v.map_err(|_| unplain())?)
            }
            _ => Err(unplain()),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.whole_number(v.into())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.whole_number(v.into())
    }

    /// A fraction (JSON numbers are finite): a float's must be in its
    /// range, as the full parse requires.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        match self.field.shape {
            Shape::Float if (f64::from(f32::MIN)..=f64::from(f32::MAX)).contains(&v) => {
                self.fixed32((v as f32).to_le_bytes())
            }
            Shape::Double => self.fixed64(v.to_le_bytes()),
            _ => Err(unplain()),
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        if !matches!(self.field.shape, Shape::Bool) {
            return Err(unplain());
        }
        encode_key(self.field.number, WireType::Varint, self.out);
        encode_varint(v.into(), self.out);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let Shape::Message(at) = self.field.shape else {
            return Err(unplain());
        };
        let mut inner = Vec::new();
        MessageSeed {
            plan: self.plan,
            at,
            out: &mut inner,
        }
        .visit_map(map)?;
        encode_key(self.field.number, WireType::LengthDelimited, self.out);
        encode_varint(inner.len() as u64, self.out);
        self.out.extend_from_slice(&inner);
        Ok(())
    }
}
