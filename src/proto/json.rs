//! Canonical proto3 JSON for any generated message, through the compiled
//! descriptor set: used for the audit log's before/after of admin changes
//! and for the command line's `--json` output.

use super::FILE_DESCRIPTOR_SET;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use std::sync::LazyLock;

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("the build's own descriptor set")
});

/// A message with its fully qualified protobuf name.
pub trait Named: Message + Sized {
    const NAME: &'static str;
}

macro_rules! named {
    ($($t:ident),* $(,)?) => {
        $(impl Named for crate::proto::$t {
            const NAME: &'static str = concat!("govshare.v1.", stringify!($t));
        })*
    };
}

named!(
    Department,
    RegisteredCertificate,
    Grant,
    AccessRequest,
    Catalog,
    IssueTokenResponse,
    RotateSigningKeyResponse,
    ListDepartmentsResponse,
    ListGrantsResponse,
    ListAccessRequestsResponse,
    Person,
    LegalEntity,
    Grid,
    GridWorker,
    RegionNode,
    GetPersonResponse,
    PersonPage,
    GetEntityResponse,
    GetGridResponse,
    AuditEntry,
    QueryAuditRequest,
    Checkpoint,
    InclusionProof,
    ConsistencyProof,
    AuditStatsResponse,
    PublishSummary,
    TokenInfo,
    Purpose,
    CreateGrantResponse,
    ListTokensResponse,
    ListCertificatesResponse,
    EntityPage,
    GridPage,
    UpsertGridsRequest,
    Correction,
    ListCorrectionsResponse,
    MyAccessHistoryResponse,
);

pub fn to_value<M: Named>(m: &M) -> serde_json::Value {
    let desc = POOL
        .get_message_by_name(M::NAME)
        .expect("a message of this build");
    let dm = DynamicMessage::decode(desc, m.encode_to_vec().as_slice())
        .expect("re-decoding our own message");
    serde_json::to_value(&dm).expect("JSON of a dynamic message")
}

pub fn to_string<M: Named>(m: &M) -> String {
    to_value(m).to_string()
}

/// The build's descriptors, decoded once.
pub(crate) fn pool() -> &'static DescriptorPool {
    &POOL
}

/// The names of the fields a message has set (explicit presence): what a
/// caller actually receives, whatever the `views` map claims.
pub fn present_fields<M: Named>(m: &M) -> Vec<String> {
    let desc = POOL
        .get_message_by_name(M::NAME)
        .expect("a message of this build");
    let dm = DynamicMessage::decode(desc, m.encode_to_vec().as_slice())
        .expect("re-decoding our own message");
    dm.fields()
        .map(|(f, _)| f.name().to_string())
        .filter(|n| n != "views")
        .collect()
}

/// The wire bytes of an `M` parsed from proto3 JSON (field names as in the
/// proto or in lowerCamelCase), refusing unknown fields. Bytes, not an `M`:
/// what reads JSON to send it on (`govshare import`) would only encode the
/// message again.
pub fn encoded_from_value<M: Named>(v: serde_json::Value) -> Result<Vec<u8>, String> {
    let dm = DynamicMessage::deserialize(descriptor::<M>(), v).map_err(|e| e.to_string())?;
    Ok(dm.encode_to_vec())
}

/// [`encoded_from_str`] for the many lines of one import: each written
/// straight from its JSON to wire bytes where it has only plain shapes
/// ([`super::json_wire`], several times faster), parsed the full way where
/// not — which also decides every line the straight way would not take,
/// and words its error.
pub struct LineEncoder<M> {
    plain: super::json_wire::JsonToWire,
    message: std::marker::PhantomData<fn() -> M>,
}

impl<M: Named> LineEncoder<M> {
    /// The wire bytes of the `M` one JSON text holds, or why it holds
    /// none (as [`encoded_from_str`] words it).
    pub fn encode(&self, text: &str) -> Result<Vec<u8>, String> {
        match self.plain.encode(text) {
            Some(bytes) => Ok(bytes),
            None => encoded_from_str::<M>(text),
        }
    }
}

/// Reads `M`'s descriptors once, for every line after.
impl<M: Named> Default for LineEncoder<M> {
    fn default() -> Self {
        Self {
            plain: super::json_wire::JsonToWire::new(&descriptor::<M>()),
            message: std::marker::PhantomData,
        }
    }
}

/// [`encoded_from_value`] straight from one JSON text: no
/// `serde_json::Value` in between (an import parses millions of lines). A
/// line that is not JSON at all says so.
fn encoded_from_str<M: Named>(text: &str) -> Result<Vec<u8>, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let dm = DynamicMessage::deserialize(descriptor::<M>(), &mut de)
        .and_then(|dm| de.end().map(|()| dm))
        .map_err(|e| match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("not JSON: {e}")
            }
            _ => e.to_string(),
        })?;
    Ok(dm.encode_to_vec())
}

