//! The shared datasets: their record types, field catalog, validation,
//! masking, the codes their keys are made of, and the geometry that locates
//! a grid.

pub mod catalog;
pub mod codes;
pub mod geo;
pub mod mask;
pub mod records;
pub mod validate;
