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

/// Parses a message from proto3 JSON (field names as in the proto or in
/// lowerCamelCase), refusing unknown fields.
pub fn from_value<M: Named + Default>(v: serde_json::Value) -> Result<M, String> {
    let desc = POOL
        .get_message_by_name(M::NAME)
        .expect("a message of this build");
    let dm = DynamicMessage::deserialize(desc, v).map_err(|e| e.to_string())?;
    dm.transcode_to::<M>().map_err(|e| e.to_string())
}
