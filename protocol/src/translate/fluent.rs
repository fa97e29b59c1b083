//! Fluent Forward protocol (v1) events → OTLP log records, as the Collector's
//! `fluentforwardreceiver` maps them.
//!
//! An event is one MessagePack array, in one of four modes told apart by its second element:
//! Message `[tag, time, record, option?]` (an integer or EventTime), Forward
//! `[tag, [[time, record], ...], option?]` (an array), PackedForward
//! `[tag, bin/str of concatenated [time, record] entries, option?]`, and CompressedPackedForward
//! (PackedForward with `option.compressed = "gzip"`). Each entry becomes a log record:
//!
//! - `time` (seconds, or EventTime: the extension type 0 of seconds and nanoseconds) →
//!   `time_unix_nano`;
//! - the record's `message` or `log` field → `body` (the last of them when both are present);
//!   every other field → an attribute of the same key;
//! - the tag → the attribute `fluent.tag` (first in Message mode, last in the others, as the
//!   Collector puts it);
//! - values: strings and binaries → strings, integers → ints (a `uint64` above `i64::MAX` → its
//!   decimal string), floats → doubles, booleans, arrays, maps (string keys), `nil` → an empty
//!   value.
//!
//! Where shardtel differs from the Collector: a string or binary value that is not UTF-8
//! becomes a `bytes_value` (OTLP strings must be UTF-8; the Collector passes the bytes through
//! as an invalid string), and an extension value becomes a `bytes_value` of its data (the
//! Collector writes Go's `%v` of it). The `chunk` option is returned so that the receiver
//! acknowledges the event once it is durable.

use std::borrow::Cow;

use super::msgpack::{Msg, MsgpackError, Reader};
use super::otlp::{Attributes, LogRecord, LogsWriter, Value};

/// The attribute the tag goes to.
pub const TAG_ATTRIBUTE: &str = "fluent.tag";
/// Most entries a Forward event may hold (the Collector's bound).
pub const MAX_ENTRIES: usize = 1_000_000;
/// Most options an event may carry (the Collector's bound).
pub const MAX_OPTIONS: usize = 1_000;
/// Deepest nesting of arrays and maps in a record's values: each level is three levels of
/// OTLP messages (`AnyValue`, `KeyValueList`, `KeyValue`), and decoders stop at 100 (prost's
/// recursion limit).
pub const MAX_VALUE_DEPTH: usize = 16;

