//! `shardtel-kafka-path`: the gateway's Kafka export path on one core, outside the reactor, on
//! a fixed workload, for instruction counts under callgrind (`benches/kafka/callgrind.sh`).
//! Valgrind cannot run the whole `shardtel` process usefully: a reactor blocked in
//! `io_uring_enter` holds valgrind's global lock, and every other thread (librdkafka's) waits.
//!
//! ```text
//! shardtel-kafka-path MODE [BATCHES]      MODE: none | before | after | indexed
//! ```
//!
//! The workload: `benches/data/traces-00{0,1}.pb` (100 spans, ~10 traces, 355 bytes/span) in
//! variants with fresh trace ids; each request is scanned and split by owner core for two
//! cores, and core 0's part re-framed, as the receiving and owner cores do; those pieces are
//! concatenated into export batches of at most 8192 spans / 4 MiB (the default `batch`), as
//! the exporter queue hands them over. Then, per batch:
//! - `before`: the exporter as it was before this change: join the chunks, scan, sort the spans
//!   by trace id, re-frame each trace into chunks (`encode_trace_spans`) and copy them into one
//!   `Bytes` (`Encoded::to_bytes`), hand it to librdkafka;
//! - `after`: [`shardtel_sinks::TraceMessages::new`]: join, structural scan, group by trace,
//!   write each value into a reused buffer, hand it to librdkafka (a batch of bytes: from a
//!   disk queue);
//! - `indexed`: [`shardtel_sinks::TraceMessages::from_batches`] on the owner core's indexed
//!   parts that make up the batch (shared, as the memory queue holds them): group, write, hand
//!   to librdkafka; no join, no scan;
//! - `none`: builds the workload only (subtract it).
//!
//! librdkafka gets every message (`rd_kafka_producev`: copy, key, queueing) from a producer
//! whose broker does not exist (`127.0.0.1:9`), so nothing leaves the process and the counts
//! do not depend on a broker. Prints the spans and messages handled.
//!
//! With `BROKER=host:port TOPIC=name` in the environment the messages really go to that topic
//! (lz4, acks all, idempotent, as the exporter's defaults), and the run waits for every
//! delivery and prints the wall time: the broker's own ceiling for this traffic, without
//! shardtel's receiving side.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use shardtel_protocol::reframe::{encode_trace_spans, encode_traces, Encoded};
use shardtel_protocol::route::owner_core;
use shardtel_protocol::scan::SpanBatch;
use shardtel_protocol::span::SpanView;

const CORES: usize = 2;
const BATCH_SPANS: usize = 8192;
const BATCH_BYTES: usize = 4 << 20;
const MAX_MESSAGE_BYTES: usize = 1_000_000;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("after");
    let batches: usize = args.get(1).map_or(Ok(40), |n| n.parse())?;
    let work = workload(batches)?;
    let spans: usize = work.iter().map(|b| b.1).sum();
    let broker = std::env::var("BROKER").ok();
    let mut config = ClientConfig::new();
    config
        .set(
            "bootstrap.servers",
            broker.as_deref().unwrap_or("127.0.0.1:9"),
        )
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "2000000")
        .set("message.timeout.ms", "600000");
    if broker.is_some() {
        config
            .set("compression.codec", "lz4")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5");
    }
    let producer: BaseProducer = config.create()?;
    let started = std::time::Instant::now();
    let messages = match mode {
        "none" => 0,
        "before" => work
            .iter()
            .map(|(chunks, _, _)| before(&producer, chunks))
            .sum::<Result<usize>>()?,
        "after" => work
            .iter()
            .map(|(chunks, _, _)| after(&producer, chunks))
            .sum::<Result<usize>>()?,
        "indexed" => work
            .iter()
            .map(|(_, _, parts)| indexed(&producer, parts))
            .sum::<Result<usize>>()?,
        other => bail!("unknown mode {other:?} (none, before, after, indexed)"),
    };
    if broker.is_some() {
        producer.flush(std::time::Duration::from_secs(600))?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "delivered {spans} spans in {messages} messages in {secs:.2} s: {:.0} spans/s",
            spans as f64 / secs
        );
    }
    println!(
        "mode {mode} batches {} spans {spans} messages {messages}",
        work.len()
    );
    producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    Ok(())
}

/// An export batch: its chunks, spans, and the indexed parts it was encoded from (shared, as
/// the memory queue holds them).
type WorkBatch = (Vec<Bytes>, usize, Vec<Arc<SpanBatch>>);

