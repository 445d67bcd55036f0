//! First start. In demo mode (the embedded default): the dev PKI, the demo
//! departments with jurisdictions, certificates, registered tokens, the
//! purposes they cite and their grants (each with an approved access request
//! as its provenance), and the demo district. In production: nothing — the
//! first administrator is enrolled once with `govshare admin bootstrap`
//! ([`crate::control::enrol`]), which is the log's first `ADMIN` entry.

use crate::base::clock;
use crate::config::Config;
use crate::control::certs::thumbprint;
use crate::control::enrol;
use crate::control::enrol::{IDENTITIES_DONE, token_info};
use crate::control::keys::KeyRing;
use crate::control::store::Store;
use crate::demo::seed::{
    self, BOOTSTRAP, DEMO_PURPOSES, DEMO_TOKEN_LIFETIME, IDENTITIES, Identity, demo_grants,
    needs_request, provenance,
};
use crate::gateway::pki::Pki;
use crate::pipeline::RecordStore;
use crate::proto::{Department, DepartmentStatus, Purpose, PurposeStatus, RegisteredCertificate};
use anyhow::Result;

/// Makes the demo's dev PKI and backup identity, if not made yet: the
/// files a first start needs before it opens its audit log (whose key is
/// kept beside them). Returns a line per step taken. Production makes
/// nothing.
pub fn make_pki(cfg: &Config) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if !cfg.demo {
        return Ok(done);
    }
    let pki = Pki::at(&cfg.pki_dir());
    if !pki.exists() {
        pki.init(&[])?;
        done.push(format!("created a dev PKI in {}", pki.dir().display()));
    }
    if pki.backup_identity()? {
        done.push(format!(
            "made a backup identity for snapshots: {} (its recipient, in {}, is what this demo encrypts snapshots to)",
            pki.path(crate::config::BACKUP_IDENTITY).display(),
            crate::config::BACKUP_RECIPIENT
        ));
    }
    Ok(done)
}

/// Seeds whatever part of the demo's store has not been seeded yet —
/// residents, identities, purposes, grants. Only after [`bind_log`]: of two
/// first starts racing on one empty shared store, the one whose claim
/// lost must not have written its identities (issued by its own dev CA)
/// into the store first. Returns a line per step taken. Production seeds
/// nothing.
pub fn seed(
    cfg: &Config,
    store: &Store,
    records: &RecordStore,
    keys: &KeyRing,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if !cfg.demo {
        return Ok(done);
    }
    if cfg.demo_persons > 0 && !seed::district_loaded(store)? {
        done.push(seed::load_demo(
            store,
            records,
            cfg.demo_seed,
            cfg.demo_persons,
        )?);
    }
    if let Some(step) = seed_identities(store, keys, &Pki::at(&cfg.pki_dir()))? {
        done.push(step);
    }
    store.sync()?;
    records.sync()?;
    Ok(done)
}

/// The store key holding the mode a data dir was first started in.
const MODE: &str = "mode";

/// A data dir keeps the mode it was first started in. A production dir
/// started with `demo = true` (one environment variable) would take on the
/// demo's identities and grants and let `demo_clock_offset` move its clock
/// — disclosing withheld pulls, expiring tokens; a demo dir started as
/// production would carry the dev CA's identities into service.
pub fn check_mode(cfg: &Config, store: &Store) -> Result<()> {
    let want = if cfg.demo { "demo" } else { "production" };
    match store.meta(MODE)? {
        None => {
            store.put_meta(MODE, want.as_bytes())?;
            store.sync()
        }
        Some(m) if m == want.as_bytes() => Ok(()),
        Some(m) => anyhow::bail!(
            "{} was first started as a {} gateway and will not start as a {want} one: \
             a data dir never changes mode (check `demo` in the config file and GOVSHARE_DEMO)",
            cfg.data_dir.display(),
            String::from_utf8_lossy(&m)
        ),
    }
}

/// The public key of the audit log that records this store's changes.
const LOG_KEY: &str = "audit.log_key";

/// Set in a store that `govshare store copy` moved elsewhere.
const MOVED: &str = "store.moved";

