//! A witness beside the gateway: checkpoints are cosigned (C2SP
//! tlog-cosignature), verify accepts them with the witness's key, and a
//! gateway whose log was rolled back and re-signed is refused by the
//! witness — the alarm — so verify with the witness key fails.
//!
//! Signatures and proofs are also checked with a second implementation:
//! ed25519-dalek straight from the spec's message layout, and the
//! `tlog_tiles` crate's RFC 6962 proof checks.

mod common;

use common::{Gateway, Witness, cli, ctx, district, req};
use data_encoding::BASE64;
use ed25519_dalek::Verifier;
use govshare::proto::audit_service_client::AuditServiceClient;
use govshare::proto::population_service_client::PopulationServiceClient;
use govshare::proto::*;
use std::path::Path;
use std::time::Duration;

async fn pulls(gw: &Gateway, n: usize) {
    let mut c = PopulationServiceClient::new(gw.channel("civil-affairs").await);
    for p in district().persons.iter().take(n) {
        c.get_person(req(
            GetPersonRequest {
                context: ctx("social-assistance"),
                id_number: p.id_number.clone().unwrap(),
            },
            &gw.token("civil-affairs"),
        ))
        .await
        .unwrap();
    }
}

/// The spec's cosignature check, written out: key ID = SHA-256(name ‖ \n ‖
/// 0x04 ‖ key)[..4]; the line is keyid ‖ timestamp ‖ Ed25519 over
/// "cosignature/v1\ntime T\n" ‖ body.
fn cosigned_by(note: &str, vkey: &str) -> bool {
    use sha2::Digest;
    let mut parts = vkey.splitn(3, '+');
    let (name, _, key) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let raw = BASE64.decode(key.as_bytes()).unwrap();
    assert_eq!(raw[0], 0x04);
    let public = ed25519_dalek::VerifyingKey::from_bytes(raw[1..].try_into().unwrap()).unwrap();
    let mut id = sha2::Sha256::new();
    id.update(name.as_bytes());
    id.update(b"\n");
    id.update(&raw);
    let id = id.finalize();
    let (body, sigs) = note.rsplit_once("\n\n").unwrap();
    let body = format!("{body}\n");
    sigs.lines().any(|line| {
        let Some(rest) = line.strip_prefix(&format!("\u{2014} {name} ")) else {
            return false;
        };
        let blob = BASE64.decode(rest.as_bytes()).unwrap();
        if blob.len() != 76 || blob[..4] != id[..4] {
            return false;
        }
        let t = u64::from_be_bytes(blob[4..12].try_into().unwrap());
        let msg = format!("cosignature/v1\ntime {t}\n{body}");
        let sig = ed25519_dalek::Signature::from_bytes(blob[12..].try_into().unwrap());
        t > 0 && public.verify(msg.as_bytes(), &sig).is_ok()
    })
}

