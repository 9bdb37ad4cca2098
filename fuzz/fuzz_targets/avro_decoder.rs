//! Fuzzes Avro decoding: `sessionize::event::avro::AvroDecoder::decode` must never panic, abort
//! or allocate beyond the record's size. Every byte string yields either an event or a
//! `Rejection`, whatever its lengths and block counts claim. The first byte picks the writer
//! schema: the event schema, or one of maps, arrays and nulls, whose block counts are the
//! hostile part.
//!
//! Run it from the `fuzz/` directory with a nightly toolchain (`-rss_limit_mb` makes an
//! allocation the size of a claimed count a failure):
//!
//! ```text
//! cargo +nightly fuzz run avro_decoder -- -max_total_time=60 -rss_limit_mb=512
//! ```
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sessionize::event::Validator;
use sessionize::event::avro::{AvroDecoder, EVENT_SCHEMA};

const VALIDATOR: Validator = Validator {
    max_event_bytes: 1 << 20,
    max_future_skew_ms: 86_400_000,
    now_ms: 1_772_323_200_000,
};

const BLOCKS: &str = r#"{"type":"record","name":"Blocks","fields":[
    {"name":"uuid","type":"string"},
    {"name":"tags","type":{"type":"map","values":{"type":"array","items":["null","long"]}}},
    {"name":"seen","type":{"type":"array","items":"null"}},
    {"name":"raw","type":{"type":"fixed","name":"Raw","size":16}}]}"#;

static DECODERS: LazyLock<[AvroDecoder; 2]> = LazyLock::new(|| {
    [EVENT_SCHEMA, BLOCKS].map(|schema| AvroDecoder::with_schema(schema).expect("a valid schema"))
});

fuzz_target!(|data: &[u8]| {
    let Some((&choice, datum)) = data.split_first() else {
        return;
    };
    let decoder = &DECODERS[usize::from(choice) % DECODERS.len()];
    // Either outcome is fine; a panic, an abort or a huge allocation is the bug.
    let _ = decoder.decode(&VALIDATOR, datum);
    let _ = decoder.to_json(datum);
});
