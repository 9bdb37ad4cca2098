//! Parsing and validation of clickstream events.
//!
//! An event is one JSON object per line, or an Avro datum per Kafka record ([`avro`]). Parsing borrows from the input bytes wherever the JSON
//! holds no escapes, so the hot path allocates nothing. Every rejection names the field at fault,
//! so that a quarantined line can be fixed at its producer.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::rules::EventField;

pub mod avro;
mod avro_bounds;
mod avro_datum;
#[cfg(test)]
mod avro_tests;
pub mod registry;

/// The fields of an event the sessionizer needs; the rest of the line travels as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    pub user_id: Cow<'a, str>,
    pub event_id: Cow<'a, str>,
    pub page_name: Option<Cow<'a, str>>,
    pub event_time_ms: u64,
    /// `event_details.event_name` and `event_details.event_type` when they are strings, for the
    /// session boundary rules.
    pub event_name: Option<Cow<'a, str>>,
    pub event_type: Option<Cow<'a, str>>,
}

impl Event<'_> {
    /// The value of a field that a boundary rule tests.
    pub fn field(&self, field: EventField) -> Option<&str> {
        match field {
            EventField::PageName => self.page_name.as_deref(),
            EventField::EventName => self.event_name.as_deref(),
            EventField::EventType => self.event_type.as_deref(),
        }
    }
}

/// Why a line was not accepted as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(pub String);

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the bytes of a record encode an event: `--format json|avro`.
#[derive(Clone, Default)]
pub enum EventFormat {
    /// A JSON object (per line of a file, or per Kafka record).
    #[default]
    Json,
    /// An Avro datum per Kafka record.
    Avro(Arc<avro::AvroDecoder>),
}

impl fmt::Debug for EventFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventFormat::Json => "json",
            EventFormat::Avro(_) => "avro",
        })
    }
}

impl EventFormat {
    /// Decodes and validates one record.
    pub fn decode<'a>(
        &self,
        validator: &Validator,
        record: &'a [u8],
    ) -> Result<Event<'a>, Rejection> {
        match self {
            EventFormat::Json => validator.parse(record),
            EventFormat::Avro(decoder) => decoder.decode(validator, record),
        }
    }

    /// A record as text, for the late-events table: JSON as it came, Avro rendered as JSON.
    pub fn raw_text(&self, record: &[u8]) -> String {
        let rendered = match self {
            EventFormat::Json => None,
            EventFormat::Avro(decoder) => decoder.to_json(record),
        };
        rendered.unwrap_or_else(|| String::from_utf8_lossy(record).into_owned())
    }
}

/// Limits a valid event must respect.
#[derive(Debug, Clone, Copy)]
pub struct Validator {
    pub max_event_bytes: usize,
    pub max_future_skew_ms: u64,
    /// Wall clock at validation; events further than `max_future_skew_ms` beyond it are rejected.
    pub now_ms: u64,
}

impl Validator {
    /// Parses and validates one line (without its line terminator).
    ///
    /// ```
    /// use sessionize::event::Validator;
    /// let v = Validator { max_event_bytes: 1 << 20, max_future_skew_ms: 86_400_000, now_ms: 2_000_000_000_000 };
    /// let e = v.parse(br#"{"uuid":"u1","event_id":"e1","event_timestamp":"1700000000000","page_name":"home"}"#).unwrap();
    /// assert_eq!((e.user_id.as_ref(), e.event_time_ms), ("u1", 1_700_000_000_000));
    /// assert!(v.parse(br#"{"uuid":"","event_id":"e1","event_timestamp":1}"#).unwrap_err().0.contains("uuid"));
    /// ```
    pub fn parse<'a>(&self, line: &'a [u8]) -> Result<Event<'a>, Rejection> {
        if line.len() > self.max_event_bytes {
            return Err(self.too_long(line.len() as u64));
        }
        // A byte-order mark, as some tools write at the start of a file, is not part of the JSON.
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        if let Some(at) = nesting_too_deep(line) {
            return Err(Rejection(format!(
                "invalid event: nesting deeper than {MAX_NESTING} levels at byte {at}"
            )));
        }
        let raw: RawEvent<'a> =
            sonic_rs::from_slice(line).map_err(|e| Rejection(describe_json_error(&e)))?;
        let user_id = required_text(raw.uuid.map(|s| s.0), "uuid")?;
        let event_id = required_text(raw.event_id.map(|s| s.0), "event_id")?;
        let event_time_ms = self.check_time(raw.event_timestamp.map(|t| t.0))?;
        let details = raw.event_details.unwrap_or_default();
        Ok(Event {
            user_id,
            event_id,
            page_name: raw.page_name.flatten().map(|s| s.0),
            event_time_ms,
            event_name: details.event_name,
            event_type: details.event_type,
        })
    }
}

