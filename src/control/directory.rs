//! The control plane in memory: who is registered, what they hold, and what
//! the catalog in force lets them see.
//!
//! Authenticating and authorizing from the store on every call cost a
//! handful of store reads per pull. Instead each node keeps a [`Snapshot`]
//! — certificates, departments, revoked tokens, the token-verifying keys,
//! grants compiled against the catalog, purposes — tagged with the policy
//! epoch it was loaded at. Every control-plane write moves the epoch, so a
//! revocation, suspension or grant change made on any node is seen by the
//! very next request on every node: most calls read the epoch (one small
//! read, from memory on the embedded store); a data pull over a shared
//! store judges under the snapshot held while nothing says the epoch moved
//! ([`Directory::held`]), because its audit write reads the epoch anyway
//! and refuses a release judged under an older one. Expiry needs no
//! invalidation: validity times are checked against the clock on each
//! call.

use crate::control::authz::CompiledGrant;
use crate::control::roles::RoleDepartments;
use crate::control::store::Store;
use crate::datasets::catalog::Catalog;
use crate::proto::storage::{RestoreHold, SigningKey};
use crate::proto::{AccessRequestStatus, Department, Purpose, RegisteredCertificate};
use anyhow::{Context, Result};
use ed25519_dalek::pkcs8::{EncodePublicKey, spki::der::pem::LineEnding};
use jsonwebtoken::DecodingKey;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

/// One consistent view of the control plane.
pub struct Snapshot {
    epoch: u64,
    certificates: HashMap<String, RegisteredCertificate>,
    departments: HashMap<String, Department>,
    revoked_tokens: HashSet<String>,
    grants: HashMap<String, Vec<Arc<CompiledGrant>>>,
    purposes: HashMap<String, Purpose>,
    /// Token-verifying public keys by `kid`, each with the end of its
    /// verifying life (unix seconds) once it was rotated out.
    verifying: HashMap<String, (DecodingKey, Option<i64>)>,
    /// A restore not yet confirmed by an administrator.
    restore_hold: Option<RestoreHold>,
}

/// A stored signing key's public half, as jsonwebtoken verifies with it.
fn decoding_key(k: &SigningKey) -> Result<DecodingKey> {
    let vk = ed25519_dalek::VerifyingKey::from_bytes(
        k.public_key
            .as_slice()
            .try_into()
            .context("a signing key's public key has the wrong length")?,
    )?;
    let pem = vk
        .to_public_key_pem(LineEnding::LF)
        .context("encoding a public key")?;
    Ok(DecodingKey::from_ed_pem(pem.as_bytes())?)
}

impl Snapshot {
    fn load(store: &Store, catalog: &Catalog, epoch: u64) -> Result<Self> {
        let approved: HashSet<String> = store
            .access_requests()?
            .into_iter()
            // An auto-approval is not an approval: it only ever covered
            // views that were unconditional when it was made.
            .filter(|r| r.status == AccessRequestStatus::Approved as i32 && !r.auto_approved)
            .map(|r| r.id)
            .collect();
        let departments: HashMap<String, Department> = store
            .departments()?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        let mut grants: HashMap<String, Vec<Arc<CompiledGrant>>> = HashMap::new();
        for g in store.all_grants()? {
            let department = g.department.clone();
            let jurisdiction = departments
                .get(&department)
                .map_or(&[][..], |d| d.jurisdiction.as_slice());
            if let Some(c) = CompiledGrant::compile(g, catalog, &approved, jurisdiction) {
                grants.entry(department).or_default().push(Arc::new(c));
            }
        }
        Ok(Self {
            epoch,
            certificates: store
                .certificates()?
                .into_iter()
                .map(|c| (c.thumbprint.clone(), c))
                .collect(),
            departments,
            revoked_tokens: store
                .tokens()?
                .into_iter()
                .filter(|t| t.revoked)
                .map(|t| t.jti)
                .collect(),
            grants,
            purposes: store
                .purposes()?
                .into_iter()
                .map(|p| (p.code.clone(), p))
                .collect(),
            verifying: store
                .signing_keys()?
                .iter()
                .map(|k| {
                    Ok((
                        k.kid.clone(),
                        (decoding_key(k)?, k.verify_until.map(|t| t.seconds)),
                    ))
                })
                .collect::<Result<_>>()?,
            restore_hold: store.restore_hold()?,
        })
    }

    /// The policy epoch this snapshot was loaded at: what a call judged on
    /// it is fenced by (`audit::Fence`).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The restore this gateway awaits confirmation of, if any: until then
    /// it releases no data.
    pub fn restore_hold(&self) -> Option<&RestoreHold> {
        self.restore_hold.as_ref()
    }