/// Why an event was refused. The connection it came on cannot continue (the stream's
/// framing is lost or the client sent something else than Fluent Forward).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FluentError {
    /// Not MessagePack, or cut short.
    #[error("malformed msgpack: {0}")]
    Msgpack(#[from] MsgpackError),
    /// Well-formed MessagePack that is not a Fluent Forward event; names what is wrong.
    #[error("not a fluent forward event: {0}")]
    Event(&'static str),
    /// A time that is neither an integer nor an 8-byte EventTime.
    #[error("invalid event time (expected an integer or an EventTime extension)")]
    Time,
    /// More entries or options than allowed.
    #[error("{what} count {count} exceeds the maximum {max}")]
    TooMany {
        /// Entries or options.
        what: &'static str,
        /// How many were sent.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A CompressedPackedForward event whose entries do not decompress (or decompress to more
    /// than the limit).
    #[error("compressed entries: {0}")]
    Decompress(#[from] crate::compression::DecompressError),
}

/// What an event asks of the receiver besides its records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventOptions {
    /// `option.chunk`: acknowledge the event with `{"ack": chunk}` once it is durable.
    pub chunk: Option<String>,
}

/// Translates one event (a whole MessagePack value, as [`super::msgpack::Framer`] cut it) into
/// log records appended to `logs`. Entries of a CompressedPackedForward event decompress to at
/// most `max_decompressed` bytes. Nothing is written when the event is refused.
pub fn translate_event(
    event: &[u8],
    max_decompressed: usize,
    logs: &mut LogsWriter<'_>,
) -> Result<EventOptions, FluentError> {
    let mut r = Reader::new(event);
    let n = r
        .read_array_len()?
        .ok_or(FluentError::Event("an event must be an array"))?;
    if !(2..=4).contains(&n) {
        return Err(FluentError::Event(
            "an event must be an array of 2 to 4 elements",
        ));
    }
    let tag = match r.read()? {
        Msg::Str(s) => {
            std::str::from_utf8(s).map_err(|_| FluentError::Event("tag is not UTF-8"))?
        }
        _ => {
            return Err(FluentError::Event(
                "the first element (tag) must be a string",
            ))
        }
    };
    let second = r
        .peek()
        .ok_or(FluentError::Msgpack(MsgpackError::Truncated {
            offset: r.position(),
        }))?;
    match second {
        // Message mode: integer or EventTime time.
        0x00..=0x7f | 0xcc..=0xd3 | 0xe0..=0xff | 0xc7..=0xc9 | 0xd4..=0xd8 => {
            if n < 3 {
                return Err(FluentError::Event("a message-mode event needs a record"));
            }
            let time = r.read()?;
            let record = r.read()?;
            let options = if n == 4 {
                options(&mut r)?.0
            } else {
                EventOptions::default()
            };
            let mut attributes = Attributes::default();
            attributes.put(TAG_ATTRIBUTE, Value::Str(Cow::Borrowed(tag)));
            let record = log_record(&time, record, attributes)?;
            logs.record(&record);
            Ok(options)
        }
        // Forward mode: an array of entries.
        0x90..=0x9f | 0xdc | 0xdd => {
            if n > 3 {
                return Err(FluentError::Event(
                    "a forward-mode event has at most 3 elements",
                ));
            }
            let count = r.read_array_len()?.unwrap_or(0);
            if count > MAX_ENTRIES {
                return Err(FluentError::TooMany {
                    what: "entry",
                    count,
                    max: MAX_ENTRIES,
                });
            }
            let mut records = Vec::with_capacity(count.min(4096));
            for _ in 0..count {
                records.push(entry(&mut r, tag)?);
            }
            let options = if n == 3 {
                options(&mut r)?
            } else {
                Default::default()
            };
            for record in &records {
                logs.record(record);
            }
            Ok(options.0)
        }
        // PackedForward: a str or bin of concatenated entries.
        0xa0..=0xbf | 0xd9..=0xdb | 0xc4..=0xc6 => {
            if n > 3 {
                return Err(FluentError::Event(
                    "a packed-forward event has at most 3 elements",
                ));
            }
            let packed = match r.read()? {
                Msg::Str(b) | Msg::Bin(b) => b,
                _ => unreachable!("peeked a str or bin"),
            };
            let options = if n == 3 {
                options(&mut r)?
            } else {
                Default::default()
            };
            let decompressed;
            // Only "gzip" is a compression (npm's fluent-logger sends "text" for none).
            let entries = match options.1.as_deref() {
                Some("gzip") => {
                    decompressed = crate::compression::decompress(
                        crate::compression::Encoding::Gzip,
                        packed,
                        max_decompressed,
                    )?;
                    &decompressed[..]
                }
                _ => packed,
            };
            let mut er = Reader::new(entries);
            let mut records = Vec::new();
            while !er.is_empty() {
                if records.len() >= MAX_ENTRIES {
                    return Err(FluentError::TooMany {
                        what: "entry",
                        count: records.len() + 1,
                        max: MAX_ENTRIES,
                    });
                }
                records.push(entry(&mut er, tag)?);
            }
            for record in &records {
                logs.record(record);
            }
            Ok(options.0)
        }
        _ => Err(FluentError::Event(
            "the second element must be a time, an array of entries or packed entries",
        )),
    }
}

/// One `[time, record]` entry of Forward and PackedForward modes, the tag put last.
fn entry<'a>(r: &mut Reader<'a>, tag: &'a str) -> Result<LogRecord<'a>, FluentError> {
    if r.read_array_len()? != Some(2) {
        return Err(FluentError::Event(
            "an entry must be an array [time, record]",
        ));
    }
    let time = r.read()?;
    let record = r.read()?;
    let mut record = log_record(&time, record, Attributes::default())?;
    record
        .attributes
        .put(TAG_ATTRIBUTE, Value::Str(Cow::Borrowed(tag)));
    Ok(record)
}

/// A record map with its time, after the attributes already in `attributes`.
fn log_record<'a>(
    time: &Msg<'a>,
    record: Msg<'a>,
    mut attributes: Attributes<'a>,
) -> Result<LogRecord<'a>, FluentError> {
    let time_unix_nano = match *time {
        // time.Unix(secs, 0).UnixNano(), wrapping as Go's does.
        Msg::Uint(secs) => (secs as i64).wrapping_mul(1_000_000_000) as u64,
        Msg::Int(secs) => secs.wrapping_mul(1_000_000_000) as u64,
        Msg::Ext(0, data) if data.len() == 8 => {
            let secs = u32::from_be_bytes(data[..4].try_into().unwrap_or_default());
            let nanos = u32::from_be_bytes(data[4..].try_into().unwrap_or_default());
            (i64::from(secs) * 1_000_000_000 + i64::from(nanos)) as u64
        }
        _ => return Err(FluentError::Time),
    };
    let Msg::Map(pairs) = record else {
        return Err(FluentError::Event("a record must be a map"));
    };
    let mut body = Value::Empty;
    attributes = {
        let mut a = attributes;
        for (key, value) in pairs {
            let key = map_key(key)?;
            let value = value_of(value, 0)?;
            if key == "message" || key == "log" {
                body = value;
            } else {
                a.put(key, value);
            }
        }
        a
    };
    Ok(LogRecord {
        time_unix_nano,
        body,
        attributes,
    })
}

