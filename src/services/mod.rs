//! gRPC handlers, thin adapters over the pipeline. The three data services
//! share one generic path ([`data`]); publishing, administration and the
//! audit log's read side have their own.

pub mod admin;
pub mod audit;
pub mod corrections;
pub mod data;
pub mod grid;
pub mod legal_entity;
pub mod population;
pub mod publish;
pub mod resident;
