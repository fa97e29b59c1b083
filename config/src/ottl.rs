//! The small statement language of `transform` and `routing`, modelled on the OpenTelemetry
//! Collector's OTTL: conditions (`attributes["env"] == "dev" and not IsMatch(name, "^GET ")`)
//! and statements (`set(attributes["team"], "shop") where kind == SPAN_KIND_SERVER`).
//!
//! [`parse_condition`] and [`parse_statement`] turn the text into a checked tree once, at
//! start-up: every path is checked against the [`Context`] it runs in, every regex compiles,
//! every function has the arguments it needs. The processors crate evaluates the tree on the
//! wire views of spans, log records and data points; nothing is parsed at run time.
//!
//! ```
//! use shardtel_config::ottl::{parse_condition, parse_statement, Context};
//! assert!(parse_condition("trace.has_error or status.code == STATUS_CODE_ERROR", Context::Span, true).is_ok());
//! let e = parse_statement("set(body, \"x\")", Context::Span).unwrap_err();
//! assert_eq!(e.to_string(), "path `body` is not available in the span context (available: attributes[\"key\"], resource.attributes[\"key\"], name, kind, status.code, status.message)");
//! ```

use std::fmt;

/// Where a condition or statement runs: which item the bare paths (`attributes`, `name`) name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Context {
    /// A resource: `attributes` are the resource's.
    Resource,
    /// A span.
    Span,
    /// A log record.
    Log,
    /// A metric data point (`metric.name` is its metric's name).
    DataPoint,
    /// A span event (`Span.events[i]`): `name`, `attributes` and `time_unix_nano` are the
    /// event's; `span.*` reads the span it belongs to.
    SpanEvent,
}

impl Context {
    /// Every context, with its name in configurations.
    pub const ALL: [(Context, &'static str); 5] = [
        (Context::Resource, "resource"),
        (Context::Span, "span"),
        (Context::Log, "log"),
        (Context::DataPoint, "datapoint"),
        (Context::SpanEvent, "spanevent"),
    ];

    /// The name in configurations.
    pub fn name(self) -> &'static str {
        match self {
            Context::Resource => "resource",
            Context::Span => "span",
            Context::Log => "log",
            Context::DataPoint => "datapoint",
            Context::SpanEvent => "spanevent",
        }
    }

    fn available(self) -> &'static str {
        match self {
            Context::Resource => "attributes[\"key\"]",
            Context::Span => "attributes[\"key\"], resource.attributes[\"key\"], name, kind, status.code, status.message",
            Context::Log => "attributes[\"key\"], resource.attributes[\"key\"], body, severity_number, severity_text",
            Context::DataPoint => "attributes[\"key\"], resource.attributes[\"key\"], metric.name",
            Context::SpanEvent => "attributes[\"key\"], name, time_unix_nano, dropped_attributes_count, span.name, span.attributes[\"key\"], span.kind, span.status.code, span.status.message, resource.attributes[\"key\"]; not supported: instrumentation_scope.*, span.trace_id, span.span_id, span times and the other span fields, event `time`",
        }
    }
}

/// A problem in a condition or statement (the caller adds file, line and the text).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LangError {
    /// What is wrong, lowercase.
    pub message: String,
}

fn err<T>(message: impl Into<String>) -> Result<T, LangError> {
    Err(LangError {
        message: message.into(),
    })
}

/// A value a path reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    /// `attributes["key"]`: the item's attribute (in the resource context, the resource's).
    Attribute(String),
    /// `resource.attributes["key"]`.
    ResourceAttribute(String),
    /// `name`: the span's name.
    Name,
    /// `kind`: the span's kind (an integer; compare with `SPAN_KIND_SERVER`, ...).
    Kind,
    /// `status.code` (compare with `STATUS_CODE_ERROR`, ...).
    StatusCode,
    /// `status.message`.
    StatusMessage,
    /// `body`: the log record's body.
    Body,
    /// `severity_number` (compare with `SEVERITY_NUMBER_WARN`, ...).
    SeverityNumber,
    /// `severity_text`.
    SeverityText,
    /// `metric.name`: the name of the data point's metric.
    MetricName,
    /// `trace.has_error`: some span of the trace has status ERROR (routing of traces only).
    TraceHasError,
    /// `time_unix_nano`: a span event's time (an integer).
    TimeUnixNano,
    /// `dropped_attributes_count`: a span event's.
    DroppedAttributesCount,
    /// `span.name`: the name of the span an event belongs to.
    SpanName,
    /// `span.kind`: the kind of the span an event belongs to.
    SpanKind,
    /// `span.status.code`: the status code of the span an event belongs to.
    SpanStatusCode,
    /// `span.status.message`.
    SpanStatusMessage,
    /// `span.attributes["key"]`: an attribute of the span an event belongs to.
    SpanAttribute(String),
}

