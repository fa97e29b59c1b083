//! The import check: every module of a layer uses only the layers below it, as `lib.rs` lists
//! them. Reads `src/**/*.rs`, drops comments, string and character literals and
//! `#[cfg(test)]` items (tests, like dev-dependencies, may reach anywhere), resolves every
//! `crate::` and `super::` path to the top-level module it names, and fails on a path into a
//! layer above (or into a module the list does not name).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The layers as `lib.rs` lists them, top down: the `- [`name`]` lines after `Layers,`.
fn layers_of(lib_rs: &str) -> Vec<String> {
    lib_rs
        .lines()
        .skip_while(|l| !l.starts_with("//! Layers,"))
        .take_while(|l| l.starts_with("//!"))
        .filter_map(|l| {
            let rest = l.strip_prefix("//! - [`")?;
            Some(rest[..rest.find('`')?].to_string())
        })
        .collect()
}

/// `src` with comments and string and character literals blanked (newlines kept, so that
/// offsets keep their line numbers).
fn strip_comments_and_literals(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && !chars[..i]
                .last()
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
            && {
                let start = if c == 'b' { i + 2 } else { i + 1 };
                let hashes = chars[start..].iter().take_while(|h| **h == '#').count();
                chars.get(start + hashes) == Some(&'"')
            }
        {
            // Raw string: r"..", r#".."#, br"..".
            let start = if c == 'b' { i + 2 } else { i + 1 };
            let hashes = chars[start..].iter().take_while(|h| **h == '#').count();
            let mut j = start + hashes + 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"'
                    && chars[j + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|h| **h == '#')
                        .count()
                        == hashes
                {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for c in &chars[i..j.min(chars.len())] {
                out.push(blank(*c));
            }
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\''), or a lifetime ('a) left as it is.
            let end = if next == Some('\\') {
                chars[i + 2..]
                    .iter()
                    .position(|c| *c == '\'')
                    .map(|p| i + 2 + p)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    for _ in i..=end {
                        out.push(' ');
                    }
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `code` (stripped) with every `#[cfg(test)]` item blanked; the names of the modules declared
/// `#[cfg(test)] mod name;` (test-only files).
fn strip_test_items(code: &str) -> (String, Vec<String>) {
    let mut out: Vec<char> = code.chars().collect();
    let mut test_modules = Vec::new();
    let marker: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + marker.len() <= out.len() {
        if out[i..i + marker.len()] != marker[..] {
            i += 1;
            continue;
        }
        // The item: up to a `;` before any brace, or to the brace closing its first `{`.
        let mut j = i + marker.len();
        let mut depth = 0usize;
        let mut bracket = 0usize;
        while j < out.len() {
            match out[j] {
                '[' => bracket += 1,
                ']' => bracket = bracket.saturating_sub(1),
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        j += 1;
                        break;
                    }
                }
                ';' if depth == 0 && bracket == 0 => {
                    j += 1;
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        let item: String = out[i + marker.len()..j.min(out.len())].iter().collect();
        let words: Vec<&str> = item
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        if item.trim_end().ends_with(';') {
            if let Some(p) = words.iter().position(|w| *w == "mod") {
                if let Some(name) = words.get(p + 1) {
                    test_modules.push(name.to_string());
                }
            }
        }
        let end = j.min(out.len());
        for c in &mut out[i..end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = end;
    }
    (out.into_iter().collect(), test_modules)
}

/// The top-level modules `code` (of the module at `module_path`, e.g. `["pipeline", "mesh"]`)
/// names through `crate::` and `super::` paths, with the line of each.
fn referenced_modules(code: &str, module_path: &[String]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':';
        let rest = &code[i..];
        let (target, after) = if starts_word && rest.starts_with("crate::") {
            (Some(Vec::new()), i + "crate::".len())
        } else if starts_word && rest.starts_with("super::") {
            let mut depth = module_path.len();
            let mut j = i;
            while code[j..].starts_with("super::") {
                depth = depth.saturating_sub(1);
                j += "super::".len();
            }
            (Some(module_path[..depth].to_vec()), j)
        } else {
            (None, i + 1)
        };
        let Some(prefix) = target else {
            i = after;
            continue;
        };
        let line = code[..i].matches('\n').count() + 1;
        if !prefix.is_empty() {
            // Within a top-level module: its own layer.
            found.push((line, prefix[0].clone()));
            i = after;
            continue;
        }
        // At the crate root: the next name, or each first name of a `{...}` group.
        let tail = code[after..].trim_start();
        if let Some(group) = tail.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        let name: String = group[k..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        found.push((line, name));
                        item_start = false;
                    }
                    c if c.is_whitespace() => {}
                    _ => item_start = false,
                }
            }
        } else {
            let name: String = tail
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((line, name));
            }
        }
        i = after;
    }
    found
}

/// The module path of a file below `src/`: `pipeline/mesh.rs` is `["pipeline", "mesh"]`,
/// `pipeline/mod.rs` is `["pipeline"]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" && stem != "lib" && stem != "main" {
            parts.push(stem.to_string());
        }
    }
    parts
}

