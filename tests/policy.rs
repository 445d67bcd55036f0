//! The policy holds against a department that wants more (issue "The policy
//! holds…"): each test reproduces one way a department or an administrator
//! could widen a scope, against the real gateway over TLS gRPC.

mod common;

use common::{
    Gateway, admin_client, create_grant, ctx, district, enrol, get_person, register_purposes, req,
    residents,
};
use govshare::proto::population_service_client::PopulationServiceClient;
use govshare::proto::publish_service_client::PublishServiceClient;
use govshare::proto::*;
use std::time::Duration;
use tonic::Code;

fn fg(field: &str, view: FieldView) -> FieldGrant {
    FieldGrant {
        field: field.into(),
        view: view.into(),
    }
}

fn ops() -> Vec<i32> {
    vec![
        Operation::Get.into(),
        Operation::BatchGet.into(),
        Operation::List.into(),
    ]
}

fn now_plus(s: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + s,
        nanos: 0,
    })
}

fn last_pull(gw: &Gateway) -> AuditEntry {
    gw.audit_entries()
        .into_iter()
        .rev()
        .map(|(_, e)| e)
        .find(|e| e.kind == EntryKind::Pull as i32)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_street_office_cannot_give_itself_the_whole_district() {
    let gw = Gateway::start("");
    let (inside, outside) = residents();
    let mut office = admin_client(&gw, "street-office").await;
    let token = gw.token("street-office");
    let ask = |regions: Vec<&str>| SubmitAccessRequestRequest {
        request: Some(AccessRequest {
            dataset: "population".into(),
            operations: ops(),
            fields: vec![fg("name", FieldView::Clear)],
            regions: regions.into_iter().map(String::from).collect(),
            purposes: vec!["grid-event-handling".into()],
            justification: "door-to-door checks".into(),
            ..Default::default()
        }),
    };
    for regions in [vec!["*"], vec!["310115"], vec!["310115001", "310115002"]] {
        let r = office
            .submit_access_request(req(ask(regions.clone()), &token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            AccessRequestStatus::Pending as i32,
            "{regions:?} reaches beyond the street: it waits for an administrator"
        );
        assert!(!r.auto_approved && r.grant_id.is_empty());
    }
    let err = get_person(
        &gw,
        "street-office",
        "grid-event-handling",
        outside.id_number.as_ref().unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "still nothing outside its street"
    );
    // Inside its own street, unconditional views are granted at once.
    let community = &inside.residence_grid.as_ref().unwrap()[..12];
    let r = office
        .submit_access_request(req(ask(vec![community]), &token))
        .await
        .unwrap()
        .into_inner();
    assert!(r.auto_approved && !r.grant_id.is_empty(), "{r:?}");
}

/// `*` in a grant is the grantee's whole jurisdiction (scopes.md), not
/// the whole gateway: an administrator approving a street office's `*`
/// gives it its street — the street it had when the grant was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_jurisdiction_grant_covers_the_jurisdiction_and_no_more() {
    let gw = Gateway::start("");
    let (inside, outside) = residents();
    let outside_id = outside.id_number.clone().unwrap();
    let inside_id = inside.id_number.clone().unwrap();
    let token = gw.token("street-office");
    let asked = admin_client(&gw, "street-office")
        .await
        .submit_access_request(req(
            SubmitAccessRequestRequest {
                request: Some(AccessRequest {
                    dataset: "population".into(),
                    operations: ops(),
                    fields: vec![fg("name", FieldView::Clear)],
                    regions: vec!["*".into()],
                    purposes: vec!["epidemic-response".into()],
                    justification: "vaccination follow-up".into(),
                    ..Default::default()
                }),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut admin = admin_client(&gw, "admin").await;
    let admin_token = gw.token("admin");
    admin
        .decide_access_request(req(
            DecideAccessRequestRequest {
                id: asked.id.clone(),
                approve: true,
                reason: "传染病防治法".into(),
            },
            &admin_token,
        ))
        .await
        .unwrap();

    let mine = get_person(&gw, "street-office", "epidemic-response", &inside_id)
        .await
        .unwrap();
    assert!(
        mine.person.unwrap().name.is_some(),
        "its own street is in scope"
    );
    let err = get_person(&gw, "street-office", "epidemic-response", &outside_id)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "`*` is the street office's street, not the district"
    );

    // The grant holds what was approved: the street as it was. Growing
    // the department's jurisdiction later (one admin's call) does not widen
    // it — that would be a new grant, decided anew.
    let first_street = inside.residence_grid.as_ref().unwrap()[..9].to_string();
    let outside_street = outside.residence_grid.as_ref().unwrap()[..9].to_string();
    let granted = admin
        .list_grants(req(
            ListGrantsRequest {
                department: "street-office".into(),
                ..Default::default()
            },
            &admin_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .grants
        .into_iter()
        .find(|g| g.access_request_id == asked.id)
        .unwrap();
    assert_eq!(granted.regions, vec![first_street.clone()]);
    admin
        .update_department(req(
            UpdateDepartmentRequest {
                id: "street-office".into(),
                name: String::new(),
                jurisdiction: vec![first_street, outside_street],
                reason: "streets merged".into(),
            },
            &admin_token,
        ))
        .await
        .unwrap();
    let err = get_person(&gw, "street-office", "epidemic-response", &outside_id)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "a jurisdiction change widens no grant"
    );
}

/// A page token must not carry what the page may not: a listing's cursor
/// is the storage key of the last row examined — with its clear citizen ID
/// — so the token is sealed, and bound to its department and dataset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_tokens_reveal_no_key_and_work_only_where_they_were_issued() {
    let gw = Gateway::start("");
    let ids: Vec<String> = district()
        .persons
        .iter()
        .map(|p| p.id_number.clone().unwrap())
        .collect();
    let token = gw.token("civil-affairs");
    let mut pop = PopulationServiceClient::new(gw.channel("civil-affairs").await);
    let list = |purpose: &str, page_token: &str| ListPersonsRequest {
        context: ctx(purpose),
        page_size: 1,
        max_records: 1,
        page_token: page_token.into(),
        ..Default::default()
    };
    let first_page = |r: ListPersonsRequest, token: String| {
        let mut pop = pop.clone();
        async move {
            let mut s = pop.list_persons(req(r, &token)).await?.into_inner();
            Ok::<_, tonic::Status>(s.message().await?.unwrap())
        }
    };
    let page = first_page(list("social-assistance", ""), token.clone())
        .await
        .unwrap();
    assert_eq!(page.persons.len(), 1);
    let next = page.next_page_token.clone();
    assert!(!next.is_empty());
    let raw = data_encoding::BASE64URL_NOPAD
        .decode(next.as_bytes())
        .unwrap_or_default();
    let inside = String::from_utf8_lossy(&raw);
    for id in &ids {
        assert!(
            !inside.contains(id.as_str()) && !next.contains(id.as_str()),
            "the page token carries the clear citizen ID {id}, granted only MASKED"
        );
    }
    let page2 = first_page(list("social-assistance", &next), token.clone())
        .await
        .unwrap();
    assert_eq!(page2.persons.len(), 1);
    assert_ne!(
        page2.persons[0], page.persons[0],
        "the token continues the listing"
    );

    // Another department cannot use it; a forged one is refused by name.
    let office = gw.token("street-office");
    let mut theirs = PopulationServiceClient::new(gw.channel("street-office").await);
    let err = theirs
        .list_persons(req(list("grid-event-handling", &next), &office))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("page_token"), "{}", err.message());
    let mut forged = raw.clone();
    if let Some(b) = forged.last_mut() {
        *b ^= 1;
    }
    let forged = data_encoding::BASE64URL_NOPAD.encode(&forged);
    let err = pop
        .list_persons(req(list("social-assistance", &forged), &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_in_force_decides_what_leaves_under_existing_grants() {
    // public-security's grant names ethnicity CLEAR; the catalog in force
    // no longer shares it, and makes a masked phone conditional.
    let gw = Gateway::start(
        r#"
[[catalog_override]]
dataset = "population"
field = "ethnicity"
view = "CLEAR"
sharing = "not_shared"

[[catalog_override]]
dataset = "population"
field = "phone"
view = "MASKED"
sharing = "conditional"
"#,
    );
    let (person, _) = residents();
    let id = person.id_number.clone().unwrap();
    let p = get_person(&gw, "public-security", "public-security", &id)
        .await
        .unwrap()
        .person
        .unwrap();
    assert_eq!(p.ethnicity, None, "not_shared now: never released");
    assert!(!p.views.contains_key("ethnicity"));
    assert_eq!(p.name, person.name, "the rest of the grant still works");
    let e = last_pull(&gw);
    assert!(
        e.withdrawn
            .iter()
            .any(|w| w.field == "ethnicity" && w.view == FieldView::Clear as i32),
        "the entry records the withdrawn view: {:?}",
        e.withdrawn
    );
    // civil-affairs' grant has no approved request behind it, so a view the
    // catalog now makes conditional is withheld.
    let p = get_person(&gw, "civil-affairs", "social-assistance", &id)
        .await
        .unwrap()
        .person
        .unwrap();
    assert_eq!(p.phone, None);
    assert!(p.name.is_some());
    assert!(last_pull(&gw).withdrawn.iter().any(|w| w.field == "phone"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_the_catalog_withdrew_entirely_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut gw = Gateway::start_in(&dir, "");
    register_purposes(&gw, &["census-check"]).await;
    let mut a = admin_client(&gw, "admin").await;
    a.create_grant(req(
        CreateGrantRequest {
            grant: Some(Grant {
                department: "grid-centre".into(),
                dataset: "population".into(),
                operations: ops(),
                fields: vec![fg("residence_grid", FieldView::Clear)],
                regions: vec!["310115".into()],
                purposes: vec!["census-check".into()],
                ..Default::default()
            }),
        },
        &gw.token("admin"),
    ))
    .await
    .unwrap();
    let id = residents().0.id_number.unwrap();
    get_person(&gw, "grid-centre", "census-check", &id)
        .await
        .unwrap();
    assert!(gw.stop());
    let gw = Gateway::start_in(
        &dir,
        "[[catalog_override]]\ndataset = \"population\"\nfield = \"residence_grid\"\nview = \"CLEAR\"\nsharing = \"not_shared\"",
    );
    let err = get_person(&gw, "grid-centre", "census-check", &id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let e = last_pull(&gw);
    assert_eq!(e.reason_code, "CATALOG_WITHDRAWN", "{}", e.message);
    assert!(!e.grants_used.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_never_serves_their_own_department() {
    let gw = Gateway::start("");
    let mut a = admin_client(&gw, "admin").await;
    let token = gw.token("admin");
    let own = Grant {
        department: "gateway-admin".into(),
        dataset: "population".into(),
        operations: ops(),
        fields: vec![fg("id_number", FieldView::Clear)],
        regions: vec!["*".into()],
        purposes: vec!["public-security".into()],
        legal_basis: "self-cited".into(),
        ..Default::default()
    };
    let err = a
        .create_grant(req(CreateGrantRequest { grant: Some(own) }, &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = a
        .update_department(req(
            UpdateDepartmentRequest {
                id: "gateway-admin".into(),
                jurisdiction: vec!["310115".into()],
                reason: "widen".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = a
        .suspend_department(req(
            SuspendDepartmentRequest {
                id: "gateway-admin".into(),
                resume: false,
                reason: "oops".into(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Only the configured departments may hold the admin role — also when
    // an existing token of another department claims it.
    let thumb = |id: &str| {
        use rustls_pki_types::pem::PemObject;
        govshare::control::certs::thumbprint(
            &rustls_pki_types::CertificateDer::from_pem_file(gw.pki(&format!("{id}.pem"))).unwrap(),
        )
    };
    let err = a
        .issue_token(req(
            IssueTokenRequest {
                department: "street-office".into(),
                certificate_thumbprint: thumb("street-office"),
                subject: "street-admin".into(),
                roles: vec!["admin".into()],
                lifetime_seconds: 600,
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Four eyes: a conditional view becomes a request; whoever filed it
    // cannot approve it; a second administrator can.
    let filed = a
        .create_grant(req(
            CreateGrantRequest {
                grant: Some(Grant {
                    department: "civil-affairs".into(),
                    dataset: "population".into(),
                    operations: ops(),
                    fields: vec![fg("hukou_address", FieldView::Clear)],
                    regions: vec!["310115".into()],
                    purposes: vec!["social-assistance".into()],
                    legal_basis: "社会救助暂行办法".into(),
                    ..Default::default()
                }),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let pending = filed
        .pending_request
        .expect("a pending request, not a grant");
    let decide = DecideAccessRequestRequest {
        id: pending.id.clone(),
        approve: true,
        reason: "checked".into(),
    };
    let err = a
        .decide_access_request(req(decide.clone(), &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("second administrator"),
        "{}",
        err.message()
    );
    enrol(&gw, "admin-2", "gateway-admin", &["*"], &["admin"]).await;
    let mut second = admin_client(&gw, "admin-2").await;
    let approved = second
        .decide_access_request(req(decide, &gw.token("admin-2")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approved.status, AccessRequestStatus::Approved as i32);
    let p = get_person(
        &gw,
        "civil-affairs",
        "social-assistance",
        &residents().0.id_number.unwrap(),
    )
    .await
    .unwrap()
    .person
    .unwrap();
    assert!(
        p.hukou_address.is_some(),
        "released under the approved request"
    );
}

/// The side doors an administrator — or a puller — could use to serve
/// itself: approving its own filing under a second token on the same
/// certificate, self-approved access for an admin department, revoking its
/// own grants, a self-approved grant that lifts the limits an
/// administrator set, and an auto-approval standing in for the approval a
/// view needs once the catalog makes it conditional.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_serves_themselves_through_a_side_door() {
    let tmp = tempfile::tempdir().unwrap();
    let roles = "admin_departments = [\"gateway-admin\", \"city-admin\"]";
    let gw = Gateway::start_in(tmp.path(), roles);
    enrol(&gw, "city", "city-admin", &["*"], &["admin"]).await;
    let mut a = admin_client(&gw, "admin").await;
    let token = gw.token("admin");
    let thumb = a
        .list_certificates(req(
            ListCertificatesRequest {
                department: "gateway-admin".into(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .certificates[0]
        .thumbprint
        .clone();
    let issue = |subject: &str, role: &str| IssueTokenRequest {
        department: "gateway-admin".into(),
        certificate_thumbprint: thumb.clone(),
        subject: subject.into(),
        roles: vec![role.into()],
        lifetime_seconds: 3600,
    };

    // Four eyes are two people: a second token on the same certificate is
    // the same administrator.
    let filed = a
        .create_grant(req(
            CreateGrantRequest {
                grant: Some(Grant {
                    department: "civil-affairs".into(),
                    dataset: "population".into(),
                    operations: ops(),
                    fields: vec![fg("id_number", FieldView::Clear)],
                    regions: vec!["310115".into()],
                    purposes: vec!["social-assistance".into()],
                    legal_basis: "社会救助暂行办法".into(),
                    ..Default::default()
                }),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .pending_request
        .unwrap();
    let second = a
        .issue_token(req(issue("admin-2", "admin"), &token))
        .await
        .unwrap()
        .into_inner()
        .token;
    let err = a
        .decide_access_request(req(
            DecideAccessRequestRequest {
                id: filed.id.clone(),
                approve: true,
                reason: "ok".into(),
            },
            &second,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // An admin department asking for data never approves itself.
    let puller = a
        .issue_token(req(issue("admin-puller", "puller"), &token))
        .await
        .unwrap()
        .into_inner()
        .token;
    let asked = a
        .submit_access_request(req(
            SubmitAccessRequestRequest {
                request: Some(AccessRequest {
                    dataset: "population".into(),
                    operations: ops(),
                    fields: vec![fg("name", FieldView::Clear)],
                    regions: vec!["310115".into()],
                    purposes: vec!["public-security".into()],
                    justification: "curiosity".into(),
                    ..Default::default()
                }),
            },
            &puller,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        asked.status,
        AccessRequestStatus::Pending as i32,
        "{asked:?}"
    );

    // Once another admin department approved it, its own admins cannot
    // revoke (and so re-create) it either.
    let mut city = admin_client(&gw, "city").await;
    let approved = city
        .decide_access_request(req(
            DecideAccessRequestRequest {
                id: asked.id.clone(),
                approve: true,
                reason: "audit sampling".into(),
            },
            &gw.token("city"),
        ))
        .await
        .unwrap()
        .into_inner();
    let err = a
        .revoke_grant(req(
            RevokeGrantRequest {
                id: approved.grant_id.clone(),
                reason: "mine".into(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // A puller's self-approved grant never lifts its administrator's
    // limits (civil-affairs: 100 records per call).
    let mut civil = admin_client(&gw, "civil-affairs").await;
    let civil_token = gw.token("civil-affairs");
    let ask = |limits: Option<GrantLimits>| SubmitAccessRequestRequest {
        request: Some(AccessRequest {
            dataset: "population".into(),
            operations: ops(),
            fields: vec![fg("education", FieldView::Clear)],
            regions: vec!["310115".into()],
            purposes: vec!["social-assistance".into()],
            justification: "education subsidies".into(),
            limits,
            ..Default::default()
        }),
    };
    let unlimited = civil
        .submit_access_request(req(ask(None), &civil_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        unlimited.status,
        AccessRequestStatus::Pending as i32,
        "no limits would lift the 100 per call an administrator set"
    );
    let bounded = civil
        .submit_access_request(req(
            ask(Some(GrantLimits {
                max_records_per_call: 50,
                ..Default::default()
            })),
            &civil_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(bounded.auto_approved, "{bounded:?}");
    let id = residents().0.id_number.unwrap();
    let before = get_person(&gw, "civil-affairs", "social-assistance", &id)
        .await
        .unwrap();
    assert!(before.person.unwrap().education.is_some());

    // The catalog makes education conditional: an auto-approval is not
    // the approval a conditional view needs.
    drop((a, city, civil));
    drop(gw);
    let gw = Gateway::start_in(
        tmp.path(),
        &format!(
            "{roles}\n[[catalog_override]]\ndataset = \"population\"\nfield = \"education\"\nview = \"CLEAR\"\nsharing = \"conditional\"\n"
        ),
    );
    let after = get_person(&gw, "civil-affairs", "social-assistance", &id)
        .await
        .unwrap();
    assert!(
        after.person.unwrap().education.is_none(),
        "education is conditional now, and nobody approved it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typos_never_become_grants() {
    let gw = Gateway::start("");
    let mut a = admin_client(&gw, "admin").await;
    let grant = |purpose: &str, region: &str| CreateGrantRequest {
        grant: Some(Grant {
            department: "civil-affairs".into(),
            dataset: "population".into(),
            operations: ops(),
            fields: vec![fg("name", FieldView::Clear)],
            regions: vec![region.into()],
            purposes: vec![purpose.into()],
            ..Default::default()
        }),
    };
    let err = a
        .create_grant(req(grant("housing-securty", "310115"), &gw.token("admin")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("did you mean housing-security"),
        "{}",
        err.message()
    );
    for region in ["110105", "310115999"] {
        let err = a
            .create_grant(req(grant("social-assistance", region), &gw.token("admin")))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(region), "{}", err.message());
    }
    // A retired purpose can no longer be cited, and stops authorizing.
    a.retire_purpose(req(
        RetirePurposeRequest {
            code: "social-assistance".into(),
            reason: "replaced".into(),
        },
        &gw.token("admin"),
    ))
    .await
    .unwrap();
    let err = get_person(
        &gw,
        "civil-affairs",
        "social-assistance",
        &residents().0.id_number.unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(last_pull(&gw).reason_code, "PURPOSE_NOT_GRANTED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_rule_of_the_closest_grant() {
    let gw = Gateway::start("");
    register_purposes(&gw, &["reason-test"]).await;
    let mut a = admin_client(&gw, "admin").await;
    let token = gw.token("admin");
    let id = residents().0.id_number.unwrap();
    let cases: Vec<(&str, Grant, &str)> = vec![
        ("reasons-revoked", Grant::default(), "GRANT_REVOKED"),
        (
            "reasons-expired",
            Grant {
                not_after: now_plus(2),
                ..Default::default()
            },
            "GRANT_EXPIRED",
        ),
        (
            "reasons-later",
            Grant {
                not_before: now_plus(3600),
                ..Default::default()
            },
            "GRANT_NOT_YET_VALID",
        ),
        (
            "reasons-op",
            Grant {
                operations: vec![Operation::List.into()],
                ..Default::default()
            },
            "OPERATION_NOT_GRANTED",
        ),
    ];
    let mut expected = Vec::new();
    for (dept, shape, reason) in cases {
        enrol(&gw, dept, dept, &["310115"], &["puller"]).await;
        let g = a
            .create_grant(req(
                CreateGrantRequest {
                    grant: Some(Grant {
                        department: dept.into(),
                        dataset: "population".into(),
                        operations: if shape.operations.is_empty() {
                            ops()
                        } else {
                            shape.operations
                        },
                        fields: vec![fg("name", FieldView::Clear)],
                        regions: vec!["310115".into()],
                        purposes: vec!["reason-test".into()],
                        not_before: shape.not_before,
                        not_after: shape.not_after,
                        ..Default::default()
                    }),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner()
            .grant
            .unwrap();
        if reason == "GRANT_REVOKED" {
            a.revoke_grant(req(
                RevokeGrantRequest {
                    id: g.id.clone(),
                    reason: "test".into(),
                },
                &token,
            ))
            .await
            .unwrap();
        }
        expected.push((dept, g.id, reason));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (dept, grant, reason) in expected {
        let err = get_person(&gw, dept, "reason-test", &id).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{dept}");
        assert!(
            !err.message().contains("purpose"),
            "{dept}: {}",
            err.message()
        );
        let e = last_pull(&gw);
        assert_eq!(e.reason_code, reason, "{dept}: {}", e.message);
        assert_eq!(
            e.grants_used,
            vec![grant],
            "{dept}: the grant concerned is named"
        );
    }
    // Wrong purpose on a working grant.
    get_person(&gw, "civil-affairs", "reason-test", &id)
        .await
        .unwrap_err();
    assert_eq!(last_pull(&gw).reason_code, "PURPOSE_NOT_GRANTED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_parallel_pullers_never_exceed_the_daily_limit() {
    let gw = Gateway::start("");
    register_purposes(&gw, &["quota-race"]).await;
    create_grant(
        &gw,
        Grant {
            department: "market-regulation".into(),
            dataset: "population".into(),
            operations: ops(),
            fields: vec![fg("name", FieldView::Clear)],
            regions: vec!["310115".into()],
            purposes: vec!["quota-race".into()],
            limits: Some(GrantLimits {
                max_records_per_day: 50,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ids: Vec<String> = district()
        .persons
        .iter()
        .take(200)
        .map(|p| p.id_number.clone().unwrap())
        .collect();
    let channel = gw.channel("market-regulation").await;
    let token = gw.token("market-regulation");
    let mut set = tokio::task::JoinSet::new();
    for t in 0..16 {
        let (channel, token, ids) = (channel.clone(), token.clone(), ids.clone());
        set.spawn(async move {
            let mut c = PopulationServiceClient::new(channel);
            let mut got = 0usize;
            for k in 0..6 {
                let start = (t * 6 + k) * 2 % 190;
                let r = c
                    .batch_get_persons(req(
                        BatchGetPersonsRequest {
                            context: ctx("quota-race"),
                            id_numbers: ids[start..start + 2].to_vec(),
                        },
                        &token,
                    ))
                    .await;
                match r {
                    Ok(r) => got += r.into_inner().persons.len(),
                    Err(e) => assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}"),
                }
            }
            got
        });
    }
    let total: usize = set.join_all().await.into_iter().sum();
    assert!(
        total <= 50,
        "{total} records released against a limit of 50"
    );
    assert_eq!(total, 50, "the limit is reached, not undershot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_can_be_listed_and_revoked_and_typos_are_not_success() {
    let gw = Gateway::start("");
    let mut a = admin_client(&gw, "admin").await;
    let token = gw.token("admin");
    let err = a
        .revoke_token(req(
            RevokeTokenRequest {
                jti: "never-issued".into(),
                reason: "typo".into(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let jti = common::jti(&gw.token("street-office"));
    let err = a
        .revoke_token(req(
            RevokeTokenRequest {
                jti: jti.clone(),
                reason: " ".into(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "a revocation needs a reason"
    );
    let tokens = a
        .list_tokens(req(
            ListTokensRequest {
                department: "street-office".into(),
                include_expired: false,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert!(
        tokens
            .iter()
            .any(|t| t.jti == jti && !t.revoked && t.roles == ["puller"])
    );
    let certs = a
        .list_certificates(req(
            ListCertificatesRequest {
                department: "street-office".into(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .certificates;
    assert_eq!(certs.len(), 1);
    let id = residents().0.id_number.unwrap();
    get_person(&gw, "street-office", "grid-event-handling", &id)
        .await
        .unwrap();
    a.revoke_certificate(req(
        RevokeCertificateRequest {
            thumbprint: certs[0].thumbprint.clone(),
            reason: "laptop stolen".into(),
        },
        &token,
    ))
    .await
    .unwrap();
    let err = get_person(&gw, "street-office", "grid-event-handling", &id)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::Unauthenticated,
            "authentication failed: CERTIFICATE_REVOKED"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_a_record_in_a_grid_that_does_not_exist_is_rejected() {
    let gw = Gateway::start("");
    let make = |grid: &str, seq: u16| {
        let id = govshare::datasets::codes::CitizenId::from_parts(
            "310115",
            chrono::NaiveDate::from_ymd_opt(1931, 3, 3).unwrap(),
            seq,
        );
        Person {
            id_number: Some(id.as_str().into()),
            name: Some("测试".into()),
            residence_grid: Some(grid.into()),
            ..Default::default()
        }
    };
    let good_grid = district().grids[0].grid_code.clone().unwrap();
    let people = vec![
        make("110105001001001", 11),
        make("310115999001001", 13),
        make(&good_grid, 15),
    ];
    let mut p = PublishServiceClient::new(gw.channel("public-security").await);
    let summary = p
        .upsert_persons(req(
            tokio_stream::iter(people.clone()),
            &gw.token("public-security"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((summary.accepted, summary.rejected), (1, 2));
    for r in &summary.rejections {
        assert!(r.reason.contains("does not exist"), "{}", r.reason);
    }
    for (person, found) in people.iter().zip([false, false, true]) {
        let r = get_person(
            &gw,
            "public-security",
            "public-security",
            person.id_number.as_ref().unwrap(),
        )
        .await;
        assert_eq!(r.is_ok(), found);
    }
}

/// Issue "A refusal names the grant the caller meant": grant A serves
/// `p-a` for GET now, grant B serves `p-b` for everything from an hour on.
/// A GetPerson citing `p-b` meant B, so the refusal is B's own rule — not
/// yet valid, from when — not a purpose "shopping" signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_names_the_grant_whose_purpose_was_cited() {
    let gw = Gateway::start("");
    register_purposes(&gw, &["p-a", "p-b"]).await;
    enrol(&gw, "meant-b", "meant-b", &["310115"], &["puller"]).await;
    let mut a = admin_client(&gw, "admin").await;
    let token = gw.token("admin");
    let starts = now_plus(3600);
    let mut ids = Vec::new();
    for (purpose, operations, not_before) in [
        ("p-a", vec![Operation::Get.into()], None),
        ("p-b", ops(), starts),
    ] {
        let g = a
            .create_grant(req(
                CreateGrantRequest {
                    grant: Some(Grant {
                        department: "meant-b".into(),
                        dataset: "population".into(),
                        operations,
                        fields: vec![fg("name", FieldView::Clear)],
                        regions: vec!["310115".into()],
                        purposes: vec![purpose.into()],
                        not_before,
                        ..Default::default()
                    }),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner()
            .grant
            .unwrap();
        ids.push(g.id);
    }
    let id = residents().0.id_number.unwrap();
    let err = get_person(&gw, "meant-b", "p-b", &id).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("not valid until"),
        "the message says from when: {}",
        err.message()
    );
    let when = chrono::DateTime::from_timestamp(starts.unwrap().seconds, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    assert!(err.message().contains(&when), "{}", err.message());
    let e = last_pull(&gw);
    assert_eq!(e.reason_code, "GRANT_NOT_YET_VALID", "{}", e.message);
    assert_eq!(e.grants_used, vec![ids[1].clone()]);
    // Citing `p-a` still works: A serves it.
    get_person(&gw, "meant-b", "p-a", &id).await.unwrap();
}

/// An access request of unconditional views, inside the jurisdiction, for a
/// registered purpose, stays pending when the department already holds a
/// grant of the dataset with a daily limit the request would lift — and
/// the answer says so, naming the limit and the grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_auto_approved_says_why() {
    let gw = Gateway::start("");
    register_purposes(&gw, &["limits-test"]).await;
    enrol(
        &gw,
        "limited-dept",
        "limited-dept",
        &["310115"],
        &["puller"],
    )
    .await;
    let held = admin_client(&gw, "admin")
        .await
        .create_grant(req(
            CreateGrantRequest {
                grant: Some(Grant {
                    department: "limited-dept".into(),
                    dataset: "population".into(),
                    operations: ops(),
                    fields: vec![fg("name", FieldView::Clear)],
                    regions: vec!["310115".into()],
                    purposes: vec!["limits-test".into()],
                    limits: Some(GrantLimits {
                        max_records_per_day: 500,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            &gw.token("admin"),
        ))
        .await
        .unwrap()
        .into_inner()
        .grant
        .unwrap();
    let r = admin_client(&gw, "limited-dept")
        .await
        .submit_access_request(req(
            SubmitAccessRequestRequest {
                request: Some(AccessRequest {
                    dataset: "population".into(),
                    operations: ops(),
                    fields: vec![fg("name", FieldView::Clear)],
                    regions: vec!["310115001".into()],
                    purposes: vec!["limits-test".into()],
                    justification: "more of the same".into(),
                    ..Default::default()
                }),
            },
            &gw.token("limited-dept"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, AccessRequestStatus::Pending as i32);
    let why = &r.auto_approval_refused_because;
    assert!(why.contains("max_records_per_day"), "{why}");
    assert!(why.contains(&held.id), "names the grant: {why}");
    // An auto-approved request says nothing of the kind.
    let ok = admin_client(&gw, "limited-dept")
        .await
        .submit_access_request(req(
            SubmitAccessRequestRequest {
                request: Some(AccessRequest {
                    dataset: "population".into(),
                    operations: ops(),
                    fields: vec![fg("name", FieldView::Clear)],
                    regions: vec!["310115001".into()],
                    purposes: vec!["limits-test".into()],
                    limits: Some(GrantLimits {
                        max_records_per_day: 100,
                        ..Default::default()
                    }),
                    justification: "within the limits".into(),
                    ..Default::default()
                }),
            },
            &gw.token("limited-dept"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.status, AccessRequestStatus::Approved as i32);
    assert!(ok.auto_approval_refused_because.is_empty());
}
