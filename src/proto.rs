//! Generated protobuf messages and gRPC services (`govshare.v1`).

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("govshare.v1");

/// Internal storage messages (never on the public wire).
pub mod storage {
    tonic::include_proto!("govshare.storage.v1");
}

/// The compiled descriptor set, served through gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/govshare_descriptor.bin"));
