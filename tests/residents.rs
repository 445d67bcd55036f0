//! Residents and sources (issue "Residents see who read their data;
//! pullers send corrections back to the source"), over real gRPC: the
//! resident tracker shows a resident exactly the uses of their record —
//! not another's, not the operator, nothing under a covert grant until its
//! delay has passed (a demo clock moved ahead) — and a correction flows
//! from a puller to the one source department and back, revealing nothing
//! its grant did not.

mod common;

use common::{Gateway, admin_client, create_grant, ctx, district, get_person, req, residents};
use govshare::proto::correction_service_client::CorrectionServiceClient;
use govshare::proto::population_service_client::PopulationServiceClient;
use govshare::proto::publish_service_client::PublishServiceClient;
use govshare::proto::resident_service_client::ResidentServiceClient;
use govshare::proto::*;
use tonic::Code;

async fn history(gw: &Gateway, id: &str) -> Result<MyAccessHistoryResponse, tonic::Status> {
    ResidentServiceClient::new(gw.channel("resident-portal").await)
        .my_access_history(req(
            MyAccessHistoryRequest {
                id_number: id.into(),
                ..Default::default()
            },
            &gw.token("resident-portal"),
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_shows_a_resident_exactly_the_uses_of_their_record() {
    let gw = Gateway::start("");
    let (inside, outside) = residents();
    let (a, b) = (inside.id_number.unwrap(), outside.id_number.unwrap());
    // Uses of A: an answered pull, a refused one (outside the street
    // office's rows), a batch that names A among others.
    get_person(&gw, "civil-affairs", "social-assistance", &a)
        .await
        .unwrap();
    get_person(&gw, "street-office", "grid-event-handling", &b)
        .await
        .unwrap_err();
    get_person(&gw, "street-office", "wrong-purpose", &a)
        .await
        .unwrap_err();
    PopulationServiceClient::new(gw.channel("public-security").await)
        .batch_get_persons(req(
            BatchGetPersonsRequest {
                context: ctx("public-security"),
                id_numbers: vec![a.clone(), b.clone()],
            },
            &gw.token("public-security"),
        ))
        .await
        .unwrap();
    // A use of B only.
    get_person(&gw, "civil-affairs", "social-assistance", &b)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;

    let h = history(&gw, &a).await.unwrap();
    let seen: Vec<(&str, &str, i32)> = h
        .events
        .iter()
        .map(|e| (e.department_id.as_str(), e.purpose.as_str(), e.decision))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "public-security",
                "public-security",
                AuditDecision::Allow as i32
            ),
            ("street-office", "wrong-purpose", AuditDecision::Deny as i32),
            (
                "civil-affairs",
                "social-assistance",
                AuditDecision::Allow as i32
            ),
        ],
        "newest first, A's uses and no other"
    );
    let civil = &h.events[2];
    assert_eq!(civil.department, "民政局");
    assert_eq!(civil.purpose_name, "社会救助");
    assert_eq!(civil.case_id, "CASE-2026-0001");
    assert!(
        civil.fields.contains(&"name".to_string()),
        "{:?}",
        civil.fields
    );
    assert!(h.receipt.is_some(), "the read has its own receipt");
    // Never the operator, the token, the certificate.
    let bytes = format!("{h:?}");
    for secret in ["clerk-7", &common::jti(&gw.token("civil-affairs"))] {
        assert!(!bytes.contains(secret), "the answer names {secret}");
    }
    // B's history holds B's pulls, the refused one included.
    let hb = history(&gw, &b).await.unwrap();
    assert_eq!(hb.events.len(), 3, "{:?}", hb.events);
    assert!(hb.events.iter().any(|e| e.department_id == "street-office"
        && e.decision == AuditDecision::Deny as i32));
    // The portal's own reads are in the log, naming the resident only by
    // a digest.
    let reads: Vec<AuditEntry> = gw
        .audit_entries()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.kind == EntryKind::ResidentRead as i32)
        .collect();
    assert_eq!(reads.len(), 2);
    for e in &reads {
        let text = format!("{e:?}");
        assert!(!text.contains(&a) && !text.contains(&b), "{text}");
        assert!(e.query.as_ref().unwrap().keys[0].starts_with("resident:"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_asks_by_citizen_id_only_and_holds_no_other_role() {
    let gw = Gateway::start("");
    let d = district();
    let uscc = d.entities[0].uscc.clone().unwrap();
    let grid = d.grids[0].grid_code.clone().unwrap();
    for bad in [uscc.as_str(), grid.as_str(), ""] {
        let err = history(&gw, bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
    }
    // No other identity may ask.
    let err = ResidentServiceClient::new(gw.channel("auditor").await)
        .my_access_history(req(
            MyAccessHistoryRequest {
                id_number: residents().0.id_number.unwrap(),
                ..Default::default()
            },
            &gw.token("auditor"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // The portal pulls nothing, and can be given no second role or grant.
    let err = get_person(
        &gw,
        "resident-portal",
        "social-assistance",
        &residents().0.id_number.unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut a = admin_client(&gw, "admin").await;
    let admin = gw.token("admin");
    let thumb = govshare::control::certs::thumbprint(&x509_der(
        &std::fs::read_to_string(gw.pki("resident-portal.pem")).unwrap(),
    ));
    let err = a
        .issue_token(req(
            IssueTokenRequest {
                department: "resident-portal".into(),
                certificate_thumbprint: thumb,
                subject: "portal".into(),
                roles: vec!["resident-portal".into(), "puller".into()],
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = create_grant(
        &gw,
        Grant {
            department: "resident-portal".into(),
            dataset: "population".into(),
            operations: vec![Operation::Get.into()],
            fields: vec![FieldGrant {
                field: "name".into(),
                view: FieldView::Clear.into(),
            }],
            regions: vec!["310115".into()],
            purposes: vec!["social-assistance".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // Every refusal above is on the record.
    let refused = gw
        .audit_entries()
        .into_iter()
        .filter(|(_, e)| {
            e.kind == EntryKind::ResidentRead as i32 && e.decision == AuditDecision::Deny as i32
        })
        .count();
    assert_eq!(refused, 4);
}

fn x509_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    data_encoding::BASE64.decode(b64.as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_covert_pull_is_withheld_from_the_resident_until_its_delay_has_passed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut gw = Gateway::start_in(&dir, "");
    let (inside, _) = residents();
    let a = inside.id_number.unwrap();
    get_person(&gw, "civil-affairs", "social-assistance", &a)
        .await
        .unwrap();
    get_person(&gw, "public-security", "criminal-investigation", &a)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let h = history(&gw, &a).await.unwrap();
    assert_eq!(
        h.events.len(),
        1,
        "the covert pull is withheld: {:?}",
        h.events
    );
    assert_eq!(h.events[0].department_id, "civil-affairs");
    // The log has it at once, with the time until which it is withheld.
    let covert = gw
        .audit_entries()
        .into_iter()
        .map(|(_, e)| e)
        .find(|e| e.purpose == "criminal-investigation")
        .unwrap();
    let after = covert.disclosed_after.unwrap().seconds - covert.time.unwrap().seconds;
    assert!(
        (90 * 86_400 - 5..=90 * 86_400 + 5).contains(&after),
        "{after}"
    );
    // Auditors see which entries are withheld, and until when.
    let mut audit =
        govshare::proto::audit_service_client::AuditServiceClient::new(gw.channel("auditor").await);
    let mut pages = audit
        .query_audit(req(
            QueryAuditRequest {
                withheld_from_residents: true,
                ..Default::default()
            },
            &gw.token("auditor"),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut withheld = Vec::new();
    while let Some(p) = pages.message().await.unwrap() {
        withheld.extend(p.entries);
    }
    assert_eq!(withheld.len(), 1);
    assert_eq!(withheld[0].purpose, "criminal-investigation");
    // 91 days later (a demo clock moved ahead), the resident sees it.
    assert!(gw.stop());
    let gw = Gateway::start_in(&dir, "demo_clock_offset = \"91d\"");
    let h = history(&gw, &a).await.unwrap();
    let seen: Vec<&str> = h.events.iter().map(|e| e.purpose.as_str()).collect();
    assert_eq!(seen, ["criminal-investigation", "social-assistance"]);
    assert_eq!(h.events[0].purpose_name, "刑事侦查");
    // The log says the clock was moved.
    let moved = gw
        .audit_entries()
        .into_iter()
        .map(|(_, e)| e)
        .find(|e| e.method == "demo_clock_offset")
        .expect("the moved clock is in the log");
    assert!(moved.message.contains("(91.0 days)"), "{}", moved.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_is_set_only_under_four_eyes_and_at_most_180_days() {
    let gw = Gateway::start("");
    let mut a = admin_client(&gw, "admin").await;
    let admin = gw.token("admin");
    let grant = |days: u32| Grant {
        department: "civil-affairs".into(),
        dataset: "population".into(),
        operations: vec![Operation::Get.into()],
        fields: vec![FieldGrant {
            field: "name".into(),
            view: FieldView::Clear.into(),
        }],
        regions: vec!["310115".into()],
        purposes: vec!["social-assistance".into()],
        legal_basis: "a law".into(),
        disclosure_delay_days: days,
        ..Default::default()
    };
    let err = a
        .create_grant(req(
            CreateGrantRequest {
                grant: Some(grant(181)),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("at most 180"), "{}", err.message());
    // An unconditional grant with a delay becomes a pending request.
    let r = a
        .create_grant(req(
            CreateGrantRequest {
                grant: Some(grant(30)),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(r.grant.is_none());
    let pending = r.pending_request.unwrap();
    assert_eq!(pending.disclosure_delay_days, 30);
    // A department asking for a delay for itself is never auto-approved.
    let mine = admin_client(&gw, "civil-affairs")
        .await
        .submit_access_request(req(
            SubmitAccessRequestRequest {
                request: Some(AccessRequest {
                    dataset: "population".into(),
                    operations: vec![Operation::Get.into()],
                    fields: vec![FieldGrant {
                        field: "name".into(),
                        view: FieldView::Clear.into(),
                    }],
                    regions: vec!["310115".into()],
                    purposes: vec!["social-assistance".into()],
                    justification: "an investigation".into(),
                    disclosure_delay_days: 30,
                    limits: Some(GrantLimits {
                        max_records_per_call: 100,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            &gw.token("civil-affairs"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.status, AccessRequestStatus::Pending as i32);
    assert!(
        mine.auto_approval_refused_because
            .contains("disclosure_delay_days=30"),
        "{}",
        mine.auto_approval_refused_because
    );
    // Whoever filed it cannot decide it: a second administrator must.
    let err = a
        .decide_access_request(req(
            DecideAccessRequestRequest {
                id: pending.id,
                approve: true,
                reason: "court order 2026-17".into(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // The demo's covert grant carries its delay, visible in ListGrants.
    let grants = admin_client(&gw, "public-security")
        .await
        .list_grants(req(
            ListGrantsRequest {
                department: "public-security".into(),
                ..Default::default()
            },
            &gw.token("public-security"),
        ))
        .await
        .unwrap()
        .into_inner()
        .grants;
    let covert = grants
        .iter()
        .find(|g| g.id == "demo-public-security-covert")
        .unwrap();
    assert_eq!(covert.disclosure_delay_days, 90);
}

async fn file(
    gw: &Gateway,
    identity: &str,
    purpose: &str,
    key: &str,
    field: &str,
    value: &str,
) -> Result<Correction, tonic::Status> {
    CorrectionServiceClient::new(gw.channel(identity).await)
        .file_correction(req(
            FileCorrectionRequest {
                context: ctx(purpose),
                dataset: "population".into(),
                key: key.into(),
                field: field.into(),
                proposed_value: value.into(),
                evidence: "called the resident on 2026-12-01".into(),
            },
            &gw.token(identity),
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn answer(
    gw: &Gateway,
    identity: &str,
    id: &str,
    a: answer_correction_request::Answer,
) -> Result<Correction, tonic::Status> {
    CorrectionServiceClient::new(gw.channel(identity).await)
        .answer_correction(req(
            AnswerCorrectionRequest {
                id: id.into(),
                answer: Some(a),
            },
            &gw.token(identity),
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correction_flows_to_the_source_and_back_revealing_nothing() {
    use answer_correction_request::Answer;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut gw = Gateway::start_in(&dir, "");
    let (inside, outside) = residents();
    let (a, b) = (
        inside.id_number.clone().unwrap(),
        outside.id_number.unwrap(),
    );

    // The street office may read neither B (another street) nor anyone's
    // phone; civil affairs may read A's phone (masked). Refusals read the
    // same whether the record exists or not.
    let absent = "11010519491231002X";
    let mut refusals = Vec::new();
    for (who, purpose, key, field) in [
        ("street-office", "grid-event-handling", b.as_str(), "name"),
        ("street-office", "grid-event-handling", a.as_str(), "phone"),
        ("street-office", "grid-event-handling", absent, "name"),
    ] {
        let err = file(&gw, who, purpose, key, field, "13800138000")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{who} {key} {field}");
        refusals.push(err.message().replace(field, "FIELD"));
    }
    assert!(refusals.windows(2).all(|w| w[0] == w[1]), "{refusals:?}");
    // A malformed proposal is refused, naming the rule.
    let err = file(
        &gw,
        "civil-affairs",
        "social-assistance",
        &a,
        "phone",
        "call me",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("phone"), "{}", err.message());

    // Filed; it lands in the source's queue, and the reporter follows it.
    let filed = file(
        &gw,
        "civil-affairs",
        "social-assistance",
        &a,
        "phone",
        "13800138000",
    )
    .await
    .unwrap();
    assert_eq!(filed.status, CorrectionStatus::Open as i32);
    assert_eq!(filed.source_department, "public-security");
    assert!(filed.read_version >= 1);
    let queue = CorrectionServiceClient::new(gw.channel("public-security").await)
        .list_corrections(req(
            ListCorrectionsRequest::default(),
            &gw.token("public-security"),
        ))
        .await
        .unwrap()
        .into_inner()
        .corrections;
    assert_eq!(queue.iter().map(|c| &c.id).collect::<Vec<_>>(), [&filed.id]);
    // Another department's system is not the source: it cannot even
    // tell this correction from one that does not exist.
    let err = answer(
        &gw,
        "market-regulation",
        &filed.id,
        Answer::RejectedReason("no".into()),
    )
    .await
    .unwrap_err();
    let absent = answer(
        &gw,
        "market-regulation",
        "corr-doesnotexist",
        Answer::RejectedReason("no".into()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(
        err.message().replace(&filed.id, "ID"),
        absent.message().replace("corr-doesnotexist", "ID")
    );
    // A system that publishes nothing answers nothing, existing or not.
    for id in [filed.id.as_str(), "corr-doesnotexist"] {
        let err = answer(
            &gw,
            "street-office",
            id,
            Answer::RejectedReason("no".into()),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{id}: {err:?}");
    }
    // ACCEPTED must name a version that exists and is newer than the one read.
    for v in [filed.read_version, filed.read_version + 1] {
        let err = answer(
            &gw,
            "public-security",
            &filed.id,
            Answer::AcceptedVersion(v),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "version {v}");
    }
    // The source publishes the fix, then accepts naming its version.
    let mut fixed = inside.clone();
    fixed.phone = Some("13800138000".into());
    let summary = PublishServiceClient::new(gw.channel("public-security").await)
        .upsert_persons(req(
            tokio_stream::iter(vec![fixed]),
            &gw.token("public-security"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.accepted, 1);
    let done = answer(
        &gw,
        "public-security",
        &filed.id,
        Answer::AcceptedVersion(filed.read_version + 1),
    )
    .await
    .unwrap();
    assert_eq!(done.status, CorrectionStatus::Accepted as i32);
    let err = answer(
        &gw,
        "public-security",
        &filed.id,
        Answer::RejectedReason("x".into()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "answered once");
    let mine = CorrectionServiceClient::new(gw.channel("civil-affairs").await)
        .list_my_corrections(req(
            ListMyCorrectionsRequest::default(),
            &gw.token("civil-affairs"),
        ))
        .await
        .unwrap()
        .into_inner()
        .corrections;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].fixed_version, filed.read_version + 1);
    // Nothing of the record beyond what the reporter sent leaves.
    let shown = format!("{mine:?}");
    for stored in [inside.name.unwrap(), inside.residence_address.unwrap()] {
        assert!(!shown.contains(&stored), "the answer shows '{stored}'");
    }

    // A second one stays open past its deadline (5 working days): a week
    // and a day later it is overdue, in the queue and in the metrics.
    let late = file(
        &gw,
        "civil-affairs",
        "social-assistance",
        &a,
        "name",
        "张三丰",
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(gw.stop());
    let gw = Gateway::start_in(&dir, "demo_clock_offset = \"8d\"");
    let overdue = CorrectionServiceClient::new(gw.channel("admin").await)
        .list_corrections(req(
            ListCorrectionsRequest {
                overdue: true,
                ..Default::default()
            },
            &gw.token("admin"),
        ))
        .await
        .unwrap()
        .into_inner()
        .corrections;
    assert_eq!(
        overdue.iter().map(|c| &c.id).collect::<Vec<_>>(),
        [&late.id]
    );
    assert!(overdue[0].overdue);
    let (_, metrics) = gw.ops_get("/metrics").await;
    assert!(
        metrics.contains("govshare_corrections_overdue{dataset=\"population\"} 1"),
        "{metrics}"
    );
    let stats =
        govshare::proto::audit_service_client::AuditServiceClient::new(gw.channel("auditor").await)
            .audit_stats(req(AuditStatsRequest::default(), &gw.token("auditor")))
            .await
            .unwrap()
            .into_inner()
            .corrections;
    let pop = stats.iter().find(|s| s.dataset == "population").unwrap();
    assert_eq!(
        (pop.filed, pop.accepted, pop.open, pop.overdue),
        (2, 1, 1, 1),
        "{pop:?}"
    );
    assert_eq!(pop.source_department, "public-security");
    // Every filing, listing and answer is on the record.
    let kinds = gw
        .audit_entries()
        .into_iter()
        .filter(|(_, e)| e.kind == EntryKind::Correction as i32)
        .count();
    assert!(kinds >= 12, "{kinds} correction entries");
}

/// A citizen ID's check character may be typed as a lowercase `x`; the
/// gateway reads the same record, so the resident must see the use — the
/// pull, the refusal and the correction — whichever way it was typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowercase_check_character_is_the_same_resident() {
    let gw = Gateway::start("");
    let upper = district()
        .persons
        .into_iter()
        .filter_map(|p| p.id_number)
        .find(|id| id.ends_with('X'))
        .expect("some demo ID ends in X");
    let lower = upper.to_ascii_lowercase();
    get_person(&gw, "civil-affairs", "social-assistance", &lower)
        .await
        .unwrap();
    get_person(&gw, "civil-affairs", "wrong-purpose", &lower)
        .await
        .unwrap_err();
    file(
        &gw,
        "civil-affairs",
        "social-assistance",
        &lower,
        "name",
        "张三",
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    for asked in [&upper, &lower] {
        let h = history(&gw, asked).await.unwrap();
        assert_eq!(h.events.len(), 3, "asked as {asked}: {:?}", h.events);
    }
    // One resident, one digest in the portal's own entries.
    let digests: std::collections::HashSet<String> = gw
        .audit_entries()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.kind == EntryKind::ResidentRead as i32)
        .map(|e| e.query.unwrap().keys[0].clone())
        .collect();
    assert_eq!(digests.len(), 1, "{digests:?}");
}

/// A covert department's refusals tip the resident off as surely as its
/// answered pulls: a call refused before any grant is judged (no case id)
/// is withheld as long as the department's longest delay on the dataset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_covert_departments_refusals_are_withheld_too() {
    let gw = Gateway::start("");
    let a = residents().0.id_number.unwrap();
    let mut ps = PopulationServiceClient::new(gw.channel("public-security").await);
    let mut no_case = ctx("criminal-investigation").unwrap();
    no_case.case_id.clear();
    let err = ps
        .get_person(req(
            GetPersonRequest {
                context: Some(no_case),
                id_number: a.clone(),
            },
            &gw.token("public-security"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Refused after judging, under a purpose the covert grant names but
    // for a dataset field plan another (non-covert) grant is closer to.
    get_person(&gw, "public-security", "no-such-purpose", &a)
        .await
        .unwrap_err();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let h = history(&gw, &a).await.unwrap();
    assert!(
        h.events
            .iter()
            .all(|e| e.department_id != "public-security"),
        "a covert department's refusal reached the resident: {:?}",
        h.events
    );
}

/// Filing is no side door: each filing reads a record and counts against
/// the day's limit like a GET; one field of one record has one open
/// correction per department; and the source reads its queue in pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filings_are_metered_bounded_and_paged() {
    let gw = Gateway::start("");
    common::register_purposes(&gw, &["quota-test"]).await;
    create_grant(
        &gw,
        Grant {
            department: "market-regulation".into(),
            dataset: "population".into(),
            operations: vec![Operation::Get.into()],
            fields: vec![FieldGrant {
                field: "name".into(),
                view: FieldView::Clear.into(),
            }],
            regions: vec!["310115".into()],
            purposes: vec!["quota-test".into()],
            limits: Some(GrantLimits {
                max_records_per_day: 2,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ids: Vec<String> = district()
        .persons
        .into_iter()
        .filter_map(|p| p.id_number)
        .take(3)
        .collect();
    let first = file(
        &gw,
        "market-regulation",
        "quota-test",
        &ids[0],
        "name",
        "甲",
    )
    .await
    .unwrap();
    let again = file(
        &gw,
        "market-regulation",
        "quota-test",
        &ids[0],
        "name",
        "乙",
    )
    .await
    .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    assert!(again.message().contains(&first.id), "{}", again.message());
    file(
        &gw,
        "market-regulation",
        "quota-test",
        &ids[1],
        "name",
        "丙",
    )
    .await
    .unwrap();
    let over = file(
        &gw,
        "market-regulation",
        "quota-test",
        &ids[2],
        "name",
        "丁",
    )
    .await
    .unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
    assert!(
        over.message().contains("max_records_per_day"),
        "{}",
        over.message()
    );
    // The source's queue, one at a time.
    let mut c = CorrectionServiceClient::new(gw.channel("public-security").await);
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let p = c
            .list_corrections(req(
                ListCorrectionsRequest {
                    page_size: 1,
                    page_token,
                    ..Default::default()
                },
                &gw.token("public-security"),
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(p.corrections.len() <= 1);
        seen.extend(p.corrections.into_iter().map(|c| c.id));
        if p.next_page_token.is_empty() {
            break;
        }
        page_token = p.next_page_token;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}