impl Path {
    fn allowed_in(&self, context: Context, routing: bool) -> bool {
        use Path::*;
        match (self, context) {
            (Attribute(_), _) => true,
            (ResourceAttribute(_), c) => c != Context::Resource,
            (Name | Kind | StatusCode | StatusMessage, Context::Span) => true,
            (
                Name
                | TimeUnixNano
                | DroppedAttributesCount
                | SpanName
                | SpanKind
                | SpanStatusCode
                | SpanStatusMessage
                | SpanAttribute(_),
                Context::SpanEvent,
            ) => true,
            (TraceHasError, Context::Span) => routing,
            (Body | SeverityNumber | SeverityText, Context::Log) => true,
            (MetricName, Context::DataPoint) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Attribute(k) => write!(f, "attributes[{k:?}]"),
            Path::ResourceAttribute(k) => write!(f, "resource.attributes[{k:?}]"),
            Path::Name => f.write_str("name"),
            Path::Kind => f.write_str("kind"),
            Path::StatusCode => f.write_str("status.code"),
            Path::StatusMessage => f.write_str("status.message"),
            Path::Body => f.write_str("body"),
            Path::SeverityNumber => f.write_str("severity_number"),
            Path::SeverityText => f.write_str("severity_text"),
            Path::MetricName => f.write_str("metric.name"),
            Path::TraceHasError => f.write_str("trace.has_error"),
            Path::TimeUnixNano => f.write_str("time_unix_nano"),
            Path::DroppedAttributesCount => f.write_str("dropped_attributes_count"),
            Path::SpanName => f.write_str("span.name"),
            Path::SpanKind => f.write_str("span.kind"),
            Path::SpanStatusCode => f.write_str("span.status.code"),
            Path::SpanStatusMessage => f.write_str("span.status.message"),
            Path::SpanAttribute(k) => write!(f, "span.attributes[{k:?}]"),
        }
    }
}

/// A constant.
#[derive(Clone, Debug)]
pub enum Literal {
    /// `"text"`.
    String(String),
    /// `42`, or an enum such as `SPAN_KIND_SERVER`.
    Int(i64),
    /// `1.5`.
    Double(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `nil`: an absent value.
    Nil,
}

impl PartialEq for Literal {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Literal::String(a), Literal::String(b)) => a == b,
            (Literal::Int(a), Literal::Int(b)) => a == b,
            (Literal::Double(a), Literal::Double(b)) => a.to_bits() == b.to_bits(),
            (Literal::Bool(a), Literal::Bool(b)) => a == b,
            (Literal::Nil, Literal::Nil) => true,
            _ => false,
        }
    }
}

impl Eq for Literal {}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// An expression: a value or a condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// A constant.
    Literal(Literal),
    /// A path.
    Path(Path),
    /// `not e`.
    Not(Box<Expr>),
    /// `a and b`.
    And(Box<Expr>, Box<Expr>),
    /// `a or b`.
    Or(Box<Expr>, Box<Expr>),
    /// `a == b`, ...
    Compare(Box<Expr>, CmpOp, Box<Expr>),
    /// `IsMatch(value, "regex")`: the value is a string the (unanchored) regex matches.
    IsMatch(Box<Expr>, String),
}

/// A map a function works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapPath {
    /// `attributes` (in the resource context, the resource's).
    Attributes,
    /// `resource.attributes` (read-only; a `merge_maps` source in item contexts).
    ResourceAttributes,
}

/// How `merge_maps` treats keys the target has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeStrategy {
    /// Adds only keys the target lacks.
    Insert,
    /// Changes only keys the target has.
    Update,
    /// Both.
    Upsert,
}

/// `replace_all_patterns`' mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternMode {
    /// Replace in string values.
    Value,
    /// Replace in keys.
    Key,
}

