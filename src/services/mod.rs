//! gRPC handlers. Data handlers are thin: they describe the request, call the
//! pipeline, and shape the released records into the response.

pub mod admin;
pub mod audit;
mod common;
pub mod grid;
pub mod legal_entity;
pub mod population;
pub mod publish;
