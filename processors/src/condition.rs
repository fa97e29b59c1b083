//! Conditions of the statement language ([`shardtel_config::ottl`]) compiled once (regexes
//! built, enums resolved) and evaluated on the wire views of an item: nothing is decoded but
//! the fields a condition names, nothing is allocated.

use regex::Regex;
use shardtel_config::ottl::{CmpOp, Expr, Literal, Path};
use shardtel_protocol::span::AnyValueRef;
use shardtel_protocol::wire::{Reader, Value};

/// A value a path or constant yields.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Val<'a> {
    /// A string (bytes that were not UTF-8 compare as bytes).
    Str(&'a [u8]),
    /// An integer (also enums: kind, status code, severity number).
    Int(i64),
    /// A double.
    Double(f64),
    /// A boolean.
    Bool(bool),
    /// Absent.
    Nil,
    /// Bytes, arrays and maps: equal to nothing.
    Other,
}

impl<'a> From<AnyValueRef<'a>> for Val<'a> {
    fn from(v: AnyValueRef<'a>) -> Val<'a> {
        match v {
            AnyValueRef::String(s) => Val::Str(s.as_bytes()),
            AnyValueRef::Bool(b) => Val::Bool(b),
            AnyValueRef::Int(i) => Val::Int(i),
            AnyValueRef::Double(d) => Val::Double(d),
            AnyValueRef::Empty => Val::Nil,
            AnyValueRef::Bytes(_) | AnyValueRef::Array(_) | AnyValueRef::KvList(_) => Val::Other,
        }
    }
}

impl Val<'_> {
    fn number(&self) -> Option<f64> {
        match *self {
            Val::Int(i) => Some(i as f64),
            Val::Double(d) => Some(d),
            _ => None,
        }
    }
}

fn equal(a: Val<'_>, b: Val<'_>) -> bool {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => x == y,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Nil, Val::Nil) => true,
        _ => match (a.number(), b.number()) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

fn ordering(a: Val<'_>, b: Val<'_>) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(&y)),
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        _ => a.number()?.partial_cmp(&b.number()?),
    }
}

/// Where a condition reads its paths.
pub trait Fields {
    /// The value of `path` for the current item (`Nil` when absent).
    fn get(&self, path: &Path) -> Val<'_>;
}

#[derive(Debug)]
enum Operand {
    Const(ConstVal),
    Path(Path),
}

#[derive(Debug)]
enum ConstVal {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Nil,
}

impl ConstVal {
    fn val(&self) -> Val<'_> {
        match self {
            ConstVal::Str(s) => Val::Str(s.as_bytes()),
            ConstVal::Int(i) => Val::Int(*i),
            ConstVal::Double(d) => Val::Double(*d),
            ConstVal::Bool(b) => Val::Bool(*b),
            ConstVal::Nil => Val::Nil,
        }
    }
}

impl Operand {
    fn compile(e: &Expr) -> Operand {
        match e {
            Expr::Path(p) => Operand::Path(p.clone()),
            Expr::Literal(l) => Operand::Const(match l {
                Literal::String(s) => ConstVal::Str(s.clone()),
                Literal::Int(i) => ConstVal::Int(*i),
                Literal::Double(d) => ConstVal::Double(*d),
                Literal::Bool(b) => ConstVal::Bool(*b),
                Literal::Nil => ConstVal::Nil,
            }),
            // Parenthesised conditions as operands are booleans; the parser only lets
            // comparisons take values, so evaluate them as a constant false value.
            _ => Operand::Const(ConstVal::Nil),
        }
    }

    fn val<'a, F: Fields + ?Sized>(&'a self, f: &'a F) -> Val<'a> {
        match self {
            Operand::Const(c) => c.val(),
            Operand::Path(p) => f.get(p),
        }
    }
}

/// A compiled condition.
#[derive(Debug)]
pub enum Condition {
    /// A constant.
    Const(bool),
    /// A comparison.
    Compare(Box<(Operand2, CmpOp)>),
    /// `IsMatch(value, regex)`.
    IsMatch(Box<(Operand2, Regex)>),
    /// A path that is true (a boolean attribute, `trace.has_error`).
    Truthy(Path),
    /// `not`.
    Not(Box<Condition>),
    /// `and`.
    And(Box<Condition>, Box<Condition>),
    /// `or`.
    Or(Box<Condition>, Box<Condition>),
}

/// The operands of a comparison (private representation).
#[derive(Debug)]
pub struct Operand2(Operand, Operand);

