//! The configuration examples in README.md and docs/*.md are checked: every ```` ```toml ````
//! block parses and validates as a shardtel configuration, and the reference configurations
//! shown there are the fixtures under `tests/fixtures/`, byte for byte.
//!
//! - A block that defines a receiver (`[receivers.NAME]`) is a whole file: it must pass
//!   `Config::from_str` as it is.
//! - Any other block is a fragment, checked inside a minimal base configuration ([`BASE`]):
//!   the OTLP receiver, the components the docs' fragments refer to (exporters `otlp`, `tempo`,
//!   `loki`; processors `tail_sampling` and `redact`, the two fixtures) and a traces pipeline.
//!   A base table the fragment defines itself is left out.
//! - An HTML comment on the line before a block marks it (invisible on the rendered page):
//!   - `<!-- docs-check: fixture tests/fixtures/NAME.toml -->`: the block is that fixture, byte
//!     for byte; every fixture is shown by at least one block;
//!   - `<!-- docs-check: invalid TEXT -->`: the block shows a mistake: it must fail, with TEXT in
//!     the errors.
//! - `${VAR}`s are substituted from [`ENV`], sample values for the variables the docs use.
//! - CPU ids are an example's, not this machine's: that a CPU is not usable here
//!   ([`NOT_THIS_MACHINE`]) is not an error of the example.
//!
//! Errors name the markdown file and line: a block is checked with its own lines where they
//! are in the file.

use std::path::{Path, PathBuf};

use shardtel_config::Config;
use toml::{Table, Value};

use crate::test_config::{REDACTION, REFERENCE_SAMPLING};

/// What a fragment is checked within: (the table it defines, its text). The base leaves out
/// each table whose path (or a table below it) the fragment defines.
const BASE: &[(&str, &str)] = &[
    ("receivers.otlp", "[receivers.otlp]\n"),
    (
        "exporters.otlp",
        "[exporters.otlp]\nendpoint = \"http://otel-collector:4317\"\n",
    ),
    (
        "exporters.tempo",
        "[exporters.tempo]\ntype = \"otlp\"\nendpoint = \"http://tempo:4317\"\n",
    ),
    (
        "exporters.loki",
        "[exporters.loki]\nendpoint = \"http://loki:3100/loki/api/v1/push\"\n",
    ),
    ("processors.tail_sampling", REFERENCE_SAMPLING),
    ("processors.redact", REDACTION),
    (
        "pipelines.traces",
        "[pipelines.traces]\nreceivers = [\"otlp\"]\nprocessors = [\"tail_sampling\"]\nexporters = [\"tempo\"]\n",
    ),
];

/// Sample values of the environment variables the docs' examples use without a default.
const ENV: &[(&str, &str)] = &[
    ("TEMPO_HOST", "tempo"),
    ("TEMPO_TOKEN", "t0ken"),
    ("UPSTREAM_TOKEN", "t0ken"),
    ("HOSTNAME", "node-1"),
];

/// The reference configurations, by their path from the workspace root.
const FIXTURES: &[(&str, &str)] = &[
    ("tests/fixtures/reference-sampling.toml", REFERENCE_SAMPLING),
    ("tests/fixtures/redaction.toml", REDACTION),
];

const MARKER: &str = "<!-- docs-check:";

/// The error shardtel gives for `engine.cores` naming a CPU this machine does not have.
const NOT_THIS_MACHINE: &str = "is not online or not available to this process";

/// One ```` ```toml ```` block of a markdown file.
#[derive(Debug)]
struct Block {
    /// The markdown file, from the workspace root.
    file: String,
    /// The line of its first content line (1-based).
    line: usize,
    text: String,
    mark: Option<Mark>,
}

#[derive(Debug, PartialEq)]
enum Mark {
    /// The block is this fixture (path from the workspace root).
    Fixture(String),
    /// The block must fail, with this text in the errors.
    Invalid(String),
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The ```` ```toml ```` blocks of `markdown` (read from `file`), each with the marker on the
/// line before it, if any.
fn toml_blocks(file: &str, markdown: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    // The open fence: its info string and the block's first line and text so far.
    let mut open: Option<(String, usize, String)> = None;
    let mut previous = "";
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            None if trimmed.starts_with("```") => {
                let info = trimmed.trim_start_matches('`').trim().to_string();
                let mark = parse_mark(previous).map_err(|e| format!("{file}:{i}: {e}"))?;
                if info != "toml" && mark.is_some() {
                    return Err(format!(
                        "{file}:{i}: a docs-check marker before a {info:?} block"
                    ));
                }
                if info == "toml" {
                    blocks.push(Block {
                        file: file.to_string(),
                        line: i + 2,
                        text: String::new(),
                        mark,
                    });
                }
                open = Some((info, i + 2, String::new()));
            }
            None => {}
            Some((info, _, text)) => {
                if trimmed.starts_with("```") && trimmed.trim_start_matches('`').trim().is_empty() {
                    if info == "toml" {
                        blocks.last_mut().unwrap().text = std::mem::take(text);
                    }
                    open = None;
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        previous = line;
    }
    if let Some((info, line, _)) = open {
        return Err(format!("{file}:{}: unclosed ```{info} block", line - 1));
    }
    let markers = markdown
        .lines()
        .filter(|l| l.trim().starts_with(MARKER))
        .count();
    if markers != blocks.iter().filter(|b| b.mark.is_some()).count() {
        return Err(format!(
            "{file}: a `{MARKER} ... -->` marker that is not on the line right before a ```toml block"
        ));
    }
    Ok(blocks)
}