    pub fn certificate(&self, thumbprint: &str) -> Option<&RegisteredCertificate> {
        self.certificates.get(thumbprint)
    }

    /// Every registered department's id.
    pub fn department_ids(&self) -> impl Iterator<Item = &str> {
        self.departments.keys().map(String::as_str)
    }

    pub fn department(&self, id: &str) -> Option<&Department> {
        self.departments.get(id)
    }

    /// The key `kid` names, if it still verifies at `now`.
    pub fn verifying_key(&self, kid: &str, now: i64) -> Option<&DecodingKey> {
        self.verifying
            .get(kid)
            .filter(|(_, until)| until.is_none_or(|u| u >= now))
            .map(|(k, _)| k)
    }

    pub fn token_revoked(&self, jti: &str) -> bool {
        self.revoked_tokens.contains(jti)
    }

    /// A department's grants, compiled against the catalog in force.
    pub fn grants_of(&self, department: &str) -> &[Arc<CompiledGrant>] {
        self.grants.get(department).map_or(&[], Vec::as_slice)
    }

    /// The longest disclosure delay among a department's grants on a
    /// dataset. A refused call is withheld from the resident tracker this
    /// long, whichever grant it came closest to — or none, when it was
    /// refused before any was judged: a covert department's refusals tip a
    /// resident off as surely as its answered pulls.
    pub fn longest_delay(&self, department: &str, dataset: crate::datasets::Dataset) -> u32 {
        self.grants_of(department)
            .iter()
            .filter(|g| g.dataset() == dataset)
            .map(|g| g.delay_days())
            .max()
            .unwrap_or(0)
    }

    /// The purpose registry, by code.
    pub fn purposes(&self) -> &HashMap<String, Purpose> {
        &self.purposes
    }
}

/// The node's snapshot, reloaded whenever the policy epoch moves.
pub struct Directory {
    store: Store,
    catalog: Arc<Catalog>,
    roles: RoleDepartments,
    current: RwLock<Arc<Snapshot>>,
    reloading: Mutex<()>,
}

impl Directory {
    pub fn new(store: Store, catalog: Arc<Catalog>, roles: RoleDepartments) -> Result<Self> {
        let epoch = store.epoch()?;
        let first = Snapshot::load(&store, &catalog, epoch)?;
        Ok(Self {
            store,
            catalog,
            roles,
            current: RwLock::new(Arc::new(first)),
            reloading: Mutex::new(()),
        })
    }

    /// The snapshot as of now: never older than the last control-plane
    /// write that completed before this call.
    pub fn current(&self) -> Result<Arc<Snapshot>> {
        self.at(self.store.epoch()?)
    }

    /// [`Directory::current`] for a call on the async runtime: the epoch is
    /// read without holding a runtime thread.
    pub async fn fresh(&self) -> Result<Arc<Snapshot>> {
        self.at(self.store.epoch_async().await?)
    }

    /// The snapshot this node holds, when nothing says the policy has
    /// moved since ([`Store::epoch_seen`]): no round trip to a shared
    /// store. Only for a call whose release is fenced by the epoch in its
    /// audit write, which catches a move this node had not heard of yet
    /// and has the call judged again, and whose refusals are checked again
    /// under [`Directory::fresh`] (a grant made elsewhere a moment ago must
    /// not be refused). Elsewhere, [`Directory::fresh`].
    pub async fn held(&self) -> Result<Arc<Snapshot>> {
        if let Some(seen) = self.store.epoch_seen() {
            let s = self.current.read().expect("snapshot lock").clone();
            if s.epoch == seen {
                return Ok(s);
            }
        }
        self.fresh().await
    }

