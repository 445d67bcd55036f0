//! Storage. `Backend` is the small key-value contract a shared store must
//! meet so several stateless gateway nodes can run over it; `Store` is the
//! typed layer the gateway uses (records with their grid index, departments,
//! certificates, grants, revoked tokens, signing keys).

mod sled_backend;

use crate::proto::{self, storage};
use crate::records::Record;
use anyhow::{Context, Result};
use prost::Message;
use std::path::Path;
use std::sync::Arc;

pub use sled_backend::SledBackend;

/// What an indexed upsert writes: the new value and the index entry move.
pub struct IndexedWrite {
    pub value: Vec<u8>,
    pub old_index: Option<Vec<u8>>,
    pub new_index: Vec<u8>,
}

/// A key-value store with ordered trees and one atomic multi-tree operation.
pub trait Backend: Send + Sync + 'static {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<()>;
    fn remove(&self, tree: &str, key: &[u8]) -> Result<()>;
    /// Entries whose key starts with `prefix` and is strictly greater than
    /// `after`, in key order, at most `limit`.
    fn scan(
        &self,
        tree: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Reads the current value of `key`, lets `update` compute the new value
    /// and index move, and applies record and index atomically.
    fn upsert_indexed(
        &self,
        tree: &str,
        index: &str,
        key: &[u8],
        update: &mut dyn FnMut(Option<&[u8]>) -> Result<IndexedWrite>,
    ) -> Result<()>;
    /// Atomically adds `delta` to a little-endian u64 counter; returns the new value.
    fn add(&self, tree: &str, key: &[u8], delta: u64) -> Result<u64>;
    /// Entries under `prefix` strictly below `before`, in descending key order.
    fn scan_rev(
        &self,
        tree: &str,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Applies puts (`Some`) and removes (`None`) to one tree atomically.
    fn apply_batch(&self, tree: &str, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()>;
    /// Makes every write so far durable.
    fn sync(&self) -> Result<()>;
}

const DEPARTMENTS: &str = "departments";
const CERTIFICATES: &str = "certificates";
const GRANTS: &str = "grants";
const REVOKED_TOKENS: &str = "revoked_tokens";
const SIGNING_KEYS: &str = "signing_keys";
const META: &str = "meta";
const ACCESS_REQUESTS: &str = "access_requests";
const QUOTA: &str = "quota";

/// The typed store every component shares.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self {
            backend: Arc::new(SledBackend::open(dir)?),
        })
    }

    // ---- shared records -------------------------------------------------

    pub fn get<R: Record>(&self, key: &str) -> Result<Option<R>> {
        self.backend
            .get(R::COLLECTION, key.as_bytes())?
            .map(|b| R::decode(b.as_slice()).context("decoding a stored record"))
            .transpose()
    }

    /// Inserts or replaces a record, moving its index entry and stamping
    /// `version` (previous + 1) and `updated_at`. Returns what was stored.
    pub fn upsert<R: Record>(&self, mut record: R) -> Result<R> {
        let key = record.key().to_string();
        let mut stored = None;
        self.backend.upsert_indexed(
            R::COLLECTION,
            &index_tree::<R>(),
            key.as_bytes(),
            &mut |old| {
                let old: Option<R> = old.map(R::decode).transpose()?;
                let version = old.as_ref().map_or(0, R::version) + 1;
                record.stamp(version, now_timestamp());
                let write = IndexedWrite {
                    value: record.encode_to_vec(),
                    old_index: old.map(|o| o.index_key()),
                    new_index: record.index_key(),
                };
                stored = Some(record.clone());
                Ok(write)
            },
        )?;
        Ok(stored.expect("update ran"))
    }

    /// Records whose row code starts with `prefix`, in index order, after the
    /// index key `after`. Returns each record with its index key (the cursor).
    pub fn scan<R: Record>(
        &self,
        prefix: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, R)>> {
        let keys = self
            .backend
            .scan(&index_tree::<R>(), prefix.as_bytes(), after, limit)?;
        let mut out = Vec::with_capacity(keys.len());
        for (index_key, _) in keys {
            let key = R::key_from_index(&index_key);
            if let Some(r) = self.get::<R>(key)? {
                out.push((index_key, r));
            }
        }
        Ok(out)
    }

    /// Index keys under `prefix` (no record reads); used for grid counts.
    pub fn index_keys<R: Record>(&self, prefix: &str) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .backend
            .scan(&index_tree::<R>(), prefix.as_bytes(), None, usize::MAX)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    // ---- departments and credentials -----------------------------------

    pub fn department(&self, id: &str) -> Result<Option<proto::Department>> {
        self.get_msg(DEPARTMENTS, id.as_bytes())
    }

    pub fn put_department(&self, d: &proto::Department) -> Result<()> {
        self.put_msg(DEPARTMENTS, d.id.as_bytes(), d)
    }

    pub fn departments(&self) -> Result<Vec<proto::Department>> {
        self.scan_msgs(DEPARTMENTS, b"")
    }

    pub fn certificate(&self, thumbprint: &str) -> Result<Option<proto::RegisteredCertificate>> {
        self.get_msg(CERTIFICATES, thumbprint.as_bytes())
    }

    pub fn put_certificate(&self, c: &proto::RegisteredCertificate) -> Result<()> {
        self.put_msg(CERTIFICATES, c.thumbprint.as_bytes(), c)
    }

    // ---- grants ---------------------------------------------------------

    /// Every grant of a department, read from the store on each call so a
    /// revocation made on any node applies to the next request.
    pub fn grants_of(&self, department: &str) -> Result<Vec<proto::Grant>> {
        self.scan_msgs(GRANTS, &grant_prefix(department))
    }

    pub fn put_grant(&self, g: &proto::Grant) -> Result<()> {
        let mut key = grant_prefix(&g.department);
        key.extend_from_slice(g.id.as_bytes());
        self.put_msg(GRANTS, &key, g)
    }

    /// Every grant of every department (for administrators).
    pub fn all_grants(&self) -> Result<Vec<proto::Grant>> {
        self.scan_msgs(GRANTS, b"")
    }

    pub fn grant(&self, id: &str) -> Result<Option<proto::Grant>> {
        Ok(self.all_grants()?.into_iter().find(|g| g.id == id))
    }

    // ---- access requests ------------------------------------------------

    pub fn access_request(&self, id: &str) -> Result<Option<proto::AccessRequest>> {
        self.get_msg(ACCESS_REQUESTS, id.as_bytes())
    }

    pub fn put_access_request(&self, r: &proto::AccessRequest) -> Result<()> {
        self.put_msg(ACCESS_REQUESTS, r.id.as_bytes(), r)
    }

    pub fn access_requests(&self) -> Result<Vec<proto::AccessRequest>> {
        self.scan_msgs(ACCESS_REQUESTS, b"")
    }

    // ---- quota counters -------------------------------------------------

    /// Adds to a named counter (e.g. records pulled by a department today).
    pub fn add_to_counter(&self, key: &str, delta: u64) -> Result<u64> {
        self.backend.add(QUOTA, key.as_bytes(), delta)
    }

    /// A named counter's value (0 if it was never added to).
    pub fn counter(&self, key: &str) -> Result<u64> {
        Ok(self
            .backend
            .get(QUOTA, key.as_bytes())?
            .and_then(|b| b.as_slice().try_into().ok())
            .map_or(0, u64::from_le_bytes))
    }

    // ---- tokens and keys -----------------------------------------------

    pub fn token_revoked(&self, jti: &str) -> Result<bool> {
        Ok(self.backend.get(REVOKED_TOKENS, jti.as_bytes())?.is_some())
    }

    pub fn revoke_token(&self, r: &storage::RevokedToken) -> Result<()> {
        self.put_msg(REVOKED_TOKENS, r.jti.as_bytes(), r)
    }

    pub fn signing_keys(&self) -> Result<Vec<storage::SigningKey>> {
        self.scan_msgs(SIGNING_KEYS, b"")
    }

    pub fn put_signing_key(&self, k: &storage::SigningKey) -> Result<()> {
        self.put_msg(SIGNING_KEYS, k.kid.as_bytes(), k)
    }

    pub fn remove_signing_key(&self, kid: &str) -> Result<()> {
        self.backend.remove(SIGNING_KEYS, kid.as_bytes())
    }

    // ---- gateway metadata ----------------------------------------------

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.backend.get(META, key.as_bytes())
    }

    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.backend.put(META, key.as_bytes(), value)
    }

    pub fn sync(&self) -> Result<()> {
        self.backend.sync()
    }

    /// The raw trees, for derived indexes that manage their own keys (the
    /// audit log's index).
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    fn get_msg<M: Message + Default>(&self, tree: &str, key: &[u8]) -> Result<Option<M>> {
        self.backend
            .get(tree, key)?
            .map(|b| M::decode(b.as_slice()).with_context(|| format!("decoding {tree} entry")))
            .transpose()
    }

    fn put_msg<M: Message>(&self, tree: &str, key: &[u8], m: &M) -> Result<()> {
        self.backend.put(tree, key, &m.encode_to_vec())
    }

    fn scan_msgs<M: Message + Default>(&self, tree: &str, prefix: &[u8]) -> Result<Vec<M>> {
        self.backend
            .scan(tree, prefix, None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| M::decode(v.as_slice()).with_context(|| format!("decoding {tree} entry")))
            .collect()
    }
}

fn index_tree<R: Record>() -> String {
    format!("{}.by_grid", R::COLLECTION)
}

fn grant_prefix(department: &str) -> Vec<u8> {
    let mut k = department.as_bytes().to_vec();
    k.push(0);
    k
}

pub fn now_timestamp() -> prost_types::Timestamp {
    crate::clock::to_timestamp(crate::clock::now())
}
