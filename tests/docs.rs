//! Documentation that must not drift from the code: the configuration
//! reference in the operators' page is exactly what `govshare config
//! reference --markdown` prints, and every relative link in the README and
//! the manual leads to a file (and heading) that exists.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text.find(start).unwrap_or_else(|| panic!("no {start}")) + start.len();
    let to = text[from..].find(end).unwrap_or_else(|| panic!("no {end}")) + from;
    &text[from..to]
}

#[test]
fn the_configuration_reference_is_generated_from_the_code() {
    let page = std::fs::read_to_string(root().join("docs/operators.md")).unwrap();
    let block = between(
        &page,
        "<!-- config-reference:start -->\n",
        "<!-- config-reference:end -->",
    );
    assert_eq!(
        block,
        govshare::config::reference_markdown(),
        "docs/operators.md's configuration reference is stale: paste `govshare config reference --markdown`"
    );
}

/// README.md and every page of `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
    out
}

/// A heading's anchor as GitHub makes it: lower case, punctuation dropped
/// (letters of any script, digits, `-` and `_` kept), spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// Every `[text](target)` outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_readme_and_the_manual_resolves() {
    let pages = pages();
    assert!(pages.len() >= 7, "the manual's pages are there: {pages:?}");
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = match link.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (link.as_str(), None),
            };
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            if !target.exists() {
                broken.push(format!("{}: {link} (no such file)", page.display()));
                continue;
            }
            if let Some(fragment) = fragment {
                let text = std::fs::read_to_string(&target).unwrap_or_default();
                if !anchors(&text).iter().any(|a| a == fragment) {
                    broken.push(format!("{}: {link} (no such heading)", page.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.len() <= 16 * 1024,
        "README.md is {} bytes",
        readme.len()
    );
    for must in [
        "cargo run --release -- serve",
        "cargo test --all-targets",
        "docs/",
    ] {
        assert!(readme.contains(must), "README.md names {must}");
    }
}

/// Every test the threat model names exists where it says, and every
/// threat it lists names at least one.
#[test]
fn the_threat_models_tests_exist() {
    let page = std::fs::read_to_string(root().join("docs/threat-model.md")).unwrap();
    let mut named = 0;
    let mut missing = Vec::new();
    for row in page
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| threat"))
    {
        if row.starts_with("|---") {
            continue;
        }
        let tests: Vec<&str> = row.split('`').filter(|s| s.contains(".rs::")).collect();
        assert!(!tests.is_empty(), "a threat without a test: {row}");
        for t in tests {
            let (file, name) = t.split_once("::").unwrap();
            let source = std::fs::read_to_string(root().join(file)).unwrap_or_default();
            if !source.contains(&format!("fn {name}(")) {
                missing.push(t.to_string());
            }
            named += 1;
        }
    }
    assert!(named >= 40, "the threat model names {named} tests");
    assert!(missing.is_empty(), "named but missing: {missing:?}");
}
