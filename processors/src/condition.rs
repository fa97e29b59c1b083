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

    /// Byte strings one of which occurs in an item's own bytes (a span's or a log record's
    /// body, as the scan found it) whenever the condition holds for that item: when none of
    /// them occurs in a batch's items, the condition holds for none of them and need not be
    /// evaluated. `None` when no such set is known (the condition may hold for an item whose
    /// bytes contain none of them: `attributes["k"] == nil`, `not`, resource or integer paths,
    /// two paths compared).
    ///
    /// Sound because a string compared equal is the string's own bytes in the item (values are
    /// compared byte for byte), and an attribute that compares equal, ordered, matching or true
    /// exists, so its key's bytes are in the item. Empty strings are never witnesses (they
    /// occur everywhere).
    pub fn witnesses(&self) -> Option<Vec<Vec<u8>>> {
        match self {
            Condition::Const(false) => Some(Vec::new()),
            Condition::Const(true) | Condition::Not(_) => None,
            Condition::Truthy(p) => item_key(p).map(|k| vec![k]),
            Condition::IsMatch(m) => match &(m.0).0 {
                Operand::Path(p) => item_key(p).map(|k| vec![k]),
                Operand::Const(_) => None,
            },
            Condition::Compare(c) => {
                let (Operand2(a, b), op) = &**c;
                let (path, value) = match (a, b) {
                    (Operand::Path(p), Operand::Const(v))
                    | (Operand::Const(v), Operand::Path(p)) => (p, v),
                    _ => return None,
                };
                let ordered = matches!(op, CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge);
                let witness = match (op, value) {
                    // Absent reads as nil: equal to nil, unequal to everything else.
                    (CmpOp::Ne, _) | (CmpOp::Eq, ConstVal::Nil) => None,
                    // A string read from the item's bytes, equal to a constant.
                    (CmpOp::Eq, ConstVal::Str(s)) if !s.is_empty() && in_item_bytes(path) => {
                        Some(s.as_bytes().to_vec())
                    }
                    _ if ordered || *op == CmpOp::Eq => item_key(path),
                    _ => None,
                };
                witness.filter(|w| !w.is_empty()).map(|w| vec![w])
            }
            Condition::And(a, b) => match (a.witnesses(), b.witnesses()) {
                (Some(x), Some(y)) => Some(if x.len() <= y.len() { x } else { y }),
                (x, y) => x.or(y),
            },
            Condition::Or(a, b) => {
                let mut x = a.witnesses()?;
                x.extend(b.witnesses()?);
                Some(x)
            }
        }
    }

    /// Whether every path the condition reads is a resource attribute: it has one value for
    /// all the items of a resource.
    pub fn reads_only_resource(&self) -> bool {
        let path = |o: &Operand| match o {
            Operand::Path(p) => matches!(p, Path::ResourceAttribute(_)),
            Operand::Const(_) => true,
        };
        match self {
            Condition::Const(_) => true,
            Condition::Truthy(p) => matches!(p, Path::ResourceAttribute(_)),
            Condition::Compare(c) => path(&(c.0).0) && path(&(c.0).1),
            Condition::IsMatch(m) => path(&(m.0).0),
            Condition::Not(c) => c.reads_only_resource(),
            Condition::And(a, b) | Condition::Or(a, b) => {
                a.reads_only_resource() && b.reads_only_resource()
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

/// The key of an attribute of the item itself (not of its resource), whose bytes are in the
/// item's. (A span event's bytes, and so its span's, are inside its span's: the witnesses of a
/// `spanevent` condition are in the span.)
fn item_key(p: &Path) -> Option<Vec<u8>> {
    match p {
        Path::Attribute(k) | Path::SpanAttribute(k) if !k.is_empty() => Some(k.as_bytes().to_vec()),
        _ => None,
    }
}

/// Whether `p` reads a string from the item's own bytes (not its resource's or its metric's),
/// or, for a span event, from its span's.
fn in_item_bytes(p: &Path) -> bool {
    match p {
        Path::Attribute(_)
        | Path::Name
        | Path::StatusMessage
        | Path::Body
        | Path::SeverityText
        | Path::SpanAttribute(_)
        | Path::SpanName
        | Path::SpanStatusMessage => true,
        Path::ResourceAttribute(_)
        | Path::Kind
        | Path::StatusCode
        | Path::SeverityNumber
        | Path::MetricName
        | Path::TraceHasError
        | Path::TimeUnixNano
        | Path::DroppedAttributesCount
        | Path::SpanKind
        | Path::SpanStatusCode => false,
    }
}

pub use shardtel_protocol::span::find_attribute as raw_attribute;

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
/// Its scalar fields are read from the bytes the first time a condition asks for one (most
/// route conditions read only attributes).
pub struct SpanFields<'a> {
    /// The `Span` body.
    span: &'a [u8],
    /// Its scalar fields, once read.
    scalars: std::cell::OnceCell<SpanScalars<'a>>,
    /// The `Resource` body of its `ResourceSpans`.
    resource: &'a [u8],
    /// Some span of the trace (of those seen together) has status ERROR.
    trace_has_error: bool,
}

impl<'a> SpanFields<'a> {
    /// The span `span` (a `Span` body) of the resource `resource` (a `Resource` body).
    pub fn new(span: &'a [u8], resource: &'a [u8], trace_has_error: bool) -> Self {
        SpanFields {
            span,
            scalars: std::cell::OnceCell::new(),
            resource,
            trace_has_error,
        }
    }

    fn scalars(&self) -> &SpanScalars<'a> {
        self.scalars.get_or_init(|| SpanScalars::read(self.span))
    }
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
            Path::Name => Val::Str(self.scalars().name),
            Path::Kind => Val::Int(i64::from(self.scalars().kind)),
            Path::StatusCode => Val::Int(i64::from(self.scalars().status_code)),
            Path::StatusMessage => Val::Str(self.scalars().status_message),
            Path::TraceHasError => Val::Bool(self.trace_has_error),
            _ => Val::Nil,
        }
    }
}

