//! The control plane in memory: who is registered, what they hold, and what
//! the catalog in force lets them see.
//!
//! Authenticating and authorizing from the store on every call cost a
//! handful of store reads per pull. Instead each node keeps a [`Snapshot`]
//! — certificates, departments, revoked tokens, grants compiled against the
//! catalog, purposes — and checks the store's policy epoch on every call:
//! one small read. Every control-plane write moves the epoch, so a
//! revocation, suspension or grant change made on any node is seen by the
//! very next request on every node. Expiry needs no invalidation: validity
//! times are checked against the clock on each call.

use crate::auth::Role;
use crate::control::authz::CompiledGrant;
use crate::control::store::Store;
use crate::datasets::catalog::Catalog;
use crate::proto::{AccessRequestStatus, Department, Purpose, RegisteredCertificate};
use anyhow::Result;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

/// Which departments may hold the privileged roles (config
/// `admin_departments`, `auditor_departments`).
#[derive(Debug, Clone)]
pub struct RoleDepartments {
    pub admin: Vec<String>,
    pub auditor: Vec<String>,
}

impl RoleDepartments {
    /// Whether a token of `department` may carry `role`. Pulling and
    /// publishing are bounded by grants and the catalog instead.
    pub fn allows(&self, department: &str, role: Role) -> bool {
        match role {
            Role::Admin => self.admin.iter().any(|d| d == department),
            Role::Auditor => self.auditor.iter().any(|d| d == department),
            Role::Puller | Role::Publisher => true,
        }
    }
}

/// One consistent view of the control plane.
pub struct Snapshot {
    epoch: u64,
    certificates: HashMap<String, RegisteredCertificate>,
    departments: HashMap<String, Department>,
    revoked_tokens: HashSet<String>,
    grants: HashMap<String, Vec<Arc<CompiledGrant>>>,
    purposes: HashMap<String, Purpose>,
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
        })
    }

    pub fn certificate(&self, thumbprint: &str) -> Option<&RegisteredCertificate> {
        self.certificates.get(thumbprint)
    }

    pub fn department(&self, id: &str) -> Option<&Department> {
        self.departments.get(id)
    }

    pub fn token_revoked(&self, jti: &str) -> bool {
        self.revoked_tokens.contains(jti)
    }

    /// A department's grants, compiled against the catalog in force.
    pub fn grants_of(&self, department: &str) -> &[Arc<CompiledGrant>] {
        self.grants.get(department).map_or(&[], Vec::as_slice)
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
        let epoch = self.store.epoch()?;
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
