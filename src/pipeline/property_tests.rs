//! The decision rule as a property, end to end through `Admission::get` and
//! `Admission::scan` and the real audit log: for random grants, catalog
//! overrides, purposes (active, retired, restricted to other departments,
//! unregistered) and requests over all three datasets, no record, field or
//! view ever leaves beyond what the grants *and* the catalog in force allow
//! — checked against an oracle written independently of `authz`.

use super::{Pipeline, PullSpec};
use crate::audit::{AuditOptions, Runtime};
use crate::auth::{Authenticator, Principal, Under};
use crate::control::directory::Directory;
use crate::control::keys::KeyRing;
use crate::control::roles::Role;
use crate::control::roles::RoleDepartments;
use crate::control::store::Store;
use crate::datasets::Dataset;
use crate::datasets::Record;
use crate::datasets::catalog::{Catalog, Override};
use crate::datasets::mask::Masker;
use crate::proto::json::{Named, present_fields};
use crate::proto::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

struct Harness {
    rt: tokio::runtime::Runtime,
    store: Store,
    records: super::RecordStore,
    keys: Arc<KeyRing>,
    log: crate::audit::AuditLog,
    district: crate::demo::District,
    _dir: tempfile::TempDir,
    _audit: Runtime,
    /// Held by each test for its whole run: they share the store, and a
    /// write by one (a department, a grant) moves the policy epoch under
    /// another's call, which then re-checks its test principal — whose
    /// certificate is registered nowhere — and is refused UNAUTHENTICATED.
    one_at_a_time: std::sync::Mutex<()>,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let backend = crate::store::open_dir(&dir.path().join("store")).unwrap();
        let (store, records) = (
            Store::new(backend.clone()),
            super::RecordStore::new(backend),
        );
        crate::demo::seed::load_demo(&store, &records, 11, 400).unwrap();
        let keys = Arc::new(KeyRing::load_or_create(store.clone(), "t", "t").unwrap());
        let audit = rt.block_on(async {
            Runtime::open(
                &dir.path().join("audit"),
                &dir.path().join("pki"),
                "govshare.test/audit",
                AuditOptions::default(),
            )
            .unwrap()
        });
        Harness {
            log: audit.log(),
            rt,
            store,
            records,
            keys,
            district: crate::demo::generate(11, 400),
            _dir: dir,
            _audit: audit,
            one_at_a_time: std::sync::Mutex::new(()),
        }
    })
}

const PURPOSES: [&str; 5] = [
    "p-active",
    "p-other",
    "p-retired",
    "p-elsewhere",
    "p-unregistered",
];

/// Regions a grant may name: the whole jurisdiction, the district, its
/// streets, communities and grids.
fn regions() -> Vec<String> {
    let d = &harness().district;
    let mut r = vec!["*".to_string()];
    r.extend(d.regions.iter().map(|n| n.code.clone()));
    r
}

#[derive(Debug, Clone)]
struct GrantSpec {
    dataset: Dataset,
    ops: Vec<Operation>,
    fields: Vec<(usize, FieldView)>,
    regions: Vec<usize>,
    purposes: Vec<usize>,
    /// 0: valid, 1: expired, 2: not yet valid.
    validity: u8,
    revoked: bool,
    approved_request: bool,
}

fn dataset() -> impl Strategy<Value = Dataset> {
    prop_oneof![
        Just(Dataset::Population),
        Just(Dataset::LegalEntity),
        Just(Dataset::Grid)
    ]
}

fn views() -> impl Strategy<Value = FieldView> {
    prop_oneof![
        Just(FieldView::Clear),
        Just(FieldView::Masked),
        Just(FieldView::Pseudonym)
    ]
}

fn grant_spec() -> impl Strategy<Value = GrantSpec> {
    (
        dataset(),
        prop::sample::subsequence(
            vec![Operation::Get, Operation::BatchGet, Operation::List],
            1..=3,
        ),
        prop::collection::vec((0usize..21, views()), 1..8),
        prop::collection::vec(0usize..64, 1..3),
        prop::collection::vec(
            prop_oneof![4 => 0usize..2, 1 => 2usize..PURPOSES.len()],
            1..3,
        ),
        prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        prop::bool::weighted(0.15),
        any::<bool>(),
    )
        .prop_map(
            |(dataset, ops, fields, regions, purposes, validity, revoked, approved_request)| {
                let n = dataset.spec().fields.len();
                GrantSpec {
                    dataset,
                    ops,
                    fields: fields.into_iter().map(|(f, v)| (f % n, v)).collect(),
                    regions,
                    purposes,
                    validity,
                    revoked,
                    approved_request,
                }
            },
        )
}