/// What a statement does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Function {
    /// `set(target, value)`; a value that is absent (`nil`, a missing attribute) does nothing.
    Set {
        /// `attributes["k"]`, `name`, `status.code`, `status.message`, `body`, `severity_text`.
        target: Path,
        /// The new value.
        value: Expr,
    },
    /// `delete_key(attributes, "key")`.
    DeleteKey {
        /// The map.
        map: MapPath,
        /// The key.
        key: String,
    },
    /// `delete_matching_keys(attributes, "regex")`.
    DeleteMatchingKeys {
        /// The map.
        map: MapPath,
        /// The regex (unanchored).
        pattern: String,
    },
    /// `keep_keys(attributes, ["a", "b"])`.
    KeepKeys {
        /// The map.
        map: MapPath,
        /// The keys kept.
        keys: Vec<String>,
    },
    /// `truncate_all(attributes, limit)`: string values cut to at most `limit` bytes (at a
    /// character boundary).
    TruncateAll {
        /// The map.
        map: MapPath,
        /// Bytes kept.
        limit: usize,
    },
    /// `limit(attributes, limit, ["priority", ...])`: at most `limit` attributes, keeping the
    /// priority keys first, then the others in order.
    Limit {
        /// The map.
        map: MapPath,
        /// Attributes kept.
        limit: usize,
        /// Keys kept before the others.
        priority: Vec<String>,
    },
    /// `replace_pattern(target, "regex", "replacement")` on a string value.
    ReplacePattern {
        /// The value.
        target: Path,
        /// The regex.
        pattern: String,
        /// The replacement (`$1`, `${name}` expand).
        replacement: String,
    },
    /// `replace_all_patterns(attributes, "value" | "key", "regex", "replacement")`.
    ReplaceAllPatterns {
        /// The map.
        map: MapPath,
        /// Keys or values.
        mode: PatternMode,
        /// The regex.
        pattern: String,
        /// The replacement.
        replacement: String,
    },
    /// `merge_maps(attributes, resource.attributes, "insert" | "update" | "upsert")`.
    MergeMaps {
        /// The map changed.
        target: MapPath,
        /// The map read.
        source: MapPath,
        /// Which keys change.
        strategy: MergeStrategy,
    },
    /// `rename(attributes, "from", "to")`: renames a key (replacing `to` if present).
    Rename {
        /// The map.
        map: MapPath,
        /// The old key.
        from: String,
        /// The new key.
        to: String,
    },
}

/// One checked statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// What it does.
    pub function: Function,
    /// `where ...`: it applies only to items the condition holds for.
    pub condition: Option<Expr>,
    /// The text, for messages.
    pub text: String,
}

// ---- lexer ----

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Double(f64),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Op(CmpOp),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Str(s) => write!(f, "{s:?}"),
            Tok::Int(i) => write!(f, "{i}"),
            Tok::Double(d) => write!(f, "{d}"),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::LBracket => f.write_str("`[`"),
            Tok::RBracket => f.write_str("`]`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::Dot => f.write_str("`.`"),
            Tok::Op(_) => f.write_str("a comparison"),
        }
    }
}

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, LangError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let col = i + 1;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => out.push((Tok::LParen, col)),
            b')' => out.push((Tok::RParen, col)),
            b'[' => out.push((Tok::LBracket, col)),
            b']' => out.push((Tok::RBracket, col)),
            b',' => out.push((Tok::Comma, col)),
            b'.' => out.push((Tok::Dot, col)),
            b'=' | b'!' | b'<' | b'>' => {
                let two = b.get(i + 1) == Some(&b'=');
                let op = match (c, two) {
                    (b'=', true) => CmpOp::Eq,
                    (b'!', true) => CmpOp::Ne,
                    (b'<', true) => CmpOp::Le,
                    (b'>', true) => CmpOp::Ge,
                    (b'<', false) => CmpOp::Lt,
                    (b'>', false) => CmpOp::Gt,
                    _ => return err(format!("at column {col}: expected `==` or `!=`")),
                };
                if two {
                    i += 1;
                }
                out.push((Tok::Op(op), col));
            }
            b'"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&c) = b.get(i) else {
                        return err(format!("at column {col}: unterminated string"));
                    };
                    match c {
                        b'"' => break,
                        b'\\' => {
                            let esc = b.get(i + 1).copied();
                            s.push(match esc {
                                Some(b'"') => '"',
                                Some(b'\\') => '\\',
                                Some(b'n') => '\n',
                                Some(b't') => '\t',
                                _ => {
                                    return err(format!(
                                        "at column {}: unknown escape (allowed: \\\" \\\\ \\n \\t)",
                                        i + 1
                                    ))
                                }
                            });
                            i += 2;
                        }
                        _ => {
                            // A whole UTF-8 character.
                            let ch = text[i..].chars().next().unwrap_or('\u{fffd}');
                            s.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                out.push((Tok::Str(s), col));
            }
            b'0'..=b'9' | b'-' => {
                i += 1;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'e') {
                    i += 1;
                }
                let s = &text[start..i];
                let tok = if s.contains(['.', 'e']) {
                    s.parse().map(Tok::Double).ok()
                } else {
                    s.parse().map(Tok::Int).ok()
                };
                let Some(tok) = tok else {
                    return err(format!("at column {col}: invalid number `{s}`"));
                };
                out.push((tok, col));
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push((Tok::Ident(text[start..i].to_string()), col));
                continue;
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return err(format!("at column {col}: unexpected character {ch:?}"));
            }
        }
        i += 1;
    }
    Ok(out)
}

// ---- parser ----

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    end: usize,
    context: Context,
    routing: bool,
}

/// A parsed operand: a path with its raw segments, or a value expression.
enum Operand {
    Expr(Expr),
    /// `attributes` without a key (a map, for functions).
    Map(MapPath),
}