fn note_root(note: &str) -> (u64, [u8; 32]) {
    let mut l = note.lines();
    l.next();
    let size = l.next().unwrap().parse().unwrap();
    let root = BASE64
        .decode(l.next().unwrap().as_bytes())
        .unwrap()
        .try_into()
        .unwrap();
    (size, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_cosigns_and_refuses_a_rolled_back_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut first = Gateway::start_in(&dir, "");
    assert!(first.stop());
    let witness = Witness::start(&tmp.path().join("witness"), &dir.join("pki/audit-log.pub"));

    let mut gw = Gateway::start_in(&dir, &witness.config());
    pulls(&gw, 6).await;
    // A receipt, proven against a cosigned checkpoint with tlog_tiles.
    let mut audit = AuditServiceClient::new(gw.channel("auditor").await);
    let token = gw.token("auditor");
    let cp = audit
        .get_checkpoint(req(GetCheckpointRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert!(
        cosigned_by(&cp.note, &witness.key),
        "GetCheckpoint serves the cosigned note:\n{}",
        cp.note
    );
    let (size, root) = note_root(&cp.note);
    let index = size - 2;
    let entry = audit
        .query_audit(req(QueryAuditRequest::default(), &token))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap()
        .entries
        .into_iter()
        .find(|e| e.index == index)
        .unwrap();
    let leaf = govshare::audit::leaf_hash(&prost::Message::encode_to_vec(&entry));
    let proof = audit
        .get_inclusion_proof(req(
            GetInclusionProofRequest {
                index,
                tree_size: size,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let hashes: Vec<tlog_tiles::Hash> = proof
        .hashes
        .iter()
        .map(|h| tlog_tiles::Hash(h.as_slice().try_into().unwrap()))
        .collect();
    tlog_tiles::check_record(
        &hashes,
        size,
        tlog_tiles::Hash(root),
        index,
        tlog_tiles::Hash(leaf),
    )
    .expect("tlog_tiles accepts the inclusion proof");
    pulls(&gw, 3).await;
    assert!(gw.stop());

    let wit = format!("witness.test/w1={}", witness.key);
    let verify = |d: &Path, min: &str| {
        cli(&[
            "audit",
            "verify",
            "--data-dir",
            d.to_str().unwrap(),
            "--witness",
            &wit,
            "--min-witnesses",
            min,
        ])
    };
    let (ok, out) = verify(&dir, "1");
    assert!(ok && out.contains("cosigned by witness.test/w1"), "{out}");
    // Consistency between two cosigned checkpoints, by tlog_tiles.
    let notes = govshare::audit::checkpoint::read_notes(&dir.join("audit/checkpoints.log"))
        .unwrap()
        .unwrap();
    let cosigned: Vec<&String> = notes
        .iter()
        .filter(|n| cosigned_by(n, &witness.key))
        .collect();
    assert!(
        cosigned.len() >= 2,
        "{} cosigned checkpoints",
        cosigned.len()
    );
    let (old, old_root) = note_root(cosigned[0]);
    let (new, new_root) = note_root(cosigned.last().unwrap());
    if old > 0 && old < new {
        let gw = Gateway::start_in(&dir, "");
        let mut audit = AuditServiceClient::new(gw.channel("auditor").await);
        let p = audit
            .get_consistency_proof(req(
                GetConsistencyProofRequest {
                    old_size: old,
                    new_size: new,
                },
                &gw.token("auditor"),
            ))
            .await
            .unwrap()
            .into_inner();
        let hashes: Vec<tlog_tiles::Hash> = p
            .hashes
            .iter()
            .map(|h| tlog_tiles::Hash(h.as_slice().try_into().unwrap()))
            .collect();
        tlog_tiles::check_tree(
            &hashes,
            new,
            tlog_tiles::Hash(new_root),
            old,
            tlog_tiles::Hash(old_root),
        )
        .expect("tlog_tiles accepts the consistency proof");
        drop(gw);
    }

    // The operator rolls the log back to an early checkpoint, drops the
    // index, and restarts: the key alone cannot tell…
    roll_back(&dir);
    let (ok, out) = cli(&["audit", "verify", "--data-dir", dir.to_str().unwrap()]);
    assert!(ok, "without the witness the rollback looks clean: {out}");

    // …but the witness has seen more: the gateway learns at its start that
    // the log lost its tail, and releases nothing — readiness fails, pulls
    // are UNAVAILABLE saying why — also after a restart.
    for round in 0..2 {
        let gw = Gateway::start_in(&dir, &witness.config());
        let behind = not_ready(&gw).await;
        assert!(
            behind.contains("has seen this log at size"),
            "round {round}: {behind}"
        );
        let err = get_one(&gw).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::Unavailable,
            "round {round}: {err:?}"
        );
        assert!(
            err.message().contains("new-generation"),
            "{}",
            err.message()
        );
        drop(gw);
    }
    // Starting a new generation on the running gateway is refused.
    let running = Gateway::start_in(&dir, &witness.config());
    let (ok, out) = cli(&[
        "audit",
        "new-generation",
        "--data-dir",
        dir.to_str().unwrap(),
        "--reason",
        "disk put back from the 2026-11 image",
    ]);
    assert!(!ok && out.contains("stopped"), "{out}");
    drop(running);
    let (ok, out) = cli(&[
        "audit",
        "new-generation",
        "--data-dir",
        dir.to_str().unwrap(),
        "--reason",
        "disk put back from the 2026-11 image",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("generation 2") && out.contains("--log"),
        "{out}"
    );
    // The next generation releases data again (the witness does not know
    // its origin until its operator adds it, so nothing is cosigned).
    let mut gw = Gateway::start_in(&dir, &witness.config());
    get_one(&gw).await.unwrap();
    assert!(gw.stop());
    // Verification reports the gap, and passes only when told to accept it.
    let (ok, out) = cli(&["audit", "verify", "--data-dir", dir.to_str().unwrap()]);
    assert!(!ok, "{out}");
    let gap = out
        .lines()
        .find(|l| l.starts_with("GAP: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        gap.contains("generation 2 (govshare.local/audit/2) continues govshare.local/audit")
            && gap.contains("witness 'witness.test/w1' has seen this log at size")
            && gap.contains("2026-11 image"),
        "{gap}"
    );
    let (ok, out) = cli(&[
        "audit",
        "verify",
        "--data-dir",
        dir.to_str().unwrap(),
        "--accept-generation",
        "2",
    ]);
    assert!(ok, "{out}");
}

/// What an operator with the disk does: cuts the log back to its first
/// non-empty checkpoint (segments, checkpoints, index), leaving a log that
/// verifies on its own.
fn roll_back(dir: &Path) {
    let notes = govshare::audit::checkpoint::read_notes(&dir.join("audit/checkpoints.log"))
        .unwrap()
        .unwrap();
    let entries = govshare::audit::segment::read_all(&dir.join("audit")).unwrap();
    let (keep, back_to) = notes
        .iter()
        .enumerate()
        .map(|(i, n)| (i + 1, govshare::audit::checkpoint::note_size(n)))
        .find(|(_, s)| *s > 0)
        .unwrap();
    for (_, p) in govshare::audit::segment::segments(&dir.join("audit")).unwrap() {
        std::fs::remove_file(p).unwrap();
    }
    let mut buf = Vec::new();
    for e in &entries[..back_to as usize] {
        govshare::audit::segment::frame_into(&mut buf, e);
    }
    std::fs::write(dir.join("audit").join(format!("{:020}.seg", 0)), buf).unwrap();
    std::fs::remove_dir_all(dir.join("audit/index")).unwrap();
    let cps = std::fs::read(dir.join("audit/checkpoints.log")).unwrap();
    let mut pos = 0;
    for _ in 0..keep {
        pos += 8 + u32::from_le_bytes(cps[pos..pos + 4].try_into().unwrap()) as usize;
    }
    std::fs::write(dir.join("audit/checkpoints.log"), &cps[..pos]).unwrap();
}

/// Waits for `/readyz` to fail and returns why.
async fn not_ready(gw: &Gateway) -> String {
    for _ in 0..100 {
        let (code, body) = gw.ops_get("/readyz").await;
        if code == 503 {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    String::new()
}

/// A rolled-back log that grew past what its witness saw (while the witness
/// was not asked) is not behind by size, but it is not the tree the
/// witness cosigned: the witness refuses the proof, and the gateway stops
/// releasing data just the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_log_that_grew_past_its_witness_is_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut first = Gateway::start_in(&dir, "");
    assert!(first.stop());
    let witness = Witness::start(&tmp.path().join("witness"), &dir.join("pki/audit-log.pub"));
    let mut gw = Gateway::start_in(&dir, &witness.config());
    pulls(&gw, 6).await;
    assert!(gw.stop());
    let witnessed = govshare::audit::segment::read_all(&dir.join("audit"))
        .unwrap()
        .len();
    roll_back(&dir);
    // Without the witness, the rolled-back log grows past what it saw.
    let mut gw = Gateway::start_in(&dir, "");
    pulls(&gw, witnessed + 5).await;
    assert!(gw.stop());
    let gw = Gateway::start_in(&dir, &witness.config());
    let why = not_ready(&gw).await;
    assert!(why.contains("has cosigned another tree"), "{why}");
    let err = get_one(&gw).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
}

async fn get_one(gw: &Gateway) -> Result<GetPersonResponse, tonic::Status> {
    let id = district().persons[0].id_number.clone().unwrap();
    common::get_person(gw, "civil-affairs", "social-assistance", &id).await
}

/// A client that never finishes its headers is cut off, so half-sent
/// requests cannot pile up until the witness runs out of descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_closes_a_request_that_never_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("log.pub");
    std::fs::write(
        &key,
        govshare::audit::checkpoint::LogKey::load_or_create(tmp.path(), "log.test")
            .unwrap()
            .verifier_key(),
    )
    .unwrap();
    let w = Witness::start(&tmp.path().join("w"), &key);
    let addr = w.url.strip_prefix("http://").unwrap().to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "the half-sent request is still open after 30 s"
    );
}
