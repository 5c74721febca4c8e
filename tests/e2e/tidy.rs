//! Repository hygiene: every file that a comment or a document names exists, so the prose keeps
//! up with the code (a module that was renamed leaves no stale name behind); the gateway's files
//! stay under 400 lines.

use std::path::{Path, PathBuf};

/// Names that are not files of this repository, and why.
const NOT_HERE: [(&str, &str); 3] = [
    ("console-api-doc.zh.txt", "Agora's Chinese document, which the spec was written from; not ours to copy"),
    ("target/", "build output"),
    ("acme-private.pem", "the README's example of an operator's own private key"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn files(dir: &Path, root: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name == "target" || name == ".git" {
            continue;
        }
        if path.is_dir() {
            files(&path, root, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().to_string_lossy().to_string());
        }
    }
}

/// A backticked word that names a file: no spaces, a known extension, not a URL path.
fn names_a_file(word: &str) -> bool {
    const EXTENSIONS: [&str; 10] = [".rs", ".toml", ".yaml", ".yml", ".md", ".json", ".conf", ".pem", ".lua", ".txt"];
    !word.is_empty()
        && !word.starts_with('/')
        && !word.contains("://")
        && word.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
        && EXTENSIONS.iter().any(|extension| word.ends_with(extension))
}

/// The words of a text that could name files (of a source file: its comments only), split on
/// whitespace and punctuation other than `._-/`, URLs left out.
fn named(text: &str, source: bool) -> Vec<String> {
    let mut words = Vec::new();
    for line in text.lines() {
        let line = if source {
            match line.find("//") {
                Some(start) => &line[start..],
                None => continue,
            }
        } else {
            line
        };
        for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || "._-/:".contains(c))) {
            // URLs, and paths of the HTTP surface (`/openapi.json`), name no file.
            if word.contains("://") || word.starts_with('/') {
                continue;
            }
            let word = word.trim_matches(|c: char| ".:-/".contains(c));
            words.push(word.to_string());
        }
    }
    words
}

/// The directory of the crate a source file belongs to (where its `src/` is).
fn crate_src(file: &str) -> Option<&str> {
    file.find("src/").map(|end| &file[..end]).or_else(|| file.rfind('/').map(|end| &file[..=end]))
}

#[test]
fn every_file_named_in_comments_and_documents_exists() {
    let root = root();
    let mut all = Vec::new();
    files(&root, &root, &mut all);
    // From the repository's root; from a source file, also within its crate's `src/`.
    let exists = |name: &str, within: Option<&str>| {
        let external = NOT_HERE.iter().any(|(external, _)| name == *external || name.starts_with(external));
        let from_root =
            all.iter().any(|file| file == name || (within.is_none() && file.ends_with(&format!("/{name}"))));
        let in_crate = within.is_some_and(|src| all.iter().any(|file| file.starts_with(src) && file.ends_with(name)));
        external || from_root || in_crate
    };
    let mut stale = Vec::new();
    for file in &all {
        let source = file.ends_with(".rs") && !generated(file);
        let document = file.ends_with(".md") || file.ends_with(".yaml") || file.ends_with(".toml") || file == ".ci/run";
        if !source && !document {
            continue;
        }
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let within = if source { crate_src(file) } else { None };
        for word in named(&text, source) {
            if names_a_file(&word) && !exists(&word, within) {
                stale.push(format!("{file}: {word}"));
            }
        }
    }
    assert!(stale.is_empty(), "files named but not found:\n{}", stale.join("\n"));
}

/// What `cargo xtask regen` writes: not hand-written.
fn generated(file: &str) -> bool {
    file.ends_with("generated.rs") || file.starts_with("gateway/src/generated/")
}

/// The gateway's hand-written files stay small: a file past 400 lines holds two ideas
/// (`CONTRIBUTING.md`).
#[test]
fn no_hand_written_gateway_file_passes_400_lines() {
    let root = root();
    let mut all = Vec::new();
    files(&root.join("gateway/src"), &root, &mut all);
    let mut long: Vec<String> = all
        .iter()
        .filter(|file| file.ends_with(".rs") && !generated(file))
        .filter_map(|file| {
            let lines = std::fs::read_to_string(root.join(file)).unwrap().lines().count();
            (lines > 400).then(|| format!("{file}: {lines} lines"))
        })
        .collect();
    long.sort();
    assert!(long.is_empty(), "split these along their seams:\n{}", long.join("\n"));
}