impl Parser {
    fn new(text: &str, context: Context, routing: bool) -> Result<Parser, LangError> {
        Ok(Parser {
            toks: lex(text)?,
            pos: 0,
            end: text.len() + 1,
            context,
            routing,
        })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(_, c)| *c)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(t, _)| t.clone());
        self.pos += 1;
        t
    }

    fn unexpected<T>(&self, expected: &str) -> Result<T, LangError> {
        match self.peek() {
            Some(t) => err(format!(
                "at column {}: expected {expected}, found {t}",
                self.col()
            )),
            None => err(format!("expected {expected} at the end")),
        }
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), LangError> {
        if self.peek() == Some(&tok) {
            self.pos += 1;
            Ok(())
        } else {
            self.unexpected(what)
        }
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(s)) if s == word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, LangError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, LangError> {
        let mut left = self.not()?;
        while self.keyword("and") {
            let right = self.not()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, LangError> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        let left = self.value()?;
        if let Some(Tok::Op(op)) = self.peek().cloned() {
            self.pos += 1;
            let right = self.value()?;
            return Ok(Expr::Compare(Box::new(left), op, Box::new(right)));
        }
        Ok(left)
    }

    fn value(&mut self) -> Result<Expr, LangError> {
        match self.operand()? {
            Operand::Expr(e) => Ok(e),
            Operand::Map(_) => err(format!(
                "`attributes` is a map: write attributes[\"key\"] for one value (column {})",
                self.col()
            )),
        }
    }

    fn operand(&mut self) -> Result<Operand, LangError> {
        let col = self.col();
        match self.next() {
            Some(Tok::Str(s)) => Ok(Operand::Expr(Expr::Literal(Literal::String(s)))),
            Some(Tok::Int(i)) => Ok(Operand::Expr(Expr::Literal(Literal::Int(i)))),
            Some(Tok::Double(d)) => Ok(Operand::Expr(Expr::Literal(Literal::Double(d)))),
            Some(Tok::LParen) => {
                let e = self.or()?;
                self.expect(Tok::RParen, "`)`")?;
                Ok(Operand::Expr(e))
            }
            Some(Tok::Ident(word)) => self.word(word, col),
            _ => {
                self.pos -= 1;
                self.unexpected("a value, a path or `(`")
            }
        }
    }

    fn word(&mut self, word: String, col: usize) -> Result<Operand, LangError> {
        match word.as_str() {
            "true" => return Ok(Operand::Expr(Expr::Literal(Literal::Bool(true)))),
            "false" => return Ok(Operand::Expr(Expr::Literal(Literal::Bool(false)))),
            "nil" => return Ok(Operand::Expr(Expr::Literal(Literal::Nil))),
            "IsMatch" => {
                self.expect(Tok::LParen, "`(` after IsMatch")?;
                let target = self.value()?;
                self.expect(Tok::Comma, "`,`")?;
                let pattern = self.string("a regex string")?;
                check_regex(&pattern)?;
                self.expect(Tok::RParen, "`)`")?;
                return Ok(Operand::Expr(Expr::IsMatch(Box::new(target), pattern)));
            }
            _ => {}
        }
        if let Some(v) = enum_value(&word) {
            return Ok(Operand::Expr(Expr::Literal(Literal::Int(v))));
        }
        if word.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
            return err(format!(
                "at column {col}: unknown name `{word}` (conditions may call IsMatch; enums are SPAN_KIND_*, STATUS_CODE_*, SEVERITY_NUMBER_*)"
            ));
        }
        let mut segments = vec![word];
        while self.peek() == Some(&Tok::Dot) {
            self.pos += 1;
            match self.next() {
                Some(Tok::Ident(s)) => segments.push(s),
                _ => {
                    self.pos -= 1;
                    return self.unexpected("a name after `.`");
                }
            }
        }
        let key = if self.peek() == Some(&Tok::LBracket) {
            self.pos += 1;
            let k = self.string("a string key")?;
            self.expect(Tok::RBracket, "`]`")?;
            Some(k)
        } else {
            None
        };
        let joined = segments.join(".");
        let path = match (joined.as_str(), key) {
            ("attributes", None) => return Ok(Operand::Map(MapPath::Attributes)),
            ("resource.attributes", None) if self.context != Context::Resource => {
                return Ok(Operand::Map(MapPath::ResourceAttributes))
            }
            ("attributes", Some(k)) => Path::Attribute(k),
            ("resource.attributes", Some(k)) => Path::ResourceAttribute(k),
            ("name", None) => Path::Name,
            ("kind", None) => Path::Kind,
            ("status.code", None) => Path::StatusCode,
            ("status.message", None) => Path::StatusMessage,
            ("body", None) => Path::Body,
            ("severity_number", None) => Path::SeverityNumber,
            ("severity_text", None) => Path::SeverityText,
            ("metric.name", None) => Path::MetricName,
            ("trace.has_error", None) => Path::TraceHasError,
            ("time_unix_nano", None) => Path::TimeUnixNano,
            ("dropped_attributes_count", None) => Path::DroppedAttributesCount,
            ("span.name", None) => Path::SpanName,
            ("span.kind", None) => Path::SpanKind,
            ("span.status.code", None) => Path::SpanStatusCode,
            ("span.status.message", None) => Path::SpanStatusMessage,
            ("span.attributes", Some(k)) => Path::SpanAttribute(k),
            (other, key) => {
                let shown = match key {
                    Some(k) => format!("{other}[{k:?}]"),
                    None => other.to_string(),
                };
                return err(format!(
                    "at column {col}: unknown path `{shown}` (in the {} context: {})",
                    self.context.name(),
                    self.context.available()
                ));
            }
        };
        if !path.allowed_in(self.context, self.routing) {
            let hint = if path == Path::TraceHasError {
                "; trace.has_error is for routing traces".to_string()
            } else {
                String::new()
            };
            return err(format!(
                "path `{path}` is not available in the {} context (available: {}){hint}",
                self.context.name(),
                self.context.available()
            ));
        }
        Ok(Operand::Expr(Expr::Path(path)))
    }

    fn string(&mut self, what: &str) -> Result<String, LangError> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => self.unexpected(what),
        }
    }

    fn count(&mut self) -> Result<usize, LangError> {
        match self.peek().cloned() {
            Some(Tok::Int(i)) if i >= 0 => {
                self.pos += 1;
                Ok(i as usize)
            }
            _ => self.unexpected("a non-negative integer"),
        }
    }

    fn string_list(&mut self) -> Result<Vec<String>, LangError> {
        self.expect(Tok::LBracket, "a list like [\"a\", \"b\"]")?;
        let mut out = Vec::new();
        if self.peek() == Some(&Tok::RBracket) {
            self.pos += 1;
            return Ok(out);
        }
        loop {
            out.push(self.string("a string")?);
            match self.next() {
                Some(Tok::Comma) => {}
                Some(Tok::RBracket) => return Ok(out),
                _ => {
                    self.pos -= 1;
                    return self.unexpected("`,` or `]`");
                }
            }
        }
    }

    /// A map a function changes: `attributes`.
    fn map(&mut self) -> Result<MapPath, LangError> {
        match self.operand()? {
            Operand::Map(MapPath::Attributes) => Ok(MapPath::Attributes),
            Operand::Map(MapPath::ResourceAttributes) => err(format!(
                "resource.attributes is read-only in the {} context: change it in the resource context",
                self.context.name()
            )),
            Operand::Expr(_) => err("the first argument must be the map `attributes`"),
        }
    }

    fn comma(&mut self) -> Result<(), LangError> {
        self.expect(Tok::Comma, "`,`")
    }

    fn function(&mut self) -> Result<Function, LangError> {
        let col = self.col();
        let Some(Tok::Ident(name)) = self.next() else {
            self.pos -= 1;
            return self.unexpected("a function name");
        };
        self.expect(Tok::LParen, "`(`")?;
        let f = match name.as_str() {
            "set" => {
                let target = self.target()?;
                self.comma()?;
                let value = self.value()?;
                if !matches!(value, Expr::Literal(_) | Expr::Path(_)) {
                    return err("set takes a constant or a path as its value");
                }
                Function::Set { target, value }
            }
            "delete_key" => {
                let map = self.map()?;
                self.comma()?;
                Function::DeleteKey {
                    map,
                    key: self.string("a key string")?,
                }
            }
            "delete_matching_keys" => {
                let map = self.map()?;
                self.comma()?;
                let pattern = self.string("a regex string")?;
                check_regex(&pattern)?;
                Function::DeleteMatchingKeys { map, pattern }
            }
            "keep_keys" => {
                let map = self.map()?;
                self.comma()?;
                Function::KeepKeys {
                    map,
                    keys: self.string_list()?,
                }
            }
            "truncate_all" => {
                let map = self.map()?;
                self.comma()?;
                Function::TruncateAll {
                    map,
                    limit: self.count()?,
                }
            }
            "limit" => {
                let map = self.map()?;
                self.comma()?;
                let limit = self.count()?;
                let priority = if self.peek() == Some(&Tok::Comma) {
                    self.pos += 1;
                    self.string_list()?
                } else {
                    Vec::new()
                };
                Function::Limit {
                    map,
                    limit,
                    priority,
                }
            }
            "replace_pattern" => {
                let target = self.target()?;
                self.comma()?;
                let pattern = self.string("a regex string")?;
                check_regex(&pattern)?;
                self.comma()?;
                let replacement = self.string("a replacement string")?;
                Function::ReplacePattern {
                    target,
                    pattern,
                    replacement,
                }
            }
            "replace_all_patterns" => {
                let map = self.map()?;
                self.comma()?;
                let mode = match self.string("\"value\" or \"key\"")?.as_str() {
                    "value" => PatternMode::Value,
                    "key" => PatternMode::Key,
                    other => {
                        return err(format!(
                            "replace_all_patterns mode must be \"value\" or \"key\", not {other:?}"
                        ))
                    }
                };
                self.comma()?;
                let pattern = self.string("a regex string")?;
                check_regex(&pattern)?;
                self.comma()?;
                let replacement = self.string("a replacement string")?;
                Function::ReplaceAllPatterns {
                    map,
                    mode,
                    pattern,
                    replacement,
                }
            }
            "merge_maps" => {
                let target = self.map()?;
                self.comma()?;
                let source = match self.operand()? {
                    Operand::Map(m) => m,
                    Operand::Expr(_) => {
                        return err("merge_maps reads a map: resource.attributes or attributes")
                    }
                };
                self.comma()?;
                let strategy = match self.string("\"insert\", \"update\" or \"upsert\"")?.as_str() {
                    "insert" => MergeStrategy::Insert,
                    "update" => MergeStrategy::Update,
                    "upsert" => MergeStrategy::Upsert,
                    other => {
                        return err(format!(
                            "merge_maps strategy must be \"insert\", \"update\" or \"upsert\", not {other:?}"
                        ))
                    }
                };
                Function::MergeMaps {
                    target,
                    source,
                    strategy,
                }
            }
            "rename" => {
                let map = self.map()?;
                self.comma()?;
                let from = self.string("the old key")?;
                self.comma()?;
                let to = self.string("the new key")?;
                Function::Rename { map, from, to }
            }
            other => {
                return err(format!(
                    "at column {col}: unknown function `{other}` (allowed: {})",
                    FUNCTIONS.join(", ")
                ))
            }
        };
        self.expect(Tok::RParen, "`)`")?;
        Ok(f)
    }

    /// A path a statement may write.
    fn target(&mut self) -> Result<Path, LangError> {
        let path = match self.value()? {
            Expr::Path(p) => p,
            _ => return err("the first argument must be a path such as attributes[\"key\"]"),
        };
        match (&path, self.context) {
            (Path::Attribute(_), _)
            | (Path::Name | Path::StatusCode | Path::StatusMessage, Context::Span)
            | (Path::Name, Context::SpanEvent)
            | (Path::Body | Path::SeverityText, Context::Log) => Ok(path),
            (_, Context::SpanEvent) => err(format!(
                "{path} cannot be changed in the spanevent context (set changes name and attributes[\"key\"]; span.* and resource.* are read-only here)"
            )),
            (Path::ResourceAttribute(_), _) => err(format!(
                "{path} is read-only in the {} context: change it in the resource context",
                self.context.name()
            )),
            _ => err(format!("{path} cannot be changed")),
        }
    }
}

