//! A fixed loop over a translating receiver's per-request work — a Jaeger `PostSpansRequest`
//! or a Zipkin v2 JSON body to an OTLP `ExportTraceServiceRequest` — for instruction counts
//! under callgrind (repeatable on a busy machine) and for `perf`:
//!
//! ```sh
//! cargo build --release -p shardtel-protocol --example translate_ir
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/jaeger.cg \
//!   target/release/examples/translate_ir jaeger 200 /tmp/jaeger.pb
//! ```
//!
//! The payloads come from `benches/e2e/receivers_driver.py encode` (the OpenTelemetry Python
//! SDK's exporters). Ir/span = (Ir of `N` − Ir of `0`) / (N × spans); prints the spans and the
//! wall time per span.
#![forbid(unsafe_code)]

use std::time::Instant;

use shardtel_protocol::translate::{jaeger, zipkin};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: translate_ir jaeger|zipkin ITERATIONS PAYLOAD";
    let (Some(kind), Some(iterations), Some(path)) = (args.first(), args.get(1), args.get(2))
    else {
        panic!("{usage}");
    };
    let iterations: u64 = iterations.parse().expect(usage);
    let body = std::fs::read(path).expect("payload");
    let translate = |body: &[u8]| match kind.as_str() {
        "jaeger" => jaeger::proto_to_otlp(body).expect("a valid PostSpansRequest"),
        "zipkin" => zipkin::json_v2_to_otlp(body, zipkin::ZipkinOptions::default())
            .expect("a valid Zipkin v2 JSON body"),
        _ => panic!("{usage}"),
    };
    let spans = translate(&body).items;
    let start = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..iterations {
        bytes += std::hint::black_box(translate(std::hint::black_box(&body)))
            .request
            .len();
    }
    let ns = start.elapsed().as_nanos() as f64;
    println!(
        "{kind}: {spans} spans per request, {} OTLP bytes per request, {:.0} ns per span",
        bytes / iterations.max(1) as usize,
        ns / (iterations.max(1) * spans as u64) as f64
    );
}
