//! The v2 record messages (`govshare.v2.Person`, …: `{ record, views }`)
//! as the gateway builds them: `record` is held as the encoding the
//! projector wrote — the released fields, a CLEAR one copied from the
//! stored record as it is — and goes on the wire as it is. Generated code
//! would hold a decoded `govshare.v1.Person` and encode it again: an owned
//! string, a copy and a free per released field of every record a listing
//! sends. The wire format is the proto's: clients decode it as generated.

use bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};
use std::marker::PhantomData;

/// An `M`'s encoding, kept as bytes.
pub struct Encoded<M> {
    bytes: Vec<u8>,
    message: PhantomData<fn() -> M>,
}

impl<M: Message + Default> Encoded<M> {
    /// `m`'s encoding.
    pub fn of(m: &M) -> Self {
        Self::from_bytes(m.encode_to_vec())
    }

    /// Bytes written as an `M` (the projector's fields, a reply's field).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            message: PhantomData,
        }
    }

    pub fn decode(&self) -> Result<M, DecodeError> {
        M::decode(self.bytes.as_slice())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl<M> Clone for Encoded<M> {
    fn clone(&self) -> Self {
        Self {
            bytes: self.bytes.clone(),
            message: PhantomData,
        }
    }
}

impl<M> PartialEq for Encoded<M> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<M> std::fmt::Debug for Encoded<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded({} bytes)", self.bytes.len())
    }
}

/// `{ M record = 1; repeated FieldView views = 2; }`, with the record
/// written as its encoding.
pub struct RecordView<M> {
    pub record: Option<Encoded<M>>,
    /// `views[n - 1]`: the view of record field `n`.
    pub views: Vec<i32>,
}

impl<M> Default for RecordView<M> {
    fn default() -> Self {
        Self {
            record: None,
            views: Vec::new(),
        }
    }
}

impl<M> Clone for RecordView<M> {
    fn clone(&self) -> Self {
        Self {
            record: self.record.clone(),
            views: self.views.clone(),
        }
    }
}

impl<M> PartialEq for RecordView<M> {
    fn eq(&self, other: &Self) -> bool {
        self.record == other.record && self.views == other.views
    }
}

impl<M> std::fmt::Debug for RecordView<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordView")
            .field("record", &self.record)
            .field("views", &self.views)
            .finish()
    }
}

impl<M: Message + Default> Message for RecordView<M> {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(record) = &self.record {
            encoding::encode_key(1, WireType::LengthDelimited, buf);
            encoding::encode_varint(record.bytes.len() as u64, buf);
            buf.put_slice(&record.bytes);
        }
        encode_views(&self.views, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => {
                // A message field met twice merges, which for encodings
                // is appending one to the other.
                let mut more: Vec<u8> = Vec::new();
                encoding::bytes::merge(wire_type, &mut more, buf, ctx)?;
                let record = self
                    .record
                    .get_or_insert_with(|| Encoded::from_bytes(Vec::new()));
                record.bytes.extend_from_slice(&more);
                Ok(())
            }
            2 => encoding::int32::merge_repeated(wire_type, &mut self.views, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let record = self.record.as_ref().map_or(0, |r| {
            let len = r.bytes.len();
            encoding::key_len(1) + encoding::encoded_len_varint(len as u64) + len
        });
        record + encoding::int32::encoded_len_packed(2, &self.views)
    }

    fn clear(&mut self) {
        self.record = None;
        self.views.clear();
    }
}

/// Most views [`encode_views`] writes as one slice.
const VIEWS_AT_ONCE: usize = 64;

/// `views` as prost's packed `int32` encoding writes them, but as one
/// slice when each is a one-byte varint (a view is 0–3): a listing writes
/// a record's views per record, and a varint call per view was 2 % of a
/// stream's CPU (`perf`, `govshare bench --only streams`).
fn encode_views(views: &[i32], buf: &mut impl BufMut) {
    if views.is_empty() {
        return;
    }
    let mut bytes = [0u8; VIEWS_AT_ONCE];
    if views.len() > VIEWS_AT_ONCE || views.iter().any(|v| !(0..0x80).contains(v)) {
        return encoding::int32::encode_packed(2, views, buf);
    }
    for (b, v) in bytes.iter_mut().zip(views) {
        *b = *v as u8;
    }
    encoding::encode_key(2, WireType::LengthDelimited, buf);
    encoding::encode_varint(views.len() as u64, buf);
    buf.put_slice(&bytes[..views.len()]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Person;
    use prost_reflect::{DynamicMessage, Value};

    /// The views are written byte for byte as prost writes them, whatever
    /// they hold.
    #[test]
    fn views_are_encoded_as_prost_encodes_them() {
        let long: Vec<i32> = (0..100).map(|n| n % 4).collect();
        for views in [
            vec![],
            vec![0],
            vec![1, 0, 2, 3, 1],
            vec![127, 0],
            vec![128],
            vec![-1, 2],
            long[..VIEWS_AT_ONCE].to_vec(),
            long,
        ] {
            let (mut ours, mut prosts) = (Vec::new(), Vec::new());
            encode_views(&views, &mut ours);
            encoding::int32::encode_packed(2, &views, &mut prosts);
            assert_eq!(ours, prosts, "{views:?}");
        }
    }

    /// What the gateway writes is `govshare.v2.Person` as any generated
    /// client reads it, and reads back what a generated server would send.
    #[test]
    fn a_record_view_is_the_protos_message_on_the_wire() {
        let person = Person {
            id_number: Some("11010519491231002X".into()),
            name: Some("张三".into()),
            ..Default::default()
        };
        let view = RecordView::<Person> {
            record: Some(Encoded::of(&person)),
            views: vec![1, 1],
        };
        let bytes = view.encode_to_vec();
        assert_eq!(bytes.len(), view.encoded_len());
        let desc = super::super::json::pool()
            .get_message_by_name("govshare.v2.Person")
            .unwrap();
        let dynamic = DynamicMessage::decode(desc, bytes.as_slice()).unwrap();
        let Value::Message(record) = &*dynamic.get_field_by_name("record").unwrap() else {
            panic!("record is a message");
        };
        assert_eq!(record.encode_to_vec(), person.encode_to_vec());
        assert_eq!(
            *dynamic.get_field_by_name("views").unwrap(),
            Value::List(vec![Value::EnumNumber(1), Value::EnumNumber(1)])
        );
        // Read back, also from the dynamic message's own encoding.
        for bytes in [bytes.clone(), dynamic.encode_to_vec()] {
            let back = RecordView::<Person>::decode(bytes.as_slice()).unwrap();
            assert_eq!(back.record.unwrap().decode().unwrap(), person);
            assert_eq!(back.views, [1, 1]);
        }
        // A record field met twice merges, as for any message field.
        let mut twice = RecordView::<Person> {
            record: Some(Encoded::of(&Person {
                sex: Some(1),
                ..Default::default()
            })),
            views: vec![],
        }
        .encode_to_vec();
        twice.extend(bytes);
        let merged = RecordView::<Person>::decode(twice.as_slice()).unwrap();
        let merged = merged.record.unwrap().decode().unwrap();
        assert_eq!(
            (merged.sex, merged.name.as_deref()),
            (Some(1), Some("张三"))
        );
    }
}