/// The functions a statement may call.
pub const FUNCTIONS: &[&str] = &[
    "set",
    "delete_key",
    "delete_matching_keys",
    "keep_keys",
    "truncate_all",
    "limit",
    "replace_pattern",
    "replace_all_patterns",
    "merge_maps",
    "rename",
];

fn check_regex(pattern: &str) -> Result<(), LangError> {
    regex::Regex::new(pattern).map(drop).map_err(|e| LangError {
        message: format!(
            "invalid regex {pattern:?}: {}",
            e.to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim_start_matches("error: ")
        ),
    })
}

/// The value of an OTLP enum constant (`SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`,
/// `SEVERITY_NUMBER_WARN`, ...).
pub fn enum_value(name: &str) -> Option<i64> {
    const KINDS: [&str; 6] = [
        "UNSPECIFIED",
        "INTERNAL",
        "SERVER",
        "CLIENT",
        "PRODUCER",
        "CONSUMER",
    ];
    const STATUS: [&str; 3] = ["UNSET", "OK", "ERROR"];
    const SEVERITY: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    if let Some(k) = name.strip_prefix("SPAN_KIND_") {
        return KINDS.iter().position(|x| *x == k).map(|i| i as i64);
    }
    if let Some(s) = name.strip_prefix("STATUS_CODE_") {
        return STATUS.iter().position(|x| *x == s).map(|i| i as i64);
    }
    let s = name.strip_prefix("SEVERITY_NUMBER_")?;
    if s == "UNSPECIFIED" {
        return Some(0);
    }
    let (base, n) = match s.as_bytes().last() {
        Some(d @ b'2'..=b'4') => (&s[..s.len() - 1], i64::from(d - b'0')),
        _ => (s, 1),
    };
    SEVERITY
        .iter()
        .position(|x| *x == base)
        .map(|i| i as i64 * 4 + n)
}

