//! Durability: no data without a durable audit entry. A pull fails closed
//! when the log cannot be written, and a SIGKILL loses no acknowledged entry.

mod common;

use common::{Gateway, ctx, district, req};
use govshare::proto::population_service_client::PopulationServiceClient;
use govshare::proto::{AuditReceipt, GetPersonRequest, ListPersonsRequest};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn get(id: &str) -> GetPersonRequest {
    GetPersonRequest {
        context: ctx("social-assistance"),
        id_number: id.into(),
    }
}

async fn health(gw: &Gateway) -> ServingStatus {
    let mut h = HealthClient::new(gw.channel("civil-affairs").await);
    let r = h
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(r.status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_fails_closed_when_the_audit_log_cannot_be_written() {
    // One segment per commit, so the next commit opens a predictable file.
    let gw = Gateway::start("[audit]\nsegment_bytes = 1");
    let id = district().persons[0].id_number.clone().unwrap();
    let token = gw.token("civil-affairs");
    let mut client = PopulationServiceClient::new(gw.channel("civil-affairs").await);
    client
        .get_person(req(get(&id), &token))
        .await
        .expect("healthy pull");
    assert_eq!(health(&gw).await, ServingStatus::Serving);

    // The disk "fills": the next segment is /dev/full, where every write fails with ENOSPC.
    let next = gw.audit_entries().len();
    let segment = gw.dir.join("audit").join(format!("{next:020}.seg"));
    std::os::unix::fs::symlink("/dev/full", &segment).unwrap();

    let err = client.get_person(req(get(&id), &token)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("audit log"), "{}", err.message());
    assert!(
        !err.message().contains(&id[..6]),
        "no record data in the error"
    );
    // The health service follows the log's state as it changes (a watch,
    // not the failed call itself): it turns within moments.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while health(&gw).await != ServingStatus::NotServing {
        assert!(
            std::time::Instant::now() < deadline,
            "health never turned NOT_SERVING"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Space comes back: the next pull is audited and served again.
    std::fs::remove_file(&segment).unwrap();
    let resp = client
        .get_person(req(get(&id), &token))
        .await
        .expect("recovered")
        .into_inner();
    assert!(resp.person.is_some());
    assert_eq!(resp.receipt.unwrap().leaf_index, next as u64);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while health(&gw).await != ServingStatus::Serving {
        assert!(
            std::time::Instant::now() < deadline,
            "health never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        gw.audit_entries().len(),
        next + 1,
        "the failed pull left nothing acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_entry() {
    let mut gw = Gateway::start("");
    let d = district();
    let ids: Vec<String> = d
        .persons
        .iter()
        .take(200)
        .map(|p| p.id_number.clone().unwrap())
        .collect();
    let receipts: Arc<Mutex<Vec<AuditReceipt>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for worker in 0..3 {
        let (channel, token, ids, receipts) = (
            gw.channel("civil-affairs").await,
            gw.token("civil-affairs"),
            ids.clone(),
            receipts.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut client = PopulationServiceClient::new(channel);
            for i in 0..5_000usize {
                if Instant::now() > deadline {
                    break;
                }
                match client
                    .get_person(req(get(&ids[(i * 3 + worker) % ids.len()]), &token))
                    .await
                {
                    Ok(r) => receipts
                        .lock()
                        .unwrap()
                        .push(r.into_inner().receipt.unwrap()),
                    Err(_) => break,
                }
            }
        }));
    }
    // And one long stream of pages, each carrying its own receipt.
    let (channel, token, stream_receipts) = (
        gw.channel("public-security").await,
        gw.token("public-security"),
        receipts.clone(),
    );
    tasks.push(tokio::spawn(async move {
        let mut client = PopulationServiceClient::new(channel);
        while Instant::now() < deadline {
            let r = ListPersonsRequest {
                context: ctx("public-security"),
                page_size: 10,
                ..Default::default()
            };
            let Ok(stream) = client.list_persons(req(r, &token)).await else {
                break;
            };
            let mut stream = stream.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(page)) => stream_receipts.lock().unwrap().push(page.receipt.unwrap()),
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    }));

    while receipts.lock().unwrap().len() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.kill();
    for t in tasks {
        t.await.unwrap();
    }
    let receipts = receipts.lock().unwrap().clone();
    assert!(
        receipts.len() >= 300,
        "the load ran: {} receipts",
        receipts.len()
    );

    let check = |gw: &Gateway| {
        let entries = gw.audit_entries();
        for r in &receipts {
            let (bytes, entry) = entries.get(r.leaf_index as usize).unwrap_or_else(|| {
                panic!(
                    "receipt {} has no entry (log holds {})",
                    r.leaf_index,
                    entries.len()
                )
            });
            assert_eq!(entry.index, r.leaf_index);
            assert_eq!(
                govshare::audit::leaf_hash(bytes).as_slice(),
                r.leaf_hash.as_slice()
            );
        }
        entries.len()
    };
    let on_disk = check(&gw);
    // Restart: the torn tail (if any) is cut, every acknowledged entry stays.
    let mut gw = Gateway::start_in(&gw.dir.clone(), "");
    gw.stop();
    assert!(check(&gw) >= on_disk);
}
