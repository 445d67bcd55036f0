//! Compiles `proto/govshare/{v1,v2}/*.proto` with the pure-Rust `protox` compiler,
//! so no system `protoc` is needed, then generates prost messages and tonic
//! services. The descriptor set is kept for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut files = Vec::new();
    for dir in ["proto/govshare/v1", "proto/govshare/v2"] {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|x| x == "proto") {
                files.push(path);
            }
        }
    }
    files.sort();
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(&files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("govshare_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // BTreeMap keeps encoding deterministic, which the audit log hashes.
        .btree_map(".")
        // Undecodable bodies are INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::proto::codec::StrictCodec")
        // v2's record messages hold the projector's encoding, sent as it
        // is (src/proto/packed.rs); the wire format is the proto's.
        .extern_path(".govshare.v2.Person", "crate::proto::v2::Person")
        .extern_path(".govshare.v2.LegalEntity", "crate::proto::v2::LegalEntity")
        .extern_path(".govshare.v2.Grid", "crate::proto::v2::Grid")
        .extern_path(".govshare.v2.GridWorker", "crate::proto::v2::GridWorker")
        .compile_fds(fds)?;
    Ok(())
}
