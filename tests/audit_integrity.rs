//! The record holds against someone who can write its files (issue "The
//! record holds…"): each test reproduces one way the log could be damaged,
//! rolled back or flooded, against the real binary and real files.

mod common;

use common::{Gateway, cli, ctx, district, fingerprint, req};
use govshare::audit::segment::{frame_into, segments};
use govshare::proto::audit_service_client::AuditServiceClient;
use govshare::proto::population_service_client::PopulationServiceClient;
use govshare::proto::publish_service_client::PublishServiceClient;
use govshare::proto::*;
use prost::Message;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;

fn get(id: &str) -> GetPersonRequest {
    GetPersonRequest {
        context: ctx("social-assistance"),
        id_number: id.into(),
    }
}

/// Some audited pulls.
async fn pulls(gw: &Gateway, n: usize) {
    let mut c = PopulationServiceClient::new(gw.channel("civil-affairs").await);
    let token = gw.token("civil-affairs");
    for p in district().persons.iter().take(n) {
        c.get_person(req(get(p.id_number.as_ref().unwrap()), &token))
            .await
            .unwrap();
    }
}

/// A stopped gateway's data dir with some traffic, every entry signed.
async fn stopped_log(extra: &str, n: usize) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut gw = Gateway::start_in(&dir, extra);
    pulls(&gw, n).await;
    assert!(gw.stop(), "a graceful stop exits 0");
    (tmp, dir)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else if p.extension().is_none_or(|x| x != "sock") {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

fn verify(dir: &Path, extra: &[&str]) -> (bool, String) {
    let d = dir.to_str().unwrap();
    let mut args = vec!["audit", "verify", "--data-dir", d];
    args.extend_from_slice(extra);
    cli(&args)
}

fn checkpoints(dir: &Path) -> PathBuf {
    dir.join("audit").join("checkpoints.log")
}

/// Offsets of the frames of a framed file.
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        out.push(pos);
        pos += 8 + u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_damage_to_the_checkpoint_file_is_caught() {
    let (_tmp, dir) = stopped_log("", 5).await;
    let (ok, out) = verify(&dir, &[]);
    assert!(ok && out.contains("OK: "), "{out}");
    let original = std::fs::read(checkpoints(&dir)).unwrap();
    let offsets = frame_offsets(&original);
    assert!(offsets.len() >= 2, "several checkpoints");
    let middle = offsets[offsets.len() / 2];
    type Tamper = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "a flipped byte inside a note",
            Box::new(move |p: &Path| {
                let mut b = std::fs::read(p).unwrap();
                b[middle + 20] ^= 0x01;
                std::fs::write(p, b).unwrap();
            }),
        ),
        (
            "a length field made larger",
            Box::new(move |p: &Path| {
                let mut b = std::fs::read(p).unwrap();
                b[middle + 1] ^= 0x10;
                std::fs::write(p, b).unwrap();
            }),
        ),
        (
            "a length field made smaller",
            Box::new(move |p: &Path| {
                let mut b = std::fs::read(p).unwrap();
                b[middle] ^= 0x40;
                std::fs::write(p, b).unwrap();
            }),
        ),
        (
            "the last frame cut short",
            Box::new(|p: &Path| {
                let b = std::fs::read(p).unwrap();
                std::fs::write(p, &b[..b.len() - 10]).unwrap();
            }),
        ),
        (
            "the last frame's length flipped",
            Box::new(move |p: &Path| {
                let mut b = std::fs::read(p).unwrap();
                let last = *frame_offsets(&b).last().unwrap();
                b[last + 2] ^= 0x01;
                std::fs::write(p, b).unwrap();
            }),
        ),
    ];
    for (what, tamper) in cases {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(&dir, copy.path());
        tamper(&checkpoints(copy.path()));
        let (ok, out) = verify(copy.path(), &[]);
        assert!(!ok && !out.contains("OK:"), "{what}: {out}");
        assert!(
            out.contains("TAMPERED") && out.contains("checkpoint"),
            "{what}: {out}"
        );
        let audit = copy.path().join("audit");
        let before = fingerprint(&audit);
        let said = Gateway::refuses_to_start(copy.path(), "");
        assert!(said.contains("checkpoints.log"), "{what}: {said}");
        assert_eq!(before, fingerprint(&audit), "{what}: start changed nothing");
    }
    // Emptied or deleted: never "OK", a loud warning and a non-zero exit;
    // with --strict it is tampering; --allow-unsigned accepts it loudly.
    for (what, remove) in [("emptied", true), ("deleted", false)] {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(&dir, copy.path());
        if remove {
            std::fs::write(checkpoints(copy.path()), b"").unwrap();
        } else {
            std::fs::remove_file(checkpoints(copy.path())).unwrap();
        }
        let (ok, out) = verify(copy.path(), &[]);
        assert!(
            !ok && out.contains("WARNING") && !out.contains("OK:"),
            "{what}: {out}"
        );
        let (ok, out) = verify(copy.path(), &["--strict"]);
        assert!(!ok && out.contains("TAMPERED"), "{what}: {out}");
        let (ok, out) = verify(copy.path(), &["--allow-unsigned"]);
        assert!(ok && out.contains("WARNING"), "{what}: {out}");
        let said = Gateway::refuses_to_start(copy.path(), "");
        assert!(said.contains("checkpoints were removed"), "{what}: {said}");
    }
}

