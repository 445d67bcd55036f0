//! Snapshots (issue "Snapshots: back up a running gateway, restore it, and
//! never pass a restored log off as the old one"), with the real binary,
//! real gRPC over TLS, real age files: a snapshot taken while departments
//! pull restores to the same records as the log's next generation, held
//! until an administrator confirms; a damaged, cut or foreign file is
//! refused before anything is written; the caller cannot choose whom it is
//! encrypted to; a log key swapped under a data dir stops the start.

mod common;

use common::{Gateway, admin_client, cli, ctx, district, req, residents};
use govshare::proto::population_service_client::PopulationServiceClient;
use govshare::proto::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tonic::Code;

/// `govshare snapshot save` against `gw`, writing where `to` says (a file,
/// or `--dir D --keep N`), as the demo administrator unless `to` names
/// another `--identity`.
fn save_to(gw: &Gateway, to: &[&str]) -> (bool, String) {
    let (addr, pki) = (gw.addr.to_string(), gw.pki(""));
    let mut args = vec!["snapshot", "save"];
    args.extend_from_slice(to);
    args.extend(["--addr", &addr, "--pki", pki.to_str().unwrap()]);
    cli(&args)
}

fn save(gw: &Gateway, file: &Path, identity: &str) -> (bool, String) {
    save_to(gw, &[file.to_str().unwrap(), "--identity", identity])
}

/// A save to `file` while the test's own tasks go on serving load.
async fn save_meanwhile(gw: &Gateway, file: &Path) -> (bool, String) {
    tokio::task::block_in_place(|| save_to(gw, &[file.to_str().unwrap()]))
}

fn inspect(file: &Path, identity: &Path) -> (bool, String) {
    cli(&[
        "snapshot",
        "inspect",
        file.to_str().unwrap(),
        "--identity",
        identity.to_str().unwrap(),
    ])
}

fn restore(file: &Path, identity: &Path, dir: &Path) -> (bool, String) {
    cli(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--identity",
        identity.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
        "--reason",
        "drill: the disk of node-1 failed",
    ])
}

/// Civil affairs' pull of one resident, as in the demo's grants.
async fn get_person(gw: &Gateway, id: &str) -> Result<Person, tonic::Status> {
    common::get_person(gw, "civil-affairs", "social-assistance", id)
        .await
        .map(|r| r.person.unwrap())
}

/// Not only pulls are held: every call that answers with personal data —
/// the log's entries, a resident's history, corrections — is UNAVAILABLE on
/// a restored gateway until the restore is confirmed (a token revoked after
/// the snapshot must not read the log either).
async fn assert_every_reader_is_held(gw: &Gateway, id: &str) {
    use govshare::proto::audit_service_client::AuditServiceClient;
    use govshare::proto::correction_service_client::CorrectionServiceClient;
    use govshare::proto::resident_service_client::ResidentServiceClient;
    let mut auditor = AuditServiceClient::new(gw.channel("auditor").await);
    let token = gw.token("auditor");
    let query = auditor
        .query_audit(req(QueryAuditRequest::default(), &token))
        .await;
    let subject = auditor
        .subject_access_history(req(
            SubjectAccessHistoryRequest {
                id_number: id.into(),
                ..Default::default()
            },
            &token,
        ))
        .await;
    let resident = ResidentServiceClient::new(gw.channel("resident-portal").await)
        .my_access_history(req(
            MyAccessHistoryRequest {
                id_number: id.into(),
                ..Default::default()
            },
            &gw.token("resident-portal"),
        ))
        .await;
    let mine = CorrectionServiceClient::new(gw.channel("civil-affairs").await)
        .list_my_corrections(req(
            ListMyCorrectionsRequest::default(),
            &gw.token("civil-affairs"),
        ))
        .await;
    let queue = CorrectionServiceClient::new(gw.channel("public-security").await)
        .list_corrections(req(
            ListCorrectionsRequest::default(),
            &gw.token("public-security"),
        ))
        .await;
    for (what, code) in [
        ("QueryAudit", query.err().map(|e| e.code())),
        ("SubjectAccessHistory", subject.err().map(|e| e.code())),
        ("MyAccessHistory", resident.err().map(|e| e.code())),
        ("ListMyCorrections", mine.err().map(|e| e.code())),
        ("ListCorrections", queue.err().map(|e| e.code())),
    ] {
        assert_eq!(code, Some(Code::Unavailable), "{what} answers while held");
    }
}

