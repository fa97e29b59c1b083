//! `${VAR}` substitution in the raw text, and mapping positions in the substituted text back to
//! lines of the original file.
//!
//! Rules: `${NAME}` is replaced by the variable's value, `${NAME:-default}` by the default when
//! the variable is unset or empty, `$$` by a single `$`; any other `$` is kept. Comments are left
//! alone, so a commented-out line may mention an unset variable.
//!
//! A value only ever becomes a value: it can never add keys, tables or comments to the file.
//! Where the reference sits decides how ([`embed`]):
//! - inside a `"basic string"` (or `"""` multi-line one) the value is text, escaped as TOML
//!   needs (`"`, `\`, line breaks and other control characters), so `endpoint = "${TEMPO}"`
//!   holds exactly the variable's text;
//! - inside a `'literal string'`, which cannot escape anything, a value holding `'` (or a line
//!   break, in a single-line one) is refused;
//! - outside quotes the value is TOML (`port = ${PORT}`, `cores = ${CORES:-"all"}`,
//!   `brokers = [${BROKERS}]`) and must be complete in itself: strings and brackets it opens
//!   are closed, and it has no `=`, `#` or line break outside them. Anything else is refused
//!   with an error naming the variable and the line.

use std::borrow::Cow;

use crate::error::ConfigErrorKind;

/// The text after substitution and where each part of it came from.
#[derive(Debug)]
pub(crate) struct Substituted {
    /// The substituted text, handed to the TOML parser.
    pub(crate) text: String,
    /// Runs of output, sorted by `out_start`.
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    out_start: usize,
    in_start: usize,
    /// Copied from the input byte for byte; otherwise the output of one `${...}` or `$$`.
    verbatim: bool,
}

/// A problem found while substituting, at a byte offset of the original text.
#[derive(Debug)]
pub(crate) struct EnvProblem {
    pub(crate) offset: usize,
    pub(crate) kind: ConfigErrorKind,
}

impl Substituted {
    /// The offset in the original text that produced byte `out` of the substituted text.
    pub(crate) fn original_offset(&self, out: usize) -> usize {
        let index = self.segments.partition_point(|s| s.out_start <= out);
        match index.checked_sub(1).map(|i| self.segments[i]) {
            Some(s) if s.verbatim => s.in_start + (out - s.out_start),
            Some(s) => s.in_start,
            None => out,
        }
    }

    fn push_verbatim(&mut self, input: &str, in_start: usize) {
        if input.is_empty() {
            return;
        }
        let out_start = self.text.len();
        let contiguous = self.segments.last().is_some_and(|last| {
            last.verbatim && last.in_start + (out_start - last.out_start) == in_start
        });
        if !contiguous {
            self.segments.push(Segment {
                out_start,
                in_start,
                verbatim: true,
            });
        }
        self.text.push_str(input);
    }

