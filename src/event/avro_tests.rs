//! The Avro decoder against a reference: apache_avro decodes the whole datum into values, and the
//! event's fields are taken from them by name, as the decoder did before it walked datums itself.
//! Writer schemas are drawn with the event's fields in any order and of any type a producer might
//! give them, among fields of every other kind; both sides must accept the same datums and read
//! the same events from them, and refuse the same damaged ones.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::types::Value;
use proptest::prelude::*;

use super::avro::AvroDecoder;
use super::avro_bounds::collect_names;
use super::{Event, Validator};

const VALIDATOR: Validator = Validator {
    max_event_bytes: 1 << 16,
    max_future_skew_ms: 86_400_000,
    now_ms: 1_772_323_200_000,
};

/// The event as the reference reads it; `None` for a datum it refuses.
fn reference(schema: &Schema, datum: &[u8]) -> Option<Event<'static>> {
    // apache_avro reads a union index or a string cut short by the end of its input as null: on
    // padded input, a datum cut short reads into the padding instead, and is refused.
    const PADDING: [u8; 8] = [0; 8];
    let padded = [datum, &PADDING].concat();
    let mut rest = &padded[..];
    let value = apache_avro::from_avro_datum(schema, &mut rest, None).ok()?;
    // The one bound the walk adds: no more than 2^16 items of no bytes (here, nulls in arrays).
    if rest.len() != PADDING.len() || empty_items(&value) > 1 << 16 {
        return None;
    }
    let Value::Record(fields) = value else {
        return None;
    };
    let mut event = HashMap::new();
    let mut details = Vec::new();
    for (name, value) in fields {
        match (name.as_str(), without_union(value)) {
            ("event_details", Value::Record(fields)) => details = fields,
            ("event_details", Value::Null) => {}
            ("event_details", _) => return None,
            (name, value) => {
                event.insert(name.to_string(), value);
            }
        }
    }
    let text = |field: &str| match event.get(field) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s) | Value::Enum(_, s)) => Some(Some(s.clone())),
        Some(_) => None,
    };
    let detail = |field: &str| {
        details
            .iter()
            .find(|(name, _)| name == field)
            .and_then(|(_, v)| match without_union(v.clone()) {
                Value::String(s) | Value::Enum(_, s) => Some(s.into()),
                _ => None,
            })
    };
    let millis = match event.get("event_timestamp")? {
        Value::Long(ms) | Value::TimestampMillis(ms) => *ms,
        Value::Int(ms) => i64::from(*ms),
        Value::TimestampMicros(us) => us.div_euclid(1000),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()?
        }
        _ => return None,
    };
    let event_time_ms = VALIDATOR
        .check_time(Some(u64::try_from(millis).ok()?))
        .ok()?;
    Some(Event {
        user_id: text("uuid")?.filter(|s| !s.is_empty())?.into(),
        event_id: text("event_id")?.filter(|s| !s.is_empty())?.into(),
        page_name: text("page_name")?.map(Into::into),
        event_time_ms,
        event_name: detail("event_name"),
        event_type: detail("event_type"),
    })
}

fn empty_items(value: &Value) -> usize {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| usize::from(*item == Value::Null) + empty_items(item))
            .sum(),
        Value::Record(fields) => fields.iter().map(|(_, v)| empty_items(v)).sum(),
        Value::Map(entries) => entries.values().map(empty_items).sum(),
        Value::Union(_, inner) => empty_items(inner),
        _ => 0,
    }
}

fn without_union(value: Value) -> Value {
    match value {
        Value::Union(_, inner) => *inner,
        other => other,
    }
}