/// The size of the log `store copy` copied a store with: until the shared
/// log holds that many entries, only the node that holds them may start
/// (it moves them in at its first start).
const LOG_MOVING: &str = "audit.moving";

/// Records that the log of `entries` entries copied with this store must
/// be in the shared log before any other node starts on it.
pub fn mark_log_moving(store: &Store, entries: u64) -> Result<()> {
    store.put_meta(LOG_MOVING, &entries.to_le_bytes())?;
    store.sync()
}

/// Over a shared store copied from one node: refuses any other node (one
/// whose replica does not hold the copied log) until that node's log is in
/// the database — a node that appended first would begin another log, and
/// the copied one could never join it.
fn check_log_moved(cfg: &Config, store: &Store) -> Result<()> {
    let Some(log) = store.backend().shared_log() else {
        return Ok(());
    };
    let Some(want) = store
        .meta(LOG_MOVING)?
        .and_then(|b| b.as_slice().try_into().ok())
        .map(u64::from_le_bytes)
    else {
        return Ok(());
    };
    if log.head()?.size >= want {
        return Ok(());
    }
    let (here, _) = crate::audit::segment::walk(&cfg.audit_dir(), |_, _, _, _| Ok(()))?;
    if here < want {
        anyhow::bail!(
            "this store was copied from a node whose audit log ({want} entries) is not in the database yet: start that node (its data dir) on this database first, then this one"
        );
    }
    Ok(())
}

/// Marks a store as moved to `to`: it never serves again.
pub fn mark_moved(store: &Store, to: &str) -> Result<()> {
    store.put_meta(MOVED, to.as_bytes())?;
    store.sync()
}

/// The key part of a verifier key (`name+hash+key`): the same across the
/// log's generations, whose names differ.
fn key_part(verifier_key: &str) -> &str {
    // The key is base64, which may itself hold `+`: split off the first two
    // fields only.
    verifier_key
        .trim()
        .splitn(3, '+')
        .nth(2)
        .unwrap_or_default()
}

/// A store belongs to one audit log: the one whose key the node that first
/// served it made. A shared database outlives data dirs, so a data dir with
/// no log key at all — whose first start would seed the store and begin a
/// second log — is refused before it writes anything, and so, over a shared
/// store, is one whose key (`audit-log.pub`, as its last start wrote it)
/// is another log's. (A node joining a cluster brings the cluster's PKI
/// files, the log key with them.) The key itself is checked again once the
/// log is open ([`bind_log`]).
pub fn check_log(cfg: &Config, store: &Store) -> Result<()> {
    if let Some(to) = store.meta(MOVED)? {
        anyhow::bail!(
            "this store was copied to {} by `govshare store copy` and is no longer current: start with [store] backend = \"postgres\" and its url",
            String::from_utf8_lossy(&to)
        );
    }
    check_log_moved(cfg, store)?;
    let Some(recorded) = store.meta(LOG_KEY)? else {
        return Ok(());
    };
    let no_log = crate::audit::segment::segments(&cfg.audit_dir())?.is_empty()
        && !cfg
            .pki_dir()
            .join(crate::audit::checkpoint::KEY_FILE)
            .exists();
    if no_log {
        anyhow::bail!(
            "{}; {} holds no audit log. Start that data dir on this store: a second log would split the store's history",
            belongs(&recorded),
            cfg.data_dir.display()
        );
    }
    // Over a shared store, before the log is opened: opening it moves a
    // replica's log into an empty shared log.
    let shared = store.backend().shared_log().is_some();
    if let (true, Ok(ours)) = (
        shared,
        std::fs::read_to_string(cfg.pki_dir().join("audit-log.pub")),
    ) {
        refuse_another_key(cfg, &recorded, key_part(&ours))?;
    }
    Ok(())
}

fn belongs(recorded: &[u8]) -> String {
    format!(
        "this store's changes are recorded in the audit log whose key is {}, kept in the data dir of the gateway that first served it",
        String::from_utf8_lossy(recorded)
    )
}

