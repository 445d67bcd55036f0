//! The tamper suite: a log of a few thousand entries with several signed
//! checkpoints, written by the real writer and indexer, then altered the
//! ways an insider might. `verify` must name the right entry every time,
//! and pass the untouched log.

use govshare::audit::checkpoint::{LogKey, LogVerifier, note_size};
use govshare::audit::merkle::{self, MemoryTree};
use govshare::audit::verify::{self, Problem};
use govshare::audit::{AuditOptions, Runtime, leaf_hash};
use govshare::proto::AuditEntry;
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

const ENTRIES: u64 = 3000;

struct Log {
    _dir: tempfile::TempDir,
    audit_dir: std::path::PathBuf,
    entries: Vec<Vec<u8>>,
    notes: Vec<String>,
    key: LogVerifier,
}

static LOG: LazyLock<Log> = LazyLock::new(|| {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(build(ENTRIES))
});

/// Writes `n` entries concurrently through the real writer and indexer,
/// then signs three checkpoints (at n/3, 2n/3, n) with the log's key.
async fn build(n: u64) -> Log {
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("audit");
    let pki = dir.path().join("pki");
    let opts = AuditOptions {
        node: "tamper".into(),
        segment_bytes: 64 * 1024,
        max_batch: 256,
        ..Default::default()
    };
    let audit = Runtime::open(&audit_dir, &pki, "govshare.test/audit", opts).unwrap();
    let log = audit.log();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let log = log.clone();
        set.spawn(async move {
            log.append(AuditEntry {
                method: format!("/govshare.v1.PopulationService/GetPerson#{i}"),
                purpose: "tamper-test".into(),
                record_count: 1,
                ..Default::default()
            })
            .await
            .unwrap()
        });
    }
    set.join_all().await;
    drop(log);
    assert_eq!(audit.close().await.unwrap(), n);
    let (entries, torn) = verify::read_segments(&audit_dir).unwrap();
    assert!(torn.is_empty());
    let key = LogKey::load_or_create(&pki, "govshare.test/audit").unwrap();
    let mut tree = MemoryTree::new();
    entries.iter().for_each(|e| tree.push(leaf_hash(e)));
    let notes = [n / 3, 2 * n / 3, n]
        .into_iter()
        .map(|size| key.sign(size, merkle::root(&tree, size).unwrap()))
        .collect();
    Log {
        entries,
        notes,
        key: LogVerifier::parse(&key.verifier_key()).unwrap(),
        audit_dir,
        _dir: dir,
    }
}

fn check(entries: &[Vec<u8>], notes: &[String]) -> Result<verify::Report, Problem> {
    let opts = verify::Options {
        strict: true,
        max_unsigned: Duration::from_secs(10),
        ..Default::default()
    };
    match verify::verify(entries, Some(notes), &LOG.key, &opts)? {
        verify::Outcome::Ok(r) => Ok(r),
        verify::Outcome::Unsigned(..) => unreachable!("strict turns this into a problem"),
    }
}

#[test]
fn the_untouched_log_verifies() {
    assert!(verify::read_segments(&LOG.audit_dir).unwrap().0.len() > 1000);
    assert!(
        std::fs::read_dir(&LOG.audit_dir).unwrap().count() > 3,
        "several segments"
    );
    let r = check(&LOG.entries, &LOG.notes).unwrap();
    assert_eq!(
        (r.entries, r.checkpoints, r.signed_size),
        (ENTRIES, 3, ENTRIES)
    );
}

#[test]
fn flipping_any_byte_of_an_entry_names_that_entry() {
    for target in [0usize, 1234, 2998] {
        let len = LOG.entries[target].len();
        for pos in 0..len {
            let mut entries = LOG.entries.clone();
            entries[target][pos] ^= 0x01;
            let p = check(&entries, &LOG.notes).unwrap_err();
            assert_eq!(
                p.index,
                Some(target as u64),
                "byte {pos} of entry {target}: {p}"
            );
        }
    }
}

#[test]
fn altering_the_last_entry_breaks_the_final_checkpoint() {
    let mut entries = LOG.entries.clone();
    let last = entries.len() - 1;
    // Entries were appended concurrently, so the last one is whichever
    // request committed last: alter its method text, whatever its number.
    let pos = entries[last]
        .windows(10)
        .position(|w| w == b"GetPerson#")
        .unwrap();
    entries[last][pos] = b'S';
    let p = check(&entries, &LOG.notes).unwrap_err();
    assert_eq!(p.index, Some(last as u64), "{p}");
}

#[test]
fn deleting_swapping_and_truncating_are_named() {
    let mut deleted = LOG.entries.clone();
    deleted.remove(777);
    assert_eq!(check(&deleted, &LOG.notes).unwrap_err().index, Some(777));

    let mut swapped = LOG.entries.clone();
    swapped.swap(100, 200);
    assert_eq!(check(&swapped, &LOG.notes).unwrap_err().index, Some(100));

    let truncated = &LOG.entries[..2990];
    let p = check(truncated, &LOG.notes).unwrap_err();
    assert_eq!(p.index, Some(2990), "{p}");
    assert!(p.reason.contains("removed"), "{p}");
}

#[test]
fn a_checkpoint_signed_by_another_key_is_refused() {
    let other =
        LogKey::load_or_create(tempfile::tempdir().unwrap().path(), "govshare.test/audit").unwrap();
    let mut notes = LOG.notes.clone();
    let last = notes.pop().unwrap();
    let forged = other.sign(note_size(&last), [0; 32]);
    notes.push(forged);
    let p = check(&LOG.entries, &notes).unwrap_err();
    assert_eq!(p.index, None);
    assert!(p.reason.starts_with("checkpoint #3"), "{p}");
    assert!(p.reason.contains("no valid signature"), "{p}");
}

#[test]
fn a_flipped_byte_in_a_segment_file_is_found_by_its_frame_check() {
    let copy = tempfile::tempdir().unwrap();
    let mut segs: Vec<_> = std::fs::read_dir(&LOG.audit_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    for s in &segs {
        std::fs::copy(s, copy.path().join(s.file_name().unwrap())).unwrap();
    }
    let second = copy.path().join(segs[1].file_name().unwrap());
    let first_index: u64 = segs[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut bytes = std::fs::read(&second).unwrap();
    bytes[20] ^= 0xff; // inside the segment's first entry
    std::fs::write(&second, bytes).unwrap();
    let p = verify::read_segments(Path::new(copy.path())).unwrap_err();
    assert_eq!(p.index, Some(first_index), "{p}");
}
