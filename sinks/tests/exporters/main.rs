//! Exporter tests against real servers on 127.0.0.1 (hyper on glommio) and
//! real files: one module per exporter kind, plus the queue's bounds.

mod disk_queue;
mod file;
mod grpc;
mod http;
mod queue;
mod support;