/// Records which log this store belongs to on its first start, and
/// refuses a store that belongs to another.
pub fn bind_log(cfg: &Config, store: &Store, verifier_key: &str) -> Result<()> {
    let ours = key_part(verifier_key);
    // A claim, not a read then a write: two first starts racing on one
    // empty shared store must not both believe the store's log is theirs.
    let recorded = store.claim_meta(LOG_KEY, ours.as_bytes())?;
    store.sync()?;
    refuse_another_key(cfg, &recorded, ours)
}

fn refuse_another_key(cfg: &Config, recorded: &[u8], ours: &str) -> Result<()> {
    if recorded == ours.as_bytes() {
        return Ok(());
    }
    anyhow::bail!(
        "{}; the log in {} has another key ({ours}). Start that data dir on this store: a second log would split the store's history",
        belongs(recorded),
        cfg.data_dir.display()
    )
}

/// What production prints while no administrator exists.
pub fn enrolment_hint(cfg: &Config, store: &Store) -> Result<Option<String>> {
    if cfg.demo || enrol::administrator_exists(store)? {
        return Ok(None);
    }
    Ok(Some(format!(
        "no administrator exists yet. On this host, enrol the first one (once) with:\n  govshare admin bootstrap --data-dir {} --dept {} --cert admin.pem --out admin.token",
        cfg.data_dir.display(),
        cfg.admin_departments[0]
    )))
}

/// Registers the demo purposes, enrols the demo identities (certificates
/// and tokens written to `pki`) and gives them their grants, once. Returns
/// what it did, if anything.
fn seed_identities(store: &Store, keys: &KeyRing, pki: &Pki) -> Result<Option<String>> {
    if store.meta(IDENTITIES_DONE)?.is_some() {
        return Ok(None);
    }
    for (code, name, basis) in DEMO_PURPOSES {
        store.put_purpose(&Purpose {
            code: (*code).into(),
            name: (*name).into(),
            legal_basis: (*basis).into(),
            status: PurposeStatus::Active.into(),
            registered_by: BOOTSTRAP.into(),
            registered_at: Some(clock::to_timestamp(clock::now())),
            ..Default::default()
        })?;
    }
    for ident in IDENTITIES {
        enroll(store, keys, pki, ident)?;
    }
    for mut g in demo_grants() {
        if needs_request(&g) {
            g.access_request_id = format!("ar-{}", g.id);
            store.put_access_request(&provenance(&g))?;
        }
        store.put_grant(&g)?;
    }
    store.put_meta(IDENTITIES_DONE, b"1")?;
    Ok(Some(format!(
        "enrolled {} demo identities with certificates, tokens, purposes and grants",
        IDENTITIES.len()
    )))
}

fn enroll(store: &Store, keys: &KeyRing, pki: &Pki, ident: &Identity) -> Result<()> {
    let now = Some(clock::to_timestamp(clock::now()));
    if store.department(ident.department)?.is_none() {
        store.put_department(&Department {
            id: ident.department.into(),
            name: ident.department_name.into(),
            status: DepartmentStatus::Active.into(),
            created_at: now,
            jurisdiction: vec![ident.jurisdiction.into()],
        })?;
    }
    let cert = pki.issue_client(ident.id)?;
    let thumb = thumbprint(&cert.der);
    store.put_certificate(&RegisteredCertificate {
        thumbprint: thumb.clone(),
        department: ident.department.into(),
        subject: ident.id.into(),
        registered_at: now,
        ..Default::default()
    })?;
    let roles: Vec<String> = ident.roles.iter().map(|r| r.to_string()).collect();
    let (token, claims) = keys.issue(
        ident.department,
        ident.id,
        &roles,
        &thumb,
        DEMO_TOKEN_LIFETIME,
    )?;
    store.put_token(&token_info(&claims, &roles, BOOTSTRAP))?;
    pki.write_secret(&format!("{}.token", ident.id), &token)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_log_key_is_its_whole_base64_even_with_plus_signs() {
        assert_eq!(
            super::key_part("govshare.local/audit/2+0a1b2c3d+AQ+z/9+Yw==\n"),
            "AQ+z/9+Yw=="
        );
        assert_eq!(super::key_part("no-key"), "");
    }
}
