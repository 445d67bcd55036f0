//! The transport: the gRPC listener's accept loop (TLS, TCP_NODELAY,
//! handshake and idle timeouts, the connection cap), the guard every call
//! passes (load shedding, size limits, the request log line, metrics), the
//! plain-HTTP ops endpoints, the auditors' console (HTTPS), and the local
//! control socket.

pub mod console;
pub mod control_socket;
pub mod guard;
pub mod listener;
pub mod ops;