fn overrides() -> impl Strategy<Value = Vec<(Dataset, usize, FieldView, SharingClass)>> {
    prop::collection::vec(
        (
            dataset(),
            0usize..21,
            views(),
            prop_oneof![
                Just(SharingClass::Unconditional),
                Just(SharingClass::Conditional),
                Just(SharingClass::NotShared)
            ],
        ),
        0..6,
    )
}

#[derive(Debug, Clone)]
struct Request {
    dataset: Dataset,
    op: Operation,
    purpose: usize,
    keys: Vec<usize>,
}

fn request() -> impl Strategy<Value = Request> {
    (
        dataset(),
        prop_oneof![
            Just(Operation::Get),
            Just(Operation::BatchGet),
            Just(Operation::List)
        ],
        0usize..PURPOSES.len(),
        prop::collection::vec(0usize..400, 1..4),
    )
        .prop_map(|(dataset, op, purpose, keys)| Request {
            dataset,
            op,
            purpose,
            keys,
        })
}

fn ts(offset: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: crate::base::clock::unix_seconds(crate::base::clock::now()) + offset,
        nanos: 0,
    }
}

/// What the oracle expects of one record: `None` when it must not be
/// returned, or the view of every field it may carry.
type Expected = Option<BTreeMap<&'static str, FieldView>>;

