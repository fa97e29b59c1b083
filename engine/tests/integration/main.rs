//! End-to-end tests: real `shardtel` processes, real OTLP clients, real
//! files. One binary, a module per feature.

mod cli;
mod clients;
mod connections;
mod docs;
mod durability;
mod errors;
mod fluentforward;
mod forward;
mod gen;
mod grpc_client;
mod harness;
mod jaeger;
mod kafka;
mod kafka_auth;
mod kafka_restart;
mod loadgen;
mod loki;
mod otelcol;
mod processors;
mod prometheus;
mod receive;
mod routing;
mod sampling;
mod sampling_memory;
mod shutdown;
mod test_config;
mod zipkin;
