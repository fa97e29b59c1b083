//! OTLP attribute values as text, the way the OpenTelemetry Collector's `AsString` writes them
//! (for Prometheus label values and Loki labels, metadata and lines).

use std::fmt::Write as _;

use base64::Engine as _;
use shardtel_protocol::proto::common::v1::any_value::Value;
use shardtel_protocol::proto::common::v1::{AnyValue, KeyValue};

/// The value as text: strings as they are, numbers in decimal (doubles as Go's
/// `FormatFloat(v, 'f', -1, 64)`), booleans `true`/`false`, bytes in base64, arrays and maps
/// as JSON. An absent value is empty.
pub(crate) fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(other) => {
            let mut out = String::new();
            write_plain(other, &mut out);
            out
        }
        None => String::new(),
    }
}

/// The value if it is a string.
pub(crate) fn string_value(value: Option<&AnyValue>) -> Option<&str> {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// The value of attribute `key` as text, if present.
pub(crate) fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a KeyValue> {
    attributes.iter().find(|kv| kv.key == key)
}

/// A double as Go's `FormatFloat(f, 'f', -1, 64)` writes it, with `+Inf`, `-Inf` and `NaN`: the
/// text of double attribute values, and of Prometheus bucket bounds and quantiles.
pub(crate) fn float_label(value: f64) -> String {
    if value == f64::INFINITY {
        "+Inf".to_string()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else if value.is_nan() {
        "NaN".to_string()
    } else {
        format!("{value}")
    }
}

fn write_plain(value: &Value, out: &mut String) {
    match value {
        Value::StringValue(s) => out.push_str(s),
        Value::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        // An index into a profile's string table: meaningless elsewhere, written as the index.
        Value::StringValueStrindex(i) => {
            let _ = write!(out, "{i}");
        }
        Value::DoubleValue(d) => out.push_str(&float_label(*d)),
        Value::BytesValue(b) => out.push_str(&base64::engine::general_purpose::STANDARD.encode(b)),
        Value::ArrayValue(_) | Value::KvlistValue(_) => write_json(value, out),
    }
}

/// Appends the value as JSON (strings quoted, maps as objects).
pub(crate) fn write_json(value: &Value, out: &mut String) {
    match value {
        Value::StringValue(s) => json_string(s, out),
        Value::BytesValue(b) => {
            json_string(&base64::engine::general_purpose::STANDARD.encode(b), out)
        }
        Value::BoolValue(_) | Value::IntValue(_) | Value::StringValueStrindex(_) => {
            write_plain(value, out)
        }
        Value::DoubleValue(d) if d.is_finite() => write_plain(value, out),
        Value::DoubleValue(d) => json_string(&float_label(*d), out),
        Value::ArrayValue(array) => {
            out.push('[');
            for (i, v) in array.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_any(Some(v), out);
            }
            out.push(']');
        }
        Value::KvlistValue(list) => write_json_object(&list.values, out),
    }
}

/// Appends an optional `AnyValue` as JSON (`null` when empty).
pub(crate) fn write_json_any(value: Option<&AnyValue>, out: &mut String) {
    match value.and_then(|v| v.value.as_ref()) {
        Some(v) => write_json(v, out),
        None => out.push_str("null"),
    }
}

/// Appends attributes as a JSON object.
pub(crate) fn write_json_object(attributes: &[KeyValue], out: &mut String) {
    out.push('{');
    for (i, kv) in attributes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(&kv.key, out);
        out.push(':');
        write_json_any(kv.value.as_ref(), out);
    }
    out.push('}');
}

/// Appends `s` as a JSON string literal.
pub(crate) fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardtel_protocol::proto::common::v1::{ArrayValue, KeyValueList};

    fn any(v: Value) -> AnyValue {
        AnyValue { value: Some(v) }
    }

    #[test]
    fn values_as_text() {
        assert_eq!(
            value_text(Some(&any(Value::StringValue("a\"b".into())))),
            "a\"b"
        );
        assert_eq!(value_text(Some(&any(Value::IntValue(-3)))), "-3");
        assert_eq!(value_text(Some(&any(Value::DoubleValue(0.25)))), "0.25");
        assert_eq!(value_text(Some(&any(Value::BoolValue(true)))), "true");
        assert_eq!(
            value_text(Some(&any(Value::BytesValue(vec![1, 2])))),
            "AQI="
        );
        assert_eq!(value_text(None), "");
        let array = Value::ArrayValue(ArrayValue {
            values: vec![any(Value::StringValue("x".into())), any(Value::IntValue(1))],
        });
        assert_eq!(value_text(Some(&any(array))), "[\"x\",1]");
        let map = Value::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key: "k".into(),
                value: Some(any(Value::StringValue("v\n".into()))),
                ..Default::default()
            }],
        });
        assert_eq!(value_text(Some(&any(map))), "{\"k\":\"v\\n\"}");
    }

    #[test]
    fn float_labels_match_go() {
        assert_eq!(float_label(1.0), "1");
        assert_eq!(float_label(0.5), "0.5");
        assert_eq!(float_label(0.005), "0.005");
        assert_eq!(float_label(1e21), "1000000000000000000000");
        assert_eq!(float_label(f64::INFINITY), "+Inf");
        assert_eq!(float_label(-2.5), "-2.5");
    }
}
