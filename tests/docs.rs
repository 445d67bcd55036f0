//! Documentation that must not drift from the code: the README's
//! configuration reference is exactly what `govshare config reference
//! --markdown` prints.

use std::path::Path;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text.find(start).unwrap_or_else(|| panic!("no {start}")) + start.len();
    let to = text[from..].find(end).unwrap_or_else(|| panic!("no {end}")) + from;
    &text[from..to]
}

#[test]
fn the_readme_configuration_reference_is_generated_from_the_code() {
    let readme = readme();
    let block = between(
        &readme,
        "<!-- config-reference:start -->\n",
        "<!-- config-reference:end -->",
    );
    assert_eq!(
        block,
        govshare::config::reference_markdown(),
        "README.md's configuration reference is stale: paste `govshare config reference --markdown`"
    );
}
