//! govshare — a cross-department data-sharing gateway: collect once, use
//! many times. See README.md and `docs/`.
//!
//! The planes, lowest first; a module imports only from planes below it
//! (`tests/architecture.rs` keeps the order):

// The base: generated protobuf types and their codec, the clock, JSON,
// bounded echoes of caller input, owner-only files.
pub mod base;
pub mod proto;
// Bytes and keys: the `Backend` trait and the embedded sled store.
pub mod store;
// The shared datasets (records, catalog, validation, masks, codes) and the
// audit log (write side, read side, witness); neither imports the other.
pub mod audit;
pub mod datasets;
// The control plane: departments, credentials, grants and how they judge;
// and snapshots of the whole (store, log, keys), which never import it.
pub mod control;
pub mod snapshot;
// Certificate + token -> Principal.
pub mod auth;
// authorize -> fetch -> mask -> audit -> release: the only road to the wire.
pub mod pipeline;
// Thin gRPC adapters over the pipeline.
pub mod services;
// Listeners, the call guard, ops endpoints, the control socket.
pub mod transport;
// The top: configuration, the assembly that wires the planes, and tools.
pub mod bench;
pub mod client;
pub mod config;
pub mod demo;
pub mod fuzzing;
pub mod gateway;
