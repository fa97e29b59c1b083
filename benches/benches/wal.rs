//! Write-ahead log frames: header encoding with CRC32C over request-sized payloads, and
//! decoding (checksum verification) as recovery and readers do it.
#![forbid(unsafe_code)]

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardtel_wal::frame;

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_frame");
    for size in [512usize, 4 << 10, 36 << 10, 1 << 20] {
        let payload = Bytes::from((0..size).map(|i| (i * 31) as u8).collect::<Vec<u8>>());
        let chunks = [payload.clone()];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::new("encode_header_crc", size),
            &chunks,
            |b, c| b.iter(|| frame::encode_header(1, 42, c)),
        );
        let mut encoded = Vec::new();
        frame::encode(1, 42, &payload, &mut encoded);
        group.bench_with_input(BenchmarkId::new("decode_verify", size), &encoded, |b, e| {
            b.iter(|| frame::decode(e).expect("valid frame").0.lsn)
        });
    }
    group.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