fn descriptor<M: Named>() -> prost_reflect::MessageDescriptor {
    POOL.get_message_by_name(M::NAME)
        .expect("a message of this build")
}

/// A copy of `m` with its field `name` set from `text`, as a person would
/// write the value: a string as is, a number or `true`/`false` parsed, an
/// enum by its value name (`RESIDENCE_STATUS_…` or just its last part).
/// `Ok(None)` for a field text cannot hold (a message, a list): the value
/// is then for a person to read, not for a check.
pub fn with_text_field<M: Named + Default>(
    m: &M,
    name: &str,
    text: &str,
) -> Result<Option<M>, String> {
    use prost_reflect::{Kind, Value};
    let desc = POOL
        .get_message_by_name(M::NAME)
        .expect("a message of this build");
    let field = desc
        .get_field_by_name(name)
        .ok_or_else(|| format!("{name}: not a field of {}", desc.name()))?;
    if field.is_list() || field.is_map() {
        return Ok(None);
    }
    let bad = |what: &str| {
        format!(
            "{name}: '{}' is not {what}",
            crate::base::text::cap_for_message(text)
        )
    };
    let value = match field.kind() {
        Kind::String => Value::String(text.to_string()),
        Kind::Bool => Value::Bool(text.parse().map_err(|_| bad("true or false"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(text.parse().map_err(|_| bad("a whole number"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(text.parse().map_err(|_| bad("a whole number"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => {
            Value::U32(text.parse().map_err(|_| bad("a whole number"))?)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Value::U64(text.parse().map_err(|_| bad("a whole number"))?)
        }
        Kind::Double => Value::F64(text.parse().map_err(|_| bad("a number"))?),
        Kind::Float => Value::F32(text.parse().map_err(|_| bad("a number"))?),
        Kind::Enum(e) => {
            let upper = text.trim().to_ascii_uppercase();
            let v = e
                .values()
                .find(|v| v.name() == upper || v.name().ends_with(&format!("_{upper}")))
                .filter(|v| v.number() != 0)
                .ok_or_else(|| {
                    let names: Vec<String> = e
                        .values()
                        .filter(|v| v.number() != 0)
                        .map(|v| v.name().to_string())
                        .collect();
                    format!(
                        "{}; one of {}",
                        bad("a value of this field"),
                        names.join(", ")
                    )
                })?;
            Value::EnumNumber(v.number())
        }
        Kind::Bytes | Kind::Message(_) => return Ok(None),
    };
    let mut dm = DynamicMessage::decode(desc, m.encode_to_vec().as_slice())
        .expect("re-decoding our own message");
    dm.set_field(&field, value);
    dm.transcode_to::<M>().map(Some).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{LegalEntity, Person, UpsertGridsRequest};
    use proptest::prelude::*;

    /// `text` through both ways: the straight one's bytes, if it takes the
    /// line, and the full parse's verdict.
    fn both<M: Named>(text: &str) -> (Option<Vec<u8>>, Result<Vec<u8>, String>) {
        let straight = super::super::json_wire::JsonToWire::new(&descriptor::<M>());
        (straight.encode(text), encoded_from_str::<M>(text))
    }

    /// A line the straight way takes, the full parse takes too, as the
    /// same message.
    fn agree<M: Named + Default + PartialEq + std::fmt::Debug>(text: &str) -> bool {
        let (straight, full) = both::<M>(text);
        let Some(bytes) = straight else {
            return false;
        };
        let full = full.unwrap_or_else(|e| panic!("taken straight, refused in full ({e}): {text}"));
        assert_eq!(
            M::decode(bytes.as_slice()).expect("the straight bytes decode"),
            M::decode(full.as_slice()).unwrap(),
            "{text}"
        );
        true
    }

    /// A demo district's lines as `govshare import` reads them: persons,
    /// legal entities, the grid dataset's items.
    fn demo_lines() -> &'static (Vec<String>, Vec<String>, Vec<String>) {
        static LINES: std::sync::LazyLock<(Vec<String>, Vec<String>, Vec<String>)> =
            std::sync::LazyLock::new(demo_district_lines);
        &LINES
    }

    fn demo_district_lines() -> (Vec<String>, Vec<String>, Vec<String>) {
        let d = crate::demo::generate(7, 400);
        let lines = |v: Vec<serde_json::Value>| v.iter().map(|v| v.to_string()).collect();
        let items = d
            .regions
            .iter()
            .cloned()
            .map(crate::proto::upsert_grids_request::Item::Region)
            .chain(
                d.grids
                    .iter()
                    .cloned()
                    .map(crate::proto::upsert_grids_request::Item::Grid),
            )
            .chain(
                d.workers
                    .iter()
                    .cloned()
                    .map(crate::proto::upsert_grids_request::Item::Worker),
            )
            .map(|i| to_value(&UpsertGridsRequest { item: Some(i) }))
            .collect();
        (
            lines(d.persons.iter().map(to_value).collect()),
            lines(d.entities.iter().map(to_value).collect()),
            lines(items),
        )
    }

    #[test]
    fn every_line_an_import_writes_goes_straight_to_the_bytes_the_full_parse_makes() {
        let (persons, entities, grids) = demo_lines();
        assert!(!persons.is_empty() && !entities.is_empty() && !grids.is_empty());
        assert!(persons.iter().all(|l| agree::<Person>(l)));
        assert!(entities.iter().all(|l| agree::<LegalEntity>(l)));
        assert!(grids.iter().all(|l| agree::<UpsertGridsRequest>(l)));
    }

    #[test]
    fn a_line_the_straight_way_does_not_take_is_judged_by_the_full_parse() {
        let person = r#""idNumber":"310115198508310931""#;
        // Taken straight, as the full parse reads them.
        assert!(agree::<Person>(
            r#"{"id_number":"3","residence_status":"RESIDENCE_STATUS_MATCHED"}"#
        ));
        for fields in [
            r#""sex":"SEX_MALE""#,
            r#""version":"7""#,
            r#""version":7"#,
            r#""deceased":{"deceased":true,"date":"2020-01-01"},"tags":{"items":[{"code":"a"},{"code":"b"}]}"#,
            r#""name":"\u5f20\"x\"""#,
        ] {
            assert!(
                agree::<Person>(&format!("{{{person},{fields}}}")),
                "{fields}"
            );
        }
        // Left to the full parse, whatever it decides.
        for fields in [
            r#""views":{}"#,
            r#""updatedAt":"2026-01-01T00:00:00Z""#,
            r#""phone":null"#,
            r#""idNumber":"1""#,
            r#""id_number":"1""#,
            r#""sex":1"#,
            r#""sex":"SEX_NEITHER""#,
            r#""version":"-0""#,
            r#""version":-1"#,
            r#""version":1.0"#,
            r#""version":"+1 ""#,
            r#""unknown":1"#,
            r#""tags":{"items":[{"code":"a","code":"b"}]}"#,
            r#""name":7"#,
            r#""deceased":[]"#,
        ] {
            let line = format!("{{{person},{fields}}}");
            assert_eq!(both::<Person>(&line).0, None, "{line}");
        }
        for line in ["", "[]", "{", r#"{"name":"a"} x"#, "null"] {
            assert_eq!(both::<Person>(line).0, None, "{line}");
        }
        // Two members of one oneof.
        let two = r#"{"region":{"code":"1"},"grid":{"gridCode":"2"}}"#;
        let (straight, full) = both::<UpsertGridsRequest>(two);
        assert_eq!(straight, None);
        assert!(full.is_err());
        // Doubles, from a fraction and from a whole number, in nested lists.
        assert!(agree::<UpsertGridsRequest>(
            r#"{"grid":{"gridCode":"1","areaM2":12.5,"boundary":{"rings":[{"points":[{"lon":121.5,"lat":31}]}]}}}"#
        ));
    }

    /// A JSON value of any plain or unplain shape.
    fn any_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::{Value, json};
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("JSON numbers are finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "[-+]?[0-9]{0,21}".prop_map(Value::String),
            "(SEX|RESIDENCE_STATUS|POPULATION_TYPE)_[A-Z]{0,10}".prop_map(Value::String),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::Array),
                prop::collection::vec(("[a-zA-Z_]{1,12}", inner), 0..3)
                    .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Any field of a real line given any value (or a new field): what
        /// the straight way takes, the full parse takes as the same message.
        #[test]
        fn whatever_the_straight_way_takes_the_full_parse_takes_alike(
            pick in any::<prop::sample::Index>(),
            value in any_value(),
            rename in any::<bool>(),
        ) {
            let (persons, _, grids) = demo_lines();
            for line in [&persons[pick.index(persons.len())], &grids[pick.index(grids.len())]] {
                let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
                let object = v.as_object_mut().unwrap();
                // The line's own field names and the proto's, and a few
                // beside them.
                let names: Vec<String> = object.keys().cloned().chain(
                    ["id_number", "version", "views", "updatedAt", "tags", "deceased", "grid", "region", "areaM2", "x"]
                        .map(String::from)).collect();
                let name = names[pick.index(names.len())].clone();
                object.insert(if rename { name.to_uppercase() } else { name }, value.clone());
                let text = v.to_string();
                if line.starts_with("{\"grid\"") || line.starts_with("{\"region\"") || line.starts_with("{\"worker\"") {
                    agree::<UpsertGridsRequest>(&text);
                } else {
                    agree::<Person>(&text);
                }
            }
        }
    }
}