impl Validator {
    /// `event_timestamp`, present and not too far ahead of the wall clock.
    fn check_time(&self, event_time_ms: Option<u64>) -> Result<u64, Rejection> {
        let event_time_ms =
            event_time_ms.ok_or_else(|| Rejection("missing field `event_timestamp`".into()))?;
        if event_time_ms > self.now_ms.saturating_add(self.max_future_skew_ms) {
            return Err(Rejection(format!(
                "event_timestamp {event_time_ms} is more than --max-future-skew ({} ms) ahead of the wall clock ({})",
                self.max_future_skew_ms, self.now_ms
            )));
        }
        Ok(event_time_ms)
    }

    /// The rejection of a line of `length` bytes, longer than `--max-event-bytes`.
    pub fn too_long(&self, length: u64) -> Rejection {
        Rejection(format!(
            "line of {length} bytes exceeds --max-event-bytes {}",
            self.max_event_bytes
        ))
    }
}

/// The deepest nesting of arrays and objects accepted anywhere in a line, ignored fields too: it
/// bounds the parser's recursion, so that no input can overflow a worker's stack.
pub const MAX_NESTING: usize = 128;

/// The byte offset where a line's nesting first exceeds [`MAX_NESTING`], if it does.
fn nesting_too_deep(line: &[u8]) -> Option<usize> {
    // Nearly every line opens fewer brackets than the limit in all, which one quick (SIMD) count
    // shows; only the others are scanned with attention to strings.
    let opened = memchr::memchr2_iter(b'[', b'{', line).count();
    if opened <= MAX_NESTING {
        return None;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (at, &byte) in line.iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(at);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

fn required_text<'a>(value: Option<Cow<'a, str>>, field: &str) -> Result<Cow<'a, str>, Rejection> {
    match value {
        None => Err(Rejection(format!("missing field `{field}`"))),
        Some(text) if text.is_empty() => Err(Rejection(format!("field `{field}` is empty"))),
        Some(text) => Ok(text),
    }
}

fn describe_json_error(error: &sonic_rs::Error) -> String {
    let text = error.to_string();
    if error.is_eof() {
        format!("truncated JSON: {text}")
    } else if text.contains("UTF-8") || text.contains("utf-8") || text.contains("utf8") {
        format!("invalid UTF-8: {text}")
    } else {
        format!("invalid event: {text}")
    }
}

/// The wire shape of an event. Unknown fields are skipped; known fields are type-checked.
#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow, default)]
    uuid: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    event_id: Option<JsonStr<'a>>,
    #[serde(default)]
    event_timestamp: Option<EpochMillis>,
    #[serde(borrow, default)]
    page_name: Option<Option<JsonStr<'a>>>,
    #[serde(borrow, default)]
    event_details: Option<EventDetails<'a>>,
    #[serde(default, rename = "booking_details")]
    _booking_details: Option<IgnoredAny>,
}

/// `event_timestamp`: epoch milliseconds as a JSON integer or a string of digits.
struct EpochMillis(u64);

impl<'de> Deserialize<'de> for EpochMillis {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EpochMillisVisitor)
    }
}

struct EpochMillisVisitor;