/// A writer schema: the event's fields of the types picked by `types`, with a few fields of every
/// other kind, all in an order drawn from `order`.
fn writer_schema(types: [usize; 4], order: u64) -> String {
    const UUID: [&str; 3] = [
        r#""string""#,
        r#"["null","string"]"#,
        r#"["string","long"]"#,
    ];
    const TIMESTAMP: [&str; 8] = [
        r#""long""#,
        r#""int""#,
        r#"{"type":"long","logicalType":"timestamp-millis"}"#,
        r#"{"type":"long","logicalType":"timestamp-micros"}"#,
        r#""string""#,
        r#"["null","long","string"]"#,
        r#""double""#,
        r#"{"type":"int","logicalType":"date"}"#,
    ];
    const PAGE: [&str; 4] = [
        r#"["null","string"]"#,
        r#"{"type":"enum","name":"Page","symbols":["home","search","cart"]}"#,
        r#""string""#,
        r#"["null","string","long","boolean"]"#,
    ];
    let details_fields = shuffled(
        vec![
            r#"{"name":"event_name","type":["null","string","long"]}"#,
            r#"{"name":"event_type","type":{"type":"enum","name":"Kind","symbols":["click","view"]}}"#,
            r#"{"name":"event_value","type":["null","double","string"]}"#,
            r#"{"name":"tags","type":{"type":"map","values":{"type":"array","items":["null","long"]}}}"#,
        ],
        order.rotate_left(17),
    )
    .join(",");
    let details = format!(r#"{{"type":"record","name":"Details","fields":[{details_fields}]}}"#);
    let event_details = match types[3] % 4 {
        0 => format!(r#"["null",{details}]"#),
        1 => details,
        2 => r#"{"type":"map","values":"string"}"#.to_string(),
        _ => r#""null""#.to_string(),
    };
    let fields = vec![
        format!(r#"{{"name":"uuid","type":{}}}"#, UUID[types[0] % 3]),
        r#"{"name":"event_id","type":"string"}"#.to_string(),
        format!(
            r#"{{"name":"event_timestamp","type":{}}}"#,
            TIMESTAMP[types[1] % 8]
        ),
        format!(r#"{{"name":"page_name","type":{}}}"#, PAGE[types[2] % 4]),
        format!(r#"{{"name":"event_details","type":{event_details}}}"#),
        r#"{"name":"booking","type":["null",{"type":"record","name":"Booking","fields":[
            {"name":"nights","type":"int"},{"name":"raw","type":"bytes"},
            {"name":"paid","type":"boolean"},{"name":"rate","type":"float"}]}]}"#
            .to_string(),
        r#"{"name":"previous","type":["null","Booking"]}"#.to_string(),
        r#"{"name":"digest","type":{"type":"fixed","name":"Digest","size":3}}"#.to_string(),
        r#"{"name":"seen","type":{"type":"array","items":"null"}}"#.to_string(),
        r#"{"name":"at","type":{"type":"long","logicalType":"time-micros"}}"#.to_string(),
    ];
    // `previous` refers to `Booking`, which must be defined before it.
    let (mut fields, previous): (Vec<_>, Vec<_>) = shuffled(fields, order)
        .into_iter()
        .partition(|field| !field.contains(r#""previous""#));
    let booking = fields.iter().position(|f| f.contains("Booking")).unwrap();
    fields.splice(booking + 1..booking + 1, previous);
    format!(
        r#"{{"type":"record","name":"Event","fields":[{}]}}"#,
        fields.join(",")
    )
}

fn shuffled<T>(mut items: Vec<T>, mut seed: u64) -> Vec<T> {
    for i in (1..items.len()).rev() {
        seed = next(seed);
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    items
}

/// splitmix64: the draws of a test, reproducible from its seed.
fn next(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A value of `schema` drawn from `seed`: strings, numbers and branches an event may hold,
/// including the empty, the negative, the future and the digits-only.
fn arbitrary(
    schema: &Schema,
    names: &HashMap<apache_avro::schema::Name, Schema>,
    seed: &mut u64,
) -> Value {
    *seed = next(*seed);
    let draw = *seed;
    const TEXTS: [&str; 6] = ["u1", "", "1772323100000", "héllo", "home", "e-42"];
    const NUMBERS: [i64; 6] = [
        1_772_323_100_000,
        1_772_323_100_000_000,
        -5,
        0,
        4_102_444_800_000,
        1_772_323_199_999,
    ];
    let number = NUMBERS[(draw % 6) as usize];
    match schema {
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(draw.is_multiple_of(2)),
        Schema::Int => Value::Int((draw % 1000) as i32 - 500),
        Schema::Long => Value::Long(number),
        Schema::TimestampMillis => Value::TimestampMillis(number),
        Schema::TimestampMicros => Value::TimestampMicros(number),
        Schema::TimeMicros => Value::TimeMicros(number),
        Schema::Date => Value::Date(20_000),
        Schema::Float => Value::Float(1.5),
        Schema::Double => Value::Double(number as f64),
        Schema::String => Value::String(TEXTS[(draw % 6) as usize].to_string()),
        Schema::Bytes => Value::Bytes(vec![0xff, 0, 7][..(draw % 4) as usize].to_vec()),
        Schema::Fixed(fixed) => Value::Fixed(fixed.size, vec![9; fixed.size]),
        Schema::Enum(e) => {
            let index = (draw % e.symbols.len() as u64) as usize;
            Value::Enum(index as u32, e.symbols[index].clone())
        }
        Schema::Union(union) => {
            let index = (draw % union.variants().len() as u64) as usize;
            let value = arbitrary(&union.variants()[index], names, seed);
            Value::Union(index as u32, Box::new(value))
        }
        Schema::Record(record) => Value::Record(
            record
                .fields
                .iter()
                .map(|field| (field.name.clone(), arbitrary(&field.schema, names, seed)))
                .collect(),
        ),
        Schema::Array(array) => Value::Array(
            (0..draw % 3)
                .map(|_| arbitrary(&array.items, names, seed))
                .collect(),
        ),
        Schema::Map(map) => Value::Map(
            (0..draw % 3)
                .map(|i| (format!("k{i}"), arbitrary(&map.types, names, seed)))
                .collect(),
        ),
        Schema::Ref { name } => arbitrary(&names[name], names, seed),
        other => unreachable!("the test's schemas hold no {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_walk_reads_what_apache_avro_decodes(
        types in proptest::array::uniform4(0usize..8),
        order in any::<u64>(),
        mut values in any::<u64>(),
        damage in any::<(usize, u8)>(),
    ) {
        let text = writer_schema(types, order);
        let schema = Schema::parse_str(&text).unwrap();
        let mut names = HashMap::new();
        collect_names(&schema, &mut names);
        let decoder = AvroDecoder::with_schema(&text).unwrap();
        for _ in 0..16 {
            let value = arbitrary(&schema, &names, &mut values);
            let datum = apache_avro::to_avro_datum(&schema, value).unwrap();
            let expected = reference(&schema, &datum);
            prop_assert_eq!(decoder.decode(&VALIDATOR, &datum).ok(), expected, "{}", text);
            // Damaged: cut short, or one byte changed. Both sides refuse or read the same.
            let cut = &datum[..damage.0 % datum.len()];
            prop_assert_eq!(decoder.decode(&VALIDATOR, cut).ok(), reference(&schema, cut));
            let mut changed = datum.clone();
            changed[damage.0 % datum.len()] ^= damage.1;
            prop_assert_eq!(decoder.decode(&VALIDATOR, &changed).ok(), reference(&schema, &changed));
            prop_assert!(decoder.to_json(&datum).is_some(), "the late-events table renders it");
        }
    }
}