/// Parses a condition (a `where` clause, a route) for `context`; `routing` allows
/// `trace.has_error`.
pub fn parse_condition(text: &str, context: Context, routing: bool) -> Result<Expr, LangError> {
    let mut p = Parser::new(text, context, routing)?;
    if p.toks.is_empty() {
        return err("empty condition");
    }
    let e = p.or()?;
    if p.peek().is_some() {
        return p.unexpected("`and`, `or` or the end");
    }
    check_boolean(&e)?;
    Ok(e)
}

/// A condition must be true or false: a comparison, `IsMatch`, `not`, `and`, `or`, a boolean
/// path or constant.
fn check_boolean(e: &Expr) -> Result<(), LangError> {
    match e {
        Expr::Literal(Literal::Bool(_)) | Expr::Compare(..) | Expr::IsMatch(..) => Ok(()),
        Expr::Path(
            Path::TraceHasError
            | Path::Attribute(_)
            | Path::ResourceAttribute(_)
            | Path::SpanAttribute(_),
        ) => Ok(()),
        Expr::Not(e) => check_boolean(e),
        Expr::And(a, b) | Expr::Or(a, b) => {
            check_boolean(a)?;
            check_boolean(b)
        }
        other => err(format!(
            "{} is not a condition (compare it, e.g. `== \"x\"`)",
            describe(other)
        )),
    }
}

