//! Avro events: one datum per Kafka record, of any writer schema whose fields carry the event's
//! names (`uuid`, `event_id`, `event_timestamp`, `page_name`, `event_details{event_name,
//! event_type}`), read by name so that producers may add, reorder or drop optional fields.
//!
//! A record is either a plain datum of the schema given with `--avro-schema`, or in the Confluent
//! wire format: a zero byte, the 4-byte big-endian id of its schema in a schema registry, then the
//! datum. A record that does not decode is rejected with the reason, as a malformed JSON line is.
//!
//! Each writer schema is compiled once into a walk over its datums (`event/avro_datum.rs`) that
//! reads the event's fields in place and steps over the rest; apache_avro itself only renders a
//! late record as JSON.
//!
//! ```
//! use sessionize::event::Validator;
//! use sessionize::event::avro::{AvroDecoder, EVENT_SCHEMA, encode_json_event};
//! let decoder = AvroDecoder::with_schema(EVENT_SCHEMA).unwrap();
//! let datum = encode_json_event(
//!     &decoder.schema().unwrap(),
//!     br#"{"uuid":"u1","event_id":"e1","event_timestamp":"1700000000000","page_name":"home"}"#,
//! ).unwrap();
//! let v = Validator { max_event_bytes: 1 << 20, max_future_skew_ms: 86_400_000, now_ms: 2_000_000_000_000 };
//! let event = decoder.decode(&v, &datum).unwrap();
//! assert_eq!((event.user_id.as_ref(), event.event_time_ms), ("u1", 1_700_000_000_000));
//! assert!(decoder.decode(&v, b"\x02").unwrap_err().0.contains("Avro"));
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::types::Value;

use super::avro_bounds::BoundedSchema;
use super::avro_datum::{Datum, Details, Leaf};
use super::registry::{Registry, SchemaAnswer};
use super::{Event, Rejection, Validator, required_text};
use crate::retry::Backoff;

/// The schema `sessionize produce --format avro` writes; also `schemas/clickstream_event.avsc`.
pub const EVENT_SCHEMA: &str = include_str!("../../schemas/clickstream_event.avsc");

/// How a schema registry that is unreachable is waited for: a minute, then the run stops (to be
/// restarted when it is back). Records are never quarantined for an outage.
const REGISTRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

/// Decodes Avro records into events. Shared by the workers of a process.
pub struct AvroDecoder {
    writer: WriterSchema,
}

enum WriterSchema {
    /// Every record is a plain datum of this schema.
    Fixed(BoundedSchema),
    /// Records are in the Confluent wire format, their schemas fetched once each by id.
    Registry {
        registry: Registry,
        known: RwLock<KnownSchemas>,
    },
}

/// Schemas fetched by id, and ids refused with the reason. A refusal is asked again after
/// [`REFUSAL_EXPIRY`] (a schema registered late, a permission granted); past [`MAX_KNOWN_IDS`]
/// refusals are forgotten first, then everything, so that records of random ids cannot grow it.
#[derive(Default)]
struct KnownSchemas {
    schemas: HashMap<u32, Arc<BoundedSchema>>,
    refused: HashMap<u32, (String, Instant)>,
}

const REFUSAL_EXPIRY: Duration = Duration::from_secs(60);
const MAX_KNOWN_IDS: usize = 10_000;

impl KnownSchemas {
    fn get(&self, id: u32, now: Instant) -> Option<Result<Arc<BoundedSchema>, String>> {
        if let Some(schema) = self.schemas.get(&id) {
            return Some(Ok(Arc::clone(schema)));
        }
        let (reason, at) = self.refused.get(&id)?;
        (now.duration_since(*at) < REFUSAL_EXPIRY).then(|| Err(reason.clone()))
    }

    fn insert(&mut self, id: u32, found: &Result<Arc<BoundedSchema>, String>, now: Instant) {
        if self.schemas.len() + self.refused.len() >= MAX_KNOWN_IDS {
            self.refused.clear();
            if self.schemas.len() >= MAX_KNOWN_IDS {
                self.schemas.clear();
            }
        }
        match found {
            Ok(schema) => {
                self.refused.remove(&id);
                self.schemas.insert(id, Arc::clone(schema));
            }
            Err(reason) => {
                self.refused.insert(id, (reason.clone(), now));
            }
        }
    }
}

