//! The typed control plane in the shared store: departments, certificates,
//! tokens, grants, access requests, purposes, signing keys, quota counters.
//!
//! Every control-plane write bumps the **policy epoch**, a counter in the
//! shared store. Each node keeps an in-memory snapshot of the control plane
//! and rebuilds it when the epoch moves, so a revocation made on any node
//! applies to the very next request on every node.

use crate::proto::{self, storage};
use crate::store::Backend;
use anyhow::{Context, Result};
use prost::Message;
use std::sync::Arc;

const DEPARTMENTS: &str = "departments";
const CERTIFICATES: &str = "certificates";
const GRANTS: &str = "grants";
const TOKENS: &str = "tokens";
const SIGNING_KEYS: &str = "signing_keys";
const META: &str = "meta";
const ACCESS_REQUESTS: &str = "access_requests";
const PURPOSES: &str = "purposes";
const QUOTA: &str = "quota";
const CORRECTIONS: &str = "corrections";
const EPOCH_KEY: &[u8] = b"policy.epoch";

/// Where the policy epoch is stored: the row the audit writer fences
/// releases by (`audit::Fence`).
pub const EPOCH_ROW: crate::store::FenceRow = crate::store::FenceRow {
    tree: META,
    key: EPOCH_KEY,
};
const RESTORE_HOLD: &[u8] = b"restore.hold";