fn parse_mark(line: &str) -> Result<Option<Mark>, String> {
    let Some(rest) = line.trim().strip_prefix(MARKER) else {
        return Ok(None);
    };
    let body = rest
        .strip_suffix("-->")
        .ok_or_else(|| format!("unterminated marker {line:?}"))?
        .trim();
    match body.split_once(' ') {
        Some(("fixture", path)) => Ok(Some(Mark::Fixture(path.trim().to_string()))),
        Some(("invalid", expected)) => Ok(Some(Mark::Invalid(expected.trim().to_string()))),
        _ => Err(format!(
            "unknown marker {line:?} (known: `{MARKER} fixture PATH -->`, `{MARKER} invalid TEXT -->`)"
        )),
    }
}

/// The dotted path of every `[table]` and `[[array.of.tables]]` header in `text`.
fn table_headers(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let inner = line.strip_prefix("[[").or_else(|| line.strip_prefix('['))?;
            let end = inner.find(']')?;
            Some(split_key(&inner[..end]))
        })
        .collect()
}

/// `a."b.c".d` as `["a", "b.c", "d"]`.
fn split_key(key: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut quoted = false;
    for c in key.chars() {
        match c {
            '"' | '\'' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut part).trim().to_string()),
            c => part.push(c),
        }
    }
    parts.push(part.trim().to_string());
    parts
}

/// The text checked for `block`: blank lines up to its first line (so that errors name the
/// markdown's lines), the block, and for a fragment the base tables it does not define.
fn checked_text(block: &Block) -> String {
    let mut text = "\n".repeat(block.line - 1) + &block.text;
    let headers = table_headers(&block.text);
    let whole = headers.iter().any(|h| h[0] == "receivers");
    if !whole {
        for (path, base) in BASE {
            let path: Vec<&str> = path.split('.').collect();
            let defined = headers
                .iter()
                .any(|h| h.len() >= path.len() && h.iter().zip(&path).all(|(a, b)| a == b));
            if !defined {
                text.push('\n');
                text.push_str(base);
            }
        }
    }
    text
}

fn validate(block: &Block) -> Result<(), String> {
    let lookup = |name: &str| {
        ENV.iter()
            .find(|(var, _)| *var == name)
            .map(|(_, value)| value.to_string())
    };
    let Err(errors) = Config::from_str_with_env(&checked_text(block), &block.file, &lookup) else {
        return Ok(());
    };
    let errors: Vec<String> = errors
        .iter()
        .map(|e| e.to_string())
        .filter(|e| !e.contains(NOT_THIS_MACHINE))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// Checks one block; the problem, naming the file and the line.
fn check_block(block: &Block, fixture: impl Fn(&str) -> Option<String>) -> Result<(), String> {
    let at = format!("{}:{}", block.file, block.line);
    match (&block.mark, validate(block)) {
        (Some(Mark::Invalid(expected)), Ok(_)) => Err(format!(
            "{at}: the block is marked invalid ({expected:?}) but validates"
        )),
        (Some(Mark::Invalid(expected)), Err(errors)) if !errors.contains(expected.as_str()) => {
            Err(format!(
                "{at}: the block is marked invalid with {expected:?}, but fails with:\n{errors}"
            ))
        }
        (Some(Mark::Invalid(_)), Err(_)) => Ok(()),
        (_, Err(errors)) => Err(format!(
            "{at}: the example does not validate (base tables for fragments: see docs.rs):\n{errors}"
        )),
        (Some(Mark::Fixture(path)), Ok(_)) => match fixture(path) {
            None => Err(format!("{at}: no fixture {path}")),
            Some(expected) if expected != block.text => Err(format!(
                "{at}: the block differs from {path}; they must be equal, byte for byte.\n\
                 --- {path}\n{expected}--- {at}\n{}",
                block.text
            )),
            Some(_) => Ok(()),
        },
        (None, Ok(_)) => Ok(()),
    }
}

fn fixture(path: &str) -> Option<String> {
    FIXTURES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, text)| text.to_string())
}

