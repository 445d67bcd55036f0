//! The control plane: who is registered, what they were granted, and the
//! rules grants are made and judged by.

pub mod authz;
pub mod certs;
pub mod directory;
pub mod enrol;
pub mod keys;
pub mod limits;
pub mod policy;
pub mod roles;
pub mod store;
