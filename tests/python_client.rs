//! A third-party client: the Python grpcio suite in `tests/python` runs
//! against a real gateway. It compiles the protos itself and checks
//! masking, absence, pseudonyms, scope, authentication, reflection and an
//! inclusion proof under the signed checkpoint — with none of our code.
//!
//! The interpreter is `GOVSHARE_TEST_PYTHON` if set (CI points it at the
//! venv `.ci/run` prepared), else a venv this test creates under the
//! target dir from `tests/python/requirements.txt`.

mod common;

use common::{Gateway, residents};
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A Python with the suite's requirements.
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("GOVSHARE_TEST_PYTHON") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyvenv");
    let python = venv.join("bin/python");
    let ready = python.exists()
        && Command::new(&python)
            .args([
                "-c",
                "import grpc, grpc_tools, grpc_reflection, cryptography",
            ])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "the third-party client test needs python3 with venv (apt-get install python3-venv), \
             or GOVSHARE_TEST_PYTHON pointing at a Python with tests/python/requirements.txt"
        );
        run(Command::new(&python)
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/requirements.txt")));
    }
    python
}

fn person_json(p: &govshare::proto::Person) -> serde_json::Value {
    serde_json::json!({
        "id_number": p.id_number,
        "name": p.name,
        "phone": p.phone,
        "birth_date": p.birth_date,
        "residence_grid": p.residence_grid,
    })
}

#[test]
fn a_python_grpcio_client_gets_what_the_design_promises() {
    let python = python();
    let gw = Gateway::start("");
    let (inside, outside) = residents();
    let persons = gw.dir.join("persons.json");
    std::fs::write(
        &persons,
        serde_json::json!({
            "inside_with_phone": person_json(&inside),
            "outside": person_json(&outside),
        })
        .to_string(),
    )
    .unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run(Command::new(&python)
        .arg(manifest.join("tests/python/test_client.py"))
        .args(["--addr", &gw.addr.to_string(), "--pki"])
        .arg(gw.pki(""))
        .arg("--proto-dir")
        .arg(manifest.join("proto"))
        .arg("--persons-file")
        .arg(&persons));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(" passed, 0 failed"),
        "the suite did not report its checks:\n{said}"
    );
    for step in ["ok   resident tracker:", "ok   corrections:"] {
        assert!(said.contains(step), "the suite skipped `{step}`:\n{said}");
    }
}
