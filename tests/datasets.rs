//! Legal entities and grids through the same pipeline: row scope, field
//! plans, search filters, the region tree, LocateGrid and grid publishing.

mod common;

use common::{Gateway, ctx, district, req};
use govshare::proto::grid_service_client::GridServiceClient;
use govshare::proto::legal_entity_service_client::LegalEntityServiceClient;
use govshare::proto::publish_service_client::PublishServiceClient;
use govshare::proto::upsert_grids_request::Item;
use govshare::proto::{
    EntityStatus, GetEntityRequest, GetGridRequest, GetRegionTreeRequest, Grid, LinearRing,
    ListGridWorkersRequest, LocateGridRequest, Polygon, Position, RegionLevel,
    SearchEntitiesRequest, UpsertGridsRequest,
};
use prost::Message;
use tonic::Code;

fn centre(g: &Grid) -> (f64, f64) {
    let pts = &g.boundary.as_ref().unwrap().rings[0].points;
    let n = pts.len() as f64;
    (
        pts.iter().map(|p| p.lon).sum::<f64>() / n,
        pts.iter().map(|p| p.lat).sum::<f64>() / n,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn street_office_sees_its_street_of_the_grid_dataset_only() {
    let gw = Gateway::start("");
    let d = district();
    let street = d.first_street().to_string();
    let token = gw.token("street-office");
    let mut grids = GridServiceClient::new(gw.channel("street-office").await);
    let c = || ctx("grid-event-handling");

    let tree = grids
        .get_region_tree(req(
            GetRegionTreeRequest {
                context: c(),
                root_code: String::new(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        tree.roots.len(),
        1,
        "the district, as the path to the granted street"
    );
    let district_node = &tree.roots[0];
    assert_eq!(
        district_node
            .children
            .iter()
            .map(|s| s.code.as_str())
            .collect::<Vec<_>>(),
        [street.as_str()]
    );
    let leaves: Vec<_> = district_node.children[0]
        .children
        .iter()
        .flat_map(|c| &c.children)
        .collect();
    assert!(
        leaves
            .iter()
            .all(|g| g.level == RegionLevel::Grid as i32 && g.code.starts_with(&street))
    );
    let in_street = d
        .grids
        .iter()
        .filter(|g| g.grid_code.as_ref().unwrap().starts_with(&street))
        .count();
    assert_eq!(leaves.len(), in_street);

    let mine = d
        .grids
        .iter()
        .find(|g| g.grid_code.as_ref().unwrap().starts_with(&street))
        .unwrap();
    let theirs = d
        .grids
        .iter()
        .find(|g| !g.grid_code.as_ref().unwrap().starts_with(&street))
        .unwrap();
    let locate = |(lon, lat): (f64, f64)| LocateGridRequest {
        context: c(),
        lon,
        lat,
    };
    let found = grids
        .locate_grid(req(locate(centre(mine)), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.grid.unwrap().grid_code, mine.grid_code);
    let hidden = grids
        .locate_grid(req(locate(centre(theirs)), &token))
        .await
        .unwrap_err();
    let nowhere = grids
        .locate_grid(req(locate((10.0, 10.0)), &token))
        .await
        .unwrap_err();
    assert_eq!(
        (hidden.code(), hidden.message()),
        (nowhere.code(), nowhere.message())
    );
    assert_eq!(hidden.code(), Code::NotFound);
    let bad = grids
        .locate_grid(req(locate((200.0, 10.0)), &token))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    let workers = grids
        .list_grid_workers(req(
            ListGridWorkersRequest {
                context: c(),
                grid_code: mine.grid_code.clone().unwrap(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(workers.len(), 3);
    assert!(
        workers
            .iter()
            .all(|w| w.phone.is_some() && w.views.contains_key("phone"))
    );
    let refused = grids
        .list_grid_workers(req(
            ListGridWorkersRequest {
                context: c(),
                grid_code: theirs.grid_code.clone().unwrap(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // Counts are maintained by the gateway from the records themselves.
    let code = mine.grid_code.clone().unwrap();
    let g = grids
        .get_grid(req(
            GetGridRequest {
                context: c(),
                grid_code: code.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let g = g.grid.unwrap();
    let residents: Vec<_> = d
        .persons
        .iter()
        .filter(|p| p.residence_grid.as_ref() == Some(&code))
        .collect();
    let mut households: Vec<_> = residents.iter().map(|p| p.household_id.clone()).collect();
    households.sort();
    households.dedup();
    assert_eq!(g.person_count, Some(residents.len() as u64));
    assert_eq!(g.household_count, Some(households.len() as u64));
    let entities = d
        .entities
        .iter()
        .filter(|e| e.domicile_grid.as_ref() == Some(&code))
        .count();
    assert_eq!(g.entity_count, Some(entities as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legal_entities_search_and_field_plans() {
    let gw = Gateway::start("");
    let d = district();
    let mut market = LegalEntityServiceClient::new(gw.channel("market-regulation").await);
    let token = gw.token("market-regulation");
    let search = |name: &str, status: EntityStatus| SearchEntitiesRequest {
        context: ctx("market-supervision"),
        name_contains: name.into(),
        status: status as i32,
        page_size: 50,
        ..Default::default()
    };
    let mut stream = market
        .search_entities(req(search("软件", EntityStatus::Active), &token))
        .await
        .unwrap()
        .into_inner();
    let mut found = Vec::new();
    while let Some(page) = stream.message().await.unwrap() {
        found.extend(page.entities);
    }
    let expected = d
        .entities
        .iter()
        .filter(|e| {
            e.name.as_ref().unwrap().contains("软件")
                && e.status == Some(EntityStatus::Active as i32)
        })
        .count();
    assert_eq!(found.len(), expected);
    assert!(expected > 0);

    // street-office holds five CLEAR fields of legal_entity in its street.
    let street = d.first_street();
    let entity = d
        .entities
        .iter()
        .find(|e| e.domicile_grid.as_ref().unwrap().starts_with(street))
        .unwrap();
    let mut so = LegalEntityServiceClient::new(gw.channel("street-office").await);
    let got = so
        .get_entity(req(
            GetEntityRequest {
                context: ctx("grid-event-handling"),
                uscc: entity.uscc.clone().unwrap(),
            },
            &gw.token("street-office"),
        ))
        .await
        .unwrap()
        .into_inner()
        .entity
        .unwrap();
    let mut keys: Vec<_> = got.views.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["domicile", "domicile_grid", "name", "status", "uscc"]
    );
    assert_eq!(
        (got.phone, got.legal_representative, got.business_scope),
        (None, None, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grid_centre_publishes_a_grid_that_locate_then_finds() {
    let gw = Gateway::start("");
    let square = |x0: f64, y0: f64| Polygon {
        rings: vec![LinearRing {
            points: [
                (x0, y0),
                (x0 + 0.001, y0),
                (x0 + 0.001, y0 + 0.001),
                (x0, y0 + 0.001),
            ]
            .iter()
            .map(|(lon, lat)| Position {
                lon: *lon,
                lat: *lat,
            })
            .collect(),
        }],
    };
    let new_grid = Grid {
        grid_code: Some("310115001001099".into()),
        name: Some("新建园区网格".into()),
        boundary: Some(square(122.0, 31.0)),
        ..Default::default()
    };
    let broken = Grid {
        grid_code: Some("310115001001098".into()),
        name: Some("x".into()),
        boundary: None,
        ..Default::default()
    };
    let items = vec![
        UpsertGridsRequest {
            item: Some(Item::Grid(new_grid.clone())),
        },
        UpsertGridsRequest {
            item: Some(Item::Grid(broken)),
        },
    ];
    let summary = PublishServiceClient::new(gw.channel("grid-centre").await)
        .upsert_grids(req(tokio_stream::iter(items), &gw.token("grid-centre")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((summary.accepted, summary.rejected), (1, 1));
    assert!(summary.rejections[0].reason.starts_with("boundary:"));

    let located = GridServiceClient::new(gw.channel("street-office").await)
        .locate_grid(req(
            LocateGridRequest {
                context: ctx("grid-event-handling"),
                lon: 122.0005,
                lat: 31.0005,
            },
            &gw.token("street-office"),
        ))
        .await
        .unwrap()
        .into_inner();
    let g = located.grid.unwrap();
    assert_eq!(g.grid_code, new_grid.grid_code);
    assert_eq!(
        g.community_code.as_deref(),
        Some("310115001001"),
        "derived from the code"
    );
    assert_eq!(g.person_count, Some(0));
}

/// A record none of whose fields the grant names does not leave, not even
/// as an empty message: a grid grant without worker fields lists no
/// workers (empty messages would still tell how many each grid has).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_no_granted_field_does_not_leave_as_an_empty_message() {
    use govshare::proto::*;
    let gw = Gateway::start("");
    common::enrol(&gw, "grid-viewer", "grid-viewer", &["310115"], &["puller"]).await;
    let grant = Grant {
        department: "grid-viewer".into(),
        dataset: "grid".into(),
        operations: vec![Operation::Get.into(), Operation::List.into()],
        fields: ["grid_code", "name"]
            .into_iter()
            .map(|f| FieldGrant {
                field: f.into(),
                view: FieldView::Clear.into(),
            })
            .collect(),
        regions: vec!["310115".into()],
        purposes: vec!["grid-event-handling".into()],
        ..Default::default()
    };
    common::admin_client(&gw, "admin")
        .await
        .create_grant(req(
            CreateGrantRequest { grant: Some(grant) },
            &gw.token("admin"),
        ))
        .await
        .unwrap();
    let grid_code = district().grids[0].grid_code.clone().unwrap();
    let mut c = GridServiceClient::new(gw.channel("grid-viewer").await);
    let token = gw.token("grid-viewer");
    let grid = c
        .get_grid(req(
            GetGridRequest {
                context: ctx("grid-event-handling"),
                grid_code: grid_code.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        grid.grid.unwrap().name.is_some(),
        "the granted grid fields leave"
    );
    let workers = c
        .list_grid_workers(req(
            ListGridWorkersRequest {
                context: ctx("grid-event-handling"),
                grid_code,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert!(
        workers.is_empty(),
        "{} worker messages with no granted field",
        workers.len()
    );
}

/// `b` (a v2 record message) is `a` (its v1 twin) with the map of views
/// moved out and packed by the field numbers of `message`.
macro_rules! assert_same_release {
    ($a:expr, $b:expr, $message:literal) => {{
        let (a, b) = (&$a, &$b);
        let pool =
            prost_reflect::DescriptorPool::decode(govshare::proto::FILE_DESCRIPTOR_SET).unwrap();
        let message = pool.get_message_by_name($message).unwrap();
        let mut packed = Vec::new();
        for (name, view) in &a.views {
            let n = message.get_field_by_name(name).unwrap().number() as usize;
            if packed.len() < n {
                packed.resize(n, 0);
            }
            packed[n - 1] = *view;
        }
        assert!(!a.views.is_empty(), "{}: v1 names some views", $message);
        assert_eq!(b.views, packed, "{}: views packed by number", $message);
        let mut record = b.record.as_ref().expect("the record").decode().unwrap();
        assert!(record.views.is_empty(), "{}: v2 sends no map", $message);
        record.views = a.views.clone();
        assert_eq!(&record, a, "{}: the same record", $message);
    }};
}

/// Every v2 RPC of the legal-entity, grid and population services releases
/// what its v1 twin releases to the same department (row scope, fields,
/// not-found keys, the region tree), and is audited under its own v2
/// method with the same fields and keys as the v1 call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v2_rpc_releases_what_its_v1_twin_releases_and_is_audited_as_v2() {
    use govshare::proto::population_service_client::PopulationServiceClient;
    use govshare::proto::{BatchGetEntitiesRequest, BatchGetPersonsRequest, ListGridsRequest, v2};
    let gw = Gateway::start("");
    let d = district();
    let street = d.first_street().to_string();
    let token = gw.token("street-office");
    let channel = gw.channel("street-office").await;
    let c = || ctx("grid-event-handling");
    let inside = |code: &Option<String>| code.as_ref().unwrap().starts_with(&street);
    let entity = d
        .entities
        .iter()
        .find(|e| inside(&e.domicile_grid))
        .unwrap();
    let foreign = d
        .entities
        .iter()
        .find(|e| !inside(&e.domicile_grid))
        .unwrap();
    let grid = d.grids.iter().find(|g| inside(&g.grid_code)).unwrap();
    let person = d
        .persons
        .iter()
        .find(|p| inside(&p.residence_grid))
        .unwrap();
    let stranger = d
        .persons
        .iter()
        .find(|p| !inside(&p.residence_grid))
        .unwrap();
    let uscc = entity.uscc.clone().unwrap();
    let grid_code = grid.grid_code.clone().unwrap();

    let (mut e1, mut e2) = (
        LegalEntityServiceClient::new(channel.clone()),
        v2::legal_entity_service_client::LegalEntityServiceClient::new(channel.clone()),
    );
    let get = || GetEntityRequest {
        context: c(),
        uscc: uscc.clone(),
    };
    let a = e1
        .get_entity(req(get(), &token))
        .await
        .unwrap()
        .into_inner();
    let b = e2
        .get_entity(req(get(), &token))
        .await
        .unwrap()
        .into_inner();
    assert_same_release!(
        a.entity.unwrap(),
        b.entity.unwrap(),
        "govshare.v1.LegalEntity"
    );

    let batch = || BatchGetEntitiesRequest {
        context: c(),
        usccs: vec![uscc.clone(), foreign.uscc.clone().unwrap()],
    };
    let a = e1
        .batch_get_entities(req(batch(), &token))
        .await
        .unwrap()
        .into_inner();
    let b = e2
        .batch_get_entities(req(batch(), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((a.entities.len(), &a.not_found), (1, &b.not_found));
    assert_same_release!(a.entities[0], b.entities[0], "govshare.v1.LegalEntity");

    let search = || SearchEntitiesRequest {
        context: c(),
        region_prefix: street.clone(),
        page_size: 100,
        max_records: 30,
        ..Default::default()
    };
    // One stream after the other, so their entries keep the calls' order.
    let mut a = e1
        .search_entities(req(search(), &token))
        .await
        .unwrap()
        .into_inner();
    let a = a.message().await.unwrap().unwrap();
    let mut b = e2
        .search_entities(req(search(), &token))
        .await
        .unwrap()
        .into_inner();
    let b = b.message().await.unwrap().unwrap();
    assert_eq!(a.entities.len(), b.entities.len());
    assert!(!a.entities.is_empty());
    for (a, b) in a.entities.iter().zip(&b.entities) {
        assert_same_release!(*a, *b, "govshare.v1.LegalEntity");
    }

    let (mut g1, mut g2) = (
        GridServiceClient::new(channel.clone()),
        v2::grid_service_client::GridServiceClient::new(channel.clone()),
    );
    let get = || GetGridRequest {
        context: c(),
        grid_code: grid_code.clone(),
    };
    let a = g1.get_grid(req(get(), &token)).await.unwrap().into_inner();
    let b = g2.get_grid(req(get(), &token)).await.unwrap().into_inner();
    assert_same_release!(a.grid.unwrap(), b.grid.unwrap(), "govshare.v1.Grid");

    let list = || ListGridsRequest {
        context: c(),
        region_prefix: street.clone(),
        page_size: 100,
        max_records: 20,
        ..Default::default()
    };
    // One stream after the other, so their entries keep the calls' order.
    let mut a = g1
        .list_grids(req(list(), &token))
        .await
        .unwrap()
        .into_inner();
    let a = a.message().await.unwrap().unwrap();
    let mut b = g2
        .list_grids(req(list(), &token))
        .await
        .unwrap()
        .into_inner();
    let b = b.message().await.unwrap().unwrap();
    assert_eq!(a.grids.len(), b.grids.len());
    for (a, b) in a.grids.iter().zip(&b.grids) {
        assert_same_release!(*a, *b, "govshare.v1.Grid");
    }

    let (lon, lat) = centre(grid);
    let locate = || LocateGridRequest {
        context: c(),
        lon,
        lat,
    };
    let a = g1
        .locate_grid(req(locate(), &token))
        .await
        .unwrap()
        .into_inner();
    let b = g2
        .locate_grid(req(locate(), &token))
        .await
        .unwrap()
        .into_inner();
    assert_same_release!(a.grid.unwrap(), b.grid.unwrap(), "govshare.v1.Grid");

    let workers = || ListGridWorkersRequest {
        context: c(),
        grid_code: grid_code.clone(),
    };
    let a = g1
        .list_grid_workers(req(workers(), &token))
        .await
        .unwrap()
        .into_inner();
    let b = g2
        .list_grid_workers(req(workers(), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.workers.len(), b.workers.len());
    assert!(!a.workers.is_empty());
    for (a, b) in a.workers.iter().zip(&b.workers) {
        assert_same_release!(*a, *b, "govshare.v1.GridWorker");
    }

    let tree = || GetRegionTreeRequest {
        context: c(),
        root_code: String::new(),
    };
    let a = g1
        .get_region_tree(req(tree(), &token))
        .await
        .unwrap()
        .into_inner();
    let b = g2
        .get_region_tree(req(tree(), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.roots, b.roots);

    let (mut p1, mut p2) = (
        PopulationServiceClient::new(channel.clone()),
        v2::population_service_client::PopulationServiceClient::new(channel),
    );
    let batch = || BatchGetPersonsRequest {
        context: c(),
        id_numbers: vec![
            person.id_number.clone().unwrap(),
            stranger.id_number.clone().unwrap(),
        ],
    };
    let a = p1
        .batch_get_persons(req(batch(), &token))
        .await
        .unwrap()
        .into_inner();
    let b = p2
        .batch_get_persons(req(batch(), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((a.persons.len(), &a.not_found), (1, &b.not_found));
    assert_same_release!(a.persons[0], b.persons[0], "govshare.v1.Person");

    // The calls alternate v1, v2: each pair recorded alike, under its own
    // version's method.
    let ours: Vec<_> = gw
        .audit_entries()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| {
            e.principal
                .as_ref()
                .is_some_and(|p| p.department == "street-office")
        })
        .collect();
    let methods: Vec<&str> = ours.iter().map(|e| e.method.as_str()).collect();
    assert_eq!(ours.len(), 2 * 9, "one entry per call: {methods:?}");
    for pair in ours.chunks(2) {
        let (one, two) = (&pair[0], &pair[1]);
        let rpc = one.method.strip_prefix("/govshare.v1.").expect(&one.method);
        assert_eq!(two.method, format!("/govshare.v2.{rpc}"));
        assert_eq!(two.fields, one.fields, "{rpc}");
        assert_eq!(two.keys_returned, one.keys_returned, "{rpc}");
        assert_eq!(two.decision, one.decision, "{rpc}");
    }
}

/// Two published grids may overlap, and a point in both is answered with
/// one grid: the audit entry records that one, not every candidate the
/// mask step judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locate_grid_records_only_the_grid_it_answers() {
    let gw = Gateway::start("");
    let square = |x0: f64, y0: f64| Polygon {
        rings: vec![LinearRing {
            points: [(0.0, 0.0), (0.001, 0.0), (0.001, 0.001), (0.0, 0.001)]
                .iter()
                .map(|(dx, dy)| Position {
                    lon: x0 + dx,
                    lat: y0 + dy,
                })
                .collect(),
        }],
    };
    let grid = |code: &str, x0: f64| UpsertGridsRequest {
        item: Some(Item::Grid(Grid {
            grid_code: Some(code.into()),
            name: Some("重叠网格".into()),
            boundary: Some(square(x0, 31.0)),
            ..Default::default()
        })),
    };
    let items = vec![
        grid("310115001001098", 122.0),
        grid("310115001001099", 122.0005),
    ];
    let summary = PublishServiceClient::new(gw.channel("grid-centre").await)
        .upsert_grids(req(tokio_stream::iter(items), &gw.token("grid-centre")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.accepted, 2);

    let found = GridServiceClient::new(gw.channel("street-office").await)
        .locate_grid(req(
            LocateGridRequest {
                context: ctx("grid-event-handling"),
                lon: 122.0007,
                lat: 31.0005,
            },
            &gw.token("street-office"),
        ))
        .await
        .unwrap()
        .into_inner()
        .grid
        .unwrap();
    let (_, entry) = gw.audit_entries().pop().unwrap();
    assert_eq!(entry.keys_returned, vec![found.grid_code.unwrap()]);
    assert_eq!(entry.record_count, 1);
}

/// LocateGrid answers one grid, so it needs one record of the daily limit
/// — not one per grid containing the point, which would also tell the
/// caller, in the refusal, how many grids it cannot see lie there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locate_grid_needs_one_record_of_the_daily_limit() {
    use common::{create_grant, register_purposes};
    use govshare::proto::{FieldGrant, FieldView, Grant, GrantLimits, Operation};
    let gw = Gateway::start("");
    let d = district();
    let street = d.first_street().to_string();
    let other_community = d
        .grids
        .iter()
        .find(|g| !g.grid_code.as_ref().unwrap().starts_with(&street))
        .and_then(|g| g.community_code.clone())
        .unwrap();
    register_purposes(&gw, &["grid-quota"]).await;
    create_grant(
        &gw,
        Grant {
            department: "market-regulation".into(),
            dataset: "grid".into(),
            operations: vec![Operation::Get.into()],
            fields: ["grid_code", "name"]
                .iter()
                .map(|f| FieldGrant {
                    field: f.to_string(),
                    view: FieldView::Clear.into(),
                })
                .collect(),
            regions: vec![street.clone()],
            purposes: vec!["grid-quota".into()],
            limits: Some(GrantLimits {
                max_records_per_day: 1,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // One grid in the granted street, one overlapping it in another street.
    let square = |x0: f64| Polygon {
        rings: vec![LinearRing {
            points: [(0.0, 0.0), (0.001, 0.0), (0.001, 0.001), (0.0, 0.001)]
                .iter()
                .map(|(dx, dy)| Position {
                    lon: x0 + dx,
                    lat: 31.0 + dy,
                })
                .collect(),
        }],
    };
    let grid = |code: String, x0: f64| UpsertGridsRequest {
        item: Some(Item::Grid(Grid {
            grid_code: Some(code),
            name: Some("重叠网格".into()),
            boundary: Some(square(x0)),
            ..Default::default()
        })),
    };
    let items = vec![
        grid(format!("{street}001099"), 122.0),
        grid(format!("{other_community}099"), 122.0005),
    ];
    let summary = PublishServiceClient::new(gw.channel("grid-centre").await)
        .upsert_grids(req(tokio_stream::iter(items), &gw.token("grid-centre")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.accepted, 2, "{:?}", summary.rejections);

    let found = GridServiceClient::new(gw.channel("market-regulation").await)
        .locate_grid(req(
            LocateGridRequest {
                context: ctx("grid-quota"),
                lon: 122.0007,
                lat: 31.0005,
            },
            &gw.token("market-regulation"),
        ))
        .await
        .unwrap()
        .into_inner()
        .grid
        .unwrap();
    assert_eq!(found.grid_code, Some(format!("{street}001099")));
}

/// A grid record damaged in the store, or written there by something else,
/// holding its grid code twice: a grid of the street office's street
/// first, then one of another street. The gateway judges a record by the
/// first copy; a decode keeps the last, and would release the other
/// street's grid (its code, its resident and household counts) under this
/// one's key. The record is refused instead: by key and by region, the
/// street office never sees the other street's grid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grid_holding_its_code_twice_never_releases_the_other_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start_in(tmp.path(), "");
    let d = district();
    let street = d.first_street().to_string();
    let code_of = |inside: bool| {
        d.grids
            .iter()
            .map(|g| g.grid_code.clone().unwrap())
            .find(|c| c.starts_with(&street) == inside)
            .unwrap()
    };
    let (inside, outside) = (code_of(true), code_of(false));
    gw.stop();

    let store = govshare::store::open(&common::store_of(tmp.path())).unwrap();
    let (at, mut bytes) = store
        .scan("grid.placed", b"r", None, usize::MAX)
        .unwrap()
        .into_iter()
        .find(|(_, v)| Grid::decode(v.as_slice()).unwrap().grid_code.as_deref() == Some(&inside))
        .unwrap();
    bytes.push(0x0a); // field 1 (grid_code), length-delimited
    bytes.push(outside.len() as u8);
    bytes.extend_from_slice(outside.as_bytes());
    store.put("grid.placed", &at, &bytes).unwrap();
    store.sync().unwrap();
    drop(store);

    let gw = Gateway::start_in(tmp.path(), "");
    let token = gw.token("street-office");
    let mut grids = GridServiceClient::new(gw.channel("street-office").await);
    let got = grids
        .get_grid(req(
            GetGridRequest {
                context: ctx("grid-event-handling"),
                grid_code: inside.clone(),
            },
            &token,
        ))
        .await;
    match got {
        Ok(r) => assert_eq!(r.into_inner().grid.unwrap().grid_code, Some(inside.clone())),
        Err(s) => assert!(!s.message().contains(&outside), "{s:?}"),
    }
    let listed = grids
        .list_grids(req(
            govshare::proto::ListGridsRequest {
                context: ctx("grid-event-handling"),
                region_prefix: street.clone(),
                page_size: 1000,
                ..Default::default()
            },
            &token,
        ))
        .await;
    if let Ok(pages) = listed {
        let mut pages = pages.into_inner();
        while let Ok(Some(page)) = pages.message().await {
            for g in page.grids {
                let code = g.grid_code.unwrap_or_default();
                assert!(code.starts_with(&street), "{code} left for {street}");
            }
        }
    }
}