/// `LogRecord.severity_number`, `severity_text`, `body` and `attributes`.
const LOG_SEVERITY_NUMBER: u32 = 2;
const LOG_SEVERITY_TEXT: u32 = 3;
const LOG_BODY: u32 = 5;
const LOG_ATTRIBUTES: u32 = 6;

/// The scalar fields of a log record a condition may read, in one pass (the last of each
/// field, as prost decodes them).
#[derive(Clone, Copy, Debug, Default)]
pub struct LogScalars<'a> {
    /// `severity_number`.
    pub severity_number: i64,
    /// `severity_text` (empty when absent).
    pub severity_text: &'a [u8],
    /// The `AnyValue` body of `body`, when present.
    pub body: Option<&'a [u8]>,
}

impl<'a> LogScalars<'a> {
    /// Reads them from a `LogRecord` body.
    pub fn read(record: &'a [u8]) -> LogScalars<'a> {
        let mut out = LogScalars::default();
        let mut r = Reader::new(record);
        while let Some(Ok((k, v))) = r.next_field() {
            match (k.field, v) {
                (LOG_SEVERITY_NUMBER, Value::Varint(x)) => out.severity_number = x as i32 as i64,
                (LOG_SEVERITY_TEXT, Value::Len(b)) => out.severity_text = &record[b],
                (LOG_BODY, Value::Len(b)) => out.body = Some(&record[b]),
                _ => {}
            }
        }
        out
    }
}

/// A log record as a route's condition sees it (the `log` context): its bytes and its
/// resource. Its scalar fields are read the first time a condition asks for one.
pub struct LogFields<'a> {
    record: &'a [u8],
    scalars: std::cell::OnceCell<LogScalars<'a>>,
    resource: &'a [u8],
}

impl<'a> LogFields<'a> {
    /// The record `record` (a `LogRecord` body) of the resource `resource` (a `Resource` body).
    pub fn new(record: &'a [u8], resource: &'a [u8]) -> Self {
        LogFields {
            record,
            scalars: std::cell::OnceCell::new(),
            resource,
        }
    }

