//! A fixed loop over the receiving core's per-request work — scan, then (with `route`)
//! partition the spans between 2 owner cores — for instruction counts under callgrind, which
//! are repeatable on a busy machine where wall-clock benches are not:
//!
//! ```sh
//! cargo build --release -p shardtel-protocol --example scan_ir
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/scan.cg \
//!   target/release/examples/scan_ir scan 2000 benches/data/traces-000.pb benches/data/traces-001.pb
//! ```
//!
//! Ir/span = (total Ir of `scan ITER` − total Ir of `scan 0`) / (ITER × spans per loop); the
//! difference removes start-up and reading the files. The example prints the spans per loop.
#![forbid(unsafe_code)]

use shardtel_protocol::route::owner_core;
use shardtel_protocol::scan::TracesIndex;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: scan_ir scan|route ITERATIONS PAYLOAD.pb...";
    let (Some(mode), Some(iterations)) = (args.first(), args.get(1)) else {
        panic!("{usage}");
    };
    let route = match mode.as_str() {
        "scan" => false,
        "route" => true,
        _ => panic!("{usage}"),
    };
    let iterations: u64 = iterations.parse().expect(usage);
    let payloads: Vec<Vec<u8>> = args[2..]
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("reading {f}: {e}")))
        .collect();
    let mut index = TracesIndex::default();
    let mut parts = Vec::new();
    let mut spans = 0u64;
    for p in &payloads {
        index.scan(p).expect("payload scans");
        spans += index.spans.len() as u64;
    }
    let mut sink = 0usize;
    for _ in 0..iterations {
        for p in &payloads {
            index.scan(std::hint::black_box(p)).expect("payload scans");
            if route {
                index.partition(2, |t| owner_core(t, 2), &mut parts);
                sink += parts.len();
            }
            sink += index.spans.len();
        }
    }
    println!("spans per loop: {spans}; checksum {sink}");
}