    fn push_replacement(&mut self, output: &str, in_start: usize) {
        self.segments.push(Segment {
            out_start: self.text.len(),
            in_start,
            verbatim: false,
        });
        self.text.push_str(output);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lexical {
    Normal,
    Comment,
    BasicString,
    LiteralString,
    MultiBasicString,
    MultiLiteralString,
}

/// Substitutes `${...}` references; returns every problem found when any is.
pub(crate) fn substitute(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Substituted, Vec<EnvProblem>> {
    let mut out = Substituted {
        text: String::with_capacity(input.len()),
        segments: Vec::new(),
    };
    let mut problems = Vec::new();
    let bytes = input.as_bytes();
    let mut state = Lexical::Normal;
    // Start of the input not yet copied to the output.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Inside a multi-byte character (only ever in a comment or string) nothing matches.
        let rest = input.get(i..).unwrap_or_default();
        let b = bytes[i];
        match state {
            Lexical::Comment => {
                if b == b'\n' {
                    state = Lexical::Normal;
                }
                i += 1;
                continue;
            }
            Lexical::Normal => match b {
                b'#' => state = Lexical::Comment,
                b'"' if rest.starts_with("\"\"\"") => {
                    state = Lexical::MultiBasicString;
                    i += 3;
                    continue;
                }
                b'"' => state = Lexical::BasicString,
                b'\'' if rest.starts_with("'''") => {
                    state = Lexical::MultiLiteralString;
                    i += 3;
                    continue;
                }
                b'\'' => state = Lexical::LiteralString,
                _ => {}
            },
            Lexical::BasicString | Lexical::MultiBasicString if b == b'\\' => {
                // The escaped character is never a delimiter or a `$` to substitute.
                i += 2;
                continue;
            }
            Lexical::BasicString if b == b'"' || b == b'\n' => state = Lexical::Normal,
            Lexical::LiteralString if b == b'\'' || b == b'\n' => state = Lexical::Normal,
            Lexical::MultiBasicString if rest.starts_with("\"\"\"") => {
                state = Lexical::Normal;
                i += 3;
                continue;
            }
            Lexical::MultiLiteralString if rest.starts_with("'''") => {
                state = Lexical::Normal;
                i += 3;
                continue;
            }
            _ => {}
        }
        if b != b'$' || state == Lexical::Comment {
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'$') => {
                out.push_verbatim(&input[copied..i], copied);
                out.push_replacement("$", i);
                i += 2;
                copied = i;
            }
            Some(b'{') => {
                let line_end = rest.find('\n').unwrap_or(rest.len());
                let Some(close) = rest[..line_end].find('}') else {
                    problems.push(EnvProblem {
                        offset: i,
                        kind: ConfigErrorKind::EnvSyntax {
                            text: rest[..line_end].trim_end().to_string(),
                            reason: "missing closing }",
                        },
                    });
                    i += line_end;
                    continue;
                };
                let reference = &rest[..=close];
                let inner = &rest[2..close];
                let (name, default) = match inner.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (inner, None),
                };
                if !is_variable_name(name) {
                    problems.push(EnvProblem {
                        offset: i,
                        kind: ConfigErrorKind::EnvSyntax {
                            text: reference.to_string(),
                            reason: "invalid variable name",
                        },
                    });
                } else {
                    let value = lookup(name).filter(|v| default.is_none() || !v.is_empty());
                    match value.as_deref().or(default).map(|v| embed(v, state)) {
                        Some(Ok(value)) => {
                            out.push_verbatim(&input[copied..i], copied);
                            out.push_replacement(&value, i);
                        }
                        Some(Err(reason)) => problems.push(EnvProblem {
                            offset: i,
                            kind: ConfigErrorKind::EnvValueUnfit {
                                name: name.to_string(),
                                reason,
                            },
                        }),
                        None => problems.push(EnvProblem {
                            offset: i,
                            kind: ConfigErrorKind::EnvVarUnset {
                                name: name.to_string(),
                            },
                        }),
                    }
                }
                i += close + 1;
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_verbatim(&input[copied..], copied);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// A problem of a value inside a `'literal string'`, with what to do instead.
macro_rules! literal {
    ($problem:literal) => {
        concat!(
            $problem,
            ": a 'literal string' cannot escape it; write the reference inside a \"basic string\" instead"
        )
    };
}

/// A problem of a value outside quotes, with what to do instead.
macro_rules! bare {
    ($problem:literal) => {
        concat!(
            $problem,
            ": outside quotes a value must be whole TOML values like 4317, \"all\" or [0, 1]; inside a \"string\" any text is taken as it is"
        )
    };
}

/// The text that replaces a reference whose value is `value`, in lexical state `state` (see
/// the module documentation), or why the value cannot stand there.
fn embed(value: &str, state: Lexical) -> Result<Cow<'_, str>, &'static str> {
    match state {
        Lexical::BasicString | Lexical::MultiBasicString => Ok(escape_basic(value)),
        Lexical::LiteralString | Lexical::MultiLiteralString if value.contains('\'') => {
            Err(literal!("contains '"))
        }
        Lexical::LiteralString if value.chars().any(|c| c.is_control() && c != '\t') => Err(
            literal!("contains a line break or another control character"),
        ),
        Lexical::MultiLiteralString
            if value
                .chars()
                .any(|c| c.is_control() && c != '\t' && c != '\n') =>
        {
            Err(literal!("contains a control character"))
        }
        Lexical::LiteralString | Lexical::MultiLiteralString => Ok(Cow::Borrowed(value)),
        Lexical::Normal | Lexical::Comment => check_bare(value).map(|()| Cow::Borrowed(value)),
    }
}

/// `value` as the content of a TOML basic string (single- or multi-line).
fn escape_basic(value: &str) -> Cow<'_, str> {
    if !value
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Checks that `value`, placed outside quotes, is complete in itself: every string it opens
/// ends in it, its brackets balance, and it has no `=`, `#` or line break outside them (which
/// would start a key, a comment or a new line of the file).
fn check_bare(value: &str) -> Result<(), &'static str> {
    let bytes = value.as_bytes();
    let mut open: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        match bytes[i] {
            b'"' | b'\'' => {
                let quote = bytes[i];
                let multi = rest.starts_with(&[quote; 3]);
                let delimiter: &[u8] = if multi { &rest[..3] } else { &rest[..1] };
                let mut j = i + delimiter.len();
                loop {
                    match bytes.get(j) {
                        None => return Err(bare!("opens a string it does not close")),
                        Some(b'\\') if quote == b'"' => j += 2,
                        Some(b'\n') if !multi => {
                            return Err(bare!("has a line break inside a string"))
                        }
                        Some(_) if bytes[j..].starts_with(delimiter) => break,
                        Some(_) => j += 1,
                    }
                }
                i = j + delimiter.len();
                continue;
            }
            b'[' | b'{' => open.push(bytes[i]),
            b']' if open.pop() != Some(b'[') => {
                return Err(bare!("closes a bracket it did not open"))
            }
            b'}' if open.pop() != Some(b'{') => {
                return Err(bare!("closes a brace it did not open"))
            }
            b'#' => return Err(bare!("has # outside a string (it would start a comment)")),
            b'=' if open.is_empty() => {
                return Err(bare!(
                    "has = outside brackets and strings (it would start a new key)"
                ))
            }
            b'\n' | b'\r' if open.is_empty() => {
                return Err(bare!("has a line break outside brackets and strings"))
            }
            _ => {}
        }
        i += 1;
    }
    if open.is_empty() {
        Ok(())
    } else {
        Err(bare!("opens a bracket it does not close"))
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Turns byte offsets of the substituted text into 1-based lines of the original text.
#[derive(Debug)]
pub(crate) struct SourceMap<'a> {
    pub(crate) origin: &'a str,
    line_starts: Vec<usize>,
    substituted: Option<&'a Substituted>,
}

impl<'a> SourceMap<'a> {
    /// A map for `original`; `substituted` is `None` when positions already refer to it.
    pub(crate) fn new(
        origin: &'a str,
        original: &str,
        substituted: Option<&'a Substituted>,
    ) -> Self {
        let line_starts = std::iter::once(0)
            .chain(original.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceMap {
            origin,
            line_starts,
            substituted,
        }
    }

    /// Line of byte `offset` of the original text.
    pub(crate) fn line_of_original(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    /// Line of byte `offset` of the substituted text.
    pub(crate) fn line(&self, offset: usize) -> usize {
        let original = match self.substituted {
            Some(s) => s.original_offset(offset),
            None => offset,
        };
        self.line_of_original(original)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LITERAL_HINT: &str = literal!("");
    const BARE_HINT: &str = bare!("");

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("tempo".into()),
            "EMPTY" => Some(String::new()),
            "MULTI" => Some("[1,\n2,\n3]".into()),
            "INJECT" => Some("x\"\n[evil]\nk = \"v".into()),
            "QUOTE" => Some("it's".into()),
            "NEWLINE" => Some("a\nb".into()),
            "BROKERS" => Some("\"k1:9092\", \"k2:9092\"".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, Vec<String>> {
        substitute(text, &env).map(|s| s.text).map_err(|p| {
            p.into_iter()
                .map(|p| format!("{}: {}", p.offset, p.kind))
                .collect()
        })
    }

    #[test]
    fn replaces_variables_and_defaults() {
        assert_eq!(run("a = \"${HOST}:4317\"").unwrap(), "a = \"tempo:4317\"");
        assert_eq!(run("a = \"${NOPE:-x y}\"").unwrap(), "a = \"x y\"");
        assert_eq!(run("a = \"${HOST:-x}\"").unwrap(), "a = \"tempo\"");
        assert_eq!(run("a = \"${EMPTY:-d}\"").unwrap(), "a = \"d\"");
        assert_eq!(run("a = \"${EMPTY}\"").unwrap(), "a = \"\"");
        assert_eq!(run("a = \"${NOPE:-}\"").unwrap(), "a = \"\"");
        assert_eq!(run("port = ${P:-4317}").unwrap(), "port = 4317");
    }

    #[test]
    fn dollar_escapes_and_plain_dollars() {
        assert_eq!(run("a = \"$${HOST}\"").unwrap(), "a = \"${HOST}\"");
        assert_eq!(run("a = \"$$\"").unwrap(), "a = \"$\"");
        assert_eq!(run("a = '^x$'").unwrap(), "a = '^x$'");
        assert_eq!(run("a = \"cost $5\"").unwrap(), "a = \"cost $5\"");
        assert_eq!(run("a = \"x$\"").unwrap(), "a = \"x$\"");
    }

    #[test]
    fn non_ascii_text_is_copied_as_is() {
        let text = "# caf\u{e9} \u{2014} ${UNSET}\na = \"\u{2014}${HOST}\u{e9}\" # \u{2014}";
        assert_eq!(
            run(text).unwrap(),
            "# caf\u{e9} \u{2014} ${UNSET}\na = \"\u{2014}tempo\u{e9}\" # \u{2014}"
        );
    }

    #[test]
    fn comments_are_not_substituted() {
        let text = "# use ${UNSET} here\na = 1 # or ${ALSO_UNSET}\nb = \"#${HOST}\"";
        assert_eq!(
            run(text).unwrap(),
            "# use ${UNSET} here\na = 1 # or ${ALSO_UNSET}\nb = \"#tempo\""
        );
        let text = "a = \"\"\"\n# not a comment ${HOST}\"\"\"\nb = '''${HOST}'''";
        assert_eq!(
            run(text).unwrap(),
            "a = \"\"\"\n# not a comment tempo\"\"\"\nb = '''tempo'''"
        );
        // An escaped quote does not end the string.
        assert_eq!(run(r#"a = "\" # ${HOST}""#).unwrap(), r#"a = "\" # tempo""#);
    }

    #[test]
    fn problems_are_all_reported() {
        let problems =
            run("a = \"${NOPE}\"\nb = \"${1BAD}\"\nc = \"${OPEN\"\nd = \"${ALSO}\"").unwrap_err();
        assert_eq!(
            problems,
            vec![
                "5: environment variable NOPE is not set (set it, or give a default: ${NOPE:-default})",
                "19: invalid environment reference \"${1BAD}\": invalid variable name (write ${NAME} or ${NAME:-default}; $$ is a literal $)",
                "33: invalid environment reference \"${OPEN\\\"\": missing closing } (write ${NAME} or ${NAME:-default}; $$ is a literal $)",
                "46: environment variable ALSO is not set (set it, or give a default: ${ALSO:-default})",
            ]
        );
    }

    #[test]
    fn offsets_map_back_to_original_lines() {
        let text = "a = ${MULTI}\nb = \"${HOST}\" x\nc = $$1";
        let s = substitute(text, &env).unwrap();
        assert_eq!(s.text, "a = [1,\n2,\n3]\nb = \"tempo\" x\nc = $1");
        let map = SourceMap::new("f", text, Some(&s));
        let at = |needle: &str| map.line(s.text.find(needle).unwrap());
        assert_eq!(at("a ="), 1);
        assert_eq!(
            at("3]"),
            1,
            "inside a substituted value: the line of the reference"
        );
        assert_eq!(at("b ="), 2);
        assert_eq!(at("x"), 2);
        assert_eq!(at("c ="), 3);
        assert_eq!(at("$1"), 3);
        assert_eq!(map.line(s.text.len()), 3);
    }

    /// The top-level keys of a TOML text and the string value of `a` (to check that a
    /// substituted value did not change the structure).
    fn parsed(text: &str) -> (Vec<String>, Option<String>) {
        let doc = toml::de::DeTable::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let keys = doc
            .get_ref()
            .keys()
            .map(|k| k.get_ref().to_string())
            .collect();
        let a = doc.get_ref().get("a").and_then(|v| match v.get_ref() {
            toml::de::DeValue::String(s) => Some(s.to_string()),
            _ => None,
        });
        (keys, a)
    }

    #[test]
    fn values_in_basic_strings_are_text() {
        let text = run("a = \"${INJECT}\"\nb = 1").unwrap();
        assert_eq!(
            parsed(&text),
            (
                vec!["a".to_string(), "b".to_string()],
                Some("x\"\n[evil]\nk = \"v".to_string())
            )
        );
        let text = run("a = \"\"\"\n${INJECT}\"\"\"").unwrap();
        assert_eq!(parsed(&text).1.as_deref(), Some("x\"\n[evil]\nk = \"v"));
        // Backslashes and control characters are taken as they are, not as escapes.
        let lookup = |_: &str| Some("C:\\new\u{1}\u{7f}\t".to_string());
        let text = substitute("a = \"${P}\"", &lookup).unwrap().text;
        assert_eq!(parsed(&text).1.as_deref(), Some("C:\\new\u{1}\u{7f}\t"));
        // The text is unchanged when there is nothing to escape.
        assert_eq!(run("a = \"${HOST}\"").unwrap(), "a = \"tempo\"");
    }

    #[test]
    fn literal_strings_refuse_what_they_cannot_hold() {
        let hint = LITERAL_HINT;
        let quote = format!("the value of environment variable QUOTE contains '{hint}");
        assert_eq!(run("a = '${QUOTE}'").unwrap_err(), [format!("5: {quote}")]);
        assert_eq!(
            run("a = '''${QUOTE}'''").unwrap_err(),
            [format!("7: {quote}")]
        );
        assert_eq!(
            run("a = '${NEWLINE}'").unwrap_err(),
            [format!(
                "5: the value of environment variable NEWLINE contains a line break or another control character{hint}"
            )]
        );
        let text = run("a = '''${NEWLINE}'''").unwrap();
        assert_eq!(parsed(&text).1.as_deref(), Some("a\nb"));
        assert_eq!(run("a = '${HOST}'").unwrap(), "a = 'tempo'");
    }

    #[test]
    fn bare_values_must_be_whole_values() {
        // The documented forms: a whole value, and values inside brackets.
        assert_eq!(run("cores = ${NOPE:-\"all\"}").unwrap(), "cores = \"all\"");
        assert_eq!(
            run("brokers = [${BROKERS}]").unwrap(),
            "brokers = [\"k1:9092\", \"k2:9092\"]"
        );
        let bare = |value: &str| {
            let lookup = |_: &str| Some(value.to_string());
            substitute("a = ${V}", &lookup).map(|s| s.text)
        };
        for value in [
            "4317",
            "[0, 1]",
            "[1,\n2]",
            "{ x = 1, y = \"=#]\" }",
            "'#='",
            "\"\\\"]\"",
            "\"\"\"\na = 1\n\"\"\"",
        ] {
            let text = bare(value).unwrap();
            assert_eq!(text, format!("a = {value}"));
            assert_eq!(parsed(&text).0, ["a"], "{value:?}");
        }
        for (value, problem) in [
            ("1\n[evil]", "has a line break outside brackets and strings"),
            (
                "1\r\nb = 2",
                "has a line break outside brackets and strings",
            ),
            (
                "1 # the rest",
                "has # outside a string (it would start a comment)",
            ),
            (
                "[1, # ]",
                "has # outside a string (it would start a comment)",
            ),
            (
                "1, b = 2",
                "has = outside brackets and strings (it would start a new key)",
            ),
            ("1]", "closes a bracket it did not open"),
            ("[1}", "closes a brace it did not open"),
            ("[1", "opens a bracket it does not close"),
            ("\"abc", "opens a string it does not close"),
            ("\"a\\\"", "opens a string it does not close"),
            ("'a\nb'", "has a line break inside a string"),
            ("'''a", "opens a string it does not close"),
        ] {
            let problems = bare(value).unwrap_err();
            assert_eq!(problems.len(), 1, "{value:?}");
            assert_eq!(
                problems[0].kind.to_string(),
                format!("the value of environment variable V {problem}{BARE_HINT}"),
                "{value:?}"
            );
        }
    }
}