fn epoch_of(stored: Option<Vec<u8>>) -> u64 {
    stored
        .and_then(|b| b.as_slice().try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// The typed control plane every component shares.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    /// The backend underneath, whole: what a snapshot copies.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    // ---- the policy epoch -------------------------------------------------

    /// The control plane's version: it moves on every write below.
    pub fn epoch(&self) -> Result<u64> {
        Ok(epoch_of(self.backend.get(META, EPOCH_KEY)?))
    }

    /// [`Store::epoch`] without holding the caller's thread (every call
    /// reads it).
    pub async fn epoch_async(&self) -> Result<u64> {
        // From memory (sled), nothing to wait for: no future to box on
        // every call.
        if self.backend.answers_from_memory() {
            return self.epoch();
        }
        Ok(epoch_of(self.backend.get_async(META, EPOCH_KEY).await?))
    }

    /// The epoch as this process last saw it committed, without asking
    /// the store; `None` where asking costs nothing, or nothing is known
    /// ([`Backend::fence_seen`]: a hint, never proof).
    pub fn epoch_seen(&self) -> Option<u64> {
        self.backend.fence_seen()
    }

    /// Applies a control-plane write and moves the epoch, in one step
    /// (the audit writer's fence waits on it, and no node can hold the
    /// change under the old epoch).
    fn change(&self, tree: &str, key: &[u8], value: Option<Vec<u8>>) -> Result<()> {
        self.backend
            .write_moving_fence(tree, vec![(key.to_vec(), value)], EPOCH_ROW)
            .map(drop)
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

    pub fn certificates(&self) -> Result<Vec<proto::RegisteredCertificate>> {
        self.scan_msgs(CERTIFICATES, b"")
    }

    /// Issued tokens by `jti` (their identity and revocation, never the token).
    pub fn token(&self, jti: &str) -> Result<Option<proto::TokenInfo>> {
        self.get_msg(TOKENS, jti.as_bytes())
    }

    pub fn put_token(&self, t: &proto::TokenInfo) -> Result<()> {
        self.put_msg(TOKENS, t.jti.as_bytes(), t)
    }

    pub fn tokens(&self) -> Result<Vec<proto::TokenInfo>> {
        self.scan_msgs(TOKENS, b"")
    }

    // ---- grants ---------------------------------------------------------

    pub fn put_grant(&self, g: &proto::Grant) -> Result<()> {
        let mut key = grant_prefix(&g.department);
        key.extend_from_slice(g.id.as_bytes());
        self.put_msg(GRANTS, &key, g)
    }

    /// Every grant of one department.
    pub fn grants_of(&self, department: &str) -> Result<Vec<proto::Grant>> {
        self.scan_msgs(GRANTS, &grant_prefix(department))
    }

    /// Every grant of every department.
    pub fn all_grants(&self) -> Result<Vec<proto::Grant>> {
        self.scan_msgs(GRANTS, b"")
    }

    pub fn grant(&self, id: &str) -> Result<Option<proto::Grant>> {
        Ok(self.all_grants()?.into_iter().find(|g| g.id == id))
    }

    // ---- access requests and purposes -----------------------------------

    pub fn access_request(&self, id: &str) -> Result<Option<proto::AccessRequest>> {
        self.get_msg(ACCESS_REQUESTS, id.as_bytes())
    }

    pub fn put_access_request(&self, r: &proto::AccessRequest) -> Result<()> {
        self.put_msg(ACCESS_REQUESTS, r.id.as_bytes(), r)
    }

    pub fn access_requests(&self) -> Result<Vec<proto::AccessRequest>> {
        self.scan_msgs(ACCESS_REQUESTS, b"")
    }

    pub fn purpose(&self, code: &str) -> Result<Option<proto::Purpose>> {
        self.get_msg(PURPOSES, code.as_bytes())
    }

    pub fn put_purpose(&self, p: &proto::Purpose) -> Result<()> {
        self.put_msg(PURPOSES, p.code.as_bytes(), p)
    }

    pub fn purposes(&self) -> Result<Vec<proto::Purpose>> {
        self.scan_msgs(PURPOSES, b"")
    }

    // ---- corrections ----------------------------------------------------

    /// Corrections are a workflow, not access: writing one does not move
    /// the policy epoch (nothing any node judges by changes).
    pub fn put_correction(&self, c: &proto::Correction) -> Result<()> {
        self.backend
            .put(CORRECTIONS, c.id.as_bytes(), &c.encode_to_vec())
    }

    pub fn correction(&self, id: &str) -> Result<Option<proto::Correction>> {
        self.get_msg(CORRECTIONS, id.as_bytes())
    }

    pub fn corrections(&self) -> Result<Vec<proto::Correction>> {
        self.scan_msgs(CORRECTIONS, b"")
    }

    // ---- quota counters -------------------------------------------------

    /// Reserves up to `want` of what a counter may still take below
    /// `limit`, atomically: parallel callers can never take more than the
    /// limit together. Returns how many were reserved (possibly 0).
    pub fn reserve(&self, key: &str, want: u64, limit: u64) -> Result<u64> {
        let (old, new) = self
            .backend
            .update_counter(QUOTA, key.as_bytes(), &mut |used| {
                used.max(limit.min(used.saturating_add(want)))
            })?;
        Ok(new - old)
    }

    /// Gives back `n` reserved but unused units.
    pub fn release(&self, key: &str, n: u64) -> Result<()> {
        self.backend
            .update_counter(QUOTA, key.as_bytes(), &mut |used| used.saturating_sub(n))
            .map(|_| ())
    }

    /// A counter's value (0 if it was never used).
    pub fn counter(&self, key: &str) -> Result<u64> {
        Ok(self
            .backend
            .get(QUOTA, key.as_bytes())?
            .and_then(|b| b.as_slice().try_into().ok())
            .map_or(0, u64::from_le_bytes))
    }

    // ---- token-signing keys ----------------------------------------------

    pub fn signing_keys(&self) -> Result<Vec<storage::SigningKey>> {
        self.scan_msgs(SIGNING_KEYS, b"")
    }

    pub fn put_signing_key(&self, k: &storage::SigningKey) -> Result<()> {
        self.put_msg(SIGNING_KEYS, k.kid.as_bytes(), k)
    }

    pub fn remove_signing_key(&self, kid: &str) -> Result<()> {
        self.change(SIGNING_KEYS, kid.as_bytes(), None)
    }

    // ---- a restore awaiting confirmation ----------------------------------

    /// Set by a restore: the gateway releases no data until an
    /// administrator confirms. Moves the epoch, so every node sees it.
    pub fn restore_hold(&self) -> Result<Option<storage::RestoreHold>> {
        self.get_msg(META, RESTORE_HOLD)
    }

    pub fn put_restore_hold(&self, h: &storage::RestoreHold) -> Result<()> {
        self.put_msg(META, RESTORE_HOLD, h)
    }

    pub fn clear_restore_hold(&self) -> Result<()> {
        self.change(META, RESTORE_HOLD, None)
    }

    // ---- gateway metadata ----------------------------------------------

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.backend.get(META, key.as_bytes())
    }

    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.backend.put(META, key.as_bytes(), value)
    }

    /// Records `value` at `key` unless something is recorded there; returns
    /// what is recorded now. Of processes racing, one value wins.
    pub fn claim_meta(&self, key: &str, value: &[u8]) -> Result<Vec<u8>> {
        self.backend.put_if_absent(META, key.as_bytes(), value)
    }

    pub fn sync(&self) -> Result<()> {
        self.backend.sync()
    }

    fn get_msg<M: Message + Default>(&self, tree: &str, key: &[u8]) -> Result<Option<M>> {
        self.backend
            .get(tree, key)?
            .map(|b| M::decode(b.as_slice()).with_context(|| format!("decoding {tree} entry")))
            .transpose()
    }

    /// Writes one control-plane object and moves the policy epoch.
    fn put_msg<M: Message>(&self, tree: &str, key: &[u8], m: &M) -> Result<()> {
        self.change(tree, key, Some(m.encode_to_vec()))
    }

    fn scan_msgs<M: Message + Default>(&self, tree: &str, prefix: &[u8]) -> Result<Vec<M>> {
        self.backend
            .scan(tree, prefix, None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| M::decode(v.as_slice()).with_context(|| format!("decoding {tree} entry")))
            .collect()
    }
}

fn grant_prefix(department: &str) -> Vec<u8> {
    let mut k = department.as_bytes().to_vec();
    k.push(0);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_reservations_never_exceed_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(crate::store::open_dir(dir.path()).unwrap());
        let taken: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    s.spawn(|| {
                        (0..50)
                            .map(|_| store.reserve("q", 7, 1000).unwrap())
                            .sum::<u64>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(taken, 1000);
        assert_eq!(store.counter("q").unwrap(), 1000);
        store.release("q", 5).unwrap();
        assert_eq!(store.reserve("q", 7, 1000).unwrap(), 5);
    }

    #[test]
    fn every_control_write_moves_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(crate::store::open_dir(dir.path()).unwrap());
        let e0 = store.epoch().unwrap();
        store
            .put_department(&proto::Department {
                id: "x".into(),
                ..Default::default()
            })
            .unwrap();
        assert!(store.epoch().unwrap() > e0);
    }
}
