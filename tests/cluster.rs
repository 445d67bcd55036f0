//! Three gateway nodes over one PostgreSQL: one store, one audit log, and
//! a change made on any node in force on every node for the next response
//! (`docs/design.md`, "Several nodes"). Every node is a real `govshare
//! serve` process on its own data dir (holding only its TLS files, keys and
//! log replica) and ephemeral loopback ports; the database is one of the
//! test's own on the server `TEST_DATABASE_URL` names.

mod common;

use common::{
    Gateway, SEED, TEST_PERSONS, Witness, admin_client, cli, ctx, district, postgres,
    register_purposes, req,
};
use govshare::proto::population_service_client::PopulationServiceClient;
use govshare::proto::*;
use prost::Message;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::Code;

/// Three nodes over one database, node 1 started first (it seeds the demo),
/// the others on copies of its PKI files (so they share its identities and
/// log key) and empty replicas.
struct Cluster {
    nodes: Vec<Gateway>,
    db: postgres::TestDatabase,
    root: tempfile::TempDir,
    extra: String,
}

fn node_config(dir: &Path, url: &str, n: usize, extra: &str) -> String {
    format!(
        "demo = true\nnode_id = \"node-{n}\"\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ndemo_persons = {TEST_PERSONS}\ndemo_seed = {SEED}\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 4\n{extra}",
        dir.display()
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

impl Cluster {
    fn start(extra: &str) -> Self {
        let db = postgres::TestDatabase::new();
        let root = tempfile::tempdir().unwrap();
        let mut c = Self {
            nodes: Vec::new(),
            db,
            root,
            extra: extra.to_string(),
        };
        for n in 1..=3 {
            if n > 1 {
                copy_dir(&c.dir(1).join("pki"), &c.dir(n).join("pki"));
            }
            let node = c.start_node(n);
            c.nodes.push(node);
        }
        c
    }

    fn dir(&self, n: usize) -> PathBuf {
        self.root.path().join(format!("node-{n}"))
    }

    fn start_node(&self, n: usize) -> Gateway {
        let dir = self.dir(n);
        Gateway::start_with(&dir, &node_config(&dir, &self.db.url, n, &self.extra))
    }

    fn node(&self, n: usize) -> &Gateway {
        &self.nodes[n - 1]
    }

    /// Every entry of the shared log, in index order.
    fn shared_entries(&self) -> Vec<AuditEntry> {
        postgres::log_entries(&self.db.url)
            .iter()
            .map(|b| AuditEntry::decode(b.as_slice()).unwrap())
            .collect()
    }
}

fn person_id(i: usize) -> String {
    district().persons[i].id_number.clone().unwrap()
}

async fn pull_as(
    gw: &Gateway,
    identity: &str,
    purpose: &str,
    id: &str,
) -> Result<GetPersonResponse, tonic::Status> {
    common::get_person(gw, identity, purpose, id).await
}

/// Civil affairs' population grants, by id.
async fn grants_of(gw: &Gateway, department: &str) -> Vec<String> {
    admin_client(gw, "admin")
        .await
        .list_grants(req(
            ListGrantsRequest {
                department: department.into(),
                dataset: "population".into(),
                include_revoked: false,
            },
            &gw.token("admin"),
        ))
        .await
        .unwrap()
        .into_inner()
        .grants
        .into_iter()
        .map(|g| g.id)
        .collect()
}

/// Grants market regulation the population's names in the test district
/// for `operations` under `purpose`, at most `per_day` records a day
/// (made on node 1).
async fn grant_names_to_market_regulation(
    c: &Cluster,
    operations: &[Operation],
    purpose: &str,
    per_day: u64,
) -> Grant {
    admin_client(c.node(1), "admin")
        .await
        .create_grant(req(
            CreateGrantRequest {
                grant: Some(Grant {
                    department: "market-regulation".into(),
                    dataset: "population".into(),
                    operations: operations.iter().map(|o| *o as i32).collect(),
                    fields: vec![FieldGrant {
                        field: "name".into(),
                        view: FieldView::Clear as i32,
                    }],
                    regions: vec!["310115".into()],
                    purposes: vec![purpose.into()],
                    limits: Some(GrantLimits {
                        max_records_per_day: per_day,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            &c.node(1).token("admin"),
        ))
        .await
        .unwrap()
        .into_inner()
        .grant
        .unwrap()
}

/// Civil affairs' pull of the `i`-th resident (of the first thousand).
fn social_assistance_pull(i: usize, token: &str) -> tonic::Request<GetPersonRequest> {
    req(
        GetPersonRequest {
            context: ctx("social-assistance"),
            id_number: person_id(i % 1000),
        },
        token,
    )
}

/// A population client of node `n` as `identity`, and its token.
type Caller = (PopulationServiceClient<tonic::transport::Channel>, String);

/// Runs `per_node` tasks against every node at once, each with a client of
/// its node as `identity`: `work(node, task, caller)`.
async fn on_every_node<T, Fut>(
    c: &Cluster,
    identity: &str,
    per_node: usize,
    work: impl Fn(usize, usize, Caller) -> Fut,
) -> tokio::task::JoinSet<T>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for n in 1..=3 {
        let channel = c.node(n).channel(identity).await;
        let token = c.node(n).token(identity);
        for t in 0..per_node {
            let caller = (PopulationServiceClient::new(channel.clone()), token.clone());
            set.spawn(work(n, t, caller));
        }
    }
    set
}

async fn revoke(gw: &Gateway, grant: &str) {
    admin_client(gw, "admin")
        .await
        .revoke_grant(req(
            RevokeGrantRequest {
                id: grant.into(),
                reason: "cluster test".into(),
            },
            &gw.token("admin"),
        ))
        .await
        .unwrap();
}

/// `audit verify` of a stopped node's replica.
fn verify_replica(dir: &Path) -> String {
    let (ok, out) = cli(&["audit", "verify", "--data-dir", dir.to_str().unwrap()]);
    assert!(ok, "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_on_one_node_is_in_force_on_the_others_and_every_replica_holds_one_log() {
    let mut c = Cluster::start("");
    let id = person_id(0);
    for n in 1..=3 {
        let got = pull_as(c.node(n), "civil-affairs", "social-assistance", &id).await;
        assert!(got.is_ok(), "node {n}: {got:?}");
    }
    // One log: indexes are dense across nodes, and every node wrote some.
    let shared = c.shared_entries();
    for (i, e) in shared.iter().enumerate() {
        assert_eq!(e.index, i as u64);
    }
    for n in 1..=3 {
        assert!(
            shared.iter().any(|e| e.node == format!("node-{n}")),
            "node-{n} appended to the shared log"
        );
    }

    // Revoked on node 1: refused on nodes 2 and 3 on the very next call.
    for g in grants_of(c.node(1), "civil-affairs").await {
        revoke(c.node(1), &g).await;
    }
    for n in [2, 3, 1] {
        let err = pull_as(c.node(n), "civil-affairs", "social-assistance", &id)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "node {n}: {err:?}");
    }

    // Each replica holds every node's entries and verifies offline.
    let size = c.shared_entries().len();
    for g in &mut c.nodes {
        assert!(g.stop());
    }
    for n in 1..=3 {
        verify_replica(&c.dir(n));
        let held = govshare::audit::segment::read_all(&c.dir(n).join("audit"))
            .unwrap()
            .len();
        assert!(held >= size, "node {n}'s replica holds {held} of {size}");
        let nodes: std::collections::BTreeSet<String> =
            govshare::audit::segment::read_all(&c.dir(n).join("audit"))
                .unwrap()
                .iter()
                .map(|b| AuditEntry::decode(b.as_slice()).unwrap().node)
                .collect();
        assert_eq!(nodes.len(), 3, "node {n}'s replica: {nodes:?}");
    }
}

/// The fence: a pull on node 2 judged before a revocation on node 1 and
/// still waiting for its audit write when the revocation returns comes
/// back denied, its data never released. The test holds the call in
/// between with a lock on its daily-quota row, taken from outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_held_between_its_decision_and_its_audit_write_is_fenced_by_a_revoke_elsewhere() {
    let c = Cluster::start("");
    register_purposes(c.node(1), &["fence-test"]).await;
    let grant = grant_names_to_market_regulation(&c, &[Operation::Get], "fence-test", 1000).await;
    let id = person_id(1);
    pull_as(c.node(2), "market-regulation", "fence-test", &id)
        .await
        .expect("allowed before the revocation");

    // Hold node 2's next call after its decision, at its quota reservation.
    let (db, conn) = tokio_postgres::connect(&c.db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    db.batch_execute("BEGIN; SELECT key FROM kv WHERE tree = 'quota' FOR UPDATE")
        .await
        .unwrap();
    let held = {
        let (channel, token) = (
            c.node(2).channel("market-regulation").await,
            c.node(2).token("market-regulation"),
        );
        let id = id.clone();
        tokio::spawn(async move {
            PopulationServiceClient::new(channel)
                .get_person(req(
                    GetPersonRequest {
                        context: ctx("fence-test"),
                        id_number: id,
                    },
                    &token,
                ))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!held.is_finished(), "the call waits at its reservation");
    revoke(c.node(1), &grant.id).await;
    // The revocation has returned; now let the held call go on.
    db.batch_execute("ROLLBACK").await.unwrap();
    let err = held.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // On the record: the held call's refusal, and no release after the
    // revocation's own entry.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let entries = c.shared_entries();
    let revoked_at = entries
        .iter()
        .position(|e| e.method.ends_with("RevokeGrant"))
        .expect("the revocation is on the record");
    let after: Vec<&AuditEntry> = entries[revoked_at..]
        .iter()
        .filter(|e| e.kind == EntryKind::Pull as i32)
        .collect();
    assert!(!after.is_empty(), "the held call is on the record");
    for e in after {
        assert_eq!(e.decision, AuditDecision::Deny as i32, "{e:?}");
        assert_eq!(e.record_count, 0, "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_quota_holds_across_three_nodes_under_a_three_by_sixteen_race() {
    let c = Cluster::start("");
    register_purposes(c.node(1), &["quota-race"]).await;
    grant_names_to_market_regulation(&c, &[Operation::Get, Operation::BatchGet], "quota-race", 60)
        .await;
    let ids: Vec<String> = (0..200).map(person_id).collect();
    let set = on_every_node(&c, "market-regulation", 16, |n, t, (mut client, token)| {
        let ids = ids.clone();
        async move {
            let mut got = 0usize;
            for k in 0..4 {
                let start = ((n * 16 + t) * 4 + k) * 2 % 190;
                match client
                    .batch_get_persons(req(
                        BatchGetPersonsRequest {
                            context: ctx("quota-race"),
                            id_numbers: ids[start..start + 2].to_vec(),
                        },
                        &token,
                    ))
                    .await
                {
                    Ok(r) => got += r.into_inner().persons.len(),
                    Err(e) => assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}"),
                }
            }
            got
        }
    })
    .await;
    let total: usize = set.join_all().await.into_iter().sum();
    assert_eq!(
        total, 60,
        "released across three nodes against a limit of 60"
    );
}

/// A grant made on node 1 is honoured on nodes 2 and 3 by the very next
/// call. A pull is judged under the control plane its node holds, which may
/// predate the grant by the moment its announcement takes; a refusal there
/// stands only once judged again under the control plane as committed now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_made_on_one_node_is_honoured_on_the_others_at_once() {
    let c = Cluster::start("");
    register_purposes(c.node(1), &["licensing"]).await;
    let id = person_id(0);
    for n in 1..=3 {
        let err = pull_as(c.node(n), "market-regulation", "licensing", &id)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "node {n}: {err:?}");
    }
    grant_names_to_market_regulation(&c, &[Operation::Get], "licensing", 100).await;
    for n in [2, 3] {
        let got = pull_as(c.node(n), "market-regulation", "licensing", &id)
            .await
            .unwrap_or_else(|e| panic!("node {n}: {e:?}"));
        assert!(
            got.person.unwrap().name.is_some(),
            "node {n}: the granted name"
        );
    }
}

/// A revocation made while every node is busy returns and bites: appends in
/// flight hold the fence only until their commit, and the change waiting
/// for them is not starved by the appends that keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_under_load_from_every_node_is_not_starved() {
    let c = Cluster::start("");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let set = on_every_node(&c, "civil-affairs", 8, |n, t, (mut client, token)| {
        let stop = stop.clone();
        async move {
            let mut served = 0usize;
            let mut i = t;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 8;
                client
                    .get_person(social_assistance_pull(i, &token))
                    .await
                    .unwrap_or_else(|e| panic!("node {n}: {e:?}"));
                served += 1;
            }
            served
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let grants = grants_of(c.node(1), "street-office").await;
    assert!(!grants.is_empty());
    for g in &grants {
        revoke(c.node(1), g).await;
    }
    let err = pull_as(
        c.node(3),
        "street-office",
        "grid-event-handling",
        &person_id(0),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served: usize = set.join_all().await.into_iter().sum();
    assert!(served > 100, "{served} pulls under the revocation");
}

/// kill -9 of one node while all three serve pulls: every receipt any node
/// gave is in the shared log with the leaf hash it named, the killed node's
/// replica catches up when it starts again, and every replica verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_under_load_loses_no_acknowledged_entry() {
    let mut c = Cluster::start("");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let set = on_every_node(&c, "civil-affairs", 4, |n, t, (mut client, token)| {
        let stop = stop.clone();
        async move {
            let mut receipts = Vec::new();
            let mut i = t;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && receipts.len() < 400 {
                i += 4;
                match client.get_person(social_assistance_pull(i, &token)).await {
                    Ok(r) => receipts.push(r.into_inner().receipt.unwrap()),
                    // The killed node's calls fail; none was acknowledged.
                    Err(_) if n == 2 => break,
                    Err(e) => panic!("node {n}: {e:?}"),
                }
            }
            receipts
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.nodes[1].kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let receipts: Vec<AuditReceipt> = set.join_all().await.into_iter().flatten().collect();
    assert!(receipts.len() > 100, "{} pulls", receipts.len());

    let shared = c.shared_entries();
    for r in &receipts {
        let e = shared
            .get(r.leaf_index as usize)
            .unwrap_or_else(|| panic!("acknowledged entry {} is missing", r.leaf_index));
        assert_eq!(
            govshare::audit::leaf_hash(&e.encode_to_vec()).to_vec(),
            r.leaf_hash,
            "entry {} is the one acknowledged",
            r.leaf_index
        );
    }

    // The killed node starts again and its replica catches up: a graceful
    // stop copies everything the shared log holds.
    c.nodes[1] = c.start_node(2);
    assert!(c.nodes[1].stop());
    let held = govshare::audit::segment::read_all(&c.dir(2).join("audit"))
        .unwrap()
        .len();
    assert!(
        held >= shared.len(),
        "the replica holds {held} of {}",
        shared.len()
    );
    for g in &mut c.nodes {
        g.stop();
    }
    for n in 1..=3 {
        verify_replica(&c.dir(n));
    }
}

/// One node at a time asks the witness: an export from the leader verifies
/// offline with the witness's cosignature and covers every node's pulls;
/// when the leader dies, another node takes the lead and its checkpoints
/// are cosigned in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_witnessed_log_covers_every_node_and_the_lead_moves_when_its_holder_dies_or_hangs() {
    let wdir = tempfile::tempdir().unwrap();
    // The witness is set up with the log's verifier key, which the first
    // start makes: the cluster starts once without it, then with it.
    let mut c = Cluster::start("");
    for g in &mut c.nodes {
        assert!(g.stop());
    }
    let witness = Witness::start(wdir.path(), &c.dir(1).join("pki/audit-log.pub"));
    c.extra = witness.config();
    c.nodes = (1..=3).map(|n| c.start_node(n)).collect();
    let leader = |c: &Cluster| -> Option<usize> {
        (1..=3).find(|n| {
            std::fs::read_to_string(c.dir(*n).join("server.log"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("leads the shared audit log"))
                .count()
                > 0
        })
    };
    let id = person_id(2);
    for n in 1..=3 {
        pull_as(c.node(n), "civil-affairs", "social-assistance", &id)
            .await
            .unwrap();
    }
    let wit = format!("witness.test/w1={}", witness.key);
    let export_verifies = |c: &Cluster, n: usize| -> String {
        let out_file = c.root.path().join(format!("export-{n}.jsonl"));
        let (ok, out) = cli(&[
            "audit",
            "--addr",
            &c.node(n).addr.to_string(),
            "--pki",
            c.dir(n).join("pki").to_str().unwrap(),
            "export",
            "--out",
            out_file.to_str().unwrap(),
        ]);
        assert!(ok, "{out}");
        let (ok, out) = cli(&[
            "audit",
            "verify",
            "--export",
            out_file.to_str().unwrap(),
            "--public-key",
            c.dir(n).join("pki/audit-log.pub").to_str().unwrap(),
            "--witness",
            &wit,
            "--min-witnesses",
            "1",
        ]);
        assert!(ok, "node {n}: {out}");
        std::fs::read_to_string(out_file).unwrap()
    };
    // Wait for a cosigned checkpoint over all three pulls.
    let first = wait_for(|| leader(&c)).await;
    let size = c.shared_entries().len();
    let text = wait_for_export(&c, first, size, &export_verifies).await;
    for n in 1..=3 {
        assert!(
            text.contains(&format!("\"node\":\"node-{n}\"")),
            "the export holds node-{n}'s entries"
        );
    }

    // The leader dies; another node takes the lead and is cosigned.
    c.nodes[first - 1].kill();
    let others: Vec<usize> = (1..=3).filter(|n| *n != first).collect();
    for n in &others {
        pull_as(c.node(*n), "civil-affairs", "social-assistance", &id)
            .await
            .unwrap();
    }
    let next = wait_for(|| {
        others.iter().copied().find(|n| {
            std::fs::read_to_string(c.dir(*n).join("server.log"))
                .unwrap_or_default()
                .contains("leads the shared audit log")
        })
    })
    .await;
    let size = c.shared_entries().len();
    wait_for_export(&c, next, size, &export_verifies).await;

    // The next leader hangs (a frozen process keeps its database session
    // open: the kernel still answers for it). Past the lead's lease the
    // last node ends that session, takes the lead and is cosigned.
    c.nodes[next - 1].signal("STOP");
    let last = others.iter().copied().find(|n| *n != next).unwrap();
    let deadline = Instant::now() + Duration::from_secs(45);
    while !std::fs::read_to_string(c.dir(last).join("server.log"))
        .unwrap_or_default()
        .contains("leads the shared audit log")
    {
        assert!(Instant::now() < deadline, "node {last} never took the lead");
        // The log keeps growing, as under load: each new checkpoint asks
        // for the lead.
        pull_as(c.node(last), "civil-affairs", "social-assistance", &id)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let size = c.shared_entries().len();
    wait_for_export(&c, last, size, &export_verifies).await;
    // Woken, the old leader serves again, and is not the leader.
    c.nodes[next - 1].signal("CONT");
    pull_as(c.node(next), "civil-affairs", "social-assistance", &id)
        .await
        .unwrap();
    let size = c.shared_entries().len();
    wait_for_export(&c, last, size, &export_verifies).await;
}

async fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Exports from node `n` until its newest cosigned checkpoint covers `size`
/// entries.
async fn wait_for_export(
    c: &Cluster,
    n: usize,
    size: usize,
    export: &impl Fn(&Cluster, usize) -> String,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let path = c.dir(n).join("audit/checkpoints.log");
        let notes = govshare::audit::checkpoint::read_notes(&path)
            .unwrap()
            .unwrap_or_default();
        let covered = notes.iter().rev().any(|note| {
            note.contains("— witness.test/w1")
                && note
                    .lines()
                    .nth(1)
                    .and_then(|s| s.parse::<usize>().ok())
                    .is_some_and(|s| s >= size)
        });
        if covered {
            return export(c, n);
        }
        assert!(
            Instant::now() < deadline,
            "node {n}: no cosigned checkpoint of {size} entries"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An operator upgrading a cluster: its store was written before records
/// were kept in index order, and two nodes of this release start on it at
/// once. Both move the records into that order together (each under the
/// collection's lock, never over a record already placed): every record
/// ends placed exactly once, and both nodes serve what the cluster served
/// before, by key and by region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_upgrading_one_store_at_once_place_every_record_once() {
    let mut c = Cluster::start("");
    let id = person_id(0);
    let served = async |gw: &Gateway| {
        let by_key = pull_as(gw, "civil-affairs", "social-assistance", &id)
            .await
            .unwrap()
            .person;
        (
            by_key,
            common::list_all(gw, "public-security", "310115").await,
        )
    };
    let before = served(c.node(1)).await;
    assert!(before.0.is_some() && !before.1.is_empty());
    for node in &mut c.nodes {
        node.stop();
    }
    let location = govshare::store::Location::Postgres(govshare::store::postgres::Location {
        url: c.db.url.clone(),
        pool_size: 2,
        ca: None,
    });
    let store = govshare::store::open(&location).unwrap();
    common::put_back_in_the_earlier_layout(&*store);

    let (one, two) = std::thread::scope(|s| {
        let one = s.spawn(|| c.start_node(1));
        let two = s.spawn(|| c.start_node(2));
        (one.join().unwrap(), two.join().unwrap())
    });
    for node in [&one, &two] {
        assert_eq!(served(node).await, before, "{}", node.dir.display());
    }
    common::assert_each_record_placed_once(&*store);
    let moved = |node: &Gateway| {
        std::fs::read_to_string(node.dir.join("server.log"))
            .unwrap()
            .contains("records moved into index order")
    };
    assert!(moved(&one) || moved(&two), "neither node moved a record");
}
