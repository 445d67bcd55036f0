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
        if f.starts_with(src.join("pipeline")) || f.ends_with("gateway/mod.rs") {
            continue;
        }
        let text = code(&f);
        for word in [
            "RecordStore::new",
            ".prepare_to_serve(",
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
        "fn prepare_to_serve",
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

// ---- The order of the planes ----------------------------------------------

/// The planes, lowest first. A module may import from lower ranks and from
/// itself; the top rank's modules may import each other as long as no
/// cycle forms. `datasets` and `audit` share a rank and never import each
/// other.
const RANKS: &[(&str, u8)] = &[
    ("base", 0),
    ("proto", 1),
    ("store", 2),
    ("datasets", 3),
    ("audit", 3),
    ("control", 4),
    ("snapshot", 4),
    ("auth", 5),
    ("pipeline", 6),
    ("services", 7),
    ("transport", 8),
    ("config", 9),
    ("gateway", 9),
    ("bench", 9),
    ("demo", 9),
    ("client", 9),
    ("fuzzing", 9),
    ("cli", 10),
];

fn rank(module: &str) -> Option<u8> {
    RANKS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// `src` without comments, string contents and `#[cfg(test)]` items.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if src[i..].starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if src[i..].starts_with("/*") {
            i += src[i..].find("*/").map_or(b.len() - i, |e| e + 2);
        } else if b[i] == b'"' {
            out.push_str("\"\"");
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if b[i] == b'\'' && (b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\')) {
            // A character literal ('{', '\n'), not a lifetime.
            out.push_str("' '");
            i += src[i + 2..].find('\'').map_or(b.len() - i, |e| e + 3);
        } else {
            let c = src[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    // Drop each `#[cfg(test)]` item: up to its `;` or its balanced block.
    while let Some(at) = out.find("#[cfg(test)]") {
        let rest = &out[at..];
        let semi = rest.find(';');
        let open = rest.find('{');
        let end = match (semi, open) {
            (Some(s), Some(o)) if s < o => s + 1,
            (_, Some(o)) => {
                let mut depth = 0;
                let mut end = rest.len();
                for (k, ch) in rest[o..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = o + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (Some(s), None) => s + 1,
            (None, None) => rest.len(),
        };
        out.replace_range(at..at + end, "");
    }
    out
}

/// The top-level module a source file belongs to, and how many `super`s
/// lead from it to the crate root.
fn home(src: &Path, file: &Path) -> (String, usize) {
    let rel = file.strip_prefix(src).unwrap();
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let first = parts[0].trim_end_matches(".rs").to_string();
    let module = if first == "main" { "cli".into() } else { first };
    let file_name = parts.last().unwrap();
    let depth = parts.len() - usize::from(file_name == "mod.rs");
    (module, depth)
}

/// Every module of the crate a file names: `use crate::{…}` groups, inline
/// `crate::x::` paths, `super::` paths that leave the file's top module,
/// and `govshare::x` in the binary. Returns (module, the path as written).
fn imports(code: &str, depth: usize, binary: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let roots: &[&str] = if binary {
        &["govshare::"]
    } else {
        &["crate::"]
    };
    for root in roots {
        let mut from = 0;
        while let Some(at) = code[from..].find(root) {
            let start = from + at;
            from = start + root.len();
            let before = code[..start].chars().last().unwrap_or(' ');
            if before.is_ascii_alphanumeric() || before == '_' {
                continue;
            }
            let rest = &code[from..];
            if let Some(group) = rest.strip_prefix('{') {
                let body = &group[..group.find('}').unwrap_or(group.len())];
                for item in body.split(',') {
                    let m = ident(item.trim());
                    if !m.is_empty() {
                        out.push((m.clone(), format!("{root}{{{}}}", item.trim())));
                    }
                }
            } else {
                let path: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                out.push((ident(rest), format!("{root}{path}")));
            }
        }
    }
    // A chain of k `super::` from a module at depth d reaches the crate
    // root when k = d: the next name is then a top-level module.
    if !binary {
        let mut from = 0;
        while let Some(at) = code[from..].find("super::") {
            let start = from + at;
            let mut k = 0;
            let mut end = start;
            while code[end..].starts_with("super::") {
                k += 1;
                end += "super::".len();
            }
            from = end;
            let before = code[..start].chars().last().unwrap_or(' ');
            if before.is_ascii_alphanumeric() || before == '_' || before == ':' {
                continue;
            }
            if k >= depth {
                let m = ident(&code[end..]);
                out.push((m.clone(), format!("{}{m}", "super::".repeat(k))));
            }
        }
    }
    out.retain(|(m, _)| rank(m).is_some());
    out
}

#[test]
fn no_plane_imports_a_plane_above_it_and_no_modules_form_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // Files that are compiled only for tests (`#[cfg(test)] mod x;`).
    let mut test_only = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let dir = if f.ends_with("mod.rs") || f.ends_with("lib.rs") || f.ends_with("main.rs") {
            f.parent().unwrap().to_path_buf()
        } else {
            f.with_extension("")
        };
        for part in text.split("#[cfg(test)]").skip(1) {
            let next = part.trim_start();
            if let Some(name) = next.strip_prefix("mod ").and_then(|r| r.split(';').next()) {
                if !name.contains('{') {
                    test_only.push(dir.join(format!("{}.rs", name.trim())));
                    test_only.push(dir.join(name.trim()).join("mod.rs"));
                }
            }
        }
    }
    let mut climbs = Vec::new();
    let mut edges: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for f in &files {
        if f.ends_with("lib.rs") || test_only.contains(f) {
            continue;
        }
        let (module, depth) = home(&src, f);
        let own = rank(&module)
            .unwrap_or_else(|| panic!("{} is in no plane: add `{module}` to RANKS", f.display()));
        let code = strip(&std::fs::read_to_string(f).unwrap());
        let binary = module == "cli";
        for (target, path) in imports(&code, depth, binary) {
            if target == module {
                continue;
            }
            edges
                .entry(module.clone())
                .or_default()
                .insert(target.clone());
            let theirs = rank(&target).unwrap();
            let same_rank_ok = own == theirs && own >= 9;
            if theirs > own || (theirs == own && !same_rank_ok) {
                climbs.push(format!(
                    "{} ({module}, rank {own}) imports `{path}` ({target}, rank {theirs})",
                    f.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    climbs.sort();
    climbs.dedup();
    assert!(
        climbs.is_empty(),
        "imports that climb the planes:\n  {}",
        climbs.join("\n  ")
    );
    // No cycle between top-level modules (depth-first search).
    fn visit(
        m: &str,
        edges: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == m) {
            panic!(
                "a cycle between top-level modules: {} -> {m}",
                path[at..].join(" -> ")
            );
        }
        if !done.insert(m.to_string()) {
            return;
        }
        path.push(m.to_string());
        for n in edges.get(m).into_iter().flatten() {
            visit(n, edges, path, done);
        }
        path.pop();
    }
    let mut done = Default::default();
    for m in edges.keys() {
        visit(m, &edges, &mut Vec::new(), &mut done);
    }
}

/// The test reads what it should: a planted climb in each form is found.
#[test]
fn the_plane_check_sees_every_form_of_import() {
    let found = |code: &str, depth: usize, binary: bool| -> Vec<String> {
        imports(&strip(code), depth, binary)
            .into_iter()
            .map(|(m, _)| m)
            .collect()
    };
    assert_eq!(
        found("use crate::pipeline::Admission;", 2, false),
        ["pipeline"]
    );
    assert_eq!(
        found("use crate::{audit::AuditLog, control::Store};", 2, false),
        ["audit", "control"]
    );
    assert_eq!(found("let x = crate::config::KEYS;", 2, false), ["config"]);
    assert_eq!(found("use super::super::auth::Role;", 2, false), ["auth"]);
    assert_eq!(found("use super::auth::Role;", 1, false), ["auth"]);
    assert!(found("use super::Role;", 2, false).is_empty());
    assert_eq!(found("use govshare::gateway::run;", 1, true), ["gateway"]);
    assert!(found("// crate::pipeline\nlet s = \"crate::pipeline\";", 2, false).is_empty());
    assert!(
        found(
            "#[cfg(test)]\nmod tests { use crate::pipeline::X; }",
            2,
            false
        )
        .is_empty()
    );
    assert!(found("#[cfg(test)]\nmod property_tests;\nfn f() {}", 2, false).is_empty());
}
