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

/// [`encoded_from_value`] straight from one JSON text: no
/// `serde_json::Value` in between (an import parses millions of lines). A
/// line that is not JSON at all says so.
pub fn encoded_from_str<M: Named>(text: &str) -> Result<Vec<u8>, String> {
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
