//! Generated protobuf messages and gRPC services (`govshare.v1`, and
//! `govshare.v2`, which packs each record's views).

#![allow(clippy::all, missing_docs)]

/// The packages as prost lays them out, so cross-package paths resolve.
mod packages {
    pub mod govshare {
        pub mod v1 {
            tonic::include_proto!("govshare.v1");
        }
        pub mod v2 {
            tonic::include_proto!("govshare.v2");
        }
        pub mod storage {
            pub mod v1 {
                tonic::include_proto!("govshare.storage.v1");
            }
        }
    }
}

pub mod codec;
pub mod json;
mod json_wire;
pub mod packed;
pub mod wire;

pub use packages::govshare::v1::*;

/// `govshare.v2`: the v1 records with their views packed by field number.
pub mod v2 {
    pub use super::packages::govshare::v2::*;
    use super::packed::RecordView;

    /// `govshare.v2.Person`: a person's released fields, as encoded.
    pub type Person = RecordView<super::Person>;
    /// `govshare.v2.LegalEntity`.
    pub type LegalEntity = RecordView<super::LegalEntity>;
    /// `govshare.v2.Grid`.
    pub type Grid = RecordView<super::Grid>;
    /// `govshare.v2.GridWorker`.
    pub type GridWorker = RecordView<super::GridWorker>;
}

/// Internal storage messages (never on the public wire).
pub mod storage {
    pub use super::packages::govshare::storage::v1::*;
}

/// The compiled descriptor set, served through gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/govshare_descriptor.bin"));
