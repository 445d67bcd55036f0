//! The walkthroughs of the README and the manual (`docs/`), run verbatim
//! with bash against a real gateway whose data dir is `./govshare-data`, as
//! the pages assume.

mod common;

use common::Gateway;
use std::path::Path;
use std::process::Command;

/// The shell block after `<!-- tested: NAME -->` in `page` (README.md or
/// a page of `docs/`).
fn block(page: &str, name: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(page)).unwrap();
    let marker = format!("<!-- tested: {name} -->");
    let after = &text[text
        .find(&marker)
        .unwrap_or_else(|| panic!("{page} has no {marker}"))
        + marker.len()..];
    let body = after
        .trim_start()
        .strip_prefix("```sh\n")
        .expect("a ```sh block follows the marker");
    body[..body.find("\n```").unwrap()].to_string()
}

/// Runs a walkthrough block in `cwd` with `govshare` on the PATH; returns stdout.
fn run(cwd: &Path, gw: &Gateway, script: &str) -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_govshare")).parent().unwrap();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(cwd)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("GOVSHARE_ADDR", gw.addr.to_string())
        .env_remove("GOVSHARE_PKI")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "walkthrough block failed\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_readme_first_call_returns_masked_records_with_a_receipt() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(&tmp.path().join("govshare-data"), "");
    let out = run(tmp.path(), &gw, &block("README.md", "first-call"));
    assert_eq!(out.matches("\"idNumber\"").count(), 2, "{out}");
    assert!(out.contains("********"), "the ID numbers are masked: {out}");
    assert!(
        out.contains("\"leafIndex\""),
        "the pull carries its receipt: {out}"
    );
}

#[test]
fn administrator_walkthrough_onboards_a_department() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(&tmp.path().join("govshare-data"), "");
    let out = run(
        tmp.path(),
        &gw,
        &block("docs/administrators.md", "admin-walkthrough"),
    );
    assert!(out.contains("housing-bureau  住房保障局  active"), "{out}");
    assert!(out.contains("pending"), "{out}");
    assert!(out.contains("approved"), "{out}");
    let pulled = &out[out
        .find("\"persons\"")
        .expect("the first pull returned persons")..];
    assert_eq!(pulled.matches("\"idNumber\"").count(), 2, "{pulled}");
    assert!(
        pulled.contains("\"leafIndex\""),
        "the pull carries its audit receipt"
    );
}

#[test]
fn administrator_day_to_day_tasks_run() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(&tmp.path().join("govshare-data"), "");
    let out = run(
        tmp.path(),
        &gw,
        &block("docs/administrators.md", "admin-tasks"),
    );
    assert!(out.contains("id_number               personal"), "{out}");
    assert!(out.contains("revoked"), "{out}");
    assert!(out.contains("suspended"), "{out}");
}

#[test]
fn auditor_walkthrough_tracks_a_person_and_verifies_an_export() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(&tmp.path().join("govshare-data"), "");
    let out = run(
        tmp.path(),
        &gw,
        &block("docs/auditors.md", "auditor-walkthrough"),
    );
    assert!(out.contains("ListPersons  public-security  PS-88"), "{out}");
    let stats_row = out.lines().any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.len() >= 4
            && cols[0].len() == 10
            && cols[0].as_bytes()[4] == b'-'
            && cols[1] == "public-security"
    });
    assert!(stats_row, "a daily stats row for public-security: {out}");
    assert!(out.contains("OK: "), "{out}");
}

#[test]
fn residents_walkthrough_tracks_a_resident_and_answers_a_correction() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(&tmp.path().join("govshare-data"), "");
    let out = run(
        tmp.path(),
        &gw,
        &block("docs/residents.md", "residents-walkthrough"),
    );
    assert!(
        out.contains("民政局"),
        "the tracker names civil affairs: {out}"
    );
    assert!(out.contains("社会救助 (social-assistance)"), "{out}");
    let tracker: String = out
        .lines()
        .skip_while(|l| !l.starts_with("time"))
        .take_while(|l| !l.starts_with("INDEX"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !tracker.contains("criminal-investigation"),
        "the covert pull is withheld from the resident: {tracker}"
    );
    let withheld: String = out
        .lines()
        .skip_while(|l| !l.starts_with("INDEX"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(withheld.contains("CI-9"), "the auditor sees it: {withheld}");
    assert!(out.contains("rejected"), "{out}");
    assert!(out.contains("the number on file was confirmed"), "{out}");
}