impl AvroDecoder {
    /// Plain datums of the writer schema `schema` (JSON text of an Avro schema).
    pub fn with_schema(schema: &str) -> Result<Self, String> {
        bound_allocations();
        let schema = Schema::parse_str(schema).map_err(|e| format!("invalid Avro schema: {e}"))?;
        Ok(AvroDecoder {
            writer: WriterSchema::Fixed(BoundedSchema::new(schema)?),
        })
    }

    /// Records in the Confluent wire format, with their schemas in `registry`.
    pub fn with_registry(registry: Registry) -> Self {
        bound_allocations();
        AvroDecoder {
            writer: WriterSchema::Registry {
                registry,
                known: RwLock::new(KnownSchemas::default()),
            },
        }
    }

    /// The fixed writer schema, if records are plain datums.
    pub fn schema(&self) -> Option<Schema> {
        match &self.writer {
            WriterSchema::Fixed(bounded) => Some(bounded.schema.clone()),
            WriterSchema::Registry { .. } => None,
        }
    }

    /// Decodes and validates one record; its strings borrow from `record`.
    pub fn decode<'a>(
        &self,
        validator: &Validator,
        record: &'a [u8],
    ) -> Result<Event<'a>, Rejection> {
        if record.len() > validator.max_event_bytes {
            return Err(validator.too_long(record.len() as u64));
        }
        self.with_datum(record, |schema, datum| {
            let values = match schema.plan.read(datum).map_err(invalid_datum)? {
                Datum::Record(values) => values,
                Datum::NotARecord(kind) => {
                    return Err(Rejection(format!(
                        "invalid event: the Avro datum is {kind}, not a record"
                    )));
                }
            };
            let (event_name, event_type) = match values.event_details {
                Details::Absent => (None, None),
                // As in JSON, only string values are read; others are skipped.
                Details::Record {
                    event_name,
                    event_type,
                } => (
                    event_name.and_then(|leaf| text(leaf, "event_name").ok().flatten()),
                    event_type.and_then(|leaf| text(leaf, "event_type").ok().flatten()),
                ),
                Details::Other(kind) => {
                    return Err(Rejection(format!(
                        "`event_details` is {kind}, not a record"
                    )));
                }
            };
            let optional_text = |leaf: Option<Leaf<'a, '_>>, field| match leaf {
                Some(leaf) => text(leaf, field),
                None => Ok(None),
            };
            Ok(Event {
                user_id: required_text(optional_text(values.uuid, "uuid")?, "uuid")?,
                event_id: required_text(optional_text(values.event_id, "event_id")?, "event_id")?,
                event_time_ms: validator
                    .check_time(values.event_timestamp.map(millis).transpose()?.flatten())?,
                page_name: optional_text(values.page_name, "page_name")?,
                event_name,
                event_type,
            })
        })
    }

    /// The record as JSON text (Avro's JSON rendering of the datum), for the late-events table,
    /// whose `raw` column is text; `None` if it does not decode.
    pub fn to_json(&self, record: &[u8]) -> Option<String> {
        self.with_datum(record, |schema, mut datum| {
            // apache_avro trusts lengths and counts; the walk checks them against the bytes first.
            schema.plan.check(datum).map_err(Rejection)?;
            apache_avro::from_avro_datum(&schema.schema, &mut datum, None).map_err(invalid_datum)
        })
        .ok()
        .and_then(|value| serde_json::Value::try_from(value).ok())
        .map(|v| v.to_string())
    }

    /// Calls `read` with the record's writer schema and datum.
    fn with_datum<'a, T>(
        &self,
        record: &'a [u8],
        read: impl FnOnce(&BoundedSchema, &'a [u8]) -> Result<T, Rejection>,
    ) -> Result<T, Rejection> {
        match &self.writer {
            WriterSchema::Fixed(schema) => read(schema, record),
            WriterSchema::Registry { registry, known } => {
                let (id, datum) = wire_format(record)?;
                read(&*lookup(registry, known, id).map_err(Rejection)?, datum)
            }
        }
    }
}