/// README.md and docs/*.md, by their path from the workspace root.
fn markdown_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(workspace().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_toml_example_in_the_docs_validates_and_shows_the_fixtures() {
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut shown = Vec::new();
    for file in markdown_files() {
        let markdown = std::fs::read_to_string(workspace().join(&file)).unwrap();
        let blocks = match toml_blocks(&file, &markdown) {
            Ok(blocks) => blocks,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        for block in blocks {
            checked += 1;
            if let Some(Mark::Fixture(path)) = &block.mark {
                shown.push(path.clone());
            }
            if let Err(problem) = check_block(&block, fixture) {
                problems.push(problem);
            }
        }
    }
    for (path, _) in FIXTURES {
        if !shown.iter().any(|s| s == path) {
            problems.push(format!(
                "no docs block is marked `{MARKER} fixture {path} -->`"
            ));
        }
    }
    assert!(
        checked >= 15,
        "only {checked} toml blocks found in README.md and docs/*.md"
    );
    assert!(
        problems.is_empty(),
        "{} of {checked} docs examples are wrong:\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}

/// The commented example in the embedded default config (`shardtel default-config`) that
/// starts with the line `# {header}`, uncommented, as TOML.
fn default_config_example(header: &str) -> Table {
    let lines: Vec<&str> = shardtel_config::DEFAULT_CONFIG.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(&format!("# {header}")))
        .unwrap_or_else(|| panic!("no commented {header} in the embedded default config"));
    let example: String = lines[start..]
        .iter()
        .map_while(|l| l.strip_prefix("# "))
        .map(|l| format!("{l}\n"))
        .collect();
    example.parse().unwrap_or_else(|e| {
        panic!(
            "the default config's commented {header} is not TOML once uncommented: {e}\n{example}"
        )
    })
}

#[test]
fn the_default_configs_commented_examples_are_the_fixtures() {
    let sampling: Table = REFERENCE_SAMPLING.parse().unwrap();
    let example = default_config_example("[processors.tail_sampling]");
    assert_eq!(
        example["processors"]["tail_sampling"]["policies"],
        sampling["processors"]["tail_sampling"]["policies"],
        "the default config's commented tail-sampling policies differ from \
         tests/fixtures/reference-sampling.toml"
    );
    let redaction: Table = REDACTION.parse().unwrap();
    assert_eq!(
        Value::Table(default_config_example("[processors.redact]")),
        Value::Table(redaction),
        "the default config's commented redaction processor differs from \
         tests/fixtures/redaction.toml"
    );
}

#[test]
fn the_docs_check_catches_what_it_promises_to() {
    let check = |markdown: &str| -> Result<(), String> {
        toml_blocks("t.md", markdown)?
            .iter()
            .try_for_each(|b| check_block(b, |p| (p == "f.toml").then(|| "a = 1\n".to_string())))
    };
    // A fragment is checked inside the base; other languages are not checked.
    assert_eq!(
        check("```toml\n[pipelines.logs]\nreceivers = [\"otlp\"]\nexporters = [\"loki\"]\n```\n```sh\nnot toml\n```\n"),
        Ok(())
    );
    // A wrong key in a fragment fails, naming the markdown line.
    let err = check("text\n\n```toml\n[exporters.tempo]\ntype = \"otlp\"\nendpont = \"x\"\n```\n")
        .unwrap_err();
    assert!(
        err.contains("t.md:6: exporters.tempo.endpont: unknown key"),
        "{err}"
    );
    // A whole file (it defines a receiver) gets no base: no pipeline is an error.
    let err = check("```toml\n[receivers.otlp]\n```\n").unwrap_err();
    assert!(err.contains("no pipeline is defined"), "{err}");
    // Marked invalid: must fail, with the text given.
    let invalid = "<!-- docs-check: invalid engine.corez: unknown key -->\n```toml\n";
    assert_eq!(
        check(&format!("{invalid}[engine]\ncorez = 1\n```\n")),
        Ok(())
    );
    let err = check(&format!("{invalid}[engine]\nchannel_capacity = 8\n```\n")).unwrap_err();
    assert!(err.contains("marked invalid"), "{err}");
    // Marked as a fixture: must be equal, byte for byte, and valid.
    let fixture = "<!-- docs-check: fixture f.toml -->\n```toml\n";
    let err = check(&format!("{fixture}[engine]\nchannel_capacity = 8\n```\n")).unwrap_err();
    assert!(err.contains("differs from f.toml"), "{err}");
    let err = check(&format!("{fixture}a = 1\n```\n")).unwrap_err();
    assert!(err.contains("does not validate"), "{err}");
    // Unknown markers and markers on other blocks are errors.
    assert!(check("<!-- docs-check: fixtrue f.toml -->\n```toml\n```\n").is_err());
    assert!(check("<!-- docs-check: fixture f.toml -->\n```sh\n```\n").is_err());
    assert!(check("```toml\n[engine]\n").is_err());
    assert!(check("<!-- docs-check: fixture f.toml -->\n\n```toml\n```\n").is_err());
}
