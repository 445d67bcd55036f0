//! Fuzz target bodies: the parsers and rules an attacker feeds directly.
//! `fuzz/` runs them under libFuzzer (`cargo fuzz run <target>`), and
//! `tests/fuzz_regressions.rs` replays every input kept in
//! `fuzz/regressions/<target>/`, so a crash once found stays fixed.
//!
//! Each target must not panic on any input, and checks what must hold of
//! whatever it accepts.

use crate::control::authz::{self, CompiledGrant};
use crate::datasets::Dataset;
use crate::datasets::catalog::Catalog;
use crate::datasets::codes::{CitizenId, RegionCode, Uscc};
use crate::proto::{FieldGrant, FieldView, Grant, Operation, Purpose, PurposeStatus};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A fuzz target: any input, no panic.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/<name>.rs` call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("citizen_id", citizen_id),
    ("uscc", uscc),
    ("region", region),
    ("token", token),
    ("decision", decision),
];

/// A valid citizen ID re-parses to itself, and its derived sex and birth
/// date come from it.
pub fn citizen_id(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = CitizenId::parse(s) {
        assert_eq!(id.as_str().len(), 18);
        assert_eq!(CitizenId::parse(id.as_str()).unwrap().as_str(), id.as_str());
        let _ = (id.sex(), id.birth_date());
    }
}

/// An accepted credit code has 18 characters of the code's alphabet.
pub fn uscc(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(u) = Uscc::parse(s) {
        assert_eq!(u.as_str().len(), 18);
        assert!(
            u.as_str()
                .bytes()
                .all(|b| b"0123456789ABCDEFGHJKLMNPQRTUWXY".contains(&b))
        );
        let _ = (u.check_ok(), u.category());
    }
}

/// A region code's parent is a prefix of it, and it contains itself.
pub fn region(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = RegionCode::parse(s) {
        assert!(r.contains(r.as_str()));
        if let Some(p) = r.parent() {
            assert!(r.as_str().starts_with(p.as_str()));
            assert!(p.as_str().len() < r.as_str().len());
        }
    }
    let _ = RegionCode::parse_grid(s);
}

/// No byte string verifies as a token of a key it was not signed with.
pub fn token(data: &[u8]) {
    use crate::control::directory::Directory;
    use crate::control::roles::RoleDepartments;
    use crate::control::store::Store;
    use std::sync::OnceLock;
    static KEYS: OnceLock<(tempfile::TempDir, Directory)> = OnceLock::new();
    let (_, directory) = KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::new(crate::store::open_dir(dir.path()).expect("a store"));
        crate::control::keys::KeyRing::load_or_create(store.clone(), "govshare", "govshare")
            .expect("a key ring");
        let roles = RoleDepartments {
            admin: Vec::new(),
            auditor: Vec::new(),
            resident_portal: Vec::new(),
        };
        let directory =
            Directory::new(store, Arc::new(Catalog::default()), roles).expect("a directory");
        (dir, directory)
    });
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let snapshot = directory.current().expect("the snapshot");
    assert!(
        crate::auth::token::verify(&snapshot, "govshare", "govshare", s).is_err(),
        "a fuzzed token verified: {s}"
    );
}

/// Random grants judged against random requests: nothing panics, a row
/// is released only inside a grant's regions (`*` read as the department's
/// jurisdiction), and a record's plan never holds a field view that no
/// covering grant names.
pub fn decision(data: &[u8]) {
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next().unwrap_or(0);
    let datasets = Dataset::ALL;
    let regions = [
        "*",
        "310115",
        "310115001",
        "310115001001",
        "310115002",
        "110105",
    ];
    let purposes = ["a", "b", "c"];
    let jurisdiction = vec![regions[usize::from(next()) % regions.len()].to_string()];
    let mut region_of: HashMap<String, &str> = HashMap::new();
    let mut grants = Vec::new();
    let mut named: Vec<(Dataset, &'static str, FieldView, usize)> = Vec::new();
    for g in 0..(next() % 4) {
        let dataset = datasets[usize::from(next()) % 3];
        let spec = dataset.spec();
        let mut fields = Vec::new();
        for _ in 0..(next() % 6) {
            let f = spec.fields[usize::from(next()) % spec.fields.len()].name;
            let view = FieldView::try_from(i32::from(next() % 4)).unwrap_or_default();
            named.push((dataset, f, view, usize::from(g)));
            fields.push(FieldGrant {
                field: f.into(),
                view: view.into(),
            });
        }
        let region = regions[usize::from(next()) % regions.len()];
        region_of.insert(format!("g{g}"), region);
        let grant = Grant {
            id: format!("g{g}"),
            department: "d".into(),
            dataset: dataset.name().into(),
            operations: vec![i32::from(next() % 4)],
            fields,
            regions: vec![region.into()],
            purposes: vec![purposes[usize::from(next()) % 3].into()],
            ..Default::default()
        };
        if let Some(c) =
            CompiledGrant::compile(grant, &Catalog::default(), &HashSet::new(), &jurisdiction)
        {
            grants.push(Arc::new(c));
        }
    }
    let registry: HashMap<String, Purpose> = purposes
        .iter()
        .map(|p| {
            (
                p.to_string(),
                Purpose {
                    code: p.to_string(),
                    status: PurposeStatus::Active.into(),
                    ..Default::default()
                },
            )
        })
        .collect();
    let dataset = datasets[usize::from(next()) % 3];
    let op = Operation::try_from(i32::from(next() % 4)).unwrap_or_default();
    let purpose = purposes[usize::from(next()) % 3];
    let Ok(d) = authz::decide(
        &grants,
        "d",
        dataset,
        op,
        purpose,
        &registry,
        crate::base::clock::now(),
    ) else {
        return;
    };
    let row = ["310115001001003", "310115002001001", "110105001001001"][usize::from(next()) % 3];
    if let Some(plan) = d.plan_for(row) {
        let within = |r: &str| r == "*" || row.starts_with(r);
        // Only the grants the decision stands on count: those of the
        // requested dataset, operation and purpose.
        assert!(
            d.grant_ids()
                .iter()
                .filter_map(|id| region_of.get(id))
                .any(|r| match *r {
                    "*" => jurisdiction.iter().any(|j| within(j)),
                    r => within(r),
                }),
            "row {row} released outside its candidate grants' regions (jurisdiction {jurisdiction:?})"
        );
        for (i, view) in plan.released() {
            let field = dataset.spec().fields[i].name;
            assert!(
                named
                    .iter()
                    .any(|(ds, f, v, _)| *ds == dataset && *f == field && *v == view),
                "{field} {view:?} released but no grant names it"
            );
        }
    }
}
