//! AdminService over real TLS gRPC: every change is audited with its
//! before/after, refusals name the problem, and revocations, suspensions,
//! expiry and quotas bite on the very next call — including after a restart.

mod common;

use common::{Gateway, create_grant, ctx, district, jti, register_purposes, req, residents};
use govshare::proto::admin_service_client::AdminServiceClient;
use govshare::proto::population_service_client::PopulationServiceClient;
use govshare::proto::*;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

/// `ethnicity` CLEAR is made `not_shared` so the refusal of such fields can be shown.
const NOT_SHARED_ETHNICITY: &str = r#"
[[catalog_override]]
dataset = "population"
field = "ethnicity"
view = "CLEAR"
sharing = "not_shared"
"#;

async fn admin(gw: &Gateway, identity: &str) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(gw.channel(identity).await)
}

fn fg(field: &str, view: FieldView) -> FieldGrant {
    FieldGrant {
        field: field.into(),
        view: view.into(),
    }
}

fn all_ops() -> Vec<i32> {
    vec![
        Operation::Get.into(),
        Operation::BatchGet.into(),
        Operation::List.into(),
    ]
}

fn grant(dept: &str, fields: Vec<FieldGrant>, purpose: &str) -> Grant {
    Grant {
        department: dept.into(),
        dataset: "population".into(),
        operations: all_ops(),
        fields,
        regions: vec!["310115".into()],
        purposes: vec![purpose.into()],
        ..Default::default()
    }
}

fn in_secs(s: i64) -> Option<prost_types::Timestamp> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Some(prost_types::Timestamp {
        seconds: now + s,
        nanos: 0,
    })
}

fn some_ids(n: usize) -> Vec<String> {
    district()
        .persons
        .iter()
        .take(n)
        .map(|p| p.id_number.clone().unwrap())
        .collect()
}

