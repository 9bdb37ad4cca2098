//! Event parsing throughput: `cargo bench --bench parse` (the events average about 300 bytes as
//! JSON, 200 as Avro datums of schemas/clickstream_event.avsc).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sessionize::event::Validator;
use sessionize::event::avro::{AvroDecoder, EVENT_SCHEMA, encode_json_event};

fn lines() -> Vec<String> {
    (0..10_000)
        .map(|i| {
            let ts = if i % 2 == 0 {
                format!("\"{}\"", 1_772_323_200_000u64 + i * 1000)
            } else {
                (1_772_323_200_000u64 + i * 1000).to_string()
            };
            format!(
                r#"{{"event_id":"e-{i:08x}","page_name":"hotel_details","event_timestamp":{ts},"booking_details":{{"hotel_id":"h-{}","nights":2}},"uuid":"2f1c7a4e-{:04x}-4bde-9d1e-5a3c9b7e{:04x}","event_details":{{"event_name":"click","event_type":"interaction","event_value":"book_now"}}}}"#,
                i % 97,
                i % 5000,
                i % 7919
            )
        })
        .collect()
}

fn parse(c: &mut Criterion) {
    let lines = lines();
    let validator = Validator {
        max_event_bytes: 1 << 20,
        max_future_skew_ms: 86_400_000,
        now_ms: 1_800_000_000_000,
    };
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("valid_events", |b| {
        b.iter(|| {
            lines
                .iter()
                .filter(|l| validator.parse(l.as_bytes()).is_ok())
                .count()
        })
    });
    let avro = AvroDecoder::with_schema(EVENT_SCHEMA).unwrap();
    let schema = avro.schema().unwrap();
    let datums: Vec<Vec<u8>> = lines
        .iter()
        .map(|l| encode_json_event(&schema, l.as_bytes()).unwrap())
        .collect();
    group.bench_function("valid_events_avro", |b| {
        b.iter(|| {
            datums
                .iter()
                .filter(|d| avro.decode(&validator, d).is_ok())
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
