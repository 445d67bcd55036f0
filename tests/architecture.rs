//! The audit step is a type rule, not a convention: record reads exist only
//! inside `src/pipeline/` (`RecordStore`'s read methods are
//! `pub(in crate::pipeline)`), and `Masked`/`Released` have no public
//! constructor. This test keeps the other half honest: no handler in
//! `src/services/` names record storage or builds a shared record itself,
//! so the only records it can send are `Released` ones.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Source without its `#[cfg(test)]` tail and without comment lines.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn handlers_cannot_reach_record_storage_or_build_records() {
    let services = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/services");
    let mut files = Vec::new();
    rust_files(&services, &mut files);
    assert!(files.len() >= 8, "found the handlers");
    let forbidden = [
        "RecordStore",
        "store::open",
        "sled",
        "Backend",
        "pipeline::records",
        "Person {",
        "LegalEntity {",
        "Grid {",
        "GridWorker {",
    ];
    for f in &files {
        let src = code(f);
        for word in forbidden {
            assert!(
                !src.contains(word),
                "{} mentions `{word}`: handlers get records only from Admission::release",
                f.display()
            );
        }
    }
}

#[test]
fn only_the_pipeline_reads_records() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for f in files {
        if f.starts_with(src.join("pipeline")) || f.ends_with("store/mod.rs") {
            continue;
        }
        let text = code(&f);
        for word in [
            "RecordStore::new",
            ".load_codes(",
            ".name_of(",
            "records.get::<",
            "records.scan::<",
        ] {
            assert!(
                !text.contains(word),
                "{} reads records: `{word}`",
                f.display()
            );
        }
    }
    let records = std::fs::read_to_string(src.join("pipeline/records.rs")).unwrap();
    for read in [
        "fn get<",
        "fn scan<",
        "fn code_exists",
        "fn name_of",
        "fn load_codes",
    ] {
        let at = records
            .find(read)
            .unwrap_or_else(|| panic!("{read} exists"));
        let line_start = records[..at].rfind('\n').unwrap();
        assert!(
            records[line_start..at].contains("pub(in crate::pipeline)"),
            "{read} must stay pub(in crate::pipeline)"
        );
    }
}