impl Condition {
    /// Compiles a checked condition (regexes were checked at start-up, so they compile).
    pub fn compile(e: &Expr) -> Result<Condition, regex::Error> {
        Ok(match e {
            Expr::Literal(Literal::Bool(b)) => Condition::Const(*b),
            Expr::Literal(_) => Condition::Const(false),
            Expr::Path(p) => Condition::Truthy(p.clone()),
            Expr::Not(e) => Condition::Not(Box::new(Condition::compile(e)?)),
            Expr::And(a, b) => Condition::And(
                Box::new(Condition::compile(a)?),
                Box::new(Condition::compile(b)?),
            ),
            Expr::Or(a, b) => Condition::Or(
                Box::new(Condition::compile(a)?),
                Box::new(Condition::compile(b)?),
            ),
            Expr::Compare(a, op, b) => Condition::Compare(Box::new((
                Operand2(Operand::compile(a), Operand::compile(b)),
                *op,
            ))),
            Expr::IsMatch(v, pattern) => Condition::IsMatch(Box::new((
                Operand2(Operand::compile(v), Operand::Const(ConstVal::Nil)),
                Regex::new(pattern)?,
            ))),
        })
    }

    /// Whether the condition holds for the item `f` reads.
    pub fn eval<F: Fields + ?Sized>(&self, f: &F) -> bool {
        match self {
            Condition::Const(b) => *b,
            Condition::Truthy(p) => f.get(p) == Val::Bool(true),
            Condition::Not(c) => !c.eval(f),
            Condition::And(a, b) => a.eval(f) && b.eval(f),
            Condition::Or(a, b) => a.eval(f) || b.eval(f),
            Condition::Compare(c) => {
                let (Operand2(a, b), op) = &**c;
                let (a, b) = (a.val(f), b.val(f));
                use std::cmp::Ordering::*;
                match op {
                    CmpOp::Eq => equal(a, b),
                    CmpOp::Ne => !equal(a, b),
                    CmpOp::Lt => ordering(a, b) == Some(Less),
                    CmpOp::Le => matches!(ordering(a, b), Some(Less | Equal)),
                    CmpOp::Gt => ordering(a, b) == Some(Greater),
                    CmpOp::Ge => matches!(ordering(a, b), Some(Greater | Equal)),
                }
            }
            Condition::IsMatch(m) => {
                let (Operand2(v, _), re) = &**m;
                match v.val(f) {
                    Val::Str(s) => std::str::from_utf8(s).is_ok_and(|s| re.is_match(s)),
                    _ => false,
                }
            }
        }
    }

    /// Whether the condition reads `trace.has_error`.
    pub fn uses_trace(&self) -> bool {
        match self {
            Condition::Truthy(p) => *p == Path::TraceHasError,
            Condition::Compare(c) => {
                let Operand2(a, b) = &c.0;
                [a, b]
                    .iter()
                    .any(|o| matches!(o, Operand::Path(Path::TraceHasError)))
            }
            Condition::Not(c) => c.uses_trace(),
            Condition::And(a, b) | Condition::Or(a, b) => a.uses_trace() || b.uses_trace(),
            _ => false,
        }
    }
}

/// The first attribute named `key` among the `KeyValue` fields `field` of `msg` (the item's
/// bytes, before any change), read without copying.
pub fn raw_attribute<'a>(msg: &'a [u8], field: u32, key: &[u8]) -> Option<AnyValueRef<'a>> {
    let mut r = Reader::new(msg);
    while let Some(Ok((k, v))) = r.next_field() {
        let (true, Value::Len(b)) = (k.field == field, v) else {
            continue;
        };
        let mut kr = Reader::nested(msg, b);
        let mut found: &[u8] = &[];
        let mut value = None;
        while let Some(Ok((kk, vv))) = kr.next_field() {
            match (kk.field, vv) {
                (1, Value::Len(x)) => found = &msg[x],
                (2, Value::Len(x)) => value = Some(x),
                _ => {}
            }
        }
        if found == key {
            return Some(value.map_or(AnyValueRef::Empty, |x| AnyValueRef::parse(&msg[x])));
        }
    }
    None
}

/// The scalar fields of a span a condition may read, in one pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpanScalars<'a> {
    /// `name`.
    pub name: &'a [u8],
    /// `kind`.
    pub kind: i32,
    /// `status.code`.
    pub status_code: i32,
    /// `status.message`.
    pub status_message: &'a [u8],
}

impl<'a> SpanScalars<'a> {
    /// Reads them from a `Span` body.
    pub fn read(span: &'a [u8]) -> SpanScalars<'a> {
        let f = shardtel_protocol::span::SpanView::new(span).fields();
        SpanScalars {
            name: f.name,
            kind: f.kind,
            status_code: f.status_code,
            status_message: f.status_message,
        }
    }
}

/// A span as a condition sees it: its bytes, its resource and whether its trace has an error.
pub struct SpanFields<'a> {
    /// The `Span` body.
    pub span: &'a [u8],
    /// Its scalar fields.
    pub scalars: SpanScalars<'a>,
    /// The `Resource` body of its `ResourceSpans`.
    pub resource: &'a [u8],
    /// Some span of the trace (of those seen together) has status ERROR.
    pub trace_has_error: bool,
}

