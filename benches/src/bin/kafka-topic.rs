//! `shardtel-kafka-topic`: the Kafka side of the Kafka benchmarks (`benches/e2e/kafka.sh`,
//! `benches/kafka/callgrind.sh`), with the same librdkafka the engine uses.
//!
//! ```text
//! shardtel-kafka-topic create BROKER TOPIC PARTITIONS     create a topic (an existing one is an error)
//! shardtel-kafka-topic count  BROKER TOPIC PARTITIONS SPANS SECS
//!     read every partition from the start until SPANS spans arrived (or SECS passed);
//!     every value must decode as an ExportTraceServiceRequest; prints
//!     "messages M bytes B spans S unique U" and exits 1 if fewer than SPANS spans arrived
//! ```
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("missing argument {i}; see the header of {}", file!()))
    };
    match arg(0)? {
        "create" => create(arg(1)?, arg(2)?, arg(3)?.parse()?),
        "count" => count(
            arg(1)?,
            arg(2)?,
            arg(3)?.parse()?,
            arg(4)?.parse()?,
            arg(5)?.parse()?,
        ),
        other => bail!("unknown command {other:?} (create, count)"),
    }
}

fn create(broker: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures_lite::future::block_on(admin.create_topics([&new], &options))?;
    for r in results {
        r.map_err(|(t, e)| anyhow::anyhow!("failed to create topic {t}: {e}"))?;
    }
    Ok(())
}

fn count(broker: &str, topic: &str, partitions: i32, want: u64, secs: u64) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set(
            "group.id",
            format!("shardtel-kafka-topic-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let (mut messages, mut bytes, mut spans) = (0u64, 0u64, 0u64);
    let mut unique: HashSet<[u8; 24]> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while spans < want && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let payload = m.payload().unwrap_or_default();
                let req = ExportTraceServiceRequest::decode(payload).with_context(|| {
                    format!(
                        "message {}[{}] @{} is not an ExportTraceServiceRequest",
                        topic,
                        m.partition(),
                        m.offset()
                    )
                })?;
                messages += 1;
                bytes += payload.len() as u64;
                for s in req
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .flat_map(|s| &s.spans)
                {
                    spans += 1;
                    let mut id = [0u8; 24];
                    if s.trace_id.len() == 16 && s.span_id.len() == 8 {
                        id[..16].copy_from_slice(&s.trace_id);
                        id[16..].copy_from_slice(&s.span_id);
                    }
                    unique.insert(id);
                }
            }
            Some(Err(e)) => eprintln!("shardtel-kafka-topic: {e}"),
            None => {}
        }
    }
    println!(
        "messages {messages} bytes {bytes} spans {spans} unique {}",
        unique.len()
    );
    if spans < want {
        bail!("{spans} of {want} spans arrived in {secs} s");
    }
    Ok(())
}
