//! Snapshots: a running gateway copied whole — its store, its log up to a
//! checkpoint, the keys it signs with — into one file encrypted to the
//! operator's backup recipients (the age format), with a manifest the log
//! key signs. `govshare snapshot save` streams one over the admin API;
//! `inspect` checks one; `restore` checks it, writes a new data dir from
//! it, and starts the log's next generation there
//! ([`crate::audit::generation`]).
//!
//! Threats: a snapshot holds every resident's record. It is encrypted to
//! the recipients in the operator's configuration, never to a key the
//! caller names, so an administrator cannot take the population home; it
//! never exists in plaintext on disk; taking one is an `ADMIN` entry made
//! durable before a byte leaves. Anyone holding a recipient's public key can
//! make a file that decrypts — so `restore` trusts nothing before checking
//! every part against the manifest, the manifest against the log key, and
//! the entries against the checkpoint; `--public-key` pins the log key to
//! the one the operator knows, instead of the one the file carries.

pub mod format;
pub mod manifest;
pub mod read;
pub mod restore;
pub mod take;

pub use manifest::Manifest;
pub use read::{Checked, Discard, Sink, identity, read};
pub use take::{Taken, Taker};