impl Fields for SpanFields<'_> {
    fn get(&self, path: &Path) -> Val<'_> {
        match path {
            Path::Attribute(k) => {
                raw_attribute(self.span, 9, k.as_bytes()).map_or(Val::Nil, Val::from)
            }
            Path::ResourceAttribute(k) => {
                raw_attribute(self.resource, 1, k.as_bytes()).map_or(Val::Nil, Val::from)
            }
            Path::Name => Val::Str(self.scalars.name),
            Path::Kind => Val::Int(i64::from(self.scalars.kind)),
            Path::StatusCode => Val::Int(i64::from(self.scalars.status_code)),
            Path::StatusMessage => Val::Str(self.scalars.status_message),
            Path::TraceHasError => Val::Bool(self.trace_has_error),
            _ => Val::Nil,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardtel_config::ottl::{parse_condition, Context};

    /// Fields from a table (a model of an item).
    struct Table(Vec<(Path, OwnedVal)>);

    #[derive(Clone, Debug)]
    enum OwnedVal {
        Str(String),
        Int(i64),
        Double(f64),
        Bool(bool),
    }

    impl Fields for Table {
        fn get(&self, path: &Path) -> Val<'_> {
            match self.0.iter().find(|(p, _)| p == path) {
                Some((_, OwnedVal::Str(s))) => Val::Str(s.as_bytes()),
                Some((_, OwnedVal::Int(i))) => Val::Int(*i),
                Some((_, OwnedVal::Double(d))) => Val::Double(*d),
                Some((_, OwnedVal::Bool(b))) => Val::Bool(*b),
                None => Val::Nil,
            }
        }
    }

    fn eval(text: &str, t: &Table) -> bool {
        let e = parse_condition(text, Context::Span, true).unwrap();
        Condition::compile(&e).unwrap().eval(t)
    }

    #[test]
    fn comparisons_follow_ottl() {
        let t = Table(vec![
            (Path::Attribute("env".into()), OwnedVal::Str("dev".into())),
            (Path::Attribute("code".into()), OwnedVal::Int(503)),
            (Path::Attribute("ratio".into()), OwnedVal::Double(0.5)),
            (Path::Attribute("vip".into()), OwnedVal::Bool(true)),
            (Path::StatusCode, OwnedVal::Int(2)),
            (Path::Kind, OwnedVal::Int(2)),
            (Path::Name, OwnedVal::Str("GET /a".into())),
        ]);
        let cases = [
            (r#"attributes["env"] == "dev""#, true),
            (r#"attributes["env"] != "dev""#, false),
            (r#"attributes["env"] == "prod""#, false),
            (r#"attributes["missing"] == nil"#, true),
            (r#"attributes["env"] == nil"#, false),
            (r#"attributes["missing"] != "x""#, true),
            (r#"attributes["code"] >= 500"#, true),
            (r#"attributes["code"] < 500"#, false),
            (r#"attributes["code"] == 503.0"#, true),
            (r#"attributes["ratio"] < 1"#, true),
            (r#"attributes["code"] == "503""#, false),
            (r#"attributes["env"] > 1"#, false),
            (r#"attributes["env"] < 1"#, false),
            (r#"attributes["env"] < "e""#, true),
            (r#"attributes["vip"]"#, true),
            (r#"attributes["env"]"#, false),
            ("status.code == STATUS_CODE_ERROR", true),
            ("kind == SPAN_KIND_CLIENT", false),
            (r#"IsMatch(name, "^GET ")"#, true),
            (r#"IsMatch(attributes["code"], "5")"#, false),
            (r#"not IsMatch(name, "^POST")"#, true),
            (
                r#"(attributes["env"] == "prod" or kind == SPAN_KIND_SERVER) and attributes["vip"]"#,
                true,
            ),
            ("true and not false", true),
        ];
        for (text, want) in cases {
            assert_eq!(eval(text, &t), want, "{text}");
        }
    }

    #[test]
    fn raw_attribute_reads_the_wire() {
        use prost::Message;
        use shardtel_protocol::proto::common::v1::{any_value, AnyValue, KeyValue};
        use shardtel_protocol::proto::trace::v1::Span;
        let span = Span {
            name: "n".into(),
            attributes: vec![
                KeyValue {
                    key: "a".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(7)),
                    }),
                    ..Default::default()
                },
                KeyValue {
                    key: "b".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("x".into())),
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let bytes = span.encode_to_vec();
        assert_eq!(raw_attribute(&bytes, 9, b"a"), Some(AnyValueRef::Int(7)));
        assert_eq!(
            raw_attribute(&bytes, 9, b"b"),
            Some(AnyValueRef::String("x"))
        );
        assert_eq!(raw_attribute(&bytes, 9, b"c"), None);
        let f = SpanFields {
            span: &bytes,
            scalars: SpanScalars::read(&bytes),
            resource: &[],
            trace_has_error: false,
        };
        let e = parse_condition(
            r#"attributes["a"] == 7 and name == "n""#,
            Context::Span,
            true,
        )
        .unwrap();
        assert!(Condition::compile(&e).unwrap().eval(&f));
    }
}