/// Every violation of `layers` (top down) in the files `(path below src/, text)`.
fn violations(layers: &[String], files: &[(PathBuf, String)]) -> Vec<String> {
    let rank = |m: &str| layers.iter().position(|l| l == m);
    let mut test_only: HashSet<PathBuf> = HashSet::new();
    let mut stripped = Vec::new();
    for (path, text) in files {
        let (code, test_modules) = strip_test_items(&strip_comments_and_literals(text));
        let dir = match path.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs" | "lib.rs" | "main.rs") => path.parent().map(Path::to_path_buf),
            _ => Some(path.with_extension("")),
        }
        .unwrap_or_default();
        for m in test_modules {
            test_only.insert(dir.join(format!("{m}.rs")));
            test_only.insert(dir.join(&m).join("mod.rs"));
        }
        stripped.push((path, code));
    }
    let mut out = Vec::new();
    for (path, code) in stripped {
        if test_only
            .iter()
            .any(|t| path.starts_with(t.with_extension("")) || path == t)
        {
            continue;
        }
        let module = module_path(path);
        let Some(own) = module.first() else { continue };
        let Some(own_rank) = rank(own) else {
            if !matches!(own.as_str(), "layers") {
                out.push(format!(
                    "src/{}: module {own} is in no layer of lib.rs",
                    path.display()
                ));
            }
            continue;
        };
        for (line, target) in referenced_modules(&code, &module) {
            match rank(&target) {
                Some(r) if r >= own_rank => {}
                Some(_) => out.push(format!(
                    "src/{}:{line}: layer {own} uses {target}, a layer above it",
                    path.display()
                )),
                None => out.push(format!(
                    "src/{}:{line}: layer {own} uses crate::{target}, which is in no layer",
                    path.display()
                )),
            }
        }
    }
    out
}

fn read_tree(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src/")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_tree(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read a source file");
            let relative = path.strip_prefix(root).expect("below src/").to_path_buf();
            out.push((relative, text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    #[test]
    fn every_layer_uses_only_the_layers_below_it() {
        let root = src();
        let lib = std::fs::read_to_string(root.join("lib.rs")).unwrap();
        let layers = layers_of(&lib);
        assert_eq!(
            layers,
            [
                "process",
                "reactor",
                "receivers",
                "pipeline",
                "memory_limiter",
                "durability",
                "telemetry"
            ],
            "the layer list in lib.rs changed: update this test with it"
        );
        // lib.rs declares exactly the listed modules (and the test-only `layers`).
        let declared: Vec<&str> = lib
            .lines()
            .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
            .collect();
        let mut sorted_layers = layers.clone();
        sorted_layers.sort();
        assert_eq!(
            declared, sorted_layers,
            "lib.rs modules and layer list differ"
        );
        let mut files = Vec::new();
        read_tree(&root, &root, &mut files);
        assert!(files.len() > 30, "read only {} files", files.len());
        let found = violations(&layers, &files);
        assert!(found.is_empty(), "{}", found.join("\n"));
    }

    #[test]
    fn the_check_finds_upward_paths_and_ignores_comments_strings_and_tests() {
        let layers: Vec<String> = ["top", "middle", "bottom"].map(String::from).to_vec();
        let file = |path: &str, text: &str| (PathBuf::from(path), text.to_string());
        let files = vec![
            file(
                "middle/mod.rs",
                "use crate::bottom::X;\nuse crate::{bottom, top::Y};\n// crate::top in a comment\nconst S: &str = \"crate::top\";\nconst R: &str = r#\"crate::top \"# ;\nfn f<'a>(c: char) -> bool { c == '\"' }\n#[cfg(test)]\nmod tests {\n    use crate::top::Z;\n}\n#[cfg(test)]\nmod helpers;\n",
            ),
            file("middle/helpers.rs", "use crate::top::W;\n"),
            file("middle/deep/leaf.rs", "use super::super::super::top::V;\nuse super::sibling;\n"),
            file("bottom.rs", "pub fn g() { crate::middle::f(); }\n"),
            file("top.rs", "use crate::middle; use crate::nowhere;\n"),
        ];
        let found = violations(&layers, &files);
        assert_eq!(
            found,
            [
                "src/middle/mod.rs:2: layer middle uses top, a layer above it",
                "src/middle/deep/leaf.rs:1: layer middle uses top, a layer above it",
                "src/bottom.rs:1: layer bottom uses middle, a layer above it",
                "src/top.rs:1: layer top uses crate::nowhere, which is in no layer",
            ],
            "{found:#?}"
        );
    }

    #[test]
    fn layers_are_read_from_the_lib_doc() {
        let lib = "//! Intro.\n//!\n//! Layers, top down:\n//!\n//! - [`a`]: first\n//!   more\n//! - [`b`]: second\n//!\n//! Depends on [`x`].\n";
        assert_eq!(layers_of(lib), ["a", "b"]);
    }
}
