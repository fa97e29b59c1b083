//! End-to-end tests: real `shardtel` processes, real OTLP clients, real
//! files. One binary, a module per feature.

mod backends;
mod cli;
mod connections;
mod docs;
mod durability;
mod errors;
mod forward;
mod gen;
mod grpc_client;
mod hardening;
mod harness;
mod jaeger_backend;
mod kafka;
mod kafka_auth;
mod kafka_restart;
mod loadgen;
mod loki;
mod otelcol;
mod otelcol_kafka;
mod processors;
mod prometheus;
mod receive;
mod route_processor;
mod routing;
mod sampling;
mod sampling_memory;
mod shutdown;
mod spanmetrics;
mod stack_example;
mod test_config;
mod transform;
mod victorialogs;
mod victoriametrics;