    /// The snapshot of `epoch`, just read from the store: the one held, or
    /// one loaded now.
    fn at(&self, epoch: u64) -> Result<Arc<Snapshot>> {
        {
            let s = self.current.read().expect("snapshot lock");
            if s.epoch == epoch {
                return Ok(s.clone());
            }
        }
        // One reload at a time; whoever waited finds it done.
        let _one = self.reloading.lock().expect("reload lock");
        {
            let s = self.current.read().expect("snapshot lock");
            if s.epoch == epoch {
                return Ok(s.clone());
            }
        }
        // Read after the epoch: the data is at least as new as `epoch`.
        let fresh = Arc::new(Snapshot::load(&self.store, &self.catalog, epoch)?);
        *self.current.write().expect("snapshot lock") = fresh.clone();
        Ok(fresh)
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn roles(&self) -> &RoleDepartments {
        &self.roles
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Backend, FenceRow, Placed, PlacedUpdate};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    type Rows = Vec<(Vec<u8>, Vec<u8>)>;

    /// The embedded store, counting reads of the policy epoch, with the
    /// epoch "seen" (as a shared store's announcements would tell it) set
    /// by the test.
    struct Counting {
        inner: Arc<dyn Backend>,
        epoch_reads: AtomicUsize,
        seen: AtomicU64,
    }

    impl Counting {
        fn count(&self, tree: &str, key: &[u8]) {
            let row = crate::control::store::EPOCH_ROW;
            if tree == row.tree && key == row.key {
                self.epoch_reads.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    impl Backend for Counting {
        fn get(&self, tree: &str, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
            self.count(tree, key);
            self.inner.get(tree, key)
        }
        fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
            self.inner.put(tree, key, value)
        }
        fn remove(&self, tree: &str, key: &[u8]) -> anyhow::Result<()> {
            self.inner.remove(tree, key)
        }
        fn scan(&self, t: &str, p: &[u8], a: Option<&[u8]>, l: usize) -> anyhow::Result<Rows> {
            self.inner.scan(t, p, a, l)
        }
        fn upsert_placed(
            &self,
            trees: Placed,
            keys: &[crate::store::PlacedKey<'_>],
            update: &mut PlacedUpdate<'_>,
        ) -> anyhow::Result<()> {
            self.inner.upsert_placed(trees, keys, update)
        }
        fn update_counter(
            &self,
            tree: &str,
            key: &[u8],
            f: &mut dyn FnMut(u64) -> u64,
        ) -> anyhow::Result<(u64, u64)> {
            self.inner.update_counter(tree, key, f)
        }
        fn scan_rev(&self, t: &str, p: &[u8], b: Option<&[u8]>, l: usize) -> anyhow::Result<Rows> {
            self.inner.scan_rev(t, p, b, l)
        }
        fn put_if_absent(&self, tree: &str, key: &[u8], value: &[u8]) -> anyhow::Result<Vec<u8>> {
            self.inner.put_if_absent(tree, key, value)
        }
        fn apply_batch(
            &self,
            tree: &str,
            writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        ) -> anyhow::Result<()> {
            self.inner.apply_batch(tree, writes)
        }
        fn sync(&self) -> anyhow::Result<()> {
            self.inner.sync()
        }
        fn trees(&self) -> anyhow::Result<Vec<String>> {
            self.inner.trees()
        }
        fn write_moving_fence(
            &self,
            tree: &str,
            writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
            fence: FenceRow,
        ) -> anyhow::Result<u64> {
            self.inner.write_moving_fence(tree, writes, fence)
        }
        fn fence_seen(&self) -> Option<u64> {
            Some(self.seen.load(Ordering::SeqCst)).filter(|s| *s != u64::MAX)
        }
    }

    /// Over a shared store, a data pull's snapshot costs no read of the
    /// epoch while the node has heard of no move; a move heard of (or no
    /// value known at all) makes the next call read the epoch and reload.
    #[tokio::test]
    async fn a_held_snapshot_is_served_without_a_read_until_a_move_is_heard_of() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(Counting {
            inner: crate::store::open_dir(dir.path()).unwrap(),
            epoch_reads: AtomicUsize::new(0),
            seen: AtomicU64::new(u64::MAX),
        });
        let store = Store::new(backend.clone());
        let directory = Directory::new(
            store.clone(),
            Arc::new(Catalog::with_overrides(&[]).unwrap()),
            RoleDepartments {
                admin: Vec::new(),
                auditor: Vec::new(),
                resident_portal: Vec::new(),
            },
        )
        .unwrap();
        let reads = || backend.epoch_reads.load(Ordering::SeqCst);

        // Nothing heard: the epoch is read, as for every other call.
        let before = reads();
        directory.held().await.unwrap();
        assert_eq!(reads(), before + 1);

        // Heard of the epoch held: no read, the same snapshot.
        let epoch = store.epoch().unwrap();
        backend.seen.store(epoch, Ordering::SeqCst);
        let before = reads();
        let (a, b) = (
            directory.held().await.unwrap(),
            directory.held().await.unwrap(),
        );
        assert_eq!(reads(), before, "a held snapshot read the epoch");
        assert!(Arc::ptr_eq(&a, &b));

        // A move heard of: read and reloaded, the change in it.
        store
            .put_department(&crate::proto::Department {
                id: "new-office".into(),
                ..Default::default()
            })
            .unwrap();
        backend.seen.store(store.epoch().unwrap(), Ordering::SeqCst);
        let before = reads();
        let now = directory.held().await.unwrap();
        assert_eq!(reads(), before + 1);
        assert!(now.epoch() > a.epoch());
        assert!(now.department_ids().any(|d| d == "new-office"));
        // And [`Directory::fresh`] always reads.
        let before = reads();
        directory.fresh().await.unwrap();
        assert_eq!(reads(), before + 1);
    }
}
