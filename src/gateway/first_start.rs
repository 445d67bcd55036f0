//! First start. In demo mode (the embedded default): the dev PKI, the demo
//! departments with jurisdictions, certificates, registered tokens, the
//! purposes they cite and their grants (each with an approved access request
//! as its provenance), and the demo district. In production: nothing — the
//! first administrator is enrolled once with `govshare admin bootstrap`
//! ([`crate::control::enrol`]), which is the log's first `ADMIN` entry.

use crate::auth::token::KeyRing;
use crate::config::Config;
use crate::control::enrol;
use crate::control::store::Store;
use crate::demo::seed;
use crate::gateway::pki::Pki;
use crate::pipeline::RecordStore;
use anyhow::Result;

/// Runs whatever part of the first start has not happened yet; returns a
/// line per step taken (empty when there was nothing to do). Production
/// creates nothing.
pub fn first_start(
    cfg: &Config,
    store: &Store,
    records: &RecordStore,
    keys: &KeyRing,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if !cfg.demo {
        return Ok(done);
    }
    let pki = Pki::at(&cfg.pki_dir());
    if !pki.exists() {
        pki.init()?;
        done.push(format!("created a dev PKI in {}", pki.dir().display()));
    }
    if cfg.demo_persons > 0 && !seed::district_loaded(store)? {
        done.push(seed::load_demo(
            store,
            records,
            cfg.demo_seed,
            cfg.demo_persons,
        )?);
    }
    if let Some(step) = seed::seed_identities(store, keys, &pki)? {
        done.push(step);
    }
    store.sync()?;
    records.sync()?;
    Ok(done)
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
