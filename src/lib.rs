//! govshare — a cross-department data-sharing gateway: collect once, use
//! many times. See README.md and `../shared/design/`.
//!
//! Every data RPC goes through [`pipeline`]: authenticate → authorize →
//! fetch → mask → audit → respond.

pub mod audit;
pub mod auth;
pub mod authz;
pub mod bench;
pub mod bootstrap;
pub mod catalog;
pub mod certs;
pub mod client;
pub mod clock;
pub mod codec;
pub mod config;
pub mod control;
pub mod demo;
pub mod directory;
pub mod domain;
pub mod fuzzing;
pub mod geo;
pub mod json;
pub mod limits;
pub mod mask;
pub mod page_token;
pub mod pipeline;
pub mod pki;
pub mod policy;
pub mod proto;
pub mod records;
pub mod request_log;
pub mod server;
pub mod services;
pub mod store;
pub mod validate;
pub mod witness;