async fn pull(
    gw: &Gateway,
    identity: &str,
    purpose: &str,
) -> Result<GetPersonResponse, tonic::Status> {
    let mut c = PopulationServiceClient::new(gw.channel(identity).await);
    c.get_person(req(
        GetPersonRequest {
            context: ctx(purpose),
            id_number: residents().0.id_number.unwrap(),
        },
        &gw.token(identity),
    ))
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_validation_names_each_problem() {
    let gw = Gateway::start(NOT_SHARED_ETHNICITY);
    let name = || fg("name", FieldView::Clear);
    let cases: Vec<(Grant, &str)> = vec![
        (
            grant(
                "civil-affairs",
                vec![fg("salary", FieldView::Clear)],
                "social-assistance",
            ),
            "no field 'salary'",
        ),
        (
            grant(
                "civil-affairs",
                vec![fg("sex", FieldView::Masked)],
                "social-assistance",
            ),
            "no MASKED view",
        ),
        (
            grant(
                "civil-affairs",
                vec![fg("ethnicity", FieldView::Clear)],
                "social-assistance",
            ),
            "not_shared",
        ),
        (
            Grant {
                regions: vec![],
                ..grant("civil-affairs", vec![name()], "social-assistance")
            },
            "regions: empty",
        ),
        (
            Grant {
                not_before: in_secs(7200),
                not_after: in_secs(3600),
                ..grant("civil-affairs", vec![name()], "social-assistance")
            },
            "ends before it starts",
        ),
        (
            grant(
                "civil-affairs",
                vec![fg("id_number", FieldView::Clear)],
                "social-assistance",
            ),
            "legal_basis: id_number=CLEAR",
        ),
        (
            grant("no-such-dept", vec![name()], "social-assistance"),
            "not registered",
        ),
    ];
    for (g, expect) in cases {
        let err = create_grant(&gw, g).await.unwrap_err();
        assert!(
            matches!(err.code(), Code::InvalidArgument | Code::NotFound),
            "{err:?}"
        );
        assert!(
            err.message().contains(expect),
            "{expect}: {}",
            err.message()
        );
    }
    // A conditional field with a legal basis becomes a pending access
    // request for a second administrator (four eyes), not a grant.
    let filed = admin(&gw, "admin")
        .await
        .create_grant(req(
            CreateGrantRequest {
                grant: Some(Grant {
                    legal_basis: "《社会救助暂行办法》第十一条".into(),
                    ..grant(
                        "civil-affairs",
                        vec![fg("id_number", FieldView::Clear)],
                        "social-assistance",
                    )
                }),
            },
            &gw.token("admin"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(filed.grant.is_none());
    let ok = filed.pending_request.unwrap();
    assert_eq!(ok.status, AccessRequestStatus::Pending as i32);
    assert!(ok.id.starts_with("ar-"));
    // Non-admins are refused, and the refusal is audited.
    let err = admin(&gw, "civil-affairs")
        .await
        .create_grant(req(
            CreateGrantRequest {
                grant: Some(grant("civil-affairs", vec![name()], "social-assistance")),
            },
            &gw.token("civil-affairs"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let entries = gw.audit_entries();
    let admin_entries: Vec<_> = entries
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e.kind == EntryKind::Admin as i32 && e.method.ends_with("/CreateGrant"))
        .collect();
    assert_eq!(
        admin_entries.len(),
        9,
        "every CreateGrant call, allowed or not"
    );
    let last = admin_entries.last().unwrap();
    assert_eq!(last.decision, AuditDecision::Deny as i32);
    assert_eq!(last.reason_code, "ROLE_NOT_GRANTED");
    let allowed = admin_entries[7];
    assert_eq!(allowed.decision, AuditDecision::Allow as i32);
    let change = allowed.change.as_ref().unwrap();
    assert_eq!(
        (change.object.as_str(), change.object_id.as_str()),
        ("access_request", ok.id.as_str())
    );
    assert!(change.before_json.is_empty() && change.after_json.contains("《社会救助暂行办法》"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_suspension_and_expiry_bite_on_the_next_call() {
    let gw = Gateway::start("");
    register_purposes(&gw, &["flood-response"]).await;
    let token = gw.token("admin");
    let mut a = admin(&gw, "admin").await;

    // Revoked grant.
    pull(&gw, "civil-affairs", "social-assistance")
        .await
        .unwrap();
    let revoked = a
        .revoke_grant(req(
            RevokeGrantRequest {
                id: "demo-civil-affairs-population".into(),
                reason: "case closed".into(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(
        pull(&gw, "civil-affairs", "social-assistance")
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // Revoked token.
    pull(&gw, "public-security", "public-security")
        .await
        .unwrap();
    a.revoke_token(req(
        RevokeTokenRequest {
            jti: jti(&gw.token("public-security")),
            reason: "leaked".into(),
        },
        &token,
    ))
    .await
    .unwrap();
    let err = pull(&gw, "public-security", "public-security")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::Unauthenticated,
            "authentication failed: TOKEN_REVOKED"
        )
    );

    // Suspended department, then resumed.
    pull(&gw, "street-office", "grid-event-handling")
        .await
        .unwrap();
    let suspend = |resume| SuspendDepartmentRequest {
        id: "street-office".into(),
        resume,
        reason: "audit finding".into(),
    };
    a.suspend_department(req(suspend(false), &token))
        .await
        .unwrap();
    let err = pull(&gw, "street-office", "grid-event-handling")
        .await
        .unwrap_err();
    assert_eq!(err.message(), "authentication failed: DEPARTMENT_SUSPENDED");
    a.suspend_department(req(suspend(true), &token))
        .await
        .unwrap();
    pull(&gw, "street-office", "grid-event-handling")
        .await
        .expect("resumed: the street office pulls its own resident again");

    // Expired grant: valid for two seconds.
    create_grant(
        &gw,
        Grant {
            not_after: in_secs(2),
            ..grant(
                "grid-centre",
                vec![fg("name", FieldView::Clear)],
                "flood-response",
            )
        },
    )
    .await
    .unwrap();
    pull(&gw, "grid-centre", "flood-response").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let err = pull(&gw, "grid-centre", "flood-response")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("has expired"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_are_enforced_audited_and_survive_a_restart() {
    let mut gw = Gateway::start("");
    register_purposes(&gw, &["quota-test", "rate-test"]).await;
    create_grant(
        &gw,
        Grant {
            limits: Some(GrantLimits {
                max_records_per_day: 3,
                ..Default::default()
            }),
            ..grant(
                "market-regulation",
                vec![fg("name", FieldView::Clear)],
                "quota-test",
            )
        },
    )
    .await
    .unwrap();
    create_grant(
        &gw,
        Grant {
            limits: Some(GrantLimits {
                max_calls_per_minute: 2,
                ..Default::default()
            }),
            ..grant(
                "grid-centre",
                vec![fg("name", FieldView::Clear)],
                "rate-test",
            )
        },
    )
    .await
    .unwrap();
    let batch = |n| BatchGetPersonsRequest {
        context: ctx("quota-test"),
        id_numbers: some_ids(n),
    };
    let mut c = PopulationServiceClient::new(gw.channel("market-regulation").await);
    let token = gw.token("market-regulation");
    let got = c
        .batch_get_persons(req(batch(2), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.persons.len(), 2);
    // One left today: asking for two is refused up front, naming the limit.
    let err = c
        .batch_get_persons(req(batch(2), &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("max_records_per_day"),
        "{}",
        err.message()
    );

    gw.stop();
    let gw = Gateway::start_in(&gw.dir.clone(), "");
    let mut c = PopulationServiceClient::new(gw.channel("market-regulation").await);
    assert_eq!(
        c.batch_get_persons(req(batch(1), &token))
            .await
            .unwrap()
            .into_inner()
            .persons
            .len(),
        1
    );
    let err = c
        .batch_get_persons(req(batch(1), &token))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::ResourceExhausted,
        "the counter survived the restart"
    );
    assert!(err.message().contains("max_records_per_day"));

    // Calls per minute: the third call within the minute is refused.
    pull(&gw, "grid-centre", "rate-test").await.unwrap();
    pull(&gw, "grid-centre", "rate-test").await.unwrap();
    let err = pull(&gw, "grid-centre", "rate-test").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("max_calls_per_minute"));

    let denials: Vec<_> = gw
        .audit_entries()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.reason_code == "LIMIT_EXCEEDED")
        .collect();
    assert_eq!(denials.len(), 3, "every limit refusal is audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_requests_auto_approve_wait_or_refuse_and_no_self_approval() {
    let gw = Gateway::start(NOT_SHARED_ETHNICITY);
    register_purposes(&gw, &["elderly-care"]).await;
    let admin_token = gw.token("admin");
    let mut a = admin(&gw, "admin").await;
    let request = |fields: Vec<FieldGrant>| AccessRequest {
        dataset: "population".into(),
        operations: all_ops(),
        fields,
        regions: vec!["310115001".into()],
        purposes: vec!["elderly-care".into()],
        justification: "home visits to residents living alone".into(),
        // No looser than the 100 per call civil-affairs already holds.
        limits: Some(GrantLimits {
            max_records_per_call: 100,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut civil = admin(&gw, "civil-affairs").await;
    let civil_token = gw.token("civil-affairs");
    let submit = |r| SubmitAccessRequestRequest { request: Some(r) };

    // Unconditional fields: approved at once, and the grant works.
    let auto = civil
        .submit_access_request(req(
            submit(request(vec![
                fg("name", FieldView::Clear),
                fg("id_number", FieldView::Masked),
            ])),
            &civil_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(auto.status, AccessRequestStatus::Approved as i32);
    assert!(auto.auto_approved && !auto.grant_id.is_empty());
    let person = district()
        .persons
        .into_iter()
        .find(|p| p.residence_grid.as_ref().unwrap().starts_with("310115001"))
        .unwrap();
    let mut pop = PopulationServiceClient::new(gw.channel("civil-affairs").await);
    let got = pop
        .get_person(req(
            GetPersonRequest {
                context: ctx("elderly-care"),
                id_number: person.id_number.clone().unwrap(),
            },
            &civil_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.person.unwrap().name, person.name);

    // Not-shared fields are refused at submission.
    let err = civil
        .submit_access_request(req(
            submit(request(vec![fg("ethnicity", FieldView::Clear)])),
            &civil_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("not_shared"));

    // A request for another department is refused.
    let err = civil
        .submit_access_request(req(
            submit(AccessRequest {
                department: "public-security".into(),
                ..request(vec![fg("name", FieldView::Clear)])
            }),
            &civil_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Conditional fields wait for an admin.
    let pending = civil
        .submit_access_request(req(
            submit(request(vec![fg("id_number", FieldView::Clear)])),
            &civil_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.status, AccessRequestStatus::Pending as i32);
    assert!(pending.respond_by.is_some() && pending.grant_id.is_empty());
    let listed = a
        .list_access_requests(req(
            ListAccessRequestsRequest {
                status: AccessRequestStatus::Pending.into(),
                department: String::new(),
            },
            &admin_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert_eq!(
        listed.iter().map(|r| &r.id).collect::<Vec<_>>(),
        [&pending.id]
    );
    assert!(!listed[0].overdue, "the deadline is ten days away");

    // The admin role belongs to the configured admin departments only.
    let thumb = govshare::control::certs::thumbprint(&x509_der(
        &std::fs::read_to_string(gw.pki("civil-affairs.pem")).unwrap(),
    ));
    let err = a
        .issue_token(req(
            IssueTokenRequest {
                department: "civil-affairs".into(),
                certificate_thumbprint: thumb,
                subject: "civil-affairs-admin".into(),
                roles: vec!["admin".into(), "puller".into()],
                lifetime_seconds: 3600,
            },
            &admin_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("admin_departments"),
        "{}",
        err.message()
    );
    let decide = |approve, reason: &str| DecideAccessRequestRequest {
        id: pending.id.clone(),
        approve,
        reason: reason.into(),
    };
    // A puller cannot decide at all.
    let err = civil
        .decide_access_request(req(decide(true, ""), &civil_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Rejection needs a reason; approval creates the linked grant.
    let err = a
        .decide_access_request(req(decide(false, ""), &admin_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let approved = a
        .decide_access_request(req(
            decide(true, "民政 social-assistance statute"),
            &admin_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approved.status, AccessRequestStatus::Approved as i32);
    let grants = a
        .list_grants(req(
            ListGrantsRequest {
                department: "civil-affairs".into(),
                ..Default::default()
            },
            &admin_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .grants;
    let linked = grants.iter().find(|g| g.id == approved.grant_id).unwrap();
    assert_eq!(linked.access_request_id, pending.id);
    assert_eq!(linked.fields, vec![fg("id_number", FieldView::Clear)]);
    let err = a
        .decide_access_request(req(decide(false, "late"), &admin_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "already decided");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_requests_are_flagged() {
    let gw = Gateway::start("request_deadline_days = 0");
    let mut civil = admin(&gw, "civil-affairs").await;
    let submitted = civil
        .submit_access_request(req(
            SubmitAccessRequestRequest {
                request: Some(AccessRequest {
                    dataset: "population".into(),
                    operations: all_ops(),
                    fields: vec![fg("hukou_address", FieldView::Clear)],
                    regions: vec!["310115".into()],
                    purposes: vec!["social-assistance".into()],
                    justification: "household verification".into(),
                    ..Default::default()
                }),
            },
            &gw.token("civil-affairs"),
        ))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let listed = admin(&gw, "admin")
        .await
        .list_access_requests(req(
            ListAccessRequestsRequest::default(),
            &gw.token("admin"),
        ))
        .await
        .unwrap()
        .into_inner()
        .requests;
    let mine = listed.iter().find(|r| r.id == submitted.id).unwrap();
    assert!(mine.overdue);
    assert!(
        listed
            .iter()
            .filter(|r| r.id != submitted.id)
            .all(|r| !r.overdue),
        "decided requests are never overdue"
    );
}

/// The DER of the first certificate in a PEM.
fn x509_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_register_issue_rotate() {
    let gw = Gateway::start("max_token_days = 1");
    let token = gw.token("admin");
    let mut a = admin(&gw, "admin").await;
    // A certificate from outside the client CA is refused.
    let stranger = rcgen::generate_simple_self_signed(vec!["stranger".into()]).unwrap();
    let err = a
        .register_certificate(req(
            RegisterCertificateRequest {
                department: "civil-affairs".into(),
                certificate_pem: stranger.cert.pem(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("client CA"), "{}", err.message());
    // A token for an unregistered thumbprint is refused.
    let err = a
        .issue_token(req(
            IssueTokenRequest {
                department: "civil-affairs".into(),
                certificate_thumbprint: "not-registered".into(),
                subject: "x".into(),
                roles: vec!["puller".into()],
                lifetime_seconds: 0,
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Rotation: tokens signed before keep working; new ones carry the new kid
    // and a lifetime capped at max_token_days.
    let kid = a
        .rotate_signing_key(req(RotateSigningKeyRequest::default(), &token))
        .await
        .unwrap()
        .into_inner()
        .kid;
    pull(&gw, "civil-affairs", "social-assistance")
        .await
        .unwrap();
    let thumb = govshare::control::certs::thumbprint(&x509_der(
        &std::fs::read_to_string(gw.pki("civil-affairs.pem")).unwrap(),
    ));
    let issued = a
        .issue_token(req(
            IssueTokenRequest {
                department: "civil-affairs".into(),
                certificate_thumbprint: thumb,
                subject: "case-system".into(),
                roles: vec!["puller".into()],
                lifetime_seconds: 365 * 86_400,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let header = jsonwebtoken::decode_header(&issued.token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
    let lifetime = issued.expires_at.unwrap().seconds - in_secs(0).unwrap().seconds;
    assert!(
        (86_000..=86_400).contains(&lifetime),
        "capped at one day: {lifetime}"
    );
    let mut c = PopulationServiceClient::new(gw.channel("civil-affairs").await);
    c.get_person(req(
        GetPersonRequest {
            context: ctx("social-assistance"),
            id_number: some_ids(1).remove(0),
        },
        &issued.token,
    ))
    .await
    .unwrap();
    // The token itself never reaches the audit log.
    assert!(gw.audit_entries().iter().all(|(bytes, _)| {
        !bytes
            .windows(issued.token.len())
            .any(|w| w == issued.token.as_bytes())
    }));
}

/// What 32 callers saw around a control-plane change made mid-load.
struct AroundChange {
    /// Calls that returned data, sent before the change had returned.
    served_before: u64,
    /// Calls sent after the change had returned: (returned data, refused).
    after: (u64, u64),
    /// Status codes of the refusals after the change.
    codes: std::collections::BTreeSet<String>,
}

impl AroundChange {
    /// The load ran, every one of its 320 calls sent after `change`
    /// returned was refused, and all of them with one status that starts
    /// with `status` (a revocation's message goes on to name its time).
    fn assert_cut_off(self, change: &str, status: &str) {
        assert!(
            self.served_before >= 200,
            "the load ran: {}",
            self.served_before
        );
        assert_eq!(self.after, (0, 320), "after the {change}: {:?}", self.codes);
        let codes: Vec<String> = self.codes.into_iter().collect();
        assert_eq!(codes.len(), 1, "one status after the {change}: {codes:?}");
        assert!(codes[0].starts_with(status), "{codes:?}");
    }
}

/// Drives 32 concurrent GetPerson callers as `identity`; once 200 calls
/// have been served, runs `change` and marks its return. Each caller then
/// makes 10 more calls and stops (every caller also stops after 3000).
/// Ordering, not timing: a call counts as "after" when it was sent after
/// `change` had returned.
async fn load_across<F>(gw: &Gateway, identity: &str, purpose: &str, change: F) -> AroundChange
where
    F: std::future::Future<Output = ()>,
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    let changed = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let channels = [gw.channel(identity).await, gw.channel(identity).await];
    let (token, id) = (gw.token(identity), residents().0.id_number.unwrap());
    let mut callers = tokio::task::JoinSet::new();
    for k in 0..32 {
        let mut c = PopulationServiceClient::new(channels[k % 2].clone());
        let (changed, served) = (changed.clone(), served.clone());
        let (token, id, purpose) = (token.clone(), id.clone(), purpose.to_string());
        callers.spawn(async move {
            let (mut before, mut after_ok, mut after_refused) = (0u64, 0u64, 0u64);
            let mut codes = std::collections::BTreeSet::new();
            for _ in 0..3000 {
                let sent_after = changed.load(SeqCst);
                let got = c
                    .get_person(req(
                        GetPersonRequest {
                            context: ctx(&purpose),
                            id_number: id.clone(),
                        },
                        &token,
                    ))
                    .await;
                match (sent_after, got) {
                    (false, Ok(_)) => {
                        before += 1;
                        served.fetch_add(1, SeqCst);
                    }
                    (false, Err(_)) => {}
                    (true, Ok(_)) => after_ok += 1,
                    (true, Err(s)) => {
                        after_refused += 1;
                        codes.insert(format!("{:?}: {}", s.code(), s.message()));
                    }
                }
                if after_ok + after_refused >= 10 {
                    break;
                }
            }
            (before, after_ok, after_refused, codes)
        });
    }
    while served.load(SeqCst) < 200 && !callers.is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    change.await;
    changed.store(true, SeqCst);
    let mut seen = AroundChange {
        served_before: 0,
        after: (0, 0),
        codes: Default::default(),
    };
    for (before, ok, refused, codes) in callers.join_all().await {
        seen.served_before += before;
        seen.after.0 += ok;
        seen.after.1 += refused;
        seen.codes.extend(codes);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_32_way_load_no_call_sent_after_a_revocation_returns_data() {
    let gw = Gateway::start("");
    let token = gw.token("admin");
    let mut a = admin(&gw, "admin").await;

    let seen = load_across(&gw, "civil-affairs", "social-assistance", async {
        a.revoke_grant(req(
            RevokeGrantRequest {
                id: "demo-civil-affairs-population".into(),
                reason: "case closed".into(),
            },
            &token,
        ))
        .await
        .unwrap();
    })
    .await;
    seen.assert_cut_off(
        "revocation",
        "PermissionDenied: your department's grant 'demo-civil-affairs-population' for 'population' was revoked at 20",
    );

    let seen = load_across(&gw, "street-office", "grid-event-handling", async {
        a.suspend_department(req(
            SuspendDepartmentRequest {
                id: "street-office".into(),
                resume: false,
                reason: "audit finding".into(),
            },
            &token,
        ))
        .await
        .unwrap();
    })
    .await;
    seen.assert_cut_off(
        "suspension",
        "Unauthenticated: authentication failed: DEPARTMENT_SUSPENDED",
    );
}

/// No ListPersons page of `department` was released once `change` had
/// returned (`returned`): every page entry made after that moment is a
/// refusal. Pages judged and recorded before — between the change's own
/// entry and its taking effect, which under load may be several — are
/// allowed. An entry's time is taken as its batch is appended, so this
/// catches a page judged after the change; a page judged before and
/// appended after is the fence's case, tested head-on in
/// `cluster::a_pull_held_between_its_decision_and_its_audit_write_is_fenced_by_a_revoke_elsewhere`.
fn assert_released_before(
    gw: &Gateway,
    department: &str,
    change: &str,
    returned: std::time::SystemTime,
) {
    let entries: Vec<AuditEntry> = gw.audit_entries().into_iter().map(|(_, e)| e).collect();
    assert!(
        entries.iter().any(|e| e.method.ends_with(change)),
        "no {change} entry"
    );
    let returned = prost_types::Timestamp::from(returned);
    let late: Vec<u64> = entries
        .iter()
        .filter(|e| {
            let t = e.time.as_ref().unwrap();
            (t.seconds, t.nanos) > (returned.seconds, returned.nanos)
                && e.method.ends_with("/ListPersons")
                && e.decision == AuditDecision::Allow as i32
                && e.principal.as_ref().unwrap().department == department
        })
        .map(|e| e.index)
        .collect();
    assert!(
        late.is_empty(),
        "pages released after {change} returned: {late:?}"
    );
}

/// Opens a 20-record-page ListPersons as `identity` over a connection
/// with the smallest HTTP/2 windows (so the gateway cannot run far ahead
/// of the reader), reads one page, runs `change`, and reads on. Returns
/// the pages read after the change, the status the stream ended with, and
/// when the change returned.
async fn stream_across<F>(
    gw: &Gateway,
    identity: &str,
    purpose: &str,
    change: F,
) -> (usize, tonic::Status, std::time::SystemTime)
where
    F: std::future::Future<Output = ()>,
{
    let read = |f: String| std::fs::read(gw.pki(&f)).unwrap();
    let channel = govshare::client::endpoint(
        &gw.addr.to_string(),
        &read("ca.pem".into()),
        &read(format!("{identity}.pem")),
        &read(format!("{identity}.key")),
    )
    .unwrap()
    .initial_stream_window_size(65_535)
    .initial_connection_window_size(65_535)
    .connect()
    .await
    .unwrap();
    let mut c = PopulationServiceClient::new(channel);
    let mut s = c
        .list_persons(req(
            ListPersonsRequest {
                context: ctx(purpose),
                page_size: 20,
                ..Default::default()
            },
            &gw.token(identity),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(s.message().await.unwrap().is_some(), "a first page");
    change.await;
    let returned = std::time::SystemTime::now();
    let mut after = 0;
    loop {
        match s.message().await {
            Ok(Some(_)) => after += 1,
            Ok(None) => panic!("the stream ended normally after {after} more pages"),
            Err(status) => return (after, status, returned),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_cut_off_at_its_next_page_by_revocation_suspension_and_expiry() {
    let gw = Gateway::start("");
    register_purposes(&gw, &["flood-response"]).await;
    let token = gw.token("admin");
    let mut a = admin(&gw, "admin").await;

    // Pages released before the change may still be on their way (the
    // client's flow-control window holds several); none is released after.
    let (_, status, returned) = stream_across(&gw, "public-security", "public-security", async {
        a.revoke_grant(req(
            RevokeGrantRequest {
                id: "demo-public-security-population".into(),
                reason: "case closed".into(),
            },
            &token,
        ))
        .await
        .unwrap();
    })
    .await;
    assert_released_before(&gw, "public-security", "/RevokeGrant", returned);
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().starts_with(
            "your department's grant 'demo-public-security-population' for 'population' was revoked at 20"
        ),
        "{}",
        status.message()
    );

    let (_, status, returned) = stream_across(&gw, "street-office", "grid-event-handling", async {
        a.suspend_department(req(
            SuspendDepartmentRequest {
                id: "street-office".into(),
                resume: false,
                reason: "audit finding".into(),
            },
            &token,
        ))
        .await
        .unwrap();
    })
    .await;
    assert_released_before(&gw, "street-office", "/SuspendDepartment", returned);
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::Unauthenticated,
            "authentication failed: DEPARTMENT_SUSPENDED"
        )
    );

    // A grant that expires mid-stream: no control-plane change at all.
    create_grant(
        &gw,
        Grant {
            not_after: in_secs(2),
            ..grant(
                "grid-centre",
                vec![
                    fg("name", FieldView::Clear),
                    fg("residence_grid", FieldView::Clear),
                    fg("residence_address", FieldView::Clear),
                    fg("phone", FieldView::Masked),
                    fg("birth_date", FieldView::Masked),
                ],
                "flood-response",
            )
        },
    )
    .await
    .unwrap();
    let (_, status, _) = stream_across(&gw, "grid-centre", "flood-response", async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
    })
    .await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("has expired"), "{status:?}");

    // Each refusal is in the log, as a denied pull of the stream's method.
    let denied: Vec<String> = gw
        .audit_entries()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.method.ends_with("/ListPersons") && e.decision == AuditDecision::Deny as i32)
        .map(|e| e.reason_code)
        .collect();
    assert_eq!(
        denied,
        ["GRANT_REVOKED", "DEPARTMENT_SUSPENDED", "GRANT_EXPIRED"]
    );
}

/// A publish stream is judged again before each chunk: suspending the
/// publisher's department stops the stream at its next chunk, which is
/// written nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_stream_stops_at_its_next_chunk_once_its_department_is_suspended() {
    use govshare::proto::publish_service_client::PublishServiceClient;
    let gw = Gateway::start("");
    let chunk = govshare::services::publish::CHUNK;
    let persons: Vec<Person> = district()
        .persons
        .into_iter()
        .cycle()
        .take(2 * chunk)
        .collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<Person>(chunk);
    let mut p = PublishServiceClient::new(gw.channel("public-security").await);
    let token = gw.token("public-security");
    let call = tokio::spawn(async move {
        p.upsert_persons(req(tokio_stream::wrappers::ReceiverStream::new(rx), &token))
            .await
    });
    let published = |gw: &Gateway| {
        gw.audit_entries()
            .iter()
            .filter(|(_, e)| {
                e.kind == EntryKind::Publish as i32 && e.decision == AuditDecision::Allow as i32
            })
            .count()
    };
    for r in &persons[..chunk] {
        tx.send(r.clone()).await.unwrap();
    }
    // The first chunk is committed while the stream is open.
    for _ in 0..100 {
        if published(&gw) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(published(&gw), 1);
    let mut a = admin(&gw, "admin").await;
    a.suspend_department(req(
        SuspendDepartmentRequest {
            id: "public-security".into(),
            resume: false,
            reason: "credential leak".into(),
        },
        &gw.token("admin"),
    ))
    .await
    .unwrap();
    for r in &persons[chunk..] {
        if tx.send(r.clone()).await.is_err() {
            break;
        }
    }
    // The stream stays open: the refusal comes when the chunk's commit is
    // refused, not when the publisher sends more or ends the stream.
    let err = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the refusal, while the stream is still open")
        .unwrap()
        .unwrap_err();
    drop(tx);
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert_eq!(
        published(&gw),
        1,
        "nothing after the suspension was written"
    );
}

/// The token cache holds verified signatures, never standing: a token
/// cached by many calls on one connection is refused on the very next call
/// after `RevokeToken` returns, on that same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_is_refused_on_the_very_next_call_after_its_revocation() {
    let gw = Gateway::start("");
    let id = residents().0.id_number.unwrap();
    let token = gw.token("public-security");
    let mut c = PopulationServiceClient::new(gw.channel("public-security").await);
    let get = || {
        req(
            GetPersonRequest {
                context: ctx("public-security"),
                id_number: id.clone(),
            },
            &token,
        )
    };
    for _ in 0..20 {
        c.get_person(get()).await.unwrap();
    }
    let (_, metrics) = gw.ops_get("/metrics").await;
    let cached: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("govshare_token_cache_entries "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(cached >= 1.0, "the token is cached: {cached}");
    admin(&gw, "admin")
        .await
        .revoke_token(req(
            RevokeTokenRequest {
                jti: jti(&token),
                reason: "the laptop was stolen".into(),
            },
            &gw.token("admin"),
        ))
        .await
        .unwrap();
    let err = c.get_person(get()).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::Unauthenticated,
            "authentication failed: TOKEN_REVOKED"
        )
    );
}