/// Export batches for core 0 of two.
fn workload(batches: usize) -> Result<Vec<WorkBatch>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    let payloads: Vec<Vec<u8>> = ["traces-000.pb", "traces-001.pb"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).with_context(|| format!("reading {f}")))
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    let (mut chunks, mut spans, mut bytes) = (Vec::new(), 0usize, 0usize);
    let mut indexed = Vec::new();
    let mut parts = Vec::new();
    let mut variant = 0u32;
    while out.len() < batches {
        variant += 1;
        for payload in &payloads {
            // Fresh trace ids: the last four bytes xor-ed with the variant.
            let scanned = SpanBatch::scan(Bytes::from(payload.clone()))?;
            let mut raw = payload.clone();
            for e in &scanned.index.spans {
                let id = SpanView::new(&scanned.buf[e.range.start as usize..e.range.end as usize])
                    .trace_id();
                let at = id.as_ptr() as usize - scanned.buf.as_ptr() as usize;
                for (i, b) in variant.to_le_bytes().iter().enumerate() {
                    raw[at + 12 + i] ^= b;
                }
            }
            let request = SpanBatch::scan(Bytes::from(raw))?;
            request
                .index
                .partition(CORES, |t| owner_core(t, CORES), &mut parts);
            let part = SpanBatch {
                buf: request.buf.clone(),
                index: std::mem::take(&mut parts[0]),
                release_token: None,
            };
            let mut piece = Encoded::new();
            encode_traces(&part, &mut piece);
            let n = part.index.spans.len();
            if spans > 0 && (spans + n > BATCH_SPANS || bytes + piece.len > BATCH_BYTES) {
                out.push((
                    std::mem::take(&mut chunks),
                    spans,
                    std::mem::take(&mut indexed),
                ));
                (spans, bytes) = (0, 0);
            }
            spans += n;
            bytes += piece.len;
            chunks.extend(piece.chunks);
            indexed.push(Arc::new(part));
        }
    }
    out.truncate(batches);
    Ok(out)
}

fn join(chunks: &[Bytes]) -> Bytes {
    let mut out = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in chunks {
        out.extend_from_slice(c);
    }
    Bytes::from(out)
}

fn send(producer: &BaseProducer, key: &[u8], value: &[u8]) -> Result<()> {
    let topic = std::env::var("TOPIC").unwrap_or_else(|_| "otlp_spans".into());
    loop {
        match producer.send(BaseRecord::to(&topic).key(key).payload(value)) {
            Ok(()) => return Ok(()),
            Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                producer.poll(std::time::Duration::from_millis(5));
            }
            Err((e, _)) => bail!("enqueue failed: {e}"),
        }
    }
}

/// The exporter's path before this change (its `trace_messages` and send loop).
fn before(producer: &BaseProducer, chunks: &[Bytes]) -> Result<usize> {
    let batch = SpanBatch::scan(join(chunks))?;
    let spans = &batch.index.spans;
    let mut order: Vec<u32> = (0..spans.len() as u32).collect();
    order.sort_by(|a, b| {
        spans[*a as usize]
            .trace_id
            .cmp(&spans[*b as usize].trace_id)
    });
    let mut values: Vec<([u8; 16], Bytes)> = Vec::new();
    let mut enc = Encoded::new();
    for trace in order.chunk_by(|a, b| spans[*a as usize].trace_id == spans[*b as usize].trace_id) {
        enc.clear();
        encode_trace_spans(&batch, trace, &mut enc);
        values.push((spans[trace[0] as usize].trace_id, enc.to_bytes()));
    }
    for (key, value) in &values {
        send(producer, key, value)?;
    }
    Ok(values.len())
}

/// The exporter's path now, from a batch of bytes (a disk queue).
fn after(producer: &BaseProducer, chunks: &[Bytes]) -> Result<usize> {
    let messages = shardtel_sinks::TraceMessages::new(join(chunks), MAX_MESSAGE_BYTES - 1085)?;
    produce_all(producer, messages)
}

/// The exporter's path from the owner cores' indexes (the default memory queue).
fn indexed(producer: &BaseProducer, parts: &[Arc<SpanBatch>]) -> Result<usize> {
    let messages =
        shardtel_sinks::TraceMessages::from_batches(parts.to_vec(), MAX_MESSAGE_BYTES - 1085);
    produce_all(producer, messages)
}

/// Writes every message into a reused buffer and hands it to librdkafka; returns how many.
fn produce_all(
    producer: &BaseProducer,
    mut messages: shardtel_sinks::TraceMessages,
) -> Result<usize> {
    let mut value = Vec::with_capacity(64 << 10);
    let mut n = 0;
    while let Some((key, _)) = messages.next_into(&mut value) {
        send(producer, &key, &value)?;
        n += 1;
    }
    Ok(n)
}