/// A map key: a string, or a binary taken as one.
fn map_key(key: Msg<'_>) -> Result<Cow<'_, str>, FluentError> {
    match key {
        Msg::Str(b) | Msg::Bin(b) => Ok(String::from_utf8_lossy(b)),
        _ => Err(FluentError::Event("a map key must be a string")),
    }
}

/// A value as the Collector maps it (see the module docs), nested at most
/// [`MAX_VALUE_DEPTH`] deep.
fn value_of(v: Msg<'_>, depth: usize) -> Result<Value<'_>, FluentError> {
    if depth > MAX_VALUE_DEPTH && matches!(v, Msg::Array(_) | Msg::Map(_)) {
        return Err(FluentError::Event(
            "a record value nests arrays or maps more than 16 levels deep",
        ));
    }
    Ok(match v {
        Msg::Nil => Value::Empty,
        Msg::Bool(b) => Value::Bool(b),
        Msg::Uint(u) => match i64::try_from(u) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Str(Cow::Owned(u.to_string())),
        },
        Msg::Int(i) => Value::Int(i),
        Msg::F32(f) => Value::Double(f64::from(f)),
        Msg::F64(f) => Value::Double(f),
        Msg::Str(b) | Msg::Bin(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::Str(Cow::Borrowed(s)),
            Err(_) => Value::Bytes(Cow::Borrowed(b)),
        },
        Msg::Ext(_, data) => Value::Bytes(Cow::Borrowed(data)),
        Msg::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| value_of(item, depth + 1))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Msg::Map(pairs) => {
            let mut m = Attributes::with_capacity(pairs.len());
            for (k, v) in pairs {
                m.put(map_key(k)?, value_of(v, depth + 1)?);
            }
            Value::Map(m)
        }
    })
}