/// Rewrites a stopped log's segments as one segment of `entries`.
fn write_segments(dir: &Path, entries: &[Vec<u8>]) {
    let audit = dir.join("audit");
    for (_, p) in segments(&audit).unwrap() {
        std::fs::remove_file(p).unwrap();
    }
    let mut buf = Vec::new();
    for e in entries {
        frame_into(&mut buf, e);
    }
    std::fs::write(audit.join(format!("{:020}.seg", 0)), buf).unwrap();
    let _ = std::fs::remove_dir_all(audit.join("index"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_or_rolling_back_is_caught_with_a_saved_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut gw = Gateway::start_in(&dir, "");
    pulls(&gw, 5).await;
    let saved = tmp.path().join("saved.note");
    let (ok, out) = cli(&[
        "audit",
        "--addr",
        &gw.addr.to_string(),
        "--pki",
        dir.join("pki").to_str().unwrap(),
        "checkpoint",
        "--save",
        saved.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let saved_size =
        govshare::audit::checkpoint::note_size(&std::fs::read_to_string(&saved).unwrap());
    pulls(&gw, 5).await;
    assert!(gw.stop());
    let trusted = ["--trusted", saved.to_str().unwrap()];
    let (ok, out) = verify(&dir, &trusted);
    assert!(ok, "the untouched log contains the saved checkpoint: {out}");

    // An insider edits an entry, re-chains everything after it and
    // deletes the checkpoints that no longer match.
    let entries = govshare::audit::segment::read_all(&dir.join("audit")).unwrap();
    let target = (saved_size / 2) as usize;
    let mut rewritten = Vec::new();
    let mut prev: Option<[u8; 32]> = None;
    for (i, bytes) in entries.iter().enumerate() {
        let mut e = AuditEntry::decode(bytes.as_slice()).unwrap();
        if i == target {
            e.principal.get_or_insert_with(Default::default).department = "somebody-else".into();
        }
        e.prev_leaf_hash = prev.map(|h| h.to_vec()).unwrap_or_default();
        let b = e.encode_to_vec();
        prev = Some(govshare::audit::leaf_hash(&b));
        rewritten.push(b);
    }
    let edited = tempfile::tempdir().unwrap();
    copy_dir(&dir, edited.path());
    write_segments(edited.path(), &rewritten);
    std::fs::remove_file(checkpoints(edited.path())).unwrap();
    let (ok, out) = verify(edited.path(), &[]);
    assert!(
        !ok && !out.contains("OK:"),
        "re-chained without checkpoints: {out}"
    );
    let (ok, out) = verify(edited.path(), &trusted);
    assert!(
        !ok && out.contains("TAMPERED") && out.contains("rewritten"),
        "{out}"
    );
    Gateway::refuses_to_start(edited.path(), "");

    // Rollback: the newest entries go, with the checkpoints covering them.
    let notes = govshare::audit::checkpoint::read_notes(&checkpoints(&dir))
        .unwrap()
        .unwrap();
    let (keep_notes, back_to) = notes
        .iter()
        .enumerate()
        .rev()
        .map(|(i, n)| (i + 1, govshare::audit::checkpoint::note_size(n)))
        .find(|(_, size)| *size < saved_size)
        .unwrap();
    let rolled = tempfile::tempdir().unwrap();
    copy_dir(&dir, rolled.path());
    write_segments(rolled.path(), &entries[..back_to as usize]);
    let bytes = std::fs::read(checkpoints(&dir)).unwrap();
    let cut = frame_offsets(&bytes)
        .get(keep_notes)
        .copied()
        .unwrap_or(bytes.len());
    std::fs::write(checkpoints(rolled.path()), &bytes[..cut]).unwrap();
    let (ok, out) = verify(rolled.path(), &[]);
    assert!(ok, "a clean rollback is invisible to the key alone: {out}");
    let (ok, out) = verify(rolled.path(), &trusted);
    assert!(!ok && out.contains("rolled back"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_must_be_signed_and_its_json_must_be_its_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let gw = Gateway::start_in(&dir, "");
    pulls(&gw, 3).await;
    let export = tmp.path().join("audit.jsonl");
    let (ok, out) = cli(&[
        "audit",
        "--addr",
        &gw.addr.to_string(),
        "--pki",
        dir.join("pki").to_str().unwrap(),
        "export",
        "--out",
        export.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let key = dir.join("pki/audit-log.pub");
    let check = |text: &str| {
        let f = tmp.path().join("check.jsonl");
        std::fs::write(&f, text).unwrap();
        cli(&[
            "audit",
            "verify",
            "--export",
            f.to_str().unwrap(),
            "--public-key",
            key.to_str().unwrap(),
        ])
    };
    let text = std::fs::read_to_string(&export).unwrap();
    let (ok, out) = check(&text);
    assert!(ok && out.contains("OK: "), "{out}");

    let no_checkpoints: String = text
        .lines()
        .filter(|l| !l.starts_with("{\"checkpoint\""))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(no_checkpoints.lines().count() > 3, "entries remain");
    let (ok, out) = check(&no_checkpoints);
    assert!(
        !ok && !out.contains("OK:"),
        "checkpoint lines removed: {out}"
    );

    // The JSON claims another department; the hashed bytes do not.
    let line = text
        .lines()
        .position(|l| l.contains("\"civil-affairs\""))
        .unwrap();
    let edited: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let l = if i == line {
                l.replace("\"civil-affairs\"", "\"public-security\"")
            } else {
                l.to_string()
            };
            format!("{l}\n")
        })
        .collect();
    let (ok, out) = check(&edited);
    assert!(!ok && out.contains("TAMPERED"), "{out}");
    assert!(out.contains(&format!("line {}", line + 1)), "{out}");

    // Lines a reader could take for entries that the hash does not cover.
    let entry_line = text.lines().nth(line).unwrap();
    let json: serde_json::Value = serde_json::from_str(entry_line).unwrap();
    let fake = serde_json::json!({"public_key": null, "index": 1, "entry": json["entry"]});
    let mut with_extra = entry_line.trim_end_matches('}').to_string();
    with_extra.push_str(",\"note\":\"added\"}");
    let duplicated = entry_line.replacen(
        "\"entry\":",
        &format!("\"entry\":{},\"entry\":", json["entry"]),
        1,
    );
    for (what, doctored) in [
        (
            "a line with a null public_key and an entry",
            format!("{fake}\n{text}"),
        ),
        (
            "an extra key on an entry line",
            text.replace(entry_line, &with_extra),
        ),
        (
            "a duplicated entry key",
            text.replace(entry_line, &duplicated),
        ),
        (
            "nothing but a key",
            text.lines()
                .filter(|l| l.starts_with("{\"public_key\""))
                .map(|l| format!("{l}\n"))
                .collect(),
        ),
    ] {
        let (ok, out) = check(&doctored);
        assert!(!ok && !out.contains("OK:"), "{what}: {out}");
    }
}

/// No log, or signatures that stop short of the entries under `--strict`,
/// is never "OK": unsigned entries are verified by nothing but their own
/// (rewritable) hash chain and timestamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_and_an_unsigned_tail_are_not_ok() {
    let (tmp, dir) = stopped_log("", 6).await;
    let key = dir.join("pki/audit-log.pub");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (ok, out) = verify(&empty, &["--public-key", key.to_str().unwrap()]);
    assert!(!ok && !out.contains("OK:"), "an empty directory: {out}");

    let (ok, out) = verify(&dir, &["--strict"]);
    assert!(ok, "{out}");
    let copy = tmp.path().join("cut");
    copy_dir(&dir, &copy);
    let bytes = std::fs::read(checkpoints(&copy)).unwrap();
    let last = *frame_offsets(&bytes).last().unwrap();
    std::fs::write(checkpoints(&copy), &bytes[..last]).unwrap();
    let (ok, out) = verify(&copy, &["--strict"]);
    assert!(
        !ok && !out.contains("OK:"),
        "the newest checkpoint removed, the entries it alone signed are unsigned: {out}"
    );
}

/// Zero bytes after the last frame (a file system that zero-fills after a
/// crash) are a torn tail, never entries: the log is cut back to its last
/// real frame and still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeroes_after_the_last_frame_never_become_entries() {
    let (_tmp, dir) = stopped_log("", 3).await;
    let newest = segments(&dir.join("audit")).unwrap().pop().unwrap().1;
    let before = std::fs::read(&newest).unwrap();
    let mut zeroed = before.clone();
    zeroed.extend_from_slice(&[0u8; 16]);
    std::fs::write(&newest, &zeroed).unwrap();
    let (ok, out) = verify(&dir, &[]);
    assert!(ok, "a zero tail is torn, not tampering: {out}");
    let entries_before = govshare::audit::segment::read_all(&dir.join("audit"))
        .unwrap()
        .len();
    let mut gw = Gateway::start_in(&dir, "");
    pulls(&gw, 1).await;
    assert!(gw.stop());
    let entries = govshare::audit::segment::read_all(&dir.join("audit")).unwrap();
    for (i, bytes) in entries.iter().enumerate() {
        assert!(
            !bytes.is_empty(),
            "entry {i} is empty: zeroes became an entry"
        );
    }
    assert!(entries.len() > entries_before);
    let (ok, out) = verify(&dir, &["--strict"]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_a_segment_stops_the_start_and_changes_nothing() {
    /// Flips one byte of a copy's segment; the start must refuse and
    /// leave every file as it was, and verify must call it tampering.
    fn damage(dir: &Path, extra: &str, segment: &Path, at: usize) -> String {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir, copy.path());
        let target = copy.path().join("audit").join(segment.file_name().unwrap());
        let mut b = std::fs::read(&target).unwrap();
        b[at] ^= 0x01;
        std::fs::write(&target, b).unwrap();
        let before = fingerprint(&copy.path().join("audit"));
        let said = Gateway::refuses_to_start(copy.path(), extra);
        assert_eq!(
            before,
            fingerprint(&copy.path().join("audit")),
            "not a byte changed"
        );
        let (ok, out) = verify(copy.path(), &[]);
        assert!(!ok && out.contains("TAMPERED"), "{out}");
        said
    }
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().to_string();

    // One segment: damage in its middle, entries after it.
    let (_one, dir) = stopped_log("", 20).await;
    let (_, newest) = segments(&dir.join("audit")).unwrap().pop().unwrap();
    let offs = frame_offsets(&std::fs::read(&newest).unwrap());
    assert!(offs.len() > 10);
    let mid = offs[offs.len() / 2];
    let said = damage(&dir, "", &newest, mid + 12);
    assert!(
        said.contains(&name(&newest)) && said.contains(&format!("byte {mid}")),
        "{said}"
    );
    // Its length field made to reach past the end: not a torn tail.
    let said = damage(&dir, "", &newest, mid + 2);
    assert!(
        said.contains("removed") || said.contains("damaged"),
        "{said}"
    );

    // Small segments: damage in an older one.
    let extra = "[audit]\nsegment_bytes = 2048";
    let (_many, dir) = stopped_log(extra, 30).await;
    let segs = segments(&dir.join("audit")).unwrap();
    assert!(segs.len() > 2, "several segments");
    let (_, oldest) = &segs[0];
    let said = damage(&dir, extra, oldest, 30);
    assert!(said.contains(&name(oldest)), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkpoint_readers_never_disorder_the_checkpoint_file() {
    let mut gw = Gateway::start("[audit]\ncheckpoint_interval = \"200ms\"");
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..16 {
        let channel = gw
            .channel(if k % 2 == 0 {
                "auditor"
            } else {
                "civil-affairs"
            })
            .await;
        let token = gw.token(if k % 2 == 0 {
            "auditor"
        } else {
            "civil-affairs"
        });
        let id = district().persons[k].id_number.clone().unwrap();
        tasks.spawn(async move {
            let mut audit = AuditServiceClient::new(channel.clone());
            let mut pop = PopulationServiceClient::new(channel);
            let mut sizes = Vec::new();
            for _ in 0..8 {
                let _ = pop.get_person(req(get(&id), &token)).await;
                let c = audit
                    .get_checkpoint(req(GetCheckpointRequest {}, &token))
                    .await
                    .unwrap()
                    .into_inner();
                sizes.push(c.tree_size);
            }
            sizes
        });
    }
    for sizes in tasks.join_all().await {
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    }
    assert!(gw.stop());
    let notes = govshare::audit::checkpoint::read_notes(&checkpoints(&gw.dir))
        .unwrap()
        .unwrap();
    let sizes: Vec<u64> = notes
        .iter()
        .map(|n| govshare::audit::checkpoint::note_size(n))
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
    let (ok, out) = verify(&gw.dir, &["--strict"]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_publish_stream_writes_nothing_of_its_open_chunk() {
    let gw = Gateway::start("");
    let d = district();
    let grid = d.grids[0].grid_code.clone().unwrap();
    // New residents with fresh, valid IDs (birth year 1930 is unused).
    let fresh: Vec<Person> = (0..300u16)
        .map(|i| {
            let id = govshare::datasets::codes::CitizenId::from_parts(
                "310115",
                chrono::NaiveDate::from_ymd_opt(1930, 1, 1).unwrap(),
                i * 2 + 1,
            );
            Person {
                id_number: Some(id.as_str().into()),
                name: Some("测试".into()),
                residence_grid: Some(grid.clone()),
                ..Default::default()
            }
        })
        .collect();
    // A connection whose socket the test can cut, as a crash or a network
    // failure would: the server sees the stream end without END_STREAM.
    let (sockets_tx, sockets) = std::sync::mpsc::channel::<std::net::TcpStream>();
    let addr = gw.addr;
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let sockets_tx = sockets_tx.clone();
        async move {
            let s = tokio::net::TcpStream::connect(addr).await?.into_std()?;
            sockets_tx.send(s.try_clone()?).unwrap();
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                tokio::net::TcpStream::from_std(s)?,
            ))
        }
    });
    let read = |f: &str| std::fs::read(gw.pki(f)).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.pem")))
        .identity(tonic::transport::Identity::from_pem(
            read("public-security.pem"),
            read("public-security.key"),
        ))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_with_connector(connector)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Person>(1000);
    let mut publish = PublishServiceClient::new(channel);
    let token = gw.token("public-security");
    let call = tokio::spawn(async move {
        publish
            .upsert_persons(req(tokio_stream::wrappers::ReceiverStream::new(rx), &token))
            .await
    });
    for p in &fresh {
        tx.send(p.clone()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    sockets
        .recv()
        .unwrap()
        .shutdown(std::net::Shutdown::Both)
        .unwrap();
    assert!(call.await.unwrap().is_err(), "the stream broke");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = PopulationServiceClient::new(gw.channel("public-security").await);
    for p in fresh.iter().step_by(50) {
        let err = c
            .get_person(req(
                GetPersonRequest {
                    context: ctx("public-security"),
                    id_number: p.id_number.clone().unwrap(),
                },
                &gw.token("public-security"),
            ))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::NotFound,
            "nothing of the open chunk was written"
        );
    }
    let entries = gw.audit_entries();
    let publishes: Vec<_> = entries
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e.kind == EntryKind::Publish as i32)
        .collect();
    assert!(
        publishes
            .iter()
            .all(|e| e.decision == AuditDecision::Deny as i32 && e.keys_returned.is_empty()),
        "no PUBLISH entry claims the records"
    );
    assert!(
        publishes.iter().any(|e| e.reason_code == "STREAM_BROKEN"),
        "the broken stream is on record"
    );
}

fn log_bytes(dir: &Path) -> u64 {
    segments(&dir.join("audit"))
        .unwrap()
        .iter()
        .map(|(_, p)| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_add_a_bounded_amount_to_the_log() {
    let gw = Gateway::start("");
    let mut c = PopulationServiceClient::new(gw.channel("civil-affairs").await);
    let token = gw.token("civil-affairs");
    let before = log_bytes(&gw.dir);
    let big = "X".repeat(3_900_000);
    let err = c
        .get_person(req(
            GetPersonRequest {
                context: Some(PullContext {
                    purpose: "social-assistance".into(),
                    case_id: big.clone(),
                    operator: String::new(),
                }),
                id_number: district().persons[0].id_number.clone().unwrap(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().len() < 300, "the value is not echoed");
    let after_field = log_bytes(&gw.dir);
    assert!(
        after_field - before < 4096,
        "{} bytes",
        after_field - before
    );

    let keys: Vec<String> = (0..100_000).map(|i| format!("{i:018}")).collect();
    let err = c
        .batch_get_persons(req(
            BatchGetPersonsRequest {
                context: ctx("social-assistance"),
                id_numbers: keys,
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert!(matches!(
        err.code(),
        Code::InvalidArgument | Code::ResourceExhausted
    ));
    let after_batch = log_bytes(&gw.dir);
    assert!(
        after_batch - after_field < 4096,
        "{} bytes",
        after_batch - after_field
    );
    let (_, last) = gw.audit_entries().pop().unwrap();
    assert_eq!(
        last.query.unwrap().keys.len(),
        1,
        "recorded by count and digest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_flood_is_counted_in_full_and_recorded_in_bounds() {
    let gw = Gateway::start("");
    let (ok, out) = cli(&[
        "pki",
        "issue-client",
        "--dir",
        gw.dir.join("pki").to_str().unwrap(),
        "--name",
        "stranger",
    ]);
    assert!(ok, "{out}");
    let before = gw.audit_entries().len();
    let channel = gw.channel("stranger").await;
    let calls = 400;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let channel = channel.clone();
        set.spawn(async move {
            let mut c = PopulationServiceClient::new(channel);
            for _ in 0..calls / 8 {
                let err = c.get_person(get("11010519491231002X")).await.unwrap_err();
                assert_eq!(err.code(), Code::Unauthenticated);
            }
        });
    }
    let started = std::time::Instant::now();
    set.join_all().await;
    let seconds = started.elapsed().as_secs() + 2;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let failures: Vec<AuditEntry> = gw
        .audit_entries()
        .into_iter()
        .skip(before)
        .map(|(_, e)| e)
        .filter(|e| e.kind == EntryKind::AuthFailure as i32)
        .collect();
    let full = failures
        .iter()
        .filter(|e| e.reason_code != "AUTH_FAILURES_AGGREGATED")
        .count() as u64;
    let aggregated: u64 = failures
        .iter()
        .filter(|e| e.reason_code == "AUTH_FAILURES_AGGREGATED")
        .map(|e| e.record_count)
        .sum();
    assert_eq!(full + aggregated, calls as u64, "every call is counted");
    assert!(
        full <= 20 * (seconds + 1),
        "{full} full entries in ~{seconds} s"
    );
    assert!(
        failures.len() as u64 <= 21 * (seconds + 1),
        "{} entries for {calls} calls",
        failures.len()
    );
}

/// Mounts a small tmpfs; `None` where mounting is not allowed.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

async fn health(gw: &Gateway) -> i32 {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    HealthClient::new(gw.channel("civil-affairs").await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_recovers_by_itself_when_the_disk_has_room_again() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let Some(fs) = Tmpfs::mount(&dir.join("audit"), "4m") else {
        eprintln!(
            "mounting a tmpfs is not allowed here; the /dev/full test in durability.rs covers the fault"
        );
        return;
    };
    let mut gw = Gateway::start_in(&dir, "[audit]\nsegment_bytes = 65536");
    pulls(&gw, 2).await;
    assert_eq!(health(&gw).await, ServingStatus::Serving as i32);
    // Fill the disk.
    let filler = dir.join("audit").join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let mut c = PopulationServiceClient::new(gw.channel("civil-affairs").await);
    let token = gw.token("civil-affairs");
    let mut refused = false;
    for p in district().persons.iter().take(200) {
        if let Err(e) = c
            .get_person(req(get(p.id_number.as_ref().unwrap()), &token))
            .await
        {
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
            refused = true;
            break;
        }
    }
    assert!(refused, "a full disk fails pulls closed");
    assert_eq!(health(&gw).await, ServingStatus::NotServing as i32);
    // Space comes back; no pull is made, health must notice on its own.
    std::fs::remove_file(&filler).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while health(&gw).await != ServingStatus::Serving as i32 {
        assert!(
            std::time::Instant::now() < deadline,
            "health never recovered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.get_person(req(
        get(district().persons[0].id_number.as_ref().unwrap()),
        &token,
    ))
    .await
    .expect("pulls work again");
    assert!(gw.stop());
    drop(fs);
}

/// Every caller-supplied string a data call echoes or records is bounded:
/// a megabyte in any code, filter or key adds a fixed few hundred bytes to
/// the log, and the status names the field without repeating the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_codes_and_filters_are_neither_echoed_nor_recorded_in_full() {
    use govshare::proto::grid_service_client::GridServiceClient;
    use govshare::proto::legal_entity_service_client::LegalEntityServiceClient;
    let gw = Gateway::start("");
    let big = "1".repeat(1 << 20);
    let (police, market, grids) = (
        gw.token("public-security"),
        gw.token("market-regulation"),
        gw.token("grid-centre"),
    );
    let mut pop = PopulationServiceClient::new(gw.channel("public-security").await);
    let mut ent = LegalEntityServiceClient::new(gw.channel("market-regulation").await);
    let mut grid = GridServiceClient::new(gw.channel("grid-centre").await);
    let (p, m, g) = (
        ctx("public-security"),
        ctx("market-supervision"),
        ctx("grid-event-handling"),
    );
    async fn first<T>(
        r: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
    ) -> Result<(), tonic::Status> {
        r?.into_inner().message().await.map(|_| ())
    }
    let mut outcomes: Vec<(&str, Result<(), tonic::Status>)> = Vec::new();
    macro_rules! probe {
        ($name:expr, $call:expr) => {{
            let before = log_bytes(&gw.dir);
            let r = $call;
            let grew = log_bytes(&gw.dir) - before;
            assert!(grew < 4096, "{}: the log grew by {grew} bytes", $name);
            outcomes.push(($name, r));
        }};
    }
    probe!(
        "GetPerson id_number",
        pop.get_person(req(
            GetPersonRequest {
                context: p.clone(),
                id_number: big.clone()
            },
            &police
        ))
        .await
        .map(|_| ())
    );
    probe!(
        "ListPersons region_prefix",
        first(
            pop.list_persons(req(
                ListPersonsRequest {
                    context: p.clone(),
                    region_prefix: big.clone(),
                    ..Default::default()
                },
                &police
            ))
            .await
        )
        .await
    );
    probe!(
        "ListPersons tag",
        first(
            pop.list_persons(req(
                ListPersonsRequest {
                    context: p.clone(),
                    tag: big.clone(),
                    ..Default::default()
                },
                &police
            ))
            .await
        )
        .await
    );
    probe!(
        "GetEntity uscc",
        ent.get_entity(req(
            GetEntityRequest {
                context: m.clone(),
                uscc: big.clone()
            },
            &market
        ))
        .await
        .map(|_| ())
    );
    probe!(
        "SearchEntities name_contains",
        first(
            ent.search_entities(req(
                SearchEntitiesRequest {
                    context: m.clone(),
                    name_contains: big.clone(),
                    ..Default::default()
                },
                &market
            ))
            .await
        )
        .await
    );
    probe!(
        "GetGrid grid_code",
        grid.get_grid(req(
            GetGridRequest {
                context: g.clone(),
                grid_code: big.clone()
            },
            &grids
        ))
        .await
        .map(|_| ())
    );
    probe!(
        "ListGridWorkers grid_code",
        grid.list_grid_workers(req(
            ListGridWorkersRequest {
                context: g.clone(),
                grid_code: big.clone()
            },
            &grids
        ))
        .await
        .map(|_| ())
    );
    probe!(
        "GetRegionTree root_code",
        grid.get_region_tree(req(
            GetRegionTreeRequest {
                context: g.clone(),
                root_code: big.clone()
            },
            &grids
        ))
        .await
        .map(|_| ())
    );
    for (name, r) in outcomes {
        if let Err(e) = r {
            assert!(
                !matches!(e.code(), Code::Internal | Code::Unknown),
                "{name}: {e:?}"
            );
            assert!(
                e.message().len() < 300,
                "{name}: {} bytes of message",
                e.message().len()
            );
        }
    }
}

/// A request body passed through as bytes, so a test can call any method
/// with a message it built by reflection.
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Every string a caller can put in an admin or audit request, 4000 bytes
/// long — one field at a time, then all at once — sent as every identity
/// that might be answered: no status message quotes more than 64 bytes of
/// it (one helper caps every echo; a refusal message is also cut whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_echo_of_caller_input_is_capped_at_64_bytes() {
    use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, Value};
    let gw = Gateway::start("");
    let pool = DescriptorPool::decode(govshare::proto::FILE_DESCRIPTOR_SET).unwrap();
    const LONG: usize = 4000;
    let long = "q".repeat(LONG);
    let echo = "q".repeat(65);

    /// `base` with the string field `only` (every string field, for
    /// `None`) set long; a repeated field gets its first element replaced
    /// (or one added), nested messages are filled two levels down.
    fn fill(mut m: DynamicMessage, long: &str, only: Option<&str>, depth: usize) -> DynamicMessage {
        let desc = prost_reflect::ReflectMessage::descriptor(&m);
        for f in desc.fields() {
            let hit = only.is_none_or(|o| o == f.full_name());
            match f.kind() {
                Kind::String if hit => {
                    let v = Value::String(long.to_string());
                    if f.is_list() {
                        let mut list = m.get_field(&f).as_list().unwrap_or_default().to_vec();
                        if list.is_empty() {
                            list.push(v);
                        } else {
                            list[0] = v;
                        }
                        m.set_field(&f, Value::List(list));
                    } else {
                        m.set_field(&f, v);
                    }
                }
                Kind::Message(inner)
                    if depth < 2 && !f.is_map() && !inner.full_name().starts_with("google.") =>
                {
                    if f.is_list() {
                        let mut list = m.get_field(&f).as_list().unwrap_or_default().to_vec();
                        let first = list
                            .first()
                            .and_then(|v| v.as_message().cloned())
                            .unwrap_or_else(|| DynamicMessage::new(inner.clone()));
                        let filled = Value::Message(fill(first, long, only, depth + 1));
                        if list.is_empty() {
                            list.push(filled);
                        } else {
                            list[0] = filled;
                        }
                        m.set_field(&f, Value::List(list));
                    } else {
                        let current = m
                            .get_field(&f)
                            .as_message()
                            .cloned()
                            .unwrap_or_else(|| DynamicMessage::new(inner.clone()));
                        m.set_field(&f, Value::Message(fill(current, long, only, depth + 1)));
                    }
                }
                _ => {}
            }
        }
        m
    }
    /// A valid request for the methods whose checks run in order, so a long
    /// value in a later field is reached too.
    fn base(desc: &MessageDescriptor, method: &str) -> DynamicMessage {
        let request = serde_json::json!({
            "dataset": "population",
            "operations": ["OPERATION_GET"],
            "fields": [{"field": "name", "view": "FIELD_VIEW_CLEAR"}],
            "regions": ["310115001"],
            "purposes": ["social-assistance"],
            "justification": "checks",
            "legalBasis": "a law",
        });
        let json = match method {
            "SubmitAccessRequest" => serde_json::json!({ "request": request }),
            "CreateGrant" => {
                let mut g = request.clone();
                g["department"] = "civil-affairs".into();
                serde_json::json!({ "grant": g })
            }
            "RegisterPurpose" => serde_json::json!({
                "purpose": {"code": "p-x", "name": "x", "legalBasis": "y"}
            }),
            "CreateDepartment" | "UpdateDepartment" => serde_json::json!({
                "department": {"id": "housing-x", "name": "x", "jurisdiction": ["310115"]},
                "reason": "r"
            }),
            _ => serde_json::json!({}),
        };
        DynamicMessage::deserialize(desc.clone(), json)
            .unwrap_or_else(|_| DynamicMessage::new(desc.clone()))
    }
    fn strings(desc: &MessageDescriptor, depth: usize, out: &mut Vec<String>) {
        for f in desc.fields() {
            match f.kind() {
                Kind::String => out.push(f.full_name().to_string()),
                Kind::Message(inner)
                    if depth < 2 && !f.is_map() && !inner.full_name().starts_with("google.") =>
                {
                    strings(&inner, depth + 1, out)
                }
                _ => {}
            }
        }
    }

    let mut channels = std::collections::HashMap::new();
    for identity in ["admin", "auditor", "civil-affairs"] {
        channels.insert(identity, gw.channel(identity).await);
    }
    let mut checked = 0;
    let mut quoted = Vec::new();
    for (service, identities) in [
        ("govshare.v1.AdminService", ["admin", "civil-affairs"]),
        ("govshare.v1.AuditService", ["auditor", "civil-affairs"]),
    ] {
        let svc = pool.get_service_by_name(service).unwrap();
        for method in svc.methods() {
            let input = method.input();
            let mut cases: Vec<Option<String>> = vec![None];
            let mut fields = Vec::new();
            strings(&input, 0, &mut fields);
            cases.extend(fields.into_iter().map(Some));
            for case in &cases {
                let body =
                    fill(base(&input, method.name()), &long, case.as_deref(), 0).encode_to_vec();
                for identity in identities {
                    let mut grpc = tonic::client::Grpc::new(channels[identity].clone());
                    grpc.ready().await.unwrap();
                    let path: http::uri::PathAndQuery =
                        format!("/{service}/{}", method.name()).parse().unwrap();
                    let request = req(body.clone(), &gw.token(identity));
                    let status = if method.is_server_streaming() {
                        // A stream that is answering (TailAudit waits for
                        // new entries) has refused nothing.
                        let first = async {
                            match grpc.server_streaming(request, path, RawCodec).await {
                                Ok(r) => r.into_inner().message().await.err(),
                                Err(s) => Some(s),
                            }
                        };
                        tokio::time::timeout(Duration::from_secs(2), first)
                            .await
                            .unwrap_or(None)
                    } else {
                        grpc.unary(request, path, RawCodec).await.err()
                    };
                    checked += 1;
                    if let Some(s) = status {
                        if s.message().contains(&echo) {
                            quoted.push(format!(
                                "{service}/{} as {identity}, {}: {} bytes of message",
                                method.name(),
                                case.as_deref().unwrap_or("every string"),
                                s.message().len()
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 100, "probed {checked} calls");
    assert!(
        quoted.is_empty(),
        "status messages quoting more than 64 bytes of caller input:\n  {}",
        quoted.join("\n  ")
    );
}