    fn scalars(&self) -> &LogScalars<'a> {
        self.scalars.get_or_init(|| LogScalars::read(self.record))
    }
}

impl Fields for LogFields<'_> {
    fn get(&self, path: &Path) -> Val<'_> {
        match path {
            Path::Attribute(k) => {
                raw_attribute(self.record, LOG_ATTRIBUTES, k.as_bytes()).map_or(Val::Nil, Val::from)
            }
            Path::ResourceAttribute(k) => {
                raw_attribute(self.resource, 1, k.as_bytes()).map_or(Val::Nil, Val::from)
            }
            Path::Body => self
                .scalars()
                .body
                .map_or(Val::Nil, |b| Val::from(AnyValueRef::parse(b))),
            Path::SeverityNumber => Val::Int(self.scalars().severity_number),
            Path::SeverityText => Val::Str(self.scalars().severity_text),
            _ => Val::Nil,
        }
    }
}

/// A metric data point as a route's condition sees it (the `datapoint` context): its bytes,
/// where its attributes are, its metric's name and its resource.
pub struct PointFields<'a> {
    point: &'a [u8],
    attributes_field: u32,
    metric_name: &'a [u8],
    resource: &'a [u8],
}

impl<'a> PointFields<'a> {
    /// The point `point` (a data point body whose attributes are fields `attributes_field`;
    /// empty for a metric without points) of the metric named `metric_name`, of the resource
    /// `resource` (a `Resource` body).
    pub fn new(
        point: &'a [u8],
        attributes_field: u32,
        metric_name: &'a [u8],
        resource: &'a [u8],
    ) -> Self {
        PointFields {
            point,
            attributes_field,
            metric_name,
            resource,
        }
    }
}

