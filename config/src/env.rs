//! `${VAR}` substitution in the raw text, and mapping positions in the substituted text back to
//! lines of the original file.
//!
//! Rules: `${NAME}` is replaced by the variable's value, `${NAME:-default}` by the default when
//! the variable is unset or empty, `$$` by a single `$`; any other `$` is kept. Comments are left
//! alone, so a commented-out line may mention an unset variable. Values are inserted verbatim
//! (no quoting), so `endpoint = "${TEMPO}"` needs the quotes and `port = ${PORT}` does not.

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
                    match value.as_deref().or(default) {
                        Some(value) => {
                            out.push_verbatim(&input[copied..i], copied);
                            out.push_replacement(value, i);
                        }
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

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("tempo".into()),
            "EMPTY" => Some(String::new()),
            "MULTI" => Some("a\nb\nc".into()),
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
        let text = "a = \"${MULTI}\"\nb = \"${HOST}\" x\nc = $$1";
        let s = substitute(text, &env).unwrap();
        assert_eq!(s.text, "a = \"a\nb\nc\"\nb = \"tempo\" x\nc = $1");
        let map = SourceMap::new("f", text, Some(&s));
        let at = |needle: &str| map.line(s.text.find(needle).unwrap());
        assert_eq!(at("a ="), 1);
        assert_eq!(
            at("c\""),
            1,
            "inside a substituted value: the line of the reference"
        );
        assert_eq!(at("b ="), 2);
        assert_eq!(at("x"), 2);
        assert_eq!(at("c ="), 3);
        assert_eq!(at("1"), 3);
        assert_eq!(map.line(s.text.len()), 3);
    }
}
