use shardtel_protocol::route::owner_core;
use shardtel_protocol::scan::TracesIndex;
#[test]
fn perf_loop() {
    let ps: Vec<Vec<u8>> = ["traces-000.pb", "traces-001.pb"]
        .iter()
        .map(|f| {
            std::fs::read(format!(
                "{}/../benches/data/{f}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        })
        .collect();
    let mut idx = TracesIndex::default();
    let mut parts = Vec::new();
    let iters: usize = std::env::var("ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20000);
    let part = std::env::var("PART").is_ok();
    let mut spans = 0usize;
    let t = std::time::Instant::now();
    for _ in 0..iters {
        for p in &ps {
            idx.scan(std::hint::black_box(p)).unwrap();
            spans += idx.spans.len();
            if part {
                idx.partition(2, |t| owner_core(t, 2), &mut parts);
            }
        }
    }
    let e = t.elapsed();
    println!(
        "spans {spans} wall {:?} => {:.2} M/s wall",
        e,
        spans as f64 / e.as_secs_f64() / 1e6
    );
}