fn describe(e: &Expr) -> String {
    match e {
        Expr::Path(p) => format!("`{p}`"),
        Expr::Literal(l) => format!("the constant {l:?}"),
        _ => "this expression".into(),
    }
}

/// Parses one statement, `function(args) [where condition]`, for `context`.
pub fn parse_statement(text: &str, context: Context) -> Result<Statement, LangError> {
    let mut p = Parser::new(text, context, false)?;
    let function = p.function()?;
    let condition = if p.keyword("where") {
        let e = p.or()?;
        check_boolean(&e)?;
        Some(e)
    } else {
        None
    };
    if p.peek().is_some() {
        return p.unexpected("`where` or the end");
    }
    Ok(Statement {
        function,
        condition,
        text: text.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(k: &str) -> Box<Expr> {
        Box::new(Expr::Path(Path::Attribute(k.into())))
    }

    fn s(v: &str) -> Box<Expr> {
        Box::new(Expr::Literal(Literal::String(v.into())))
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let e = parse_condition(
            r#"attributes["a"] == "1" or not attributes["b"] == "2" and trace.has_error"#,
            Context::Span,
            true,
        )
        .unwrap();
        assert_eq!(
            e,
            Expr::Or(
                Box::new(Expr::Compare(attr("a"), CmpOp::Eq, s("1"))),
                Box::new(Expr::And(
                    Box::new(Expr::Not(Box::new(Expr::Compare(
                        attr("b"),
                        CmpOp::Eq,
                        s("2")
                    )))),
                    Box::new(Expr::Path(Path::TraceHasError))
                ))
            )
        );
    }

    #[test]
    fn enums_are_integers() {
        assert_eq!(enum_value("SPAN_KIND_SERVER"), Some(2));
        assert_eq!(enum_value("STATUS_CODE_ERROR"), Some(2));
        assert_eq!(enum_value("SEVERITY_NUMBER_INFO"), Some(9));
        assert_eq!(enum_value("SEVERITY_NUMBER_WARN3"), Some(15));
        assert_eq!(enum_value("SEVERITY_NUMBER_FATAL4"), Some(24));
        assert_eq!(enum_value("SPAN_KIND_NOPE"), None);
        let e = parse_condition("kind >= SPAN_KIND_SERVER", Context::Span, false).unwrap();
        assert_eq!(
            e,
            Expr::Compare(
                Box::new(Expr::Path(Path::Kind)),
                CmpOp::Ge,
                Box::new(Expr::Literal(Literal::Int(2)))
            )
        );
    }

    #[test]
    fn errors_say_what_and_where() {
        let cases = [
            (
                r#"attributes["a"] = "b""#,
                Context::Span,
                "at column 17: expected `==` or `!=`",
            ),
            (
                r#"attributes["a"] == "b"#,
                Context::Span,
                "at column 20: unterminated string",
            ),
            (
                "name == ",
                Context::Span,
                "expected a value, a path or `(` at the end",
            ),
            (
                "severity_number > 3",
                Context::Span,
                "path `severity_number` is not available in the span context",
            ),
            (
                "trace.has_error",
                Context::Span,
                "trace.has_error is for routing traces",
            ),
            (
                "spanname == \"x\"",
                Context::Span,
                "at column 1: unknown path `spanname`",
            ),
            ("name", Context::Span, "`name` is not a condition"),
            (
                r#"IsMatch(name, "(")"#,
                Context::Span,
                "invalid regex \"(\"",
            ),
            ("Foo(name)", Context::Span, "unknown name `Foo`"),
            (
                r#"name == "a" "b""#,
                Context::Span,
                "expected `and`, `or` or the end, found \"b\"",
            ),
        ];
        for (text, ctx, want) in cases {
            let got = parse_condition(text, ctx, false).unwrap_err().message;
            assert!(got.contains(want), "{text}: {got}");
        }
        let statements = [
            ("sett(name, \"x\")", "unknown function `sett`"),
            (
                "set(resource.attributes[\"a\"], \"x\")",
                "read-only in the span context",
            ),
            ("set(kind, 1)", "kind cannot be changed"),
            (
                "delete_key(name, \"a\")",
                "first argument must be the map `attributes`",
            ),
            ("keep_keys(attributes, \"a\")", "expected a list like"),
            ("truncate_all(attributes, -1)", "non-negative integer"),
            (
                "set(name, \"x\") when name == \"y\"",
                "expected `where` or the end",
            ),
            (
                "replace_all_patterns(attributes, \"both\", \"a\", \"b\")",
                "mode must be",
            ),
        ];
        for (text, want) in statements {
            let got = parse_statement(text, Context::Span).unwrap_err().message;
            assert!(got.contains(want), "{text}: {got}");
        }
    }

    #[test]
    fn every_function_parses() {
        let ok = [
            r#"set(attributes["a"], "b") where name == "x""#,
            r#"set(attributes["svc"], resource.attributes["service.name"])"#,
            r#"set(status.code, STATUS_CODE_ERROR) where attributes["http.status_code"] >= 500"#,
            r#"delete_key(attributes, "a")"#,
            r#"delete_matching_keys(attributes, "^tmp\\.")"#,
            r#"keep_keys(attributes, ["a", "b"])"#,
            r#"keep_keys(attributes, [])"#,
            r#"truncate_all(attributes, 10)"#,
            r#"limit(attributes, 3, ["a"])"#,
            r#"limit(attributes, 3)"#,
            r#"replace_pattern(name, "\\d+", "N")"#,
            r#"replace_all_patterns(attributes, "value", "secret=\\w+", "secret=***")"#,
            r#"rename(attributes, "a", "b") where IsMatch(name, "^GET")"#,
            r#"merge_maps(attributes, resource.attributes, "insert")"#,
        ];
        for text in ok {
            let st = parse_statement(text, Context::Span).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(st.text, text);
        }
        let st = parse_statement(
            r#"set(body, "x") where severity_number < SEVERITY_NUMBER_WARN"#,
            Context::Log,
        )
        .unwrap();
        assert!(matches!(
            st.function,
            Function::Set {
                target: Path::Body,
                ..
            }
        ));
        parse_statement(
            r#"set(attributes["x"], 1) where metric.name == "m""#,
            Context::DataPoint,
        )
        .unwrap();
        parse_statement(r#"delete_key(attributes, "host.name")"#, Context::Resource).unwrap();
    }

    #[test]
    fn span_event_paths_and_what_they_may_change() {
        for text in [
            r#"set(attributes["k"], span.attributes["a"]) where span.name == "x" and span.kind == SPAN_KIND_SERVER"#,
            r#"set(name, "error") where name == "exception" and time_unix_nano > 0 and dropped_attributes_count == 0"#,
            r#"delete_key(attributes, "a") where span.status.code == STATUS_CODE_ERROR or span.status.message == "m""#,
            r#"merge_maps(attributes, resource.attributes, "upsert") where span.attributes["b"]"#,
            r#"replace_pattern(name, "a", "b")"#,
        ] {
            parse_statement(text, Context::SpanEvent).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        let cases = [
            (
                "set(time_unix_nano, 1)",
                Context::SpanEvent,
                "time_unix_nano cannot be changed in the spanevent context",
            ),
            (
                "set(span.name, \"x\")",
                Context::SpanEvent,
                "span.name cannot be changed in the spanevent context",
            ),
            (
                "set(attributes[\"a\"], kind)",
                Context::SpanEvent,
                "path `kind` is not available in the spanevent context",
            ),
            (
                "set(attributes[\"a\"], span.trace_id)",
                Context::SpanEvent,
                "unknown path `span.trace_id` (in the spanevent context: ",
            ),
            (
                "set(attributes[\"a\"], span.name)",
                Context::Span,
                "path `span.name` is not available in the span context",
            ),
        ];
        for (text, context, want) in cases {
            let got = parse_statement(text, context).unwrap_err().message;
            assert!(got.contains(want), "{text}: {got}");
        }
        let got = parse_statement("set(attributes[\"a\"], span.trace_id)", Context::SpanEvent)
            .unwrap_err()
            .message;
        assert!(
            got.contains("not supported: instrumentation_scope.*"),
            "{got}"
        );
    }

    #[test]
    fn strings_keep_escapes_and_unicode() {
        let e = parse_condition(r#"name == "a\"b\\ é""#, Context::Span, false).unwrap();
        assert_eq!(
            e,
            Expr::Compare(Box::new(Expr::Path(Path::Name)), CmpOp::Eq, s("a\"b\\ é"))
        );
    }
}
