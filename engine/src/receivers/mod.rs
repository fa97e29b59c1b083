//! Receivers: where data enters a core. Each receiver turns what it receives into decoded
//! OTLP protobuf requests and hands them to the core's [`Intake`], the one narrow interface it
//! gets (admission and charging, limits, decoding ([`decode`]), ingest, the draining signal,
//! counters).
//!
//! - [`otlp`]: OTLP/gRPC (:4317) and OTLP/HTTP (:4318) servers on every core (the same ports,
//!   SO_REUSEPORT), hyper on glommio, optionally over TLS (mTLS) and with bearer tokens, and
//!   the bounds on the connections they serve.
//! - [`kafka`]: one consumer of the group per core; consecutive messages of one signal
//!   ingested as one request, offsets committed only once their data was handed on.
//! - [`prometheus`]: scrapes Prometheus targets, each owned by one core, and ingests what it
//!   scrapes as OTLP metrics (translated by `shardtel_protocol::exposition`).
//! - [`zipkin`] (:9411), [`jaeger`] (:14250 gRPC, :14268 Thrift over HTTP) and
//!   [`fluentforward`] (:24224): other formats, translated to OTLP on the receiving core by
//!   `shardtel_protocol::translate`, on the listeners, limits and timeouts of [`listener`].
//! - [`security`]: TLS (mTLS) and bearer tokens for every server receiver (`otlp`, `zipkin`,
//!   `jaeger`, `fluentforward`): one implementation, counted per receiver and listener.
//!
//! A receiver for another format translates to OTLP protobuf once, on the receiving core, and
//! enters the same intake. Uses the pipeline (through the intake), the memory limiter and
//! telemetry; knows nothing of reactors or the process.

pub mod decode;
pub mod fluentforward;
pub mod intake;
pub mod jaeger;
pub mod kafka;
pub mod listener;
pub mod otlp;
pub mod prometheus;
pub mod security;
pub mod timeouts;
pub mod zipkin;

pub use intake::{
    InflightGuard, Intake, Limits, ReceiverCounters, ReceiverSnapshot, Transport, TRANSPORTS,
};
