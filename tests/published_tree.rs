//! The published tree (issue "The log's hashes published as a static
//! tlog-tiles tree"): the writer and `verify-tiles` tested against each
//! other and against a tree built here from the RFC 9162 and C2SP
//! definitions — not with the project's Merkle code — then every tampering
//! refused, a crash between tiles and checkpoint survived, and a live
//! gateway's tree read from its files alone, from a directory and over
//! HTTP through the shipped nginx configuration.

mod common;

use common::{Gateway, ctx, district, req};
use govshare::audit::checkpoint::LogKey;
use govshare::audit::publish::Publisher;
use govshare::audit::tiles::TileWriter;
use govshare::audit::verify_tiles::{self, Options, Source};
use govshare::proto::population_service_client::PopulationServiceClient;
use govshare::proto::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

// ---- RFC 9162 and C2SP tlog-tiles, written out here -----------------------

type H = [u8; 32];

fn leaf(data: &[u8]) -> H {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

fn node(l: &H, r: &H) -> H {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// MTH(D[n]) of RFC 9162 §2.1.1: split at the largest power of two below n.
fn mth(leaves: &[H]) -> H {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = 1 << (usize::BITS - (n - 1).leading_zeros() - 1);
            node(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// The path C2SP gives tile `n` of level `l` (width 256, or partial `w`).
fn c2sp_path(l: u32, n: u64, w: usize) -> String {
    let mut parts = Vec::new();
    let mut x = n;
    loop {
        parts.push(x % 1000);
        x /= 1000;
        if x == 0 {
            break;
        }
    }
    parts.reverse();
    let last = parts.len() - 1;
    let elems: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i < last {
                format!("x{p:03}")
            } else {
                format!("{p:03}")
            }
        })
        .collect();
    let base = format!("tile/{l}/{}", elems.join("/"));
    if w == 256 {
        base
    } else {
        format!("{base}.p/{w}")
    }
}

/// Every tile of a tree of the first `size` leaves: a level-0 tile holds
/// leaf hashes; entry k of tile n at level l is the root of the perfect
/// subtree over leaves [(256n+k)·256^l, (256n+k+1)·256^l).
fn expected_tiles(leaves: &[H]) -> Vec<(String, Vec<u8>)> {
    let size = leaves.len() as u64;
    let mut out = Vec::new();
    let mut level = 0u32;
    while size >> (8 * level) > 0 {
        let hashes = size >> (8 * level);
        let span = 1usize << (8 * level);
        let tiles = hashes.div_ceil(256);
        for n in 0..tiles {
            let width = (hashes - n * 256).min(256) as usize;
            let mut bytes = Vec::new();
            for k in 0..width {
                let first = (n as usize * 256 + k) * span;
                bytes.extend_from_slice(&mth(&leaves[first..first + span]));
            }
            out.push((c2sp_path(level, n, width), bytes));
        }
        level += 1;
    }
    out
}

/// The root of a tree of `size` from published tile files only: the
/// perfect subtrees MTH's recursion needs, each read from one tile.
fn root_from_files(dir: &Path, size: u64) -> H {
    fn sub(dir: &Path, size: u64, start: u64, n: u64) -> H {
        if n.is_power_of_two() && start % n == 0 {
            let height = n.trailing_zeros();
            let (level, within) = (height / 8, height % 8);
            let per_entry = 1u64 << (8 * level);
            let first = start / per_entry;
            let tile = first / 256;
            let hashes = size >> (8 * level);
            let width = (hashes - tile * 256).min(256) as usize;
            let bytes = std::fs::read(dir.join(c2sp_path(level, tile, width))).unwrap();
            let at = (first % 256) as usize;
            let run: Vec<H> = bytes[at * 32..(at + (1 << within)) * 32]
                .chunks(32)
                .map(|c| c.try_into().unwrap())
                .collect();
            return mth(&run);
        }
        let k = 1u64 << (u64::BITS - (n - 1).leading_zeros() - 1);
        node(&sub(dir, size, start, k), &sub(dir, size, start + k, n - k))
    }
    if size == 0 {
        return Sha256::digest([]).into();
    }
    sub(dir, size, 0, size)
}

// ---- the project's writer, driven directly --------------------------------

struct Tree {
    _tmp: tempfile::TempDir,
    tiles_dir: PathBuf,
    key: LogKey,
    writer: TileWriter,
    leaves: Vec<H>,
}

fn tree(n: usize) -> Tree {
    let tmp = tempfile::tempdir().unwrap();
    let tiles_dir = tmp.path().join("tiles");
    let key = LogKey::load_or_create(&tmp.path().join("pki"), "govshare.test/published").unwrap();
    let leaves: Vec<H> = (0..n as u64).map(|i| leaf(&i.to_le_bytes())).collect();
    let mut writer = TileWriter::open(&tiles_dir).unwrap();
    writer.append(&leaves).unwrap();
    writer.sync().unwrap();
    Tree {
        _tmp: tmp,
        tiles_dir,
        key,
        writer,
        leaves,
    }
}

impl Tree {
    fn pki(&self) -> PathBuf {
        self._tmp.path().join("pki")
    }

    fn note(&self, size: u64) -> String {
        let root = govshare::audit::merkle::root(&self.writer.reader(), size).unwrap();
        self.key.sign(size, root)
    }

    fn publisher(&self, dir: &Path, grace: Duration) -> Publisher {
        Publisher::open(dir, &self.tiles_dir, self.writer.reader(), grace).unwrap()
    }
}

fn verify(
    source: &Source,
    key: &str,
    since: Option<String>,
) -> Result<verify_tiles::Report, String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(verify_tiles::verify(
        source,
        key,
        &Options {
            since,
            ..Default::default()
        },
    ))
}

fn key_of(t: &Tree) -> String {
    std::fs::read_to_string(t.pki().join("audit-log.pub")).unwrap()
}

#[test]
fn partial_tiles_at_every_level_match_an_independent_tree() {
    let t = tree(65_537);
    for size in [1usize, 255, 256, 257, 65_535, 65_536, 65_537] {
        let out = tempfile::tempdir().unwrap();
        let mut p = t.publisher(out.path(), Duration::from_secs(600));
        let note = t.note(size as u64);
        p.publish(size as u64, &note).unwrap();
        // Every tile C2SP says a tree of this size has, byte for byte.
        let expected = expected_tiles(&t.leaves[..size]);
        for (path, bytes) in &expected {
            let got = std::fs::read(out.path().join(path))
                .unwrap_or_else(|_| panic!("size {size}: {path} is not published"));
            assert!(got == *bytes, "size {size}: {path} differs");
        }
        let levels = expected.iter().filter(|(p, _)| p.contains(".p/")).count();
        assert!(
            size % 256 == 0 || levels >= 1,
            "size {size}: a partial tile"
        );
        // The signed root is RFC 9162's, and the files alone give it.
        let root = mth(&t.leaves[..size]);
        let line = note.lines().nth(2).unwrap();
        assert_eq!(line, data_encoding::BASE64.encode(&root), "size {size}");
        assert_eq!(
            root_from_files(out.path(), size as u64),
            root,
            "size {size}"
        );
        // And verify-tiles agrees.
        let r = verify(&Source::Dir(out.path().into()), &key_of(&t), None).unwrap();
        assert_eq!((r.size, r.root), (size as u64, root));
    }
}

/// Copies a published tree so one copy can be damaged.
fn copy_tree(from: &Path, to: &Path) {
    for e in common::files(from) {
        let rel = e.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&e, &dest).unwrap();
    }
}