fn invalid_datum(error: impl std::fmt::Display) -> Rejection {
    Rejection(format!("invalid Avro datum: {error}"))
}

/// Bounds what one hostile length prefix can make the decoder allocate (the crate's default is
/// 512 MiB). The first setting in a process holds, for iceberg's manifests too, whose allocations
/// stay far below it.
fn bound_allocations() {
    apache_avro::util::max_allocation_bytes(64 << 20);
}

/// A record in the Confluent wire format: a zero byte, the schema's id, the datum.
pub fn to_wire_format(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(5 + datum.len());
    record.push(0);
    record.extend_from_slice(&schema_id.to_be_bytes());
    record.extend_from_slice(datum);
    record
}

/// Splits a record in the Confluent wire format into its schema id and datum.
fn wire_format(record: &[u8]) -> Result<(u32, &[u8]), Rejection> {
    match record {
        [0, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        [0, ..] | [] => Err(Rejection(format!(
            "record of {} bytes is too short for the Confluent wire format (a zero byte and a \
             4-byte schema id before the Avro datum)",
            record.len()
        ))),
        [first, ..] => Err(Rejection(format!(
            "not in the Confluent wire format: the first byte is 0x{first:02x}, not 0 (JSON \
             records need --format json; plain Avro datums need --avro-schema)"
        ))),
    }
}

/// The schema of `id`, from the cache or the registry. A registry that stays unreachable or failing
/// stops the run (exit code 3): its records are not at fault. An id it refuses (unknown, not
/// Avro, forbidden) quarantines the records that name it.
fn lookup(
    registry: &Registry,
    known: &RwLock<KnownSchemas>,
    id: u32,
) -> Result<Arc<BoundedSchema>, String> {
    let now = Instant::now();
    if let Some(found) = known.read().expect("no panic holds the lock").get(id, now) {
        return found;
    }
    let text = REGISTRY_BACKOFF
        .retry(
            || registry.schema(id),
            |e, _| tracing::warn!(id, error = %e, "schema registry unavailable; retrying"),
        )
        .unwrap_or_else(|e| {
            crate::failure::stop(e.context(format!(
                "cannot fetch Avro schema {id}; restart when the registry answers"
            )))
        });
    let found = match text {
        SchemaAnswer::Avro(text) => Schema::parse_str(&text)
            .map_err(|e| format!("schema id {id} of the registry is not a valid Avro schema: {e}"))
            .and_then(|schema| {
                BoundedSchema::new(schema)
                    .map_err(|e| format!("schema id {id} of the registry: {e}"))
            })
            .map(Arc::new),
        SchemaAnswer::Refused(reason) => Err(reason),
    };
    known
        .write()
        .expect("no panic holds the lock")
        .insert(id, &found, now);
    found
}

/// A text field's value: a string or an enum symbol, or null.
fn text<'a>(leaf: Leaf<'a, '_>, field: &str) -> Result<Option<Cow<'a, str>>, Rejection> {
    match leaf {
        Leaf::Null => Ok(None),
        Leaf::Text(text) => Ok(Some(Cow::Borrowed(text))),
        Leaf::Symbol(symbol) => Ok(Some(Cow::Owned(symbol.to_owned()))),
        other => Err(Rejection(format!(
            "`{field}` is {}, not a string",
            other.kind()
        ))),
    }
}

/// `event_timestamp` as epoch milliseconds: a long or int, a timestamp (millis or micros), or a
/// string of digits, as JSON allows.
fn millis(leaf: Leaf) -> Result<Option<u64>, Rejection> {
    let signed = match leaf {
        Leaf::Null => return Ok(None),
        Leaf::Number(ms) | Leaf::TimestampMillis(ms) => ms,
        Leaf::TimestampMicros(us) => us.div_euclid(1000),
        Leaf::Text(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            return s
                .parse()
                .map(Some)
                .map_err(|_| Rejection(format!("`event_timestamp` is out of range ({s:?})")));
        }
        Leaf::Text(s) | Leaf::Symbol(s) => {
            return Err(Rejection(format!(
                "`event_timestamp` is not numeric ({s:?})"
            )));
        }
        other => {
            return Err(Rejection(format!(
                "`event_timestamp` is {}, not epoch milliseconds",
                other.kind()
            )));
        }
    };
    u64::try_from(signed)
        .map(Some)
        .map_err(|_| Rejection(format!("`event_timestamp` is negative ({signed})")))
}

/// Encodes a JSON event as a datum of `schema` (our [`EVENT_SCHEMA`]), for `sessionize produce
/// --format avro`; `None` if the line does not fit the schema (it is sent as it is, as a
/// malformed record).
pub fn encode_json_event(schema: &Schema, line: &[u8]) -> Option<Vec<u8>> {
    let json: serde_json::Value = serde_json::from_slice(line).ok()?;
    let object = json.as_object()?;
    let optional_text = |value: Option<&serde_json::Value>| match value {
        None | Some(serde_json::Value::Null) => Value::Union(0, Box::new(Value::Null)),
        Some(serde_json::Value::String(s)) => Value::Union(1, Box::new(Value::String(s.clone()))),
        Some(other) => Value::Union(1, Box::new(Value::String(other.to_string()))),
    };
    let string = |name: &str| Some(Value::String(object.get(name)?.as_str()?.to_string()));
    let timestamp = match object.get("event_timestamp")? {
        serde_json::Value::Number(n) => n.as_i64()?,
        serde_json::Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    let details = match object.get("event_details") {
        None | Some(serde_json::Value::Null) => Value::Union(0, Box::new(Value::Null)),
        Some(serde_json::Value::Object(details)) => Value::Union(
            1,
            Box::new(Value::Record(vec![
                (
                    "event_name".into(),
                    optional_text(details.get("event_name")),
                ),
                (
                    "event_type".into(),
                    optional_text(details.get("event_type")),
                ),
                (
                    "event_value".into(),
                    optional_text(details.get("event_value")),
                ),
            ])),
        ),
        Some(_) => return None,
    };
    let page_name = match object.get("page_name") {
        None | Some(serde_json::Value::Null | serde_json::Value::String(_)) => {
            optional_text(object.get("page_name"))
        }
        Some(_) => return None,
    };
    let record = Value::Record(vec![
        ("event_id".into(), string("event_id")?),
        ("page_name".into(), page_name),
        ("event_timestamp".into(), Value::TimestampMillis(timestamp)),
        (
            "booking_details".into(),
            optional_text(object.get("booking_details")),
        ),
        ("uuid".into(), string("uuid")?),
        ("event_details".into(), details),
    ]);
    apache_avro::to_avro_datum(schema, record).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recursive_and_deep_schemas_are_refused_by_name() {
        let list = r#"{"type":"record","name":"Node","fields":[{"name":"uuid","type":"string"},
            {"name":"next","type":["null","Node"]}]}"#;
        let error = AvroDecoder::with_schema(list).err().unwrap();
        assert!(
            error.contains("recursive") && error.contains("Node"),
            "{error}"
        );
        let through_an_array = r#"{"type":"record","name":"Tree","fields":[
            {"name":"children","type":{"type":"array","items":"Tree"}}]}"#;
        assert!(AvroDecoder::with_schema(through_an_array).is_err());
        let mut deep = r#""string""#.to_string();
        for _ in 0..40 {
            deep = format!(r#"{{"type":"array","items":{deep}}}"#);
        }
        let deep =
            format!(r#"{{"type":"record","name":"E","fields":[{{"name":"x","type":{deep}}}]}}"#);
        assert!(
            AvroDecoder::with_schema(&deep)
                .err()
                .unwrap()
                .contains("levels deep")
        );
        // A named type used twice, side by side, is no recursion.
        let reused = r#"{"type":"record","name":"E","fields":[
            {"name":"a","type":{"type":"record","name":"P","fields":[{"name":"v","type":"string"}]}},
            {"name":"b","type":"P"}]}"#;
        assert!(AvroDecoder::with_schema(reused).is_ok());
        assert!(AvroDecoder::with_schema(EVENT_SCHEMA).is_ok());
    }

    #[test]
    fn refusals_expire_and_the_cache_of_ids_is_bounded() {
        let mut known = KnownSchemas::default();
        let start = Instant::now();
        let schema =
            Arc::new(BoundedSchema::new(Schema::parse_str(EVENT_SCHEMA).unwrap()).unwrap());
        known.insert(1, &Ok(Arc::clone(&schema)), start);
        known.insert(2, &Err("forbidden".into()), start);
        assert!(matches!(known.get(2, start), Some(Err(reason)) if reason == "forbidden"));
        let later = start + REFUSAL_EXPIRY;
        assert!(known.get(2, later).is_none(), "a refusal is asked again");
        assert!(known.get(1, later).unwrap().is_ok());
        for id in 10..(10 + 3 * MAX_KNOWN_IDS as u32) {
            known.insert(id, &Err("unknown".into()), start);
            assert!(known.schemas.len() + known.refused.len() <= MAX_KNOWN_IDS);
        }
        assert!(
            known.get(1, start).unwrap().is_ok(),
            "schemas outlive refusals"
        );
    }

    fn validator() -> Validator {
        Validator {
            max_event_bytes: 1 << 16,
            max_future_skew_ms: 86_400_000,
            now_ms: 1_772_323_200_000,
        }
    }

    fn decoder() -> AvroDecoder {
        AvroDecoder::with_schema(EVENT_SCHEMA).unwrap()
    }

    fn encode(line: &str) -> Vec<u8> {
        encode_json_event(&decoder().schema().unwrap(), line.as_bytes()).unwrap()
    }

    #[test]
    fn reads_what_produce_writes_with_the_fields_the_rules_test() {
        let datum = encode(
            r#"{"event_id":"e","uuid":"u","event_timestamp":1772323100000,"page_name":"home","booking_details":{"id":1},"event_details":{"event_name":"n","event_type":"t","event_value":3}}"#,
        );
        let event = decoder().decode(&validator(), &datum).unwrap();
        assert_eq!(event.page_name.as_deref(), Some("home"));
        assert_eq!(
            (event.event_name.as_deref(), event.event_type.as_deref()),
            (Some("n"), Some("t"))
        );
        let json = decoder().to_json(&datum).unwrap();
        assert!(json.contains(r#""booking_details":"{\"id\":1}""#), "{json}");
    }

    #[test]
    fn rejections_name_the_field_as_for_json() {
        let empty_user = encode(r#"{"event_id":"e","uuid":"","event_timestamp":5}"#);
        let reason = decoder().decode(&validator(), &empty_user).unwrap_err().0;
        assert!(reason.contains("uuid"), "{reason}");
        let negative = encode(r#"{"event_id":"e","uuid":"u","event_timestamp":-5}"#);
        let reason = decoder().decode(&validator(), &negative).unwrap_err().0;
        assert!(reason.contains("negative"), "{reason}");
        let future = encode(r#"{"event_id":"e","uuid":"u","event_timestamp":4102444800000}"#);
        let reason = decoder().decode(&validator(), &future).unwrap_err().0;
        assert!(reason.contains("max-future-skew"), "{reason}");
        let mut trailing = encode(r#"{"event_id":"e","uuid":"u","event_timestamp":5}"#);
        trailing.push(0);
        let reason = decoder().decode(&validator(), &trailing).unwrap_err().0;
        assert!(reason.contains("1 bytes left"), "{reason}");
    }

    #[test]
    fn the_wire_format_is_checked_before_the_registry_is_asked() {
        assert!(wire_format(b"{\"uuid\"").unwrap_err().0.contains("0x7b"));
        assert!(wire_format(&[0, 0, 1]).unwrap_err().0.contains("too short"));
        assert_eq!(wire_format(&[0, 0, 0, 1, 2, 9]).unwrap(), (258, &[9][..]));
        assert_eq!(
            wire_format(&to_wire_format(7, b"d")).unwrap(),
            (7, &b"d"[..])
        );
    }

    proptest::proptest! {
        #[test]
        fn no_bytes_panic_the_decoder(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = decoder().decode(&validator(), &bytes);
        }
    }
}
