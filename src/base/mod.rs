//! The base everything stands on: the wall clock, canonical JSON of the
//! protobuf messages, bounded echoes of caller input, owner-only files, the
//! notes a request leaves for its log line, and the sink log lines go
//! through. Nothing here imports anything else of the crate but `proto`.

pub mod clock;
pub mod files;
pub mod log_sink;
pub mod request_log;
pub mod text;