/// The option map: `chunk` and `compressed` (other options are ignored).
fn options(r: &mut Reader<'_>) -> Result<(EventOptions, Option<String>), FluentError> {
    let n = match r.read()? {
        Msg::Map(pairs) => pairs,
        Msg::Nil => return Ok(Default::default()),
        _ => return Err(FluentError::Event("the option must be a map")),
    };
    if n.len() > MAX_OPTIONS {
        return Err(FluentError::TooMany {
            what: "option",
            count: n.len(),
            max: MAX_OPTIONS,
        });
    }
    let mut out = EventOptions::default();
    let mut compressed = None;
    for (k, v) in n {
        let Msg::Str(k) = k else {
            return Err(FluentError::Event("an option key must be a string"));
        };
        let text = match v {
            Msg::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
            _ => None,
        };
        match k {
            b"chunk" => out.chunk = text,
            b"compressed" => compressed = text,
            _ => {}
        }
    }
    Ok((out, compressed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::collector::logs::v1::ExportLogsServiceRequest;
    use crate::proto::common::v1::{any_value, AnyValue, KeyValue, KeyValueList};
    use crate::proto::logs::v1::LogRecord as PbLogRecord;
    use prost::Message;

    /// A tiny MessagePack writer for the tests.
    struct W(Vec<u8>);

    impl W {
        fn array(&mut self, n: u8) -> &mut Self {
            self.0.push(0x90 | n);
            self
        }
        fn map(&mut self, n: u8) -> &mut Self {
            self.0.push(0x80 | n);
            self
        }
        fn str(&mut self, s: &str) -> &mut Self {
            assert!(s.len() < 32);
            self.0.push(0xa0 | s.len() as u8);
            self.0.extend_from_slice(s.as_bytes());
            self
        }
        fn bin(&mut self, b: &[u8]) -> &mut Self {
            self.0.push(0xc6);
            self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
            self.0.extend_from_slice(b);
            self
        }
        fn u32(&mut self, v: u32) -> &mut Self {
            self.0.push(0xce);
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn event_time(&mut self, secs: u32, nanos: u32) -> &mut Self {
            self.0.extend_from_slice(&[0xd7, 0x00]);
            self.0.extend_from_slice(&secs.to_be_bytes());
            self.0.extend_from_slice(&nanos.to_be_bytes());
            self
        }
        fn raw(&mut self, b: &[u8]) -> &mut Self {
            self.0.extend_from_slice(b);
            self
        }
    }

    fn translate(event: &[u8]) -> Result<(EventOptions, Vec<PbLogRecord>), FluentError> {
        let mut out = Vec::new();
        let mut logs = LogsWriter::new(&mut out);
        let options = translate_event(event, 1 << 20, &mut logs)?;
        logs.finish();
        let req = ExportLogsServiceRequest::decode(&out[..]).unwrap();
        let records = req.resource_logs[0].scope_logs[0].log_records.clone();
        Ok((options, records))
    }

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn sv(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    /// `{"log": "hello", "level": "info", "n": 5}`.
    fn record(w: &mut W) -> &mut W {
        w.map(3)
            .str("log")
            .str("hello")
            .str("level")
            .str("info")
            .str("n")
            .raw(&[5])
    }

    #[test]
    fn message_mode_puts_the_tag_first_and_acks_its_chunk() {
        let mut w = W(Vec::new());
        w.array(4).str("app.web").u32(1_700_000_000);
        record(&mut w).map(1).str("chunk").str("c1");
        let (options, records) = translate(&w.0).unwrap();
        assert_eq!(options.chunk.as_deref(), Some("c1"));
        let r = &records[0];
        assert_eq!(r.time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(r.body.as_ref().unwrap().value, Some(sv("hello")));
        assert_eq!(
            r.attributes,
            [
                kv("fluent.tag", sv("app.web")),
                kv("level", sv("info")),
                kv("n", any_value::Value::IntValue(5)),
            ]
        );
    }

    #[test]
    fn forward_and_packed_forward_put_the_tag_last() {
        let mut w = W(Vec::new());
        w.array(2).str("t").array(2);
        w.array(2).event_time(1_700_000_000, 42);
        record(&mut w);
        w.array(2)
            .u32(1_700_000_001)
            .map(2)
            .str("message")
            .raw(&[0xc0])
            .str("nested");
        w.map(1)
            .str("k")
            .array(2)
            .raw(&[0xc3])
            .raw(&[0xcb])
            .raw(&1.5f64.to_bits().to_be_bytes());
        let (options, forward) = translate(&w.0).unwrap();
        assert_eq!(options, EventOptions::default());
        assert_eq!(forward.len(), 2);
        assert_eq!(forward[0].time_unix_nano, 1_700_000_000_000_000_042);
        assert_eq!(
            forward[0].attributes,
            [
                kv("level", sv("info")),
                kv("n", any_value::Value::IntValue(5)),
                kv("fluent.tag", sv("t")),
            ]
        );
        // A nil message is an empty body.
        assert_eq!(forward[1].body, Some(AnyValue { value: None }));
        assert_eq!(
            forward[1].attributes[0],
            kv(
                "nested",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv(
                        "k",
                        any_value::Value::ArrayValue(crate::proto::common::v1::ArrayValue {
                            values: vec![
                                AnyValue {
                                    value: Some(any_value::Value::BoolValue(true))
                                },
                                AnyValue {
                                    value: Some(any_value::Value::DoubleValue(1.5))
                                },
                            ]
                        })
                    )]
                })
            )
        );

        // The same entries packed, plain and gzip-compressed.
        let entries_start = 1 + 2 + 1; // array, "t", entries array header
        let entries = &w.0[entries_start..];
        let mut packed = W(Vec::new());
        packed.array(2).str("t").bin(entries);
        assert_eq!(translate(&packed.0).unwrap().1, forward);
        // npm's fluent-logger marks uncompressed entries `compressed: "text"`.
        let mut text = W(Vec::new());
        text.array(3)
            .str("t")
            .bin(entries)
            .map(1)
            .str("compressed")
            .str("text");
        assert_eq!(translate(&text.0).unwrap().1, forward);
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(entries).unwrap();
            e.finish().unwrap()
        };
        let mut compressed = W(Vec::new());
        compressed.array(3).str("t").bin(&gz);
        compressed
            .map(2)
            .str("compressed")
            .str("gzip")
            .str("chunk")
            .str("p1");
        let (options, records) = translate(&compressed.0).unwrap();
        assert_eq!(options.chunk.as_deref(), Some("p1"));
        assert_eq!(records, forward);
    }

    #[test]
    fn values_that_are_not_utf8_become_bytes_and_big_uints_strings() {
        let mut w = W(Vec::new());
        w.array(3)
            .str("t")
            .u32(1)
            .map(2)
            .str("b")
            .bin(&[0xff, 0xfe])
            .str("u");
        w.raw(&[0xcf]).raw(&u64::MAX.to_be_bytes());
        let (_, records) = translate(&w.0).unwrap();
        assert_eq!(
            records[0].attributes[1..],
            [
                kv("b", any_value::Value::BytesValue(vec![0xff, 0xfe])),
                kv("u", sv("18446744073709551615")),
            ]
        );
    }

    #[test]
    fn events_that_are_not_fluent_forward_are_refused() {
        let cases: [(&[u8], &str); 5] = [
            (&[0x01], "an event must be an array"),
            (
                &[0x92, 0x01, 0x02],
                "the first element (tag) must be a string",
            ),
            (
                &[0x93, 0xa1, b't', 0xca, 0, 0, 0, 0, 0x80],
                "the second element",
            ),
            (
                &[0x93, 0xa1, b't', 0xd7, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0x80],
                "invalid event time",
            ),
            (&[0x93, 0xa1, b't', 0x01, 0x01], "a record must be a map"),
        ];
        for (event, expected) in cases {
            let err = translate(event).unwrap_err().to_string();
            assert!(err.contains(expected), "{event:x?}: {err}");
        }
        let mut w = W(Vec::new());
        w.array(3)
            .str("t")
            .bin(b"junk")
            .map(1)
            .str("compressed")
            .str("gzip");
        assert!(matches!(translate(&w.0), Err(FluentError::Decompress(_))));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = translate(&bytes);
            let _ = crate::translate::msgpack::Framer::default().advance(&bytes);
        }
    }
}