impl Visitor<'_> for EpochMillisVisitor {
    type Value = EpochMillis;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`event_timestamp` as epoch milliseconds (a non-negative integer or a string of digits)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<EpochMillis, E> {
        Ok(EpochMillis(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<EpochMillis, E> {
        u64::try_from(v)
            .map(EpochMillis)
            .map_err(|_| E::custom(format_args!("`event_timestamp` is negative ({v})")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<EpochMillis, E> {
        Err(E::custom(format_args!(
            "`event_timestamp` is not an integer number of milliseconds ({v})"
        )))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<EpochMillis, E> {
        if !v.is_empty()
            && v.bytes().all(|b| b.is_ascii_digit())
            && let Ok(ms) = v.parse()
        {
            return Ok(EpochMillis(ms));
        }
        let what = if v.starts_with('-') && v[1..].bytes().all(|b| b.is_ascii_digit()) {
            "negative"
        } else {
            "not numeric"
        };
        Err(E::custom(format_args!(
            "`event_timestamp` is {what} ({v:?})"
        )))
    }
}

/// `event_details`: must be an object (or null). Of its members, `event_name` and `event_type` are
/// read when they are strings (boundary rules test them); anything else is skipped unchecked.
#[derive(Default)]
struct EventDetails<'a> {
    event_name: Option<Cow<'a, str>>,
    event_type: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for EventDetails<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EventDetailsVisitor(std::marker::PhantomData))
    }
}

struct EventDetailsVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for EventDetailsVisitor<'a> {
    type Value = EventDetails<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`event_details` as an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EventDetails<'a>, A::Error> {
        let mut details = EventDetails::default();
        while let Some(JsonStr(key)) = map.next_key()? {
            match &*key {
                "event_name" => details.event_name = map.next_value::<Text<'a>>()?.0,
                "event_type" => details.event_type = map.next_value::<Text<'a>>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(details)
    }
}

/// A JSON string, borrowed from the line unless escapes make it differ. (Serde's own `Cow<str>`
/// borrows only as a field of exactly that type: inside an `Option` it copies every string.)
struct JsonStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(JsonStrVisitor(std::marker::PhantomData))
    }
}

struct JsonStrVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for JsonStrVisitor<'a> {
    type Value = JsonStr<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<JsonStr<'a>, E> {
        Ok(JsonStr(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<JsonStr<'a>, E> {
        Ok(JsonStr(Cow::Owned(v.to_owned())))
    }
}

/// A value that is kept when it is a string and skipped when it is anything else.
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor(std::marker::PhantomData))
    }
}

struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
    type Value = Text<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
        Ok(Text(Some(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
        Ok(Text(Some(Cow::Owned(v.to_owned()))))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text<'a>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Text(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<'a>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Text(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_772_323_200_000;

    fn validator() -> Validator {
        Validator {
            max_event_bytes: 1024,
            max_future_skew_ms: 86_400_000,
            now_ms: NOW,
        }
    }

    fn reject(line: &str) -> String {
        validator().parse(line.as_bytes()).unwrap_err().0
    }

    #[test]
    fn accepts_string_and_number_timestamps_and_unknown_fields() {
        let v = validator();
        let a = v
            .parse(br#"{"event_id":"e","uuid":"u","event_timestamp":"1772323100000","page_name":"home","booking_details":{"x":[1,2]},"event_details":{"event_name":"n","event_type":"t","event_value":3},"extra":true}"#)
            .unwrap();
        assert_eq!(a.event_time_ms, 1_772_323_100_000);
        assert_eq!(a.page_name.as_deref(), Some("home"));
        assert_eq!(
            (a.event_name.as_deref(), a.event_type.as_deref()),
            (Some("n"), Some("t"))
        );
        let other_types = v
            .parse(br#"{"event_id":"e","uuid":"u","event_timestamp":5,"event_details":{"event_name":7,"event_type":{"a":[1]},"event_value":"x"}}"#)
            .unwrap();
        assert_eq!(
            (other_types.event_name, other_types.event_type),
            (None, None)
        );
        let b = v
            .parse(br#"{"event_id":"e","uuid":"u","event_timestamp":1772323100000,"page_name":null,"event_details":null,"booking_details":"abc"}"#)
            .unwrap();
        assert_eq!(b.event_time_ms, a.event_time_ms);
        assert_eq!(b.page_name, None);
    }

    #[test]
    fn unescapes_strings() {
        let e = validator()
            .parse(br#"{"event_id":"e\"1","uuid":"u\u00e9","event_timestamp":5}"#)
            .unwrap();
        assert_eq!(e.event_id, "e\"1");
        assert_eq!(e.user_id, "u\u{e9}");
    }

    #[test]
    fn strings_without_escapes_borrow_from_the_line() {
        let e = validator()
            .parse(br#"{"event_id":"e1","uuid":"u\u00e9","page_name":"home","event_timestamp":5,"event_details":{"event_name":"n"}}"#)
            .unwrap();
        let borrowed = |text: &Cow<str>| matches!(text, Cow::Borrowed(_));
        assert!(borrowed(&e.event_id) && !borrowed(&e.user_id));
        assert!(e.page_name.as_ref().is_some_and(borrowed));
        assert!(e.event_name.as_ref().is_some_and(borrowed));
    }

    #[test]
    fn rejections_name_the_field() {
        assert!(reject(r#"{"event_id":"e","event_timestamp":5}"#).contains("uuid"));
        assert!(reject(r#"{"uuid":"","event_id":"e","event_timestamp":5}"#).contains("uuid"));
        assert!(reject(r#"{"uuid":"u","event_timestamp":5}"#).contains("event_id"));
        assert!(reject(r#"{"uuid":"u","event_id":"e"}"#).contains("event_timestamp"));
        let non_numeric = reject(r#"{"uuid":"u","event_id":"e","event_timestamp":"abc"}"#);
        assert!(non_numeric.contains("event_timestamp") && non_numeric.contains("not numeric"));
        assert!(reject(r#"{"uuid":"u","event_id":"e","event_timestamp":-5}"#).contains("negative"));
        assert!(
            reject(r#"{"uuid":"u","event_id":"e","event_timestamp":"-5"}"#).contains("negative")
        );
        assert!(reject(r#"{"uuid":"u","event_id":"e","event_timestamp":1.5}"#).contains("integer"));
        assert!(
            reject(r#"{"uuid":"u","event_id":"e","event_timestamp":4102444800000}"#)
                .contains("max-future-skew")
        );
        assert!(
            reject(r#"{"uuid":"u","event_id":"e","event_timestamp":5,"event_details":"x"}"#)
                .contains("event_details")
        );
        assert!(
            reject(r#"{"uuid":"u","event_id":"e","event_timestamp":5,"page_name":7}"#)
                .contains("invalid")
        );
        assert!(reject(r#"{"uuid":"u","event_id":"e","#).contains("truncated"));
        assert!(reject("not json at all").contains("invalid"));
        assert!(reject(r#"[1,2,3]"#).contains("invalid"));
        assert!(
            reject(&format!(r#"{{"uuid":"{}"}}"#, "x".repeat(2000))).contains("max-event-bytes")
        );
    }

    #[test]
    fn deep_nesting_is_rejected_in_any_field_and_strings_do_not_count() {
        let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        let line = format!(
            r#"{{"event_id":"x","uuid":"u","event_timestamp":"1772323200000","event_details":{{}},"x":{deep}}}"#
        );
        let reason = validator_with_room().parse(line.as_bytes()).unwrap_err().0;
        assert!(
            reason.contains("nesting") && reason.contains("byte"),
            "{reason}"
        );
        let line = format!(
            r#"{{"event_id":"x","uuid":"u","event_timestamp":5,"booking_details":{deep}}}"#
        );
        assert!(
            validator_with_room()
                .parse(line.as_bytes())
                .unwrap_err()
                .0
                .contains("nesting")
        );
        // Brackets inside strings are text, not nesting.
        let text = "[{".repeat(300);
        let line =
            format!(r#"{{"event_id":"x","uuid":"u","event_timestamp":5,"page_name":"{text}"}}"#);
        assert_eq!(
            validator_with_room()
                .parse(line.as_bytes())
                .unwrap()
                .page_name
                .as_deref(),
            Some(text.as_str())
        );
        let nested = format!(
            "{}{}",
            "[".repeat(MAX_NESTING - 1),
            "]".repeat(MAX_NESTING - 1)
        );
        let line = format!(r#"{{"event_id":"x","uuid":"u","event_timestamp":5,"x":{nested}}}"#);
        assert!(validator_with_room().parse(line.as_bytes()).is_ok());
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let line = b"\xEF\xBB\xBF{\"uuid\":\"u\",\"event_id\":\"e\",\"event_timestamp\":5}";
        assert_eq!(validator().parse(line).unwrap().user_id, "u");
    }

    fn validator_with_room() -> Validator {
        Validator {
            max_event_bytes: 1 << 30,
            ..validator()
        }
    }

    proptest::proptest! {
        #[test]
        fn no_byte_string_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = validator().parse(&bytes);
        }

        #[test]
        fn no_json_like_string_panics(text in r#"[\[\]{}",:0-9a-z\\ \x00\u{d7ff}\u{e000}-]{0,256}"#) {
            let _ = validator().parse(text.as_bytes());
            let line = format!(r#"{{"uuid":"u","event_id":"e","event_timestamp":5,"x":{text}}}"#);
            let _ = validator().parse(line.as_bytes());
        }
    }

    #[test]
    fn rejects_invalid_utf8() {
        let line = b"{\"uuid\":\"u\xff\xfe\",\"event_id\":\"e\",\"event_timestamp\":5}";
        let reason = validator().parse(line).unwrap_err().0;
        assert!(reason.contains("UTF-8"), "{reason}");
    }
}
