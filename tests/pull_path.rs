//! The secure pull path end to end, over real TLS gRPC against the real
//! binary: field-level grants, row scope, purposes, credentials, publish
//! validation, and one durable audit entry per call that survives a restart.

mod common;

use common::{Gateway, ctx, district, req, residents};
use govshare::proto::population_service_client::PopulationServiceClient;
use govshare::proto::publish_service_client::PublishServiceClient;
use govshare::proto::{
    AuditDecision, BatchGetPersonsRequest, EntryKind, FieldView, GetPersonRequest,
    ListPersonsRequest, Person, PullContext, v2,
};
use tonic::Code;

fn get(id: &str, context: Option<PullContext>) -> GetPersonRequest {
    GetPersonRequest {
        context,
        id_number: id.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn civil_affairs_sees_exactly_its_granted_fields_in_their_views() {
    let gw = Gateway::start("");
    let (person, _) = residents();
    let id = person.id_number.clone().unwrap();
    let mut client = PopulationServiceClient::new(gw.channel("civil-affairs").await);
    let resp = client
        .get_person(req(
            get(&id, ctx("social-assistance")),
            &gw.token("civil-affairs"),
        ))
        .await
        .unwrap()
        .into_inner();
    let p = resp.person.unwrap();
    assert_eq!(p.name, person.name, "name is CLEAR");
    assert_eq!(
        p.id_number.as_deref(),
        Some(format!("{}********{}", &id[..6], &id[14..]).as_str())
    );
    let phone = person.phone.clone().unwrap();
    assert_eq!(
        p.phone.as_deref(),
        Some(format!("{}****{}", &phone[..3], &phone[7..]).as_str())
    );
    assert_eq!(
        p.birth_date.as_deref(),
        Some(&person.birth_date.as_ref().unwrap()[..4])
    );
    assert_eq!(p.residence_grid, person.residence_grid);
    assert_eq!(p.residence_address, person.residence_address);
    // Not granted: absent, not empty.
    assert_eq!(p.sex, None);
    assert_eq!(p.ethnicity, None);
    assert_eq!(p.hukou_address, None);
    assert_eq!(p.household_id, None);
    assert_eq!(p.restricted_tags, None);
    assert_eq!(p.version, None);
    let mut expected = vec![
        ("birth_date", FieldView::Masked),
        ("id_number", FieldView::Masked),
        ("name", FieldView::Clear),
        ("phone", FieldView::Masked),
        ("residence_address", FieldView::Clear),
        ("residence_grid", FieldView::Clear),
    ];
    if person.tags.is_some() {
        expected.push(("tags", FieldView::Clear));
        expected.sort();
    }
    let views: Vec<(&str, FieldView)> = p
        .views
        .iter()
        .map(|(k, v)| (k.as_str(), FieldView::try_from(*v).unwrap()))
        .collect();
    assert_eq!(views, expected);
    let receipt = resp.receipt.unwrap();
    assert_eq!(receipt.leaf_hash.len(), 32);

    // Batches above the grant's max_records_per_call (100) are refused whole.
    let ids: Vec<String> = district()
        .persons
        .iter()
        .take(101)
        .map(|p| p.id_number.clone().unwrap())
        .collect();
    let err = client
        .batch_get_persons(req(
            BatchGetPersonsRequest {
                context: ctx("social-assistance"),
                id_numbers: ids,
            },
            &gw.token("civil-affairs"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("max_records_per_call"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn street_office_cannot_tell_out_of_scope_from_absent() {
    let gw = Gateway::start("");
    let (inside, outside) = residents();
    let token = gw.token("street-office");
    let mut client = PopulationServiceClient::new(gw.channel("street-office").await);
    let ctx = || ctx("grid-event-handling");

    let p = client
        .get_person(req(get(inside.id_number.as_ref().unwrap(), ctx()), &token))
        .await
        .unwrap()
        .into_inner();
    let pseudonym = p.person.unwrap().id_number.unwrap();
    assert_eq!(pseudonym.len(), 26);
    assert_ne!(Some(&pseudonym), inside.id_number.as_ref());

    let hidden = client
        .get_person(req(get(outside.id_number.as_ref().unwrap(), ctx()), &token))
        .await
        .unwrap_err();
    let missing = client
        .get_person(req(get("11010519491231002X", ctx()), &token))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(
        (hidden.code(), hidden.message()),
        (missing.code(), missing.message())
    );

    // A batch mixing both: the hidden key is reported exactly like the missing one.
    let resp = client
        .batch_get_persons(req(
            BatchGetPersonsRequest {
                context: ctx(),
                id_numbers: vec![
                    inside.id_number.clone().unwrap(),
                    outside.id_number.clone().unwrap(),
                    "11010519491231002X".into(),
                ],
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.persons.len(), 1);
    assert_eq!(
        resp.not_found,
        vec![
            outside.id_number.clone().unwrap(),
            "11010519491231002X".to_string()
        ]
    );

    // Listing the whole grant streams only the first street, page by page.
    let street = district().first_street().to_string();
    let mut stream = client
        .list_persons(req(
            ListPersonsRequest {
                context: ctx(),
                page_size: 200,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut listed = 0;
    while let Some(page) = stream.message().await.unwrap() {
        assert!(page.receipt.is_some(), "every page carries its receipt");
        for p in page.persons {
            assert!(p.residence_grid.unwrap().starts_with(&street));
            listed += 1;
        }
    }
    let expected = district()
        .persons
        .iter()
        .filter(|p| p.residence_grid.as_ref().unwrap().starts_with(&street))
        .count();
    assert_eq!(listed, expected);

    // Asking for a region outside the grant is refused, not silently emptied.
    let err = client
        .list_persons(req(
            ListPersonsRequest {
                context: ctx(),
                region_prefix: "310115002".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

/// govshare.v2 releases exactly what v1 releases to the same caller —
/// the same fields, masks, pseudonyms and rows, under the same audit — and
/// carries each record's views packed by field number instead of a map of
/// names. A department without a grant gets nothing from v2 either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_releases_what_v1_releases_with_the_views_packed_by_field_number() {
    let gw = Gateway::start("");
    let (person, _) = residents();
    let id = person.id_number.clone().unwrap();

    // One record, masked (civil affairs).
    let token = gw.token("civil-affairs");
    let channel = gw.channel("civil-affairs").await;
    let mut one = PopulationServiceClient::new(channel.clone());
    let mut two = v2::population_service_client::PopulationServiceClient::new(channel);
    let a = one
        .get_person(req(get(&id, ctx("social-assistance")), &token))
        .await
        .unwrap()
        .into_inner();
    let b = two
        .get_person(req(get(&id, ctx("social-assistance")), &token))
        .await
        .unwrap()
        .into_inner();
    let (a, b) = (a.person.unwrap(), b.person.unwrap());
    assert!(!a.views.is_empty());
    assert_same_release(&a, &b);
    let entries = gw.audit_entries();
    let (v1_entry, v2_entry) = (&entries[entries.len() - 2].1, &entries[entries.len() - 1].1);
    assert_eq!(v1_entry.method, "/govshare.v1.PopulationService/GetPerson");
    assert_eq!(v2_entry.method, "/govshare.v2.PopulationService/GetPerson");
    assert_eq!(
        v2_entry.fields, v1_entry.fields,
        "the same fields are recorded"
    );
    assert_eq!(v2_entry.keys_returned, v1_entry.keys_returned);

    // A listing, pseudonymised and row-scoped (street office): page for page.
    let token = gw.token("street-office");
    let channel = gw.channel("street-office").await;
    let mut one = PopulationServiceClient::new(channel.clone());
    let mut two = v2::population_service_client::PopulationServiceClient::new(channel);
    let list = || {
        req(
            ListPersonsRequest {
                context: ctx("grid-event-handling"),
                page_size: 40,
                max_records: 150,
                ..Default::default()
            },
            &token,
        )
    };
    let mut pages_one = one.list_persons(list()).await.unwrap().into_inner();
    let mut pages_two = two.list_persons(list()).await.unwrap().into_inner();
    let mut compared = 0;
    while let Some(a) = pages_one.message().await.unwrap() {
        let b = pages_two
            .message()
            .await
            .unwrap()
            .expect("as many v2 pages");
        assert_eq!(a.persons.len(), b.persons.len());
        for (a, b) in a.persons.iter().zip(&b.persons) {
            assert_same_release(a, b);
            compared += 1;
        }
    }
    assert!(pages_two.message().await.unwrap().is_none());
    assert_eq!(compared, 150);

    // No grant, no data: market regulation holds no population grant.
    let mut outsider = v2::population_service_client::PopulationServiceClient::new(
        gw.channel("market-regulation").await,
    );
    let err = outsider
        .get_person(req(
            get(&id, ctx("market-supervision")),
            &gw.token("market-regulation"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    let (_, last) = gw.audit_entries().pop().unwrap();
    assert_eq!(last.method, "/govshare.v2.PopulationService/GetPerson");
    assert_eq!(last.decision, AuditDecision::Deny as i32);
}

/// A listing's filter drops records after they were masked; the audit
/// entry then names exactly the fields of the records that were sent, not
/// those of the records the filter dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_listing_records_only_the_fields_of_what_it_sent() {
    let gw = Gateway::start("");
    let token = gw.token("public-security");
    let mut client = PopulationServiceClient::new(gw.channel("public-security").await);
    let mut pages = client
        .list_persons(req(
            ListPersonsRequest {
                context: ctx("public-security"),
                tag: "elderly-alone".into(),
                page_size: 5,
                max_records: 5,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let page = pages.message().await.unwrap().unwrap();
    assert_eq!(page.persons.len(), 5);
    let mut sent: Vec<(String, i32)> = page
        .persons
        .iter()
        .flat_map(|p| p.views.iter().map(|(f, v)| (f.clone(), *v)))
        .collect();
    sent.sort();
    sent.dedup();
    let (_, entry) = gw.audit_entries().pop().unwrap();
    assert_eq!(entry.keys_returned.len(), 5);
    let mut recorded: Vec<(String, i32)> = entry
        .fields
        .iter()
        .map(|f| (f.field.clone(), f.view))
        .collect();
    recorded.sort();
    assert_eq!(recorded, sent, "the entry names the fields sent, no more");
}

/// `b` (v2) is `a` (v1) with the map of views moved out and packed:
/// `views[n - 1]` is the view of field number `n`, UNSPECIFIED where the
/// map names no field, and nothing after the last released field.
fn assert_same_release(a: &Person, b: &v2::Person) {
    let pool = prost_reflect::DescriptorPool::decode(govshare::proto::FILE_DESCRIPTOR_SET).unwrap();
    let message = pool.get_message_by_name("govshare.v1.Person").unwrap();
    let mut packed = Vec::new();
    for (name, view) in &a.views {
        let n = message.get_field_by_name(name).unwrap().number() as usize;
        if packed.len() < n {
            packed.resize(n, FieldView::Unspecified as i32);
        }
        packed[n - 1] = *view;
    }
    assert_eq!(b.views, packed, "views packed by field number");
    let record = b.record.as_ref().expect("the record").decode().unwrap();
    assert!(record.views.is_empty(), "v2 sends no map of names");
    assert_eq!(
        Person {
            views: a.views.clone(),
            ..record
        },
        *a,
        "the same record"
    );
}

/// One session of calls, each of which must leave exactly one audit entry,
/// in order, still there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_audited_once_in_order_and_survives_restart() {
    let mut gw = Gateway::start("");
    let (person, _) = residents();
    let id = person.id_number.clone().unwrap();

    // Forge the bad tokens while the gateway is down (the store is locked while it runs).
    gw.stop();
    let forged = forge_tokens(&gw);
    let mut gw = Gateway::start_in(&gw.dir.clone(), "");
    let before = gw.audit_entries().len();

    let ca = gw.token("civil-affairs");
    let mut civil = PopulationServiceClient::new(gw.channel("civil-affairs").await);
    let mut expected: Vec<(EntryKind, AuditDecision, &str, Code)> = Vec::new();
    let call = async |client: &mut PopulationServiceClient<_>, token: &str, r: GetPersonRequest| {
        client
            .get_person(req(r, token))
            .await
            .map(|_| ())
            .map_err(|s| s.code())
            .err()
            .unwrap_or(Code::Ok)
    };

    assert_eq!(
        call(&mut civil, &ca, get(&id, ctx("social-assistance"))).await,
        Code::Ok
    );
    expected.push((EntryKind::Pull, AuditDecision::Allow, "", Code::Ok));

    assert_eq!(
        call(&mut civil, &ca, get(&id, ctx("epidemic-response"))).await,
        Code::PermissionDenied
    );
    expected.push((
        EntryKind::Pull,
        AuditDecision::Deny,
        "PURPOSE_NOT_GRANTED",
        Code::PermissionDenied,
    ));

    let no_case = Some(PullContext {
        purpose: "social-assistance".into(),
        ..Default::default()
    });
    assert_eq!(
        call(&mut civil, &ca, get(&id, no_case)).await,
        Code::InvalidArgument
    );
    expected.push((
        EntryKind::Pull,
        AuditDecision::Deny,
        "BAD_CONTEXT",
        Code::InvalidArgument,
    ));

    let no_purpose = Some(PullContext {
        case_id: "C-1".into(),
        ..Default::default()
    });
    assert_eq!(
        call(&mut civil, &ca, get(&id, no_purpose)).await,
        Code::InvalidArgument
    );
    expected.push((
        EntryKind::Pull,
        AuditDecision::Deny,
        "BAD_CONTEXT",
        Code::InvalidArgument,
    ));

    assert_eq!(
        call(
            &mut civil,
            &ca,
            get("110105194912310021", ctx("social-assistance"))
        )
        .await,
        Code::InvalidArgument
    );
    expected.push((
        EntryKind::Pull,
        AuditDecision::Deny,
        "INVALID_ARGUMENT",
        Code::InvalidArgument,
    ));

    // civil-affairs' token on street-office's certificate.
    let mut stolen = PopulationServiceClient::new(gw.channel_with_cert("street-office").await);
    assert_eq!(
        call(&mut stolen, &ca, get(&id, ctx("social-assistance"))).await,
        Code::Unauthenticated
    );
    expected.push((
        EntryKind::AuthFailure,
        AuditDecision::Deny,
        "TOKEN_NOT_BOUND_TO_CERTIFICATE",
        Code::Unauthenticated,
    ));

    for (token, reason) in [
        (&forged.expired, "TOKEN_EXPIRED"),
        (&forged.tampered, "BAD_SIGNATURE"),
        (&forged.alg_none, "MALFORMED_TOKEN"),
    ] {
        assert_eq!(
            call(&mut civil, token, get(&id, ctx("social-assistance"))).await,
            Code::Unauthenticated,
            "{reason}"
        );
        expected.push((
            EntryKind::AuthFailure,
            AuditDecision::Deny,
            reason,
            Code::Unauthenticated,
        ));
    }

    // Publishing: the bad record is reported by position; the good ones land.
    let d = district();
    let grid = d.grids[0].grid_code.clone().unwrap();
    let new_person = |seq: u16| Person {
        id_number: Some(
            govshare::datasets::codes::CitizenId::from_parts(
                "310115",
                chrono::NaiveDate::from_ymd_opt(1988, 3, 9).unwrap(),
                seq,
            )
            .as_str()
            .into(),
        ),
        name: Some("新居民".into()),
        residence_grid: Some(grid.clone()),
        household_id: Some("HNEW1".into()),
        ..Default::default()
    };
    let bad = Person {
        id_number: Some("31011519880309001".into()),
        ..new_person(0)
    };
    let mut publish = PublishServiceClient::new(gw.channel("public-security").await);
    let summary = publish
        .upsert_persons(req(
            tokio_stream::iter(vec![new_person(901), bad, new_person(902)]),
            &gw.token("public-security"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((summary.accepted, summary.rejected), (2, 1));
    assert_eq!(summary.rejections[0].position, 1);
    assert!(
        summary.rejections[0].reason.starts_with("id_number:"),
        "{}",
        summary.rejections[0].reason
    );
    expected.push((EntryKind::Publish, AuditDecision::Allow, "", Code::Ok));

    // civil-affairs is not the source of population.
    let err = PublishServiceClient::new(gw.channel("civil-affairs").await)
        .upsert_persons(req(tokio_stream::iter(vec![new_person(903)]), &ca))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    expected.push((
        EntryKind::Publish,
        AuditDecision::Deny,
        "NOT_SOURCE_DEPARTMENT",
        Code::PermissionDenied,
    ));

    let landed = new_person(901).id_number.unwrap();
    let got = PopulationServiceClient::new(gw.channel("public-security").await)
        .get_person(req(
            get(&landed, ctx("public-security")),
            &gw.token("public-security"),
        ))
        .await
        .unwrap()
        .into_inner()
        .person
        .unwrap();
    assert_eq!(got.version, Some(1));
    assert_eq!(
        got.sex,
        Some(govshare::proto::Sex::Male as i32),
        "derived from the ID"
    );
    expected.push((EntryKind::Pull, AuditDecision::Allow, "", Code::Ok));

    let live = gw.audit_entries();
    gw.stop();
    let gw = Gateway::start_in(&gw.dir.clone(), "");
    let after_restart = gw.audit_entries();
    assert_eq!(
        &after_restart[..live.len()],
        &live[..],
        "nothing acknowledged is lost or changed"
    );

    let session: Vec<_> = after_restart[before..before + expected.len()]
        .iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(
        live.len() - before,
        expected.len(),
        "exactly one entry per call"
    );
    for (i, (e, (kind, decision, reason, _))) in session.iter().zip(&expected).enumerate() {
        assert_eq!(
            e.index,
            (before + i) as u64,
            "indexes are dense and ordered"
        );
        assert_eq!(e.kind, *kind as i32, "entry {i}: {e:?}");
        assert_eq!(e.decision, *decision as i32, "entry {i}: {e:?}");
        assert_eq!(e.reason_code, *reason, "entry {i}");
    }
    let first = session[0];
    let pr = first.principal.as_ref().unwrap();
    assert_eq!(
        (pr.department.as_str(), pr.operator.as_str()),
        ("civil-affairs", "clerk-7")
    );
    assert_eq!(first.keys_returned, vec![id.clone()]);
    assert_eq!(first.case_id, "CASE-2026-0001");
    assert!(
        first
            .fields
            .iter()
            .any(|f| f.field == "id_number" && f.view == FieldView::Masked as i32)
    );
    // The forged-token failure still names the certificate's department.
    assert_eq!(
        session[6].principal.as_ref().unwrap().department,
        "civil-affairs"
    );
}

struct Forged {
    expired: String,
    tampered: String,
    alg_none: String,
}

/// Tokens a thief or a buggy client might present, built with the gateway's
/// own key (expired), by editing a real token's payload, and with `alg: none`.
fn forge_tokens(gw: &Gateway) -> Forged {
    use data_encoding::BASE64URL_NOPAD as B64;
    let real = gw.token("civil-affairs");
    let parts: Vec<&str> = real.trim().split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&B64.decode(parts[1].as_bytes()).unwrap()).unwrap();

    let store = govshare::control::store::Store::new(
        govshare::store::open(&common::store_of(&gw.dir)).unwrap(),
    );
    let keys =
        govshare::control::keys::KeyRing::load_or_create(store, "govshare", "govshare").unwrap();
    let mut expired: govshare::control::keys::Claims =
        serde_json::from_value(claims.clone()).unwrap();
    expired.exp = expired.iat - 120; // well past the 30 s clock-skew leeway
    expired.nbf = expired.iat - 3600;
    let expired = keys.sign(&expired).unwrap();

    claims["roles"] = serde_json::json!(["puller", "admin"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(claims.to_string().as_bytes()),
        parts[2]
    );
    let alg_none = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    Forged {
        expired,
        tampered,
        alg_none,
    }
}

/// `govshare pull persons --limit N` means N records, and the gateway
/// audits what it sent: one page of N, not the pages a stream could have
/// run ahead (it used to audit 6–16 pages for a one-page read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_limit_counts_records_and_only_what_was_sent_is_audited() {
    let gw = Gateway::start("");
    let before = gw.audit_entries().len();
    let (ok, out) = common::cli(&[
        "pull",
        "--addr",
        &gw.addr.to_string(),
        "--pki",
        gw.pki("").to_str().unwrap(),
        "--identity",
        "public-security",
        "--purpose",
        "public-security",
        "--case-id",
        "PS-1",
        "persons",
        "--region",
        "310115",
        "--limit",
        "5",
    ]);
    assert!(ok, "{out}");
    assert_eq!(out.matches("\"idNumber\"").count(), 5, "{out}");
    let pages: Vec<u64> = gw.audit_entries()[before..]
        .iter()
        .filter(|(_, e)| e.method.ends_with("/ListPersons"))
        .map(|(_, e)| e.record_count)
        .collect();
    assert_eq!(pages, [5], "one audited page of exactly the records sent");
}