struct Oracle {
    /// Per candidate grant: its regions and its plan under the catalog.
    candidates: Vec<(Vec<String>, BTreeMap<&'static str, FieldView>)>,
}

fn rank(v: FieldView) -> u8 {
    match v {
        FieldView::Clear => 3,
        FieldView::Masked => 2,
        FieldView::Pseudonym => 1,
        FieldView::Unspecified => 0,
    }
}

impl Oracle {
    fn expect(&self, row: &str) -> Expected {
        let mut out: Option<BTreeMap<&'static str, FieldView>> = None;
        for (regions, plan) in &self.candidates {
            if regions
                .iter()
                .any(|r| r == "*" || row.starts_with(r.as_str()))
            {
                let o = out.get_or_insert_with(BTreeMap::new);
                for (f, v) in plan {
                    let slot = o.entry(*f).or_insert(*v);
                    if rank(*v) > rank(*slot) {
                        *slot = *v;
                    }
                }
            }
        }
        out
    }
}

/// Checks each released record against its source record: it must lie in
/// an allowed row, carry only allowed fields, each in exactly the allowed
/// view, and every allowed CLEAR field the source has.
fn check_released<R: Record + Named>(oracle: &Oracle, pairs: &[(&R, &R)]) {
    for (source, released) in pairs {
        let row = source.row_code();
        let allowed = oracle
            .expect(row)
            .unwrap_or_else(|| panic!("a record in row {row} left outside every grant"));
        let views = views_of(*released);
        let present = present_fields(*released);
        for f in &present {
            let catalog_name = format!("{}{f}", R::FIELD_PREFIX);
            let want = allowed.get(catalog_name.as_str()).unwrap_or_else(|| {
                panic!("field {f} left without a grant or catalog view: allowed {allowed:?}")
            });
            assert_eq!(views.get(f), Some(want), "field {f} in the wrong view");
        }
        assert_eq!(
            views.len(),
            present.len(),
            "views name exactly the fields present"
        );
        for f in present_fields(*source) {
            let catalog_name = format!("{}{f}", R::FIELD_PREFIX);
            if allowed.get(catalog_name.as_str()) == Some(&FieldView::Clear) {
                assert!(present.contains(&f), "allowed CLEAR field {f} is missing");
            }
        }
    }
}

fn views_of<R: Named>(r: &R) -> BTreeMap<String, FieldView> {
    crate::proto::json::to_value(r)
        .get("views")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let view = v
                        .as_str()
                        .and_then(FieldView::from_str_name)
                        .unwrap_or(FieldView::Unspecified);
                    (k.clone(), view)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn source_of<R: Record + Clone>(items: &[R]) -> HashMap<String, R> {
    items
        .iter()
        .map(|r| (r.key().to_string(), r.clone()))
        .collect()
}

struct Case {
    department: String,
    /// The department's jurisdiction: what a grant's `*` stands for.
    jurisdiction: Vec<String>,
    catalog: Catalog,
    grants: Vec<GrantSpec>,
    request: Request,
}

fn build_oracle(
    case: &Case,
    purposes: &HashMap<String, Purpose>,
) -> (Oracle, Option<&'static str>) {
    let regions = regions();
    let d = case.request.dataset;
    let purpose = PURPOSES[case.request.purpose];
    let purpose_ok = purposes.get(purpose).is_some_and(|p| {
        p.status == PurposeStatus::Active as i32
            && (p.departments.is_empty() || p.departments.contains(&case.department))
    });
    let mut candidates = Vec::new();
    // The refusal's rule, written from the issue: rank each failing grant
    // by (names the cited purpose, fewest failed rules, latest first
    // failed rule); report the best one's first failed rule, or
    // PURPOSE_NOT_GRANTED when no grant names the cited purpose.
    let mut best: Option<(bool, std::cmp::Reverse<usize>, u8)> = None;
    let mut any = false;
    for g in case.grants.iter().filter(|g| g.dataset == d) {
        any = true;
        let mut plan = BTreeMap::new();
        let spec = d.spec();
        for (i, v) in &g.fields {
            let f = spec.fields[*i].name;
            match case.catalog.sharing(d, f, *v) {
                Some(SharingClass::Unconditional) => {
                    plan.insert(f, *v);
                }
                Some(SharingClass::Conditional) if g.approved_request => {
                    plan.insert(f, *v);
                }
                _ => {}
            }
        }
        let names = g.purposes.iter().any(|p| PURPOSES[*p] == purpose);
        // Rules as scopes.md orders them: 1 revoked, 2 not yet valid,
        // 3 expired, 4 operation, 5 purpose, 6 catalog.
        let failed: Vec<u8> = [
            (g.revoked, 1),
            (g.validity == 2, 2),
            (g.validity == 1, 3),
            (!g.ops.contains(&case.request.op), 4),
            (!purpose_ok || !names, 5),
            (plan.is_empty(), 6),
        ]
        .into_iter()
        .filter(|(fails, _)| *fails)
        .map(|(_, rule)| rule)
        .collect();
        if let Some(first) = failed.first() {
            let rank = (names, std::cmp::Reverse(failed.len()), *first);
            best = best.max(Some(rank));
        } else {
            let rs = g
                .regions
                .iter()
                .map(|r| regions[r % regions.len()].clone())
                .flat_map(|r| match r.as_str() {
                    "*" => case.jurisdiction.clone(),
                    _ => vec![r],
                })
                .collect();
            candidates.push((rs, plan));
        }
    }
    let reason = if !any {
        Some("NO_GRANT")
    } else if !candidates.is_empty() {
        None
    } else {
        match best {
            Some((false, ..)) => Some("PURPOSE_NOT_GRANTED"),
            Some((true, _, 1)) => Some("GRANT_REVOKED"),
            Some((true, _, 2)) => Some("GRANT_NOT_YET_VALID"),
            Some((true, _, 3)) => Some("GRANT_EXPIRED"),
            Some((true, _, 4)) => Some("OPERATION_NOT_GRANTED"),
            Some((true, _, 5)) => Some("PURPOSE_NOT_GRANTED"),
            Some((true, _, 6)) => Some("CATALOG_WITHDRAWN"),
            _ => unreachable!("every failing grant fails a rule"),
        }
    };
    (Oracle { candidates }, reason)
}

fn write_case(h: &Harness, case: &Case) {
    let regions = regions();
    h.store
        .put_department(&Department {
            id: case.department.clone(),
            name: case.department.clone(),
            jurisdiction: case.jurisdiction.clone(),
            status: DepartmentStatus::Active.into(),
            ..Default::default()
        })
        .unwrap();
    for (k, g) in case.grants.iter().enumerate() {
        let id = format!("{}-g{k}", case.department);
        let request_id = format!("{}-ar{k}", case.department);
        if g.approved_request {
            h.store
                .put_access_request(&AccessRequest {
                    id: request_id.clone(),
                    department: case.department.clone(),
                    status: AccessRequestStatus::Approved.into(),
                    ..Default::default()
                })
                .unwrap();
        }
        let spec = g.dataset.spec();
        h.store
            .put_grant(&Grant {
                id,
                department: case.department.clone(),
                dataset: g.dataset.name().into(),
                operations: g.ops.iter().map(|o| *o as i32).collect(),
                fields: g
                    .fields
                    .iter()
                    .map(|(i, v)| FieldGrant {
                        field: spec.fields[*i].name.into(),
                        view: *v as i32,
                    })
                    .collect(),
                regions: g
                    .regions
                    .iter()
                    .map(|r| regions[r % regions.len()].clone())
                    .collect(),
                purposes: g.purposes.iter().map(|p| PURPOSES[*p].into()).collect(),
                not_before: (g.validity == 2).then(|| ts(3600)),
                not_after: Some(if g.validity == 1 { ts(-10) } else { ts(3600) }),
                revoked_at: g.revoked.then(|| ts(-5)),
                access_request_id: if g.approved_request {
                    request_id
                } else {
                    String::new()
                },
                ..Default::default()
            })
            .unwrap();
    }
}

fn purposes_for(department: &str) -> Vec<Purpose> {
    let p = |code: &str, status: PurposeStatus, departments: Vec<String>| Purpose {
        code: code.into(),
        status: status.into(),
        departments,
        ..Default::default()
    };
    vec![
        p("p-active", PurposeStatus::Active, vec![]),
        p("p-other", PurposeStatus::Active, vec![department.into()]),
        p("p-retired", PurposeStatus::Retired, vec![]),
        p(
            "p-elsewhere",
            PurposeStatus::Active,
            vec!["somewhere-else".into()],
        ),
    ]
}

fn run_case(case: Case) {
    let h = harness();
    let _alone = h.one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
    for p in purposes_for(&case.department) {
        h.store.put_purpose(&p).unwrap();
    }
    write_case(h, &case);
    let directory = Arc::new(
        Directory::new(
            h.store.clone(),
            Arc::new(case.catalog.clone()),
            RoleDepartments {
                admin: vec!["gateway-admin".into()],
                auditor: vec!["audit-office".into()],
                resident_portal: Vec::new(),
            },
        )
        .unwrap(),
    );
    let purposes: HashMap<String, Purpose> = directory
        .current()
        .unwrap()
        .purposes()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (oracle, denial) = build_oracle(&case, &purposes);
    h.rt.block_on(async {
        let pipeline = Pipeline::new(
            h.records.clone(),
            directory.clone(),
            Authenticator::new(directory.clone(), h.keys.clone()),
            h.log.clone(),
            Masker::new([9; 32]),
        )
        .unwrap();
        let req = &case.request;
        let principal = Principal::for_test(
            &case.department,
            &[Role::Puller],
            directory.current().unwrap(),
        );
        let admitted = pipeline
            .admit_principal(
                principal,
                Under::Committed,
                PullContext {
                    purpose: PURPOSES[req.purpose].into(),
                    case_id: "PROP-1".into(),
                    operator: String::new(),
                },
                PullSpec {
                    kind: EntryKind::Pull,
                    method: "/property",
                    dataset: req.dataset,
                    operation: req.op,
                    query: AuditQuery::default(),
                },
            )
            .await;
        let mut adm = match (admitted, denial) {
            (Err(status), Some(reason)) => {
                assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
                let entry = last_entry(h, &case.department);
                assert_eq!(entry.reason_code, reason, "{}", entry.message);
                return;
            }
            (Ok(_), Some(reason)) => panic!("admitted, but the oracle says {reason}"),
            (Err(status), None) => panic!("refused ({status:?}), but the oracle allows it"),
            (Ok(adm), None) => adm,
        };
        let d = &h.district;
        macro_rules! check {
            ($items:expr, $ty:ty) => {{
                let source = source_of::<$ty>(&$items);
                // The source record of each released one, in release order.
                let (expected, released): (Vec<&$ty>, Vec<$ty>) = if req.op == Operation::List {
                    let prefixes = adm.decision().scan_prefixes("").unwrap();
                    let (m, _) = adm
                        .scan::<$ty>(prefixes.into(), None, 10_000, None)
                        .await
                        .unwrap();
                    let mut covered: Vec<&$ty> = source
                        .values()
                        .filter(|r| oracle.expect(r.row_code()).is_some())
                        .collect();
                    covered.sort_by_key(|r| r.index_key());
                    let released = adm.release(m).await.unwrap().into_parts().0;
                    (
                        covered,
                        released.into_iter().map(|p| p.into_v1().unwrap()).collect(),
                    )
                } else {
                    let keys: Vec<String> = req
                        .keys
                        .iter()
                        .map(|k| $items[k % $items.len()].key().to_string())
                        .collect();
                    let m = adm.get::<$ty>(keys.clone()).await.unwrap();
                    let (records, not_found, _) = adm.release(m).await.unwrap().into_parts();
                    let visible: Vec<&$ty> = keys
                        .iter()
                        .map(|k| &source[k])
                        .filter(|r| oracle.expect(r.row_code()).is_some())
                        .collect();
                    assert_eq!(not_found.len(), keys.len() - visible.len());
                    (
                        visible,
                        records.into_iter().map(|p| p.into_v1().unwrap()).collect(),
                    )
                };
                assert_eq!(
                    released.len(),
                    expected.len(),
                    "every allowed row, and only those"
                );
                let pairs: Vec<(&$ty, &$ty)> = expected.into_iter().zip(&released).collect();
                check_released(&oracle, &pairs);
                let entry = last_entry(h, &case.department);
                assert_eq!(entry.record_count as usize, released.len());
            }};
        }
        match req.dataset {
            Dataset::Population => check!(d.persons, Person),
            Dataset::LegalEntity => check!(d.entities, LegalEntity),
            Dataset::Grid => check!(d.grids, Grid),
        }
    });
}

/// The newest entry of `department`: the tests share one log and run in
/// parallel, so the log's last entry may be another test's.
fn last_entry(h: &Harness, department: &str) -> AuditEntry {
    use prost::Message;
    let dir = h._dir.path().join("audit");
    crate::audit::segment::read_all(&dir)
        .unwrap()
        .iter()
        .rev()
        .map(|bytes| AuditEntry::decode(bytes.as_slice()).unwrap())
        .find(|e| {
            e.principal
                .as_ref()
                .is_some_and(|p| p.department == department)
        })
        .expect("an entry of this department")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn nothing_leaves_beyond_the_grants_and_the_catalog_in_force(
        grants in prop::collection::vec(grant_spec(), 1..4),
        overrides in overrides(),
        request in request(),
        aligned in prop::bool::weighted(0.75),
        op_pick in any::<prop::sample::Index>(),
        purpose_pick in any::<prop::sample::Index>(),
        jurisdiction in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
        n in 0u32..u32::MAX,
    ) {
        // Mostly ask for what the first grant is about, so most cases reach
        // the release path; the rest probe refusals.
        let mut request = request;
        if aligned {
            let g = &grants[0];
            request.dataset = g.dataset;
            request.op = *op_pick.get(&g.ops);
            request.purpose = *purpose_pick.get(&g.purposes);
        }
        let mut list = Vec::new();
        for (dataset, f, view, sharing) in overrides {
            let spec = dataset.spec();
            let field = &spec.fields[f % spec.fields.len()];
            if field.sharing_for(view).is_none() {
                continue;
            }
            list.push(Override {
                dataset: dataset.name().into(),
                field: field.name.into(),
                view: view.as_str_name().trim_start_matches("FIELD_VIEW_").into(),
                sharing: match sharing {
                    SharingClass::Unconditional => "unconditional",
                    SharingClass::Conditional => "conditional",
                    _ => "not_shared",
                }
                .into(),
            });
        }
        let codes = regions();
        run_case(Case {
            department: format!("prop-{n}"),
            jurisdiction: jurisdiction.iter().map(|i| i.get(&codes).clone()).collect(),
            catalog: Catalog::with_overrides(&list).unwrap(),
            grants,
            request,
        });
    }
}

/// A record store whose reads fail, as a shared store might mid-call.
struct FailingBackend;

impl crate::store::Backend for FailingBackend {
    fn get(&self, _: &str, _: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        anyhow::bail!("the disk went away")
    }
    fn put(&self, _: &str, _: &[u8], _: &[u8]) -> anyhow::Result<()> {
        anyhow::bail!("the disk went away")
    }
    fn remove(&self, _: &str, _: &[u8]) -> anyhow::Result<()> {
        anyhow::bail!("the disk went away")
    }
    fn scan(
        &self,
        _: &str,
        _: &[u8],
        _: Option<&[u8]>,
        _: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(Vec::new())
    }
    fn upsert_placed(
        &self,
        _: crate::store::Placed,
        _: &[crate::store::PlacedKey<'_>],
        _: &mut crate::store::PlacedUpdate<'_>,
    ) -> anyhow::Result<()> {
        anyhow::bail!("the disk went away")
    }
    fn update_counter(
        &self,
        _: &str,
        _: &[u8],
        _: &mut dyn FnMut(u64) -> u64,
    ) -> anyhow::Result<(u64, u64)> {
        anyhow::bail!("the disk went away")
    }
    fn write_moving_fence(
        &self,
        _: &str,
        _: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        _: crate::store::FenceRow,
    ) -> anyhow::Result<u64> {
        anyhow::bail!("the disk went away")
    }
    fn scan_rev(
        &self,
        _: &str,
        _: &[u8],
        _: Option<&[u8]>,
        _: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(Vec::new())
    }
    fn put_if_absent(&self, _: &str, _: &[u8], _: &[u8]) -> anyhow::Result<Vec<u8>> {
        anyhow::bail!("the disk went away")
    }
    fn apply_batch(&self, _: &str, _: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> anyhow::Result<()> {
        anyhow::bail!("the disk went away")
    }
    fn sync(&self) -> anyhow::Result<()> {
        Ok(())
    }
    fn trees(&self) -> anyhow::Result<Vec<String>> {
        anyhow::bail!("the disk went away")
    }
}

#[test]
fn a_store_failing_mid_call_is_audited_as_a_denial_not_an_internal_error() {
    let h = harness();
    let _alone = h.one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
    h.store
        .put_purpose(&purposes_for("store-fails")[0])
        .unwrap();
    write_case(
        h,
        &Case {
            department: "store-fails".into(),
            jurisdiction: vec!["*".into()],
            catalog: Catalog::default(),
            grants: vec![GrantSpec {
                dataset: Dataset::Population,
                ops: vec![Operation::Get],
                fields: vec![(1, FieldView::Clear)],
                regions: vec![0],
                purposes: vec![0],
                validity: 0,
                revoked: false,
                approved_request: false,
            }],
            request: Request {
                dataset: Dataset::Population,
                op: Operation::Get,
                purpose: 0,
                keys: vec![0],
            },
        },
    );
    let directory = Arc::new(
        Directory::new(
            h.store.clone(),
            Arc::new(Catalog::default()),
            RoleDepartments {
                admin: vec![],
                auditor: vec![],
                resident_portal: Vec::new(),
            },
        )
        .unwrap(),
    );
    h.rt.block_on(async {
        let pipeline = Pipeline::new(
            super::RecordStore::new(Arc::new(FailingBackend)),
            directory.clone(),
            Authenticator::new(directory.clone(), h.keys.clone()),
            h.log.clone(),
            Masker::new([9; 32]),
        )
        .unwrap();
        let adm = pipeline
            .admit_principal(
                Principal::for_test("store-fails", &[Role::Puller], directory.current().unwrap()),
                Under::Committed,
                PullContext {
                    purpose: PURPOSES[0].into(),
                    case_id: "C".into(),
                    operator: String::new(),
                },
                PullSpec {
                    kind: EntryKind::Pull,
                    method: "/store-fails",
                    dataset: Dataset::Population,
                    operation: Operation::Get,
                    query: AuditQuery::default(),
                },
            )
            .await
            .unwrap();
        let id = h.district.persons[0].id_number.clone().unwrap();
        let status = match adm.get::<Person>(vec![id]).await {
            Err(s) => s,
            Ok(_) => panic!("a failing store released something"),
        };
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let entry = last_entry(h, "store-fails");
        assert_eq!(entry.method, "/store-fails");
        assert_eq!(entry.decision, AuditDecision::Deny as i32);
        assert_eq!(entry.reason_code, "STORE_UNAVAILABLE");
    });
}