/// The damaged copies `verify-tiles` must refuse, each with the words its
/// refusal must contain. `old` is a checkpoint of a smaller size.
fn damaged_copies(
    good: &Path,
    root: &Path,
    other_key_note: &str,
    old: &str,
) -> Vec<(PathBuf, &'static str)> {
    let mut out = Vec::new();
    let mut make = |name: &str, damage: &dyn Fn(&Path), why: &'static str| {
        let dir = root.join(name);
        copy_tree(good, &dir);
        damage(&dir);
        out.push((dir, why));
    };
    make(
        "tampered-full",
        &|d| {
            let p = d.join("tile/0/100");
            let mut b = std::fs::read(&p).unwrap();
            b[77] ^= 1;
            std::fs::write(&p, b).unwrap();
        },
        "a tile was altered",
    );
    make(
        "tampered-partial",
        &|d| {
            let p = d.join("tile/0/256.p/1");
            let mut b = std::fs::read(&p).unwrap();
            b[0] ^= 1;
            std::fs::write(&p, b).unwrap();
        },
        "the checkpoint signs",
    );
    make(
        "truncated",
        &|d| {
            let p = d.join("tile/1/000");
            let b = std::fs::read(&p).unwrap();
            std::fs::write(&p, &b[..b.len() - 32]).unwrap();
        },
        "truncated",
    );
    make(
        "missing-partial",
        &|d| std::fs::remove_file(d.join("tile/2/000.p/1")).unwrap(),
        "is missing",
    );
    make(
        "rolled-back",
        &|d| std::fs::write(d.join("checkpoint"), old).unwrap(),
        "went backwards",
    );
    make(
        "other-key",
        &|d| std::fs::write(d.join("checkpoint"), other_key_note).unwrap(),
        "does not verify under the log's key",
    );
    out
}

