//! AuditService over real TLS gRPC: the data tracker, role checks, and
//! receipts proven against signed, mutually consistent checkpoints.

mod common;

use common::{Gateway, ctx, district, req, residents};
use govshare::audit::checkpoint::LogVerifier;
use govshare::audit::merkle;
use govshare::proto::audit_service_client::AuditServiceClient;
use govshare::proto::population_service_client::PopulationServiceClient;
use govshare::proto::*;
use std::collections::BTreeSet;
use std::time::Duration;
use tonic::Code;

fn hashes(v: &[Vec<u8>]) -> Vec<merkle::Hash> {
    v.iter().map(|h| h.as_slice().try_into().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_tracker_returns_exactly_the_pulls_that_touched_a_subject() {
    let gw = Gateway::start("");
    let (inside, outside) = residents();
    let (a, b) = (
        inside.id_number.clone().unwrap(),
        outside.id_number.clone().unwrap(),
    );
    let get = |id: &str, purpose| GetPersonRequest {
        context: ctx(purpose),
        id_number: id.into(),
    };
    let mut civil = PopulationServiceClient::new(gw.channel("civil-affairs").await);
    civil
        .get_person(req(
            get(&b, "social-assistance"),
            &gw.token("civil-affairs"),
        ))
        .await
        .unwrap();
    let mut street_office = PopulationServiceClient::new(gw.channel("street-office").await);
    let denied = street_office
        .get_person(req(
            get(&b, "grid-event-handling"),
            &gw.token("street-office"),
        ))
        .await;
    assert_eq!(
        denied.unwrap_err().code(),
        Code::NotFound,
        "out of scope looks absent"
    );
    civil
        .get_person(req(get(&b, "wrong-purpose"), &gw.token("civil-affairs")))
        .await
        .unwrap_err();
    let mut ps = PopulationServiceClient::new(gw.channel("public-security").await);
    ps.batch_get_persons(req(
        BatchGetPersonsRequest {
            context: ctx("public-security"),
            id_numbers: vec![a.clone(), b.clone()],
        },
        &gw.token("public-security"),
    ))
    .await
    .unwrap();
    civil
        .get_person(req(
            get(&a, "social-assistance"),
            &gw.token("civil-affairs"),
        ))
        .await
        .unwrap();

    let expected: BTreeSet<u64> = gw
        .audit_entries()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| govshare::audit::index::mentions(e, &b))
        .map(|e| e.index)
        .collect();
    assert_eq!(
        expected.len(),
        4,
        "B was returned, out of scope, refused for its purpose, and batched"
    );

    // Newest first, each pull once, though a GET names its key twice (as
    // requested and as returned).
    let expected: Vec<u64> = expected.into_iter().rev().collect();
    let mut auditor = AuditServiceClient::new(gw.channel("auditor").await);
    let mut got = Vec::new();
    for _ in 0..50 {
        let mut s = auditor
            .subject_access_history(req(
                SubjectAccessHistoryRequest {
                    id_number: b.clone(),
                    uscc: String::new(),
                },
                &gw.token("auditor"),
            ))
            .await
            .unwrap()
            .into_inner();
        got.clear();
        while let Some(page) = s.message().await.unwrap() {
            got.extend(page.entries.iter().map(|e| e.index));
        }
        if got == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got, expected);

    // A non-auditor is refused, and that refusal is itself audited.
    let mut civil_audit = AuditServiceClient::new(gw.channel("civil-affairs").await);
    let err = civil_audit
        .subject_access_history(req(
            SubjectAccessHistoryRequest {
                id_number: b.clone(),
                uscc: String::new(),
            },
            &gw.token("civil-affairs"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let last = gw.audit_entries().pop().unwrap().1;
    assert_eq!(last.kind, EntryKind::AuditRead as i32);
    assert_eq!(
        (last.decision, last.reason_code.as_str()),
        (AuditDecision::Deny as i32, "ROLE_NOT_GRANTED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_is_proven_against_later_consistent_checkpoints() {
    let mut gw = Gateway::start("");
    let id = district().persons[0].id_number.clone().unwrap();
    let mut civil = PopulationServiceClient::new(gw.channel("civil-affairs").await);
    let receipt = civil
        .get_person(req(
            GetPersonRequest {
                context: ctx("social-assistance"),
                id_number: id,
            },
            &gw.token("civil-affairs"),
        ))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    let key =
        LogVerifier::parse(&std::fs::read_to_string(gw.pki("audit-log.pub")).unwrap()).unwrap();
    let mut audit = AuditServiceClient::new(gw.channel("civil-affairs").await);
    let token = gw.token("civil-affairs");
    let first = audit
        .get_checkpoint(req(GetCheckpointRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    let cp1 = key.open(&first.note).unwrap();
    assert!(cp1.size > receipt.leaf_index);
    // The department proves its own receipt.
    let proof = audit
        .get_inclusion_proof(req(
            GetInclusionProofRequest {
                index: receipt.leaf_index,
                tree_size: cp1.size,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let leaf: merkle::Hash = receipt.leaf_hash.as_slice().try_into().unwrap();
    assert!(merkle::verify_inclusion(
        &leaf,
        receipt.leaf_index,
        cp1.size,
        &hashes(&proof.hashes),
        &cp1.root
    ));
    // …but not someone else's entry (index 0 is the bootstrap record).
    let err = audit
        .get_inclusion_proof(req(
            GetInclusionProofRequest {
                index: 0,
                tree_size: cp1.size,
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // More traffic, a later checkpoint, and a consistency proof between them.
    for _ in 0..5 {
        audit
            .get_checkpoint(req(GetCheckpointRequest {}, &token))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = audit
        .get_checkpoint(req(GetCheckpointRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    let cp2 = key.open(&second.note).unwrap();
    assert!(cp2.size > cp1.size);
    let c = audit
        .get_consistency_proof(req(
            GetConsistencyProofRequest {
                old_size: cp1.size,
                new_size: cp2.size,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(merkle::verify_consistency(
        cp1.size,
        cp2.size,
        &cp1.root,
        &cp2.root,
        &hashes(&c.hashes)
    ));
    let again = audit
        .get_inclusion_proof(req(
            GetInclusionProofRequest {
                index: receipt.leaf_index,
                tree_size: cp2.size,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(merkle::verify_inclusion(
        &leaf,
        receipt.leaf_index,
        cp2.size,
        &hashes(&again.hashes),
        &cp2.root
    ));

    // A graceful stop signs a final checkpoint; the whole log verifies offline.
    gw.stop();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_govshare"))
        .args(["audit", "verify", "--data-dir"])
        .arg(&gw.dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = gw.audit_entries().len();
    assert!(
        stdout.contains(&format!("the newest signs {n} entries")),
        "{stdout}"
    );
}

/// Every AuditService call is on the record, refused and malformed ones
/// included: a department asking for a subject's history with a garbage
/// ID is refused for its role, and the refusal is an AUDIT_READ entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_malformed_subject_query_is_recorded() {
    let gw = Gateway::start("");
    let before = gw.audit_entries().len();
    let mut c = AuditServiceClient::new(gw.channel("civil-affairs").await);
    let err = c
        .subject_access_history(req(
            SubjectAccessHistoryRequest {
                id_number: "not-an-id".into(),
                ..Default::default()
            },
            &gw.token("civil-affairs"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let mut a = AuditServiceClient::new(gw.channel("auditor").await);
    let err = a
        .subject_access_history(req(
            SubjectAccessHistoryRequest {
                id_number: "not-an-id".into(),
                ..Default::default()
            },
            &gw.token("auditor"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let reads: Vec<_> = gw.audit_entries()[before..]
        .iter()
        .filter(|(_, e)| {
            e.kind == EntryKind::AuditRead as i32 && e.method.ends_with("SubjectAccessHistory")
        })
        .map(|(_, e)| e.decision)
        .collect();
    assert_eq!(reads.len(), 2, "both calls are on the record");
    assert_eq!(
        reads,
        [AuditDecision::Deny as i32, AuditDecision::Deny as i32],
        "refused for its role, refused as malformed"
    );
}