impl Fields for PointFields<'_> {
    fn get(&self, path: &Path) -> Val<'_> {
        match path {
            Path::Attribute(k) => raw_attribute(self.point, self.attributes_field, k.as_bytes())
                .map_or(Val::Nil, Val::from),
            Path::ResourceAttribute(k) => {
                raw_attribute(self.resource, 1, k.as_bytes()).map_or(Val::Nil, Val::from)
            }
            Path::MetricName => Val::Str(self.metric_name),
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
        let f = SpanFields::new(&bytes, &[], false);
        let e = parse_condition(
            r#"attributes["a"] == 7 and name == "n""#,
            Context::Span,
            true,
        )
        .unwrap();
        assert!(Condition::compile(&e).unwrap().eval(&f));
    }

    mod model {
        //! Random conditions on random spans: the wire evaluation agrees with a reference
        //! evaluator over the prost-decoded span, and every condition survives render → parse.
        use super::super::*;
        use proptest::prelude::*;
        use prost::Message;
        use shardtel_config::ottl::{parse_condition, Context};
        use shardtel_protocol::proto::common::v1::{any_value, AnyValue, KeyValue};
        use shardtel_protocol::proto::resource::v1::Resource;
        use shardtel_protocol::proto::trace::v1::{Span, Status};

        #[derive(Clone, Debug, PartialEq)]
        enum M {
            S(String),
            I(i64),
            D(f64),
            B(bool),
            Nil,
        }

        // Keys and strings long enough not to occur by chance in other bytes of a span, so the
        // witness check below can fail.
        const KEYS: [&str; 3] = ["key.a", "key.b", "key.c"];
        const STRS: [&str; 3] = ["val-x", "val-y", "GET /a"];

        fn any_m() -> impl Strategy<Value = M> {
            prop_oneof![
                prop::sample::select(&STRS[..]).prop_map(|s| M::S(s.to_string())),
                (-2i64..3).prop_map(M::I),
                prop::sample::select(vec![-1.0, 0.0, 0.5, 2.0]).prop_map(M::D),
                any::<bool>().prop_map(M::B),
            ]
        }

        fn lit(m: &M) -> String {
            match m {
                M::S(s) => format!("{s:?}"),
                M::I(i) => i.to_string(),
                M::D(d) => format!("{d:?}"),
                M::B(b) => b.to_string(),
                M::Nil => "nil".into(),
            }
        }

        fn encode(m: &M) -> Option<AnyValue> {
            let v = match m {
                M::S(s) => any_value::Value::StringValue(s.clone()),
                M::I(i) => any_value::Value::IntValue(*i),
                M::D(d) => any_value::Value::DoubleValue(*d),
                M::B(b) => any_value::Value::BoolValue(*b),
                M::Nil => return None,
            };
            Some(AnyValue { value: Some(v) })
        }

        fn decode(v: &Option<AnyValue>) -> M {
            match v.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => M::S(s.clone()),
                Some(any_value::Value::IntValue(i)) => M::I(*i),
                Some(any_value::Value::DoubleValue(d)) => M::D(*d),
                Some(any_value::Value::BoolValue(b)) => M::B(*b),
                _ => M::Nil,
            }
        }

        /// A path as text, and how the model reads it.
        #[derive(Clone, Debug)]
        enum P {
            Attr(&'static str),
            Res(&'static str),
            Name,
            Kind,
            Status,
        }

        fn any_path() -> impl Strategy<Value = P> {
            prop_oneof![
                prop::sample::select(&KEYS[..]).prop_map(P::Attr),
                prop::sample::select(&KEYS[..]).prop_map(P::Res),
                Just(P::Name),
                Just(P::Kind),
                Just(P::Status),
            ]
        }

        #[derive(Clone, Debug)]
        enum C {
            Cmp(P, &'static str, M),
            Match(P, &'static str),
            Truthy(P),
            Not(Box<C>),
            And(Box<C>, Box<C>),
            Or(Box<C>, Box<C>),
        }

        fn any_cond() -> impl Strategy<Value = C> {
            let leaf = prop_oneof![
                (
                    any_path(),
                    prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]),
                    prop_oneof![any_m(), Just(M::Nil)]
                )
                    .prop_map(|(p, op, m)| C::Cmp(p, op, m)),
                (any_path(), prop::sample::select(vec!["^G", "x|y", "\\d"]))
                    .prop_map(|(p, re)| C::Match(p, re)),
                prop::sample::select(&KEYS[..]).prop_map(|k| C::Truthy(P::Attr(k))),
            ];
            leaf.prop_recursive(3, 12, 2, |inner| {
                prop_oneof![
                    inner.clone().prop_map(|c| C::Not(Box::new(c))),
                    (inner.clone(), inner.clone())
                        .prop_map(|(a, b)| C::And(Box::new(a), Box::new(b))),
                    (inner.clone(), inner).prop_map(|(a, b)| C::Or(Box::new(a), Box::new(b))),
                ]
            })
        }

        fn path_text(p: &P) -> String {
            match p {
                P::Attr(k) => format!("attributes[{k:?}]"),
                P::Res(k) => format!("resource.attributes[{k:?}]"),
                P::Name => "name".into(),
                P::Kind => "kind".into(),
                P::Status => "status.code".into(),
            }
        }

        fn text(c: &C) -> String {
            match c {
                C::Cmp(p, op, m) => format!("{} {op} {}", path_text(p), lit(m)),
                C::Match(p, re) => format!("IsMatch({}, {re:?})", path_text(p)),
                C::Truthy(p) => path_text(p),
                C::Not(c) => format!("not ({})", text(c)),
                C::And(a, b) => format!("({}) and ({})", text(a), text(b)),
                C::Or(a, b) => format!("({}) or ({})", text(a), text(b)),
            }
        }

        fn read(p: &P, span: &Span, resource: &Resource) -> M {
            let find = |kvs: &[KeyValue], k: &str| {
                kvs.iter()
                    .find(|kv| kv.key == k)
                    .map_or(M::Nil, |kv| decode(&kv.value))
            };
            match p {
                P::Attr(k) => find(&span.attributes, k),
                P::Res(k) => find(&resource.attributes, k),
                P::Name => M::S(span.name.clone()),
                P::Kind => M::I(i64::from(span.kind)),
                P::Status => M::I(i64::from(span.status.as_ref().map_or(0, |s| s.code))),
            }
        }

        fn num(m: &M) -> Option<f64> {
            match m {
                M::I(i) => Some(*i as f64),
                M::D(d) => Some(*d),
                _ => None,
            }
        }

        fn model(c: &C, span: &Span, resource: &Resource) -> bool {
            match c {
                C::Cmp(p, op, m) => {
                    let v = read(p, span, resource);
                    let eq = match (&v, m) {
                        (M::I(a), M::I(b)) => a == b,
                        (M::S(a), M::S(b)) => a == b,
                        (M::B(a), M::B(b)) => a == b,
                        (M::Nil, M::Nil) => true,
                        _ => matches!((num(&v), num(m)), (Some(a), Some(b)) if a == b),
                    };
                    let ord = match (&v, m) {
                        (M::I(a), M::I(b)) => Some(a.cmp(b)),
                        (M::S(a), M::S(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
                        _ => num(&v).zip(num(m)).and_then(|(a, b)| a.partial_cmp(&b)),
                    };
                    use std::cmp::Ordering::*;
                    match *op {
                        "==" => eq,
                        "!=" => !eq,
                        "<" => ord == Some(Less),
                        "<=" => matches!(ord, Some(Less | Equal)),
                        ">" => ord == Some(Greater),
                        _ => matches!(ord, Some(Greater | Equal)),
                    }
                }
                C::Match(p, re) => match read(p, span, resource) {
                    M::S(s) => regex::Regex::new(re).unwrap().is_match(&s),
                    _ => false,
                },
                C::Truthy(p) => read(p, span, resource) == M::B(true),
                C::Not(c) => !model(c, span, resource),
                C::And(a, b) => model(a, span, resource) && model(b, span, resource),
                C::Or(a, b) => model(a, span, resource) || model(b, span, resource),
            }
        }

        fn attrs() -> impl Strategy<Value = Vec<KeyValue>> {
            prop::collection::vec((prop::sample::select(&KEYS[..]), any_m()), 0..4).prop_map(|v| {
                v.into_iter()
                    .map(|(k, m)| KeyValue {
                        key: k.into(),
                        value: encode(&m),
                        ..Default::default()
                    })
                    .collect()
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            #[test]
            fn wire_evaluation_agrees_with_the_decoded_model(
                cond in any_cond(),
                span_attrs in attrs(),
                res_attrs in attrs(),
                name in prop::sample::select(&STRS[..]),
                kind in 0i32..6,
                code in 0i32..3,
            ) {
                let span = Span {
                    name: name.into(),
                    kind,
                    attributes: span_attrs,
                    status: Some(Status { code, ..Default::default() }),
                    ..Default::default()
                };
                let resource = Resource { attributes: res_attrs, ..Default::default() };
                let text = text(&cond);
                let expr = parse_condition(&text, Context::Span, false)
                    .unwrap_or_else(|e| panic!("{text}: {e}"));
                let compiled = Condition::compile(&expr).unwrap();
                let span_bytes = span.encode_to_vec();
                let resource_bytes = resource.encode_to_vec();
                let fields = SpanFields::new(&span_bytes, &resource_bytes, false);
                let holds = compiled.eval(&fields);
                prop_assert_eq!(holds, model(&cond, &span, &resource), "{}", text);
                // What the shortcuts of routing and transform rely on: a condition that holds
                // has one of its witnesses in the span's bytes, and one that reads only the
                // resource holds whatever the span.
                if let (true, Some(w)) = (holds, compiled.witnesses()) {
                    prop_assert!(
                        w.iter().any(|n| memchr::memmem::find(&span_bytes, n).is_some()),
                        "{} holds without any of its witnesses {:?}", text, w
                    );
                }
                if compiled.reads_only_resource() {
                    let other = SpanFields::new(&[], &resource_bytes, false);
                    prop_assert_eq!(compiled.eval(&other), holds, "{}", text);
                }
            }

            #[test]
            fn arbitrary_text_never_panics_the_parser(text in "\\PC{0,40}") {
                let _ = parse_condition(&text, Context::Span, true);
                let _ = shardtel_config::ottl::parse_statement(&text, Context::Span);
            }
        }
    }
}
