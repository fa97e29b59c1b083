//! Instructions per span of the owner core's path with the routing, transform and spanmetrics
//! processors (`shardtel_benches::routing_path`), counted by callgrind, which repeats on a
//! noisy machine where criterion's times do not:
//!
//! ```sh
//! cargo build --release -p shardtel-benches --bin shardtel-routing-ir
//! for case in baseline idle_routing noop_transform; do
//!   for n in 0 200; do
//!     valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!       target/release/shardtel-routing-ir $case $n 2>&1 | grep 'refs:'
//!   done
//! done
//! ```
//!
//! `(Ir at n=200 − Ir at n=0) / (200 × spans per round)` is one span's instructions (the set-up,
//! building the processors and reading the payloads, cancels out). Prints the spans per round.
#![forbid(unsafe_code)]

use bytes::Bytes;
use shardtel_benches::routing_path::{processors_of, trip};
use shardtel_benches::trace_payloads;
use shardtel_protocol::scan::SpanBatch;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(case), Some(rounds)) = (args.next(), args.next()) else {
        eprintln!("usage: shardtel-routing-ir CASE ROUNDS");
        std::process::exit(2);
    };
    let rounds: usize = rounds.parse().expect("ROUNDS is a number");
    let Some(p) = processors_of(&case) else {
        eprintln!("unknown case {case}");
        std::process::exit(2);
    };
    let payloads: Vec<Bytes> = trace_payloads().into_iter().map(Bytes::from).collect();
    let spans: usize = payloads
        .iter()
        .map(|b| {
            SpanBatch::scan(b.clone())
                .expect("payload scans")
                .index
                .spans
                .len()
        })
        .sum();
    let mut groups = Vec::new();
    let mut len = 0;
    for _ in 0..rounds {
        for buf in &payloads {
            len += trip(std::hint::black_box(buf), &p, &mut groups);
        }
    }
    println!("case {case}: {rounds} rounds of {spans} spans, {len} bytes out");
}