/// The 99th percentile of `samples`.
fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_under_load_restores_the_same_records_as_a_new_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start("");
    let ids: Vec<String> = district()
        .persons
        .iter()
        .filter_map(|p| p.id_number.clone())
        .take(200)
        .collect();
    // Eight departments' systems pull while the snapshot is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let mut pullers = Vec::new();
    for k in 0..8 {
        let channel = gw.channel("civil-affairs").await;
        let token = gw.token("civil-affairs");
        let (stop, ids) = (stop.clone(), ids.clone());
        pullers.push(tokio::spawn(async move {
            let mut c = PopulationServiceClient::new(channel);
            let mut times = Vec::new();
            let mut i = k;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                c.get_person(req(
                    GetPersonRequest {
                        context: ctx("social-assistance"),
                        id_number: ids[i % ids.len()].clone(),
                    },
                    &token,
                ))
                .await
                .expect("no pull fails while a snapshot is taken");
                times.push((started, started.elapsed()));
                i += 8;
            }
            times
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let file = tmp.path().join("gw.snapshot.age");
    let save_started = Instant::now();
    let (ok, out) = save_meanwhile(&gw, &file).await;
    let save_took = save_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut during = Vec::new();
    let mut total = 0;
    for p in pullers {
        for (at, took) in p.await.unwrap() {
            total += 1;
            if at >= save_started && at <= save_started + save_took {
                during.push(took);
            }
        }
    }
    assert!(ok, "{out}");
    assert!(!during.is_empty(), "pulls ran during the save");
    let p99 = p99(during.clone());
    eprintln!(
        "snapshot save took {save_took:?} with 8 pullers: {} pulls during it (of {total}), p99 {p99:?}",
        during.len(),
    );
    // Pulls are not held by a save (control-plane writes are): a pull
    // waiting out the copy would take as long as the save itself.
    assert!(p99 < Duration::from_secs(2), "p99 {p99:?} during the save");
    assert!(out.contains("encrypted to: age1"), "{out}");

    // Taking it is an ADMIN entry: who, and the log size it holds.
    let entry = gw
        .audit_entries()
        .into_iter()
        .map(|(_, e)| e)
        .find(|e| e.method == "/govshare.v1.AdminService/SaveSnapshot")
        .expect("the snapshot's own entry");
    let change = entry.change.unwrap();
    let after: serde_json::Value = serde_json::from_str(&change.after_json).unwrap();
    let size = after["log_size"].as_u64().unwrap();
    assert!(size > 0 && size <= entry.index, "{after}");
    assert_eq!(entry.principal.unwrap().department, "gateway-admin");

    // A monitor follows the published tree; its state passes the snapshot.
    let state = tmp.path().join("monitor.state");
    let public_key = tmp.path().join("audit-log.pub");
    std::fs::copy(gw.pki("audit-log.pub"), &public_key).unwrap();
    let monitor = |tiles: &Path, accept: &[&str]| {
        let mut args = vec![
            "audit",
            "verify-tiles",
            tiles.to_str().unwrap(),
            "--public-key",
            public_key.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(accept);
        cli(&args)
    };
    let began = Instant::now();
    loop {
        let (ok, out) = monitor(&gw.pki("").join("../audit/index/tiles"), &[]);
        assert!(ok, "{out}");
        let saved = std::fs::read_to_string(&state).unwrap();
        if govshare::audit::checkpoint::note_size(&saved) > size {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(10), "{saved}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // It checks out. (The backup identity is kept apart from the gateway.)
    let identity = tmp.path().join("backup.agekey");
    std::fs::copy(gw.pki("backup.agekey"), &identity).unwrap();
    let (ok, out) = inspect(&file, &identity);
    assert!(ok, "{out}");
    assert!(
        out.contains("store/population") && out.contains("log/entries"),
        "{out}"
    );

    // Restored elsewhere: the next generation, held until confirmed.
    let (inside, _) = residents();
    let id = inside.id_number.unwrap();
    let before = get_person(&gw, &id).await.unwrap();
    drop(gw);
    let new_dir = tmp.path().join("restored");
    let (ok, out) = restore(&file, &identity, &new_dir);
    assert!(ok, "{out}");
    for said in [
        "generation 2",
        "govshare.local/audit/2+",
        "--log 'govshare.local/audit/2+",
        "HELD",
        "--retire-previous",
        "confirm-restore",
    ] {
        assert!(out.contains(said), "the restore did not say {said}: {out}");
    }
    let mut restored = Gateway::start_in(&new_dir, "");
    let held = get_person(&restored, &id).await.unwrap_err();
    assert_eq!(held.code(), Code::Unavailable, "{held:?}");
    assert!(
        held.message().contains("restored from a snapshot"),
        "{}",
        held.message()
    );
    assert_every_reader_is_held(&restored, &id).await;
    let mut admin = admin_client(&restored, "admin").await;
    admin
        .confirm_restore(req(
            ConfirmRestoreRequest {
                note: "revocations since the snapshot re-applied (drill)".into(),
            },
            &restored.token("admin"),
        ))
        .await
        .unwrap();
    let again = admin
        .confirm_restore(req(
            ConfirmRestoreRequest::default(),
            &restored.token("admin"),
        ))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(get_person(&restored, &id).await.unwrap(), before);
    assert!(restored.stop());

    // The monitor sees the next generation: refused until accepted, then
    // followed from there.
    let tiles = new_dir.join("audit/index/tiles");
    let (ok, out) = monitor(&tiles, &[]);
    assert!(!ok && out.contains("generation 2"), "{out}");
    let (ok, out) = monitor(&tiles, &["--accept-generation", "2"]);
    assert!(ok, "{out}");
    let (ok, out) = monitor(&tiles, &[]);
    assert!(ok, "{out}");

    // The restored log verifies with its generation accepted, and reports
    // the gap without.
    let dir = new_dir.to_str().unwrap();
    let (ok, out) = cli(&["audit", "verify", "--data-dir", dir]);
    assert!(!ok, "{out}");
    let gap = out
        .lines()
        .find(|l| l.starts_with("GAP: "))
        .unwrap_or_else(|| panic!("no GAP line: {out}"));
    assert!(
        gap.contains(&format!("after its first {size} entries"))
            && gap.contains("the snapshot's own")
            && gap.contains("drill: the disk of node-1 failed"),
        "{gap}"
    );
    let (ok, out) = cli(&[
        "audit",
        "verify",
        "--data-dir",
        dir,
        "--accept-generation",
        "2",
    ]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_cut_or_foreign_snapshot_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start("");
    let file = tmp.path().join("good.age");
    let (ok, out) = save(&gw, &file, "admin");
    assert!(ok, "{out}");
    let identity = gw.pki("backup.agekey");
    let good = std::fs::read(&file).unwrap();

    // No resident's ID or name is readable in it.
    let d = district();
    for p in d.persons.iter().take(300) {
        for secret in [p.id_number.as_ref().unwrap(), p.name.as_ref().unwrap()] {
            assert!(
                !good.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "'{secret}' is in the snapshot in plaintext"
            );
        }
    }

    // One byte changed, the end cut off, encrypted to someone else.
    let flipped = tmp.path().join("flipped.age");
    let mut b = good.clone();
    let at = b.len() / 2;
    b[at] ^= 0x01;
    std::fs::write(&flipped, b).unwrap();
    let cut = tmp.path().join("cut.age");
    std::fs::write(&cut, &good[..good.len() - 1000]).unwrap();
    let foreign = tmp.path().join("foreign.age");
    let other = age::x25519::Identity::generate();
    {
        use std::io::{Read, Write};
        let mine = govshare::snapshot::identity(&identity).unwrap();
        let mut plain = Vec::new();
        age::Decryptor::new(good.as_slice())
            .unwrap()
            .decrypt(std::iter::once(&mine as &dyn age::Identity))
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        let recipient = other.to_public();
        let mut out = Vec::new();
        let mut w =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .unwrap()
                .wrap_output(&mut out)
                .unwrap();
        w.write_all(&plain).unwrap();
        w.finish().unwrap();
        std::fs::write(&foreign, out).unwrap();
    }
    for (bad, why) in [
        (&flipped, "damaged"),
        (&cut, "truncated"),
        (&foreign, "not encrypted to this identity"),
    ] {
        let (ok, out) = inspect(bad, &identity);
        assert!(!ok, "{} passed inspect", bad.display());
        assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
        assert!(out.contains(why), "{}: {out}", bad.display());
        let into = tmp.path().join(format!(
            "restore-{}",
            bad.file_name().unwrap().to_string_lossy()
        ));
        let (ok, out) = restore(bad, &identity, &into);
        assert!(!ok, "{} was restored", bad.display());
        assert!(out.contains(why), "{}: {out}", bad.display());
        assert!(!into.exists(), "a refused restore wrote {}", into.display());
    }

    // Only into an empty directory.
    let busy = tmp.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), "mine").unwrap();
    let (ok, out) = restore(&file, &identity, &busy);
    assert!(!ok && out.contains("not empty"), "{out}");
    let left: Vec<_> = std::fs::read_dir(&busy).unwrap().collect();
    assert_eq!(left.len(), 1);
    assert_eq!(
        std::fs::read_to_string(busy.join("keep.txt")).unwrap(),
        "mine"
    );

    // A pinned log key that is not the snapshot's refuses it too.
    let other_key = tmp.path().join("other.pub");
    std::fs::write(
        &other_key,
        govshare::audit::checkpoint::LogKey::load_or_create(
            &tmp.path().join("k"),
            "govshare.local/audit",
        )
        .unwrap()
        .verifier_key(),
    )
    .unwrap();
    let (ok, out) = cli(&[
        "snapshot",
        "inspect",
        file.to_str().unwrap(),
        "--identity",
        identity.to_str().unwrap(),
        "--public-key",
        other_key.to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("not the one you named"), "{out}");
}

/// A request with a field SaveSnapshotRequest does not have: what an
/// attacker would send to name their own recipient.
#[derive(Clone, PartialEq, prost::Message)]
struct WithRecipient {
    #[prost(string, tag = "1")]
    recipient: String,
    #[prost(string, repeated, tag = "2")]
    recipients: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_cannot_choose_whom_a_snapshot_is_encrypted_to() {
    use prost_reflect::DescriptorPool;
    // The request has no field to name one…
    let pool = DescriptorPool::decode(govshare::proto::FILE_DESCRIPTOR_SET).unwrap();
    let request = pool
        .get_message_by_name("govshare.v1.SaveSnapshotRequest")
        .unwrap();
    assert_eq!(request.fields().count(), 0);

    // …and one smuggled in as an unknown field changes nothing.
    let gw = Gateway::start("");
    let mine = age::x25519::Identity::generate();
    let channel = gw.channel("admin").await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<WithRecipient, SnapshotChunk>::default();
    let mut stream = grpc
        .server_streaming(
            req(
                WithRecipient {
                    recipient: mine.to_public().to_string(),
                    recipients: vec![mine.to_public().to_string()],
                },
                &gw.token("admin"),
            ),
            "/govshare.v1.AdminService/SaveSnapshot".parse().unwrap(),
            codec,
        )
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    let mut recipients = Vec::new();
    while let Some(c) = stream.message().await.unwrap() {
        match c.part.unwrap() {
            snapshot_chunk::Part::Info(i) => recipients = i.recipients,
            snapshot_chunk::Part::Data(d) => bytes.extend(d),
        }
    }
    assert!(!recipients.contains(&mine.to_public().to_string()));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("s.age");
    std::fs::write(&file, &bytes).unwrap();
    let err =
        govshare::snapshot::read(&file, &mine, None, &mut govshare::snapshot::Discard).unwrap_err();
    assert!(
        format!("{err:#}").contains("not encrypted to this identity"),
        "{err:#}"
    );
    let backup = govshare::snapshot::identity(&gw.pki("backup.agekey")).unwrap();
    govshare::snapshot::read(&file, &backup, None, &mut govshare::snapshot::Discard).unwrap();

    // Only an administrator takes one, and a refusal is audited.
    let (ok, out) = save(&gw, &tmp.path().join("no.age"), "civil-affairs");
    assert!(!ok && out.contains("PermissionDenied"), "{out}");
    assert!(!tmp.path().join("no.age").exists());
    assert!(gw.audit_entries().into_iter().any(|(_, e)| {
        e.method == "/govshare.v1.AdminService/SaveSnapshot"
            && e.decision == AuditDecision::Deny as i32
            && e.principal.is_some_and(|p| p.department == "civil-affairs")
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_the_previous_keys_voids_every_older_token_but_the_callers() {
    let gw = Gateway::start("");
    let id = residents().0.id_number.unwrap();
    get_person(&gw, &id).await.unwrap();
    let old_admin = gw.token("admin");
    let (ok, out) = cli(&[
        "admin",
        "--addr",
        &gw.addr.to_string(),
        "--pki",
        gw.pki("").to_str().unwrap(),
        "key",
        "rotate",
        "--retire-previous",
    ]);
    assert!(ok, "{out}");
    let err = get_person(&gw, &id).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // The administrator's token was replaced in its file, and works.
    let new_admin = gw.token("admin");
    assert_ne!(new_admin, old_admin);
    let mut admin = admin_client(&gw, "admin").await;
    assert_eq!(
        admin
            .list_departments(req(ListDepartmentsRequest {}, &old_admin))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    admin
        .list_departments(req(ListDepartmentsRequest {}, &new_admin))
        .await
        .unwrap();
    // The replacement lives no longer than the token it replaces, and is
    // written to its file only, never printed.
    let exp = |t: &str| {
        let claims = t.split('.').nth(1).unwrap();
        let json = data_encoding::BASE64URL_NOPAD
            .decode(claims.as_bytes())
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&json).unwrap()["exp"]
            .as_i64()
            .unwrap()
    };
    assert!(exp(&new_admin) <= exp(&old_admin));
    assert!(!out.contains(&new_admin), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_whose_log_key_changed_does_not_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut gw = Gateway::start_in(&dir, "");
    get_person(&gw, &residents().0.id_number.unwrap())
        .await
        .unwrap();
    assert!(gw.stop());
    let key = dir.join("pki/audit-log.key");
    let original = std::fs::read(&key).unwrap();
    // Another key in its place: refused, with the key named.
    std::fs::remove_file(&key).unwrap();
    govshare::audit::checkpoint::LogKey::load_or_create(&dir.join("pki"), "govshare.local/audit")
        .unwrap();
    let said = Gateway::refuses_to_start(&dir, "");
    assert!(said.contains("does not verify under the log key"), "{said}");
    // No key at all: refused, and none is made.
    std::fs::remove_file(&key).unwrap();
    let said = Gateway::refuses_to_start(&dir, "");
    assert!(said.contains("audit-log.key is missing"), "{said}");
    assert!(!key.exists(), "a refused start made a new log key");
    // The right key back: it starts.
    std::fs::write(&key, original).unwrap();
    drop(Gateway::start_in(&dir, ""));
}

/// What a scheduled job runs: `save --dir --keep N` leaves the newest N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_save_keeps_the_newest_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start("");
    let dir = tmp.path().join("backups");
    let mut made = Vec::new();
    for _ in 0..3 {
        let (ok, out) = save_to(&gw, &["--dir", dir.to_str().unwrap(), "--keep", "2"]);
        assert!(ok, "{out}");
        let wrote = out
            .lines()
            .find_map(|l| l.strip_prefix("wrote "))
            .and_then(|l| l.split(':').next())
            .unwrap()
            .to_string();
        made.push(PathBuf::from(wrote));
    }
    let mut left: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    left.sort();
    assert_eq!(left, made[1..], "the newest two are kept");
    // `--keep 0` would remove the snapshot just taken with the rest.
    let (ok, out) = save_to(&gw, &["--dir", dir.to_str().unwrap(), "--keep", "0"]);
    assert!(!ok && out.contains("--keep"), "{out}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
}

/// The copy is one moment: departments created while the snapshot is
/// taken are in the restored store exactly when their entry is in the
/// restored log (the control-plane writes wait on the copy; none lands in
/// the store but not the log, or the reverse).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_holds_the_store_and_the_log_at_one_moment() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start("");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut admin = admin_client(&gw, "admin").await;
        let token = gw.token("admin");
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut made = 0;
            while !stop.load(Ordering::Relaxed) {
                admin
                    .create_department(req(
                        CreateDepartmentRequest {
                            id: format!("snap-{made}"),
                            name: format!("科室 {made}"),
                            jurisdiction: vec!["310115".into()],
                        },
                        &token,
                    ))
                    .await
                    .expect("a control-plane write waits for the copy, never fails");
                made += 1;
            }
            made
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let file = tmp.path().join("gw.snapshot.age");
    let (ok, out) = save_meanwhile(&gw, &file).await;
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let made = writer.await.unwrap();
    let identity = gw.pki("backup.agekey");
    let dir = tmp.path().join("restored");
    let (ok, out) = restore(&file, &identity, &dir);
    assert!(ok, "{out}");
    drop(gw);

    let restored = Gateway::start_in(&dir, "");
    let in_log: std::collections::BTreeSet<String> = restored
        .audit_entries()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.method == "/govshare.v1.AdminService/CreateDepartment")
        .filter_map(|e| {
            let after: serde_json::Value = serde_json::from_str(&e.change?.after_json).ok()?;
            Some(after["id"].as_str()?.to_string())
        })
        .filter(|id| id.starts_with("snap-"))
        .collect();
    let in_store: std::collections::BTreeSet<String> = admin_client(&restored, "admin")
        .await
        .list_departments(req(ListDepartmentsRequest {}, &restored.token("admin")))
        .await
        .unwrap()
        .into_inner()
        .departments
        .into_iter()
        .map(|d| d.id)
        .filter(|id| id.starts_with("snap-"))
        .collect();
    assert!(
        !in_store.is_empty(),
        "departments made before the save are in it"
    );
    assert!(
        in_store.len() < made,
        "departments made after the save are not ({} of {made})",
        in_store.len()
    );
    assert_eq!(in_store, in_log, "the store and the log are of one moment");
}

/// A restore killed half-way leaves a directory the gateway will not
/// serve: not a partial store without its hold, not a fresh log under a
/// new key beside restored records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_cut_short_leaves_a_directory_that_does_not_start() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start("");
    let file = tmp.path().join("gw.snapshot.age");
    let (ok, out) = save(&gw, &file, "admin");
    assert!(ok, "{out}");
    let identity = tmp.path().join("backup.agekey");
    std::fs::copy(gw.pki("backup.agekey"), &identity).unwrap();
    drop(gw);
    // Kill the restore once it has begun writing (a few tries: a fast
    // machine may finish it first).
    let mut cut = None;
    for attempt in 0..20 {
        let dir = tmp.path().join(format!("restored-{attempt}"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_govshare"))
            .args(["snapshot", "restore"])
            .arg(&file)
            .arg("--identity")
            .arg(&identity)
            .arg("--data-dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let began = Instant::now();
        while !dir.join("store").exists() && began.elapsed() < Duration::from_secs(20) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !status.success() && dir.join("store").exists() {
            cut = Some(dir);
            break;
        }
    }
    let dir = cut.expect("no restore was caught half-way in 20 tries");
    let config = tmp.path().join("cut.toml");
    std::fs::write(
        &config,
        format!(
            "demo = true\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_govshare"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let began = Instant::now();
    let status = loop {
        if let Some(s) = serve.try_wait().unwrap() {
            break Some(s);
        }
        if began.elapsed() > Duration::from_secs(15) {
            let _ = serve.kill();
            let _ = serve.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = serve.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        status.is_some_and(|s| !s.success()),
        "the gateway served a half-restored directory: {said}"
    );
    assert!(said.contains("did not finish"), "{said}");
}

/// Each snapshot in progress keeps a full encrypted copy in the data dir
/// until it is streamed: one at a time, until its stream ends, and none
/// left behind by a caller who went away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_snapshot_at_a_time_until_its_stream_ends() {
    // A district whose snapshot (~7 MB) is more than the stream's buffers
    // hold (~3.5 MB: the channel, the send buffer, the client's window),
    // so an unread stream is still in progress.
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with_env(
        tmp.path(),
        &format!(
            "demo = true\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            tmp.path().display()
        ),
        &[("GOVSHARE_DEMO_PERSONS", "20000")],
    );
    let token = gw.token("admin");
    let mut first = admin_client(&gw, "admin")
        .await
        .save_snapshot(req(SaveSnapshotRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    // The caller has the info, and reads no further.
    let info = match first.message().await.unwrap().unwrap().part {
        Some(snapshot_chunk::Part::Info(i)) => i,
        other => panic!("{other:?}"),
    };
    assert!(info.bytes > 5 << 20, "{} bytes fit the buffers", info.bytes);
    let second = admin_client(&gw, "admin")
        .await
        .save_snapshot(req(SaveSnapshotRequest {}, &token))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(second.code(), Code::ResourceExhausted, "{second:?}");
    drop(first);
    let scratch = gw.pki("").parent().unwrap().join("snapshots");
    let began = Instant::now();
    loop {
        let left = std::fs::read_dir(&scratch).map_or(0, |d| d.count());
        if left == 0 {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the copy outlived its stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut third = admin_client(&gw, "admin")
        .await
        .save_snapshot(req(SaveSnapshotRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    while third.message().await.unwrap().is_some() {}
}