#[test]
fn every_damage_is_refused_with_its_reason() {
    let t = tree(65_537);
    let good = tempfile::tempdir().unwrap();
    let mut p = t.publisher(good.path(), Duration::from_secs(600));
    let old = t.note(65_000);
    p.publish(65_000, &old).unwrap();
    p.publish(65_537, &t.note(65_537)).unwrap();
    let key = key_of(&t);
    // The good tree, and it extends the saved checkpoint.
    let r = verify(&Source::Dir(good.path().into()), &key, Some(old.clone())).unwrap();
    assert_eq!(r.since.unwrap().0, 65_000);
    let other = tree(65_537);
    let other_note = other.note(65_537);
    let copies = tempfile::tempdir().unwrap();
    for (dir, why) in damaged_copies(good.path(), copies.path(), &other_note, &old) {
        let since = dir.ends_with("rolled-back").then(|| t.note(65_537));
        let err = verify(&Source::Dir(dir.clone()), &key, since).unwrap_err();
        assert!(err.contains(why), "{}: {err}", dir.display());
    }
    // The command a monitor runs from cron: exit 0 with the sizes and
    // roots, or non-zero with one line saying why.
    let key_file = t.pki().join("audit-log.pub");
    let since_file = copies.path().join("since.txt");
    std::fs::write(&since_file, &old).unwrap();
    let (ok, out) = common::cli(&[
        "audit",
        "verify-tiles",
        good.path().to_str().unwrap(),
        "--public-key",
        key_file.to_str().unwrap(),
        "--since",
        since_file.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("since: size 65000") && out.contains("now:   size 65537"),
        "{out}"
    );
    let (ok, out) = common::cli(&[
        "audit",
        "verify-tiles",
        copies.path().join("truncated").to_str().unwrap(),
        "--public-key",
        key_file.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    assert!(out.starts_with("Error: REFUSED: tile tile/1/000"), "{out}");
    // With --state, a monitor remembers what it verified: the first run
    // saves the checkpoint, and a later run against a tree rolled back
    // below it fails — with nothing but the state file to go on.
    let state = copies.path().join("monitor.state");
    let run = |dir: &Path| {
        common::cli(&[
            "audit",
            "verify-tiles",
            dir.to_str().unwrap(),
            "--public-key",
            key_file.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ])
    };
    let (ok, out) = run(good.path());
    assert!(ok, "{out}");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), t.note(65_537));
    let (ok, out) = run(&copies.path().join("rolled-back"));
    assert!(!ok, "a rolled-back tree passed a monitor with state: {out}");
    assert!(out.contains("went backwards"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        t.note(65_537),
        "a refused run keeps the state"
    );
    // A checkpoint not extending the saved one (another log's tree of the
    // same key would do; here: a forged saved checkpoint of a different
    // root) is refused too.
    let forged = t.key.sign(65_000, [7u8; 32]);
    let err = verify(&Source::Dir(good.path().into()), &key, Some(forged)).unwrap_err();
    assert!(err.contains("does not extend"), "{err}");
}

#[test]
fn a_crash_between_tiles_and_checkpoint_leaves_the_previous_checkpoint_whole() {
    let t = tree(70_000);
    let out = tempfile::tempdir().unwrap();
    let mut p = t.publisher(out.path(), Duration::ZERO);
    p.publish(1_053, &t.note(1_053)).unwrap();
    // The next checkpoint's tiles are written; the process dies before its
    // checkpoint file.
    p.publish_tiles(69_000).unwrap();
    let r = verify(&Source::Dir(out.path().into()), &key_of(&t), None).unwrap();
    assert_eq!(r.size, 1_053);
    assert_eq!(r.root, mth(&t.leaves[..1_053]));
    assert!(out.path().join("tile/0/004.p/29").exists());
}

#[test]
fn partial_tiles_go_only_after_their_full_tile_and_the_grace_period() {
    let t = tree(600);
    let kept = tempfile::tempdir().unwrap();
    let mut p = t.publisher(kept.path(), Duration::from_secs(3600));
    p.publish(300, &t.note(300)).unwrap();
    p.publish(600, &t.note(600)).unwrap();
    assert!(
        kept.path().join("tile/0/001.p/44").exists(),
        "within the grace period"
    );
    let gone = tempfile::tempdir().unwrap();
    let mut p = t.publisher(gone.path(), Duration::ZERO);
    p.publish(300, &t.note(300)).unwrap();
    p.publish(400, &t.note(400)).unwrap();
    assert!(
        gone.path().join("tile/0/001.p/44").exists(),
        "its full tile does not exist yet"
    );
    p.publish(600, &t.note(600)).unwrap();
    assert!(!gone.path().join("tile/0/001.p/44").exists());
    assert!(gone.path().join("tile/0/001").exists());
    assert!(gone.path().join("tile/0/002.p/88").exists());
}

/// A restarted publisher finds the full tiles it already published and
/// does not copy them again: at a billion entries that copy would keep the
/// gateway from starting for hours.
#[test]
fn a_restarted_publisher_does_not_copy_its_full_tiles_again() {
    use std::os::unix::fs::MetadataExt;
    let t = tree(70_000);
    let out = tempfile::tempdir().unwrap();
    t.publisher(out.path(), Duration::ZERO)
        .publish(66_000, &t.note(66_000))
        .unwrap();
    let inode = |p: &str| std::fs::metadata(out.path().join(p)).unwrap().ino();
    let before = (
        inode("tile/0/000"),
        inode("tile/0/200"),
        inode("tile/1/000"),
    );
    t.publisher(out.path(), Duration::ZERO)
        .publish(70_000, &t.note(70_000))
        .unwrap();
    assert_eq!(
        (
            inode("tile/0/000"),
            inode("tile/0/200"),
            inode("tile/1/000")
        ),
        before,
        "full tiles were rewritten after a restart"
    );
    assert!(
        out.path().join("tile/0/272").exists(),
        "the new ones are there"
    );
    let r = verify(&Source::Dir(out.path().into()), &key_of(&t), None).unwrap();
    assert_eq!(r.size, 70_000);
}

/// A full tile appears whole or not at all: written under another name and
/// renamed over its own, so a reader guessing a tile's path while it is
/// written never sees (and never caches as immutable) a short one. A hard
/// link planted at the tile's path shows it: writing in place would change
/// the linked file too.
#[test]
fn full_tiles_are_written_whole_under_their_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiles");
    std::fs::create_dir_all(dir.join("tile/0")).unwrap();
    let probe = tmp.path().join("probe");
    std::fs::write(&probe, b"old").unwrap();
    std::fs::hard_link(&probe, dir.join("tile/0/000")).unwrap();
    let mut w = TileWriter::open(&dir).unwrap();
    let leaves: Vec<H> = (0..300u64).map(|i| leaf(&i.to_le_bytes())).collect();
    w.append(&leaves).unwrap();
    w.sync().unwrap();
    assert_eq!(
        std::fs::read(&probe).unwrap(),
        b"old",
        "the tile was written in place"
    );
    assert_eq!(std::fs::read(dir.join("tile/0/000")).unwrap().len(), 8192);
    let names: Vec<String> = std::fs::read_dir(dir.join("tile/0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");
}

// ---- a live gateway's tree --------------------------------------------------

/// Serves `dir` over HTTP with the shipped nginx configuration (root and
/// port replaced), or `python3 -m http.server` where nginx is not
/// installed. Returns the child and the URL.
fn serve(dir: &Path, scratch: &Path) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nginx = Command::new("nginx").arg("-v").output().is_ok();
    let child = if nginx {
        let conf = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/published-tree.conf"),
        )
        .unwrap()
        .replace("listen 8081;", &format!("listen 127.0.0.1:{port};"))
        .replace(
            "root /var/lib/govshare-published;",
            &format!("root {};", dir.display()),
        )
        .replace(
            "pid /run/govshare-tiles.pid;",
            &format!(
                "pid {}/nginx.pid;\nuser root;\nerror_log {}/error.log;",
                scratch.display(),
                scratch.display()
            ),
        )
        .replace(
            "http {",
            &format!(
                "http {{\n    client_body_temp_path {s}/body;\n    proxy_temp_path {s}/proxy;\n    fastcgi_temp_path {s}/fastcgi;\n    uwsgi_temp_path {s}/uwsgi;\n    scgi_temp_path {s}/scgi;",
                s = scratch.display()
            ),
        );
        let path = scratch.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        // One process, so killing it stops the server whole.
        Command::new("nginx")
            .args([
                "-e",
                "stderr",
                "-g",
                "daemon off; master_process off;",
                "-c",
            ])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    } else {
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the web server started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, format!("http://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_gateways_tree_verifies_from_its_files_alone_and_reveals_no_entry() {
    let gw = Gateway::start("");
    let published = gw.dir.join("audit/index/tiles");
    let key = std::fs::read_to_string(gw.pki("audit-log.pub")).unwrap();
    let d = district();
    let token = gw.token("civil-affairs");
    let channel = gw.channel("civil-affairs").await;
    let mut seen = Vec::new();
    for round in 0..6 {
        let mut set = tokio::task::JoinSet::new();
        for k in 0..500 {
            let mut c = PopulationServiceClient::new(channel.clone());
            let (id, token) = (
                d.persons[(round * 500 + k) % d.persons.len()]
                    .id_number
                    .clone()
                    .unwrap(),
                token.clone(),
            );
            set.spawn(async move {
                let _ = c
                    .get_person(req(
                        GetPersonRequest {
                            context: ctx("social-assistance"),
                            id_number: id,
                        },
                        &token,
                    ))
                    .await;
            });
        }
        while set.join_next().await.is_some() {}
        tokio::time::sleep(Duration::from_millis(700)).await;
        // Whatever checkpoint is published now, the files alone give its root.
        let src = Source::Dir(published.clone());
        let r = verify_tiles::verify(&src, &key, &Options::default())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        seen.push(r.size);
    }
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(
        *seen.last().unwrap() >= 3000,
        "a few thousand pulls: {seen:?}"
    );
    let first = std::fs::read_to_string(published.join("checkpoint")).unwrap();

    // No entry content, subject, department or purpose is published.
    let mut needles: Vec<String> = d
        .persons
        .iter()
        .take(3000)
        .map(|p| p.id_number.clone().unwrap())
        .collect();
    needles.extend(
        [
            "civil-affairs",
            "public-security",
            "social-assistance",
            "民政局",
            "GetPerson",
        ]
        .map(String::from),
    );
    for f in common::files(&published) {
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for n in &needles {
            assert!(!text.contains(n.as_str()), "{} holds '{n}'", f.display());
        }
    }

    // Over HTTP, through the shipped web-server configuration: the live
    // tree verifies (extending the checkpoint seen above); every damaged
    // copy is refused.
    let scratch = tempfile::tempdir().unwrap();
    let www = scratch.path().join("www");
    copy_tree(&published, &www.join("live"));
    let good = www.join("live");
    let copies: Vec<(PathBuf, &str)> = {
        let t = tree(65_537);
        let big = www.join("big");
        let mut p = t.publisher(&big, Duration::from_secs(600));
        let old = t.note(65_000);
        p.publish(65_000, &old).unwrap();
        p.publish(65_537, &t.note(65_537)).unwrap();
        std::fs::write(scratch.path().join("big.pub"), key_of(&t)).unwrap();
        std::fs::write(scratch.path().join("big.since"), t.note(65_537)).unwrap();
        damaged_copies(&big, &www, &tree(1).note(1), &old)
    };
    for e in common::files(&www) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&e, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (mut server, url) = serve(&www, scratch.path());
    let live = verify_tiles::verify(
        &Source::Http(format!("{url}/live")),
        &key,
        &Options {
            since: Some(first),
            ..Default::default()
        },
    )
    .await;
    let big_key = std::fs::read_to_string(scratch.path().join("big.pub")).unwrap();
    let big_since = std::fs::read_to_string(scratch.path().join("big.since")).unwrap();
    let mut refused = Vec::new();
    for (dir, why) in &copies {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let since = (name == "rolled-back").then(|| big_since.clone());
        let r = verify_tiles::verify(
            &Source::Http(format!("{url}/{name}")),
            &big_key,
            &Options {
                since,
                ..Default::default()
            },
        )
        .await;
        refused.push((name, why.to_string(), r.err()));
    }
    // The web server serves the tree, not the gateway's bookkeeping.
    let private = govshare_get(&format!("{url}/live/published-partials")).await;
    // A tile that does not exist yet is a plain 404, never an immutable
    // one a cache would keep for a year.
    let future = http_response(&format!("{url}/live/tile/0/x999/999")).await;
    let _ = server.kill();
    let _ = server.wait();
    let live = live.unwrap();
    assert!(live.since.is_some());
    assert!(good.join("checkpoint").exists());
    for (name, why, err) in refused {
        let err = err.unwrap_or_else(|| panic!("{name} was accepted over HTTP"));
        assert!(err.contains(&why), "{name}: {err}");
    }
    if Command::new("nginx").arg("-v").output().is_ok() {
        assert_eq!(private, None, "nginx serves only the tree");
        let future = String::from_utf8_lossy(&future.unwrap()).to_string();
        let head = future.split("\r\n\r\n").next().unwrap();
        assert!(head.contains(" 404"), "{head}");
        assert!(
            !head.contains("immutable"),
            "a 404 marked immutable: {head}"
        );
    }
}

/// A plain GET: `Some(body)` for 200, `None` otherwise.
async fn govshare_get(url: &str) -> Option<Vec<u8>> {
    let out = http_response(url).await?;
    let head = String::from_utf8_lossy(&out[..out.len().min(12)]).to_string();
    head.contains(" 200").then_some(out)
}

/// The whole HTTP/1.0 response to a GET, headers included.
async fn http_response(url: &str) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
    s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    Some(out)
}
